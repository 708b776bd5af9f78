"""Batch frames (protocol §3): ``{"batch": [...]}`` in both directions, in
process (a recording transport), and the handshake that enables them."""

import json
import unittest

from pyproxy_server.connection import Connection

from ._client import ServerProcess, encode, mac
from .test_read_batch import ConnectionCase, replies


def unbatched(payloads):
    """Messages of decoded frame payloads, batches expanded."""
    out = []
    for p in payloads:
        out.extend(p["batch"] if "batch" in p and "id" not in p else [p])
    return out


def payload_lengths(data):
    """The payload length of each frame in ``data`` (whole frames, back to back)."""
    lengths = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 21 : pos + 25], "big")
        lengths.append(length)
        pos += 25 + length + 16
    return lengths


def execute(rid, n, **extra):
    msg = {"n": n}
    msg.update(extra)
    return {"id": rid, "cmd": "executeModel", "name": "m", "msg": msg}


def ask_for_batches(conn, transport):
    conn.data_received(encode({"id": 9, "cmd": "auth", "batch": True}))
    (reply,) = replies(b"".join(transport.writes))
    assert reply["ok"], reply
    del transport.writes[:]


class BatchFrameTest(ConnectionCase):
    def test_a_batch_frame_is_handled_like_its_messages_in_frames(self):
        async def body(server, conn, transport):
            conn.data_received(encode({"batch": [execute(10 + n, n) for n in range(3)]}))
            got = replies(b"".join(transport.writes))
            self.assertEqual([r["id"] for r in got], [10, 11, 12], "one frame per reply: no batch was asked for")
            self.assertEqual([r["result"]["n"] for r in got], [0, 1, 2])
            self.assertEqual(server.batches_received, 1)
            self.assertEqual(server.batches_sent, 0)

        self.run_with_connection(body)

    def test_replies_are_batched_once_the_auth_asks_for_it(self):
        async def body(server, conn, transport):
            ask_for_batches(conn, transport)
            every = Connection.FLUSH_EVERY
            count = 2 * every + 5
            conn.data_received(encode({"batch": [execute(100 + n, n) for n in range(count)]}))
            frames = [replies(w) for w in transport.writes]
            self.assertEqual([len(f) for f in frames], [1, 1, 1], "one batch frame per flush")
            self.assertEqual([len(f[0]["batch"]) for f in frames], [every, every, 5])
            got = unbatched(f[0] for f in frames)
            self.assertEqual([r["id"] for r in got], [100 + n for n in range(count)])
            self.assertEqual([r["result"]["n"] for r in got], list(range(count)))
            self.assertEqual(server.batches_sent, 3)

        self.run_with_connection(body)

    def test_a_single_reply_and_a_large_one_travel_in_frames_of_their_own(self):
        async def body(server, conn, transport):
            ask_for_batches(conn, transport)
            conn.data_received(encode(execute(1, 0)))
            (only,) = replies(b"".join(transport.writes))
            self.assertEqual(only["id"], 1)
            del transport.writes[:]
            big = Connection.BATCH_ITEM_MAX + 10
            msgs = [execute(2, 1), execute(3, 2), execute(4, 0, big=big), execute(5, 3), execute(6, 4)]
            conn.data_received(b"".join(encode(m) for m in msgs))
            frames = replies(b"".join(transport.writes))
            self.assertEqual(len(frames), 3, [list(f) for f in frames])
            self.assertEqual([r["id"] for r in frames[0]["batch"]], [2, 3])
            self.assertEqual(frames[1]["id"], 4)
            self.assertEqual(len(frames[1]["result"]["data"]), big)
            self.assertEqual([r["id"] for r in frames[2]["batch"]], [5, 6])

        self.run_with_connection(body)

    def test_a_batch_stops_before_batch_max_bytes(self):
        async def body(server, conn, transport):
            ask_for_batches(conn, transport)
            size = 3000
            count = 3 * Connection.BATCH_MAX // size
            conn.data_received(encode({"batch": [execute(10 + n, n, big=size) for n in range(count)]}))
            data = b"".join(transport.writes)
            frames = replies(data)
            self.assertGreater(len(frames), 3)
            self.assertLessEqual(max(payload_lengths(data)), Connection.BATCH_MAX + len(b'{"batch":[]}'))
            got = unbatched(frames)
            self.assertEqual([r["id"] for r in got], [10 + n for n in range(count)])

        self.run_with_connection(body)

    def test_a_batch_frame_stays_within_the_servers_own_frame_limit(self):
        # A client reads frames up to the maxFrameSize the server announced:
        # batches were up to 64 KiB whatever that limit.
        limit = 8192

        async def body(server, conn, transport):
            ask_for_batches(conn, transport)
            count = 5 * limit // 500 // 5 * 5
            wire = b"".join(encode({"batch": [execute(10 + n + k, n + k, big=400) for k in range(5)]})
                            for n in range(0, count, 5))
            conn.data_received(wire)
            data = b"".join(transport.writes)
            frames = replies(data)
            self.assertGreater(len(frames), 3)
            self.assertEqual(len(payload_lengths(data)), len(frames))
            self.assertLessEqual(max(payload_lengths(data)), limit)
            self.assertGreater(max(len(f.get("batch", ())) for f in frames), 5, "still batched")
            got = unbatched(frames)
            self.assertEqual([r["id"] for r in got], [10 + n for n in range(count)])

        self.run_with_connection(body, max_frame_size=limit)

    def test_bad_batches_are_answered_and_the_good_messages_still_run(self):
        async def body(server, conn, transport):
            conn.data_received(encode({"batch": 5}))
            conn.data_received(encode({"batch": [7, execute(1, 1), {"batch": [execute(2, 2)]}, execute(3, 3)]}))
            got = replies(b"".join(transport.writes))
            errors = [r for r in got if r["id"] is None]
            self.assertEqual(
                [e["error"]["message"] for e in errors],
                [
                    "Cannot parse payload: 'batch' must be an array",
                    "Cannot parse payload: a batch item is not a JSON object",
                    "Cannot parse payload: a batch inside a batch",
                ],
            )
            self.assertTrue(all(e["error"]["type"] == "ProtocolError" for e in errors))
            self.assertEqual({r["id"]: r["result"]["n"] for r in got if r["id"] is not None}, {1: 1, 3: 3})

        self.run_with_connection(body)


class BatchHandshakeTest(unittest.TestCase):
    def test_hello_offers_batches_and_a_batch_before_auth_is_refused(self):
        server = ServerProcess()
        try:
            client = server.connect(auth=False)
            self.assertIs(client.hello["batch"], True)
            client.send({"batch": [{"id": 1, "cmd": "ping"}]})
            reply = client.recv()
            self.assertEqual(reply["error"]["type"], "AuthenticationError")
            self.assertTrue(client.wait_closed())
        finally:
            server.kill()

    def test_a_client_that_asks_gets_batched_replies(self):
        server = ServerProcess()
        try:
            client = server.connect(auth=False)
            client.send({"id": 1, "cmd": "auth", "mac": mac(server.secret, client.hello["nonce"]), "batch": True})
            self.assertTrue(client.recv()["ok"])
            client.send({"batch": [{"id": 10 + n, "cmd": "ping"} for n in range(5)]})
            reply = client.recv()
            self.assertEqual([r["id"] for r in reply["batch"]], [10, 11, 12, 13, 14])
            self.assertEqual({r["result"] for r in reply["batch"]}, {"pong"})
            status = client.call("serverStatus")
            self.assertEqual(status["batchFrames"], {"received": 1, "sent": 1})
        finally:
            server.kill()


if __name__ == "__main__":
    unittest.main()
