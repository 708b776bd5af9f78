"""``Connection.enqueue`` from a call's thread, cancelled at each place where
CPython may raise the cancel's interrupt: a later enqueue must still be
flushed.

An interrupt that fired after ``enqueue`` set ``_flush_pending`` (under its
lock) and before it scheduled the flush left the flag set with no flush
coming: every later enqueue returned early, and the connection's writes (the
cancelled call's reply among them) waited for the host's next frame."""

import asyncio
import sys
import tempfile
import threading
import unittest

from pyproxy_server.connection import Connection
from pyproxy_server.server import Server

from .test_eval import FakeCall, FakeConnection, FakeServer, _no_gc, _opcode_events, _traced_cancel
from .test_read_batch import RecordingTransport


class _Transport(RecordingTransport):
    """Resolves ``written`` (on the loop) once a write holds ``marker``."""

    def __init__(self, loop, marker):
        super().__init__()
        self.written = loop.create_future()
        self.marker = marker

    def write(self, data):
        super().write(data)
        if self.marker in bytes(data) and not self.written.done():
            self.written.set_result(None)


class EnqueueCancelledAtEveryBytecodeTest(unittest.TestCase):
    def test_a_later_enqueue_is_flushed_whichever_place_the_cancel_interrupts(self):
        if not _opcode_events():
            self.skipTest("this Python sends no opcode trace events (3.12.0 and 3.12.1)")
        steps = asyncio.run(self._every_place())
        self.assertGreater(steps, 10)  # enqueue and call_soon_threadsafe were traced

    async def _every_place(self):
        loop = asyncio.get_running_loop()
        with tempfile.TemporaryDirectory() as root:
            server = Server(root, "t")
            server.loop = loop
            server.loop_ident = threading.get_ident()
            try:
                step = 0
                while True:
                    step += 1
                    if not await self._cancel_at(server, step):
                        return step
            finally:
                server.executor.shutdown(wait=True)

    async def _cancel_at(self, server, step):
        """A call's thread enqueues a reply, cancelled at the ``step``-th
        place; another thread enqueues next. False when the first enqueue
        ended before the cancel came."""
        conn = Connection(server)
        transport = _Transport(asyncio.get_running_loop(), b'"after"')
        conn.connection_made(transport)
        await asyncio.sleep(0)  # the hello event goes out
        call = FakeCall(FakeConnection(FakeServer()), step, {"cmd": "executeModel"})
        state, tracer = _traced_cancel(call, step)

        def cancelled():
            call.thread_ident = threading.get_ident()
            sys.settrace(tracer)
            try:
                conn.enqueue(b'{"id":%d,"ok":true,"result":"cancelled"}' % step)
            except KeyboardInterrupt:
                pass
            finally:
                sys.settrace(None)

        thread = threading.Thread(target=cancelled, daemon=True)
        with _no_gc():
            thread.start()
            thread.join(10)  # enqueue only schedules on the loop: it needs the loop idle
        self.assertFalse(thread.is_alive(), "enqueue cancelled at place %d hangs" % step)
        later = threading.Thread(target=conn.enqueue, args=(b'{"id":0,"ok":true,"result":"after"}',), daemon=True)
        later.start()
        later.join(10)
        try:
            await asyncio.wait_for(transport.written, 5)
        except asyncio.TimeoutError:
            self.fail("enqueue cancelled at place %d: a later enqueue is never flushed" % step)
        conn.connection_lost(None)
        return state["came"]


if __name__ == "__main__":
    unittest.main()
