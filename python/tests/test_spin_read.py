"""Spin-read (``--spin-us``): a fast client's next request is read by polling
its socket instead of waiting on the event loop, without starving anything
else the loop serves. Real server processes, real sockets."""

import asyncio
import contextlib
import socket
import tempfile
import threading
import time
import unittest

from pyproxy_server import capture
from pyproxy_server.connection import Connection
from pyproxy_server.server import Server

from ._client import Client
from .test_server import ServerTestCase


def _until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    return predicate()


class SpinReadTest(ServerTestCase):
    # 50 ms: every request of this sequential test client counts as fast.
    args = ("--spin-us", "50000")

    def test_sequential_requests_are_read_by_spinning(self):
        c = self.connect()
        c.call("addModel", name="d", file="doubler.py")
        for x in range(200):
            self.assertEqual(c.call("executeModel", name="d", msg={"x": x}), {"y": 2 * x})
        for _ in range(100):
            self.assertEqual(c.call("ping"), "pong")
        # Most requests after the first few came in while the server polled.
        self.assertGreater(c.call("serverStatus")["spinReads"], 100)

    @contextlib.contextmanager
    def _hammering(self):
        """A client sending pings back to back from a thread, for the ``with`` body."""
        a = self.connect()
        stop = threading.Event()
        errors = []
        calls = [0]

        def hammer():
            try:
                while not stop.is_set():
                    a.call("ping")
                    calls[0] += 1
            except Exception as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            self.assertTrue(_until(lambda: calls[0] > 50), "the first client got no replies")
            yield
        finally:
            stop.set()
            thread.join()
        self.assertEqual(errors, [])

    def test_the_loop_accepts_and_serves_another_client_while_one_keeps_it_busy(self):
        with self._hammering():
            # Accepting, authenticating and answering b needs the loop: polling a must give it back.
            b = self.connect()
            self.assertEqual(b.call("ping"), "pong")
            self.assertEqual(b.call("serverStatus")["connections"], 2)

    def test_timers_fire_while_a_client_keeps_the_server_busy(self):
        with self._hammering():
            # A connection that never authenticates is closed by a 2 s timer on the loop.
            silent = self.connect(auth=False)
            self.assertTrue(silent.wait_closed(timeout=10.0))

    def test_a_client_that_leaves_while_polled_is_closed(self):
        a = self.connect()
        for _ in range(20):
            a.call("ping")
        a.close()
        b = self.connect()
        self.assertTrue(_until(lambda: b.call("serverStatus")["connections"] == 1))

    def test_threaded_calls_and_polled_requests_mix(self):
        c = self.connect()
        c.call("addModel", name="slow", file="slow.py")
        c.send({"id": 1, "cmd": "executeModel", "name": "slow", "msg": {"seconds": 0.2}})
        for _ in range(20):
            self.assertEqual(c.call("ping"), "pong")
        self.assertEqual(c.reply_for(1)["result"], {"tag": "v1"})
        for _ in range(20):
            self.assertEqual(c.call("ping"), "pong")


# Forced inline: runs on the loop thread, which it reports on.
PROBE = """
import asyncio

class Model:
    inline = True

    def execute(self, msg):
        async def two():
            return 2
        return {"hidden": asyncio._get_running_loop() is None, "run": asyncio.run(two())}
"""


class PolledInlineCallsTest(unittest.TestCase):
    """In process, over a socket pair: inline mode stays on from one polled read
    to the next, and is undone before the loop runs anything else."""

    def test_models_see_no_running_loop_and_the_loop_gets_it_back(self):
        async def main():
            loop = asyncio.get_running_loop()
            with tempfile.TemporaryDirectory() as root:
                server = Server(root, "t", spin=0.05)
                server.loop = loop
                server.loop_ident = threading.get_ident()
                ours, theirs = socket.socketpair()
                transport, _ = await loop.connect_accepted_socket(lambda: Connection(server), ours)
                # Between reads the loop runs this: it must see itself running and the default output.
                seen = []
                done = loop.create_future()

                def look():
                    seen.append((asyncio._get_running_loop() is loop, capture.current_sink() is None))
                    if not done.done():
                        loop.call_later(0.001, look)

                look()
                client = Client(theirs)

                def calls():
                    client.call("addModel", name="probe", source=PROBE)
                    return [client.call("executeModel", name="probe", msg={}) for _ in range(300)]

                try:
                    results = await loop.run_in_executor(None, calls)
                finally:
                    done.set_result(None)
                    transport.close()
                    theirs.close()
                self.assertEqual(results, [{"hidden": True, "run": 2}] * 300)
                self.assertGreater(server.spin_reads, 100)
                self.assertGreater(len(seen), 1)
                self.assertEqual(set(seen), {(True, True)})
                server.executor.shutdown(wait=False)

        asyncio.run(main())


class NoSpinTest(ServerTestCase):
    args = ("--spin-us", "0")
    shared = True

    def test_spin_0_never_polls(self):
        c = self.connect()
        for _ in range(100):
            self.assertEqual(c.call("ping"), "pong")
        self.assertEqual(c.call("serverStatus")["spinReads"], 0)


if __name__ == "__main__":
    unittest.main()
