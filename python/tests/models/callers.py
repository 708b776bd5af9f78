"""What ``host.caller()`` and ``host.callers()`` say in each kind of call."""

from pyproxy import host


class Model:
    """Returns the caller as the call sees it."""

    def execute(self, msg):
        return {"caller": host.caller(), "callers": host.callers()}


class Stream:
    """Yields the caller."""

    def execute(self, msg):
        yield host.caller()


class Batch:
    """A batching model: each message's result is what ``execute_batch`` saw."""

    batch_size = 3

    def execute_batch(self, msgs):
        seen = {"caller": host.caller(), "callers": host.callers()}
        return [seen for _ in msgs]
