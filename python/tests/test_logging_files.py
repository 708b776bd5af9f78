"""The server's log files are private to their owner."""

import logging
import os
import shutil
import stat
import tempfile
import unittest

from pyproxy_server.__main__ import setup_logging


@unittest.skipIf(os.name != "posix", "POSIX permissions")
class LogFileTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        root_logger = logging.getLogger()
        saved = (root_logger.handlers[:], root_logger.level)

        def restore():
            for handler in root_logger.handlers:
                handler.close()
            root_logger.handlers[:], level = saved
            root_logger.setLevel(level)

        self.addCleanup(restore)

    def mode(self, path):
        return stat.S_IMODE(os.stat(path).st_mode)

    def test_log_directory_and_files_are_private_even_after_older_versions(self):
        logs = os.path.join(self.root, "logs")
        os.makedirs(logs, mode=0o755)
        os.chmod(logs, 0o755)
        old = os.path.join(logs, "pythonserverold.log")
        with open(old, "w") as f:
            f.write("before\n")
        os.chmod(old, 0o644)
        setup_logging(self.root, "old", "info")
        logging.getLogger("pyproxy_server").info("secret-ish line")
        setup_logging(self.root, "new", "info")
        logging.getLogger("pyproxy_server").info("another line")
        self.assertEqual(self.mode(logs), 0o700)
        self.assertEqual(self.mode(old), 0o600)
        self.assertEqual(self.mode(os.path.join(logs, "pythonservernew.log")), 0o600)
        with open(os.path.join(logs, "pythonservernew.log")) as f:
            self.assertIn("another line", f.read())


if __name__ == "__main__":
    unittest.main()
