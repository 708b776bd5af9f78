"""Example model: a counter per key in the host's shared cache.

Every worker of the pool (and every pool sharing a Redis store) sees the same
counters. The read-increment-write is not atomic: two calls racing on one key
may count once; use keyed routing (``pool.execute(..., {key})``) to send one
key's calls to one worker when that matters.
"""

from pyproxy import host


class CacheCounter:
    """Increments ``counter:<key>`` and returns the new count; ``ttl``
    (seconds, optional) makes the counter expire."""

    # "number?": the gateway lets a call leave ttl out.
    inputs = {"key": "string", "ttl": "number?"}
    outputs = {"key": "string", "count": "integer"}

    def execute(self, msg):
        key = "counter:" + str(msg.get("key", "default"))
        count = (host.cache.get(key) or 0) + 1
        ttl = msg.get("ttl")
        if ttl is None:
            host.cache.set(key, count)
        else:
            host.cache.set(key, count, ttl=ttl)
        return {"key": key, "count": count}
