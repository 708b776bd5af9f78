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
