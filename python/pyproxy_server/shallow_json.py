"""The top level of JSON nested too deep for the ``json`` module, read without recursion.

``json`` parses recursively and raises ``RecursionError`` beyond about
``sys.getrecursionlimit()`` levels (~1000). To answer such a message rather
than drop it (or close the connection), the server still needs its ``id``
and ``cmd``, or the items of a batch frame: ``members(data)`` reads the
top-level object of UTF-8 JSON ``data`` and returns its scalar members
parsed and its container members as ``Nested`` spans; ``items(nested)``
splits such an array into its items. Only used after ``json``
raised, so it costs nothing on the normal path; containers are skipped with
C-level loops (``bytes.count``, ``itertools.accumulate``), a few ms per MB
after one pass over the strings (one regex match each, never retried:
linear in the size of ``data`` whatever it holds, as it must be since it
reads what nobody validated).

Not a validator: inside a container brackets are counted, not matched
(``[1}`` passes), so a malformed message that is also too deep may be
answered as a too-deep one. What it cannot follow raises ``ValueError``.

Example::

    data = b'{"id":3,"cmd":"executeModel","msg":' + b"[" * 5000 + b"]" * 5000 + b"}"
    found = members(data)
    found["id"], found["cmd"]   # (3, 'executeModel')
    found["msg"]                # Nested(35, 10035)
"""

import itertools
import json
import operator
import re

__all__ = ["Nested", "members", "items"]

_WS = re.compile(rb"[ \t\n\r]*")
# A string: from its opening quote to its closing one or, if unterminated, to
# the end (or a lone backslash there). Nothing in it can fail, so a match
# never backtracks and ``finditer`` matches each string once: every scan
# stays linear. (A pattern that needs the closing quote fails after reading
# to the end, and ``sub`` retried it at every later quote: quadratic on a run
# of ``\\"`` with no closing quote, a 160 KB frame took minutes.)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
# Its inside, up to the closing quote (if any).
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.S)
_SCALAR = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null")
_BRACKETS = re.compile(rb"[\[\]{}]")
_BLANK = bytes(0x20 if b in b"[]{}" else b for b in range(256))
# Largest slice _close looks at in one go.
_MAX_SLICE = 4096
# Each byte's depth change plus one (translate cannot make negative numbers):
# 2 for an opening bracket, 0 for a closing one, 1 for anything else.
_WEIGHTS = bytes(2 if b in b"[{" else 0 if b in b"]}" else 1 for b in range(256))


class Nested:
    """A container value at ``data[start:stop]`` (not parsed)."""

    __slots__ = ("start", "stop", "_scan")

    def __init__(self, start, stop, scan=None):
        self.start = start
        self.stop = stop
        self._scan = scan

    def __repr__(self):
        return "Nested(%d, %d)" % (self.start, self.stop)


def members(data):
    """``{key: value}`` of the top-level object of ``data`` (UTF-8 JSON bytes):
    strings, numbers, booleans and nulls parsed, arrays and objects as
    ``Nested``. Raises ``ValueError`` when ``data`` is not one object (as far
    as it can tell)."""
    if data.__class__ is not bytes:
        data = bytes(data)  # bytes.find and friends; a bytes payload is not copied
    scan = _Scan(data)
    pos = scan.ws(0)
    if data[pos : pos + 1] != b"{":
        raise ValueError("Cannot scan JSON: not an object")
    found = {}
    pos = scan.ws(pos + 1)
    if data[pos : pos + 1] == b"}":
        return scan.end(pos + 1, found)
    while True:
        if data[pos : pos + 1] != b'"':
            raise ValueError("Cannot scan JSON: expected a key at %d" % pos)
        stop = _string_end(data, pos)
        key = data[pos:stop]
        pos = scan.ws(stop)
        if data[pos : pos + 1] != b":":
            raise ValueError("Cannot scan JSON: expected ':' at %d" % pos)
        pos = scan.ws(pos + 1)
        stop = scan.value(pos)
        if data[pos] in b"[{":
            value = Nested(pos, stop, scan)
        else:
            value = json.loads(data[pos:stop])
        found[json.loads(key)] = value
        pos = scan.ws(stop)
        char = data[pos : pos + 1]
        if char == b"}":
            return scan.end(pos + 1, found)
        if char != b",":
            raise ValueError("Cannot scan JSON: expected ',' or '}' at %d" % pos)
        pos = scan.ws(pos + 1)


def items(nested):
    """The UTF-8 JSON of each item of the array ``nested`` (from ``members``), in order."""
    scan = nested._scan
    data = scan.data
    pos = nested.start
    if data[pos : pos + 1] != b"[":
        raise ValueError("Cannot scan JSON: not an array")
    spans = []
    pos = scan.ws(pos + 1)
    if data[pos : pos + 1] == b"]":
        return spans
    while True:
        stop = scan.value(pos)
        spans.append(data[pos:stop])
        pos = scan.ws(stop)
        char = data[pos : pos + 1]
        if char == b"]":
            return spans
        if char != b",":
            raise ValueError("Cannot scan JSON: expected ',' or ']' at %d" % pos)
        pos = scan.ws(pos + 1)


class _Scan:
    """Positions in one ``data``; where brackets in strings are blanked (a copy
    only if some string holds one) is worked out on first need."""

    __slots__ = ("data", "_neutral")

    def __init__(self, data):
        self.data = data
        self._neutral = None

    def ws(self, pos):
        return _WS.match(self.data, pos).end()

    def end(self, pos, found):
        if self.ws(pos) != len(self.data):
            raise ValueError("Cannot scan JSON: extra data at %d" % pos)
        return found

    def value(self, pos):
        """The end of the value starting at ``pos``."""
        data = self.data
        char = data[pos : pos + 1]
        if char == b"[" or char == b"{":
            neutral = self._neutral
            if neutral is None:
                neutral = self._neutral = _neutral(data)
            return _close(neutral, pos)
        if char == b'"':
            return _string_end(data, pos)
        match = _SCALAR.match(data, pos)
        if match is None:
            raise ValueError("Cannot scan JSON: unexpected character at %d" % pos)
        return match.end()


def _close(neutral, pos):
    """The end of the container opening at ``neutral[pos]``.

    Slices are looked at with ``bytes.count`` and skipped while they hold
    fewer closing brackets than the depth (they cannot close it); the
    others are walked byte by byte in C: depth after byte ``i`` of a slice
    is ``depth + sum(weights[:i + 1]) - (i + 1)``. Slices grow from 64
    bytes, so a small container costs little.
    """
    depth = 0
    size = 64
    start = pos
    end = len(neutral)
    while start < end:
        part = neutral[start : start + size]
        closes = part.count(b"]") + part.count(b"}")
        if closes >= depth:
            steps = map(operator.sub, itertools.accumulate(part.translate(_WEIGHTS)), itertools.count(1))
            try:
                return start + operator.indexOf(steps, -depth) + 1
            except ValueError:
                pass
        depth += part.count(b"[") + part.count(b"{") - closes
        start += len(part)
        if size < _MAX_SLICE:
            size *= 2
    raise ValueError("Cannot scan JSON: unclosed container at %d" % pos)


def _string_end(data, pos):
    """The end of the string opening at ``data[pos]`` (a quote)."""
    stop = _STRING_BODY.match(data, pos + 1).end()
    if data[stop : stop + 1] != b'"':
        raise ValueError("Cannot scan JSON: unterminated string at %d" % pos)
    return stop + 1


def _neutral(data):
    """``data`` with the brackets inside strings blanked (brackets there do not
    count), or ``data`` itself when no string holds one.

    One pass: outside strings the next quote opens a string, which is
    matched once to its end (``_STRING`` cannot fail, so ``finditer`` never
    retries inside one).
    """
    spans = None
    bracket = _BRACKETS.search
    match = None
    for match in _STRING.finditer(data):
        start, stop = match.span()
        if bracket(data, start, stop) is not None:
            if spans is None:
                spans = []
            spans.append((start, stop))
    if match is not None:
        _string_end(data, match.start())  # only the last one can be unterminated
    if spans is None:
        return data
    neutral = bytearray(data)
    for start, stop in spans:
        neutral[start:stop] = neutral[start:stop].translate(_BLANK)
    return neutral
