#!/usr/bin/env bash
# Optional, not part of `deno task test`: runs the Python unittest suite on
# every Python >= 3.9 it finds, and with --deno the Deno tests too, with the
# workers on each of those Pythons. Ends with one line per interpreter and
# exits non-zero when any run failed.
#
#   bash scripts/python_matrix.sh                      # Python suite only
#   bash scripts/python_matrix.sh --deno               # + every Deno test
#   bash scripts/python_matrix.sh --deno tests/pool_test.ts tests/gateway_test.ts
#   PYPROXY_PYTHONS="/opt/py39/bin/python3 /usr/bin/python3" bash scripts/python_matrix.sh
#
# Interpreters: PYPROXY_PYTHONS (space-separated) when set, else python3,
# python3.9 ... python3.14 on PATH, /usr/bin/python3, /usr/local/bin/python3
# and ~/.pyenv/versions/*/bin/python3; one run per distinct executable, by
# version, older than 3.9 skipped.
#
# The Deno tests start their workers with the pool's default `python3`, found
# on PATH: each Deno run puts a directory holding a `python3` symlink to the
# interpreter first on PATH. The same by hand:
#   mkdir /tmp/py39 && ln -s /path/to/python3.9 /tmp/py39/python3
#   PATH=/tmp/py39:$PATH deno test -A tests/pool_test.ts
set -u
cd "$(dirname "$0")/.."
export NO_COLOR=1

deno=0
files=()
if [ "${1:-}" = "--deno" ]; then
  deno=1
  shift
  files=("$@")
  [ ${#files[@]} -gt 0 ] || files=(tests/)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -n "${PYPROXY_PYTHONS:-}" ]; then
  read -r -a candidates <<<"$PYPROXY_PYTHONS"
else
  candidates=()
  for name in python3 python3.9 python3.10 python3.11 python3.12 python3.13 python3.14; do
    exe=$(command -v "$name" 2>/dev/null) && candidates+=("$exe")
  done
  for exe in /usr/bin/python3 /usr/local/bin/python3 "$HOME"/.pyenv/versions/*/bin/python3; do
    [ -x "$exe" ] && candidates+=("$exe")
  done
fi

# "<version> <real executable>" per working interpreter, distinct executables
# only (a pyenv shim that names no installed version fails here and is skipped).
found=()
for exe in "${candidates[@]}"; do
  line=$("$exe" -c 'import os, sys; print("%d.%d.%d" % sys.version_info[:3], os.path.realpath(sys.executable))' 2>/dev/null) || continue
  case " ${found[*]:-} " in *" ${line#* } "*) continue ;; esac
  if ! "$exe" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
    echo "skipped: $exe is Python ${line%% *} (pyproxy needs >= 3.9)"
    continue
  fi
  found+=("$line")
done
pythons=()
while read -r version real; do
  [ -n "$version" ] && pythons+=("$version" "$real")
done < <(printf '%s\n' "${found[@]:-}" | sort -V)
[ ${#pythons[@]} -gt 0 ] || { echo "no Python >= 3.9 found"; exit 1; }

status=0
summary=()
for ((i = 0; i < ${#pythons[@]}; i += 2)); do
  version=${pythons[i]}
  exe=${pythons[i + 1]}
  echo "== Python $version ($exe): python unittest =="
  log="$work/py-$i.log"
  timeout -k 10 600 "$exe" -m unittest discover -s python/tests -t python >"$log" 2>&1
  rc=$?
  tail -n 3 "$log"
  result="python: $(grep -E '^(OK|FAILED)' "$log" | tail -n 1)"
  [ $rc -eq 0 ] || { status=1; grep -E '^(FAIL|ERROR):' "$log"; }
  if [ $deno -eq 1 ]; then
    echo "== Python $version ($exe): deno test ${files[*]} =="
    bin="$work/bin-$i"
    mkdir "$bin"
    ln -s "$exe" "$bin/python3"
    got=$(PATH="$bin:$PATH" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
    [ "$got" = "$version" ] || { echo "python3 on PATH is $got, not $version"; exit 1; }
    log="$work/deno-$i.log"
    PATH="$bin:$PATH" timeout -k 10 900 deno test -A --parallel "${files[@]}" >"$log" 2>&1
    rc=$?
    line=$(grep -E '^(ok|FAILED) \|' "$log" | tail -n 1)
    grep -E ' FAILED' "$log" || true
    echo "${line:-deno test did not finish (exit $rc)}"
    result="$result; deno: ${line:-exit $rc}"
    [ $rc -eq 0 ] || status=1
  fi
  summary+=("Python $version: $result")
done

echo "== summary =="
printf '%s\n' "${summary[@]}"
exit $status
