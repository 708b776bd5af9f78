"""Why the server exits before its log is set up, as one of its log records.

A server that cannot start (``--path`` not a directory, ``cannot listen``, a
bad secret line, an argument argparse refuses) exits with a message on its
stderr. The host logs a line of stderr that is not a record of the server's
(one starting with the host's ``PYPROXY_LOG_MARK``) as a warning whatever it
says, and a host that fails its start under ``serve --log-format json``
writes only the errors it logged before its fatal line: the reason reached a
log collector only inside that line. With a mark, ``main`` writes the
message as a record of the server's log instead (``ERROR``, logger
``pyproxy_server``), which the host logs as an error with the worker's id.
Without one (a person running the server), the text is as it always was.

Example::

    try:
        ...
    except SystemExit as exc:
        said = exit_message(exc)  # ("cannot listen: [Errno 98] ...", 1)
"""

import logging

__all__ = ["BadArguments", "exit_message", "exit_record"]

# What a message of the server's own starts with: the record's logger says it.
_OWN_PREFIX = "pyproxy_server: "


class BadArguments(SystemExit):
    """An argument ``argparse`` refused: exit code 2, as argparse's own
    exit, with its message and the usage text it prints with it."""

    def __init__(self, message, usage):
        super().__init__(2)
        self.message = message
        self.usage = usage


def exit_message(exc):
    """``(message, exit code)`` of a ``SystemExit`` that says why the server
    exits, or None (an exit code alone)."""
    if isinstance(exc, BadArguments):
        return "bad arguments: " + exc.message, 2
    message = exc.code
    if not isinstance(message, str):
        return None
    if message.startswith(_OWN_PREFIX):
        message = message[len(_OWN_PREFIX):]
    return message, 1


def exit_record(message, formatter):
    """The line ``formatter`` (the server's stderr log format) makes of an
    ``ERROR`` record of the logger ``pyproxy_server`` saying ``message``."""
    record = logging.LogRecord("pyproxy_server", logging.ERROR, __file__, 0, "%s", (message,), None)
    return formatter.format(record)
