"""Record metrics from model code: ``from pyproxy import metrics``.

Counters, gauges and histograms, aggregated in the Python process and sent
to the host in batches (nothing is sent per update), summed there across
workers and exposed by the gateway's ``GET /metrics`` as
``pyproxy_model_<name>`` with a ``model`` label (docs/models.md,
"Metrics")::

    import time
    from pyproxy import metrics

    class Model:
        def execute(self, msg):
            t0 = time.perf_counter()
            metrics.counter("predictions_total", labels={"kind": msg["kind"]})
            metrics.gauge("cache_entries", 42)
            result = {"y": msg["x"] * 2}
            metrics.histogram("inference_seconds", time.perf_counter() - t0)
            return result

An update counts for the model whose call runs in the thread (threads
started with ``contextvars.copy_context().run`` too); elsewhere (eval
code, other threads, module code run outside a call) for no model.

A bad update raises at once, and records nothing: ``TypeError`` for a
name, label or value of the wrong type, ``ValueError`` for a name that is
not ``[a-zA-Z_][a-zA-Z0-9_]*`` (at most 128 characters, not starting with
``__``), more than 8 labels, a reserved label name (``model``, ``worker``,
``le``, ``quantile``), a label value over 256 characters (or holding a
lone surrogate), a value that is
not finite, a negative counter increment, a name used before as another
kind, histogram ``buckets`` other than those of the name's first use. A
process keeps at most 2000 series (model, name, labels): updates of
further ones are dropped, with one warning per model, and counted by the
gateway (``pyproxy_dropped_model_series_total``).
"""

from time import perf_counter as _perf_counter

from pyproxy_server.model_metrics import DEFAULT_BUCKETS, registry as _registry

__all__ = ["counter", "gauge", "histogram", "observe", "timer", "DEFAULT_BUCKETS"]

_record = _registry.record


def counter(name, value=1, labels=None, description=None):
    """Add ``value`` (a finite number >= 0, default 1) to the counter ``name``.

    ``labels``: a dict of label name -> string value; ``description``: the
    ``# HELP`` text (the first one the host sees is kept).
    """
    _record("counter", name, value, labels, description)


def gauge(name, value, labels=None, description=None):
    """Set the gauge ``name`` to ``value`` (a finite number).

    The host keeps the last value of each worker: the gateway shows one
    series per worker (a ``worker`` label), dropped when the worker ends.
    """
    _record("gauge", name, value, labels, description)


def histogram(name, value, labels=None, description=None, buckets=None):
    """Observe ``value`` (a finite number) in the histogram ``name``.

    ``buckets``: increasing upper bounds (at most 32), fixed by the name's
    first use; ``DEFAULT_BUCKETS`` (for seconds, 5 ms to 10 s) when that
    use gives none.
    """
    _record("histogram", name, value, labels, description, buckets)


observe = histogram


class timer:
    """Context manager: observe the seconds its block took in the histogram
    ``name`` (also when the block raises)::

        with metrics.timer("preprocess_seconds"):
            features = preprocess(msg)
    """

    __slots__ = ("_args", "_t0")

    def __init__(self, name, labels=None, description=None, buckets=None):
        # A bad name, label or buckets raises here, before the block runs:
        # at its exit it would replace the block's own exception.
        _registry.check("histogram", name, labels, description, buckets)
        self._args = (name, labels, description, buckets)
        self._t0 = 0.0

    def __enter__(self):
        self._t0 = _perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb):
        name, labels, description, buckets = self._args
        try:
            _record("histogram", name, _perf_counter() - self._t0, labels, description, buckets)
        except (TypeError, ValueError):
            if exc_type is None:
                raise
            # The block's exception goes on: what it raised matters more
            # than a timing the name no longer takes (its kind changed).
        return False

