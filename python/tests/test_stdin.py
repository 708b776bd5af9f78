"""User code sees an empty stdin; the server still exits when the host's pipe closes."""

import unittest

from ._client import ServerProcess

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


if __name__ == "__main__":
    unittest.main()
