"""Error classes of the Python server, named like the host's (src/errors.ts).

Every class has a ``type`` (the stable name sent as ``error.type`` on the
wire, protocol §3) and ``to_wire()``, which builds the reply's ``error``
object. A handler raises one of these to answer a request with that error;
any other exception from user code becomes a ``PythonError``.

Example::

    from pyproxy_server.errors import ModelNotFoundError
    err = ModelNotFoundError("Cannot execute: no model 'doubler'")
    err.to_wire()  # {"type": "ModelNotFoundError", "message": "Cannot execute: ..."}
"""

import ast as _ast_module
import json as _json
import re as _re
import traceback as _traceback

from . import array_like as _array_like

__all__ = [
    "exception_message",
    "PyProxyError",
    "FrameError",
    "ChecksumError",
    "ProtocolError",
    "AuthenticationError",
    "UnknownCommandError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "ModelLoadError",
    "PathError",
    "SerializationError",
    "PythonError",
    "CancelledError",
    "TimeoutError",
    "SpillError",
    "SessionLostError",
    "OverloadedError",
    "HostError",
    "HTTPError",
    "error_from_type",
    "checked_headers",
    "format_user_traceback",
    "short_repr",
]


class PyProxyError(Exception):
    """Base class: an error that is sent to the peer as ``{type, message, ...}``.

    Keyword arguments become extra fields of the wire error object (they must
    be JSON-serialisable), e.g. ``PyProxyError("boom", hint="retry")``.
    """

    type = "PyProxyError"

    def __init__(self, message, **fields):
        super().__init__(message)
        self.message = message
        self.fields = fields

    def to_wire(self):
        """Return the reply's ``error`` object: ``{"type", "message", **fields}``."""
        wire = {"type": self.type, "message": self.message}
        wire.update(self.fields)
        return wire


class FrameError(PyProxyError):
    """Fatal framing error (bad marker, version, length): the connection is closed."""

    type = "FrameError"


class ChecksumError(PyProxyError):
    """A payload does not match its MD5; recoverable, the stream stays aligned."""

    type = "ChecksumError"


class ProtocolError(PyProxyError):
    """A payload is not UTF-8 JSON or not a JSON object."""

    type = "ProtocolError"


class AuthenticationError(PyProxyError):
    """Bad or missing ``auth``; the connection is closed after the reply."""

    type = "AuthenticationError"


class UnknownCommandError(PyProxyError):
    """No handler is registered for ``cmd``."""

    type = "UnknownCommandError"


class InvalidRequestError(PyProxyError):
    """A missing or ill-typed argument (or ``id``/``cmd``)."""

    type = "InvalidRequestError"


class ModelNotFoundError(PyProxyError):
    """No model with that name is registered."""

    type = "ModelNotFoundError"


class ModelLoadError(PyProxyError):
    """Importing, picking or constructing a model failed.

    Carries ``exception`` (the Python class name) and ``traceback`` when an
    exception caused it.
    """

    type = "ModelLoadError"


class PathError(PyProxyError):
    """A file path resolves outside its root."""

    type = "PathError"


class SerializationError(PyProxyError):
    """A result cannot be encoded as JSON (or is too large to send)."""

    type = "SerializationError"


class PythonError(PyProxyError):
    """User code raised: ``exception`` (class name), ``message``, ``traceback``."""

    type = "PythonError"

    def __init__(self, exception, message, traceback="", **fields):
        super().__init__(message, exception=exception, traceback=traceback, **fields)
        self.exception = exception
        self.traceback = traceback

    @classmethod
    def from_exception(cls, exc, skip_prefix=None):
        """Wrap ``exc``; frames whose file starts with ``skip_prefix`` are left out."""
        return cls(
            type(exc).__name__, exception_message(exc), format_user_traceback(exc, skip_prefix)
        )


class CancelledError(PyProxyError):
    """The request was cancelled (``cancel`` command or connection closed)."""

    type = "CancelledError"


class TimeoutError(PyProxyError):  # noqa: A001 - mirrors the host's name
    """Something did not finish in time."""

    type = "TimeoutError"


class SpillError(PyProxyError):
    """A spill file was missing, outside the spill directory, or failed its checks."""

    type = "SpillError"


class SessionLostError(PyProxyError):
    """An eval session no longer exists."""

    type = "SessionLostError"


class OverloadedError(PyProxyError):
    """The server refuses work because it is saturated."""

    type = "OverloadedError"


class HostError(PyProxyError):
    """A Python → host call failed (no current call, connection gone, host error).

    When the host replied with an error, ``remote_type`` and ``remote_message``
    hold its ``type`` and ``message``.
    """

    type = "HostError"

    def __init__(self, message, remote_type=None, remote_message=None, **fields):
        super().__init__(message, **fields)
        self.remote_type = remote_type
        self.remote_message = remote_message


class HTTPError(Exception):
    """Raised by a model to answer its call with an HTTP error status.

    ``HTTPError(status, message=None, detail=None, headers=None)``: the
    gateway answers ``status`` with ``{"error": {"type": "HTTPError",
    "message", "detail"}}`` and the ``headers`` its allow-list takes
    (docs/gateway.md); ``pool.execute`` rejects with ``ModelHTTPError``.
    On the wire it is the call's ``PythonError`` (``exception:
    "HTTPError"``) with the fields ``status``, and ``detail`` and
    ``headers`` when given (protocol §3), so that a host that does not know
    them still sees a ``PythonError``.

    Checked here, where the model's traceback points at the ``raise``:
    ``status`` an ``int`` from 400 to 599 (``TypeError``/``ValueError``: a
    success or a redirect is not an error, and a client reads anything else
    as garbage), ``message`` a string (default: the status's reason phrase),
    ``detail`` JSON (``allow_nan=False``; a FastAPI ``detail`` list of
    ``{"loc", "msg"}`` goes as it is), ``headers`` a dict of at most
    ``MAX_HEADERS`` names (HTTP tokens) → strings without CR, LF or NUL, of
    at most ``MAX_HEADER_VALUE`` characters each.

    Example::

        from pyproxy import HTTPError

        class Model:
            def execute(self, msg):
                if msg.get("id") not in self.items:
                    raise HTTPError(404, "no such item", detail={"id": msg.get("id")})
                raise HTTPError(429, "slow down", headers={"Retry-After": "5"})
    """

    # Most headers an HTTPError may carry, and the longest value of one.
    MAX_HEADERS = 32
    MAX_HEADER_VALUE = 8192

    def __init__(self, status, message=None, detail=None, headers=None):
        _check_status(status)
        if message is None:
            # Imported here: only a model that raises an HTTPError needs it,
            # not every server's start (~1 ms of CPU each).
            import http as _http

            try:
                message = _http.HTTPStatus(status).phrase
            except ValueError:
                message = "HTTP error %d" % status
        elif not isinstance(message, str):
            raise TypeError("HTTPError: message must be a string, got %s" % short_repr(message))
        _check_detail(detail)
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = checked_headers(headers)

    def __reduce__(self):
        # Rebuilt without calling ``__init__``, its fields (and a subclass's)
        # set from its ``__dict__``: an HTTPError raised in a multiprocessing
        # worker reaches the model whole. Neither ``args`` (the message
        # alone) nor the four fields fit every ``__init__``: a subclass of
        # its own (``ItemNotFound(item_id)``, as FastAPI ports have) failed
        # to unpickle, which breaks a ProcessPoolExecutor for good.
        return (_rebuilt, (type(self), self.args), self.__dict__)

    def wire_fields(self):
        """The fields this error adds to its ``PythonError`` wire object.

        Checked again as at the raise (``TypeError``/``ValueError``): model
        code may have changed them since (``err.status = "404"``,
        ``err.detail = float("nan")``), and the reply's error object is
        encoded leniently, NaN and all, which the host cannot read.
        """
        _check_status(self.status)
        detail = _check_detail(self.detail)
        fields = {"status": self.status}
        if detail is not None:
            fields["detail"] = detail
        headers = checked_headers(self.headers)
        if headers:
            fields["headers"] = headers
        return fields


def _rebuilt(cls, args):
    """An ``HTTPError`` (subclass) ``cls`` with ``args``, ``__init__`` not
    called: unpickling then sets its ``__dict__``."""
    return Exception.__new__(cls, *args)


def _check_status(status):
    if status.__class__ is not int:  # bool, "404", 404.0: not a status
        raise TypeError("HTTPError: status must be an int from 400 to 599, got %s" % short_repr(status))
    if not 400 <= status <= 599:
        raise ValueError("HTTPError: status must be from 400 to 599 (an error), got %d" % status)


def _check_detail(detail):
    """``detail`` as JSON values: as it is, or with its numpy-like values
    (``array_like``, as in results) made their ``tolist()``; ``TypeError``
    for one that is not JSON."""
    if detail is None:
        return None
    converted = []

    def default(value):
        converted.append(value)
        return _array_like.convert(value)

    try:
        text = _json.dumps(detail, allow_nan=False, default=default)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError("HTTPError: detail must be JSON (%s)" % exc) from None
    return _json.loads(text) if converted else detail


# RFC 9110 token: a header name.
_TOKEN = _re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}\Z")


def checked_headers(headers, who="HTTPError"):
    """``headers`` (a dict of name -> value, or ``None``) checked as a
    model's response headers: at most ``HTTPError.MAX_HEADERS`` HTTP token
    names -> strings without CR, LF or NUL of at most
    ``HTTPError.MAX_HEADER_VALUE`` characters; a copy, or ``None``.
    ``TypeError``/``ValueError`` messages start with ``who``: the
    ``HTTPError`` of an error, ``host.set_header`` of a success
    (``pyproxy_server.http_meta``)."""
    if headers is None:
        return None
    if not isinstance(headers, dict):
        raise TypeError("%s: headers must be a dict of name -> value, got %s" % (who, short_repr(headers)))
    if len(headers) > HTTPError.MAX_HEADERS:
        raise ValueError("%s: at most %d headers, got %d" % (who, HTTPError.MAX_HEADERS, len(headers)))
    checked = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError("%s: header name %s is not an HTTP token" % (who, short_repr(name)))
        if not isinstance(value, str):
            raise TypeError("%s: header %s must be a string, got %s" % (who, name, short_repr(value)))
        if len(value) > HTTPError.MAX_HEADER_VALUE:
            raise ValueError(
                "%s: header %s has %d characters (at most %d)" % (who, name, len(value), HTTPError.MAX_HEADER_VALUE)
            )
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError("%s: header %s holds CR, LF or NUL" % (who, name))
        checked[name] = value
    return checked


_BY_TYPE = {
    cls.type: cls
    for cls in (
        PyProxyError,
        FrameError,
        ChecksumError,
        ProtocolError,
        AuthenticationError,
        UnknownCommandError,
        InvalidRequestError,
        ModelNotFoundError,
        ModelLoadError,
        PathError,
        SerializationError,
        CancelledError,
        TimeoutError,
        SpillError,
        SessionLostError,
        OverloadedError,
        HostError,
    )
}


def error_from_type(type_name, message, **fields):
    """Build the error class named ``type_name`` (e.g. for extension modules).

    ``PythonError`` needs ``exception`` and ``traceback`` fields. An unknown
    name gives a ``PyProxyError`` whose wire ``type`` is still ``type_name``.

    Example::

        raise error_from_type("SessionLostError", "Cannot eval: no session 's1'")
    """
    if type_name == "PythonError":
        return PythonError(
            fields.pop("exception", "Exception"),
            message,
            fields.pop("traceback", ""),
            **fields,
        )
    cls = _BY_TYPE.get(type_name)
    if cls is not None:
        return cls(message, **fields)
    err = PyProxyError(message, **fields)
    err.type = type_name
    return err


#: What the message of ``input()``'s ``EOFError`` gets: the value goes in the
#: call. It named a model's "msg or options" alone, which an eval (a notebook
#: cell) has neither of.
_INPUT_HINT = (" (input() in a worker reads an empty stdin: pass the value in the call,"
              " a model's msg or options, an eval's locals or args)")


def exception_message(exc):
    """``str(exc)``, as the message of the error reply for an exception of
    user code, with what to do when it was raised by ``breakpoint()`` or
    ``input()`` left in the code: a worker has no terminal (its stdin is
    ``/dev/null``), so the debugger quits at once with an empty ``BdbQuit``
    and ``input()`` meets end of file, neither saying why."""
    # str() of an exception holding a structure nested too deep (or a
    # broken __str__) raises; the error reply must go out anyway.
    try:
        text = str(exc)
    except Exception as failure:
        return "<str() of %s failed: %s: %s>" % (type(exc).__name__, type(failure).__name__, failure)
    cls = type(exc)
    if cls.__name__ == "BdbQuit" and cls.__module__ == "bdb" and not text:
        return ("the debugger (breakpoint(), pdb.set_trace()) quit at once: a worker has no terminal"
                " (its stdin is empty); remove the call, and debug the model class in a Python session of your own")
    if cls is EOFError and text == "EOF when reading a line":
        return text + _INPUT_HINT
    notes = getattr(exc, "__notes__", None)
    return text if not notes else _with_notes(text, notes)


#: The notes (``add_note``, Python 3.11) an error's message takes at most,
#: and the characters kept of each: the rest are counted. The traceback
#: (``--debug``) has them all.
MAX_NOTES = 10
MAX_NOTE_CHARS = 1000


def _with_notes(text, notes):
    """``text`` followed by ``notes``, one a line, as Python prints them
    under the exception's line; bounded (``MAX_NOTES``, ``MAX_NOTE_CHARS``)."""
    if not isinstance(notes, (list, tuple)):
        notes = [notes]  # not a sequence: Python prints its repr, here its str
    lines = [] if text == "" else [text]
    for note in notes[:MAX_NOTES]:
        try:
            note = note if isinstance(note, str) else str(note)
        except Exception as failure:
            note = "<str() of a note failed: %s>" % type(failure).__name__
        if len(note) > MAX_NOTE_CHARS:
            note = note[:MAX_NOTE_CHARS] + "... (%d more characters)" % (len(note) - MAX_NOTE_CHARS)
        lines.append(note)
    if len(notes) > MAX_NOTES:
        lines.append("(%d more notes)" % (len(notes) - MAX_NOTES))
    return "\n".join(lines)


def format_user_traceback(exc, skip_prefix=None):
    """Format ``exc`` with its traceback, dropping leading server frames."""
    tb = exc.__traceback__
    if skip_prefix:
        while tb is not None and tb.tb_frame.f_code.co_filename.startswith(
            skip_prefix
        ):
            tb = tb.tb_next
        if isinstance(exc, SyntaxError) and tb is not None and tb.tb_frame.f_code.co_filename == _AST_FILE:
            # Raised while compiling the user's code: the error names its line
            # itself, and the parser's frames are not the user's.
            tb = None
    return "".join(_traceback.format_exception(type(exc), exc, tb))


_AST_FILE = _ast_module.__file__


def short_repr(value, limit=200):
    """``repr(value)`` cut to ``limit`` characters, for error messages."""
    try:
        text = repr(value)
    except RecursionError:  # a value nested too deep for json is too deep for repr
        return "<%s nested too deep>" % type(value).__name__
    except Exception as exc:  # a __repr__ that raises must not replace the error being reported
        return "<%s object (its repr raised %s)>" % (type(value).__name__, type(exc).__name__)
    return text if len(text) <= limit else text[:limit] + "..."
