"""Lone surrogates (U+D800 to U+DFFF) in any string the server sends go out
as JSON escapes: valid UTF-8 on the wire, the same string for the peer."""

import json
import unittest

from ._client import ServerProcess

MODEL = """
import os
from pyproxy import host

class Model:
    def execute(self, msg):
        name = os.fsdecode(b"caf\\xe9")
        print("printed", name)
        return {"echo": msg["v"], "name": name, "host": host.call("lookup", {"key": name})}
"""


class SurrogatesTest(unittest.TestCase):
    def setUp(self):
        self.server = ServerProcess()
        self.c = self.server.connect()

    def tearDown(self):
        self.server.kill()

    def test_replies_log_events_and_host_requests_carry_them_exactly(self):
        self.c.call("addModel", name="m", source=MODEL)
        self.c.handlers["lookup"] = lambda args: {"seen": args["key"], "back": "\udfff"}
        result = self.c.call("executeModel", name="m", msg={"v": "a\ud800b"})
        self.assertEqual(result, {
            "echo": "a\ud800b",
            "name": "caf\udce9",
            "host": {"seen": "caf\udce9", "back": "\udfff"},
        })
        self.assertEqual(self.c.host_requests[0]["args"], {"key": "caf\udce9"})
        logs = [e["message"] for e in self.c.events if e.get("event") == "log"]
        self.assertEqual(logs, ["printed caf\udce9"])

    def test_error_messages_carry_them(self):
        reply = self.c.request("eval", code="raise KeyError('k\\udc80')")
        self.assertEqual(reply["error"]["exception"], "KeyError")
        self.assertIn("k\\udc80", reply["error"]["message"])  # repr() of the key
        reply = self.c.request("eval", code="raise ValueError('v\\udc80')")
        self.assertEqual(reply["error"]["message"], "v\udc80")
        self.assertIn("v\udc80", reply["error"]["traceback"])


if __name__ == "__main__":
    unittest.main()
