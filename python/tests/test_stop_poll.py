"""A stop ends the loop as its last connection closes, not at its next poll.

``Server._begin_stop`` closes the connections, whose ends come a loop turn or
two later; it then looked at them every 10 ms (``STOP_POLL``), so each stop
(a pool's close, a restart's, every test's) waited ~10 ms more for nothing
(a pool's close of one worker 24.8 -> 9.5 ms, median, load ~9). The look it
schedules is kept for what else a stop waits for (its models' ``close()``).
"""

import asyncio
import shutil
import socket
import tempfile
import threading
import unittest

from pyproxy_server.connection import Connection
from pyproxy_server.server import Server


class StopPollTest(unittest.TestCase):
    def test_the_last_connection_s_end_stops_the_loop(self):
        root = tempfile.mkdtemp(prefix="pyproxy-stop-")
        loop = asyncio.new_event_loop()
        ours, theirs = socket.socketpair()
        looks = []
        real_call_later = loop.call_later

        def call_later(delay, callback, *args):
            handle = real_call_later(delay, callback, *args)
            if getattr(callback, "__name__", None) == "_wait_closed":
                looks.append(handle)
            return handle

        loop.call_later = call_later
        guard = None
        timed_out = []
        try:
            server = Server(root, "t")
            # A look that comes only after the guard below: the stop must not
            # need it.
            server.STOP_POLL = 3600
            server.loop = loop
            server.loop_ident = threading.get_ident()

            async def connect_then_stop():
                await loop.connect_accepted_socket(lambda: Connection(server), ours)
                self.assertEqual(len(server.connections), 1)
                server.stop(0)

            loop.run_until_complete(connect_then_stop())
            # Only when the stop never ends the loop (the test fails then).
            guard = real_call_later(60, lambda: (timed_out.append(True), loop.stop()))
            loop.run_forever()
            self.assertEqual(server.connections, {})
            self.assertTrue(server.stopping)
            # A look was scheduled (the connection was still open at the
            # stop), and the connection's end made it unneeded.
            self.assertTrue(looks)
            self.assertTrue(all(handle.cancelled() for handle in looks), looks)
            self.assertEqual(timed_out, [])
        finally:
            if guard is not None:
                guard.cancel()
            theirs.close()
            ours.close()
            loop.close()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
