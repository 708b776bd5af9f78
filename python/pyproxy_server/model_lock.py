"""Waiting for a ``threadsafe = False`` model's lock so that a cancel ends the wait.

A call that finds the model busy used to block in ``lock.acquire()``, where a
cancel's ``KeyboardInterrupt`` cannot fire (it is C code): a call whose client
left while a stream ahead of it generated held its thread until that stream
ended, counted as stuck, and ``--max-stuck-threads`` such calls (chat clients
giving up on their turn) had the worker killed as wedged, the stream it was
serving with it. Here the wait is shielded from the interrupt
(``CallRunner.defer_interrupt``: a cancel only marks the call) and looks at
the cancel between tries, so a cancelled call leaves its wait within
``POLL`` seconds, without the lock.

The lock is never left held by an interrupt: while the call is shielded no
interrupt is injected, and the caller ends the shield (``CallRunner.unshield``,
which raises a cancel's due interrupt) inside the ``try`` whose ``finally``
releases the lock. Every call takes the lock here, a free one too (about
1 us more than a ``with``): a caller that looked first (``locked()``) and
took a free-looking lock with ``with`` blocked uninterruptibly when another
caller took it in between, as at each hand-over from one call to the next
(chaos44: 6 of 1152 calls cancelled around hand-overs waited a whole call).
"""

__all__ = ["POLL", "take"]

from .call import current_call
from .execution import CallRunner

# Seconds between two tries at a busy model's lock: how long a cancelled call
# may still wait (a wake-up every 50 ms per waiting call costs nothing).
POLL = 0.05

_defer_interrupt = CallRunner.defer_interrupt
_unshield = CallRunner.unshield


def take(lock):
    """Takes ``lock``, a thread-unsafe model's, on the current thread.

    Returns the call to unshield (``CallRunner.unshield``) first thing inside
    the ``try`` whose ``finally`` releases the lock, or None (no call of this
    thread to shield: the lock was taken by a plain ``acquire``, as before).
    A call cancelled while it waits gets its ``KeyboardInterrupt`` here,
    without the lock.
    """
    call = current_call.get()
    if call is None or not _defer_interrupt(call):
        # No interrupt can come for this thread now (another thread's call,
        # or a shield on already), or one did and fired in defer_interrupt.
        lock.acquire()
        return None
    while not lock.acquire(timeout=POLL):
        if call.interrupted:
            _unshield(call)  # raises the cancel's KeyboardInterrupt
    return call
