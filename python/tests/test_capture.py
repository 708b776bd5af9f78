import io
import logging
import sys
import threading
import time
import traceback
import unittest

from pyproxy_server import capture


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


class OutputRouterTest(unittest.TestCase):
    def setUp(self):
        self.logger = logging.getLogger("test.capture.%d" % id(self))
        self.logger.propagate = False
        self.handler = ListHandler()
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.out = capture.OutputRouter(1, self.logger)
        self.err = capture.OutputRouter(2, self.logger)

    def test_sink_gets_writes_of_its_thread_only(self):
        seen = []
        with capture.redirect(lambda fd, text: seen.append((fd, text))):
            self.out.write("a")
            self.err.write("b")
            t = threading.Thread(target=self.out.write, args=("other\n",))
            t.start()
            t.join()
        self.assertEqual(seen, [(1, "a"), (2, "b")])
        self.assertEqual([r.getMessage() for r in self.handler.records], ["<stdout>: other"])

    def test_closing_the_shared_stream_is_ignored(self):
        seen = []
        self.out.close()
        self.out.buffer.close()
        self.assertFalse(self.out.closed)
        self.assertFalse(self.out.buffer.closed)
        with capture.redirect(lambda fd, text: seen.append(text)):
            self.out.writelines(["a", "b"])
            print("c", file=self.out)
            self.out.buffer.write(b"d")
        self.assertEqual("".join(seen), "abc\nd")

    def test_nested_redirect_restores_previous(self):
        outer, inner = [], []
        with capture.redirect(lambda fd, t: outer.append(t)):
            with capture.redirect(lambda fd, t: inner.append(t)):
                self.out.write("1")
            self.out.write("2")
        self.assertEqual((outer, inner), (["2"], ["1"]))
        self.assertIsNone(capture.current_sink())

    def test_no_sink_logs_complete_lines(self):
        self.out.write("par")
        self.out.write("tial\nnext")
        self.err.write("warn\n")
        self.assertEqual(
            [(r.levelno, r.getMessage()) for r in self.handler.records],
            [(logging.INFO, "<stdout>: partial"), (logging.WARNING, "<stderr>: warn")],
        )

    def _records_when(self, count, timeout=5.0):
        """The records once there are ``count`` (the watch logs a held
        traceback on its own thread), or when ``timeout`` s passed."""
        deadline = time.monotonic() + timeout
        while len(self.handler.records) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return [(r.levelno, r.threadName, r.getMessage()) for r in self.handler.records]

    def test_a_traceback_a_thread_prints_is_one_error_record(self):
        def fail():
            raise ValueError("boom")

        def work():
            try:
                try:
                    fail()
                except ValueError as e:
                    raise RuntimeError("wrapped") from e
            except RuntimeError:
                traceback.print_exc(file=self.err)
            self.err.write("printed after it\n")
            try:
                fail()
            except ValueError:
                traceback.print_exc(file=self.err)  # nothing after it: the watch logs it

        t = threading.Thread(target=work, name="bg")
        before = time.time()
        t.start()
        t.join()
        after = time.time()
        records = self._records_when(3)
        # Of the time it was printed, not the watch's.
        self.assertTrue(before <= self.handler.records[2].created <= after)
        self.assertEqual([r[:2] for r in records], [(logging.ERROR, "bg"), (logging.WARNING, "bg"), (logging.ERROR, "bg")])
        self.assertRegex(
            records[0][2],
            r"\A<stderr>: Traceback \(most recent call last\):\n(  .*\n)+ValueError: boom\n\n"
            r"The above exception was the direct cause of the following exception:\n\n"
            r"Traceback \(most recent call last\):\n(  .*\n)+RuntimeError: wrapped\Z")
        self.assertEqual(records[1][2], "<stderr>: printed after it")
        self.assertRegex(records[2][2], r"\A<stderr>: Traceback [^\0]*ValueError: boom\Z")
        # On stdout, at stdout's level.
        self.handler.records.clear()
        self.out.write("Traceback (most recent call last):\n  File \"m.py\"\nKeyError: 1\nnext\n")
        self.assertEqual(self._records_when(2), [
            (logging.INFO, "MainThread", '<stdout>: Traceback (most recent call last):\n  File "m.py"\nKeyError: 1'),
            (logging.INFO, "MainThread", "<stdout>: next"),
        ])

    def test_a_traceback_that_never_ends_is_bounded_in_characters_and_time(self):
        self.err.MAX_TRACEBACK_CHARS = 60
        self.err.MAX_TRACEBACK_SECONDS = 0.2
        self.err.write("Traceback (most recent call last):\n")
        for i in range(4):
            self.err.write('  File "f%d.py", line 1\n' % i)  # 22 characters
        # Up to 60 characters a record, at once.
        self.assertEqual([r.getMessage() for r in self.handler.records], [
            '<stderr>: Traceback (most recent call last):\n  File "f0.py", line 1',
            '<stderr>:   File "f1.py", line 1\n  File "f2.py", line 1',
        ])
        # No exception's line: its rest is logged once its time is up.
        self.assertEqual(self._records_when(3)[2], (logging.ERROR, "MainThread", '<stderr>:   File "f3.py", line 1'))
        self.err.write("KeyError: late\n")
        self.assertEqual(self._records_when(4)[3], (logging.WARNING, "MainThread", "<stderr>: KeyError: late"))

    def test_threads_printing_tracebacks_at_once_hold_a_bounded_number(self):
        # Each thread's traceback was held, however many threads printed one
        # at once (up to 64 KiB each for up to 5 s): past the bound the
        # oldest is logged as it is so far; no traceback's text is lost.
        n = 3 * self.err.MAX_HELD_TRACEBACKS
        started = threading.Semaphore(0)
        end = threading.Event()

        def one(i):
            self.err.write("Traceback (most recent call last):\n")
            self.err.write('  File "t%d.py", line 1, in f\n' % i)
            started.release()
            end.wait(10)
            self.err.write("ValueError: %d\n" % i)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for _ in range(n):
            started.acquire()
        held = len(self.err._tracebacks)
        end.set()
        for t in threads:
            t.join()
        self.assertLessEqual(held, self.err.MAX_HELD_TRACEBACKS)
        self.err._flush_tracebacks(everything=True)
        text = "\n".join(r.getMessage() for r in self.handler.records)
        for i in range(n):
            self.assertIn('  File "t%d.py", line 1, in f' % i, text)
            self.assertIn("ValueError: %d" % i, text)
        starts = [r for r in self.handler.records if "Traceback (most recent call last):" in r.getMessage()]
        self.assertEqual(len(starts), n)

    def test_failing_sink_falls_back_to_log(self):
        def bad(fd, text):
            raise RuntimeError("x")

        with capture.redirect(bad):
            self.out.write("kept\n")
        self.assertIn("<stdout>: kept", [r.getMessage() for r in self.handler.records])

    def test_a_sink_with_writers_gets_print_without_routing(self):
        old = capture.install(self.logger)
        try:
            outer, inner = [], []

            def out_write(text):
                outer.append((1, text))
                return len(text)

            def err_write(text):
                outer.append((2, text))
                return len(text)

            with capture.redirect(lambda fd, text: self.fail("routed"), (out_write, err_write)):
                self.assertIs(sys.stdout.write, out_write)
                print("a")
                print("b", file=sys.stderr)
                # A sink without writers inside it gets its output routed again.
                with capture.redirect(lambda fd, text: inner.append((fd, text))):
                    print("c")
                    self.assertEqual(sys.stderr.write("d"), 1)
                print("e")
            print("logged")
        finally:
            capture.uninstall(old)
        self.assertEqual(outer, [(1, "a"), (1, "\n"), (2, "b"), (2, "\n"), (1, "e"), (1, "\n")])
        self.assertEqual(inner, [(1, "c"), (1, "\n"), (2, "d")])
        self.assertEqual([r.getMessage() for r in self.handler.records], ["<stdout>: logged"])

    def test_write_can_be_replaced_like_any_stream_method(self):
        seen = []
        self.out.write = lambda text: seen.append(text) or len(text)
        print("x", file=self.out)
        self.assertEqual(seen, ["x", "\n"])
        del self.out.write  # back to routing
        with capture.redirect(lambda fd, text: seen.append((fd, text))):
            self.out.write("y")
        self.assertEqual(seen[-1], (1, "y"))

    def test_stream_protocol(self):
        self.assertFalse(self.out.isatty())
        self.assertTrue(self.out.writable())
        with self.assertRaises(io.UnsupportedOperation):
            self.out.fileno()
        with self.assertRaises(TypeError):
            self.out.write(b"bytes")
        self.assertEqual(self.out.write("abc"), 3)

    def test_buffer_decodes_bytes_into_the_same_routed_output(self):
        seen = []
        with capture.redirect(lambda fd, text: seen.append((fd, text))):
            data = "caf\u00e9 \u4e2d\n".encode()
            for at in range(len(data)):  # a byte at a time: split characters are joined
                self.assertEqual(self.out.buffer.write(data[at : at + 1]), 1)
            self.assertEqual(self.err.buffer.write(b"bad \xff\n"), 6)
            self.out.buffer.flush()
        self.assertEqual("".join(t for fd, t in seen if fd == 1), "caf\u00e9 \u4e2d\n")
        self.assertEqual("".join(t for fd, t in seen if fd == 2), "bad \ufffd\n")
        self.assertIs(self.out.buffer, self.out.buffer)
        self.assertTrue(self.out.buffer.writable())
        with self.assertRaises(io.UnsupportedOperation):
            self.out.buffer.fileno()

    def test_buffer_writes_reach_an_eval_channels_writers(self):
        seen = []
        writers = (lambda text: seen.append((1, text)) or len(text), lambda text: seen.append((2, text)) or len(text))
        with capture.redirect(lambda fd, text: seen.append(("sink", text)), writers):
            sys.stdout, saved = self.out, sys.stdout
            try:
                sys.stdout.buffer.write(b"x\n")
            finally:
                sys.stdout = saved
        self.assertEqual(seen, [(1, "x\n")])

    def test_log_handler_writing_to_stdout_does_not_recurse(self):
        # A handler that prints to the routed stream would loop forever.
        router = self.out

        class Echo(logging.Handler):
            def emit(self, record):
                router.write("echo\n")

        self.logger.addHandler(Echo())
        real = io.StringIO()
        import sys

        old = sys.__stderr__
        sys.__stderr__ = real
        try:
            router.write("line\n")
        finally:
            sys.__stderr__ = old
        self.assertEqual(real.getvalue(), "echo\n")


if __name__ == "__main__":
    unittest.main()
