"""A server that exits normally (``stopServer``, SIGTERM, its stdin's end)
ends what its model code started (``end_own_group``): under Deno's narrow
``--allow-run=python3`` the host cannot signal its process group, and the
models' processes outlived the pool."""

import os
import signal
import subprocess
import sys
import time
import unittest
from unittest import mock

from ._client import PYTHON_DIR, ServerProcess
from pyproxy_server.own_group import group_members

# Starts a `sleep`, a Python child that ignores SIGTERM, and a grandchild
# whose parent exits at once (re-parented, still in the group); returns
# their pids.
STARTS = """
import os, subprocess, sys

class Model:
    def execute(self, msg):
        sleep = subprocess.Popen(["sleep", "1000"])
        stubborn = subprocess.Popen([sys.executable, "-c",
            "import signal, sys, time\\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
            "sys.stdout.write('ready\\\\n'); sys.stdout.flush()\\n"
            "time.sleep(1000)"], stdout=subprocess.PIPE)
        assert stubborn.stdout.readline() == b"ready\\n"  # SIGTERM ignored
        shell = subprocess.run(["sh", "-c", "sleep 1000 >/dev/null & echo $!"],
                               stdout=subprocess.PIPE, check=True)
        return [sleep.pid, stubborn.pid, int(shell.stdout)]
"""

# A multiprocessing pool (fork) that nothing closes, busy with a call as the
# server stops: its handler thread forks a new worker for each one killed,
# for as long as the server runs.
REPOPULATES = """
import multiprocessing, os, time

def _nap(x):
    time.sleep(30)
    return x

class Model:
    def __init__(self):
        self.procs = multiprocessing.get_context("fork").Pool(4)

    def execute(self, msg):
        if msg.get("busy"):
            open(msg["busy"], "w").close()
            return self.procs.map(_nap, range(8))
        return [p.pid for p in self.procs._pool]
"""

# Runs end_own_group in a child of its own group; prints the child's code.
HOST = """
import subprocess, sys
code = subprocess.call([sys.executable, "-c",
    "import sys\\nfrom pyproxy_server.own_group import end_own_group\\nsys.exit(end_own_group(0.1))"])
print(code)
"""


def _running(pid):
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:].split()[0] not in (b"Z", b"X")


@unittest.skipUnless(os.path.isdir("/proc/self"), "needs Linux's /proc")
class OwnGroupTest(unittest.TestCase):
    def setUp(self):
        self.server = ServerProcess()
        self.pids = []

    def tearDown(self):
        self.server.kill()
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def start_children(self):
        c = self.server.connect()
        c.call("addModel", name="starts", source=STARTS)
        self.pids = c.call("executeModel", name="starts", msg={}, timeout=10)
        self.assertEqual(len(self.pids), 3)
        self.assertTrue(all(_running(pid) for pid in self.pids), self.pids)
        return c

    def assert_ended(self, expected_code=0):
        code = self.server.wait(10)
        self.assertEqual(code, expected_code, self.server.stderr_text())
        # SIGKILLed ones may be reaped by init a moment after.
        deadline = time.monotonic() + 5
        while any(_running(pid) for pid in self.pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual([pid for pid in self.pids if _running(pid)], [])

    def test_stop_server_ends_the_models_processes(self):
        c = self.start_children()
        # The host waits that much longer before it kills the server (and
        # with it the SIGKILL of what ignored the SIGTERM).
        self.assertEqual(c.call("stopServer"), {"stopping": True, "closeMs": 500})
        self.assert_ended()

    def test_stop_server_asks_for_no_more_time_without_processes_of_models(self):
        c = self.server.connect()
        self.assertEqual(c.call("stopServer"), {"stopping": True})
        self.assertEqual(self.server.wait(10), 0)

    def test_sigterm_ends_the_models_processes(self):
        self.start_children()
        self.server.proc.send_signal(signal.SIGTERM)
        # A clean stop for a signal from outside: 128 + its number.
        self.assert_ended(128 + signal.SIGTERM)

    def test_stdin_end_ends_the_models_processes(self):
        self.start_children()
        self.server.proc.stdin.close()
        self.assert_ended()

    def test_a_pool_that_forks_anew_what_is_killed_leaves_nothing_running(self):
        # Its handler thread forked a worker for each one SIGTERM or SIGKILL
        # ended, up to the server's exit: the last few stayed running for
        # good (parent init, blocked on the pool's queue), 2 to 4 of 4 in
        # each of 6 runs, under Deno's --allow-run=python3 (the host cannot
        # signal the group). The server ends such a group with one SIGKILL,
        # itself included, which no fork escapes.
        c = self.server.connect()
        c.call("addModel", name="mp", source=REPOPULATES)
        self.pids = c.call("executeModel", name="mp", msg={}, timeout=10)
        busy = os.path.join(self.server.root, "busy")
        c.send({"id": 7, "cmd": "executeModel", "name": "mp", "msg": {"busy": busy}})
        deadline = time.monotonic() + 10
        while not os.path.exists(busy) and time.monotonic() < deadline:
            time.sleep(0.01)  # its map is under way (it answers in 30 s)
        group = self.server.proc.pid
        c.call("stopServer")
        self.server.wait(10)
        deadline = time.monotonic() + 5
        left = group_members(group, os.getpid())
        while left and time.monotonic() < deadline:
            time.sleep(0.01)
            left = group_members(group, os.getpid())
        self.pids += left  # killed by tearDown, if any
        self.assertEqual(left, [])

    def test_a_process_that_does_not_lead_its_group_signals_nobody(self):
        # A "host" leading a group of its own runs end_own_group in a child
        # that stays in the host's group: that group must get no SIGTERM.
        host = subprocess.run([sys.executable, "-c", HOST], env=dict(os.environ, PYTHONPATH=PYTHON_DIR),
                              stdout=subprocess.PIPE, start_new_session=True, timeout=30)
        self.assertEqual((host.returncode, host.stdout), (0, b"0\n"))

    def test_group_members_lists_a_groups_processes_but_zombies(self):
        child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        try:
            self.assertEqual(group_members(child.pid, os.getpid()), [child.pid])
            child.kill()
            deadline = time.monotonic() + 5
            while group_members(child.pid, os.getpid()) and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(group_members(child.pid, os.getpid()), [])  # a zombie until waited for
        finally:
            child.kill()
            child.wait()

    def test_group_members_reads_proc_without_file_objects(self):
        # Each stop scans /proc twice (stopServer's closeMs, the exit): with
        # ``open()`` a scan took twice as long (a file object, its buffer and
        # an fstat per process). The scan's result is the same.
        child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        try:
            with mock.patch("builtins.open", side_effect=AssertionError("open() in the /proc scan")):
                self.assertEqual(group_members(child.pid, os.getpid()), [child.pid])
        finally:
            child.kill()
            child.wait()


if __name__ == "__main__":
    unittest.main()
