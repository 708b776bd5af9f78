"""User code sees an empty stdin; the server still exits when the host's pipe closes."""

import os
import select
import shutil
import subprocess
import sys
import tempfile
import unittest

from ._client import PYTHON_DIR, ServerProcess

READS = """
import os, subprocess, sys
try:
    input("prompt? ")
    got_input = "no EOFError"
except EOFError:
    got_input = "EOFError"
child = subprocess.run(["cat"], stdout=subprocess.PIPE).stdout
[got_input, sys.stdin.read(), sys.stdin.readline(), os.read(0, 100).decode(), child.decode()]
"""


class StdinTest(unittest.TestCase):
    def setUp(self):
        self.server = ServerProcess()

    def tearDown(self):
        self.server.kill()

    def test_user_code_reads_an_empty_stdin(self):
        c = self.server.connect()
        # More on the pipe after the secret: user code must not see it either.
        self.server.proc.stdin.write(b"not for user code\n")
        self.server.proc.stdin.flush()
        self.assertEqual(c.call("eval", code=READS, timeout=10)["value"], ["EOFError", "", "", "", ""])
        c.call("addModel", name="m", source="class Model:\n    def execute(self, msg):\n        return input()\n")
        reply = c.request("executeModel", name="m", msg={})
        self.assertEqual(reply["error"]["exception"], "EOFError", reply)
        self.assertEqual(c.call("ping"), "pong")

    def test_the_host_closing_stdin_still_ends_the_server(self):
        c = self.server.connect()
        c.call("eval", code="input\n1")
        self.server.proc.stdin.close()
        self.assertEqual(self.server.wait(), 0)


class SecretLineTest(unittest.TestCase):
    def test_a_secret_that_is_not_utf8_encodable_is_refused_at_start_up(self):
        # The MAC's key is the secret as UTF-8 (protocol §4); a lone surrogate
        # (a JSON escape) has no UTF-8 form. Such a server printed its ready
        # line, then every connection failed in connection_made: no hello, no
        # close, no auth timeout; a client waited forever.
        root = tempfile.mkdtemp(prefix="pyproxy-test-")
        self.addCleanup(shutil.rmtree, root, True)
        env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
        cmd = [sys.executable, "-m", "pyproxy_server", "--path", root, "--id", "t1", "--port", "0"]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            proc.stdin.write(b'{"secret": "ab\\ud800"}\n')
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            self.assertTrue(ready, "neither a ready line nor an exit")
            self.assertEqual(proc.stdout.readline(), b"")
            self.assertEqual(proc.wait(10), 1)
            self.assertEqual(
                proc.stderr.read().decode().strip(),
                "pyproxy_server: the secret must be a non-empty string that UTF-8 can encode (no lone surrogate)",
            )
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                pipe.close()


if __name__ == "__main__":
    unittest.main()
