"""Running threaded calls of one connection: batching, output, cancellation.

``CallRunner.submit(batch)`` hands the threaded calls parsed from one read
to the executor as one work item that runs them in order. When the batch is
not drained after ``HELP_DELAY`` another thread joins in (and so on, up to
the executor size), so cheap calls share one thread while a long call never
holds the rest of its batch back for long.

While a call runs, its thread has ``current_call`` set (``pyproxy.host``
finds the connection through it) and its stdout/stderr routed to an
``OutputSink`` that sends ``log`` events. ``cancel(target)`` answers a queued
call at once, or raises ``KeyboardInterrupt`` in the thread running it.

Commands registered with ``elastic=True`` (evals, model management) skip
the executor: each runs at once on a thread of ``server.elastic_executor``,
so they never wait behind busy model calls (``OverloadedError`` beyond its
bound).

A cancelled call (or a call whose connection closed) that is still running
``CallExecutor.STUCK_GRACE`` seconds later holds a *stuck* thread (blocked
in C, where the interrupt cannot reach it): the executor replaces the
thread, and when it cannot, the server is wedged (``Server.wedge``).

Parking: a handler that must wait for its client (a stream whose reader is
behind) does not wait on its thread. It calls ``CallRunner.park(call,
resume, blocked)`` and returns ``PARK``: the call stays in ``calls``
(``PARKED``) with no thread, and ``unpark`` (when the client lets it go on)
or a cancel queues ``resume(call)`` for a thread, which runs it as the next
part of the same call (same output sink, same reply) and may park again.
"""

import asyncio
import collections
import concurrent.futures
import ctypes
import logging
import os
import sys
import threading
import time

from . import binary, capture, traceback_lines
from .call import DONE, PARKED, PENDING, RUNNING, current_call, distinct_ids
from .errors import CancelledError, HostError, HTTPError, OverloadedError, PyProxyError, PythonError, format_user_traceback

__all__ = ["CallRunner", "OutputSink", "PARK", "wire_error", "is_user_error", "log_user_error", "fail_future", "end_loop"]

log = logging.getLogger("pyproxy_server.execution")

_SERVER_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_get_ident = threading.get_ident
# What a printed traceback's first line is (an exception group's has it too).
_TRACEBACK_START = traceback_lines.PYTHON_START

# Returned by a handler that parked its call (``CallRunner.park``): no reply yet.
PARK = object()


def _interrupt_thread(ident):
    # Fires at the thread's next bytecode; a blocking C call (sleep, I/O)
    # finishes first.
    _async_exc(ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt))


def _wake(call):
    # A call awaiting in an asyncio loop runs no bytecode until the loop
    # wakes: wake it, so that the interrupt fires (``models._run_async``).
    wake = call.wake
    if wake is not None:
        try:
            wake()
        except RuntimeError:  # the loop closed meanwhile: the call ended
            pass


def _pass_eval_breaker():
    """Does nothing. Entering a Python function is a point where CPython
    raises an injected exception that has not fired yet, so

        try:
            _pass_eval_breaker()
        except KeyboardInterrupt:
            pass

    spends a cancel's pending interrupt right there (and does nothing when
    none is pending). Inline at each place, not in a helper: the interrupt
    would fire as that helper is entered, outside its ``try``.

    Not ``PyThreadState_SetAsyncExc(ident, NULL)``, which withdraws a pending
    exception: it also signals the interpreter, and on CPython 3.11 with
    nothing pending that signal is never reset, after which every
    ``sys.settrace`` tracer in the process (pdb, coverage) hangs for ever.
    """


def wire_error(exc):
    """The reply's ``error`` object for an exception raised by a handler.

    ``PyProxyError`` → its ``to_wire()``; anything else → ``PythonError``
    with the user's traceback. (An exception of the model's own with ``type``
    and ``fields`` attributes, such as a validation library's, is the
    model's error like any other: it once passed for a wire error of its
    own type, without its class or traceback.) A model's ``HTTPError`` is a
    ``PythonError`` with its ``status`` (``detail``, ``headers``) added.
    """
    if isinstance(exc, PyProxyError):
        wire = exc.to_wire()
        if isinstance(exc, HostError) and "traceback" not in wire:
            # A host call failed and the model did not catch it: where in the
            # model it called the host is what its author needs (the reply
            # had none, so the gateway's --debug showed none).
            tb = exc.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_SERVER_DIR):
                tb = tb.tb_next
            if tb is not None:
                wire["traceback"] = format_user_traceback(exc, _SERVER_DIR)
        return wire
    wire = PythonError.from_exception(exc, _SERVER_DIR).to_wire()
    if isinstance(exc, HTTPError):
        try:
            wire.update(exc.wire_fields())
        except Exception as problem:  # noqa: BLE001 - changed since the raise
            # Answered as a raise with these values is: the check's
            # TypeError/ValueError, at the model's raise.
            wire["exception"] = type(problem).__name__
            wire["message"] = str(problem)
    return wire


def is_user_error(exc, wire):
    """Whether ``exc`` (answered with ``wire``) is the model's own failure,
    for :func:`log_user_error`: an exception of its code, a host call's
    ``HostError`` it did not catch (then ``wire`` has its traceback), or the
    ``PythonError`` an eval wraps its code's exception in (``of_user_code``).
    Not a model's ``HTTPError`` with a 4xx status: that is the answer it
    chose for its client (a 404), and a traceback per such call would
    flood the log."""
    if isinstance(exc, HTTPError) and wire.get("status", 500) < 500:
        return False
    return (
        not isinstance(exc, PyProxyError)
        or getattr(exc, "of_user_code", False)
        or (isinstance(exc, HostError) and "traceback" in wire)
    )


# log_user_error's bounds, in characters: an exception's message (a
# ValueError holding a whole payload) and its traceback (whose last line
# repeats the message) would otherwise write megabytes into the log at
# every failing call. The traceback keeps its head (the outer frames) and
# its tail (the innermost frames and the exception line).
MAX_LOGGED_MESSAGE = 1024
MAX_LOGGED_TRACEBACK = 16 * 1024


def _bounded(text, limit):
    """``text``, or its head and tail with a note of what was left out
    between them when it is longer than ``limit``."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head
    return "%s\n... (%d characters left out) ...\n%s" % (text[:head], len(text) - limit, text[-tail:])


# log_user_error's default: the ids of the call (not of one of its messages).
_CALLS = object()


def log_user_error(conn_id, call, wire, message_id=_CALLS):
    """Records a model's (or an eval's) exception in the server's log, with
    its traceback: the caller gets the traceback, but the gateway shows it
    only with ``--debug`` (and an eval's client may have gone away), so
    without this it was kept nowhere. The line names the call's request id,
    an ``executeBatch``'s those of its messages, or ``message_id`` when
    given: the id (or ``None``) of the batch's message whose exception it
    is; an eval's line names its session when it ran in one. Message and
    traceback are cut to ``MAX_LOGGED_MESSAGE`` and ``MAX_LOGGED_TRACEBACK``
    characters."""
    if not log.isEnabledFor(logging.INFO):
        return
    msg = call.msg if isinstance(call.msg, dict) else {}
    name = msg.get("name") if call.cmd != "eval" else None
    session = msg.get("session") if call.cmd == "eval" else None
    if message_id is not _CALLS:
        ids = "" if message_id is None else " (request id %s)" % message_id
    elif call.cmd == "executeBatch":
        batch = distinct_ids(call.request_ids)
        ids = " (request ids %s)" % ", ".join(batch) if batch else ""
    else:
        request_id = call.request_id
        ids = "" if request_id is None else " (request id %s)" % request_id
    log.info(
        "connection %s: %s %d%s%s%s raised %s: %s\n%s",
        conn_id, call.cmd, call.id,
        " (model %s)" % name if isinstance(name, str) else "",
        " (session %s)" % session if isinstance(session, str) else "",
        ids,
        wire.get("exception", wire.get("type")),
        _bounded(str(wire.get("message", "")), MAX_LOGGED_MESSAGE),
        _bounded(str(wire.get("traceback") or "").rstrip(), MAX_LOGGED_TRACEBACK),
    )


def end_loop(loop, agen=None):
    """Ends an event loop of a call's thread as ``asyncio.run`` ends its own:
    the tasks still on it cancelled and awaited (``asyncio.CancelledError``
    at their ``await``), then ``agen`` closed if given (``GeneratorExit`` at
    its ``yield``), async generators and the default executor shut down, and
    the loop closed. Used by an eval that awaits and by an async stream."""
    try:
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        if agen is not None:
            loop.run_until_complete(agen.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


def fail_future(future, error):
    """Fail ``future`` with ``error`` unless it is already settled."""
    try:
        future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass


class OutputSink:
    """Turns a call's stdout/stderr writes into ``log`` events, line by line.

    A traceback printed (``traceback.print_exc()``: a write per frame, 9 for
    a chained one) is held from its first line to its end (a chain's
    tracebacks included, ``traceback_lines``) and sent as one event, at
    ``"error"`` on stderr (at ``"info"`` on stdout, as ``OutputRouter`` logs
    one outside a call), bounded as ``OutputRouter`` bounds one: a character
    count (the rest goes on in the next event) and a time (the loop's timer
    sends it once it ended and no line came for a moment, or its time is
    up), and before any later output of its thread. Each thread of the call
    has its own: two threads printing tracebacks at once give one event
    each; at most ``MAX_HELD_TRACEBACKS`` at once, past which the oldest is
    sent as it is so far.
    """

    __slots__ = ("_conn", "_call", "_pending", "_deferred", "dropped", "_closed", "_tbs", "_tb_lock")

    # Unterminated text longer than this is sent without waiting for "\n".
    MAX_LINE = 8192
    # A traceback's event at most (its rest goes on in the next one), held at
    # most this long from its first line, and this long without a line once
    # its exception's line came: ``OutputRouter``'s.
    MAX_TRACEBACK_CHARS = capture.OutputRouter.MAX_TRACEBACK_CHARS
    MAX_TRACEBACK_SECONDS = capture.OutputRouter.MAX_TRACEBACK_SECONDS
    TRACEBACK_END_SECONDS = capture.OutputRouter.TRACEBACK_END_SECONDS
    # Tracebacks a call holds at once (threads of it printing one each):
    # past it the oldest is sent as it is so far (the rest of it goes line by
    # line), so that a call holds at most this many times
    # ``MAX_TRACEBACK_CHARS`` and as many timers (1000 threads held 1000,
    # each polled every 50 ms for up to 5 s; chaos54).
    MAX_HELD_TRACEBACKS = capture.OutputRouter.MAX_HELD_TRACEBACKS

    def __init__(self, conn, call, defer=False):
        self._conn = conn
        self._call = call
        self._pending = None
        # defer=True (inline calls): events are held until close(), so the
        # output of an attempt that is re-run on a thread can be dropped.
        self._deferred = [] if defer else None
        self.dropped = 0
        self._closed = False
        # The tracebacks being printed, by thread ident: ``(fd,
        # capture._PendingTraceback)``, under ``_tb_lock`` (the loop's timer
        # sends them too). Not the call's lock, the connection's
        # ``state_lock``: a write of many lines holds it while they are
        # looked at, and every other call of the connection ended (its reply)
        # only after it (chaos53: 1.85 s for 3 writes of a million lines).
        # Made with the first traceback, not per call. A thread's lines are
        # never another thread's traceback's.
        self._tbs = None
        self._tb_lock = None

    def write(self, fd, text):
        """The ``capture`` sink: buffer ``text``, send complete lines."""
        if self._closed:
            # A thread of the call's (run with its copied context) that
            # outlived it: its output goes where that of threads without a
            # call goes, the server's log. As events it went on for ever to
            # a host that no longer waits, and a thread printing in a loop
            # filled the connection: every later call of the worker timed out.
            router = sys.stdout if fd == 1 else sys.stderr
            to_log = getattr(router, "_to_log", None)
            if to_log is not None:
                to_log(text)
            return
        if self._pending is None:
            self._pending = {}
        text = self._pending.pop(fd, "") + text
        cut = text.rfind("\n")
        if cut < 0 and len(text) <= self.MAX_LINE:
            self._pending[fd] = text
            return
        if cut < 0:
            self._emit(fd, text)
            return
        if cut + 1 < len(text):
            self._pending[fd] = text[cut + 1 :]
        self._emit(fd, text[:cut])

    def close(self):
        """Send what is left (before the call's reply) and the drop notice;
        later writes go to the server's log."""
        self._closed = True
        if self._tbs:  # printed before any pending text
            with self._tb_lock:
                held = sorted(self._tbs.values(), key=lambda item: item[1].started)
                self._tbs.clear()
                for fd, tb in held:
                    self._send_traceback(fd, tb)
        if self._pending is None:
            return
        for fd, text in sorted(self._pending.items()):
            if text:
                self._emit(fd, text)
        self._pending.clear()
        deferred = self._deferred
        self._deferred = None
        if deferred:
            for item in deferred:
                if type(item) is dict:  # a logging record's event (log_record)
                    self._conn.send_event(item)
                else:
                    self._send(*item)
        if self.dropped:
            self._send(
                2,
                "[pyproxy] dropped %d characters of output: the connection is not reading fast enough"
                % self.dropped,
            )

    def log_record(self, level, logger, text):
        """A ``logging`` record of the call's code (``HostLogHandler``): a
        ``log`` event with ``"stream": "logging"``, on a connection that asked
        for them; True when it went. After the call ended it stays in the
        server's log only."""
        conn = self._conn
        if self._closed or not conn.log_records:
            return
        if conn.backlog > conn.OUTPUT_BACKLOG:
            self.dropped += len(text)
            conn.dropped_output += len(text)
            return
        name = self._call.msg.get("name")
        event = {
            "event": "log",
            "level": level,
            "stream": "logging",
            "logger": logger,
            "model": name if isinstance(name, str) else None,
            "message": text,
            "request": self._call.id,
        }
        self._call.tag_request(event)
        if self._deferred is not None:
            self._deferred.append(event)
            return True
        conn.send_event(event)
        return True

    def _emit(self, fd, text):
        if self._tbs or _TRACEBACK_START in text:
            self._traceback_lines(fd, text)
            return
        if self._conn.backlog > self._conn.OUTPUT_BACKLOG:
            self.dropped += len(text)
            self._conn.dropped_output += len(text)
            return
        self._send(fd, text)

    def _emit_lines(self, fd, text):
        # ``_emit`` without its look for a traceback (the one call per line
        # more stays off its path).
        if self._conn.backlog > self._conn.OUTPUT_BACKLOG:
            self.dropped += len(text)
            self._conn.dropped_output += len(text)
            return
        self._send(fd, text)

    def _traceback_lines(self, fd, text):
        """``_emit`` of lines of which some are a traceback's, or with one
        held: this thread's traceback's lines are held, the others sent as
        before."""
        lock = self._tb_lock
        if lock is None:
            with self._call.lock:  # once: two threads of the call may print one
                lock = self._tb_lock
                if lock is None:
                    self._tbs = {}
                    lock = self._tb_lock = threading.Lock()
        with lock:
            tbs = self._tbs
            ident = threading.get_ident()
            held = tbs.get(ident)
            if held is not None and held[0] != fd:
                # The thread printed on the other stream: its traceback has
                # ended (its event goes first).
                del tbs[ident]
                self._send_traceback(*held)
                held = None
            now = time.monotonic()
            plain = []
            for line in text.split("\n"):
                if held is not None:
                    tb = held[1]
                    state = traceback_lines.continues(tb.state, line)
                    if state is not None and not tb.due(now, self):
                        if tb.size + 1 + len(line) > self.MAX_TRACEBACK_CHARS:
                            self._send_traceback(fd, tb)
                        tb.add(line, state)
                        continue
                    del tbs[ident]
                    self._send_traceback(fd, tb)
                    held = None
                state = traceback_lines.start(line)
                if state is None:
                    plain.append(line)
                    continue
                if plain:
                    self._emit_lines(fd, "\n".join(plain))
                    plain = []
                if len(tbs) >= self.MAX_HELD_TRACEBACKS:
                    oldest = min(tbs, key=lambda key: tbs[key][1].started)
                    self._send_traceback(*tbs.pop(oldest))
                tb = capture._PendingTraceback(line, state, threading.current_thread().name)
                held = tbs[ident] = (fd, tb)
                if self._deferred is None:
                    # An inline call's runs on the loop, and ends (close) before its timer could fire.
                    loop = self._conn.server.loop
                    try:
                        loop.call_soon_threadsafe(loop.call_later, self.TRACEBACK_END_SECONDS, self._watch_traceback, ident, tb)
                    except RuntimeError:  # loop closed: the server is exiting (close sends it)
                        pass
            if plain:
                self._emit_lines(fd, "\n".join(plain))

    def _watch_traceback(self, ident, tb):
        # Loop thread: sends ``tb`` once it is due, while it is the one held
        # for its thread. Never waits for the lock: a thread looking at a
        # long write's lines holds it, and the loop serves every other call
        # meanwhile.
        lock = self._tb_lock
        if lock.acquire(blocking=False):
            try:
                held = self._tbs.get(ident)
                if held is None or held[1] is not tb:
                    return  # sent already (it ended, the call ended)
                if tb.due(time.monotonic(), self):
                    del self._tbs[ident]
                    self._send_traceback(*held)
                    return
            finally:
                lock.release()
        self._conn.server.loop.call_later(self.TRACEBACK_END_SECONDS, self._watch_traceback, ident, tb)

    def _send_traceback(self, fd, tb):
        lines = tb.take()[0]
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            return
        text = "\n".join(lines)
        conn = self._conn
        if conn.backlog > conn.OUTPUT_BACKLOG:
            self.dropped += len(text)
            conn.dropped_output += len(text)
            return
        name = self._call.msg.get("name")
        event = {
            "event": "log",
            "level": "error" if fd == 2 else "info",
            "stream": "stderr" if fd == 2 else "stdout",
            "model": name if isinstance(name, str) else None,
            "message": text,
            "request": self._call.id,
        }
        self._call.tag_request(event)
        if self._deferred is not None:
            self._deferred.append(event)
            return
        conn.send_event(event)

    def _send(self, fd, text):
        if self._deferred is not None:
            self._deferred.append((fd, text))
            return
        name = self._call.msg.get("name")
        event = {
            "event": "log",
            "level": "info" if fd == 1 else "warning",
            "stream": "stdout" if fd == 1 else "stderr",
            "model": name if isinstance(name, str) else None,
            "message": text,
            "request": self._call.id,
        }
        self._call.tag_request(event)
        self._conn.send_event(event)


class CallRunner:
    """The threaded calls of one connection (``calls``: id → ``Call`` queued or running)."""

    # Seconds before another executor thread helps drain a batch of calls.
    HELP_DELAY = 0.005

    def __init__(self, conn):
        self.conn = conn
        self.calls = {}
        self._server = conn.server
        # The executor's stuck thread idents (a stable set object).
        self._stuck = conn.server.executor.stuck

    def submit(self, batch):
        """Run ``[(call, handler), ...]`` on the executor (loop thread only)."""
        elastic = self._server.elastic_commands
        if len(batch) == 1:
            if batch[0][0].cmd in elastic:
                self._submit_elastic(batch[0])
                return
        elif elastic:
            rest = []
            for item in batch:
                if item[0].cmd in elastic:
                    self._submit_elastic(item)
                else:
                    rest.append(item)
            if not rest:
                return
            batch = rest
        queue = collections.deque(batch)
        try:
            wedged = self._server.executor.submit(self._drain, queue)
        except RuntimeError:  # executor shut down: the server is stopping
            return
        if wedged is not None:  # no thread could be started for it
            self._server.wedge(wedged)
        if len(batch) > 1:
            self._server.loop.call_later(self.HELP_DELAY, self._help, queue, 1)

    def cancel(self, target):
        """Cancel call ``target``; True when it was queued, running or parked (loop thread)."""
        call = self.calls.get(target)
        if call is None:
            return False
        cancelled = call.cancelled  # created outside the lock: it takes the lock
        resume = None
        with call.lock:
            if call.state == DONE:
                return False
            cancelled.set()
            if call.state == PENDING:
                call.state = DONE
                self.calls.pop(target, None)
                call.drop_spilled()
                error = CancelledError("Cannot run %s: cancelled before it started" % call.cmd)
                self.conn.enqueue(self.conn.encode_error(target, error.to_wire()))
                return True
            if call.state == PARKED:
                # No thread to interrupt: its next part (queued now, or
                # already) sees the cancel and ends the call (a stream's
                # generator is closed: its finally blocks run), then replies.
                call.interrupted = True
                resume = call.resume
                call.resume = None
            elif not call.interrupted:
                call.interrupted = True
                if not call.shielded:  # else raised when the shield ends
                    _interrupt_thread(call.thread_ident)
                self._watch(call)
        if resume is not None:
            self._resume(call, resume)
            return True
        _wake(call)
        for future in list(call.host_futures or ()):
            fail_future(future, HostError("Cannot call host: the call was cancelled"))
        return True

    @staticmethod
    def shield(call):
        """Defers a cancel's interrupt of ``call`` (on its own thread) until
        ``unshield``: for a step that must not stop half-way, such as a
        Python → host request whose spill file would be left behind by an
        interrupt between its writing and its queueing. Raises the
        ``KeyboardInterrupt`` at once when the call was cancelled already
        (its interrupt may be injected but not yet fired: it is spent)."""
        with call.lock:
            cancelled = call.interrupted
            if not cancelled:
                call.shielded = True
        if cancelled:
            try:
                _pass_eval_breaker()
            except KeyboardInterrupt:
                pass
            raise KeyboardInterrupt

    @staticmethod
    def defer_interrupt(call):
        """Shields ``call`` (until ``unshield``) when this is its own thread
        and no cancel interrupted it yet, and returns True: a cancel that
        comes meanwhile is due, not injected. For a step that takes a lock
        other threads take too, such as an eval's output channel's: an
        interrupt that fires as a ``threading.Condition`` is entered, right
        after its lock was taken, leaves the lock held for ever (the loop
        thread then blocked on it at the next ``outputAck`` and answered
        nothing more, the cancel and pings included, until the host killed
        the worker).

        Returns False, and shields nothing, on any other thread (only the
        call's own thread is ever interrupted), when a shield is on already,
        or when the call was interrupted already: then its interrupt, if it
        has not fired yet, fires here, before any lock is taken."""
        if call.thread_ident != _get_ident():
            return False
        with call.lock:
            if call.shielded:
                return False
            if not call.interrupted:
                call.shielded = True
                return True
        # Interrupted: its exception, if still pending, fires as this is entered.
        _pass_eval_breaker()
        return False

    @staticmethod
    def end_shield(call):
        """Ends ``shield`` on an error path: a cancel that came meanwhile is
        injected (it fires at the thread's next bytecode) instead of raised."""
        with call.lock:
            call.shielded = False
            if call.interrupted:
                _interrupt_thread(call.thread_ident)

    @staticmethod
    def unshield(call):
        """Ends ``shield``: raises the ``KeyboardInterrupt`` of a cancel that
        came meanwhile."""
        with call.lock:
            call.shielded = False
            due = call.interrupted
        if due:
            raise KeyboardInterrupt

    @staticmethod
    def park(call, resume, blocked):
        """On the call's thread: park ``call`` when ``blocked()`` is still
        true (checked under the call's lock, which ``blocked`` must not
        take); the handler then returns ``PARK`` at once and the thread is
        free. ``resume(call)`` is the handler of the call's next part, run on
        a thread when ``unpark`` finds ``blocked()`` false or a cancel comes.

        Returns False (not parked: go on) when ``blocked()`` is false. Raises
        ``CancelledError`` when the call was cancelled (or its connection
        closed) meanwhile: a cancel's interrupt that has not fired yet is
        spent first.
        """
        with call.lock:
            interrupted = call.interrupted
            if not interrupted and not call.is_cancelled():
                if not blocked():
                    return False
                call.state = PARKED
                call.thread_ident = None
                call.resume = resume
                return True
        if interrupted:
            try:
                _pass_eval_breaker()
            except KeyboardInterrupt:
                pass
        raise CancelledError("Cannot complete %s: cancelled" % call.cmd)

    @staticmethod
    def hold(call):
        """On the call's thread: park ``call`` with no ``resume``: neither an
        ``unpark`` nor a cancel (nor its connection's loss) queues its next
        part, only ``resume`` (a stream's close waiting for a busy model's
        lock: ``StreamProducer``); the handler then returns ``PARK``."""
        with call.lock:
            call.state = PARKED
            call.thread_ident = None
            call.resume = None

    def resume(self, call, handler):
        """Loop thread: queue ``handler`` as the next part of ``call``, held
        (``hold``)."""
        self._resume(call, handler)

    def unpark(self, call, ready):
        """Loop thread: queue the next part of parked ``call`` when ``ready()``
        (checked under the call's lock, which it must not take). True when
        queued."""
        with call.lock:
            resume = call.resume
            if call.state != PARKED or resume is None or not ready():
                return False
            call.resume = None
        self._resume(call, resume)
        return True

    @property
    def parked(self):
        """Calls parked now (in flight, holding no thread)."""
        return sum(1 for call in list(self.calls.values()) if call.state == PARKED)

    def connection_lost(self):
        """Tell every queued, running or parked call that nobody waits for it any more."""
        for call in list(self.calls.values()):
            call.cancelled.set()
            with call.lock:
                state = call.state
                resume = call.resume if state == PARKED else None
                call.resume = None
            if state == RUNNING:
                self._watch(call)
            elif resume is not None:
                self._resume(call, resume)  # it ends the call: nobody reads it
            elif call.spilled is not None:
                # Its file goes now, unread: the process may exit before a
                # thread gets to the call (stopServer, the host gone).
                with call.lock:
                    if call.state == PENDING:
                        call.drop_spilled()

    def _watch(self, call):
        # Loop thread: a call nobody waits for must let go of its thread soon.
        self._server.loop.call_later(self._server.executor.STUCK_GRACE, self._check_stuck, call, call.thread_ident)

    def _check_stuck(self, call, ident):
        with call.lock:
            if call.state != RUNNING or call.thread_ident != ident:
                return
            # Under the call's lock, so the thread cannot finish the call (and
            # look for itself in the stuck set) before it is in there.
            if call.cmd in self._server.elastic_commands:
                reason = self._server.mark_elastic_stuck(ident, _call_label(call))
            else:
                reason = self._server.executor.mark_stuck(ident, _call_label(call))
        if reason is not None:
            self._server.wedge(reason)

    def _submit_elastic(self, item):
        call = item[0]
        try:
            if self._server.elastic_executor.submit(self._run_one, item):
                return
        except RuntimeError:  # shut down: the server is stopping
            return
        with call.lock:
            if call.state == DONE:
                return
            call.state = DONE
        self.calls.pop(call.id, None)
        call.drop_spilled()
        error = OverloadedError(
            "Cannot run %s: %d evals and model commands are already running (--max-elastic-threads)"
            % (call.cmd, self._server.elastic_executor.max_threads)
        )
        self.conn.enqueue(self.conn.encode_error(call.id, error.to_wire()))

    def _run_one(self, item):
        call = item[0]
        try:
            self._run(call, item[1], self._server.elastic_executor.release)
        except BaseException:  # never let a call take the thread down
            log.exception("connection %s: call %s failed outside its handler", self.conn.id, call.id)
        finally:
            if self._server.elastic_stuck:
                self._server.unstick_elastic(_get_ident())

    def _resume(self, call, handler):
        # Loop thread: a parked call's next part waits for a thread like any call.
        try:
            wedged = self._server.executor.submit(self._run_resumed, (call, handler))
        except RuntimeError:  # executor shut down: the server is stopping
            return
        if wedged is not None:
            self._server.wedge(wedged)

    def _run_resumed(self, item):
        call = item[0]
        try:
            self._run(call, item[1])
        except BaseException:  # never let a call take the worker thread down
            log.exception("connection %s: call %s failed outside its handler", self.conn.id, call.id)

    def _help(self, queue, helpers):
        if queue and helpers < self._server.threads and not self.conn.closed:
            try:
                wedged = self._server.executor.submit(self._drain, queue)
            except RuntimeError:
                return
            if wedged is not None:
                self._server.wedge(wedged)
            self._server.loop.call_later(self.HELP_DELAY, self._help, queue, helpers + 1)

    def _drain(self, queue):
        popleft = queue.popleft
        while True:
            try:
                call, handler = popleft()
            except IndexError:
                return
            try:
                self._run(call, handler)
            except BaseException:  # never let a call take the worker thread down
                log.exception("connection %s: call %s failed outside its handler", self.conn.id, call.id)

    def _run(self, call, handler, release=None):
        if call.spilled is not None and not self._read_spilled(call):
            return
        ident = _get_ident()
        with call.lock:
            state = call.state
            if state == DONE:
                return
            if state == PENDING and self.conn.closed:
                # Nobody can receive the reply: a flood of queued calls must not
                # keep the executor busy after its client left. (A parked call
                # goes on: its next part ends it, closing what it holds.)
                call.state = DONE
                self.calls.pop(call.id, None)
                call.drop_spilled()
                return
            call.state = RUNNING
            call.thread_ident = ident
            # A parked call resumed to end it: its clean-up (a generator's
            # finally) is model code that may hang, watched as a cancelled call.
            watch = state == PARKED and call.is_cancelled()
        if watch:
            try:
                self._server.loop.call_soon_threadsafe(self._watch, call)
            except RuntimeError:  # loop closed: the server is exiting
                pass
        conn = self.conn
        sink = call.sink
        if sink is None:
            sink = call.sink = OutputSink(conn, call)
        call_token = current_call.set(call)
        sink_token = capture._sink.set(sink.write)
        # The injected KeyboardInterrupt can fire at any bytecode until it is
        # spent, so both the handler and the bookkeeping after it catch it.
        done = parked = False
        try:
            try:
                result = handler(call)
                if result is PARK:
                    # Parked (``park``): the call may run on another thread
                    # already; nothing below may touch it.
                    done = parked = True
                else:
                    # Nothing left for a cancel to stop: DONE before the reply is
                    # encoded, so no interrupt lands in the encoding (one fired as
                    # a spill file's os.open returns loses the descriptor).
                    with call.lock:
                        call.state = DONE
                        interrupted = call.interrupted
                    done = True
                    if interrupted:  # cancelled while it ran: its interrupt may not have fired
                        try:
                            _pass_eval_breaker()
                        except KeyboardInterrupt:
                            pass
                        payload = self._cancelled_or_error(call, None)
                    else:
                        payload = conn.encode_reply(call.id, result, call.http)
            except KeyboardInterrupt as exc:
                payload = self._cancelled_or_error(call, exc)
            except BaseException as exc:  # SystemExit from user code too
                wire = wire_error(exc)
                if is_user_error(exc, wire):
                    log_user_error(conn.id, call, wire)
                payload = conn.encode_error(call.id, wire)
            finally:
                if not done:
                    with call.lock:
                        call.state = DONE
                        interrupted = call.interrupted
                    if interrupted:
                        try:
                            _pass_eval_breaker()
                        except KeyboardInterrupt:
                            pass
            on_end = None if parked else call.on_end
            if on_end is not None:  # after the interrupt, if any, was spent
                call.on_end = None
                try:
                    on_end()
                except BaseException:
                    log.exception("connection %s: the clean-up of call %s failed", conn.id, call.id)
        except KeyboardInterrupt as exc:
            with call.lock:
                call.state = DONE
            payload = self._cancelled_or_error(call, exc)
        finally:
            capture._sink.reset(sink_token)
            current_call.reset(call_token)
        if self._stuck:
            self._server.executor.unstick(ident)
        if parked:
            return
        sink.close()
        self.calls.pop(call.id, None)
        if release is not None:
            release()  # an elastic thread is free once the reply can be seen
        conn.enqueue(payload)

    def _read_spilled(self, call):
        """Replace a spilled request's stub (``call.msg``) with the message in
        its file, on the call's thread: the event loop stays free for other
        requests, pings included, while large requests are read. The call is
        still queued (``PENDING``) meanwhile: a ``cancel`` answers it at once
        and no interrupt is ever injected here. False: the call is over (its
        reply, if it needs one, is queued).

        At most ``Server.SPILL_READERS`` threads read at once: parsing holds
        the GIL, and the more threads wait for it, the longer the loop thread
        does."""
        gate = self._server.spill_readers
        while True:
            got = gate.acquire(timeout=0.05)
            with call.lock:
                if call.state != DONE and self.conn.closed:
                    call.state = DONE
                    self.calls.pop(call.id, None)
                    call.drop_spilled()
                if call.state == DONE:  # cancelled while it waited
                    if got:
                        gate.release()
                    return False
                if got:
                    settings, ref = call.spilled
                    call.spilled = None
                    break
        error = None
        try:
            # Deletes the file in every case; checks its id and cmd against the stub's.
            msg = settings.read(ref, call.msg)
            if "$bytes" in msg:
                msg = binary.decode(msg)  # base64 bytes in the file's JSON (protocol §3)
        except BaseException as exc:  # MemoryError too: the call still gets its one reply
            error = exc
        finally:
            gate.release()
        with call.lock:
            if call.state == DONE:
                return False  # cancelled while it was read: answered already
            if error is not None:
                call.state = DONE
        if error is not None:
            if isinstance(error, PyProxyError):
                log.warning("connection %s: %s", self.conn.id, error.message)
            else:
                log.error("connection %s: cannot read spilled request %s: %r", self.conn.id, call.id, error)
            self.calls.pop(call.id, None)
            self.conn.enqueue(self.conn.encode_error(call.id, wire_error(error)))
            return False
        call.msg = msg
        return True

    def _cancelled_or_error(self, call, exc):
        if call.interrupted:
            error = CancelledError("Cannot complete %s: cancelled" % call.cmd)
            return self.conn.encode_error(call.id, error.to_wire())
        return self.conn.encode_error(call.id, wire_error(exc))


def _call_label(call):
    """A call as a log line names it: ``executeModel of model 'm'`` (the
    model whose call is stuck: the log's reader looks for it), else its
    command."""
    msg = call.msg
    name = msg.get("name") if isinstance(msg, dict) else None
    return "%s of model %r" % (call.cmd, name) if isinstance(name, str) else str(call.cmd)
