"""``--sched-batch``: the server and the threads it starts run under Linux
``SCHED_BATCH`` (a wake-up of the server does not preempt the host's
thread); without the flag the policy is left alone. Real server processes."""

import os
import unittest

from pyproxy_server.__main__ import parse_args

from .test_server import ServerTestCase

HAS_SCHED_BATCH = hasattr(os, "SCHED_BATCH") and hasattr(os, "sched_getscheduler")


def _thread_policies(pid):
    """The scheduling policy of every thread of ``pid``."""
    return {int(tid): os.sched_getscheduler(int(tid)) for tid in os.listdir("/proc/%d/task" % pid)}


@unittest.skipUnless(HAS_SCHED_BATCH and os.path.isdir("/proc/self/task"), "needs Linux SCHED_BATCH")
class SchedBatchTest(ServerTestCase):
    args = ("--sched-batch",)

    def test_every_thread_runs_under_sched_batch_and_calls_work(self):
        c = self.connect()
        c.call("addModel", name="d", file="doubler.py")
        # Threaded calls start executor threads after the policy was set: they inherit it.
        self.assertEqual(c.call("executeModel", name="d", msg={"x": 4}), {"y": 8})
        policies = _thread_policies(self.server.proc.pid)
        self.assertEqual(policies.get(self.server.proc.pid), os.SCHED_BATCH)
        self.assertEqual(set(policies.values()), {os.SCHED_BATCH}, policies)


@unittest.skipUnless(HAS_SCHED_BATCH and os.path.isdir("/proc/self/task"), "needs Linux SCHED_BATCH")
class DefaultSchedulingTest(ServerTestCase):
    def test_without_the_flag_the_policy_is_inherited(self):
        self.connect().call("ping")
        self.assertEqual(os.sched_getscheduler(self.server.proc.pid), os.sched_getscheduler(0))


class SchedBatchArgsTest(unittest.TestCase):
    def test_flag_parses(self):
        self.assertTrue(parse_args(["--path", ".", "--id", "x", "--sched-batch"]).sched_batch)
        self.assertFalse(parse_args(["--path", ".", "--id", "x"]).sched_batch)


if __name__ == "__main__":
    unittest.main()
