"""Records model metrics as its message says (``pyproxy.metrics``).

Used by the server's and the host's metrics tests.
"""

import threading

from pyproxy import metrics


class Metered:
    """``{"counter": n}`` adds 1 n times to ``hits_total`` (label ``path``
    when given), ``{"gauge": v}`` sets ``depth``, ``{"observe": [...]}``
    observes each value in ``latency_seconds``, ``{"bad": {...}}`` makes one
    update with the given arguments and answers what it raised,
    ``{"series": n}`` adds to n series of ``wide_total``, ``{"thread": n}``
    counts n in a thread started without the call's context."""

    def __init__(self, options):
        self.options = options

    def execute(self, msg):
        labels = {"path": msg["path"]} if "path" in msg else None
        for _ in range(msg.get("counter", 0)):
            metrics.counter("hits_total", labels=labels, description="Hits by path.")
        if "gauge" in msg:
            metrics.gauge("depth", msg["gauge"], description="Queue depth.")
        for value in msg.get("observe", ()):
            metrics.histogram("latency_seconds", value, buckets=msg.get("buckets"))
        for i in range(msg.get("series", 0)):
            metrics.counter("wide_total", labels={"i": str(i)})
        if "thread" in msg:
            t = threading.Thread(target=lambda: metrics.counter("orphan_total", msg["thread"]))
            t.start()
            t.join()
        if "bad" in msg:
            bad = msg["bad"]
            try:
                getattr(metrics, bad.get("kind", "counter"))(bad["name"], bad.get("value", 1), bad.get("labels"))
            except (TypeError, ValueError) as exc:
                return {"raised": type(exc).__name__, "message": str(exc)}
            return {"raised": None}
        return {"ok": True}
