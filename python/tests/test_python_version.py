"""An interpreter older than 3.9 is refused with a message that says so."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from ._client import PYTHON_DIR

# Runs ``python -m pyproxy_server`` as an interpreter reporting Python 3.8.18.
OLD_PYTHON = (
    "import runpy, sys; sys.version_info = (3, 8, 18, 'final', 0); "
    "sys.argv[1:] = ['--path', '.', '--id', 't1']; "
    "runpy.run_module('pyproxy_server', run_name='__main__', alter_sys=True)"
)

# Only imports the package, as an interpreter reporting Python 2.7.18.
PYTHON2_IMPORT = (
    "import sys; sys.version_info = (2, 7, 18, 'final', 0); import pyproxy_server"
)


def _python2():
    """A Python 2 that runs on this machine, or None (a pyenv shim may be
    on the PATH without the version it names)."""
    candidates = [shutil.which("python2.7"), shutil.which("python2")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/2.*/bin/python")))
    for exe in candidates:
        if exe is None:
            continue
        try:
            out = subprocess.run(
                [exe, "-c", "import sys; print(sys.version_info[0])"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == "2":
            return exe
    return None


PYTHON2 = _python2()


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

    def _assert_refused(self, proc, version):
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertEqual(proc.stdout, "")
        self.assertIn("pyproxy needs Python >= 3.9", proc.stderr)
        self.assertIn("is Python %s" % version, proc.stderr)
        self.assertNotIn("SyntaxError", proc.stderr)

    def test_the_package_itself_refuses_an_old_python(self):
        # ``python -m pyproxy_server`` imports the package before it parses
        # __main__.py, whose syntax Python 2 cannot read: the check must run there.
        env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
        proc = subprocess.run(
            [sys.executable, "-c", PYTHON2_IMPORT],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        self._assert_refused(proc, "2.7.18")

    def test_the_package_init_is_ascii(self):
        # Python 2 refuses a module with a non-ASCII byte and no coding line
        # with a SyntaxError before running any of it.
        with open(os.path.join(PYTHON_DIR, "pyproxy_server", "__init__.py"), "rb") as f:
            data = f.read()
        self.assertEqual([b for b in data if b > 127], [])

    @unittest.skipUnless(PYTHON2, "no Python 2 on this machine")
    def test_a_real_python_2_gets_the_message(self):
        with tempfile.TemporaryDirectory() as cwd:
            proc = subprocess.run(
                [PYTHON2, "-m", "pyproxy_server", "--path", cwd, "--id", "t1"],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONPATH=PYTHON_DIR),
                timeout=30,
            )
        self._assert_refused(proc, "2.7")


if __name__ == "__main__":
    unittest.main()
