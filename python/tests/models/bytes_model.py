"""Models that take and give ``bytes`` (protocol §3, "Bytes")."""

from pyproxy import host


class Echo:
    """Returns ``msg`` as it came (bytes included), with what it saw:
    ``{"msg": msg, "type": <type name>, "contentType": host.content_type()}``."""

    def execute(self, msg):
        return {"msg": msg, "type": type(msg).__name__, "contentType": host.content_type()}


class Raw:
    """Returns ``msg`` itself: bytes in, bytes out (a ``bytearray`` or
    ``memoryview`` when ``msg`` is ``{"as": "bytearray" | "memoryview", "data": b"..."}``)."""

    def execute(self, msg):
        if isinstance(msg, dict) and msg.get("as") == "bytearray":
            return bytearray(msg["data"])
        if isinstance(msg, dict) and msg.get("as") == "memoryview":
            return memoryview(msg["data"])
        return msg


class Png:
    """Returns the PNG signature followed by the body: a ``bytes`` result
    that the gateway sends as ``image/png`` (``media_type``)."""

    media_type = "image/png"

    def execute(self, msg):
        return b"\x89PNG\r\n\x1a\n" + (msg if isinstance(msg, bytes) else b"")


class Batch:
    """A batching model: each message's bytes reversed, and the batch size."""

    batch_size = 4

    def execute_batch(self, msgs):
        return [{"reversed": m["data"][::-1], "n": len(msgs)} for m in msgs]


class Stream:
    """Yields ``msg["n"]`` items, each ``bytes([i]) * 3``."""

    def execute(self, msg):
        for i in range(msg["n"]):
            yield bytes([i]) * 3
