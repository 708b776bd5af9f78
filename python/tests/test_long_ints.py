"""Integers longer than Python converts from text (``sys.get_int_max_str_digits``,
4300 digits by default): every way one can reach the server gets an error
reply for that request (or fails that host call), and the connection keeps
serving. The host sends integers of any size (its ``integers: "bigint"``);
before, such a message was the connection's ``ProtocolError``, which the
host treats as fatal: one gateway request killed its worker."""

import hashlib
import os
import shutil
import sys
import tempfile
import unittest

from pyproxy_server import long_int

from ._client import ServerProcess, frame

LIMIT = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0


def long_digits(extra=1):
    return b"1" + b"0" * (LIMIT + extra - 1)


def request(rid, value, cmd=b"executeModel"):
    return b'{"id":%d,"cmd":"%s","name":"r","msg":{"kind":"echo","value":%s}}' % (rid, cmd, value)


def ping(rid):
    return b'{"id":%d,"cmd":"ping"}' % rid


class LongIntTest(unittest.TestCase):
    def test_decode_marks_only_overlong_integers(self):
        if not LIMIT:
            self.skipTest("this Python converts integers of any length")
        msg = long_int.decode(b'{"a":[1,-' + long_digits(5) + b'],"b":"x","c":12345678901234567890}')
        self.assertEqual(msg["a"][0], 1)
        self.assertEqual(long_int.find(msg).digits, LIMIT + 5)
        self.assertEqual(msg["c"], 12345678901234567890)
        self.assertIsNone(long_int.decode(b'{"a":1}'))
        self.assertIsNone(long_int.decode(b'{"a":' + long_digits() + b"x}"))


@unittest.skipUnless(LIMIT, "this Python converts integers of any length")
class LongIntServerTest(unittest.TestCase):
    def setUp(self):
        self.server = ServerProcess()
        self.tmp = tempfile.mkdtemp(prefix="pyproxy-longint-test-")
        self.c = self.server.connect()
        self.c.call("addModel", name="r", file="results.py")

    def tearDown(self):
        self.server.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assert_too_long(self, reply, rid):
        self.assertEqual(reply["id"], rid, reply)
        self.assertFalse(reply["ok"], reply)
        self.assertEqual(reply["error"]["type"], "InvalidRequestError", reply)
        self.assertIn("integer of %d digits" % (LIMIT + 1), reply["error"]["message"])
        # Nothing of it ran: a host may send its parts again (protocol §2).
        self.assertIs(reply["error"].get("unread"), True, reply)

    def assert_serving(self):
        self.assertEqual(self.c.call("ping"), "pong")
        self.assertEqual(self.c.call("executeModel", name="r", msg={"kind": "echo", "value": 10**20}), 10**20)

    def test_a_request_alone_and_among_others_gets_an_error_reply(self):
        self.c.send_raw(frame(request(5, long_digits())))
        self.assert_too_long(self.c.reply_for(5), 5)
        self.assert_serving()
        self.c.send_raw(frame(ping(1)) + frame(request(2, b"[" + long_digits() + b"]")) + frame(ping(3)))
        self.assertEqual(self.c.reply_for(1)["result"], "pong")
        self.assert_too_long(self.c.reply_for(2), 2)
        self.assertEqual(self.c.reply_for(3)["result"], "pong")
        self.assert_serving()

    def test_an_item_of_a_batch_frame_is_answered_alone(self):
        batch = b'{"batch":[' + b",".join((ping(1), request(2, long_digits()), ping(3))) + b"]}"
        self.c.send_raw(frame(batch))
        self.assertEqual(self.c.reply_for(1)["result"], "pong")
        self.assert_too_long(self.c.reply_for(2), 2)
        self.assertEqual(self.c.reply_for(3)["result"], "pong")
        self.assert_serving()

    def test_a_spilled_request_gets_an_error_reply(self):
        self.c.call("configure", spill={"dir": self.tmp, "threshold": 1 << 20})
        data = request(6, long_digits())
        path = os.path.join(self.tmp, "long.json")
        with open(path, "wb") as f:
            f.write(data)
        ref = {"path": path, "size": len(data), "md5": hashlib.md5(data).hexdigest()}
        self.c.send({"id": 6, "cmd": "executeModel", "$spill": ref})
        self.assert_too_long(self.c.reply_for(6), 6)
        self.assert_serving()

    def test_a_host_reply_fails_that_host_call(self):
        self.c.call("addModel", name="caller", file="caller.py")
        self.c.send({"id": 9, "cmd": "executeModel", "name": "caller", "msg": {"op": "call", "name": "big"}})
        msg = self.c.recv()
        while msg.get("cmd") != "big":
            msg = self.c.recv()
        self.c.send_raw(frame(b'{"id":%d,"ok":true,"result":%s}' % (msg["id"], long_digits())))
        reply = self.c.reply_for(9)
        self.assertEqual(reply["error"]["type"], "HostError", reply)
        self.assertIn("Cannot read host reply: an integer of", reply["error"]["message"])
        self.assert_serving()

    def test_a_model_that_raises_the_limit_gets_the_integer(self):
        self.c.call(
            "addModel",
            name="unlimited",
            source="import sys\nsys.set_int_max_str_digits(0)\n\nclass M:\n    def execute(self, msg):\n        return len(str(msg))\n",
        )
        # The limit is the process's: the model's module set it before the request came.
        self.c.send_raw(frame(b'{"id":7,"cmd":"executeModel","name":"unlimited","msg":%s}' % long_digits()))
        self.assertEqual(self.c.reply_for(7)["result"], LIMIT + 1)


if __name__ == "__main__":
    unittest.main()
