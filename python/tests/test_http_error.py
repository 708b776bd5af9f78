"""``pyproxy.HTTPError`` (its checks, its wire fields) and ``host.headers()``
(protocol §3 and §6)."""

import unittest

from pyproxy import HTTPError, host
from pyproxy_server.execution import is_user_error, wire_error

from .test_server import ServerTestCase


class ItemNotFound(HTTPError):
    def __init__(self, item_id):
        super().__init__(404, "no item %s" % item_id, detail={"id": item_id}, headers={"X-Item": str(item_id)})
        self.item_id = item_id


class HTTPErrorTest(unittest.TestCase):
    def test_fields_and_default_message(self):
        err = HTTPError(404)
        self.assertEqual((err.status, err.message, err.detail, err.headers), (404, "Not Found", None, None))
        self.assertEqual(str(err), "Not Found")
        self.assertEqual(HTTPError(599).message, "HTTP error 599")
        err = HTTPError(422, "invalid", detail=[{"loc": ["body", "x"], "msg": "required"}], headers={"Retry-After": "5"})
        self.assertEqual(err.detail, [{"loc": ["body", "x"], "msg": "required"}])
        self.assertEqual(err.headers, {"Retry-After": "5"})

    def test_a_status_that_is_no_error_is_refused_at_raise_time(self):
        for status in (0, 99, 200, 304, 399, 600, 1000, -404):
            with self.assertRaises(ValueError, msg=status):
                HTTPError(status)
        for status in ("404", True, False, 404.0, None):
            with self.assertRaises(TypeError, msg=repr(status)):
                HTTPError(status)

    def test_message_detail_and_headers_are_checked(self):
        with self.assertRaises(TypeError):
            HTTPError(400, 7)
        for detail in ({1, 2}, object(), float("nan"), {"x": float("inf")}):
            with self.assertRaisesRegex(TypeError, "detail must be JSON"):
                HTTPError(400, "bad", detail=detail)
        bad_headers = [
            [("a", "b")],
            {"X-A": 1},
            {"X A": "v"},
            {"": "v"},
            {"X-A": "v\r\nSet-Cookie: x=1"},
            {"X-A": "v\nw"},
            {"X-A": "v\0"},
            {"X-A": "v" * 8193},
            {"X-%d" % i: "v" for i in range(33)},
        ]
        for headers in bad_headers:
            with self.assertRaises((TypeError, ValueError), msg=repr(headers)[:80]):
                HTTPError(400, "bad", headers=headers)
        HTTPError(400, "ok", headers={"X-%d" % i: "v" * 8192 for i in range(32)})

    def test_a_numpy_like_detail_is_sent_as_its_tolist(self):
        class Scores:  # as numpy.ndarray (array_like: tolist, dtype, ndim)
            dtype, ndim = "float32", 1

            def __init__(self, values):
                self.values = values

            def tolist(self):
                return list(self.values)

        err = HTTPError(422, "low", detail={"scores": Scores([0.5, 1.5])})
        self.assertEqual(err.wire_fields()["detail"], {"scores": [0.5, 1.5]})
        with self.assertRaisesRegex(TypeError, "detail must be JSON"):
            HTTPError(422, "low", detail=[Scores([float("nan")])])

    def test_wire_error_is_a_python_error_with_the_fields_added(self):
        try:
            raise HTTPError(404, "no such item", detail={"id": 3}, headers={"Cache-Control": "no-store"})
        except HTTPError as exc:
            wire = wire_error(exc)
            logged = is_user_error(exc, wire)
        self.assertEqual(wire["type"], "PythonError")
        self.assertEqual(wire["exception"], "HTTPError")
        self.assertEqual(wire["message"], "no such item")
        self.assertEqual(wire["status"], 404)
        self.assertEqual(wire["detail"], {"id": 3})
        self.assertEqual(wire["headers"], {"Cache-Control": "no-store"})
        self.assertIn("raise HTTPError", wire["traceback"])
        # A 4xx is the model's answer: not a failure to log with a traceback.
        self.assertFalse(logged)
        try:
            raise HTTPError(503)
        except HTTPError as exc:
            wire = wire_error(exc)
            self.assertTrue(is_user_error(exc, wire))
        self.assertEqual({k: wire[k] for k in ("status", "message")}, {"status": 503, "message": "Service Unavailable"})
        self.assertNotIn("detail", wire)
        self.assertNotIn("headers", wire)

    def test_it_pickles_and_copies_whole(self):
        import copy
        import pickle

        err = HTTPError(409, "conflict", detail=[1, {"a": None}], headers={"ETag": '"x"'})
        for again in (pickle.loads(pickle.dumps(err)), copy.copy(err)):
            self.assertEqual(
                (again.status, again.message, again.detail, again.headers, str(again)),
                (409, "conflict", [1, {"a": None}], {"ETag": '"x"'}, "conflict"),
            )

    def test_a_subclass_with_an_init_of_its_own_pickles_and_copies_whole(self):
        # As a FastAPI port writes it; once, unpickling called its __init__
        # with the four fields (a TypeError that breaks a ProcessPoolExecutor).
        import copy
        import pickle

        err = ItemNotFound(7)
        for again in (pickle.loads(pickle.dumps(err)), copy.copy(err), copy.deepcopy(err)):
            self.assertIs(type(again), ItemNotFound)
            self.assertEqual(
                (again.status, again.message, again.detail, again.headers, again.item_id, str(again)),
                (404, "no item 7", {"id": 7}, {"X-Item": "7"}, 7, "no item 7"),
            )
            self.assertEqual(wire_error(again)["status"], 404)

    def test_outside_a_call_headers_are_empty(self):
        self.assertEqual(host.headers(), {})
        self.assertEqual(host.message_headers(), [])


class HTTPErrorServerTest(ServerTestCase):
    shared = True

    def client(self):
        c = self.connect()
        c.call("addModel", name="http", file="http_errors.py", **{"class": "Model"})
        c.call("addModel", name="batch", file="http_errors.py", **{"class": "Batch"})
        c.call("addModel", name="stream", file="http_errors.py", **{"class": "Stream"})
        c.call("addModel", name="changed", file="http_errors.py", **{"class": "Changed"})
        return c

    def test_an_http_error_reply_carries_status_detail_and_headers(self):
        c = self.client()
        raised = {"args": [404, "no such item"], "kwargs": {"detail": [{"loc": ["id"], "msg": "unknown"}], "headers": {"ETag": '"v1"'}}}
        reply = c.request("executeModel", name="http", msg={"raise": raised})
        error = reply["error"]
        self.assertEqual(
            {k: error[k] for k in ("type", "exception", "message", "status", "detail", "headers")},
            {
                "type": "PythonError",
                "exception": "HTTPError",
                "message": "no such item",
                "status": 404,
                "detail": [{"loc": ["id"], "msg": "unknown"}],
                "headers": {"ETag": '"v1"'},
            },
        )

    def test_a_bad_status_is_the_models_type_error_or_value_error(self):
        c = self.client()
        for status, exception in ((200, "ValueError"), (600, "ValueError"), ("404", "TypeError"), (True, "TypeError")):
            error = c.request("executeModel", name="http", msg={"raise": {"args": [status]}})["error"]
            self.assertEqual((error["type"], error["exception"]), ("PythonError", exception), error)
            self.assertNotIn("status", error)

    def test_fields_changed_after_the_raise_are_checked_again(self):
        # Once, a status that is no int left the call unanswered (the log
        # check compared it with 500), and a NaN detail went out as JSON the
        # host cannot read: it killed the worker.
        c = self.client()
        cases = [
            ({"status": "404"}, "TypeError"),
            ({"status": None}, "TypeError"),
            ({"status": 200}, "ValueError"),
            ({"detail": "nan"}, "TypeError"),
            ({"detail": {"x": ["nan"]}}, None),
            ({"headers": {"X-A": "nan"}}, None),
            ({"headers": {"X-A": 1}}, "TypeError"),
            ({"headers": {"X-A": "v\r\nSet-Cookie: a=1"}}, "ValueError"),
            ({"headers": ["X-A"]}, "TypeError"),
        ]
        for changed, exception in cases:
            reply = c.request("executeModel", name="changed", msg=changed, timeout=10)
            error = reply["error"]
            if exception is None:
                self.assertEqual((error["exception"], error["status"]), ("HTTPError", 400), changed)
                continue
            self.assertEqual((error["type"], error["exception"]), ("PythonError", exception), changed)
            self.assertRegex(error["message"], "^HTTPError: ", changed)
            self.assertNotIn("status", error)
            self.assertIn("raise err", error["traceback"])
        error = c.request("executeModel", name="changed", msg={"detail": "nan"}, timeout=10)["error"]
        self.assertIn("Out of range float", error["message"])
        # The connection still answers.
        self.assertEqual(c.call("executeModel", name="http", msg={}, headers={"x-a": "1"})["headers"], {"x-a": "1"})

    def test_a_batch_message_with_an_http_error_fails_alone_with_its_status(self):
        c = self.client()
        reply = c.call("executeBatch", name="batch", msgs=[{"i": 0}, {"i": 1, "missing": True}])
        self.assertEqual(list(reply["errors"]), ["1"])
        error = reply["errors"]["1"]
        self.assertEqual((error["exception"], error["status"], error["detail"]), ("HTTPError", 404, {"i": 1}))
        self.assertEqual(reply["results"][0]["i"], 0)

    def test_a_stream_raising_after_an_item_ends_with_the_status(self):
        c = self.client()
        reply = c.request("executeStream", name="stream", msg={"after": True}, timeout=10)
        self.assertEqual((reply["error"]["status"], reply["error"]["detail"]), (409, "late"), reply)

    def test_headers_reach_the_model_lower_case_names_as_sent(self):
        c = self.client()
        sent = {"accept-language": "fr-CH, fr;q=0.9", "x-tenant-id": "t1"}
        self.assertEqual(c.call("executeModel", name="http", msg={}, headers=sent), {"headers": sent, "all": [sent]})
        # Absent, not an object, or values that are not strings: none.
        for extra in ({}, {"headers": "x"}, {"headers": ["a"]}, {"headers": {"x-a": 1}}):
            self.assertEqual(c.call("executeModel", name="http", msg={}, **extra), {"headers": {}, "all": [{}]}, extra)

    def test_execute_batch_reads_one_dict_per_message(self):
        c = self.client()
        heads = [{"x-tenant-id": "a"}, None, {"x-tenant-id": "c"}]
        reply = c.call("executeBatch", name="batch", msgs=[{"i": 0}, {"i": 1}, {"i": 2}], messageHeaders=heads)
        self.assertEqual(reply["results"][0]["all"], [{"x-tenant-id": "a"}, {}, {"x-tenant-id": "c"}])
        self.assertEqual(reply["results"][0]["headers"], {})
        # Split message by message for a model that does not batch: each its own.
        reply = c.call("executeBatch", name="http", msgs=[{}, {}, {}], messageHeaders=heads, split=True)
        self.assertEqual([r["headers"] for r in reply["results"]], [{"x-tenant-id": "a"}, {}, {"x-tenant-id": "c"}])
        # A list of the wrong length counts as absent.
        reply = c.call("executeBatch", name="batch", msgs=[{"i": 0}, {"i": 1}], messageHeaders=heads)
        self.assertEqual(reply["results"][0]["all"], [{}, {}])

    def test_a_single_call_of_a_batching_model_sees_its_headers(self):
        c = self.client()
        reply = c.call("executeModel", name="batch", msg={"i": 5}, headers={"x-a": "1"})
        self.assertEqual(reply["all"], [{"x-a": "1"}])


if __name__ == "__main__":
    unittest.main()
