import time


class Model:
    """Takes options["seconds"] to construct and swallows a cancel's
    KeyboardInterrupt while it does (as code with a broad ``except`` would),
    so its load finishes after the cancel."""

    def __init__(self, options):
        deadline = time.monotonic() + options.get("seconds", 0)
        announced = False
        while True:
            try:
                if not announced:
                    announced = True
                    print("started")
                time.sleep(max(0.0, deadline - time.monotonic()))
                break
            except KeyboardInterrupt:
                continue

    def execute(self, msg):
        return "stubborn"
