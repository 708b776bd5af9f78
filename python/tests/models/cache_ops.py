"""Test model: one shared-cache operation (or host call) per execute."""

from pyproxy import host


class CacheOps:
    """Runs ``op`` ("get", "set", "delete", "call") against the host."""

    def execute(self, msg):
        op = msg["op"]
        if op == "get":
            return {"value": host.cache.get(msg["key"])}
        if op == "set":
            if msg.get("ttl") is None:
                host.cache.set(msg["key"], msg["value"])
            else:
                host.cache.set(msg["key"], msg["value"], ttl=msg["ttl"])
            return {"ok": True}
        if op == "delete":
            return {"deleted": host.cache.delete(msg["key"])}
        if op == "call":
            return {"result": host.call(msg["name"], msg.get("args"))}
        raise ValueError("unknown op %r" % (op,))
