"""SpillSettings read/write above the size where the md5 runs in a thread."""

import hashlib
import json
import os
import shutil
import tempfile
import unittest

from pyproxy_server.errors import SpillError
from pyproxy_server.spill import _PARALLEL_MD5, SpillSettings


class SpillSettingsLargeTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="pyproxy-spill-test-")
        self.settings = SpillSettings.from_wire({"dir": self.dir, "threshold": 1})
        self.message = {"id": 7, "ok": True, "result": "x\u20ac" * (_PARALLEL_MD5 // 3 + 1)}
        self.data = json.dumps(self.message, ensure_ascii=False).encode()
        self.assertGreater(len(self.data), _PARALLEL_MD5)

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_write_then_read_round_trips_and_deletes(self):
        ref = self.settings.write(self.data, "py-c1-7")
        self.assertEqual(ref["size"], len(self.data))
        self.assertEqual(ref["md5"], hashlib.md5(self.data).hexdigest())
        with open(ref["path"], "rb") as f:
            self.assertEqual(f.read(), self.data)
        self.assertEqual(os.stat(ref["path"]).st_mode & 0o777, 0o600)
        self.assertEqual(self.settings.read(ref), self.message)
        self.assertFalse(os.path.exists(ref["path"]))

    def test_read_refuses_a_wrong_md5_even_when_the_json_parses(self):
        ref = self.settings.write(self.data, "py-c1-8")
        ref["md5"] = hashlib.md5(b"other").hexdigest()
        with self.assertRaisesRegex(SpillError, "md5 mismatch"):
            self.settings.read(ref)
        self.assertFalse(os.path.exists(ref["path"]))

    def test_read_reports_invalid_json_when_the_md5_matches(self):
        broken = self.data[:-1]
        ref = self.settings.write(broken, "py-c1-9")
        with self.assertRaisesRegex(SpillError, "invalid JSON"):
            self.settings.read(ref)
        self.assertFalse(os.path.exists(ref["path"]))

    def test_read_reports_a_corrupted_file_as_md5_mismatch(self):
        ref = self.settings.write(self.data, "py-c1-10")
        with open(ref["path"], "r+b") as f:
            f.seek(len(self.data) // 2)
            f.write(b"\xff")
        with self.assertRaisesRegex(SpillError, "md5 mismatch"):
            self.settings.read(ref)
        self.assertFalse(os.path.exists(ref["path"]))


if __name__ == "__main__":
    unittest.main()
