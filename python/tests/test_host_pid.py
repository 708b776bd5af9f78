"""--host-pid: a server under a python wrapper (its parent) sees the host gone
by its pid, and counts a zombie host as gone."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from pyproxy_server.__main__ import PARENT_CHECK_INTERVAL, _gone, _start_time, parse_args, watched_host

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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

    def test_gone_for_a_pid_reused_by_another_process(self):
        start = _start_time(os.getpid())
        if start is None:
            self.skipTest("no /proc")
        parent = os.getppid()
        self.assertFalse(_gone(os.getpid(), parent, start))
        # The same pid, another start time: the host died and its pid went
        # to a process started since.
        self.assertTrue(_gone(os.getpid(), parent, start + 1))

    def test_watched_host_is_none_for_a_pid_that_names_no_process(self):
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        self.assertEqual(watched_host(child.pid, os.getppid()), (None, None))
        self.assertEqual(watched_host(None, os.getppid()), (None, None))
        self.assertEqual(watched_host(os.getppid(), os.getppid()), (None, None))
        self.assertEqual(watched_host(os.getpid(), os.getppid()), (os.getpid(), _start_time(os.getpid())))

    def test_a_server_in_another_pid_namespace_keeps_running(self):
        # A wrapper such as `docker run` or `unshare -p` runs the server in a
        # PID namespace of its own, where the host's pid names no process:
        # the server took its host for gone and exited a second after it
        # started, every time.
        unshare = shutil.which("unshare")
        if unshare is None or sys.platform != "linux":
            self.skipTest("no unshare")
        probe = subprocess.run([unshare, "-Urpf", "true"], capture_output=True)
        if probe.returncode != 0:
            self.skipTest("unshare -Urpf not permitted here")
        root = tempfile.mkdtemp(prefix="pyproxy-test-ns-")
        env = dict(os.environ, PYTHONPATH=PACKAGE_DIR)
        server = subprocess.Popen(
            [unshare, "-Urpf", sys.executable, "-m", "pyproxy_server", "--path", root, "--id", "ns",
             "--port", "0", "--insecure-no-auth", "--host-pid", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        try:
            ready = json.loads(server.stdout.readline())
            self.assertEqual(ready["pid"], 1)  # the first process of its namespace
            # What we check is that nothing happens: the host check runs
            # every PARENT_CHECK_INTERVAL; give it two and a half.
            time.sleep(PARENT_CHECK_INTERVAL * 2.5)
            self.assertIsNone(server.poll(), "the server exited though its host runs")
            # Its host's end (stdin closed) still ends it.
            server.stdin.close()
            self.assertEqual(server.wait(timeout=30), 0)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            server.stdout.close()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
