"""Models that return what ``host.trace_context()`` says."""

from pyproxy import host


class Model:
    """Returns the call's trace context (``None`` without one); ``msg["fail"]``:
    raises ``ValueError`` instead."""

    def execute(self, msg):
        if isinstance(msg, dict) and msg.get("fail"):
            raise ValueError("traced failure")
        return {"trace": host.trace_context()}


class Stream:
    """Yields the call's trace context once."""

    def execute(self, msg):
        yield {"trace": host.trace_context()}


class Batch:
    """A batching model: each message gets what ``execute_batch`` saw."""

    batch_size = 4

    def execute_batch(self, msgs):
        contexts = host.trace_contexts()
        return [{"trace": host.trace_context(), "traces": contexts} for _ in msgs]
