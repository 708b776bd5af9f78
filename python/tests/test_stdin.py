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

    def test_a_debugger_or_input_left_in_a_model_says_why_it_failed(self):
        # breakpoint() quit at once with an empty BdbQuit ("BdbQuit: " was the
        # whole message), input() with "EOF when reading a line": nothing
        # said that a worker has no terminal.
        c = self.server.connect()
        debugger = ("the debugger (breakpoint(), pdb.set_trace()) quit at once: a worker has no terminal"
                    " (its stdin is empty); remove the call, and debug the model class in a Python session"
                    " of your own")
        sources = {
            "bp": "class Model:\n    def execute(self, msg):\n        breakpoint()\n        return 1\n",
            "pdb": "import pdb\nclass Model:\n    def execute(self, msg):\n        pdb.set_trace()\n        return 1\n",
            "threaded": "from pyproxy import host\nclass Model:\n    def execute(self, msg):\n"
                        "        breakpoint()\n        return 1\n",
            "ask": "class Model:\n    def execute(self, msg):\n        return input('threshold? ')\n",
        }
        for name, source in sources.items():
            c.call("addModel", name=name, source=source)
        for name in ("bp", "pdb", "threaded", "bp"):  # "bp" twice: inline once promoted
            with self.subTest(model=name):
                error = c.request("executeModel", name=name, msg={})["error"]
                self.assertEqual((error["exception"], error["message"]), ("BdbQuit", debugger))
        # A model's and an eval's: the hint names what each of them has.
        hint = ("EOF when reading a line (input() in a worker reads an empty stdin: pass the value in the call,"
                " a model's msg or options, an eval's locals or args)")
        error = c.request("executeModel", name="ask", msg={})["error"]
        self.assertEqual(error["message"], hint)
        error = c.request("eval", code="name = input('name? ')")["error"]
        self.assertEqual((error["exception"], error["message"]), ("EOFError", hint))
        # In __init__: the load's error says it too.
        error = c.request("addModel", name="init", source="class Model:\n    def __init__(self, options):\n"
                                                          "        breakpoint()\n    def execute(self, msg):\n"
                                                          "        return 1\n")["error"]
        self.assertEqual(error["type"], "ModelLoadError")
        self.assertTrue(error["message"].startswith("Cannot load model 'init': BdbQuit: " + debugger), error)
        # The worker still serves, on the event loop's thread too.
        self.assertEqual(c.call("ping"), "pong")
        c.call("addModel", name="ok", source="class Model:\n    def execute(self, msg):\n        return msg\n")
        for _ in range(3):
            self.assertEqual(c.call("executeModel", name="ok", msg={"a": 1}), {"a": 1})

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
