"""A Python -> host request spilled to a file, in process: a cancel that
comes between the file's writing and the queueing of its stub waits until
the stub is queued (else the file was left behind), and a request that
fails before it is queued removes its file."""

import asyncio
import os
import shutil
import tempfile
import threading
import time
import types
import unittest
from unittest import mock

from pyproxy_server import spill
from pyproxy_server.connection import Connection
from pyproxy_server.execution import CallRunner
from pyproxy_server.spill import SpillSettings

from ._client import encode
from .test_read_batch import ConnectionCase, replies

SOURCE = """
from pyproxy import host

class Model:
    threaded = True
    def execute(self, msg):
        try:
            return {"answer": host.call("echo", {"data": "x" * 5000})}
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            return {"error": type(exc).__name__, "message": str(exc)}
"""


class HostRequestSpillTest(ConnectionCase):
    def run_case(self, after_write):
        """Runs the model's host call with a spill threshold of 1 KiB;
        ``after_write(conn, call_id)`` runs on the call's thread right after
        the spill file was written. Returns (messages written, spill files)."""
        spill_dir = tempfile.mkdtemp(prefix="pyproxy-test-")
        self.addCleanup(shutil.rmtree, spill_dir)
        out = {}

        async def body(server, conn, transport):
            async def reply(rid):
                for _ in range(1000):
                    found = [r for r in replies(b"".join(transport.writes)) if r.get("id") == rid and "cmd" not in r]
                    if found:
                        return found[0]
                    await asyncio.sleep(0.005)
                self.fail("no reply to %d" % rid)

            conn.data_received(encode({"id": 1, "cmd": "configure", "spill": {"dir": spill_dir, "threshold": 1024}}))
            conn.data_received(encode({"id": 2, "cmd": "addModel", "name": "m", "source": SOURCE}))
            self.assertTrue((await reply(2))["ok"])
            write = SpillSettings.write

            def written(settings, pieces, name, strings=None):
                ref = write(settings, pieces, name, strings)
                if name.startswith("py-%s-r" % conn.id):
                    after_write(conn, 3)
                return ref

            with mock.patch.object(SpillSettings, "write", written):
                conn.data_received(encode({"id": 3, "cmd": "executeModel", "name": "m", "msg": {}}))
                out["reply"] = await reply(3)
            out["messages"] = replies(b"".join(transport.writes))
            out["files"] = sorted(os.listdir(spill_dir))

        self.run_in_process(body)
        return out

    def test_a_cancel_right_after_the_file_is_written_removes_it(self):
        def cancel(conn, rid):
            # As if the host's cancel were read now: on the loop thread.
            done = threading.Event()
            conn._loop.call_soon_threadsafe(lambda: (conn.cancel_call(rid), done.set()))
            self.assertTrue(done.wait(5))

        out = self.run_case(cancel)
        self.assertEqual(out["reply"]["ok"], False)
        self.assertEqual(out["reply"]["error"]["type"], "CancelledError")
        # Interrupted before its stub was queued: never sent, and its file goes.
        self.assertEqual([m for m in out["messages"] if m.get("cmd") == "echo"], [])
        self.assertEqual(out["files"], [])

    def test_a_request_that_fails_before_it_is_queued_removes_its_file(self):
        def fail(conn, rid):
            raise RuntimeError("failed between the file and its stub")

        out = self.run_case(fail)
        self.assertEqual(out["reply"]["ok"], True)
        self.assertEqual(out["reply"]["result"]["error"], "RuntimeError")
        self.assertEqual([m for m in out["messages"] if m.get("cmd") == "echo"], [])
        self.assertEqual(out["files"], [])


    def test_a_cancel_during_a_long_write_stops_it(self):
        # The shield starts once the file is written: a write that takes long
        # (a slow disk) stops at the cancel and removes its file, instead of
        # keeping the thread past CallExecutor.STUCK_GRACE.
        write_all = spill._write_all
        started = []

        def slow(f, pieces):
            started.append(time.monotonic())
            conn = self.conn
            conn._loop.call_soon_threadsafe(conn._loop.call_later, 0.05, conn.cancel_call, 3)
            for _ in range(100):
                time.sleep(0.02)  # 2 s in all
            write_all(f, pieces)

        made = Connection.connection_made

        def connection_made(conn, transport):
            self.conn = conn
            return made(conn, transport)

        with mock.patch.object(spill, "_write_all", slow), mock.patch.object(Connection, "connection_made", connection_made):
            out = self.run_case(lambda conn, rid: None)
            took = time.monotonic() - started[0]
        self.assertEqual(out["reply"]["error"]["type"], "CancelledError")
        self.assertLess(took, 1.0, "the write went on after the cancel")
        self.assertEqual([m for m in out["messages"] if m.get("cmd") == "echo"], [])
        self.assertEqual(out["files"], [])
    def test_a_configure_meanwhile_does_not_keep_it_from_removing_its_file(self):
        other = tempfile.mkdtemp(prefix="pyproxy-test-")
        self.addCleanup(shutil.rmtree, other)

        def reconfigure_and_fail(conn, rid):
            conn.spill = SpillSettings(other, 1024)  # as a configure read now would
            raise RuntimeError("failed between the file and its stub")

        out = self.run_case(reconfigure_and_fail)
        self.assertEqual(out["reply"]["result"]["error"], "RuntimeError")
        self.assertEqual(out["files"], [], "the file in the directory it was written to")


class ShieldTest(unittest.TestCase):
    def call(self, interrupted=False):
        return types.SimpleNamespace(
            lock=threading.Lock(), interrupted=interrupted, shielded=False, thread_ident=threading.get_ident()
        )

    def test_a_call_cancelled_already_is_interrupted_at_once(self):
        call = self.call(interrupted=True)
        with self.assertRaises(KeyboardInterrupt):
            CallRunner.shield(call)
        self.assertFalse(call.shielded)

    def test_a_cancel_during_the_shield_is_raised_when_it_ends(self):
        call = self.call()
        CallRunner.shield(call)
        self.assertTrue(call.shielded)
        call.interrupted = True  # what CallRunner.cancel does while shielded (no injection)
        with self.assertRaises(KeyboardInterrupt):
            CallRunner.unshield(call)
        self.assertFalse(call.shielded)
        quiet = self.call()
        CallRunner.shield(quiet)
        CallRunner.unshield(quiet)  # no cancel: nothing raised
        self.assertFalse(quiet.shielded)


if __name__ == "__main__":
    unittest.main()
