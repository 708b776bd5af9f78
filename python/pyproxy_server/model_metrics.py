"""Model metrics: counters, gauges and histograms that model code records.

``pyproxy.metrics`` (the model-side API) calls :data:`registry`. An update
sends nothing: the process aggregates updates per series (model, name,
labels) and the event loop sends what changed, every ``FLUSH_INTERVAL``
seconds at most, as one ``metrics`` event (protocol §6, "Model metrics") to
a connection whose host asked for them (``"metrics": true`` in its
``auth``). With no such connection the updates keep adding up (memory is
bounded by ``MAX_SERIES``) and go to the first host that asks. A process
that records nothing schedules nothing and sends nothing.

Updates are thread-safe. On a call's thread an update runs shielded from a
cancel's interrupt (``CallRunner.defer_interrupt``): a ``KeyboardInterrupt``
injected meanwhile fires once the registry's lock is released, so it
neither leaves the lock held nor half an update (a histogram's count
without its bucket).

Attribution: an update made while a model's call runs (``executeModel``,
``executeBatch``, ``executeStream``, ``addModel``, ``initModel``,
``updateModel``, in threads started with ``contextvars.copy_context().run``
too) counts for that model; one made elsewhere (eval code, a thread started
without the call's context, module code run outside any call) for no
model (``"model": null`` on the wire).
"""

import bisect
import logging
import math
from numbers import Real as _Real
import re
import threading

from .call import current_call
from .execution import CallRunner

__all__ = ["MetricsRegistry", "registry", "DEFAULT_BUCKETS"]

log = logging.getLogger("pyproxy_server")

# Histogram bucket upper bounds when the first use of a name gives none
# (Prometheus client libraries' defaults, for durations in seconds).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Labels the host adds itself, or that mean something to Prometheus.
_RESERVED_LABELS = frozenset(("model", "worker", "le", "quantile"))
# Commands whose ``name`` is the model the call runs code of.
_MODEL_COMMANDS = frozenset(
    ("executeModel", "executeBatch", "executeStream", "addModel", "updateModel", "initModel")
)
_KINDS = ("counter", "gauge", "histogram")

_get_call = current_call.get
_defer_interrupt = CallRunner.defer_interrupt
_unshield = CallRunner.unshield
_isfinite = math.isfinite


def _real(value):
    # int, float, and other real numbers (numpy's int64, float32; Fraction),
    # but not bool: a True counted as 1 is a bug in the model.
    return isinstance(value, _Real) and not isinstance(value, bool)


def _utf8(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _model_of(call):
    if call is None or call.cmd not in _MODEL_COMMANDS:
        return None
    name = call.msg.get("name")
    return name if name.__class__ is str else None


class MetricsRegistry:
    """The process's model metrics; see the module docstring."""

    # Longest metric name, label name, label value, description (characters).
    MAX_NAME = 128
    MAX_LABEL_VALUE = 256
    MAX_DESCRIPTION = 1024
    # Labels per series, bucket bounds per histogram.
    MAX_LABELS = 8
    MAX_BUCKETS = 32
    # Series (model, name, labels) kept by the process; updates of further
    # series are dropped (counted in the next event's ``dropped``, one
    # warning per model).
    MAX_SERIES = 2000
    # Seconds between the first update after a flush and the next flush.
    FLUSH_INTERVAL = 0.5

    def __init__(self):
        self._lock = threading.Lock()
        # name -> (kind, description or None, bucket bounds or None)
        self._families = {}
        # (model, name, labels tuple) -> pending delta: [value] (counter:
        # the sum since the last flush; gauge: the last value), or
        # [counts per bucket + overflow, sum, count] (histogram).
        self._pending = {}
        # Series ever recorded (bounded by MAX_SERIES).
        self._known = set()
        self._dropped = {}  # model -> updates dropped since the last flush
        self._warned = set()
        self._scheduled = False
        self._server = None

    # -- recording (any thread) ------------------------------------------

    def record(self, kind, name, value, labels=None, description=None, buckets=None):
        """Add one update; raises ``TypeError``/``ValueError`` for a bad one."""
        if value.__class__ is not int and value.__class__ is not float and not _real(value):
            raise TypeError("Cannot record metric %r: value must be a real number, not %s" % (name, type(value).__name__))
        try:
            value = float(value)
        except OverflowError:
            raise ValueError("Cannot record metric %r: value %r is too large" % (name, value)) from None
        if not _isfinite(value):
            raise ValueError("Cannot record metric %r: value must be finite, not %r" % (name, value))
        if kind == "counter" and value < 0:
            raise ValueError("Cannot record metric %r: a counter only goes up (value %r)" % (name, value))
        call = _get_call()
        model = _model_of(call)
        if labels is None or labels == {}:
            key = (model, name, ())
        elif labels.__class__ is dict or isinstance(labels, dict):  # OrderedDict, defaultdict too
            try:
                key = (model, name, tuple(sorted(labels.items())))
            except TypeError:
                raise TypeError("Cannot record metric %r: label names and values must be strings" % (name,)) from None
        else:
            raise TypeError("Cannot record metric %r: labels must be a dict, not %s" % (name, type(labels).__name__))
        family = self._families.get(name)
        if family is None or family[0] != kind or key not in self._known:
            family = self._check(kind, name, key[2], description, buckets)
        elif buckets is not None and family[2] != self._bounds(name, buckets):
            raise ValueError("Cannot record metric %r: its buckets were set at its first use" % (name,))
        shielded = call is not None and _defer_interrupt(call)
        try:
            with self._lock:
                arm = self._add(kind, key, family, value)
        finally:
            if shielded:
                _unshield(call)
        if arm:
            self._arm()

    def _add(self, kind, key, family, value):
        # Under the lock; nothing here raises, nothing calls out.
        if key not in self._known:
            # Past the bound before its name is kept: names of dropped series
            # would fill _families without bound.
            if len(self._known) >= self.MAX_SERIES:
                return self._drop(key[0], "more than %d series; updates of new series" % self.MAX_SERIES)
            # Two threads' first uses of a name race: the first one's family
            # (kind, buckets) is the name's; another kind is refused at its
            # next use.
            family = self._families.setdefault(key[1], family)
            if family[0] != kind:
                return False
            self._known.add(key)
        slot = self._pending.get(key)
        if kind == "histogram":
            if slot is None:
                slot = self._pending[key] = [[0] * (len(family[2]) + 1), 0.0, 0]
            elif not _isfinite(slot[1] + value):
                return self._drop(key[0], "a sum past the largest float; updates that overflow it")
            slot[0][bisect.bisect_left(family[2], value)] += 1
            slot[1] += value
            slot[2] += 1
        elif slot is None:
            self._pending[key] = [value]
        elif kind == "counter":
            if not _isfinite(slot[0] + value):
                # inf is not JSON: the event holding it would be dropped whole,
                # every other series' updates with it.
                return self._drop(key[0], "a sum past the largest float; updates that overflow it")
            slot[0] += value
        else:
            slot[0] = value
        return self._want_flush()

    def _drop(self, model, why):
        # Under the lock: count one dropped update of ``model``, warn once.
        self._dropped[model] = self._dropped.get(model, 0) + 1
        if model not in self._warned and len(self._warned) < 1000:
            self._warned.add(model)
            log.warning("model metrics: %s of model %r are dropped", why, model)
        return self._want_flush()

    def _want_flush(self):
        if self._scheduled or self._server is None:
            return False
        self._scheduled = True
        return True

    def check(self, kind, name, labels=None, description=None, buckets=None):
        """Raises what ``record`` would for this name, labels, description
        and buckets (not the value), recording nothing."""
        if labels is None:
            items = ()
        elif isinstance(labels, dict):
            try:
                items = tuple(sorted(labels.items()))
            except TypeError:
                raise TypeError("Cannot record metric %r: label names and values must be strings" % (name,)) from None
        else:
            raise TypeError("Cannot record metric %r: labels must be a dict, not %s" % (name, type(labels).__name__))
        self._check(kind, name, items, description, buckets)

    def _check(self, kind, name, labels, description, buckets):
        """The family of a new series after validating it (no lock held)."""
        if name.__class__ is not str:
            raise TypeError("Cannot record metric: its name must be a string, not %s" % type(name).__name__)
        if len(name) > self.MAX_NAME or not _NAME.match(name) or name.startswith("__"):
            raise ValueError(
                "Cannot record metric %r: a name is 1 to %d letters, digits and underscores, not starting "
                "with a digit or '__'" % (name[:200], self.MAX_NAME)
            )
        if len(labels) > self.MAX_LABELS:
            raise ValueError("Cannot record metric %r: more than %d labels" % (name, self.MAX_LABELS))
        for label, text in labels:
            if label.__class__ is not str or text.__class__ is not str:
                raise TypeError("Cannot record metric %r: label names and values must be strings" % (name,))
            if len(label) > self.MAX_NAME or not _NAME.match(label) or label.startswith("__"):
                raise ValueError("Cannot record metric %r: bad label name %r" % (name, label[:200]))
            if label in _RESERVED_LABELS:
                raise ValueError("Cannot record metric %r: the label name %r is reserved" % (name, label))
            if len(text) > self.MAX_LABEL_VALUE:
                raise ValueError(
                    "Cannot record metric %r: label %r has more than %d characters" % (name, label, self.MAX_LABEL_VALUE)
                )
            if not _utf8(text):
                # A lone surrogate (a file name's undecodable byte) reaches a
                # scraper as U+FFFD: two values would be one series, twice.
                raise ValueError("Cannot record metric %r: label %r is not valid Unicode (a lone surrogate)" % (name, label))
        family = self._families.get(name)
        if family is not None:
            if family[0] != kind:
                raise ValueError("Cannot record metric %r as a %s: it is a %s" % (name, kind, family[0]))
            if buckets is not None and family[2] != self._bounds(name, buckets):
                raise ValueError("Cannot record metric %r: its buckets were set at its first use" % (name,))
            return family
        if description is not None:
            if description.__class__ is not str:
                raise TypeError("Cannot record metric %r: description must be a string" % (name,))
            if len(description) > self.MAX_DESCRIPTION:
                raise ValueError("Cannot record metric %r: description over %d characters" % (name, self.MAX_DESCRIPTION))
            if not _utf8(description):
                raise ValueError("Cannot record metric %r: description is not valid Unicode (a lone surrogate)" % (name,))
        for suffix in ("_bucket", "_sum", "_count"):
            # A histogram's series take these names: no other metric may.
            if kind == "histogram" and (name + suffix) in self._families:
                raise ValueError("Cannot record metric %r: %r is a metric already" % (name, name + suffix))
            if name.endswith(suffix) and self._families.get(name[: -len(suffix)], ("",))[0] == "histogram":
                raise ValueError("Cannot record metric %r: a histogram's series has that name" % (name,))
        bounds = None
        if kind == "histogram":
            bounds = DEFAULT_BUCKETS if buckets is None else self._bounds(name, buckets)
        return (kind, description, bounds)

    def _bounds(self, name, buckets):
        try:
            items = tuple(buckets)
            # Numbers only: float() took "123" as the bounds 1, 2, 3.
            if not all(map(_real, items)):
                raise TypeError
            bounds = tuple(map(float, items))
        except (TypeError, ValueError, OverflowError):
            raise TypeError("Cannot record metric %r: buckets must be numbers" % (name,)) from None
        if not 0 < len(bounds) <= self.MAX_BUCKETS or not all(map(_isfinite, bounds)) or any(
            a >= b for a, b in zip(bounds, bounds[1:])
        ):
            raise ValueError(
                "Cannot record metric %r: buckets must be 1 to %d finite, increasing numbers" % (name, self.MAX_BUCKETS)
            )
        return bounds

    def forget_model(self, model):
        """Drop the series of ``model`` (it was removed from this process: a
        model added under the name starts afresh, and removed models' series
        do not fill ``MAX_SERIES``), after sending what waits of them to a
        host that asked (any thread; before the removal's reply, on the same
        connection: a placed model moved off this worker keeps its last
        updates)."""
        conn = self._target()
        with self._lock:
            last = {}
            for key in [k for k in self._known if k[0] == model]:
                self._known.discard(key)
                slot = self._pending.pop(key, None)
                if slot is not None:
                    last[key] = slot
            dropped = self._dropped.pop(model, None)
            self._warned.discard(model)
            families = self._families_of(last)
            # A name no series uses any more is free again: the model added
            # anew may record it as another kind (or with other buckets).
            used = {k[1] for k in self._known}
            for name in [n for n in self._families if n not in used]:
                del self._families[name]
        if conn is not None:
            self._send(conn, last, {model: dropped} if dropped else {}, families)

    # -- flushing (the event loop) ---------------------------------------

    def install(self, server):
        """Flush to ``server``'s connections from now on (its loop runs)."""
        with self._lock:
            self._server = server
            arm = bool(self._pending or self._dropped) and self._want_flush()
        if arm:
            self._arm()

    def wanted(self):
        """A connection asked for metrics (loop thread): send what waits."""
        with self._lock:
            arm = bool(self._pending or self._dropped) and self._want_flush()
        if arm:
            self._arm()

    def _arm(self):
        server = self._server
        try:
            server.loop.call_soon_threadsafe(self._later)
        except (AttributeError, RuntimeError):  # no loop yet, or closed
            with self._lock:
                self._scheduled = False

    def _later(self):
        self._server.loop.call_later(self.FLUSH_INTERVAL, self.flush)

    def _target(self):
        """The connection metrics go to: the first whose host asked, or None."""
        server = self._server
        if server is None:
            return None
        for candidate in list(server.connections.values()):
            if candidate.wants_metrics and not candidate.closed:
                return candidate
        return None

    def flush(self):
        """Send what changed since the last flush as one ``metrics`` event
        (loop thread). Kept for later when no connection asked for it. The
        server flushes once more as it stops, before it closes its
        connections: a stop loses no update made before it."""
        conn = self._target()
        with self._lock:
            self._scheduled = False
            if conn is None:
                return
            pending, self._pending = self._pending, {}
            dropped, self._dropped = self._dropped, {}
            # Read now: a removal on another thread may free the names next.
            families = self._families_of(pending)
        self._send(conn, pending, dropped, families)

    def _families_of(self, pending):
        # Under the lock: the families of the names in ``pending``.
        families = self._families
        return {name: families[name] for _, name, _ in pending}

    def _send(self, conn, pending, dropped, families):
        if not pending and not dropped:
            return
        # Several events when one could pass half the frame limit: one above
        # it is refused whole, every series' updates with it (a server run
        # with a small --max-frame-size, series with long labels).
        budget = getattr(conn, "_max_frame", 1 << 26) // 2
        series = []
        size = 0
        for (model, name, labels), slot in pending.items():
            kind, description, bounds = families[name]
            entry = {"model": model, "name": name, "type": kind, "labels": dict(labels)}
            # At most what the entry takes as JSON (\uXXXX: 6 bytes a character).
            cost = 6 * (len(model or "") + len(name) + sum(len(k) + len(v) for k, v in labels)) + 200
            if description is not None:
                entry["help"] = description
                cost += 6 * len(description)
            if kind == "histogram":
                entry["buckets"] = list(bounds)
                entry["counts"] = slot[0]
                entry["sum"] = slot[1]
                entry["count"] = slot[2]
                cost += 48 * len(bounds)
            else:
                entry["value"] = slot[0]
            if series and size + cost > budget:
                conn.send_event({"event": "metrics", "series": series})
                series = []
                size = 0
            series.append(entry)
            size += cost
        event = {"event": "metrics", "series": series}
        if dropped:
            event["dropped"] = [{"model": model, "count": n} for model, n in dropped.items()]
        conn.send_event(event)

    def snapshot_pending(self):
        """A copy of what waits to be sent (tests)."""
        with self._lock:
            return {key: [list(v) if isinstance(v, list) else v for v in slot] for key, slot in self._pending.items()}


registry = MetricsRegistry()
