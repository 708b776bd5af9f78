import threading
import time

from pyproxy import Lock

gpu = Lock()


class Model:
    """Streams that take a ``pyproxy.Lock`` (a GPU of the model's own) and
    park when their reader falls a window behind, freeing their thread.

    ``mode``: "keep" takes the lock (no ``with``), fills the window, then,
    resumed, logs "resumed" and works until cancelled (a cancel's interrupt
    that fires as a ``with``'s ``__exit__`` is entered leaves it so), saying
    whether on the thread that took the lock;
    "take" takes and releases it for its one item, "takeThenRun" streams
    on after it; "holdAcross" holds it across its items. ``executeModel`` with
    "state": whether the lock is held."""

    threaded = True

    def execute(self, msg):
        mode = msg.get("mode")
        if mode == "state":
            yield {"locked": gpu.locked()}
            return
        if mode == "keep":
            gpu.acquire()
            first = threading.get_ident()
            for i in range(msg.get("items", 65)):
                yield i
            print("resumed on another thread" if threading.get_ident() != first else "resumed on its thread")
            while True:
                time.sleep(0.01)
        if mode in ("take", "takeThenRun"):
            with gpu:
                yield "took"
            if mode == "take":
                return
        if mode == "holdAcross":
            with gpu:
                for i in range(10**6):
                    yield i
        if mode == "sleep":
            print("sleeping")
            time.sleep(msg["seconds"])
            yield "slept"
            return
        for i in range(10**6):
            yield i
