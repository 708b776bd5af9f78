"""describe_not_json: where a result is not JSON, and what to do about it."""

import dataclasses
import datetime
import decimal
import enum
import json
import unittest
import uuid

from pyproxy_server.json_problem import describe_not_json, not_json_reason

from ._client import ServerProcess


@dataclasses.dataclass
class Point:
    x: int


class Color(enum.Enum):
    RED = "red"


class Tensor:  # as torch.Tensor, pandas.Series: not numpy, but a tolist()
    def tolist(self):
        return []


class Frame:  # as pandas.DataFrame
    def to_dict(self):
        return {}


class Record:  # as a pydantic model
    def model_dump(self):
        return {}


class Stamp(datetime.datetime):  # as pandas.Timestamp
    pass


class Proxy:  # a lazy proxy whose attribute lookup fails
    def __getattr__(self, name):
        raise RuntimeError("not connected")


class DescribeNotJsonTest(unittest.TestCase):
    def test_names_the_path_the_type_and_a_fix(self):
        when = datetime.datetime(2026, 12, 5)
        cases = [
            ({"rows": [{"ok": 1}, {"when": when}]}, "result.rows[1].when is a datetime.datetime (use .isoformat())"),
            ({"price": decimal.Decimal("1.5")}, "result.price is a decimal.Decimal (use float(...) or str(...))"),
            ([b"raw"], "result[0] is a bytes (use .decode() or base64)"),
            ({"tags": {"a"}}, "result.tags is a set (use list(...))"),
            ({"p": Point(1)}, "result.p is a tests.test_json_problem.Point (use dataclasses.asdict(...))"),
            ({"c": Color.RED}, "result.c is a tests.test_json_problem.Color (use .value)"),
            ({"id": uuid.UUID(int=1)}, "result.id is a uuid.UUID (use str(...))"),
            ({"score": float("nan")}, "result.score is nan (NaN and infinities are not JSON: use None)"),
            ({"not an identifier": [float("inf")]}, "result['not an identifier'][0] is inf (NaN and infinities are not JSON: use None)"),
            ({(1, 2): "x"}, "result has a key (1, 2) of type tuple (keys must be str, int, float, bool or None)"),
            ({"a": {float("inf"): 1}}, "result.a has a key inf (NaN and infinities are not JSON: use a string)"),
            ({float("nan"): 1}, "result has a key nan (NaN and infinities are not JSON: use a string)"),
            (object(), "result is an object (convert it to a dict, list, str, number, bool or None)"),
            ({"t": Tensor()}, "result.t is a tests.test_json_problem.Tensor (use .tolist())"),
            ({"f": Frame()}, "result.f is a tests.test_json_problem.Frame (use .to_dict())"),
            ({"r": Record()}, "result.r is a tests.test_json_problem.Record (use .model_dump())"),
            ({"at": Stamp(2026, 12, 5)}, "result.at is a tests.test_json_problem.Stamp (use .isoformat())"),
            ({"p": Proxy()}, "result.p is a tests.test_json_problem.Proxy (convert it to a dict, list, str, number, bool or None)"),
        ]
        for value, expected in cases:
            with self.subTest(expected=expected):
                with self.assertRaises((TypeError, ValueError)):
                    json.dumps(value, allow_nan=False)
                self.assertEqual(describe_not_json(value), expected)

    def test_deep_and_wide_values_are_walked_in_bounded_time(self):
        deep = []
        for _ in range(100_000):
            deep = [deep]
        self.assertIsNone(describe_not_json(deep))  # past 1,000 levels: its depth is the problem
        wide = [list(range(1000)) for _ in range(1000)]
        self.assertIsNone(describe_not_json(wide))  # past 200,000 parts: not walked to the end
        wide[0].append(set())
        self.assertEqual(describe_not_json(wide), "result[0][1000] is a set (use list(...))")

    def test_a_cycle_and_json_values(self):
        loop = {"a": []}
        loop["a"].append(loop)
        self.assertEqual(describe_not_json(loop), "result.a[0] refers back to a container it is in (a cycle)")
        shared = [1]
        self.assertIsNone(describe_not_json({"a": shared, "b": shared, "t": (1, "x"), "n": None, 1: True, "f": 1.5}))
        self.assertEqual(describe_not_json([1, {"x": b""}], "args"), "args[1].x is a bytes (use .decode() or base64)")

    def test_not_json_reason_names_the_depth_limit_for_a_recursion_error(self):
        error = None
        for depth in (1100, 10000, 100000):  # 3.12+ recurse deeper than 1000
            deep = []
            for _ in range(depth):
                deep = [deep]
            try:
                json.dumps({"rows": deep})
            except RecursionError as exc:
                error = exc
                break
        if error is None:
            self.skipTest("this Python encodes 100000 levels of JSON")
        self.assertEqual(
            not_json_reason(error, {"rows": deep}, "item[3]"),
            "item[3] is nested too deep for Python's json (it recurses once per level of nesting, "
            "and Python's recursion limit stopped it): flatten it, or send it as a string",
        )
        try:
            json.dumps({"at": datetime.date(2026, 12, 5)})
        except TypeError as exc:
            error = exc
        self.assertEqual(
            not_json_reason(error, {"at": datetime.date(2026, 12, 5)}, "args"),
            "args.at is a datetime.date (use .isoformat())",
        )
        # Nothing found by the walk: json's own words.
        self.assertEqual(not_json_reason(ValueError("boom"), [1], "result"), "boom")


class NotJsonReplyTest(unittest.TestCase):
    def test_the_caller_is_told_where(self):
        server = ServerProcess()
        try:
            c = server.connect()
            source = (
                "import datetime\n"
                "class Model:\n"
                "    def execute(self, msg):\n"
                "        return {'rows': [{'at': datetime.date(2026, 12, 5)}]}\n"
            )
            c.call("addModel", name="m", source=source)
            error = c.request("executeModel", name="m", msg={})["error"]
            self.assertEqual(error["type"], "SerializationError")
            self.assertEqual(
                error["message"],
                "Cannot send result: not JSON: result.rows[0].at is a datetime.date (use .isoformat())",
            )
            value_error = c.request("eval", code="{'s': {1}}")["error"]
            self.assertEqual(
                value_error["message"],
                "Cannot reply: the eval's value is not JSON: value.s is a set (use list(...)): {'s': {1}}",
            )
        finally:
            server.kill()


if __name__ == "__main__":
    unittest.main()
