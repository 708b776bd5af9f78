"""Test model for spill-over: echo, measure or make large payloads."""

import hashlib
import json
import os
import time


class SpillEcho:
    """``op``: "echo" (returns the message), "len" (size and md5 of ``data``),
    "make" (returns ``n`` characters), "gated_make" (writes the path
    ``gate`` + ".started", waits up to 30 s for the file ``gate``, then
    makes), "sized" (a reply whose encoded frame
    is exactly ``size`` bytes, given the request id in ``reqId``)."""

    def execute(self, msg):
        op = msg.get("op", "echo")
        if op == "echo":
            return msg
        if op == "len":
            data = msg["data"]
            return {"len": len(data), "md5": hashlib.md5(data.encode("utf-8")).hexdigest()}
        if op == "gated_make":
            with open(msg["gate"] + ".started", "w") as f:
                f.write("started")
            deadline = time.monotonic() + 30
            while not os.path.exists(msg["gate"]) and time.monotonic() < deadline:
                time.sleep(0.005)
            op = "make"
        if op == "make":
            return {"data": msg.get("char", "x") * msg["n"]}
        if op == "sized":
            # The length of a compact JSON object does not depend on its key order.
            empty = {"id": msg["reqId"], "ok": True, "result": {"data": ""}}
            overhead = len(json.dumps(empty, separators=(",", ":")))
            return {"data": "x" * (msg["size"] - overhead)}
        raise ValueError("unknown op %r" % (op,))
