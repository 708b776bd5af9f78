"""JSON with a fast path for big strings (a multi-megabyte ``str`` in a small structure).

The C encoder escapes a string character by character and ``json.loads``
scans it the same way; for a big string with nothing to escape both are
several times slower than a plain UTF-8 encode/decode. ``encode`` takes such
strings (``str`` values longer than ``BIG`` found by a short walk of the
object) out of the object, encodes the small skeleton with the C encoder and
returns pieces whose concatenation is exactly the encoder's output, each big
string's UTF-8 body included without a copy. ``decode`` does the reverse for
data longer than ``BIG_DATA`` bytes: big string literals (object values with
nothing escaped) are cut out, the skeleton is parsed by ``json.loads`` and
each literal is decoded with one UTF-8 decode. Anything unusual takes the
plain path, so results and exceptions are exactly those of the ``json``
module (``json.loads(data.decode("utf-8"))`` for ``decode``).

Example::

    pieces = encode({"id": 7, "ok": True, "result": {"data": "x" * (1 << 20)}})
    # [b'{"id":7,"ok":true,"result":{"data":"', b'xxx...', b'"}}']
    encode_bytes({"id": 7})   # b'{"id":7}'
    decode(b"".join(pieces))["result"]["data"] == "x" * (1 << 20)   # True
"""

import json
import os

from . import array_like

__all__ = [
    "BIG", "BIG_DATA", "Encoded", "decode", "encode", "encode_bytes", "encode_reply",
    "split_big_strings", "without_big_strings",
]

# A str longer than this (characters; bytes for a literal in decode) takes the fast path
# (from about this size on it is several times faster than the C encoder's escaping loop).
BIG = 16 * 1024
# decode() looks for big literals only in data longer than this (bytes).
BIG_DATA = 1 << 20

# numpy-like values (arrays, scalars, tensors) go as their tolist(): the C
# encoder calls ``default`` only for a value it cannot write, so a plain
# message never pays for the check (array_like.py).
_strict = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=array_like.default)
_encode_strict = _strict.encode
# As connection.py encodes error objects: anything goes out, through repr.
_lenient = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr)
_encode_lenient = _lenient.encode


def _direct(encoder):
    """The C encoder behind ``encoder``, made once instead of on every
    ``encode()`` call (that saves ~1.4 µs per small message), without the
    circular-reference markers; ``None`` where the C accelerator is missing."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        return make(
            None, encoder.default, json.encoder.encode_basestring, encoder.indent,
            encoder.key_separator, encoder.item_separator, encoder.sort_keys,
            encoder.skipkeys, encoder.allow_nan,
        )
    except TypeError:
        return None


_direct_strict = _direct(_strict)
_direct_lenient = _direct(_lenient)
_loads = json.loads

# The walk for big strings looks at dict values and list items of containers
# at most this deep (the object itself is depth 1), at most _MAX_NODES of
# them; a container with more items than the budget left is not entered.
_MAX_DEPTH = 4
_MAX_NODES = 64
# decode() takes the plain path after this many quote characters (many small
# strings: the skeleton would be as slow to build as the message to parse).
_MAX_QUOTES = 4096
# Longest backslash run before a quote and whitespace run before a literal
# that decode() follows; longer runs take the plain path.
_MAX_RUN = 64
# Bytes a JSON string body holds unescaped: all but control characters, '"', '\\'.
_SAFE = bytes(i for i in range(256) if i >= 0x20 and i != 0x22 and i != 0x5C)
# The control characters of text (line ends, tabs): escaped by a replace of
# the UTF-8 bytes, as the encoder escapes them (text in lines stays fast).
_TEXT_ESCAPES = ((b"\n", b"\\n"), (b"\r", b"\\r"), (b"\t", b"\\t"))
_TEXT_CONTROLS = b"\n\r\t"
# Checked in slices that stay in the CPU cache.
_CHUNK = 64 * 1024
_WHITESPACE = b" \t\n\r"
_COLON = 0x3A
_BACKSLASH = 0x5C


def encode(obj, lenient=False):
    """``obj`` as compact UTF-8 JSON, in pieces (join them or write them in order).

    The concatenation is ``JSONEncoder(ensure_ascii=False, separators=(",",
    ":"), allow_nan=False).encode(obj).encode()``, except that lone
    surrogates, which UTF-8 cannot hold, are written as JSON escapes
    (``"\\ud800"``), and numpy-like values (``array_like``) as their
    ``tolist()``; ``lenient=True`` encodes anything (``default=repr``,
    NaN allowed). Raises what that raises.
    """
    encoder = _encode_lenient if lenient else _encode_strict
    if _has_big(obj):
        pieces = _encode_big(obj, encoder)
        if pieces is not None:
            return pieces
    direct = _direct_lenient if lenient else _direct_strict
    if direct is not None:
        try:
            return ["".join(direct(obj, 0)).encode()]
        except RecursionError:
            pass  # maybe a circular structure: the encoder below raises its exact error
        except UnicodeEncodeError as exc:
            return [_escape_surrogates(exc)]
    return [_utf8(encoder(obj))]


class Encoded:
    """A result already encoded (the pieces of ``encode``): ``encode_reply``
    puts them in the reply as they are, so a handler that encodes its result
    anyway (to report a precise error) does not pay for it twice.

    Example::

        encode_reply(7, Encoded(encode([1, 2])))   # [b'{"id":7,"ok":true,"result":', b'[1,2]', b'}']
    """

    __slots__ = ("pieces",)

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self):
        """The value back (for tests and logs)."""
        return decode(b"".join(self.pieces))


def encode_reply(rid, result, walk=True, http=None):
    """``encode({"id": rid, "ok": True, "result": result})``; raises what that raises.

    With ``http`` (a dict: the model's status and headers, protocol §6), the
    reply has it as its ``"http"`` field, before ``"result"``.

    Cheaper for the common reply (no big string, an ``int`` id): only
    ``result`` is walked and encoded, the wrapper is formatted around it.
    ``walk=False`` skips the look for big strings (the same bytes, in one
    piece, made the slow way if there is one): for callers that know big
    strings are unlikely. An :class:`Encoded` result goes in as it is.
    """
    if http is not None:
        return _encode_reply_http(rid, result, http)
    if result.__class__ is Encoded:
        head = '{"id":%s,"ok":true,"result":' % (rid if rid.__class__ is int else _encode_strict(rid))
        return [_utf8(head)] + result.pieces + [b"}"]
    direct = _direct_strict
    if direct is not None and rid.__class__ is int and (not walk or not _has_big(result)):
        try:
            return [('{"id":%d,"ok":true,"result":' % rid + "".join(direct(result, 0)) + "}").encode()]
        except RecursionError:
            pass  # maybe a circular structure: encode() raises its exact error
        except UnicodeEncodeError as exc:
            return [_escape_surrogates(exc)]
    return encode({"id": rid, "ok": True, "result": result})


def _encode_reply_http(rid, result, http):
    """``encode_reply`` of a reply with ``http``: the slower general way (few replies have one)."""
    if result.__class__ is Encoded:
        head = '{"id":%s,"ok":true,"http":%s,"result":' % (_encode_strict(rid), _encode_strict(http))
        return [_utf8(head)] + result.pieces + [b"}"]
    return encode({"id": rid, "ok": True, "http": http, "result": result})


def encode_bytes(obj, lenient=False):
    """``encode`` joined into one ``bytes``."""
    pieces = encode(obj, lenient)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def without_big_strings(obj):
    """``obj`` with the big strings ``encode`` would find replaced by ``""``.

    Only the containers on the path to a big string are copied; ``obj`` is
    never changed. For checks that do not depend on the strings' contents
    (``json.dumps`` as an "is it JSON?" test) at a fraction of the cost.
    """
    if not _has_big(obj):
        return obj
    if obj.__class__ is str:
        return ""
    return _rebuild(obj, lambda string, steps: "", [_MAX_NODES], 1)


def split_big_strings(obj, path=()):
    """The big strings ``encode`` would find in ``obj``, taken out with their paths.

    None when the walk finds none (nothing was done: encode ``obj`` as it
    is). Else ``(skeleton, strings)``: ``strings`` is ``[(steps, utf8),
    ...]``, each big string's UTF-8 and its place, ``path`` followed by the
    keys and indexes that lead to it from ``obj`` (a list; just ``path`` for
    ``obj`` itself), and ``skeleton`` is ``obj`` with ``None`` there (only the
    containers on those paths are copied, a tuple as a list; ``obj`` is never
    changed). For string segments of spill files (protocol §8): the encode
    is the only pass over a string, no escaping check, no JSON.

    Left in the skeleton (``strings`` may be empty): a string UTF-8 cannot
    hold (lone surrogates: JSON escapes them), and everything in a dict with
    a key that is not a ``str`` (JSON makes it a string, which another key
    may equal, so a path to it would be ambiguous).
    """
    if not _has_big(obj):
        return None
    found = []

    def take(string, steps):
        try:
            found.append((steps, string.encode()))
        except UnicodeEncodeError:
            return _KEEP  # escaped in the JSON
        return None

    if obj.__class__ is str:
        new = take(obj, list(path))
        return (obj if new is _KEEP else new), found
    return _rebuild(obj, take, [_MAX_NODES], 1, list(path)), found


def decode(data, strict=True):
    """Parse UTF-8 JSON from ``bytes``/``bytearray``/``memoryview``.

    Same result and exceptions as ``json.loads(bytes(data).decode("utf-8"))``.
    ``strict=False`` skips one check: a raw control character (U+0000 to
    U+001F) inside a big string literal is kept rather than refused, which
    saves a pass over the literal's bytes (for spill files, whose md5 proves
    they are what the peer wrote; protocol §8).
    """
    if data.__class__ is memoryview:
        data = data.tobytes()
    if len(data) > BIG_DATA:
        spans = _big_literals(data, strict)
        if spans is not None:
            try:
                return _decode_big(data, spans)
            except (ValueError, RecursionError):
                pass  # the plain path below raises the exact error
    return _loads(str(data, "utf-8"))


# -- encode ------------------------------------------------------------------


def _has_big(obj):
    """True when the bounded walk meets a ``str`` longer than ``BIG``."""
    cls = obj.__class__
    if cls is dict:
        obj = obj.values()
    elif cls is str:
        return len(obj) > BIG
    elif cls is not list and cls is not tuple:
        return False
    size = len(obj)
    return size <= _MAX_NODES and _find_big(obj, _MAX_NODES - size, 1) < 0


def _find_big(values, left, depth):
    """-1 when ``values`` hold a big string (within the walk's bounds), else the nodes left."""
    for value in values:
        cls = value.__class__
        if cls is str:
            if len(value) > BIG:
                return -1
        elif depth < _MAX_DEPTH:
            if cls is dict:
                value = value.values()
            elif cls is not list and cls is not tuple:
                continue
            size = len(value)
            if size <= left:
                left = _find_big(value, left - size, depth + 1)
                if left < 0:
                    return -1
    return left


# Returned by a ``take`` of ``_rebuild``: the string stays where it is.
_KEEP = object()


def _rebuild(value, take, budget, depth, path=None):
    """Copy of container ``value`` with big strings replaced (``value`` itself when none).

    Each big string goes to ``take(string, steps)``, whose result replaces
    it (``_KEEP``: it stays). ``budget`` is a one-item list, the nodes left
    to visit. ``path``: the steps to ``value``, for ``take``, or None when
    nobody needs them; with steps, a dict with a key that is not a ``str``
    is left whole (JSON makes the key a string, which another key may
    equal, so a path into it would be ambiguous).
    """
    is_dict = value.__class__ is dict
    if len(value) > budget[0]:
        return value
    budget[0] -= len(value)
    if path is not None and is_dict:
        for key in value:
            if key.__class__ is not str:
                return value
    copy = None
    for key, item in value.items() if is_dict else enumerate(value):
        cls = item.__class__
        if cls is str:
            if len(item) <= BIG:
                continue
            new = take(item, None if path is None else path + [key])
            if new is _KEEP:
                continue
        elif (cls is dict or cls is list or cls is tuple) and depth < _MAX_DEPTH:
            new = _rebuild(item, take, budget, depth + 1, None if path is None else path + [key])
            if new is item:
                continue
        else:
            continue
        if copy is None:
            copy = dict(value) if is_dict else list(value)
        copy[key] = new
    return value if copy is None else copy


def _encode_big(obj, encoder):
    """Pieces for ``obj`` with its big strings sent as they are; None: use the plain path."""
    nonce = os.urandom(12).hex()
    found = []
    if obj.__class__ is str:
        skeleton = nonce + "-0"
        found.append(obj)
    else:
        marker = nonce + "-%d"

        def take(string, steps):
            found.append(string)
            return marker % (len(found) - 1)

        skeleton = _rebuild(obj, take, [_MAX_NODES], 1)
        if not found:
            return None
    text = encoder(skeleton)
    if text.count(nonce) != len(found):
        return None  # the nonce in the caller's data: never in practice
    pieces = []
    pos = 0
    for index, string in enumerate(found):
        marker = "%s-%d" % (nonce, index)
        at = text.find('"%s"' % marker, pos) + 1
        if at <= 0:
            return None
        pieces.append(_utf8(text[pos:at]))
        try:
            body = _escaped(string.encode())
        except UnicodeEncodeError:
            body = None  # lone surrogates: escaped below
        if body is None:
            body = _utf8(encoder(string)[1:-1])
        pieces.append(body)
        pos = at + len(marker)
    pieces.append(_utf8(text[pos:]))
    return pieces


def _utf8(text):
    """``text`` (JSON from the encoder) as UTF-8; see ``_escape_surrogates``."""
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        return _escape_surrogates(exc)


def _escape_surrogates(exc):
    """The UTF-8 of the JSON text whose ``encode()`` raised ``exc``, with each
    lone surrogate (U+D800 to U+DFFF: a ``str`` from ``os.fsdecode`` or
    ``surrogateescape``, or a JavaScript string sent with one) written as its
    JSON escape ``\\udXXX``: the peer's ``JSON.parse`` gets the same string.

    UTF-8 cannot hold surrogates, and they only occur inside string
    literals of the encoder's output, where ``backslashreplace`` writes
    exactly that escape (a backslash in the string is already doubled, so
    the new one starts an escape of its own)."""
    return exc.object.encode("utf-8", "backslashreplace")


def _escaped(body):
    """The JSON string body for ``body`` (the UTF-8 of a ``str``): ``body``
    itself when nothing needs escaping, line ends and tabs escaped when they
    are all there is to escape, else None (the encoder's turn)."""
    unsafe = body.translate(None, _SAFE)
    if not unsafe:
        return body
    if unsafe.translate(None, _TEXT_CONTROLS):
        return None
    for char, escape in _TEXT_ESCAPES:
        if char in unsafe:
            body = body.replace(char, escape)
    return body


def _clean(data, start, stop):
    """True when ``data[start:stop]`` holds no byte that JSON must escape."""
    if data.__class__ is not bytes:  # slices of bytes translate faster
        data = memoryview(data)
        translate = bytes.translate
        for pos in range(start, stop, _CHUNK):
            end = pos + _CHUNK
            if translate(bytes(data[pos : end if end < stop else stop]), None, _SAFE):
                return False
        return True
    for pos in range(start, stop, _CHUNK):
        end = pos + _CHUNK
        if data[pos : end if end < stop else stop].translate(None, _SAFE):
            return False
    return True


# -- decode ------------------------------------------------------------------


def _big_literals(data, strict=True):
    """``[(start, stop), ...]`` of big plain string literals that are object values.

    ``start``/``stop`` delimit the body (quotes excluded). None when there is
    none, or the data is unusual (many strings, long backslash runs...).
    A plain literal has no escape; ``strict``: and no control character.
    """
    find = data.find
    spans = []
    quotes = 0
    pos = 0
    while True:
        start = find(b'"', pos) + 1
        if start <= 0:
            break
        stop = start
        while True:  # the closing quote: one not escaped by an odd backslash run
            stop = find(b'"', stop)
            quotes += 1
            if stop < 0 or quotes > _MAX_QUOTES:
                return None
            run = 0
            while data[stop - 1 - run] == _BACKSLASH:
                run += 1
                if run > _MAX_RUN:
                    return None
            if not run & 1:
                break
            stop += 1
        quotes += 1
        pos = stop + 1
        if stop - start <= BIG:
            continue
        before = start - 2
        while before >= 0 and data[before] in _WHITESPACE and start - before < _MAX_RUN:
            before -= 1
        if before >= 0 and data[before] == _COLON and (
            _clean(data, start, stop) if strict else data.find(b"\\", start, stop) < 0
        ):
            spans.append((start, stop))
    return spans or None


def _decode_big(data, spans):
    """Parse ``data`` with the literals at ``spans`` decoded apart."""
    nonce = os.urandom(12).hex()
    view = memoryview(data)
    # Every piece is decoded before parsing, as json.loads(data.decode()) would:
    # invalid UTF-8 raises UnicodeDecodeError whatever else is wrong.
    strings = {}
    parts = []
    pos = 0
    for index, (start, stop) in enumerate(spans):
        marker = "%s-%d" % (nonce, index)
        parts.append(str(view[pos:start], "utf-8"))
        parts.append(marker)
        strings[marker] = str(view[start:stop], "utf-8")
        pos = stop
    parts.append(str(view[pos:], "utf-8"))
    view.release()
    for part in parts[::2]:
        if nonce in part:
            raise ValueError("nonce in data")  # never in practice: the plain path

    def swap(obj):
        for key, value in obj.items():
            if value.__class__ is str and value in strings:
                obj[key] = strings[value]
        return obj

    return _loads("".join(parts), object_hook=swap)
