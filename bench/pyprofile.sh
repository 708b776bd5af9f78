#!/bin/sh
# A "python" executable that runs its arguments under cProfile (bench/pyprofile.py).
exec python3 "$(dirname "$0")/pyprofile.py" "$@"
