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

    def server_log(self):
        logs = os.path.join(self.root, "logs")
        text = ""
        for name in os.listdir(logs):
            if name.endswith(".log"):
                with open(os.path.join(logs, name)) as f:
                    text += f.read()
        return text

    def test_a_model_error_names_the_request_id_in_the_server_log(self):
        c = self.client()
        reply = c.request("executeModel", rid=71, name="ids", msg={"fail": True}, requestId=ID)
        self.assertEqual(reply["error"]["exception"], "ValueError", reply)
        # The error reply itself is unchanged: no id in it.
        self.assertNotIn("requestId", reply["error"])
        self.assertIn("executeModel 71 (model ids) (request id %s) raised ValueError" % ID, self.server_log())

    def test_eval_code_sees_its_request_id(self):
        c = self.client()
        code = "from pyproxy import host\n(host.request_id(), host.request_ids())"
        self.assertEqual(c.call("eval", code=code, requestId=ID)["value"], [ID, [ID]])
        self.assertEqual(c.call("eval", code=code)["value"], [None, [None]])
        # An eval's error reply is unchanged.
        reply = c.request("eval", code="1 / 0", requestId=ID)
        self.assertEqual(reply["error"]["exception"], "ZeroDivisionError", reply)
        self.assertNotIn("requestId", reply["error"])

    def test_an_eval_error_is_in_the_server_log_once_with_its_request_id_and_traceback(self):
        c = self.client()
        code = "def inner():\n    raise KeyError('eval-failed-7q')\ninner()"
        reply = c.request("eval", rid=81, code=code, requestId="req-eval-7q")
        self.assertEqual(reply["error"]["exception"], "KeyError", reply)
        text = self.server_log()
        line = "eval 81 (request id req-eval-7q) raised KeyError: 'eval-failed-7q'"
        self.assertEqual(text.count(line), 1, text[-2000:])
        record = text[text.index(line):].split("\n20")[0]  # up to the next record's timestamp
        self.assertIn("in inner", record)  # its traceback, the code's frames only
        self.assertNotIn("pyproxy_server", record)
        # In a session: the line names it. Without an id: none named.
        session = c.call("openSession")["session"]
        c.request("eval", rid=82, code="1 / 0", session=session)
        self.assertIn("eval 82 (session %s) raised ZeroDivisionError: division by zero" % session, self.server_log())
        # An interrupted eval is no error of its code: not logged.
        c.send({"id": 83, "cmd": "eval", "code": "import time\nwhile True: time.sleep(0.01)"})
        while not any(e.get("event") == "evalStart" and e.get("id") == 83 for e in c.events):
            msg = c.recv(10)
            if "event" in msg:
                c.events.append(msg)
        c.send({"id": 84, "cmd": "cancel", "target": 83})
        self.assertEqual(c.reply_for(83, timeout=10)["error"]["type"], "CancelledError")
        self.assertNotIn("eval 83 ", self.server_log())

    def test_a_huge_error_is_cut_in_the_server_log(self):
        c = self.client()
        reply = c.request("eval", rid=85, code="raise ValueError('v' * 3000000)", requestId="req-huge")
        self.assertEqual(len(reply["error"]["message"]), 3000000)  # the reply keeps it whole
        text = self.server_log()
        start = text.index("eval 85 (request id req-huge)")
        end = text.find("\n20", start)  # the next record's timestamp, if any
        logged = text[start:] if end < 0 else text[start:end]
        self.assertLess(len(logged), 20000)
        self.assertIn("characters left out", logged)
        self.assertTrue(logged.rstrip().endswith("v"), logged[-200:])


class BatchRequestIdsTest(ServerTestCase):
    """``executeBatch``'s ``requestIds``: ``host.request_ids()`` in
    ``execute_batch``, its log events' ``requestIds``, its server log lines."""

    shared = True

    def client(self):
        c = self.connect()
        c.call("addModel", name="batch", file="request_ids.py", **{"class": "Batch"})
        c.call("addModel", name="plain", file="request_ids.py", **{"class": "Plain"})
        c.call("configure", logRecords=True)
        return c

    def test_execute_batch_sees_one_id_per_message_in_order_and_request_id_none(self):
        c = self.client()
        c.events.clear()
        ids = ["a-1", None, "c-3"]
        reply = c.call("executeBatch", rid=91, name="batch", msgs=[{}, {}, {}], requestIds=ids)
        self.assertEqual(reply["results"], [{"id": None, "ids": ids, "n": 3}] * 3)
        # Its log events (the record and the printed line) carry the ids it has.
        events = [e for e in c.events if e.get("event") == "log" and e.get("request") == 91]
        self.assertEqual(sorted(e["stream"] for e in events), ["logging", "stdout"], events)
        for event in events:
            self.assertEqual(event["requestIds"], ["a-1", "c-3"], event)
            self.assertNotIn("requestId", event)

    def test_without_ids_or_with_ids_it_cannot_read_every_message_has_none(self):
        c = self.client()
        for rid, extra in ((92, {}), (93, {"requestIds": ["a", "b"]}), (94, {"requestIds": "a"}), (95, {"requestIds": [None, 7, None]})):
            c.events.clear()
            reply = c.call("executeBatch", rid=rid, name="batch", msgs=[{}, {}, {}], **extra)
            self.assertEqual(reply["results"][0]["ids"], [None, None, None], extra)
            for event in c.events:
                if event.get("event") == "log":
                    self.assertNotIn("requestIds", event)
                    self.assertNotIn("requestId", event)
        # A duplicate id is listed once in the events.
        c.events.clear()
        c.call("executeBatch", rid=96, name="batch", msgs=[{}, {}], requestIds=["d", "d"])
        self.assertEqual({tuple(e["requestIds"]) for e in c.events if e.get("event") == "log"}, {("d",)})

    def test_a_split_batch_gives_each_part_the_ids_of_its_own_messages(self):
        c = self.client()
        # batch_size 3: five messages run as 3 + 2, each part with its ids.
        ids = ["p0", "p1", None, "p3", "p4"]
        reply = c.call("executeBatch", name="batch", msgs=[{}] * 5, requestIds=ids, split=True)
        self.assertEqual([r["ids"] for r in reply["results"]], [ids[:3]] * 3 + [ids[3:]] * 2)
        # A model that does not batch runs each message through execute:
        # each sees its own id.
        reply = c.call("executeBatch", name="plain", msgs=[{}] * 3, requestIds=["q0", None, "q2"], split=True)
        self.assertEqual(reply["results"], [
            {"id": "q0", "ids": ["q0"]}, {"id": None, "ids": [None]}, {"id": "q2", "ids": ["q2"]},
        ])

    def test_a_single_call_of_a_batching_model_sees_its_id_in_request_ids(self):
        # executeModel of a model with only execute_batch: a batch of one.
        c = self.client()
        self.assertEqual(
            c.call("executeModel", name="batch", msg={}, requestId=ID),
            {"id": None, "ids": [ID], "n": 1},
        )

    def test_the_server_log_names_a_failed_message_by_its_id_and_a_failed_batch_by_all(self):
        c = self.client()
        reply = c.call("executeBatch", rid=97, name="batch", msgs=[{}, {"fail": True}], requestIds=["ok-1", "bad-2"])
        self.assertEqual(list(reply["errors"]), ["1"])
        reply = c.request("executeBatch", rid=98, name="batch", msgs=[{"raise": True}, {}], requestIds=["r-1", "r-2"])
        self.assertEqual(reply["error"]["exception"], "ValueError", reply)
        text = RequestIdTest.server_log(self)
        self.assertIn("executeBatch 97 (model batch) (request id bad-2) raised ValueError: message failed", text)
        self.assertIn("executeBatch 98 (model batch) (request ids r-1, r-2) raised ValueError: the batch failed", text)

    def test_outside_a_call_request_ids_is_empty(self):
        from pyproxy import host

        self.assertEqual(host.request_ids(), [])


if __name__ == "__main__":
    unittest.main()
