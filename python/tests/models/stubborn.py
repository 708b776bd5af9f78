import sleeper


class Model:
    """Takes options["seconds"] to construct and swallows a cancel's
    KeyboardInterrupt while it does (as code with a broad ``except`` would),
    so its load finishes after the cancel: the sleeper model's wait, in the
    constructor."""

    def __init__(self, options):
        sleeper.Model().execute({"seconds": options.get("seconds", 0)})

    def execute(self, msg):
        return "stubborn"
