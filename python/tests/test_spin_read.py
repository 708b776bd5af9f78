"""Spin-read (``--spin-us``): a fast client's next request is read by polling
its socket instead of waiting on the event loop, without starving anything
else the loop serves. Real server processes, real sockets."""

import contextlib
import threading
import time
import unittest

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
