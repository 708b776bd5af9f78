"""Command line: ``python3 -m pyproxy_server --path DIR --id ID [...]`` (protocol §5).

Start-up: read the secret line ``{"secret": "<hex>"}`` from stdin (unless
``--insecure-no-auth``), bind, install extensions, print one JSON ready line
``{"port", "pid", "id", "unix", "version"}`` on the real stdout, then route
``sys.stdout``/``sys.stderr`` through ``capture`` (and point file descriptor
1 at stderr) so nothing else ever reaches the host's stdout pipe.

The process exits when stdin reaches end of file (only watched when stdin
is a pipe, socket or terminal), when its parent process changes, on
``stopServer``, and on SIGTERM/SIGINT. User code never sees that pipe:
``detach_stdin`` moves it to a private descriptor and gives file descriptor
0 and ``sys.stdin`` ``/dev/null`` (``input()`` raises ``EOFError`` at once).
"""

import gc
import signal

# The cyclic garbage collector off while the server imports and starts: the
# start allocates ~20 000 objects that live as long as the process (modules,
# classes, functions, the server's own), which it traversed ~50 times for
# nothing (its young generation fills every 700). ``_serve`` freezes them
# (``gc.freeze``: out of every later collection's reach, so each full
# collection of a model's objects no longer walks them too) and turns it on
# again before the ready line. Only when run as the server: a test that
# imports this module keeps its collector.
if __name__ == "__main__":
    gc.disable()

# SIGHUP ignored from the start (``main`` says why): until the loop's
# handler below, its default action killed a server still importing and
# starting (~0.2 s of a busy 2-core machine; a ``systemctl kill -s HUP``
# during a pool's start or a restart killed the workers starting, chaos48).
# A handler, not SIG_IGN, which the programs model code runs would inherit.
if __name__ == "__main__" and hasattr(signal, "SIGHUP"):
    signal.signal(signal.SIGHUP, lambda signum, frame: None)

# The imports after it (E402): they take most of that time.
import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import logging.handlers  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

# An interpreter older than 3.9 never gets here: the package's __init__.py
# refuses it with a message that says so.

from . import PROTOCOL_VERSION, capture
from .forked_child import ForkedChild
from .framer import Framer
from .host_log_handler import HostLogHandler
from .own_file import NotOwnFileError, open_own_file
from .own_group import end_own_group
from .server import Server, add_models_to_path
from .shielded_logging import ShieldedLock, shield_module_lock
from .shielded_thread_start import ShieldedThreadStart
from .start_exit import BadArguments, exit_message, exit_record
from .uncaught_exceptions import UncaughtExceptions

# Seconds between checks that the parent process is still the one that started us.
PARENT_CHECK_INTERVAL = 1.0
# Sequential calls from the host come ~50-100 µs apart: 200 µs catches them, an idle client costs one such poll.
DEFAULT_SPIN_US = 200


# A log file name part: no path separators, no leading dot.
# Below this a frame cannot hold the hello event or an auth exchange.
MIN_FRAME_SIZE = 4096


def _frame_size(text):
    """``--max-frame-size``: an integer of at least ``MIN_FRAME_SIZE``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an integer, got %r" % text)
    if value < MIN_FRAME_SIZE:
        raise argparse.ArgumentTypeError(
            "must be at least %d bytes (the hello event and the auth exchange must fit), got %d" % (MIN_FRAME_SIZE, value))
    return value


_LOG_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}\Z")
# A record of the server's log (file, or stderr one a line).
_LOG_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"


class _ArgumentParser(argparse.ArgumentParser):
    """argparse's, whose refusal is a ``BadArguments`` for ``main`` to say
    (a record of the server's log for a host, argparse's text otherwise)."""

    def error(self, message):
        raise BadArguments(message, self.format_usage())


def parse_args(argv=None):
    parser = _ArgumentParser(prog="python3 -m pyproxy_server", description="pyproxy Python server")
    parser.add_argument("--host", default="127.0.0.1", help="TCP address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="TCP port, 0 = any free port (default 0; omitted with --unix = no TCP)")
    parser.add_argument("--path", required=True, help="model root directory; logs go to <path>/logs")
    parser.add_argument("--id", required=True, help="server id reported in hello/ready/status")
    parser.add_argument("--unix", default=None, help="also (or, without --port, only) listen on this Unix socket")
    parser.add_argument("--max-frame-size", type=_frame_size, default=Framer.MAX_FRAME_SIZE, help="largest accepted payload in bytes, at least %d (default 64 MiB)" % MIN_FRAME_SIZE)
    parser.add_argument("--threads", type=int, default=16, help="executor threads for model calls (default 16)")
    parser.add_argument("--max-stuck-threads", type=int, default=16, help="call threads stuck in cancelled calls (blocked in C) that are replaced; one more and the server reports itself wedged (default 16)")
    parser.add_argument("--max-elastic-threads", type=int, default=256, help="evals and model commands running at once, each on its own thread, before OverloadedError (default 256)")
    parser.add_argument("--max-eval-sessions", type=int, default=1024, help="eval sessions one connection may hold open before openSession is an OverloadedError (default 1024)")
    parser.add_argument("--max-calls", type=int, default=65536, help="threaded calls queued or running per connection before OverloadedError (default 65536)")
    parser.add_argument("--spin-us", type=int, default=DEFAULT_SPIN_US, help="microseconds a connection polls for the next request of a fast client before sleeping; 0 = never (default %d)" % DEFAULT_SPIN_US)
    parser.add_argument("--sched-batch", action="store_true", help="run under Linux SCHED_BATCH: a request that wakes the server does not preempt the process running on that core (an HTTP gateway's thread); ignored where the OS has no SCHED_BATCH")
    parser.add_argument("--oom-score-adj", type=int, default=0, help="raise this process's Linux oom_score_adj by this much (1 to 1000, capped at 1000) before any model loads, so that the kernel's OOM killer ends this server, which its host restarts, rather than the host: in a container's memory limit the host (an HTTP gateway, PID 1) is often the largest process, and its death ends every worker; 0 (default) leaves it alone; ignored where /proc/self/oom_score_adj cannot be written")
    parser.add_argument("--host-pid", type=int, default=None, help="the pid of the host that started this server, when that is not its parent (a python wrapper runs it): once it is gone, the server ends its process group as it exits, as it does when it sees itself re-parented")
    parser.add_argument("--max-unauthenticated", type=int, default=None, help="connections not authenticated yet kept at once; one more closes one of them at random (default 1024, or a quarter of the soft fd limit when less)")
    parser.add_argument("--insecure-no-auth", action="store_true", help="accept connections without authentication (local experiments only)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    parser.add_argument("--log-name", default=None, help="log to <path>/logs/pythonserver<NAME>.log (letters, digits, '.', '_', '-'; default: the TCP port, else the --unix file name)")
    parser.add_argument("--log-dir", default=None, help="write the log file here instead of <path>/logs (made, 0700, when missing; an existing directory's mode is left alone); - logs to stderr, no file")
    args = parser.parse_args(argv)
    if args.port is None and args.unix is None:
        args.port = 0
    if args.log_name is not None and not _LOG_NAME.match(args.log_name):
        parser.error("--log-name must be letters, digits, '.', '_' or '-', not starting with '.' (got %r)" % args.log_name)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.spin_us < 0:
        parser.error("--spin-us must be >= 0")
    if args.max_calls < 1:
        parser.error("--max-calls must be >= 1")
    if args.max_unauthenticated is not None and args.max_unauthenticated < 1:
        parser.error("--max-unauthenticated must be >= 1")
    if args.max_stuck_threads < 0:
        parser.error("--max-stuck-threads must be >= 0")
    if args.max_eval_sessions < 0:
        parser.error("--max-eval-sessions must be >= 0")
    if args.max_elastic_threads < 1:
        parser.error("--max-elastic-threads must be >= 1")
    if not 0 <= args.oom_score_adj <= 1000:
        parser.error("--oom-score-adj must be 0 to 1000")
    return args


def set_sched_batch():
    """Put this thread, and the threads it starts later, under ``SCHED_BATCH``.

    Linux then never lets a wake-up of this process preempt the task running
    on the core (the host's event loop): the server runs when that task
    blocks or its slice ends. Same CPU share as before (nice 0). Returns
    whether it applied (False where the OS has no ``SCHED_BATCH``).
    """
    setter = getattr(os, "sched_setscheduler", None)
    policy = getattr(os, "SCHED_BATCH", None)
    if setter is None or policy is None:
        return False
    try:
        setter(0, policy, os.sched_param(0))
    except OSError:
        return False
    return True


OOM_SCORE_ADJ_FILE = "/proc/self/oom_score_adj"


def raise_oom_score_adj(by, path=OOM_SCORE_ADJ_FILE):
    """Raise this process's ``oom_score_adj`` by ``by``, at most to 1000.

    The kernel's OOM killer ends the process with the most points, its
    resident memory plus ``oom_score_adj`` thousandths of the memory it may
    use: raised, this server goes before its host, whatever their sizes
    (within a container's limit, before the host as long as it holds less
    than ``by`` thousandths of the limit more than this server). Any process
    may raise its own; the processes model code starts inherit it. Returns
    ``(before, after)``, or None where it cannot be read or written (not
    Linux, a ``/proc`` of another kind).
    """
    try:
        with open(path, "r+") as f:
            before = int(f.read().strip())
            after = min(1000, before + by)
            if after != before:
                f.seek(0)
                f.write("%d\n" % after)
                f.flush()
    except (OSError, ValueError):
        return None
    return before, after


def oom_score_adj_record(by, before, after):
    """The log record's ``(level, message, *args)`` of ``raise_oom_score_adj(by)``'s
    ``(before, after)``.

    Capped at 1000, the raise is less than ``by``: the server inherited a
    high score (a Kubernetes pod that is not Guaranteed runs at 2 to 1000:
    BestEffort at 1000, Burstable at 1000 less its request's thousandths of
    the node's memory), so it goes before its host only while the host holds
    less than ``after - before`` thousandths of the memory limit more, and
    not at all when that is 0. Said as a warning then: the info line claimed
    the server went first whatever the sizes, also at ``1000 -> 1000``.
    """
    if after - before >= by:
        return (logging.INFO, "oom_score_adj %d -> %d: the kernel's OOM killer takes this server before its host", before, after)
    if after == before:
        return (logging.WARNING, "oom_score_adj %d -> %d: inherited at %d already, the most there is (--oom-score-adj %d cannot raise it): the kernel's OOM killer takes the larger of this server and its host, maybe the host; "
                "start the host at a lower oom_score_adj (a Kubernetes pod whose memory and CPU requests equal its limits: Guaranteed)", before, after, before, by)
    return (logging.WARNING, "oom_score_adj %d -> %d: capped at 1000, raised by %d, not %d (--oom-score-adj): the kernel's OOM killer takes this server before its host only while the host holds less than %d thousandths of the memory limit more; "
            "start the host at a lower oom_score_adj (a Kubernetes pod whose memory and CPU requests equal its limits: Guaranteed)", before, after, after - before, by, after - before)


def read_secret():
    """Read ``{"secret": "<hex>"}`` from the first stdin line; returns the
    secret and the line's optional ``logMark`` (``PYPROXY_LOG_MARK``'s
    value, for a host whose wrapper passes stdin on but not the
    environment), or None."""
    line = sys.stdin.buffer.readline()
    if not line:
        raise SystemExit("pyproxy_server: no secret on stdin (end of file); use --insecure-no-auth for local experiments")
    try:
        start = json.loads(line)
        secret = start["secret"]
        mark = start.get("logMark")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SystemExit('pyproxy_server: the first stdin line must be {"secret": "<hex>"}')
    if not isinstance(secret, str) or not secret:
        raise SystemExit("pyproxy_server: the secret must be a non-empty string")
    try:
        secret.encode()  # the MAC's key is the secret as UTF-8 (protocol §4)
    except UnicodeEncodeError:
        raise SystemExit("pyproxy_server: the secret must be a non-empty string that UTF-8 can encode (no lone surrogate)")
    return secret, mark if isinstance(mark, str) else None


def detach_stdin():
    """Move the host's stdin pipe to a private descriptor; return it (None: no stdin).

    The pipe carries the secret and its end of file tells that the host is
    gone: an ``input()`` or ``sys.stdin.read()`` in user code would block on
    it for ever (and a read that got data would steal the host's bytes). So
    file descriptor 0, inherited by child processes too, and ``sys.stdin``
    become ``/dev/null``, and only the watcher reads the pipe, through a
    descriptor no child inherits (``os.dup`` makes it non-inheritable).
    """
    try:
        private = os.dup(0)
    except OSError:
        private = None
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, 0)
        finally:
            os.close(null)
        sys.stdin = open(0, "r", encoding="utf-8", errors="surrogateescape", closefd=False)
    except OSError:
        pass
    return private


# Servers sharing one log name at once beyond which names get the pid (unbounded).
_MAX_LOG_CLAIMS = 16


class _PrivateLogHandler(ShieldedLock, logging.handlers.RotatingFileHandler):
    """A rotating log file only its owner can read (0600, in a 0700
    directory): tracebacks and messages may name data and paths. It holds
    ``lock_fd`` (the claim on its name, see ``_claim_log_name``) until
    ``close_and_unclaim()`` or the process ends.
    Its lock is taken shielded from a cancel's interrupt (``ShieldedLock``)."""

    lock_fd = None

    # ``close()`` is left as it is, the claim kept: a model calls it too
    # (``logging.basicConfig(force=True)`` closes the root's handlers,
    # ``logging.shutdown()`` every handler) while the server goes on writing
    # here (a closed file handler reopens its file at the next record), and
    # another server must not take the name meanwhile. The claim goes with
    # ``close_and_unclaim()`` (``setup_logging`` again) or the process.

    def close_and_unclaim(self):
        """Closes the file and gives up the claim on its name (not
        ``release``: that is the handler's lock's)."""
        try:
            self.close()
        finally:
            fd, self.lock_fd = self.lock_fd, None
            if fd is not None:
                os.close(fd)

    # A file that cannot be written (a full disk: ENOSPC; a file system gone
    # read-only) made logging print "--- Logging error ---" and a traceback
    # of a dozen lines to stderr for every record, the model's included: the
    # host logs stderr line by line, so each record became a dozen warnings
    # in the gateway's log, within a rate limit that then left out what else
    # the worker wrote there (a crash's traceback). Now one line says so,
    # nothing more while it lasts (records may be lost), and one line says
    # when the file takes them again.
    _write_failed = False  # the last record could not be written
    _failing = False  # writes fail since a line said so

    # A file moved or removed by another program (logrotate without
    # ``copytruncate``, an operator's ``mv``) kept taking the records under
    # its new name, or into the removed file's space, until this handler's
    # own rotation at 10 MiB: the name is looked at again (one ``stat``) at
    # most every ``reopen_check_every`` seconds, and opened again when it no
    # longer names the file written.
    reopen_check_every = 1.0
    _checked_at = 0.0

    def _reopen_if_moved(self):
        now = time.monotonic()
        if now - self._checked_at < self.reopen_check_every:
            return
        self._checked_at = now
        stream = self.stream
        if stream is None:
            return
        try:
            ours = os.fstat(stream.fileno())
        except (OSError, ValueError, AttributeError):  # closed, or not a file
            return
        try:
            there = os.stat(self.baseFilename)
        except FileNotFoundError:
            there = None
        except OSError:
            return
        if there is not None and (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino):
            return
        # The next write opens the name again (FileHandler.emit, and the
        # rollover check, open a stream that is None).
        self.stream = None
        try:
            stream.close()
        except OSError:
            pass

    def in_forked_child(self):
        """In a process that model code forked (``ForkedChild``): the next
        record opens the file anew. The stream is the parent's: another
        thread of the server that was writing a record at the fork held its
        buffer's lock (CPython's ``BufferedWriter``, which no fork hook
        reinitialises), for good in the child, whose first record waited
        for it in ``shouldRollover``'s ``seek``. Its descriptor is closed
        (the child's copy), which makes the stream closed: nothing flushes
        it, the parent's bytes in its buffer included, nor takes its lock."""
        stream, self.stream = self.stream, None
        try:
            stream.buffer.raw.close()
        except (AttributeError, OSError, ValueError):  # no stream, or not a file's
            pass

    def emit(self, record):
        self._write_failed = False
        self._reopen_if_moved()
        super().emit(record)
        if self._failing and not self._write_failed:
            self._failing = False
            _say("pyproxy_server: log file %s is written again" % self.baseFilename)

    def handleError(self, record):
        # Not written, whatever the error: a record that failed to format
        # (a model's "%d" given a string) while the disk is full said the
        # file was "written again", and the next record "cannot write".
        self._write_failed = True
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            return super().handleError(record)
        if not self._failing:
            self._failing = True
            _say(
                "pyproxy_server: cannot write log file %s (%s): records may be lost until it can be written again"
                % (self.baseFilename, error)
            )

    def _open(self):
        # Never through a link, another user's file or a FIFO that someone
        # else put at the name (a log directory others can write: own_file).
        fd = open_own_file(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.fchmod(fd, 0o600)  # a file made by an older version
        except (OSError, AttributeError):  # no fchmod on Windows
            pass
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


def _say(line):
    """One line on the process's own stderr, which the host logs line by
    line: not ``sys.stderr``, which a call routes to its model's output and
    which otherwise goes to this log (the file that cannot be written).
    Nothing if that fails too."""
    try:
        sys.__stderr__.write(line + "\n")
        sys.__stderr__.flush()
    except Exception:  # stderr itself gone: nothing left to tell
        pass


def _log_mark(value):
    """``PYPROXY_LOG_MARK`` when it can start a line of ours: not empty,
    printable ASCII without spaces (else None: records unmarked)."""
    if value and len(value) <= 128 and all("!" <= c <= "~" for c in value):
        return value
    return None


def _not_sent_to_host(record):
    """False for a record ``HostLogHandler`` sent to the host as a log event."""
    return not getattr(record, "pyproxy_sent", False)


class _StderrLogHandler(ShieldedLock, logging.StreamHandler):
    """The log on stderr (``--log-dir -``, or when the file cannot be opened;
    ``ShieldedLock``), one line per record (``_OneLineFormatter``)."""


# White space in a logger's name, which the host's reading of a record's line takes for its end.
_SPACE = re.compile(r"\s")


class _OneLineFormatter(logging.Formatter):
    r"""A record as one line: backslashes, newlines and carriage returns in it
    (a traceback, a multi-line message) escaped as ``\\``, ``\n``, ``\r``.

    The host reads the server's stderr a line at a time (``StderrLog``): a
    line that starts with ``mark`` and a space is logged at its record's
    level and unescaped, any other line as a warning. A record's traceback
    came as one warning per line, whatever the record's level, each counted
    against the host's rate limit (a 40-line traceback took 40 of its 1000
    lines a second).

    ``mark``: the host's ``PYPROXY_LOG_MARK``, random per process. Without
    it, a line of anything else writing to the process's stderr (a
    subprocess, a forked child, a C library) that looked like a record was
    taken for one, its level and unescaping included: a model printing a
    client's text could make an ``ERROR`` record of another logger's.
    """

    def __init__(self, fmt, mark=None):
        super().__init__(fmt)
        self.prefix = "" if mark is None else mark + " "

    def format(self, record):
        # The host reads ``[thread] logger: `` from the line (``serverRecord``):
        # a thread named ``x] pyproxy_server: ...`` (a name model code chose,
        # maybe from a client's text) made the record's logger pass for the
        # server's own, and a logger name with a space cut it short. So the
        # thread's name without ``]`` and the logger's without white space.
        # Either may be no plain str (a str subclass, any object: a logging
        # filter of the model's sets what it likes), whose text would pass
        # unchecked: such a one is made text first, then checked (chaos54).
        thread = record.threadName
        name = record.name
        if thread.__class__ is not str or name.__class__ is not str or "]" in thread or _SPACE.search(name):
            record = logging.makeLogRecord(record.__dict__)
            # ``str.__str__``: a plain str even of a subclass that ``str()``
            # may give, whose ``%s`` would ask its ``__str__`` again.
            record.threadName = str.__str__(str(thread)).replace("]", ")")
            record.name = _SPACE.sub("_", str.__str__(str(name)))
        text = logging.Formatter.format(self, record)
        if "\\" in text or "\n" in text or "\r" in text:
            text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return self.prefix + text


def _claim_log_name(logs, name):
    """This process's log name and the descriptor that holds it (or None).

    Two running servers on one ``--path`` with one log name (two pools on
    one models directory both have a ``w1``) would write and rotate one file:
    each rotation renames the file under the other's feet, and its lines go
    to a file about to be deleted. So a server takes an exclusive lock on
    ``pythonserver<name>.log.lock`` for its lifetime (released by the system
    when it exits, even when killed); when another server holds it, this one
    takes the first free name of ``<name>-2``, ``<name>-3``, ... (so the
    files stay as many as the servers that ran at once, not one per
    process). Without ``fcntl`` (Windows), or on a file system without
    locks, names are not claimed.
    """
    try:
        import fcntl
    except ImportError:
        return name, None
    for n in range(1, _MAX_LOG_CLAIMS + 1):
        claim = name if n == 1 else "%s-%d" % (name, n)
        try:
            fd = open_own_file(os.path.join(logs, "pythonserver%s.log.lock" % claim), os.O_RDWR | os.O_CREAT)
        except NotOwnFileError:  # a link or another user's file: that name is not ours to take
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):  # held (EACCES: NFS's emulation)
            os.close(fd)
            continue
        except OSError:
            # No locks on this file system (NFSv3 without its lock daemon:
            # ENOLCK): claiming nothing, not a name per process (a file each).
            os.close(fd)
            return claim, None
        return claim, fd
    return "%s-%d" % (name, os.getpid()), None


def setup_logging(root, name, level, claim=False, log_dir=None, mark=None):
    """Logs to ``<root>/logs/pythonserver<name>.log`` (else to stderr).
    ``claim``: the name is not a TCP port, which no other running server
    can have (a ``--log-name``, or a socket file name, which servers with
    sockets in different directories share): see ``_claim_log_name``.
    ``log_dir``: the directory instead of ``<root>/logs`` (``--log-dir``);
    ``"-"``: stderr, no file. ``mark``: what each record on stderr starts
    with (``PYPROXY_LOG_MARK``, see ``_OneLineFormatter``)."""
    # A cancel's interrupt must not leave logging's module lock held either.
    shield_module_lock()
    root_logger = logging.getLogger()
    server_logger = logging.getLogger("pyproxy_server")
    for old in set(root_logger.handlers + server_logger.handlers):
        # An earlier call's file and name claim.
        old.close_and_unclaim() if isinstance(old, _PrivateLogHandler) else old.close()
    handler = None
    lock_fd = None
    try:
        if log_dir == "-":
            # On purpose (a container's platform collects stderr): no file.
            # A model call's record the host got as a log event is left out:
            # the host logs this stderr too, so it came twice.
            handler = _StderrLogHandler(sys.__stderr__)
            handler.addFilter(_not_sent_to_host)
        elif log_dir is None:
            logs = os.path.join(root, "logs")
            os.makedirs(logs, mode=0o700, exist_ok=True)
            try:
                os.chmod(logs, 0o700)  # made by an older version, or by another umask
            except OSError:
                pass
        else:
            # The user's directory (/var/log/pyproxy, shared with others): its
            # mode is theirs; the files are 0600 whatever it is.
            logs = log_dir
            os.makedirs(logs, mode=0o700, exist_ok=True)
        if handler is None:
            if claim:
                name, lock_fd = _claim_log_name(logs, name)
            handler = _PrivateLogHandler(
                os.path.join(logs, "pythonserver%s.log" % name), maxBytes=10 * 1024 * 1024, backupCount=3, encoding="utf-8",
                # Printed text with lone surrogates (os.fsdecode of a non-UTF-8 name) is logged, not lost.
                errors="backslashreplace",
            )
            handler.lock_fd, lock_fd = lock_fd, None
    except OSError as exc:
        if lock_fd is not None:
            os.close(lock_fd)
        sys.__stderr__.write("pyproxy_server: cannot open log file (%s); logging to stderr\n" % exc)
        handler = _StderrLogHandler(sys.__stderr__)
    fmt = _LOG_FORMAT
    if isinstance(handler, _StderrLogHandler):
        handler.setFormatter(_OneLineFormatter(fmt, mark=mark))
    else:
        handler.setFormatter(logging.Formatter(fmt))
    root_logger.handlers[:] = [handler]
    root_logger.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    # The server's own records (the loop thread's among them) go to its
    # handler only, not on to the root logger: a handler a model adds there
    # (``basicConfig``) takes its lock unshielded, and a cancel's interrupt
    # landing in it on a call's thread would leave it held for the loop.
    # Model records reach the root's handlers as before (this one too); the
    # level is still the root's.
    server_logger.handlers[:] = [handler]
    server_logger.propagate = False
    # The same for what ``asyncio`` and ``concurrent.futures`` log on the
    # loop thread (this thread: "Exception in callback", "Task exception was
    # never retrieved"); their records on a model's own threads and loops
    # still reach every handler.
    loop_records = _LoopThreadRecords(handler, threading.get_ident())
    for name in LOOP_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _LoopThreadRecords)]:
            logger.removeFilter(old)
        logger.addFilter(loop_records)


# Loggers of the standard library that the server's loop thread logs through.
LOOP_LOGGERS = ("asyncio", "concurrent.futures")


class _LoopThreadRecords(logging.Filter):
    """A filter on ``LOOP_LOGGERS``: a record made on the loop thread goes to
    the server's handler only (never through the root's handlers, whose
    locks a model's cancelled call may hold); other threads' pass on."""

    def __init__(self, handler, loop_thread):
        super().__init__()
        self.handler = handler
        self.loop_thread = loop_thread

    def filter(self, record):
        if threading.get_ident() != self.loop_thread:
            return True
        if record.levelno >= self.handler.level:
            self.handler.handle(record)
        return False


def _stdin_is_watchable(fd):
    if fd is None:
        return False
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


def _watch_stdin(server, fd, closed):
    # The host keeps our stdin open for its whole life: EOF means it is gone.
    try:
        while os.read(fd, 65536):
            pass
    except Exception:
        pass
    logging.getLogger("pyproxy_server").info("stdin closed: exiting")
    closed.set()
    server.stop(0)


# How long an exit on stdin EOF waits to see this process re-parented: the
# dying host's pipes close just before its children get a new parent.
ORPHAN_WAIT = 0.5


def end_orphaned_group(parent, stdin_closed, host=None, host_start=None):
    """When the host is gone (this process got a new parent, or ``host``, the
    host's pid given with ``--host-pid`` because a wrapper between us is our
    parent, no longer runs), end what model code started in our process
    group: the host ends it after a normal exit (``killGroup``), but a host
    that died (SIGKILL, an uncaught exception, ``exit()`` without closing its
    pool) cannot. After an EOF on stdin, waits up to ``ORPHAN_WAIT`` s for
    either. Does not return when it kills: SIGKILL to the group ends this
    process too (nobody waits for its status). Nothing when this process
    does not lead its group (the host gave it none) or where the OS has no
    process groups."""
    try:
        if os.getpgrp() != os.getpid():
            return
        deadline = time.monotonic() + (ORPHAN_WAIT if stdin_closed else 0)
        while os.getppid() == parent and not _gone(host, parent, host_start):
            if time.monotonic() >= deadline:
                return
            time.sleep(0.005)
        os.killpg(os.getpid(), signal.SIGKILL)
    except (AttributeError, OSError):
        pass


def _gone(pid, parent, start=None):
    """Whether the host ``pid`` (``None``: not given) no longer runs: no such
    process, or a zombie (Linux: its ``/proc`` state) its parent has not
    reaped yet, or (``start``: its start time when we began watching it) a
    process that started since under the same, reused, pid. Never for our
    own parent, which the caller watches, nor for a pid that cannot be a
    host's (1 or below)."""
    if pid is None or pid <= 1 or pid == parent:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's: EPERM)
    state = _proc_state(pid)
    if state is None:
        return False
    return state[0] in (b"Z", b"X") or (start is not None and state[1] != start)


def _proc_state(pid):
    """``(state, start time)`` of process ``pid`` from Linux's
    ``/proc/<pid>/stat`` (its 3rd and 22nd fields; the start time in clock
    ticks since boot), or ``None`` (no ``/proc``, no such process)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _start_time(pid):
    """The start time of process ``pid`` (see :func:`_proc_state`), or ``None``."""
    state = _proc_state(pid)
    return None if state is None else state[1]


def watched_host(pid, parent):
    """The host given with ``--host-pid`` as ``(pid, start time)`` to pass to
    ``_gone``, or ``(None, None)`` when there is none to watch: not given, or
    already gone as we start. The host runs while it waits for our ready
    line, so a pid that names no process here is one of another PID
    namespace (a wrapper such as ``docker run`` or ``unshare -p`` runs us in
    our own): watched, it would look gone at once, and the server would exit
    a second after it started, every time. The start time tells a pid reused
    after the host died from the host."""
    if pid is None or pid <= 1 or pid == parent or _gone(pid, parent):
        return None, None
    return pid, _start_time(pid)


def _watch_parent(server, parent, host=None, host_start=None):
    if os.getppid() != parent:
        logging.getLogger("pyproxy_server").info("parent process changed: exiting")
        server.stop(0)
        return
    if _gone(host, parent, host_start):
        logging.getLogger("pyproxy_server").info("host process %d gone: exiting", host)
        server.stop(0)
        return
    server.loop.call_later(PARENT_CHECK_INTERVAL, _watch_parent, server, parent, host, host_start)


def lead_process_group():
    """Become the leader of a process group of our own (same session): the
    host signals the group, so what model code starts (a fork, a subprocess)
    ends with this server. Not a new session: Linux's autogroup scheduler
    would give this process a session's CPU share. Nothing where the OS has
    no process groups, or when this process already leads one."""
    try:
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)
    except (AttributeError, OSError):
        pass


def main(argv=None):
    """Runs the server; its exit before its log is set up, for a reason it
    says (``start_exit``), is one ``ERROR`` record of its log on stderr when
    the host gave a mark for them, that message as it was otherwise."""
    # The mark of the host's environment, for an exit before the secret line
    # (which may give one) is read.
    start = {"mark": _log_mark(os.environ.get("PYPROXY_LOG_MARK"))}
    try:
        _serve(argv, start)
    except SystemExit as exc:
        said = exit_message(exc)
        if said is None:
            raise
        message, code = said
        if start["mark"] is None:
            if isinstance(exc, BadArguments):  # as argparse writes it
                _say(exc.usage.rstrip("\n"))
                _say("python3 -m pyproxy_server: error: " + exc.message)
                raise SystemExit(code) from None
            raise
        _say(exit_record(message, _OneLineFormatter(_LOG_FORMAT, mark=start["mark"])))
        raise SystemExit(code) from None


def _serve(argv, start):
    args = parse_args(argv)
    lead_process_group()
    # The gateway's bearer tokens may reach us in the environment we inherit:
    # model and eval code must not read them (os.environ).
    os.environ.pop("PYPROXY_TOKEN", None)
    os.environ.pop("PYPROXY_MANAGE_TOKEN", None)
    # Nor the mark of our records on stderr: text a model prints must not carry it.
    log_mark = _log_mark(os.environ.pop("PYPROXY_LOG_MARK", None))
    # Before any thread starts: threads inherit the policy.
    sched_batch = set_sched_batch() if args.sched_batch else False
    # Before any model loads (the memory a model takes at import counts too).
    oom_adj = raise_oom_score_adj(args.oom_score_adj) if args.oom_score_adj else None
    parent = os.getppid()
    host, host_start = watched_host(args.host_pid, parent)
    secret, line_mark = (None, None) if args.insecure_no_auth else read_secret()
    if line_mark is not None:
        log_mark = _log_mark(line_mark)
    start["mark"] = log_mark
    host_pipe = detach_stdin()
    root = os.path.realpath(args.path)
    if not os.path.isdir(root):
        raise SystemExit("pyproxy_server: --path %r is not a directory" % args.path)
    server = Server(root, args.id, secret=secret, max_frame_size=args.max_frame_size, threads=args.threads, max_calls=args.max_calls, spin=args.spin_us / 1e6,
                    max_stuck_threads=args.max_stuck_threads, max_elastic_threads=args.max_elastic_threads,
                    max_eval_sessions=args.max_eval_sessions, max_unauthenticated=args.max_unauthenticated)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(server.listen(args.host, args.port, args.unix))
    except OSError as exc:
        raise SystemExit("pyproxy_server: cannot listen: %s" % exc)
    log_name = args.log_name
    if log_name is None:
        log_name = str(server.port) if server.port is not None else os.path.basename(args.unix)
    # A pool on Unix sockets gives each of its workers <own directory>/<id>.sock:
    # two pools on one --path both have a w1.sock, as TCP pools both have a w1.
    setup_logging(root, log_name, args.log_level, claim=args.log_name is not None or server.port is None, log_dir=args.log_dir, mark=log_mark)
    # Model code's logging records, also to the host (clients that ask for
    # them); first, so the stderr handler of --log-dir - knows what it sent.
    logging.getLogger().handlers.insert(0, HostLogHandler())
    # A model thread's uncaught exception: one record, not a warning per line.
    UncaughtExceptions.install()
    log = logging.getLogger("pyproxy_server")
    add_models_to_path(root)
    server.load_extensions()
    # What the start made lives on: frozen, then the collector on again for
    # what the models make (see ``gc.disable()`` above).
    gc.freeze()
    gc.enable()

    ready = {"port": server.port, "pid": server.pid, "id": server.id, "unix": server.unix, "version": PROTOCOL_VERSION, "python": "%d.%d.%d" % sys.version_info[:3]}
    # As ASCII bytes: the host reads them so whatever the text layer's
    # encoding (PYTHONIOENCODING=utf-16 in the workers' environment made
    # it a line of NULs the host could not parse).
    line = json.dumps(ready) + "\n"  # ensure_ascii: ASCII whatever the paths
    real_stdout = getattr(sys.stdout, "buffer", None)
    if real_stdout is None:
        sys.stdout.write(line)
        sys.stdout.flush()
    else:
        real_stdout.write(line.encode("ascii"))
        real_stdout.flush()
    # From now on nothing may reach the host's stdout pipe, not even C-level
    # writes or child processes: fd 1 becomes a copy of stderr.
    try:
        os.dup2(2, 1)
    except OSError:
        pass
    capture.install()
    log.info("listening: %s (pid %d, auth %s)", json.dumps(ready), server.pid, "none" if secret is None else "hmac-sha256")
    if args.sched_batch and not sched_batch:
        log.warning("--sched-batch: this system has no SCHED_BATCH; scheduling unchanged")
    if args.oom_score_adj:
        if oom_adj is None:
            log.info("--oom-score-adj: %s cannot be written here; left alone", OOM_SCORE_ADJ_FILE)
        else:
            log.log(*oom_score_adj_record(args.oom_score_adj, *oom_adj))

    # A stop for a signal from outside exits with 128 + its number (143 for
    # SIGTERM, 130 for SIGINT, as a shell reports a process it ended): the
    # host tells it from its own stop (``stopServer``: 0) in its exit counts.
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, server.stop, 128 + signum)
        except (NotImplementedError, RuntimeError):
            pass
    # SIGHUP, the host's reload signal, ignored (said once): sent to every
    # process of a systemd unit (``systemctl kill -s HUP``) it reached this
    # server too, and Python's default action killed it with its calls in
    # flight. The host supervises this server (its stdin, its parent), so a
    # hang-up is the host's to act on. A handler, not SIG_IGN, which the
    # programs model code runs would inherit.
    if hasattr(signal, "SIGHUP"):
        said = [False]

        def hang_up():
            if not said[0]:
                said[0] = True
                log.info("SIGHUP ignored: the host supervises this server (stop it with SIGTERM)")

        try:
            loop.add_signal_handler(signal.SIGHUP, hang_up)
        except (NotImplementedError, RuntimeError):
            pass
    # A child that model code forks: its own signals and output, no call.
    ForkedChild.install()
    # A thread that a call starts: up to 3.11, out of a cancel's reach.
    ShieldedThreadStart.install()
    stdin_closed = threading.Event()
    if _stdin_is_watchable(host_pipe):
        threading.Thread(target=_watch_stdin, args=(server, host_pipe, stdin_closed), name="pyproxy-stdin", daemon=True).start()
    if args.host_pid is not None and host is None and args.host_pid != parent:
        log.info("--host-pid %d: no such process here (another PID namespace?): not watched", args.host_pid)
    loop.call_later(PARENT_CHECK_INTERVAL, _watch_parent, server, parent, host, host_start)

    try:
        loop.run_forever()
    except BaseException:
        log.exception("event loop failed")
        server.exit_code = 1
    code = server.exit_code if server.exit_code is not None else 0
    # A traceback a thread printed and the routers still hold: logged now,
    # before the last record (the exit may come within its hold).
    capture.flush_held()
    log.info("exited with %d", code)
    logging.shutdown()
    end_orphaned_group(parent, stdin_closed.is_set(), host, host_start)
    # Not orphaned: what model code started ends here too, not only where
    # the host may signal our group (Deno needs --allow-run for all programs).
    end_own_group()
    # Executor threads may still run user code; they must not keep us alive.
    os._exit(code)


if __name__ == "__main__":
    main()
