"""Frame parsing and encoding (protocol §2), independent of any connection.

A frame is ``PYPX`` + version byte ``1`` + 16-byte MD5 + 4-byte big-endian
length + payload + the same 16-byte MD5 again.

Example::

    framer = Framer()
    frame = Framer.encode(b'{"id":1,"cmd":"ping"}')
    items = framer.feed(frame[:10]) + framer.feed(frame[10:])
    items  # [b'{"id":1,"cmd":"ping"}']
"""

import hashlib
import struct

from .errors import ChecksumError, FrameError

__all__ = [
    "Framer",
    "FrameError",
    "ChecksumError",
    "MAGIC",
    "VERSION",
    "HEADER",
    "OVERHEAD",
    "md5_digest",
]

MAGIC = b"PYPX"
VERSION = 1
# begin marker, version, checksum, payload length
HEADER = struct.Struct(">4sB16sI")
HEADER_SIZE = HEADER.size  # 25
TRAILER_SIZE = 16
OVERHEAD = HEADER_SIZE + TRAILER_SIZE  # 41

_md5 = hashlib.md5
try:
    # CPython's own MD5 sets up no OpenSSL context per call: 0.5 µs against
    # 1.3 µs on a 100-byte payload (and less code to run after a wake-up).
    # OpenSSL's is faster from about 4 KiB on, and releases the GIL.
    from _md5 import md5 as _small_md5
except ImportError:  # a build without it
    _small_md5 = _md5
# Payloads below this size are hashed by ``_small_md5``.
SMALL_MD5_MAX = 4096
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack


def md5_digest(payload):
    """The 16-byte MD5 digest of ``payload`` (bytes): CPython's own MD5 below
    ``SMALL_MD5_MAX`` bytes, OpenSSL's from there on.

    Example::

        md5_digest(b"") == bytes.fromhex("d41d8cd98f00b204e9800998ecf8427e")  # True
    """
    return (_small_md5 if len(payload) < SMALL_MD5_MAX else _md5)(payload).digest()


class Framer:
    """Incremental frame parser for one byte stream.

    ``feed(data)`` returns the payloads of every frame completed by ``data``,
    in order: a ``bytes``/``bytearray`` payload per good frame and a
    ``ChecksumError`` instance per frame whose payload does not match its MD5
    (recoverable: the frame length was trusted, the stream stays aligned). A
    fatal error (begin marker, version, length above ``max_frame_size``, end
    marker) raises ``FrameError``; the caller must close the stream and never
    feed this framer again.

    Cost: a chunk that holds only whole frames is parsed in place (one copy
    per payload, needed by ``json.loads``); partial data is kept in one
    ``bytearray`` that grows by appending, so a frame spread over many chunks
    costs linear time, never quadratic.
    """

    # Largest accepted payload in bytes (protocol default: 64 MiB).
    MAX_FRAME_SIZE = 64 * 1024 * 1024

    __slots__ = ("max_frame_size", "_buf")

    def __init__(self, max_frame_size=None):
        self.max_frame_size = (
            self.MAX_FRAME_SIZE if max_frame_size is None else int(max_frame_size)
        )
        self._buf = bytearray()

    @property
    def buffered(self):
        """Number of bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def single(self, data):
        """The payload when ``data`` is exactly one whole, intact frame and
        nothing is buffered (what a sequential client sends), else ``None``:
        then ``feed(data)`` gives the items and errors as usual. Consumes
        nothing; skips ``feed``'s loop for the most common read."""
        length = len(data) - OVERHEAD
        if length < 0 or self._buf or length > self.max_frame_size:
            return None
        magic, version, digest, declared = _unpack_header(data, 0)
        if declared != length or magic != MAGIC or version != VERSION:
            return None
        payload = bytes(data[HEADER_SIZE : HEADER_SIZE + length])
        if data[HEADER_SIZE + length :] != digest or md5_digest(payload) != digest:
            return None
        return payload

    def feed(self, data):
        """Consume ``data`` (bytes-like); return the list of completed items."""
        buf = self._buf
        view = False
        if buf:
            buf += data
            src = buf
        elif data.__class__ is memoryview:
            # A view of a reused receive buffer: parsed in place, payloads copied out.
            src = data
            view = True
        else:
            if not isinstance(data, (bytes, bytearray)):
                data = bytes(data)
            src = data
        out = []
        pos = 0
        end_of_data = len(src)
        limit = self.max_frame_size
        while end_of_data - pos >= HEADER_SIZE:
            magic, version, digest, length = _unpack_header(src, pos)
            if magic != MAGIC:
                raise FrameError("Cannot decode frame: bad begin marker %r" % magic)
            if version != VERSION:
                raise FrameError("Cannot decode frame: unknown version %d" % version)
            if length > limit:
                raise FrameError(
                    "Cannot decode frame: length %d above limit %d" % (length, limit)
                )
            start = pos + HEADER_SIZE
            stop = start + length
            if stop + TRAILER_SIZE > end_of_data:
                break
            if src[stop : stop + TRAILER_SIZE] != digest:
                raise FrameError("Cannot decode frame: end marker differs from checksum")
            payload = bytes(src[start:stop]) if view else src[start:stop]
            if md5_digest(payload) != digest:
                out.append(ChecksumError("Cannot verify frame: md5 mismatch"))
            else:
                out.append(payload)
            pos = stop + TRAILER_SIZE
        if pos != end_of_data and end_of_data - pos < HEADER_SIZE:
            self._check_partial_header(src, pos, end_of_data)
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < end_of_data:
            buf += memoryview(data)[pos:]
        return out

    @staticmethod
    def _check_partial_header(src, pos, end):
        # Garbage is refused as soon as its first bytes arrive, not when a
        # whole header has trickled in.
        have = end - pos
        if have <= 0:
            return
        head = bytes(src[pos : pos + min(have, 5)])
        if not MAGIC.startswith(head[:4]):
            raise FrameError("Cannot decode frame: bad begin marker %r" % head[:4])
        if have >= 5 and head[4] != VERSION:
            raise FrameError("Cannot decode frame: unknown version %d" % head[4])

    @staticmethod
    def encode(payload):
        """Return the whole frame for ``payload`` (bytes) as one ``bytes``."""
        digest = md5_digest(payload)
        return b"".join((_pack_header(MAGIC, VERSION, digest, len(payload)), payload, digest))

    @staticmethod
    def encode_into(parts, payload):
        """Append the frame's pieces to ``parts`` (join them once per write)."""
        digest = md5_digest(payload)
        parts.append(_pack_header(MAGIC, VERSION, digest, len(payload)))
        parts.append(payload)
        parts.append(digest)
