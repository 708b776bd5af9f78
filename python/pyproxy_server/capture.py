"""Thread-aware stdout/stderr routing.

After start-up the server replaces ``sys.stdout`` and ``sys.stderr`` with
``OutputRouter`` proxies. A write goes to the *sink* of the current thread
(or asyncio task): a callable ``sink(fd, text)`` with ``fd`` 1 for stdout
and 2 for stderr, set with ``redirect(sink)``. Writes with no sink go to the
log file, one log record per line.

The sink is a ``contextvars.ContextVar``, so it is per thread (every thread
starts with an empty context) and per asyncio task. A sink may come with
writers of its own, ``redirect(sink, (stdout_write, stderr_write))``: then
``sys.stdout.write`` *is* ``stdout_write`` in that context (``write`` is a
property reading another ContextVar), so ``print`` calls it with no Python
frame of ours in between; an eval's output channel does this. Threads started by user
code do not inherit it; run them with ``contextvars.copy_context().run`` to
keep routing their output to the call.

Example (an extension module capturing ``print`` of the code it runs)::

    from pyproxy_server import capture

    def handler(call):
        def sink(fd, text):
            call.send_event({"event": "output", "fd": fd, "data": text})
        with capture.redirect(sink):
            print("hello")  # -> sink(1, "hello"), sink(1, "\\n")
"""

import codecs
import contextlib
import contextvars
import io
import logging
import sys
import threading
import time

from . import traceback_lines

__all__ = ["OutputRouter", "redirect", "current_sink", "install", "uninstall", "writers", "restore_writers", "in_forked_child"]

_sink = contextvars.ContextVar("pyproxy_output_sink", default=None)
_sink_get = _sink.get
# The current sink's own writers for stdout and stderr, ``writer(text)``, read
# by ``OutputRouter.write`` (see there). Unset: the router routes the write.
_stdout_writer = contextvars.ContextVar("pyproxy_stdout_writer")
_stderr_writer = contextvars.ContextVar("pyproxy_stderr_writer")


def current_sink():
    """Return the sink of the current thread/task, or ``None``."""
    return _sink.get()


@contextlib.contextmanager
def redirect(sink, writers=None):
    """Route this thread's ``sys.stdout``/``sys.stderr`` writes to ``sink(fd, text)``.

    Nestable: the previous sink is restored on exit. ``sink`` may be ``None``
    to send output to the log file. A sink must not raise; if it does, the
    text goes to the log instead and the error is logged.

    ``writers``: optional ``(stdout_write, stderr_write)``, each
    ``write(text) -> int`` doing what ``sink(1, text)`` and ``sink(2, text)``
    do, type check of ``text`` included. ``print`` then calls them with no
    Python frame in between (a hot sink's writes, such as an eval's output
    channel, cost about half as much).
    """
    token = _sink.set(sink)
    if writers is None and _stdout_writer.get(None) is None:
        # The usual case: the routers route to the sink (``OutputRouter.__call__``).
        try:
            yield sink
        finally:
            _sink.reset(token)
        return
    # Writers of this sink, or back to routing inside a sink that had some.
    out, err = writers or (_route_stdout, _route_stderr)
    out_token = _stdout_writer.set(out)
    err_token = _stderr_writer.set(err)
    try:
        yield sink
    finally:
        _stderr_writer.reset(err_token)
        _stdout_writer.reset(out_token)
        _sink.reset(token)


def writers():
    """This context's ``redirect`` writers, ``(stdout_write, stderr_write)``,
    ``None`` for each that is unset; for ``restore_writers``."""
    return _stdout_writer.get(None), _stderr_writer.get(None)


def restore_writers(saved):
    """Put back the writers ``writers()`` gave, when a ``redirect``'s exit
    was cut short (a cancel's interrupt fired in it, before its resets): this
    thread's later output, other calls' included, would go to that
    redirect's writers still. For a caller whose clean-up cannot be
    interrupted (an eval's, shielded); a no-op when nothing leaked."""
    if writers() == saved:
        return
    out, err = saved
    # Unset again: routing by the router, as ``redirect`` inside a sink with writers does.
    _stdout_writer.set(_route_stdout if out is None else out)
    _stderr_writer.set(_route_stderr if err is None else err)


def _route_stdout(text):
    # Routing restored inside a sink with writers: the installed router's.
    router = sys.stdout
    return router(text) if router.__class__ is _StdoutRouter else _route(1, text)


def _route_stderr(text):
    router = sys.stderr
    return router(text) if router.__class__ is _StderrRouter else _route(2, text)


def _route(fd, text):
    # The same, written through a router that is not installed (tests).
    if not isinstance(text, str):
        raise TypeError("write() argument must be str, not %s" % type(text).__name__)
    sink = _sink_get()
    if sink is not None and text:
        sink(fd, text)
    return len(text)


class OutputRouter(io.TextIOBase):
    """A text stream that forwards each write to the current sink.

    ``fd`` is 1 (stdout) or 2 (stderr). Without a sink, complete lines are
    logged on ``logger`` (stdout at INFO, stderr at WARNING), a traceback's
    (``traceback.print_exc()`` on a model's own thread) as one record
    (``_PendingTraceback``; on stderr at ERROR). ``fileno()``
    raises ``io.UnsupportedOperation`` (as ``io.StringIO`` does), so libraries
    that need a real file descriptor fall back gracefully instead of writing
    where nobody reads (``subprocess`` with ``stdout=sys.stdout`` raises it:
    capture the child's output and print it instead). ``buffer`` is a binary
    writer whose bytes are decoded as UTF-8 (invalid bytes replaced) into the
    same routed output, for code that writes ``sys.stdout.buffer``.

    ``write`` is a property: reading ``router.write`` gives the current
    sink's own writer when it has one (``redirect(sink, writers)``), so that
    ``print`` calls it directly; else the router itself, whose call routes
    the write to the sink or the log. ``OutputRouter(fd)`` makes an instance
    of the subclass for that fd (the property reads a per-fd context
    variable).
    """

    # Longest unterminated text kept for the log before it is logged anyway.
    MAX_PENDING_LINE = 8192
    # A traceback's record at most (its rest goes on in the next one) ...
    MAX_TRACEBACK_CHARS = 65536
    # ... held at most this long from its first line (one whose end never
    # comes is logged as it is) ...
    MAX_TRACEBACK_SECONDS = 5.0
    # ... and this long without a line once its exception's line came (a
    # chain's next traceback, the notes: print_exc writes them at once).
    TRACEBACK_END_SECONDS = 0.05
    # ... one per thread, at most this many at once: past it the oldest is
    # logged as it is so far (its rest line by line), so that threads
    # printing tracebacks at once hold at most this many times
    # ``MAX_TRACEBACK_CHARS`` (1000 threads held 1000; chaos54).
    MAX_HELD_TRACEBACKS = 16

    def __new__(cls, fd, logger=None):
        if cls is OutputRouter:
            cls = _StdoutRouter if fd == 1 else _StderrRouter
        return super().__new__(cls)

    def __init__(self, fd, logger=None):
        super().__init__()
        self.fd = fd
        self.name = "<stdout>" if fd == 1 else "<stderr>"
        self._logger = logger or logging.getLogger("pyproxy_server.output")
        self._level = logging.INFO if fd == 1 else logging.WARNING
        self._lock = threading.Lock()
        self._pending = ""
        self._local = threading.local()
        # Thread ident -> its traceback being printed (under _lock).
        self._tracebacks = {}
        self._watching = False

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "strict"

    def writable(self):
        return True

    def readable(self):
        return False

    def isatty(self):
        return False

    def fileno(self):
        raise io.UnsupportedOperation("fileno: output is routed by pyproxy")

    @property
    def buffer(self):
        writer = self.__dict__.get("_buffer")
        if writer is None:
            writer = self.__dict__["_buffer"] = _BinaryWriter(self)
        return writer

    def write(self, text):
        # Subclasses made by OutputRouter(fd) replace this with the property.
        return self(text)

    def __call__(self, text):
        # ``write`` when the current sink has no writers of its own.
        sink = _sink_get()
        if sink is not None and text.__class__ is str:
            if text:
                try:
                    sink(self.fd, text)
                except Exception:
                    self._logger.exception("output sink failed; text goes to the log")
                    self._to_log(text)
            return len(text)
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        if not text:
            return 0
        if sink is not None:
            try:
                sink(self.fd, text)
                return len(text)
            except Exception:
                self._logger.exception("output sink failed; text goes to the log")
        self._to_log(text)
        return len(text)

    def flush(self):
        pass

    # One router serves every call of the process: code that closes
    # ``sys.stdout`` (some libraries do at exit) must not close it for all
    # later calls, so closing is ignored.
    def close(self):
        self.flush()

    @property
    def closed(self):
        return False

    def _to_log(self, text):
        if getattr(self._local, "busy", False):
            # A log handler that writes to sys.stdout/stderr would loop back
            # here: give the text to the real stream instead.
            real = sys.__stderr__
            if real is not None:
                real.write(text)
            return
        self._local.busy = True
        try:
            self._log_lines(text)
        finally:
            self._local.busy = False

    def _log_lines(self, text):
        with self._lock:
            text = self._pending + text
            lines = text.split("\n")
            self._pending = lines.pop()
            if len(self._pending) > self.MAX_PENDING_LINE:
                lines.append(self._pending)
                self._pending = ""
        for line in lines:
            self._log_line(line)

    def _log_line(self, line):
        """One line: logged, or held as a traceback's (this thread's)."""
        if not self._tracebacks and traceback_lines.start(line) is None:
            # The usual line: no lock (none is held; an emptiness read races
            # only with the watch's removals, which send here the long way).
            self._logger.log(self._level, "%s: %s", self.name, line)
            return
        ident = threading.get_ident()
        done = evicted = None
        with self._lock:
            tb = self._tracebacks.get(ident)
            if tb is not None:
                state = traceback_lines.continues(tb.state, line)
                if state is not None and not tb.due(time.monotonic(), self):
                    if tb.size + 1 + len(line) > self.MAX_TRACEBACK_CHARS:
                        done = tb.take()
                    tb.add(line, state)
                    line = None
                else:
                    del self._tracebacks[ident]
                    done = tb.take()
            if line is not None:
                state = traceback_lines.start(line)
                if state is not None:
                    tracebacks = self._tracebacks
                    if len(tracebacks) >= self.MAX_HELD_TRACEBACKS:
                        oldest = min(tracebacks, key=lambda key: tracebacks[key].started)
                        evicted = tracebacks.pop(oldest).take()
                    tracebacks[ident] = _PendingTraceback(line, state, threading.current_thread().name)
                    line = None
                    watch = not self._watching
                    self._watching = True
                else:
                    watch = False
            else:
                watch = False
        if evicted:
            self._log_traceback(*evicted)
        if done:
            self._log_traceback(*done)
        if watch:
            self._start_watch()
        if line is not None:
            self._logger.log(self._level, "%s: %s", self.name, line)

    def _start_watch(self):
        try:
            threading.Thread(target=self._watch, name="pyproxy-tracebacks", daemon=True).start()
        except RuntimeError:  # no thread now (the interpreter exits): what is held goes out
            with self._lock:
                self._watching = False
            self._flush_tracebacks(everything=True)

    def _watch(self):
        # Logs each held traceback once it is due; ends when none is held.
        while True:
            time.sleep(self.TRACEBACK_END_SECONDS)
            if not self._flush_tracebacks():
                return

    def _flush_tracebacks(self, everything=False):
        """Logs the held tracebacks that are due (all with ``everything``);
        returns whether some are still held (False: the watch has ended)."""
        now = time.monotonic()
        with self._lock:
            due = [(ident, tb) for ident, tb in self._tracebacks.items() if everything or tb.due(now, self)]
            for ident, _ in due:
                del self._tracebacks[ident]
            held = bool(self._tracebacks)
            if not held:
                self._watching = False
        for _, tb in due:
            self._log_traceback(*tb.take())
        return held

    def _log_traceback(self, lines, thread_name, created):
        """A traceback's lines as one record, of the thread that printed it
        and of the time it began to (``time.time()``)."""
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            return
        level = logging.ERROR if self.fd == 2 else self._level
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        record = logger.makeRecord(logger.name, level, "", 0, "%s: %s", (self.name, "\n".join(lines)), None)
        record.threadName = thread_name
        record.created = created
        record.msecs = (created - int(created)) * 1000
        busy = getattr(self._local, "busy", False)
        self._local.busy = True  # a handler writing to sys.stderr: see _to_log
        try:
            logger.handle(record)
        finally:
            self._local.busy = busy


class _PendingTraceback:
    """The lines of a traceback one thread is printing, held by its
    ``OutputRouter`` until its end (see ``traceback_lines``)."""

    __slots__ = ("lines", "state", "size", "started", "last", "thread_name", "created")

    def __init__(self, line, state, thread_name):
        self.lines = [line]
        self.state = state
        self.size = len(line)
        self.started = self.last = time.monotonic()
        self.thread_name = thread_name
        # The record's time: when it was printed, not when it is logged.
        self.created = time.time()

    def add(self, line, state):
        self.lines.append(line)
        self.size += 1 + len(line)
        self.state = state
        self.last = time.monotonic()

    def take(self):
        """``(lines, thread name, time)`` held so far; it holds none after."""
        lines, self.lines, self.size = self.lines, [], 0
        return lines, self.thread_name, self.created

    def due(self, now, router):
        """Whether it is logged now, without more lines: its time is up, or
        it ended (or it has no end line) and no line came for a moment."""
        if now - self.started >= router.MAX_TRACEBACK_SECONDS:
            return True
        if traceback_lines.waits_for_end(self.state):
            return False
        return now - self.last >= router.TRACEBACK_END_SECONDS


class _BinaryWriter(io.BufferedIOBase):
    """``OutputRouter.buffer``: bytes in, decoded UTF-8 out through the router.

    The decoder is per thread: a character split between two writes of one
    thread is joined, and writes of other threads (other calls) never mix
    into it.
    """

    def __init__(self, router):
        super().__init__()
        self._router = router
        self._local = threading.local()

    def writable(self):
        return True

    def fileno(self):
        raise io.UnsupportedOperation("fileno: output is routed by pyproxy")

    def isatty(self):
        return False

    def write(self, data):
        decoder = getattr(self._local, "decoder", None)
        if decoder is None:
            decoder = self._local.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        view = memoryview(data)
        text = decoder.decode(view)
        if text:
            self._router.write(text)
        return view.nbytes

    def flush(self):
        pass

    def close(self):  # shared by every call, as its router: see OutputRouter.close
        self.flush()

    @property
    def closed(self):
        return False


def _assign_write(router, value):
    # ``sys.stdout.write = f`` works as on any stream: the router becomes a
    # plain OutputRouter (no property) whose instance attribute ``write`` is f.
    router.__class__ = OutputRouter
    router.__dict__["write"] = value


class _StdoutRouter(OutputRouter):
    write = property(_stdout_writer.get, _assign_write)


class _StderrRouter(OutputRouter):
    write = property(_stderr_writer.get, _assign_write)


def install(logger=None):
    """Replace ``sys.stdout``/``sys.stderr`` with routers; return the old pair."""
    old = (sys.stdout, sys.stderr)
    sys.stdout = OutputRouter(1, logger)
    sys.stderr = OutputRouter(2, logger)
    return old


def uninstall(old):
    """Restore the streams returned by ``install``."""
    sys.stdout, sys.stderr = old


def flush_held():
    """Logs every traceback the routers of ``sys.stdout``/``sys.stderr``
    still hold (printed by a thread, not yet due): the server calls it as it
    exits, before its last record. Its watch thread logs one once no line
    came for ``TRACEBACK_END_SECONDS``; a server that exits sooner (its
    stop is over as its last connection closes) lost it. Streams that are
    not our routers are left alone.

    Example::

        flush_held()  # as the process exits
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, OutputRouter):
            stream._flush_tracebacks(everything=True)


def in_forked_child():
    """An ``os.register_at_fork(after_in_child=...)`` hook: a process that
    model code forks (``multiprocessing``'s ``fork`` start method) writes
    its ``sys.stdout``/``sys.stderr`` to its own file descriptors 1 and 2
    (the server's stderr: the host logs it as the worker's lines), and its
    ``logging`` records reach no connection.

    The forking thread's sink is the call's, whose connection lives in the
    parent: the child's ``print`` queued an event there that nothing would
    ever send, under the connection's lock (``Connection.enqueue``), which
    another thread of the server (the loop's flush, another call's output
    or reply) may have held at the fork, for good in the child: its print
    never returned. Unbuffered, as ``python -u``: a child that ends with
    ``os._exit`` loses nothing. Streams that are not our routers (a model's
    ``contextlib.redirect_stdout``) are left as they are.

    Example (the server's ``ForkedChild`` hook calls it)::

        os.register_at_fork(after_in_child=capture.in_forked_child)
    """
    _sink.set(None)
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if isinstance(getattr(sys, name), OutputRouter):
            try:
                stream = io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True)
            except (OSError, ValueError):  # no such descriptor: the routers stay, without a sink
                continue
            setattr(sys, name, stream)
