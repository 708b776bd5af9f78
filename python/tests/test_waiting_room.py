"""WaitingRoom: the connections not authenticated yet, one closed at random
when there are too many (security25: closing the oldest locked the host out
of a flooded server), and the server's accepts per turn of its loop."""

import random
import unittest

from pyproxy_server.server import accept_batch
from pyproxy_server.waiting_room import WaitingRoom


class WaitingRoomTest(unittest.TestCase):
    def test_keeps_cap_and_evicts_one_at_random(self):
        room = WaitingRoom(3, rng=random.Random(7))
        self.assertEqual([room.add(c) for c in "abc"], [None, None, None])
        evicted = [room.add(c) for c in "defghijklmnop"]
        self.assertEqual(len(room), 3)
        self.assertNotIn(None, evicted)
        # Not the oldest each time: with the oldest closed every member was
        # kept for exactly `cap` arrivals, and a flood that brought that many
        # in within the host's round trip closed every connection of the host.
        self.assertNotEqual(evicted, list("abcdefghijklm"))
        kept = [c for c in "abcdefghijklmnop" if c in room]
        self.assertEqual(sorted(kept + evicted), list("abcdefghijklmnop"))

    def test_a_member_outlives_arrivals_with_the_chance_of_random_eviction(self):
        # (1 - 1/16) ** 16, about 0.36: kept past 16 arrivals about a third of
        # the time, where the oldest-first room kept it never.
        rng = random.Random(1)
        survived = 0
        for trial in range(2000):
            room = WaitingRoom(16, rng=rng)
            for i in range(15):
                room.add((trial, i))
            room.add("host")
            for i in range(16):
                room.add((trial, "flood", i))
            survived += "host" in room
        self.assertTrue(0.3 < survived / 2000 < 0.42, survived)

    def test_discard_keeps_the_room_consistent(self):
        rng = random.Random(3)
        room = WaitingRoom(8, rng=rng)
        model = set()
        for i in range(5000):
            if model and rng.random() < 0.4:
                conn = rng.choice(sorted(model))
                room.discard(conn)
                model.discard(conn)
            else:
                evicted = room.add(i)
                if evicted is not None:
                    self.assertIn(evicted, model)
                    model.discard(evicted)
                model.add(i)
            self.assertEqual(len(room), len(model))
            self.assertLessEqual(len(room), 8)
        self.assertTrue(all(c in room for c in model))
        room.discard("absent")  # nothing

    def test_accepts_per_turn_are_an_eighth_of_the_cap_at_most_4(self):
        # asyncio's 100 a turn closed, under a flood, the host's connection in
        # the very turn that accepted it whenever the cap was less; and a turn
        # of 100 closed peers' transports made the host's handshake wait and
        # its TCP connects find room less often (median 0.6 s; 32 ms with 4).
        self.assertEqual([accept_batch(c) for c in (1, 8, 16, 64, 800, 1024, 5000)], [1, 1, 2, 4, 4, 4, 4])


if __name__ == "__main__":
    unittest.main()
