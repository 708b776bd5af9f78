"""pyproxy Python server: serves models and commands over the framed protocol.

Run it with ``python3 -m pyproxy_server --path DIR --id ID`` (see
``__main__.py`` and docs/protocol.md §5). Stdlib only, Python >= 3.9.
"""

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
