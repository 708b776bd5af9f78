"""``ElasticExecutor``: a thread for every concurrent eval or model command.

Evals and model management commands (``addModel``, ``updateModel``,
``initModel``) must not wait behind busy model calls, nor behind each other:
an eval may run for hours (a REPL loop, a server) and still ``eval("1+1")``
must answer. So each runs on a thread of its own: an idle thread is reused,
a new one is started only when none is idle, and one idle for
``IDLE_TIMEOUT`` seconds exits. ``max_threads`` bounds them: ``submit``
returns False beyond it (the caller answers ``OverloadedError``). A work item
calls ``release()`` just before its reply goes out: from then on its thread
counts as free, so a client that sends its next command as soon as it has
the reply never finds the bound taken by a thread that is only returning.

Example::

    executor = ElasticExecutor(max_threads=64)
    if not executor.submit(print, "hello from an elastic thread"):
        print("too many running")
"""

import itertools
import logging
import queue
import threading

__all__ = ["ElasticExecutor"]

log = logging.getLogger("pyproxy_server.elastic_executor")


class ElasticExecutor:
    """Runs each ``fn(arg)`` at once, on an idle thread or a new one."""

    # Seconds an idle thread waits for work before it exits.
    IDLE_TIMEOUT = 60.0

    def __init__(self, max_threads=256, name="pyproxy-elastic"):
        if max_threads < 1:
            raise ValueError("max_threads must be >= 1")
        self.max_threads = max_threads
        self._name = name
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._count = 0  # threads alive
        # Threads waiting for work, or released and about to, not yet
        # promised an item: each item in the queue has a thread coming for it.
        self._free = 0
        self._local = threading.local()
        self._threads = set()  # their Thread objects (for shutdown(wait=True))
        self._shutdown = False
        self._seq = itertools.count(1)

    @property
    def threads(self):
        """Threads alive."""
        return self._count

    @property
    def busy(self):
        """Threads running a work item (or promised one) and not released."""
        return self._count - self._free

    def release(self):
        """Called by a work item on its own thread once its work is done (its
        reply about to be sent): the thread counts as free from now on."""
        local = self._local
        if getattr(local, "released", False):
            return
        local.released = True
        with self._lock:
            self._free += 1

    def submit(self, fn, arg):
        """Run ``fn(arg)`` now; False when ``max_threads`` already run (nothing done).

        Raises ``RuntimeError`` after ``shutdown``.
        """
        with self._lock:
            if self._shutdown:
                raise RuntimeError("Cannot submit: the executor is shut down")
            if self._free > 0:
                self._free -= 1
                self._queue.put((fn, arg))
                return True
            if self._count >= self.max_threads:
                return False
            thread = threading.Thread(
                target=self._work, args=((fn, arg),), name="%s-%d" % (self._name, next(self._seq)), daemon=True
            )
            self._count += 1
            self._threads.add(thread)
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread"
                self._count -= 1
                self._threads.discard(thread)
                log.error("cannot start an elastic thread: %s", exc)
                return False
        return True

    def shutdown(self, wait=False):
        """Stop taking work; idle threads exit (``wait=True``: and busy ones are waited for)."""
        with self._lock:
            self._shutdown = True
            count = self._count
            threads = list(self._threads)
        for _ in range(count):
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _work(self, item):
        try:
            while item is not None:
                try:
                    item[0](item[1])
                except BaseException:  # never let a work item take the thread down
                    log.exception("elastic thread: a work item failed")
                item = self._next()
        finally:
            with self._lock:
                self._count -= 1
                self._threads.discard(threading.current_thread())

    def _next(self):
        local = self._local
        if getattr(local, "released", False):
            local.released = False  # counted free by release()
        else:
            with self._lock:
                self._free += 1
        while True:
            try:
                return self._queue.get(timeout=self.IDLE_TIMEOUT)
            except queue.Empty:
                with self._lock:
                    # When _free is 0, every waiting thread (this one too) has
                    # an item coming, so this one must stay for it.
                    if self._free > 0:
                        self._free -= 1
                        return None
