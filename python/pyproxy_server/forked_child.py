"""What a process that model code forks keeps of the server: nothing that
ties it to the server's loop, connections or calls.

A child (``multiprocessing``'s ``fork`` start method, Linux's default up to
Python 3.13; ``os.fork``) is a copy of the forking call's thread alone: the
other threads of the server (the event loop, other calls) are gone, and so
is every lock they held at that moment, held for good in the child.
``ForkedChild.install()`` registers ``os.register_at_fork`` hooks, run at
each fork (the server's calls pay nothing), that give the child:

- SIGTERM, SIGINT and SIGHUP as a fresh process has them, from the fork on;
- no call: ``pyproxy_server.call.current_call`` (and ``current_batch``) are
  ``None``, so ``pyproxy.host`` fails at once in the child, and the server's
  ``logging`` handlers take no call's lock (``ShieldedLock``);
- its own output: ``capture.in_forked_child``; and its own stream on the
  server's log file (``in_forked_child`` of its handler).

Signals. The server's event loop handles SIGTERM and SIGINT, and SIGHUP
(ignored) (``loop.add_signal_handler``): CPython's C-level handler writes each
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

Cancels. A cancel injects ``KeyboardInterrupt`` into its call's thread
(``CallRunner.cancel``), where it fires at the next bytecode: during a fork,
at the entry of the next Python-level fork hook (``logging``'s, which
releases its module lock after the fork; these), where CPython reports the
exception and drops it. The cancel was lost (a model forking in a loop ran
on, its thread "stuck", until the server wedged), and ``logging``'s lock
stayed held by the forking thread (the loop's thread waited for it at its
next record, answering no ping: its host killed the worker after 30 s), or
SIGTERM and SIGINT stayed blocked in that thread (and in every process it
started). So ``_before``, the first ``before`` hook to run (the last
registered but those of modules imported later), shields the forking call
(``CallRunner.defer_interrupt``) until ``_after_in_parent``, the last of the
parent's hooks but those registered later. A cancel that came meanwhile is
injected then by the loop's thread (injected by the hook, it would fire in
the hook): it fires in the code that forked. A cancel's interrupt already
pending as ``_before`` is entered fires there; ``_after_in_parent`` sees
that ``_before`` was cut short and has it injected again. When another
thread holds the call's lock across the fork, the call is not shielded.

Example::

    ForkedChild.install()  # once, after the loop's signal handlers are added
"""

import logging
import os
import signal
import threading
import time

from . import capture
from .call import RUNNING, current_batch, current_call
from .execution import _interrupt_thread

_get_call = current_call.get
# Non-blocking tries at the call's lock before a fork (``_shield``).
_SHIELD_TRIES = 100

__all__ = ["ForkedChild"]


class ForkedChild:
    """The ``os.register_at_fork`` hooks (``install``) that leave a forked
    child nothing of the server's loop, connections and calls."""

    # The signals the server's loop handles (``main``): SIGHUP, ignored
    # there, where the system has it.
    SIGNALS = (signal.SIGTERM, signal.SIGINT) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())

    def __init__(self):
        # Per forking thread: its signal mask before ``_before`` blocked ours,
        # the call it shielded, whether it ran to its end.
        self._saved = threading.local()
        # Idents of the threads in ``_after_in_parent`` (the loop's thread
        # reads it: a dict, whose item assignment is no point where an
        # injected exception fires, as a method call's end is).
        self._in_hooks = {}

    @classmethod
    def install(cls):
        """Register the hooks; return them (None where there is no fork)."""
        if not hasattr(os, "register_at_fork"):
            return None
        hooks = cls()
        if hasattr(signal, "pthread_sigmask"):
            os.register_at_fork(before=hooks._before, after_in_parent=hooks._after_in_parent, after_in_child=hooks._after_in_child)
        else:  # no signal masks: the reset alone, with its window
            os.register_at_fork(after_in_child=hooks._after_in_child)
        return hooks

    def _before(self):
        saved = self._saved
        # The forking call is shielded from its cancel until the parent's
        # hooks are done (``_after_in_parent``): see "Cancels" above.
        call = _get_call()
        saved.call = call if call is not None and _shield(call) else None
        # Inherited by the child; other threads of this process, which do not
        # block them, take the signals sent to it meanwhile.
        saved.mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        saved.done = True

    def _after_in_parent(self):
        ident = threading.get_ident()
        self._in_hooks[ident] = True
        saved = self._saved
        call = getattr(saved, "call", None)
        done = getattr(saved, "done", False)
        saved.call = None
        saved.done = False
        self._restore()
        due = False
        if call is not None:
            with call.lock:
                call.shielded = False
                due = call.interrupted
        elif not done:
            # ``_before`` was cut short: by a cancel's interrupt that fired
            # as it was entered, before its shield, dropped by CPython.
            call = _get_call()
            due = call is not None and call.thread_ident == ident and call.interrupted
        if due:
            # Injected by this thread, it would fire in this hook, and be
            # dropped: the loop's thread injects it once this hook is over.
            try:
                call.server.loop.call_soon_threadsafe(self._interrupt, call, ident)
            except (AttributeError, RuntimeError):  # no loop, or closed: the server is stopping
                pass
        # Last, and no call (whose end is a point where an injected
        # exception fires): the loop's thread injects from now on.
        del self._in_hooks[ident]

    def _interrupt(self, call, ident):
        # Loop thread: the interrupt of a cancel that came during a fork of
        # ``call``'s thread ``ident``, once that thread is out of our hooks.
        # (A call that ended, or left the thread, takes no interrupt: and an
        # entry left by a hook cut short makes no endless retries.)
        if call.state != RUNNING or call.thread_ident != ident:
            return
        if ident in self._in_hooks:
            call.server.loop.call_later(0.001, self._interrupt, call, ident)
            return
        with call.lock:
            if call.state == RUNNING and call.thread_ident == ident and not call.shielded:
                _interrupt_thread(ident)

    def _after_in_child(self):
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if hasattr(signal, "SIGHUP"):
                signal.signal(signal.SIGHUP, signal.SIG_DFL)
        except (ValueError, OSError):  # not the child's main thread: nothing to undo
            pass
        # The forking thread's context (the hooks run in it) is the child's;
        # so is the shield ``_before`` put on its call, which has no thread here.
        self._saved.call = None
        self._in_hooks.clear()
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


def _shield(call):
    # ``CallRunner.defer_interrupt`` without a blocking wait for the call's
    # lock (its connection's, which the loop's thread and the connection's
    # other calls take a moment at a time): a blocking acquire releases the
    # GIL, so a cancel could inject its interrupt meanwhile, which would fire
    # as the acquire returns, the lock held for good. Tries for ~20 ms (a
    # thread may hold it across this fork); not shielded then, as before.
    if call.thread_ident != threading.get_ident():
        return False
    lock = call.lock
    for _ in range(_SHIELD_TRIES):
        if lock.acquire(False):
            break
        time.sleep(0.0002)
    else:
        return False
    try:
        if call.shielded or call.interrupted:
            return False
        call.shielded = True
        return True
    finally:
        lock.release()


def _server_handlers():
    # The root logger's and the server's (``setup_logging``), each once; read
    # without logging's locks (the child has no other thread).
    handlers = list(logging.root.handlers)
    server = logging.root.manager.loggerDict.get("pyproxy_server")
    for handler in getattr(server, "handlers", ()):
        if handler not in handlers:
            handlers.append(handler)
    return handlers
