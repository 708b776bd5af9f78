"""A tiny example model: multiplies ``x`` by the option ``k``."""


class Doubler:
    """Returns ``{"y": x * k}``; ``k`` defaults to 2."""

    inputs = {"x": "number"}
    outputs = {"y": "number"}

    def __init__(self, options):
        self.k = options.get("k", 2)

    def execute(self, msg):
        return {"y": msg["x"] * self.k}
