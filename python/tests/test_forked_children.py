"""Children that model code forks (``multiprocessing``'s ``fork`` start
method, Linux's default up to Python 3.13) get SIGTERM and SIGINT as a fresh
process has them, not the server's: a SIGTERM to such a child (what
``Pool.terminate()``, the end of ``with Pool(...)``, sends each of its
workers) stopped the whole server before Python 3.12, through the signal
wakeup fd the child shared with it, and was ignored by the child."""

import os
import signal
import time
import unittest

from ._client import ServerProcess

# Forks a child that sends itself SIGTERM (as Pool.terminate does), and
# reports how the child ended.
FORKS = """
import os, signal, time

class Model:
    def execute(self, msg):
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # a child that ignored SIGTERM ends here, with 0
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        return {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}
"""

# The same with multiprocessing, as a model author writes it. A worker
# forked from this multi-threaded server can deadlock before it takes a
# task (CPython's fork-with-threads hazard: why docs/models.md says to use
# "spawn"; a few percent of the pools in loaded CI runs): such a pool is
# given up on after 5 s and terminated, which sends its workers the SIGTERM
# this test is about.
POOL = """
import multiprocessing

class Model:
    def execute(self, msg):
        with multiprocessing.get_context("fork").Pool(2) as pool:
            try:
                return pool.map_async(abs, range(-2, 2)).get(timeout=5)
            except multiprocessing.TimeoutError:
                return "hung"
"""


@unittest.skipUnless(hasattr(os, "fork"), "no fork here")
class ForkedChildrenTest(unittest.TestCase):
    def setUp(self):
        self.server = ServerProcess()

    def tearDown(self):
        self.server.kill()

    def test_a_sigterm_to_a_forked_child_ends_the_child_not_the_server(self):
        c = self.server.connect()
        c.call("addModel", name="forks", source=FORKS)
        c.call("addModel", name="pool", source=POOL)
        for _ in range(3):
            self.assertEqual(c.call("executeModel", name="forks", msg={}, timeout=10), {"signal": signal.SIGTERM})
        # Each call forks a pool of two and ends it (Pool.terminate: SIGTERM
        # to its workers); the server lives through all of them.
        results = [c.call("executeModel", name="pool", msg={}, timeout=30) for _ in range(5)]
        for result in results:
            self.assertIn(result, ([2, 1, 0, 1], "hung"))
        self.assertIn([2, 1, 0, 1], results)
        self.assertEqual(c.call("ping"), "pong")
        self.assertIsNone(self.server.proc.poll())


# Forks a child that outlives its call (a pool worker left running), and
# answers with its pid.
LINGERS = """
import os, time

class Model:
    def execute(self, msg):
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        return {"pid": pid}
"""


@unittest.skipUnless(hasattr(os, "fork"), "no fork here")
class ForkedChildrenKilledTest(unittest.TestCase):
    def test_the_harness_kill_ends_what_the_models_forked(self):
        # As the host does (it signals the server's process group): a test
        # that failed with a multiprocessing pool left its workers running.
        server = ServerProcess()
        try:
            c = server.connect()
            c.call("addModel", name="lingers", source=LINGERS)
            pid = c.call("executeModel", name="lingers", msg={}, timeout=10)["pid"]
            self.assertTrue(_running(pid))
        finally:
            server.kill()
        deadline = time.monotonic() + 10
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertFalse(_running(pid), "the forked child outlived the server")


# Prints from a forked child, in a model call and in an eval: print() and
# sys.stderr.write() still held the call's routing (the forking thread's
# context), whose sender is a thread of the parent only: the text vanished,
# where docs/models.md said it reaches the worker's stderr. The waitpid
# makes the child's lines come before the parent's answer.
CHILD_PRINTS = """
import os, sys

def child_prints(tag):
    pid = os.fork()
    if pid == 0:
        try:
            print("child stdout", tag)
            sys.stderr.write("child stderr %s\\n" % tag)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    return pid
"""


@unittest.skipUnless(hasattr(os, "fork"), "no fork here")
class ForkedChildOutputTest(unittest.TestCase):
    def test_what_a_forked_child_prints_reaches_the_worker_stderr(self):
        server = ServerProcess()
        try:
            c = server.connect()
            c.call("addModel", name="prints", source=CHILD_PRINTS + "\nclass Model:\n"
                   "    def execute(self, msg):\n        return child_prints('model')\n")
            c.call("executeModel", name="prints", msg={}, timeout=10)
            c.call("eval", code=CHILD_PRINTS + "\nchild_prints('eval')", timeout=10)
            self.assertEqual(c.call("ping"), "pong")
            stderr = server.stderr_text()
            for tag in ("model", "eval"):
                for fd in ("stdout", "stderr"):
                    self.assertIn("child %s %s\n" % (fd, tag), stderr)
        finally:
            server.kill()


def _running(pid):
    """Whether ``pid`` runs (not gone, not a zombie waiting to be reaped)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


if __name__ == "__main__":
    unittest.main()
