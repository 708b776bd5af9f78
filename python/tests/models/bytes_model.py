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


class HostCall:
    """Calls the host: ``host.call(msg["cmd"], msg["args"])``, or the cache
    (``msg["cache"]``: ``"set"`` then ``"get"`` of ``msg["value"]`` under
    ``msg["key"]``) or ``host.publish(msg["channel"], msg["args"])``; returns
    what came back and its type name (``{"result", "type"}``), or the
    ``HostError`` (``{"error", "type": "HostError"}``)."""

    threaded = True

    def execute(self, msg):
        try:
            if msg.get("cache") == "set":
                host.cache.set(msg["key"], msg["value"])
                result = host.cache.get(msg["key"])
            elif "channel" in msg:
                result = host.publish(msg["channel"], msg["args"])
            else:
                args = msg["args"]
                if msg.get("intKeys"):
                    args = {1: args, None: [args], 2.5: {"x": args}}
                result = host.call(msg["cmd"], args)
        except host.HostError as exc:
            return {"error": str(exc), "type": "HostError"}
        return {"result": result, "type": type(result).__name__}
