"""One read of many requests, in process (a recording transport, no socket):
replies are written in parts, and the running loop is hidden from inline
model code only."""

import asyncio
import json
import tempfile
import threading
import unittest

from pyproxy_server import capture
from pyproxy_server.big_json import BIG
from pyproxy_server.connection import Connection
from pyproxy_server.framer import Framer
from pyproxy_server.server import Server

from ._client import encode

# Forced inline: runs on the loop thread from the first call.
SOURCE = """
import asyncio

class Model:
    inline = True
    def execute(self, msg):
        if "big" in msg:
            return {"data": "x" * msg["big"]}
        if "print" in msg:
            print(msg["print"])
        return {"n": msg["n"], "loop": asyncio._get_running_loop() is not None}
"""


class RecordingTransport:
    def __init__(self):
        self.writes = []

    def write(self, data):
        self.writes.append(bytes(data))

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return default

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def is_closing(self):
        return False

    def close(self):
        pass

    def abort(self):
        pass


def replies(data):
    """The JSON messages of the frames in ``data``."""
    out = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 21 : pos + 25], "big")
        out.append(json.loads(data[pos + 25 : pos + 25 + length]))
        pos += 25 + length + 16
    return out


class ConnectionCase(unittest.TestCase):
    def run_in_process(self, body, **server_options):
        """Runs ``await body(server, conn, transport)``: a server (``Server``
        keyword arguments: ``server_options``) and one connection in this
        process, on a recording transport."""

        async def main():
            with tempfile.TemporaryDirectory() as root:
                server = Server(root, "t", **server_options)
                server.loop = asyncio.get_running_loop()
                server.loop_ident = threading.get_ident()
                try:
                    conn = Connection(server)
                    transport = RecordingTransport()
                    conn.connection_made(transport)
                    await body(server, conn, transport)
                finally:
                    server.executor.shutdown(wait=True)

        old = capture.install()  # print() goes to the current call, as in the server
        try:
            asyncio.run(main())
        finally:
            capture.uninstall(old)

    def run_with_connection(self, body, **server_options):
        """``run_in_process`` with model ``m`` (``SOURCE``) added and the writes so far dropped."""

        async def added(server, conn, transport):
            del transport.writes[:]  # the hello event
            conn.data_received(encode({"id": 1, "cmd": "addModel", "name": "m", "source": SOURCE}))
            for _ in range(500):
                added = [r for r in replies(b"".join(transport.writes)) if r.get("id") == 1]
                if added:
                    break
                await asyncio.sleep(0.01)
            self.assertTrue(added and added[0]["ok"], added)
            del transport.writes[:]
            await body(server, conn, transport)

        self.run_in_process(added, **server_options)


class ReadBatchTest(ConnectionCase):
    def test_replies_of_one_read_are_written_every_flush_every_requests(self):
        async def body(server, conn, transport):
            every = Connection.FLUSH_EVERY
            count = 2 * every + 5
            # Only FLUSH_EVERY splits the writes here: on a loaded machine an
            # inline call may take longer than INLINE_FLUSH (its reply was
            # written at once: [4, 28, 32, 5]) or the read longer than
            # INLINE_BUDGET (later calls went to threads).
            conn.INLINE_FLUSH = conn.INLINE_BUDGET = float("inf")
            data = b"".join(
                encode({"id": 10 + n, "cmd": "executeModel", "name": "m", "msg": {"n": n}})
                for n in range(count)
            )
            conn.data_received(data)
            self.assertEqual([len(replies(w)) for w in transport.writes], [every, every, 5])
            got = replies(b"".join(transport.writes))
            self.assertEqual([r["id"] for r in got], [10 + n for n in range(count)])
            self.assertEqual([r["result"] for r in got], [{"n": n, "loop": False} for n in range(count)])

        self.run_with_connection(body)

    def test_loop_handlers_after_inline_calls_see_the_running_loop(self):
        async def body(server, conn, transport):
            seen = []
            server.register("loopcheck", lambda call: seen.append(asyncio._get_running_loop()) or "ok", threaded=False)
            msgs = [
                {"id": 20, "cmd": "executeModel", "name": "m", "msg": {"n": 0}},
                {"id": 21, "cmd": "loopcheck"},
                {"id": 22, "cmd": "executeModel", "name": "m", "msg": {"n": 1}},
            ]
            conn.data_received(b"".join(encode(m) for m in msgs))
            self.assertEqual(seen, [server.loop])
            self.assertIs(asyncio._get_running_loop(), server.loop)  # shown again after the read
            got = {r["id"]: r for r in replies(b"".join(transport.writes))}
            self.assertEqual(got[20]["result"], {"n": 0, "loop": False})
            self.assertEqual(got[21]["result"], "ok")
            self.assertEqual(got[22]["result"], {"n": 1, "loop": False})

        self.run_with_connection(body)

    def test_output_of_inline_calls_goes_to_the_printing_call_before_its_reply(self):
        async def body(server, conn, transport):
            server.register("loopprint", lambda call: print("from a loop handler") or "ok", threaded=False)
            msgs = [
                {"id": 40, "cmd": "executeModel", "name": "m", "msg": {"n": 0}},
                {"id": 41, "cmd": "executeModel", "name": "m", "msg": {"n": 1, "print": "hello"}},
                {"id": 42, "cmd": "loopprint"},
                {"id": 43, "cmd": "executeModel", "name": "m", "msg": {"n": 3, "print": "again"}},
                {"id": 44, "cmd": "executeModel", "name": "m", "msg": {"n": 4}},
            ]
            conn.data_received(b"".join(encode(m) for m in msgs))
            got = replies(b"".join(transport.writes))
            logs = [(m["request"], m["message"]) for m in got if m.get("event") == "log"]
            self.assertEqual(logs, [(41, "hello"), (43, "again")])
            order = [m.get("request", m.get("id")) for m in got]
            self.assertEqual(order, [40, 41, 41, 42, 43, 43, 44])  # each event before its reply
            self.assertEqual([m["ok"] for m in got if "ok" in m], [True] * 5)

        self.run_with_connection(body)

    def test_big_replies_are_whole_before_and_after_the_connection_sees_big_data(self):
        size = 3 * BIG

        async def body(server, conn, transport):
            self.assertFalse(conn._big_seen)
            msg = {"id": 30, "cmd": "executeModel", "name": "m", "msg": {"big": size}}
            conn.data_received(encode(msg))  # small request, big reply: made the slow way
            self.assertTrue(conn._big_seen)  # later replies look for big strings
            msg = {"id": 31, "cmd": "executeModel", "name": "m", "msg": {"big": size, "pad": "y" * size}}
            conn.data_received(encode(msg))
            got = replies(b"".join(transport.writes))
            self.assertEqual([r["id"] for r in got], [30, 31])
            self.assertEqual([r["result"] for r in got], [{"data": "x" * size}] * 2)

        self.run_with_connection(body)


class NoFeedFramer(Framer):
    __slots__ = ()

    def feed(self, data):
        raise AssertionError("a lone request went through Framer.feed")


class SingleCountingFramer(Framer):
    __slots__ = ("singles",)

    def __init__(self):
        super().__init__()
        self.singles = 0

    def single(self, data):
        self.singles += 1
        return super().single(data)


class LoneRequestTest(ConnectionCase):
    """A read of one request (a sequential client) takes a shorter lane
    (Connection._run_lone) with the same results as the general loop."""

    def test_a_lone_inline_request_is_answered_without_the_frame_loop(self):
        async def body(server, conn, transport):
            conn._framer = NoFeedFramer()  # the lane needs neither the frame loop
            conn._handle_all = None  # nor the request loop
            served = server.requests_served
            conn.data_received(encode({"id": 50, "cmd": "executeModel", "name": "m", "msg": {"n": 5}}))
            self.assertEqual(len(transport.writes), 1)
            self.assertEqual(replies(transport.writes[0]), [{"id": 50, "ok": True, "result": {"n": 5, "loop": False}}])
            self.assertEqual(server.requests_served, served + 1)
            self.assertIs(asyncio._get_running_loop(), server.loop)  # shown again after the call

        self.run_with_connection(body)

    def test_a_lone_request_gets_the_bytes_the_general_loop_writes(self):
        ping = {"id": 60, "cmd": "ping"}
        requests = [
            {"id": 61, "cmd": "executeModel", "name": "m", "msg": {"n": 1}},
            {"id": 62, "cmd": "executeModel", "name": "m", "msg": {"print": "x"}},  # KeyError: 'n'
            {"id": 64, "cmd": "nope"},
            {"id": "x", "cmd": "executeModel", "name": "m", "msg": {"n": 1}},
        ]

        async def body(server, conn, transport):
            for msg in requests:
                del transport.writes[:]
                conn.data_received(encode(msg))
                lone = b"".join(transport.writes)
                del transport.writes[:]
                conn.data_received(encode(ping) + encode(msg))  # two frames: the general loop
                general = b"".join(transport.writes)
                self.assertEqual(lone, general[len(Framer.encode(b'{"id":60,"ok":true,"result":"pong"}')) :], msg)

        self.run_with_connection(body)

    def test_a_big_lone_request_goes_straight_to_the_frame_loop(self):
        async def body(server, conn, transport):
            framer = SingleCountingFramer()
            conn._framer = framer
            conn.data_received(encode({"id": 55, "cmd": "executeModel", "name": "m", "msg": {"n": 1, "pad": "y" * BIG}}))
            self.assertEqual(framer.singles, 0)  # not hashed twice
            conn.data_received(encode({"id": 56, "cmd": "executeModel", "name": "m", "msg": {"n": 2}}))
            self.assertEqual(framer.singles, 1)
            got = replies(b"".join(transport.writes))
            self.assertEqual([(r["id"], r["result"]["n"]) for r in got], [(55, 1), (56, 2)])

        self.run_with_connection(body)

    def test_output_of_a_lone_inline_call_is_written_before_its_reply(self):
        async def body(server, conn, transport):
            conn.data_received(encode({"id": 70, "cmd": "executeModel", "name": "m", "msg": {"n": 7, "print": "hi"}}))
            got = replies(b"".join(transport.writes))
            self.assertEqual([(m.get("event"), m.get("request", m.get("id"))) for m in got], [("log", 70), (None, 70)])
            self.assertEqual(got[0]["message"], "hi")
            self.assertEqual(got[1]["result"], {"n": 7, "loop": False})

        self.run_with_connection(body)

    def test_a_lone_request_before_auth_is_refused_and_not_run(self):
        async def main():
            with tempfile.TemporaryDirectory() as root:
                server = Server(root, "t", secret="s3cret")
                server.loop = asyncio.get_running_loop()
                server.loop_ident = threading.get_ident()
                ran = []
                server.register("probe", lambda call: ran.append(call.id), threaded=True, inline=lambda call: lambda c: (True, ran.append(c.id)))
                try:
                    conn = Connection(server)
                    transport = RecordingTransport()
                    conn.connection_made(transport)
                    await asyncio.sleep(0)
                    del transport.writes[:]  # the hello event
                    conn.data_received(encode({"id": 80, "cmd": "probe"}))
                    await asyncio.sleep(0.05)
                    got = replies(b"".join(transport.writes))
                    self.assertEqual([(m["id"], m["error"]["type"]) for m in got], [(80, "AuthenticationError")])
                    self.assertEqual(ran, [])
                finally:
                    server.executor.shutdown(wait=True)

        asyncio.run(main())


if __name__ == "__main__":
    unittest.main()
