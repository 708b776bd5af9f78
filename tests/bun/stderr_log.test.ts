// A worker's stderr on Bun (tests/stderr_log_test.ts on Deno): a traceback
// written a line at a time is one error entry; onStderr gets the server's
// records without their mark, with their level and logger.
import { expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
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
