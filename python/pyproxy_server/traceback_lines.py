"""Which lines of printed text belong to one Python traceback.

``OutputRouter`` logs what is printed outside a call a line at a time: a
traceback that a model's thread prints (``traceback.print_exc()``) was a
``WARNING`` record per line, in the log file and, with ``--log-dir -``, in
the host's log, where nothing told one traceback's lines from another's. With
these, the router holds a traceback's lines from its first to its
exception's line (a chain's tracebacks included) and logs them as one
record. The host's ``StderrLog`` does the same for text on the process's
stderr (``src/_traceback_lines.ts``: keep the two alike), but for one thing:
there, lines that come just after the exception's are joined (its notes, as
that text was always joined by time); here the next line not a chain's is
the model's next ``print``, logged on its own.

Example::

    state = start("Traceback (most recent call last):")  # "frames"
    state = continues(state, '  File "m.py", line 1, in f')  # "frames"
    state = continues(state, "ValueError: boom")  # "ended"
    continues(state, "")  # "ended": a chain's next traceback may follow
    continues(state, "printed after it")  # None: it has ended
"""

import re

__all__ = ["start", "continues", "waits_for_end"]

PYTHON_START = "Traceback (most recent call last):"

# The line between two tracebacks of a chain (each then has its first line).
_CHAIN = re.compile(
    r"(During handling of the above exception, another exception occurred:"
    r"|The above exception was the direct cause of the following exception:)\Z")

# An exception group's traceback (Python 3.11+): every line indented.
_GROUP_START = re.compile(r"  \+ Exception Group Traceback \(most recent call last\):\Z")


def start(line):
    """The state of a traceback that ``line`` starts, or None: ``"frames"``
    (a traceback before its exception's line), ``"head"`` (an exception
    group's, before its first indented line)."""
    if line == PYTHON_START:
        return "frames"
    if line.startswith("  + ") and _GROUP_START.match(line):
        return "head"
    return None


def continues(state, line):
    """The traceback's state once ``line`` is its own, or None when it is not
    (the traceback ended before it). ``"ended"``: after its exception's line,
    where a chain's lines may follow; ``"open"``: an exception group's, which
    ends at the first line not indented."""
    if not line.strip():
        return state
    if line[0] in " \t":
        return "open" if state == "head" else state
    if state == "frames":
        return "frames" if line == PYTHON_START or _CHAIN.match(line) else "ended"
    if state == "ended" and _CHAIN.match(line):
        return "frames"
    return None


def waits_for_end(state):
    """Whether a traceback in ``state`` is held until its time is up (its
    end not seen yet), rather than until no line came for a moment."""
    return state in ("frames", "head")
