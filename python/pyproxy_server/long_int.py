"""Integers longer than Python converts from text, found in a message ``json`` refused.

Python (3.11, and the 3.9/3.10 security releases) converts at most
``sys.get_int_max_str_digits()`` digits (4300 by default) from text to an
``int``: ``json.loads`` raises ``ValueError`` for a longer integer literal,
as it does for malformed JSON. The host writes integers of any size (its
``integers: "bigint"``), so a peer can send one: the message is then
well-formed, and its request must get an error reply of its own rather
than the connection's ``ProtocolError`` (which the host treats as fatal,
failing every call on it). ``decode(data)`` parses it again with each such
integer replaced by a ``LongInt`` marker; ``find(msg)`` returns the first
marker in a message. Only used after ``json`` raised: nothing on the path
of a good message.

Example::

    msg = decode(b'{"id":3,"cmd":"executeModel","msg":{"n":1' + b"0" * 5000 + b'}}')
    find(msg).digits   # 5001
"""

import json
import sys

__all__ = ["LongInt", "decode", "find", "describe"]


class LongInt:
    """An integer literal of ``digits`` digits that ``int()`` refused."""

    __slots__ = ("digits",)

    def __init__(self, digits):
        self.digits = digits

    def __repr__(self):
        return "LongInt(%d)" % self.digits


def _int_or_marker(text):
    try:
        return int(text)
    except ValueError:
        return LongInt(len(text.lstrip("-")))


def decode(data):
    """The message of UTF-8 JSON ``data`` with overlong integers as ``LongInt``
    markers, or ``None`` when it has none (or is not JSON anyway: the caller
    reports its own error)."""
    try:
        msg = json.loads(str(data, "utf-8"), parse_int=_int_or_marker)
    except (ValueError, RecursionError):
        return None
    return msg if find(msg) is not None else None


def find(value):
    """The first ``LongInt`` in ``value`` (walked without recursion), or ``None``."""
    stack = [value]
    while stack:
        value = stack.pop()
        cls = value.__class__
        if cls is LongInt:
            return value
        if cls is dict:
            stack.extend(value.values())
        elif cls is list:
            stack.extend(value)
    return None


def describe(found):
    """Why a message holding ``found`` cannot be read."""
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    return (
        "an integer of %d digits, more than this Python converts from text (%d: "
        "sys.set_int_max_str_digits in the model's code raises it)" % (found.digits, limit)
    )
