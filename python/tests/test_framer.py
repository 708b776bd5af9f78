import hashlib
import json
import unittest

from pyproxy_server.errors import ChecksumError, FrameError
from pyproxy_server import framer as framer_module
from pyproxy_server.framer import OVERHEAD, SMALL_MD5_MAX, Framer, md5_digest

from ._client import frame


def payloads(n):
    return [json.dumps({"id": i, "cmd": "ping", "pad": "é" * i}).encode() for i in range(n)]


class FramerTest(unittest.TestCase):
    def test_encode_layout(self):
        payload = b'{"id":1}'
        data = Framer.encode(payload)
        digest = hashlib.md5(payload).digest()
        self.assertEqual(len(data), OVERHEAD + len(payload))
        self.assertEqual(data[:4], b"PYPX")
        self.assertEqual(data[4], 1)
        self.assertEqual(data[5:21], digest)
        self.assertEqual(int.from_bytes(data[21:25], "big"), len(payload))
        self.assertEqual(data[25:-16], payload)
        self.assertEqual(data[-16:], digest)

    def test_encode_into_matches_encode(self):
        parts = []
        Framer.encode_into(parts, b"{}")
        self.assertEqual(b"".join(parts), Framer.encode(b"{}"))

    def test_split_at_every_byte(self):
        items = payloads(3)
        stream = b"".join(Framer.encode(p) for p in items)
        for cut in range(len(stream) + 1):
            framer = Framer()
            got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
            self.assertEqual([bytes(g) for g in got], items, "cut at %d" % cut)
            self.assertEqual(framer.buffered, 0)

    def test_one_byte_at_a_time(self):
        items = payloads(2)
        stream = b"".join(Framer.encode(p) for p in items)
        framer = Framer()
        got = []
        for i in range(len(stream)):
            got += framer.feed(stream[i : i + 1])
        self.assertEqual([bytes(g) for g in got], items)

    def test_many_frames_in_one_chunk(self):
        items = payloads(200)
        got = Framer().feed(b"".join(Framer.encode(p) for p in items))
        self.assertEqual([bytes(g) for g in got], items)

    def test_memoryview_input(self):
        got = Framer().feed(memoryview(Framer.encode(b"{}")))
        self.assertEqual([bytes(g) for g in got], [b"{}"])

    def test_empty_payload(self):
        self.assertEqual([bytes(g) for g in Framer().feed(Framer.encode(b""))], [b""])

    def test_bad_begin_marker_is_fatal(self):
        with self.assertRaises(FrameError):
            Framer().feed(frame(b"{}", magic=b"XXXX"))

    def test_bad_begin_marker_detected_before_header_complete(self):
        with self.assertRaises(FrameError):
            Framer().feed(b"GET / HTTP/1.1")
        with self.assertRaises(FrameError):
            Framer().feed(b"PYX")

    def test_bad_version_is_fatal(self):
        with self.assertRaises(FrameError):
            Framer().feed(frame(b"{}", version=2))
        with self.assertRaises(FrameError):
            Framer().feed(b"PYPX\x02")

    def test_length_above_limit_is_fatal_from_header_alone(self):
        framer = Framer(max_frame_size=100)
        header = frame(b"x" * 101)[:25]
        with self.assertRaises(FrameError):
            framer.feed(header)

    def test_length_at_limit_is_accepted(self):
        framer = Framer(max_frame_size=100)
        self.assertEqual(len(framer.feed(frame(b"x" * 100))), 1)

    def test_end_marker_mismatch_is_fatal(self):
        with self.assertRaises(FrameError):
            Framer().feed(frame(b"{}", end=b"\0" * 16))

    def test_checksum_mismatch_is_recoverable(self):
        bad = frame(b'{"id":1}', checksum=b"\1" * 16)
        good = Framer.encode(b'{"id":2}')
        framer = Framer()
        got = framer.feed(bad + good)
        self.assertEqual(len(got), 2)
        self.assertIsInstance(got[0], ChecksumError)
        self.assertEqual(bytes(got[1]), b'{"id":2}')
        self.assertEqual([bytes(g) for g in framer.feed(good)], [b'{"id":2}'])

    def test_large_frame_in_many_chunks(self):
        payload = b"y" * (3 * 1024 * 1024)
        data = Framer.encode(payload)
        framer = Framer()
        got = []
        for i in range(0, len(data), 65536):
            got += framer.feed(data[i : i + 65536])
        self.assertEqual(len(got), 1)
        self.assertEqual(bytes(got[0]), payload)

    def test_single_gives_the_payload_of_a_read_of_exactly_one_frame(self):
        data = Framer.encode(b'{"id":1}')
        framer = Framer()
        self.assertEqual(framer.single(data), b'{"id":1}')
        self.assertEqual(framer.single(memoryview(bytearray(data))), b'{"id":1}')
        self.assertEqual(framer.buffered, 0)  # consumes nothing

    def test_single_leaves_every_other_read_to_feed(self):
        one = Framer.encode(b'{"id":1}')
        cases = {
            "two frames": one + one,
            "a part": one[:-1],
            "extra bytes": one + b"P",
            "bad checksum": frame(b'{"id":1}', checksum=b"\1" * 16),
            "bad end marker": frame(b'{"id":1}', end=b"\0" * 16),
            "bad begin marker": b"XXXX" + one[4:],
            "bad version": one[:4] + b"\2" + one[5:],
            "short": b"PYPX",
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assertIsNone(Framer().single(data))
        self.assertIsNone(Framer(max_frame_size=7).single(one))  # above the limit

    def test_single_is_none_while_a_frame_is_buffered(self):
        one = Framer.encode(b'{"id":1}')
        framer = Framer()
        self.assertEqual(framer.feed(one[:10]), [])
        self.assertIsNone(framer.single(one))  # would skip the buffered part


if __name__ == "__main__":
    unittest.main()


class Md5DigestTest(unittest.TestCase):
    def test_matches_hashlib_on_both_sides_of_the_switch(self):
        for size in (0, 1, 100, SMALL_MD5_MAX - 1, SMALL_MD5_MAX, SMALL_MD5_MAX + 1, 100_000):
            data = bytes(i % 251 for i in range(size))
            self.assertEqual(md5_digest(data), hashlib.md5(data).digest(), "size %d" % size)
            self.assertEqual(md5_digest(memoryview(data)), hashlib.md5(data).digest())

    def test_small_payloads_skip_openssl_and_large_ones_use_it(self):
        used = []

        def counting(name, real):
            def md5(data):
                used.append((name, len(data)))
                return real(data)

            return md5

        saved = framer_module._small_md5, framer_module._md5
        framer_module._small_md5 = counting("small", saved[0])
        framer_module._md5 = counting("openssl", saved[1])
        try:
            small = Framer.encode(b'{"id":1}')
            big_payload = b'{"pad":"' + b"x" * SMALL_MD5_MAX + b'"}'
            big = Framer.encode(big_payload)
            self.assertEqual(Framer().feed(small + big), [b'{"id":1}', big_payload])
        finally:
            framer_module._small_md5, framer_module._md5 = saved
        self.assertEqual(
            used,
            [("small", 8), ("openssl", len(big_payload)), ("small", 8), ("openssl", len(big_payload))],
        )
