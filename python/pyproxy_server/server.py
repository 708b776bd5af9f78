"""``Server``: listening sockets, the command registry, connections, stats, shutdown.

Extension API (used by ``pyproxy_server.eval`` and any module listed in
``Server.EXTENSIONS``): at start-up the server imports each module and calls
its ``install(server)``, which registers commands::

    def install(server):
        def hello(call):                      # call: pyproxy_server.call.Call
            call.send_event({"event": "greeting"})   # gets "id": call.id
            return {"hello": call.msg.get("who")}     # JSON-able result
        server.register("hello", hello, threaded=True)

A handler returns the reply's ``result`` or raises a ``PyProxyError``
subclass (``pyproxy_server.errors``) to reply with that error; any other
exception is sent as a ``PythonError`` with its traceback. ``threaded=False``
handlers run on the event loop thread and must be quick and non-blocking;
``threaded=True`` handlers run in the executor (``server.executor``, a
``CallExecutor`` of ``--threads`` threads) and may block, print (routed by
``capture``) and call the host (``pyproxy.host``); with ``elastic=True`` too
they run on a thread of their own at once (``server.elastic_executor``, at
most ``--max-elastic-threads``), never queued behind model calls: evals and
model management commands do. Useful attributes: ``server.id``, ``server.pid``,
``server.root`` (``--path``), ``server.models`` (``ModelRegistry``),
``server.loop``, ``server.connections`` (id → ``Connection``).

Inline fast path (``executeModel``): a thread hand-off costs more than a
small model's whole call, so a model that proved fast and never called the
host runs on the event loop thread (``models.ModelEntry``: learned over its
first threaded calls, or forced with the class attribute ``inline = True``;
``threaded = True`` opts out). The trade-off: while an inline call runs,
the loop reads nothing, so ``ping``/``serverStatus`` wait for it, and it
cannot be cancelled (``cancel`` finds it already answered). An inline call
slower than ``ModelEntry.DEMOTE_AFTER`` sends its model back to threads (the
second such call: for good), and one read spends at most ``Connection.INLINE_BUDGET`` seconds inline
before the rest of its calls go to threads; a model that hangs inline is
the heartbeat's job (the host kills a worker that stops answering ``ping``).

Stuck threads: a cancelled call blocked in C keeps its thread; the executor
replaces such a thread (``call_executor``), up to ``--max-stuck-threads``.
Beyond that the server is *wedged*: ``wedge(reason)`` sends every
connection a ``wedged`` event (protocol §6) and the host replaces the
process; until then the server keeps serving what it can.
A host call (``pyproxy.host``) cannot be answered on the loop thread:
models whose module refers to ``pyproxy`` never run inline, and an inline
call that reaches the host anyway gets a ``HostError`` there (never re-run:
a call runs at most once) and makes the model threaded for good. An inline
call that turns slow gets ``busy`` events from ``InlineWatch``.
"""

import asyncio
import importlib
import itertools
import logging
import os
import socket
import stat
import sys
import threading
import time

from . import commands
from .call import DONE
from .call_executor import CallExecutor
from .connection import Connection
from .elastic_executor import ElasticExecutor
from .framer import Framer
from .model_metrics import registry as model_metrics
from .models import ModelRegistry, run_closes
from .own_group import group_grace_ms
from .spill_refusals import SpillRefusals
from .waiting_room import WaitingRoom

__all__ = ["Server"]

# The commands whose calls run a model's code (the model named by ``name``).
_MODEL_CALLS = frozenset(("executeModel", "executeBatch", "executeStream"))

log = logging.getLogger("pyproxy_server.server")


class Server:
    """A pyproxy Python server; see the module docstring."""

    # Modules whose ``install(server)`` is called at start-up when importable.
    EXTENSIONS = ("pyproxy_server.eval",)
    # Seconds given to queued writes (e.g. the stopServer reply) before exit.
    EXIT_GRACE = 0.5
    # Seconds between a stopping server's looks at what its exit waits for
    # (its connections closing, its models' close()); the last connection's
    # end looks at once.
    STOP_POLL = 0.01
    # Call threads that may read spilled requests at the same time.
    SPILL_READERS = 2
    # Connections not authenticated yet (each for Connection.AUTH_TIMEOUT at
    # most) kept at once, by default (--max-unauthenticated): this, or a
    # quarter of the soft fd limit when that is less. One more closes one of
    # them at random (``WaitingRoom``: the oldest, a flood that brought that
    # many in within the host's round trip locked it out). A local user
    # flooding a TCP port holds no more of this server's fds and memory than
    # that, and the host, which authenticates within one round trip of its
    # connect and tries again when cut (``Session.connect``), gets in.
    # Refusing the newest instead let a flood that keeps the slots full lock
    # the host out (its reconnects); a cap of 128 was outrun (the host's own
    # connections closed before their auth, 10 of 23 in a flood).
    MAX_UNAUTHENTICATED = 1024
    # The kernel's queue of connections not accepted yet (asyncio's default;
    # the accepts per turn of the loop are fewer: ``accept_batch``). Not
    # more: under a flood of connects closed at once, 4096 queued the host's
    # connection behind thousands of closed ones (its connects' median
    # 1.8 s at the default cap, 0.6 s with 100; flood26).
    LISTEN_BACKLOG = 100
    # Seconds between two warnings that such connections were closed.
    UNAUTHENTICATED_LOG_EVERY = 10.0

    def __init__(
        self,
        root,
        server_id,
        secret=None,
        max_frame_size=None,
        threads=16,
        max_calls=65536,
        spin=0.0,
        max_stuck_threads=16,
        max_elastic_threads=256,
        max_eval_sessions=1024,
        max_unauthenticated=None,
    ):
        self.root = os.path.realpath(root)
        self.id = server_id
        self.secret = secret
        self.max_frame_size = Framer.MAX_FRAME_SIZE if max_frame_size is None else int(max_frame_size)
        # Spill files the file system refused (a full /dev/shm): counted and logged, bounded.
        self.spill_refusals = SpillRefusals()
        # One receive buffer for every connection of this loop: each read is consumed
        # (what is kept, copied) before the next one, and recv_into allocates nothing,
        # where recv() of asyncio's default 256 KiB mmaps, shrinks and unmaps a block per read.
        self.read_buffer = memoryview(bytearray(256 * 1024))
        self.threads = threads
        # Threaded calls one connection may have queued or running; beyond it: OverloadedError.
        self.max_calls = max_calls
        self.pid = os.getpid()
        # Seconds a connection polls its socket after a read before waiting on the loop (Connection._spin_read).
        self.spin = float(spin)
        self.spin_reads = 0
        # Batch frames received from and sent to clients (protocol §3).
        self.batches_received = 0
        self.batches_sent = 0
        self.models = ModelRegistry(self.root)
        self.commands = {}
        self.connections = {}
        # Connections not authenticated yet, oldest first (dict as an ordered set), and how many are kept.
        self.max_unauthenticated = default_max_unauthenticated() if max_unauthenticated is None else max_unauthenticated
        self.unauthenticated = WaitingRoom(self.max_unauthenticated)
        # Of them, closed to make room (MAX_UNAUTHENTICATED); the count at the last warning, and its time.
        self.unauthenticated_dropped = 0
        self._dropped_warned = (0, -1e9)
        # Connections closed before they authenticated (a bad mac, no auth in
        # time, a bad frame: ``unauthenticated_refused``); the count at the
        # last warning, and its time.
        self.unauthenticated_refusals = 0
        self._refusals_warned = (0, -1e9)
        self.requests_served = 0
        self.started = time.monotonic()
        self.executor = CallExecutor(threads, max_stuck=max_stuck_threads)
        self.elastic_executor = ElasticExecutor(max_elastic_threads)
        # Eval sessions one connection may hold open (the eval extension reads it).
        self.max_eval_sessions = max_eval_sessions
        # The eval extension, once installed (serverStatus counts its sessions).
        self.eval_service = None
        # Elastic threads (evals, model commands) still running a cancelled
        # command past the stuck grace: idents. Beyond --max-stuck-threads of
        # them the server is wedged (they were never counted: 256 model
        # commands with a hanging __init__ made every later eval and model
        # command an OverloadedError, for good).
        self.elastic_stuck = set()
        self._elastic_stuck_lock = threading.Lock()
        # Call threads reading spilled requests at once. Parsing a large file
        # holds the GIL, and the loop thread, competing with every thread
        # that wants it, waited up to 0.75 s for it with 16 such threads
        # (with 2: ~70 ms), missing the host's pings.
        self.spill_readers = threading.BoundedSemaphore(self.SPILL_READERS)
        # Threaded commands that run on the elastic threads (register(elastic=True)).
        self.elastic_commands = set()
        # executeStream calls in progress, by (connection, request id): itemAck finds them here.
        self.item_streams = {}
        # Why the server can no longer run calls as it should (wedge), else None.
        self.wedged = None
        self.loop = None
        self.loop_ident = None
        self.port = None
        self.unix = None
        self.stopping = False
        self.exit_code = None
        self._listeners = []
        self._connection_ids = itertools.count(1)
        # The thread closing the models of a stopping server (``_begin_stop``).
        self._closing = None
        # A stopping server's deadlines and its next look (``_wait_closed``).
        self._stop_deadlines = None
        self._stop_poll = None
        self.models.drain = self.drain_model_calls
        commands.install(self)

    # -- extension API -------------------------------------------------------

    def register(self, cmd, handler, *, threaded, inline=None, elastic=False):
        """Serve ``cmd`` with ``handler(call)``; replaces an earlier handler of ``cmd``.

        ``threaded=True`` runs it in the executor (blocking allowed, ``cancel``
        interrupts it); ``threaded=False`` runs it inline on the event loop.
        ``elastic=True`` (threaded commands only) runs each call at once on a
        thread of its own (``elastic_executor``) instead of the executor: for
        commands that must never wait behind model calls, such as ``eval``.

        ``inline`` (threaded commands only) is the fast path's probe: called on
        the loop thread as ``inline(call)``, it returns ``None`` (run threaded)
        or a function ``run(call)`` that the connection calls right there, on
        the loop thread, with the call's output capture and ``current_call``
        set up. ``run`` returns ``(True, result)``, or ``(False, None)`` to
        run the call threaded after all; it may raise to reply with an error,
        or raise ``models.RunThreaded`` to run the call on a thread after all
        (only before it had any effect: a call never runs twice). Used by
        ``executeModel`` for models that proved fast (``models.ModelEntry``).
        """
        if not isinstance(cmd, str) or not cmd:
            raise TypeError("cmd must be a non-empty string")
        if not callable(handler):
            raise TypeError("handler must be callable")
        if cmd == "auth":
            raise ValueError("auth is handled by the connection and cannot be replaced")
        if inline is not None and not callable(inline):
            raise TypeError("inline must be callable or None")
        self.commands[cmd] = (handler, bool(threaded), inline if threaded else None)
        if threaded and elastic:
            self.elastic_commands.add(cmd)
        else:
            self.elastic_commands.discard(cmd)

    def unregister(self, cmd):
        """Stop serving ``cmd`` (it answers ``UnknownCommandError`` afterwards)."""
        self.commands.pop(cmd, None)
        self.elastic_commands.discard(cmd)

    def mark_elastic_stuck(self, ident, what=None):
        """Elastic thread ``ident`` still runs a cancelled command (``what``:
        the call as the log names it, e.g. ``addModel of model 'm'``, whose
        import or ``__init__`` hangs): returns the reason the server is
        wedged once more than ``--max-stuck-threads`` are, else None."""
        with self._elastic_stuck_lock:
            if ident in self.elastic_stuck:
                return None
            self.elastic_stuck.add(ident)
            stuck = len(self.elastic_stuck)
        log.warning(
            "elastic thread %d is stuck in a cancelled command%s (%d stuck)",
            ident,
            "" if what is None else " (%s)" % what,
            stuck,
        )
        if stuck > self.executor.max_stuck:
            return (
                "%d evals and model commands are stuck in cancelled calls (blocked outside Python bytecode); "
                "at most %d may be (--max-stuck-threads)" % (stuck, self.executor.max_stuck)
            )
        return None

    def unstick_elastic(self, ident):
        """Elastic thread ``ident`` returned from its command."""
        with self._elastic_stuck_lock:
            self.elastic_stuck.discard(ident)

    def wedge(self, reason):
        """Tell every client that this server cannot run calls as it should (loop thread).

        Sends ``{"event": "wedged", "reason": reason}`` to every authenticated
        connection, once; the host replaces the process. The server keeps
        serving meanwhile.
        """
        if self.wedged is not None:
            return
        self.wedged = reason
        log.error("wedged: %s", reason)
        event = {"event": "wedged", "reason": reason}
        for conn in list(self.connections.values()):
            if conn.authenticated and not conn.closed:
                conn.send_event(event)

    def load_extensions(self):
        """Import every module of ``EXTENSIONS`` and call its ``install(server)``."""
        for name in self.EXTENSIONS:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name is not None and name.startswith(exc.name):
                    log.info("extension %s not installed: %s", name, exc)
                    continue
                log.exception("extension %s failed to import", name)
                continue
            except Exception:
                log.exception("extension %s failed to import", name)
                continue
            try:
                module.install(self)
                log.info("extension %s installed", name)
            except Exception:
                log.exception("extension %s failed to install", name)

    # -- lifecycle -----------------------------------------------------------

    async def listen(self, host="127.0.0.1", port=0, unix=None):
        """Bind TCP (when ``port`` is not None) and/or the Unix socket ``unix``."""
        self.loop = asyncio.get_running_loop()
        self.loop_ident = threading.get_ident()
        model_metrics.install(self)
        batch = accept_batch(self.max_unauthenticated)
        if port is not None:
            listener = await self.loop.create_server(lambda: Connection(self), host, port, backlog=batch)
            _queue_up_to(listener, self.LISTEN_BACKLOG)
            self._listeners.append(listener)
            self.port = listener.sockets[0].getsockname()[1]
        if unix is not None:
            _remove_stale_socket(unix)
            old_umask = os.umask(0o177)
            try:
                listener = await self.loop.create_unix_server(lambda: Connection(self), unix, backlog=batch)
            finally:
                os.umask(old_umask)
            _queue_up_to(listener, self.LISTEN_BACKLOG)
            self._listeners.append(listener)
            self.unix = unix

    def stop(self, code=0, close_ms=None):
        """Close everything and make the process exit with ``code``; thread-safe.

        Runs on the next loop iteration, so a reply queued before (the
        ``stopServer`` reply) is written first. ``close_ms``: how long the
        exit may take, when the caller has just worked it out (``stopServer``:
        one look at ``/proc`` less, ~1.4 ms of each stop); else worked out here.
        """
        loop = self.loop
        if loop is None:
            os._exit(code)
        if threading.get_ident() == self.loop_ident:
            loop.call_soon(self._begin_stop, code, close_ms)
        else:
            try:
                loop.call_soon_threadsafe(self._begin_stop, code, close_ms)
            except RuntimeError:
                os._exit(code)

    def drain_model_calls(self, name, deadline):
        """Wait (not on the loop thread) until the threaded calls of model
        ``name`` in flight now have ended, or ``deadline`` (a
        ``time.monotonic()`` value) passed: the version that ran them is
        closed next (``ModelRegistry.retire``). A call whose request is still
        spilled to a file, its name unread, counts as one of them. Inline
        calls are not waited for: they run on the loop thread, and briefly."""
        calls = []
        for conn in list(self.connections.values()):
            for call in list(conn.runner.calls.values()):
                if call.cmd in _MODEL_CALLS:
                    msg = call.msg
                    if not isinstance(msg, dict) or msg.get("name") == name:
                        calls.append(call)
        while calls and time.monotonic() < deadline:
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
            calls = [call for call in calls if call.state != DONE]

    def _begin_stop(self, code, close_ms=None):
        if self.stopping:
            return
        self.stopping = True
        self.exit_code = code
        log.info("stopping (exit code %d)", code)
        # What model code recorded since the last flush goes out before the
        # connections close (one event, written with what they have queued).
        try:
            model_metrics.flush()
        except Exception:  # never in the way of a stop
            log.exception("model metrics: the last flush failed")
        # How long the exit may take (the models' close(), then ending what
        # they started): a host that sees the connections close without
        # having asked for the stop (a SIGTERM from elsewhere) waits that
        # much longer before it kills the process. Only when there is such a
        # wait (additive, as stopServer's closeMs).
        if close_ms is None:
            close_ms = self.models.close_bound_ms() + group_grace_ms()
        if close_ms:
            event = {"event": "stopping", "closeMs": close_ms}
            for conn in list(self.connections.values()):
                if conn.authenticated and not conn.closed:
                    conn.send_event(event)
        for listener in self._listeners:
            listener.close()
        for conn in list(self.connections.values()):
            conn.close()
        self.executor.shutdown()
        self.elastic_executor.shutdown()
        # Every model's close(), now that no call can come: the host let the
        # calls in flight finish (up to its grace) before it stopped us.
        entries = self.models.take_all()
        bound = max((e.close_timeout_ms for e in entries if e._close is not None), default=0)
        # A removed or replaced version still closing (on its command's
        # thread) is waited for as well, up to its own bound.
        closes_end = max(time.monotonic() + bound / 1000, self.models.retiring_until())
        if bound:
            self._closing = threading.Thread(target=run_closes, args=(entries,), name="pyproxy-closes", daemon=True)
            self._closing.start()
        self._stop_deadlines = (time.monotonic() + self.EXIT_GRACE, closes_end + self.EXIT_GRACE)
        self._wait_closed()

    def _wait_closed(self):
        """Stops the loop once the connections have closed (or ``EXIT_GRACE``
        passed) and the models' ``close()`` ended (or its bound passed); else
        looks again in ``STOP_POLL`` s, or as the last connection closes
        (``connection_closed``): the connections close a loop turn or two
        after ``_begin_stop``, and each stop waited a whole poll for it."""
        if self._stop_poll is not None:
            self._stop_poll.cancel()
            self._stop_poll = None
        deadline, closes_deadline = self._stop_deadlines
        now = time.monotonic()
        closing = self._closing
        if (self.connections and now < deadline) or (
                closing is not None and closing.is_alive() and now < closes_deadline) or (
                now < closes_deadline and self.models.retiring_until()):
            self._stop_poll = self.loop.call_later(self.STOP_POLL, self._wait_closed)
            return
        if self.unix is not None:
            try:
                os.unlink(self.unix)
            except OSError:
                pass
        self.loop.stop()

    # -- bookkeeping (called by Connection) ------------------------------------

    def connection_opened(self, conn):
        cid = "c%d" % next(self._connection_ids)
        self.connections[cid] = conn
        # Said once authenticated (auth_succeeded): a flood of connections
        # that never are must not flood the log too (two lines each).
        if conn.authenticated:
            log.info("connection %s opened", cid)
        return cid

    def connection_closed(self, conn):
        self.connections.pop(conn.id, None)
        self.unauthenticated.discard(conn)
        log.log(logging.INFO if conn.authenticated else logging.DEBUG, "connection %s closed", conn.id)
        if not self.connections and self._stop_poll is not None:
            self._wait_closed()  # a stop waits for no poll

    def awaiting_auth(self, conn):
        """Counts ``conn`` among the connections not authenticated yet (until
        ``authenticated`` or ``connection_closed``), closing one of them, at
        random (``WaitingRoom``), when there are ``max_unauthenticated``
        already."""
        dropped = self.unauthenticated.add(conn)
        if dropped is not None:
            dropped.abort()
            self.unauthenticated_dropped += 1
            warned, at = self._dropped_warned
            now = time.monotonic()
            if now - at >= self.UNAUTHENTICATED_LOG_EVERY:
                self._dropped_warned = (self.unauthenticated_dropped, now)
                log.warning(
                    "closed %d connection(s) that had not authenticated, to keep at most %d such at once "
                    "(a flood of connections from a local process?); %d so far",
                    self.unauthenticated_dropped - warned, self.max_unauthenticated, self.unauthenticated_dropped,
                )

    def unauthenticated_refused(self, conn, message):
        """Logs why ``conn``, not authenticated, is closed: the first such
        warning, then at most one every ``UNAUTHENTICATED_LOG_EVERY`` s,
        counting the connections closed since the last one. A local process
        flooding the port with connections that each sent a bad mac or a
        stray frame (or nothing, for ``Connection.AUTH_TIMEOUT``) made a
        warning line each: thousands a second, where the flood's connections
        themselves are logged by none."""
        self.unauthenticated_refusals += 1
        warned, at = self._refusals_warned
        now = time.monotonic()
        if now - at < self.UNAUTHENTICATED_LOG_EVERY:
            return
        self._refusals_warned = (self.unauthenticated_refusals, now)
        others = self.unauthenticated_refusals - warned - 1
        if others == 0:
            log.warning("connection %s: %s; closing", conn.id, message)
        else:
            log.warning(
                "connection %s: %s; closing (and %d other connection(s) closed before they authenticated since "
                "the last such line, %d so far)",
                conn.id, message, others, self.unauthenticated_refusals,
            )

    def auth_succeeded(self, conn):
        """``conn`` authenticated: no longer counted by ``awaiting_auth``."""
        self.unauthenticated.discard(conn)
        log.info("connection %s opened", conn.id)

    @property
    def in_flight(self):
        return sum(conn.in_flight for conn in list(self.connections.values()))

    def status(self):
        """The ``serverStatus`` result."""
        executor = self.executor
        elastic = self.elastic_executor
        return {
            "id": self.id,
            "pid": self.pid,
            "uptime": round(time.monotonic() - self.started, 3),
            "requestsServed": self.requests_served,
            "models": self.models.describe_all(),
            "connections": len(self.connections),
            "inFlight": self.in_flight,
            "parkedCalls": sum(conn.runner.parked for conn in list(self.connections.values())),
            "spinReads": self.spin_reads,
            "batchFrames": {"received": self.batches_received, "sent": self.batches_sent},
            "python": commands.PYTHON_VERSION,
            "threads": {
                "size": executor.size,
                "running": executor.threads,
                "idle": executor.idle,
                "stuck": len(executor.stuck),
                "replaced": executor.replaced,
                "elastic": elastic.threads,
                "elasticBusy": elastic.busy,
                "elasticStuck": len(self.elastic_stuck),
            },
            "evalSessions": 0 if self.eval_service is None else self.eval_service.session_count(),
            "wedged": self.wedged,
        }


def _remove_stale_socket(path):
    """Removes the socket file a dead process left at ``path``; refuses a
    file that is not a socket, and a socket a running server listens on
    (removing it would leave that server unreachable at its path)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError("Cannot listen on %s: it exists and is not a socket" % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # nobody listens: a leftover
    except socket.timeout:
        # A listener whose backlog is full: alive.
        raise OSError("Cannot listen on %s: a running server listens there" % path)
    except OSError:
        pass  # cannot tell (no permission, ...): taken over, as before
    else:
        raise OSError("Cannot listen on %s: a running server listens there" % path)
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def add_models_to_path(root):
    """Make modules next to the model files importable.

    Appended, not prepended, so a model file never shadows a stdlib module.
    """
    if root not in sys.path:
        sys.path.append(root)


def accept_batch(cap):
    """Connections accepted per turn of the loop for a server keeping at most
    ``cap`` unauthenticated ones: an eighth of it, 1 to 4. The auth of a
    connection accepted in one turn is read in a later one; asyncio's 100 per
    turn closed, under a flood, the host's connection in the very turn that
    accepted it, its auth unread, whenever ``cap`` was less (2 of 200 host
    connects at a cap of 16). And a turn that accepts 100 lasts, under a
    flood of connects closed at once, as long as their 100 transports, hellos
    and ends take: the host's handshake waited turns that long, and its TCP
    connects, whose SYNs the full queue drops, found room less often (at the
    default cap, of two processes' ~35 000 connects a second each: the host's
    connects' median 0.6 s, its pings' rounds 30% fewer; with 4 a turn 32 ms,
    with 8 68 ms). A server's own connections are a few: the host's, its
    sessions'. The accept rate stays what the loop can serve (flood26)."""
    return max(1, min(4, cap // 8))


def _queue_up_to(listener, backlog):
    """The kernel's accept queue of ``listener``'s sockets back to
    ``backlog`` (asyncio listens with its per-turn batch): a short queue
    refused the host's connect (a Unix socket's, at once) while a flood
    kept it full. Another ``listen`` on a listening socket sets its queue."""
    for sock in listener.sockets:
        raw = socket.socket(fileno=sock.fileno())
        try:
            raw.listen(backlog)
        except OSError:
            pass
        finally:
            raw.detach()


def default_max_unauthenticated():
    """``Server.MAX_UNAUTHENTICATED``, or a quarter of the soft fd limit when
    that is less (at least 16): the connections the server keeps must leave
    the fds that models, spill files and logs need."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # no resource module (Windows)
        return Server.MAX_UNAUTHENTICATED
    if soft == getattr(resource, "RLIM_INFINITY", -1) or soft <= 0:
        return Server.MAX_UNAUTHENTICATED
    return max(16, min(Server.MAX_UNAUTHENTICATED, soft // 4))
