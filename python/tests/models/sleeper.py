import time


class Model:
    """Prints "started", then sleeps msg["seconds"] in C and will not be
    interrupted: a cancel's KeyboardInterrupt waits for the sleep to return,
    and one that lands before the sleep starts is swallowed, so a cancelled
    call always holds its thread (what the stuck-thread tests, Python's and
    the host's, need)."""

    # Never the inline fast path: these calls must hold a call thread.
    threaded = True

    def execute(self, msg):
        print("started")
        deadline = time.monotonic() + msg.get("seconds", 0)
        while True:
            try:
                time.sleep(max(0.0, deadline - time.monotonic()))
                break
            except KeyboardInterrupt:
                continue
        return {"slept": msg.get("seconds", 0)}
