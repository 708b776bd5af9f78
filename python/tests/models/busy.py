import time


class Model:
    """A pure-Python busy loop: only an injected KeyboardInterrupt stops it early."""

    def execute(self, msg):
        print("started")
        deadline = time.monotonic() + msg.get("seconds", 30)
        n = 0
        while time.monotonic() < deadline:
            n += 1
        return {"n": n}
