"""Bytes on the wire (protocol §3, "Bytes"): ``$bytes`` paths and base64.

JSON has no bytes. A message that carries some holds each as a base64
string at its place and names those places in ``"$bytes"``: a list of
paths, each a non-empty list of steps from the message object (a string
for an object key, an integer for an array index), the same steps as the
spill file's segments (§8). ``decode`` turns them back into ``bytes`` in a
message read from the host; ``split`` finds the ``bytes``, ``bytearray``
and ``memoryview`` values of a message to send, which the connection does
only once ``json`` refused the message (a message without bytes never pays
for it).

Example::

    msg = {"id": 1, "cmd": "executeModel", "msg": {"image": "AAE="}, "$bytes": [["msg", "image"]]}
    decode(msg)
    msg["msg"]["image"]   # b"\\x00\\x01"
"""

import base64
import binascii
import json

from . import array_like
from .errors import InvalidRequestError
from .wording import article

__all__ = ["BYTES_TYPES", "decode", "put", "split", "valid_step"]

BYTES_TYPES = (bytes, bytearray, memoryview)

# Containers walked at most looking for bytes: the walk runs only after
# ``json`` failed, but a huge non-JSON value must not be walked for ever.
_MAX_NODES = 1_000_000
_MAX_DEPTH = 1000


def valid_step(step):
    """A step of a path: an object key (str) or an array index (int >= 0, not bool)."""
    return step.__class__ is str or (step.__class__ is int and step >= 0)


def put(message, at, value, expect):
    """Replace the value at path ``at`` of ``message`` (which must be of type
    ``expect``: ``str`` for base64 text, ``NoneType`` for a spill segment)
    with ``value``; returns None, or why it cannot (a short text)."""
    parent = message
    for depth, step in enumerate(at):
        last = depth == len(at) - 1
        if parent.__class__ is dict and step.__class__ is str:
            if step not in parent:
                return "no key %r" % step
        elif parent.__class__ is list and step.__class__ is int:
            if step >= len(parent):
                return "no index %d" % step
        else:
            return "step %r into %s" % (step, article(type(parent).__name__))
        if last:
            if parent[step].__class__ is not expect:
                return "%s, not a %s" % (article(type(parent[step]).__name__), "string" if expect is str else "null")
            parent[step] = value
            return None
        parent = parent[step]
    return "empty path"


def decode(msg):
    """Decode the base64 strings named by ``msg["$bytes"]`` into ``bytes``,
    in place, and remove the ``$bytes`` key. Raises ``InvalidRequestError``
    for a list that is not a list of paths, a path that does not lead to a
    string, or a string that is not base64 (standard alphabet, padded)."""
    paths = msg.pop("$bytes")
    if paths.__class__ is not list:
        raise InvalidRequestError("Cannot read message: '$bytes' must be a list of paths")
    for index, at in enumerate(paths):
        if at.__class__ is not list or not at or not all(valid_step(step) for step in at):
            raise InvalidRequestError(
                "Cannot read message: '$bytes' path %d must be a non-empty list of keys (strings) and indexes (integers >= 0)" % index
            )
        if at[0] == "$bytes":
            raise InvalidRequestError("Cannot read message: '$bytes' path %d names '$bytes' itself" % index)
        problem = _put_decoded(msg, at)
        if problem is not None:
            raise InvalidRequestError("Cannot read message: '$bytes' path %d %s: %s" % (index, _show(at), problem))
    return msg


def _put_decoded(msg, at):
    parent = msg
    for step in at[:-1]:
        try:
            parent = parent[step] if _steps_into(parent, step) else None
        except (IndexError, KeyError):
            parent = None
        if parent is None:
            return "does not exist"
    step = at[-1]
    try:
        text = parent[step] if _steps_into(parent, step) else None
    except (IndexError, KeyError):
        text = None
    if text.__class__ is not str:
        return "does not exist" if text is None else "is %s, not a base64 string" % article(type(text).__name__)
    try:
        parent[step] = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        return "is not base64 (%s)" % exc
    return None


def _steps_into(parent, step):
    return (parent.__class__ is dict and step.__class__ is str) or (parent.__class__ is list and step.__class__ is int)


def _show(at):
    text = repr(at)
    return text if len(text) <= 200 else text[:197] + "..."


def split(value, path, raw=False):
    """``value`` with its ``bytes``/``bytearray``/``memoryview`` values
    replaced, and where they were: ``(copy, [(steps, data), ...])``, or None
    when it holds none (``value`` is never changed). Each replacement is the
    base64 text of the bytes, or ``None`` with ``raw`` (spill segments).
    ``path``: the steps to ``value`` from the message object. Containers
    are dicts (a key that is not a ``str`` is named by the text json writes
    for it), lists and tuples, and their subclasses; only what holds bytes
    is copied; numpy-like values (``array_like``) are walked as their
    ``tolist()``, which replaces them in the copy."""
    found = []
    budget = [_MAX_NODES]
    copy = _rebuild(value, list(path), found, budget, raw, 0)
    if not found:
        return None
    return copy, found


def _rebuild(value, steps, found, budget, raw, depth):
    cls = value.__class__
    if cls in BYTES_TYPES or isinstance(value, BYTES_TYPES):
        data = bytes(value)
        found.append((tuple(steps), data))
        return None if raw else base64.b64encode(data).decode("ascii")
    # Subclasses too (an OrderedDict, a defaultdict, a namedtuple): json writes them.
    is_dict = cls is dict or (cls is not list and cls is not tuple and isinstance(value, dict))
    if is_dict or cls is list or cls is tuple or isinstance(value, (list, tuple)):
        budget[0] -= 1
        if budget[0] < 0 or depth > _MAX_DEPTH:
            return value
        changed = None
        items = value.items() if is_dict else enumerate(value)
        for key, item in items:
            item_cls = item.__class__
            if item_cls is str or item_cls is int or item_cls is float or item is None or item_cls is bool:
                continue
            step = key
            if is_dict and key.__class__ is not str:
                step = _key_text(key)
                if step is None:
                    continue  # json refuses it anyway: no path names it
            steps.append(step)
            new = _rebuild(item, steps, found, budget, raw, depth + 1)
            steps.pop()
            if new is not item:
                if changed is None:
                    changed = dict(value) if is_dict else list(value)
                changed[key] = new
        return value if changed is None else changed
    if array_like.is_array_like(value):
        # A numpy array of bytes (dtype object or S, Triton's BYTES tensors):
        # its tolist() is walked, and replaces it (one conversion, not two).
        try:
            plain = array_like.convert(value)
        except TypeError:
            return value  # the encoder reports it
        return _rebuild(plain, steps, found, budget, raw, depth)
    return value


def _key_text(key):
    """The text json writes for a dict key that is not a ``str`` (``1`` ->
    ``"1"``, ``True`` -> ``"true"``), or None for a key json refuses."""
    cls = key.__class__
    if cls is bool:
        return "true" if key else "false"
    if key is None:
        return "null"
    if cls is int:
        return int.__repr__(key)
    if cls is float:
        return json.dumps(key, allow_nan=True)
    return None
