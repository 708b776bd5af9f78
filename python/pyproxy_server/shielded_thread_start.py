"""``threading.Thread.start`` on a call's thread, shielded from a cancel's
interrupt (Python up to 3.11).

A cancel injects ``KeyboardInterrupt`` into its call's thread
(``CallRunner.cancel``, ``PyThreadState_SetAsyncExc`` by thread id). Up to
Python 3.11 a thread's state is created by the thread that starts it, with
that thread's id, and takes its own id only once the new thread runs; it is
first in the interpreter's list, and ``PyThreadState_SetAsyncExc`` sets the
exception on the first state with the id. A cancel that came in that window
went to the new thread, which died of it before it ran a line of its own
(before it set ``_started``: "Exception ignored in thread started by ...
KeyboardInterrupt"), and the call, in ``Thread.start``, waited for that
thread's start for ever: a call or an eval that started a thread (a
``ThreadPoolExecutor``'s first ``submit`` too) and was cancelled then never
ended, its thread stuck, and an eval's worker was killed at ``cancelGrace``
with its sessions (chaos41: 3 workers lost in 325 cancelled evals, 4 sessions
of a worker at once; a thread starting threads in a loop hangs within 1 to 57
cancels). Python 3.12 gives a new thread's state its id as it runs, so no
cancel reaches it.

So ``install`` wraps ``Thread.start`` on 3.9 to 3.11: on a call's own thread
the call is shielded (``CallRunner.defer_interrupt``) until the new thread
runs (``Thread.start`` waits for it), and a cancel that came meanwhile is
raised as ``start`` returns, in the call's thread. Threads started with
``_thread.start_new_thread`` directly are not covered.

Example::

    ShieldedThreadStart.install()  # once, as the server starts
"""

import sys
import threading
import time

from .call import current_call
from .execution import CallRunner

__all__ = ["ShieldedThreadStart"]

_get_call = current_call.get
_defer_interrupt = CallRunner.defer_interrupt
_end_shield = CallRunner.end_shield
# Non-blocking tries at the call's lock as the shield ends (``_unshield_now``).
_TRIES = 100


def _unshield_now(call):
    # ``CallRunner.unshield`` without a blocking wait for the call's lock:
    # the thread just started may hold it (model code that takes it, as a
    # test of forked children does) until this call goes on. Tries for ~20
    # ms; then ends the shield without it: no cancel runs while another
    # thread holds it (``CallRunner.cancel`` takes it).
    lock = call.lock
    for _ in range(_TRIES):
        if lock.acquire(False):
            try:
                call.shielded = False
                due = call.interrupted
            finally:
                lock.release()
            break
        time.sleep(0.0002)
    else:
        call.shielded = False
        due = call.interrupted
    if due:
        raise KeyboardInterrupt


class ShieldedThreadStart:
    """Wraps ``threading.Thread.start`` (``install``) where a cancel may
    reach the thread being started instead of the call starting it."""

    @staticmethod
    def needed(version=sys.version_info):
        """Whether this Python gives a new thread's state its starter's id
        until it runs (3.11 and older)."""
        return version < (3, 12)

    @classmethod
    def install(cls):
        """Wrap ``Thread.start`` where ``needed``; return whether it did
        (once: a second call changes nothing)."""
        if not cls.needed() or getattr(threading.Thread.start, "_pyproxy_shielded", False):
            return False
        start = threading.Thread.start

        def shielded_start(self):
            # Before the new thread exists: a pending interrupt fires here.
            call = _get_call()
            if call is None or not _defer_interrupt(call):
                return start(self)
            try:
                start(self)
            except BaseException:
                _end_shield(call)  # a cancel that came meanwhile fires next
                raise
            _unshield_now(call)  # raises the interrupt of a cancel that came meanwhile

        shielded_start._pyproxy_shielded = True
        shielded_start.__doc__ = start.__doc__
        shielded_start.__name__ = start.__name__
        shielded_start.__qualname__ = start.__qualname__
        threading.Thread.start = shielded_start
        return True
