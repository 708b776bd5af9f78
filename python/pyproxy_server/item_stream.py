"""``ItemStream``: the items of one ``executeStream`` call, flow-controlled.

A model whose ``execute`` is a generator (or returns an iterator) streams:
each item it yields is sent at once as an ``item`` event (protocol §6,
Streaming) instead of waiting for the whole result. The host acknowledges
what its consumer has read (``itemAck {target, seq}``); the generator's
thread blocks while more than ``window_items`` items or ``window_bytes``
bytes are sent and not acknowledged, so a slow consumer slows the model
down instead of growing buffers on either side.

Example::

    stream = ItemStream(call)
    for item in generator:
        stream.send(item)   # may block for credit
    stream.close()
"""

import threading

from .errors import CancelledError, SerializationError
from .json_problem import describe_not_json

__all__ = ["ItemStream"]


class ItemStream:
    """Sends one call's items as sequence-numbered events, within a window."""

    # Items sent and not acknowledged before the model's thread blocks.
    window_items = 64
    # Bytes of item events sent and not acknowledged before it blocks.
    window_bytes = 1024 * 1024
    # Seconds between checks for cancellation while blocked on credit.
    poll = 0.05

    def __init__(self, call):
        self._call = call
        self._cond = threading.Condition()
        self._seq = 0
        self._sizes = {}
        self._unacked_bytes = 0
        self._acked = -1
        self._closed = False

    @property
    def count(self):
        """Items sent so far."""
        return self._seq

    def send(self, item):
        """Send ``item`` (any JSON value); blocks while the window is full.

        Raises ``SerializationError`` for an item that is not JSON (naming
        where), ``CancelledError`` when the call was cancelled meanwhile.
        """
        call = self._call
        with self._cond:
            while (self._seq - 1 - self._acked >= self.window_items
                   or self._unacked_bytes >= self.window_bytes):
                if call.is_cancelled() or self._closed:
                    raise CancelledError("Cannot send item %d: the call was cancelled" % self._seq)
                self._cond.wait(self.poll)
            seq = self._seq
            event = {"event": "item", "id": call.id, "seq": seq, "data": item}
            try:
                size = call.connection.send_event_or_raise(event)
            except (TypeError, ValueError, RecursionError) as exc:
                where = None if isinstance(exc, RecursionError) else describe_not_json(item, "item[%d]" % seq)
                raise SerializationError("Cannot send item %d: not JSON: %s" % (seq, where or exc))
            self._seq = seq + 1
            self._sizes[seq] = size
            self._unacked_bytes += size

    def ack(self, seq):
        """Acknowledge every item up to ``seq`` (cumulative; a ``seq`` past
        the last item sent covers what was sent)."""
        with self._cond:
            last = min(seq, self._seq - 1)
            while self._acked < last:
                self._acked += 1
                self._unacked_bytes -= self._sizes.pop(self._acked, 0)
            self._cond.notify_all()

    def close(self):
        """No more items: wakes a blocked sender (it raises ``CancelledError``)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
