"""Model-side API of pyproxy: ``from pyproxy import host``.

``host.call(name, args)`` calls a handler registered on the host (protocol
§7) from inside model or eval code; ``host.cache`` and ``host.publish`` are
shortcuts for the shared cache and the gateway's channels. A model raises
``HTTPError(status, message, detail=None, headers=None)`` to answer its
call with an HTTP error status (docs/models.md); ``host.set_status(201)``
and ``host.set_header(name, value)`` choose a success's. ``metrics.counter``,
``metrics.gauge`` and ``metrics.histogram`` record model metrics that the
gateway's ``GET /metrics`` exposes (docs/models.md, "Metrics").
``Tensor(data, shape, datatype=None)`` is a result the Open Inference
Protocol (``/v2``) answers as that tensor (docs/models.md). ``Lock()`` is a
lock of the model's own (a GPU, a client) whose wait a cancel of the call
ends with ``CancelledError`` (docs/models.md, "Locks of a model's own").
"""

from . import host, metrics
from .host import HostError
from .lock import Lock
from .tensor import Tensor
from pyproxy_server.errors import CancelledError, HTTPError

__all__ = ["host", "metrics", "CancelledError", "HostError", "HTTPError", "Lock", "Tensor"]
