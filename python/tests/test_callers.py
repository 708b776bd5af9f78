"""Callers (protocol §6, ``caller`` and ``executeBatch``'s ``callers``):
who makes a call (a gateway token's id), as ``host.caller()`` and
``host.callers()`` give it to the model."""

import unittest

from .test_server import ServerTestCase

A = "6c058b0daa6316f5"
B = "28843c05b742af31"


class CallerTest(ServerTestCase):
    shared = True

    def client(self):
        c = self.connect()
        for cls in ("Model", "Stream", "Batch"):
            c.call("addModel", name="callers-" + cls.lower(), file="callers.py", **{"class": cls})
        return c

    def test_a_call_sees_its_caller(self):
        c = self.client()
        self.assertEqual(
            c.call("executeModel", name="callers-model", msg={}, caller=A),
            {"caller": A, "callers": [A]},
        )

    def test_a_call_without_one_or_with_one_it_cannot_read_sees_none(self):
        c = self.client()
        for extra in ({}, {"caller": 7}, {"caller": None}):
            self.assertEqual(
                c.call("executeModel", name="callers-model", msg={}, **extra),
                {"caller": None, "callers": [None]},
                extra,
            )

    def test_a_stream_sees_its_caller(self):
        c = self.client()
        c.events.clear()
        self.assertEqual(c.call("executeStream", rid=31, name="callers-stream", msg={}, caller=B), {"items": 1})
        items = [e["data"] for e in c.events if e.get("event") == "item" and e.get("id") == 31]
        self.assertEqual(items, [B])

    def test_execute_batch_sees_one_caller_per_message_and_caller_none(self):
        c = self.client()
        callers = [A, None, B]
        reply = c.call("executeBatch", name="callers-batch", msgs=[{}, {}, {}], callers=callers)
        self.assertEqual(reply["results"], [{"caller": None, "callers": callers}] * 3)
        # A list that is not one per message counts as none.
        reply = c.call("executeBatch", name="callers-batch", msgs=[{}, {}], callers=[A])
        self.assertEqual(reply["results"][0]["callers"], [None, None])

    def test_a_split_batch_gives_each_part_the_callers_of_its_own_messages(self):
        c = self.client()
        callers = [A, B, None, B, A]
        reply = c.call("executeBatch", name="callers-batch", msgs=[{}] * 5, callers=callers, split=True)
        self.assertEqual([r["callers"] for r in reply["results"]], [callers[:3]] * 3 + [callers[3:]] * 2)
        reply = c.call("executeBatch", name="callers-model", msgs=[{}] * 2, callers=[A, None], split=True)
        self.assertEqual(reply["results"], [{"caller": A, "callers": [A]}, {"caller": None, "callers": [None]}])

    def test_outside_a_call_there_is_none(self):
        from pyproxy import host

        self.assertIsNone(host.caller())
        self.assertEqual(host.callers(), [])


if __name__ == "__main__":
    unittest.main()
