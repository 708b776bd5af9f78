"""``ModelLock``: a ``threadsafe = False`` model's lock, whose waiters a cancel wakes.

A call that finds the model busy used to block in ``lock.acquire()``, where a
cancel's ``KeyboardInterrupt`` cannot fire (it is C code): a call whose client
left while a stream ahead of it generated held its thread until that stream
ended, counted as stuck, and ``--max-stuck-threads`` such calls (chat clients
giving up on their turn) had the worker killed as wedged, the stream it was
serving with it. Then the wait polled the cancel every 50 ms (about 0.1% of a
core per waiting call: 160 waiters took 11-15% of one).

Here each waiter blocks on a token of its own, released either by the
holder's ``release`` (which hands the lock over to the first waiter: first
come, first served) or by the call's cancel (``CallRunner.cancel`` calls
``Call.wake``, which takes the waiter out of the queue): a cancelled call
leaves its wait at once, without the lock, and an idle waiter costs nothing.
The wait is shielded from the interrupt (``CallRunner.defer_interrupt``: a
cancel only marks the call); the caller ends the shield
(``CallRunner.unshield``, which raises a cancel's due interrupt) inside the
``try`` whose ``finally`` releases the lock.

``release`` is Python code, where an interrupt could fire half-way through a
hand-over: it shields the call for its work, and a caller whose ``release``
raised the interrupt calls ``release_if_owned`` (the interrupt fired as
``release`` was entered, before it did anything). A call has one interrupt
at most, so that clean-up runs without one.
"""

__all__ = ["ModelLock", "check_timeout", "take"]

import collections
import threading

from .call import current_call
from .execution import CallRunner, _interrupt_thread, _pass_eval_breaker

_allocate_lock = threading.Lock
_get_ident = threading.get_ident
_TIMEOUT_MAX = threading.TIMEOUT_MAX
_defer_interrupt = CallRunner.defer_interrupt
_unshield = CallRunner.unshield


def check_timeout(blocking, timeout):
    """Raises as ``threading.Lock.acquire`` does for a ``timeout`` it refuses
    (negative other than -1, too large, not a number, given with
    ``blocking=False``), before any waiter is queued: a waiter queued by an
    ``acquire`` that then raised was handed the lock by the next
    ``release``, which nobody took, and the lock was held for good (a
    model's ``acquire(timeout=deadline - time.monotonic())`` past its
    deadline). Only called for a timeout other than -1."""
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0:
        raise ValueError("timeout value must be a non-negative number")
    if timeout > _TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")


# ``_Waiter.state`` values.
_WAITING, _GRANTED, _LEFT = 0, 1, 2


class _Waiter:
    """One queued ``acquire``: ``token`` is held until the waiter is handed
    the lock (``_GRANTED``) or leaves the queue (``_LEFT``: a cancel, a
    timeout). Or one queued ``queue(callback)``: no thread waits, the
    hand-over calls ``callback``."""

    __slots__ = ("token", "ident", "state", "callback")

    def __init__(self, ident, callback=None):
        if callback is None:
            self.token = _allocate_lock()
            self.token.acquire()
        self.ident = ident
        self.state = _WAITING
        self.callback = callback


class ModelLock:
    """A lock (``acquire``, ``release``, ``with``) handed over to its waiters
    first come, first served, whose waits a call's cancel can end
    (``acquire_for``).

    Example::

        lock = ModelLock()
        with lock:
            ...                      # one thread at a time
        call = take(lock)            # in a call: a cancel ends the wait
    """

    __slots__ = ("_held", "_mutex", "_waiters", "_owner", "_holder", "__weakref__")

    def __init__(self):
        # Held while someone owns the lock, and across hand-overs: while
        # waiters queue it is never free, so nobody overtakes them.
        self._held = _allocate_lock()
        # Guards _waiters, _owner and each waiter's state; never held while blocking.
        self._mutex = _allocate_lock()
        self._waiters = collections.deque()
        # The owner's thread ident (None when free): see release_if_owned.
        self._owner = None
        # The call that holds a ``pyproxy.Lock`` (``pyproxy.lock``), else
        # None: set by its ``acquire`` in a call, cleared by every release.
        self._holder = None

    def locked(self):
        """True while someone holds the lock."""
        return self._held.locked()

    def acquire(self, blocking=True, timeout=-1):
        """Takes the lock as ``threading.Lock.acquire`` does (no cancel ends
        this wait): True when taken."""
        if timeout != -1:
            check_timeout(blocking, timeout)
        if self._held.acquire(False):
            self._owner = _get_ident()
            return True
        if not blocking:
            return False
        return self._wait(None, timeout)

    __enter__ = acquire

    def acquire_for(self, call, timeout=-1):
        """Takes the lock for ``call``, shielded (``CallRunner.defer_interrupt``)
        on its own thread: True when taken; False when ``timeout`` passed or
        the call was cancelled (then ``call.interrupted``), without the lock."""
        if self._held.acquire(False):
            self._owner = _get_ident()
            return True
        return self._wait(call, timeout)

    def _wait(self, call, timeout):
        ident = _get_ident()
        mutex = self._mutex
        with mutex:
            if self._held.acquire(False):
                self._owner = ident
                return True
            waiter = _Waiter(ident)
            self._waiters.append(waiter)
        if call is None:
            waiter.token.acquire(True, timeout)
            return self._settle(waiter)
        previous = call.wake

        def wake():
            self._leave(waiter)
            if previous is not None:
                previous()

        call.wake = wake
        try:
            # A cancel that came before wake was set found none to call.
            if call.interrupted:
                self._leave(waiter)
            waiter.token.acquire(True, timeout)
        finally:
            call.wake = previous
        return self._settle(waiter)

    def _settle(self, waiter):
        # After the token: True when handed the lock; else out of the queue.
        with self._mutex:
            if waiter.state == _WAITING:  # timed out
                self._waiters.remove(waiter)
                waiter.state = _LEFT
            return waiter.state == _GRANTED

    def _leave(self, waiter):
        """A cancel: takes a waiter still queued out and wakes it (any thread)."""
        with self._mutex:
            if waiter.state != _WAITING:
                return
            self._waiters.remove(waiter)
            waiter.state = _LEFT
        waiter.token.release()

    def release(self):
        """Hands the lock to the first waiter, or frees it."""
        # CallRunner.defer_interrupt and end_shield, inline (the hot path).
        call = current_call.get()
        shielded = False
        if call is not None and call.thread_ident == _get_ident():
            with call.lock:
                interrupted = call.interrupted
                if not interrupted and not call.shielded:
                    call.shielded = shielded = True
            if interrupted:  # its interrupt, if still pending, fires here: before any change
                _pass_eval_breaker()
        granted = None
        try:
            with self._mutex:
                self._holder = None
                waiters = self._waiters
                if waiters:
                    waiter = waiters.popleft()
                    waiter.state = _GRANTED
                    self._owner = waiter.ident
                    if waiter.callback is None:
                        waiter.token.release()
                    else:
                        granted = waiter.callback
                else:
                    self._owner = None  # None already when not held
                    self._held.release()  # RuntimeError when not held
            if granted is not None:
                granted()
        finally:
            # Also after a release of a lock not held (which a model may catch):
            # a shield left on made the call's cancel never fire.
            if shielded:
                with call.lock:  # a cancel that came meanwhile fires now
                    call.shielded = False
                    if call.interrupted:
                        _interrupt_thread(call.thread_ident)

    def queue(self, callback):
        """Takes the lock for work that no thread waits for: ``callback()``
        is called once the lock is this work's, now (the lock was free) or
        at a ``release`` (on that thread: it must only schedule the work,
        and not raise). The work runs on a thread of its own and ends with
        ``release``; that thread may ``claim`` the lock first."""
        with self._mutex:
            free = self._held.acquire(False)
            if free:
                self._owner = None
            else:
                self._waiters.append(_Waiter(None, callback))
        if free:
            callback()

    def claim(self):
        """The lock handed to a ``queue``'s work is this thread's (``release_if_owned``)."""
        self._owner = _get_ident()

    def release_if_owned(self):
        """``release`` when this thread still holds the lock: after an
        interrupt fired as ``release`` was entered."""
        if self._owner == _get_ident() and self._held.locked():
            self.release()

    def __exit__(self, *exc):
        self.release()


def take(lock):
    """Takes ``lock`` (a ``ModelLock``), a thread-unsafe model's, on the current thread.

    Returns the call to unshield (``CallRunner.unshield``) first thing inside
    the ``try`` whose ``finally`` releases the lock, or None (no call of this
    thread to shield: the lock was taken by a plain ``acquire``, as before).
    A call cancelled while it waits gets its ``KeyboardInterrupt`` here,
    without the lock.
    """
    call = current_call.get()
    if call is None or not _defer_interrupt(call):
        # No interrupt can come for this thread now (another thread's call,
        # or a shield on already), or one did and fired in defer_interrupt
        # (raised: no wait), or one fired earlier and was swallowed. A
        # cancelled parked stream, whose cancel injects nothing, no longer
        # comes here: it waits for the lock held, without a thread
        # (StreamProducer._close_when_free).
        lock.acquire()
        return None
    if lock._held.acquire(False):
        lock._owner = _get_ident()
    elif not lock._wait(call, -1):
        _unshield(call)  # raises the cancel's KeyboardInterrupt
    return call
