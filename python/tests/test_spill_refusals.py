"""Spill files the file system refuses (a full /dev/shm): the message goes
inline when it fits the frame limit, else a SpillError naming the directory;
a bounded warning either way (spill_refusals, Connection._finish).

The refusal is real: the file size limit (RLIMIT_FSIZE, which Python's
ignored SIGXFSZ turns into EFBIG on the write) is lowered around the call,
so the spill file's write fails part-way as on a full file system."""

import base64
import json
import os
import asyncio
import resource
import shutil
import tempfile
import unittest

from pyproxy_server import big_json
from pyproxy_server.connection import Connection
from pyproxy_server.server import Server
from pyproxy_server.spill import SpillSettings

from ._client import encode
from .test_read_batch import ConnectionCase, replies

# The file size limit while a refused write is made (bytes): any spill file above it fails.
LIMIT = 64 * 1024
BIG_RESULT = {"data": "x" * (4 * LIMIT)}


class FileSizeLimit:
    """``with FileSizeLimit():`` files of this process cannot grow past ``LIMIT``."""

    def __enter__(self):
        self._old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, self._old[1]))
        return self

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_FSIZE, self._old)


class RefusedSpillTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="pyproxy-refused-test-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        root = tempfile.mkdtemp(prefix="pyproxy-refused-root-")
        self.addCleanup(shutil.rmtree, root, True)
        self.server = Server(root, "t")
        self.addCleanup(self.server.executor.shutdown)
        self.now = [1000.0]
        self.server.spill_refusals._clock = lambda: self.now[0]
        self.conn = Connection(self.server)
        self.conn.id = "c3"
        self.conn.spill = SpillSettings.from_wire({"dir": self.dir, "threshold": 1000})

    def reply(self, rid, result):
        with FileSizeLimit():
            payload = self.conn.encode_reply(rid, result)
        return json.loads(payload)

    def test_a_reply_whose_file_is_refused_goes_inline_and_leaves_no_file(self):
        with self.assertLogs("pyproxy_server.spill", "WARNING") as logs:
            message = self.reply(5, BIG_RESULT)
        self.assertEqual(message, {"id": 5, "ok": True, "result": BIG_RESULT})
        self.assertEqual(os.listdir(self.dir), [])
        self.assertEqual((self.server.spill_refusals.failures, self.server.spill_refusals.inline), (1, 1))
        self.assertEqual(len(logs.records), 1)
        line = logs.records[0].getMessage()
        self.assertIn("cannot write a spill file in %s (File too large)" % os.path.realpath(self.dir), line)
        self.assertIn("went inline instead", line)

    def test_a_reply_with_string_segments_goes_inline_too(self):
        self.conn.spill = SpillSettings.from_wire({"dir": self.dir, "threshold": 1000, "strings": True, "crc32": True})
        self.conn._big_seen = True  # as after a first big message: big strings go to segments
        result = {"text": "\u20ac\"" * (2 * big_json.BIG), "n": 1}
        with self.assertLogs("pyproxy_server.spill", "WARNING"):
            message = self.reply(6, result)
        self.assertEqual(message, {"id": 6, "ok": True, "result": result})
        self.assertEqual(os.listdir(self.dir), [])
        self.assertEqual(self.server.spill_refusals.inline, 1)

    def test_a_reply_with_bytes_segments_goes_inline_with_its_bytes_as_base64(self):
        self.conn._send_bytes = True  # the host reads bytes (its auth said so)
        self.conn.spill = SpillSettings.from_wire({"dir": self.dir, "threshold": 1000, "bytes": True})
        blob = bytes(range(256)) * (LIMIT // 64)
        with self.assertLogs("pyproxy_server.spill", "WARNING"):
            message = self.reply(9, {"b": blob})
        self.assertEqual(message["$bytes"], [["result", "b"]], sorted(message))
        self.assertEqual(base64.b64decode(message["result"]["b"]), blob)
        self.assertEqual(os.listdir(self.dir), [])
        self.assertEqual(self.server.spill_refusals.inline, 1)

    def test_events_go_inline(self):
        pieces = big_json.encode({"event": "output", "data": "y" * (4 * LIMIT)})
        with FileSizeLimit(), self.assertLogs("pyproxy_server.spill", "WARNING"):
            payload = self.conn._finish(pieces, None, "e")
        self.assertEqual(json.loads(payload)["data"], "y" * (4 * LIMIT))
        self.assertEqual(os.listdir(self.dir), [])

    def test_the_warning_is_bounded_to_one_an_interval_with_a_count_of_the_others(self):
        with self.assertLogs("pyproxy_server.spill", "WARNING") as logs:
            for rid in range(1, 4):
                self.assertTrue(self.reply(rid, BIG_RESULT)["ok"])
            self.now[0] += self.server.spill_refusals.INTERVAL
            self.assertTrue(self.reply(4, BIG_RESULT)["ok"])
        self.assertEqual(len(logs.records), 2)
        self.assertIn("(2 more refused in the 60 s before, not logged)", logs.records[1].getMessage())
        self.assertEqual((self.server.spill_refusals.failures, self.server.spill_refusals.inline), (4, 4))

    def test_above_the_frame_limit_it_is_a_spill_error_naming_the_directory_and_free_space(self):
        self.conn._max_frame = 2 * LIMIT
        with self.assertLogs("pyproxy_server.spill", "WARNING") as logs:
            message = self.reply(7, BIG_RESULT)
        self.assertEqual(message["error"]["type"], "SpillError", message)
        text = message["error"]["message"]
        self.assertIn("Cannot write spill file in %s: File too large (" % os.path.realpath(self.dir), text)
        self.assertRegex(text, r"\(\d+ bytes free there\); the message's \d+ bytes are above the frame limit 131072")
        self.assertIn("cannot go inline", logs.records[0].getMessage())
        self.assertEqual((self.server.spill_refusals.failures, self.server.spill_refusals.inline), (1, 0))
        self.assertEqual(os.listdir(self.dir), [])

    def test_a_failure_that_is_no_refusal_stays_a_spill_error(self):
        # EISDIR: a directory where the file goes (not space, not permissions).
        os.mkdir(os.path.join(self.dir, "py-c3-8.json"))
        message = json.loads(self.conn.encode_reply(8, BIG_RESULT))
        self.assertEqual(message["error"]["type"], "SpillError", message)
        self.assertEqual(self.server.spill_refusals.failures, 0)


HOST_BYTES_SOURCE = """
from pyproxy import host

class Model:
    threaded = True
    def execute(self, msg):
        return host.call("store", {"b": bytes(range(256)) * %d})
""" % (LIMIT // 64)


class RefusedHostRequestTest(ConnectionCase):
    def test_a_host_request_with_bytes_segments_goes_inline_with_its_bytes_as_base64(self):
        # Its spill file would hold the bytes raw after the JSON: refused, the
        # request goes inline with them as base64, where it failed the call.
        spill_dir = tempfile.mkdtemp(prefix="pyproxy-refused-test-")
        self.addCleanup(shutil.rmtree, spill_dir, True)
        blob = bytes(range(256)) * (LIMIT // 64)

        async def wait_for(transport, found):
            for _ in range(1000):
                got = [m for m in replies(b"".join(transport.writes)) if found(m)]
                if got:
                    return got[0]
                await asyncio.sleep(0.005)
            self.fail("nothing came")

        async def body(server, conn, transport):
            conn._send_bytes = True  # the host reads bytes (its auth said so)
            conn.data_received(encode({"id": 1, "cmd": "configure", "spill": {"dir": spill_dir, "threshold": 1000, "bytes": True}}))
            conn.data_received(encode({"id": 2, "cmd": "addModel", "name": "m", "source": HOST_BYTES_SOURCE}))
            self.assertTrue((await wait_for(transport, lambda m: m.get("id") == 2))["ok"])
            with FileSizeLimit(), self.assertLogs("pyproxy_server.spill", "WARNING"):
                conn.data_received(encode({"id": 3, "cmd": "executeModel", "name": "m", "msg": {}}))
                request = await wait_for(transport, lambda m: m.get("cmd") == "store" or m.get("id") == 3)
                self.assertEqual(request.get("cmd"), "store", request)
            self.assertNotIn("$spill", request)
            self.assertEqual(request["$bytes"], [["args", "b"]], sorted(request))
            self.assertEqual(base64.b64decode(request["args"]["b"]), blob)
            conn.data_received(encode({"id": request["id"], "ok": True, "result": "stored"}))
            reply = await wait_for(transport, lambda m: m.get("id") == 3 and "cmd" not in m)
            self.assertEqual(reply, {"id": 3, "ok": True, "result": "stored"})
            self.assertEqual(os.listdir(spill_dir), [])
            self.assertEqual((server.spill_refusals.failures, server.spill_refusals.inline), (1, 1))

        self.run_in_process(body)


if __name__ == "__main__":
    unittest.main()
