"""Call back into the host from model or eval code (protocol §7).

Every function sends a request over the connection of the call running in
the current thread and blocks until the host replies::

    from pyproxy import host

    class Model:
        def execute(self, msg):
            hit = host.cache.get("k")              # cache.get {key}
            if hit is None:
                host.cache.set("k", msg, ttl=60)   # cache.set {key, value, ttl}
            host.publish("events", {"seen": msg})  # publish {channel, msg}
            return {"sum": host.call("add", {"a": 1, "b": 2})}

Bytes (``bytes``, ``bytearray``, ``memoryview``) may sit anywhere in the
arguments, and come back as ``bytes``, when the host reads them (protocol
§3, "Bytes": the pyproxy host always does): a TypeScript handler gets a
``Uint8Array``, a handler that returns one gives ``bytes``, and
``host.cache`` keeps them bytes::

    thumb = host.call("thumb", {"image": png, "width": 64})  # bytes back
    host.cache.set("png:42", png)
    host.cache.get("png:42")                                 # bytes

``request_id()`` sends nothing: it returns the id the call's client gave it
(a gateway client's ``X-Request-Id``, ``pool.execute(..., {requestId})``),
or ``None``, e.g. to put it in a record of the model's own::

    log.info("scoring %s", host.request_id())

In ``execute_batch(msgs)``, ``request_ids()`` gives one id per message, in
the order of ``msgs`` (``None`` for a message without one), and
``request_id()`` gives ``None``: a batch serves several requests.

``headers()`` sends nothing either: the request headers the gateway was told
to forward (``forwardHeaders``, ``--forward-header``; ``pool.execute(...,
{headers})``), lower-case name → value, ``{}`` when none; in
``execute_batch``, ``message_headers()`` gives one such dict per message::

    lang = host.headers().get("accept-language", "en")

``trace_context()`` sends nothing either: the W3C trace context of the
call (the gateway's span when its tracing is on, flags ``00`` for a call it
does not sample; ``pool.execute(..., {traceparent})``), a dict
``{"traceparent", "tracestate"?}`` any OpenTelemetry SDK takes as a carrier,
or ``None``; in ``execute_batch``, ``trace_contexts()`` gives one per
message (the links of the batch's span)::

    from opentelemetry import propagate, trace
    ctx = propagate.extract(carrier=host.trace_context() or {})
    with trace.get_tracer(__name__).start_as_current_span("score", context=ctx):
        ...

``caller()`` sends nothing either: who makes the call, the id of the gateway
token that let the request in (``tokenId``: the first 16 hex digits of the
token's SHA-256, as plugins see it in ``call.caller``), or
``pool.execute(..., {caller})``'s; ``None`` without one (a gateway without a
token); in ``execute_batch``, ``callers()`` gives one per message::

    if host.caller() not in PREMIUM:
        msg = downsample(msg)

``set_status(status)`` and ``set_header(name, value)`` send nothing either:
they choose the HTTP status (200 to 299) and headers of the call's success
response (docs/models.md, "Statuses and headers"), as a FastAPI route's
``status_code=201`` and ``response.headers[...]`` or TorchServe's
``context.set_response_status`` do. The gateway sends the headers its
allow-list takes (the one of ``HTTPError``'s headers); ``pool.execute``
hands them to its ``onResponseMeta`` option::

    host.set_status(201)
    host.set_header("Location", "/items/%d" % item.id)
    return {"id": item.id}

In ``execute_batch``, each message has its own: pass ``index=i`` (the
position of the message in ``msgs``). A stream may set headers before its
first item (one set later is checked, then dropped with a warning in the
log); its status is its event stream's 200 (``set_status`` is ignored
there). An error raised afterwards wins: its status and headers
are the response's.

Outside a worker (a unit test of the model class in plain Python, the
checkout's ``python/`` directory on ``PYTHONPATH``) no call ever runs: replace
``call`` there, which ``cache`` and ``publish`` go through too::

    with mock.patch.object(host, "call", side_effect=lambda cmd, args=None, timeout=None: replies[cmd]):
        result = Model({}).execute({"amount": 10})

Failures raise ``HostError``: no call is running in this thread (for
example in a thread started by the model, or in a module imported outside
any call; a model's module imported by ``addModel`` runs inside that call
and may call the host; start threads with
``contextvars.copy_context().run`` to keep the call), the connection
closed, no reply within ``timeout`` seconds, the call was cancelled (before
or while the request waits: the host's handler is then told to stop), or
the host replied with an error (``remote_type`` and ``remote_message`` keep
its ``type`` and ``message``). A ``timeout`` that is not a number of
seconds > 0 (or ``None``: no limit) raises ``ValueError`` before anything
is sent.

How the connection is found: while the server runs a threaded handler it
sets the ``ContextVar`` ``pyproxy_server.call.current_call`` to the ``Call``
being handled; ``call.connection.request(...)`` queues the request on that
connection and waits on a future resolved by the event loop when the reply
arrives. Request ids are per connection, counting from 1.
"""

import asyncio

from pyproxy_server import http_meta
from pyproxy_server.call import current_batch, current_call
from pyproxy_server.errors import HostError

__all__ = [
    "call",
    "cache",
    "caller",
    "callers",
    "content_type",
    "headers",
    "message_headers",
    "publish",
    "request_id",
    "request_ids",
    "set_header",
    "set_status",
    "trace_context",
    "trace_contexts",
    "HostError",
    "DEFAULT_TIMEOUT",
]

# Seconds to wait for the host's reply unless ``timeout`` says otherwise.
DEFAULT_TIMEOUT = 30.0


def call(name, args=None, timeout=DEFAULT_TIMEOUT):
    """Send ``{"cmd": name, "args": args}`` to the host; return the reply's result."""
    if not isinstance(name, str) or not name:
        raise TypeError("host.call: name must be a non-empty string")
    current = current_call.get()
    if current is None:
        if asyncio._get_running_loop() is not None:
            raise HostError(
                "Cannot call host %r: called on the server's event loop thread, which "
                "must stay free to read the reply (it would deadlock); register the "
                "command with threaded=True" % name
            )
        raise HostError(
            "Cannot call host %r: no pyproxy call is running in this thread "
            "(host calls work only while executeModel/eval code runs, in the worker's own process:"
            " a thread the model starts needs contextvars.copy_context().run, a process it forks"
            " has none; outside a worker, as in a unit test of the model,"
            " replace host.call: unittest.mock.patch.object(host, \"call\", ...))" % name
        )
    return current.connection.request(name, args, timeout, current)


class _Cache:
    """The host's shared cache (``cache.get``/``cache.set``/``cache.delete``)."""

    def get(self, key, timeout=DEFAULT_TIMEOUT):
        """Return the cached value of ``key`` or ``None``."""
        return call("cache.get", {"key": key}, timeout)

    def set(self, key, value, ttl=None, timeout=DEFAULT_TIMEOUT):
        """Store ``value`` (JSON, bytes included) under ``key``, for ``ttl`` seconds when given."""
        args = {"key": key, "value": value}
        if ttl is not None:
            args["ttl"] = ttl
        return call("cache.set", args, timeout)

    def delete(self, key, timeout=DEFAULT_TIMEOUT):
        """Remove ``key``; return whether it existed."""
        return call("cache.delete", {"key": key}, timeout)


cache = _Cache()


def publish(channel, msg, timeout=DEFAULT_TIMEOUT):
    """Publish ``msg`` (JSON; bytes reach subscribers as base64 text) on the gateway channel ``channel``."""
    return call("publish", {"channel": channel, "msg": msg}, timeout)


def request_id():
    """The request id of the call running in this thread (or asyncio task), or ``None``.

    The id its client sent with it (``executeModel``/``executeStream``'s
    ``requestId``, protocol §6): a gateway client's ``X-Request-Id`` header, or
    ``requestId`` of ``pool.execute``/``pool.executeStream``/``pool.eval``.
    ``None`` when the call has none (the gateway makes up an id only for an
    error response, after the call), outside a call, in a thread the model
    started without the call's context (``contextvars.copy_context().run``
    keeps it), and in ``execute_batch``, whose messages may each have their
    own: :func:`request_ids` gives them. The model's ``logging`` records
    carry it to the host by themselves.
    """
    current = current_call.get()
    if current is None:
        return None
    batch = current_batch.get()
    if batch is not None:
        ids, as_batch = batch[0], batch[1]
        return None if as_batch else ids[0]
    return current.request_id


def request_ids():
    """The request ids of the messages the running code got: a list, in order.

    In ``execute_batch(msgs)``, one per message of ``msgs`` (``None`` for a
    message whose call has none): ``request_ids()[i]`` is the id of
    ``msgs[i]``'s call. In any other call, ``[request_id()]``; outside a
    call (or in a thread started without the call's context), ``[]``.
    """
    current = current_call.get()
    if current is None:
        return []
    batch = current_batch.get()
    if batch is not None:
        return list(batch[0])
    return [current.request_id]


def caller():
    """Who makes the running call: a string, or ``None``.

    The call's ``caller`` (protocol §6): on a gateway with a token, the id
    of the bearer token that let the request in (``tokenId``, the first 16
    hex digits of its SHA-256: what plugins see as ``call.caller``), on
    every model route; ``pool.execute``/``pool.executeStream``'s ``caller``
    for a library call. ``None`` for a call without one (a gateway without
    a token), outside a call, and in ``execute_batch``, whose messages may
    each have their own: :func:`callers` gives them.
    """
    current = current_call.get()
    if current is None:
        return None
    batch = current_batch.get()
    if batch is not None:
        as_batch, callers_ = batch[1], batch[5]
        return None if as_batch else callers_[0]
    return current.caller


def callers():
    """The callers of the messages the running code got: a list, in order.

    In ``execute_batch(msgs)``, one per message of ``msgs`` (``None`` for a
    message whose call has none): ``callers()[i]`` is who sent ``msgs[i]``.
    In any other call, ``[caller()]``; outside a call, ``[]``.
    """
    current = current_call.get()
    if current is None:
        return []
    batch = current_batch.get()
    if batch is not None:
        return list(batch[5])
    return [current.caller]


def content_type():
    """The media type of the running call's body, or ``None``.

    A gateway request whose body is not JSON (``Content-Type: image/png``,
    ``application/octet-stream``...) reaches ``execute(self, msg)`` as
    ``bytes``, and this is its ``Content-Type`` header as sent (parameters
    included: ``"text/csv; charset=utf-8"``), or the ``contentType`` option
    of ``pool.execute``/``pool.executeStream``. ``None`` for a JSON body,
    outside a call, and in ``execute_batch`` (its messages may each have
    their own).
    """
    current = current_call.get()
    if current is None or current_batch.get() is not None:
        return None
    return current.content_type


def headers():
    """The forwarded request headers of the running call: a dict, ``{}`` when none.

    Lower-case header name → value, as the gateway's client sent them, for
    the names the gateway forwards (``forwardHeaders`` in pyproxy.json,
    ``serve --forward-header``; none by default), or the ``headers`` option
    of ``pool.execute``/``pool.executeStream`` (protocol §6). ``{}`` for a
    call without any, outside a call, and in ``execute_batch`` (its messages
    may each have their own: :func:`message_headers`). A new dict each time.
    """
    current = current_call.get()
    if current is None:
        return {}
    batch = current_batch.get()
    if batch is not None:
        as_batch, heads = batch[1], batch[2]
        return {} if as_batch else dict(heads[0])
    return current.headers


def trace_context():
    """The W3C trace context of the running call: a dict, or ``None``.

    ``{"traceparent": "00-<trace id>-<span id>-01"}``, with ``"tracestate"``
    when the caller had one: the gateway's span of the call, when its tracing
    is on (docs/gateway.md, "Tracing"; flags ``00`` when the call is not
    sampled, so that the model's spans are not either), or the
    ``traceparent`` option of ``pool.execute``/``pool.executeStream``
    (protocol §6). Give it to an OpenTelemetry SDK as the carrier of
    ``propagate.extract`` to start the model's spans under the caller's.
    ``None`` for a call without one, outside a call, and in
    ``execute_batch`` (its messages come from several traces:
    :func:`trace_contexts` gives them). A new dict each time.
    """
    current = current_call.get()
    if current is None:
        return None
    batch = current_batch.get()
    if batch is not None:
        as_batch, traces = batch[1], batch[4]
        return None if as_batch or traces[0] is None else dict(traces[0])
    return current.trace_context


def trace_contexts():
    """The trace contexts of the messages the running code got: a list, in order.

    In ``execute_batch(msgs)``, one per message of ``msgs``: a dict as
    :func:`trace_context` gives, or ``None`` for a message whose call has
    none; ``trace_contexts()[i]`` is that of ``msgs[i]``'s call. A batch
    serves calls of several traces, so OpenTelemetry's way is one span for
    the batch with a link to each (``trace.Link``; docs/models.md, "Trace
    context"). In any other call, ``[trace_context()]``; outside a call,
    ``[]``. New dicts each time.
    """
    current = current_call.get()
    if current is None:
        return []
    batch = current_batch.get()
    if batch is not None:
        return [None if t is None else dict(t) for t in batch[4]]
    return [current.trace_context]


def message_headers():
    """The forwarded headers of the messages the running code got: a list, in order.

    In ``execute_batch(msgs)``, one dict per message of ``msgs`` (``{}`` for
    a message whose call has none): ``message_headers()[i]`` holds the
    headers of ``msgs[i]``'s call, as :func:`request_ids` does its id. In
    any other call, ``[headers()]``; outside a call, ``[]``.
    """
    current = current_call.get()
    if current is None:
        return []
    batch = current_batch.get()
    if batch is not None:
        return [dict(h) for h in batch[2]]
    return [current.headers]


def set_status(status, index=None):
    """Choose the HTTP status of the running call's success response.

    ``status``: an ``int`` from 200 to 299 (an error is raised:
    ``pyproxy.HTTPError``). 204 and 205 have no body: the call must then
    return ``None`` (a result with them fails the call with ``ValueError``
    when it is sent). Without it, a result is 200 and ``None`` is 204.
    Set twice, the last one counts; an exception raised afterwards wins.

    ``index``: in ``execute_batch(msgs)``, required: the position in
    ``msgs`` of the message whose status this is (as in
    :func:`request_ids`); elsewhere ``None`` (or 0).

    In a stream (``executeStream``, ``POST .../stream``) it is checked and
    ignored: the response is its event stream's 200, so a model that
    answers 201 on ``execute`` streams as well (headers are sent).

    Raises ``TypeError``/``ValueError`` for a bad ``status`` or ``index``,
    and ``HostError`` outside ``execute``, ``execute_batch``
    or a stream's code (no call running in this thread, or model loading,
    ``init`` or eval code: they have no HTTP response). Threads started
    with ``contextvars.copy_context().run`` may set it until the call
    returns (``HostError`` later: its reply went without it).

    Example::

        host.set_status(201)
        host.set_status(202, index=i)   # in execute_batch
    """
    http_meta.set_status(status, index)


def set_header(name, value, index=None):
    """Set an HTTP header of the running call's response (replacing one of
    the same name, whatever its case).

    Checked as ``HTTPError``'s headers are (``TypeError``/``ValueError``):
    ``name`` an HTTP token, ``value`` a string without CR, LF or NUL of at
    most ``HTTPError.MAX_HEADER_VALUE`` characters, at most
    ``HTTPError.MAX_HEADERS`` headers per response. The gateway sends those
    its allow-list takes (``Location``, ``Cache-Control``, ``ETag``,
    ``X-…``...: docs/gateway.md) and logs the others; never one it owns
    (``Content-Type``, ``X-Request-Id``, CORS, security headers). With CORS
    on, their names are exposed to the page (``Access-Control-Expose-Headers``).

    ``index`` and the errors as :func:`set_status`. In a stream, before
    its first item, which carries the response's headers: one set after it
    is checked as ever, then dropped, with a warning in the server's log
    (at most once a minute per model), so that the model that sets it on
    ``/execute`` streams as well.

    Example::

        host.set_header("Location", "/items/7")
        host.set_header("Cache-Control", "max-age=60", index=i)   # in execute_batch
    """
    http_meta.set_header(name, value, index)
