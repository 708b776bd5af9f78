"""Declared ``inputs`` with constraints (and ``outputs``): read and refused when a model loads.

A field of ``inputs`` is a type name (``"number"``, ``"integer?"``: the
string forms) or a dict of constraints, a small JSON Schema subset that the
gateway checks before each call (docs/models.md, "Constraints")::

    inputs = {
        "p": {"type": "number", "minimum": 0, "maximum": 1},
        "mode": {"enum": ["fast", "exact"]},
        "name": {"type": "string", "maxLength": 200, "pattern": "^[a-z]+$"},
        "points": {"type": "array", "items": "number", "minItems": 3},
    }

Anything outside the subset is refused here, naming the field and the
keyword, so that no constraint is silently left unchecked: the host reads
the declaration again with the same rules (``src/gateway/_field_declaration.ts``
and ``_pattern.ts``). Patterns are a regular subset that the gateway matches
in linear time; they are parsed here, never run.
"""

import math

__all__ = ["read_inputs", "read_outputs", "DeclarationError", "TYPES", "OUTPUT_DATATYPES"]

# Type names of the string forms (each also with a trailing ``?``).
TYPES = frozenset(("number", "integer", "string", "boolean", "array", "object", "any"))

# Levels of ``items`` and ``properties`` below a top-level field, at most.
MAX_DEPTH = 8
# Dict forms in a declaration, with every field inside them, at most.
MAX_CONSTRAINED_FIELDS = 1000
# Values of one ``enum``, at most.
MAX_ENUM_VALUES = 256
# Characters of a ``description``, or of an ``enum`` string, at most.
MAX_TEXT = 1000
# The longest pattern (characters), the largest automaton it may compile to
# on the host (counted repeats are copied), the largest n or m of {n,m}.
MAX_PATTERN_LENGTH = 1000
MAX_PATTERN_STATES = 2000
MAX_REPEAT = 1000
# Groups inside groups, at most (a recursive descent: Python's stack).
MAX_GROUP_DEPTH = 100
# Automaton states of a declaration's patterns in all (their memory on the host).
MAX_PATTERN_STATES_TOTAL = 20000
# Integers and bounds the host reads exactly (a JSON number is a double there).
MAX_SAFE = 2**53 - 1

_COMMON = ("type", "optional", "nullable", "description", "enum")
_RANGE = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_KEYWORDS = {
    "number": _RANGE,
    "integer": _RANGE,
    "string": ("minLength", "maxLength", "pattern"),
    "array": ("items", "minItems", "maxItems"),
    "object": ("properties", "additionalProperties"),
    "boolean": (),
    "any": (),
}
_ALL_KEYWORDS = frozenset(k for ks in _KEYWORDS.values() for k in ks)

# Declared outputs are not checked (they describe a result): their dict forms
# take what describes a tensor, nothing that would read as a check.
_OUTPUT_KEYWORDS = ("type", "optional", "nullable", "description", "items", "datatype", "labels")
# An output's class labels (the classification extension: "score:index:label").
MAX_LABELS = 1 << 20
# The Open Inference Protocol datatypes an output's element type may name
# (``/v2`` answers it so, and its metadata says it).
OUTPUT_DATATYPES = {
    "number": ("FP16", "FP32", "FP64"),
    "integer": ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"),
    "boolean": ("BOOL",),
    "string": ("BYTES",),
}


class DeclarationError(ValueError):
    """A declared field outside the supported subset; the message names it."""


def _fail(path, what):
    raise DeclarationError("%s: %s" % (".".join(path), what))


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def read_inputs(declared):
    """Check ``declared`` (a dict of field name to field) and return a copy.

    Raises ``DeclarationError`` naming the field and the keyword when a
    field is neither a type name nor a dict form the gateway checks.
    """
    if not isinstance(declared, dict):
        raise DeclarationError("expected a dict of field name to field")
    return _read(declared, _Reader())


def read_outputs(declared):
    """Check declared ``outputs`` and return a copy.

    The string forms, or dict forms of ``type``, ``items`` (arrays: one
    dimension each in ``/v2`` metadata), ``description``, ``optional``,
    ``nullable``, ``datatype`` (the element type's Open Inference
    Protocol datatype: ``"FP32"`` for a number...) and, on an output of type
    ``array``, ``labels`` (its classes' names, for the classification
    extension). Constraints are refused:
    nothing checks a result against them. Raises ``DeclarationError``.
    """
    if not isinstance(declared, dict):
        raise DeclarationError("expected a dict of field name to field")
    return _read(declared, _Reader(outputs=True))


def _read(declared, reader):
    out = {}
    for name, field in declared.items():
        if not isinstance(name, str):
            raise DeclarationError("field names must be strings, not %r" % (name,))
        out[name] = reader.field(field, [name], 0, False)
    return out


class _Reader:
    def __init__(self, outputs=False):
        self.count = 0
        self.states = 0
        self.outputs = outputs

    def field(self, declared, path, depth, in_array):
        if isinstance(declared, str):
            optional = declared.endswith("?")
            type_ = declared[:-1] if optional else declared
            if depth > 0:
                self.count += 1
            if type_ not in TYPES:
                _fail(path, "unknown type %r (expected one of %s, with a trailing ? for an optional field)"
                      % (declared, ", ".join(sorted(TYPES))))
            if optional and in_array:
                _fail(path, "an array's items cannot be optional")
            return declared
        if not isinstance(declared, dict):
            _fail(path, "expected a type name or a dict of constraints, not %s" % type(declared).__name__)
        return self._dict_form(declared, path, depth, in_array)

    def _dict_form(self, d, path, depth, in_array):
        self.count += 1
        if self.count > MAX_CONSTRAINED_FIELDS:
            _fail(path, "more than %d constrained fields in the declaration" % MAX_CONSTRAINED_FIELDS)
        if depth > MAX_DEPTH:
            _fail(path, "nested deeper than %d levels" % MAX_DEPTH)
        # "type": None is refused (not read as a missing type), as the host does.
        type_ = d.get("type")
        if self.outputs:
            return self._output_form(d, type_, path, depth, in_array)
        if "type" not in d:
            if "enum" not in d:
                _fail(path, "'type' is required (or 'enum')")
            type_ = "any"
        elif not isinstance(type_, str) or type_ not in TYPES:
            _fail(path, "'type' must be one of %s" % ", ".join(sorted(TYPES)))
        allowed = _COMMON + _KEYWORDS[type_]
        for key in d:
            if key not in allowed:
                if key in _ALL_KEYWORDS:
                    _fail(path, "'%s' does not apply to type %r" % (key, type_))
                _fail(path, "unsupported keyword %r" % (key,))
        out = {}
        for key, value in d.items():
            out[key] = value
        for key in ("optional", "nullable", "additionalProperties"):
            if key in d and not isinstance(d[key], bool):
                _fail(path, "'%s' must be True or False" % key)
        if d.get("optional") and in_array:
            _fail(path, "an array's items cannot be optional")
        if "description" in d and (not isinstance(d["description"], str) or len(d["description"]) > MAX_TEXT):
            _fail(path, "'description' must be a string of at most %d characters" % MAX_TEXT)
        if "enum" in d:
            out["enum"] = self._enum(d["enum"], type_, path)
        for key in _RANGE:
            if key not in d:
                continue
            n = d[key]
            if not _is_number(n) or not math.isfinite(n):
                _fail(path, "'%s' must be a finite number" % key)
            if abs(n) > MAX_SAFE:
                _fail(path, "'%s' must be within ±2^53" % key)
            if key == "multipleOf" and not n > 0:
                _fail(path, "'multipleOf' must be above 0")
        if ("minimum" in d and "exclusiveMinimum" in d) or ("maximum" in d and "exclusiveMaximum" in d):
            _fail(path, "give 'minimum' or 'exclusiveMinimum' (and 'maximum' or 'exclusiveMaximum'), not both")
        low = d.get("minimum", d.get("exclusiveMinimum"))
        high = d.get("maximum", d.get("exclusiveMaximum"))
        if low is not None and high is not None and (
            low > high or (low == high and ("minimum" not in d or "maximum" not in d))
        ):
            _fail(path, "no number is within the bounds (%s to %s)" % (low, high))
        if type_ == "integer" and low is not None and high is not None:
            first = math.ceil(low) if "minimum" in d else math.floor(low) + 1
            last = math.floor(high) if "maximum" in d else math.ceil(high) - 1
            if first > last:
                _fail(path, "no integer is within the bounds (%s to %s)" % (low, high))
        for key in ("minLength", "maxLength", "minItems", "maxItems"):
            if key not in d:
                continue
            n = d[key]
            if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n > MAX_SAFE:
                _fail(path, "'%s' must be an integer >= 0" % key)
        if d.get("minLength", 0) > d.get("maxLength", math.inf):
            _fail(path, "'minLength' is above 'maxLength'")
        if d.get("minItems", 0) > d.get("maxItems", math.inf):
            _fail(path, "'minItems' is above 'maxItems'")
        if "pattern" in d:
            if not isinstance(d["pattern"], str):
                _fail(path, "'pattern' must be a string")
            try:
                self.states += check_pattern(d["pattern"])
            except DeclarationError as e:
                _fail(path, "'pattern' %r: %s" % (d["pattern"], e))
            if self.states > MAX_PATTERN_STATES_TOTAL:
                _fail(path, "'pattern': the declaration's patterns have more than %d automaton states in all"
                      % MAX_PATTERN_STATES_TOTAL)
        if "items" in d:
            out["items"] = self.field(d["items"], path + ["items"], depth + 1, True)
        if "properties" in d:
            props = d["properties"]
            if not isinstance(props, dict):
                _fail(path, "'properties' must be a dict of field name to field")
            out["properties"] = {}
            for name, field in props.items():
                if not isinstance(name, str):
                    _fail(path, "'properties' names must be strings, not %r" % (name,))
                out["properties"][name] = self.field(field, path + [name], depth + 1, False)
        return out

    def _output_form(self, d, type_, path, depth, in_array):
        if "type" not in d:
            _fail(path, "'type' is required")
        if not isinstance(type_, str) or type_ not in TYPES:
            _fail(path, "'type' must be one of %s" % ", ".join(sorted(TYPES)))
        for key in d:
            if key not in _OUTPUT_KEYWORDS:
                _fail(path, "'%s' does not apply to outputs (a result is not checked against its declaration)"
                      % (key,))
        for key in ("optional", "nullable"):
            if key in d and not isinstance(d[key], bool):
                _fail(path, "'%s' must be True or False" % key)
        if d.get("optional") and in_array:
            _fail(path, "an array's items cannot be optional")
        if "description" in d and (not isinstance(d["description"], str) or len(d["description"]) > MAX_TEXT):
            _fail(path, "'description' must be a string of at most %d characters" % MAX_TEXT)
        out = dict(d)
        if "labels" in d:
            labels = d["labels"]
            if depth > 0 or type_ != "array":
                _fail(path, "'labels' applies to an output of type 'array' (its classes), not to its items")
            if not isinstance(labels, (list, tuple)) or len(labels) > MAX_LABELS or not all(
                isinstance(label, str) and len(label) <= MAX_TEXT for label in labels
            ):
                _fail(path, "'labels' must be a list of at most %d strings of at most %d characters"
                      % (MAX_LABELS, MAX_TEXT))
            out["labels"] = list(labels)
        if "datatype" in d:
            allowed = OUTPUT_DATATYPES.get(type_, ())
            if d["datatype"] not in allowed:
                _fail(path, "'datatype' must be one of %s for type %r" % (", ".join(allowed), type_)
                      if allowed else "'datatype' applies to types number, integer, boolean and string")
        if "items" in d:
            if type_ != "array":
                _fail(path, "'items' does not apply to type %r" % (type_,))
            out["items"] = self.field(d["items"], path + ["items"], depth + 1, True)
        return out

    def _enum(self, values, type_, path):
        if not isinstance(values, (list, tuple)) or not 1 <= len(values) <= MAX_ENUM_VALUES:
            _fail(path, "'enum' must be a list of 1 to %d values" % MAX_ENUM_VALUES)
        for value in values:
            ok = (
                value is None or isinstance(value, bool)
                or (isinstance(value, str) and len(value) <= MAX_TEXT)
                or (_is_number(value) and math.isfinite(value) and abs(value) <= MAX_SAFE)
            )
            if not ok:
                _fail(path, "'enum' values must be strings (at most %d characters), finite numbers"
                      " within ±2^53, booleans or None, not %r" % (MAX_TEXT, value))
            if value is None:
                of = "null"
            elif isinstance(value, bool):
                of = "boolean"
            elif isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
                of = "integer"
            elif isinstance(value, float):
                of = "number"
            else:
                of = "string"
            if not (type_ == "any" or of == "null" or of == type_ or (type_ == "number" and of == "integer")):
                _fail(path, "'enum' value %r is not of type %r" % (value, type_))
        return list(values)


# -- Patterns: the subset src/gateway/_pattern.ts matches in linear time. --

_SYNTAX = "^$\\.*+?()[]{}|/-"
_CONTROL = "nrtfv"
_CLASS_ESCAPES = "dDwWsS"
_HEX = "0123456789abcdefABCDEF"


class _PatternParser:
    """Recursive descent over the grammar of ``_pattern.ts``; sizes only."""

    def __init__(self, source):
        self.chars = source
        self.i = 0
        self.depth = 0

    def fail(self, what):
        raise DeclarationError("%s at character %d" % (what, self.i + 1))

    def peek(self, ahead=0):
        j = self.i + ahead
        return self.chars[j] if j < len(self.chars) else None

    def parse(self):
        size = self.alt()
        if self.i < len(self.chars):
            self.fail("unmatched ')'")
        return size

    def alt(self):
        sizes = [self.seq()]
        while self.peek() == "|":
            self.i += 1
            sizes.append(self.seq())
        # A fork and a jump for each option but the last (as the host compiles it).
        return sum(sizes) + 2 * (len(sizes) - 1)

    def seq(self):
        total = 0
        while True:
            c = self.peek()
            if c is None or c in "|)":
                return total
            size, anchor = self.atom()
            q = self.quantifier()
            if q is not None:
                if anchor:
                    self.fail("a quantifier after an anchor")
                low, high = q
                # The required copies; then a loop (fork, copy, jump) or a
                # fork and a copy for each optional one.
                size = low * size + (size + 2 if high == -1 else (high - low) * (size + 1))
            total += size

    def number(self):
        digits = ""
        while self.peek() is not None and self.peek() in "0123456789":
            digits += self.chars[self.i]
            self.i += 1
        if not digits:
            return None
        n = int(digits)
        if n > MAX_REPEAT:
            self.fail("a repeat count above %d" % MAX_REPEAT)
        return n

    def quantifier(self):
        c = self.peek()
        if c == "*":
            q = (0, -1)
        elif c == "+":
            q = (1, -1)
        elif c == "?":
            q = (0, 1)
        elif c == "{":
            self.i += 1
            low = self.number()
            if low is None:
                self.fail("'{' that starts no {n,m} quantifier")
            high = low
            if self.peek() == ",":
                self.i += 1
                high = self.number()
                if high is None:
                    high = -1
            if self.peek() != "}":
                self.fail("an unclosed {n,m} quantifier")
            if high != -1 and high < low:
                self.fail("a {n,m} quantifier with m < n")
            q = (low, high)
        else:
            return None
        self.i += 1
        if self.peek() == "?":
            self.i += 1
        if self.peek() is not None and self.peek() in "*+?{":
            self.fail("a quantifier after a quantifier")
        return q

    def atom(self):
        c = self.chars[self.i]
        if c == "(":
            self.i += 1
            if self.peek() == "?":
                if self.peek(1) != ":":
                    self.fail("lookaround, named groups and flags are not supported: '(?'")
                self.i += 2
            self.depth += 1
            if self.depth > MAX_GROUP_DEPTH:
                self.fail("groups nested deeper than %d" % MAX_GROUP_DEPTH)
            size = self.alt()
            self.depth -= 1
            if self.peek() != ")":
                self.fail("an unclosed group")
            self.i += 1
            return size, False
        if c == "[":
            self.char_class()
            return 1, False
        self.i += 1
        if c in "^$":
            return 1, True
        if c == "\\":
            self.escape(False)
            return 1, False
        if c in "*+?{":
            self.i -= 1
            self.fail("a quantifier '%s' with nothing to repeat" % c)
        if c in "]}":
            self.i -= 1
            self.fail("an unescaped '%s'" % c)
        return 1, False

    def escape(self, in_class):
        """After a backslash: None for a class escape (\\d...), else the code point."""
        c = self.peek()
        if c is None:
            self.fail("a pattern that ends with '\\'")
        self.i += 1
        if c in _CLASS_ESCAPES:
            return None
        if c in _CONTROL:
            return {"n": 10, "r": 13, "t": 9, "f": 12, "v": 11}[c]
        if c in _SYNTAX:
            return ord(c)
        if c in "ux":
            n = 4 if c == "u" else 2
            hex_ = self.chars[self.i:self.i + n]
            if len(hex_) != n or any(h not in _HEX for h in hex_):
                self.fail("'\\%s' without %d hex digits" % (c, n))
            self.i += n
            cp = int(hex_, 16)
            # \uD83D\uDE00 is one character, as RegExp's u flag reads it.
            low = self.chars[self.i + 2:self.i + 6]
            if (0xD800 <= cp <= 0xDBFF and self.chars[self.i:self.i + 2] == "\\u" and len(low) == 4
                    and all(h in _HEX for h in low) and 0xDC00 <= int(low, 16) <= 0xDFFF):
                self.i += 6
                cp = 0x10000 + ((cp - 0xD800) << 10) + (int(low, 16) - 0xDC00)
            return cp
        self.i -= 1
        self.fail("an unsupported escape '\\%s'%s" % (
            c, "" if in_class else " (backreferences, \\b and \\p are not supported)"))

    def class_atom(self):
        """One class member: its code point, or None for a class escape."""
        c = self.chars[self.i]
        self.i += 1
        if c == "\\":
            return self.escape(True)
        if c == "[":
            self.fail("an unescaped '[' in a class")
        return ord(c)

    def char_class(self):
        start = self.i
        self.i += 1
        if self.peek() == "^":
            self.i += 1
        first = True
        while True:
            c = self.peek()
            if c is None:
                self.i = start
                self.fail("an unclosed '['")
            if c == "]":
                if first:
                    self.fail("an empty class '[]'")
                self.i += 1
                return
            first = False
            low = self.class_atom()
            if self.peek() == "-" and self.peek(1) not in ("]", None):
                self.i += 1
                high = self.class_atom()
                if low is None or high is None:
                    self.fail("a range with a class escape as an end")
                if high < low:
                    self.fail("a range out of order")


def check_pattern(source):
    """Raise ``DeclarationError`` unless ``source`` is in the gateway's pattern subset.

    Returns the states of its automaton on the host (with its final one).
    """
    if len(source) > MAX_PATTERN_LENGTH:
        raise DeclarationError("a pattern longer than %d characters" % MAX_PATTERN_LENGTH)
    size = _PatternParser(source).parse()
    if size > MAX_PATTERN_STATES:
        raise DeclarationError(
            "a pattern of more than %d states (counted repeats are copied)" % MAX_PATTERN_STATES)
    return size + 1
