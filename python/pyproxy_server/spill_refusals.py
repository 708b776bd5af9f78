"""Spill files the file system refused: which refusals send a message
inline instead, and a bounded warning about them (protocol §8).

A full ``/dev/shm`` (64 MiB in a container by default), a quota, a
read-only or vanished directory refuse every large reply: with the message
within the frame limit, it goes inline (the spill-over is each side's
choice; no wire change) and the server log says so, at most once per
``INTERVAL`` seconds with a count of the refusals in between, since at
hundreds of replies a second one line each would flood the log.

Example::

    refusals = SpillRefusals()
    if refusals.inline_after(exc, size, max_frame, spill.dir):
        ...  # send inline
"""

import errno
import logging
import os
import threading
import time

__all__ = ["REFUSALS", "SpillRefusals", "free_bytes", "refused_message"]

log = logging.getLogger("pyproxy_server.spill")

# Out of space (a full /dev/shm, a quota, RLIMIT_FSIZE) or a directory that
# takes no files any more (read-only, permissions changed, removed by a
# cleaner). Not EIO and the like: a failing device is reported as it is.
REFUSALS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM", "ENOENT")
    if hasattr(errno, name)
)


def free_bytes(directory):
    """Bytes free to this user on the file system of ``directory``, or None."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


class SpillRefusals:
    """Counts and logs (bounded) one server's refused spill files."""

    # Seconds after a warning within which further refusals are only counted.
    INTERVAL = 60.0

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        # Replies are encoded on call threads too.
        self._lock = threading.Lock()
        self._since = None
        self._counted = 0
        # Refused writes, and of those the messages sent inline instead.
        self.failures = 0
        self.inline = 0

    def inline_after(self, exc, size, max_frame, directory):
        """For ``exc``, an ``OSError`` writing a spill file in ``directory``
        of a message of ``size`` bytes: True when it goes inline instead (a
        refusal, and ``size`` within ``max_frame``); else False, and the
        caller reports ``message(exc, ...)``. Logs (bounded) every refusal."""
        if getattr(exc, "errno", None) not in REFUSALS:
            return False
        inline = size <= max_frame
        with self._lock:
            self.failures += 1
            if inline:
                self.inline += 1
            now = self._clock()
            if self._since is not None and now - self._since < self.INTERVAL:
                self._counted += 1
                return inline
            before, self._counted, self._since = self._counted, 0, now
        log.warning(
            "spill-over: cannot write a spill file in %s (%s): %s%s",
            directory,
            exc.strerror or exc,
            "the message (%d bytes) went inline instead" % size if inline
            else "the message (%d bytes) failed: above the frame limit %d, it cannot go inline" % (size, max_frame),
            "" if before == 0 else " (%d more refused in the %d s before, not logged)" % (before, self.INTERVAL),
        )
        return inline


def refused_message(exc, size, max_frame, directory):
    """The ``SpillError`` message of a refused spill file whose message
    cannot go inline: the directory, the reason and the free space there."""
    free = free_bytes(directory) if getattr(exc, "errno", None) in REFUSALS else None
    text = "Cannot write spill file in %s: %s" % (directory, exc.strerror or exc)
    if free is not None:
        text += " (%d bytes free there)" % free
    if getattr(exc, "errno", None) in REFUSALS:
        text += "; the message's %d bytes are above the frame limit %d, so it cannot go inline" % (size, max_frame)
    return text
