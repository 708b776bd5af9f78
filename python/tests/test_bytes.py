"""Bytes on the wire (protocol §3, "Bytes"; §8, bytes segments)."""

import base64
import json
import os
import shutil
import tempfile
import unittest

from pyproxy_server import binary
from pyproxy_server.errors import InvalidRequestError, SpillError
from pyproxy_server.spill import SpillSettings

from ._client import WithFields, mac
from .test_server import ServerTestCase

ALL = bytes(range(256))


def b64(data):
    return base64.b64encode(data).decode("ascii")


class BinaryModuleTest(unittest.TestCase):
    def test_decode_puts_bytes_at_each_path_and_drops_the_field(self):
        msg = {"id": 1, "msg": {"a": b64(ALL), "l": [1, b64(b"")]}, "$bytes": [["msg", "a"], ["msg", "l", 1]]}
        self.assertEqual(binary.decode(msg), {"id": 1, "msg": {"a": ALL, "l": [1, b""]}})

    def test_decode_refuses_bad_lists_paths_and_base64(self):
        cases = [
            ({"$bytes": 5}, "must be a list of paths"),
            ({"$bytes": [[]]}, "non-empty list"),
            ({"a": ["x"], "$bytes": [["a", True]]}, "non-empty list"),
            ({"a": ["x"], "$bytes": [["a", -1]]}, "non-empty list"),
            ({"$bytes": [["a"]]}, "does not exist"),
            ({"a": {"b": "AA=="}, "$bytes": [["a", 0]]}, "does not exist"),
            ({"a": 1, "$bytes": [["a"]]}, "is an int, not a base64 string"),
            ({"a": None, "$bytes": [["a"]]}, "does not exist"),
            ({"a": "!!!!", "$bytes": [["a"]]}, "is not base64"),
            ({"a": "AA", "$bytes": [["a"]]}, "is not base64"),
            ({"a": "AA==\n", "$bytes": [["a"]]}, "is not base64"),
            ({"$bytes": [["$bytes"]]}, "names '\\$bytes' itself"),
        ]
        for msg, error in cases:
            with self.subTest(msg=msg), self.assertRaisesRegex(InvalidRequestError, error):
                binary.decode(msg)

    def test_split_finds_bytes_bytearray_and_memoryview_and_copies_only_what_holds_them(self):
        plain = {"k": [1, 2]}
        value = {"a": b"\x00", "b": [bytearray(b"ab"), {"m": memoryview(b"zz")}], "plain": plain, "t": (b"t",)}
        copy, found = binary.split(value, ("result",))
        self.assertEqual(copy, {"a": "AA==", "b": ["YWI=", {"m": "eno="}], "plain": plain, "t": ["dA=="]})
        self.assertIs(copy["plain"], plain)
        self.assertEqual([at for at, _ in found], [("result", "a"), ("result", "b", 0), ("result", "b", 1, "m"), ("result", "t", 0)])
        self.assertIsInstance(value["a"], bytes)  # unchanged
        self.assertIsNone(binary.split({"x": [1, "y", None]}, ("result",)))
        self.assertEqual(binary.split(b"xyz", ("result",), raw=True), (None, [(("result",), b"xyz")]))


class BytesSegmentsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="pyproxy-bytes-test-")
        self.settings = SpillSettings(self.dir, 10, binary=True)

    def tearDown(self):
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    def test_written_bytes_are_raw_after_the_json_and_read_back(self):
        pieces = [json.dumps({"id": 3, "ok": True, "result": {"img": None, "s": None}}).encode()]
        ref = self.settings.write(pieces, "t", [(("result", "s"), "é".encode())], [(("result", "img"), ALL)])
        with open(ref["path"], "rb") as f:
            data = f.read()
        self.assertTrue(data.endswith(ALL))
        self.assertEqual(ref["bytes"], [{"at": ["result", "img"], "offset": ref["json"] + 2, "length": 256}])
        self.assertEqual(self.settings.read(ref), {"id": 3, "ok": True, "result": {"img": ALL, "s": "é"}})

    def test_bad_bytes_segments_are_refused_and_the_file_deleted(self):
        body = json.dumps({"id": 1, "msg": None}).encode()
        size = len(body) + 4
        cases = [
            ({"json": len(body)}, "'json' and 'strings' go together"),
            ({"bytes": []}, "go together"),
            ({"json": len(body), "bytes": {}}, "'bytes' must be a list"),
            ({"json": len(body), "bytes": [5]}, "bytes segment 0: not an object"),
            ({"json": len(body), "bytes": [{"at": [], "offset": len(body), "length": 4}]}, "'at' must be"),
            ({"json": len(body), "bytes": [{"at": ["msg"], "offset": 0, "length": 4}]}, "outside"),
            ({"json": len(body), "bytes": [{"at": ["msg"], "offset": len(body), "length": 5}]}, "outside"),
            ({"json": len(body), "bytes": [{"at": ["msg"], "offset": len(body), "length": 2},
                                           {"at": ["msg"], "offset": len(body) + 1, "length": 2}]}, "overlap"),
            ({"json": len(body), "bytes": [{"at": ["nope"], "offset": len(body), "length": 4}]}, "bytes segment 0 at .*no key"),
            ({"json": len(body), "bytes": [{"at": ["id"], "offset": len(body), "length": 4}]}, "not null"),
            ({"json": len(body), "strings": [{"at": ["msg"], "offset": len(body), "length": 2}],
              "bytes": [{"at": ["msg"], "offset": len(body) + 1, "length": 3}]}, "string segment 0 and bytes segment 0 overlap"),
        ]
        for index, (fields, error) in enumerate(cases):
            with self.subTest(fields=fields):
                path = os.path.join(self.dir, "bad-%d.json" % index)
                with open(path, "wb") as f:
                    f.write(body + b"\x00\x01\x02\x03")
                import hashlib
                ref = dict({"path": path, "size": size, "md5": hashlib.md5(body + b"\x00\x01\x02\x03").hexdigest()}, **fields)
                with self.assertRaisesRegex(SpillError, error):
                    self.settings.read(ref)
                self.assertFalse(os.path.exists(path))

    def test_configure_negotiates_bytes(self):
        self.assertTrue(SpillSettings.from_wire({"dir": self.dir, "threshold": 5, "bytes": True}).to_wire()["bytes"])
        self.assertNotIn("bytes", SpillSettings.from_wire({"dir": self.dir, "threshold": 5}).to_wire())
        with self.assertRaisesRegex(InvalidRequestError, "'bytes' must be a boolean"):
            SpillSettings.from_wire({"dir": self.dir, "threshold": 5, "bytes": 1})


class BytesServerTest(ServerTestCase):
    shared = True

    def client(self, want_bytes=True):
        c = self.connect(auth=False)
        self.assertIs(c.hello["bytes"], True)
        args = {"bytes": True} if want_bytes else {}
        c.call("auth", mac=mac(self.server.secret, c.hello["nonce"]), **args)
        for name in ("Echo", "Raw", "Batch", "Stream"):
            c.call("addModel", name="b" + name, file="bytes_model.py", **{"class": name})
        return c

    def test_bytes_in_and_out_through_base64_paths(self):
        c = self.client()
        reply = c.request("executeModel", name="bEcho", msg={"img": b64(ALL), "list": ["x", b64(b"")]},
                          contentType="image/png", **{"$bytes": [["msg", "img"], ["msg", "list", 1]]})
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(sorted(reply["$bytes"]), [["result", "msg", "img"], ["result", "msg", "list", 1]])
        self.assertEqual(reply["result"]["msg"], {"img": b64(ALL), "list": ["x", ""]})
        self.assertEqual(reply["result"]["contentType"], "image/png")
        self.assertEqual(reply["result"]["type"], "dict")

    def test_a_whole_bytes_msg_and_bytearray_and_memoryview_results(self):
        c = self.client()
        reply = c.request("executeModel", name="bRaw", msg=b64(ALL), **{"$bytes": [["msg"]]})
        self.assertEqual((reply["result"], reply["$bytes"]), (b64(ALL), [["result"]]))
        for kind in ("bytearray", "memoryview"):
            reply = c.request("executeModel", name="bRaw", msg={"as": kind, "data": b64(b"hi")}, **{"$bytes": [["msg", "data"]]})
            self.assertEqual((reply["result"], reply["$bytes"]), (b64(b"hi"), [["result"]]))

    def test_a_plain_reply_has_no_field(self):
        c = self.client()
        reply = c.request("executeModel", name="bRaw", msg={"x": 1})
        self.assertEqual(reply, {"id": reply["id"], "ok": True, "result": {"x": 1}})

    def test_a_batch_and_a_stream(self):
        c = self.client()
        reply = c.request("executeBatch", name="bBatch", msgs=[{"data": b64(b"ab")}, {"data": b64(b"cd")}],
                          **{"$bytes": [["msgs", 0, "data"], ["msgs", 1, "data"]]})
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(sorted(reply["$bytes"]), [["result", "results", 0, "reversed"], ["result", "results", 1, "reversed"]])
        self.assertEqual([r["reversed"] for r in reply["result"]["results"]], [b64(b"ba"), b64(b"dc")])
        reply = c.request("executeStream", name="bStream", msg={"n": 3}, window=10)
        self.assertTrue(reply["ok"], reply)
        items = [e for e in c.events if e.get("event") == "item" and e.get("id") == reply["id"]]
        self.assertEqual([(e["data"], e["$bytes"]) for e in items], [(b64(bytes([i]) * 3), [["data"]]) for i in range(3)])

    def test_bad_bytes_fields_get_an_invalid_request_error_and_the_connection_goes_on(self):
        c = self.client()
        for fields in ({"$bytes": [["msg"]], "msg": "%%%"}, {"$bytes": [["msg", "x"]], "msg": {"x": 3}}, {"$bytes": "msg", "msg": ""}):
            reply = c.request("executeModel", name="bRaw", **fields)
            self.assertFalse(reply["ok"], reply)
            self.assertEqual(reply["error"]["type"], "InvalidRequestError", reply)
        self.assertEqual(c.call("executeModel", name="bRaw", msg=1), 1)

    def test_a_host_that_did_not_ask_gets_the_serialization_error_as_before(self):
        c = self.client(want_bytes=False)
        reply = c.request("executeModel", name="bRaw", msg={"as": "bytearray", "data": b64(b"x")}, **{"$bytes": [["msg", "data"]]})
        self.assertFalse(reply["ok"])
        self.assertEqual(reply["error"]["type"], "SerializationError")
        self.assertIn("use .decode() or base64", reply["error"]["message"])

    def test_a_large_bytes_result_is_spilled_raw(self):
        c = self.client()
        directory = tempfile.mkdtemp(prefix="pyproxy-bytes-spill-")
        try:
            c.call("configure", spill={"dir": directory, "threshold": 1000, "bytes": True})
            data = ALL * 64
            reply = c.request("executeModel", name="bRaw", msg=b64(data), **{"$bytes": [["msg"]]})
            ref = reply["$spill"]
            self.assertEqual(ref["bytes"], [{"at": ["result"], "offset": ref["json"], "length": len(data)}])
            with open(ref["path"], "rb") as f:
                content = f.read()
            self.assertEqual(content[ref["json"]:], data)
            self.assertEqual(json.loads(content[:ref["json"]]), {"id": reply["id"], "ok": True, "result": None})
            os.unlink(ref["path"])
        finally:
            c.call("configure", spill=None)
            os.rmdir(directory)


class BytesAttackTest(ServerTestCase):
    shared = True

    def test_paths_into_the_protocol_fields_are_refused_or_harmless(self):
        c = self.connect()
        c.call("addModel", name="bRaw", file="bytes_model.py", **{"class": "Raw"})
        # The cmd made bytes: not a string.
        reply = c.request("executeModel", name="bRaw", msg=1, **{"$bytes": [["cmd"]]})
        self.assertEqual(reply["error"]["type"], "InvalidRequestError", reply)
        # The name made bytes: no such model, answered as such.
        reply = c.request("executeModel", name=b64(b"bRaw"), msg=1, **{"$bytes": [["name"]]})
        self.assertFalse(reply["ok"], reply)
        # The id: an integer, not base64 text.
        reply = c.request("executeModel", name="bRaw", msg=1, **{"$bytes": [["id"]]})
        self.assertEqual(reply["error"]["type"], "InvalidRequestError", reply)
        # A configure whose dir is bytes.
        reply = c.request("configure", spill={"dir": b64(b"/tmp"), "threshold": 5}, **{"$bytes": [["spill", "dir"]]})
        self.assertEqual(reply["error"]["type"], "InvalidRequestError", reply)
        self.assertEqual(c.call("executeModel", name="bRaw", msg=2), 2)


class BytesChaosTest(ServerTestCase):
    """Results whose bytes sit next to what json refuses, in dict subclasses,
    under keys that are not strings."""

    shared = True

    def client(self):
        c = self.connect(auth=False)
        c.call("auth", mac=mac(self.server.secret, c.hello["nonce"]), bytes=True)
        c.call("addModel", name="weird", file="chaos_bytes_model.py", **{"class": "Weird"})
        return c

    def test_bytes_next_to_a_value_json_refuses_fail_with_a_serialization_error_naming_that_value(self):
        c = self.client()
        for kind, problem in (("bytes_and_object", "result.b is an object"), ("bytes_and_nan", "result.b is nan")):
            reply = c.request("executeModel", name="weird", msg={"kind": kind})
            self.assertFalse(reply["ok"], reply)
            self.assertEqual(reply["error"]["type"], "SerializationError", reply)
            self.assertIn(problem, reply["error"]["message"])
        reply = c.request("executeStream", name="weird", msg={"kind": "stream_object"}, window=10)
        self.assertFalse(reply["ok"], reply)
        self.assertEqual(reply["error"]["type"], "SerializationError", reply)
        self.assertIn("item[0].b is an object", reply["error"]["message"])
        self.assertEqual(c.call("executeModel", name="weird", msg={"kind": "keys"})["1"], b64(b"i"))  # the connection goes on

    def test_bytes_in_dict_subclasses_and_under_keys_that_are_not_strings(self):
        c = self.client()
        reply = c.request("executeModel", name="weird", msg={"kind": "subclasses"})
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(reply["result"], {"d": {"x": b64(b"dd")}, "o": {"y": b64(b"od")}})
        self.assertEqual(sorted(reply["$bytes"]), [["result", "d", "x"], ["result", "o", "y"]])
        reply = c.request("executeModel", name="weird", msg={"kind": "keys"})
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(reply["result"], {"1": b64(b"i"), "null": b64(b"n"), "2.5": b64(b"f"), "false": b64(b"b")})
        self.assertEqual(sorted(reply["$bytes"]), [["result", k] for k in ("1", "2.5", "false", "null")])

    def test_an_eval_value_with_bytes_comes_back_as_bytes_to_a_host_that_reads_them(self):
        c = self.client()
        reply = c.request("eval", code="{'png': b'\\x89PNG', 'n': 1}")
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(reply["result"]["value"], {"png": b64(b"\x89PNG"), "n": 1})
        self.assertEqual(reply["$bytes"], [["result", "value", "png"]])
        reply = c.request("eval", code="[b'x', object()]")
        self.assertEqual(reply["error"]["type"], "SerializationError", reply)
        self.assertIn("[1] is an object", reply["error"]["message"])
        # A host that did not ask: refused as before.
        old = self.connect()
        reply = old.request("eval", code="b'x'")
        self.assertEqual(reply["error"]["type"], "SerializationError", reply)
        self.assertIn("value is a bytes", reply["error"]["message"])


class HostCallBytesTest(ServerTestCase):
    """Bytes in a model's host calls (protocol §3 "Bytes", §7): its
    arguments go to a host that reads bytes as base64 named by ``$bytes``
    (raw in a spill file above the threshold), and bytes in the host's
    reply come back to the model as ``bytes``."""

    shared = True

    def client(self, want_bytes=True):
        c = self.connect(auth=False)
        args = {"bytes": True} if want_bytes else {}
        c.call("auth", mac=mac(self.server.secret, c.hello["nonce"]), **args)
        c.call("addModel", name="bHost", file="bytes_model.py", **{"class": "HostCall"})
        return c

    def run_model(self, c, args, paths, **extra):
        msg = dict({"cmd": "thumb", "args": args}, **extra)
        reply = c.request("executeModel", name="bHost", msg=msg, **{"$bytes": [["msg", "args"] + p for p in paths]})
        self.assertTrue(reply["ok"], reply)
        return reply

    def test_bytes_in_the_arguments_and_in_the_reply(self):
        c = self.client()
        c.handlers["thumb"] = lambda args: WithFields(result={"small": b64(ALL[::-1]), "n": 1}, **{"$bytes": [["result", "small"]]})
        reply = self.run_model(c, {"image": b64(ALL), "empty": b64(b""), "list": ["x", b64(b"y")]},
                               [["image"], ["empty"], ["list", 1]])
        sent = c.host_requests[-1]
        self.assertEqual(sent["args"], {"image": b64(ALL), "empty": "", "list": ["x", b64(b"y")]})
        self.assertEqual(sorted(sent["$bytes"]), [["args", "empty"], ["args", "image"], ["args", "list", 1]])
        # The model got bytes from the host, and returns them as bytes.
        self.assertEqual(reply["result"], {"result": {"small": b64(ALL[::-1]), "n": 1}, "type": "dict"})
        self.assertEqual(reply["$bytes"], [["result", "result", "small"]])

    def test_a_whole_bytes_argument_and_a_bytes_result(self):
        c = self.client()
        c.handlers["thumb"] = lambda args: WithFields(result=b64(b""), **{"$bytes": [["result"]]})
        reply = self.run_model(c, b64(b"\x00"), [[]])
        self.assertEqual((c.host_requests[-1]["args"], c.host_requests[-1]["$bytes"]), ("AA==", [["args"]]))
        self.assertEqual(reply["result"], {"result": "", "type": "bytes"})

    def test_bytes_under_keys_that_are_not_strings(self):
        c = self.client()
        c.handlers["thumb"] = lambda args: None
        self.run_model(c, b64(b"k"), [[]], intKeys=True)
        sent = c.host_requests[-1]
        self.assertEqual(sent["args"], {"1": b64(b"k"), "null": [b64(b"k")], "2.5": {"x": b64(b"k")}})
        self.assertEqual(sorted(sent["$bytes"]), [["args", "1"], ["args", "2.5", "x"], ["args", "null", 0]])

    def test_a_plain_host_call_has_no_field(self):
        c = self.client()
        c.handlers["thumb"] = lambda args: args
        reply = self.run_model(c, {"a": 1}, [])
        self.assertNotIn("$bytes", c.host_requests[-1])
        self.assertEqual(reply["result"], {"result": {"a": 1}, "type": "dict"})

    def test_a_host_that_did_not_ask_for_bytes_gets_no_bytes_and_the_model_a_host_error(self):
        c = self.client(want_bytes=False)
        c.handlers["thumb"] = lambda args: args
        reply = self.run_model(c, {"image": b64(b"x")}, [["image"]])
        self.assertEqual(reply["result"]["type"], "HostError")
        self.assertIn("arguments are not JSON", reply["result"]["error"])
        self.assertIn("use .decode() or base64", reply["result"]["error"])
        self.assertEqual(c.host_requests, [])

    def test_bytes_next_to_a_value_json_refuses_name_that_value(self):
        c = self.connect(auth=False)
        c.call("auth", mac=mac(self.server.secret, c.hello["nonce"]), bytes=True)
        c.call("addModel", name="m", source=(
            "from pyproxy import host\n"
            "class M:\n"
            "    threaded = True\n"
            "    def execute(self, msg):\n"
            "        try:\n"
            "            host.call('thumb', {'b': b'x', 'o': object()})\n"
            "        except host.HostError as exc:\n"
            "            return str(exc)\n"))
        message = c.call("executeModel", name="m", msg={})
        self.assertIn("args.o is an object", message)
        self.assertEqual(c.host_requests, [])

    def test_large_bytes_arguments_go_raw_to_a_spill_file(self):
        c = self.client()
        directory = tempfile.mkdtemp(prefix="pyproxy-bytes-spill-")
        seen = []

        def thumb(args):
            stub = c.host_requests[-1]
            ref = stub["$spill"]
            with open(ref["path"], "rb") as f:
                content = f.read()
            os.unlink(ref["path"])
            seen.append((stub, ref, content))
            return "ok"

        c.handlers["thumb"] = thumb
        try:
            c.call("configure", spill={"dir": directory, "threshold": 1000, "bytes": True})
            data = ALL * 64
            reply = self.run_model(c, {"image": b64(data), "small": b64(b"s")}, [["image"], ["small"]])
            self.assertEqual(reply["result"], {"result": "ok", "type": "str"})
            stub, ref, content = seen[0]
            self.assertEqual((stub["cmd"], stub["id"]), ("thumb", stub["id"]))
            segments = sorted(ref["bytes"], key=lambda s: s["at"])
            self.assertEqual([s["at"] for s in segments], [["args", "image"], ["args", "small"]])
            image = segments[0]
            self.assertEqual(content[image["offset"]:image["offset"] + image["length"]], data)
            self.assertEqual(
                json.loads(content[:ref["json"]]),
                {"id": stub["id"], "cmd": "thumb", "args": {"image": None, "small": None}, "call": c._next},
            )
            # Below the threshold: inline, as base64.
            reply = self.run_model(c, {"small": b64(b"s")}, [["small"]])
            self.assertEqual(c.host_requests[-1]["$bytes"], [["args", "small"]])
        finally:
            c.call("configure", spill=None)
            shutil.rmtree(directory, ignore_errors=True)

    def test_bytes_above_the_frame_limit_without_spill_over_fail_clearly(self):
        c = self.client()
        c.handlers["thumb"] = lambda args: None
        reply = c.request("executeModel", name="bHost", msg={"cmd": "thumb", "args": {"n": 1}})
        self.assertTrue(reply["ok"])
        c.call("addModel", name="big", source=(
            "from pyproxy import host\n"
            "class M:\n"
            "    threaded = True\n"
            "    def execute(self, msg):\n"
            "        try:\n"
            "            host.call('thumb', {'b': bytes(msg)})\n"
            "        except host.HostError as exc:\n"
            "            return str(exc)\n"))
        message = c.call("executeModel", name="big", msg=50 * 1024 * 1024, timeout=30)
        self.assertRegex(message, r"Cannot call host 'thumb': Cannot send message: \d+ bytes above the frame limit \d+ \(configure spill-over\)")


class InsecureBytesTest(ServerTestCase):
    """A server started with ``--insecure-no-auth`` writes bytes to a client
    that sent the optional ``auth`` (no ``mac``) with ``"bytes": true``, and
    to no other (protocol §4)."""

    insecure = True
    shared = True

    def test_the_optional_auth_asks_for_bytes(self):
        c = self.connect(auth=False)
        self.assertEqual((c.hello["auth"], c.hello["bytes"]), ("none", True))
        c.call("addModel", name="bRaw", file="bytes_model.py", **{"class": "Raw"})
        reply = c.request("executeModel", name="bRaw", msg=b64(b"x"), **{"$bytes": [["msg"]]})
        self.assertEqual(reply["error"]["type"], "SerializationError", reply)
        result = c.call("auth", bytes=True)
        self.assertEqual(result["serverId"], c.hello["serverId"])
        reply = c.request("executeModel", name="bRaw", msg=b64(ALL), **{"$bytes": [["msg"]]})
        self.assertEqual((reply["result"], reply["$bytes"]), (b64(ALL), [["result"]]))


if __name__ == "__main__":
    unittest.main()
