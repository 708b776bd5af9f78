"""A model thread's uncaught exception is one log record, not a line each;
records on stderr carry the host's mark."""

import time
import unittest

from tests._client import ServerProcess
from tests.test_server import ServerTestCase


class UncaughtExceptionsTest(ServerTestCase):
    # Each record one line on stderr (escaped newlines), as the host reads it.
    args = ("--log-dir", "-")

    def record_lines(self, needle):
        # The hook's record is written before the thread's join returns; read until it is there.
        deadline = time.monotonic() + 5
        while True:
            lines = [line for line in self.server.stderr_text().splitlines() if needle in line]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.01)

    def test_a_threads_uncaught_exception_is_one_error_record_with_its_traceback(self):
        c = self.connect()
        c.call("addModel", name="u", file="uncaught.py")
        self.assertEqual(c.call("executeModel", name="u", msg={"what": "thread"}), "done")
        lines = self.record_lines("Exception in thread loader-thread")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(" ERROR [loader-thread] pyproxy_server.uncaught: Exception in thread loader-thread\\nTraceback", lines[0])
        self.assertIn("ZeroDivisionError", lines[0])
        # Was: a WARNING record per line of the traceback ("<stderr>: ...").
        log = self.server.stderr_text()
        self.assertNotIn("<stderr>", log)
        self.assertEqual(sum(1 for line in log.splitlines() if "ZeroDivisionError" in line), 1, log)

    def test_an_exception_python_ignores_is_one_error_record(self):
        c = self.connect()
        c.call("addModel", name="u", file="uncaught.py")
        self.assertEqual(c.call("executeModel", name="u", msg={"what": "unraisable"}), "done")
        lines = self.record_lines("Exception ignored in")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(" ERROR [loader-unraisable] pyproxy_server.uncaught: Exception ignored in: <function _Closes.__del__", lines[0])
        self.assertIn("ValueError: cannot close", lines[0])
        self.assertNotIn("<stderr>", self.server.stderr_text())

    def test_an_exception_ignored_during_a_call_goes_to_the_calls_output_as_before(self):
        c = self.connect()
        c.call("addModel", name="u", file="uncaught.py")
        self.assertEqual(c.call("executeModel", name="u", msg={"what": "inCall"}), "done")
        output = "\n".join(e["message"] for e in c.events if e.get("event") == "log" and e.get("stream") == "stderr")
        self.assertIn("Exception ignored in: <function _Closes.__del__", output)
        self.assertIn("ValueError: cannot close", output)
        self.assertNotIn("cannot close", self.server.stderr_text())


class LogMarkTest(unittest.TestCase):
    def test_records_on_stderr_start_with_the_hosts_mark_which_model_code_does_not_inherit(self):
        # The host takes a stderr line for a record only with the mark: text
        # of anything else there (a subprocess printing a client's words)
        # that looked like one was logged at its level.
        self.check_marked("5eed0f1e2d3c", env={"PYPROXY_LOG_MARK": "5eed0f1e2d3c"})

    def test_the_secret_lines_mark_is_taken_first(self):
        # A wrapper (docker run, sudo) may pass stdin on, not the environment.
        self.check_marked("11aa22bb", env={"PYPROXY_LOG_MARK": "ignored"}, log_mark="11aa22bb")
        self.check_marked("33cc44dd", log_mark="33cc44dd")

    def check_marked(self, mark, env=None, log_mark=None):
        server = ServerProcess(args=("--log-dir", "-"), env=env, log_mark=log_mark)
        try:
            c = server.connect()
            code = "import os, threading\n" \
                "threading.Thread(target=lambda: 1 / 0).start()\n" \
                "os.environ.get('PYPROXY_LOG_MARK')"
            self.assertEqual(c.call("eval", code=code)["value"], None)
            deadline = time.monotonic() + 5
            while "ZeroDivisionError" not in server.stderr_text() and time.monotonic() < deadline:
                time.sleep(0.01)
            lines = server.stderr_text().splitlines()
            self.assertTrue(any("ZeroDivisionError" in line for line in lines), lines)
            self.assertTrue(all(line.startswith(mark + " ") for line in lines), lines)
        finally:
            server.kill()

    def test_a_mark_that_cannot_start_a_line_of_ours_is_ignored(self):
        from pyproxy_server.__main__ import _log_mark
        self.assertEqual(_log_mark("ab12"), "ab12")
        for bad in (None, "", "a b", "a\nb", "x" * 129, "caf\u00e9"):
            self.assertIsNone(_log_mark(bad), bad)


if __name__ == "__main__":
    unittest.main()
