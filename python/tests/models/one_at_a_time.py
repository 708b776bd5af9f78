import time


class Model:
    """A thread-unsafe model (``threadsafe = False``: one call at a time, as a
    GPU's). It prints "started", then waits ``msg["seconds"]`` in short,
    interruptible sleeps; with ``msg["items"]`` it yields that many items
    instead (``executeStream``)."""

    threadsafe = False
    threaded = True  # calls hold a call thread, never the event loop

    def execute(self, msg):
        if "items" in msg:
            return iter(range(msg["items"]))
        print("started")
        deadline = time.monotonic() + msg.get("seconds", 0)
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return {"slept": msg.get("seconds", 0)}
