"""The server's log files are private to their owner."""

import glob
import io
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

from pyproxy_server.__main__ import LOOP_LOGGERS, _claim_log_name, setup_logging
from tests._client import ServerProcess


@unittest.skipIf(os.name != "posix", "POSIX permissions")
class LogFileTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        root_logger = logging.getLogger()
        server_logger = logging.getLogger("pyproxy_server")
        saved = (root_logger.handlers[:], root_logger.level, server_logger.handlers[:], server_logger.propagate)

        loop_loggers = [logging.getLogger(name) for name in LOOP_LOGGERS]
        saved_filters = [logger.filters[:] for logger in loop_loggers]

        def restore():
            for handler in set(root_logger.handlers + server_logger.handlers):
                getattr(handler, "close_and_unclaim", handler.close)()
            root_logger.handlers[:], level, server_logger.handlers[:], server_logger.propagate = saved
            root_logger.setLevel(level)
            for logger, filters in zip(loop_loggers, saved_filters):
                logger.filters[:] = filters

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

    def test_log_dir_takes_the_files_and_leaves_an_existing_directorys_mode(self):
        shared = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, shared)
        os.chmod(shared, 0o755)
        setup_logging(self.root, "slot0", "info", claim=True, log_dir=shared)
        logging.getLogger("pyproxy_server").info("to the log dir")
        path = os.path.join(shared, "pythonserverslot0.log")
        with open(path) as f:
            self.assertIn("to the log dir", f.read())
        self.assertEqual(self.mode(path), 0o600)
        self.assertEqual(self.mode(shared), 0o755)  # the user's, not ours
        self.assertFalse(os.path.exists(os.path.join(self.root, "logs")))
        # A missing one is made, private.
        made = os.path.join(shared, "a", "b")
        setup_logging(self.root, "slot0", "info", claim=True, log_dir=made)
        self.assertEqual(self.mode(made), 0o700)
        self.assertTrue(os.path.exists(os.path.join(made, "pythonserverslot0.log.lock")))

    def test_log_dir_dash_logs_to_stderr_and_makes_no_file(self):
        err = io.StringIO()
        with mock.patch("sys.__stderr__", err):
            setup_logging(self.root, "slot0", "info", claim=True, log_dir="-")
        logging.getLogger("pyproxy_server").warning("to stderr on purpose")
        logging.getLogger("model").info("a model's record")
        text = err.getvalue()
        self.assertRegex(text, r"WARNING \[.*\] pyproxy_server: to stderr on purpose\n")
        self.assertIn("INFO", text.splitlines()[1])
        self.assertIn("model: a model's record", text)
        self.assertNotIn("cannot open log file", text)
        self.assertEqual(os.listdir(self.root), [])
        self.assertFalse(os.path.exists("-"))

    def test_log_dir_dash_writes_a_record_with_a_traceback_as_one_line(self):
        # The host reads stderr a line at a time: a traceback's lines were
        # each a warning of its own, whatever the record's level.
        err = io.StringIO()
        with mock.patch("sys.__stderr__", err):
            setup_logging(self.root, "slot0", "info", claim=True, log_dir="-")
        log = logging.getLogger("pyproxy_server")
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            log.exception("failed in C:\\tmp\ron two lines\nthe second")
        log.info("next")
        lines = err.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(
            lines[0],
            r"ERROR \[.*\] pyproxy_server: failed in C:\\\\tmp\\ron two lines\\nthe second\\n"
            r"Traceback \(most recent call last\):\\n  File .*\\nValueError: bad\\nvalue$",
        )
        self.assertRegex(lines[1], r"INFO \[.*\] pyproxy_server: next$")

    # A log directory other users can write (--log-dir shared with a group,
    # or sticky as /tmp): what they put at a file's name beforehand is never
    # written through (own_file).

    def shared_dir(self):
        """A sticky directory anyone can write, and a file of ours outside it."""
        shared = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, shared)
        os.chmod(shared, 0o1777)
        target = os.path.join(self.root, "victim")
        with open(target, "w") as f:
            f.write("the victim's own\n")
        os.chmod(target, 0o644)
        return shared, target

    def log_one_record(self, log_dir):
        """``setup_logging`` on ``log_dir`` and one record; what the server said on stderr."""
        said = io.StringIO()
        with mock.patch.object(sys, "__stderr__", said):
            setup_logging(self.root, "slot0", "info", claim=True, log_dir=log_dir)
            logging.getLogger("pyproxy_server").info("a record with text from a request")
        return said.getvalue()

    def test_a_link_put_at_the_log_files_name_is_not_followed(self):
        shared, target = self.shared_dir()
        os.symlink(target, os.path.join(shared, "pythonserverslot0.log"))
        said = self.log_one_record(shared)
        with open(target) as f:
            self.assertEqual(f.read(), "the victim's own\n")
        self.assertEqual(self.mode(target), 0o644)
        self.assertIn("symbolic link", said)
        self.assertIn("a record with text from a request", said)  # on stderr instead

    def test_a_link_put_at_the_name_of_a_reopened_log_file_is_not_followed(self):
        shared, target = self.shared_dir()
        self.log_one_record(shared)
        path = os.path.join(shared, "pythonserverslot0.log")
        handler = logging.getLogger("pyproxy_server").handlers[0]
        handler.reopen_check_every = 0
        os.remove(path)  # moved away (a rotation, logrotate), and a link put there
        os.symlink(target, path)
        said = io.StringIO()
        with mock.patch.object(sys, "__stderr__", said):
            logging.getLogger("pyproxy_server").info("after the move")
        with open(target) as f:
            self.assertEqual(f.read(), "the victim's own\n")
        self.assertEqual(self.mode(target), 0o644)
        self.assertIn("symbolic link", said.getvalue())

    def test_a_link_put_at_a_claims_name_makes_nothing_and_the_next_name_is_claimed(self):
        shared, _ = self.shared_dir()
        missing = os.path.join(self.root, "made-through-a-link")
        os.symlink(missing, os.path.join(shared, "pythonserverslot0.log.lock"))
        self.log_one_record(shared)
        self.assertFalse(os.path.lexists(missing))
        with open(os.path.join(shared, "pythonserverslot0-2.log")) as f:
            self.assertIn("a record with text from a request", f.read())

    def test_a_fifo_put_at_the_log_files_name_does_not_block_the_start(self):
        shared, _ = self.shared_dir()
        os.mkfifo(os.path.join(shared, "pythonserverslot0.log"))
        said = []
        done = threading.Event()

        def start():
            said.append(self.log_one_record(shared))
            done.set()

        threading.Thread(target=start, daemon=True).start()
        self.assertTrue(done.wait(10), "opening the log file blocked on a FIFO")
        self.assertIn("not a regular file", said[0])

    @unittest.skipUnless(
        hasattr(os, "geteuid") and os.geteuid() == 0, "needs root to make a file of another user (skipped: not root)"
    )
    def test_another_users_file_at_the_log_files_name_is_not_written(self):
        shared, _ = self.shared_dir()
        theirs = os.path.join(shared, "pythonserverslot0.log")
        with open(theirs, "w"):
            pass
        os.chown(theirs, 65534, 65534)
        os.chmod(theirs, 0o666)
        said = self.log_one_record(shared)
        self.assertEqual(os.path.getsize(theirs), 0)
        self.assertEqual(self.mode(theirs), 0o666)
        self.assertIn("owned by another user", said)

    @unittest.skipUnless(
        hasattr(os, "geteuid") and os.geteuid() == 0, "needs root to make links of another user (skipped: not root)"
    )
    def test_links_of_another_user_in_a_sticky_directory_are_refused_as_links(self):
        # There the kernel may refuse another user's link with EACCES before
        # O_NOFOLLOW's ELOOP (fs.protected_*): still a link, and the lock's
        # name is still passed over, not the log sent to stderr.
        shared, target = self.shared_dir()
        missing = os.path.join(self.root, "made-through-a-link")
        for name, to in (("pythonserverslot0.log.lock", missing), ("pythonserverslot0-2.log", target)):
            os.symlink(to, os.path.join(shared, name))
            os.lchown(os.path.join(shared, name), 65534, 65534)
        said = self.log_one_record(shared)
        self.assertFalse(os.path.lexists(missing))
        with open(target) as f:
            self.assertEqual(f.read(), "the victim's own\n")
        self.assertIn("pythonserverslot0-2.log", said)
        self.assertIn("symbolic link", said)

    def test_a_server_given_log_dir_logs_there(self):
        logs = os.path.join(tempfile.mkdtemp(), "logs here")
        self.addCleanup(shutil.rmtree, os.path.dirname(logs))
        server = ServerProcess(root=self.root, args=["--log-name", "slot0", "--log-dir", logs])
        self.addCleanup(server.kill)
        expected = '"pid": %d' % server.ready["pid"]
        deadline = time.monotonic() + 10
        text = ""
        while expected not in text and time.monotonic() < deadline:
            try:
                with open(os.path.join(logs, "pythonserverslot0.log")) as f:
                    text = f.read()
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        self.assertIn(expected, text)
        self.assertFalse(os.path.exists(os.path.join(self.root, "logs")))

    def test_the_servers_records_skip_handlers_a_model_adds_to_the_root_logger(self):
        # A model's root handler takes its lock unshielded: a cancel's
        # interrupt there on a call's thread must not block the loop thread's
        # log lines, which must not go through it.
        setup_logging(self.root, "m", "info")
        seen = []

        class ModelHandler(logging.Handler):
            def emit(self, record):
                seen.append(record.name)

        logging.getLogger().addHandler(ModelHandler())
        logging.getLogger("pyproxy_server.connection").warning("server line 1")
        logging.getLogger("pyproxy_server").info("server line 2")
        logging.getLogger("scorer").warning("model line 1")
        logging.basicConfig(force=True, handlers=[ModelHandler()])  # closes the server's file handler
        logging.getLogger("pyproxy_server.models").warning("server line 3")
        logging.getLogger("scorer").warning("model line 2")
        self.assertEqual(seen, ["scorer", "scorer"])
        with open(os.path.join(self.root, "logs", "pythonserverm.log")) as f:
            text = f.read()
        for line in ("server line 1", "server line 2", "model line 1", "server line 3"):
            self.assertIn(line, text)

    def test_asyncio_records_of_the_loop_thread_skip_a_held_model_handler(self):
        # asyncio logs on the loop thread ("Exception in callback ..."): a
        # model's root handler whose lock a cancelled call left held would
        # block the loop there for good. Other threads' asyncio records (a
        # model's own loops) still reach the model's handlers.
        setup_logging(self.root, "a", "info")  # this thread plays the loop thread
        seen = []
        blocked = []

        class HeldModelHandler(logging.Handler):
            def acquire(self):
                if not self.lock.acquire(timeout=0.5):
                    blocked.append(threading.current_thread().name)
                    raise RuntimeError("the model's handler lock is held")

            def emit(self, record):
                seen.append(record.getMessage())

        model_handler = HeldModelHandler()
        logging.getLogger().addHandler(model_handler)
        held, release = threading.Event(), threading.Event()

        def hold():  # a call thread that a cancel interrupted inside the handler
            model_handler.lock.acquire()
            held.set()
            release.wait(10)
            model_handler.lock.release()

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            self.assertTrue(held.wait(10))
            logging.getLogger("asyncio").error("Exception in callback on the loop")
            logging.getLogger("concurrent.futures").error("exception calling callback on the loop")
        finally:
            release.set()
            holder.join(10)
        self.assertEqual(blocked, [])
        other = threading.Thread(target=logging.getLogger("asyncio").error, args=("a model's own loop",))
        other.start()
        other.join(10)
        self.assertEqual(seen, ["a model's own loop"])
        with open(os.path.join(self.root, "logs", "pythonservera.log")) as f:
            text = f.read()
        for line in ("Exception in callback on the loop", "exception calling callback on the loop", "a model's own loop"):
            self.assertIn(line, text)
        setup_logging(self.root, "b", "info")  # again: one filter each, on the new handler
        for name in LOOP_LOGGERS:
            self.assertEqual(len(logging.getLogger(name).filters), 1)

    @unittest.skipIf(os.name != "posix", "flock")
    def test_a_model_closing_the_servers_handler_keeps_its_claim_on_the_log_name(self):
        # basicConfig(force=True) and logging.shutdown() close the server's
        # handler, which writes on (its file reopens): another server on this
        # path must not take the name and rotate the file under its feet.
        logs = os.path.join(self.root, "logs")
        setup_logging(self.root, "w1", "info", claim=True)
        for close_it in (lambda: logging.basicConfig(force=True, handlers=[logging.NullHandler()]), logging.shutdown):
            close_it()
            claimed, fd = _claim_log_name(logs, "w1")
            if fd is not None:
                os.close(fd)
            self.assertEqual(claimed, "w1-2")
        logging.getLogger("pyproxy_server").warning("still here")
        with open(os.path.join(logs, "pythonserverw1.log")) as f:
            self.assertIn("still here", f.read())
        # The server's own setup again gives it up.
        setup_logging(self.root, "w2", "info", claim=True)
        claimed, fd = _claim_log_name(logs, "w1")
        os.close(fd)
        self.assertEqual(claimed, "w1")

    def test_a_log_file_moved_or_removed_by_another_program_is_opened_again(self):
        # logrotate (without copytruncate) renames the file and expects the
        # writer to open its name again: the records went on into the renamed
        # file until the handler's own rotation at 10 MiB.
        setup_logging(self.root, "rot", "info")
        handler = next(h for h in logging.getLogger().handlers if hasattr(h, "close_and_unclaim"))
        handler.reopen_check_every = 0
        log = os.path.join(self.root, "logs", "pythonserverrot.log")
        logging.getLogger("pyproxy_server").info("before the move")
        os.rename(log, log + ".1")
        logging.getLogger("a_model").info("after the move")
        with open(log) as f:
            self.assertIn("after the move", f.read())
        with open(log + ".1") as f:
            moved = f.read()
        self.assertIn("before the move", moved)
        self.assertNotIn("after the move", moved)
        self.assertEqual(self.mode(log), 0o600)
        # Removed: made again.
        os.remove(log)
        logging.getLogger("pyproxy_server").info("after the removal")
        with open(log) as f:
            self.assertIn("after the removal", f.read())
        # Looked at once a second by default, not at every record.
        self.assertEqual(type(handler).reopen_check_every, 1.0)

    def test_a_log_file_that_cannot_be_written_says_so_once_not_a_traceback_per_record(self):
        # A full disk (ENOSPC) made each record a "--- Logging error ---"
        # traceback on stderr, which the host logs line by line.
        import io
        import sys

        setup_logging(self.root, "full", "info")
        handler = next(h for h in logging.getLogger().handlers if hasattr(h, "close_and_unclaim"))
        real = handler.stream

        class Full:
            # A file on a full disk: its writes fail, the rest works.
            def write(self, text):
                raise OSError(28, "No space left on device")

            def seek(self, *args):
                return real.seek(*args)

            def tell(self):
                return real.tell()

            def flush(self):
                pass

        err = io.StringIO()
        saved, sys.__stderr__ = sys.__stderr__, err
        try:
            handler.stream = Full()
            for i in range(5):
                logging.getLogger("pyproxy_server").warning("lost %d", i)
                logging.getLogger("a_model").warning("lost too %d", i)
            handler.stream = real
            logging.getLogger("pyproxy_server").warning("back")
        finally:
            sys.__stderr__ = saved
        lines = err.getvalue().splitlines()
        log = os.path.join(self.root, "logs", "pythonserverfull.log")
        self.assertEqual(
            lines,
            [
                "pyproxy_server: cannot write log file %s ([Errno 28] No space left on device): "
                "records may be lost until it can be written again" % log,
                "pyproxy_server: log file %s is written again" % log,
            ],
        )
        with open(log) as f:
            self.assertIn("back", f.read())
        # Another error than the file's own is logging's as before.
        err = io.StringIO()
        saved = sys.stderr
        sys.stderr = err
        try:
            logging.getLogger("pyproxy_server").warning("%d", "not a number")
        finally:
            sys.stderr = saved
        self.assertIn("--- Logging error ---", err.getvalue())

    def test_a_record_logging_fails_to_format_on_a_full_disk_does_not_say_the_file_is_written_again(self):
        # A model's "%d" given a string, while the disk is full: nothing was
        # written, yet "is written again" was said, then "cannot write" again
        # at the next record (two false lines per such record).
        import io
        import sys

        setup_logging(self.root, "fmt", "info")
        handler = next(h for h in logging.getLogger().handlers if hasattr(h, "close_and_unclaim"))
        real = handler.stream

        class Full:
            def write(self, text):
                raise OSError(28, "No space left on device")

            def seek(self, *args):
                return real.seek(*args)

            def tell(self):
                return real.tell()

            def flush(self):
                pass

        err = io.StringIO()
        saved = sys.__stderr__, sys.stderr
        sys.__stderr__, sys.stderr = err, io.StringIO()
        try:
            handler.stream = Full()
            logging.getLogger("a_model").warning("lost")
            logging.getLogger("a_model").warning("%d", "not a number")
            logging.getLogger("a_model").warning("lost too")
            handler.stream = real
            logging.getLogger("a_model").warning("back")
        finally:
            sys.__stderr__, sys.stderr = saved
        log = os.path.join(self.root, "logs", "pythonserverfmt.log")
        self.assertEqual(
            err.getvalue().splitlines(),
            [
                "pyproxy_server: cannot write log file %s ([Errno 28] No space left on device): "
                "records may be lost until it can be written again" % log,
                "pyproxy_server: log file %s is written again" % log,
            ],
        )


@unittest.skipIf(os.name != "posix", "flock")
class LogNameTest(unittest.TestCase):
    """Servers running at once on one --path never share a rotating file."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="pyproxy-test-")
        self.addCleanup(shutil.rmtree, self.root)
        self.logs = os.path.join(self.root, "logs")
        os.makedirs(self.logs)

    def claim(self, name):
        claimed, fd = _claim_log_name(self.logs, name)
        if fd is not None:
            self.addCleanup(os.close, fd)
        return claimed, fd

    def test_a_held_name_gives_the_first_free_alternative_and_comes_back_when_released(self):
        first, fd = _claim_log_name(self.logs, "w1")
        self.assertEqual(first, "w1")
        self.assertEqual(self.claim("w1")[0], "w1-2")
        self.assertEqual(self.claim("w1")[0], "w1-3")
        self.assertEqual(self.claim("w2")[0], "w2")
        os.close(fd)
        # The system releases a claim with its descriptor (a killed server's too).
        again, fd2 = _claim_log_name(self.logs, "w1")
        self.assertEqual(again, "w1")
        os.close(fd2)

    def test_beyond_the_alternatives_the_name_gets_the_pid(self):
        from pyproxy_server import __main__ as main
        for _ in range(main._MAX_LOG_CLAIMS):
            self.claim("w1")
        self.assertEqual(self.claim("w1"), ("w1-%d" % os.getpid(), None))

    def test_a_file_system_without_locks_keeps_the_name_unclaimed(self):
        # NFSv3 without its lock daemon answers ENOLCK to every flock: that is
        # no other server holding the name, and a name per process (w1-<pid>)
        # would leave one more log file each start.
        import errno
        import fcntl
        from unittest import mock
        with mock.patch.object(fcntl, "flock", side_effect=OSError(errno.ENOLCK, "No locks available")):
            self.assertEqual(self.claim("w1"), ("w1", None))

    def test_two_servers_on_one_path_with_one_log_name_write_two_files(self):
        a = ServerProcess(root=self.root, args=["--log-name", "w1"])
        self.addCleanup(a.kill)
        b = ServerProcess(root=self.root, args=["--log-name", "w1"])
        self.addCleanup(b.kill)
        self.assert_logs_to("w1", a)
        self.assert_logs_to("w1-2", b)
        a.kill()
        # Its name is free again once it is gone.
        c = ServerProcess(root=self.root, args=["--log-name", "w1"])
        self.addCleanup(c.kill)
        self.assert_logs_to("w1", c)

    def test_two_servers_on_one_path_with_one_socket_file_name_write_two_files(self):
        # A pool on Unix sockets (the default on Linux and macOS) gives w1
        # <its own socket directory>/w1.sock and no --log-name: two pools on
        # one models directory have one socket file name in two directories.
        sockets = [tempfile.mkdtemp(prefix="pyproxy-test-sock-") for _ in range(2)]
        for d in sockets:
            self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        a = ServerProcess(root=self.root, args=["--unix", os.path.join(sockets[0], "w1.sock")])
        self.addCleanup(a.kill)
        b = ServerProcess(root=self.root, args=["--unix", os.path.join(sockets[1], "w1.sock")])
        self.addCleanup(b.kill)
        self.assert_logs_to("w1.sock", a)
        self.assert_logs_to("w1.sock-2", b)

    def assert_logs_to(self, name, server):
        """The file of ``name`` gets ``server``'s "listening" line (logged right after its ready line)."""
        expected = '"pid": %d' % server.ready["pid"]
        deadline = time.monotonic() + 10
        while True:
            with open(os.path.join(self.logs, "pythonserver%s.log" % name)) as f:
                text = f.read()
            if expected in text or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.assertIn(expected, text)


if __name__ == "__main__":
    unittest.main()


class UserErrorLogTest(unittest.TestCase):
    """A model's exception is in the server's log with its traceback (the
    gateway shows tracebacks to clients only with --debug), and is the
    model's error even when it looks like a wire error."""

    SOURCE = (
        "class ScoringError(Exception):\n"
        "    def __init__(self, message):\n"
        "        super().__init__(message)\n"
        "        self.type = 'value_error'\n"
        "        self.fields = {'loc': ['x']}\n"
        "\n"
        "class Model:\n"
        "    def execute(self, msg):\n"
        "        return self.score(msg)\n"
        "\n"
        "    def score(self, msg):\n"
        "        raise ScoringError('x must be positive')\n"
    )

    def test_the_traceback_is_logged_and_the_exception_is_a_python_error(self):
        server = ServerProcess(args=("--log-name", "w1"))
        try:
            c = server.connect()
            c.call("addModel", name="scorer", source=self.SOURCE)
            reply = c.request("executeModel", name="scorer", msg={"x": -1})
            error = reply["error"]
            self.assertEqual((error["type"], error["exception"]), ("PythonError", "ScoringError"), error)
            self.assertIn("x must be positive", error["message"])
            self.assertNotIn("loc", error)
            self.assertEqual(c.call("ping"), "pong")  # the log is written before the reply
            with open(os.path.join(server.root, "logs", "pythonserverw1.log"), encoding="utf-8") as f:
                text = f.read()
            self.assertIn("executeModel %d (model scorer) raised ScoringError: " % reply["id"], text)
            self.assertIn("x must be positive", text)
            self.assertIn("in score", text)  # the model's own frame
        finally:
            server.kill()


class LateOutputTest(unittest.TestCase):
    """A thread that a call started with its context and that outlives the
    call: its output goes to the server's log, not to the host as events
    (a loop printing 10 KB lines filled the connection: every later call of
    the worker timed out)."""

    # The thread prints once a later call says the first has ended (a timer
    # started in the call could fire before a loaded machine had answered it).
    SOURCE = (
        "import contextvars, threading\n"
        "ENDED = threading.Event()\n"
        "class Model:\n"
        "    def execute(self, msg):\n"
        "        if msg.get('release'):\n"
        "            ENDED.set()\n"
        "            return {'released': 1}\n"
        "        def later():\n"
        "            ENDED.wait(5)\n"
        "            print('after the call')\n"
        "            for _ in range(2000):\n"
        "                print('q' * 10000)\n"
        "        ctx = contextvars.copy_context()\n"
        "        threading.Thread(target=lambda: ctx.run(later), daemon=True).start()\n"
        "        print('during the call')\n"
        "        return {'ok': 1}\n"
    )

    def test_output_after_the_call_goes_to_the_log(self):
        server = ServerProcess(args=("--log-name", "w1"))
        try:
            c = server.connect()
            c.call("addModel", name="late", source=self.SOURCE)
            c.call("addModel", name="echo", source="class Echo:\n    def execute(self, msg):\n        return msg\n")
            self.assertEqual(c.call("executeModel", name="late", msg={}), {"ok": 1})
            self.assertEqual(c.call("executeModel", name="late", msg={"release": 1}), {"released": 1})
            log = os.path.join(server.root, "logs", "pythonserverw1.log")
            def logged():
                # 20 MB of output may rotate the log: its backups count.
                text = ""
                for name in glob.glob(log + "*"):
                    with open(name, encoding="utf-8") as f:
                        text += f.read()
                return text

            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if "after the call" in logged():
                    break
                time.sleep(0.02)
            for i in range(20):
                self.assertEqual(c.call("executeModel", name="echo", msg={"i": i}), {"i": i})
            during = [e for e in c.events if e.get("event") == "log" and e.get("message") == "during the call"]
            self.assertEqual(len(during), 1)
            late = [e for e in c.events if e.get("event") == "log" and e.get("message") != "during the call"]
            self.assertEqual(late, [])
            self.assertIn("after the call", logged())
        finally:
            server.kill()
