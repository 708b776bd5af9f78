"""``logging``'s locks, taken shielded from a cancel's interrupt.

A cancel injects ``KeyboardInterrupt`` into its call's thread
(``CallRunner.cancel``); it fires at whatever bytecode runs then. Up to
Python 3.12, ``logging`` takes its locks with a Python-level call before its
``try``::

    self.acquire()          # Handler.handle, flush, close...; _acquireLock()
    try:                    # the module's lock: getLogger, a level cache miss
        self.emit(record)
    finally:
        self.release()

An interrupt that fired as ``acquire`` returned, before the ``try``, left
the lock held for ever by a call that was over: the next record the
server's loop thread logged waited for it for good, and the worker, which
answered nothing more (pings included), was killed by its host.

So the server's handlers (``ShieldedLock``) and, up to 3.12, the module's
lock (``shield_module_lock``) take their lock on a call's thread shielded
from its cancel (``CallRunner.defer_interrupt``): a cancel that comes
meanwhile is due, and raised as the lock is released. Python 3.13 takes
these locks with ``with``, whose entry an interrupt no longer splits (3.10
on). A handler a model adds itself, and locks of other modules, are not
covered.
"""

import logging
import threading

from .call import current_call
from .execution import CallRunner

__all__ = ["ShieldedLock", "shield_module_lock"]

_get_call = current_call.get
_defer_interrupt = CallRunner.defer_interrupt
_unshield = CallRunner.unshield
# Per thread: for each lock held, the call its acquire shielded (else None).
# The locks are released in the reverse order (try/finally), so a stack.
_held = threading.local()


def _shield():
    # Before the lock is taken: a pending interrupt fires here, holding nothing.
    call = _get_call()
    if call is not None and _defer_interrupt(call):
        return call
    return None


def _push(call):
    try:
        _held.calls.append(call)
    except AttributeError:
        _held.calls = [call]


def _unshield_last():
    # After the lock is released: raises the interrupt of a cancel that came
    # meanwhile. Nothing to pop: a lock taken before shield_module_lock.
    try:
        call = _held.calls.pop()
    except (AttributeError, IndexError):
        return
    if call is not None:
        _unshield(call)


class ShieldedLock:
    """Mixin for a ``logging.Handler``: ``acquire``/``release`` (which
    ``handle``, ``flush``, ``close``... call up to Python 3.12) run shielded
    from a cancel's interrupt on a call's thread, so that none fires between
    the lock's taking and the ``try`` that releases it.

    Example::

        class SafeStreamHandler(ShieldedLock, logging.StreamHandler):
            pass
    """

    def acquire(self):
        """Take the handler's lock; on a call's thread, shielded until ``release``."""
        call = _shield()
        lock = self.lock
        if lock:
            lock.acquire()
        _push(call)

    def release(self):
        """Release the handler's lock; raises the interrupt of a cancel that came meanwhile."""
        lock = self.lock
        if lock:
            lock.release()
        _unshield_last()


def _acquire_module_lock():
    # logging._acquireLock, shielded (Python <= 3.12).
    call = _shield()
    lock = logging._lock
    if lock:
        lock.acquire()
    _push(call)


def _release_module_lock():
    lock = logging._lock
    if lock:
        lock.release()
    _unshield_last()


def shield_module_lock():
    """Make ``logging``'s module lock (``getLogger``, ``addHandler``, a
    logger's level cache...) shielded as ``ShieldedLock``'s, on Pythons whose
    ``logging`` takes it with ``_acquireLock()`` (up to 3.12). True when
    done (idempotent)."""
    if not hasattr(logging, "_acquireLock") or not hasattr(logging, "_releaseLock"):
        return False  # 3.13 on: `with _lock:`
    logging._acquireLock = _acquire_module_lock
    logging._releaseLock = _release_module_lock
    return True
