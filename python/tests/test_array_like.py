"""numpy-like values in what the server sends (``array_like``): arrays,
scalars, tensors and ``Series`` as their ``tolist()``, found by shape with
no numpy import; fakes here, real numpy where it is installed."""

import json
import math
import unittest

from pyproxy_server import array_like, big_json, binary
from pyproxy_server.json_problem import describe_not_json

from ._client import mac
from .models.arrays import FakeArray, FakeFrame, FakeLongDouble, FakeScalar, FakeSeries, FakeTensor, values
from .test_server import ServerTestCase

try:
    import numpy
except ImportError:
    numpy = None


def encoded(value):
    return json.loads(big_json.encode_bytes(value))


class Proxy:  # answers every attribute, as a mock or a lazy proxy does
    def __getattr__(self, name):
        return lambda *a: [1]


class ArrayLikeTest(unittest.TestCase):
    def test_arrays_scalars_tensors_and_series_go_as_their_tolist(self):
        self.assertEqual(encoded(values("all")), {
            "ints": [[1, 2], [3, 4]],
            "floats": [0.5, 1.5, -2.0],
            "bools": [True, False],
            "strings": ["setosa", "é"],
            "empty": [],
            "zero_d": 2.5,
            "scalar": 7,
            "tensor": [[1.0, 2.0]],  # requires_grad: tolist() needs no detach()
            "series": [1, 2, 3],
            "objects": [1, None],  # an object array's items converted in turn
            "plain": [1, "a", None],
        })
        self.assertEqual(encoded(FakeScalar(42, "int64")), 42)
        self.assertEqual(big_json.encode_reply(7, FakeArray([1, 2])), [b'{"id":7,"ok":true,"result":[1,2]}'])

    def test_what_is_not_array_like(self):
        from unittest import mock

        for value in (FakeFrame(), Proxy(), memoryview(b"ab"), object(), {1, 2}, mock.Mock(spec=FakeArray)):
            with self.subTest(value=type(value).__name__):
                self.assertFalse(array_like.is_array_like(value))
                with self.assertRaises(TypeError):
                    big_json.encode({"x": value})
        # The DataFrame keeps its hint: its orientation is the model's choice.
        self.assertEqual(describe_not_json({"df": FakeFrame()}),
                         "result.df is a tests.models.arrays.FakeFrame (use .to_dict())")

    def test_nan_and_infinities_inside_fail_as_floats_do_and_are_named(self):
        for value, where in (
            (values("nan"), "result.scores[1][0] is nan"),
            (values("inf"), "result is inf"),
            ({"a": [FakeArray([[1.0], [FakeScalar(-math.inf)]], "object")]}, "result.a[0][1][0] is -inf"),
        ):
            with self.subTest(where=where):
                with self.assertRaises(ValueError):
                    big_json.encode(value)
                self.assertEqual(describe_not_json(value), where + " (NaN and infinities are not JSON: use None)")

    def test_a_tolist_that_raises_is_a_type_error_naming_it(self):
        with self.assertRaisesRegex(TypeError, "its .tolist\\(\\) raised RuntimeError: .*meta tensors"):
            big_json.encode(values("meta"))
        self.assertEqual(
            describe_not_json(values("meta")),
            "result.t is a tests.models.arrays.FakeTensor (its .tolist() raised RuntimeError: "
            "Tensor.item() cannot be called on meta tensors)",
        )

    def test_a_tolist_that_gives_its_own_type_back_is_named_not_too_deep(self):
        # numpy.longdouble: the encoder called its default on tolist()'s
        # answer again and again, and the call failed as "nested too deep".
        for value, where in (
            ({"p": FakeLongDouble(0.5)}, "result.p"),
            ({"rows": FakeArray([FakeLongDouble(1.5)], "float128")}, "result.rows[0]"),
        ):
            with self.subTest(where=where):
                with self.assertRaisesRegex(TypeError, "gives a FakeLongDouble again"):
                    big_json.encode(value)
                self.assertIsNone(binary.split(value, ("result",)))  # no bytes: left to the encoder
                self.assertEqual(
                    describe_not_json(value),
                    where + " is a tests.models.arrays.FakeLongDouble (its .tolist() gives a FakeLongDouble again,"
                    " a type no Python number holds: convert it with float(...) or complex(...),"
                    " an array with .astype(\"float64\"))",
                )

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_real_numpy_longdouble(self):
        value = {"p": numpy.longdouble(0.5), "rows": numpy.array([1.5], dtype=numpy.longdouble)}
        with self.assertRaisesRegex(TypeError, "gives a longdouble again"):
            big_json.encode(value)
        self.assertTrue(describe_not_json(value).startswith("result.p is a numpy.longdouble (its .tolist() gives"))

    def test_bytes_in_an_object_array_are_found(self):
        with self.assertRaises(TypeError):
            big_json.encode(values("bytes"))
        skeleton, found = binary.split(values("bytes"), ("result",))
        self.assertEqual(skeleton, {"raw": ["AAE=", "b2s="], "n": 2})  # each array-like met converted once
        self.assertEqual(found, [(("result", "raw", 0), b"\x00\x01"), (("result", "raw", 1), b"ok")])
        self.assertIsNone(describe_not_json(values("bytes"), bytes_ok=True))
        # An array without bytes: nothing for the bytes path.
        self.assertIsNone(binary.split({"a": FakeArray([1])}, ("result",)))

    def test_a_big_array_takes_the_time_tolist_and_json_take(self):
        value = values("big", n=600_000)  # ~10 MB of JSON
        data = big_json.encode_bytes(value)
        self.assertGreater(len(data), 10_000_000)
        self.assertEqual(json.loads(data)["data"][-1], 599_999.123456789)

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_real_numpy(self):
        np = numpy
        value = {
            "ints": np.arange(4, dtype=np.int64).reshape(2, 2), "i64": np.int64(7), "f32": np.float32(0.5),
            "f64": np.float64(0.25), "b": np.bool_(True), "zero_d": np.array(2.5), "s": np.array(["x", "é"]),
            "u8": np.array([0, 255], dtype=np.uint8), "S": np.array([b"ab"]),
        }
        self.assertTrue(all(array_like.is_array_like(v) for k, v in value.items() if k != "f64"))
        value.pop("S")
        self.assertEqual(encoded(value), {
            "ints": [[0, 1], [2, 3]], "i64": 7, "f32": 0.5, "f64": 0.25, "b": True, "zero_d": 2.5,
            "s": ["x", "é"], "u8": [0, 255],
        })
        self.assertEqual(describe_not_json({"x": np.array([1.0, np.nan])}),
                         "result.x[1] is nan (NaN and infinities are not JSON: use None)")
        self.assertEqual(describe_not_json({"t": np.array(["2026-12-06"], dtype="datetime64[D]")}),
                         "result.t[0] is a datetime.date (use .isoformat())")
        self.assertEqual(binary.split({"S": np.array([b"ab"])}, ())[1], [(("S", 0), b"ab")])


class ArrayResultsServerTest(ServerTestCase):
    """Through a real server: execute, a batch, a stream, eval and host.call."""

    shared = True

    def client(self, want_bytes=False):
        c = self.connect(auth=False)
        c.call("auth", mac=mac(self.server.secret, c.hello["nonce"]), **({"bytes": True} if want_bytes else {}))
        for name in ("Arrays", "InlineArrays", "ArrayStream", "ArrayBatch", "HostArrays", "RealNumpy"):
            c.call("addModel", name=name, file="arrays.py", **{"class": name})
        return c

    def test_execute_stream_batch_eval_and_host_call(self):
        c = self.client()
        self.assertEqual(c.call("executeModel", name="Arrays", msg={"kind": "all"}), encoded(values("all")))
        self.assertEqual(c.call("executeModel", name="Arrays", msg={"kind": "scalar"}), 42)
        for _ in range(3):  # the inline fast path encodes the same way
            self.assertEqual(c.call("executeModel", name="InlineArrays", msg={"kind": "all"}), encoded(values("all")))
        error = self.assertError(c.request("executeModel", name="InlineArrays", msg={"kind": "nan"}), "SerializationError")
        self.assertIn("result.scores[1][0] is nan", error["message"])
        reply = c.request("executeStream", name="ArrayStream", msg={"count": 2, "kind": "array"}, timeout=10)
        self.assertEqual(reply["result"], {"items": 3})
        items = [e["data"] for e in c.events if e.get("event") == "item" and e.get("id") == reply["id"]]
        self.assertEqual(items, [[0, 1], [1, 2], [[1.5, 2.5], [3.5, 4.5]]])
        # A plain model's array on the stream route: one item, not one per row.
        reply = c.request("executeStream", name="Arrays", msg={"kind": "array"}, timeout=10)
        items = [e["data"] for e in c.events if e.get("event") == "item" and e.get("id") == reply["id"]]
        self.assertEqual(items, [[[1.5, 2.5], [3.5, 4.5]]])
        # execute_batch returning one array, a row per message.
        result = c.call("executeBatch", name="ArrayBatch", msgs=[{"x": 1}, {"x": 2}, {"x": 3}])
        self.assertEqual(result["results"], [[1, 2], [2, 4], [3, 6]])
        # executeModel of a batching model: a batch of one, its row.
        self.assertEqual(c.call("executeModel", name="ArrayBatch", msg={"x": 5}), [5, 10])
        # eval's value.
        code = "import sys\nsys.path.insert(0, %r)\nfrom arrays import values\nvalues('all')" % self.models_dir()
        self.assertEqual(c.call("eval", code=code)["value"], encoded(values("all")))
        # host.call's arguments.
        c.handlers["score"] = lambda args: args
        self.assertEqual(c.call("executeModel", name="HostArrays", msg={"kind": "array"}), {"x": [[1.5, 2.5], [3.5, 4.5]]})

    def models_dir(self):
        import os
        return os.path.join(os.path.dirname(__file__), "models")

    def test_nan_inside_fails_the_call_naming_the_place(self):
        c = self.client()
        error = self.assertError(c.request("executeModel", name="Arrays", msg={"kind": "nan"}), "SerializationError")
        self.assertEqual(error["message"], "Cannot send result: not JSON: result.scores[1][0] is nan "
                                           "(NaN and infinities are not JSON: use None)")
        reply = c.request("executeStream", name="ArrayStream", msg={"count": 1, "kind": "nan"}, timeout=10)
        self.assertEqual(reply["error"]["message"], "Cannot send item 1: not JSON: item[1].scores[1][0] is nan "
                                                    "(NaN and infinities are not JSON: use None)")
        error = self.assertError(c.request("executeModel", name="Arrays", msg={"kind": "meta"}), "SerializationError")
        self.assertRegex(error["message"], r"result\.t is a \w+\.FakeTensor \(its \.tolist\(\) raised RuntimeError: .*meta")

    def test_a_longdouble_fails_the_call_naming_it(self):
        for want_bytes in (False, True):  # the gateway's host asks for bytes
            c = self.client(want_bytes=want_bytes)
            for name in ("Arrays", "InlineArrays"):
                with self.subTest(want_bytes=want_bytes, model=name):
                    error = self.assertError(c.request("executeModel", name=name, msg={"kind": "longdouble"}),
                                             "SerializationError")
                    self.assertRegex(error["message"], r"^Cannot send result: not JSON: result\.p is a \w+\.FakeLongDouble "
                                                       r"\(its \.tolist\(\) gives a FakeLongDouble again")
            reply = c.request("executeStream", name="ArrayStream", msg={"count": 0, "kind": "longdouble"}, timeout=10)
            self.assertRegex(reply["error"]["message"], r"item\[0\]\.p is a \w+\.FakeLongDouble \(its \.tolist\(\) gives a FakeLongDouble again")

    def test_bytes_in_an_object_array_go_as_bytes(self):
        c = self.client(want_bytes=True)
        reply = c.request("executeModel", name="Arrays", msg={"kind": "bytes"})
        self.assertEqual(reply["result"], {"raw": ["AAE=", "b2s="], "n": 2})
        self.assertEqual(reply["$bytes"], [["result", "raw", 0], ["result", "raw", 1]])

    @unittest.skipIf(numpy is None, "numpy is not installed")
    def test_real_numpy(self):
        c = self.client(want_bytes=True)
        self.assertEqual(c.call("executeModel", name="RealNumpy", msg={}), {
            "ints": [[0, 1], [2, 3]], "int64": 7, "float32": 0.5, "bool": True, "zero_d": 2.5,
            "strings": ["setosa", "é"], "uint8": [0, 255],
        })
        error = self.assertError(c.request("executeModel", name="RealNumpy", msg={"kind": "nan"}), "SerializationError")
        self.assertIn("result.scores[1] is nan", error["message"])
        reply = c.request("executeModel", name="RealNumpy", msg={"kind": "bytes"})
        self.assertEqual((reply["result"], reply["$bytes"]), ({"raw": ["AAE=", "b2s="]}, [["result", "raw", 0], ["result", "raw", 1]]))


if __name__ == "__main__":
    unittest.main()
