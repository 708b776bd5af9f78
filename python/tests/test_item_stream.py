"""``ItemStream`` and ``executeStream``: items sent as they come, within a window."""

import threading
import unittest

from pyproxy_server.errors import CancelledError, SerializationError
from pyproxy_server.item_stream import ItemStream

from ._client import ServerProcess


class _Conn:
    def __init__(self):
        self.events = []

    def send_event_or_raise(self, event):
        import json

        data = json.dumps(event, allow_nan=False)
        self.events.append(event)
        return len(data)


class _Call:
    def __init__(self):
        self.id = 7
        self.connection = _Conn()
        self.cancelled = threading.Event()

    def is_cancelled(self):
        return self.cancelled.is_set()


class ItemStreamTest(unittest.TestCase):
    def test_blocks_past_the_window_until_acked(self):
        call = _Call()
        stream = ItemStream(call)
        stream.window_items = 2
        stream.poll = 0.01
        sender = threading.Thread(target=lambda: [stream.send(i) for i in range(5)])
        sender.start()
        sender.join(0.3)
        self.assertTrue(sender.is_alive())  # blocked on credit
        self.assertEqual([e["seq"] for e in call.connection.events], [0, 1])
        stream.ack(0)
        stream.ack(99)  # past the last sent: covers what was sent, no more
        sender.join(0.3)
        self.assertTrue(sender.is_alive())
        self.assertEqual(len(call.connection.events), 4)
        stream.ack(3)
        sender.join(5)
        self.assertFalse(sender.is_alive())
        self.assertEqual([e["data"] for e in call.connection.events], [0, 1, 2, 3, 4])
        self.assertEqual(call.connection.events[0], {"event": "item", "id": 7, "seq": 0, "data": 0})

    def test_a_cancel_or_close_ends_a_blocked_sender_and_bad_items_are_named(self):
        call = _Call()
        stream = ItemStream(call)
        stream.window_items = 1
        stream.poll = 0.01
        stream.send("a")
        errors = []

        def send():
            try:
                stream.send("b")
            except CancelledError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        call.cancelled.set()
        sender.join(5)
        self.assertEqual(len(errors), 1)
        stream.ack(0)
        with self.assertRaisesRegex(SerializationError, r"item\[1\]\.when is a set"):
            stream.send({"when": {1}})
        self.assertEqual(stream.count, 1)


class ExecuteStreamTest(unittest.TestCase):
    SOURCE = (
        "class Counter:\n"
        "    def execute(self, msg):\n"
        "        for i in range(msg['n']):\n"
        "            yield {'i': i}\n"
        "        if msg.get('fail'):\n"
        "            raise ValueError('after the items')\n"
    )

    def test_over_the_wire(self):
        server = ServerProcess()
        try:
            c = server.connect()
            self.assertIs(c.call("addModel", name="counter", source=self.SOURCE)["streams"], True)
            self.assertNotIn("streams", c.call("addModel", name="plain", source="class P:\n    def execute(self, m):\n        return [m]\n"))
            # executeModel collects the items.
            self.assertEqual(c.call("executeModel", name="counter", msg={"n": 3}), [{"i": 0}, {"i": 1}, {"i": 2}])
            # executeStream: streamStart, the items in order, then {"items": n}; acked past the window.
            c.send({"id": 50, "cmd": "executeStream", "name": "counter", "msg": {"n": 150}})
            seen = []
            while True:
                msg = c.recv(5)
                if msg.get("id") == 50 and "ok" in msg:
                    reply = msg
                    break
                if msg.get("event") == "streamStart":
                    self.assertEqual(msg["id"], 50)
                    self.assertIsInstance(msg["pid"], int)
                elif msg.get("event") == "item":
                    self.assertEqual(msg["seq"], len(seen))
                    seen.append(msg["data"]["i"])
                    if len(seen) % 32 == 0:
                        c.send({"id": 1000 + len(seen), "cmd": "itemAck", "target": 50, "seq": len(seen) - 1})
            self.assertEqual(reply["result"], {"items": 150})
            self.assertEqual(seen, list(range(150)))
            # Not a generator: one item.
            c.send({"id": 60, "cmd": "executeStream", "name": "plain", "msg": 5})
            msgs = []
            while not msgs or msgs[-1].get("id") != 60 or "ok" not in msgs[-1]:
                msg = c.recv(5)
                if msg.get("id", 0) < 1000:  # not a reply to the acks above
                    msgs.append(msg)
            self.assertEqual([m.get("event") for m in msgs[:2]], ["streamStart", "item"])
            self.assertEqual(msgs[1]["data"], [5])
            self.assertEqual(msgs[2]["result"], {"items": 1})
            # An exception after some items: they were sent, the reply is the error.
            error = c.request("executeStream", name="counter", msg={"n": 2, "fail": True})["error"]
            self.assertEqual((error["type"], error["exception"]), ("PythonError", "ValueError"))
            self.assertEqual(c.request("executeStream", name="nope", msg={})["error"]["type"], "ModelNotFoundError")
            bad = c.request("itemAck", target=True, seq=1)["error"]
            self.assertEqual(bad["type"], "InvalidRequestError")
            self.assertEqual(c.call("itemAck", target=50, seq=1), {"acked": False})
        finally:
            server.kill()

    def test_a_batching_model_without_execute_streams_one_item(self):
        # executeModel of such a class runs a batch of one (protocol §6,
        # Batching); executeStream did not: PythonError AttributeError
        # ("object has no attribute 'execute'") after its streamStart.
        source = (
            "class Tens:\n"
            "    batch_size = 4\n"
            "    def execute_batch(self, msgs):\n"
            "        return [ValueError('negative') if m < 0 else m * 10 for m in msgs]\n"
        )
        server = ServerProcess()
        try:
            c = server.connect()
            c.call("addModel", name="tens", source=source)
            c.send({"id": 70, "cmd": "executeStream", "name": "tens", "msg": 4})
            msgs = [c.recv(5)]
            while msgs[-1].get("id") != 70 or "ok" not in msgs[-1]:
                msgs.append(c.recv(5))
            self.assertEqual([m.get("event") for m in msgs], ["streamStart", "item", None])
            self.assertEqual((msgs[1]["seq"], msgs[1]["data"]), (0, 40))
            self.assertEqual(msgs[2]["result"], {"items": 1})
            # An exception instance in the batch is the call's error, as through executeModel.
            error = c.request("executeStream", name="tens", msg=-1)["error"]
            self.assertEqual((error["type"], error["exception"], error["message"]), ("PythonError", "ValueError", "negative"))
        finally:
            server.kill()


if __name__ == "__main__":
    unittest.main()
