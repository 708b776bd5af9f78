"""Spill-over of large messages through files (protocol §8), Python side.

``configure {spill: {dir, threshold}}`` enables it on one connection. An
incoming frame ``{"id", "$spill": {path, size, md5}}`` is replaced by the
JSON message stored in ``path`` (checked to be inside ``dir``, of the given
size and md5), and the file is deleted whatever happens. An outgoing message
whose encoded JSON is larger than ``threshold`` bytes is written to a new
``0600`` file ``<dir>/py-<connection>-<id>.json`` and the frame carries only
the reference.

Part hashes: when ``configure`` also gives ``partSize`` (the host verifies
them), a reference may carry ``{partSize, md5Parts}`` instead of ``md5``: the
md5 of each ``partSize``-byte part, hashed on two threads at once (one md5
is a serial chain; two parts are not). References with either form are read.

Example::

    settings = SpillSettings.from_wire({"dir": "/dev/shm/pyproxy-x", "threshold": 1 << 20})
    ref = settings.write([b'{"id":7,"ok":true,', b'"result":1}'], "py-c1-7")
    settings.read(ref)  # {"id": 7, "ok": True, "result": 1}; the file is gone
"""

import hashlib
import os
import threading

from .big_json import decode as _decode_json
from .errors import InvalidRequestError, SpillError

__all__ = ["SpillSettings"]

_WRITE_CHUNK = 16 << 20
# hashlib releases the GIL on large inputs, so above this size the md5 runs in a
# thread while json.loads (or the write) proceeds: the check costs no wall time.
_PARALLEL_MD5 = 8 << 20
# Part hashes: above this size the parts are hashed by two threads (each takes
# every other part), below it on the calling thread.
_PARALLEL_PARTS = 2 << 20
# Smallest and largest partSize accepted (as on the host): smaller parts would
# make references long, and larger ones would leave one thread doing the work.
MIN_PART_SIZE = 64 << 10
MAX_PART_SIZE = 1 << 30


class _Md5Thread(threading.Thread):
    """Computes the md5 of ``pieces`` in the background; ``hexdigest()`` joins."""

    def __init__(self, pieces):
        threading.Thread.__init__(self, name="pyproxy-spill-md5", daemon=True)
        self._pieces = pieces
        self._digest = None

    def run(self):
        self._digest = _md5_of(self._pieces).hexdigest()
        self._pieces = None

    def hexdigest(self):
        self.join()
        return self._digest


def _md5_of(pieces):
    md5 = hashlib.md5()
    for piece in pieces:
        md5.update(piece)
    return md5


def _part_views(pieces, part_size):
    """The bytes of ``pieces`` (in order) cut into parts of ``part_size``:
    one list of memoryviews per part; one empty part for no bytes."""
    parts = [[]]
    room = part_size
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while view:
            if room == 0:
                parts.append([])
                room = part_size
            take = view[:room]
            parts[-1].append(take)
            room -= len(take)
            view = view[len(take):]
    return parts


class _PartHashes:
    """The md5 of every part of ``pieces``; ``fields()`` waits for them."""

    def __init__(self, pieces, size, part_size):
        self._part_size = part_size
        parts = _part_views(pieces, part_size)
        self._digests = [None] * len(parts)
        self._threads = []
        if size < _PARALLEL_PARTS:
            self._hash(parts, 0, 1)
            return
        for first in (0, 1):
            thread = threading.Thread(
                target=self._hash, args=(parts, first, 2), name="pyproxy-spill-md5", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _hash(self, parts, first, step):
        digests = self._digests
        for index in range(first, len(parts), step):
            digests[index] = _md5_of(parts[index]).hexdigest()
            parts[index] = None

    def fields(self):
        """The reference fields: ``{"partSize", "md5Parts"}`` (waits for the threads)."""
        for thread in self._threads:
            thread.join()
        return {"partSize": self._part_size, "md5Parts": self._digests}


class _WholeHash:
    """The md5 of all of ``pieces``, in a thread when large; ``fields()`` waits for it."""

    def __init__(self, pieces, size):
        self._md5 = _md5_hex(pieces, size)

    def fields(self):
        return {"md5": self._md5.hexdigest()}


def _file_hash(pieces, size, part_size):
    """Starts hashing ``pieces`` (``size`` bytes): in parts of ``part_size``, or whole when it is None."""
    if part_size is None:
        return _WholeHash(pieces, size)
    return _PartHashes(pieces, size, part_size)


def _same_hashes(fields, ref):
    """True when ``fields`` (``fields()`` of a hash) match the reference's md5 or md5Parts."""
    if "md5Parts" in fields:
        return fields["md5Parts"] == [p.lower() for p in ref["md5Parts"]]
    return fields["md5"] == ref["md5"].lower()


def _md5_hex(pieces, size):
    """An object whose ``hexdigest()`` is the md5 of ``pieces`` (``size`` bytes), in a thread when large."""
    if size < _PARALLEL_MD5:
        return _md5_of(pieces)
    thread = _Md5Thread(pieces)
    thread.start()
    return thread


class SpillSettings:
    """The spill configuration of one connection (``dir`` is a realpath)."""

    __slots__ = ("dir", "threshold", "part_size", "_prefix")

    def __init__(self, directory, threshold, part_size=None):
        self.dir = directory
        self.threshold = threshold
        # Not None: the peer reads part hashes of this size, so written files get them.
        self.part_size = part_size
        self._prefix = directory.rstrip(os.sep) + os.sep

    @classmethod
    def from_wire(cls, value):
        """Validate ``{dir, threshold}`` from ``configure``; ``None`` disables."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise InvalidRequestError("Cannot configure spill: expected {dir, threshold}")
        directory = value.get("dir")
        threshold = value.get("threshold")
        if not isinstance(directory, str) or not directory:
            raise InvalidRequestError("Cannot configure spill: 'dir' must be a string")
        if type(threshold) is not int or threshold < 1:
            raise InvalidRequestError(
                "Cannot configure spill: 'threshold' must be a positive integer"
            )
        part_size = value.get("partSize")
        if part_size is not None and (
            type(part_size) is not int or not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE
        ):
            raise InvalidRequestError(
                "Cannot configure spill: 'partSize' must be an integer from %d to %d"
                % (MIN_PART_SIZE, MAX_PART_SIZE)
            )
        real = os.path.realpath(directory)
        if not os.path.isdir(real):
            raise InvalidRequestError(
                "Cannot configure spill: %r is not a directory" % directory
            )
        return cls(real, threshold, part_size)

    def to_wire(self):
        wire = {"dir": self.dir, "threshold": self.threshold}
        if self.part_size is not None:
            wire["partSize"] = self.part_size
        return wire

    def contains(self, path):
        """True when ``path`` resolves to a file directly or deeper inside ``dir``."""
        return os.path.realpath(path).startswith(self._prefix)

    def read(self, ref):
        """Return the message stored by the peer; delete the file in every case.

        A path outside the spill directory is refused and *not* deleted: this
        side never removes files it does not own. Raises ``SpillError``, or
        ``InvalidRequestError`` for an intact file whose JSON is nested
        too deep for ``json``.
        """
        if not isinstance(ref, dict):
            raise SpillError("Cannot read spill file: '$spill' must be an object")
        path = ref.get("path")
        size = ref.get("size")
        digest = ref.get("md5")
        if not isinstance(path, str) or not self.contains(path):
            raise SpillError("Cannot read spill file: %r is outside the spill directory" % (path,))
        try:
            if type(size) is not int or size < 0:
                raise SpillError("Cannot read spill file: 'size' is required")
            part_size, parts = ref.get("partSize"), ref.get("md5Parts")
            if parts is not None:
                if type(part_size) is not int or not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
                    raise SpillError("Cannot read spill file: 'partSize' must be an integer from %d to %d" % (MIN_PART_SIZE, MAX_PART_SIZE))
                expected = max(1, -(-size // part_size))
                if not isinstance(parts, list) or len(parts) != expected or not all(isinstance(p, str) for p in parts):
                    raise SpillError("Cannot read spill file: 'md5Parts' must be %d md5 strings" % expected)
            elif not isinstance(digest, str):
                raise SpillError("Cannot read spill file: 'md5' or 'md5Parts' is required")
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise SpillError("Cannot read spill file: %s" % exc)
            if len(data) != size:
                raise SpillError(
                    "Cannot read spill file: size %d, expected %d" % (len(data), size)
                )
            # Parsed while the md5 is checked; the message is only returned when it matches.
            hashes = _file_hash((data,), size, None if parts is None else part_size)
            try:
                message = _decode_json(data, False)
            except (ValueError, RecursionError) as exc:
                message = exc
            del data
            if not _same_hashes(hashes.fields(), ref):
                raise SpillError("Cannot read spill file: md5 mismatch")
            if isinstance(message, RecursionError):
                # The file is intact: the message is the problem, as in a frame (connection._too_deep).
                raise InvalidRequestError(
                    "Cannot read spill file: JSON nested deeper than the server's parser allows (%s)" % message
                )
            if isinstance(message, ValueError):
                raise SpillError("Cannot read spill file: invalid JSON (%s)" % message)
            if not isinstance(message, dict):
                raise SpillError("Cannot read spill file: not a JSON object")
            return message
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    def write(self, pieces, name):
        """Write encoded JSON to ``<dir>/<name>.json``; return the reference.

        ``pieces``: ``bytes``, or a list of them written in order (not joined).
        """
        if isinstance(pieces, (bytes, bytearray, memoryview)):
            pieces = (pieces,)
        size = sum(map(len, pieces))
        path = os.path.join(self.dir, name + ".json")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            # A leftover of an earlier process that used the same connection id.
            os.unlink(path)
            fd = os.open(path, flags, 0o600)
        hashes = _file_hash(pieces, size, self.part_size)
        try:
            for piece in pieces:
                view = memoryview(piece).cast("B")
                while view:
                    written = os.write(fd, view[:_WRITE_CHUNK])
                    view = view[written:]
        except BaseException:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            hashes.fields()  # the hash threads end before the pieces go
            raise
        os.close(fd)
        return dict({"path": path, "size": size}, **hashes.fields())
