"""The naive framed floor: pyproxy's frame format with none of its machinery.

A deliberately simple stdlib server that speaks the frame of
docs/protocol.md §2 with asyncio streams: ``readexactly`` for the header and
the payload, an MD5 check, ``json.loads``, a direct call of the model's
``execute`` on the event loop, and one ``write`` per reply frame. No
authentication, no hello event, no thread pool, no batching. The benchmarks
measure pyproxy against this floor in the same run.

Usage: python3 bench/floor_server.py --model bench/models/echo.py [--port 0] [--unix PATH]
Prints one ready line ``{"port": N, "pid": N, "unix": PATH|null}`` and exits
when stdin reaches end of file.
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
import threading

from _load_model import load_model

__all__ = ["main"]

MAGIC = b"PYPX\x01"
HEADER_SIZE = 25  # marker (4) + version (1) + md5 (16) + length (4)
DIGEST_SIZE = 16


def encode_frame(obj):
    """One complete frame for ``obj`` (compact JSON)."""
    payload = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    digest = hashlib.md5(payload).digest()
    return MAGIC + digest + len(payload).to_bytes(4, "big") + payload + digest


def make_handler(model):
    async def handle(reader, writer):
        try:
            while True:
                try:
                    header = await reader.readexactly(HEADER_SIZE)
                except asyncio.IncompleteReadError:
                    return
                if header[:5] != MAGIC:
                    return
                checksum = header[5:21]
                length = int.from_bytes(header[21:25], "big")
                body = await reader.readexactly(length + DIGEST_SIZE)
                payload = body[:length]
                if body[length:] != checksum:
                    return
                if hashlib.md5(payload).digest() != checksum:
                    reply = {"id": None, "ok": False,
                             "error": {"type": "ChecksumError", "message": "Cannot decode frame: bad checksum"}}
                else:
                    reply = dispatch(model, json.loads(payload))
                writer.write(encode_frame(reply))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


def dispatch(model, msg):
    req_id = msg.get("id")
    cmd = msg.get("cmd")
    try:
        if cmd == "executeModel":
            return {"id": req_id, "ok": True, "result": model.execute(msg.get("msg"))}
        if cmd == "ping":
            return {"id": req_id, "ok": True, "result": "pong"}
        return {"id": req_id, "ok": False,
                "error": {"type": "UnknownCommandError", "message": "Cannot run: unknown command %r" % (cmd,)}}
    except Exception as exc:  # user code failed: report it like pyproxy does
        return {"id": req_id, "ok": False,
                "error": {"type": "PythonError", "message": str(exc), "exception": type(exc).__name__}}


def exit_on_stdin_eof(loop, stop):
    sys.stdin.read()
    loop.call_soon_threadsafe(stop.set)


async def serve(args):
    model = load_model(args.model, args.model_class)
    handler = make_handler(model)
    limit = 2 ** 31  # the floor never refuses a large frame
    if args.unix:
        server = await asyncio.start_unix_server(handler, path=args.unix, limit=limit)
        port = None
    else:
        server = await asyncio.start_server(handler, host="127.0.0.1", port=args.port, limit=limit)
        port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    threading.Thread(target=exit_on_stdin_eof, args=(asyncio.get_running_loop(), stop), daemon=True).start()
    sys.stdout.write(json.dumps({"port": port, "pid": os.getpid(), "unix": args.unix}) + "\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--class", dest="model_class", default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--unix", default=None)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
