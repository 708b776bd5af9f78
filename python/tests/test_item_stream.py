"""``ItemStream`` and ``executeStream``: items sent as they come, within a window."""

import os
import shutil
import tempfile
import threading
import time
import unittest

from pyproxy_server.errors import SerializationError
from pyproxy_server.item_stream import ItemStream

from ._client import ServerProcess


class _Runner:
    def __init__(self):
        self.unparks = []

    def unpark(self, call, ready):
        self.unparks.append(ready())


class _Conn:
    # A host that did not ask for bytes (Connection.sends_bytes).
    sends_bytes = False

    def __init__(self):
        self.events = []
        self.runner = _Runner()

    def encode_event_or_raise(self, event):
        import json

        data = json.dumps(event, allow_nan=False)
        return event, len(data)

    def enqueue(self, payload):
        self.events.append(payload)


class _Call:
    def __init__(self):
        self.id = 7
        self.connection = _Conn()
        self.lock = threading.Lock()
        self.http = None  # the model's headers (http_meta), none here


class ItemStreamTest(unittest.TestCase):
    def test_the_window_fills_and_acks_open_it(self):
        call = _Call()
        stream = ItemStream(call)
        stream.window_items = 2
        stream.send(0)
        self.assertTrue(stream.has_room())
        stream.send(1)
        self.assertFalse(stream.has_room())
        stream.ack(0)
        self.assertTrue(stream.has_room())
        self.assertEqual(call.connection.runner.unparks, [True])  # a parked call would go on
        stream.send(2)
        stream.ack(99)  # past the last sent: covers what was sent, no more
        stream.ack(2)  # nothing new: nothing to unpark
        self.assertEqual(call.connection.runner.unparks, [True, True])
        stream.send(3)
        stream.send(4)
        self.assertFalse(stream.has_room())
        self.assertEqual([e["data"] for e in call.connection.events], [0, 1, 2, 3, 4])
        self.assertEqual(call.connection.events[0], {"event": "item", "id": 7, "seq": 0, "data": 0})

    def test_bytes_fill_the_window_too_and_bad_items_are_named(self):
        call = _Call()
        stream = ItemStream(call)
        stream.window_bytes = 100
        stream.send("x" * 200)  # one item of any size goes when there is room
        self.assertFalse(stream.has_room())
        stream.ack(0)
        self.assertTrue(stream.has_room())
        with self.assertRaisesRegex(SerializationError, r"item\[1\]\.when is a set"):
            stream.send({"when": {1}})
        self.assertEqual(stream.count, 1)


class ExecuteStreamTest(unittest.TestCase):
    def test_a_full_window_is_told_before_the_call_parks(self):
        # windowFull {acked}: the host counts the call parked even where its
        # own count of the window's bytes falls short of the server's.
        server = ServerProcess()
        try:
            c = server.connect()
            c.call("addModel", name="counter", source=self.SOURCE)
            c.send({"id": 50, "cmd": "executeStream", "name": "counter", "msg": {"n": 100}})
            seen = []
            full = []

            def read_until_full():
                while True:
                    msg = c.recv(5)
                    if msg.get("event") == "item":
                        seen.append(msg["seq"])
                    elif msg.get("event") == "windowFull":
                        self.assertEqual(msg["id"], 50)
                        full.append(msg["acked"])
                        return
                    elif msg.get("id") == 50 and "ok" in msg:
                        self.fail("the stream ended: %r" % msg)

            read_until_full()
            self.assertEqual((seen, full), (list(range(64)), [-1]))
            c.send({"id": 51, "cmd": "itemAck", "target": 50, "seq": 9})
            read_until_full()
            self.assertEqual((seen, full), (list(range(74)), [-1, 9]))
            c.send({"id": 52, "cmd": "itemAck", "target": 50, "seq": 99})
            while True:
                msg = c.recv(5)
                if msg.get("id") == 50 and "ok" in msg:
                    break
                if msg.get("event") == "item":
                    seen.append(msg["seq"])
            self.assertEqual(msg["result"], {"items": 100})
            self.assertEqual(seen, list(range(100)))
            self.assertEqual(full, [-1, 9])  # never full once acked past the end
        finally:
            server.kill()

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


# Generators that run until cancelled, recording how they end in
# msg["marker"] (when given): GeneratorExit at their yield, then finally.
_FOREVER = (
    "import asyncio, os\n"
    "def mark(msg, text):\n"
    "    if msg.get('marker'):\n"
    "        with open(msg['marker'], 'a') as f:\n"
    "            f.write(text + '\\n')\n"
    "class Forever:\n"
    "    def execute(self, msg):\n"
    "        i = 0\n"
    "        try:\n"
    "            while msg.get('n') is None or i < msg['n']:\n"
    "                yield i\n"
    "                i += 1\n"
    "        except GeneratorExit:\n"
    "            mark(msg, 'GeneratorExit')\n"
    "            raise\n"
    "        finally:\n"
    "            print('closed after', i)\n"
    "            mark(msg, 'finally')\n"
    "class AForever:\n"
    "    async def execute(self, msg):\n"
    "        i = 0\n"
    "        try:\n"
    "            while True:\n"
    "                await asyncio.sleep(0)\n"
    "                yield i\n"
    "                i += 1\n"
    "        except GeneratorExit:\n"
    "            mark(msg, 'GeneratorExit')\n"
    "            raise\n"
    "        finally:\n"
    "            mark(msg, 'finally')\n"
    "class Unsafe:\n"
    "    threadsafe = False\n"
    "    inside = 0\n"
    "    def execute(self, msg):\n"
    "        i = 0\n"
    "        while msg.get('n') is None or i < msg['n']:\n"
    "            Unsafe.inside += 1\n"
    "            assert Unsafe.inside == 1, 'entered by two threads at once'\n"
    "            Unsafe.inside -= 1\n"
    "            yield i\n"
    "            i += 1\n"
    "class Plain:\n"
    "    threaded = True\n"
    "    def execute(self, msg):\n"
    "        return {'echo': msg}\n"
)


class ParkedStreamTest(unittest.TestCase):
    """A stream whose reader is behind parks: it holds no call thread (and
    no model lock) until the reader's ack lets it go on."""

    WINDOW = 64

    def setUp(self):
        self.server = ServerProcess(args=("--threads", "2"))
        self.dir = tempfile.mkdtemp(prefix="pyproxy-parked-")
        self.c = self.server.connect()
        for cls in ("Forever", "AForever", "Unsafe", "Plain"):
            self.c.call("addModel", name=cls.lower(), source=_FOREVER, **{"class": cls})

    def tearDown(self):
        self.server.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def fill(self, rids):
        """Reads until each stream of ``rids`` has sent a full window (no acks)."""
        seen = {rid: 0 for rid in rids}
        while any(n < self.WINDOW for n in seen.values()):
            msg = self.c.recv(30)
            if msg.get("event") == "item":
                self.assertIn(msg["id"], seen)
                self.assertEqual(msg["seq"], seen[msg["id"]])
                seen[msg["id"]] += 1
            elif msg.get("event") not in ("streamStart", "windowFull"):
                self.fail("unexpected message %r" % (msg,))

    def parked(self, n):
        deadline = time.monotonic() + 30
        while self.c.call("serverStatus")["parkedCalls"] != n:
            self.assertLess(time.monotonic(), deadline, "never %d parked calls" % n)
            time.sleep(0.01)

    def test_streams_whose_readers_are_behind_hold_no_thread(self):
        # Two call threads, three streams that fill their windows: each was
        # a thread waiting in yield, the third never started, and every
        # later call of the worker waited for a thread.
        self.c.send(
            {"id": 10, "cmd": "executeStream", "name": "forever", "msg": {}},
            {"id": 11, "cmd": "executeStream", "name": "aforever", "msg": {}},
            {"id": 12, "cmd": "executeStream", "name": "forever", "msg": {}},
        )
        self.fill([10, 11, 12])
        self.parked(3)
        self.assertEqual(self.c.call("executeModel", name="plain", msg=1, timeout=30), {"echo": 1})
        status = self.c.call("serverStatus")
        self.assertEqual(status["inFlight"], 3)
        self.assertLessEqual(status["threads"]["running"], 2)
        # An ack lets a stream go on where it stopped (on whatever thread).
        self.c.send({"id": 20, "cmd": "itemAck", "target": 11, "seq": 9})
        got = []
        while len(got) < 10:
            msg = self.c.recv(30)
            if msg.get("event") == "item":
                self.assertEqual(msg["id"], 11)
                got.append(msg["seq"])
            else:
                self.assertEqual(msg, {"id": 20, "ok": True, "result": {"acked": True}})
        self.assertEqual(got, list(range(64, 74)))
        for rid in (10, 11, 12):
            self.assertEqual(self.c.call("cancel", target=rid), {"cancelled": True})
            self.assertEqual(self.c.reply_for(rid, 30)["error"]["type"], "CancelledError")
        self.assertEqual(self.c.call("serverStatus")["inFlight"], 0)

    def test_a_parked_stream_cancelled_closes_its_generator(self):
        markers = [os.path.join(self.dir, name) for name in ("sync", "async")]
        self.c.send(
            {"id": 10, "cmd": "executeStream", "name": "forever", "msg": {"marker": markers[0]}},
            {"id": 11, "cmd": "executeStream", "name": "aforever", "msg": {"marker": markers[1]}},
        )
        self.fill([10, 11])
        self.parked(2)
        for rid, marker in zip((10, 11), markers):
            self.assertEqual(self.c.call("cancel", target=rid), {"cancelled": True})
            reply = self.c.reply_for(rid, 30)
            self.assertEqual(reply["error"]["type"], "CancelledError")
            # Closed before the reply: GeneratorExit at its yield, then its finally.
            with open(marker) as f:
                self.assertEqual(f.read().split(), ["GeneratorExit", "finally"])
        # What the sync one printed in its finally came as its output, before its reply.
        logs = [e for e in self.c.events if e.get("event") == "log" and e.get("request") == 10]
        self.assertEqual([e["message"] for e in logs], ["closed after 64"])
        self.assertEqual(self.c.call("serverStatus")["parkedCalls"], 0)

    def test_a_parked_stream_is_closed_when_its_connection_closes(self):
        marker = os.path.join(self.dir, "lost")
        self.c.send({"id": 10, "cmd": "executeStream", "name": "forever", "msg": {"marker": marker}})
        self.fill([10])
        self.parked(1)
        self.c.close()
        other = self.server.connect()
        # Until its finally ran: the marker's last word. The server forgets
        # a closed connection's calls at once (inFlight 0), and a marker that
        # exists may hold "GeneratorExit" only: its finally comes next, on
        # the call's thread, maybe late on a busy machine.
        def marked():
            try:
                with open(marker) as f:
                    return f.read().split()
            except FileNotFoundError:
                return []

        deadline = time.monotonic() + 30
        while other.call("serverStatus")["inFlight"] != 0 or marked()[-1:] != ["finally"]:
            self.assertLess(time.monotonic(), deadline, "the parked stream was never closed")
            time.sleep(0.01)
        self.assertEqual(marked(), ["GeneratorExit", "finally"])

    def test_a_thread_unsafe_streamer_parked_lets_its_model_run(self):
        # threadsafe = False held the model's lock until the last item, so a
        # reader that paused blocked every other call of the model.
        self.c.send({"id": 10, "cmd": "executeStream", "name": "unsafe", "msg": {}})
        self.fill([10])
        self.parked(1)
        self.assertEqual(self.c.call("executeModel", name="unsafe", msg={"n": 3}, timeout=30), [0, 1, 2])
        self.c.send({"id": 20, "cmd": "itemAck", "target": 10, "seq": 63})
        self.fill_more(10, 64)
        self.assertEqual(self.c.call("cancel", target=10), {"cancelled": True})
        self.assertEqual(self.c.reply_for(10, 30)["error"]["type"], "CancelledError")

    def fill_more(self, rid, first):
        seqs = []
        while len(seqs) < self.WINDOW:
            msg = self.c.recv(30)
            if msg.get("event") == "item":
                self.assertEqual(msg["id"], rid)
                seqs.append(msg["seq"])
        self.assertEqual(seqs, list(range(first, first + self.WINDOW)))

    def test_a_stream_that_fits_the_window_ends_without_acks(self):
        # The model runs one item ahead of the window: its end is seen (and
        # replied) without waiting for the reader.
        reply = self.c.request("executeStream", rid=10, name="forever", msg={"n": self.WINDOW}, timeout=30)
        self.assertEqual(reply["result"], {"items": self.WINDOW})
        self.assertEqual(len([e for e in self.c.events if e.get("event") == "item"]), self.WINDOW)


class ParkedStreamCloseTest(unittest.TestCase):
    def test_a_parked_stream_whose_close_hangs_holds_a_stuck_thread(self):
        # The close of a cancelled parked stream is model code (its finally)
        # that may block in C: its thread is watched like any cancelled
        # call's, and replaced when stuck, so the worker keeps its threads.
        source = (
            "import time\n"
            "class SlowClose:\n"
            "    def execute(self, msg):\n"
            "        try:\n"
            "            while True:\n"
            "                yield 0\n"
            "        finally:\n"
            "            time.sleep(60)\n"
            "class Plain:\n"
            "    threaded = True\n"
            "    def execute(self, msg):\n"
            "        return msg\n"
        )
        server = ServerProcess(args=("--threads", "1"))
        try:
            c = server.connect()
            c.call("addModel", name="slow", source=source, **{"class": "SlowClose"})
            c.call("addModel", name="plain", source=source, **{"class": "Plain"})
            c.send({"id": 10, "cmd": "executeStream", "name": "slow", "msg": {}})
            items = 0
            while items < ParkedStreamTest.WINDOW:
                if c.recv(30).get("event") == "item":
                    items += 1
            deadline = time.monotonic() + 30
            while c.call("serverStatus")["parkedCalls"] != 1:
                self.assertLess(time.monotonic(), deadline, "the stream never parked")
                time.sleep(0.01)
            self.assertEqual(c.call("cancel", target=10), {"cancelled": True})
            # The one call thread sleeps in the generator's finally: replaced.
            self.assertEqual(c.call("executeModel", name="plain", msg=7, timeout=30), 7)
            threads = c.call("serverStatus")["threads"]
            self.assertEqual((threads["stuck"], threads["replaced"]), (1, 1))
        finally:
            server.kill()


if __name__ == "__main__":
    unittest.main()


class ParkedStreamOfABusyModelTest(unittest.TestCase):
    """A thread-unsafe model's parked streams cancelled while another call
    holds the model: each closes its generator once the model is free,
    holding no thread meanwhile."""

    SOURCE = (
        "import time\n"
        "class Busy:\n"
        "    threadsafe = False\n"
        "    threaded = True\n"
        "    def execute(self, msg):\n"
        "        if 'seconds' in msg:\n"
        "            return self.sleep(msg['seconds'])\n"
        "        return self.items(msg)\n"
        "    def sleep(self, seconds):\n"
        "        print('started')\n"
        "        deadline = time.monotonic() + seconds\n"
        "        while time.monotonic() < deadline:\n"
        "            time.sleep(0.01)\n"
        "        return seconds\n"
        "    def items(self, msg):\n"
        "        i = 0\n"
        "        try:\n"
        "            while True:\n"
        "                yield i\n"
        "                i += 1\n"
        "        finally:\n"
        "            with open(msg['marker'], 'a') as f:\n"
        "                f.write('closed\\n')\n"
    )

    def test_cancelled_parked_streams_wait_for_the_model_without_a_thread(self):
        # They waited for the busy call in a plain acquire (a cancelled call
        # cannot leave a wait), each on a thread that was soon stuck: past
        # --max-stuck-threads the worker was killed as wedged, the busy
        # call with it.
        server = ServerProcess(args=("--threads", "2", "--max-stuck-threads", "1"))
        tmp = tempfile.mkdtemp(prefix="pyproxy-busy-")
        try:
            c = server.connect()
            c.call("addModel", name="busy", source=self.SOURCE)
            markers = {rid: os.path.join(tmp, str(rid)) for rid in (10, 11, 12)}
            for rid, marker in markers.items():
                c.send({"id": rid, "cmd": "executeStream", "name": "busy", "msg": {"marker": marker}})
            seen = {rid: 0 for rid in markers}
            while any(n < ParkedStreamTest.WINDOW for n in seen.values()):
                msg = c.recv(30)
                if msg.get("event") == "item":
                    seen[msg["id"]] += 1
            deadline = time.monotonic() + 30
            while c.call("serverStatus")["parkedCalls"] != 3:
                self.assertLess(time.monotonic(), deadline, "never 3 parked calls")
                time.sleep(0.01)
            c.send({"id": 1, "cmd": "executeModel", "name": "busy", "msg": {"seconds": 600}})
            while True:
                msg = c.recv(30)
                if msg.get("event") == "log" and msg.get("message") == "started":
                    break
            for rid in markers:
                self.assertEqual(c.call("cancel", target=rid), {"cancelled": True})
            # Held (parked), their threads free: only the busy call runs.
            deadline = time.monotonic() + 10
            while True:
                status = c.call("serverStatus")
                threads = status["threads"]
                if status["parkedCalls"] == 3 and threads["running"] - threads["idle"] == 1:
                    break
                self.assertLess(time.monotonic(), deadline, "the cancelled streams hold threads: %r" % (status,))
                time.sleep(0.01)
            self.assertEqual(threads["stuck"], 0, threads)
            for marker in markers.values():
                self.assertFalse(os.path.exists(marker))  # not closed beside the busy call
            # The model free: each closed (holding the lock), then answered.
            self.assertEqual(c.call("cancel", target=1), {"cancelled": True})
            self.assertEqual(c.reply_for(1, 30)["error"]["type"], "CancelledError")
            for rid, marker in markers.items():
                self.assertEqual(c.reply_for(rid, 30)["error"]["type"], "CancelledError")
                with open(marker) as f:
                    self.assertEqual(f.read(), "closed\n")
            status = c.call("serverStatus")
            self.assertIsNone(status["wedged"])
            self.assertEqual((status["parkedCalls"], status["threads"]["stuck"]), (0, 0), status)
            self.assertEqual(c.call("executeModel", name="busy", msg={"seconds": 0}), 0)
        finally:
            server.kill()
            shutil.rmtree(tmp, ignore_errors=True)
