"""Request ids (protocol §6, ``requestId``): ``host.request_id()`` and the
log events of a call that has one."""

import os
import unittest

from .test_server import ServerTestCase

ID = "req-7f3a.b:c_d"


class RequestIdTest(ServerTestCase):
    shared = True

    def client(self):
        c = self.connect()
        c.call("addModel", name="ids", file="request_ids.py", **{"class": "Model"})
        c.call("configure", logRecords=True)
        return c

    def logs(self, c, rid):
        return [e for e in c.events if e.get("event") == "log" and e.get("request") == rid]

    def test_a_call_sees_its_request_id_and_its_log_events_carry_it(self):
        c = self.client()
        c.events.clear()
        seen = c.call("executeModel", rid=41, name="ids", msg={}, requestId=ID)
        self.assertEqual(seen, {"call": ID, "task": ID, "plainThread": None, "copiedThread": ID})
        events = self.logs(c, 41)
        self.assertEqual(sorted(e["stream"] for e in events), ["logging", "stdout"], events)
        for event in events:
            self.assertEqual(event["requestId"], ID, event)

    def test_a_call_without_one_sees_none_and_its_events_have_no_field(self):
        c = self.client()
        c.events.clear()
        # Neither absent nor a non-string value gives an id.
        for rid, extra in ((42, {}), (43, {"requestId": 7})):
            seen = c.call("executeModel", rid=rid, name="ids", msg={}, **extra)
            self.assertEqual(seen, {"call": None, "task": None, "plainThread": None, "copiedThread": None})
            events = self.logs(c, rid)
            self.assertEqual(len(events), 2, events)
            for event in events:
                self.assertNotIn("requestId", event)

    def test_concurrent_calls_each_see_their_own(self):
        c = self.client()
        c.send(
            {"id": 51, "cmd": "executeModel", "name": "ids", "msg": {"meet": True}, "requestId": "first"},
            {"id": 52, "cmd": "executeModel", "name": "ids", "msg": {"meet": True}, "requestId": "second"},
        )
        first = c.reply_for(51, timeout=10)
        second = c.reply_for(52, timeout=10)
        self.assertEqual(first["result"]["call"], "first", first)
        self.assertEqual(first["result"]["copiedThread"], "first", first)
        self.assertEqual(second["result"]["call"], "second", second)
        self.assertEqual(second["result"]["task"], "second", second)

    def test_a_stream_sees_it_across_its_items(self):
        c = self.client()
        c.call("addModel", name="ids-stream", file="request_ids.py", **{"class": "Stream"})
        c.events.clear()
        self.assertEqual(c.call("executeStream", rid=61, name="ids-stream", msg={}, requestId=ID), {"items": 2})
        items = [e["data"] for e in c.events if e.get("event") == "item" and e.get("id") == 61]
        self.assertEqual(items, [ID, ID])
        self.assertEqual([e["requestId"] for e in self.logs(c, 61)], [ID])

    def test_outside_a_call_there_is_none(self):
        from pyproxy import host

        self.assertIsNone(host.request_id())

    def test_a_model_error_names_the_request_id_in_the_server_log(self):
        c = self.client()
        reply = c.request("executeModel", rid=71, name="ids", msg={"fail": True}, requestId=ID)
        self.assertEqual(reply["error"]["exception"], "ValueError", reply)
        # The error reply itself is unchanged: no id in it.
        self.assertNotIn("requestId", reply["error"])
        logs = os.path.join(self.root, "logs")
        text = ""
        for name in os.listdir(logs):
            if name.endswith(".log"):
                with open(os.path.join(logs, name)) as f:
                    text += f.read()
        self.assertIn("executeModel 71 (model ids) (request id %s) raised ValueError" % ID, text)


if __name__ == "__main__":
    unittest.main()
