"""An exception's notes (``add_note``, Python 3.11) in its error's message,
as Python prints them, without ``--debug``; and the wording of messages that
name a type or a count."""

import unittest

from ._client import ServerProcess

NOTED = '''class Model:
    def execute(self, msg):
        exc = ValueError(msg.get("text", "bad shape"))
        # add_note (3.11) sets __notes__; set here as it does, for 3.9 too.
        exc.__notes__ = msg["notes"]
        raise exc
'''

BATCH = '''class Model:
    batch_size = 4

    def execute_batch(self, msgs):
        return [1]
'''


class ExceptionNotesTest(unittest.TestCase):
    def setUp(self):
        self.server = ServerProcess()

    def tearDown(self):
        self.server.kill()

    def test_notes_follow_the_message_one_a_line_bounded(self):
        # Before: only the traceback (--debug) had them; the message was
        # "bad shape" alone.
        c = self.server.connect()
        c.call("addModel", name="noted", source=NOTED)
        error = c.request("executeModel", name="noted",
                          msg={"notes": ["while loading weights.bin", "shape (3, 4)"]})["error"]
        self.assertEqual(error["exception"], "ValueError")
        self.assertEqual(error["message"], "bad shape\nwhile loading weights.bin\nshape (3, 4)")
        # An empty message: the notes alone (Python prints the type's name, then them).
        error = c.request("executeModel", name="noted", msg={"text": "", "notes": ["only a note"]})["error"]
        self.assertEqual(error["message"], "only a note")
        # Bounded: 10 notes of at most 1000 characters each.
        notes = ["n%d" % i for i in range(11)] + ["x" * 1500]
        message = c.request("executeModel", name="noted", msg={"notes": notes})["error"]["message"]
        self.assertEqual(message.split("\n"), ["bad shape"] + notes[:10] + ["(2 more notes)"])
        long = c.request("executeModel", name="noted", msg={"notes": ["x" * 1500]})["error"]["message"]
        self.assertEqual(long, "bad shape\n" + "x" * 1000 + "... (500 more characters)")
        self.assertEqual(c.call("ping"), "pong")

    def test_a_type_and_a_count_are_worded_as_english(self):
        # Before: "execute_batch returned 1 results for 2 messages", "is a object".
        c = self.server.connect()
        c.call("addModel", name="batch", source=BATCH)
        error = c.request("executeBatch", name="batch", msgs=[{}, {}])["error"]
        self.assertIn("execute_batch returned 1 result for 2 messages", error["message"])
        c.call("addModel", name="obj", source="class Model:\n    def execute(self, msg):\n        return object()\n")
        error = c.request("executeModel", name="obj", msg={})["error"]
        self.assertIn("result is an object (", error["message"])


if __name__ == "__main__":
    unittest.main()
