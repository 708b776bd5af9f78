"""``CallExecutor``: the threads of threaded model calls, kept at full strength.

A cancelled call is interrupted with an injected ``KeyboardInterrupt``, which
fires only at the thread's next bytecode: a call blocked in C
(``time.sleep(600)``, a socket read, a lock) keeps its thread. Such a thread
is *stuck* once its call was cancelled (or its connection closed) and is
still running ``STUCK_GRACE`` seconds later; the ``CallRunner`` reports it
with ``mark_stuck(ident)``, and the executor starts a thread in its place,
so ``size`` threads stay available to the calls that still have a client.
A stuck thread that finally returns is one thread too many and exits.

At most ``max_stuck`` threads are replaced at a time (``stuck`` holds the
replaced ones): a thread that gets stuck beyond that is not replaced, and
``mark_stuck`` returns why the server is *wedged* (``Server.wedge`` tells the
host, which replaces the process). So the process never holds more than
``size + max_stuck`` call threads. ``submit`` returns a reason too when no
thread can be started at all (a ulimit).

The hot path (``submit`` and each thread's loop) costs less than
``ThreadPoolExecutor``'s: no ``Future``, no work item object, no semaphore.
An idle thread puts its own queue (its *slot*) in ``_idle``, and ``submit``
pops one and hands the item to that very thread, so ``_idle`` holds exactly
the threads that wait for work (``list.append``/``pop``/``remove`` are
atomic). Work that finds no idle thread waits in ``_backlog``, which a thread
looks at before it waits; one that waits already is woken to take it.

Example::

    executor = CallExecutor(4, max_stuck=4)
    executor.submit(print, "hello from a call thread")
"""

import collections
import itertools
import logging
import queue
import threading

__all__ = ["CallExecutor"]

log = logging.getLogger("pyproxy_server.call_executor")

_get_ident = threading.get_ident

# Put in an idle thread's slot instead of an item: "look at the backlog".
_WAKE = (None, None)


class CallExecutor:
    """``size`` threads running ``fn(arg)`` work items; stuck ones are replaced."""

    # Seconds a cancelled call may keep its thread before the thread counts as stuck.
    STUCK_GRACE = 0.5

    def __init__(self, size, max_stuck=16, name="pyproxy-call"):
        if size < 1:
            raise ValueError("size must be >= 1")
        if max_stuck < 0:
            raise ValueError("max_stuck must be >= 0")
        self.size = size
        self.max_stuck = max_stuck
        # Why the executor could not keep its threads (sticky), else None.
        self.wedged = None
        # Threads started in place of stuck ones, ever.
        self.replaced = 0
        # Idents of the stuck threads that were replaced, at most max_stuck
        # (read without the lock on the hot path: empty means nothing to do).
        self.stuck = set()
        # Idents of the stuck threads beyond max_stuck (not replaced).
        self._unreplaced = set()
        # What each stuck thread runs (``mark_stuck``'s ``what``), replaced
        # or not: the wedged reason names the calls that hold the threads.
        self._stuck_what = {}
        self._name = name
        # Work no idle thread took yet (deque append/popleft are atomic).
        self._backlog = collections.deque()
        # The slots (SimpleQueue) of the threads waiting for work, one each.
        self._idle = []
        self._lock = threading.Lock()
        self._members = set()  # idents of this executor's threads
        self._threads = set()  # their Thread objects (for shutdown(wait=True))
        self._count = 0  # threads started and not exited
        self._exits = 0  # threads that should exit after their current item
        self._shutdown = False
        self._seq = itertools.count(1)

    @property
    def threads(self):
        """Threads alive (stuck ones included)."""
        return self._count

    @property
    def idle(self):
        """Threads waiting for work."""
        return len(self._idle)

    def submit(self, fn, arg):
        """Run ``fn(arg)`` on a thread; raises ``RuntimeError`` after ``shutdown``.

        Returns ``None``, or the reason the executor is wedged when it needed
        a thread and could not start one (the item waits for a busy thread,
        and there may be none that ever returns: the caller tells the host).
        """
        if self._shutdown:
            raise RuntimeError("Cannot submit: the executor is shut down")
        idle = self._idle
        if idle:
            try:
                idle.pop().put((fn, arg))
                return None
            except IndexError:  # another thread took the last one
                pass
        self._backlog.append((fn, arg))
        # A thread that went idle meanwhile may have looked at the backlog
        # before the item was in it: wake it.
        if idle:
            try:
                idle.pop().put(_WAKE)
                return None
            except IndexError:
                pass
        if self._count - len(self.stuck) - self._exits >= self.size:
            return None  # every thread is busy: the item waits (checked again under the lock)
        return self._grow()

    def mark_stuck(self, ident, what=None):
        """Replace thread ``ident``, stuck in a cancelled call (``what``: the
        call as the log names it, e.g. ``executeModel of model 'm'``).

        Returns ``None``, or the reason the executor is wedged when the
        thread cannot be replaced (more than ``max_stuck`` stuck threads, or
        no thread can be started). Unknown idents (another executor's
        threads) are ignored.
        """
        with self._lock:
            if self._shutdown or ident not in self._members or ident in self.stuck or ident in self._unreplaced:
                return None
            stuck = len(self.stuck) + len(self._unreplaced) + 1
            self._stuck_what[ident] = what
            if len(self.stuck) >= self.max_stuck:
                # Not replaced, so not in ``stuck``: it still counts as one of
                # the ``size`` threads, and no thread beyond
                # ``size + max_stuck`` is ever started.
                self._unreplaced.add(ident)
                reason = (
                    "%d call threads are stuck in cancelled calls (blocked outside Python bytecode: "
                    "a lock, a sleep or I/O without a timeout of its own)%s; at most %d are replaced "
                    "(--max-stuck-threads)" % (stuck, self._stuck_calls(), self.max_stuck)
                )
            else:
                reason = None
                self.stuck.add(ident)
                self.replaced += 1
                log.warning(
                    "call thread %d is stuck in a cancelled call%s: replaced (%d stuck)",
                    ident,
                    "" if what is None else " (%s)" % what,
                    stuck,
                )
                # Work waiting for a thread gets one now; otherwise the next
                # submit starts it (threads start lazily, as they always do).
                if self._backlog:
                    reason = self._grow_locked()
            if reason is not None and self.wedged is None:
                self.wedged = reason
        return reason

    def unstick(self, ident):
        """Thread ``ident`` returned from its stuck call: one thread is now spare."""
        with self._lock:
            if ident not in self.stuck:
                return
            self.stuck.discard(ident)
            self._stuck_what.pop(ident, None)
            if self._count - len(self.stuck) - self._exits > self.size:
                self._exits += 1

    # Kinds of stuck calls the wedged reason names at most.
    NAMED_STUCK = 5

    def _stuck_calls(self):
        """``: executeModel of model 'a' (12), ...``: the stuck threads'
        calls by label, most first (at most ``NAMED_STUCK``), or ``""``
        when none has a label. Under ``_lock``."""
        counts = collections.Counter(what for what in self._stuck_what.values() if what is not None)
        if not counts:
            return ""
        top = counts.most_common(self.NAMED_STUCK)
        shown = ", ".join("%s (%d)" % pair for pair in top)
        rest = sum(counts.values()) - sum(n for _, n in top)
        return ": %s%s" % (shown, ", and %d more" % rest if rest else "")

    def shutdown(self, wait=False):
        """Stop taking work; idle threads exit (busy ones once the work queued
        before is done).

        ``wait=True`` also waits for every thread to exit (stuck ones too).
        """
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        # A thread going idle after this sees the flag and exits by itself.
        idle = self._idle
        while True:
            try:
                idle.pop().put(None)
            except IndexError:
                break
        if wait:
            for thread in threads:
                thread.join()

    def _grow(self):
        with self._lock:
            reason = self._grow_locked()
            if reason is not None and self.wedged is None:
                self.wedged = reason
        return reason

    def _grow_locked(self):
        # Live threads: neither stuck nor about to exit.
        if self._shutdown or self._count - len(self.stuck) - self._exits >= self.size:
            return None
        thread = threading.Thread(target=self._work, name="%s-%d" % (self._name, next(self._seq)), daemon=True)
        self._count += 1
        self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": out of memory or a ulimit
            self._count -= 1
            self._threads.discard(thread)
            log.error("cannot start a call thread: %s", exc)
            return "cannot start a call thread (%s); %d running, %d stuck" % (exc, self._count, len(self.stuck))
        return None

    def _work(self):
        ident = _get_ident()
        with self._lock:
            self._members.add(ident)
        slot = queue.SimpleQueue()
        get = slot.get
        idle = self._idle
        backlog = self._backlog
        popleft = backlog.popleft
        item = None
        try:
            while True:
                # The next item: the backlog's first, else one handed to
                # this thread while it waits in ``idle``.
                if backlog:
                    try:
                        item = popleft()
                    except IndexError:  # another thread took it
                        continue
                elif self._shutdown:
                    return
                else:
                    idle.append(slot)
                    # Work put in the backlog before ``slot`` was in ``idle``
                    # found no thread to wake, and shutdown may have passed.
                    if backlog or self._shutdown:
                        try:
                            idle.remove(slot)
                            continue
                        except ValueError:
                            pass  # a submit (or shutdown) took the slot: it has an item
                    item = get()
                    if item is None:
                        return
                    if item is _WAKE:
                        continue
                try:
                    item[0](item[1])
                except BaseException:  # never let a work item take the thread down
                    log.exception("call thread: a work item failed")
                item = None
                if self.stuck and ident in self.stuck:
                    self.unstick(ident)
                if self._exits:
                    with self._lock:
                        if self._exits > 0:
                            self._exits -= 1
                            return
        finally:
            with self._lock:
                self._count -= 1
                self._members.discard(ident)
                self._threads.discard(threading.current_thread())
                self.stuck.discard(ident)
                self._unreplaced.discard(ident)
                self._stuck_what.pop(ident, None)
