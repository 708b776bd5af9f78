"""A model's ``logging`` call cancelled at each place where CPython may raise
the cancel's interrupt: other threads (the server's loop thread) must still
log afterwards.

Up to Python 3.12, ``logging.Handler.handle`` takes the handler's lock with
``self.acquire()`` before its ``try``, and the module's lock is taken the
same way (``_acquireLock()``: a logger's level cache after a ``setLevel``,
``getLogger``); an interrupt that fired right after either was taken left it
held for ever, and the loop thread's next log line waited for it for good."""

import contextvars
import logging
import os
import shutil
import sys
import tempfile
import threading
import unittest

from pyproxy_server import capture
from pyproxy_server.__main__ import _PrivateLogHandler, _StderrLogHandler
from pyproxy_server.call import current_call
from pyproxy_server.host_log_handler import HostLogHandler
from pyproxy_server.shielded_logging import shield_module_lock

from .test_eval import FakeCall, FakeConnection, FakeServer, _no_gc, _opcode_events, _traced_cancel


class _Sink:
    """A call's output sink, as ``HostLogHandler`` finds it."""

    def __init__(self):
        self.records = []

    def log_record(self, level, logger, text):
        self.records.append((level, logger, text))

    def write(self, fd, text):
        pass


def _model_code(step):
    # What a model's call may do with logging while its cancel lands.
    log = logging.getLogger("model.scorer")
    log.setLevel(logging.INFO)  # clears every logger's level cache: the module's lock, next
    log.warning("scored %d", step)
    logging.getLogger("model.other").info("got a logger")  # getLogger: the module's lock
    sys.stderr.flush()


class LoggingCancelledAtEveryBytecodeTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir, True)
        root = logging.getLogger()
        old_handlers, old_level = root.handlers[:], root.level
        old_locks = logging.__dict__.get("_acquireLock"), logging.__dict__.get("_releaseLock")

        def restore():
            for handler in root.handlers:
                handler.close()
            root.handlers[:] = old_handlers
            root.setLevel(old_level)
            if old_locks[0] is not None:
                logging._acquireLock, logging._releaseLock = old_locks

        self.addCleanup(restore)
        shield_module_lock()
        self.file_handler = _PrivateLogHandler(os.path.join(self.dir, "server.log"), maxBytes=1 << 20, backupCount=1)
        self.stderr_handler = _StderrLogHandler(open(os.devnull, "w"))
        self.addCleanup(self.stderr_handler.stream.close)
        root.handlers[:] = [self.file_handler, self.stderr_handler, HostLogHandler()]
        root.setLevel(logging.INFO)
        self.connection = FakeConnection(FakeServer())
        self.deferred = 0

    def _cancel_at(self, step):
        """Runs the model's logging on a thread of its own, as a call's code,
        cancelled at the ``step``-th place where an interrupt may fire (or
        the first after it where the call's lock is free). False when the
        code ended before the cancel came."""
        call = FakeCall(self.connection, step, {"cmd": "executeModel"})
        state, tracer = _traced_cancel(call, step)
        sink = _Sink()

        def run():
            call.thread_ident = threading.get_ident()
            current_call.set(call)
            capture._sink.set(sink.write)
            sys.settrace(tracer)
            try:
                _model_code(step)
            except KeyboardInterrupt:
                pass
            finally:
                sys.settrace(None)

        thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
        with _no_gc():
            thread.start()
            thread.join(10)
        self.assertFalse(thread.is_alive(), "the model's logging cancelled at place %d hangs" % step)
        self.deferred += state["deferred"]
        return state["came"]

    def _loop_logs(self, step):
        # The loop thread's next log line, after a level change (the module's lock).
        def loop():
            log = logging.getLogger("pyproxy_server.test")
            log.setLevel(logging.INFO)
            log.warning("after the cancel at place %d", step)
            for handler in logging.getLogger().handlers:
                handler.flush()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        thread.join(5)
        self.assertFalse(thread.is_alive(), "cancelled at place %d: a logging lock stays held" % step)

    def test_the_loop_logs_on_whichever_place_the_cancel_interrupts(self):
        if not _opcode_events():
            self.skipTest("this Python sends no opcode trace events (3.12.0 and 3.12.1)")
        step = 0
        while True:
            step += 1
            if not self._cancel_at(step):
                break
            self._loop_logs(step)
        self.assertGreater(step, 100)  # the model's code and logging's paths were all traced
        if hasattr(logging, "_acquireLock"):  # up to 3.12 (3.13 takes them with `with`)
            self.assertGreater(self.deferred, 10)  # cancels that came with a logging lock held
        with open(self.file_handler.baseFilename) as f:
            self.assertIn("after the cancel at place %d" % (step - 1), f.read())


if __name__ == "__main__":
    unittest.main()
