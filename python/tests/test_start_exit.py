"""A server that cannot start says why in one record of its log, marked for
the host (``start_exit``), or as plain text without a mark."""

import os
import re
import subprocess
import sys
import tempfile
import unittest

from ._client import PYTHON_DIR

RECORD = re.compile(r"MARK-1 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR \[MainThread\] pyproxy_server: (.*)\n\Z")


class StartExitTest(unittest.TestCase):
    def run_server(self, *args, mark="MARK-1", stdin=b""):
        env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
        env.pop("PYPROXY_LOG_MARK", None)
        if mark is not None:
            env["PYPROXY_LOG_MARK"] = mark
        cmd = [sys.executable, "-m", "pyproxy_server", "--id", "t1", "--port", "0"] + list(args)
        done = subprocess.run(cmd, input=stdin, env=env, capture_output=True, timeout=30)
        return done.returncode, done.stderr.decode()

    def test_each_start_up_exit_is_one_error_record_with_the_hosts_mark(self):
        with tempfile.TemporaryDirectory() as root:
            cases = [
                (("--path", "/nonexistent-logs29", "--insecure-no-auth"), 1, "--path '/nonexistent-logs29' is not a directory"),
                (("--path", root, "--threads", "0", "--insecure-no-auth"), 2, "bad arguments: --threads must be >= 1"),
                (("--path", root, "--threads", "x", "--insecure-no-auth"), 2, "bad arguments: argument --threads: invalid int value: 'x'"),
                (("--path", root, "--unix", "/nonexistent-logs29/w.sock", "--insecure-no-auth"), 1, "cannot listen: "),
                (("--path", root), 1, "no secret on stdin (end of file)"),
            ]
            for args, code, message in cases:
                with self.subTest(args=args):
                    got, stderr = self.run_server(*args)
                    self.assertEqual(got, code, stderr)
                    record = RECORD.match(stderr)
                    self.assertIsNotNone(record, stderr)
                    self.assertTrue(record.group(1).startswith(message), stderr)

    def test_the_secret_lines_mark_serves_an_exit_after_it(self):
        code, stderr = self.run_server("--path", "/nonexistent-logs29", mark=None,
                                       stdin=b'{"secret": "ab", "logMark": "MARK-1"}\n')
        self.assertEqual(code, 1, stderr)
        self.assertIsNotNone(RECORD.match(stderr), stderr)

    def test_without_a_mark_the_text_is_as_it_was(self):
        code, stderr = self.run_server("--path", "/nonexistent-logs29", "--insecure-no-auth", mark=None)
        self.assertEqual((code, stderr), (1, "pyproxy_server: --path '/nonexistent-logs29' is not a directory\n"))
        code, stderr = self.run_server("--path", "/tmp", "--threads", "0", "--insecure-no-auth", mark=None)
        self.assertEqual(code, 2)
        self.assertTrue(stderr.startswith("usage: python3 -m pyproxy_server [-h]"), stderr)
        self.assertTrue(stderr.endswith("\npython3 -m pyproxy_server: error: --threads must be >= 1\n"), stderr)


if __name__ == "__main__":
    unittest.main()
