import io
import logging
import sys
import threading
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
