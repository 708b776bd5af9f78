"""Model metrics (``pyproxy.metrics``, protocol §6 "Model metrics"): checks at
the call, aggregation in the process, the batched ``metrics`` event, and a
cancel's interrupt during an update."""

import collections
import contextvars
import fractions
import math
import numbers
import threading
import time
import unittest

from pyproxy import metrics
from pyproxy_server.call import current_call
from pyproxy_server.model_metrics import DEFAULT_BUCKETS, MetricsRegistry

from .test_eval import FakeCall, FakeConnection, FakeServer, _no_gc, _opcode_events, _traced_cancel
from ._client import Closed, mac
from .test_server import ServerTestCase


class RegistryTest(unittest.TestCase):
    def setUp(self):
        self.reg = MetricsRegistry()

    def test_bad_updates_raise_and_record_nothing(self):
        record = self.reg.record
        bad = [
            (ValueError, ("counter", "a\nb", 1)),
            (ValueError, ("counter", 'a"b', 1)),
            (ValueError, ("counter", "1abc", 1)),
            (ValueError, ("counter", "", 1)),
            (ValueError, ("counter", "__x", 1)),
            (ValueError, ("counter", "x" * 129, 1)),
            (ValueError, ("counter", "a:b", 1)),
            (TypeError, ("counter", 7, 1)),
            (ValueError, ("counter", "c", -1)),
            (ValueError, ("counter", "c", float("nan"))),
            (ValueError, ("counter", "c", float("inf"))),
            (ValueError, ("gauge", "g", float("-inf"))),
            (ValueError, ("histogram", "h", float("nan"))),
            (ValueError, ("counter", "c", 10**400)),
            (TypeError, ("counter", "c", True)),
            (TypeError, ("counter", "c", "1")),
            (TypeError, ("counter", "c", None)),
            (TypeError, ("counter", "c", 1, [("a", "b")])),
            (TypeError, ("counter", "c", 1, {"a": 1})),
            (TypeError, ("counter", "c", 1, {1: "a"})),
            (TypeError, ("counter", "c", 1, {"a": ["x"]})),
            (ValueError, ("counter", "c", 1, {"model": "x"})),
            (ValueError, ("counter", "c", 1, {"worker": "x"})),
            (ValueError, ("counter", "c", 1, {"le": "x"})),
            (ValueError, ("counter", "c", 1, {"a b": "x"})),
            (ValueError, ("counter", "c", 1, {"a\n": "x"})),
            (ValueError, ("counter", "c", 1, {"__a": "x"})),
            (ValueError, ("counter", "c", 1, {"a": "x" * 257})),
            (ValueError, ("counter", "c", 1, {"l%d" % i: "x" for i in range(9)})),
            (ValueError, ("histogram", "h", 1, None, None, [])),
            (ValueError, ("histogram", "h", 1, None, None, [2, 1])),
            (ValueError, ("histogram", "h", 1, None, None, [1, 1])),
            (ValueError, ("histogram", "h", 1, None, None, [1, float("inf")])),
            (ValueError, ("histogram", "h", 1, None, None, list(range(33)))),
            (TypeError, ("histogram", "h", 1, None, None, ["a"])),
            (TypeError, ("histogram", "h", 1, None, None, "123")),  # not the bounds 1, 2, 3
            (TypeError, ("histogram", "h", 1, None, None, [1, True])),
            (TypeError, ("histogram", "h", 1, None, None, 5)),
            (TypeError, ("counter", "c", 1, None, 7)),
        ]
        for exc, args in bad:
            with self.assertRaises(exc, msg=repr(args)[:100]):
                record(*args)
        self.assertEqual(self.reg.snapshot_pending(), {})
        self.assertEqual(self.reg._known, set())

    def test_other_real_numbers_are_values_and_bounds(self):
        # numpy's int64 and float32 (not int or float subclasses) are real
        # numbers, as is a Fraction: what model code computes, recorded as is.
        class Int64:  # registered as an Integral, as numpy's is
            def __init__(self, n):
                self.n = n

            def __float__(self):
                return float(self.n)

        numbers.Integral.register(Int64)
        self.reg.record("counter", "c", Int64(3))
        self.reg.record("counter", "c", fractions.Fraction(1, 2))
        self.reg.record("histogram", "h", Int64(2), buckets=[fractions.Fraction(1, 2), Int64(4)])
        self.assertEqual(
            self.reg.snapshot_pending(),
            {(None, "c", ()): [3.5], (None, "h", ()): [[0, 1, 0], 2.0, 1]},
        )
        try:
            import numpy
        except ImportError:
            return
        self.reg.record("counter", "c", numpy.int64(1))
        self.reg.record("histogram", "h", numpy.float32(0.25))
        self.assertEqual(self.reg.snapshot_pending()[(None, "c", ())], [4.5])
        with self.assertRaises(TypeError):
            self.reg.record("counter", "c", numpy.bool_(True))

    def test_labels_may_be_any_dict(self):
        self.reg.record("counter", "c", 1, collections.OrderedDict(b="2", a="1"))
        self.reg.record("counter", "c", 1, collections.defaultdict(str, a="1", b="2"))
        self.assertEqual(self.reg.snapshot_pending(), {(None, "c", (("a", "1"), ("b", "2"))): [2.0]})

    def test_label_values_may_hold_any_text(self):
        self.reg.record("counter", "c", 1, {"path": 'a"b\\c\nd'})
        self.assertEqual(self.reg.snapshot_pending(), {(None, "c", (("path", 'a"b\\c\nd'),)): [1.0]})

    def test_label_values_and_descriptions_must_be_valid_unicode(self):
        # A lone surrogate reaches a scraper as U+FFFD: "\udc80" and "\udc81"
        # would be one series, twice.
        with self.assertRaisesRegex(ValueError, "lone surrogate"):
            self.reg.record("counter", "c", 1, {"file": "a\udc80"})
        with self.assertRaisesRegex(ValueError, "lone surrogate"):
            self.reg.record("counter", "c", 1, description="\ud800")
        self.reg.record("counter", "c", 1, {"file": "\U0001F600"})
        self.assertEqual(self.reg.snapshot_pending(), {(None, "c", (("file", "\U0001F600"),)): [1.0]})

    def test_a_name_keeps_its_kind_and_buckets(self):
        self.reg.record("counter", "x", 1)
        with self.assertRaisesRegex(ValueError, "it is a counter"):
            self.reg.record("gauge", "x", 1)
        with self.assertRaisesRegex(ValueError, "it is a counter"):
            self.reg.record("gauge", "x", 1, {"a": "b"})
        self.reg.record("histogram", "h", 1, buckets=[1, 2])
        self.reg.record("histogram", "h", 1)  # the first use's buckets
        self.reg.record("histogram", "h", 1, buckets=[1.0, 2.0])
        with self.assertRaisesRegex(ValueError, "first use"):
            self.reg.record("histogram", "h", 1, buckets=[1, 3])
        with self.assertRaisesRegex(ValueError, "histogram"):
            self.reg.record("gauge", "h_sum", 1)
        self.reg.record("gauge", "g_count", 1)
        with self.assertRaisesRegex(ValueError, "metric already"):
            self.reg.record("histogram", "g", 1)

    def test_first_uses_that_race_keep_the_first_family(self):
        # Two threads' first uses of a histogram, with other buckets, both
        # checked before either took the lock: the second one's update goes
        # into the first one's buckets (the host would drop counts and
        # buckets that disagree).
        self.reg.record("histogram", "h", 0.5, {"a": "1"})
        late = ("histogram", None, (1.0,))
        with self.reg._lock:
            self.reg._add("histogram", (None, "h", (("a", "2"),)), late, 0.5)
            self.reg._add("gauge", (None, "h", (("a", "3"),)), ("gauge", None, None), 1.0)
        pending = self.reg.snapshot_pending()
        self.assertEqual(len(pending[(None, "h", (("a", "2"),))][0]), len(DEFAULT_BUCKETS) + 1)
        self.assertNotIn((None, "h", (("a", "3"),)), pending)

    def test_updates_add_up_per_series(self):
        for _ in range(100000):
            self.reg.record("counter", "hits", 1)
        self.reg.record("counter", "hits", 2.5, {"a": "1"})
        self.reg.record("gauge", "depth", 3)
        self.reg.record("gauge", "depth", -7)
        for v in (0.001, 0.005, 0.2, 10, 11, -1):
            self.reg.record("histogram", "lat", v)
        pending = self.reg.snapshot_pending()
        self.assertEqual(pending[(None, "hits", ())], [100000.0])
        self.assertEqual(pending[(None, "hits", (("a", "1"),))], [2.5])
        self.assertEqual(pending[(None, "depth", ())], [-7.0])
        counts, total, count = pending[(None, "lat", ())]
        self.assertEqual(len(counts), len(DEFAULT_BUCKETS) + 1)
        self.assertEqual(counts[0], 3)  # <= 0.005: -1, 0.001, 0.005
        self.assertEqual(counts[DEFAULT_BUCKETS.index(0.25)], 1)
        self.assertEqual(counts[DEFAULT_BUCKETS.index(10.0)], 1)
        self.assertEqual(counts[-1], 1)  # +Inf only: 11
        self.assertEqual(count, 6)
        self.assertTrue(math.isclose(total, 20.206))

    def test_updates_count_for_the_model_of_the_running_call(self):
        call = FakeCall(FakeConnection(FakeServer()), 1, {"cmd": "executeModel", "name": "m"})
        call.cmd = "executeModel"

        def run():
            current_call.set(call)
            self.reg.record("counter", "c", 1)

        contextvars.copy_context().run(run)
        call.cmd = "eval"
        contextvars.copy_context().run(run)
        self.assertEqual(self.reg.snapshot_pending(), {("m", "c", ()): [1.0], (None, "c", ()): [1.0]})

    def test_series_past_the_cap_are_dropped_and_counted(self):
        self.reg.MAX_SERIES = 10
        with self.assertLogs("pyproxy_server", "WARNING") as logs:
            for i in range(10000):
                self.reg.record("counter", "wide", 1, {"i": str(i)})
        self.assertEqual(len(logs.records), 1)  # one warning per model
        self.assertEqual(len(self.reg.snapshot_pending()), 10)
        self.assertEqual(self.reg._dropped, {None: 9990})
        self.reg.record("counter", "wide", 1, {"i": "3"})  # a kept series goes on
        self.assertEqual(self.reg.snapshot_pending()[(None, "wide", (("i", "3"),))], [2.0])
        # New names past the bound keep nothing either (memory stays bounded).
        for i in range(1000):
            self.reg.record("counter", "name_%d" % i, 1)
        self.assertEqual(set(self.reg._families), {"wide"})
        self.assertEqual(self.reg._dropped, {None: 10990})

    def test_a_removed_model_leaves_nothing(self):
        self.reg.MAX_SERIES = 2
        call = FakeCall(FakeConnection(FakeServer()), 1, {"cmd": "executeModel", "name": "m"})
        call.cmd = "executeModel"

        def run():
            current_call.set(call)
            self.reg.record("counter", "c", 1, {"a": "1"})
            self.reg.record("counter", "c", 1, {"a": "2"})

        contextvars.copy_context().run(run)
        self.reg.forget_model("m")
        self.assertEqual((self.reg.snapshot_pending(), self.reg._known), ({}, set()))
        self.reg.record("counter", "c", 1)  # room again
        self.assertEqual(self.reg.snapshot_pending(), {(None, "c", ()): [1.0]})

    def test_a_removed_model_frees_the_names_only_it_used(self):
        call = FakeCall(FakeConnection(FakeServer()), 1, {"cmd": "executeModel", "name": "m"})
        call.cmd = "executeModel"

        def run(kind, name, **kw):
            current_call.set(call)
            self.reg.record(kind, name, 1, **kw)

        contextvars.copy_context().run(run, "counter", "x")
        contextvars.copy_context().run(run, "histogram", "lat", buckets=[1.0])
        self.reg.record("counter", "shared", 1)  # no model's: kept
        contextvars.copy_context().run(run, "counter", "shared")
        self.reg.forget_model("m")
        # The model added again records them as other kinds, other buckets.
        contextvars.copy_context().run(run, "histogram", "x")
        contextvars.copy_context().run(run, "histogram", "lat", buckets=[2.0, 3.0])
        self.assertEqual(self.reg._families["lat"][2], (2.0, 3.0))
        with self.assertRaises(ValueError):
            contextvars.copy_context().run(run, "gauge", "shared")

    def test_a_sum_past_the_largest_float_is_dropped_not_sent_as_inf(self):
        # inf is not JSON: the event holding it was dropped whole.
        big = 1.5e308
        with self.assertLogs("pyproxy_server", "WARNING"):
            self.reg.record("counter", "bytes_total", big)
            self.reg.record("counter", "bytes_total", big)
            self.reg.record("histogram", "size", big, buckets=[1.0])
            self.reg.record("histogram", "size", big, buckets=[1.0])
        self.reg.record("counter", "ok_total", 1)
        self.assertEqual(
            self.reg.snapshot_pending(),
            {(None, "bytes_total", ()): [big], (None, "size", ()): [[0, 1], big, 1], (None, "ok_total", ()): [1.0]},
        )
        self.assertEqual(self.reg._dropped, {None: 2})

    def test_threads_record_without_losing_updates(self):
        def work():
            for _ in range(20000):
                self.reg.record("counter", "c", 1)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(self.reg.snapshot_pending()[(None, "c", ())], [80000.0])

    def test_the_public_api_calls_the_process_registry(self):
        with self.assertRaises(ValueError):
            metrics.counter("bad name")
        with self.assertRaises(ValueError):
            metrics.gauge("g", float("nan"))
        with self.assertRaises(ValueError):
            metrics.histogram("h", 1, buckets=[3, 2])
        self.assertIs(metrics.observe, metrics.histogram)


class TimerTest(unittest.TestCase):
    def test_a_bad_name_raises_before_the_block_and_never_hides_its_exception(self):
        ran = []
        with self.assertRaises(ValueError):
            with metrics.timer("bad name"):
                ran.append(1)
        self.assertEqual(ran, [])
        with self.assertRaises(TypeError):
            metrics.timer("timer_test_ok", labels=[("a", "b")])
        # The name taken as another kind while the block ran: the block's own
        # exception goes on, not the timing's ValueError.
        with self.assertRaises(RuntimeError):
            with metrics.timer("timer_test_changed_kind"):
                metrics.counter("timer_test_changed_kind")
                raise RuntimeError("the model's own")
        # Without an exception of the block, the timing's error is raised.
        with self.assertRaises(ValueError):
            with metrics.timer("timer_test_changed_kind_2"):
                metrics.counter("timer_test_changed_kind_2")


class InterruptedUpdateTest(unittest.TestCase):
    """A cancel's ``KeyboardInterrupt`` at each place an update may be
    interrupted: the registry's lock must be free afterwards, and an update
    whole or not made at all."""

    def test_the_lock_is_free_whichever_place_the_cancel_interrupts(self):
        if not _opcode_events():
            self.skipTest("this Python sends no opcode trace events (3.12.0 and 3.12.1)")
        reg = MetricsRegistry()
        connection = FakeConnection(FakeServer())
        step = 0
        deferred = 0
        while True:
            step += 1
            call = FakeCall(connection, step, {"cmd": "executeModel", "name": "m"})
            call.cmd = "executeModel"
            state, tracer = _traced_cancel(call, step)
            outcome = {}

            def run():
                call.thread_ident = threading.get_ident()
                current_call.set(call)
                import sys

                sys.settrace(tracer)
                try:
                    reg.record("histogram", "h", 0.2, {"a": "b"})
                    reg.record("counter", "c", 1, {"a": "b"})
                    outcome["done"] = True
                except KeyboardInterrupt:
                    outcome["interrupted"] = True
                finally:
                    sys.settrace(None)

            thread = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
            with _no_gc():
                thread.start()
                thread.join(10)
            self.assertFalse(thread.is_alive(), "an update cancelled at place %d hangs" % step)
            self.assertTrue(reg._lock.acquire(timeout=2), "cancelled at place %d: the lock stays held" % step)
            reg._lock.release()
            deferred += state["deferred"]
            if not state["came"]:
                break
        self.assertGreater(step, 20)
        self.assertGreater(deferred, 0)  # cancels that came while an update was shielded
        counts, total, count = reg.snapshot_pending()[("m", "h", (("a", "b"),))]
        self.assertEqual(sum(counts), count)  # no half-made observation
        self.assertTrue(math.isclose(total, 0.2 * count))


class MetricsEventTest(ServerTestCase):
    def _metrics_events(self, client, want, timeout=5.0):
        """The ``metrics`` events read until ``want(events)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            events = [e for e in client.events if e.get("event") == "metrics"]
            if want(events):
                return events
            client.request("ping", timeout=max(0.1, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                self.fail("no such metrics events: %r" % events)
            time.sleep(0.05)  # polling the server: the flush is timed

    def _total(self, events, model, name):
        return sum(s["value"] for e in events for s in e["series"] if s["model"] == model and s["name"] == name)

    def test_updates_reach_a_host_that_asked_in_few_events(self):
        c = self.server.connect(auth=False)
        self.assertIs(c.hello.get("metrics"), True)
        c.call("auth", mac=mac(self.server.secret, c.hello["nonce"]), metrics=True)
        c.call("addModel", name="m", file="metered.py")
        for _ in range(20):
            c.call("executeModel", name="m", msg={"counter": 5000, "path": 'a"\n'})
        events = self._metrics_events(c, lambda ev: self._total(ev, "m", "hits_total") == 100000)
        self.assertLessEqual(len(events), 10)  # batched: no event per update, nor per call
        series = events[0]["series"][0]
        self.assertEqual(
            {k: series[k] for k in ("model", "name", "type", "labels", "help")},
            {"model": "m", "name": "hits_total", "type": "counter", "labels": {"path": 'a"\n'}, "help": "Hits by path."},
        )
        c.call("executeModel", name="m", msg={"observe": [0.001, 1, 100], "gauge": 4, "thread": 3})
        events = self._metrics_events(c, lambda ev: any(s["name"] == "latency_seconds" for e in ev for s in e["series"]))
        by_name = {s["name"]: s for e in events for s in e["series"]}
        h = by_name["latency_seconds"]
        self.assertEqual(h["buckets"], list(DEFAULT_BUCKETS))
        self.assertEqual((h["count"], h["sum"], h["counts"][0], h["counts"][-1]), (3, 101.001, 1, 1))
        self.assertEqual((by_name["depth"]["type"], by_name["depth"]["value"]), ("gauge", 4))
        self.assertEqual((by_name["orphan_total"]["model"], by_name["orphan_total"]["value"]), (None, 3))

    def _asked(self):
        c = self.server.connect(auth=False)
        c.call("auth", mac=mac(self.server.secret, c.hello["nonce"]), metrics=True)
        return c

    def _eval(self, c, code):
        return c.call("eval", code="from pyproxy_server.model_metrics import registry\n" + code)["value"]

    def _set_flush_interval(self, c, seconds):
        self._eval(c, "registry.FLUSH_INTERVAL = %r" % seconds)

    def _flushed(self, c):
        """Wait until no flush is scheduled, then a ping: an event the
        flush sent has come before the ping's reply (the flush runs on the
        loop thread, as does the ping)."""
        deadline = time.monotonic() + 5
        while self._eval(c, "registry._scheduled"):
            self.assertLess(time.monotonic(), deadline, "the flush never ran")
        c.call("ping")

    def test_nothing_is_sent_while_no_model_records(self):
        c = self._asked()
        c.call("addModel", name="d", file="doubler.py")
        for i in range(200):
            c.call("executeModel", name="d", msg={"x": i})
        # Nothing pending, no flush scheduled: no event can come.
        state = self._eval(c, "(registry._scheduled, len(registry._pending), len(registry._known))")
        self.assertEqual(state, [False, 0, 0])
        c.call("ping")
        self.assertEqual([e for e in c.events if e.get("event") == "metrics"], [])

    def test_a_host_that_did_not_ask_gets_nothing_and_calls_work(self):
        c = self.server.connect()  # auth without "metrics"
        self._set_flush_interval(c, 0.01)
        c.call("addModel", name="m", file="metered.py")
        self.assertEqual(c.call("executeModel", name="m", msg={"counter": 1000, "gauge": 1}), {"ok": True})
        self.assertEqual(
            c.call("executeModel", name="m", msg={"bad": {"name": "x\ny"}})["raised"], "ValueError"
        )
        self._flushed(c)
        self.assertEqual([e for e in c.events if e.get("event") == "metrics"], [])
        # A host that asks later gets what added up meanwhile.
        c2 = self._asked()
        events = self._metrics_events(c2, lambda ev: self._total(ev, "m", "hits_total") == 1000)
        self.assertEqual(self._total(events, "m", "depth"), 1)

    def test_a_stop_sends_what_waits_before_the_connection_closes(self):
        c = self._asked()
        self._set_flush_interval(c, 3600.0)  # no timed flush in this test
        c.call("addModel", name="m", file="metered.py")
        c.call("executeModel", name="m", msg={"counter": 7, "observe": [0.2]})
        self.assertEqual(c.call("stopServer"), {"stopping": True})
        while True:
            try:
                msg = c.recv()
            except Closed:
                break
            if msg.get("event") == "metrics":
                c.events.append(msg)
        events = [e for e in c.events if e.get("event") == "metrics"]
        self.assertEqual(self._total(events, "m", "hits_total"), 7)
        self.assertEqual([s["count"] for e in events for s in e["series"] if s["name"] == "latency_seconds"], [1])

    def test_a_removal_sends_the_models_last_updates_before_its_reply(self):
        c = self._asked()
        self._set_flush_interval(c, 3600.0)
        c.call("addModel", name="m", file="metered.py")
        c.call("addModel", name="k", file="metered.py")
        c.call("executeModel", name="m", msg={"counter": 3, "gauge": 5})  # depth: m's only
        c.call("executeModel", name="k", msg={"counter": 2})
        c.call("removeModel", name="m")
        events = [e for e in c.events if e.get("event") == "metrics"]
        self.assertEqual(self._total(events, "m", "hits_total"), 3)
        self.assertEqual(self._total(events, "m", "depth"), 5)
        self.assertEqual(self._total(events, "k", "hits_total"), 0)  # k's wait for the flush
        pending = self._eval(c, "sorted(k[0] for k in registry.snapshot_pending())")
        self.assertEqual(pending, ["k"])


class SmallFrameMetricsTest(MetricsEventTest):
    """A server whose frames are small: what waits goes in several events."""

    args = ("--max-frame-size", "65536")

    def test_many_long_series_go_in_events_under_the_frame_limit(self):
        c = self._asked()
        self._set_flush_interval(c, 3600.0)
        # 300 series of ~300 bytes each: one event of ~90 KB was refused whole.
        self._eval(c, "from pyproxy import metrics\n"
                      "for i in range(300): metrics.counter('wide_total', labels={'v': 'x' * 250 + str(i)})")
        self._eval(c, "registry.flush()")
        events = self._metrics_events(c, lambda ev: self._total(ev, None, "wide_total") == 300)
        self.assertGreater(len(events), 1)

if __name__ == "__main__":
    unittest.main()
