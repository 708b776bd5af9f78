"""Test model: one shared-cache operation (or host call) per execute."""

import os
import time

from pyproxy import host


class CacheOps:
    """Runs ``op`` ("get", "set", "delete", "call") against the host;
    "gated_set" writes the path ``gate`` + ".started", waits up to 30 s for
    the file ``gate``, then sets."""

    def execute(self, msg):
        op = msg["op"]
        if op == "gated_set":
            with open(msg["gate"] + ".started", "w") as f:
                f.write("started")
            deadline = time.monotonic() + 30
            while not os.path.exists(msg["gate"]) and time.monotonic() < deadline:
                time.sleep(0.005)
            op = "set"
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
