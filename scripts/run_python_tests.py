"""Runs the Python unittest suite (python/tests) with its modules spread over
a few processes, and ends with unittest's own summary lines ("Ran N tests",
then "OK" or "FAILED (failures=N, errors=N, skipped=N)"), which
scripts/test.sh reads.

Most of the suite's time is waiting (timeouts, servers starting, pings):
one ``python3 -m unittest discover`` took ~55 s of wall time for ~24 s of CPU
on 2 cores. Each module (each test class of the largest ones) runs alone
in its own process (``-m unittest tests.test_x``), the largest first, taken
by whichever process is free.

Usage: python3 scripts/run_python_tests.py [--jobs N] [--python EXE]
"""

import argparse
import ast
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.join(os.path.dirname(HERE), "python")
TESTS_DIR = os.path.join(PYTHON_DIR, "tests")

RAN = re.compile(r"^Ran (\d+) tests? in ", re.M)
COUNTS = re.compile(r"(failures|errors|skipped|expected failures|unexpected successes)=(\d+)")


def units():
    """What each process runs: a module, or each test class of a large one
    (whose module alone would be the suite's critical path), the largest
    source first (a rough guess at the slowest)."""
    found = []
    for name in os.listdir(TESTS_DIR):
        if not (name.startswith("test") and name.endswith(".py")):
            continue
        path = os.path.join(TESTS_DIR, name)
        module = "tests." + name[:-3]
        size = os.path.getsize(path)
        if size < SPLIT_ABOVE:
            found.append((size, module))
            continue
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source)
        lines = source.splitlines(keepends=True)
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and _is_test_class(n)]
        for node in classes:
            weight = sum(len(line) for line in lines[node.lineno - 1:node.end_lineno])
            found.append((weight, "%s.%s" % (module, node.name)))
        if not classes:
            found.append((size, module))
    found.sort(reverse=True)
    return [unit for _, unit in found]


# Modules larger than this run one test class per process.
SPLIT_ABOVE = 40_000


def _is_test_class(node):
    """A class with test methods of its own (a base without any is run
    through its subclasses)."""
    return any(
        isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test")
        for item in node.body
    )


def summary(output):
    """(tests run, {kind: count}, ok) from one unittest run's output."""
    ran = RAN.findall(output)
    last = [line for line in output.splitlines() if line.strip()]
    tail = last[-1] if last else ""
    counts = {k: int(v) for k, v in COUNTS.findall(tail)}
    ok = tail.startswith("OK")
    return (int(ran[-1]) if ran else 0), counts, ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=max(2, min(4, os.cpu_count() or 2)))
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()

    queue = units()
    lock = threading.Lock()
    results = {}
    started = time.monotonic()

    def work():
        while True:
            with lock:
                if not queue:
                    return
                module = queue.pop(0)
            t0 = time.monotonic()
            proc = subprocess.run(
                [args.python, "-m", "unittest", module],
                cwd=PYTHON_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            output = proc.stdout.decode("utf-8", "replace")
            with lock:
                results[module] = (proc.returncode, output, time.monotonic() - t0)
                # Each module's output as it ends, whole (not interleaved).
                sys.stdout.write("== %s (%.1f s)\n%s" % (module, results[module][2], output))
                if not output.endswith("\n"):
                    sys.stdout.write("\n")
                sys.stdout.flush()

    threads = [threading.Thread(target=work) for _ in range(max(1, args.jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    total = 0
    totals = {}
    broken = []
    for module, (code, output, _) in sorted(results.items()):
        ran, counts, ok = summary(output)
        total += ran
        for kind, n in counts.items():
            totals[kind] = totals.get(kind, 0) + n
        if code != 0 or not ok:
            broken.append(module)
            if ran == 0 or not (counts.get("failures") or counts.get("errors")):
                # The module did not even run (an import error, a crash):
                # counted as one error, as discover counts a module it cannot load.
                totals["errors"] = totals.get("errors", 0) + 1
    elapsed = time.monotonic() - started
    sys.stdout.write("-" * 70 + "\n")
    if broken:
        sys.stdout.write("failed modules: %s\n" % ", ".join(broken))
    sys.stdout.write("Ran %d tests in %.3fs (%d units, %d processes)\n\n" % (total, elapsed, len(results), args.jobs))
    kinds = [(k, totals[k]) for k in ("failures", "errors", "skipped", "expected failures", "unexpected successes") if totals.get(k)]
    detail = " (%s)" % ", ".join("%s=%d" % kv for kv in kinds) if kinds else ""
    sys.stdout.write(("FAILED" if broken else "OK") + detail + "\n")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
