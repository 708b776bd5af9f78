/**
 * StderrLog: a Python server's stderr, line by line, into the host's log
 * (src/_stderr_log.ts), and PythonServer wiring it to a real server.
 */
import assert from "node:assert/strict";
import { StderrLog } from "../src/_stderr_log.ts";
import { PythonServer, type StderrRecord } from "../src/python_server.ts";
import { type LogEntry, recordingLogger } from "./_harness.ts";
import { StartError } from "../src/errors.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

const lines = (entries: LogEntry[]) =>
  entries.map(([level, , p]) =>
    `${level} ${p?.line ?? `<${p?.count} dropped>`}`
  );

/**
 * The scenarios of this file on Python servers (or a pool) of their own
 * that only check what their server's stderr reached: one test, a step
 * each, a few at a time. Those that wait on the time between lines (a
 * traceback's, the lines a second) stay tests of their own.
 */
const scenarios: Scenario[] = [];

/** The mark of the server's records in these tests (a real one is random). */
const MARK = "0f1e2d3c";
const rec = (text: string) => `${MARK} ${text}`;

/** A recording logger whose `next()` resolves at its next entry. */
function waitingLogger() {
  const { logger, entries } = recordingLogger();
  let wake: (() => void) | undefined;
  const wrap = (
    level: "trace" | "debug" | "info" | "warn" | "error" | "fatal",
  ) => {
    const log = logger[level];
    return (message: string, props?: Record<string, unknown>) => {
      log(message, props);
      wake?.();
    };
  };
  return {
    entries,
    logger: {
      trace: wrap("trace"),
      debug: wrap("debug"),
      info: wrap("info"),
      warn: wrap("warn"),
      error: wrap("error"),
      fatal: wrap("fatal"),
    },
    next: () => new Promise<void>((resolve) => (wake = resolve)),
  };
}

Deno.test("StderrLog logs whole lines across pieces, the server's records at their level, other lines joined as one warning (a traceback an error)", () => {
  const { logger, entries } = recordingLogger();
  const log = new StderrLog(logger, "w1", { mark: MARK, now: () => 0 });
  log.push("Traceback (most recent call last):\n  File");
  log.push(' "m.py", line 1\nValueError: x\r\n\n');
  assert.equal(entries.length, 0, "joined until a record comes, or 50 ms");
  log.push(
    rec("2026-12-05 01:33:49,123 INFO [MainThread] pyproxy_server: started\n"),
  );
  log.push(rec("2026-12-05 01:33:49,124 ERROR [t] pyproxy_server: bad\n"));
  log.push(
    rec("2026-12-05 01:33:49,125 CRITICAL [t] x: y\n") +
      rec("2026-12-05 01:33:49,126 DEBUG [t] x: z\n"),
  );
  log.push("no newline at the end");
  assert.equal(entries.length, 5);
  log.end();
  assert.deepEqual(lines(entries), [
    'error Traceback (most recent call last):\n  File "m.py", line 1\nValueError: x',
    "info 2026-12-05 01:33:49,123 INFO [MainThread] pyproxy_server: started",
    "error 2026-12-05 01:33:49,124 ERROR [t] pyproxy_server: bad",
    "fatal 2026-12-05 01:33:49,125 CRITICAL [t] x: y",
    "debug 2026-12-05 01:33:49,126 DEBUG [t] x: z",
    "warn no newline at the end",
  ]);
  assert.deepEqual(entries[0]![2], {
    id: "w1",
    line:
      'Traceback (most recent call last):\n  File "m.py", line 1\nValueError: x',
  });
});

Deno.test("StderrLog takes no line without the server's mark for a record: a forged one is a warning, as written", () => {
  const { logger, entries } = recordingLogger();
  const log = new StderrLog(logger, "w1", { mark: MARK });
  // What a subprocess or a forked child printing a client's text may write.
  log.push(
    "2026-12-05 01:33:49,123 ERROR [MainThread] pyproxy_server: forged\\nsecond line\n",
  );
  log.push(`${MARK}x 2026-12-05 01:33:49,123 ERROR [t] x: not the mark\n`);
  log.end();
  assert.deepEqual(lines(entries), [
    "warn 2026-12-05 01:33:49,123 ERROR [MainThread] pyproxy_server: forged\\nsecond line\n" +
    `${MARK}x 2026-12-05 01:33:49,123 ERROR [t] x: not the mark`,
  ]);
  // Without a mark, no line is a record.
  const plain = recordingLogger();
  const unmarked = new StderrLog(plain.logger, "w1");
  unmarked.push("2026-12-05 01:33:49,123 ERROR [t] x: y\n");
  unmarked.end();
  assert.deepEqual(lines(plain.entries), [
    "warn 2026-12-05 01:33:49,123 ERROR [t] x: y",
  ]);
});

Deno.test("StderrLog logs a record the server escaped into one line as one entry at its level, unescaped, counted once", () => {
  const { logger, entries } = recordingLogger();
  const log = new StderrLog(logger, "w1", { mark: MARK, maxLinesPerSecond: 2 });
  log.push(
    rec(
      '2026-12-05 01:33:49,123 ERROR [t] m: failed in C:\\\\tmp\\nTraceback (most recent call last):\\n  File "m.py"\\r\\nValueError: x\n',
    ),
  );
  log.push("a line of its own with \\n in it\n");
  log.push(rec("2026-12-05 01:33:49,124 INFO [t] m: dropped\n"));
  assert.deepEqual(lines(entries), [
    'error 2026-12-05 01:33:49,123 ERROR [t] m: failed in C:\\tmp\nTraceback (most recent call last):\n  File "m.py"\r\nValueError: x',
    "warn a line of its own with \\n in it",
  ]);
  assert.equal(log.dropped, 1);
  log.end();
});

Deno.test("StderrLog counts a long record of the server's as a line per 4096 characters: 60 KB lines from a thread do not flood the log", () => {
  const { logger, entries } = recordingLogger();
  // logDir "-": records of up to 64 KiB, 1000 lines a second.
  const log = new StderrLog(logger, "w1", {
    mark: MARK,
    maxLinesPerSecond: 1000,
    maxLineChars: 65_536,
    now: () => 0,
  });
  const line = rec(
    `2026-12-05 01:33:49,123 WARNING [t] pyproxy_server.output: <stderr>: ${
      "x".repeat(60_000)
    }\n`,
  );
  for (let i = 0; i < 1000; i++) log.push(line);
  log.push(rec("2026-12-05 01:33:49,124 INFO [t] m: short\n"));
  // Before: all 1000 (60 MB in the second; chaos53). Each counts 15 now:
  // 67 (4 MB), as 1000 lines of 4096 characters would be.
  assert.equal(entries.length, 67);
  assert.equal(log.dropped, 933 * 15 + 1); // lines, as counted
  log.end();
});

Deno.test("StderrLog counts other long lines and a traceback's by their characters too (logDir '-')", () => {
  for (
    const [text, perEntry] of [
      // A C library's (or os.write(2, ...)'s) 60 KB line.
      [`${"y".repeat(60_000)}\n`, 15],
      // A traceback with a 60 KB line, written raw.
      [
        `Traceback (most recent call last):\n  ${
          "y".repeat(60_000)
        }\nValueError: v\n`,
        15,
      ],
    ] as const
  ) {
    const { logger, entries } = recordingLogger();
    const log = new StderrLog(logger, "w1", {
      mark: MARK,
      maxLinesPerSecond: 1000,
      maxLineChars: 65_536,
      flushMs: 0,
      now: () => 0,
    });
    for (let i = 0; i < 1000; i++) {
      log.push(text);
      log.push(rec("2026-12-05 01:33:49,124 INFO [t] m: between\n"));
    }
    // Before: 500 entries of 60 KB (30 MB) in the second (chaos53).
    const long = entries.filter(([, , p]) =>
      String(p?.line ?? "").length > 50_000
    );
    assert.ok(
      long.length <= Math.ceil(1000 / perEntry),
      `${long.length} long entries`,
    );
    log.end();
  }
});

Deno.test("StderrLog bounds lines, joined lines and rate (each joined line counts), and says how many it dropped", () => {
  const { logger, entries } = recordingLogger();
  let now = 1_000;
  const log = new StderrLog(logger, "w2", {
    maxLinesPerSecond: 4,
    maxLineChars: 10,
    now: () => now,
  });
  log.push("x".repeat(25)); // no newline: logged in cuts, not kept whole
  assert.deepEqual(lines(entries), ["warn xxxxxxxxxx", "warn xxxxxxxxxx"]);
  log.push("\n"); // the rest (5 characters), joined with the next lines
  log.push("a\nb\nc\n"); // up to 10 characters an entry
  assert.deepEqual(lines(entries).slice(2), ["warn xxxxx\na\nb"]);
  now += 50; // "c" is 50 ms old: a line now starts another entry
  log.push("d\n"); // "c" over the limit (2 + 3 lines logged): dropped
  assert.equal(entries.length, 3);
  assert.equal(log.dropped, 1);
  now += 1000; // a new second: the count comes before the next entry
  log.push("e\n");
  log.end();
  assert.deepEqual(lines(entries).slice(3), [
    "warn <1 dropped>",
    "warn d",
    "warn e",
  ]);
  assert.match(entries[3]![1], /lines not logged/);
  // At most maxJoinedLines a entry.
  const few = recordingLogger();
  const short = new StderrLog(few.logger, "w3", { maxJoinedLines: 2 });
  short.push("1\n2\n3\n");
  short.end();
  assert.deepEqual(lines(few.entries), ["warn 1\n2", "warn 3"]);
});

Deno.test("StderrLog logs an unfinished line once no more text comes, and one a record follows on its line at once", async () => {
  const { logger, entries, next } = waitingLogger();
  const log = new StderrLog(logger, "w1", { mark: MARK, flushMs: 10 });
  try {
    const logged = next();
    log.push("progress 50%"); // a subprocess's progress line, no newline yet
    await logged;
    // The record was glued to it: "progress 50%2026-... INFO ...", a warning.
    log.push("progress 60%");
    log.push(rec("2026-12-05 01:33:49,123 INFO [t] x: y\n"));
    assert.deepEqual(lines(entries), [
      "warn progress 50%",
      "warn progress 60%",
      "info 2026-12-05 01:33:49,123 INFO [t] x: y",
    ]);
    // A record read in pieces is not logged half, nor one whose mark
    // was cut (waited for up to 1 s).
    const whole = next();
    log.push(rec("2026-12-05 01:33:49,124 WARNING [t] x: "));
    log.push("z\n");
    await whole;
    log.push(MARK.slice(0, 3));
    await new Promise((resolve) => setTimeout(resolve, 30)); // 3 flushMs idle
    log.push(rec("2026-12-05 01:33:49,125 INFO [t] x: y\n").slice(3));
    assert.deepEqual(lines(entries).slice(3), [
      "warn 2026-12-05 01:33:49,124 WARNING [t] x: z",
      "info 2026-12-05 01:33:49,125 INFO [t] x: y",
    ]);
  } finally {
    log.end();
  }
});

Deno.test("StderrLog reports dropped lines when the second they were dropped in ends, without waiting for another line", async () => {
  const { logger, entries, next } = waitingLogger();
  let now = 0;
  const log = new StderrLog(logger, "w1", {
    mark: MARK,
    maxLinesPerSecond: 1,
    now: () => now,
  });
  try {
    log.push(rec("2026-12-05 01:33:49,123 INFO [t] x: a\n"));
    now = 990;
    log.push(
      rec("2026-12-05 01:33:49,124 INFO [t] x: b\n") +
        rec("2026-12-05 01:33:49,125 INFO [t] x: c\n"),
    );
    assert.equal(entries.length, 1);
    const reported = next();
    now = 1_000; // that second ends: no more text
    await reported;
    assert.deepEqual(lines(entries), [
      "info 2026-12-05 01:33:49,123 INFO [t] x: a",
      "warn <2 dropped>",
    ]);
  } finally {
    log.end();
  }
  assert.equal(entries.length, 2, "reported once");
});

Deno.test("StderrLog logs a server record longer than a line may be, read in pieces, as one entry at its level, cut", () => {
  const { logger, entries } = recordingLogger();
  const log = new StderrLog(logger, "w1", { mark: MARK, maxLineChars: 48 });
  const head = "2026-12-05 01:33:49,123 ERROR [t] m: ";
  // 100 characters in pieces of 16 (the host reads stderr 16 KiB at a
  // time), then the next record: its rest came as warnings of escaped text.
  const record = rec(head + "a\\nb" + "x".repeat(100 - head.length - 4));
  for (let i = 0; i < record.length; i += 16) log.push(record.slice(i, i + 16));
  log.push("\n" + rec(head + "next\n"));
  log.push(rec(head + "y".repeat(50))); // no end yet: kept, then at the end
  assert.equal(entries.length, 2);
  log.end();
  assert.deepEqual(lines(entries), [
    `error ${head}a\nbxxxxxxx… (100 characters)`,
    `error ${head}next`,
    `error ${head}${"y".repeat(11)}… (87 characters)`,
  ]);
  // Any other line without an end is still logged in cuts (a progress bar).
  log.push("z".repeat(100));
  assert.deepEqual(lines(entries).slice(3), [
    `warn ${"z".repeat(48)}`,
    `warn ${"z".repeat(48)}`,
  ]);
  log.end();
  // Text, then a record longer than a line, on one line: the text is a line.
  const glued = recordingLogger();
  const other = new StderrLog(glued.logger, "w1", {
    mark: MARK,
    maxLineChars: 48,
  });
  other.push("50%" + rec(head + "w".repeat(60)));
  other.push("\n");
  other.end();
  assert.deepEqual(lines(glued.entries), [
    "warn 50%",
    `error ${head}${"w".repeat(11)}… (97 characters)`,
  ]);
});

scenarios.push([
  "PythonServer logs its server's stderr: the whole log when the log file cannot be opened",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-stderr-log-" });
    const { logger, entries } = recordingLogger();
    try {
      // `logs` is a file: the server cannot make its log directory.
      await Deno.writeTextFile(`${dir}/logs`, "");
      await using server = await PythonServer.start({ path: dir, logger });
      await using session = await server.connect();
      await session.request("eval", {
        code:
          "import logging\nlogging.getLogger('pyproxy_server').warning('from the server')\n" +
          "import os\nos.write(2, b'from C\\n')\n1",
      });
      await session.close();
      await server.stop();
      const stderr = entries.filter(([, m]) => m === "{id} stderr: {line}");
      const text = lines(stderr).join("\n");
      assert.match(
        text,
        /^warn pyproxy_server: cannot open log file \(.*\); logging to stderr$/m,
      );
      assert.match(
        text,
        /^warn \S+ \S+ WARNING \[.*\] pyproxy_server: from the server$/m,
      );
      assert.match(text, /^warn from C$/m);
      assert.ok(stderr.every(([, , p]) => p?.id === server.id));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
]);

scenarios.push([
  "Pool with a logger of its own: workers' stderr and host command failures reach it",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-stderr-pool-" });
    const { logger, entries } = recordingLogger();
    try {
      const { Pool } = await import("../src/pool.ts");
      await using pool = await Pool.start({
        workers: 1,
        modelsDir: dir,
        handleSignals: false,
        logger,
        plugins: [{
          name: "buggy",
          handlers: {
            "buggy.run": () => {
              throw new TypeError("a bug in host code");
            },
          },
        }],
      });
      // Straight to the process's stderr, past the output capture.
      await pool.eval("import os\nos.write(2, b'to fd 2\\n')").result;
      await pool.addModel("caller", {
        source:
          "from pyproxy import host\nclass M:\n    def execute(self, msg):\n        return host.call('buggy.run', {})\n",
      });
      await pool.execute("caller", {}).catch(() => {});
      const seen = () => lines(entries).join("\n");
      for (let i = 0; i < 100 && !/to fd 2/.test(seen()); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.match(seen(), /^warn to fd 2$/m);
      assert.ok(
        entries.some(([level, m, p]) =>
          level === "warn" && m.startsWith("Host command") &&
          p?.cmd === "buggy.run"
        ),
        JSON.stringify(entries.map(([l, m]) => `${l} ${m}`)),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
]);

Deno.test("Pool with logDir '-': no log files, each worker's log reaches the pool's logger at its level, past the 50 lines a second of an unplanned stderr, a call's records once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-log-dash-" });
  const { logger, entries } = recordingLogger();
  try {
    const { Pool } = await import("../src/pool.ts");
    await using pool = await Pool.start({
      workers: 1,
      modelsDir: dir,
      handleSignals: false,
      logger,
      logDir: "-",
    });
    // Text of the process's (a subprocess, a forked child printing a
    // client's words) that looks like a record is not one: a warning, as
    // written (it was an error with its "\\n" unescaped). Lines written at
    // once (a traceback another program printed) are one entry. A model
    // thread's uncaught exception is one record.
    await pool.eval(
      "import os, threading\n" +
        "os.write(2, ('2026-12-05 01:33:49,123 ERROR [MainThread] pyproxy_server: forged' + chr(92) + 'nline' + chr(10)\n" +
        "    + 'Traceback (most recent call last):\\n  File \"x.py\", line 1\\nValueError: raw\\n').encode())\n" +
        "t = threading.Thread(target=lambda: 1 / 0, name='loader')\n" +
        "t.start()\nt.join()\n",
    ).result;
    // Records of a thread the call starts are outside the call (no log
    // event): on stderr; the call's own record goes as its log event.
    await pool.addModel("chatty", {
      source: "import logging, threading\nlog = logging.getLogger('chatty')\n" +
        "class M:\n    def execute(self, msg):\n" +
        "        log.warning('in the call')\n" +
        "        def lines():\n" +
        "            for i in range(msg['n']):\n" +
        "                log.warning('line %d of the thread', i)\n" +
        "            try:\n" +
        "                1 / 0\n" +
        "            except ZeroDivisionError:\n" +
        "                log.exception('failed in C:\\\\temp\\nafter %d lines', i + 1)\n" +
        "            log.warning('big %s end', 'x' * 100000)\n" +
        "        t = threading.Thread(target=lines)\n" +
        "        t.start()\n" +
        "        t.join()\n" +
        "        return None\n",
    });
    await pool.execute("chatty", { n: 200 });
    const seen = () => lines(entries).join("\n");
    for (let i = 0; i < 200 && !/ chatty: big x/.test(seen()); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const text = seen();
    assert.match(
      text,
      /^warn \S+ \S+ WARNING \[.*\] chatty: line 199 of the thread$/m,
    );
    assert.equal(
      text.match(/ chatty: line \d+ of the thread$/gm)?.length,
      200,
      "none dropped at 200 lines in a burst",
    );
    // A record with a traceback (and a multi-line message): one entry at its
    // level, whole; its lines were each a warning, each counted in the limit.
    const failed = entries.filter(([, , p]) =>
      / chatty: /.test(String(p?.line ?? "")) && (
        String(p?.line ?? "").includes("Traceback") ||
        String(p?.line ?? "").includes("ZeroDivisionError")
      )
    );
    assert.equal(failed.length, 1, JSON.stringify(failed));
    assert.equal(failed[0]![0], "error");
    assert.match(
      String(failed[0]![2]?.line),
      /ERROR \[.*\] chatty: failed in C:\\temp\nafter 200 lines\nTraceback \(most recent call last\):\n {2}File .*\n(.*\n)*ZeroDivisionError: division by zero$/,
    );
    // A record longer than a line may be (64 KiB), read in pieces: one
    // entry at its level, cut; its rest was a warning of its own.
    const big = entries.filter(([, , p]) => /xxx/.test(String(p?.line ?? "")));
    assert.equal(big.length, 1, "one entry");
    assert.equal(big[0]![0], "warn");
    assert.match(
      String(big[0]![2]?.line),
      /^\S+ \S+ WARNING \[.*\] chatty: big x+… \(100\d\d\d characters\)$/,
    );
    // The call's record: once, as the call's log event (with its model),
    // not again as a stderr line.
    const inCall = entries.filter(([, , p]) =>
      String(p?.message ?? p?.line ?? "").includes("in the call")
    );
    assert.equal(inCall.length, 1, JSON.stringify(inCall));
    assert.equal(inCall[0]![2]?.stream, "logging");
    assert.equal(inCall[0]![2]?.model, "chatty");
    // One write (lines that come within 50 ms): one entry, an error for
    // the traceback it ends with (the forged record stays text).
    const raw = entries.filter(([, , p]) =>
      String(p?.line ?? "").includes("ValueError: raw")
    );
    assert.deepEqual(lines(raw), [
      "error 2026-12-05 01:33:49,123 ERROR [MainThread] pyproxy_server: forged\\nline\n" +
      'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: raw',
    ]);
    const uncaught = entries.filter(([, , p]) =>
      String(p?.line ?? "").includes("Exception in thread loader")
    );
    assert.equal(uncaught.length, 1, JSON.stringify(uncaught));
    assert.equal(uncaught[0]![0], "error");
    assert.match(
      String(uncaught[0]![2]?.line),
      /ERROR \[loader\] pyproxy_server\.uncaught: Exception in thread loader\nTraceback \(most recent call last\):\n(.*\n)*ZeroDivisionError: division by zero$/,
    );
    // The server's own records too, at their level (its start line).
    assert.match(text, /^info \S+ \S+ INFO \[.*\] pyproxy_server\S*: /m);
    assert.doesNotMatch(text, /cannot open log file/);
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name),
      [],
      "no logs directory",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("StderrLog does not cut a long unfinished line through the start of a record's mark read apart from its rest (chaos48)", () => {
  // Cut at maxLineChars, the mark's start went with the text's last cut:
  // the record that followed was a warning, its mark logged in two pieces.
  for (const split of [1, 5, MARK.length - 1, MARK.length]) {
    const { logger, entries } = recordingLogger();
    const log = new StderrLog(logger, "w1", {
      mark: MARK,
      maxLineChars: 100,
      now: () => 0,
    });
    const record = rec("2026-12-05 01:33:49,124 ERROR [t] x: bad\n");
    log.push("x".repeat(98) + record.slice(0, split));
    log.push(record.slice(split));
    log.end();
    assert.deepEqual(lines(entries), [
      `warn ${"x".repeat(98)}`,
      "error 2026-12-05 01:33:49,124 ERROR [t] x: bad",
    ], `split ${split}`);
    for (const [, , props] of entries) {
      assert.ok(
        !String(props?.line).includes(MARK.slice(0, 4)),
        `split ${split}`,
      );
    }
  }
});

/** A chained traceback as Python prints it, a line a string. */
const CHAINED = [
  "Traceback (most recent call last):",
  '  File "m.py", line 8, in chained',
  "    fail()",
  '  File "m.py", line 4, in fail',
  '    raise ValueError("boom")',
  "ValueError: boom",
  "",
  "The above exception was the direct cause of the following exception:",
  "",
  "Traceback (most recent call last):",
  '  File "m.py", line 17, in execute',
  "    chained()",
  "    ~~~~~~~^^",
  "RuntimeError: wrapped",
  "a note added with add_note",
];

Deno.test("StderrLog logs a traceback written a line at a time, 100 ms apart, as one error entry, and the lines after it apart", () => {
  const { logger, entries } = recordingLogger();
  let now = 0;
  const log = new StderrLog(logger, "w1", { mark: MARK, now: () => now });
  log.push("Exception in thread bg:\n"); // Python's header, just before it
  for (const line of CHAINED) {
    log.push(line + "\n");
    // Another thread's record meanwhile: logged, the traceback not cut.
    if (line === "    fail()") {
      log.push(rec("2026-12-05 01:33:49,123 INFO [t] x: meanwhile\n"));
    }
    now += 100;
  }
  now += 300; // longer than twice its longest pause: it has ended
  log.push("a line of its own\n");
  log.end();
  assert.deepEqual(lines(entries), [
    "info 2026-12-05 01:33:49,123 INFO [t] x: meanwhile",
    `error Exception in thread bg:\n${CHAINED.join("\n")}`,
    "warn a line of its own",
  ]);
  assert.deepEqual(entries[1]![2], {
    id: "w1",
    line: `Exception in thread bg:\n${CHAINED.join("\n")}`,
  });
  // Two tracebacks one after the other (no chain's line between): two.
  const two = recordingLogger();
  const other = new StderrLog(two.logger, "w1", { now: () => 0 });
  other.push(
    "Traceback (most recent call last):\n  File \"a\"\nKeyError: 'a'\n" +
      "Traceback (most recent call last):\n  File \"b\"\nKeyError: 'b'\n",
  );
  other.end();
  assert.deepEqual(lines(two.entries), [
    `error Traceback (most recent call last):\n  File "a"\nKeyError: 'a'`,
    `error Traceback (most recent call last):\n  File "b"\nKeyError: 'b'`,
  ]);
});

Deno.test("StderrLog logs a faulthandler dump as one entry, an error for a crash's", () => {
  const { logger, entries } = recordingLogger();
  let now = 0;
  const log = new StderrLog(logger, "w1", { now: () => now });
  const crash = [
    "Fatal Python error: Segmentation fault",
    "",
    "Current thread 0x00007f3c2a1b4740 (most recent call first):",
    '  File "m.py", line 3 in execute',
    "",
    "Extension modules: numpy.core._multiarray_umath (total: 1)",
  ];
  for (const line of crash) {
    log.push(line + "\n");
    now += 80;
  }
  now += 500;
  const stack = [
    "Stack (most recent call first):",
    '  File "m.py", line 9 in execute',
  ];
  log.push(stack.join("\n") + "\nafter it\n");
  log.end();
  assert.deepEqual(lines(entries), [
    `error ${crash.join("\n")}`,
    `warn ${stack.join("\n")}`,
    "warn after it",
  ]);
});

Deno.test("StderrLog bounds a traceback that never ends: in characters (its rest another entry) and in time", () => {
  const { logger, entries } = recordingLogger();
  let now = 0;
  const log = new StderrLog(logger, "w1", {
    now: () => now,
    maxTracebackChars: 60,
    maxTracebackMs: 1000,
  });
  log.push("Traceback (most recent call last):\n");
  for (let i = 0; i < 6; i++) {
    log.push(`  File "f${i}.py", line 1\n`); // 22 characters
    now += 300;
  }
  log.push("ValueError: late\n"); // its time was up at 1000 ms
  log.end();
  assert.deepEqual(lines(entries), [
    'error Traceback (most recent call last):\n  File "f0.py", line 1',
    'error   File "f1.py", line 1\n  File "f2.py", line 1',
    'error   File "f3.py", line 1',
    // Then lines as any others (each 300 ms after the last).
    'warn   File "f4.py", line 1',
    'warn   File "f5.py", line 1',
    "warn ValueError: late",
  ]);
});

Deno.test("StderrLog logs a traceback whose end does not come once its time is up, and one that ended once no line came", async () => {
  const { logger, entries, next } = waitingLogger();
  const log = new StderrLog(logger, "w1", {
    flushMs: 10,
    maxTracebackMs: 200,
  });
  try {
    let logged = next();
    log.push('Traceback (most recent call last):\n  File "m.py"\n');
    await logged;
    assert.deepEqual(lines(entries), [
      'error Traceback (most recent call last):\n  File "m.py"',
    ]);
    logged = next();
    log.push(
      'Traceback (most recent call last):\n  File "m.py"\nKeyError: 1\n',
    );
    await logged;
    assert.equal(entries.length, 2);
  } finally {
    log.end();
  }
});

Deno.test("PythonServer logs a traceback its worker writes a line at a time, 80 ms apart, and a faulthandler dump, as one entry each", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-stderr-tb-" });
  const { logger, entries } = recordingLogger();
  try {
    await using server = await PythonServer.start({ path: dir, logger });
    await using session = await server.connect();
    await session.request("eval", {
      code: [
        "import faulthandler, os, time, traceback",
        "def fail():",
        "    raise ValueError('boom')",
        "try:",
        "    try:",
        "        fail()",
        "    except ValueError as e:",
        "        raise RuntimeError('wrapped') from e",
        "except RuntimeError:",
        "    text = traceback.format_exc()",
        "for line in text.splitlines(True):",
        "    os.write(2, line.encode())",
        "    time.sleep(0.08)",
        "time.sleep(0.5)",
        "faulthandler.dump_traceback(file=2, all_threads=False)",
        "time.sleep(0.5)",
        "os.write(2, b'after them\\n')",
        "1",
      ].join("\n"),
    });
    await session.close();
    await server.stop();
    const stderr = entries.filter(([, m]) => m === "{id} stderr: {line}");
    const tracebacks = stderr.filter(([, , p]) =>
      /ValueError|RuntimeError/.test(String(p?.line))
    );
    assert.equal(tracebacks.length, 1, lines(stderr).join("\n---\n"));
    assert.equal(tracebacks[0]![0], "error");
    assert.match(
      String(tracebacks[0]![2]?.line),
      /^Traceback \(most recent call last\):\n[^]*ValueError: boom\n\nThe above exception was the direct cause of the following exception:\n\nTraceback \(most recent call last\):\n[^]*RuntimeError: wrapped$/,
    );
    assert.equal(tracebacks[0]![2]?.id, server.id);
    const dumps = stderr.filter(([, , p]) => /^Stack/.test(String(p?.line)));
    assert.equal(dumps.length, 1, lines(stderr).join("\n---\n"));
    assert.match(
      String(dumps[0]![2]?.line),
      /^Stack \(most recent call first\):\n {2}File /,
    );
    assert.ok(
      stderr.some(([l, , p]) => l === "warn" && p?.line === "after them"),
      lines(stderr).join("\n---\n"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("StderrLog gives onText all the text a line at a time, records without the mark, unescaped, with their fields", () => {
  const { logger } = recordingLogger();
  const given: [string, unknown][] = [];
  const log = new StderrLog(logger, "w1", {
    mark: MARK,
    maxLinesPerSecond: 1, // not for onText
    maxLineChars: 100,
    now: () => 0,
    onText: (text, record) => given.push([text, record]),
  });
  log.push("plain 1\npla");
  log.push(
    "in 2\r\n" + rec("2026-12-05 01:33:49,123 ERROR [loader] m: bad\\n"),
  );
  log.push("Traceback (most recent call last):\\nKeyError: 1\n50%");
  log.push(rec("2026-12-05 01:33:49,124 INFO [Main] pyproxy_server: x\n"));
  log.push("y".repeat(250));
  log.end();
  assert.deepEqual(given, [
    ["plain 1\n", undefined],
    ["plain 2\r\n", undefined],
    [
      "2026-12-05 01:33:49,123 ERROR [loader] m: bad\nTraceback (most recent call last):\nKeyError: 1\n",
      {
        level: "error",
        logger: "m",
        thread: "loader",
        message: "bad\nTraceback (most recent call last):\nKeyError: 1",
      },
    ],
    ["50%", undefined],
    [
      "2026-12-05 01:33:49,124 INFO [Main] pyproxy_server: x\n",
      { level: "info", logger: "pyproxy_server", thread: "Main", message: "x" },
    ],
    ["y".repeat(100), undefined],
    ["y".repeat(100), undefined],
    ["y".repeat(50), undefined],
  ]);
  // A callback that throws stops neither the log nor the other lines.
  const { logger: other, entries } = recordingLogger();
  const throwing = new StderrLog(other, "w1", {
    now: () => 0,
    onText: () => {
      throw new Error("the caller's bug");
    },
  });
  throwing.push("a\nb\n");
  throwing.end();
  assert.deepEqual(lines(entries), ["warn a\nb"]);
});

scenarios.push([
  "PythonServer's onStderr gets the server's records without their mark, whole, with their level and logger",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-on-stderr-" });
    const given: [string, StderrRecord | undefined][] = [];
    try {
      await using server = await PythonServer.start({
        path: dir,
        logDir: "-",
        logger: recordingLogger().logger,
        onStderr: (text, record) => given.push([text, record]),
      });
      await using session = await server.connect();
      await session.request("eval", {
        code: [
          "import logging, os, threading",
          "def work():",
          "    try:",
          "        {}['k']",
          "    except KeyError:",
          "        logging.getLogger('loader').exception('failed')",
          "t = threading.Thread(target=work, name='bg')",
          "t.start(); t.join()",
          "os.write(2, b'from C\\n')",
          "1",
        ].join("\n"),
      });
      await session.close();
      await server.stop();
      const failed = given.filter(([, r]) => r?.logger === "loader");
      assert.equal(failed.length, 1, JSON.stringify(given));
      const [text, record] = failed[0]!;
      assert.match(
        text,
        /^\d{4}-\d\d-\d\d \S+ ERROR \[bg\] loader: failed\nTraceback \(most recent call last\):\n[^]*KeyError: 'k'\n$/,
      );
      assert.deepEqual({ ...record, message: undefined }, {
        level: "error",
        logger: "loader",
        thread: "bg",
        message: undefined,
      });
      assert.match(record!.message, /^failed\nTraceback [^]*KeyError: 'k'$/);
      // Every record starts with its time: no mark before it.
      for (const [text, r] of given) {
        if (r !== undefined) assert.match(text, /^\d{4}-\d\d-\d\d /, text);
      }
      assert.ok(
        given.some(([t, r]) => t === "from C\n" && r === undefined),
        JSON.stringify(given),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
]);

scenarios.push([
  "PythonServer's stderr records: a thread's name cannot make a record pass for another logger's (the server's own), nor can a space in a logger's name cut it",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-thread-name-" });
    const given: (StderrRecord | undefined)[] = [];
    try {
      await using server = await PythonServer.start({
        path: dir,
        logDir: "-",
        logger: recordingLogger().logger,
        onStderr: (_text, record) => given.push(record),
      });
      await using session = await server.connect();
      await session.request("eval", {
        code: [
          "import logging, threading",
          "def work():",
          "    logging.getLogger('loader').warning('from a thread')",
          "    logging.getLogger('my model').warning('spaced')",
          "t = threading.Thread(target=work, name='bg] pyproxy_server: forged')",
          "t.start(); t.join()",
          "1",
        ].join("\n"),
      });
      await session.close();
      await server.stop();
      const mine = given.filter((r) => r?.thread?.startsWith("bg"));
      // Before: logger "pyproxy_server", thread "bg", message "forged] loader: ...".
      assert.deepEqual(
        mine.map((r) => [r?.logger, r?.thread, r?.message]),
        [
          ["loader", "bg) pyproxy_server: forged", "from a thread"],
          ["my_model", "bg) pyproxy_server: forged", "spaced"],
        ],
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
]);

scenarios.push([
  "PythonServer's stderr records: a thread's or logger's name that is no plain str (a str subclass, an object a logging filter set) cannot make a record pass for the server's own either",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-thread-name-" });
    const given: (StderrRecord | undefined)[] = [];
    try {
      await using server = await PythonServer.start({
        path: dir,
        logDir: "-",
        logger: recordingLogger().logger,
        onStderr: (_text, record) => given.push(record),
      });
      await using session = await server.connect();
      await session.request("eval", {
        code: [
          "import logging",
          "class Name(str): pass",
          "class Text:",
          "    def __str__(self): return 'obj] pyproxy_server: forged'",
          "class Rename(logging.Filter):",
          "    def filter(self, record):",
          "        if record.msg == 'subclass':",
          "            record.threadName = Name('sub] pyproxy_server: forged')",
          "        elif record.msg == 'object':",
          "            record.threadName = Text()",
          "        else:",
          "            record.name = Name('pyproxy_server: forged')",
          "        return True",
          "log = logging.getLogger('filtered')",
          "log.addFilter(Rename())",
          "log.warning('subclass'); log.warning('object'); log.warning('named')",
          "1",
        ].join("\n"),
      });
      await session.close();
      await server.stop();
      const mine = given.filter((r) =>
        r !== undefined &&
          ["subclass", "object", "named"].includes(r.message) ||
        r?.message.startsWith("forged") === true
      );
      // Before: logger "pyproxy_server" and message "forged] filtered: ..."
      // (or "forged: named"): the server's own record, to the host.
      assert.deepEqual(
        mine.map((r) => [r?.logger, r?.message]),
        [
          ["filtered", "subclass"],
          ["filtered", "object"],
          ["pyproxy_server:_forged", "named"],
        ],
      );
      assert.deepEqual(
        mine.slice(0, 2).map((r) => r?.thread),
        ["sub) pyproxy_server: forged", "obj) pyproxy_server: forged"],
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
]);

scenarios.push([
  "PythonServer with logDir '-': a traceback a model's own thread prints (traceback.print_exc) is one error entry of that thread, not a warning per line",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-print-exc-" });
    const { logger, entries } = recordingLogger();
    try {
      await using server = await PythonServer.start({
        path: dir,
        logDir: "-",
        logger,
      });
      await using session = await server.connect();
      await session.request("eval", {
        code: [
          "import threading, traceback",
          "def work():",
          "    try:",
          "        {}['k']",
          "    except KeyError:",
          "        traceback.print_exc()",
          "t = threading.Thread(target=work, name='bg')",
          "t.start(); t.join()",
          "1",
        ].join("\n"),
      });
      await session.close();
      await server.stop();
      const printed = entries.filter(([, m, p]) =>
        m === "{id} stderr: {line}" && String(p?.line).includes("<stderr>")
      );
      assert.equal(printed.length, 1, lines(printed).join("\n---\n"));
      assert.equal(printed[0]![0], "error");
      assert.match(
        String(printed[0]![2]?.line),
        /^\S+ \S+ ERROR \[bg\] pyproxy_server\.output: <stderr>: Traceback \(most recent call last\):\n {2}File [^]*KeyError: 'k'$/,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
]);

/** Python 3.13, whose tracebacks are coloured under FORCE_COLOR and PYTHON_COLORS. */
const PYTHON_313 = "/root/.pyenv/versions/3.13.0/bin/python3";
const hasPython313 = await Deno.stat(PYTHON_313).then(() => true, () => false);

Deno.test({
  name:
    "PythonServer on Python 3.13 with FORCE_COLOR or PYTHON_COLORS: a coloured traceback (a subprocess's, a failed start's) is one error entry without its colours",
  ignore: !hasPython313,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-stderr-colours-" });
    try {
      const { logger, entries } = recordingLogger();
      {
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
      }
      const stderr = entries.filter(([, m]) => m === "{id} stderr: {line}");
      assert.deepEqual(
        stderr.map(([level, , p]) => [level, p?.line]),
        [[
          "error",
          'Traceback (most recent call last):\n  File "<string>", line 3, in <module>\n    f()\n    ~^^\n  File "<string>", line 2, in f\n    1/0\n    ~^~\nZeroDivisionError: division by zero',
        ]],
      );

      // A start that fails before the log is set up (a shadowed argparse).
      await Deno.writeTextFile(
        `${dir}/argparse.py`,
        "raise RuntimeError('shadowed argparse')\n",
      );
      const failed = recordingLogger();
      await assert.rejects(
        PythonServer.start({
          path: dir,
          python: PYTHON_313,
          logger: failed.logger,
          env: { PYTHON_COLORS: "1", PYTHONPATH: dir },
        }),
        StartError,
      );
      const tracebacks = failed.entries.filter(([level, m]) =>
        level === "error" && m === "{id} stderr: {line}"
      );
      assert.equal(tracebacks.length, 1, lines(failed.entries).join("\n---\n"));
      const text = String(tracebacks[0]![2]?.line);
      assert.ok(!text.includes("\x1b"), text);
      assert.match(text, /\nRuntimeError: shadowed argparse$/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("StderrLog scenarios on servers of their own (each its own server, 3 at a time)", (t) =>
  concurrentSteps(t, scenarios, 3));
