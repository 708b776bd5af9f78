"""A call cancelled while it starts a thread (``threading.Thread.start``):
up to Python 3.11 the cancel's interrupt, injected by thread id, could go to
the thread being started (its state bears its starter's id until it runs),
which died of it before it signalled its start, and the call waited in
``start`` for ever (``ShieldedThreadStart``)."""

import contextvars
import threading
import unittest

from pyproxy_server.call import current_call
from pyproxy_server.execution import _interrupt_thread
from pyproxy_server.shielded_thread_start import ShieldedThreadStart

from ._client import ServerProcess
from .test_eval import FakeCall, FakeConnection, FakeServer

# Starts (and joins) threads until cancelled; prints once it started one.
STARTER = """
import threading

class Starter:
    def execute(self, msg):
        told = False
        while True:
            t = threading.Thread(target=int)
            t.start()
            t.join()
            if not told:
                print("starting threads", flush=True)
                told = True
"""


class ShieldedThreadStartTest(unittest.TestCase):
    def test_needed_up_to_3_11(self):
        self.assertTrue(ShieldedThreadStart.needed((3, 9, 0)))
        self.assertTrue(ShieldedThreadStart.needed((3, 11, 7)))
        self.assertFalse(ShieldedThreadStart.needed((3, 12, 0)))

    @unittest.skipUnless(ShieldedThreadStart.needed(), "Python 3.12+ gives a new thread's state its own id")
    def test_a_call_is_shielded_while_it_starts_a_thread_and_its_cancel_raised_after(self):
        original = threading.Thread.start
        self.addCleanup(setattr, threading.Thread, "start", original)
        ShieldedThreadStart.install()
        self.assertFalse(ShieldedThreadStart.install())  # once
        call = FakeCall(FakeConnection(FakeServer()), 1, {})
        seen = {}

        class Spy(threading.Thread):
            def run(self):
                # The new thread runs while its starter is still in start():
                # a cancel that comes now (CallRunner.cancel's steps) is due,
                # not injected, while the starter is shielded.
                with call.lock:
                    call.interrupted = True
                    seen["shielded"] = call.shielded
                    if not call.shielded:
                        _interrupt_thread(call.thread_ident)
                seen["ran"] = True

        def code():
            call.thread_ident = threading.get_ident()
            current_call.set(call)
            spy = Spy()
            try:
                spy.start()
            except KeyboardInterrupt:
                seen["raised"] = True
            spy.join()
            seen["after"] = call.shielded

        thread = threading.Thread(target=contextvars.Context().run, args=(code,))
        original(thread)  # the test's own thread: not a call's
        thread.join(10)
        self.assertEqual(seen, {"shielded": True, "ran": True, "raised": True, "after": False})


class ThreadStartCancelTest(unittest.TestCase):
    def setUp(self):
        self.server = ServerProcess()
        self.addCleanup(self.server.kill)
        self.c = self.server.connect()
        self.c.call("addModel", name="starter", source=STARTER)

    def test_a_call_starting_threads_ends_at_its_cancel(self):
        # A thread starting threads in a loop took 1 to 57 cancels to hang
        # for good on 3.11 (chaos41); 100 cancelled calls each reply.
        for rid in range(100, 200):
            # On a call thread (never inline, on the loop's, where no cancel
            # interrupts it).
            self.c.send({"id": rid, "cmd": "executeModel", "name": "starter", "msg": {}, "threaded": True})
            msg = self.c.recv(10)  # its print: it is starting threads
            self.assertEqual((msg.get("event"), msg.get("request")), ("log", rid), msg)
            self.c.send({"id": rid + 1000, "cmd": "cancel", "target": rid})
            reply = self.c.reply_for(rid, timeout=5)
            self.assertFalse(reply["ok"])
            self.assertEqual(reply["error"]["type"], "CancelledError", reply["error"])
        # The worker still serves, no call thread stuck.
        status = self.c.call("serverStatus")
        self.assertEqual(status["threads"]["stuck"], 0, status["threads"])


if __name__ == "__main__":
    unittest.main()
