"""``host.trace_context()``: the W3C trace context of a call (protocol §6,
``traceparent`` and ``tracestate``)."""

import unittest

from pyproxy import host

from .test_server import ServerTestCase

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class TraceContextOutsideACallTest(unittest.TestCase):
    def test_outside_a_call_it_is_none(self):
        self.assertIsNone(host.trace_context())


class TraceContextServerTest(ServerTestCase):
    shared = True

    def client(self):
        c = self.connect()
        c.call("addModel", name="traced", file="traced.py", **{"class": "Model"})
        c.call("addModel", name="tstream", file="traced.py", **{"class": "Stream"})
        c.call("addModel", name="tbatch", file="traced.py", **{"class": "Batch"})
        return c

    def test_the_model_reads_the_calls_trace_context(self):
        c = self.client()
        reply = c.call("executeModel", name="traced", msg={}, traceparent=PARENT, tracestate="rojo=1,congo=2")
        self.assertEqual(reply, {"trace": {"traceparent": PARENT, "tracestate": "rojo=1,congo=2"}})
        reply = c.call("executeModel", name="traced", msg={}, traceparent=PARENT)
        self.assertEqual(reply, {"trace": {"traceparent": PARENT}})

    def test_without_a_traceparent_string_it_is_none(self):
        c = self.client()
        for extra in ({}, {"traceparent": 7}, {"tracestate": "rojo=1"}, {"traceparent": None}):
            self.assertEqual(c.call("executeModel", name="traced", msg={}, **extra), {"trace": None}, extra)

    def test_a_stream_reads_it_too(self):
        c = self.client()
        reply = c.request("executeStream", name="tstream", msg={}, traceparent=PARENT, timeout=10)
        self.assertEqual(reply["result"], {"items": 1}, reply)
        items = [e for e in c.events if e.get("event") == "item" and e.get("id") == reply["id"]]
        self.assertEqual([e["data"] for e in items], [{"trace": {"traceparent": PARENT}}], c.events)

    def test_execute_batch_reads_none_and_each_messages_context_in_trace_contexts(self):
        c = self.client()
        # A batch's own traceparent is nobody's: its messages' are in traceContexts.
        reply = c.call("executeBatch", name="tbatch", msgs=[{}, {}], traceparent=PARENT)
        self.assertEqual(reply["results"], [{"trace": None, "traces": [None, None]}] * 2)
        other = PARENT.replace("00f067aa0ba902b7", "b7ad6b7169203331").replace("-01", "-00")
        contexts = [{"traceparent": PARENT, "tracestate": "rojo=1"}, None, {"traceparent": other}]
        reply = c.call("executeBatch", name="tbatch", msgs=[{}, {}, {}], traceContexts=contexts)
        self.assertEqual(reply["results"], [{"trace": None, "traces": contexts}] * 3)
        # Not a list as long as msgs, or entries without a traceparent string: none.
        for bad in ([{"traceparent": PARENT}], "x", [{"tracestate": "a=1"}, 7]):
            reply = c.call("executeBatch", name="tbatch", msgs=[{}, {}], traceContexts=bad)
            self.assertEqual(reply["results"], [{"trace": None, "traces": [None, None]}] * 2, bad)

    def test_a_split_batch_gives_each_message_its_own_context(self):
        c = self.client()
        contexts = [{"traceparent": PARENT}, None]
        # A model that no longer batches: each execute sees its message's.
        reply = c.call("executeBatch", name="traced", msgs=[{}, {}], traceContexts=contexts, split=True)
        self.assertEqual(reply["results"], [{"trace": {"traceparent": PARENT}}, {"trace": None}])
        # A smaller batch_size: each part gets its own messages' contexts.
        msgs = [{}] * 5
        contexts = [{"traceparent": PARENT.replace("-01", "-0%d" % (i % 2))} for i in range(5)]
        reply = c.call("executeBatch", name="tbatch", msgs=msgs, traceContexts=contexts, split=True)
        self.assertEqual(
            [r["traces"] for r in reply["results"]],
            [contexts[:4]] * 4 + [contexts[4:]],
        )

    def test_outside_a_call_trace_contexts_is_empty(self):
        self.assertEqual(host.trace_contexts(), [])


if __name__ == "__main__":
    unittest.main()
