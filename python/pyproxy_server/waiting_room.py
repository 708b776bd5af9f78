"""The connections a server keeps while they have not authenticated yet: at
most ``cap`` of them, one more closing one of those already waiting, chosen
at random.

Random, not the oldest: a local process flooding the socket opens
connections faster than the host, which authenticates within one round trip
of its connect, answers; with the oldest closed, every connection was kept
for exactly ``cap`` arrivals, and once a flood brought ``cap`` in within the
host's round trip the host never got in (2 of 200 host connects at a cap of
16 over a worker's Unix socket, each host try cut 8 times in a row). At
random, a connection outlives ``n`` arrivals with a chance of
``(1 - 1/cap) ** n``: the host's tries each have a fair one. Nor the
newest: refusing newcomers let a flood that keeps the room full lock out
every connect of the host (security24).

Example::

    room = WaitingRoom(16)
    dropped = room.add(conn)  # a connection closed to make room, or None
    room.discard(conn)  # authenticated, or closed
"""

import random

__all__ = ["WaitingRoom"]


class WaitingRoom:
    """A set of at most ``cap`` connections with O(1) add, discard and
    random eviction."""

    def __init__(self, cap, rng=None):
        self.cap = cap
        self._members = []
        self._index = {}
        # Which connection is closed is the only output: a flood learns too
        # little from it to predict the generator.
        self._rng = random.Random() if rng is None else rng

    def __len__(self):
        return len(self._members)

    def __contains__(self, conn):
        return conn in self._index

    def add(self, conn):
        """Keep ``conn``; when ``cap`` are waiting already, remove one of
        them at random and return it (the caller closes it), else None."""
        evicted = None
        if len(self._members) >= self.cap:
            evicted = self._members[self._rng.randrange(len(self._members))]
            self.discard(evicted)
        self._index[conn] = len(self._members)
        self._members.append(conn)
        return evicted

    def discard(self, conn):
        """Forget ``conn`` (authenticated, or closed); nothing if absent."""
        at = self._index.pop(conn, None)
        if at is None:
            return
        last = self._members.pop()
        if last is not conn:
            self._members[at] = last
            self._index[last] = at
