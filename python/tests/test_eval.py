"""Tests for the pieces of pyproxy_server.eval that need no server."""

import contextlib
import dis
import gc
import os
import random
import sys
import threading
import time
import unittest
from unittest import mock

from pyproxy_server import big_json, capture
from pyproxy_server import eval as eval_module
from tests._client import ServerProcess
from pyproxy_server.errors import (
    CancelledError,
    InvalidRequestError,
    OverloadedError,
    PythonError,
    SerializationError,
    SessionLostError,
)
from pyproxy_server.eval import CodeCache, EvalService, Flusher, OutputChannel, evaluate, new_namespace


class EvaluateTest(unittest.TestCase):
    def test_final_expression_is_the_value(self):
        self.assertEqual(evaluate("x = 2\nx * 21", new_namespace()), 42)

    def test_statements_only_give_none(self):
        ns = new_namespace()
        self.assertIsNone(evaluate("x = 1\ny = x + 1", ns))
        self.assertEqual(ns["y"], 2)

    def test_namespace_persists_between_calls(self):
        ns = new_namespace()
        evaluate("x = 1", ns)
        self.assertEqual(evaluate("x + 1", ns), 2)

    def test_fresh_namespace_does_not_see_other_names(self):
        evaluate("x = 1", new_namespace())
        with self.assertRaises(NameError):
            evaluate("x", new_namespace())

    def test_functions_see_names_defined_in_the_same_code(self):
        code = "def f():\n    return helper() + 1\ndef helper():\n    return 1\nf()"
        self.assertEqual(evaluate(code, new_namespace()), 2)

    def test_single_function_called_with_positional_args(self):
        self.assertEqual(evaluate("def add(a, b):\n    return a + b", new_namespace(), [2, 3]), 5)

    def test_single_function_called_with_keyword_args(self):
        self.assertEqual(evaluate("def sub(a, b):\n    return a - b", new_namespace(), {"a": 5, "b": 2}), 3)

    def test_final_callable_called_with_args(self):
        self.assertEqual(evaluate("lambda x: x * 2", new_namespace(), [4]), 8)

    def test_args_without_a_function_is_a_type_error(self):
        with self.assertRaises(TypeError):
            evaluate("x = 1", new_namespace(), [1])

    def test_syntax_error_is_raised(self):
        with self.assertRaises(SyntaxError):
            evaluate("def (", new_namespace())

    def test_name_is_main(self):
        self.assertEqual(evaluate("__name__", new_namespace()), "__main__")

    def test_top_level_await_as_in_a_notebook_cell(self):
        # Was a SyntaxError ("'await' outside function"): a notebook's cell
        # awaits at its top level.
        ns = new_namespace()
        self.assertIsNone(evaluate("import asyncio\nawait asyncio.sleep(0)\nx = 5", ns))
        self.assertEqual(ns["x"], 5)
        self.assertEqual(evaluate("await asyncio.sleep(0, result=x * 2)", ns), 10)
        code = "async def gen():\n    yield 1\n    yield 2\ntotal = 0\nasync for i in gen():\n    total += i\ntotal"
        self.assertEqual(evaluate(code, ns), 3)

    def test_top_level_await_runs_the_whole_eval_on_one_loop_then_closes_it(self):
        # What the statements made on the loop (a client, a task) still works
        # in the final expression; a task left running is cancelled at the
        # end, as asyncio.run does.
        ns = new_namespace()
        code = (
            "import asyncio\n"
            "loop = asyncio.get_running_loop()\n"
            "async def forever():\n"
            "    try:\n"
            "        await asyncio.sleep(3600)\n"
            "    except asyncio.CancelledError:\n"
            "        ended.append('cancelled')\n"
            "        raise\n"
            "ended = []\n"
            "left = asyncio.ensure_future(forever())\n"
            "await asyncio.sleep(0)\n"
            "(await asyncio.sleep(0, result=asyncio.get_running_loop())) is loop"
        )
        self.assertIs(evaluate(code, ns), True)
        self.assertEqual(ns["ended"], ["cancelled"])
        self.assertTrue(ns["loop"].is_closed())

    def test_top_level_await_in_the_last_expression_alone_runs_the_statements_on_the_loop(self):
        # A cell whose only await is its last expression: its statements ran
        # before the loop did ("RuntimeError: no running event loop" from
        # the notebook's `task = asyncio.create_task(fetch())` then
        # `await task`); and a last expression without await after statements
        # that await ran after it stopped.
        ns = new_namespace()
        code = "import asyncio\nasync def seven():\n    return 7\ntask = asyncio.create_task(seven())\nawait task"
        self.assertEqual(evaluate(code, ns), 7)
        code = "await asyncio.sleep(0)\nasyncio.get_running_loop().is_running()"
        self.assertIs(evaluate(code, ns), True)

    def test_top_level_await_with_args(self):
        code = "import asyncio\nawait asyncio.sleep(0)\nasync def add(a, b):\n    return a + b"
        self.assertEqual(evaluate(code, new_namespace(), [2, 3]), 5)

    def test_await_of_a_non_awaitable_is_the_codes_type_error(self):
        with self.assertRaises(TypeError):
            evaluate("await 1", new_namespace())


class RecordingSend:
    def __init__(self):
        self.chunks = []
        self.lock = threading.Lock()

    def __call__(self, fd, data, seq):
        with self.lock:
            self.chunks.append((fd, data, seq))


def _four_char_chunks():
    """A channel sending chunks of at most 4 characters, and what it sent."""
    send = RecordingSend()
    channel = OutputChannel(send)
    channel.chunk_chars = 4
    return send, channel


class CodeCacheTest(unittest.TestCase):
    def test_same_code_compiles_once_and_runs_in_separate_namespaces(self):
        cache = CodeCache()
        code = "def f(x):\n    return x * k\nf"
        first, second = new_namespace(), new_namespace()
        first["k"], second["k"] = 2, 3
        self.assertEqual(evaluate(code, first, [5], cache=cache), 10)
        self.assertEqual(evaluate(code, second, {"x": 5}, cache=cache), 15)
        self.assertEqual(evaluate("1 + 1", new_namespace(), cache=cache), 2)
        info = cache.info()
        self.assertEqual((info.hits, info.misses, info.currsize), (1, 2, 2))
        self.assertIsNot(first["f"], second["f"])

    def test_errors_and_long_sources_are_not_kept(self):
        cache = CodeCache(maxsize=2, max_chars=20)
        for _ in range(2):
            with self.assertRaises(SyntaxError):
                evaluate("1 +", new_namespace(), cache=cache)
        long_code = "x = 1\n" * 10 + "x"
        self.assertEqual(evaluate(long_code, new_namespace(), cache=cache), 1)
        self.assertEqual(cache.info().currsize, 0)
        for code in ("1", "2", "3"):
            evaluate(code, new_namespace(), cache=cache)
        self.assertEqual(cache.info().currsize, 2)  # least recently used out

    def test_the_service_compiles_through_its_cache(self):
        server = FakeServer()
        service = EvalService(server)
        service.install()
        old = capture.install()
        try:
            handler, _ = server.handlers["eval"]
            for x in (1, 2):
                call = FakeCall(FakeConnection(server), x, {"cmd": "eval", "code": "x * 2", "locals": {"x": x}})
                self.assertEqual(handler(call)["value"], x * 2)
        finally:
            capture.uninstall(old)
        self.assertEqual(service.code_cache.info().hits, 1)


class OutputChannelTest(unittest.TestCase):
    def test_coalesces_writes_of_one_fd(self):
        send = RecordingSend()
        channel = OutputChannel(send)
        channel.write(1, "a")
        channel.write(1, "b")
        channel.write(2, "c")
        channel.flush()
        self.assertEqual(send.chunks, [(1, "ab", 0), (2, "c", 1)])
        self.assertEqual(channel.chunks, 2)

    def test_splits_big_writes_into_bounded_chunks(self):
        send, channel = _four_char_chunks()
        channel.write(1, "abcdefghij")
        channel.flush()
        self.assertEqual([d for _, d, _ in send.chunks], ["abcd", "efgh", "ij"])
        self.assertEqual([s for _, _, s in send.chunks], [0, 1, 2])

    def test_a_write_that_fills_a_chunk_sends_whole_chunks_and_keeps_the_tail(self):
        send, channel = _four_char_chunks()
        channel.write(1, "abc")
        channel.write(1, "defgh")
        channel.write(1, "ij")
        self.assertEqual([d for _, d, _ in send.chunks], ["abcd", "efgh"])
        channel.write(1, "klm")
        # "m" waits for more output instead of going out as a chunk of its own.
        self.assertEqual([d for _, d, _ in send.chunks], ["abcd", "efgh", "ijkl"])
        channel.flush()
        self.assertEqual([d for _, d, _ in send.chunks], ["abcd", "efgh", "ijkl", "m"])
        self.assertEqual([s for _, _, s in send.chunks], [0, 1, 2, 3])

    def test_earlier_runs_of_another_fd_go_out_whole_before_the_tail_waits(self):
        send, channel = _four_char_chunks()
        channel.write(1, "abc")
        channel.write(2, "de")
        self.assertEqual(send.chunks, [(1, "abc", 0)])
        channel.write(2, "fgh")
        self.assertEqual(send.chunks, [(1, "abc", 0), (2, "defg", 1)])
        channel.flush()
        self.assertEqual(send.chunks, [(1, "abc", 0), (2, "defg", 1), (2, "h", 2)])

    def test_writer_blocks_without_credit_until_acked(self):
        send = RecordingSend()
        channel = OutputChannel(send)
        channel.chunk_chars = 4
        channel.window = 8
        done = threading.Event()

        def writer():
            channel.write(1, "x" * 16)
            channel.flush()
            done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            deadline = time.monotonic() + 5
            while len(send.chunks) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            self.assertFalse(done.wait(0.1))
            self.assertEqual(len(send.chunks), 2)  # the window: 8 characters
            channel.ack(1)
            self.assertTrue(done.wait(5))
            self.assertEqual(len(send.chunks), 4)
        finally:
            channel.close()
            thread.join(5)

    def test_an_ack_past_the_last_chunk_sent_credits_only_what_was_sent(self):
        send = RecordingSend()
        channel = OutputChannel(send)
        channel.chunk_chars = 4
        channel.window = 8
        channel.write(1, "x" * 8)
        self.assertEqual(len(send.chunks), 2)
        # A huge seq: at once (it was counted up to one by one, on the
        # server's loop), and it gives no credit for chunks not sent yet.
        started = time.monotonic()
        channel.ack(1 << 62)
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual(channel._acked, 1)
        channel.write(1, "y" * 8)
        self.assertEqual(len(send.chunks), 4)
        done = threading.Event()
        thread = threading.Thread(target=lambda: (channel.write(1, "z" * 4), done.set()))
        thread.start()
        try:
            # The window is full again: the ack above did not cover chunks 2 and 3.
            self.assertFalse(done.wait(0.1))
            channel.ack(3)
            self.assertTrue(done.wait(5))
        finally:
            channel.close()
            thread.join(5)

    def test_close_releases_a_blocked_writer(self):
        channel = OutputChannel(RecordingSend())
        channel.chunk_chars = 4
        channel.window = 4
        thread = threading.Thread(target=lambda: channel.write(1, "y" * 40))
        thread.start()
        channel.close()
        thread.join(5)
        self.assertFalse(thread.is_alive())

    def test_cancelled_writer_drops_output_instead_of_blocking(self):
        send = RecordingSend()
        channel = OutputChannel(send, cancelled=lambda: True)
        channel.chunk_chars = 4
        channel.window = 4
        channel.write(1, "z" * 40)
        self.assertEqual(len(send.chunks), 1)

    def test_flusher_sends_a_partial_chunk(self):
        send = RecordingSend()
        flusher = Flusher()
        flusher.start()
        channel = OutputChannel(send, flusher)
        channel.write(1, "partial")
        deadline = time.monotonic() + 5
        while not send.chunks and time.monotonic() < deadline:
            time.sleep(0.002)
        self.assertEqual(send.chunks, [(1, "partial", 0)])


class ManualFlusher:
    """A flusher that only records schedules: the test fires ``flush_due``."""

    def __init__(self):
        self.scheduled = 0

    def schedule(self, channel, delay):
        self.scheduled += 1


def _merged(pairs):
    """``[(fd, text)]`` with empty texts dropped and runs of one fd joined."""
    out = []
    for fd, text in pairs:
        if not text:
            continue
        if out and out[-1][0] == fd:
            out[-1] = (fd, out[-1][1] + text)
        else:
            out.append((fd, text))
    return out


class OutputChannelBatchingTest(unittest.TestCase):
    """Writes queue without the lock and are staged every ``stage_items``
    writes (``OutputChannel`` docstring); these check that nothing is lost,
    reordered, left unscheduled or held beyond the bounds."""

    def test_random_writes_arrive_whole_in_order_within_the_bounds(self):
        rng = random.Random(7)
        for _ in range(200):
            send = RecordingSend()
            flusher = ManualFlusher()
            channel = OutputChannel(send, flusher)
            channel.chunk_chars = rng.randint(1, 40)
            channel.stage_items = rng.randint(1, 12)
            channel.stage_chars = rng.randint(1, 30)
            written = []
            for _ in range(rng.randint(0, 120)):
                fd = rng.choice((1, 1, 1, 2))
                text = "".join(rng.choice("ab\n\u00e9") for _ in range(rng.choice((0, 1, 3, 9, 45))))
                how = rng.random()
                if how < 0.1:
                    channel.write(fd, text)
                elif fd == 1:
                    self.assertEqual(channel.write_stdout(text), len(text))
                else:
                    self.assertEqual(channel.write_stderr(text), len(text))
                written.append((fd, text))
                pending = channel._queue or channel._staged
                # Nothing waits unscheduled: the flusher is due for what is pending.
                self.assertTrue(not pending or channel._scheduled)
                self.assertLessEqual(len(channel._queue), channel.stage_items)
                self.assertLess(channel._staged_chars, channel.chunk_chars)
                if rng.random() < 0.15:
                    channel.flush_due()  # the flusher fires
            channel.flush()
            self.assertEqual(_merged((fd, data) for fd, data, _ in send.chunks), _merged(written))
            self.assertEqual([seq for _, _, seq in send.chunks], list(range(len(send.chunks))))
            self.assertTrue(all(0 < len(data) <= channel.chunk_chars for _, data, _ in send.chunks))

    def test_a_write_after_the_flusher_fired_is_flushed_too(self):
        send = RecordingSend()
        flusher = Flusher()
        flusher.start()
        channel = OutputChannel(send, flusher)
        for expected in (["first"], ["first", "second"]):
            channel.write_stdout(expected[-1])
            deadline = time.monotonic() + 5
            while len(send.chunks) < len(expected) and time.monotonic() < deadline:
                time.sleep(0.002)
            self.assertEqual([data for _, data, _ in send.chunks], expected)

    def test_writers_on_several_threads_keep_their_order_within_the_window(self):
        sent = []
        peaks = {"unacked": 0, "queued": 0}

        def send(fd, data, seq):
            sent.append(data)
            peaks["unacked"] = max(peaks["unacked"], channel._unacked)
            peaks["queued"] = max(peaks["queued"], len(channel._queue))

        flusher = Flusher()
        flusher.start()
        channel = OutputChannel(send, flusher)
        channel.chunk_chars = 256
        channel.window = 1024
        channel.stage_items = 16
        writers = 4
        lines = 2000

        def writer(n):
            for i in range(lines):
                channel.write_stdout("%d:%d\n" % (n, i))

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()
        try:
            acked = -1
            deadline = time.monotonic() + 20
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
                if channel.chunks - 1 > acked:  # the host reads what arrived
                    acked = channel.chunks - 1
                    channel.ack(acked)
                time.sleep(0.001)
        finally:
            if any(t.is_alive() for t in threads):
                channel.close()
            else:
                # flush() waits for credit: the host goes on reading (acking)
                # until it is done, or it waited forever when the writers
                # ended with the window full (it hung once under load).
                flushed = threading.Event()
                last = threading.Thread(target=lambda: (channel.flush(), flushed.set()))
                last.start()
                while not flushed.is_set() and time.monotonic() < deadline:
                    channel.ack(channel.chunks - 1)
                    time.sleep(0.001)
                if not flushed.is_set():
                    channel.close()
                last.join(5)
            for thread in threads:
                thread.join(5)
        got = "".join(sent).split("\n")[:-1]
        self.assertEqual(len(got), writers * lines)
        for n in range(writers):
            mine = [line for line in got if line.startswith("%d:" % n)]
            self.assertEqual(mine, ["%d:%d" % (n, i) for i in range(lines)])
        self.assertLessEqual(peaks["unacked"], channel.window)
        self.assertLessEqual(peaks["queued"], channel.stage_items + writers)

    def test_text_kept_for_credit_goes_out_before_later_text(self):
        send = RecordingSend()
        channel = OutputChannel(send, ManualFlusher())
        channel.chunk_chars = 4
        channel.window = 8
        channel.write_stdout("abcdefghij")
        channel.write_stderr("XY")
        channel.flush_due()  # credit for two chunks: "ij" is kept, in front of "XY"
        self.assertEqual([data for _, data, _ in send.chunks], ["abcd", "efgh"])
        channel.ack(1)
        self.assertEqual(send.chunks[2:], [(1, "ij", 2), (2, "XY", 3)])

    def test_a_long_write_sends_its_whole_chunks_at_once(self):
        send = RecordingSend()
        channel = OutputChannel(send, ManualFlusher())
        channel.chunk_chars = 4
        channel.write_stdout("short")  # the flusher is due for it
        channel.write_stdout("x" * (channel.stage_chars + 7))
        sent = "".join(data for _, data, _ in send.chunks)
        self.assertEqual(len(sent), (len("short") + channel.stage_chars + 7) // 4 * 4)

    def test_writers_refuse_what_is_not_text(self):
        channel = OutputChannel(RecordingSend())
        with self.assertRaises(TypeError):
            channel.write_stdout(b"bytes")
        with self.assertRaises(TypeError):
            channel.write_stderr(None)

        class Sub(str):
            pass

        self.assertEqual(channel.write_stdout(Sub("sub")), 3)
        channel.flush()
        self.assertEqual(channel._staged, [])

    def test_str_subclasses_given_to_write_stay_whole_next_to_stderr(self):
        class Sub(str):
            pass

        send = RecordingSend()
        channel = OutputChannel(send)
        channel.stage_items = 8
        channel._limit = 8  # stage them together
        channel.write(1, Sub("ab"))
        channel.write(2, "e")
        channel.write(1, "c")
        channel.flush()
        self.assertEqual(send.chunks, [(1, "ab", 0), (2, "e", 1), (1, "c", 2)])


class FakeServer:
    id = "w9"

    def __init__(self):
        self.handlers = {}

    def register(self, cmd, handler, threaded=False, elastic=False):
        self.handlers[cmd] = (handler, threaded)


class FakeConnection:
    def __init__(self, server):
        self.server = server
        self.closers = []

    def on_close(self, callback):
        self.closers.append(callback)

    def close(self):
        for callback in self.closers:
            callback()


class FakeCall:
    def __init__(self, connection, rid, msg):
        self.id = rid
        self.msg = msg
        self.connection = connection
        self.server = connection.server
        self.cancelled = threading.Event()
        self.is_cancelled = self.cancelled.is_set
        # Set by CallRunner.cancel before it injects KeyboardInterrupt.
        self.interrupted = False
        # As a Call's: CallRunner.defer_interrupt shields only the thread
        # running the call (none here unless a test says so).
        self.lock = threading.Lock()
        self.shielded = False
        self.thread_ident = None
        self.events = []

    def send_event(self, event):
        event = dict(event)
        event["id"] = self.id
        self.events.append(event)


class EvalServiceTest(unittest.TestCase):
    def setUp(self):
        self.server = FakeServer()
        self.service = EvalService(self.server)
        self.service.install()
        self.connection = FakeConnection(self.server)
        self.ids = iter(range(1, 1000))
        self._old = capture.install()

    def tearDown(self):
        capture.uninstall(self._old)

    def call(self, cmd, **msg):
        call = FakeCall(self.connection, next(self.ids), dict(msg, cmd=cmd))
        handler, _ = self.server.handlers[cmd]
        return handler(call), call

    def test_registers_the_commands(self):
        self.assertEqual(
            {cmd: threaded for cmd, (_, threaded) in self.server.handlers.items()},
            {"eval": True, "openSession": False, "closeSession": False, "outputAck": False},
        )

    def test_eval_streams_output_then_returns_the_value(self):
        result, call = self.call("eval", code="import sys\nprint('hi')\nprint('oops', file=sys.stderr)\n6 * 7")
        self.assertEqual(result, {"value": 42, "chunks": 2})
        start, out, err = call.events
        self.assertEqual(start["event"], "evalStart")
        self.assertEqual(start["serverId"], "w9")
        self.assertTrue(start["session"].startswith("t-"))
        self.assertEqual((out["fd"], out["data"], out["seq"]), (1, "hi\n", 0))
        self.assertEqual((err["fd"], err["data"], err["seq"]), (2, "oops\n", 1))

    def test_one_off_namespaces_get_distinct_ids(self):
        ids = set()
        for _ in range(3):
            _, call = self.call("eval", code="1")
            ids.add(call.events[0]["session"])
        self.assertEqual(len(ids), 3)
        self.assertTrue(all(sid.startswith("t-") for sid in ids))

    def test_session_namespace_persists_and_closes(self):
        opened, _ = self.call("openSession")
        sid = opened["session"]
        self.call("eval", code="x = 1", session=sid)
        self.assertEqual(self.call("eval", code="x + 1", session=sid)[0]["value"], 2)
        with self.assertRaises(PythonError):
            self.call("eval", code="x")
        self.assertEqual(self.call("closeSession", session=sid)[0], {"session": sid, "closed": True})
        with self.assertRaises(SessionLostError):
            self.call("eval", code="1", session=sid)

    def test_a_connection_holds_at_most_max_sessions(self):
        self.service.max_sessions = 2
        first = self.call("openSession")[0]["session"]
        self.call("openSession")
        with self.assertRaises(OverloadedError) as caught:
            self.call("openSession")
        self.assertIn("--max-eval-sessions", str(caught.exception))
        self.assertEqual(self.service.session_count(), 2)
        # Another connection has its own bound.
        mine = self.connection
        self.connection = FakeConnection(self.server)
        self.call("openSession")
        self.assertEqual(self.service.session_count(), 3)
        # Closing one makes room again.
        self.connection = mine
        self.call("closeSession", session=first)
        self.call("openSession")
        with self.assertRaises(OverloadedError):
            self.call("openSession")
        self.assertEqual(self.service.session_count(), 3)

    def test_max_sessions_comes_from_the_server(self):
        self.server.max_eval_sessions = 0
        service = EvalService(self.server)
        self.assertEqual(service.max_sessions, 0)
        self.assertEqual(EvalService(FakeServer()).max_sessions, EvalService.MAX_SESSIONS)

    def test_namespaces_die_with_the_connection(self):
        sid = self.call("openSession")[0]["session"]
        self.connection.close()
        self.connection = FakeConnection(self.server)
        with self.assertRaises(SessionLostError):
            self.call("eval", code="1", session=sid)

    def test_locals_are_for_one_eval_and_globals_persist(self):
        sid = self.call("openSession")[0]["session"]
        result, _ = self.call("eval", code="a + b", session=sid, locals={"a": 1}, globals={"b": 2})
        self.assertEqual(result["value"], 3)
        self.assertEqual(self.call("eval", code="b", session=sid)[0]["value"], 2)
        with self.assertRaises(PythonError):
            self.call("eval", code="a", session=sid)

    def test_a_local_the_code_rebinds_stays_even_to_an_equal_object(self):
        sid = self.call("openSession")[0]["session"]
        for code in ("w = 3", "w = 3\nclass A:\n    pass", "def f():\n    global w\n    w = 3\nf()", "(w := 3)"):
            self.call("eval", code=code, session=sid, locals={"w": 3})
            self.assertEqual(self.call("eval", code="w", session=sid)[0]["value"], 3, code)
            self.call("eval", code="del w", session=sid)
        # Not rebound (a class body's own w is the class's): removed.
        for code in ("w + 1", "class A:\n    w = 3", "def f():\n    w = 3"):
            self.call("eval", code=code, session=sid, locals={"w": 3})
            with self.assertRaises(PythonError):
                self.call("eval", code="w", session=sid)

    def test_a_thread_printing_after_the_eval_returned_is_never_blocked(self):
        code = (
            "import contextvars, threading\n"
            "go = threading.Event()\n"
            "def late():\n"
            "    go.wait(5)\n"
            "    for _ in range(40):\n"
            "        print('x' * 100_000)\n"
            "t = threading.Thread(target=contextvars.copy_context().run, args=(late,), daemon=True)\n"
            "t.start()\n"
            "(go, t)"
        )
        sid = self.call("openSession")[0]["session"]
        self.call("eval", code=code.replace("(go, t)", "None"), session=sid)
        namespace = self.service._sessions_of(self.connection)[sid]
        go, thread = namespace["go"], namespace["t"]
        go.set()  # the eval has returned: nobody acks this output any more
        thread.join(5)
        self.assertFalse(thread.is_alive(), "the late printer is blocked for credit")

    def test_a_finalizer_printing_mid_send_is_sent_after_and_the_eval_goes_on(self):
        # The garbage collector runs finalizers at any allocation, also while
        # the channel sends on the eval's thread: one printing to stderr then
        # re-entered the channel, which waited for its own send for ever.
        code = (
            "import sys\n"
            "class Noisy:\n"
            "    def __del__(self):\n"
            "        print('finalized', file=sys.stderr)\n"
            "        sys.stderr.flush()\n"
            "a = Noisy()\n"
            "a.cycle = a\n"
            "del a\n"  # garbage now, collected by the first send
            "print('x' * 70_000)\n"
            "7"
        )

        class CollectingOnSend(FakeCall):
            def send_event(self, event):
                super().send_event(event)
                if event["event"] == "output":
                    gc.collect()  # as at an allocation of the send

        call = CollectingOnSend(self.connection, 700, {"cmd": "eval", "code": code})
        handler, _ = self.server.handlers["eval"]
        out = {}
        thread = threading.Thread(target=lambda: out.setdefault("result", handler(call)), daemon=True)
        with _no_gc():  # no collection but the send's
            thread.start()
            thread.join(10)
        self.assertFalse(thread.is_alive(), "the eval waits for its own send")
        self.assertEqual(out["result"]["value"], 7)
        output = [e for e in call.events if e["event"] == "output"]
        self.assertEqual([e["seq"] for e in output], list(range(len(output))))
        self.assertEqual("".join(e["data"] for e in output if e["fd"] == 2), "finalized\n")
        self.assertEqual("".join(e["data"] for e in output if e["fd"] == 1), "x" * 70_000 + "\n")

    def test_a_value_whose_repr_raises_is_still_a_serialization_error(self):
        with self.assertRaises(SerializationError) as caught:
            self.call("eval", code="class V:\n    def __repr__(self):\n        raise ValueError('no')\nV()")
        self.assertIn("its repr raised ValueError", caught.exception.message)

    def test_an_async_function_or_coroutine_is_awaited(self):
        code = "import asyncio\nasync def f(a):\n    await asyncio.sleep(0)\n    return a * 2"
        self.assertEqual(self.call("eval", code=code, args={"a": 21})[0]["value"], 42)
        self.assertEqual(self.call("eval", code=code + "\nf(4)")[0]["value"], 8)

    def test_function_and_args(self):
        result, _ = self.call("eval", code="def f(a, b=0):\n    return a * 10 + b", args={"a": 4, "b": 2})
        self.assertEqual(result["value"], 42)

    def test_user_exception_is_a_python_error_with_user_traceback(self):
        with self.assertRaises(PythonError) as ctx:
            self.call("eval", code="def g():\n    raise KeyError('k')\ng()")
        self.assertEqual(ctx.exception.exception, "KeyError")
        self.assertIn("in g", ctx.exception.traceback)
        self.assertNotIn("eval.py", ctx.exception.traceback)

    def test_a_syntax_error_traceback_shows_the_code_not_the_parser(self):
        with self.assertRaises(PythonError) as ctx:
            self.call("eval", code="x = (")
        self.assertEqual(ctx.exception.exception, "SyntaxError")
        self.assertNotIn("ast.py", ctx.exception.traceback)
        self.assertNotIn("eval.py", ctx.exception.traceback)
        self.assertIn('File "<eval>", line 1', ctx.exception.traceback)

    def test_system_exit_does_not_stop_the_server(self):
        with self.assertRaises(PythonError) as ctx:
            self.call("eval", code="raise SystemExit(3)")
        self.assertEqual(ctx.exception.exception, "SystemExit")

    def test_keyboard_interrupt_raised_by_the_code_is_a_python_error(self):
        # Nothing cancelled it: only CallRunner.cancel's interrupt is a CancelledError.
        with self.assertRaises(PythonError) as ctx:
            self.call("eval", code="raise KeyboardInterrupt('by hand')")
        self.assertEqual(ctx.exception.exception, "KeyboardInterrupt")
        self.assertEqual(ctx.exception.message, "by hand")

    def test_non_json_value_is_a_serialization_error(self):
        for code, named in (("{1, 2}", "{1, 2}"), ("[float('nan')]", "[nan]"), ("float('nan')", "nan"), ("-float('inf')", "-inf")):
            with self.assertRaises(SerializationError) as caught:
                self.call("eval", code=code)
            self.assertIn("the eval's value is not JSON", caught.exception.message)
            self.assertIn(named, caught.exception.message)

    def test_a_structured_value_is_encoded_once_for_the_reply(self):
        result, _ = self.call("eval", code="print('x')\n{'rows': [1, 2], 'ok': True}")
        self.assertIsInstance(result, big_json.Encoded)
        self.assertEqual(result.decode(), {"value": {"rows": [1, 2], "ok": True}, "chunks": 1})

    def test_bad_arguments_are_invalid_requests(self):
        with self.assertRaises(InvalidRequestError):
            self.call("eval", code=3)
        with self.assertRaises(InvalidRequestError):
            self.call("outputAck", target="x", seq=1)
        for session in (3, True, [], {"a": 1}):
            with self.assertRaises(InvalidRequestError, msg=repr(session)):
                self.call("eval", code="1", session=session)
        for target, seq in ((True, 1), (1, True), (1, 1.0)):
            with self.assertRaises(InvalidRequestError):
                self.call("outputAck", target=target, seq=seq)

    def test_ack_for_a_finished_eval_is_harmless(self):
        self.assertEqual(self.call("outputAck", target=999, seq=3)[0], {"acked": False})

    def test_the_flusher_runs_from_install_on_not_from_an_interruptible_eval(self):
        # Started lazily by the first eval, a cancel's KeyboardInterrupt could
        # land inside Thread.start() after the thread began: every later eval
        # then failed with "RuntimeError: threads can only be started once".
        self.assertTrue(self.service._flusher.is_alive())
        self.assertEqual(self.call("eval", code="1")[0], {"value": 1, "chunks": 0})

    def test_an_interrupt_before_the_code_runs_unregisters_the_channel(self):
        # The interrupt CallRunner.cancel injects may fire at any bytecode,
        # also while evalStart is being sent.
        class InterruptedAtStart(FakeCall):
            def send_event(self, event):
                if event["event"] == "evalStart":
                    self.interrupted = True
                    raise KeyboardInterrupt
                super().send_event(event)

        call = InterruptedAtStart(self.connection, 500, {"cmd": "eval", "code": "1"})
        with self.assertRaises(CancelledError):
            self.service.eval(call)
        self.assertEqual(self.service._channels, {})
        self.assertEqual(self.call("eval", code="2")[0], {"value": 2, "chunks": 0})


# Instructions after which CPython (3.10 on) may raise an injected exception.
_CHECKS_AFTER = frozenset((
    "CALL", "CALL_FUNCTION", "CALL_FUNCTION_KW", "CALL_FUNCTION_EX", "CALL_METHOD", "CALL_KW",
    "JUMP_BACKWARD", "JUMP_ABSOLUTE", "RESUME",
))


def _opcode_events():
    """Whether a trace function that asks for opcode events gets them."""
    events = []

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        events.append(event)
        return tracer

    def traced():
        return len(events)

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        traced()
    finally:
        sys.settrace(old)
    return "opcode" in events


@contextlib.contextmanager
def _no_gc():
    """No garbage collection meanwhile: it runs finalizers and weakref
    callbacks at any allocation, so the places a trace function counts would
    vary from run to run (and a ``KeyboardInterrupt`` raised in one is only
    printed: "Exception ignored in")."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _traced_cancel(call, step):
    """``(state, tracer)``: a trace function for the thread running ``call``
    that cancels it at the ``step``-th place where CPython may raise an
    injected exception (as a function starts, after a call returns, at a jump
    back; not, say, between a with-block's last instruction and its
    ``__exit__``), or at the first such place after it where the call's lock
    is free (the loop's cancel waits for it). As ``CallRunner.cancel``: the
    call is marked ``interrupted``, and the ``KeyboardInterrupt`` is raised
    there unless the call is shielded. ``state``: ``came`` once the cancel
    came, ``deferred`` 1 when it came while shielded, ``host_futures`` the
    call's host requests then (the cancel fails them next)."""
    state = {"seen": 0, "came": False, "deferred": 0}
    previous = {}  # frame -> the name of its last instruction

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event != "opcode" or state["came"]:
            return tracer
        op = dis.opname[frame.f_code.co_code[frame.f_lasti]]
        before = previous.get(frame)
        previous[frame] = op
        if before is not None and before not in _CHECKS_AFTER:
            return tracer
        state["seen"] += 1
        if state["seen"] < step or not call.lock.acquire(False):
            return tracer
        try:
            state["came"] = True
            call.cancelled.set()
            call.interrupted = True
            inject = not call.shielded
            # Failed by the loop thread next (a host call's).
            state["host_futures"] = list(getattr(call, "host_futures", None) or ())
        finally:
            call.lock.release()
        if inject:
            raise KeyboardInterrupt
        state["deferred"] = 1
        return tracer

    return state, tracer


class EvalCancelledAtEveryBytecodeTest(unittest.TestCase):
    """A cancel's ``KeyboardInterrupt`` (``CallRunner.cancel``) fires at
    whatever bytecode the eval's thread runs then. Here the cancel comes at
    each place of an eval where CPython may raise it, in turn: a trace
    function raises it there, as the injected interrupt would, unless the
    call is shielded, where the cancel only marks it ``interrupted`` as
    ``CallRunner.cancel`` does (``_traced_cancel``). After each, other threads
    must still get the eval's output channel (the loop thread's
    ``outputAck``) and the flusher: an interrupt that fired as the channel's
    ``threading.Condition`` was entered left its lock held for ever, and the
    server's loop, blocked at the next ack, answered nothing more."""

    CODE = "print('a' * 1500)\nprint('b')\n7"

    def setUp(self):
        self.server = FakeServer()
        self.service = EvalService(self.server)
        self.service.install()
        self.connection = FakeConnection(self.server)
        self.addCleanup(capture.uninstall, capture.install())
        made = self.channels = []

        class Recorded(OutputChannel):
            chunk_chars = 256  # a write of several chunks: more of the send path

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                made.append(self)

        patcher = mock.patch.object(eval_module, "OutputChannel", Recorded)
        patcher.start()
        self.addCleanup(patcher.stop)
        # Cancels that came while the eval's thread was shielded (in its output's path).
        self.deferred = 0

    def _cancel_at(self, step, rid):
        """Runs the eval on a thread of its own, cancelled at the ``step``-th
        place where an interrupt may fire (or the first after it where the
        call's lock is free: the loop's cancel waits for it). False when the
        eval ended before."""
        call = FakeCall(self.connection, rid, {"cmd": "eval", "code": self.CODE})
        state, tracer = _traced_cancel(call, step)
        after = {}

        def run():
            call.thread_ident = threading.get_ident()
            sys.settrace(tracer)
            try:
                self.service.eval(call)
            except (CancelledError, KeyboardInterrupt):
                pass  # CallRunner answers either with CancelledError
            finally:
                sys.settrace(None)
                after["writers"] = capture.writers()

        thread = threading.Thread(target=run, daemon=True)
        with _no_gc():
            thread.start()
            thread.join(10)
        self.assertFalse(thread.is_alive(), "the eval cancelled at place %d hangs" % step)
        # The thread's next calls print where they should, not to this eval's channel.
        owners = [getattr(writer, "__self__", None) for writer in after["writers"]]
        self.assertEqual(owners, [None, None], "cancelled at place %d: output stays redirected" % step)
        self.deferred += state["deferred"]
        return state["came"]

    def _usable(self, step, made):
        # Cancelled before the eval made its channel: the flusher still counts.
        channel = self.channels[-1] if len(self.channels) > made else OutputChannel(lambda *_: None)
        flushed = threading.Event()

        class Probe:
            def flush_due(self):
                flushed.set()

        def other_threads():
            channel.ack(1 << 30)  # the loop thread, at an outputAck
            channel.flush_due()  # the flusher thread
            self.service._flusher.schedule(Probe(), 0)

        probe = threading.Thread(target=other_threads, daemon=True)
        probe.start()
        probe.join(5)
        self.assertFalse(probe.is_alive(), "cancelled at place %d: the output channel's lock stays held" % step)
        self.assertTrue(flushed.wait(5), "cancelled at place %d: the flusher is stuck" % step)
        self.assertEqual(self.service._channels, {}, "cancelled at place %d: the channel stays registered" % step)

    def test_other_threads_get_the_channel_whichever_bytecode_the_cancel_interrupts(self):
        if not _opcode_events():
            self.skipTest("this Python sends no opcode trace events (3.12.0 and 3.12.1)")
        step = 0
        while True:
            step += 1
            made = len(self.channels)
            if not self._cancel_at(step, step):
                break
            self._usable(step, made)
        self.assertGreater(step, 200)  # the eval's code, its output's path and clean-up were all traced
        self.assertGreater(self.deferred, 20)


class EvalServerTest(unittest.TestCase):
    """The eval commands in a real server, over a real socket."""

    def setUp(self):
        self.server = ServerProcess()
        self.addCleanup(self.server.kill)
        self.client = self.server.connect()

    def test_flood_stalls_at_the_window_until_acked(self):
        code = "import sys\nblock = 'x' * 65535 + '\\n'\nfor _ in range(64):\n    sys.stdout.write(block)\n'end'"
        self.client.send({"id": 1, "cmd": "eval", "code": code})
        chunks = []
        # The first chunk may take long on a busy machine; after it, 0.5 s
        # without a message is the stall (a later chunk that is merely slow
        # ends the loop early: what came is still within the window, in order).
        wait = 30
        with self.assertRaises(TimeoutError):  # stalled: no reply without acks
            while True:
                msg = self.client.recv(timeout=wait)
                if msg.get("event") == "output":
                    chunks.append(msg)
                    wait = 0.5
                elif "ok" in msg:
                    self.fail("the eval finished without acks: %r" % msg)
        self.assertLessEqual(sum(len(c["data"]) for c in chunks), OutputChannel.window)
        self.assertEqual([c["seq"] for c in chunks], list(range(len(chunks))))
        # Ping is answered while the eval is blocked.
        self.assertEqual(self.client.call("ping"), "pong")
        total = sum(len(c["data"]) for c in chunks)
        rid = 100
        self.client.send({"id": rid, "cmd": "outputAck", "target": 1, "seq": chunks[-1]["seq"]})
        while True:
            msg = self.client.recv()
            if msg.get("event") == "output":
                total += len(msg["data"])
                rid += 1
                self.client.send({"id": rid, "cmd": "outputAck", "target": 1, "seq": msg["seq"]})
            elif "ok" in msg and msg.get("id") == 1:
                self.assertEqual(msg["result"]["value"], "end")
                break
        self.assertEqual(total, 64 * 65536)

    def test_cancel_interrupts_a_busy_loop(self):
        self.client.send({"id": 1, "cmd": "eval", "code": "print('go')\nwhile True:\n    pass"})
        self.assertEqual(self.client.recv()["event"], "evalStart")
        self.assertEqual(self.client.recv()["data"], "go\n")
        self.client.send({"id": 2, "cmd": "cancel", "target": 1})
        reply = self.client.reply_for(1)
        self.assertEqual(reply["error"]["type"], "CancelledError")

    def test_output_of_buffer_and_threads_goes_where_the_docs_say(self):
        code = (
            "import contextvars, sys, threading\n"
            "sys.stdout.buffer.write('caf\\u00e9\\n'.encode())\n"
            "t = threading.Thread(target=print, args=('to the log',))\n"
            "t.start(); t.join()\n"
            "ctx = contextvars.copy_context()\n"
            "t = threading.Thread(target=ctx.run, args=(print, 'to the eval'))\n"
            "t.start(); t.join()\n"
        )
        self.client.send({"id": 1, "cmd": "eval", "code": code})
        self.client.reply_for(1)
        output = "".join(e["data"] for e in self.client.events if e.get("event") == "output")
        self.assertEqual(output, "caf\u00e9\nto the eval\n")
        log = os.path.join(self.server.root, "logs", "pythonserver%d.log" % self.server.port)
        with open(log, encoding="utf-8") as f:
            self.assertIn("<stdout>: to the log", f.read())

    def test_keyboard_interrupt_without_a_cancel_is_a_python_error(self):
        reply = self.client.request("eval", code="try:\n    raise KeyboardInterrupt\nfinally:\n    print('x')")
        self.assertEqual(reply["error"]["type"], "PythonError", reply)
        self.assertEqual(reply["error"]["exception"], "KeyboardInterrupt")
        self.assertEqual(self.client.call("ping"), "pong")

    def test_sessions_belong_to_their_connection(self):
        sid = self.client.call("openSession")["session"]
        self.client.call("eval", code="x = 41", session=sid)
        self.assertEqual(self.client.call("eval", code="x + 1", session=sid)["value"], 42)
        other = self.server.connect()
        reply = other.request("eval", code="x", session=sid)
        self.assertEqual(reply["error"]["type"], "SessionLostError")


class EvalSmallFramesTest(unittest.TestCase):
    """Output under a small ``--max-frame-size`` without spill-over: every
    chunk's event fits one frame (a 64 Ki-character chunk did not, and was
    dropped unsent while the reply's ``chunks`` counted it)."""

    def setUp(self):
        self.server = ServerProcess(args=("--max-frame-size", "4096"))
        self.addCleanup(self.server.kill)
        self.client = self.server.connect()

    def test_every_chunk_counted_arrives_whole(self):
        # 6000 plain characters, then 1500 that JSON escapes as 6 bytes each.
        code = "import sys\nsys.stdout.write('c' * 6000)\nsys.stdout.write('\\x01' * 1500)\n"
        self.client.send({"id": 1, "cmd": "eval", "code": code})
        reply = self.client.reply_for(1)
        self.assertTrue(reply["ok"], reply)
        output = [e for e in self.client.events if e.get("event") == "output"]
        self.assertEqual(reply["result"]["chunks"], len(output))
        self.assertEqual([e["seq"] for e in output], list(range(len(output))))
        self.assertEqual("".join(e["data"] for e in output), "c" * 6000 + "\x01" * 1500)

    def test_an_id_of_many_digits_still_fits(self):
        # Each event repeats the id, which may have any number of digits: one
        # of 600 left one of three chunks' events in a 4096-byte frame.
        for rid in (int("7" * 600), -int("7" * 4000)):
            self.client.send({"id": rid, "cmd": "eval", "code": "import sys\nsys.stdout.write('\\x01' * 1500)\n"})
            reply = self.client.reply_for(rid)
            self.assertTrue(reply["ok"], reply)
            output = [e for e in self.client.events if e.get("event") == "output" and e["id"] == rid]
            self.assertEqual(reply["result"]["chunks"], len(output))
            self.assertEqual("".join(e["data"] for e in output), "\x01" * 1500)


if __name__ == "__main__":
    unittest.main()
