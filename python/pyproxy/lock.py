"""``Lock``: a lock of the model's own whose wait a cancel of the call ends.

A model that guards something of its own (a GPU, a client that is not
thread-safe) with a ``threading.Lock`` makes a call that waits for it
uncancellable: ``acquire`` is C code, where the cancel's interrupt cannot
fire, so a call whose client left (or whose timeout passed) holds its
thread until the lock is free, and the worker counts it as stuck (past
``--max-stuck-threads`` it is killed as wedged). ``pyproxy.Lock`` waits as
a ``threadsafe = False`` model's calls do: a cancel wakes the waiter, which
raises ``CancelledError`` without the lock; waiters take the lock first
come, first served, and an idle waiter costs no CPU::

    from pyproxy import Lock

    gpu = Lock()

    class Model:
        def execute(self, msg):
            with gpu:               # CancelledError if the call is cancelled meanwhile
                return generate(msg)

Outside a call (a thread of the model's own, ``__init__``, ``close``) it is a
plain lock. ``acquire(blocking=True, timeout=-1)``, ``release()`` and
``locked()`` are ``threading.Lock``'s.

A call that ends cancelled still holding a ``Lock`` it took on its thread
releases it as it ends: the cancel's interrupt can fire as a ``with``'s
``__exit__`` is entered, before its ``release`` (a ``threading.Lock``'s
exit is C code, where it cannot), and the lock would be held for good.
Hand a lock from one call to another only through calls that are not
cancelled, or use a plain ``threading.Lock`` for that.
"""

import threading

from pyproxy_server.call import current_call
from pyproxy_server.errors import CancelledError
from pyproxy_server.execution import CallRunner
from pyproxy_server.model_lock import ModelLock, check_timeout

__all__ = ["Lock"]

_get_ident = threading.get_ident
_defer_interrupt = CallRunner.defer_interrupt
_unshield = CallRunner.unshield


def _cancelled():
    return CancelledError("Cannot acquire lock: the call was cancelled")


def _held_by(call, lock):
    """Makes ``call`` the holder of ``lock``, which it just took on its
    thread; the first one makes the call's end (``Call.on_end``) release
    those it still holds if it was cancelled."""
    lock._holder = call
    held = call.held_locks
    if held is None:
        held = call.held_locks = [lock]
        previous = call.on_end

        def release_held():
            # The call's own clean-up first (a stream's generator closed: its
            # ``with`` blocks release what they hold), then what it still
            # holds: by its holder (every release clears it), not by thread:
            # a stream goes on on any thread and frees its thread while
            # parked, where another stream may take the lock, and a stream
            # that took the lock on one thread and was cancelled on another
            # kept it for good.
            try:
                if previous is not None:
                    previous()
            finally:
                if call.interrupted:
                    for one in held:
                        if one._holder is call and one.locked():
                            one.release()

        call.on_end = release_held
    elif lock not in held:
        held.append(lock)


class Lock(ModelLock):
    """A ``threading.Lock`` whose ``acquire`` in a call raises
    ``CancelledError`` when the call is cancelled (see the module docstring).

    Example::

        from pyproxy import Lock

        client_lock = Lock()
        with client_lock:
            client.send(msg)
    """

    __slots__ = ()

    def acquire(self, blocking=True, timeout=-1):
        """Takes the lock: True, or False when not ``blocking`` or after
        ``timeout`` seconds. In a call, ``CancelledError`` (without the lock)
        when the call is cancelled before or while it waits (a non-blocking
        ``acquire`` too: before it, or as it takes the lock)."""
        if timeout != -1:
            check_timeout(blocking, timeout)  # before the call is shielded or a waiter queued
        call = current_call.get()
        if call is None or call.thread_ident != _get_ident():
            return ModelLock.acquire(self, blocking, timeout)
        # Shielded also when not blocking: an interrupt that fired between
        # taking the lock and ``_held_by`` left it held by no call, out of
        # reach of the end-of-call release.
        try:
            shielded = _defer_interrupt(call)
        except KeyboardInterrupt:  # the cancel's interrupt, still pending
            raise _cancelled() from None
        if not shielded:
            if call.interrupted:  # cancelled already (its interrupt caught by the model)
                raise _cancelled()
            # A shield is on: no cancel can come.
            got = ModelLock.acquire(self, blocking, timeout)
            if got:
                _held_by(call, self)
            return got
        got = self.acquire_for(call, timeout) if blocking else ModelLock.acquire(self, False)
        if got:
            _held_by(call, self)  # shielded: no interrupt fires before it counts
        try:
            _unshield(call)
        except KeyboardInterrupt:
            if got:
                self.release()  # a call has one interrupt: none comes here
            raise _cancelled() from None
        return got

    __enter__ = acquire
