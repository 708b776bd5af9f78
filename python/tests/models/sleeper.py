import time


class Model:
    """Prints "started", then sleeps msg["seconds"] in C (an interrupt waits for it)."""

    def execute(self, msg):
        print("started")
        time.sleep(msg.get("seconds", 0))
        return {"slept": msg.get("seconds", 0)}
