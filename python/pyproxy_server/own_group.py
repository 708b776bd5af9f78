"""Ending what model code started (a ``subprocess.Popen``, a forked
``multiprocessing`` pool) when the server exits normally: ``stopServer``,
SIGTERM, its stdin's end of file.

The host kills the server's process group after the server exited, but only
where it may: Deno signals a process group only with ``--allow-run`` for
every program, and a pool under ``--allow-run=python3`` left every process
its models started running after ``close()``. So the server ends its group
itself on the way out: SIGTERM to the others, then SIGKILL to those left
after ``GRACE`` seconds. Only a group it leads (``lead_process_group``): a
server that does not lead its group (the OS or its starter gave it none)
would signal its host's.
"""

import os
import signal
import threading
import time

__all__ = ["end_own_group", "group_grace_ms", "group_members"]

# Seconds the group's other processes get between SIGTERM and SIGKILL: a
# multiprocessing pool's workers end at once, a process that ignores
# SIGTERM holds the exit this long. Well within the second a pool's worker
# gives its server to exit after `stopServer` (the host's STOP_WAIT_MS,
# src/worker.ts) before it kills it, and with it this escalation.
GRACE = 0.5
# Seconds between looks at the group while it ends.
POLL = 0.01
# Rounds of SIGKILL: a process forked meanwhile (model code still running in
# an executor thread) is caught by the next.
KILL_ROUNDS = 5
# Bytes read of a ``/proc/<pid>/stat`` line: it is well under 1 KiB (its 52
# fields are numbers, its command name at most 64 bytes).
_STAT_MAX = 4096


def group_members(pgid, me=None):
    """Pids of the processes of group ``pgid`` other than ``me`` (default:
    this one) that still run (zombies left out: they go with their parent),
    from Linux's ``/proc/<pid>/stat`` (its 3rd and 5th fields); ``None``
    without ``/proc``."""
    me = os.getpid() if me is None else me
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    if "self" not in names:
        return None
    found = []
    for name in names:
        if not name.isdigit():
            continue
        try:
            # ``os.open``/``os.read``, not ``open()``: no file object, no
            # buffer, no ``fstat``; half the time of a scan (a stop makes two:
            # ~2.4 -> ~1.4 ms each with ~110 processes; more on a busier host).
            fd = os.open("/proc/%s/stat" % name, os.O_RDONLY)
            try:
                stat = os.read(fd, _STAT_MAX)
            finally:
                os.close(fd)
            fields = stat[stat.rindex(b")") + 2:].split(None, 3)
            if int(fields[2]) != pgid or fields[0] in (b"Z", b"X"):
                continue
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        pid = int(name)
        if pid != me:
            found.append(pid)
    return found


def group_grace_ms():
    """How much longer than its models' ``close()`` this process's exit may
    take to end its group (``GRACE`` in ms), for the ``closeMs`` of
    ``stopServer``'s reply: a host that waited less (a pool's worker gives a
    second) would kill the server before its SIGKILL, and leave what ignored
    the SIGTERM running. 0 when it leads no group or its group holds nothing
    else (Linux: one look at ``/proc``, ~2 ms)."""
    try:
        me = os.getpid()
        if os.getpgrp() != me:
            return 0
    except (AttributeError, OSError):
        return 0
    others = group_members(me, me)
    return 0 if others is not None and not others else int(GRACE * 1000)


def end_own_group(grace=GRACE):
    """Ends the other processes of this process's group, when it leads one:
    SIGTERM (this process ignores it from now on), then SIGKILL to those
    left after ``grace`` seconds, and, when some process of this one keeps
    forking new ones (a ``multiprocessing`` pool replacing the workers
    killed), SIGKILL to the whole group, this process too (it does not
    return then). Returns how many processes it found there
    (0: nothing done; -1: some, without ``/proc`` to count them). Where there is no ``/proc`` it cannot tell them
    apart from itself: it sends SIGTERM, waits for its own children of the
    group to end, and sends the group SIGKILL (this process too: it does not
    return then) when any is left. Call it from the main thread, as the
    process exits."""
    try:
        me = os.getpid()
        if os.getpgrp() != me:
            return 0  # not our group: it may be the host's
        others = group_members(me, me)
        if others is not None and not others:
            return 0
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _hold_forks()
        os.killpg(me, signal.SIGTERM)
    except (AttributeError, OSError, ValueError):
        return 0
    found = len(others) if others is not None else -1
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        time.sleep(POLL)
        if others is None:
            if not _children_left(me):
                return found
        else:
            others = group_members(me, me)
            if not others:
                return found
    if others is None:
        os.killpg(me, signal.SIGKILL)  # this process too
        return found
    for _ in range(KILL_ROUNDS):
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # gone meanwhile
        time.sleep(POLL)
        others = group_members(me, me)
        if not others:
            return found
    # Something of ours forks anew what is killed (a multiprocessing pool's
    # handler thread, while a call holds the pool): the last ones forked
    # stayed running for good. One SIGKILL to the whole group, this process
    # included, reaches every member at once, a fork under way too.
    os.killpg(me, signal.SIGKILL)
    return found


def _hold_forks():
    """From now on, a thread of this process that forks (``os.fork``: a
    ``multiprocessing`` pool's handler thread replacing the workers killed)
    waits for ever before its fork: this process is on its way out
    (``os._exit``), and a child forked after the last look at the group
    outlived it, re-parented to init (under load, the handler thread forked
    while that look read ``/proc``). The main thread, ending the group,
    never forks. Python >= 3.7 (``os.register_at_fork``)."""
    register = getattr(os, "register_at_fork", None)
    if register is None:
        return
    main = threading.main_thread()
    held = threading.Event()  # never set

    def before():
        if threading.current_thread() is not main:
            held.wait()

    register(before=before)


def _children_left(pgid):
    """Whether a child of this process in group ``pgid`` still runs; reaps
    those that ended."""
    try:
        while True:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
            if pid == 0:
                return True
    except ChildProcessError:
        return False
    except OSError:
        return False
