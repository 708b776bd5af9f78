"""Echo model used by the benchmarks: returns the message it was given."""

__all__ = ["Echo"]


class Echo:
    """Returns its input unchanged."""

    def __init__(self, **options):
        self.options = options

    def execute(self, msg):
        return msg
