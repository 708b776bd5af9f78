"""Unit tests of ``CallExecutor`` and ``ElasticExecutor`` (in process, real threads)."""

import logging
import threading
import unittest
from unittest import mock

from pyproxy_server.call_executor import CallExecutor
from pyproxy_server.elastic_executor import ElasticExecutor

WAIT = 5.0


class Blocker:
    """A work item that blocks until released and records its thread."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()
        self.ident = None

    def __call__(self, _arg):
        self.ident = threading.get_ident()
        self.started.set()
        self.release.wait(WAIT * 4)


def ran(arg):
    arg.set()


class QuietLogs:
    """Keeps the executors' expected warnings and tracebacks out of the test output."""

    def quiet(self):
        logger = logging.getLogger("pyproxy_server")
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        self.addCleanup(logger.setLevel, level)


def until(predicate, timeout=WAIT):
    """Waits for a condition another thread makes true (thread exits have no event)."""
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        done.wait(0.01)
    return predicate()


class CallExecutorTest(unittest.TestCase, QuietLogs):
    def setUp(self):
        self.quiet()
        self.executor = CallExecutor(1, max_stuck=1)
        self.blockers = []

    def tearDown(self):
        for blocker in self.blockers:
            blocker.release.set()
        self.executor.shutdown()

    def block(self):
        blocker = Blocker()
        self.blockers.append(blocker)
        self.executor.submit(blocker, None)
        self.assertTrue(blocker.started.wait(WAIT))
        return blocker

    def test_work_waits_for_a_busy_thread_and_threads_are_reused(self):
        blocker = self.block()
        later = threading.Event()
        self.executor.submit(ran, later)
        self.assertFalse(later.wait(0.05))
        blocker.release.set()
        self.assertTrue(later.wait(WAIT))
        for _ in range(20):
            done = threading.Event()
            self.executor.submit(ran, done)
            self.assertTrue(done.wait(WAIT))
        self.assertEqual(self.executor.threads, 1)

    def test_a_stuck_thread_is_replaced_and_queued_work_runs(self):
        blocker = self.block()
        queued = threading.Event()
        self.executor.submit(ran, queued)
        self.assertIsNone(self.executor.mark_stuck(blocker.ident))
        self.assertTrue(queued.wait(WAIT))
        self.assertEqual((self.executor.threads, len(self.executor.stuck), self.executor.replaced), (2, 1, 1))
        # New work runs on the replacement while the stuck thread still blocks.
        done = threading.Event()
        self.executor.submit(ran, done)
        self.assertTrue(done.wait(WAIT))
        self.assertFalse(blocker.release.is_set())

    def test_a_stuck_thread_that_returns_is_spare_and_exits(self):
        blocker = self.block()
        self.assertIsNone(self.executor.mark_stuck(blocker.ident))
        done = threading.Event()
        self.executor.submit(ran, done)  # starts the replacement
        self.assertTrue(done.wait(WAIT))
        blocker.release.set()
        self.assertTrue(until(lambda: self.executor.threads == 1), self.executor.threads)
        self.assertEqual(len(self.executor.stuck), 0)
        self.assertIsNone(self.executor.wedged)

    def test_beyond_max_stuck_it_is_wedged_and_starts_no_thread(self):
        first = self.block()
        self.assertIsNone(self.executor.mark_stuck(first.ident))
        second = self.block()  # on the replacement
        self.assertNotEqual(first.ident, second.ident)
        reason = self.executor.mark_stuck(second.ident)
        self.assertIn("2 call threads are stuck", reason)
        self.assertIn("--max-stuck-threads", reason)
        self.assertEqual(self.executor.wedged, reason)
        self.assertEqual(self.executor.threads, 2)
        # Marking again, or an unknown thread, changes nothing.
        self.assertIsNone(self.executor.mark_stuck(second.ident))
        self.assertIsNone(self.executor.mark_stuck(threading.get_ident()))

    def test_the_wedged_reason_names_the_calls_that_hold_the_stuck_threads(self):
        # An operator paged for a wedged worker read "17 call threads are
        # stuck" and had to find the model in the worker's log file.
        first = self.block()
        self.assertIsNone(self.executor.mark_stuck(first.ident, "executeModel of model 'locked'"))
        second = self.block()
        reason = self.executor.mark_stuck(second.ident, "executeModel of model 'locked'")
        self.assertEqual(
            reason,
            "2 call threads are stuck in cancelled calls (blocked outside Python bytecode: a lock, a sleep or "
            "I/O without a timeout of its own): executeModel of model 'locked' (2); at most 1 are replaced "
            "(--max-stuck-threads)",
        )

    def test_the_wedged_reason_names_the_most_frequent_calls_first_and_counts_the_rest(self):
        # The tenth stuck thread, one beyond max_stuck, wedges the executor.
        executor = CallExecutor(1, max_stuck=9)
        blockers = []
        try:
            labels = ["a"] * 3 + ["h"] * 2 + ["b", "c", "d", "e", "f"]
            reason = None
            for label in labels:
                blocker = Blocker()
                blockers.append(blocker)
                executor.submit(blocker, None)
                self.assertTrue(blocker.started.wait(WAIT))
                reason = executor.mark_stuck(blocker.ident, "executeModel of model %r" % label)
            self.assertIn(
                ": executeModel of model 'a' (3), executeModel of model 'h' (2), executeModel of model 'b' (1), "
                "executeModel of model 'c' (1), executeModel of model 'd' (1), and 2 more; at most 9", reason)
        finally:
            for blocker in blockers:
                blocker.release.set()
            executor.shutdown()

    def test_a_thread_stuck_beyond_max_stuck_is_not_replaced_later_either(self):
        first = self.block()
        self.assertIsNone(self.executor.mark_stuck(first.ident))
        second = self.block()
        self.assertIsNotNone(self.executor.mark_stuck(second.ident))
        # size + max_stuck = 2 threads at most: work waits instead of a third.
        later = threading.Event()
        self.assertIsNone(self.executor.submit(ran, later))
        self.assertEqual((self.executor.threads, len(self.executor.stuck)), (2, 1))
        second.release.set()
        self.assertTrue(later.wait(WAIT))
        self.assertEqual(self.executor.threads, 2)

    def test_submit_returns_why_when_no_thread_can_be_started(self):
        executor = CallExecutor(2)
        self.addCleanup(executor.shutdown)
        with mock.patch.object(threading.Thread, "start", side_effect=RuntimeError("can't start new thread")):
            reason = executor.submit(ran, threading.Event())
        self.assertIn("cannot start a call thread (can't start new thread); 0 running", reason)
        self.assertEqual(executor.wedged, reason)

    def test_max_stuck_zero_means_the_first_stuck_thread_wedges(self):
        executor = CallExecutor(2, max_stuck=0)
        blocker = Blocker()
        try:
            executor.submit(blocker, None)
            self.assertTrue(blocker.started.wait(WAIT))
            self.assertIn("at most 0 are replaced", executor.mark_stuck(blocker.ident))
        finally:
            blocker.release.set()
            executor.shutdown()

    def test_work_queued_while_every_thread_is_busy_leaves_no_idle_thread_behind(self):
        # A thread that takes work queued while it was busy is not idle:
        # counting it so made submit skip starting the replacement of a
        # stuck thread, and the next call waited forever.
        executor = CallExecutor(2, max_stuck=4)
        blockers = [Blocker() for _ in range(4)]
        self.blockers.extend(blockers)
        self.addCleanup(executor.shutdown)
        for blocker in blockers[:2]:
            executor.submit(blocker, None)
            self.assertTrue(blocker.started.wait(WAIT))
        burst = [threading.Event() for _ in range(4)]
        for event in burst:
            executor.submit(ran, event)
        for blocker in blockers[:2]:
            blocker.release.set()
        for event in burst:
            self.assertTrue(event.wait(WAIT))
        self.assertTrue(until(lambda: executor.idle >= 2))
        self.assertEqual((executor.threads, executor.idle), (2, 2))
        for blocker in blockers[2:]:
            executor.submit(blocker, None)
            self.assertTrue(blocker.started.wait(WAIT))
            self.assertIsNone(executor.mark_stuck(blocker.ident))
        done = threading.Event()
        executor.submit(ran, done)
        self.assertTrue(done.wait(WAIT))
        self.assertEqual((executor.threads, len(executor.stuck), executor.replaced), (3, 2, 2))

    def test_submit_after_shutdown_raises(self):
        self.executor.shutdown()
        with self.assertRaises(RuntimeError):
            self.executor.submit(ran, threading.Event())

    def test_a_failing_item_keeps_the_thread(self):
        def boom(_):
            raise KeyboardInterrupt()

        self.executor.submit(boom, None)
        done = threading.Event()
        self.executor.submit(ran, done)
        self.assertTrue(done.wait(WAIT))
        self.assertEqual(self.executor.threads, 1)


class ElasticExecutorTest(unittest.TestCase, QuietLogs):
    def setUp(self):
        self.quiet()
        self.executor = ElasticExecutor(max_threads=3)
        self.blockers = []

    def tearDown(self):
        for blocker in self.blockers:
            blocker.release.set()
        self.executor.shutdown()

    def block(self):
        blocker = Blocker()
        self.blockers.append(blocker)
        self.assertTrue(self.executor.submit(blocker, None))
        self.assertTrue(blocker.started.wait(WAIT))
        return blocker

    def test_each_item_runs_at_once_up_to_the_bound(self):
        for _ in range(3):
            self.block()
        self.assertEqual((self.executor.threads, self.executor.busy), (3, 3))
        self.assertFalse(self.executor.submit(ran, threading.Event()))
        self.blockers[0].release.set()
        self.assertTrue(until(lambda: self.executor.busy == 2))
        done = threading.Event()
        self.assertTrue(self.executor.submit(ran, done))
        self.assertTrue(done.wait(WAIT))
        self.assertEqual(self.executor.threads, 3)

    def test_an_idle_thread_is_reused(self):
        for _ in range(20):
            done = threading.Event()
            self.assertTrue(self.executor.submit(ran, done))
            self.assertTrue(done.wait(WAIT))
            self.assertTrue(until(lambda: self.executor.busy == 0))
        self.assertEqual(self.executor.threads, 1)

    def test_a_released_thread_is_free_before_its_item_returns(self):
        submitted = []
        later = threading.Event()

        def work(_):
            self.executor.release()
            # At the bound (three threads, none idle): accepted all the same,
            # for this very thread, which takes it once it returns.
            submitted.append(self.executor.submit(ran, later))

        for _ in range(2):
            self.block()
        self.assertTrue(self.executor.submit(work, None))
        self.assertTrue(later.wait(WAIT))
        self.assertEqual(submitted, [True])
        self.assertEqual(self.executor.threads, 3)

    def test_idle_threads_exit_after_the_idle_timeout(self):
        self.executor.IDLE_TIMEOUT = 0.05
        for _ in range(2):
            self.block()
        for blocker in self.blockers:
            blocker.release.set()
        self.assertTrue(until(lambda: self.executor.threads == 0), self.executor.threads)
        done = threading.Event()
        self.assertTrue(self.executor.submit(ran, done))
        self.assertTrue(done.wait(WAIT))


if __name__ == "__main__":
    unittest.main()
