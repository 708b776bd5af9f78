"""``--oom-score-adj N``: the server raises its Linux ``oom_score_adj`` by N
(at most to 1000) before any model loads, so that the kernel's OOM killer
ends it rather than its host; a child that model code starts inherits it.
Without the flag it is left alone. Real server processes."""

import os
import subprocess
import sys
import tempfile
import unittest

from pyproxy_server.__main__ import parse_args, raise_oom_score_adj

from .test_server import ServerTestCase

HAS_OOM_SCORE_ADJ = os.path.isfile("/proc/self/oom_score_adj")


def _adj(pid="self"):
    with open("/proc/%s/oom_score_adj" % pid) as f:
        return int(f.read())


@unittest.skipUnless(HAS_OOM_SCORE_ADJ, "needs Linux /proc/<pid>/oom_score_adj")
class OomScoreAdjTest(ServerTestCase):
    args = ("--oom-score-adj", "300")

    def test_the_server_and_what_its_models_start_are_taken_first(self):
        c = self.connect()
        ours = _adj()
        self.assertEqual(_adj(self.server.proc.pid), min(1000, ours + 300))
        self.assertEqual(
            c.call("eval", code="import subprocess\nint(subprocess.run(['cat', '/proc/self/oom_score_adj'], capture_output=True, check=True).stdout)")["value"],
            min(1000, ours + 300))


@unittest.skipUnless(HAS_OOM_SCORE_ADJ, "needs Linux /proc/<pid>/oom_score_adj")
class DefaultOomScoreAdjTest(ServerTestCase):
    def test_without_the_flag_it_is_inherited(self):
        self.connect().call("ping")
        self.assertEqual(_adj(self.server.proc.pid), _adj())


def _started_at(score):
    """``preexec_fn``: the child starts at ``score`` (raising needs no privilege)."""
    def start():
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("%d\n" % score)
    return start


@unittest.skipUnless(HAS_OOM_SCORE_ADJ, "needs Linux /proc/<pid>/oom_score_adj")
class CappedOomScoreAdjTest(unittest.TestCase):
    """A server started at a high score (a Kubernetes pod that is not
    Guaranteed: BestEffort runs at 1000, Burstable often at 900 and more)
    cannot be raised by all it was asked: its log says so as a warning.
    Before, it said at info that the OOM killer takes it before its host,
    ``1000 -> 1000`` too."""

    def _log_line(self, start):
        with tempfile.TemporaryDirectory() as root:
            package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env = dict(os.environ, PYTHONPATH=package)
            proc = subprocess.Popen(
                [sys.executable, "-m", "pyproxy_server", "--path", root, "--id", "o1", "--insecure-no-auth",
                 "--oom-score-adj", "500", "--log-dir", "-"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                preexec_fn=_started_at(start))
            try:
                for line in proc.stderr:
                    if b"oom_score_adj" in line:
                        self.assertEqual(_adj(proc.pid), min(1000, start + 500))
                        return line.decode()
                self.fail("no oom_score_adj line")
            finally:
                proc.kill()
                proc.wait()
                proc.stdin.close()
                proc.stdout.close()
                proc.stderr.close()

    def test_a_raise_capped_at_1000_is_a_warning_that_says_by_how_much(self):
        line = self._log_line(900)
        self.assertIn("WARNING", line)
        self.assertIn("oom_score_adj 900 -> 1000: capped at 1000, raised by 100, not 500", line)
        self.assertNotIn("takes this server before its host\n", line)

    def test_no_raise_at_all_is_a_warning(self):
        line = self._log_line(1000)
        self.assertIn("WARNING", line)
        self.assertIn("oom_score_adj 1000 -> 1000: inherited at 1000 already", line)
        self.assertIn("maybe the host", line)

    def test_a_full_raise_is_info(self):
        line = self._log_line(0)
        self.assertIn("INFO", line)
        self.assertIn("oom_score_adj 0 -> 500: the kernel's OOM killer takes this server before its host", line)


class RaiseOomScoreAdjTest(unittest.TestCase):
    def _file(self, text):
        fd, path = tempfile.mkstemp()
        self.addCleanup(os.remove, path)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def test_raised_and_capped_at_1000(self):
        path = self._file("-997\n")
        self.assertEqual(raise_oom_score_adj(500, path), (-997, -497))
        with open(path) as f:
            self.assertEqual(int(f.read()), -497)
        path = self._file("800\n")
        self.assertEqual(raise_oom_score_adj(500, path), (800, 1000))
        with open(path) as f:
            self.assertEqual(int(f.read()), 1000)

    def test_a_file_that_cannot_be_read_is_left_alone(self):
        self.assertIsNone(raise_oom_score_adj(500, "/nonexistent/oom_score_adj"))
        self.assertIsNone(raise_oom_score_adj(500, self._file("not a number")))

    def test_flag_parses(self):
        self.assertEqual(parse_args(["--path", ".", "--id", "x", "--oom-score-adj", "500"]).oom_score_adj, 500)
        self.assertEqual(parse_args(["--path", ".", "--id", "x"]).oom_score_adj, 0)
        with self.assertRaises(SystemExit):
            parse_args(["--path", ".", "--id", "x", "--oom-score-adj", "1001"])


if __name__ == "__main__":
    unittest.main()
