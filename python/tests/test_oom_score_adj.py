"""``--oom-score-adj N``: the server raises its Linux ``oom_score_adj`` by N
(at most to 1000) before any model loads, so that the kernel's OOM killer
ends it rather than its host; a child that model code starts inherits it.
Without the flag it is left alone. Real server processes."""

import os
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
