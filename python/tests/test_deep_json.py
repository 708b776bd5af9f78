"""JSON nested deeper than ``json`` parses (RecursionError): every way it can
reach the server gets an error reply for that request (or fails that host
call), and the connection keeps serving (docs/security.md §6)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from pyproxy_server import shallow_json

from ._client import ServerProcess, frame



def _small_too_deep():
    """The smallest of 1100 and 10000 that this Python's json refuses (3.13
    decodes 1100 levels; older versions stop at about 1000)."""
    for depth in (1100, 10000):
        try:
            json.loads("[" * depth + "]" * depth)
        except RecursionError:
            return depth
    raise unittest.SkipTest("this Python decodes 10000 levels of JSON")


# The first fits one small frame (the lone-request fast lane); 100000 does not.
DEPTHS = (_small_too_deep(), 100000)

DEEP_MODEL = """
class Model:
    def execute(self, msg):
        value = []
        for _ in range(msg["depth"]):
            value = [value]
        if msg.get("raise"):
            raise ValueError(value)
        return value
"""


def deep(depth):
    return b"[" * depth + b"]" * depth


def request(rid, value, cmd=b"executeModel"):
    return b'{"id":%d,"cmd":"%s","name":"r","msg":{"kind":"echo","value":%s}}' % (rid, cmd, value)


def ping(rid):
    return b'{"id":%d,"cmd":"ping"}' % rid


def unterminated(size):
    """Too deep, then a string of escaped quotes that never closes: ``size``
    bytes that a scan restarting at every quote reads in quadratic time
    (minutes at 200 KB)."""
    head = b'{"id":1,"cmd":"x","a":' + b"[" * 3000 + b'"'
    return head + b'\\"' * ((size - len(head)) // 2)


# Adversarial payloads of about 1 MB for members(): quotes, escapes and
# brackets where a regex could backtrack or a scan restart.
ADVERSARIAL = """
M = 1 << 20
cases = [
    b'{"id":1,"a":' + b"[" * 3000 + b'"' + b'\\\\"' * (M // 2),
    b'{"id":1,"a":[' + b'"' + b'\\\\"' * (M // 2) + b'"]}',
    b'{"' + b'\\\\"' * (M // 2),
    b'{"id":1,"a":[' + b'"' * M,
    b'{"id":1,"a":[' + b'"[",' * (M // 4) + b'""]}',
    b'{"id":1,"a":["' + b"\\\\" * M,
    b'{"id":1,"a":' + b"[" * (M // 2) + b"]" * (M // 2) + b"}",
]
"""


class ShallowJsonTest(unittest.TestCase):
    def test_members_parses_scalars_and_spans_containers_however_deep(self):
        data = b' {"id" : 3, "cmd":"executeModel", "msg":' + deep(100000) + b', "s":"a]\\"}{", "n":null }'
        found = shallow_json.members(data)
        self.assertEqual(found["id"], 3)
        self.assertEqual(found["cmd"], "executeModel")
        self.assertEqual(found["s"], 'a]"}{')
        self.assertIsNone(found["n"])
        msg = found["msg"]
        self.assertEqual(data[msg.start : msg.stop], deep(100000))

    def test_items_splits_an_array_with_brackets_in_strings(self):
        items = [b'{"id":1,"v":["]]",{"a":"[{"}]}', b"[]", b"7", b'"x\\\\"', deep(100000), b'{"k":{}}']
        data = b'{"batch":[' + b" , ".join(items) + b"]}"
        self.assertEqual(shallow_json.items(shallow_json.members(data)["batch"]), items)

    def test_what_it_cannot_follow_is_a_value_error(self):
        for data in (b"[1]", b'{"a":1', b'{"a":[[]}', b'{"a" 1}', b"{a:1}", b'{"a":1} x', b'{"a":]}', b""):
            with self.subTest(data=data), self.assertRaises(ValueError):
                shallow_json.members(data)

    def test_strings_may_hold_escaped_quotes_and_brackets(self):
        data = b'{"id":1,"k\\"]":"v\\\\","a":["]\\"[",{"}":"\\\\"}],"b":"x"}'
        found = shallow_json.members(data)
        self.assertEqual((found["id"], found['k"]'], found["b"]), (1, "v\\", "x"))
        self.assertEqual(shallow_json.items(found["a"]), [b'"]\\"["', b'{"}":"\\\\"}'])
        for data in (b'{"a":["x\\"]}', b'{"a":["x\\', b'{"a\\":1}'):
            with self.subTest(data=data), self.assertRaises(ValueError):
                shallow_json.members(data)

    def test_members_reads_adversarial_megabytes_in_linear_time(self):
        # In a child process so that a regression (hours per MB) is killed at
        # the timeout instead of hanging the suite; the bound is ~100x the time
        # it takes, so load cannot fail it.
        script = ADVERSARIAL + """
from pyproxy_server import shallow_json
for data in cases:
    try:
        found = shallow_json.members(data)
        if isinstance(found.get("a"), shallow_json.Nested):
            shallow_json.items(found["a"])
    except ValueError:
        pass
print("done")
"""
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run([sys.executable, "-c", script], cwd=here, capture_output=True, timeout=120, check=True)
        self.assertEqual(out.stdout.strip(), b"done", out.stderr)


class DeepJsonServerTest(unittest.TestCase):
    def setUp(self):
        self.server = ServerProcess()
        self.tmp = tempfile.mkdtemp(prefix="pyproxy-deep-test-")
        self.c = self.server.connect()
        self.c.call("addModel", name="r", file="results.py")

    def tearDown(self):
        self.server.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assert_too_deep(self, reply, rid):
        self.assertEqual(reply["id"], rid, reply)
        self.assertFalse(reply["ok"], reply)
        self.assertEqual(reply["error"]["type"], "InvalidRequestError", reply)
        self.assertIn("nested deeper", reply["error"]["message"])
        # Nothing of it ran: a host may send its parts again (protocol §2).
        self.assertIs(reply["error"].get("unread"), True, reply)

    def assert_serving(self):
        self.assertEqual(self.c.call("ping"), "pong")
        self.assertEqual(self.c.call("executeModel", name="r", msg={"kind": "echo", "value": [[1]]}), [[1]])

    def test_a_deep_request_alone_gets_an_error_reply(self):
        for depth in DEPTHS:
            with self.subTest(depth=depth):
                self.c.send_raw(frame(request(5, deep(depth))))
                self.assert_too_deep(self.c.reply_for(5), 5)
                self.assert_serving()

    def test_a_deep_request_among_others_in_one_read(self):
        for depth in DEPTHS:
            with self.subTest(depth=depth):
                self.c.send_raw(frame(ping(1)) + frame(request(2, deep(depth))) + frame(ping(3)))
                self.assertEqual(self.c.reply_for(1)["result"], "pong")
                self.assert_too_deep(self.c.reply_for(2), 2)
                self.assertEqual(self.c.reply_for(3)["result"], "pong")
                self.assert_serving()

    def test_a_deep_item_of_a_batch_frame_is_answered_alone(self):
        for depth in DEPTHS:
            with self.subTest(depth=depth):
                batch = b'{"batch":[' + b",".join((ping(1), request(2, deep(depth)), deep(depth), ping(4))) + b"]}"
                self.c.send_raw(frame(batch))
                self.assertEqual(self.c.reply_for(1)["result"], "pong")
                self.assert_too_deep(self.c.reply_for(2), 2)
                unknown = self.c.reply_for(None)  # the bare array: no id to answer
                self.assertEqual(unknown["error"]["type"], "ProtocolError", unknown)
                self.assertEqual(self.c.reply_for(4)["result"], "pong")
                self.assert_serving()

    def spill(self, data, name):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return {"path": path, "size": len(data), "md5": hashlib.md5(data).hexdigest()}

    def test_a_deep_spilled_request_gets_an_error_reply(self):
        self.c.call("configure", spill={"dir": self.tmp, "threshold": 1 << 20})
        for depth in DEPTHS:
            with self.subTest(depth=depth):
                ref = self.spill(request(6, deep(depth)), "deep-%d.json" % depth)
                self.c.send({"id": 6, "cmd": "executeModel", "$spill": ref})
                self.assert_too_deep(self.c.reply_for(6), 6)
                self.assertFalse(os.path.exists(ref["path"]))
                self.assert_serving()

    def host_call(self, rid, answer):
        """Runs a model that calls the host; ``answer(host_request)`` replies."""
        self.c.send({"id": rid, "cmd": "executeModel", "name": "caller", "msg": {"op": "call", "name": "deep"}})
        msg = self.c.recv()
        while msg.get("cmd") != "deep":
            msg = self.c.recv()
        answer(msg)
        return self.c.reply_for(rid)

    def test_a_deep_host_reply_fails_that_host_call(self):
        self.c.call("addModel", name="caller", file="caller.py")
        self.c.call("configure", spill={"dir": self.tmp, "threshold": 1 << 20})
        for depth in DEPTHS:
            for spilled in (False, True):
                with self.subTest(depth=depth, spilled=spilled):

                    def answer(msg):
                        reply = b'{"id":%d,"ok":true,"result":%s}' % (msg["id"], deep(depth))
                        if spilled:
                            stub = {"id": msg["id"], "ok": True, "$spill": self.spill(reply, "r-%d.json" % depth)}
                            self.c.send(stub)
                        else:
                            self.c.send_raw(frame(reply))

                    reply = self.host_call(9, answer)
                    self.assertEqual(reply["error"]["type"], "HostError", reply)
                    self.assertIn("Cannot read host reply", reply["error"]["message"])
                    self.assertIn("nested deeper", reply["error"]["message"])
                    self.assert_serving()

    def test_a_result_too_deep_to_encode_is_a_serialization_error(self):
        self.c.call("addModel", name="deep", source=DEEP_MODEL)
        for depth in DEPTHS:
            with self.subTest(depth=depth):
                reply = self.c.request("executeModel", name="deep", msg={"depth": depth}, timeout=10)
                self.assertEqual(reply["error"]["type"], "SerializationError", reply)
                # Says what to do, not json's "maximum recursion depth exceeded".
                self.assertRegex(
                    reply["error"]["message"],
                    r"^Cannot send result: not JSON: result is nested too deep for Python's json "
                    r"\(it recurses once per level of nesting, and Python's recursion limit stopped it\): "
                    r"flatten it, or send it as a string$",
                )
                raised = self.c.request("executeModel", name="deep", msg={"depth": depth, "raise": True}, timeout=10)
                self.assertEqual(raised["error"]["type"], "PythonError", raised)
                self.assertEqual(raised["error"]["exception"], "ValueError", raised)
                value = self.c.request("eval", code="x = []\nfor _ in range(%d): x = [x]\nx" % depth, timeout=10)
                self.assertEqual(value["error"]["type"], "SerializationError", value)
                self.assertIn("value is nested too deep for Python's json", value["error"]["message"])
                self.assert_serving()

    def test_a_deep_message_before_auth_is_refused(self):
        c = self.server.connect(auth=False)
        c.send_raw(frame(b'{"id":1,"cmd":"auth","mac":' + deep(DEPTHS[0]) + b"}"))
        reply = c.recv()
        self.assertEqual(reply["error"]["type"], "AuthenticationError", reply)
        self.assertTrue(c.wait_closed())
        self.assert_serving()

    def test_a_deep_unterminated_payload_before_auth_is_refused_unread(self):
        # Scanned, this took minutes with the event loop blocked (the worker's
        # heartbeat then kills it); unread, it is refused at once.
        # Not even its id is read.
        # Above 64 KiB a frame is not even buffered before auth: the
        # connection closes at once, without a reply (protocol §4).
        for payload in (
            unterminated(200_000),
            unterminated(60_000),
            b'{"id":7,"cmd":"auth","mac":' + deep(DEPTHS[0]) + b"}",
        ):
            c = self.server.connect(auth=False)
            c.send_raw(frame(payload))
            if len(payload) > 64 * 1024:
                self.assertTrue(c.wait_closed(timeout=1.0))
            else:
                reply = c.recv(timeout=10)
                self.assertEqual(reply["error"]["type"], "AuthenticationError", reply)
                self.assertIsNone(reply["id"], reply)
                self.assertTrue(c.wait_closed())
            self.assert_serving()

    def test_a_deep_unterminated_payload_is_a_protocol_error_and_others_are_served(self):
        other = self.server.connect()
        self.c.send_raw(frame(unterminated(200_000)) + frame(ping(2)))
        self.assertEqual(other.call("ping"), "pong")
        reply = self.c.reply_for(None, timeout=10)
        self.assertEqual(reply["error"]["type"], "ProtocolError", reply)
        self.assertEqual(self.c.reply_for(2)["result"], "pong")
        self.assert_serving()


if __name__ == "__main__":
    unittest.main()
