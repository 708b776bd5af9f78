import gc
import time


class HandOver:
    """The model lock as a caller sees it at a hand-over: free when it looks
    (``locked()``), taken by another caller by the time it acquires."""

    def __init__(self, lock):
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release

    def locked(self):
        return False

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)


class Model:
    """A ``threadsafe = False`` model whose lock always looks free to a
    caller about to take it (``msg["handOver"]`` installs that, once), as
    it does to one that looks just as the model is handed over from one
    call to the next. Otherwise it waits ``msg["seconds"]`` in short,
    interruptible sleeps (printing "started"); ``msg["items"]``: a stream."""

    threadsafe = False
    threaded = True

    def execute(self, msg):
        if msg.get("handOver"):
            for entry in gc.get_referrers(self):
                if type(entry).__name__ == "ModelEntry":
                    entry._lock = HandOver(entry._lock)
                    return {"installed": True}
            return {"installed": False}
        if "items" in msg:
            return iter(range(msg["items"]))
        print("started")
        deadline = time.monotonic() + msg.get("seconds", 0)
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return {"slept": msg.get("seconds", 0)}
