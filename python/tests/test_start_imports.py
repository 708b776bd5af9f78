"""What a server's start imports: not the modules only some requests need.

Every worker start (a pool's start, a restart after a crash, an autoscale)
pays for each module ``python3 -m pyproxy_server`` imports before its ready
line. The standard library modules below serve rare paths only, and are
imported there: ``http`` for an ``HTTPError`` without a message,
``datetime`` for the hint of a value that is not JSON, ``difflib`` for the
"did you mean" of a model name not found (~2.5 ms of CPU per start together,
Python 3.11).
"""

import json
import os
import subprocess
import sys
import unittest

from ._client import PYTHON_DIR

# What the server imports as it starts (``__main__``, its extensions), then
# the names of the modules loaded. ``-S``: no site-packages, whose ``.pth``
# files may import anything (a pyenv's certifi).
LOADED = (
    "import json, sys\n"
    "import pyproxy_server.__main__\n"
    "from pyproxy_server.server import Server\n"
    "for name in Server.EXTENSIONS: __import__(name)\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)

# Imported where they are used, not at start.
LAZY = ("http", "datetime", "difflib")


def loaded_at_start():
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    out = subprocess.run(
        [sys.executable, "-S", "-c", LOADED],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if out.returncode != 0:
        raise AssertionError("the import failed: %s" % out.stderr)
    return set(json.loads(out.stdout))


class StartImportsTest(unittest.TestCase):
    def test_rare_path_modules_are_not_imported_at_start(self):
        loaded = loaded_at_start()
        self.assertIn("pyproxy_server.eval", loaded)  # the start's imports ran
        self.assertEqual([name for name in LAZY if name in loaded], [])

    def test_the_rare_paths_still_work(self):
        from pyproxy_server.errors import HTTPError
        from pyproxy_server.json_problem import not_json_reason
        from pyproxy_server.models import _not_loaded

        self.assertEqual(HTTPError(429).message, "Too Many Requests")
        import datetime

        when = datetime.date(2026, 12, 8)
        try:
            json.dumps({"when": when})
        except TypeError as exc:
            reason = not_json_reason(exc, {"when": when}, "result")
        self.assertIn("use .isoformat()", reason)
        self.assertEqual(_not_loaded("dobler", ["doubler", "tripler"]), "not loaded (did you mean 'doubler'?)")


if __name__ == "__main__":
    unittest.main()
