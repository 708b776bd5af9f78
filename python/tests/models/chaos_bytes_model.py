"""A model whose results hold ``bytes`` in awkward places (test_bytes.BytesChaosTest)."""

import collections


class Weird:
    """Returns (or, for ``"stream_object"``, yields) what ``msg["kind"]`` names."""

    def execute(self, msg):
        kind = msg["kind"]
        if kind == "stream_object":
            return self._stream()
        if kind == "bytes_and_object":
            return {"a": b"x", "b": object()}
        if kind == "bytes_and_nan":
            return {"a": b"x", "b": float("nan")}
        if kind == "subclasses":
            d = collections.defaultdict(list)
            d["x"] = b"dd"
            return {"d": d, "o": collections.OrderedDict(y=bytearray(b"od"))}
        if kind == "keys":
            return {1: b"i", None: b"n", 2.5: b"f", False: b"b"}
        raise ValueError("no kind %r" % kind)

    def _stream(self):
        yield {"a": b"x", "b": object()}


class Big:
    """Returns ``msg["size"]`` bytes (``msg["stream"]``: yields them twice)."""

    def execute(self, msg):
        data = bytes(range(256)) * (msg["size"] // 256)
        if msg.get("stream"):
            return iter([data, data])
        return data
