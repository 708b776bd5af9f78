import time

from pyproxy import Lock

gpu = Lock()


class Model:
    """A thread-safe model that guards something of its own (a GPU) with a
    ``pyproxy.Lock``: it prints "started" once it holds the lock, then
    waits ``msg["seconds"]`` in short, interruptible sleeps."""

    threaded = True

    def execute(self, msg):
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
