"""``stopServer`` looks at ``/proc`` once for its process group, not twice.

Its reply's ``closeMs`` counts the group's other processes
(``group_grace_ms``: a scan of ``/proc``, ~1.4 ms with ~110 processes), and
the stop it begins worked the same out again for its ``stopping`` event; it
now takes the reply's. (The exit's own ``end_own_group`` looks again, as it
must: model code may have started something since.)
"""

import asyncio
import shutil
import socket
import tempfile
import threading
import unittest
from unittest import mock

from pyproxy_server import commands, server as server_module
from pyproxy_server.connection import Connection
from pyproxy_server.server import Server

from ._client import Client


class StopScansTest(unittest.TestCase):
    def test_stop_server_scans_the_group_once(self):
        root = tempfile.mkdtemp(prefix="pyproxy-stop-")
        loop = asyncio.new_event_loop()
        ours, theirs = socket.socketpair()
        scans = []

        def counted():
            # (A test process leads no group: the real one looks at nothing.)
            scans.append(threading.current_thread().name)
            return 0

        guard = None
        timed_out = []
        try:
            server = Server(root, "t")
            server.loop = loop
            server.loop_ident = threading.get_ident()
            client = Client(theirs)

            async def connect():
                await loop.connect_accepted_socket(lambda: Connection(server), ours)

            loop.run_until_complete(connect())
            replies = []
            asker = threading.Thread(target=lambda: replies.append(client.call("stopServer")), daemon=True)
            with mock.patch.object(commands, "group_grace_ms", counted), \
                    mock.patch.object(server_module, "group_grace_ms", counted):
                asker.start()
                # Only when the stop never ends the loop (the test fails then).
                guard = loop.call_later(60, lambda: (timed_out.append(True), loop.stop()))
                loop.run_forever()
            asker.join(10)
            self.assertEqual(timed_out, [])
            self.assertEqual(replies, [{"stopping": True}])
            self.assertEqual(len(scans), 1, scans)
        finally:
            if guard is not None:
                guard.cancel()
            theirs.close()
            ours.close()
            loop.close()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
