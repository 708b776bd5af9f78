"""Spill-over of large messages through files (protocol §8), Python side.

``configure {spill: {dir, threshold}}`` enables it on one connection. An
incoming frame ``{"id", "$spill": {path, size, md5}}`` is replaced by the
JSON message stored in ``path`` (checked to be inside ``dir``, of the given
size and md5), and the file is deleted whatever happens. An outgoing message
whose encoded JSON is larger than ``threshold`` bytes is written to a new
``0600`` file ``<dir>/py-<connection>-<id>.json`` and the frame carries only
the reference.

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


def _md5_hex(pieces, size):
    """An object whose ``hexdigest()`` is the md5 of ``pieces`` (``size`` bytes), in a thread when large."""
    if size < _PARALLEL_MD5:
        return _md5_of(pieces)
    thread = _Md5Thread(pieces)
    thread.start()
    return thread


class SpillSettings:
    """The spill configuration of one connection (``dir`` is a realpath)."""

    __slots__ = ("dir", "threshold", "_prefix")

    def __init__(self, directory, threshold):
        self.dir = directory
        self.threshold = threshold
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
        real = os.path.realpath(directory)
        if not os.path.isdir(real):
            raise InvalidRequestError(
                "Cannot configure spill: %r is not a directory" % directory
            )
        return cls(real, threshold)

    def to_wire(self):
        return {"dir": self.dir, "threshold": self.threshold}

    def contains(self, path):
        """True when ``path`` resolves to a file directly or deeper inside ``dir``."""
        return os.path.realpath(path).startswith(self._prefix)

    def read(self, ref):
        """Return the message stored by the peer; delete the file in every case.

        A path outside the spill directory is refused and *not* deleted: this
        side never removes files it does not own.
        """
        if not isinstance(ref, dict):
            raise SpillError("Cannot read spill file: '$spill' must be an object")
        path = ref.get("path")
        size = ref.get("size")
        digest = ref.get("md5")
        if not isinstance(path, str) or not self.contains(path):
            raise SpillError("Cannot read spill file: %r is outside the spill directory" % (path,))
        try:
            if type(size) is not int or not isinstance(digest, str):
                raise SpillError("Cannot read spill file: 'size' and 'md5' are required")
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
            md5 = _md5_hex((data,), len(data))
            try:
                message = _decode_json(data)
            except ValueError as exc:
                message = exc
            del data
            if md5.hexdigest() != digest.lower():
                raise SpillError("Cannot read spill file: md5 mismatch")
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
        md5 = _md5_hex(pieces, size)
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
            md5.hexdigest()
            raise
        os.close(fd)
        return {"path": path, "size": size, "md5": md5.hexdigest()}
