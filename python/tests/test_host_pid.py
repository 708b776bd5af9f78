"""--host-pid: a server under a python wrapper (its parent) sees the host gone
by its pid, and counts a zombie host as gone."""

import os
import subprocess
import sys
import time
import unittest

from pyproxy_server.__main__ import _gone, parse_args


class HostPidTest(unittest.TestCase):
    def test_the_flag_is_optional_and_an_integer(self):
        self.assertIsNone(parse_args(["--path", ".", "--id", "x"]).host_pid)
        self.assertEqual(parse_args(["--path", ".", "--id", "x", "--host-pid", "4242"]).host_pid, 4242)

    def test_gone_is_false_when_not_given_or_not_a_host(self):
        parent = os.getppid()
        self.assertFalse(_gone(None, parent))
        self.assertFalse(_gone(1, parent))
        self.assertFalse(_gone(0, parent))
        self.assertFalse(_gone(-5, parent))
        # The parent is watched by the caller itself.
        self.assertFalse(_gone(parent, parent))
        # A process that runs.
        self.assertFalse(_gone(os.getpid(), parent))

    def test_gone_for_an_exited_process_and_for_a_zombie(self):
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        pid = child.pid
        try:
            # Exited, not reaped yet: a zombie (Linux /proc says Z).
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    with open("/proc/%d/stat" % pid, "rb") as f:
                        stat = f.read()
                except OSError:
                    self.skipTest("no /proc")
                if stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] == b"Z":
                    break
                time.sleep(0.002)
            self.assertTrue(_gone(pid, os.getppid()))
        finally:
            child.wait()
        # Reaped: no such process (unless its pid was reused at once).
        self.assertTrue(_gone(pid, os.getppid()))


if __name__ == "__main__":
    unittest.main()
