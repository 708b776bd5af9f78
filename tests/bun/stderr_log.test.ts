// A worker's stderr on Bun (tests/stderr_log_test.ts on Deno): a traceback
// written a line at a time is one error entry; onStderr gets the server's
// records without their mark, with their level and logger.
import { expect, test } from "bun:test";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PythonServer, type StderrRecord } from "../../mod.ts";
import { recordingLogger } from "../_harness.ts";

test("a traceback written 80 ms a line is one error entry; onStderr's records come without the mark", async () => {
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-stderr-"));
  const { logger, entries } = recordingLogger();
  const given: Array<[string, StderrRecord | undefined]> = [];
  try {
    await using server = await PythonServer.start({
      path: dir,
      logDir: "-",
      logger,
      onStderr: (text, record) => void given.push([text, record]),
    });
    await using session = await server.connect();
    await session.request("eval", {
      code: [
        "import logging, os, time",
        "lines = ['Traceback (most recent call last):\\n',",
        "         '  File \"m.py\", line 1, in <module>\\n',",
        "         \"KeyError: 'k'\\n\"]",
        "for line in lines:",
        "    os.write(2, line.encode())",
        "    time.sleep(0.08)",
        "logging.getLogger('pyproxy_server').warning('a record\\nover two lines')",
        "1",
      ].join("\n"),
    });
    await session.close();
    await server.stop();
    const tracebacks = entries.filter(([, m, p]) =>
      m === "{id} stderr: {line}" && String(p?.line).includes("KeyError")
    );
    expect(tracebacks.map(([level, , p]) => [level, p?.line])).toEqual([[
      "error",
      "Traceback (most recent call last):\n  File \"m.py\", line 1, in <module>\nKeyError: 'k'",
    ]]);
    const record = given.find(([, r]) =>
      r?.message === "a record\nover two lines"
    );
    expect(record?.[1]).toMatchObject({
      level: "warn",
      logger: "pyproxy_server",
    });
    expect(record?.[0]).toMatch(
      /^\d{4}-\d\d-\d\d \S+ WARNING \[.*\] pyproxy_server: a record\nover two lines\n$/,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a worker's start-up exit (--path not a directory) is one error entry with its fields, not a warning", async () => {
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-start-exit-"));
  const { logger, entries } = recordingLogger();
  try {
    // A wrapper as the interpreter, which spoils the worker's --path.
    const python = join(dir, "python");
    await writeFile(
      python,
      '#!/bin/sh\nexec python3 "$@" --path /nonexistent-logs29\n',
      { mode: 0o755 },
    );
    const failed = await PythonServer.start({ path: dir, python, logger })
      .then(() => undefined, (err: Error) => err);
    expect(failed?.name).toBe("StartError");
    const errors = entries.filter(([level, m]) =>
      level === "error" && m === "{id} stderr: {line}"
    );
    expect(errors.map(([, , p]) => [p?.logger, p?.message])).toEqual([[
      "pyproxy_server",
      "--path '/nonexistent-logs29' is not a directory",
    ]]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

const PYTHON_313 = "/root/.pyenv/versions/3.13.0/bin/python3";
const hasPython313 = await stat(PYTHON_313).then(() => true, () => false);

test.skipIf(!hasPython313)(
  "on Python 3.13 with FORCE_COLOR, a subprocess's coloured traceback is one error entry without its colours",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-colours-"));
    const { logger, entries } = recordingLogger();
    try {
      await using server = await PythonServer.start({
        path: dir,
        python: PYTHON_313,
        logger,
        env: { FORCE_COLOR: "1" },
      });
      await using session = await server.connect();
      await session.request("eval", {
        code: [
          "import subprocess, sys",
          "subprocess.run([sys.executable, '-c', 'def f():\\n    1/0\\nf()'])",
          "1",
        ].join("\n"),
      });
      await session.close();
      await server.stop();
      const stderr = entries.filter(([, m]) => m === "{id} stderr: {line}");
      expect(stderr.map(([level, , p]) => [level, p?.line])).toEqual([[
        "error",
        'Traceback (most recent call last):\n  File "<string>", line 3, in <module>\n    f()\n    ~^^\n  File "<string>", line 2, in f\n    1/0\n    ~^~\nZeroDivisionError: division by zero',
      ]]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);
