"""The stdio baseline: newline-delimited JSON on stdin, answers on stdout.

This is what a typical stdio bridge does: read a line, ``json.loads``, call
the model, ``json.dumps`` the reply, write it with a newline and flush. The
client may keep many requests in flight; they are answered in order.

Usage: python3 bench/stdio_worker.py --model bench/models/echo.py
Request: ``{"id": 1, "cmd": "executeModel", "name": "echo", "msg": {...}}``
Reply:   ``{"id": 1, "ok": true, "result": {...}}``
"""

import argparse
import json
import sys

from _load_model import load_model

__all__ = ["main"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--class", dest="model_class", default=None)
    args = parser.parse_args()
    model = load_model(args.model, args.model_class)
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        req = json.loads(line)
        try:
            if req.get("cmd") == "ping":
                reply = {"id": req["id"], "ok": True, "result": "pong"}
            else:
                reply = {"id": req["id"], "ok": True, "result": model.execute(req.get("msg"))}
        except Exception as exc:  # user code failed
            reply = {"id": req.get("id"), "ok": False,
                     "error": {"type": "PythonError", "message": str(exc), "exception": type(exc).__name__}}
        out.write(json.dumps(reply, separators=(",", ":")).encode("utf-8") + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
