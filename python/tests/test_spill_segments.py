"""Spill files with CRC-32 checksums and raw string segments (protocol §8):
configure flags, reading and writing both forms, and replies that put their
big strings in segments (Connection.encode_reply, in process)."""

import copy
import hashlib
import json
import os
import shutil
import tempfile
import unittest
import zlib
from unittest import mock

from pyproxy_server import big_json, spill
from pyproxy_server.big_json import BIG
from pyproxy_server.connection import Connection
from pyproxy_server.errors import InvalidRequestError, SpillError
from pyproxy_server.server import Server
from pyproxy_server.spill import _PARALLEL_CRC, MIN_PART_SIZE, SpillSettings


class SpillDirCase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="pyproxy-seg-test-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def settings(self, **flags):
        return SpillSettings.from_wire(dict({"dir": self.dir, "threshold": 1}, **flags))

    def file(self, data, name="in.json"):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def assertRefused(self, settings, ref, error):
        """``read(ref)`` fails with a SpillError matching ``error``, and the file is gone."""
        with self.assertRaisesRegex(SpillError, error):
            settings.read(ref)
        self.assertFalse(os.path.exists(ref["path"]))


class ConfigureFlagsTest(SpillDirCase):
    def test_flags_are_kept_and_echoed_only_when_true(self):
        both = self.settings(crc32=True, strings=True)
        self.assertTrue(both.crc32)
        self.assertTrue(both.strings)
        self.assertEqual(both.to_wire(), {"dir": os.path.realpath(self.dir), "threshold": 1, "crc32": True, "strings": True})
        for flags in ({}, {"crc32": False, "strings": False}):
            plain = self.settings(**flags)
            self.assertFalse(plain.crc32)
            self.assertFalse(plain.strings)
            self.assertEqual(plain.to_wire(), {"dir": os.path.realpath(self.dir), "threshold": 1})
        self.assertEqual(self.settings(strings=True).to_wire().get("crc32"), None)
        self.assertEqual(self.settings(crc32=True).to_wire().get("strings"), None)

    def test_non_boolean_flags_are_refused(self):
        for flag in ("crc32", "strings"):
            for bad in (1, 0, "true", None, [], {}):
                with self.subTest(flag=flag, value=bad):
                    with self.assertRaisesRegex(InvalidRequestError, "'%s' must be a boolean" % flag):
                        self.settings(**{flag: bad})

    def test_constructor_defaults_stay_off(self):
        settings = SpillSettings(os.path.realpath(self.dir), 10)
        self.assertFalse(settings.crc32)
        self.assertFalse(settings.strings)

    def test_without_zlib_crc32_is_never_enabled_nor_read(self):
        with mock.patch.object(spill, "zlib", None):
            settings = self.settings(crc32=True, strings=True)
            self.assertFalse(settings.crc32)
            self.assertNotIn("crc32", settings.to_wire())
            self.assertTrue(settings.strings)
            data = b'{"id":1}'
            ref = {"path": self.file(data), "size": len(data), "crc32": zlib.crc32(data)}
            self.assertRefused(settings, ref, "crc32 is not supported: no zlib")
            # Written references fall back to md5.
            self.assertIn("md5", settings.write(data, "w"))


class Crc32Test(SpillDirCase):
    MESSAGE = {"id": 7, "ok": True, "result": "r\u00e9sum\u00e9 \U0001F600"}

    def data(self, message=None):
        return json.dumps(self.MESSAGE if message is None else message, ensure_ascii=False).encode()

    def test_written_references_carry_crc32_instead_of_md5(self):
        for flags in ({"crc32": True}, {"crc32": True, "partSize": MIN_PART_SIZE}):
            with self.subTest(**flags):
                settings = self.settings(**flags)
                data = self.data()
                # Pieces: the CRC is chained over them.
                ref = settings.write([data[:5], data[5:]], "w")
                self.assertEqual(sorted(ref), ["crc32", "path", "size"])
                self.assertEqual(ref["crc32"], zlib.crc32(data))
                self.assertEqual(settings.read(ref), self.MESSAGE)
                self.assertFalse(os.path.exists(ref["path"]))

    def test_a_large_file_is_checked_on_a_thread_the_same_way(self):
        message = {"id": 1, "ok": True, "result": "x\u20ac" * (_PARALLEL_CRC // 4 + 1)}
        data = self.data(message)
        self.assertGreater(len(data), _PARALLEL_CRC)
        settings = self.settings(crc32=True)
        ref = settings.write(data, "big")
        self.assertEqual(ref["crc32"], zlib.crc32(data))
        self.assertEqual(settings.read(ref), message)
        ref = settings.write(data, "big")
        with open(ref["path"], "r+b") as f:
            f.seek(len(data) - 10)
            f.write(b"\x00")
        self.assertRefused(settings, ref, "crc32 mismatch")

    def test_a_crc32_reference_is_read_whatever_was_configured(self):
        data = self.data()
        ref = {"path": self.file(data), "size": len(data), "crc32": zlib.crc32(data)}
        self.assertEqual(self.settings().read(ref), self.MESSAGE)

    def test_a_wrong_crc_or_a_corrupted_file_is_a_mismatch(self):
        settings = self.settings(crc32=True)
        data = self.data()
        ref = {"path": self.file(data), "size": len(data), "crc32": zlib.crc32(data) ^ 1}
        self.assertRefused(settings, ref, "crc32 mismatch")
        ref = settings.write(data, "w")
        with open(ref["path"], "r+b") as f:
            f.seek(3)
            f.write(b"8")  # still valid JSON: only the checksum can tell
        self.assertRefused(settings, ref, "crc32 mismatch")

    def test_bad_crc32_values_are_refused(self):
        data = self.data()
        for bad in (-1, 1 << 32, True, "1", 1.0, [1]):
            with self.subTest(crc32=bad):
                ref = {"path": self.file(data), "size": len(data), "crc32": bad}
                self.assertRefused(self.settings(), ref, "'crc32' must be an integer")
        ref = {"path": self.file(data), "size": len(data)}
        self.assertRefused(self.settings(), ref, "'md5', 'md5Parts' or 'crc32' is required")

    def test_the_first_of_md5parts_md5_crc32_is_the_one_checked(self):
        data = self.data()
        md5 = hashlib.md5(data).hexdigest()
        crc = zlib.crc32(data)
        cases = [
            ({"md5": md5, "crc32": crc ^ 1}, None),
            ({"md5": "0" * 32, "crc32": crc}, "md5 mismatch"),
            ({"md5Parts": [md5], "partSize": MIN_PART_SIZE, "md5": "0" * 32, "crc32": crc ^ 1}, None),
            ({"md5Parts": ["0" * 32], "partSize": MIN_PART_SIZE, "md5": md5, "crc32": crc}, "md5 mismatch"),
        ]
        for index, (fields, error) in enumerate(cases):
            with self.subTest(fields=fields):
                ref = dict({"path": self.file(data, "p%d.json" % index), "size": len(data)}, **fields)
                if error is None:
                    self.assertEqual(self.settings().read(ref), self.MESSAGE)
                else:
                    self.assertRefused(self.settings(), ref, error)


def segmented(parts):
    """A file's bytes and the reference fields for it: ``parts`` is the JSON
    text then ``(at, text)`` pairs, written in that order."""
    data = parts[0].encode()
    strings = []
    for at, text in parts[1:]:
        body = text if isinstance(text, bytes) else text.encode()
        strings.append({"at": at, "offset": len(data), "length": len(body)})
        data += body
    return data, {"json": len(parts[0].encode()), "strings": strings}


class SegmentsReadTest(SpillDirCase):
    def ref(self, data, fields, name="s.json", checksum="crc32"):
        ref = dict({"path": self.file(data, name), "size": len(data)}, **fields)
        if checksum == "crc32":
            ref["crc32"] = zlib.crc32(data)
        else:
            ref["md5"] = hashlib.md5(data).hexdigest()
        return ref

    def test_strings_are_put_at_their_paths(self):
        texts = {
            "ascii": "plain" * 5000,
            "non-ascii": "r\u00e9sum\u00e9 \u20ac \u4e2d\u6587",
            "astral": "\U0001F600\U0001F4A9 \U00010348",
            "bom": "\ufeffstarts with a BOM",
            "controls": 'quote " backslash \\ newline \n nul \x00',
        }
        data, fields = segmented([
            '{"id":3,"ok":true,"result":{"a":null,"list":[1,null,{"deep":[null]}],"b":null,"bom":null,"c":null}}',
            (["result", "list", 2, "deep", 0], texts["astral"]),
            (["result", "a"], texts["ascii"]),
            (["result", "list", 1], texts["non-ascii"]),
            (["result", "bom"], texts["bom"]),
            (["result", "b"], ""),  # a 0-length segment
            (["result", "c"], texts["controls"]),
        ])
        for checksum in ("crc32", "md5"):
            with self.subTest(checksum=checksum):
                ref = self.ref(data, fields, checksum=checksum)
                message = self.settings().read(ref)
                self.assertEqual(message, {"id": 3, "ok": True, "result": {
                    "a": texts["ascii"], "list": [1, texts["non-ascii"], {"deep": [texts["astral"]]}],
                    "b": "", "bom": texts["bom"], "c": texts["controls"],
                }})
                self.assertEqual(message["result"]["bom"][0], "\ufeff")
                self.assertFalse(os.path.exists(ref["path"]))

    def test_segments_listed_out_of_file_order_and_gaps_are_read(self):
        data, fields = segmented(['{"x":null,"y":null}', (["x"], "first"), (["y"], "second")])
        fields["strings"].reverse()
        self.assertEqual(self.settings().read(self.ref(data, fields)), {"x": "first", "y": "second"})
        # Two 0-length segments at one offset do not overlap.
        data, fields = segmented(['{"x":null,"y":null}', (["x"], ""), (["y"], "")])
        self.assertEqual(self.settings().read(self.ref(data, fields)), {"x": "", "y": ""})

    def test_a_whole_message_string_path_and_an_empty_list(self):
        data, fields = segmented(['{"id":1,"ok":true,"result":null}', (["result"], "v" * 100)])
        self.assertEqual(self.settings().read(self.ref(data, fields))["result"], "v" * 100)
        data = b'{"id":1}'
        self.assertEqual(self.settings().read(self.ref(data, {"json": len(data), "strings": []})), {"id": 1})

    def test_bad_segments_are_refused_and_the_file_deleted(self):
        base = '{"id":1,"ok":true,"result":{"a":null,"n":5,"l":[null],"s":"x"}}'

        def case(*parts, **change):
            data, fields = segmented([base] + list(parts))
            for key, value in change.items():
                if key in ("json", "strings"):
                    fields[key] = value
                else:
                    fields["strings"][0][key] = value
            return data, fields

        cases = [
            ("key missing", case((["result", "b"], "t")), r"string segment 0 at \['result', 'b'\]: no key 'b' at step 1"),
            ("index out of range", case((["result", "l", 1], "t")), r'no index 1 at step 2 \(the array has 1 item\)'),
            ("str step on a list", case((["result", "l", "0"], "t")), "step 2 is the key '0', but the value there is an array"),
            ("int step on an object", case((["result", 0], "t")), "step 1 is the index 0, but the value there is an object"),
            ("through a string", case((["result", "s", 0], "t")), "step 2: not an object or array"),
            ("through a number", case((["result", "n", "k"], "t")), "step 2: not an object or array"),
            ("value not null", case((["result", "n"], "t")), "segment 0 .*not null"),
            ("value a string", case((["result", "s"], "t")), "not null"),
            ("same path twice", case((["result", "a"], "t"), (["result", "a"], "u")), "string segment 1 .*not null"),
            ("overlap", case((["result", "a"], "tt"), (["result", "l", 0], "u"), offset=len(base) + 1, length=2), "segments 0 and 1 overlap"),
            ("before json", case((["result", "a"], "t"), offset=len(base) - 1), r"string segment 0: bytes \[.*\) outside"),
            ("past the end", case((["result", "a"], "t"), length=2), "outside"),
            ("negative length", case((["result", "a"], "t"), length=-1), "outside"),
            ("json past the end", case((["result", "a"], "t"), json=len(base) + 2), "'json' must be an integer"),
            ("json a bool", case((["result", "a"], "t"), json=True), "'json' must be an integer"),
            ("json without strings", case((["result", "a"], "t"), strings=None), "'json' and 'strings' go together"),
            ("strings without json", case((["result", "a"], "t"), json=None), "'json' and 'strings' go together"),
            ("strings not a list", case((["result", "a"], "t"), strings={}), "'strings' must be a list"),
            ("entry not an object", case((["result", "a"], "t"), strings=[5]), "string segment 0: not an object"),
            ("empty path", case((["result", "a"], "t"), at=[]), "'at' must be a non-empty list"),
            ("path not a list", case((["result", "a"], "t"), at="result"), "'at' must be a non-empty list"),
            ("bool step", case((["result", "a"], "t"), at=["result", True]), "'at' must be a non-empty list"),
            ("negative index", case((["result", "a"], "t"), at=["result", "l", -1]), "'at' must be a non-empty list"),
            ("float offset", case((["result", "a"], "t"), offset=float(len(base))), "'offset' and 'length' must be integers"),
            ("bool length", case((["result", "a"], "t"), length=True), "'offset' and 'length' must be integers"),
            ("invalid UTF-8", case((["result", "a"], b"ok \xff\xfe")), "string segment 0: invalid UTF-8"),
            ("a cut character", case((["result", "a"], "\u20ac".encode()[:2])), "string segment 0: invalid UTF-8"),
            ("a lone surrogate", case((["result", "a"], b"\xed\xa0\x80")), "string segment 0: invalid UTF-8"),
            ("invalid JSON part", case((["result", "a"], "t"), json=len(base) - 1), "invalid JSON"),
        ]
        for index, (label, (data, fields), error) in enumerate(cases):
            with self.subTest(label):
                fields = {key: value for key, value in fields.items() if value is not None}
                self.assertRefused(self.settings(), self.ref(data, fields, "bad-%d.json" % index), error)

    def test_a_json_part_that_is_not_an_object_is_refused(self):
        data, fields = segmented(['[null]', ([0], "t")])
        self.assertRefused(self.settings(), self.ref(data, fields), "not a JSON object")

    def test_nothing_is_decoded_or_placed_before_the_checksum_matched(self):
        # Invalid UTF-8 and a bad path, but the checksum is what is reported.
        data, fields = segmented(['{"a":null}', (["b"], b"\xff")])
        ref = self.ref(data, fields)
        ref["crc32"] ^= 1
        self.assertRefused(self.settings(), ref, "crc32 mismatch")
        ref = self.ref(data, fields, checksum="md5")
        ref["md5"] = "0" * 32
        self.assertRefused(self.settings(), ref, "md5 mismatch")

    def test_a_file_shorter_than_its_reference_is_refused(self):
        data, fields = segmented(['{"a":null}', (["a"], "text")])
        ref = self.ref(data, fields)
        with open(ref["path"], "wb") as f:
            f.write(data[:-1])
        self.assertRefused(self.settings(), ref, "size")


class SegmentsWriteTest(SpillDirCase):
    STRINGS = [(["result", "a"], "\ufeff\u00e9\U0001F600" * 10), (["result", "l", 0], "plain"), (["result", "e"], "")]
    JSON = b'{"id":2,"ok":true,"result":{"a":null,"l":[null],"e":null}}'
    MESSAGE = {"id": 2, "ok": True, "result": {"a": STRINGS[0][1], "l": ["plain"], "e": ""}}

    def test_write_puts_the_strings_after_the_json_with_each_checksum_form(self):
        for flags, checksum in (({"crc32": True}, "crc32"), ({}, "md5"), ({"partSize": MIN_PART_SIZE}, "md5Parts")):
            with self.subTest(checksum=checksum):
                settings = self.settings(**flags)
                strings = [(at, text.encode()) for at, text in self.STRINGS]
                ref = settings.write([self.JSON[:9], self.JSON[9:]], "w", strings)
                with open(ref["path"], "rb") as f:
                    data = f.read()
                self.assertEqual(data, self.JSON + b"".join(body for _, body in strings))
                self.assertEqual(ref["size"], len(data))
                self.assertEqual(ref["json"], len(self.JSON))
                self.assertEqual(ref["strings"], [
                    {"at": ["result", "a"], "offset": len(self.JSON), "length": len(strings[0][1])},
                    {"at": ["result", "l", 0], "offset": len(self.JSON) + len(strings[0][1]), "length": 5},
                    {"at": ["result", "e"], "offset": len(data), "length": 0},
                ])
                self.assertIn(checksum, ref)
                self.assertEqual(len([k for k in ("crc32", "md5", "md5Parts") if k in ref]), 1)
                if checksum == "crc32":
                    self.assertEqual(ref["crc32"], zlib.crc32(data))
                self.assertEqual(settings.read(ref), self.MESSAGE)
                self.assertFalse(os.path.exists(ref["path"]))


class FakeTransport:
    def write(self, data):
        pass


class EncodeReplyTest(SpillDirCase):
    """Connection.encode_reply with a host that reads string segments."""

    def setUp(self):
        super().setUp()
        root = tempfile.mkdtemp(prefix="pyproxy-seg-root-")
        self.addCleanup(shutil.rmtree, root, True)
        self.server = Server(root, "t")
        self.addCleanup(self.server.executor.shutdown)
        self.conn = Connection(self.server)
        self.conn.id = "c9"
        self.conn._big_seen = True  # as after a first big message (see Connection.__init__)
        self.conn.spill = self.settings(crc32=True, strings=True)
        self.conn.spill.threshold = 1000

    def stub(self, rid, result):
        payload = self.conn.encode_reply(rid, result)
        message = json.loads(payload)
        self.assertEqual(sorted(message), ["$spill", "id"], message)
        self.assertEqual(message["id"], rid)
        return message["$spill"]

    def test_big_strings_go_as_segments_and_read_back_equal(self):
        big = "x" * (BIG + 1)
        lone = "\ud800" + "y" * BIG  # UTF-8 cannot hold it: it stays in the JSON, escaped
        result = {
            "data": big,
            "text": "\u00e9\U0001F600" * (BIG // 2 + 1),
            "bom": "\ufeff" + "z" * BIG,
            "list": [1, "small", "w" * (BIG + 5), {"deep": ["v" * (BIG + 2)]}],
            "lone": lone,
            "n": None,
            "exact": "e" * BIG,  # not longer than BIG: in the JSON
        }
        before = copy.deepcopy(result)
        inner = result["list"]
        ref = self.stub(7, result)
        self.assertEqual(os.path.basename(ref["path"]), "py-c9-7.json")
        self.assertIn("crc32", ref)
        self.assertNotIn("md5", ref)
        self.assertEqual([s["at"] for s in ref["strings"]], [
            ["result", "data"], ["result", "text"], ["result", "bom"],
            ["result", "list", 2], ["result", "list", 3, "deep", 0],
        ])
        with open(ref["path"], "rb") as f:
            head = f.read(ref["json"])
        skeleton = json.loads(head)
        self.assertIsNone(skeleton["result"]["data"])
        self.assertEqual(skeleton["result"]["lone"], lone)
        self.assertEqual(skeleton["result"]["exact"], "e" * BIG)
        self.assertIsNone(skeleton["result"]["n"])
        self.assertIn(b'"lone":"\\ud800yyy', head)
        # The model's result is untouched.
        self.assertEqual(result, before)
        self.assertIs(result["list"], inner)
        self.assertEqual(self.conn.spill.read(ref), {"id": 7, "ok": True, "result": before})

    def test_a_big_string_that_is_the_result(self):
        ref = self.stub(8, "\u20ac" * (BIG + 1))
        self.assertEqual(ref["strings"], [{"at": ["result"], "offset": ref["json"], "length": 3 * (BIG + 1)}])
        self.assertEqual(self.conn.spill.read(ref)["result"], "\u20ac" * (BIG + 1))

    def test_a_tuple_is_sent_as_a_list_and_a_dict_with_a_non_str_key_stays_whole(self):
        big = "t" * (BIG + 1)
        ref = self.stub(9, {"t": (big, 1), "k": {1: "q" * (BIG + 1), "1x": "p" * (BIG + 1)}})
        self.assertEqual([s["at"] for s in ref["strings"]], [["result", "t", 0]])
        self.assertEqual(self.conn.spill.read(ref)["result"], {"t": [big, 1], "k": {"1": "q" * (BIG + 1), "1x": "p" * (BIG + 1)}})

    def test_without_segments_the_reply_is_spilled_as_json(self):
        for label, change in (("strings off", {"strings": False}), ("no big message seen yet", {"_big_seen": False})):
            with self.subTest(label):
                self.setUp()
                for attribute, value in change.items():
                    if attribute == "strings":
                        self.conn.spill.strings = value
                    else:
                        setattr(self.conn, attribute, value)
                result = {"data": "x" * (BIG + 1)}
                ref = self.stub(10, result)
                self.assertNotIn("strings", ref)
                self.assertNotIn("json", ref)
                self.assertEqual(self.conn.spill.read(ref)["result"], result)

    def test_only_strings_that_utf8_refuses_means_plain_json(self):
        result = {"lone": "\udc80" * (BIG + 1)}
        ref = self.stub(11, result)
        self.assertNotIn("strings", ref)
        self.assertEqual(self.conn.spill.read(ref)["result"], result)

    def test_replies_not_above_the_threshold_stay_inline(self):
        self.conn.spill.threshold = 1 << 20
        result = {"data": "x" * (BIG + 1), "l": [1, 2]}
        payload = self.conn.encode_reply(12, result)
        self.assertEqual(json.loads(payload), {"id": 12, "ok": True, "result": result})
        self.assertEqual(os.listdir(self.dir), [])
        # The threshold is compared with the JSON plus the strings' bytes.
        reply = {"data": "\u20ac" * (BIG + 1)}
        size = len(json.dumps({"id": 13, "ok": True, "result": {"data": None}}, separators=(",", ":")).encode()) + 3 * (BIG + 1)
        self.conn.spill.threshold = size
        self.assertEqual(json.loads(self.conn.encode_reply(13, reply))["result"], reply)
        self.conn.spill.threshold = size - 1
        self.assertEqual(self.conn.spill.read(self.stub(13, reply))["result"], reply)

    def test_small_replies_are_the_same_bytes(self):
        self.conn.spill.threshold = 1 << 20
        for result in (1, "s", {"a": [1, "b"]}, None, "x" * BIG):
            with self.subTest(result=str(result)[:10]):
                self.assertEqual(self.conn.encode_reply(14, result), big_json.encode_bytes({"id": 14, "ok": True, "result": result}))

    def test_a_result_that_is_not_json_is_a_serialization_error_and_leaves_no_file(self):
        for bad in ({"data": "x" * (BIG + 1), "set": {1}}, {"data": "x" * (BIG + 1), "nan": float("nan")}):
            reply = json.loads(self.conn.encode_reply(15, bad))
            self.assertEqual(reply["error"]["type"], "SerializationError", reply)
            self.assertEqual(os.listdir(self.dir), [])

    def test_a_file_that_cannot_be_written_is_a_spill_error_reply(self):
        shutil.rmtree(self.dir)
        # Above the frame limit: it cannot go inline instead (test_spill_refusals).
        self.conn._max_frame = BIG
        with self.assertLogs("pyproxy_server.spill", "WARNING"):
            reply = json.loads(self.conn.encode_reply(16, {"data": "x" * (BIG + 1)}))
        self.assertEqual(reply["error"]["type"], "SpillError", reply)
        self.assertIn("Cannot write spill file", reply["error"]["message"])

    def test_events_and_host_requests_stay_json_with_a_crc32(self):
        pieces = big_json.encode({"event": "output", "data": "x" * (BIG + 1)})
        stub = json.loads(self.conn._finish(pieces, None, "e"))
        ref = stub["$spill"]
        self.assertIn("crc32", ref)
        self.assertNotIn("strings", ref)
        self.assertEqual(self.conn.spill.read(ref)["data"], "x" * (BIG + 1))


if __name__ == "__main__":
    unittest.main()
