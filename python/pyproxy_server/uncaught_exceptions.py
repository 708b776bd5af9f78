"""Uncaught exceptions that no call reports, as one log record each.

Python prints a thread's uncaught exception (``threading.excepthook``), an
exception it can only ignore (``sys.unraisablehook``: a ``__del__``, a
generator's or a callback's error during garbage collection) and the main
thread's (``sys.excepthook``) as a traceback on ``sys.stderr``. Outside a
call that is the server's router, which logs the text a line at a time: a
20-line traceback was 20 ``WARNING`` records, and with ``--log-dir -`` 20
warnings in the host's log, each one counted against its rate limit.

``UncaughtExceptions.install()`` replaces the three hooks: the exception is
one ``ERROR`` record of the ``pyproxy_server.uncaught`` logger with its
traceback (its thread in the record's ``threadName``, its name in the
message). An exception ignored during a call (its thread's garbage
collection) goes to that call's output as before, through Python's own
hook. A thread's
``SystemExit`` is ignored, as Python's hook does.

Example::

    UncaughtExceptions.install()
    threading.Thread(target=lambda: 1 / 0, name="loader").start()
    # ERROR [loader] pyproxy_server.uncaught: Exception in thread loader\\nTraceback ...
"""

import logging
import sys
import threading

from .capture import current_sink

__all__ = ["UncaughtExceptions"]

# Python's own thread hook (``threading.__excepthook__`` only from 3.10).
_thread_default = getattr(threading, "__excepthook__", threading.excepthook)


class UncaughtExceptions:
    """The server's ``threading.excepthook``, ``sys.unraisablehook`` and
    ``sys.excepthook`` (see the module docstring)."""

    # Not pyproxy_server's own: a model's thread failed, not the server.
    log = logging.getLogger("pyproxy_server.uncaught")

    @classmethod
    def install(cls):
        """Installs the hooks (again: the same hooks)."""
        threading.excepthook = cls.thread_hook
        sys.unraisablehook = cls.unraisable_hook
        sys.excepthook = cls.main_hook

    @classmethod
    def thread_hook(cls, args):
        # No call's output here, even for a thread started in a call's
        # context: the hook runs after the thread's target returned.
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else threading.get_ident()
        cls._log(_thread_default, args, "Exception in thread %s" % (name,),
                 (args.exc_type, args.exc_value, args.exc_traceback))

    @classmethod
    def unraisable_hook(cls, unraisable):
        if current_sink() is not None:
            return sys.__unraisablehook__(unraisable)
        # Python's own wording: "<err_msg>: <object>", or "Exception ignored in: <object>".
        try:
            what = repr(unraisable.object) if unraisable.object is not None else None
        except Exception:
            what = "<object repr() failed>"
        message = unraisable.err_msg or "Exception ignored in"
        if what is not None:
            message = "%s: %s" % (message, what)
        cls._log(sys.__unraisablehook__, unraisable, message,
                 (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback))

    @classmethod
    def main_hook(cls, exc_type, exc_value, exc_traceback):
        if current_sink() is not None:
            return sys.__excepthook__(exc_type, exc_value, exc_traceback)
        try:
            cls.log.error("Uncaught exception", exc_info=(exc_type, exc_value, exc_traceback))
        except Exception:
            sys.__excepthook__(exc_type, exc_value, exc_traceback)

    @classmethod
    def _log(cls, fallback, args, message, exc_info):
        try:
            # The message as it is: a "%" in a thread's name is no format.
            cls.log.error("%s", message, exc_info=exc_info)
        except Exception:  # logging itself failed: Python's own hook, on stderr
            fallback(args)
