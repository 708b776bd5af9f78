"""A call's output as ``log`` events (``OutputSink``): a traceback the call
prints (``traceback.print_exc()``) is one event at ``"error"``."""

import unittest

from pyproxy_server.execution import OutputSink

from .test_server import ServerTestCase

TRACEBACKS = """
import sys, threading, time, traceback


def chained():
    try:
        try:
            {}["k"]
        except KeyError as exc:
            raise ValueError("bad input") from exc
    except ValueError:
        traceback.print_exc()


class Printer:
    threaded = True

    def execute(self, msg):
        op = msg.get("op")
        if op == "chained":
            print("before")
            sys.stderr.write("a warning\\n")
            chained()
            print("after")
        elif op == "then-wait":
            # Printed, then the call goes on: the traceback must not wait for its end.
            chained()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.01)
        elif op == "huge":
            try:
                raise ValueError("x" * msg["chars"])
            except ValueError:
                traceback.print_exc()
        elif op == "lines":
            for i in range(msg["n"]):
                print("line", i)
        elif op == "held-in-a-traceback":
            # A traceback's line that takes long to look at (a write of a
            # million lines does): held until "release".
            from pyproxy_server import traceback_lines
            continues = traceback_lines.continues
            def slow(state, line):
                if line == "  held":
                    HELD.set()
                    RELEASE.wait(10)
                return continues(state, line)
            traceback_lines.continues = slow
            try:
                sys.stderr.write("Traceback (most recent call last):\\n  held\\nValueError: x\\n")
            finally:
                traceback_lines.continues = continues
        elif op == "interleaved":
            # Another thread of the call prints while this one prints a traceback.
            import contextvars
            printed = threading.Event()
            def other():
                sys.stderr.write("progress 1\\n")
                printed.set()
            sys.stderr.write("Traceback (most recent call last):\\n")
            ctx = contextvars.copy_context()
            t = threading.Thread(target=ctx.run, args=(other,))
            t.start()
            printed.wait(10)
            t.join()
            sys.stderr.write('  File "m.py", line 1, in f\\nValueError: v\\n')
        elif op == "two-threads":
            # Two threads of the call print a traceback each at once.
            import contextvars
            printed = threading.Event()
            def other():
                sys.stderr.write("Traceback (most recent call last):\\n")
                sys.stderr.write('  File "b.py", line 2, in g\\n')
                printed.set()
                sys.stderr.write("KeyError: 'b'\\n")
            sys.stderr.write("Traceback (most recent call last):\\n")
            ctx = contextvars.copy_context()
            t = threading.Thread(target=ctx.run, args=(other,))
            t.start()
            printed.wait(10)
            sys.stderr.write('  File "a.py", line 1, in f\\n')
            t.join()
            sys.stderr.write("ValueError: a\\n")
        elif op == "many-threads":
            # Threads of the call printing a traceback each at once, none
            # ended yet: how many the call holds, at most.
            import contextvars
            from pyproxy_server import capture
            sink = capture.current_sink().__self__
            n = msg["n"]
            started = threading.Semaphore(0)
            end = threading.Event()
            def one(i):
                sys.stderr.write("Traceback (most recent call last):\\n")
                sys.stderr.write('  File "t%d.py", line 1, in f\\n' % i)
                started.release()
                end.wait(10)
                sys.stderr.write("ValueError: %d\\n" % i)
            threads = [threading.Thread(target=contextvars.copy_context().run, args=(one, i)) for i in range(n)]
            for t in threads:
                t.start()
            for _ in range(n):
                started.acquire()
            HELD_AT_ONCE.append(len(sink._tbs))
            end.set()
            for t in threads:
                t.join()
        elif op == "held-at-once":
            return HELD_AT_ONCE[-1]
        elif op == "stdout":
            print("before")
            try:
                {}["k"]
            except KeyError:
                traceback.print_exc(file=sys.stdout)
            print("after")
        elif op == "wait-held":
            return HELD.wait(10)
        elif op == "release":
            RELEASE.set()
        return 1


HELD = threading.Event()
HELD_AT_ONCE = []
RELEASE = threading.Event()


class InlinePrinter(Printer):
    threaded = False
    inline = True
"""


class CallTracebackTest(ServerTestCase):
    shared = True

    def events(self, c, rid, model="p", **msg):
        c.events.clear()
        reply = c.request("executeModel", rid=rid, name=model, msg=msg)
        self.assertEqual(reply.get("result"), 1, reply)
        return [e for e in c.events if e.get("event") == "log" and e.get("request") == rid]

    def setUp(self):
        super().setUp()
        self.c = self.connect()
        self.c.call("addModel", name="p", source=TRACEBACKS, **{"class": "Printer"})
        self.c.call("addModel", name="i", source=TRACEBACKS, **{"class": "InlinePrinter"})

    def assertOneTraceback(self, events):
        self.assertEqual([(e["stream"], e["level"]) for e in events], [
            ("stdout", "info"), ("stderr", "warning"), ("stderr", "error"), ("stdout", "info"),
        ], events)
        self.assertEqual((events[0]["message"], events[1]["message"], events[3]["message"]), ("before", "a warning", "after"))
        text = events[2]["message"]
        self.assertTrue(text.startswith("Traceback (most recent call last):\n"), text)
        self.assertIn("KeyError: 'k'\n\nThe above exception was the direct cause of the following exception:\n\n"
                      "Traceback (most recent call last):\n", text)
        self.assertTrue(text.endswith("ValueError: bad input"), text)
        self.assertEqual(events[2]["model"], events[0]["model"])

    def test_a_printed_chained_traceback_is_one_error_event_in_its_place(self):
        # Before: 9 warning events, one per write of print_exc.
        self.assertOneTraceback(self.events(self.c, 11, op="chained"))

    def test_an_inline_calls_too(self):
        self.assertOneTraceback(self.events(self.c, 12, model="i", op="chained"))

    def test_it_carries_the_calls_request_id(self):
        c = self.c
        c.events.clear()
        reply = c.request("executeModel", rid=13, name="p", msg={"op": "chained"}, requestId="req-13")
        self.assertTrue(reply["ok"], reply)
        errors = [e for e in c.events if e.get("level") == "error"]
        self.assertEqual([(e["request"], e.get("requestId")) for e in errors], [(13, "req-13")])

    def test_it_is_sent_while_the_call_goes_on(self):
        # Held until its end only: the loop's timer sends it, before the reply.
        c = self.c
        c.send({"id": 14, "cmd": "executeModel", "name": "p", "msg": {"op": "then-wait"}})
        event = c.recv(timeout=5)
        self.assertEqual((event.get("event"), event.get("level"), event.get("request")), ("log", "error", 14), event)
        self.assertIn("ValueError: bad input", event["message"])
        self.assertEqual(c.call("cancel", target=14), {"cancelled": True})
        self.assertError(c.reply_for(14, timeout=5), "CancelledError")

    def test_a_huge_one_goes_on_in_the_next_event(self):
        chars = 100_000
        events = self.events(self.c, 15, op="huge", chars=chars)
        self.assertEqual([e["level"] for e in events], ["error", "error"], [len(e["message"]) for e in events])
        self.assertLessEqual(len(events[0]["message"]), 65536)
        self.assertTrue(events[1]["message"].startswith("ValueError: xxx"))

    def test_other_output_is_unchanged(self):
        events = self.events(self.c, 16, op="lines", n=3)
        self.assertEqual([(e["stream"], e["level"], e["message"]) for e in events],
                         [("stdout", "info", "line %d" % i) for i in range(3)])

    def test_a_traceback_being_looked_at_holds_no_other_calls_reply(self):
        # Its lines were looked at under the connection's state_lock, which
        # every call's end takes: another call's reply (and the loop, whose
        # timer waited for the lock) waited for the whole write (chaos53).
        c = self.c
        c.send({"id": 17, "cmd": "executeModel", "name": "p", "msg": {"op": "held-in-a-traceback"}})
        try:
            self.assertIs(c.request("executeModel", rid=18, name="p", msg={"op": "wait-held"}).get("result"), True)
            reply = c.request("executeModel", rid=19, name="p", msg={"op": "other"}, timeout=5)
            self.assertEqual(reply.get("result"), 1, reply)
        finally:
            c.send({"id": 20, "cmd": "executeModel", "name": "p", "msg": {"op": "release"}})
            self.assertEqual(c.reply_for(20, timeout=15).get("result"), 1)
        reply = c.reply_for(17, timeout=5)
        self.assertEqual(reply.get("result"), 1, reply)
        errors = [e for e in c.events if e.get("request") == 17 and e.get("level") == "error"]
        self.assertEqual([e["message"] for e in errors], ["Traceback (most recent call last):\n  held\nValueError: x"])

    def test_another_threads_lines_are_not_the_tracebacks(self):
        # One traceback was held per call, whatever thread printed: a line of
        # another thread of the call became its exception's line, at error,
        # and the traceback's real end its notes (chaos53).
        events = self.events(self.c, 21, op="interleaved")
        self.assertEqual([(e["level"], e["message"]) for e in events], [
            ("warning", "progress 1"),
            ("error", 'Traceback (most recent call last):\n  File "m.py", line 1, in f\nValueError: v'),
        ], events)

    def test_two_threads_tracebacks_are_one_event_each(self):
        # One traceback was held per call: the second thread's lines went
        # as they were written, a warning each, none an error.
        events = self.events(self.c, 22, op="two-threads")
        self.assertEqual(sorted((e["stream"], e["level"], e["message"]) for e in events), [
            ("stderr", "error", 'Traceback (most recent call last):\n  File "a.py", line 1, in f\nValueError: a'),
            ("stderr", "error", 'Traceback (most recent call last):\n  File "b.py", line 2, in g\nKeyError: \'b\''),
        ], events)

    def test_a_call_holds_a_bounded_number_of_tracebacks(self):
        # Each thread's traceback was held, however many threads printed
        # one at once: 1000 threads held 1000 (up to 64 KiB each, for up to
        # 5 s, with a timer each every 50 ms). Past the bound the oldest goes
        # as it is so far; no traceback's text is lost.
        n = 3 * OutputSink.MAX_HELD_TRACEBACKS
        events = self.events(self.c, 25, op="many-threads", n=n)
        held = self.c.request("executeModel", rid=26, name="p", msg={"op": "held-at-once"}).get("result")
        self.assertLessEqual(held, OutputSink.MAX_HELD_TRACEBACKS)
        text = "\n".join(e["message"] for e in events)
        for i in range(n):
            self.assertIn('  File "t%d.py", line 1, in f' % i, text)
            self.assertIn("ValueError: %d" % i, text)
        starts = [e for e in events if e["message"].startswith("Traceback (most recent call last):")]
        self.assertEqual(len(starts), n, events)

    def test_a_traceback_printed_to_stdout_is_one_event_in_its_place(self):
        # Only stderr's were held: print_exc(file=sys.stdout) was an event per write.
        events = self.events(self.c, 23, op="stdout")
        self.assertEqual([(e["stream"], e["level"]) for e in events], [("stdout", "info")] * 3, events)
        self.assertEqual((events[0]["message"], events[2]["message"]), ("before", "after"))
        self.assertTrue(events[1]["message"].startswith("Traceback (most recent call last):\n"), events[1])
        self.assertTrue(events[1]["message"].endswith("KeyError: 'k'"), events[1])

    def test_an_inline_calls_stdout_traceback_too(self):
        events = self.events(self.c, 24, model="i", op="stdout")
        self.assertEqual([(e["stream"], e["level"]) for e in events], [("stdout", "info")] * 3, events)


if __name__ == "__main__":
    unittest.main()
