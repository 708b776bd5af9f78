"""Models that choose the status and headers of their success (``host.set_status``, ``host.set_header``)."""

import contextvars
import threading

from pyproxy import HTTPError, host


def _apply(msg, index=None):
    kwargs = {} if index is None else {"index": index}
    if "status" in msg:
        host.set_status(msg["status"], **kwargs)
    for name, value in (msg.get("headers") or {}).items():
        host.set_header(name, value, **kwargs)


class Model:
    """Sets what ``msg`` says, then returns ``msg["result"]`` (or raises ``msg["raise"]``)."""

    def execute(self, msg):
        if msg.get("thread") == "bare":
            seen = []
            t = threading.Thread(target=lambda: seen.append(_try(lambda: host.set_status(201))))
            t.start()
            t.join()
            return {"thread": seen[0]}
        if msg.get("thread") == "context":
            ctx = contextvars.copy_context()
            t = threading.Thread(target=ctx.run, args=(_apply, msg))
            t.start()
            t.join()
        else:
            _apply(msg)
        if "try" in msg:
            return {"error": _try(lambda: _apply(msg["try"]))}
        if "raise" in msg:
            raise HTTPError(msg["raise"], "refused", headers={"X-Why": "raised"})
        return msg.get("result")


class Inline(Model):
    inline = True


class Batch:
    """``execute_batch``: message i sets what it says, with ``index=i``."""

    batch_size = 4

    def execute_batch(self, msgs):
        out = []
        for i, msg in enumerate(msgs):
            if "no-index" in msg:
                out.append({"error": _try(lambda: host.set_status(201))})
                continue
            _apply(msg, i)
            out.append(msg.get("result"))
        return out


class Stream:
    """Sets what ``msg`` says, yields two items, then tries to set a header
    (``msg["late"]``, a [name, value] pair: ``X-Late: 1`` by default)."""

    def execute(self, msg):
        if "before" in msg:
            yield {"error": _try(lambda: _apply(msg["before"]))}
        _apply(msg)
        yield 1
        if "status" in msg:
            yield {"after": _try(lambda: host.set_status(msg["status"]))}
        else:
            name, value = msg.get("late", ("X-Late", "1"))
            yield {"after": _try(lambda: host.set_header(name, value))}


class Late:
    """``start``: a thread with the call's context waits, then sets a status
    (after the call was answered); the next call lets it and returns what it got."""

    def __init__(self):
        self.go = threading.Event()
        self.seen = []
        self.thread = None

    def execute(self, msg):
        if msg.get("start"):
            def later():
                self.go.wait(10)
                self.seen.append(_try(lambda: host.set_status(201)))
                self.seen.append(_try(lambda: host.set_header("X-Late", "1")))

            self.thread = threading.Thread(target=contextvars.copy_context().run, args=(later,))
            self.thread.start()
            return "started"
        self.go.set()
        self.thread.join(10)
        return {"late": self.seen}


class InInit:
    """Tries to set a status in ``__init__`` (addModel): refused."""

    def __init__(self):
        self.error = _try(lambda: host.set_status(201))

    def execute(self, msg):
        return {"init": self.error}


def _try(fn):
    try:
        fn()
    except Exception as exc:
        return "%s: %s" % (type(exc).__name__, exc)
    return None
