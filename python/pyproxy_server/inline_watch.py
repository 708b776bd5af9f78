"""``InlineWatch``: proof of life while an inline call holds the event loop.

A model that proved fast runs on the event loop thread (the inline fast path,
see ``models``). If one of its calls then turns slow (a cache miss, a slow
input), the loop reads nothing until it returns: pings go unanswered and the
host would take the worker for wedged and kill it, although the call is
doing its work. So while an inline call has run for ``STALL`` seconds, a
watchdog thread writes a ``busy`` event on its connection every ``EVERY``
seconds (protocol §4): bytes from the worker prove it alive to the host's
heartbeat. The host does not count a ``busy`` event of a request it gave up
on (timed out or cancelled): such a call cannot be cancelled while it holds
the loop, so the host's grace after a timeout ends in a restart, as before.
And no call gets ``busy`` events past ``BUSY_MAX`` seconds: a hung inline call
(other calls wait behind it) ends in a restart too, after the heartbeat's
timeout.

The watchdog writes straight to the socket, only between frames (the
transport's buffer empty) and only while the loop thread is still inside
that same call; ``Connection.send_busy`` and the end of ``_inline_reply``
agree on it through ``_wire_lock`` and ``_busy_armed``. A call that holds the
GIL in one C function (a huge ``sum`` or sort) stops this thread as well:
nothing in Python can answer for it (docs/reliability.md).

Example::

    InlineWatch.ensure(server)  # once inline calls start; a daemon thread
"""

import logging
import threading
import time

__all__ = ["InlineWatch"]

log = logging.getLogger("pyproxy_server.inline_watch")

_clock = time.perf_counter


class InlineWatch:
    """The watchdog thread of one ``Server`` (``InlineWatch.ensure``)."""

    # Seconds between checks of the connections.
    TICK = 0.1
    # Seconds an inline call runs before the host hears that it is busy.
    STALL = 0.25
    # Seconds between two ``busy`` events of one call.
    EVERY = 0.5
    # Seconds of one inline call after which no more ``busy`` events are sent:
    # a call that holds the loop this long (a hang: a socket read without a
    # timeout in a model that proved fast) must not keep the worker "alive"
    # for ever while every other call on it waits. The host's heartbeat then
    # replaces the worker, as it would a server that answers nothing.
    BUSY_MAX = 30.0

    def __init__(self, server):
        self._server = server
        self._thread = threading.Thread(target=self._run, name="pyproxy-inline-watch", daemon=True)

    @classmethod
    def ensure(cls, server):
        """Start ``server``'s watchdog unless it runs already (loop thread only)."""
        if server.__dict__.get("inline_watch") is None:
            watch = server.inline_watch = cls(server)
            watch._thread.start()

    def _run(self):
        server = self._server
        while True:
            time.sleep(self.TICK)
            loop = server.loop
            if server.stopping or loop is None or loop.is_closed():
                return
            now = _clock()
            for conn in list(server.connections.values()):
                since = conn._inline_since
                if (
                    since
                    and self.STALL <= now - since < self.BUSY_MAX
                    and now - conn._busy_sent >= self.EVERY
                ):
                    try:
                        conn.send_busy(since, now)
                    except Exception:  # a bug here must not end the watch
                        log.exception("inline watch: cannot send a busy event")
