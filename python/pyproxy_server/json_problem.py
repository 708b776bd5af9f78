"""Where a value is not JSON, in words a model author can act on.

``json`` says "Object of type datetime is not JSON serializable" and no more:
not which field of a 40-field result, nor what to do. ``describe_not_json``
walks the value (only after an encode failed: never on the hot path) and
names the first offending place, e.g. ``result.rows[3].when is a
datetime.datetime (use .isoformat())``.
"""

import enum
import math

from . import array_like
from .wording import article

__all__ = ["describe_not_json", "not_json_reason"]

# Visited containers and values at most: a huge value is not walked for ever.
_MAX_NODES = 200_000
# What the host reads as bytes when it says so (binary.BYTES_TYPES).
_BYTES = (bytes, bytearray, memoryview)

_HINTS = (
    (("datetime.datetime", "datetime.date", "datetime.time"), "use .isoformat()"),
    (("decimal.Decimal",), "use float(...) or str(...)"),
    (("builtins.bytes", "builtins.bytearray", "builtins.memoryview"), "use .decode() or base64"),
    (("builtins.set", "builtins.frozenset"), "use list(...)"),
    (("uuid.UUID",), "use str(...)"),
    (("builtins.complex",), "use [z.real, z.imag]"),
)


def _type_name(value):
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else "%s.%s" % (module, cls.__qualname__)


def _hint(value):
    cls = type(value)
    full = "%s.%s" % (cls.__module__, cls.__qualname__)
    for names, hint in _HINTS:
        if full in names:
            return hint
    if hasattr(cls, "__dataclass_fields__"):
        return "use dataclasses.asdict(...)"
    if isinstance(value, enum.Enum):
        return "use .value"
    # Imported here, after an encode failed: not at every server's start.
    import datetime

    if isinstance(value, (datetime.date, datetime.time)):  # pandas.Timestamp, ...
        return "use .isoformat()"
    # The conversions of other libraries' values: torch tensors, pandas
    # Series, array.array (tolist); pandas DataFrames (to_dict); pydantic.
    for method in ("tolist", "to_dict", "model_dump"):
        try:
            found = callable(getattr(value, method, None))
        except Exception:  # a __getattr__ that raises must not replace the error being described
            found = False
        if found:
            return "use .%s()" % method
    return "convert it to a dict, list, str, number, bool or None"


def _key_ok(key):
    return key is None or isinstance(key, (str, int, float, bool))


def _path(root, steps):
    out = [root]
    for key in steps:
        if isinstance(key, int) and not isinstance(key, bool):
            out.append("[%d]" % key)
        elif isinstance(key, str) and key.isidentifier():
            out.append("." + key)
        else:
            out.append("[%r]" % (key,))
    return "".join(out)


def describe_not_json(value, root="result", bytes_ok=False):
    """``"<path> is <what> (<hint>)"`` for the first part of ``value`` that
    ``json`` cannot encode (NaN and infinities included), or None when
    none is found within the first 200,000 parts (or 1,000 levels: a value
    nested deeper fails for its depth, which its error says). A numpy-like
    value (``array_like``) is walked as its ``tolist()``, what is sent. With
    ``bytes_ok`` (the host reads bytes, protocol §3 "Bytes"), ``bytes``,
    ``bytearray`` and ``memoryview`` values are no problem: the one found
    is what made the message fail."""
    # Depth-first, in the order json writes. A frame is [container, its
    # children iterator, the step that led to it]; ``on_path`` holds the ids
    # of the containers being walked (a cycle comes back to one of them).
    if array_like.is_array_like(value):
        value, problem = _plain(value)
        if problem is not None:
            return root + problem
    if not isinstance(value, (dict, list, tuple)):
        return None if bytes_ok and isinstance(value, _BYTES) else _leaf_problem(value, root)
    frames = []
    on_path = set()
    seen = 0

    def enter(container, step):
        on_path.add(id(container))
        children = iter(container.items()) if isinstance(container, dict) else enumerate(container)
        frames.append([container, children, step])

    enter(value, None)
    while frames:
        frame = frames[-1]
        try:
            key, child = next(frame[1])
        except StopIteration:
            frames.pop()
            on_path.discard(id(frame[0]))
            continue
        seen += 1
        if seen > _MAX_NODES or len(frames) > 1000:
            return None
        if isinstance(frame[0], dict) and not _key_ok(key):
            return "%s has a key %r of type %s (keys must be str, int, float, bool or None)" % (
                _path(root, _steps(frames)), key, _type_name(key))
        if isinstance(frame[0], dict) and isinstance(key, float) and not math.isfinite(key):
            # json writes a finite float key as its text ("1.5") but refuses these with
            # "Out of range float values are not JSON compliant", which names nothing.
            return "%s has a key %r (NaN and infinities are not JSON: use a string)" % (
                _path(root, _steps(frames)), key)
        if array_like.is_array_like(child):
            # Walked as what is sent, its tolist(): a NaN in an array is named by its index.
            child, problem = _plain(child)
            if problem is not None:
                return _path(root, _steps(frames) + [key]) + problem
        if isinstance(child, (dict, list, tuple)):
            if id(child) in on_path:
                return "%s refers back to a container it is in (a cycle)" % _path(root, _steps(frames) + [key])
            enter(child, key)
            continue
        if bytes_ok and isinstance(child, _BYTES):
            continue
        problem = _leaf_problem(child, None)
        if problem is not None:
            return _path(root, _steps(frames) + [key]) + problem
    return None


def _plain(value):
    """``(value.tolist(), None)`` of an array-like value, or ``(None, " is
    a <type> (its .tolist() raised ...)")`` when that raised."""
    try:
        return array_like.convert(value), None
    except TypeError as exc:
        cause = exc.__cause__
        if cause is None:  # its tolist() gave its own type back (numpy.longdouble)
            return None, " is %s (%s)" % (article(_type_name(value)), array_like.same_again(value))
        return None, " is %s (its .tolist() raised %s: %s)" % (
            article(_type_name(value)), type(cause).__name__, cause)


def _steps(frames):
    """The keys and indexes from the root to the container being walked."""
    return [f[2] for f in frames[1:]]


def _leaf_problem(item, root):
    """`` is ...`` for a value json cannot write (with ``root`` in front when
    given), else None."""
    if item is None or isinstance(item, (str, bool, int)):
        return None
    if isinstance(item, float):
        if math.isfinite(item):
            return None
        what = " is %r (NaN and infinities are not JSON: use None)" % item
    else:
        what = " is %s (%s)" % (article(_type_name(item)), _hint(item))
    return what if root is None else root + what


def not_json_reason(exc, value, root, bytes_ok=False):
    """Why encoding ``value`` (named ``root``) failed with ``exc``, in words a
    model author can act on: :func:`describe_not_json`'s for a value json
    cannot carry (``bytes_ok``: bytes are not the problem); for one nested too deep (``RecursionError``), that, with
    what stopped it (json recurses once per level of nesting, within
    Python's recursion limit, which since 3.12 is not only
    ``sys.getrecursionlimit()``), instead of json's "maximum recursion depth
    exceeded while encoding a JSON object"."""
    if isinstance(exc, RecursionError):
        return (
            "%s is nested too deep for Python's json (it recurses once per level of nesting, "
            "and Python's recursion limit stopped it): flatten it, or send it as a string" % root
        )
    return describe_not_json(value, root, bytes_ok) or str(exc)
