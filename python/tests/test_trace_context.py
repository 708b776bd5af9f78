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

    def test_execute_batch_reads_none(self):
        c = self.client()
        reply = c.call("executeBatch", name="tbatch", msgs=[{}, {}], traceparent=PARENT)
        self.assertEqual(reply["results"], [{"trace": None}, {"trace": None}])


if __name__ == "__main__":
    unittest.main()
