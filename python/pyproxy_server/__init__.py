"""pyproxy Python server: serves models and commands over the framed protocol.

Run it with ``python3 -m pyproxy_server --path DIR --id ID`` (see
``__main__.py`` and docs/protocol.md section 5). Stdlib only, Python >= 3.9.

This file stays ASCII and Python 2 syntax: ``python -m pyproxy_server``
imports it first, so the version check below is what an old interpreter
runs (Python 2.7 would otherwise stop at the first non-ASCII byte of a
module with a SyntaxError that does not say what is wrong; 3.8 with a
TypeError in the log setup; 3.6 with no module named contextvars).
"""

import sys

if sys.version_info < (3, 9):
    sys.exit(
        "pyproxy needs Python >= 3.9, and %s is Python %d.%d.%d: install a newer "
        "Python and point the pool's python option (serve: --python) at it"
        % ((sys.executable,) + tuple(sys.version_info[:3]))
    )

__all__ = ["__version__", "PROTOCOL_VERSION", "Server", "Framer", "errors"]

__version__ = "0.1.0"
PROTOCOL_VERSION = 1


def __getattr__(name):
    # Lazy, so ``import pyproxy_server.framer`` stays cheap for tests and tools.
    if name == "Server":
        from .server import Server

        return Server
    if name == "Framer":
        from .framer import Framer

        return Framer
    if name == "errors":
        from . import errors

        return errors
    raise AttributeError(name)
