"""A model's success status and headers: ``host.set_status``/``host.set_header``
(their checks) and the ``http`` field of replies, batch results and a
stream's first item (protocol §6)."""

import os
import unittest

from pyproxy import host
from pyproxy_server.errors import HostError

from .test_server import ServerTestCase


class SetOutsideACallTest(unittest.TestCase):
    def test_outside_a_call_it_is_a_host_error(self):
        for fn in (lambda: host.set_status(201), lambda: host.set_header("Location", "/x")):
            with self.assertRaisesRegex(HostError, "no pyproxy call is running"):
                fn()

    def test_a_host_call_outside_a_worker_says_how_to_unit_test_it(self):
        # A unit test of a model class in plain Python: the message said
        # only that no call was running.
        for fn in (lambda: host.call("fx.rate", {}), lambda: host.cache.get("k"), lambda: host.publish("c", {})):
            with self.assertRaises(HostError) as caught:
                fn()
            self.assertIn("outside a worker, as in a unit test of the model, replace host.call:"
                          " unittest.mock.patch.object(host, \"call\", ...)", str(caught.exception))

    def test_bad_statuses_and_headers_are_refused_before_anything_else(self):
        for status in (199, 300, 304, 404, 600, -201):
            with self.assertRaisesRegex(ValueError, "from 200 to 299", msg=status):
                host.set_status(status)
        for status in ("201", True, 201.0, None):
            with self.assertRaises(TypeError, msg=repr(status)):
                host.set_status(status)
        for name, value in (("X A", "v"), ("", "v"), ("X-A", "v\r\nSet-Cookie: a=1"), ("X-A", "v" * 8193), ("X-A", "\0")):
            with self.assertRaisesRegex(ValueError, "^host.set_header: ", msg=repr(name)):
                host.set_header(name, value)
        with self.assertRaises(TypeError):
            host.set_header("X-A", 1)


class HTTPMetaServerTest(ServerTestCase):
    shared = True

    def client(self):
        c = self.connect()
        for name, cls in (
            ("m", "Model"), ("inline", "Inline"), ("batch", "Batch"), ("stream", "Stream"), ("init", "InInit"), ("late", "Late"),
        ):
            c.call("addModel", name=name, file="http_meta.py", **{"class": cls})
        return c

    def test_a_plain_reply_has_no_http_field(self):
        c = self.client()
        reply = c.request("executeModel", name="m", msg={"result": {"a": 1}})
        self.assertEqual(reply, {"id": reply["id"], "ok": True, "result": {"a": 1}})

    def test_status_and_headers_go_on_the_reply(self):
        c = self.client()
        for name in ("m", "inline"):
            msg = {"status": 201, "headers": {"Location": "/items/7", "X-A": "1"}, "result": {"id": 7}}
            reply = c.request("executeModel", name=name, msg=msg)
            self.assertEqual(reply["result"], {"id": 7}, name)
            self.assertEqual(reply["http"], {"status": 201, "headers": {"Location": "/items/7", "X-A": "1"}}, name)
        # Headers alone; set twice (any case): the last one counts.
        reply = c.request("executeModel", name="m", msg={"headers": {"x-a": "1"}, "try": {"headers": {"X-A": "2"}, "status": 202}})
        self.assertEqual(reply["http"], {"status": 202, "headers": {"X-A": "2"}})

    def test_an_error_raised_after_wins(self):
        c = self.client()
        reply = c.request("executeModel", name="m", msg={"status": 200, "headers": {"Location": "/x"}, "raise": 409})
        self.assertNotIn("http", reply)
        self.assertEqual((reply["error"]["status"], reply["error"]["headers"]), (409, {"X-Why": "raised"}))

    def test_204_with_a_body_fails_the_call_and_without_one_goes(self):
        c = self.client()
        reply = c.request("executeModel", name="m", msg={"status": 204, "result": {"a": 1}})
        self.assertEqual((reply["ok"], reply["error"]["exception"]), (False, "ValueError"))
        self.assertIn("status 204 has no body", reply["error"]["message"])
        reply = c.request("executeModel", name="m", msg={"status": 204})
        self.assertEqual((reply["result"], reply["http"]), (None, {"status": 204}))

    def test_threads_eval_and_init(self):
        c = self.client()
        self.assertRegex(c.call("executeModel", name="m", msg={"thread": "bare"})["thread"], "^HostError: .*no pyproxy call")
        reply = c.request("executeModel", name="m", msg={"thread": "context", "status": 201})
        self.assertEqual(reply["http"], {"status": 201})
        self.assertRegex(c.call("executeModel", name="init", msg={})["init"], "^HostError: .*addModel")
        reply = c.request("eval", code="from pyproxy import host\nhost.set_status(201)")
        self.assertFalse(reply["ok"])
        self.assertIn("HostError", reply["error"]["message"] + reply["error"].get("exception", ""))

    def test_a_thread_that_sets_them_after_the_call_was_answered_is_told(self):
        # Lost otherwise: the reply went without them.
        c = self.client()
        reply = c.request("executeModel", name="late", msg={"start": True})
        self.assertEqual(reply["result"], "started")
        self.assertNotIn("http", reply)
        reply = c.request("executeModel", name="late", msg={})
        self.assertNotIn("http", reply)
        for seen, action in zip(reply["result"]["late"], ("set the status", "set a header")):
            self.assertRegex(seen, "^HostError: Cannot %s: call %d was answered already" % (action, reply["id"] - 1))

    def test_huge_or_too_many_headers_fail_at_the_call(self):
        c = self.client()
        error = c.call("executeModel", name="m", msg={"try": {"headers": {"X-Big": "v" * 9000}}})["error"]
        self.assertRegex(error, "^ValueError: host.set_header: header X-Big has 9000 characters")
        many = {"X-%d" % i: "v" for i in range(33)}
        error = c.call("executeModel", name="m", msg={"try": {"headers": many}})["error"]
        self.assertRegex(error, "at most 32 headers")

    def test_a_batch_has_per_message_http_by_index(self):
        c = self.client()
        msgs = [{"result": 0}, {"status": 201, "headers": {"Location": "/1"}, "result": 1}, {"status": 204, "result": 2}, {"no-index": True}]
        reply = c.call("executeBatch", name="batch", msgs=msgs)
        self.assertEqual(reply["http"], {"1": {"status": 201, "headers": {"Location": "/1"}}})
        self.assertEqual(reply["results"][:2], [0, 1])
        self.assertEqual(reply["errors"]["2"]["exception"], "ValueError")
        self.assertRegex(reply["results"][3]["error"], "^ValueError: .*pass index=")
        # Run one message at a time (split, for a model that batches no more: same index).
        reply = c.call("executeBatch", name="m", msgs=[{"result": 0}, {"status": 202, "result": 1}], split=True)
        self.assertEqual(reply["http"], {"1": {"status": 202}})
        # No message set any: no field.
        self.assertNotIn("http", c.call("executeBatch", name="batch", msgs=[{"result": 0}]))
        # executeModel of a batching model: index 0 is the call's.
        reply = c.request("executeModel", name="batch", msg={"status": 201, "result": 5})
        self.assertEqual((reply["result"], reply["http"]), (5, {"status": 201}))

    def test_a_stream_sends_its_headers_with_its_first_item(self):
        c = self.client()
        reply = c.request("executeStream", name="stream", msg={"headers": {"X-Model": "m1"}}, timeout=10)
        items = [e for e in c.events if e.get("event") == "item" and e.get("id") == reply["id"]]
        self.assertEqual(items[0]["http"], {"headers": {"X-Model": "m1"}})
        self.assertNotIn("http", items[1])
        # Set after the first item: too late for the response, dropped.
        self.assertEqual(items[-1]["data"], {"after": None})
        self.assertTrue(all("http" not in i for i in items[1:]))
        self.assertNotIn("http", reply)

    def server_log(self):
        logs = os.path.join(self.root, "logs")
        text = ""
        for name in os.listdir(logs):
            if name.endswith(".log"):
                with open(os.path.join(logs, name)) as f:
                    text += f.read()
        return text

    def test_a_header_set_after_a_streams_first_item_is_checked_then_dropped_with_one_warning_per_model(self):
        # The model that sets it on executeModel works on executeStream too,
        # rather than failing on one route only.
        c = self.client()
        c.call("addModel", name="stream2", file="http_meta.py", **{"class": "Stream"})
        warning = "host.set_header('X-Late') ignored: stream %d of model 'stream2' sent its first item already"
        ids = []
        for _ in range(3):
            reply = c.request("executeStream", name="stream2", msg={}, timeout=10)
            self.assertTrue(reply["ok"], reply)
            items = [e for e in c.events if e.get("event") == "item" and e.get("id") == reply["id"]]
            self.assertEqual([i["data"] for i in items], [1, {"after": None}])
            self.assertTrue(all("http" not in i for i in items))
            ids.append(reply["id"])
        # One warning for the model, not one per call (at most once a minute).
        log = self.server_log()
        self.assertIn(warning % ids[0], log)
        self.assertEqual(log.count("of model 'stream2' sent its first item already"), 1, log)
        # A bad header still raises, as on executeModel.
        for late, error in (((("X A", "1")), "^ValueError: host.set_header: "), (("X-A", 1), "^TypeError: ")):
            reply = c.request("executeStream", name="stream2", msg={"late": late}, timeout=10)
            items = [e for e in c.events if e.get("event") == "item" and e.get("id") == reply["id"]]
            self.assertRegex(items[-1]["data"]["after"], error, late)

    def test_a_stream_ignores_its_status_before_and_after_its_first_item(self):
        # Its response is its event stream's 200: the model that answers 201 on
        # executeModel streams too, rather than failing on one route only.
        c = self.client()
        reply = c.request("executeStream", name="stream", msg={"before": {"status": 201}, "status": 202}, timeout=10)
        items = [e for e in c.events if e.get("event") == "item" and e.get("id") == reply["id"]]
        self.assertEqual([i["data"] for i in items], [{"error": None}, 1, {"after": None}])
        self.assertTrue(all("http" not in i for i in items))
        self.assertNotIn("http", reply)
        # A bad status is still refused, as on executeModel.
        reply = c.request("executeStream", name="stream", msg={"before": {"status": 404}}, timeout=10)
        items = [e for e in c.events if e.get("event") == "item" and e.get("id") == reply["id"]]
        self.assertRegex(items[0]["data"]["error"], "^ValueError: host.set_status: status must be from 200 to 299")

    def test_a_plain_model_streams_with_its_headers_and_without_its_status(self):
        c = self.client()
        msg = {"status": 201, "headers": {"Location": "/items/7"}, "result": {"id": 7}}
        reply = c.request("executeStream", name="m", msg=msg, timeout=10)
        self.assertTrue(reply["ok"], reply)
        items = [e for e in c.events if e.get("event") == "item" and e.get("id") == reply["id"]]
        self.assertEqual([(i["data"], i.get("http")) for i in items], [({"id": 7}, {"headers": {"Location": "/items/7"}})])
        # The same model on executeModel: its status and headers.
        reply = c.request("executeModel", name="m", msg=msg)
        self.assertEqual(reply["http"], {"status": 201, "headers": {"Location": "/items/7"}})


if __name__ == "__main__":
    unittest.main()
