"""Runs a Python program under cProfile (used by bench/profile.ts).

    PYPROFILE_OUT=/tmp/x.pstats python3 bench/pyprofile.py -m pyproxy_server --port 0 ...
    PYPROFILE_OUT=/tmp/x.pstats python3 bench/pyprofile.py -c "<the host's bootstrap>" --port 0 ...
    PYPROFILE_OUT=/tmp/x.pstats python3 bench/pyprofile.py bench/floor_server.py --model ...

The stats are written to ``$PYPROFILE_OUT`` on SIGUSR1 (the benchmark sends
it before stopping the process, since servers may exit without running
``atexit``) and at normal exit. Every thread is profiled (threads started
later get their own profiler, merged into one file), so work done in a
thread pool shows up next to the event loop's.
"""

import atexit
import cProfile
import os
import pstats
import re
import runpy
import signal
import sys
import threading

__all__ = []

_out = os.environ.get("PYPROFILE_OUT", "/tmp/pyprofile.pstats")
_prof = cProfile.Profile()
_thread_profs = []
_done = []


def _start_thread_profile(*_args):
    # Called once as the thread's first profile event: hand over to cProfile.
    prof = cProfile.Profile()
    _thread_profs.append(prof)
    sys.setprofile(None)
    prof.enable()


def _dump(*_args):
    if _done:
        return
    _done.append(True)
    _prof.disable()
    stats = pstats.Stats(_prof)
    for prof in list(_thread_profs):
        try:
            prof.create_stats()
            stats.add(prof)
        except Exception:  # a thread profile that cannot be read is left out
            pass
    stats.dump_stats(_out)


def main():
    signal.signal(signal.SIGUSR1, _dump)
    threading.setprofile(_start_thread_profile)
    atexit.register(_dump)
    args = sys.argv[1:]
    # The host starts servers with `-c <bootstrap>` (src/python_server.ts
    # BOOTSTRAP): `-m <module>` without the working directory on sys.path.
    found = re.search(r"_run_module_as_main\('([\w.]+)'\)", args[1]) if args[:1] == ["-c"] else None
    if found:
        args = ["-m", found.group(1)] + args[2:]
    if args and args[0] == "-m":
        sys.argv = [args[1]] + args[2:]
        _prof.enable()
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
        _prof.enable()
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
