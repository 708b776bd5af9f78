import time

from pyproxy import Lock

gpu = Lock()


class Model:
    """A thread-safe model that guards something of its own (a GPU) with a
    ``pyproxy.Lock``: it prints "started" once it holds the lock, then
    waits ``msg["seconds"]`` in short, interruptible sleeps."""

    threaded = True

    def execute(self, msg):
        with gpu:
            print("started")
            deadline = time.monotonic() + msg.get("seconds", 0)
            while time.monotonic() < deadline:
                time.sleep(0.01)
        return {"slept": msg.get("seconds", 0), "free": not gpu.locked()}
