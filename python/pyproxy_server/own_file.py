"""Opening a file by name in a directory other users may write to.

The workers' log files and their name claims (``--log-dir``) may live in
a directory shared with others (``/var/log/pyproxy`` writable by a group,
a sticky directory such as ``/tmp``). Whoever else can write there can
put something at a name before the server opens it (at its start, or
between a rotation's rename and the reopen), and an ``open(O_CREAT)``
then went through it:

- a **symbolic link**: the records were appended to whatever it points
  at, and its mode set to 0600 (the gateway's user's ``~/.bashrc`` took
  log lines that hold text from requests: a command on its next login;
  ``/etc/passwd`` made unreadable when run as root);
- a **file of their own**: they read every record (the server cannot make
  another user's file private);
- a **FIFO**: the open blocked, the server never started.

``open_own_file`` refuses each with ``NotOwnFileError`` (an ``OSError``):
it never follows a link at the last component (``O_NOFOLLOW``), never
blocks (``O_NONBLOCK``, cleared once the file is known to be regular),
and keeps a file only when it is a regular file of this process's user.

Example::

    fd = open_own_file("/var/log/pyproxy/pythonserverw1.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
"""

import errno
import os
import stat

__all__ = ["NotOwnFileError", "open_own_file"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


class NotOwnFileError(OSError):
    """What is at the path is not a regular file of this process's user."""


def open_own_file(path, flags, mode=0o600):
    """``os.open(path, flags, mode)`` for a regular file of this process's
    user only; raises ``NotOwnFileError`` for a symbolic link, another
    user's file or anything but a regular file (nothing is written to it,
    nor its mode changed). Other ``OSError``s as ``os.open`` raises them."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK, mode)
    except OSError as exc:
        # ELOOP for a link, or EACCES where the kernel protects sticky
        # directories (fs.protected_symlinks, protected_regular and
        # protected_fifos refuse another user's entry there first); ENXIO
        # for a FIFO without a reader. Said as what is there.
        try:
            there = os.lstat(path)
        except OSError:
            raise exc from None
        if stat.S_ISLNK(there.st_mode):
            raise NotOwnFileError(errno.ELOOP, "a symbolic link, not followed", path) from None
        _check(there, path)
        raise
    try:
        _check(os.fstat(fd), path)
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check(info, path):
    """Raises ``NotOwnFileError`` unless ``info`` is a regular file of this process's user."""
    if not stat.S_ISREG(info.st_mode):
        raise NotOwnFileError(errno.EPERM, "not a regular file", path)
    geteuid = getattr(os, "geteuid", None)  # not on Windows
    if geteuid is not None and info.st_uid != geteuid():
        raise NotOwnFileError(
            errno.EPERM,
            "owned by another user (uid %d, this server's is %d)" % (info.st_uid, geteuid()),
            path,
        )
