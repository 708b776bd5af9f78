"""``ItemStream``: the items of one ``executeStream`` call, flow-controlled.

A model whose ``execute`` is a generator (or returns an iterator) streams:
each item it yields is sent at once as an ``item`` event (protocol §6,
Streaming) instead of waiting for the whole result. The host acknowledges
what its consumer has read (``itemAck {target, seq}``). While
``window_items`` items or ``window_bytes`` bytes are sent and not
acknowledged, the window is full: the producer (``StreamProducer``) parks
the call (``park``) instead of waiting on its thread, and the ack that opens
the window again queues its next burst (``ack``). So a slow consumer slows
the model down without growing buffers on either side, and without holding
a call thread while it is slow.

The window's counters are guarded by the call's lock (``call.lock``), the
lock ``CallRunner.park`` and ``unpark`` check them under.

Example::

    stream = ItemStream(call)
    while stream.has_room():
        stream.send(next(items))
    if stream.park(resume):
        return PARK           # resume(call) runs once the reader catches up
"""

from . import http_meta
from .errors import SerializationError
from .execution import CallRunner
from .json_problem import not_json_reason

__all__ = ["ItemStream"]


class ItemStream:
    """Sends one call's items as sequence-numbered events, within a window."""

    # Items sent and not acknowledged before the window is full.
    window_items = 64
    # Bytes of item events sent and not acknowledged before it is full.
    window_bytes = 1024 * 1024

    def __init__(self, call):
        self._call = call
        self._lock = call.lock
        self._seq = 0
        self._sizes = {}
        self._unacked_bytes = 0
        self._acked = -1

    @property
    def count(self):
        """Items sent so far."""
        return self._seq

    def has_room(self):
        """True while the window takes one more item (read without the lock:
        ``park`` checks again under it)."""
        return self._seq - 1 - self._acked < self.window_items and self._unacked_bytes < self.window_bytes

    def _full(self):
        return not self.has_room()

    def send(self, item):
        """Send ``item`` (any JSON value) now, window or not (the producer
        checks ``has_room`` first; the first item of a stream always goes).

        Raises ``SerializationError`` for an item that is not JSON (naming
        where) or too large to send.
        """
        call = self._call
        seq = self._seq  # one producer at a time: no other writer
        event = {"event": "item", "id": call.id, "seq": seq, "data": item}
        if seq == 0:
            self._first_headers(call, event)
        conn = call.connection
        try:
            payload, size = conn.encode_event_or_raise(event)
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError("Cannot send item %d: not JSON: %s" % (seq, not_json_reason(exc, item, "item[%d]" % seq, conn.sends_bytes)))
        # Counted before it is queued: an ack of it can come only after.
        with self._lock:
            self._seq = seq + 1
            self._sizes[seq] = size
            self._unacked_bytes += size
        conn.enqueue(payload)

    @staticmethod
    def _first_headers(call, event):
        # The headers the model set before its first item go with it
        # (protocol §6, ``http``); one set from now on is dropped.
        with call.lock:
            http = call.http
            call.http = http_meta.SENT
        if http is not None and http is not http_meta.SENT:
            wire = http_meta.reply_meta(http, None)
            if wire is not None:
                event["http"] = wire

    def park(self, resume):
        """The window is full: park the call (``CallRunner.park``) unless an
        ack opened it meanwhile. True: parked, ``resume(call)`` runs when the
        reader catches up (or a cancel comes); False: go on. Raises
        ``CancelledError`` when the call was cancelled.

        First the client is told, ``{"event": "windowFull", "id", "acked"}``
        (``acked``: the last item acknowledged as the window was full), so
        that it counts the call parked even where its own count of the
        window's bytes falls short of this one (it sees items parsed: ``1.0``
        written as ``1``); a client that acknowledged more since ignores it.
        Sent before parking: after the items, before anything a resumed
        burst or the call's end sends."""
        call = self._call
        with self._lock:
            acked = self._acked
            full = self._full()
        if full:
            call.send_event({"event": "windowFull", "acked": acked})
        return CallRunner.park(call, resume, self._full)

    def ack(self, seq):
        """Acknowledge every item up to ``seq`` (cumulative; a ``seq`` past
        the last item sent covers what was sent); a parked call whose window
        this opens goes on (loop thread)."""
        call = self._call
        with self._lock:
            last = min(seq, self._seq - 1)
            if self._acked >= last:
                return
            while self._acked < last:
                self._acked += 1
                self._unacked_bytes -= self._sizes.pop(self._acked, 0)
        call.connection.runner.unpark(call, self.has_room)
