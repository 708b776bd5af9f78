import threading
import time

import pyproxy.lock
from pyproxy import Lock

gpu = Lock()
_held_by = pyproxy.lock._held_by
_local = threading.local()


def _cancelled_as_it_takes(call, lock):
    """``pyproxy.lock._held_by`` for a ``tryCancelled`` call: the call is
    cancelled after ``acquire`` took the lock, before it counts as the
    call's. Unshielded, the cancel's interrupt fires in the wait below."""
    if not getattr(_local, "try_cancelled", False):
        return _held_by(call, lock)
    _local.try_cancelled = False
    print("started")
    while not call.interrupted:
        time.sleep(0.001)
    return _held_by(call, lock)


pyproxy.lock._held_by = _cancelled_as_it_takes


class Model:
    """A thread-safe model that guards something of its own (a GPU) with a
    ``pyproxy.Lock``: it prints "started" once it holds the lock, then
    waits ``msg["seconds"]`` in short, interruptible sleeps."""

    threaded = True

    def execute(self, msg):
        if msg.get("tryCancelled"):
            # acquire(False) cancelled as it takes the lock (_cancelled_as_it_takes).
            _local.try_cancelled = True
            try:
                got = gpu.acquire(False)
            finally:
                _local.try_cancelled = False
            return {"got": got}
        if msg.get("keep"):
            # Takes the lock and keeps it until the call is cancelled: a
            # cancel's interrupt that fires as a ``with``'s ``__exit__`` is
            # entered leaves a call in this state (its release skipped).
            gpu.acquire()
            while True:
                time.sleep(0.01)
        if "timeout" in msg:
            # acquire(timeout=deadline - time.monotonic()) past its deadline,
            # or another timeout threading.Lock refuses.
            try:
                got = gpu.acquire(timeout=msg["timeout"])
            except (ValueError, TypeError, OverflowError) as exc:
                return {"refused": type(exc).__name__}
            if got:
                gpu.release()
            return {"got": got}
        if msg.get("releaseFree"):
            # Releases the lock it does not hold, catches the RuntimeError,
            # then works on until cancelled.
            try:
                gpu.release()
            except RuntimeError:
                pass
            print("started")
            while True:
                time.sleep(0.01)
        with gpu:
            print("started")
            deadline = time.monotonic() + msg.get("seconds", 0)
            while time.monotonic() < deadline:
                time.sleep(0.01)
        return {"slept": msg.get("seconds", 0), "free": not gpu.locked()}
