"""Remote evaluation: run Python source sent by the host, streaming its output.

Installs four commands into the server (protocol §9):

- ``eval`` (threaded) runs code REPL-style in a namespace and replies with the
  value of a final expression; ``print`` output streams as ``output`` events
  while the code runs.
- ``openSession`` / ``closeSession`` keep a namespace alive between evals on
  one connection; namespaces die with the connection.
- ``outputAck`` grants output credit: a printing thread blocks while more than
  ``OutputChannel.window`` characters are unacknowledged, so a flood cannot
  fill the socket or the host's memory.

This is arbitrary code execution by design: whoever can authenticate to the
server can run anything the server's user can.
"""

import ast
import asyncio
import builtins
import collections
import dis
import functools
import heapq
import itertools
import os
import secrets
import threading
import time
import types
from itertools import islice as _islice

from . import big_json, capture
from .call import current_call
from .execution import CallRunner, end_loop
from .models import _run_async
from .errors import (
    CancelledError,
    InvalidRequestError,
    OverloadedError,
    PythonError,
    SerializationError,
    SessionLostError,
    short_repr,
)
from .json_problem import not_json_reason

__all__ = [
    "CodeCache",
    "EvalService",
    "OutputChannel",
    "Flusher",
    "compile_code",
    "evaluate",
    "new_namespace",
    "install",
]

_NO_ARGS = object()
_defer_interrupt = CallRunner.defer_interrupt
_unshield = CallRunner.unshield


def new_namespace():
    """Return a fresh module-like namespace, as a REPL's ``__main__``."""
    return {"__name__": "__main__", "__builtins__": builtins}


def _single_function(tree):
    names = [
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    return names[0] if len(names) == 1 else None


# ``await``, ``async for`` and ``async with`` at the top level of the code,
# as in a notebook cell (Python 3.8+): such code compiles to a coroutine.
_TOP_LEVEL_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect


def compile_code(code, filename="<eval>"):
    """``code`` compiled for :func:`evaluate`: ``(body, last, function)`` with
    the statements, the final expression (or None) and the name of the single
    top-level function (or None). ``await`` may be used at the top level.
    Raises ``SyntaxError`` and the like."""
    tree = ast.parse(code, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Expression(tree.body.pop().value), filename, "eval", _TOP_LEVEL_AWAIT)
    return compile(tree, filename, "exec", _TOP_LEVEL_AWAIT), last, _single_function(tree)


class CodeCache:
    """The compiled code of recently evaluated sources, so an eval of the same
    code again (with other locals or args) skips parsing and compiling (~40
    → ~1.5 µs for ``1+1``, ~190 → ~5 µs for a three-line function on the
    benchmark machine). Code objects are immutable: one may run in any number
    of namespaces and threads at once. At most ``maxsize`` sources of up to
    ``max_chars`` characters are kept (least recently used out first), so
    the cache stays within a few MB; longer sources are compiled every time
    (their compile time is small next to what such code does), and errors
    are never cached."""

    def __init__(self, maxsize=128, max_chars=8 * 1024):
        self.max_chars = max_chars
        self._cached = functools.lru_cache(maxsize=maxsize)(compile_code)

    def get(self, code, filename="<eval>"):
        """``compile_code(code, filename)``, from the cache when it can."""
        if len(code) > self.max_chars:
            return compile_code(code, filename)
        return self._cached(code, filename)

    def info(self):
        """``functools`` cache statistics: hits, misses, maxsize, currsize."""
        return self._cached.cache_info()


def evaluate(code, namespace, args=_NO_ARGS, filename="<eval>", cache=None):
    """Run ``code`` in ``namespace`` and return its value.

    Statements are executed; when the last statement is an expression its
    value is returned (as in a REPL), else ``None``. When ``args`` is given
    (a list/tuple: positional, a dict: keyword arguments) the code must define
    exactly one top-level function, or end with an expression whose value is
    callable; that callable is called with ``args`` and its result returned.
    ``cache``: a :class:`CodeCache` to compile through.
    """
    if cache is None:
        body, last, name = compile_code(code, filename)
    else:
        body, last, name = cache.get(code, filename)
    if not (body.co_flags & _CO_COROUTINE or (last is not None and last.co_flags & _CO_COROUTINE)):
        exec(body, namespace)
        value = None
        if last is not None:
            value = eval(last, namespace)
        if args is _NO_ARGS:
            return _awaited(value)
        return _awaited(_called(namespace, name, value, args))
    # Top-level await: the whole eval on one event loop of its own (as an
    # ``async def execute`` call's: asyncio.run's), so what the statements
    # made on it (a client, a task) still works in the final expression.
    loop = asyncio.new_event_loop()
    # A cancel's interrupt fires at the thread's next bytecode, and a loop
    # waiting for I/O or a timer runs none: the cancel wakes it (as it does
    # an ``async def execute``'s), the interrupt ends the run, and closing
    # the loop cancels the code at its ``await``.
    call = current_call.get()
    if call is not None:
        call.wake = lambda: loop.call_soon_threadsafe(_noop)
    try:
        # Each part with the loop running, whether it awaits or not: a cell
        # whose only ``await`` is its last expression makes its tasks in its
        # statements (``asyncio.create_task``: "no running event loop").
        loop.run_until_complete(_in_loop(body, namespace))
        value = None
        if last is not None:
            value = loop.run_until_complete(_in_loop(last, namespace))
        if args is not _NO_ARGS:
            value = _called(namespace, name, value, args)
        if value.__class__ is types.CoroutineType:
            value = loop.run_until_complete(value)
        return value
    finally:
        try:
            end_loop(loop)
        finally:
            if call is not None:
                call.wake = None


def _noop():
    pass


async def _in_loop(code, namespace):
    """``code``'s value, run as a task of the eval's loop: a coroutine's
    (top-level ``await``) awaited; other code run there, the loop running."""
    if code.co_flags & _CO_COROUTINE:
        return await eval(code, namespace)
    return eval(code, namespace)


def _called(namespace, name, value, args):
    """The single top-level function (or the callable last value) called
    with ``args``."""
    fn = namespace[name] if name is not None else value
    if not callable(fn):
        raise TypeError(
            "Cannot call: 'args' given but the code defines no single "
            "top-level function and does not end with a callable"
        )
    if isinstance(args, dict):
        return fn(**args)
    if isinstance(args, (list, tuple)):
        return fn(*args)
    raise TypeError("Cannot call: 'args' must be an array or an object")


def _awaited(value):
    """A coroutine's result (an ``async def`` called with ``args``, or a last
    expression such as ``main()``), run to completion on an event loop of
    this thread; any other value as it is."""
    if value.__class__ is not types.CoroutineType:
        return value
    return _run_async(value)


class Flusher(threading.Thread):
    """One daemon thread that flushes partial output chunks when they are due.

    Writers coalesce small writes; the flusher makes sure a partial chunk does
    not wait longer than ``OutputChannel.flush_delay`` even when the code
    stops printing (for example while it sleeps).
    """

    def __init__(self):
        super().__init__(name="pyproxy-eval-flusher", daemon=True)
        self._cond = threading.Condition(threading.RLock())
        # True when this thread holds the lock (so a write is a re-entry).
        self._reentered = self._cond._is_owned
        self._due = []
        self._order = itertools.count()

    def schedule(self, channel, delay):
        """Call ``channel.flush_due()`` after ``delay`` seconds."""
        with self._cond:
            heapq.heappush(
                self._due, (time.monotonic() + delay, next(self._order), channel)
            )
            self._cond.notify()

    def run(self):
        while True:
            with self._cond:
                while not self._due:
                    self._cond.wait()
                deadline, _, channel = self._due[0]
                now = time.monotonic()
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                heapq.heappop(self._due)
            try:
                channel.flush_due()
            except Exception:  # never let one channel stop the flusher
                pass


class OutputChannel:
    """Coalesces one eval's writes into sequence-numbered, flow-controlled chunks.

    ``send(fd, data, seq)`` is called with the channel lock held, so chunks
    leave in ``seq`` order; the writer blocks while more than ``window``
    characters are unacknowledged (see :meth:`ack`).

    Every ``print`` is two writes, so the write path is kept to a deque
    append and two length checks, and ``capture.redirect`` hands
    ``write_stdout``/``write_stderr`` to ``print`` directly (a ``print`` of
    a 100-character line, staging and sending included: 3.8 -> 2.1 µs). Writes
    queue without a lock (``deque.append`` is atomic); the writer *stages*
    the queue under the lock every ``stage_items`` writes, or at once for a
    write longer than ``stage_chars``: staging joins consecutive writes of
    one fd into segments and sends their whole chunks. The flusher, an ack
    and :meth:`flush` stage and send too. ``_limit`` is the queue length
    above which a write stages; it is written only under the lock, and set
    to 0 whenever the flusher is unscheduled, so that the first write after
    that schedules it again (a write that read an older limit was appended
    before the flusher took the queue, so nothing waits unscheduled).
    Memory stays bounded: at most ``stage_items`` short writes are queued,
    less than one chunk is staged after a write, and at most ``window``
    characters are sent and unacknowledged.

    ``call``: the eval's call. On its thread, whatever takes the lock runs
    shielded from the cancel's interrupt (``CallRunner.defer_interrupt``),
    which is raised once the lock is released: an interrupt that fired as
    the lock was taken left it held for ever, and the loop thread, at the
    next ``outputAck``, waited for it for ever.

    Re-entry: a write made on a thread that is staging or sending already
    (a finalizer run by the garbage collector mid-send printing "Exception
    ignored in ..." to stderr) stays queued, sent after the text being sent:
    staged then, it waited in ``_emit_in_turn`` for its own thread's send,
    for ever.
    """

    # Characters per chunk: bounds one frame, so replies for other requests on
    # the connection are never stuck behind a huge write.
    chunk_chars = 64 * 1024
    # Seconds a partial chunk may wait for more writes before it is sent.
    flush_delay = 0.005
    # Unacknowledged characters before the printing thread blocks.
    window = 1024 * 1024
    # Seconds between checks for cancellation while blocked on credit.
    poll = 0.05
    # Writes queued before the writer stages them (1: every write stages).
    stage_items = 256
    # A write longer than this stages at once (its whole chunks go out now).
    stage_chars = 1024

    def __init__(self, send, flusher=None, cancelled=None, call=None):
        self._send = send
        self._flusher = flusher
        self._cancelled = cancelled or (lambda: False)
        self._call = call
        self._cond = threading.Condition(threading.RLock())
        # True when this thread holds the lock (so a write is a re-entry).
        self._reentered = self._cond._is_owned
        # Writes not staged yet: a str for fd 1, an (fd, text) pair otherwise.
        self._queue = collections.deque()
        self._limit = 0
        # Staged segments, oldest first: [fd, [text, ...], characters].
        self._staged = []
        self._staged_chars = 0
        self._emitting = False
        self._scheduled = False
        self._seq = 0
        self._sizes = {}
        self._unacked = 0
        self._acked = -1
        self._closed = False

    @property
    def chunks(self):
        """Number of chunks sent so far."""
        return self._seq

    def write(self, fd, text):
        """Add ``text`` written to ``fd`` (1 or 2); may block for credit."""
        if fd == 1:
            self.write_stdout(text)
        else:
            self._write_other(fd, text)

    def write_stdout(self, text):
        """``sys.stdout.write`` under this channel (``capture.redirect`` writers)."""
        if text.__class__ is not str:
            text = _plain_str(text)
        queue = self._queue
        queue.append(text)
        size = len(text)
        if size > self.stage_chars or len(queue) > self._limit:
            self._write_slow()
        return size

    def write_stderr(self, text):
        """``sys.stderr.write`` under this channel (``capture.redirect`` writers)."""
        return self._write_other(2, text)

    def log_record(self, level, logger, text):
        """A ``logging`` record of the eval's code (``HostLogHandler``): its
        warnings and errors are written to the eval's stderr, as a notebook
        shows them (Python's own last-resort handler writes those levels)."""
        if level == "warning" or level == "error":
            self._write_other(2, "%s:%s:%s\n" % (level.upper(), logger, text))

    def _write_other(self, fd, text):
        # write_stdout for another fd: queued as an (fd, text) pair.
        if text.__class__ is not str:
            text = _plain_str(text)
        queue = self._queue
        queue.append((fd, text))
        size = len(text)
        if size > self.stage_chars or len(queue) > self._limit:
            self._write_slow()
        return size

    def _write_slow(self):
        if self._reentered():
            return  # queued: sent once this thread's staging or sending is over
        call = self._call
        shielded = call is not None and _defer_interrupt(call)
        try:
            with self._cond:
                if self._closed:
                    self._queue.clear()
                    self._limit = self.stage_items - 1
                    return
                self._stage()
                if self._staged_chars >= self.chunk_chars:
                    # Whole chunks only: the tail waits for more writes (or the flusher).
                    self._emit_in_turn(False)
                self._limit = self.stage_items - 1
                if (self._staged or self._queue) and not self._scheduled and self._flusher is not None:
                    self._scheduled = True
                    self._flusher.schedule(self, self.flush_delay)
                if not self._scheduled:
                    self._limit = 0
        finally:
            if shielded:
                _unshield(call)  # raises the interrupt of a cancel that came meanwhile

    def flush_due(self):
        """Send a partial chunk if credit allows (called by the flusher)."""
        with self._cond:
            self._scheduled = False
            self._limit = 0  # before taking the queue: see the class docstring
            self._stage()
            self._emit(False)

    def flush(self):
        """Send everything pending, waiting for credit unless closed."""
        if self._reentered():
            return  # a finalizer's flush mid-send: that send goes on
        call = self._call
        shielded = call is not None and _defer_interrupt(call)
        try:
            with self._cond:
                self._stage()
                self._emit_in_turn(True)
                if self._queue:  # written while it sent: a re-entry's text too
                    self._stage()
                    self._emit_in_turn(True)
        finally:
            if shielded:
                _unshield(call)

    def ack(self, seq):
        """Acknowledge every chunk up to ``seq``, releasing blocked writers.
        A ``seq`` past the last chunk sent acknowledges what was sent (no
        credit for chunks not sent yet; and no count up to a huge number on
        the loop thread, which stalled the server)."""
        with self._cond:
            seq = min(seq, self._seq - 1)
            while self._acked < seq:
                self._acked += 1
                self._unacked -= self._sizes.pop(self._acked, 0)
            if (self._staged or self._queue) and not self._scheduled:
                # A partial chunk waited for this credit.
                self._stage()
                self._emit(False)
            self._cond.notify_all()

    def close(self):
        """Stop sending (connection gone): writers never block again."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._staged.clear()
            self._staged_chars = 0
            self._cond.notify_all()

    def _has_credit(self, size):
        return self._unacked == 0 or self._unacked + size <= self.window

    def _stage(self):
        # Moves the queue to the staged segments (lock held), joining runs of
        # one fd: popped and joined in C when every write went to stdout.
        queue = self._queue
        count = len(queue)  # not more: writers may keep appending
        if not count:
            return
        items = list(_islice(iter(queue.popleft, None), count))
        try:
            runs = ((1, "".join(items)),)
        except TypeError:  # some went to stderr
            runs = _runs_by_fd(items)
        staged = self._staged
        for fd, text in runs:
            if not text:
                continue
            self._staged_chars += len(text)
            if staged and staged[-1][0] == fd:
                last = staged[-1]
                last[1].append(text)
                last[2] += len(text)
            else:
                staged.append([fd, [text], len(text)])

    def _emit_in_turn(self, partial):
        # A blocking _emit (lock held), after the one of another thread that
        # waits for credit: every writer blocks with a chunk staged, so
        # writers on several threads stay within the bound too.
        while self._emitting and not self._closed:
            self._cond.wait(self.poll)
        self._emit(True, partial)

    def _emit(self, block, partial=True):
        """Send the staged segments, in chunks; ``block``: wait for credit
        (else keep what has none for later); ``partial=False``: send whole
        chunks only and keep the shorter tail of the last segment staged.
        One emitter at a time: a writer waiting for credit keeps the others
        out (they would send the same text again)."""
        if self._emitting:
            return
        self._emitting = True
        try:
            staged = self._staged
            while staged and not self._closed:
                fd, parts, size = staged[0]
                if not partial and size < self.chunk_chars and len(staged) == 1:
                    return
                # Off the list while it is sent: a wait for credit releases the
                # lock, and text staged meanwhile must not join this segment.
                del staged[0]
                text = parts[0] if len(parts) == 1 else "".join(parts)
                sent = self._send_chunks(fd, text, block, partial)
                if self._closed:
                    return
                self._staged_chars -= sent
                if sent < size:
                    # Kept for later (credit, or more writes to fill the chunk).
                    staged.insert(0, [fd, [text[sent:]], size - sent])
                    return
        finally:
            self._emitting = False
            self._cond.notify_all()  # for _emit_in_turn

    def _send_chunks(self, fd, text, block, partial):
        # Sends ``text`` chunk by chunk (lock held); returns the characters sent.
        chunk_chars = self.chunk_chars
        start = 0
        while start < len(text):
            data = text[start:start + chunk_chars]
            if not partial and len(data) < chunk_chars and not self._staged:
                break  # the tail of the last segment waits for more writes
            while not self._has_credit(len(data)):
                if self._closed:
                    return start
                if self._cancelled():
                    # Nobody will take output of a cancelled eval: drop it
                    # rather than buffer it while the code winds down.
                    self._closed = True
                    self._queue.clear()
                    self._staged.clear()
                    self._staged_chars = 0
                    return start
                if not block:
                    return start
                self._cond.wait(self.poll)
            if self._closed:
                return start
            self._sizes[self._seq] = len(data)
            self._unacked += len(data)
            self._send(fd, data, self._seq)
            self._seq += 1
            start += len(data)
        return start


def _plain_str(text):
    if not isinstance(text, str):
        raise TypeError("write() argument must be str, not %s" % type(text).__name__)
    return str.__str__(text)  # a str subclass as a plain str


def _runs_by_fd(items):
    """``[(fd, text)]`` for queued writes (a str for stdout, else ``(fd, text)``),
    consecutive writes of one fd joined."""
    runs = []
    fd = None
    parts = []
    for item in items:
        if item.__class__ is tuple:
            item_fd, text = item
        else:
            item_fd, text = 1, item
        if item_fd != fd:
            if parts:
                runs.append((fd, "".join(parts)))
            fd = item_fd
            parts = [text]
        else:
            parts.append(text)
    if parts:
        runs.append((fd, "".join(parts)))
    return runs



class EvalService:
    """The eval commands of one server: namespaces per connection, output channels."""

    # Eval sessions one connection may hold open (``--max-eval-sessions``):
    # a client that opens sessions and never closes them would otherwise
    # grow the server without bound (each namespace keeps what its code
    # stored; 300 sessions holding 1 MB each took ~330 MB).
    MAX_SESSIONS = 1024
    # Bytes of an ``output`` event besides its text: the keys, fd, seq and the
    # eval's id (an id of a few hundred digits still fits).
    EVENT_OVERHEAD = 512
    # An id this large or larger (in absolute value) is counted apart: an id
    # may have any number of digits (protocol §1, up to Python's 4300), and
    # one of 600 made two of three chunks' events too large for a 4096-byte
    # frame (dropped unsent while ``chunks`` counted them).
    LONG_ID = 10 ** 100

    def __init__(self, server, max_sessions=None):
        self._server = server
        if max_sessions is None:
            max_sessions = getattr(server, "max_eval_sessions", self.MAX_SESSIONS)
        self.max_sessions = max_sessions
        # Characters per output chunk: each chunk's event must fit one frame
        # (protocol §9), at 6 bytes a character at most (JSON escapes such as
        # \u0001 or a lone surrogate's \udXXX). Under the default 64 MiB limit
        # that is OutputChannel's 64 Ki; under --max-frame-size 4096, 597: a
        # 64 Ki chunk's event was larger than any frame, and dropped unsent
        # while the reply's ``chunks`` counted it.
        max_frame = getattr(server, "max_frame_size", None)
        self._max_frame = max_frame
        self.chunk_chars = OutputChannel.chunk_chars
        if max_frame is not None:
            self.chunk_chars = max(1, min(self.chunk_chars, (max_frame - self.EVENT_OVERHEAD) // 6))
        self._lock = threading.Lock()
        # connection -> {session id -> namespace}
        self._namespaces = {}
        # (connection, request id) -> OutputChannel of a running eval
        self._channels = {}
        self._flusher = Flusher()
        self.code_cache = CodeCache()
        # One-off namespace ids: a random prefix, then a counter (under load,
        # os.urandom per eval showed ~16 µs in a profile on the benchmark VM).
        self._one_off_prefix = secrets.token_hex(4)
        self._one_off_ids = itertools.count(1)
        self._pid = os.getpid()

    def _chunk_chars_for(self, rid):
        """Characters per output chunk of the eval whose request id is
        ``rid``: ``chunk_chars``, fewer for an id too long for
        ``EVENT_OVERHEAD`` (each event repeats it)."""
        chars = self.chunk_chars
        if self._max_frame is not None and isinstance(rid, int) and not -self.LONG_ID < rid < self.LONG_ID:
            room = self._max_frame - self.EVENT_OVERHEAD - len(str(rid))
            chars = max(1, min(chars, room // 6))
        return chars

    def install(self):
        """Register the commands on the server and start the flusher thread.

        The flusher starts here, on the thread that starts the server, not
        at the first eval: on an eval's thread a cancel injects
        ``KeyboardInterrupt`` at any bytecode, also inside
        ``Thread.start()`` after the thread began, and then every later eval
        failed with ``RuntimeError: threads can only be started once``."""
        self._flusher.start()
        self._server.register("eval", self.eval, threaded=True, elastic=True)
        self._server.register("openSession", self.open_session, threaded=False)
        self._server.register("closeSession", self.close_session, threaded=False)
        self._server.register("outputAck", self.output_ack, threaded=False)

    # -- sessions ----------------------------------------------------------

    def _sessions_of(self, connection):
        with self._lock:
            sessions = self._namespaces.get(connection)
            if sessions is None:
                sessions = self._namespaces[connection] = {}
                connection.on_close(lambda *_: self._forget(connection))
            return sessions

    def _forget(self, connection):
        with self._lock:
            self._namespaces.pop(connection, None)
            channels = [
                ch for (conn, _), ch in self._channels.items() if conn is connection
            ]
        for channel in channels:
            channel.close()

    def open_session(self, call):
        """``openSession`` → ``{session}``: a namespace kept on this connection."""
        sid = "s-" + secrets.token_hex(8)
        sessions = self._sessions_of(call.connection)
        with self._lock:
            if len(sessions) >= self.max_sessions:
                raise OverloadedError(
                    "Cannot open eval session: this connection already holds %d "
                    "(--max-eval-sessions); close one with closeSession" % len(sessions)
                )
            sessions[sid] = new_namespace()
        return {"session": sid, "serverId": self._server_id(call), "pid": os.getpid()}

    @staticmethod
    def _server_id(call):
        return getattr(call.server, "id", None)

    def session_count(self):
        """Eval sessions open on all connections (``serverStatus``)."""
        with self._lock:
            return sum(len(sessions) for sessions in self._namespaces.values())

    def close_session(self, call):
        """``closeSession {session}`` → ``{session, closed}``."""
        sid = call.msg.get("session")
        if not isinstance(sid, str):
            raise InvalidRequestError("Cannot close session: 'session' must be a string")
        closed = self._sessions_of(call.connection).pop(sid, None) is not None
        return {"session": sid, "closed": closed}

    # -- output flow control ---------------------------------------------

    def output_ack(self, call):
        """``outputAck {target, seq}``: credit for an eval's output."""
        target = call.msg.get("target")
        seq = call.msg.get("seq")
        if type(target) is not int or type(seq) is not int:  # bool is an int subclass
            raise InvalidRequestError("Cannot ack output: 'target' and 'seq' must be integers")
        with self._lock:
            channel = self._channels.get((call.connection, target))
        if channel is not None:
            channel.ack(seq)
        return {"acked": channel is not None}

    # -- eval --------------------------------------------------------------

    def eval(self, call):
        """``eval {code, session?, globals?, locals?, args?}`` → ``{value, chunks}``."""
        msg = call.msg
        code = msg.get("code")
        if not isinstance(code, str):
            raise InvalidRequestError("Cannot eval: 'code' must be a string")
        for field in ("globals", "locals"):
            if msg.get(field) is not None and not isinstance(msg.get(field), dict):
                raise InvalidRequestError("Cannot eval: '%s' must be an object" % field)
        args = msg.get("args", None)
        if args is not None and not isinstance(args, (list, dict)):
            raise InvalidRequestError("Cannot eval: 'args' must be an array or an object")
        sid = msg.get("session")
        if sid is not None and not isinstance(sid, str):
            # As closeSession: an array or object was a PythonError ("unhashable type").
            raise InvalidRequestError("Cannot eval: 'session' must be a string")
        if sid is None:
            sid = "t-%s%x" % (self._one_off_prefix, next(self._one_off_ids))
            namespace = new_namespace()
        else:
            namespace = self._sessions_of(call.connection).get(sid)
            if namespace is None:
                raise SessionLostError(
                    "Cannot eval: no session %r on this connection" % (sid,)
                )
        def send(fd, data, seq):
            call.send_event(
                {"event": "output", "fd": fd, "data": data, "seq": seq}
            )

        channel = OutputChannel(send, self._flusher, call.is_cancelled, call)
        channel.chunk_chars = self._chunk_chars_for(call.id)
        key = (call.connection, call.id)
        outer_writers = capture.writers()
        # From here on a cancel's injected KeyboardInterrupt may fire at any
        # bytecode: the channel is registered inside the try, so the finally
        # always unregisters it.
        try:
            with self._lock:
                self._channels[key] = channel
            call.send_event(
                {
                    "event": "evalStart",
                    "session": sid,
                    "serverId": self._server_id(call),
                    "pid": self._pid,
                }
            )
            with capture.redirect(channel.write, (channel.write_stdout, channel.write_stderr)):
                value = self._run(code, namespace, msg, args, self.code_cache)
        except KeyboardInterrupt as exc:
            # Only the interrupt that CallRunner.cancel injects is a cancel; a
            # KeyboardInterrupt the code raises itself is its error, as in a model.
            if call.interrupted:
                raise CancelledError("Cannot eval: interrupted")
            raise _code_error(exc)
        except BaseException as exc:  # SystemExit too: user code never stops the server
            raise _code_error(exc)
        finally:
            # No cancel's interrupt from here on: one that fired in this
            # clean-up would leave the channel registered and open. A cancel
            # that comes meanwhile is still answered: the call's runner sees
            # it (``interrupted``) once this handler is over.
            try:
                CallRunner.defer_interrupt(call)
            except KeyboardInterrupt:
                pass  # the cancel's, pending until now: reported as above
            # An interrupt in the redirect's exit left this thread's output
            # routed to the channel (for this thread's next calls too).
            capture.restore_writers(outer_writers)
            channel.flush()
            with self._lock:
                self._channels.pop(key, None)
            # Threads the code started may print on after it ended: nobody
            # acks that output any more, so it is dropped instead of blocking
            # them for ever once the window is full.
            channel.close()
        result = {"value": value, "chunks": channel.chunks}
        if isinstance(value, (str, int, bool, type(None))) or (
            isinstance(value, float) and value - value == 0  # finite: NaN and infinities are not JSON
        ):
            return result
        # Encoded here, once: a value that is not JSON gets an error naming
        # it, and the reply reuses the bytes (a 20k-row result: 46 ms saved).
        try:
            return big_json.Encoded(big_json.encode(result))
        except (TypeError, ValueError, RecursionError) as exc:
            bytes_ok = getattr(call.connection, "sends_bytes", False)
            if bytes_ok and exc.__class__ is TypeError:
                # Bytes go as bytes (protocol §3, "Bytes"), as in a model's
                # result: the reply's encoding finds them (and names what else
                # json refuses).
                return result
            raise SerializationError(
                "Cannot reply: the eval's value is not JSON: %s: %s" % (
                    not_json_reason(exc, value, "value", bytes_ok), short_repr(value))
            )

    @staticmethod
    def _run(code, namespace, msg, args, cache):
        globals_ = msg.get("globals")
        if globals_:
            namespace.update(globals_)
        locals_ = msg.get("locals") or {}
        # Locals are bound for this eval only: visible to functions defined in
        # it (they are globals to Python), then removed unless reassigned.
        saved = {name: namespace.get(name, _NO_ARGS) for name in locals_}
        namespace.update(locals_)
        try:
            return evaluate(code, namespace, _NO_ARGS if args is None else args, cache=cache)
        finally:
            if locals_:
                # A name the code assigns stays, even to an equal object
                # (`w = 3` with locals {w: 3}: small ints are one object).
                try:
                    stored = _assigned_names(code) if len(code) <= 8192 else _assigned_names.__wrapped__(code)
                except Exception:  # it did not compile: nothing was assigned
                    stored = frozenset()
                for name, value in locals_.items():
                    if name not in stored and namespace.get(name, _NO_ARGS) is value:
                        if saved[name] is _NO_ARGS:
                            namespace.pop(name, None)
                        else:
                            namespace[name] = saved[name]


def _code_error(exc):
    """The ``PythonError`` an eval's code raising ``exc`` fails with, marked
    as the code's own: the call's runner logs it in the server's log with
    its traceback, once (``log_user_error``), as it does a model's."""
    error = PythonError.from_exception(exc, skip_prefix=__file__)
    error.of_user_code = True
    return error


_TOP_STORES = frozenset(("STORE_NAME", "DELETE_NAME", "STORE_GLOBAL", "DELETE_GLOBAL"))
_GLOBAL_STORES = frozenset(("STORE_GLOBAL", "DELETE_GLOBAL"))


@functools.lru_cache(maxsize=128)
def _stored_names(code, top=True):
    """Global names ``code`` assigns or deletes: at its top level (module
    code: ``STORE_NAME``), and through ``global`` in the functions it defines
    at any depth (a class body's own names are the class's, not globals)."""
    ops = _TOP_STORES if top else _GLOBAL_STORES
    names = set()
    for ins in dis.get_instructions(code):
        if ins.opname in ops:
            names.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _stored_names(const, False)
    return frozenset(names)


@functools.lru_cache(maxsize=128)
def _assigned_names(code):
    """The global names the source ``code`` assigns (see :func:`_stored_names`)."""
    body, last, _ = compile_code(code)
    return _stored_names(body) | (_stored_names(last) if last is not None else frozenset())


def install(server):
    """Install the eval commands into ``server`` (called at server start-up)."""
    service = EvalService(server)
    service.install()
    server.eval_service = service
    return service
