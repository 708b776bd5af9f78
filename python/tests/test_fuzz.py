"""Fuzz and property tests of the server's read side against a real server.

Random inputs come from fixed seeds, so every run sends the same bytes. After
every batch the server must still answer ``ping`` on a fresh connection (and
on the same one when the error is recoverable), its connection count must
return to the baseline and its RSS must stay bounded.
"""

import json
import os
import random
import shutil
import socket
import struct
import tempfile
import time
import unittest

from pyproxy_server.framer import Framer

from ._client import Closed, ServerProcess, encode, frame

MAX_FRAME = 1 << 20
KNOWN_ERRORS = {
    "ChecksumError",
    "ProtocolError",
    "AuthenticationError",
    "UnknownCommandError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "ModelLoadError",
    "PathError",
    "SerializationError",
    "PythonError",
    "CancelledError",
    "TimeoutError",
    "SpillError",
    "SessionLostError",
    "OverloadedError",
    "HostError",
}


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


def random_value(rng, depth=0):
    """A random JSON value (small)."""
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**53 + 1, -(2**63), 10**30])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-300, 3.0])
    if kind == 4:
        return "".join(chr(rng.choice([0x41, 0x7A, 0xE9, 0x4E2D, 0x1F600, 0x0, 0x22, 0x5C])) for _ in range(rng.randrange(6)))
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {"k%d" % i: random_value(rng, depth + 1) for i in range(rng.randrange(4))}


class FuzzTest(unittest.TestCase):
    """One server for the whole class (start-up is the slow part)."""

    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="pyproxy-fuzz-")
        cls.server = ServerProcess(root=cls.root, args=("--max-frame-size", str(MAX_FRAME)))
        cls.pid = cls.server.ready["pid"]
        cls.control = cls.server.connect()
        cls.baseline = cls.control.call("serverStatus")["connections"]
        cls.rss_before = rss_kib(cls.pid)

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        shutil.rmtree(cls.root, ignore_errors=True)

    def tearDown(self):
        # Every client the test opened is closed: the server must notice.
        for client in self.server.clients[1:]:
            client.close()
        del self.server.clients[1:]
        self.assert_healthy()

    # -- invariants ---------------------------------------------------------

    def assert_healthy(self):
        fresh = self.server.connect()
        self.assertEqual(fresh.call("ping"), "pong")
        fresh.close()
        self.server.clients.remove(fresh)
        deadline = time.monotonic() + 5
        while True:
            status = self.control.call("serverStatus")
            if status["connections"] == self.baseline and status["inFlight"] == 0:
                break
            if time.monotonic() > deadline:
                self.fail("connections/inFlight not back to baseline: %r" % (status,))
            time.sleep(0.01)
        grown = rss_kib(self.pid) - self.rss_before
        # Generous: the test sends frames up to 1 MiB; a leak of every frame would be far larger.
        self.assertLess(grown, 64 * 1024, "RSS grew by %d KiB" % grown)

    def assert_pong_after(self, client, rid=777001):
        """Send ping; every message before its reply must be a typed error reply."""
        client.send({"id": rid, "cmd": "ping"})
        while True:
            msg = client.recv()
            if msg.get("id") == rid and "ok" in msg:
                self.assertEqual(msg, {"id": rid, "ok": True, "result": "pong"})
                return
            self.assert_error_reply(msg)

    def assert_error_reply(self, msg):
        self.assertIs(msg.get("ok"), False, msg)
        self.assertIn(msg["error"]["type"], KNOWN_ERRORS, msg)
        self.assertIsInstance(msg["error"]["message"], str)

    # -- tests --------------------------------------------------------------

    def test_any_split_of_a_valid_stream_is_decoded_identically(self):
        rng = random.Random(1)
        for _ in range(200):
            payloads = [json.dumps({"id": i, "v": random_value(rng)}).encode() for i in range(rng.randrange(1, 6))]
            stream = b"".join(Framer.encode(p) for p in payloads)
            cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randrange(8)))
            framer = Framer()
            out = []
            prev = 0
            for cut in cuts + [len(stream)]:
                out += framer.feed(stream[prev:cut])
                prev = cut
            self.assertEqual([bytes(p) for p in out], payloads)
            self.assertEqual(framer.buffered, 0)

    def test_split_writes_over_a_socket_get_every_reply(self):
        rng = random.Random(2)
        c = self.server.connect()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for round_ in range(20):
            ids = list(range(round_ * 100 + 10, round_ * 100 + 10 + rng.randrange(1, 8)))
            stream = b"".join(encode({"id": i, "cmd": "ping", "pad": "x" * rng.randrange(100)}) for i in ids)
            cuts = sorted(set(rng.randrange(1, len(stream)) for _ in range(rng.randrange(1, 10))))
            prev = 0
            for cut in cuts + [len(stream)]:
                c.send_raw(stream[prev:cut])
                prev = cut
            for i in ids:
                self.assertEqual(c.reply_for(i)["result"], "pong")

    def test_mutated_frames_close_or_answer_and_never_kill_the_server(self):
        rng = random.Random(3)
        outcomes = {"closed": 0, "recovered": 0, "waiting": 0}
        for _ in range(60):
            payload = json.dumps({"id": 5, "cmd": "ping", "pad": "y" * rng.randrange(30)}).encode()
            data = bytearray(frame(payload))
            pos = rng.randrange(len(data))
            old = data[pos]
            data[pos] = (old + rng.randrange(1, 256)) % 256
            c = self.server.connect()
            c.send_raw(bytes(data))
            region = "magic" if pos < 4 else "version" if pos == 4 else "checksum" if pos < 21 else "length" if pos < 25 else "payload" if pos < 25 + len(payload) else "trailer"
            try:
                if region == "length":
                    new_len = struct.unpack_from(">I", data, 21)[0]
                    if new_len > len(payload):
                        # The server waits for the rest of a (claimed) frame; it must stay responsive.
                        outcomes["waiting"] += 1
                        self.assertEqual(self.control.call("ping"), "pong")
                        continue
                first = c.recv()
                if region == "payload":
                    self.assertEqual(first["error"]["type"], "ChecksumError")
                    self.assertIsNone(first["id"])
                    self.assert_pong_after(c)
                    outcomes["recovered"] += 1
                else:
                    self.fail("%s mutation got a reply: %r" % (region, first))
            except Closed:
                self.assertNotEqual(region, "payload")
                outcomes["closed"] += 1
            finally:
                c.close()
        self.assertTrue(outcomes["closed"] and outcomes["recovered"], outcomes)

    def test_lengths_zero_max_and_above_max(self):
        c = self.server.connect()
        # Length 0: an empty payload is not JSON (recoverable).
        c.send_raw(frame(b""))
        self.assert_error_reply(c.recv())
        # Exactly the limit: a valid request padded to MAX_FRAME bytes is served.
        head = b'{"id":9,"cmd":"ping","pad":"'
        body = head + b"z" * (MAX_FRAME - len(head) - 2) + b'"}'
        self.assertEqual(len(body), MAX_FRAME)
        c.send_raw(frame(body))
        self.assertEqual(c.reply_for(9)["result"], "pong")
        self.assert_pong_after(c)
        # One above: fatal, from the header alone (no payload sent).
        c.send_raw(frame(b"{}", length=MAX_FRAME + 1)[:25])
        self.assertTrue(c.wait_closed())
        d = self.server.connect()
        d.send_raw(frame(b"{}", length=0xFFFFFFFF)[:25])
        self.assertTrue(d.wait_closed())

    def test_wrong_versions_and_markers_are_fatal(self):
        rng = random.Random(4)
        for _ in range(20):
            c = self.server.connect()
            if rng.random() < 0.5:
                c.send_raw(frame(b'{"id":1,"cmd":"ping"}', version=rng.choice([0, 2, 255])))
            else:
                magic = bytes(rng.randrange(256) for _ in range(4))
                if magic == b"PYPX":
                    magic = b"XXXX"
                c.send_raw(frame(b'{"id":1,"cmd":"ping"}', magic=magic))
            self.assertTrue(c.wait_closed())
            c.close()

    def test_garbage_payloads_with_valid_checksums(self):
        rng = random.Random(5)
        fixed = [
            b"\xff\xfe\x00",
            b"\xc3\x28",
            b"\xed\xa0\x80",  # a UTF-8 encoded surrogate
            b"not json",
            b"[1,2,3]",
            b"42",
            b"-0.5e9",
            b'"string"',
            b"null",
            b"true",
            b"{}",
            b'{"id":1}',
            b'{"cmd":"ping"}',
            b'{"id":1.5,"cmd":"ping"}',
            b'{"id":"1","cmd":"ping"}',
            b'{"id":true,"cmd":"ping"}',
            b'{"id":null,"cmd":"ping"}',
            b'{"id":[1],"cmd":"ping"}',
            b'{"id":1,"cmd":7}',
            b'{"id":1,"cmd":["ping"]}',
            b'{"id":1,"cmd":{"a":1}}',
            b'{"id":1,"cmd":null}',
            b'{"id":1e400,"cmd":"ping"}',
            b'{"id":NaN,"cmd":"ping"}',
            b'{"ok":true,"id":424242}',
            b'{"ok":true,"id":[1]}',
            b'{"ok":false,"id":{"a":1},"error":5}',
            b'{"ok":false,"id":3,"error":"x"}',
            b'{"event":"whatever","id":[]}',
            b'{"$spill":5}',
            b'{"$spill":{"path":"/etc/passwd","size":1,"md5":"00"},"id":4}',
            b'{"id":1,"cmd":"ping"} trailing',
            b'{"id":1,"cmd":"ping"}{"id":2}',
            b'{"a":1,"a":2}',
            b"\xef\xbb\xbf{}",
            b" " * 1000,
        ]
        c = self.server.connect()
        for payload in fixed:
            c.send_raw(frame(payload))
            self.assert_pong_after(c)
        for _ in range(200):
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
            c.send_raw(frame(payload))
        self.assert_pong_after(c)

    def test_wrong_argument_types_get_typed_errors_not_crashes(self):
        rng = random.Random(6)
        commands = [
            "addModel", "updateModel", "removeModel", "initModel", "executeModel",
            "serverStatus", "configure", "cancel", "openSession", "closeSession",
            "outputAck", "eval", "nope",
        ]
        keys = ["name", "file", "source", "options", "class", "dataFile", "msg", "spill", "target", "session", "seq", "globals", "locals", "args"]
        c = self.server.connect()
        sent = {}
        for rid in range(100, 400):
            cmd = rng.choice(commands)
            msg = {"id": rid, "cmd": cmd}
            for key in rng.sample(keys, rng.randrange(4)):
                msg[key] = random_value(rng)
            if cmd == "eval":
                msg["code"] = random_value(rng)
                if isinstance(msg["code"], str):
                    msg["code"] = 1  # never run random text as code
            if cmd in ("addModel", "updateModel") and isinstance(msg.get("source"), str):
                msg["source"] = None
            sent[rid] = msg
        for rid, msg in sent.items():
            c.send(msg)
        for rid, msg in sent.items():
            reply = c.reply_for(rid)
            if reply["ok"]:
                continue
            self.assert_error_reply(reply)
            # An internal TypeError surfacing as PythonError means a missing argument check.
            self.assertNotEqual(reply["error"]["type"], "PythonError", (msg, reply))
        self.assert_pong_after(c)

    def test_json_nested_100000_deep_is_a_protocol_error_or_invalid_request(self):
        c = self.server.connect()
        for payload in (
            b"[" * 100000 + b"]" * 100000,
            b'{"a":' * 100000 + b"1" + b"}" * 100000,
        ):
            c.send_raw(frame(payload))
            reply = c.recv()
            self.assertEqual(reply["error"]["type"], "ProtocolError", reply)
            self.assertIsNone(reply["id"])
            self.assert_pong_after(c)
        # A request's id is found without parsing it all: its error reply has it.
        c.send_raw(frame(b'{"id":3,"cmd":"ping","x":' + b"[" * 100000 + b"]" * 100000 + b"}"))
        reply = c.recv()
        self.assertEqual(reply["id"], 3)
        self.assertEqual(reply["error"]["type"], "InvalidRequestError", reply)
        self.assert_pong_after(c)

    def test_nested_results_beyond_the_encoder_depth_are_serialization_errors(self):
        c = self.server.connect()
        # 900 deep parses (below the recursion limit); the reply echoes it through eval.
        value = "[" * 900 + "]" * 900
        reply = c.request("eval", code="import json\njson.loads(%r)" % (value * 1,), timeout=10)
        self.assertIn(reply["ok"], (True, False))
        if not reply["ok"]:
            self.assertEqual(reply["error"]["type"], "SerializationError", reply)
        deep = c.request("eval", code="x = []\nfor _ in range(100000): x = [x]\nx", timeout=10)
        self.assertEqual(deep["error"]["type"], "SerializationError", deep)
        self.assert_pong_after(c)

    def test_huge_strings_up_to_the_frame_limit(self):
        c = self.server.connect()
        rng = random.Random(7)
        for size in (MAX_FRAME - 64, MAX_FRAME // 2):
            text = "".join(rng.choice("ab\u00e9\u4e2d") for _ in range(1024))
            text = (text * (size // len(text.encode()) + 1)).encode()[: size - 64].decode("utf-8", "ignore")
            body = json.dumps({"id": 50, "cmd": text}, ensure_ascii=False).encode()
            self.assertLessEqual(len(body), MAX_FRAME)
            c.send_raw(frame(body))
            reply = c.reply_for(50, timeout=10)
            # The error echoes the command name, so it may itself be too large: either way a typed error.
            self.assertIn(reply["error"]["type"], ("UnknownCommandError", "SerializationError"))
            self.assert_pong_after(c)

    def test_garbage_before_auth_closes_only_that_connection(self):
        rng = random.Random(8)
        for _ in range(10):
            c = self.server.connect(auth=False)
            c.send_raw(frame(bytes(rng.randrange(256) for _ in range(20))))
            reply = c.recv()
            self.assertEqual(reply["error"]["type"], "AuthenticationError")
            self.assertTrue(c.wait_closed())
            c.close()


if __name__ == "__main__":
    unittest.main()


COUNTER = '''
import threading
import time

_lock = threading.Lock()
_runs = [0]


class Model:
    threaded = True  # never the inline fast path: calls queue on the executor

    def execute(self, msg):
        if msg.get("count"):
            return {"runs": _runs[0]}
        with _lock:
            _runs[0] += 1
        time.sleep(msg.get("seconds", 0))
        return {"ok": True}
'''


class AbandonedWorkTest(unittest.TestCase):
    """Calls still queued when their connection closes must not run: nobody waits for them."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="pyproxy-fuzz-")
        with open(os.path.join(self.root, "counter.py"), "w") as f:
            f.write(COUNTER)
        self.server = ServerProcess(root=self.root, args=("--threads", "1"))

    def tearDown(self):
        self.server.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def test_queued_calls_of_a_closed_connection_are_dropped(self):
        control = self.server.connect()
        control.call("addModel", name="counter", file="counter.py")
        flood = self.server.connect()
        flood.send(*[{"id": i, "cmd": "executeModel", "name": "counter", "msg": {"seconds": 0.1}} for i in range(1, 61)])
        flood.close()  # leave without reading a reply
        # With one executor thread this call queues behind whatever the flood left.
        runs = control.call("executeModel", name="counter", msg={"count": True}, timeout=30)["runs"]
        self.assertLess(runs, 60, "every abandoned call ran")
        self.assertEqual(control.call("ping"), "pong")
