"""A model's host call (``Connection.request``) cancelled at each place where
CPython may raise the cancel's interrupt: the loop thread must still settle
the call's host request (its reply, or the cancel failing it).

``concurrent.futures.Future.result`` enters the future's
``threading.Condition``; an interrupt that fired right after its lock was
taken left the lock held for ever, and the loop thread, failing the call's
host futures right after the cancel (or setting the reply), blocked on it
for good."""

import asyncio
import sys
import threading
import time

from pyproxy_server.call import RUNNING, Call
from pyproxy_server.errors import HostError
from pyproxy_server.execution import fail_future

from .test_eval import _no_gc, _opcode_events, _traced_cancel
from .test_read_batch import ConnectionCase


class HostCallCancelTest(ConnectionCase):
    def _cancel_at(self, conn, step):
        """Runs a host call on a thread of its own, cancelled at the
        ``step``-th place where an interrupt may fire; then does on other
        threads what the loop thread does: answers the host request, and
        after the cancel fails the call's host futures. False when the call
        ended before the cancel came."""
        call = Call(conn, step, "executeModel", {"id": step, "cmd": "executeModel"})
        call.state = RUNNING
        call.cancelled  # made now: the trace function must not wait for the lock
        pending = set(conn._host_pending)
        state, tracer = _traced_cancel(call, step)

        def run():
            call.thread_ident = threading.get_ident()
            sys.settrace(tracer)
            try:
                conn.request("echo", {"x": 1}, timeout=10, call=call)
            except (HostError, KeyboardInterrupt):
                pass
            finally:
                sys.settrace(None)

        def on_other_thread(what, fn):
            done = threading.Thread(target=fn, daemon=True)
            done.start()
            done.join(5)
            self.assertFalse(done.is_alive(), "cancelled at place %d: %s hangs" % (step, what))

        thread = threading.Thread(target=run, daemon=True)
        answered = followed = False
        with _no_gc():
            thread.start()
            deadline = time.monotonic() + 10
            while not followed and time.monotonic() < deadline:
                alive = thread.is_alive()
                if state["came"]:
                    followed = True  # CallRunner.cancel, after the interrupt
                    on_other_thread("failing its host futures", lambda: [
                        fail_future(f, HostError("cancelled")) for f in state["host_futures"]
                    ])
                new = set(conn._host_pending) - pending
                if new and not answered:
                    answered = True
                    rid = new.pop()
                    on_other_thread("the host's reply", lambda: conn._on_host_reply({"id": rid, "ok": True, "result": 1}))
                if not alive:
                    break
                thread.join(0.001)
            thread.join(10)
        self.assertFalse(thread.is_alive(), "the host call cancelled at place %d hangs" % step)
        return state["came"]

    def test_the_loop_settles_host_requests_whichever_place_the_cancel_interrupts(self):
        if not _opcode_events():
            self.skipTest("this Python sends no opcode trace events (3.12.0 and 3.12.1)")
        out = {}

        def all_steps(conn):
            step = 0
            while self._cancel_at(conn, step + 1):
                step += 1
            out["steps"] = step

        async def body(server, conn, transport):
            await asyncio.get_running_loop().run_in_executor(None, all_steps, conn)

        self.run_in_process(body)
        self.assertGreater(out["steps"], 30)
