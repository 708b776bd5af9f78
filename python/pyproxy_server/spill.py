"""Spill-over of large messages through files (protocol §8), Python side.

``configure {spill: {dir, threshold}}`` enables it on one connection. An
incoming frame ``{"id", "$spill": {path, size, md5}}`` is replaced by the
JSON message stored in ``path`` (checked to be inside ``dir``, of the given
size and md5, holding the stub's ``id``), and the file is deleted whatever
happens (unless ``path`` is outside ``dir``: never ours). An outgoing message
whose encoded JSON is larger than ``threshold`` bytes is written to a new
``0600`` file ``<dir>/py-<connection>-<id>.json`` and the frame carries only
the reference.

Part hashes: when ``configure`` also gives ``partSize`` (the host verifies
them), a reference may carry ``{partSize, md5Parts}`` instead of ``md5``: the
md5 of each ``partSize``-byte part, hashed on two threads at once (one md5
is a serial chain; two parts are not). References with either form are read.

CRC-32: when ``configure`` gives ``crc32: true`` (and this Python has
``zlib``), written references carry ``{"crc32": <int>}``, the ``zlib.crc32``
of the whole file, instead of an md5: a spill file never leaves the machine,
and the CRC catches truncation and corruption as well at a fifteenth of the
cost. A reference with several checksums is checked against the first of
``md5Parts``, ``md5``, ``crc32``; every form is read whatever was configured.

String segments: when ``configure`` gives ``strings: true``, a reply may be
written as its JSON with ``null`` in place of each big string, followed by
the strings' raw UTF-8 (``write(..., strings=[(path, utf8), ...])``); the
reference says where: ``{"json": <bytes of JSON>, "strings": [{"at": [steps
from the message], "offset", "length"}, ...]}``. Neither side escapes or
scans those strings. ``read`` accepts such references whatever was
configured, and checks what §8 asks (paths that lead to a ``null``, bytes
inside ``[json, size]``, no overlap, strict UTF-8).

Example::

    settings = SpillSettings.from_wire({"dir": "/dev/shm/pyproxy-x", "threshold": 1 << 20})
    ref = settings.write([b'{"id":7,"ok":true,', b'"result":1}'], "py-c1-7")
    settings.read(ref)  # {"id": 7, "ok": True, "result": 1}; the file is gone
    ref = settings.write([b'{"id":8,"ok":true,"result":null}'], "py-c1-8",
                         strings=[(["result"], "text".encode())])
    settings.read(ref)  # {"id": 8, "ok": True, "result": "text"}
"""

import functools
import hashlib
import io
import os
import threading

try:
    import zlib
except ImportError:  # a Python built without zlib: no crc32 (md5 only)
    zlib = None

from . import long_int
from .big_json import decode as _decode_json
from .errors import InvalidRequestError, SpillError, short_repr
from .wording import count

__all__ = ["SpillSettings"]

_WRITE_CHUNK = 16 << 20

# FileIO's opener for spill files (0600). Both are C functions: no Python
# bytecode runs between the open and the file object owning the descriptor,
# so a cancel's KeyboardInterrupt can never strand it.
_open_private = functools.partial(os.open, mode=0o600)
# hashlib releases the GIL on large inputs, so above this size the md5 runs in a
# thread while json.loads (or the write) proceeds: the check costs no wall time.
_PARALLEL_MD5 = 8 << 20
# Part hashes: above this size the parts are hashed by two threads (each takes
# every other part), below it on the calling thread.
_PARALLEL_PARTS = 2 << 20
# CRC-32 (zlib releases the GIL on large inputs): above this size it runs in a
# thread beside the write or the decoding (10 MB: write 7.9 -> 5.4 ms, read
# 8.2 -> 7.1 ms on 2 cores), below it on the calling thread.
_PARALLEL_CRC = 2 << 20
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


class _Crc32:
    """The CRC-32 of all of ``pieces`` (chained ``zlib.crc32``), in a thread
    when large; ``fields()`` waits for it."""

    def __init__(self, pieces, size):
        self._pieces = pieces
        self._crc = None
        self._thread = None
        if size < _PARALLEL_CRC:
            self._run()
        else:
            self._thread = threading.Thread(target=self._run, name="pyproxy-spill-crc32", daemon=True)
            self._thread.start()

    def _run(self):
        crc = 0
        crc32 = zlib.crc32
        for piece in self._pieces:
            crc = crc32(piece, crc)
        self._crc = crc
        self._pieces = None

    def fields(self):
        if self._thread is not None:
            self._thread.join()
        return {"crc32": self._crc}


def _file_hash(pieces, size, part_size, crc32=False):
    """Starts hashing ``pieces`` (``size`` bytes): a CRC-32 when ``crc32``,
    else md5 in parts of ``part_size``, or whole when it is None."""
    if crc32:
        return _Crc32(pieces, size)
    if part_size is None:
        return _WholeHash(pieces, size)
    return _PartHashes(pieces, size, part_size)


def _same_hashes(fields, ref):
    """True when ``fields`` (``fields()`` of a hash) match the reference's md5, md5Parts or crc32."""
    if "md5Parts" in fields:
        return fields["md5Parts"] == [p.lower() for p in ref["md5Parts"]]
    if "crc32" in fields:
        return fields["crc32"] == ref["crc32"]
    return fields["md5"] == ref["md5"].lower()


def _checksum(ref, size):
    """The checksum a reference is checked against, the first of md5Parts, md5
    and crc32 (§8): ``(part_size, crc32)`` for ``_file_hash``, ``(None,
    False)`` for a whole md5. Raises ``SpillError`` when it is malformed."""
    parts = ref.get("md5Parts")
    if parts is not None:
        part_size = ref.get("partSize")
        if type(part_size) is not int or not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise SpillError("Cannot read spill file: 'partSize' must be an integer from %d to %d" % (MIN_PART_SIZE, MAX_PART_SIZE))
        expected = max(1, -(-size // part_size))
        if not isinstance(parts, list) or len(parts) != expected or not all(isinstance(p, str) for p in parts):
            raise SpillError("Cannot read spill file: 'md5Parts' must be %d md5 strings" % expected)
        return part_size, False
    digest = ref.get("md5")
    if digest is not None:
        if not isinstance(digest, str):
            raise SpillError("Cannot read spill file: 'md5' must be a string")
        return None, False
    crc = ref.get("crc32")
    if crc is not None:
        if type(crc) is not int or not 0 <= crc <= 0xFFFFFFFF:
            raise SpillError("Cannot read spill file: 'crc32' must be an integer from 0 to 4294967295")
        if zlib is None:
            raise SpillError("Cannot read spill file: crc32 is not supported: no zlib")
        return None, True
    raise SpillError("Cannot read spill file: 'md5', 'md5Parts' or 'crc32' is required")


def _valid_step(step):
    """A step of a segment's path: an object key (str) or an array index (int >= 0, not bool)."""
    cls = step.__class__
    return cls is str or (cls is int and step >= 0)


def _segments(ref, size):
    """The string and bytes segments of a reference (§8): None when it has
    none, else ``(json, [(index, at, offset, length, kind), ...])`` sorted by
    offset (``kind``: ``"string"`` or ``"bytes"``), checked to lie inside
    ``[json, size]`` without overlapping. Raises ``SpillError``."""
    json_size = ref.get("json")
    strings = ref.get("strings")
    blobs = ref.get("bytes")
    if json_size is None and strings is None and blobs is None:
        return None
    if json_size is None or (strings is None and blobs is None):
        raise SpillError("Cannot read spill file: 'json' and 'strings' go together (and 'json' and 'bytes')")
    if type(json_size) is not int or not 0 <= json_size <= size:
        raise SpillError("Cannot read spill file: 'json' must be an integer from 0 to the size %d" % size)
    segments = []
    for kind, field, entries in (("string", "strings", strings), ("bytes", "bytes", blobs)):
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise SpillError("Cannot read spill file: '%s' must be a list" % field)
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise SpillError("Cannot read spill file: %s segment %d: not an object" % (kind, index))
            at, offset, length = entry.get("at"), entry.get("offset"), entry.get("length")
            if not isinstance(at, list) or not at or not all(_valid_step(step) for step in at):
                raise SpillError(
                    "Cannot read spill file: %s segment %d: 'at' must be a non-empty list of keys (strings) and indexes (integers >= 0)" % (kind, index)
                )
            if type(offset) is not int or type(length) is not int:
                raise SpillError("Cannot read spill file: %s segment %d: 'offset' and 'length' must be integers" % (kind, index))
            if offset < json_size or length < 0 or offset + length > size:
                raise SpillError(
                    "Cannot read spill file: %s segment %d: bytes [%d, %d) outside [%d, %d]" % (kind, index, offset, offset + length, json_size, size)
                )
            segments.append((index, at, offset, length, kind))
    segments.sort(key=lambda segment: segment[2])
    for before, after in zip(segments, segments[1:]):
        if after[2] < before[2] + before[3]:
            if before[4] == after[4]:
                what = "%s segments %d and %d" % (before[4], before[0], after[0])
            else:
                what = "%s segment %d and %s segment %d" % (before[4], before[0], after[4], after[0])
            raise SpillError("Cannot read spill file: %s overlap" % what)
    return json_size, segments


def _too_long(data, exc):
    """What to report for JSON that ``json`` refused with ``exc``: an
    ``InvalidRequestError`` when it is well-formed but holds an integer longer
    than Python converts (``long_int``; as in a frame), else ``exc``."""
    found = long_int.decode(data)
    if found is None:
        return exc
    return InvalidRequestError("Cannot read spill file: " + long_int.describe(long_int.find(found)), unread=True)


def _decode_segmented(data, json_size, segments):
    """The message of a segmented file, or the exception to report once the
    checksum matched: ``ValueError``/``RecursionError`` of the JSON part,
    ``SpillError`` of a segment. A non-object message is returned as it is."""
    try:
        message = _decode_json(data[:json_size], False)
    except RecursionError as exc:
        return exc
    except ValueError as exc:
        return _too_long(data[:json_size], exc)
    if message.__class__ is not dict:
        return message
    view = memoryview(data)
    try:
        # In the reference's order (segments are sorted by offset): of two
        # segments at one path, the second listed is the one reported.
        # Strings first, then bytes, each in the reference's order.
        for index, at, offset, length, kind in sorted(segments, key=lambda segment: (segment[4] != "string", segment[0])):
            if kind == "bytes":
                text = bytes(view[offset:offset + length])
            else:
                try:
                    # Strict UTF-8 straight from the file's bytes; a leading U+FEFF stays a character.
                    text = str(view[offset:offset + length], "utf-8")
                except UnicodeDecodeError:
                    return SpillError("Cannot read spill file: string segment %d: invalid UTF-8" % index)
            problem = _put(message, at, text)
            if problem is not None:
                return SpillError("Cannot read spill file: %s segment %d at %s: %s" % (kind, index, short_repr(at, 200), problem))
    finally:
        view.release()
    return message


def _put(message, at, text):
    """Replaces the ``null`` at path ``at`` of ``message`` by ``text``; None, or what is wrong."""
    node = message
    last = len(at) - 1
    for depth, step in enumerate(at):
        if node.__class__ is dict:
            if step.__class__ is not str:
                return "step %d is the index %d, but the value there is an object" % (depth, step)
            if step not in node:
                return "no key %s at step %d" % (short_repr(step, 60), depth)
        elif node.__class__ is list:
            if step.__class__ is not int:
                return "step %d is the key %s, but the value there is an array" % (depth, short_repr(step, 60))
            if step >= len(node):
                return "no index %d at step %d (the array has %s)" % (step, depth, count(len(node), "item"))
        else:
            return "step %d: not an object or array" % depth
        if depth == last:
            if node[step] is not None:
                return "the value there is not null"
            node[step] = text
            return None
        node = node[step]


def _write_all(f, pieces):
    """Write ``pieces`` to the file object ``f``, in chunks.

    Not inlined in ``SpillSettings.write``: from Python 3.12 on, an injected
    exception firing at a loop's back jump is looked up in the exception
    table at an instruction the compiler left out of it, so it skips the
    handlers of the very frame that loops (CPython gh-108214) and left the
    file behind. Raised here, it reaches write's cleanup through the call.
    """
    write = f.write
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while view:
            written = write(view[:_WRITE_CHUNK])
            view = view[written:]


def _md5_hex(pieces, size):
    """An object whose ``hexdigest()`` is the md5 of ``pieces`` (``size`` bytes), in a thread when large."""
    if size < _PARALLEL_MD5:
        return _md5_of(pieces)
    thread = _Md5Thread(pieces)
    thread.start()
    return thread


_NO_ID = object()  # SpillSettings.read: the message in the file has no id


def _same_id(found, expected):
    """True when two JSON ids are the same value, as JavaScript's ``===``
    sees them (``1`` and ``1.0`` are, ``1`` and ``true`` are not)."""
    return found == expected and (found.__class__ is bool) == (expected.__class__ is bool)


class SpillSettings:
    """The spill configuration of one connection (``dir`` is a realpath)."""

    __slots__ = ("dir", "threshold", "part_size", "crc32", "strings", "bytes", "_prefix")

    def __init__(self, directory, threshold, part_size=None, crc32=False, strings=False, binary=False):
        self.dir = directory
        self.threshold = threshold
        # Not None: the peer reads part hashes of this size, so written files get them.
        self.part_size = part_size
        # True: the peer reads CRC-32 references, and this side can compute them;
        # written files then get a crc32 instead of md5 (it takes precedence).
        self.crc32 = bool(crc32) and zlib is not None
        # True: the peer reads string segments, so big strings of replies go that way.
        self.strings = bool(strings)
        # True: the peer reads bytes segments, so the bytes of replies go to the file raw.
        self.bytes = bool(binary)
        self._prefix = directory.rstrip(os.sep) + os.sep

    @classmethod
    def from_wire(cls, value):
        """Validate ``{dir, threshold, partSize?, crc32?, strings?}`` from ``configure``; ``None`` disables.

        ``crc32`` and ``strings`` are booleans: the forms the host reads. Each
        is kept when this server supports it too (``to_wire`` echoes it).
        """
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
        for flag in ("crc32", "strings", "bytes"):
            if flag in value and value[flag].__class__ is not bool:
                raise InvalidRequestError("Cannot configure spill: '%s' must be a boolean" % flag)
        real = os.path.realpath(directory)
        if not os.path.isdir(real):
            raise InvalidRequestError(
                "Cannot configure spill: %r is not a directory" % directory
            )
        return cls(real, threshold, part_size, value.get("crc32", False), value.get("strings", False),
                   value.get("bytes", False))

    def to_wire(self):
        """The settings for the ``configure`` reply: what this side reads and writes."""
        wire = {"dir": self.dir, "threshold": self.threshold}
        if self.part_size is not None:
            wire["partSize"] = self.part_size
        if self.crc32:
            wire["crc32"] = True
        if self.strings:
            wire["strings"] = True
        if self.bytes:
            wire["bytes"] = True
        return wire

    def contains(self, path):
        """True when ``path`` resolves to a file directly or deeper inside ``dir``."""
        try:
            real = os.path.realpath(path)
            # A NUL or a lone surrogate (JSON carries both) names no file, and
            # os functions raise ValueError for it, not OSError (realpath
            # itself from 3.10 on): such a reference was never answered.
            if "\0" in real:
                return False
            os.fsencode(real)
        except ValueError:
            return False
        return real.startswith(self._prefix)

    def discard_name(self, name):
        """Deletes ``<dir>/<name>.json`` if it exists: a file this side wrote
        (``write(pieces, name)``) whose stub was never sent."""
        try:
            os.unlink(os.path.join(self.dir, name + ".json"))
        except OSError:
            pass

    def discard(self, ref):
        """Deletes the file of a reference that will not be read (its request
        was cancelled before it ran); a path outside the spill directory is
        left alone, as ``read`` leaves it."""
        path = ref.get("path") if isinstance(ref, dict) else None
        if isinstance(path, str) and self.contains(path):
            try:
                os.unlink(path)
            except OSError:
                pass

    def read(self, ref, stub=None):
        """Return the message stored by the peer; delete the file in every case.

        Any checksum form (``md5``, ``md5Parts``, ``crc32``) and string
        segments (``json`` + ``strings``) are read, whatever was configured.
        A path outside the spill directory is refused and *not* deleted: this
        side never removes files it does not own. ``stub``: the frame that
        carried ``ref``; when it has an ``id``, the message in the file must
        carry the same ``id`` (protocol §8), or the server would answer a
        request under an id its frame did not name; when it has a ``cmd``,
        the same ``cmd``. Raises
        ``SpillError``, or ``InvalidRequestError`` for an intact file whose
        JSON is nested too deep for ``json``.
        """
        if not isinstance(ref, dict):
            raise SpillError("Cannot read spill file: '$spill' must be an object")
        path = ref.get("path")
        size = ref.get("size")
        if not isinstance(path, str) or not self.contains(path):
            raise SpillError("Cannot read spill file: %r is outside the spill directory" % (path,))
        try:
            if type(size) is not int or size < 0:
                raise SpillError("Cannot read spill file: 'size' is required")
            part_size, crc32 = _checksum(ref, size)
            segments = _segments(ref, size)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise SpillError("Cannot read spill file: %s" % exc)
            if len(data) != size:
                raise SpillError(
                    "Cannot read spill file: size %d, expected %d" % (len(data), size)
                )
            # Parsed while the checksum is computed; the message is only returned when it matches.
            hashes = _file_hash((data,), size, part_size, crc32)
            if segments is None:
                try:
                    message = _decode_json(data, False)
                except RecursionError as exc:
                    message = exc
                except ValueError as exc:
                    message = _too_long(data, exc)
            else:
                message = _decode_segmented(data, segments[0], segments[1])
            del data
            if not _same_hashes(hashes.fields(), ref):
                raise SpillError("Cannot read spill file: %s mismatch" % ("crc32" if crc32 else "md5"))
            if isinstance(message, (SpillError, InvalidRequestError)):
                raise message
            if isinstance(message, RecursionError):
                # The file is intact: the message is the problem, as in a frame (connection._too_deep).
                raise InvalidRequestError(
                    "Cannot read spill file: JSON nested deeper than the server's parser allows (%s)" % message,
                    unread=True,
                )
            if isinstance(message, ValueError):
                raise SpillError("Cannot read spill file: invalid JSON (%s)" % message)
            if not isinstance(message, dict):
                raise SpillError("Cannot read spill file: not a JSON object")
            if stub is not None and "id" in stub:
                found = message.get("id", _NO_ID)
                if not _same_id(found, stub["id"]):
                    raise SpillError("Cannot read spill file: it holds message %s, expected %s" % (
                        "without an id" if found is _NO_ID else short_repr(found, 40), short_repr(stub["id"], 40)))
            if stub is not None and "cmd" in stub and message.get("cmd") != stub["cmd"]:
                # The stub's cmd chose the handler (or the thread that reads the file).
                raise SpillError("Cannot read spill file: it holds command %s, expected %s" % (
                    short_repr(message.get("cmd"), 40), short_repr(stub["cmd"], 40)))
            return message
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass

    def write(self, pieces, name, strings=None, blobs=None):
        """Write encoded JSON to ``<dir>/<name>.json``; return the reference.

        ``pieces``: ``bytes``, or a list of them written in order (not joined).
        ``strings``: string segments (only to a peer that reads them,
        ``self.strings``): ``[(path, utf8), ...]``, each the UTF-8 of a string
        that ``pieces`` hold as ``null`` at ``path`` (a list of keys and
        indexes from the message); their bytes follow the JSON, and the
        reference says where (``json``, ``strings``). ``blobs``: bytes
        segments (only to a peer that reads them, ``self.bytes``):
        ``[(path, data), ...]``, the same for ``bytes`` values (``bytes``).
        """
        if isinstance(pieces, (bytes, bytearray, memoryview)):
            pieces = (pieces,)
        size = sum(map(len, pieces))
        segments = None
        byte_segments = None
        if strings is not None or blobs is not None:
            pieces = list(pieces)
            offset = size
            if strings is not None:
                segments, offset = _append_segments(pieces, strings, offset)
            if blobs is not None:
                byte_segments, offset = _append_segments(pieces, blobs, offset)
            json_size, size = size, offset
        path = os.path.join(self.dir, name + ".json")
        # A cancel's KeyboardInterrupt lands at any bytecode (in the hash
        # threads' start and join too) and must leave neither the file nor its
        # descriptor behind. So the open is in the try, and gives a file
        # object, not a bare descriptor: one interrupted right as the open
        # returns, before ``f`` holds it, closes when dropped.
        f = None
        hashes = None
        try:
            try:
                f = io.FileIO(path, "xb", opener=_open_private)
            except FileExistsError:
                # A leftover of an earlier process that used the same connection id.
                os.unlink(path)
                f = io.FileIO(path, "xb", opener=_open_private)
            hashes = _file_hash(pieces, size, self.part_size, self.crc32)
            _write_all(f, pieces)
            fields = hashes.fields()
            f.close()
            ref = dict({"path": path, "size": size}, **fields)
            if segments is not None or byte_segments is not None:
                ref["json"] = json_size
            if segments is not None:
                ref["strings"] = segments
            if byte_segments is not None:
                ref["bytes"] = byte_segments
            return ref
        except BaseException:
            if f is not None:
                f.close()
            try:
                os.unlink(path)  # the name is this side's own (connection and id)
            except OSError:
                pass
            if hashes is not None:
                hashes.fields()  # the hash threads end before the pieces go
            raise


def _append_segments(pieces, bodies, offset):
    """Appends each ``(at, body)`` of ``bodies`` to ``pieces`` from ``offset``
    on: its segment entries (protocol §8, ``strings``/``bytes``) and the
    offset after them."""
    segments = []
    for at, body in bodies:
        segments.append({"at": list(at), "offset": offset, "length": len(body)})
        offset += len(body)
        pieces.append(body)
    return segments, offset
