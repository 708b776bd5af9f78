"""The smallest pyproxy model: returns what it receives."""


class Echo:
    """Returns its input unchanged (``None`` when the input is empty)."""

    def __init__(self, options=None):
        self.options = options or {}

    def execute(self, msg):
        if msg == {}:
            return None
        return msg
