"""What ``host.request_id()`` says in each place a model's code can run."""

import asyncio
import contextvars
import logging
import threading

from pyproxy import host

log = logging.getLogger("tagger")


class Model:
    """Returns the id as the call, an asyncio task, a thread started with the
    call's context and one started without it see it; logs and prints once.
    ``msg["meet"]``: waits (up to 5 s) until that many calls are running, so
    concurrent calls overlap; ``msg["fail"]``: raises after logging."""

    arrived = threading.Barrier(2)

    def execute(self, msg):
        if msg.get("meet"):
            Model.arrived.wait(5)
        log.warning("tagging")
        print("printed")
        seen = {"call": host.request_id()}

        async def task():
            await asyncio.sleep(0)
            return host.request_id()

        seen["task"] = asyncio.run(task())
        plain = threading.Thread(target=lambda: seen.setdefault("plainThread", host.request_id()))
        plain.start()
        plain.join()
        copied = threading.Thread(
            target=contextvars.copy_context().run,
            args=(lambda: seen.setdefault("copiedThread", host.request_id()),),
        )
        copied.start()
        copied.join()
        if msg.get("fail"):
            raise ValueError("failed on purpose")
        return seen


class Stream:
    """Yields the id twice: before its first item and after it."""

    def execute(self, msg):
        yield host.request_id()
        log.warning("streaming")
        yield host.request_id()


class Batch:
    """A batching model: each message's result is what ``execute_batch`` saw
    (``host.request_id()``, ``host.request_ids()``, the batch's size); logs
    and prints once per batch. ``msg["fail"]``: that message's result is an
    exception instance; ``msg["raise"]``: the whole batch raises."""

    batch_size = 3

    def execute_batch(self, msgs):
        log.warning("batching %d", len(msgs))
        print("printed in a batch")
        if any(m.get("raise") for m in msgs):
            raise ValueError("the batch failed")
        seen = {"id": host.request_id(), "ids": host.request_ids(), "n": len(msgs)}
        return [ValueError("message failed") if m.get("fail") else dict(seen) for m in msgs]


class Plain:
    """Not batching: what one message's ``execute`` sees (an ``executeBatch``
    with ``split`` runs it message by message)."""

    def execute(self, msg):
        return {"id": host.request_id(), "ids": host.request_ids()}
