"""numpy-like results without numpy (``pyproxy_server/array_like.py``).

The fakes have what the server looks for on the class (a ``tolist``, a
``dtype``, an ``ndim``) and nothing it could mistake for JSON: shaped as
numpy arrays and scalars, torch tensors and pandas ``Series``. The models
return them (``msg["kind"]`` chooses what) from ``execute``,
``execute_batch`` and a stream; ``RealNumpy`` returns real numpy values
(its callers skip it where numpy is not installed).
"""

import copy
import math


class FakeArray:
    """As ``numpy.ndarray``: nested lists (or a scalar: 0-d) behind ``tolist()``;
    iterable and sized like an array, which does not make it a stream."""

    def __init__(self, data, dtype="float64"):
        self._data = data
        self._dtype = dtype

    @property
    def dtype(self):
        return self._dtype

    @property
    def ndim(self):
        depth, data = 0, self._data
        while isinstance(data, list):
            depth += 1
            data = data[0] if data else None
        return depth

    def tolist(self):
        return copy.deepcopy(self._data)

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


class FakeScalar(FakeArray):
    """As ``numpy.int64`` (not an ``int``): ``tolist()`` is the Python number."""


class FakeTensor(FakeArray):
    """As ``torch.Tensor``: ``tolist()`` works with ``requires_grad`` (torch
    copies the data out, no ``detach()`` needed), ``numpy()`` does not; on the
    ``meta`` device there is no data: ``tolist()`` raises."""

    def __init__(self, data, requires_grad=False, device="cpu"):
        super().__init__(data, "torch.float32")
        self.requires_grad = requires_grad
        self.device = device

    def numpy(self):
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        return self

    def tolist(self):
        if self.device == "meta":
            raise RuntimeError("Tensor.item() cannot be called on meta tensors")
        return super().tolist()


class FakeSeries(FakeArray):
    """As ``pandas.Series``: ``tolist()``, and a ``to_dict()`` that is not used."""

    def to_dict(self):
        return dict(enumerate(self._data))


class FakeLongDouble(FakeArray):
    """As ``numpy.longdouble`` (float128): no Python number holds it, so its
    ``tolist()`` gives the scalar itself back."""

    def __init__(self, value):
        super().__init__(value, "float128")

    def tolist(self):
        return self


class FakeFrame:
    """As ``pandas.DataFrame``: no ``tolist`` (its orientation is the model's
    choice): not converted, the error says ``use .to_dict()``."""

    ndim = 2
    dtypes = {"a": "int64"}

    def to_dict(self, orient="dict"):
        return [{"a": 1}] if orient == "records" else {"a": {0: 1}}


def values(kind, n=0):
    """The result ``kind`` names."""
    if kind == "all":
        return {
            "ints": FakeArray([[1, 2], [3, 4]], "int64"),
            "floats": FakeArray([0.5, 1.5, -2.0]),
            "bools": FakeArray([True, False], "bool"),
            "strings": FakeArray(["setosa", "é"], "<U6"),
            "empty": FakeArray([], "float32"),
            "zero_d": FakeArray(2.5),
            "scalar": FakeScalar(7, "int64"),
            "tensor": FakeTensor([[1.0, 2.0]], requires_grad=True),
            "series": FakeSeries([1, 2, 3], "int64"),
            "objects": FakeArray([FakeScalar(1, "int64"), None], "object"),
            "plain": [1, "a", None],
        }
    if kind == "array":
        return FakeArray([[1.5, 2.5], [3.5, 4.5]])
    if kind == "scalar":
        return FakeScalar(42, "int64")
    if kind == "nan":
        return {"scores": FakeArray([[0.5, 1.0], [float("nan"), 2.0]])}
    if kind == "inf":
        return FakeScalar(math.inf, "float32")
    if kind == "meta":
        return {"t": FakeTensor([1.0], device="meta")}
    if kind == "longdouble":
        return {"p": FakeLongDouble(0.5), "rows": FakeArray([FakeLongDouble(1.5)], "float128")}
    if kind == "frame":
        return {"df": FakeFrame()}
    if kind == "bytes":
        # Triton's BYTES tensors: an object array of bytes.
        return {"raw": FakeArray([b"\x00\x01", b"ok"], "object"), "n": FakeScalar(2, "int64")}
    if kind == "big":
        # n float64s (about 20 bytes of JSON each).
        return {"data": FakeArray([i + 0.123456789 for i in range(n)])}
    if kind == "infer":
        return {"label": FakeArray(["setosa", "other"], "<U6"), "score": FakeArray([[0.9, 0.1], [0.2, 0.8]], "float32")}
    raise ValueError("unknown kind %r" % (kind,))


class Arrays:
    """``values(msg["kind"], msg.get("n"))`` (``kind`` may come as a
    one-element tensor: ``["infer"]``)."""

    def execute(self, msg):
        kind = msg["kind"]
        return values(kind[0] if isinstance(kind, list) else kind, msg.get("n", 0))


class InlineArrays(Arrays):
    """``Arrays`` on the server's inline fast path (event loop thread)."""

    inline = True


class ArrayStream:
    """Yields ``msg["count"]`` arrays, then ``values(msg["kind"])`` if given."""

    def execute(self, msg):
        for i in range(msg.get("count", 2)):
            yield FakeArray([i, i + 1], "int64")
        if "kind" in msg:
            yield values(msg["kind"])


class ArrayBatch:
    """``execute_batch`` answers as ``model.predict(batch)`` does: one array,
    a row per message."""

    batch_size = 8
    batch_delay_ms = 20

    def execute_batch(self, msgs):
        return FakeArray([[m["x"], m["x"] * 2] for m in msgs], "int64")


class RealNumpy:
    """Real numpy values (numpy must be importable)."""

    def execute(self, msg):
        import numpy as np

        kind = msg.get("kind", "all")
        if kind == "nan":
            return {"scores": np.array([0.5, np.nan], dtype=np.float32)}
        if kind == "big":
            return {"data": np.arange(msg["n"], dtype=np.float64) + 0.123456789}
        if kind == "bytes":
            return {"raw": np.array([b"\x00\x01", b"ok"], dtype=object)}
        return {
            "ints": np.arange(4, dtype=np.int64).reshape(2, 2),
            "int64": np.int64(7),
            "float32": np.float32(0.5),
            "bool": np.bool_(True),
            "zero_d": np.array(2.5),
            "strings": np.array(["setosa", "é"]),
            "uint8": np.array([0, 255], dtype=np.uint8),
        }


class HostArrays:
    """Sends ``values(msg["kind"])`` to the host command ``score`` (``host.call``)."""

    def execute(self, msg):
        from pyproxy import host

        return host.call("score", {"x": values(msg["kind"])})
