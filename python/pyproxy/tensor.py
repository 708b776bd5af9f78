"""An explicit tensor for the Open Inference Protocol: ``from pyproxy import Tensor``.

A result's shape is otherwise read from its nesting, which cannot say
everything: an empty tensor of shape ``[0, 3]`` nests as ``[]`` (shape
``[0]``), and a model cannot choose a datatype narrower than JSON's
(``FP32`` rather than ``FP64``). ``Tensor(data, shape, datatype=None)``
says both::

    from pyproxy import Tensor

    class Model:
        def execute(self, msg):
            return {"scores": Tensor([], [0, 3], "FP32"),
                    "labels": Tensor(["cat", "dog"], [2])}

``data`` holds the elements in row-major order, flat or nested exactly as
``shape`` nests them. ``datatype`` is one of the protocol's (``None``:
read from the elements, as for any result). A ``Tensor`` is a ``dict``
(``{"datatype", "shape", "data"}``), so it goes over the wire as any
result does: ``POST /v2/models/{name}/infer`` answers it as the output
tensor it describes (the gateway checks its elements against its shape
and datatype), and ``/v1`` answers that dict as it is. The gateway reads
any dict with exactly these three keys (``datatype`` a string or
``None``) as a tensor on ``/v2``.
"""

from pyproxy_server.array_like import is_array_like

__all__ = ["Tensor", "DATATYPES", "MAX_RANK", "MAX_ELEMENTS"]

# The datatypes the gateway takes (the protocol's, without BF16).
DATATYPES = frozenset((
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
    "INT64", "FP16", "FP32", "FP64", "BYTES",
))
# Most dimensions of a tensor (numpy's limit, and the gateway's).
MAX_RANK = 64
# Most elements of a tensor, and most in one dimension (the gateway's:
# integers past 2^53 are not exact as a JavaScript number).
MAX_ELEMENTS = 2 ** 53 - 1


class Tensor(dict):
    """A tensor of the Open Inference Protocol: its elements, shape and datatype.

    Raises ``TypeError`` for a ``data`` that is not a list, a tuple or
    array-like (a numpy array or a tensor: sent as its ``.tolist()``), a
    ``shape`` that is not a sequence of ints, a ``datatype`` that is not a
    string; ``ValueError`` for a negative dimension, more than ``MAX_RANK``
    dimensions, a dimension or an element count past 2^53 (which no data
    holds, and the gateway refuses) or an unknown datatype. The elements are checked by the
    gateway (their count, nesting and range), not here: a check in Python
    would walk them once more.
    """

    __slots__ = ()

    def __init__(self, data, shape, datatype=None):
        # A numpy array (or tensor) is sent as its .tolist(), as anywhere
        # in a result (pyproxy_server.array_like).
        if not isinstance(data, (list, tuple)) and not is_array_like(data):
            raise TypeError(
                "Tensor data must be a list, a tuple or a numpy array (or tensor), not %s" % type(data).__name__
            )
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
            raise TypeError("Tensor shape must be a sequence of ints, not %s" % type(shape).__name__)
        dims = list(shape)
        if len(dims) > MAX_RANK:
            raise ValueError("Tensor shape has %d dimensions, over the limit of %d" % (len(dims), MAX_RANK))
        count = 1
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, int):
                raise TypeError("Tensor shape must be a sequence of ints, not holding %r" % (d,))
            if d < 0:
                raise ValueError("Tensor shape must hold integers >= 0, not %d" % d)
            if d > MAX_ELEMENTS:
                raise ValueError("Tensor shape has dimension %d, beyond 2^53" % d)
            count *= d
        if count > MAX_ELEMENTS:
            raise ValueError("Tensor shape %r holds more than 2^53 elements" % (dims,))
        if datatype is not None:
            if not isinstance(datatype, str):
                raise TypeError("Tensor datatype must be a string, not %s" % type(datatype).__name__)
            if datatype not in DATATYPES:
                raise ValueError("Tensor datatype %r is not one of %s" % (datatype, ", ".join(sorted(DATATYPES))))
        super().__init__(datatype=datatype, shape=dims, data=data)

    @property
    def data(self):
        """The elements, flat or nested as ``shape``."""
        return self["data"]

    @property
    def shape(self):
        """The dimensions, a list of ints."""
        return self["shape"]

    @property
    def datatype(self):
        """The protocol's datatype (``"FP32"``...), or ``None`` for the elements' own."""
        return self["datatype"]

    def __repr__(self):
        return "Tensor(shape=%r, datatype=%r)" % (self["shape"], self["datatype"])
