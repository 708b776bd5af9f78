"""The HTTP status and headers a model chooses for a success (protocol §6, ``http``).

``pyproxy.host.set_status(201)`` and ``host.set_header("Location", "/items/7")``
record them on the running ``Call`` (:func:`set_status`, :func:`set_header`);
the reply carries them as its ``http`` field, ``{"status"?, "headers"?}``,
only when the model set something, so a plain call's reply is as before::

    {"id": 7, "ok": true, "http": {"status": 201, "headers": {"Location": "/items/7"}}, "result": {...}}

Where each call keeps them (``Call.http``, ``None`` until set):

- ``executeModel``: the dict itself.
- ``executeBatch``: ``{message index: dict}``; the handler moves them into
  its result (``{"results", "errors"?, "http"?: {"<index>": dict}}``).
- ``executeStream``: the dict until the first item, which carries it as its
  ``http`` (the reply does when no item comes); then :data:`SENT`, after
  which a header, checked as ever, is dropped (the response's headers went
  with its first item) with a warning in the log at most once a minute per
  model. A stream's status is its SSE response's 200: ``set_status`` is
  checked and ignored there. Either way, the model that sets them on
  ``executeModel`` streams as well.

Checked at the call (``ValueError``/``TypeError`` in the model, the same
checks and caps as ``HTTPError``'s headers: ``errors.checked_headers``)
and again when sent (:func:`reply_meta`), where a body with a status that
has none (204, 205) fails the call.
"""

import logging
import time

from .call import DONE, current_batch, current_call
from .errors import HostError, HTTPError, checked_headers, short_repr

__all__ = ["SENT", "NO_BODY", "set_status", "set_header", "reply_meta"]

log = logging.getLogger("pyproxy_server.http_meta")

# ``Call.http`` of a stream once its first item went (with the headers, if
# any): compared by identity only; not a dict, so that no code can store
# into it (it is shared by every stream).
SENT = object()

# Statuses whose response has no body: the model's result must be None.
NO_BODY = frozenset((204, 205))

# At most one warning of a stream's late header per model per
# LATE_HEADER_WARNING_S (a model that sets one on every item would write a
# line per item); by model name, cleared past LATE_HEADER_WARNED_MAX names.
# No lock: a cancel's interrupt on the call's thread could leave one held
# (up to Python 3.9, ``with`` could be split), and two threads racing here
# at worst say it twice.
LATE_HEADER_WARNING_S = 60.0
LATE_HEADER_WARNED_MAX = 1024
_late_header_warned = {}

# The commands whose model code may set them.
_COMMANDS = frozenset(("executeModel", "executeBatch", "executeStream"))


def _meta_of(action, index):
    """The dict the running call's message keeps its status and headers in
    (created on first use), and the call; raises as documented in
    ``pyproxy.host.set_status``."""
    call = current_call.get()
    if call is None:
        raise HostError(
            "Cannot %s: no pyproxy call is running in this thread (only while execute, "
            "execute_batch or a stream runs, in the worker's own process: start threads with "
            "contextvars.copy_context().run; a process the model forks has none)" % action
        )
    if call.cmd not in _COMMANDS:
        raise HostError(
            "Cannot %s: only execute, execute_batch or a stream's code may (this is %s: "
            "model loading, init and eval code have no HTTP response)" % (action, call.cmd)
        )
    slot = _slot(action, call, index)
    with call.lock:
        if call.state == DONE:
            # A thread of the model's, late: the reply went without it.
            raise HostError(
                "Cannot %s: call %s was answered already (a thread of the model must "
                "set it before execute returns)" % (action, call.id)
            )
        http = call.http
        if http is SENT:
            # A stream past its first item: too late for the response, which
            # the caller drops (it was only checked).
            return None, call
        if slot is None:
            if http is None:
                http = call.http = {}
            return http, call
        if http is None:
            http = call.http = {}
        meta = http.get(slot)
        if meta is None:
            meta = http[slot] = {}
        return meta, call


def _slot(action, call, index):
    """The message index of ``call.http`` (an executeBatch), or None (the call's own)."""
    batch = current_batch.get()
    if batch is None:
        if call.cmd == "executeBatch":
            # Not while the batch's model code runs (its context has the batch).
            raise HostError("Cannot %s: the batch's model code is not running in this thread" % action)
        if index not in (None, 0):
            raise ValueError("Cannot %s: index=%s is for execute_batch (this call has one message)" % (action, short_repr(index)))
        return None
    ids, as_batch, start = batch[0], batch[1], batch[3]
    if as_batch:
        if index is None:
            raise ValueError(
                "Cannot %s: in execute_batch, pass index= (the position of the message in msgs, "
                "as in host.request_ids())" % action
            )
        if index.__class__ is not int or not 0 <= index < len(ids):
            raise ValueError("Cannot %s: index must be an int from 0 to %d, got %s" % (action, len(ids) - 1, short_repr(index)))
    elif index not in (None, 0):
        raise ValueError("Cannot %s: index=%s for a message run alone" % (action, short_repr(index)))
    if call.cmd != "executeBatch":
        return None  # execute_batch run for one executeModel call
    return start + (index or 0)


def _check_status(status, who):
    if status.__class__ is not int:  # bool, "201", 201.0: not a status
        raise TypeError("%s: status must be an int from 200 to 299, got %s" % (who, short_repr(status)))
    if not 200 <= status <= 299:
        raise ValueError(
            "%s: status must be from 200 to 299 (a success; raise pyproxy.HTTPError for an error), got %d" % (who, status)
        )


def set_status(status, index=None):
    """``host.set_status``: see ``pyproxy.host``."""
    _check_status(status, "host.set_status")
    call = current_call.get()
    if call is not None and call.cmd == "executeStream":
        # A stream's response is its event stream's 200: the status is not
        # sent, and not an error either, so the model that answers 201 on
        # /execute also streams (before or after its first item).
        _slot("set the status", call, index)
        log.debug("host.set_status(%d) ignored: the call is a stream (its response is the event stream's 200)", status)
        return
    meta, call = _meta_of("set the status", index)
    meta["status"] = status


def set_header(name, value, index=None):
    """``host.set_header``: see ``pyproxy.host``."""
    one = checked_headers({name: value}, "host.set_header")
    meta, call = _meta_of("set a header", index)
    if meta is None:
        _warn_late_header(name, call)
        return
    with call.lock:
        headers = meta.get("headers")
        if headers is None:
            headers = meta["headers"] = {}
        lower = name.lower()
        for old in [old for old in headers if old.lower() == lower]:
            del headers[old]
        if len(headers) >= HTTPError.MAX_HEADERS:
            raise ValueError("host.set_header: at most %d headers per response" % HTTPError.MAX_HEADERS)
        headers.update(one)


def _warn_late_header(name, call):
    """Logs that a stream's header set after its first item was dropped: at
    most once per :data:`LATE_HEADER_WARNING_S` per model."""
    model = call.msg.get("name")
    now = time.monotonic()
    last = _late_header_warned.get(model)
    if last is not None and now - last < LATE_HEADER_WARNING_S:
        return
    if last is None and len(_late_header_warned) >= LATE_HEADER_WARNED_MAX:
        _late_header_warned.clear()
    _late_header_warned[model] = now
    log.warning(
        "host.set_header(%s) ignored: stream %s of model %s sent its first item already, with the "
        "response's headers (set them before the first yield; said at most once a minute per model)",
        short_repr(name), call.id, short_repr(model),
    )


def reply_meta(meta, result):
    """``meta`` (a call's or a message's dict) checked again as it is sent:
    the ``http`` field of its reply, or None when it holds nothing. Raises
    ``ValueError`` for a ``result`` other than None with a status without a
    body (204, 205): the model's mistake, the call's error."""
    status = meta.get("status")
    if status is not None:
        _check_status(status, "host.set_status")
        if result is not None and status in NO_BODY:
            raise ValueError(
                "Cannot send the result: status %d has no body; return None with it (got %s)"
                % (status, type(result).__name__)
            )
    headers = checked_headers(meta.get("headers"), "host.set_header")
    if status is None and not headers:
        return None
    out = {}
    if status is not None:
        out["status"] = status
    if headers:
        out["headers"] = headers
    return out
