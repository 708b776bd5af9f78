"""docs/protocol.md's examples, checked against a real server.

Other languages implement the protocol from that document alone, so what
its examples show must be what the server sends: the §3 messages (the
``doubler`` request, its reply and the error for a model not loaded) and the
§4 ``auth`` exchange (the reply's keys, ``serverMac`` over ``clientNonce``).
"""

import json
import os
import re
import unittest

from ._client import ServerProcess, mac

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "protocol.md")
DOUBLER = os.path.join(ROOT, "examples", "models", "doubler.py")


def section(text, title):
    """The text of the section whose heading starts with ``title``."""
    start = text.index("\n## " + title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def json_blocks(text):
    return re.findall(r"```json\n(.*?)```", text, re.S)


class ProtocolDocExamplesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DOC, encoding="utf-8") as f:
            cls.doc = f.read()

    def setUp(self):
        self.server = ServerProcess()

    def tearDown(self):
        self.server.kill()

    def test_the_messages_of_section_3(self):
        lines = json_blocks(section(self.doc, "3. Messages"))[0].strip().splitlines()
        request, reply, error, event = (json.loads(line) for line in lines)
        self.assertEqual(event["event"], "output")
        c = self.server.connect()
        # No model loaded yet: the error reply, exactly.
        c.send(request)
        self.assertEqual(c.reply_for(request["id"]), error)
        with open(DOUBLER, encoding="utf-8") as f:
            c.call("addModel", name=request["name"], source=f.read())
        c.send(request)
        self.assertEqual(c.reply_for(request["id"]), reply)

    def test_the_auth_exchange_of_section_4(self):
        text = section(self.doc, "4. Connection set-up")
        hello, auth = (json.loads(block) for block in json_blocks(text)[:2])
        shape = re.search(r"The `auth` is answered with\n`(\{.*?\})`", text, re.S)
        self.assertIsNotNone(shape, "the auth reply example moved")
        doc_reply = json.loads(shape.group(1))
        c = self.server.connect(auth=False)
        self.assertEqual(sorted(c.hello), sorted(hello))
        nonce = "0123456789abcdef0123456789abcdef"
        self.assertEqual(sorted(auth), ["batch", "bytes", "clientNonce", "cmd", "id", "mac"])
        reply = c.request(
            "auth", rid=auth["id"], mac=mac(self.server.secret, c.hello["nonce"]), batch=True, clientNonce=nonce
        )
        self.assertEqual(sorted(reply), sorted(doc_reply))
        self.assertEqual(sorted(reply["result"]), sorted(doc_reply["result"]))
        self.assertEqual(reply["result"]["serverMac"], mac(self.server.secret, "server:" + nonce))


if __name__ == "__main__":
    unittest.main()
