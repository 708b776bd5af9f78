"""``CallExecutor``: the threads of threaded model calls, kept at full strength.

A cancelled call is interrupted with an injected ``KeyboardInterrupt``, which
fires only at the thread's next bytecode: a call blocked in C
(``time.sleep(600)``, a socket read, a lock) keeps its thread. Such a thread
is *stuck* once its call was cancelled (or its connection closed) and is
still running ``STUCK_GRACE`` seconds later; the ``CallRunner`` reports it
with ``mark_stuck(ident)``, and the executor starts a thread in its place,
so ``size`` threads stay available to the calls that still have a client.
A stuck thread that finally returns is one thread too many and exits.

At most ``max_stuck`` threads are replaced at a time: a thread that gets
stuck beyond that cannot be replaced, and ``mark_stuck`` returns why the
server is *wedged* (``Server.wedge`` tells the host, which replaces the
process). So the process never holds more than ``size + max_stuck`` call
threads.

The hot path (``submit`` and each thread's loop) costs less than
``ThreadPoolExecutor``'s: no ``Future``, no work item object, no semaphore
(an idle thread leaves a token in a list; ``list.append``/``pop`` are
atomic).

Example::

    executor = CallExecutor(4, max_stuck=4)
    executor.submit(print, "hello from a call thread")
"""

import itertools
import logging
import queue
import threading

__all__ = ["CallExecutor"]

log = logging.getLogger("pyproxy_server.call_executor")

_get_ident = threading.get_ident


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
        # Idents of stuck threads (read without the lock on the hot path:
        # an empty set means nothing to do).
        self.stuck = set()
        self._name = name
        self._queue = queue.SimpleQueue()
        self._put = self._queue.put
        self._idle = []  # one token per thread waiting for work
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
        """Run ``fn(arg)`` on a thread; raises ``RuntimeError`` after ``shutdown``."""
        if self._shutdown:
            raise RuntimeError("Cannot submit: the executor is shut down")
        self._put((fn, arg))
        try:
            self._idle.pop()
        except IndexError:
            self._grow()

    def mark_stuck(self, ident):
        """Replace thread ``ident``, stuck in a cancelled call.

        Returns ``None``, or the reason the executor is wedged when the
        thread cannot be replaced (more than ``max_stuck`` stuck threads, or
        no thread can be started). Unknown idents (another executor's
        threads) are ignored.
        """
        with self._lock:
            if self._shutdown or ident not in self._members or ident in self.stuck:
                return None
            self.stuck.add(ident)
            stuck = len(self.stuck)
            if stuck > self.max_stuck:
                reason = (
                    "%d call threads are stuck in cancelled calls (blocked outside Python bytecode); "
                    "at most %d are replaced (--max-stuck-threads)" % (stuck, self.max_stuck)
                )
            else:
                reason = None
                self.replaced += 1
                log.warning("call thread %d is stuck in a cancelled call: replaced (%d stuck)", ident, stuck)
                # Work waiting for a thread gets one now; otherwise the next
                # submit starts it (threads start lazily, as they always do).
                if not self._queue.empty():
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
            if self._count - len(self.stuck) - self._exits > self.size:
                self._exits += 1

    def shutdown(self, wait=False):
        """Stop taking work; idle threads exit (busy ones when their item ends).

        ``wait=True`` also waits for every thread to exit (stuck ones too).
        """
        with self._lock:
            self._shutdown = True
            count = self._count
            threads = list(self._threads)
        for _ in range(count):
            self._put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _grow(self):
        with self._lock:
            reason = self._grow_locked()
            if reason is not None and self.wedged is None:
                self.wedged = reason

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
        get = self._queue.get
        idle = self._idle
        try:
            while True:
                item = get()
                if item is None:
                    return
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
                idle.append(ident)
        finally:
            with self._lock:
                self._count -= 1
                self._members.discard(ident)
                self._threads.discard(threading.current_thread())
                self.stuck.discard(ident)
