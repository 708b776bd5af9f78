"""SIGTERM and SIGINT in a child that model code forks, as a fresh process has them.

The server's event loop handles SIGTERM and SIGINT (``loop.add_signal_handler``):
CPython's C-level handler writes each signal's number to the loop's wakeup
socket (``signal.set_wakeup_fd``), a socket that a forked child shares with
this process. A child (``multiprocessing``'s ``fork`` start method, Linux's
default up to Python 3.13; ``os.fork``) must forget both, so that
``Pool.terminate()`` (the end of ``with Pool(...)``), which sends each of its
workers SIGTERM, ends the worker and only the worker.

An ``after_in_child`` hook alone left a window: a signal that reached the
child between ``fork()`` and that hook (the hooks registered before it run
first: ``threading``'s, ``logging``'s, ``random``'s...) was written to the
shared socket, and this server's loop took it for its own SIGTERM and
stopped, with every call it ran (exit code 0, "stopping" in its log and no
other reason). A pool whose first worker did all the tasks while the second,
forked on a busy machine, had not yet run its hooks sent that one SIGTERM as
the pool ended: 11 servers stopped in ~470 pools of two on 2 loaded cores
(Python 3.11). 3.12's asyncio resets the socket in a hook of its own, with
the same window. The child ignored the signal, too (the loop's handler does
nothing in it). So both signals are blocked in the forking thread across
``fork()`` (``before``) and unblocked in the child once the wakeup socket and
the handlers are reset: a signal sent meanwhile is then delivered by its
default action (SIGTERM ends the child). Each fork costs two
``pthread_sigmask`` calls; the server's calls pay nothing.

Example::

    ForkSignals.install()  # once, after the loop's signal handlers are added
"""

import os
import signal
import threading

__all__ = ["ForkSignals"]


class ForkSignals:
    """The ``os.register_at_fork`` hooks (``install``) that keep a forked
    child's SIGTERM and SIGINT away from this process's event loop."""

    # The signals the server's loop handles (``main``).
    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        # Per forking thread: its signal mask before ``_before`` blocked ours.
        self._saved = threading.local()

    @classmethod
    def install(cls):
        """Register the hooks; return them (None where there is no fork)."""
        if not hasattr(os, "register_at_fork"):
            return None
        hooks = cls()
        if hasattr(signal, "pthread_sigmask"):
            os.register_at_fork(before=hooks._before, after_in_parent=hooks._restore, after_in_child=hooks._after_in_child)
        else:  # no signal masks: the reset alone, with its window
            os.register_at_fork(after_in_child=hooks._after_in_child)
        return hooks

    def _before(self):
        # Inherited by the child; other threads of this process, which do not
        # block them, take the signals sent to it meanwhile.
        self._saved.mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)

    def _after_in_child(self):
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        except (ValueError, OSError):  # not the child's main thread: nothing to undo
            pass
        # Now a SIGTERM that came since the fork ends the child here.
        self._restore()

    def _restore(self):
        mask = getattr(self._saved, "mask", None)
        if mask is not None:
            self._saved.mask = None
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
