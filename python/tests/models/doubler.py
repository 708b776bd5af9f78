class Doubler:
    """Multiplies x by k.

    Used by the server tests.
    """

    inputs = {"x": "number"}
    outputs = {"y": "number"}

    def __init__(self, options):
        self.k = options.get("k", 2)

    def execute(self, msg):
        return {"y": msg["x"] * self.k}


class Helper:
    """Not a model: no execute()."""
