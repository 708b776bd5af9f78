"""The inline fast path of executeModel (models proved fast run on the loop thread)."""

import unittest

from pyproxy_server.models import ModelEntry

from .test_server import ServerTestCase

LEARN = ModelEntry.LEARN_CALLS

# Reports the thread it ran on; prints, calls the host, sleeps or runs
# asyncio when asked. pyproxy is imported inside execute, where the load-time
# scan (models.may_call_host) cannot see it: that is the case an inline call
# meets at run time.
SOURCE = """
import asyncio, threading, time

class Model:
    %s
    runs = 0
    def execute(self, msg):
        msg = msg or {}
        Model.runs += 1
        if msg.get("print"):
            print("before", msg["print"])
        if msg.get("host"):
            from pyproxy import host
            return {"thread": threading.current_thread().name, "answer": host.call("add", {"a": 1, "b": 2}), "runs": Model.runs}
        if msg.get("swallow"):
            from pyproxy import host
            try:
                host.call("add", {"a": 1, "b": 2})
            except BaseException:
                pass
            return {"thread": threading.current_thread().name, "swallowed": True, "runs": Model.runs}
        if msg.get("sleep"):
            time.sleep(msg["sleep"])
        if msg.get("asyncio"):
            async def three():
                return 3
            return {"thread": threading.current_thread().name, "value": asyncio.run(three())}
        if msg.get("raise"):
            raise ValueError("boom")
        return {"thread": threading.current_thread().name, "runs": Model.runs}
"""


def _source(attrs=""):
    return SOURCE % (attrs or "pass")


class InlineTest(ServerTestCase):
    shared = True

    def _model(self, c, name, attrs=""):
        c.call("addModel", name=name, source=_source(attrs))

    def _threads(self, c, name, n, msg=None):
        return [c.call("executeModel", name=name, msg=msg or {})["thread"] for _ in range(n)]

    def _learned(self, c, name):
        self._model(c, name)
        threads = self._threads(c, name, LEARN)
        self.assertTrue(all(t != "MainThread" for t in threads), threads)
        self.assertEqual(self._threads(c, name, 1), ["MainThread"])

    def test_fast_model_runs_inline_after_learning(self):
        c = self.connect()
        self._learned(c, "fast")
        self.assertEqual(c.call("ping"), "pong")

    def test_inline_print_is_captured(self):
        c = self.connect()
        self._learned(c, "printer")
        reply = c.request("executeModel", name="printer", msg={"print": "inline"})
        self.assertEqual(reply["result"]["thread"], "MainThread")
        logs = [e for e in c.events if e["event"] == "log" and e.get("request") == reply["id"]]
        self.assertEqual([(e["stream"], e["message"], e["model"]) for e in logs], [("stdout", "before inline", "printer")])

    def test_inline_error_is_python_error(self):
        c = self.connect()
        self._learned(c, "raiser")
        error = self.assertError(c.request("executeModel", name="raiser", msg={"raise": True}), "PythonError")
        self.assertIn("boom", error["message"])
        self.assertEqual(self._threads(c, "raiser", 1), ["MainThread"])

    def test_host_call_inline_fails_once_and_demotes(self):
        c = self.connect()
        c.handlers["add"] = lambda args: args["a"] + args["b"]
        self._learned(c, "caller")
        runs = c.call("executeModel", name="caller", msg={})["runs"]
        reply = c.request("executeModel", name="caller", msg={"host": True, "print": "once"})
        # Never re-run (at most once): the call fails where it met the host.
        error = self.assertError(reply, "HostError")
        self.assertIn("event loop thread", error["message"])
        self.assertEqual(c.host_requests, [])
        logs = [e["message"] for e in c.events if e["event"] == "log" and e.get("request") == reply["id"]]
        self.assertEqual(logs, ["before once"])
        # It ran once, and later calls run threaded, where the host answers.
        result = c.call("executeModel", name="caller", msg={"host": True})
        self.assertEqual((result["answer"], result["runs"]), (3, runs + 2))
        self.assertNotEqual(result["thread"], "MainThread")
        self.assertNotIn("MainThread", self._threads(c, "caller", LEARN + 2))

    def test_swallowed_host_call_is_not_rerun(self):
        c = self.connect()
        c.handlers["add"] = lambda args: args["a"] + args["b"]
        self._learned(c, "swallower")
        runs = c.call("executeModel", name="swallower", msg={})["runs"]
        result = c.call("executeModel", name="swallower", msg={"swallow": True})
        self.assertEqual((result["thread"], result["runs"]), ("MainThread", runs + 1))
        self.assertEqual(c.host_requests, [])
        self.assertNotIn("MainThread", self._threads(c, "swallower", 2))

    def test_model_importing_pyproxy_never_goes_inline(self):
        c = self.connect()
        for name, line in (("imports-host", "from pyproxy import host"), ("imports-pkg", "import pyproxy"),
                           ("imports-cache", "from pyproxy.host import cache")):
            c.call("addModel", name=name, source=line + "\n" + _source())
            self.assertNotIn("MainThread", self._threads(c, name, LEARN + 4))

    def test_host_calls_while_learning_keep_it_threaded(self):
        c = self.connect()
        c.handlers["add"] = lambda args: args["a"] + args["b"]
        self._model(c, "uses-host")
        c.call("executeModel", name="uses-host", msg={"host": True})
        self.assertNotIn("MainThread", self._threads(c, "uses-host", LEARN + 2))

    def test_slow_inline_call_demotes(self):
        c = self.connect()
        self._learned(c, "slows")
        slow = {"sleep": ModelEntry.DEMOTE_AFTER * 2}
        self.assertEqual(c.call("executeModel", name="slows", msg=slow)["thread"], "MainThread")
        # Back to threads, while its average says the slow call.
        self.assertNotIn("MainThread", self._threads(c, "slows", 4))
        # One slow call may be the machine's (a preempted loop thread): fast
        # again, it runs inline again...
        self.assertIn("MainThread", self._threads(c, "slows", 4 * LEARN))
        self.assertEqual(self._threads(c, "slows", 1), ["MainThread"])
        # ...and slow inline a second time, it is threaded for good.
        self.assertEqual(c.call("executeModel", name="slows", msg=slow)["thread"], "MainThread")
        self.assertNotIn("MainThread", self._threads(c, "slows", 4 * LEARN))

    def test_threaded_field_keeps_a_learned_model_off_the_loop(self):
        # The host's mark (protocol §6, executeModel's `threaded`) of a model
        # one of whose inline calls hung a worker: on a thread, even
        # `inline = True` ones; calls without it still run inline.
        c = self.connect()
        self._learned(c, "marked")
        reply = c.call("executeModel", name="marked", msg={}, threaded=True)
        self.assertNotEqual(reply["thread"], "MainThread")
        self.assertEqual(self._threads(c, "marked", 1), ["MainThread"])
        self._model(c, "forced", "inline = True")
        reply = c.call("executeModel", name="forced", msg={}, threaded=True)
        self.assertNotEqual(reply["thread"], "MainThread")

    def test_slow_model_never_goes_inline(self):
        c = self.connect()
        self._model(c, "sleepy")
        threads = self._threads(c, "sleepy", LEARN + 2, {"sleep": ModelEntry.INLINE_MAX * 3})
        self.assertNotIn("MainThread", threads)

    def test_class_attributes_force_the_mode(self):
        c = self.connect()
        self._model(c, "forced-inline", "inline = True")
        self.assertEqual(self._threads(c, "forced-inline", 2), ["MainThread"] * 2)
        self._model(c, "forced-threaded", "threaded = True")
        self.assertNotIn("MainThread", self._threads(c, "forced-threaded", LEARN + 2))

    def test_forced_inline_host_call_fails(self):
        c = self.connect()
        c.handlers["add"] = lambda args: args["a"] + args["b"]
        self._model(c, "forced-caller", "inline = True")
        error = self.assertError(c.request("executeModel", name="forced-caller", msg={"host": True}), "HostError")
        self.assertIn("event loop thread", error["message"])
        self.assertEqual(c.host_requests, [])

    def test_slow_inline_call_tells_the_host_it_is_busy(self):
        c = self.connect()
        self._learned(c, "stalls")
        reply = c.request("executeModel", name="stalls", msg={"sleep": 0.9})
        self.assertEqual(reply["result"]["thread"], "MainThread")
        busy = [e for e in c.events if e["event"] == "busy"]
        self.assertTrue(busy, c.events)
        self.assertEqual({(e["request"], e["model"]) for e in busy}, {(reply["id"], "stalls")})
        self.assertTrue(all(e["ms"] >= 250 for e in busy), busy)
        self.assertEqual(c.call("ping"), "pong")
        # A fast inline call after it: no busy event.
        before = len(c.events)
        c.call("executeModel", name="stalls", msg={})
        self.assertEqual([e for e in c.events[before:] if e["event"] == "busy"], [])

    def test_asyncio_run_works_inline(self):
        c = self.connect()
        self._learned(c, "async")
        result = c.call("executeModel", name="async", msg={"asyncio": True})
        self.assertEqual(result, {"thread": "MainThread", "value": 3})
        self.assertEqual(c.call("ping"), "pong")

    def test_update_model_learns_again(self):
        c = self.connect()
        self._learned(c, "swapped")
        c.call("updateModel", name="swapped", source=_source())
        self.assertNotEqual(self._threads(c, "swapped", 1), ["MainThread"])

    def test_pipelined_inline_calls_all_answer_in_one_read(self):
        c = self.connect()
        self._learned(c, "many")
        c.send(*[{"id": i, "cmd": "executeModel", "name": "many", "msg": {}} for i in range(1, 101)])
        for i in range(1, 101):
            self.assertTrue(c.reply_for(i)["ok"])


class InlineWatchTest(unittest.TestCase):
    """The watchdog's timing rules, on stand-ins for the server and a connection."""

    def test_busy_events_stop_after_busy_max(self):
        import time
        import types

        from pyproxy_server.inline_watch import InlineWatch

        class Watch(InlineWatch):
            TICK, STALL, EVERY, BUSY_MAX = 0.01, 0.05, 0.02, 0.3

        sent = []

        class Conn:
            _busy_sent = 0.0

            def send_busy(self, since, now):
                sent.append(now - since)
                self._busy_sent = now

        conn = Conn()
        loop = types.SimpleNamespace(is_closed=lambda: False)
        server = types.SimpleNamespace(connections={"c1": conn}, loop=loop, stopping=False)
        conn._inline_since = time.perf_counter()  # a call that never ends
        Watch.ensure(server)
        time.sleep(0.6)
        server.stopping = True
        self.assertTrue(sent)
        self.assertTrue(all(Watch.STALL <= age < Watch.BUSY_MAX for age in sent), sent)
        self.assertGreater(time.perf_counter() - conn._inline_since, Watch.BUSY_MAX)


if __name__ == "__main__":
    unittest.main()
