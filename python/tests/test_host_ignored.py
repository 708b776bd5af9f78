"""The ids of Python -> host requests given up on are dropped once their
replies come, whichever comes first: the reply or the giving up."""

import concurrent.futures
import unittest

from .test_read_batch import ConnectionCase


class HostIgnoredTest(ConnectionCase):
    def give_up_and_answer(self, reply_first):
        """A host request whose wait timed out while its reply arrived; then
        the reply to the cancel. Returns the ids still ignored."""
        out = {}

        async def body(server, conn, transport):
            for rid in range(1000, 1100):
                conn._host_pending[rid] = concurrent.futures.Future()
                before = set(conn._host_ignored)
                if reply_first:
                    # The reply came after the timeout, before _give_up.
                    conn._on_host_reply({"id": rid, "ok": True, "result": None})
                    conn._give_up(rid)
                else:
                    # _give_up, then the reply before the waiting thread's
                    # finally removed the request from _host_pending.
                    conn._give_up(rid)
                    conn._on_host_reply({"id": rid, "ok": True, "result": None})
                conn._host_pending.pop(rid, None)
                for cid in set(conn._host_ignored) - before - {rid}:
                    conn._on_host_reply({"id": cid, "ok": True, "result": {"cancelled": False}})
            out["ignored"] = set(conn._host_ignored)

        self.run_in_process(body)
        return out["ignored"]

    def test_a_reply_before_the_giving_up_leaves_no_id(self):
        self.assertEqual(self.give_up_and_answer(reply_first=True), set())

    def test_a_reply_after_the_giving_up_leaves_no_id(self):
        self.assertEqual(self.give_up_and_answer(reply_first=False), set())


if __name__ == "__main__":
    unittest.main()
