"""Model-side API of pyproxy: ``from pyproxy import host``.

``host.call(name, args)`` calls a handler registered on the host (protocol
§7) from inside model or eval code; ``host.cache`` and ``host.publish`` are
shortcuts for the shared cache and the gateway's channels.
"""

from . import host
from .host import HostError

__all__ = ["host", "HostError"]
