"""The model registry: load, describe, swap and run models (protocol §6).

A model is a class with ``execute(self, msg)``; optional ``init(self, path)``;
optional class attributes ``inputs``/``outputs`` (``{field: type}`` with type
among ``TYPES``, or one of them with a trailing ``?`` for a field that may be
left out: ``"number?"``; in ``inputs``, also a dict of constraints, read by
``declared.read_inputs``; in ``outputs``, a dict of a tensor's ``type``,
``items`` and ``datatype``, read by ``declared.read_outputs``) and a docstring. It is constructed with the
``options`` dict as its one positional argument, ``Model(options)``; a class
whose constructor takes no argument is constructed as ``Model()``.

Models are shared by every connection and may be called from several
executor threads at once. A model that is not thread-safe sets the class
attribute ``threadsafe = False``; its calls then run one at a time.

Inline fast path: handing a call to an executor thread and back costs tens
of microseconds, more than a small model's whole ``execute``. So a model
that has proved fast runs on the event loop thread instead (see
``ModelEntry``): its first ``LEARN_CALLS`` calls run threaded while their
run time is measured; when the moving average stays below ``INLINE_MAX``
seconds and none of them called the host (``pyproxy.host``), later calls
run inline. A model whose module (or a module it imports from outside the
standard library) refers to ``pyproxy`` never runs inline: a host call
cannot be answered while the loop thread runs the model, and a call is
never re-run (at most once). An inline call that reaches the host anyway
(through code the scan cannot see) gets a ``HostError`` there and makes the
model threaded for good. An inline call slower than ``DEMOTE_AFTER``
seconds sends it back to threads to learn again (a preempted loop thread on
a busy host is not the model's fault), the ``DEMOTE_STRIKES``-th for good. While an inline call runs longer than
``InlineWatch.STALL``, a watchdog thread tells the host it is busy (protocol
§4, ``busy``). A class may decide for itself with ``inline = True`` (always
inline, never demoted for time; host calls then fail) or
``threaded = True`` (never inline).

Batching: a class with ``batch_size = N`` (1 to ``MAX_BATCH_SIZE``; or an
instance whose ``__init__`` sets ``self.batch_size``) and
``execute_batch(self, msgs)`` gets up to N messages at once (the host
gathers the calls that arrive within ``batch_delay_ms``, default
``DEFAULT_BATCH_DELAY_MS``) through ``executeBatch``, and returns one result
per message, in order; a result that is an exception instance fails that
message alone. ``execute`` is then optional: ``executeModel`` runs a
one-message batch.

Timeout: a class with ``timeout_ms = N`` (1 to ``MAX_TIMEOUT_MS``) says how
long its calls may take by default; the description reports it as
``timeoutMs`` and the host applies it (an explicit timeout of the call, or the
operator's for the model, wins). The server itself enforces nothing.

Shutdown: a model may define ``close(self)`` (or ``async def close(self)``)
to release what it holds (flush a buffer, close a database pool, stop a
thread, delete temporary files). It runs once per instance: when the model
is removed, when an update (or an add under its name) replaces the instance
(the old one's), and when the server stops (``stopServer``, SIGTERM, the
host gone), each on a thread of its own, all at once, after the instance's
calls in flight ended. Each gets ``close_timeout_ms`` (a class attribute, or
set by ``__init__``; default ``DEFAULT_CLOSE_TIMEOUT_MS``, at most
``MAX_CLOSE_TIMEOUT_MS``) to finish; the calls it waits for get as long
before it. A ``close`` that raises or overruns is logged with the model's
name and traceback and never fails the command or holds the exit beyond
its bound (see ``run_closes``). A crash, SIGKILL or a hang kill runs none.

Streaming: an ``execute`` that is a generator function (``def`` or
``async def`` with ``yield``) or returns an iterator streams its items
through ``executeStream`` (``open_stream``, driven by ``StreamProducer``),
one event per item; through ``executeModel`` its items are collected into a
list.

Example::

    registry = ModelRegistry("/srv/models")
    registry.add("doubler", {"source": "class Model:\\n def execute(self, m): return m"})
    registry.get("doubler").execute({"x": 1})  # {"x": 1}
"""

import asyncio
import importlib.util
import inspect
import itertools
import linecache
import logging
import math
import os
import sys
import threading
import time
import traceback
import types

from . import array_like, model_lock
from .call import current_batch, current_call
from .declared import DeclarationError, read_inputs, read_outputs
from .errors import (
    CancelledError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    PathError,
    PythonError,
    exception_message,
    format_user_traceback,
)
from .execution import MAX_LOGGED_MESSAGE, MAX_LOGGED_TRACEBACK, CallRunner, _bounded
from .fresh_imports import FreshImports
from .wording import article, count

__all__ = [
    "ModelRegistry", "ModelEntry", "TYPES", "THREADED_FOREVER", "confine", "may_call_host", "RunThreaded",
    "run_closes",
]

_clock = time.perf_counter
_unshield = CallRunner.unshield

log = logging.getLogger("pyproxy_server.models")

# ``ModelEntry.mode`` values.
LEARNING, INLINE, THREADED, FORCED_INLINE, THREADED_FOREVER = 0, 1, 2, 3, 4


class RunThreaded(BaseException):
    """Raised by an inline fast path (``Server.register``) that finds, before
    doing anything, that its call must run on a thread after all.

    A ``BaseException`` so that ``except Exception`` in handler code does not
    swallow it; the connection then runs the call on an executor thread. Only
    for code that has had no effect yet: a call is never run twice.
    """

# Type names allowed in ``inputs``/``outputs`` (each also with a trailing
# ``?``: the field may be left out).
TYPES = frozenset(("number", "integer", "string", "boolean", "array", "object", "any"))


def _is_type(name):
    return isinstance(name, str) and (name in TYPES or (name.endswith("?") and name[:-1] in TYPES))


def confine(root, relative, what):
    """Return the real path of ``relative`` under ``root`` or raise ``PathError``."""
    if not isinstance(relative, str) or not relative:
        raise InvalidRequestError("Cannot resolve %s: expected a non-empty string" % what)
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, relative))
    if path != real_root and not path.startswith(real_root.rstrip(os.sep) + os.sep):
        raise PathError("Cannot resolve %s %r: outside %s" % (what, relative, real_root))
    return path


def _is_stream(result):
    """A generator or iterator result streams; containers and strings do not."""
    return inspect.isgenerator(result) or (
        hasattr(result, "__next__") and hasattr(result, "__iter__")
        and not isinstance(result, (str, bytes, dict, list, tuple))
    )


def _noop():
    pass


def _run_async(coro):
    """``asyncio.run(coro)`` that a cancel interrupts while it awaits.

    A cancel's ``KeyboardInterrupt`` fires at the thread's next bytecode, and
    a loop waiting for I/O or a timer (``await asyncio.sleep(60)``, a remote
    API) runs none: the call went on until its await finished. The cancel
    wakes the loop (``Call.wake``), the interrupt fires there, and
    ``asyncio.run`` cancels the coroutine: ``asyncio.CancelledError`` at its
    ``await``, its ``finally`` blocks run, then the call ends as cancelled.
    """
    call = current_call.get()
    if call is None:
        return asyncio.run(coro)

    async def main():
        loop = asyncio.get_running_loop()
        call.wake = lambda: loop.call_soon_threadsafe(_noop)
        try:
            return await coro
        finally:
            call.wake = None

    return asyncio.run(main())


def _collect(execute):
    """``execute(msg)`` of a generator function as the list of its items."""
    if inspect.isasyncgenfunction(execute):
        async def collect_async(msg):
            return [item async for item in execute(msg)]

        return lambda msg: _run_async(collect_async(msg))
    return lambda msg: list(execute(msg))


def _run_coroutine(execute):
    """``execute(msg)`` of an ``async def``, awaited with ``asyncio.run``."""

    def run(msg):
        return _run_async(execute(msg))

    return run


class ModelEntry:
    """One loaded model version; immutable once registered (swaps replace it)."""

    __slots__ = (
        "name", "class_name", "file", "version", "instance", "inputs",
        "outputs", "doc", "module_name", "_lock", "_execute", "mode",
        "calls", "slow_inline", "avg", "batch_size", "batch_delay_ms",
        "_execute_batch", "streams", "timeout_ms", "close_timeout_ms", "_close",
        "media_type",
    )

    # The largest ``batch_size`` a class may declare.
    MAX_BATCH_SIZE = 1024
    # ``batch_delay_ms`` when the class does not say (milliseconds).
    DEFAULT_BATCH_DELAY_MS = 10
    # The largest ``batch_delay_ms`` a class may declare (milliseconds).
    MAX_BATCH_DELAY_MS = 1000
    # The largest ``timeout_ms`` a class may declare (milliseconds): a timer's
    # range on the host, 2**31 - 1 (about 24.8 days).
    MAX_TIMEOUT_MS = 2**31 - 1
    # How long a model's ``close()`` may run (milliseconds) when its class
    # does not say (``close_timeout_ms``), and how long its calls in flight
    # are waited for before it runs.
    DEFAULT_CLOSE_TIMEOUT_MS = 5000
    # The largest ``close_timeout_ms`` a class may declare (milliseconds): a
    # stopping server waits this long at most, and its host waits with it.
    MAX_CLOSE_TIMEOUT_MS = 60000

    # Threaded calls measured before a model may run inline.
    LEARN_CALLS = 8
    # Moving average of the run time (seconds) below which a model runs inline;
    # an inline model whose average grows above twice this goes back to threads.
    INLINE_MAX = 0.001
    # An inline call slower than this (seconds) sends the model back to threads,
    # to learn again; the ``DEMOTE_STRIKES``-th such call, for good.
    DEMOTE_AFTER = 0.02
    # One slow inline call may be the machine's, not the model's: a loop thread
    # preempted for 20 ms on a busy host made a 10 µs model threaded for good
    # (every later call ~30% dearer, for the worker's life). A model slow again
    # once back inline is slow indeed: it has held the loop twice at most.
    DEMOTE_STRIKES = 2

    def __init__(self, name, cls, instance, file, version, module_name, may_call_host=False):
        self.name = name
        self.class_name = cls.__name__
        self.file = file
        self.version = version
        self.instance = instance
        self.inputs = _schema(cls, "inputs")
        self.outputs = _schema(cls, "outputs")
        doc = cls.__dict__.get("__doc__")
        self.doc = inspect.cleandoc(doc) if isinstance(doc, str) else None
        self.module_name = module_name
        self._lock = None if getattr(cls, "threadsafe", True) else model_lock.ModelLock()
        self.batch_size, self.batch_delay_ms = _batch_settings(cls, instance)
        _check_one_argument(cls, instance, "execute", "msg")
        if self.batch_size is not None:
            _check_one_argument(cls, instance, "execute_batch", "msgs")
        self.timeout_ms = _timeout_setting(cls, instance)
        self.media_type = _media_type_setting(cls, instance)
        self._close, self.close_timeout_ms = _close_settings(cls, instance)
        self._execute_batch = None
        if self.batch_size is not None:
            run_batch = instance.execute_batch
            if inspect.iscoroutinefunction(run_batch):
                run_batch = _run_coroutine(run_batch)
            self._execute_batch = run_batch
        execute = getattr(instance, "execute", None)
        is_async = False
        self.streams = inspect.isgeneratorfunction(execute) or inspect.isasyncgenfunction(execute)
        if self.streams:
            # Through executeModel, the items as one list (a generator object
            # was a SerializationError).
            self._execute = _collect(execute)
        elif callable(execute):
            self._execute = execute
            is_async = inspect.iscoroutinefunction(execute)
            if is_async:
                # An ``async def execute``: each call runs it to completion on an
                # event loop of its own thread (its coroutine object was the
                # result: a SerializationError at every call). Threaded: it
                # awaits I/O, which must not hold the server's loop.
                self._execute = _run_coroutine(execute)
        else:  # a batching model without execute: one message, one batch
            self._execute = self._one_message_batch
        if (is_async or self.streams or self.batch_size is not None
                or getattr(cls, "threaded", False) is True):
            self.mode = THREADED_FOREVER
        elif getattr(cls, "inline", False) is True:
            self.mode = FORCED_INLINE
        elif may_call_host:
            self.mode = THREADED_FOREVER
        else:
            self.mode = LEARNING
        self.calls = 0
        # Inline calls slower than DEMOTE_AFTER so far.
        self.slow_inline = 0
        # Exponential moving average of the run time in seconds (None: no call yet).
        self.avg = None

    @property
    def inline_ready(self):
        """True when the next call may run on the event loop thread."""
        mode = self.mode
        return mode == INLINE or mode == FORCED_INLINE

    def execute(self, msg):
        """Run the model's ``execute(msg)``; exceptions propagate unchanged."""
        lock = self._lock
        if lock is None:
            return self._execute(msg)
        call = model_lock.take(lock)  # a cancel ends a wait for a busy model
        try:
            if call is not None:
                _unshield(call)
            return self._execute(msg)
        finally:
            try:
                lock.release()
            except KeyboardInterrupt:  # fired as release was entered: it did nothing
                lock.release_if_owned()
                raise

    def _one_message_batch(self, msg):
        # execute_batch sees the ids of its messages, as in an executeBatch.
        call = current_call.get()
        if call is None:
            token = current_batch.set(((None,), True, ({},), 0, (None,)))
        else:
            token = current_batch.set(
                ((call.request_id,), True, (call.headers,), 0, (call.trace_context,))
            )
        try:
            result = self._check_batch([msg], self._execute_batch([msg]))[0]
        finally:
            current_batch.reset(token)
        if isinstance(result, BaseException):
            raise result
        return result

    def _check_batch(self, msgs, results):
        if isinstance(results, (list, tuple)) and len(results) == len(msgs):
            return results
        if array_like.is_array_like(results) and getattr(results, "ndim", 0):
            # model.predict(batch) as it is: a numpy array (tensor, Series)
            # of one row per message, each row's tolist() its result.
            try:
                rows = array_like.convert(results)
            except TypeError:
                rows = None  # its .tolist() raised: reported below as what it is
            if isinstance(rows, list) and len(rows) == len(msgs):
                return rows
            if isinstance(rows, list):
                results = rows
        got = count(len(results), "result") if isinstance(results, (list, tuple)) else article(type(results).__name__)
        raise PythonError(
            "TypeError",
            "Cannot run model %r: execute_batch returned %s for %s (expected a list with one result per message)"
            % (self.name, got, count(len(msgs), "message")),
        )

    def run_batch(self, msgs):
        """``execute_batch(msgs)`` of a batching model (an executor thread):
        the list of results, checked to hold one per message; an item may be
        an exception instance (that message's error)."""
        lock = self._lock
        if lock is None:
            return self._check_batch(msgs, self._execute_batch(msgs))
        call = model_lock.take(lock)  # a cancel ends a wait for a busy model
        try:
            if call is not None:
                _unshield(call)
            return self._check_batch(msgs, self._execute_batch(msgs))
        finally:
            try:
                lock.release()
            except KeyboardInterrupt:  # fired as release was entered: it did nothing
                lock.release_if_owned()
                raise

    @property
    def lock(self):
        """The lock of a ``threadsafe = False`` model (held while its code
        runs), else None."""
        return self._lock

    def open_stream(self, msg):
        """``execute(msg)`` for ``executeStream`` (a call thread, holding
        ``lock``): the items to send, as an async generator (an ``async def``
        with ``yield``) or an iterator (a generator, the iterator ``execute``
        returned, or an iterator over the one item of any other result)."""
        execute = getattr(self.instance, "execute", None)
        if execute is None:  # a batching model without execute: a batch of one
            return iter((self._one_message_batch(msg),))
        result = execute(msg)
        if inspect.isasyncgen(result):
            return result
        if inspect.iscoroutine(result):
            result = _run_async(result)
        return result if _is_stream(result) else iter((result,))

    def run(self, msg, call=None):
        """``execute(msg)`` on an executor thread, measured for the inline decision.

        ``call`` (a ``Call``) tells whether the model called the host.
        """
        start = _clock()
        try:
            return self.execute(msg)
        finally:
            elapsed = _clock() - start
            if call is not None and call.host_futures is not None:
                self.mode = THREADED_FOREVER
            elif self.mode != THREADED_FOREVER:
                self._observe(elapsed)

    def run_inline(self, call):
        """``execute(call.msg["msg"])`` on the event loop thread (the fast path's
        ``run``, see ``Server.register``); never blocks on the model lock.

        Returns ``(True, result)``, or ``(False, None)`` when a thread-unsafe
        model is busy in another thread (waiting for it could deadlock the loop).
        A host call made by the model raises ``HostError`` in it (see
        ``Connection.request``); the model is then threaded for good.
        """
        lock = self._lock
        if lock is not None and not lock.acquire(False):
            return False, None
        start = _clock()
        try:
            return True, self._execute(call.msg.get("msg"))
        finally:
            elapsed = _clock() - start
            if lock is not None:
                lock.release()
            if call.host_refused:
                # It tried to call the host (even if it swallowed the error).
                self.mode = THREADED_FOREVER
            elif self.mode == INLINE:
                if elapsed > self.DEMOTE_AFTER:
                    self.slow_inline += 1
                    # Folded into the average: it comes back inline only once
                    # its threaded calls have brought that under INLINE_MAX.
                    self._average(elapsed)
                    self.mode = (THREADED_FOREVER if self.slow_inline >= self.DEMOTE_STRIKES
                                 else THREADED)
                elif self._average(elapsed) > 2 * self.INLINE_MAX:
                    self.mode = THREADED  # too slow on average: threaded again

    def _average(self, elapsed):
        """Fold ``elapsed`` into the moving average and return it. Races between
        threads only blur the average; the decisions tolerate it."""
        avg = self.avg
        avg = elapsed if avg is None else avg + (elapsed - avg) * 0.25
        self.avg = avg
        return avg

    def _observe(self, elapsed):
        """Account a threaded run (``run_inline`` accounts its own): promote a
        model that proved fast."""
        avg = self._average(elapsed)
        self.calls += 1
        if self.mode != FORCED_INLINE and self.calls >= self.LEARN_CALLS and avg < self.INLINE_MAX:
            self.mode = INLINE

    def describe(self):
        """The model description of protocol §6."""
        desc = {"name": self.name, "class": self.class_name, "version": self.version}
        if self.file is not None:
            desc["file"] = self.file
        if self.inputs is not None:
            desc["inputs"] = self.inputs
        if self.outputs is not None:
            desc["outputs"] = self.outputs
        if self.doc:
            desc["doc"] = self.doc
        if self.batch_size is not None:
            desc["batch"] = {"size": self.batch_size, "delayMs": self.batch_delay_ms}
        if self.media_type is not None:
            desc["mediaType"] = self.media_type
        if self.streams:
            desc["streams"] = True
        if self.timeout_ms is not None:
            desc["timeoutMs"] = self.timeout_ms
        if self._close is not None:
            # How long a remove or update may spend retiring this version:
            # its calls in flight, then its close(), up to this each.
            desc["closeTimeoutMs"] = self.close_timeout_ms
        return desc


def _close_settings(cls, instance):
    """``(close, close_timeout_ms)`` of a model: its ``close()`` as a plain
    callable (an ``async def close`` run with ``asyncio.run``) and how long
    it may take, or ``(None, None)`` when it has none; a ModelLoadError for
    a ``close_timeout_ms`` it cannot mean (checked with or without a
    ``close``, as ``timeout_ms`` is)."""
    timeout = getattr(instance, "close_timeout_ms", None)
    if timeout is not None and (type(timeout) is not int or not 1 <= timeout <= ModelEntry.MAX_CLOSE_TIMEOUT_MS):
        raise ModelLoadError(
            "Cannot load model class %s: close_timeout_ms must be an integer number of milliseconds from 1 to %d, got %r"
            % (cls.__name__, ModelEntry.MAX_CLOSE_TIMEOUT_MS, timeout)
        )
    close = getattr(instance, "close", None)
    if not callable(close):
        return None, None
    if inspect.iscoroutinefunction(close):
        coroutine = close

        def close():
            return asyncio.run(coroutine())
    return close, ModelEntry.DEFAULT_CLOSE_TIMEOUT_MS if timeout is None else timeout


def _close_one(entry, done, problems):
    """The thread of one ``close()``: runs it (holding the lock of a
    ``threadsafe = False`` model: never beside one of its calls), logs what
    it raised and notes it in ``problems``."""
    try:
        lock = entry.lock
        if lock is None:
            entry._close()
        else:
            with lock:
                entry._close()
    except BaseException as exc:  # SystemExit in model code must not stop us
        # Bounded as a call's exception is (log_user_error): a close raising
        # with a whole payload in its message wrote it twice per line into
        # the log, and once more into the remove's or update's answer.
        try:
            message = _bounded(str(exc), MAX_LOGGED_MESSAGE)
        except BaseException:  # a __str__ of the model's that raises
            message = "(its message could not be read)"
        trace = _bounded("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip(),
                         MAX_LOGGED_TRACEBACK)
        log.error("close() of model %r (version %d) failed: %s: %s\n%s",
                  entry.name, entry.version, type(exc).__name__, message, trace)
        problems[entry] = "close() raised %s: %s" % (type(exc).__name__, message)
    finally:
        done.set()


def run_closes(entries, started=None, overran=None):
    """Run ``close()`` of each entry that has one, each on a daemon thread of
    its own, all at once, and wait for each up to its ``close_timeout_ms``
    (counted from ``started``, a ``time.monotonic()`` value, else now).

    Returns ``{name: warning}`` for the closes that raised or overran (both
    logged, the overrun with the stack it was stuck in); an overrunning
    close is left running on its thread (a daemon: it never holds the exit),
    which is appended to ``overran`` (a list) when given.
    """
    started = time.monotonic() if started is None else started
    problems = {}
    runs = []
    for entry in entries:
        if entry._close is None:
            continue
        done = threading.Event()
        thread = threading.Thread(
            target=_close_one, args=(entry, done, problems), name="pyproxy-close-%s" % entry.name, daemon=True)
        thread.start()
        runs.append((entry, thread, done))
    warnings = {}
    for entry, thread, done in runs:
        if not done.wait(max(0.0, started + entry.close_timeout_ms / 1000 - time.monotonic())):
            frame = sys._current_frames().get(thread.ident)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
            stack = _bounded(stack, MAX_LOGGED_TRACEBACK)
            log.error("close() of model %r (version %d) did not finish within %d ms (close_timeout_ms);"
                      " left running, in:\n%s", entry.name, entry.version, entry.close_timeout_ms, stack.rstrip())
            warnings[entry.name] = "close() did not finish within %d ms (close_timeout_ms)" % entry.close_timeout_ms
            if overran is not None:
                overran.append(thread)
        elif entry in problems:
            warnings[entry.name] = problems[entry]
    return warnings


def _timeout_setting(cls, instance):
    """The ``timeout_ms`` a model declares (on its class, or set by its
    ``__init__``, e.g. from its options, as ``batch_size`` may be), or None;
    a ModelLoadError for a value it cannot mean (a bool, a float, zero,
    beyond a timer's range)."""
    timeout = getattr(instance, "timeout_ms", None)
    if timeout is None:
        return None
    if type(timeout) is not int or not 1 <= timeout <= ModelEntry.MAX_TIMEOUT_MS:
        raise ModelLoadError(
            "Cannot load model class %s: timeout_ms must be an integer number of milliseconds from 1 to %d, got %r"
            % (cls.__name__, ModelEntry.MAX_TIMEOUT_MS, timeout)
        )
    return timeout


def _media_type_setting(cls, instance):
    """The ``media_type`` a model declares (the ``Content-Type`` the gateway
    gives a ``bytes`` result, e.g. ``"image/png"``), or None; a
    ModelLoadError for a value that is not 1 to 256 printable ASCII
    characters."""
    media_type = getattr(instance, "media_type", None)
    if media_type is None:
        return None
    if (media_type.__class__ is not str or not 1 <= len(media_type) <= 256
            or not all(" " <= ch <= "~" for ch in media_type)):
        raise ModelLoadError(
            "Cannot load model class %s: media_type must be a media type such as \"image/png\" "
            "(1 to 256 printable ASCII characters), got %r" % (cls.__name__, media_type)
        )
    return media_type


def _check_one_argument(cls, instance, method, arg):
    """A ModelLoadError for an ``execute`` (``execute_batch``) that cannot be
    called with its one argument, the request's ``msg``: written as a
    FastAPI route, ``def execute(self, income, debt)``, every call failed
    with a TypeError naming a field the client did send ("missing 1 required
    positional argument: 'debt'"), or with none (``def execute(self)``)."""
    bound = getattr(instance, method, None)
    if not callable(bound):
        return
    try:
        signature = inspect.signature(bound)
    except (TypeError, ValueError):  # a builtin or a callable object without one
        return
    try:
        signature.bind(None)
    except TypeError as exc:
        params = [p for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        # Parameters named as the body's fields: the hint reads one from msg.
        fields = " and read the fields from it (%s[%r])" % (
            "msg" if arg == "msg" else "msgs[i]", params[0].name) if len(params) > 1 else ""
        raise ModelLoadError(
            "Cannot load model class %s: %s%s cannot be called with its one argument, the request's %s (%s):"
            " write %s(self, %s)%s" % (cls.__name__, method, signature, arg, exc, method, arg, fields)
        ) from None


def _batch_settings(cls, instance):
    """``(batch_size, batch_delay_ms)`` of a model, or ``(None, None)`` when it
    does not batch; a ModelLoadError for values it cannot mean.

    Read from the instance, so that ``__init__`` may set them from the
    model's options (``self.batch_size = options.get("batch_size", 8)``, as
    TorchServe takes ``batch_size`` from a model's configuration); class
    attributes are what it finds otherwise."""
    size = getattr(instance, "batch_size", None)
    if size is None:
        return None, None
    name = cls.__name__
    if type(size) is not int or not 1 <= size <= ModelEntry.MAX_BATCH_SIZE:
        raise ModelLoadError(
            "Cannot load model class %s: batch_size must be an integer from 1 to %d, got %r"
            % (name, ModelEntry.MAX_BATCH_SIZE, size)
        )
    delay = getattr(instance, "batch_delay_ms", ModelEntry.DEFAULT_BATCH_DELAY_MS)
    if (type(delay) not in (int, float) or not 0 <= delay <= ModelEntry.MAX_BATCH_DELAY_MS):
        raise ModelLoadError(
            "Cannot load model class %s: batch_delay_ms must be a number of milliseconds from 0 to %d, got %r"
            % (name, ModelEntry.MAX_BATCH_DELAY_MS, delay)
        )
    if not callable(getattr(instance, "execute_batch", None)):
        raise ModelLoadError(
            "Cannot load model class %s: batch_size is set but it has no execute_batch(msgs) method" % name
        )
    return size, delay


def _schema(cls, attr):
    value = getattr(cls, attr, None)
    if value is None:
        return None
    if isinstance(value, dict) and any(isinstance(v, dict) for v in value.values()):
        # Dict forms. Inputs: constraints, every one checked by the gateway,
        # so one it could not check is refused here rather than ignored.
        # Outputs: a tensor's description (type, items, datatype) only.
        try:
            return read_inputs(value) if attr == "inputs" else read_outputs(value)
        except DeclarationError as e:
            raise ModelLoadError("Cannot load model class %s: %s: %s" % (cls.__name__, attr, e)) from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and _is_type(v) for k, v in value.items()
    ):
        raise ModelLoadError(
            "Cannot load model class %s: %r must be a dict of field name to one of %s"
            " (with a trailing ? for an optional field)" % (cls.__name__, attr, ", ".join(sorted(TYPES)))
        )
    return dict(value)


class ModelRegistry:
    """Server-wide name → ``ModelEntry`` map; swaps are atomic."""

    # A model's snapshot (protocol §6) holds at most this many helper
    # modules, and this many characters of their source in all: a load
    # asked for a snapshot over either fails (ModelLoadError), and so does
    # a load given more helpers (InvalidRequestError). Its reply, and the
    # replays that send the helpers back, stay well below a frame's 64 MiB.
    MAX_SNAPSHOT_HELPERS = 512
    MAX_SNAPSHOT_CHARS = 8 * 1024 * 1024
    # Closes of removed or replaced versions left running past their
    # ``close_timeout_ms`` (a thread cannot be stopped) at most: with this
    # many still running, a version retired next is dropped without its
    # ``close()`` (a warning says so). Each holds a thread and its instance
    # (weights and all): a close that never returns, met by an update
    # storm, grew both by one per update for the worker's life.
    MAX_CLOSES_LEFT_RUNNING = 16

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self._models = {}
        self._lock = threading.Lock()
        self._modules = itertools.count(1)
        # An update (or an add that replaces a model) imports fresh copies
        # of the helper modules the model imports from the root; every load
        # notes them for its snapshot.
        self._fresh = FreshImports(self.root)
        # ``drain(name, deadline)``: waits until the calls of model ``name``
        # in flight now ended, or ``deadline`` (``time.monotonic()``) passed;
        # the server sets it (it knows the calls), so that a version's
        # ``close()`` runs after them. None: nothing to wait for.
        self.drain = None
        # Threads of the closes that overran (``run_closes``), pruned as they end.
        self._overran = []
        # Versions being retired (``retire``: draining, then closing) → when
        # that ends at the latest (``time.monotonic()``): a stopping server
        # waits for them too, and counts them in ``close_bound_ms``.
        self._retiring = {}

    def __len__(self):
        return len(self._models)

    def get(self, name):
        """Return the current entry of ``name`` or raise ``ModelNotFoundError``."""
        try:
            entry = self._models.get(name)
        except TypeError:  # unhashable name
            entry = None
        if entry is None:
            if not isinstance(name, str):
                raise InvalidRequestError("Cannot find model: 'name' must be a string")
            raise ModelNotFoundError("Cannot find model %r: %s" % (name, _not_loaded(name, list(self._models))))
        return entry

    def describe_all(self):
        return [entry.describe() for entry in list(self._models.values())]

    def add(self, name, spec, cancelled=None):
        """Load and register ``name``; an existing model of that name is replaced.

        ``cancelled`` (a callable): when it returns true once the model is
        loaded, nothing is registered (see :meth:`_install`)."""
        return self._install(name, spec, must_exist=False, cancelled=cancelled)

    def update(self, name, spec, cancelled=None):
        """Replace ``name`` (must exist); calls in flight finish on the old version.

        The helper modules the model imports from the root are loaded fresh
        (``FreshImports``), as for an ``add`` that replaces a model."""
        return self._install(name, spec, must_exist=True, cancelled=cancelled)

    def remove(self, name):
        """Unregister ``name``, then close it (:meth:`retire`): the result
        has ``closeWarning`` when its ``close()`` raised or overran."""
        if not isinstance(name, str):
            raise InvalidRequestError("Cannot remove model: 'name' must be a string")
        with self._lock:
            entry = self._models.pop(name, None)
        if entry is None:
            raise ModelNotFoundError("Cannot remove model %r: not loaded" % (name,))
        sys.modules.pop(entry.module_name, None)
        if entry.file is None:
            # The lines of a model sent as source (models added and removed
            # under new names kept one entry each in linecache for good).
            linecache.cache.pop(_source_filename(name), None)
        result = {"name": name, "removed": True}
        warning = self.retire(entry)
        if warning is not None:
            result["closeWarning"] = warning
        return result

    def retire(self, entry):
        """Close ``entry``, a version no longer registered: wait for its calls
        in flight (``drain``) up to its ``close_timeout_ms``, then run its
        ``close()`` for as long at most. Returns the warning of a close that
        raised or overran (logged), else None. With
        ``MAX_CLOSES_LEFT_RUNNING`` earlier closes still running past their
        bound, ``close()`` is not run (logged, and a warning)."""
        if entry._close is None:
            return None
        with self._lock:
            self._overran[:] = [thread for thread in self._overran if thread.is_alive()]
            left = len(self._overran)
        if left >= self.MAX_CLOSES_LEFT_RUNNING:
            log.error("close() of model %r (version %d) not run: %d close() calls of removed or replaced versions"
                      " are still running past their close_timeout_ms (restart the worker to end them)",
                      entry.name, entry.version, left)
            return "close() not run: %d earlier close() calls are still running past their close_timeout_ms" % left
        bound = entry.close_timeout_ms / 1000
        with self._lock:
            self._retiring[entry] = time.monotonic() + (2 * bound if self.drain is not None else bound)
        try:
            if self.drain is not None:
                self.drain(entry.name, time.monotonic() + bound)
            overran = []
            warning = run_closes([entry], overran=overran).get(entry.name)
        finally:
            with self._lock:
                self._retiring.pop(entry, None)
        with self._lock:
            self._overran.extend(overran)
        return warning

    def retiring_until(self):
        """When the versions being retired now (drained and closed by a
        remove or an update) are done at the latest, as a
        ``time.monotonic()`` value; 0.0 when none is."""
        with self._lock:
            return max(self._retiring.values(), default=0.0)

    def take_all(self):
        """Unregister every model and return their entries (a stopping
        server closes them, :func:`run_closes`)."""
        with self._lock:
            entries = list(self._models.values())
            self._models.clear()
        return entries

    def close_bound_ms(self):
        """How long closing every model now loaded may take at most
        (milliseconds; they close at once): the largest ``close_timeout_ms``
        of those with a ``close()``, or longer while a removed or replaced
        version is still being closed (``retiring_until``); 0 when none has
        one."""
        loaded = max((e.close_timeout_ms for e in list(self._models.values()) if e._close is not None), default=0)
        retiring = self.retiring_until()
        if retiring:
            loaded = max(loaded, int(math.ceil((retiring - time.monotonic()) * 1000)))
        return loaded

    def init(self, name, data_file):
        """Call the model's ``init(path)`` with ``data_file`` confined to the root."""
        entry = self.get(name)
        path = confine(self.root, data_file, "dataFile")
        init = getattr(entry.instance, "init", None)
        if not callable(init):
            raise InvalidRequestError("Cannot init model %r: it has no init(path) method" % name)
        return {"name": name, "result": init(path)}

    # -- loading --------------------------------------------------------------

    def _install(self, name, spec, must_exist, cancelled=None):
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("Cannot load model: 'name' must be a non-empty string")
        if must_exist:
            self.get(name)
        options = spec.get("options")
        if options is None:
            options = {}
        elif not isinstance(options, dict):
            raise InvalidRequestError("Cannot load model %r: 'options' must be an object" % name)
        class_name = spec.get("class")
        if class_name is not None and not isinstance(class_name, str):
            raise InvalidRequestError("Cannot load model %r: 'class' must be a string" % name)
        file = spec.get("file")
        source = spec.get("source")
        if file is None and source is None:
            raise InvalidRequestError("Cannot load model %r: give 'file' or 'source'" % name)
        given = self._given_helpers(name, spec.get("helpers"))
        snapshot = spec.get("snapshot") is True
        # What linecache held for the model's file name before this load (a
        # failed load puts it back: the old version's lines, or none).
        lines_before = _NOT_SET
        if file is not None:
            path = confine(self.root, file, "model file")
            filename = path
            if source is None:
                try:
                    with open(path, "r", encoding="utf-8") as f:
                        source = f.read()
                except (OSError, UnicodeDecodeError) as exc:
                    # stage "read": the model file itself, not code it runs (protocol §3).
                    raise ModelLoadError(
                        "Cannot load model %r: cannot read %s: %s" % (name, file, exc),
                        exception=type(exc).__name__,
                        traceback="",
                        stage="read",
                    )
            elif not isinstance(source, str):
                raise InvalidRequestError("Cannot load model %r: 'source' must be a string" % name)
            else:
                # Both: the host replays the code it first loaded from that file
                # (its snapshot), under the file's name, whatever the file holds now.
                lines_before = linecache.cache.get(filename)
                linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        else:
            if not isinstance(source, str):
                raise InvalidRequestError("Cannot load model %r: 'source' must be a string" % name)
            filename = _source_filename(name)
            # Lets tracebacks show the lines of models sent as source.
            lines_before = linecache.cache.get(filename)
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        module_name = "pyproxy_model_%d" % next(self._modules)
        ok = False
        try:
            # An update (or an add that replaces a model) loads every helper
            # afresh; any load notes them for the snapshot.
            self._fresh.begin(refresh=must_exist or name in self._models, given=given)
            desc, helpers, replaced = self._register(
                name, file, source, filename, module_name, class_name, options, must_exist, cancelled, snapshot)
            ok = True
        finally:
            # A failed load puts the old helpers back in sys.modules.
            self._fresh.end(ok)
            if not ok and lines_before is not _NOT_SET:
                if lines_before is None:
                    linecache.cache.pop(filename, None)
                else:
                    linecache.cache[filename] = lines_before
        if replaced is not None:
            # The old version's calls in flight end on it, then it closes;
            # new calls run on the new one meanwhile.
            warning = self.retire(replaced)
            if warning is not None:
                desc["closeWarning"] = warning
        if snapshot:
            # What was loaded, for the host to replay.
            if file is not None:
                desc["source"] = source
            desc["helpers"] = helpers
        return desc

    def _register(self, name, file, source, filename, module_name, class_name, options, must_exist, cancelled,
                  snapshot=False):
        cls, instance = self._load(name, source, filename, module_name, class_name, options, file)
        helpers = None
        if snapshot:
            try:
                helpers = self._snapshot_helpers(name)
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
        with self._lock:
            # A load given up on (the host's timeout, a closed connection)
            # that finished anyway registers nothing: the host recorded no
            # such model or version, and a late update would have changed
            # the model on this worker only. (A cancel's interrupt usually
            # ends the load, but not in code that catches it.)
            if cancelled is not None and cancelled():
                sys.modules.pop(module_name, None)
                raise CancelledError("Cannot %s model %r: cancelled while it loaded; nothing was registered"
                                     % ("update" if must_exist else "add", name))
            old = self._models.get(name)
            if must_exist and old is None:
                sys.modules.pop(module_name, None)
                raise ModelNotFoundError("Cannot update model %r: removed meanwhile" % name)
            version = old.version + 1 if old is not None else 1
            try:
                entry = ModelEntry(name, cls, instance, file, version, module_name, may_call_host(cls, module_name))
            except BaseException:
                sys.modules.pop(module_name, None)
                raise
            self._models[name] = entry
        if old is not None:
            sys.modules.pop(old.module_name, None)
        return entry.describe(), helpers, old

    def _snapshot_helpers(self, name):
        """The helpers of the load running on this thread, for its snapshot;
        a ModelLoadError beyond the snapshot's bounds."""
        helpers = self._fresh.snapshot()
        chars = sum(len(h["source"]) for h in helpers)
        if len(helpers) > self.MAX_SNAPSHOT_HELPERS or chars > self.MAX_SNAPSHOT_CHARS:
            raise ModelLoadError(
                "Cannot snapshot model %r: its %d helper modules hold %d characters of source"
                " (a snapshot holds at most %d modules and %d characters); move large helpers"
                " (data tables, vendored libraries) out of the models directory, into an installed"
                " package or a data file"
                % (name, len(helpers), chars, self.MAX_SNAPSHOT_HELPERS, self.MAX_SNAPSHOT_CHARS)
            )
        return helpers

    def _given_helpers(self, name, helpers):
        """``helpers`` of addModel/updateModel (a snapshot's) as module name ->
        (absolute path, source); None when absent."""
        if helpers is None:
            return None
        if not isinstance(helpers, list):
            raise InvalidRequestError("Cannot load model %r: 'helpers' must be a list" % name)
        if len(helpers) > self.MAX_SNAPSHOT_HELPERS:
            raise InvalidRequestError(
                "Cannot load model %r: %d helpers given (at most %d)" % (name, len(helpers), self.MAX_SNAPSHOT_HELPERS))
        given = {}
        chars = 0
        for i, helper in enumerate(helpers):
            module = helper.get("module") if isinstance(helper, dict) else None
            file = helper.get("file") if isinstance(helper, dict) else None
            source = helper.get("source") if isinstance(helper, dict) else None
            if not (isinstance(module, str) and all(part.isidentifier() for part in module.split("."))
                    and isinstance(file, str) and isinstance(source, str)):
                raise InvalidRequestError(
                    "Cannot load model %r: helpers[%d] must be {\"module\": <dotted name>, \"file\": <path>,"
                    " \"source\": <string>}" % (name, i))
            if module in given:
                raise InvalidRequestError("Cannot load model %r: helper %r given twice" % (name, module))
            if not file.endswith(".py"):
                raise InvalidRequestError(
                    "Cannot load model %r: helper %r: file %r is not a .py file" % (name, module, file))
            confine(self.root, file, "helper file")  # PathError outside the root
            chars += len(source)
            given[module] = (os.path.join(self.root, os.path.normpath(file)), source)
        if chars > self.MAX_SNAPSHOT_CHARS:
            raise InvalidRequestError(
                "Cannot load model %r: the helpers given hold %d characters (at most %d)"
                % (name, chars, self.MAX_SNAPSHOT_CHARS))
        return given

    def _load(self, name, source, filename, module_name, class_name, options, file=None):
        module = types.ModuleType(module_name)
        module.__file__ = filename
        # A file inside a package under the root imports its siblings with
        # `from .util import f`, as it would as that package's module.
        # (A top-level module's is "", as Python gives it: with None, a relative
        # import there also warns that it cannot resolve the package.)
        module.__package__ = _package_of(self.root, filename) or ""
        sys.modules[module_name] = module
        try:
            code = compile(source, filename, "exec")
            exec(code, module.__dict__)
            cls = _pick_class(module, class_name, name)
            instance = _construct(cls, options)
            if not callable(getattr(instance, "execute", None)) and getattr(instance, "batch_size", None) is None:
                batches = callable(getattr(instance, "execute_batch", None))
                raise ModelLoadError(
                    "Cannot load model %r: class %s has no execute(msg) method%s" % (
                        name, cls.__name__,
                        " (it has execute_batch(msgs): set batch_size, on the class or in __init__,"
                        " for it to get batches)" if batches else "")
                )
            return cls, instance
        except ModelLoadError:
            sys.modules.pop(module_name, None)
            raise
        except BaseException as exc:  # SystemExit in model code must not stop us
            sys.modules.pop(module_name, None)
            raise ModelLoadError(
                "Cannot load model %r: %s: %s%s"
                % (name, type(exc).__name__, exception_message(exc),
                   _where(exc, filename, file if file is not None else filename, self.root)
                   + (_import_hint(exc, filename, self.root) or _interpreter_hint(exc)
                      or _working_dir_hint(exc, filename) or _pickled_main_hint(exc))),
                exception=type(exc).__name__,
                traceback=format_user_traceback(exc, os.path.dirname(__file__)),
            )


_NOT_SET = object()


def _source_filename(name):
    """The file name of model ``name`` sent as source (tracebacks, linecache)."""
    return "<model %s>" % name


def _where(exc, filename, shown, root):
    """`` (<shown>, line N, in f)``: the last line of the model's own file
    that ``exc`` went through (the import of a missing package, the raise in
    ``__init__``), else ``""``. An exception raised further in, in a helper
    module of the models directory (``root``), names the helper's line first:
    `` (util.py, line 3, in f; from <shown>, line 1)``. The traceback travels
    only with ``--debug`` in the gateway; the message always does. A
    SyntaxError names its line itself (one in a helper: `` (from <shown>,
    line 1)``)."""
    model = helper = None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == filename:
            model, helper = (shown, tb.tb_lineno, code.co_name), None
        elif model is not None:
            rel = _helper_path(root, code.co_filename)
            if rel is not None:
                helper = (rel, tb.tb_lineno, code.co_name)
        tb = tb.tb_next
    if model is None:
        return ""
    if isinstance(exc, SyntaxError):
        if exc.filename == filename or _helper_path(root, exc.filename) is None:
            return ""
        return " (from %s)" % _line(model)
    if helper is None:
        return " (%s)" % _line(model)
    return " (%s; from %s)" % (_line(helper), _line(model))


def _line(where):
    shown, line, func = where
    return "%s, line %d%s" % (shown, line, "" if func == "<module>" else ", in %s" % func)


def _helper_path(root, path):
    """``path`` relative to ``root`` when it is a file under it (not in a
    ``site-packages`` there: a virtual environment's), else ``None``."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return None
    real = os.path.realpath(path)
    if not real.startswith(root.rstrip(os.sep) + os.sep):
        return None
    rel = os.path.relpath(real, root)
    if any(part in ("site-packages", "dist-packages") for part in rel.split(os.sep)):
        return None
    return rel


_STDLIB = os.path.dirname(os.__file__) + os.sep


def may_call_host(cls, module_name):
    """True when the model's code may call ``pyproxy.host``: its module, the
    module that defines ``cls``, or a module either imports from outside the
    standard library refers to the ``pyproxy`` package or something from it.

    A scan of module globals at load time, so a model that may call the host
    is never promoted to the inline fast path (where a host call cannot be
    answered). Code that reaches ``pyproxy`` some other way (an import inside
    a function) is caught when it runs inline (``HostError``, then demoted).
    """
    seen = set()
    modules = [sys.modules.get(module_name), sys.modules.get(getattr(cls, "__module__", None))]
    for depth in (0, 1):
        found = []
        for module in modules:
            if module is None or id(module) in seen:
                continue
            seen.add(id(module))
            for value in list(vars(module).values()):
                if _from_pyproxy(value):
                    return True
                if depth == 0 and value.__class__ is types.ModuleType:
                    path = getattr(value, "__file__", None)
                    if isinstance(path, str) and _not_stdlib(path):
                        found.append(value)
        modules = found
    return False


def _not_stdlib(path):
    # site-packages sits inside the standard library's directory on most builds.
    return not path.startswith(_STDLIB) or "-packages" + os.sep in path[len(_STDLIB):]


def _from_pyproxy(value):
    if isinstance(value, types.ModuleType):
        name = value.__name__
    elif isinstance(value, (types.FunctionType, type)):
        name = value.__module__
    else:
        name = type(value).__module__
    return isinstance(name, str) and (name == "pyproxy" or name.startswith("pyproxy."))


def _package_of(root, path):
    """The dotted package of ``path`` when every directory between ``root``
    (which is on ``sys.path``) and it is a package, else ``None``."""
    if not os.path.isabs(path):
        return None  # a model sent as source
    rel = os.path.relpath(os.path.dirname(path), os.path.realpath(root))
    if rel == "." or rel.startswith(".."):
        return None
    parts = rel.split(os.sep)
    directory = os.path.realpath(root)
    for part in parts:
        directory = os.path.join(directory, part)
        if not part.isidentifier() or not os.path.isfile(os.path.join(directory, "__init__.py")):
            return None
    return ".".join(parts)


def _import_hint(exc, path, root):
    """What to do about an ``ImportError`` of a model file in a subdirectory
    of ``root`` that imports a module beside it (as a TorchServe handler
    imports the extra files of its archive, whose directory is on its
    ``sys.path``): only ``root`` is on ``sys.path`` here. ``""`` otherwise."""
    if not isinstance(exc, ImportError) or not os.path.isabs(path):
        return ""
    here = os.path.dirname(path)
    rel = os.path.relpath(here, os.path.realpath(root))
    if rel == "." or rel.startswith(".."):
        return ""
    package = _package_of(root, path)
    make_package = "" if package is not None else "add an __init__.py to %s/ and " % rel
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        if os.path.isfile(os.path.join(here, top + ".py")) or os.path.isdir(os.path.join(here, top)):
            return (
                "; %s is beside the model file, but only the models directory is on sys.path:"
                " %simport it relatively (from . import %s), or move it to the models directory"
                % (top, make_package, top)
            )
    elif package is None and "no known parent package" in str(exc):
        return (
            "; a relative import needs the model's directory to be a package:"
            " add an __init__.py to %s/ (and to every directory between it and the models directory)" % rel
        )
    return ""


def _interpreter_hint(exc):
    """Which Python lacks the package, for a ``ModuleNotFoundError`` of a
    top-level module that this interpreter cannot find (numpy installed in
    a virtual environment while the pool starts ``python3`` from the PATH):
    the message said only "No module named 'numpy'". ``""`` otherwise (a
    submodule missing from a package that is there)."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return ""
    top = exc.name.split(".")[0]
    try:
        if importlib.util.find_spec(top) is not None:
            return ""
    except (ImportError, ValueError):
        return ""
    return (
        "; the workers run %s (Python %d.%d.%d), which has no module %s: if it is a package,"
        " install it for that Python, or give the pool a Python that has it"
        " (the pool's python option, serve --python)"
        % ((sys.executable or "python3",) + tuple(sys.version_info[:3]) + (top,))
    )


def _working_dir_hint(exc, path):
    """Where a relative path that was not found was looked for, for a
    ``FileNotFoundError`` of one (``np.load("weights.npy")`` in
    ``__init__``): the worker's working directory, the host's, not the
    model's; with the fix when the file is beside the model file. ``""``
    otherwise."""
    name = getattr(exc, "filename", None)
    if not isinstance(exc, FileNotFoundError) or not isinstance(name, str) or not name or os.path.isabs(name):
        return ""
    cwd = os.getcwd()
    if os.path.isabs(path) and os.path.exists(os.path.join(os.path.dirname(path), name)):
        return (
            "; %s is beside the model file, but a relative path is read from the worker's working directory"
            " (%s): open it as os.path.join(os.path.dirname(__file__), %r)" % (name, cwd, name)
        )
    return "; a relative path is read from the worker's working directory (%s), not the model's" % cwd


def _pickled_main_hint(exc):
    """What to do about a pickle (``pickle.load``, ``joblib.load``) that
    names a class of ``__main__``: it was saved by a script or notebook that
    defined the class, and in a worker ``__main__`` is the server's module,
    not the model's, so the class is not found there even when the model
    file defines it (``Can't get attribute 'Scaler' on <module
    'pyproxy_server.__main__' ...>``). ``""`` otherwise."""
    if not isinstance(exc, AttributeError):
        return ""
    text = str(exc)
    if not text.startswith("Can't get attribute '"):
        return ""
    name, _, rest = text[len("Can't get attribute '"):].partition("' on <module '")
    module = rest.partition("'")[0]  # "__main__", or its spec's name: "pyproxy_server.__main__"
    if not name.isidentifier() or not (module == "__main__" or module.endswith(".__main__")):
        return ""
    return (
        "; the pickle names __main__.%s: it was saved by a script or notebook that defined %s, and a model's"
        " module is not __main__ in a worker: define %s in the model (or a helper module) and set"
        " __main__.%s = %s (import __main__) before loading it" % (name, name, name, name, name)
    )


# Names listed in a "not loaded" message at most; a typo is looked for among
# this many models at most (difflib's cost grows with their number).
_LIST_NAMES = 10
_MATCH_NAMES = 200


def _not_loaded(name, loaded):
    """Why ``name`` is not found, with what a caller who mistyped it needs:
    the name meant, else the models that are loaded."""
    if not loaded:
        return "not loaded (no model is loaded yet)"
    if len(loaded) <= _MATCH_NAMES and len(name) <= 128:
        # Imported here, for a name not found: not at every server's start.
        import difflib

        close = difflib.get_close_matches(name, loaded, n=1)
        if close:
            return "not loaded (did you mean %r?)" % (close[0],)
    shown = sorted(loaded)[:_LIST_NAMES]
    more = len(loaded) - len(shown)
    return "not loaded (loaded: %s%s)" % (", ".join(shown), " and %d more" % more if more else "")


def _pick_class(module, class_name, name):
    if class_name is not None:
        cls = module.__dict__.get(class_name)
        if not isinstance(cls, type):
            own = sorted(_own_model_classes(module))
            raise ModelLoadError(
                "Cannot load model %r: no class %r in its module (%s)"
                % (name, class_name, "model classes: " + ", ".join(own) if own else "no class with an execute(msg) method")
            )
        return cls
    own = list(_own_model_classes(module).values())
    if len(own) == 1:
        return own[0]
    cls = module.__dict__.get("Model")
    if isinstance(cls, type):
        return cls
    if not own:
        # A class with a method named otherwise (run, predict) is the usual slip.
        classes = sorted(
            obj.__name__
            for obj in module.__dict__.values()
            if isinstance(obj, type) and obj.__module__ == module.__name__
        )
        raise ModelLoadError(
            "Cannot load model %r: no class with an execute(msg) or execute_batch(msgs) method%s"
            % (name, " (classes without one: %s)" % ", ".join(classes) if classes else "")
        )
    raise ModelLoadError(
        "Cannot load model %r: several model classes (%s); pass 'class', or name one Model"
        % (name, ", ".join(sorted(c.__name__ for c in own)))
    )


def _own_model_classes(module):
    """The classes the module defines (not imports) that have an ``execute``
    (or an ``execute_batch``)."""
    return {
        obj.__name__: obj
        for obj in module.__dict__.values()
        if isinstance(obj, type) and obj.__module__ == module.__name__
        and (callable(getattr(obj, "execute", None)) or callable(getattr(obj, "execute_batch", None)))
    }


def _construct(cls, options):
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return cls(options)
    try:
        bound = signature.bind(options)
    except TypeError:
        if options:
            _warn_constructor(
                "%s() takes no positional argument, so its options %s are ignored"
                % (cls.__name__, sorted(options))
            )
        return cls()
    _warn_keyword_options(cls, signature, bound)
    return cls(options)


def _warn_keyword_options(cls, signature, bound):
    """Warn when the options dict lands in a parameter written as one option
    (``def __init__(self, threshold=0.5)``): it gets the whole dict, never its
    default; the model would run with a dict where it expects a number."""
    (param_name,) = bound.arguments
    param = signature.parameters[param_name]
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        return
    default = param.default
    if default is inspect.Parameter.empty or default is None or isinstance(default, dict):
        return
    _warn_constructor(
        "%s.__init__ gets the whole options dict as its parameter %r (default %r), "
        "not the option of that name" % (cls.__name__, param_name, default)
    )


def _warn_constructor(what):
    # Written to the model's stderr: during a load it reaches the host's log
    # under the model's name, as a warning.
    sys.stderr.write(
        "pyproxy: %s; take one parameter and read it: def __init__(self, options): "
        "self.x = options.get(\"x\", default) (docs/models.md, \"Options and the constructor\")\n"
        % what
    )
