"""What a process that model code forks keeps of the server: nothing that
ties it to the server's loop, connections or calls.

A child (``multiprocessing``'s ``fork`` start method, Linux's default up to
Python 3.13; ``os.fork``) is a copy of the forking call's thread alone: the
other threads of the server (the event loop, other calls) are gone, and so
is every lock they held at that moment, held for good in the child.
``ForkedChild.install()`` registers ``os.register_at_fork`` hooks, run at
each fork (the server's calls pay nothing), that give the child:

- SIGTERM and SIGINT as a fresh process has them, from the fork on;
- no call: ``pyproxy_server.call.current_call`` (and ``current_batch``) are
  ``None``, so ``pyproxy.host`` fails at once in the child, and the server's
  ``logging`` handlers take no call's lock (``ShieldedLock``);
- its own output: ``capture.in_forked_child``; and its own stream on the
  server's log file (``in_forked_child`` of its handler).

Signals. The server's event loop handles SIGTERM and SIGINT
(``loop.add_signal_handler``): CPython's C-level handler writes each
signal's number to the loop's wakeup socket (``signal.set_wakeup_fd``), a
socket that a forked child shares with this process. The child must forget
both, so that ``Pool.terminate()`` (the end of ``with Pool(...)``), which
sends each of its workers SIGTERM, ends the worker and only the worker.

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

    ForkedChild.install()  # once, after the loop's signal handlers are added
"""

import logging
import os
import signal
import threading

from . import capture
from .call import current_batch, current_call

__all__ = ["ForkedChild"]


class ForkedChild:
    """The ``os.register_at_fork`` hooks (``install``) that leave a forked
    child nothing of the server's loop, connections and calls."""

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
        # The forking thread's context (the hooks run in it) is the child's.
        current_call.set(None)
        current_batch.set(None)
        capture.in_forked_child()
        # The server's log file handler (``__main__._PrivateLogHandler``).
        for handler in _server_handlers():
            forget = getattr(handler, "in_forked_child", None)
            if forget is not None:
                forget()
        # Last, so that a SIGINT that came since the fork (KeyboardInterrupt,
        # which ends this hook) cuts none of the above short; a SIGTERM ends
        # the child here.
        self._restore()

    def _restore(self):
        mask = getattr(self._saved, "mask", None)
        if mask is not None:
            self._saved.mask = None
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _server_handlers():
    # The root logger's and the server's (``setup_logging``), each once; read
    # without logging's locks (the child has no other thread).
    handlers = list(logging.root.handlers)
    server = logging.root.manager.loggerDict.get("pyproxy_server")
    for handler in getattr(server, "handlers", ()):
        if handler not in handlers:
            handlers.append(handler)
    return handlers
