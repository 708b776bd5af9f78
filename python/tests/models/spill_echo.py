"""Test model for spill-over: echo, measure or make large payloads."""

import hashlib
import json


class SpillEcho:
    """``op``: "echo" (returns the message), "len" (size and md5 of ``data``),
    "make" (returns ``n`` characters), "sized" (a reply whose encoded frame
    is exactly ``size`` bytes, given the request id in ``reqId``)."""

    def execute(self, msg):
        op = msg.get("op", "echo")
        if op == "echo":
            return msg
        if op == "len":
            data = msg["data"]
            return {"len": len(data), "md5": hashlib.md5(data.encode("utf-8")).hexdigest()}
        if op == "make":
            return {"data": msg.get("char", "x") * msg["n"]}
        if op == "sized":
            # The length of a compact JSON object does not depend on its key order.
            empty = {"id": msg["reqId"], "ok": True, "result": {"data": ""}}
            overhead = len(json.dumps(empty, separators=(",", ":")))
            return {"data": "x" * (msg["size"] - overhead)}
        raise ValueError("unknown op %r" % (op,))
