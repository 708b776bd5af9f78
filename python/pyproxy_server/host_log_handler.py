"""Python ``logging`` records of model code, sent to the host.

A model's ``logging.getLogger("scorer").warning(...)`` during a call reaches
the host as a ``log`` event with ``"stream": "logging"`` (protocol §6, Model
output), on connections whose client asked for them
(``configure {"logRecords": true}``). The server's log file keeps them as
before. Records of the server's own loggers (``pyproxy_server``...) and
records outside a model call (no call's output sink: threads started without
the call's context, the server's start) are not sent.
"""

import logging

from .capture import current_sink
from .shielded_logging import ShieldedLock

__all__ = ["HostLogHandler", "level_name"]


def level_name(levelno):
    """The event's ``level`` for a record's level number."""
    if levelno < logging.INFO:
        return "debug"
    if levelno < logging.WARNING:
        return "info"
    if levelno < logging.ERROR:
        return "warning"
    return "error"


class HostLogHandler(ShieldedLock, logging.Handler):
    """A root-logger handler that hands a model call's records to its output
    sink, whose owner (an ``OutputSink``, or the connection running an inline
    call) has ``log_record(level, logger, text)``. Its lock is taken shielded
    from a cancel's interrupt (``ShieldedLock``)."""

    def __init__(self):
        super().__init__()
        # The message, and the traceback of a record with exc_info.
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record):
        name = record.name
        if name == "pyproxy_server" or name.startswith("pyproxy_server."):
            return
        sink = current_sink()
        log_record = getattr(getattr(sink, "__self__", None), "log_record", None)
        if log_record is None:
            return
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if log_record(level_name(record.levelno), name, text) is True:
            # The host has it (a log event): a server logging to stderr,
            # which the host logs too, leaves it out (setup_logging).
            record.pyproxy_sent = True
