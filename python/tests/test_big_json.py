"""big_json: same bytes, results and exception types as the json module."""

import json
import random
import unittest

from pyproxy_server import big_json

_strict = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_lenient = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr).encode
BIG = big_json.BIG + 10
MB = big_json.BIG_DATA + 10


def _reference_encode(obj, lenient=False):
    try:
        # Lone surrogates go out as JSON escapes (big_json._escape_surrogates).
        return (_lenient if lenient else _strict)(obj).encode("utf-8", "backslashreplace")
    except Exception as exc:
        return type(exc)


def _reference_decode(data):
    try:
        return json.loads(bytes(data).decode("utf-8"))
    except Exception as exc:
        return type(exc)


class BigJsonTest(unittest.TestCase):
    def check_encode(self, obj, lenient=False):
        before = _snapshot(obj)
        expected = _reference_encode(obj, lenient)
        if isinstance(expected, type):
            with self.assertRaises(expected):
                big_json.encode(obj, lenient)
            with self.assertRaises(expected):
                big_json.encode_bytes(obj, lenient)
        else:
            pieces = big_json.encode(obj, lenient)
            self.assertTrue(all(type(p) is bytes for p in pieces))
            self.assertEqual(b"".join(pieces), expected)
            self.assertEqual(big_json.encode_bytes(obj, lenient), expected)
        if before is not None:
            self.assertEqual(_snapshot(obj), before)  # not mutated
        return expected

    def check_decode(self, data):
        expected = _reference_decode(data)
        for form in (bytes(data), bytearray(data), memoryview(bytes(data))):
            if isinstance(expected, type):
                with self.assertRaises(expected):
                    big_json.decode(form)
            else:
                self.assertEqual(repr(big_json.decode(form)), repr(expected))

    def roundtrip(self, obj):
        data = self.check_encode(obj)
        if not isinstance(data, type):
            self.check_decode(data)
            # with whitespace, which the compact encoder never writes
            self.check_decode(json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8", "surrogatepass"))

    def test_big_strings(self):
        for body in (
            "a" * BIG,
            "é€😀" * (BIG // 3),
            "x" * BIG + '"',
            "x" * BIG + "\\",
            '\\"' * (BIG // 2),
            "x" * BIG + "\n\t\x00\x1f",
            ("x" * 99 + "\n") * (BIG // 50),
            ("a\tb\r\n" * BIG) + "é",
            "\n" * BIG,
            ("x" * 99 + "\n") * (BIG // 50) + '"',
            ("x\n" * BIG) + "\x0b",
            "x" * (MB * 2),
            "é" * MB,
            "\x7f" * BIG,
        ):
            for obj in (
                body,
                {"data": body},
                [body],
                {"id": 7, "ok": True, "result": {"data": body, "n": [1, 2.5, None]}},
                {"a": [{"b": {"c": body}}]},
                {"a": {"b": {"c": {"d": {"e": body}}}}},  # deeper than the walk
                {"x": body, "y": [body, "small", body], "z": {"w": body}},
                {body: 1, "k": body},
                (1, [body], {"k": (body,)}),
            ):
                with self.subTest(obj=repr(obj)[:60]):
                    self.roundtrip(obj)

    def test_lone_surrogates_are_json_escapes(self):
        for obj in (
            {"a": "x" * BIG + "\ud800"},
            {"a": "x" * BIG, "b": "\udfff"},
            "\ud800" * BIG,
            {"k\udcff": "caf\udce9", "b": "\\\ud800\\"},
            ["x" * BIG + "\\", "\udc80" + "\n" * BIG],
        ):
            for lenient in (False, True):
                data = b"".join(big_json.encode(obj, lenient))
                self.assertEqual(json.loads(data.decode("utf-8")), obj)  # valid UTF-8, same string
                self.check_encode(obj, lenient)
            for walk in (False, True):
                reply = b"".join(big_json.encode_reply(7, obj, walk))
                self.assertEqual(json.loads(reply)["result"], obj)
        self.assertEqual(big_json.encode("a\ud800b"), [b'"a\\ud800b"'])
        data = b'{"a":"' + b"x" * MB + b'\xed\xa0\x80"}'  # encoded surrogate: invalid UTF-8
        self.check_decode(data)

    def test_nan_and_non_json(self):
        for obj in (
            {"a": "x" * BIG, "b": float("nan")},
            {"a": "x" * BIG, "b": float("inf")},
            {"a": "x" * BIG, "b": object()},
            {"a": "x" * BIG, "b": {1, 2}},
            {"a": "x" * BIG, (1, 2): 3},
            {"a": "x" * BIG, 1: 2, 2.5: None, True: False},
        ):
            self.check_encode(obj)
            self.check_encode(obj, lenient=True)

    def test_circular_and_deep(self):
        obj = {"a": "x" * BIG}
        obj["self"] = obj
        self.check_encode(obj)
        lst = ["x" * BIG]
        lst.append(lst)
        self.check_encode(lst)
        deep = "x" * BIG
        for _ in range(100000):
            deep = [deep]
        self.check_encode({"a": "x" * BIG, "b": deep})
        self.check_decode(b'{"a":"' + b"x" * MB + b'","b":' + b"[" * 100000 + b"]" * 100000 + b"}")

    def test_not_strict_keeps_raw_control_characters_of_big_literals_only(self):
        good = b'{"id":7,"ok":true,"result":{"data":"' + b"x" * MB + b'","t":"a\\u0001b"}}'
        raw = good.replace(b"x" * 10, b"x\x01x\x1f\nxxxxx", 1)
        with self.assertRaises(ValueError):
            big_json.decode(raw)
        expected = json.loads(raw.decode(), strict=False)
        self.assertEqual(big_json.decode(raw, strict=False), expected)
        self.assertIn("\x01", expected["result"]["data"])
        # Escapes are still decoded, and everything else is as strict as before.
        escaped = good.replace(b"x" * 10, b"x\\n\\u20acxxxx", 1)
        self.assertEqual(big_json.decode(escaped, strict=False), json.loads(escaped.decode()))
        for bad in (good[:-1], good.replace(b'"t":"a', b'"t":"\x01a', 1), good.replace(b"x" * 10, b"x\xffxxxxxxxx", 1)):
            with self.assertRaises(ValueError):
                big_json.decode(bad, strict=False)

    def test_invalid_json(self):
        good = b'{"id":7,"ok":true,"result":{"data":"' + b"x" * MB + b'"}}'
        self.check_decode(good)
        cases = [
            good[:-1],
            good[:-3],
            good[: len(good) // 2],
            good + b"x",
            good + b" ",
            good + b" }",
            good.replace(b"x" * 10, b"x\x01x" + b"x" * 7, 1),
            good.replace(b"x" * 10, b"x\nxxxxxxxx", 1),
            good.replace(b"x" * 10, b"x\xffxxxxxxxx", 1),
            good.replace(b"x" * 10, b"x\xc3xxxxxxxx", 1),
            good.replace(b"x" * 10, b"x\\qxxxxxxx", 1),
            good.replace(b"x" * 10, b"x\\u12xxxxx", 1),
            good.replace(b":true", b":tru", 1),
            good.replace(b'"data":', b'"data"', 1),
            good.replace(b'"data":', b'"data"::', 1),
            good.replace(b'{"data"', b'["data"', 1),
            b'["k":"' + b"x" * MB + b'"]',
            b'{"a":1}:"' + b"x" * MB + b'"',
            b'{"a" :\n\t "' + b"x" * MB + b'" , "b":"' + b"y" * MB + b'"\n}',
            b"\xef\xbb\xbf" + good,
            b" " + good + b"\n",
            b'{"a":"' + b"x" * MB,
            b'{"a":"' + b"x" * MB + b'\\"}',
            b'{"a":"' + b"x" * MB + b'\\\\"}',
            b'{"a":"' + b"\\" * 200 + b"x" * MB + b'"}',
            b'{"a":"' + b"x" * MB + b'","a":"short"}',
            b'{"a":"short","a":"' + b"x" * MB + b'"}',
            b'{"a":"' + b'x",' * 3000 + b"x" * MB + b'"}',
            b'[' + b'"s",' * 3000 + b'{"a":"' + b"x" * MB + b'"}]',
            b'{"' + b"k" * MB + b'":"' + b"v" * MB + b'"}',
        ]
        for data in cases:
            with self.subTest(data=data[:40] + b"..." + data[-20:]):
                self.check_decode(data)

    def test_small_messages(self):
        for obj in ({"id": 12, "ok": True, "result": {"echo": {"a": 1, "b": "hello"}}}, [], {}, 1, "s", None, [[[[[["é"]]]]]]):
            self.roundtrip(obj)
            self.assertEqual(len(big_json.encode(obj)), 1)
        self.assertEqual(big_json.decode(b'{"a": [1, "\\u00e9"]}'), {"a": [1, "é"]})

    def test_pieces_share_the_string(self):
        body = "z" * (4 * BIG)
        pieces = big_json.encode({"id": 1, "ok": True, "result": {"data": body}})
        self.assertEqual(pieces, [b'{"id":1,"ok":true,"result":{"data":"', body.encode(), b'"}}'])

    def check_reply(self, rid, result):
        expected = _reference_encode({"id": rid, "ok": True, "result": result})
        for walk in (True, False):
            if isinstance(expected, type):
                with self.assertRaises(expected):
                    big_json.encode_reply(rid, result, walk)
            else:
                self.assertEqual(b"".join(big_json.encode_reply(rid, result, walk)), expected)

    def test_an_encoded_result_goes_into_the_reply_as_it_is(self):
        for rid in (7, 2**70, "7", None):
            for value in ([1, {"a": "b"}], {"data": "x" * BIG, "n": 1}, "é😀\n"):
                with self.subTest(rid=rid, value=type(value).__name__):
                    encoded = big_json.Encoded(big_json.encode(value))
                    self.assertEqual(
                        b"".join(big_json.encode_reply(rid, encoded)),
                        b"".join(big_json.encode({"id": rid, "ok": True, "result": value})),
                    )
                    self.assertEqual(encoded.decode(), value)

    def test_encode_reply_is_encode_of_the_reply(self):
        circular = {"a": 1}
        circular["self"] = circular
        deep = 1
        for _ in range(100000):
            deep = [deep]
        results = [
            None, 0, -2.5, "s", "é😀\n\"", [], {}, [1, [2, [3]]],
            {"user": "u", "values": [1, 2, 3], "ok": True, "nested": {"k": None}},
            "x" * BIG, {"data": "x" * BIG, "n": 1}, [["y" * BIG]],
            float("nan"), {"a": float("inf")}, object(), {(1, 2): 3}, {1: 2, True: None},
            circular, deep,
        ]
        for rid in (1, 0, -7, 2**70, True, None, "7", 2.5):
            for result in results:
                with self.subTest(rid=rid, result=type(result).__name__):
                    self.check_reply(rid, result)
        body = "z" * (4 * BIG)  # a big string is still sent as its own piece
        self.assertEqual(
            big_json.encode_reply(3, {"data": body}),
            [b'{"id":3,"ok":true,"result":{"data":"', body.encode(), b'"}}'],
        )

    def test_without_big_strings(self):
        obj = {"a": "x" * BIG, "b": [1, "y" * BIG], "c": "small"}
        self.assertEqual(big_json.without_big_strings(obj), {"a": "", "b": [1, ""], "c": "small"})
        self.assertEqual(len(obj["a"]), BIG)
        small = {"a": 1}
        self.assertIs(big_json.without_big_strings(small), small)

    def test_split_big_strings(self):
        big, other = "x" * BIG, "\u00e9" * BIG
        inner = [1, other, ("t" * BIG,)]
        obj = {"a": big, "b": inner, "c": "small", "lone": "\ud800" * BIG}
        skeleton, strings = big_json.split_big_strings(obj, ("result",))
        self.assertEqual(skeleton, {"a": None, "b": [1, None, [None]], "c": "small", "lone": "\ud800" * BIG})
        self.assertEqual(strings, [
            (["result", "a"], big.encode()), (["result", "b", 1], other.encode()), (["result", "b", 2, 0], ("t" * BIG).encode()),
        ])
        self.assertEqual(obj["b"], [1, other, ("t" * BIG,)])
        self.assertIs(obj["b"], inner)
        self.assertEqual(big_json.split_big_strings(big), (None, [([], big.encode())]))
        self.assertEqual(big_json.split_big_strings(big, ("result",)), (None, [(["result"], big.encode())]))
        lone = "\udc80" * BIG
        self.assertEqual(big_json.split_big_strings(lone), (lone, []))
        small = {"a": 1, "b": "x" * big_json.BIG}
        self.assertIsNone(big_json.split_big_strings(small))
        # The walk's bounds are those of encode: deeper than _MAX_DEPTH stays in place.
        self.assertIsNone(big_json.split_big_strings({"a": {"b": {"c": {"d": {"e": big}}}}}))
        found = big_json.split_big_strings({"a": {"b": {"c": {"d": big}}}})[1]
        self.assertEqual([path for path, _ in found], [["a", "b", "c", "d"]])
        # A key that is not a str: JSON makes it "1", which may be another key too.
        keyed = {1: big, "1": None}
        self.assertEqual(big_json.split_big_strings(keyed), (keyed, []))

    def test_random(self):
        rnd = random.Random(1234)
        alphabet = ["a", "é", "€", "😀", '"', "\\", "\n", "\x00", " ", "/", "\ud800"]

        def text(big):
            if big:
                base = rnd.choice(["a", "é", "xyz"]) * (BIG // 3 + rnd.randrange(1000))
                if rnd.random() < 0.3:
                    at = rnd.randrange(len(base))
                    base = base[:at] + rnd.choice(alphabet) + base[at:]
                return base
            return "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(5)))

        def value(depth):
            kind = rnd.randrange(8 if depth < 5 else 5)
            if kind == 0:
                return rnd.choice([None, True, False, 0, -1, 2.5, 1e300])
            if kind in (1, 2):
                return text(rnd.random() < 0.3)
            if kind == 3:
                return rnd.randrange(-1000, 1000)
            if kind == 4:
                return text(False)
            if kind in (5, 6):
                return {text(False): value(depth + 1) for _ in range(rnd.randrange(5))}
            return [value(depth + 1) for _ in range(rnd.randrange(5))]

        for _ in range(150):
            obj = value(0)
            expected = self.check_encode(obj)
            if isinstance(expected, type):
                continue
            self.check_decode(expected)
            if len(expected) > 20:
                cut = rnd.randrange(len(expected))
                self.check_decode(expected[:cut])
                self.check_decode(expected[:cut] + b"\x01" + expected[cut:])


def _snapshot(obj):
    try:
        return repr(obj)
    except RecursionError:
        return None


if __name__ == "__main__":
    unittest.main()
