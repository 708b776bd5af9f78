"""``Call``: one request being handled, as seen by a command handler.

Handlers registered with ``Server.register(cmd, handler, threaded=...)``
receive a ``Call``:

- ``call.id`` (int), ``call.cmd`` (str), ``call.msg`` (the whole request dict)
- ``call.connection`` (``Connection``: ``.id``, ``.send_event(dict)``,
  ``.on_close(callback)``) and ``call.server`` (``Server``)
- ``call.cancelled``: a ``threading.Event`` set by ``cancel {target}`` or when
  the connection closes; long handlers may poll ``call.cancelled.is_set()``
- ``call.send_event(event)``: thread-safe; sends ``event`` with ``"id": call.id``
  added, before the reply (events and replies keep their order).
- ``call.request_id``: the request's ``requestId`` (the id its client gave the call,
  e.g. a gateway's ``X-Request-Id``; protocol §6), or ``None``.
- ``call.request_ids``: an ``executeBatch``'s ``requestIds``, one per message
  (``None`` for a message without one); ``[call.request_id]`` for other commands.
- ``call.content_type``: the request's ``contentType`` (the media type of a
  binary gateway body; protocol §6), or ``None``.
- ``call.headers``: the request's ``headers`` (the request headers a gateway
  forwards, lower-case name → value; protocol §6), or ``{}``;
  ``call.message_headers``: an ``executeBatch``'s ``messageHeaders``, one
  dict per message; ``[call.headers]`` for other commands.
- ``call.caller``: the request's ``caller`` (who makes the call: the id of the
  gateway token that let it in, ``pool.execute(..., {caller})``; protocol §6),
  or ``None``; ``call.callers``: an ``executeBatch``'s ``callers``, one per
  message; ``[call.caller]`` for other commands.
- ``call.trace_context``: the request's ``traceparent`` and ``tracestate``
  (W3C trace context of a traced call; protocol §6) as a dict, or ``None``;
  ``call.trace_contexts``: an ``executeBatch``'s ``traceContexts``, one per
  message; ``[call.trace_context]`` for other commands.

While a threaded handler runs, ``current_call`` (a ``ContextVar``) holds its
``Call``; ``pyproxy.host`` uses it to find the connection to call back on.
While an ``executeBatch`` runs model code, ``current_batch`` holds the request
ids of the messages that code got (see :data:`current_batch`).

Example::

    def handler(call):
        call.send_event({"event": "progress", "done": 0.5})
        return {"echo": call.msg.get("x")}
"""

import contextvars
import threading

__all__ = ["Call", "current_call", "current_batch"]

current_call = contextvars.ContextVar("pyproxy_current_call", default=None)

# While a batching call runs model code: ``(ids, as_batch, headers, start,
# traces, callers)``, the request ids of the messages that code got (a tuple in message
# order, ``None`` for a message without one), whether it got them as a batch
# (``execute_batch``) or as one message (``execute``: a batch run message by
# message for a model that no longer batches), and their forwarded headers (a
# tuple of dicts as long as ``ids``), the index of its first message in
# the call's (``host.set_status(..., index=)``), and their trace contexts (a
# tuple of dicts or ``None`` as long as ``ids``), and their callers (a tuple
# of strings or ``None`` as long as ``ids``). Set around each part of the
# call only, so other calls pay nothing; ``pyproxy.host.request_id()``/
# ``request_ids()``, ``headers()``/``message_headers()`` and
# ``trace_context()``/``trace_contexts()`` and ``caller()``/``callers()``
# read it.
current_batch = contextvars.ContextVar("pyproxy_current_batch", default=None)

def _trace_context_of(value):
    """A ``{"traceparent", "tracestate"?}`` dict of ``value``'s strings, or ``None``."""
    if value.__class__ is not dict:
        return None
    parent = value.get("traceparent")
    if parent.__class__ is not str:
        return None
    state = value.get("tracestate")
    if state.__class__ is str:
        return {"traceparent": parent, "tracestate": state}
    return {"traceparent": parent}


def _headers_of(value):
    if value.__class__ is not dict:
        return {}
    return {name: text for name, text in value.items() if text.__class__ is str}


class CancelledEvent(threading.Event):
    """A ``threading.Event`` that is also truthy exactly when set.

    So ``if call.cancelled:`` and ``call.cancelled.is_set()`` agree.
    """

    def __bool__(self):
        return self.is_set()


# Call states; only threaded calls move past PENDING. PARKED: the call goes
# on later and holds no thread meanwhile (a stream waiting for its reader,
# ``CallRunner.park``); it runs again (RUNNING) when resumed.
PENDING, RUNNING, DONE, PARKED = 0, 1, 2, 3


class Call:
    """A request in progress; see the module docstring."""

    __slots__ = (
        "id",
        "cmd",
        "msg",
        "connection",
        "server",
        "thread_ident",
        "state",
        "interrupted",
        "shielded",
        "host_futures",
        "lock",
        "inline",
        "host_refused",
        "spilled",
        "wake",
        "resume",
        "sink",
        "on_end",
        "http",
        "held_locks",
        "_cancelled",
    )

    def __init__(self, connection, rid, cmd, msg):
        self.id = rid
        self.cmd = cmd
        self.msg = msg
        self.connection = connection
        self.server = connection.server
        # Created on first use: most calls are never cancelled, and an Event
        # costs more than the rest of the dispatch.
        self._cancelled = None
        # Ident of the executor thread running the call (None until it runs).
        self.thread_ident = None
        self.state = PENDING
        # True once KeyboardInterrupt was injected into the running thread
        # (or, while shielded, is due when the shield ends).
        self.interrupted = False
        # While True, a cancel defers its interrupt (see CallRunner.shield).
        self.shielded = False
        # Futures of Python -> host requests made by this call (failed on cancel).
        self.host_futures = None
        # Guards state/interrupted; shared by the calls of one connection.
        self.lock = connection.state_lock
        # True while the call runs on the event loop thread (inline fast path).
        self.inline = False
        # Set when an inline call tried to call the host: that call got a
        # HostError (never re-run: at most once), and the model is demoted.
        self.host_refused = False
        # A spilled request's file, read on the call's own thread before its
        # handler runs: ``(SpillSettings, ref)``; ``msg`` is the stub until then.
        self.spilled = None
        # While the call awaits in an asyncio loop of its thread: wakes that
        # loop, so that a cancel's interrupt fires (``models._run_async``).
        self.wake = None
        # While PARKED: the handler that goes on with the call, until a
        # ``CallRunner.unpark`` (or a cancel) takes it to queue it.
        self.resume = None
        # The call's ``OutputSink`` (threaded calls): kept across the bursts
        # of a parked call, closed before its reply.
        self.sink = None
        # Called on the call's thread once its handler is over for good (not
        # parked), before the reply: releases what the handler holds even
        # when a cancel's interrupt fired before the handler's own clean-up
        # could start (``StreamProducer.end``). Must be idempotent.
        self.on_end = None
        # The HTTP status and headers the model chose (``http_meta``): None
        # until it sets one, so a plain call's reply pays one test for it.
        self.http = None
        # The ``pyproxy.Lock``s this call took on its thread (None until it
        # takes one): those it still holds when it ends cancelled are
        # released (``pyproxy.lock``), as an interrupt that fires as a
        # ``with``'s ``__exit__`` is entered skips the release.
        self.held_locks = None

    @property
    def cancelled(self):
        """``threading.Event`` set when the call is cancelled (or its connection closes).

        Truthy exactly when set (``CancelledEvent``).
        """
        event = self._cancelled
        if event is None:
            with self.lock:
                event = self._cancelled
                if event is None:
                    event = self._cancelled = CancelledEvent()
        return event

    def drop_spilled(self):
        """Delete the unread file of a spilled request that will never run."""
        spilled = self.spilled
        if spilled is not None:
            self.spilled = None
            spilled[0].discard(spilled[1])

    def is_cancelled(self):
        """Cheap check of ``cancelled.is_set()``."""
        event = self._cancelled
        return event is not None and event.is_set()

    @property
    def request_id(self):
        """The request's ``requestId`` string, or ``None`` (absent, or not a string).

        Read from the request when asked (a model's ``host.request_id()``, a
        log event): a request without one costs the read loop nothing.
        """
        msg = self.msg
        value = msg.get("requestId") if msg.__class__ is dict else None
        return value if value.__class__ is str else None

    @property
    def caller(self):
        """The request's ``caller`` string (who makes the call: the id of the
        gateway token that let it in; protocol §6), or ``None`` (absent, or
        not a string). Read when asked: a call without one costs nothing."""
        msg = self.msg
        value = msg.get("caller") if msg.__class__ is dict else None
        return value if value.__class__ is str else None

    @property
    def callers(self):
        """The callers of the call's messages, one per message, in order.

        An ``executeBatch``'s ``callers`` (protocol §6): a list as long as
        its ``msgs``, each a string or ``None``; one that is not such a list
        counts as absent (``None`` for every message), a non-string entry as
        ``None``. Another command's: ``[call.caller]``.
        """
        return self._per_message(
            "callers",
            lambda: self.caller,
            lambda value: value if value.__class__ is str else None,
            None,
        )

    @property
    def content_type(self):
        """The request's ``contentType`` string (the media type of a binary
        gateway body, protocol §6), or ``None`` (absent, or not a string)."""
        msg = self.msg
        value = msg.get("contentType") if msg.__class__ is dict else None
        return value if value.__class__ is str else None

    @property
    def headers(self):
        """The request's ``headers`` (protocol §6): a dict of lower-case
        header name → string, ``{}`` when absent; one that is not such a
        dict counts as absent, an entry that is not a string is left out.
        A new dict at each read: the model may change it."""
        msg = self.msg
        value = msg.get("headers") if msg.__class__ is dict else None
        return _headers_of(value)

    @property
    def trace_context(self):
        """The request's W3C trace context (protocol §6): ``{"traceparent":
        ..., "tracestate": ...}`` (``tracestate`` only when sent), or
        ``None`` without a ``traceparent`` string. A new dict at each read."""
        return _trace_context_of(self.msg)

    @property
    def trace_contexts(self):
        """The trace contexts of the call's messages, one per message.

        An ``executeBatch``'s ``traceContexts`` (protocol §6): a list as long
        as its ``msgs``, each a dict as :attr:`trace_context` or ``None``;
        one that is not such a list counts as absent (``None`` for every
        message), an entry without a ``traceparent`` string as ``None``.
        Another command's: ``[call.trace_context]``. New dicts at each read.
        """
        return self._per_message(
            "traceContexts", lambda: self.trace_context, _trace_context_of, None
        )

    @property
    def message_headers(self):
        """The forwarded headers of the call's messages, one dict per message.

        An ``executeBatch``'s ``messageHeaders`` (protocol §6): a list as
        long as its ``msgs``, each a dict (as :attr:`headers`) or ``None``
        (``{}``); one that is not such a list counts as absent (``{}`` for
        every message). Another command's: ``[call.headers]``.
        """
        return self._per_message("messageHeaders", lambda: self.headers, _headers_of, dict)

    @property
    def request_ids(self):
        """The request ids of the call's messages, one per message, in order.

        An ``executeBatch``'s ``requestIds`` (protocol §6): a list as long as
        its ``msgs``, each a string or ``None``; one that is not such a list
        counts as absent (every message without one), a non-string entry as
        ``None``. Another command's: ``[call.request_id]``.
        """
        return self._per_message(
            "requestIds",
            lambda: self.request_id,
            lambda value: value if value.__class__ is str else None,
            None,
        )

    def _per_message(self, key, single, convert, absent):
        """One value per message of an ``executeBatch`` from its list ``key``
        (each converted by ``convert``; ``absent()``, or ``None`` when
        ``absent`` is ``None``, for every message when it is not a list as
        long as its ``msgs``); another command's: ``[single()]``."""
        msg = self.msg
        if self.cmd != "executeBatch" or msg.__class__ is not dict:
            return [single()]
        msgs = msg.get("msgs")
        count = len(msgs) if msgs.__class__ is list else 0
        values = msg.get(key)
        if values.__class__ is not list or len(values) != count:
            return [None if absent is None else absent() for _ in range(count)]
        return [convert(value) for value in values]

    def tag_request(self, event):
        """Add the call's request id to ``event`` (a ``log`` event): its
        ``requestId``, or for an ``executeBatch`` with any, ``requestIds``:
        the distinct ids of its messages, in message order. Also the
        request's ``traceparent`` when it has one (not a batch's: its
        messages' traces are several), so that the host's record of the
        model's output names the trace and span of the call (logs joined to
        traces)."""
        msg = self.msg
        request_id = self.request_id
        if request_id is not None:
            event["requestId"] = request_id
        elif self.cmd == "executeBatch":
            ids = distinct_ids(self.request_ids)
            if ids:
                event["requestIds"] = ids
        parent = msg.get("traceparent") if msg.__class__ is dict else None
        if parent.__class__ is str:
            event["traceparent"] = parent
        return event

    def send_event(self, event):
        """Send ``event`` (a dict with an ``"event"`` key) tagged with this call's id."""
        event = dict(event)
        event["id"] = self.id
        self.connection.send_event(event)

    def __repr__(self):
        return "<Call %s#%s %s>" % (self.connection.id, self.id, self.cmd)


def distinct_ids(ids):
    """The strings of ``ids``, each once, in their first order."""
    return [value for value in dict.fromkeys(ids) if value is not None]
