import time


class Model:
    """Prints "started", then sleeps msg["seconds"] in C and will not be
    interrupted: a cancel's KeyboardInterrupt waits for the sleep to return,
    and one that lands before the sleep starts is swallowed, so a cancelled
    call always holds its thread (what the stuck-thread tests, Python's and
    the host's, need). The print is inside the ``try`` too: a cancel sent once
    "started" arrived may land before the thread reaches the sleep (on a
    loaded machine it did, and the call ended instead of holding its thread)."""

    # Never the inline fast path: these calls must hold a call thread.
    threaded = True

    def execute(self, msg):
        deadline = time.monotonic() + msg.get("seconds", 0)
        started = False
        while True:
            try:
                if not started:
                    started = True
                    print("started")
                time.sleep(max(0.0, deadline - time.monotonic()))
                break
            except KeyboardInterrupt:
                continue
        return {"slept": msg.get("seconds", 0)}
