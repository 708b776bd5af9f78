"""Models that answer with ``HTTPError`` and read ``host.headers()``."""

from pyproxy import HTTPError, host


class Model:
    """``msg["raise"]``: the ``HTTPError`` arguments to raise it with;
    otherwise returns the forwarded headers it sees."""

    def execute(self, msg):
        args = msg.get("raise")
        if args is not None:
            raise HTTPError(*args.get("args", []), **args.get("kwargs", {}))
        return {"headers": host.headers(), "all": host.message_headers()}


class Stream:
    """``msg["before"]``: raises before its first item; else one item, then
    a 409 (``msg["after"]``) or the end."""

    def execute(self, msg):
        if msg.get("before"):
            raise HTTPError(403, "not yours", detail={"owner": "someone else"})
        yield host.headers()
        if msg.get("after"):
            raise HTTPError(409, "changed meanwhile", detail="late")


class Batch:
    """A batching model: a message with ``missing`` gets an ``HTTPError``
    instance as its result; the others what ``execute_batch`` saw."""

    batch_size = 4

    def execute_batch(self, msgs):
        seen = {"headers": host.headers(), "all": host.message_headers()}
        return [
            HTTPError(404, "no item %s" % m.get("i"), detail={"i": m.get("i")}) if m.get("missing") else dict(seen, i=m.get("i"))
            for m in msgs
        ]


class Changed:
    """Raises an ``HTTPError`` whose fields it changed after making it:
    ``msg`` maps field name → the value to set (``"nan"`` for NaN)."""

    def execute(self, msg):
        err = HTTPError(400, "changed")
        for name, value in msg.items():
            setattr(err, name, float("nan") if value == "nan" else value)
        raise err
