"""An interpreter older than 3.9 is refused with a message that says so."""

import os
import subprocess
import sys
import unittest

from ._client import PYTHON_DIR

# Runs ``python -m pyproxy_server`` as an interpreter reporting Python 3.8.18.
OLD_PYTHON = (
    "import runpy, sys; sys.version_info = (3, 8, 18, 'final', 0); "
    "sys.argv[1:] = ['--path', '.', '--id', 't1']; "
    "runpy.run_module('pyproxy_server', run_name='__main__', alter_sys=True)"
)


class PythonVersionTest(unittest.TestCase):
    def test_older_python_exits_with_a_clear_message(self):
        env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
        proc = subprocess.run(
            [sys.executable, "-c", OLD_PYTHON],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(proc.stdout, "")
        self.assertIn("pyproxy needs Python >= 3.9", proc.stderr)
        self.assertIn("is Python 3.8.18", proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)


if __name__ == "__main__":
    unittest.main()
