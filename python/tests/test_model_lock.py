"""``ModelLock`` (a thread-unsafe model's lock) and ``pyproxy.Lock`` on
their own: hand-overs first come, first served, a cancel waking its waiter."""

import threading
import unittest

from pyproxy import CancelledError, Lock
from pyproxy_server.model_lock import ModelLock


class FakeCall:
    """What ``ModelLock.acquire_for`` reads of a call: a cancel sets
    ``interrupted`` and calls ``wake`` (``CallRunner.cancel``)."""

    def __init__(self):
        self.interrupted = False
        self.wake = None

    def cancel(self):
        self.interrupted = True
        if self.wake is not None:
            self.wake()


def queued(lock, n):
    """Waits until ``n`` waiters queue on ``lock`` (each thread's wait is an event we cannot await)."""
    done = threading.Event()
    while len(lock._waiters) < n:
        done.wait(0.001)


class ModelLockTest(unittest.TestCase):
    def start(self, target):
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10)
        return thread

    def test_waiters_are_handed_the_lock_in_the_order_they_came(self):
        lock = ModelLock()
        lock.acquire()
        order = []

        def waiter(i):
            with lock:
                order.append(i)

        threads = []
        for i in range(6):
            threads.append(self.start(lambda i=i: waiter(i)))
            queued(lock, i + 1)
        lock.release()
        for thread in threads:
            thread.join(10)
        self.assertEqual(order, list(range(6)))
        self.assertFalse(lock.locked())

    def test_a_cancel_wakes_its_waiter_without_the_lock_and_the_others_keep_their_turn(self):
        lock = ModelLock()
        lock.acquire()
        calls = [FakeCall() for _ in range(3)]
        results = [None] * 3
        order = []

        def waiter(i):
            results[i] = lock.acquire_for(calls[i])
            if results[i]:
                order.append(i)
                lock.release()

        threads = []
        for i in range(3):
            threads.append(self.start(lambda i=i: waiter(i)))
            queued(lock, i + 1)
        calls[1].cancel()
        threads[1].join(10)  # was: polled until the holder released (here never)
        self.assertFalse(threads[1].is_alive())
        self.assertIs(results[1], False)
        self.assertIsNone(calls[1].wake)  # restored
        self.assertTrue(lock.locked())
        lock.release()
        for thread in threads:
            thread.join(10)
        self.assertEqual(order, [0, 2])
        self.assertFalse(lock.locked())

    def test_a_call_cancelled_before_it_queued_does_not_wait(self):
        lock = ModelLock()
        lock.acquire()
        call = FakeCall()
        call.interrupted = True  # its cancel came before wake was set: nothing woke it
        self.assertFalse(lock.acquire_for(call))
        self.assertEqual(len(lock._waiters), 0)
        lock.release()
        self.assertFalse(lock.locked())

    def test_a_timed_out_waiter_leaves_the_queue(self):
        lock = ModelLock()
        lock.acquire()
        self.assertFalse(lock.acquire(timeout=0.01))
        self.assertFalse(lock.acquire(False))
        self.assertEqual(len(lock._waiters), 0)
        lock.release()
        self.assertTrue(lock.acquire(timeout=0.01))
        lock.release()

    def test_release_if_owned_releases_only_the_holders_lock(self):
        lock = ModelLock()
        lock.release_if_owned()  # free: nothing
        lock.acquire()
        other = threading.Thread(target=lock.release_if_owned)
        other.start()
        other.join()
        self.assertTrue(lock.locked())  # another thread's
        lock.release_if_owned()
        self.assertFalse(lock.locked())


class QueuedWorkTest(unittest.TestCase):
    def test_queued_work_is_handed_the_lock_in_its_turn_and_releases_it(self):
        lock = ModelLock()
        granted = []
        lock.queue(lambda: granted.append("free"))  # free: at once
        self.assertEqual(granted, ["free"])
        self.assertTrue(lock.locked())
        lock.queue(lambda: granted.append("second"))
        self.assertEqual(granted, ["free"])
        lock.release()  # handed over: still held, for the queued work
        self.assertEqual(granted, ["free", "second"])
        self.assertTrue(lock.locked())
        lock.claim()
        lock.release_if_owned()
        self.assertFalse(lock.locked())


class PublicLockTest(unittest.TestCase):
    def test_outside_a_call_it_is_a_plain_lock(self):
        lock = Lock()
        with lock:
            self.assertTrue(lock.locked())
            self.assertFalse(lock.acquire(False))
            self.assertFalse(lock.acquire(timeout=0.01))
        self.assertFalse(lock.locked())
        self.assertRaises(RuntimeError, lock.release)

    def test_cancelled_error_is_pyproxys(self):
        from pyproxy_server.errors import CancelledError as ServerCancelledError

        self.assertIs(CancelledError, ServerCancelledError)


if __name__ == "__main__":
    unittest.main()
