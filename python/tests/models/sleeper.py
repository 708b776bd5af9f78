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
        deadline = time.monotonic() + msg.get("seconds", 0)
        announced = False
        while True:
            # The print inside the try too: the cancel is sent when "started"
            # arrives, and its interrupt could fire before print returned, or
            # between it and the sleep (the call then ended as cancelled and
            # its thread was never stuck: one run in ~30 under load).
            try:
                if not announced:
                    announced = True
                    print("started")
                time.sleep(max(0.0, deadline - time.monotonic()))
                break
            except KeyboardInterrupt:
                continue
        return {"slept": msg.get("seconds", 0)}
