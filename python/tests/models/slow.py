import time


class Model:
    """Sleeps msg["seconds"], then answers; used for concurrency tests."""

    def __init__(self, options):
        self.tag = options.get("tag", "v1")

    def execute(self, msg):
        time.sleep(msg.get("seconds", 0))
        return {"tag": self.tag}
