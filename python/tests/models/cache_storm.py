"""Test model: many host callbacks from one execute."""

from pyproxy import host


class CacheStorm:
    """Calls host handler ``name`` ``n`` times; returns the sum of the results."""

    def execute(self, msg):
        name = msg.get("name", "test.count")
        total = 0
        for i in range(msg["n"]):
            total += host.call(name, {"i": i})
        return {"n": msg["n"], "total": total}
