import assert from "node:assert/strict";
import { OutputRateLimit } from "../src/_output_rate_limit.ts";
import type { Logger } from "../src/logger.ts";

function waitingLogger(): { logger: Logger; warned: Promise<unknown> } {
  let told: (props: unknown) => void = () => {};
  const warned = new Promise((resolve) => (told = resolve));
  const none = () => {};
  return {
    warned,
    logger: {
      trace: none,
      debug: none,
      info: none,
      warn: (_message, props) => told(props),
      error: none,
      fatal: none,
    },
  };
}

Deno.test("OutputRateLimit reports the lines it left out when the second ends, without waiting for more output", async () => {
  const limit = new OutputRateLimit("w1", { maxLinesPerSecond: 2 });
  const { logger, warned } = waitingLogger();
  try {
    assert.equal(limit.admit(logger, "noisy", "a\nb\nc"), "a\nb");
    assert.equal(limit.admit(logger, "noisy", "d\ne"), undefined);
    // Nothing else is printed, and the session goes on.
    assert.deepEqual(await warned, {
      worker: "w1",
      count: 3,
      model: "noisy",
      max: 2,
    });
  } finally {
    limit.end();
  }
});

Deno.test("OutputRateLimit.end reports what is left and leaves no timer behind", () => {
  const limit = new OutputRateLimit("w1", { maxLinesPerSecond: 1 });
  const counts: unknown[] = [];
  const none = () => {};
  const logger: Logger = {
    trace: none,
    debug: none,
    info: none,
    warn: (_m, props) => void counts.push(props?.count),
    error: none,
    fatal: none,
  };
  limit.admit(logger, "m", "a\nb");
  limit.end(); // Deno's sanitizer fails the test if the timer were kept
  assert.deepEqual(counts, [1]);
});

Deno.test("OutputRateLimit keeps no window for models that printed once long ago", () => {
  let now = 0;
  const limit = new OutputRateLimit("w1", { now: () => now });
  const none = () => {};
  const logger: Logger = {
    trace: none,
    debug: none,
    info: none,
    warn: none,
    error: none,
    fatal: none,
  };
  try {
    // Models added and removed under new names, each printing once.
    for (let i = 0; i < 10_000; i++) {
      assert.equal(limit.admit(logger, `m${i}`, "hello"), "hello");
      now += 100;
    }
    // The last second's windows (10 of them), and at most as many stale ones again.
    assert.ok(limit.size <= 128, `${limit.size} windows kept`);
  } finally {
    limit.end();
  }
});

Deno.test("OutputRateLimit keeps a window whose count is not yet reported", () => {
  let now = 0;
  const limit = new OutputRateLimit("w1", {
    maxLinesPerSecond: 1,
    now: () => now,
  });
  const counts: unknown[] = [];
  const none = () => {};
  const logger: Logger = {
    trace: none,
    debug: none,
    info: none,
    warn: (_m, props) => void counts.push(props?.count),
    error: none,
    fatal: none,
  };
  try {
    limit.admit(logger, "noisy", "a\nb\nc"); // 2 lines left out
    now += 5000; // its timer has not run yet (a busy event loop)
    for (let i = 0; i < 1000; i++) limit.admit(logger, `m${i}`, "x");
    limit.end();
    assert.deepEqual(counts, [2]);
  } finally {
    limit.end();
  }
});

Deno.test("OutputRateLimit admits a whole message (an error's record) while the second has room, counting its lines", () => {
  let now = 0;
  const limit = new OutputRateLimit("w1", {
    maxLinesPerSecond: 3,
    now: () => now,
  });
  const { logger } = waitingLogger();
  assert.equal(limit.admit(logger, "m", "a\nb"), "a\nb");
  assert.equal(limit.admit(logger, "m", "t1\nt2\nt3", true), "t1\nt2\nt3");
  // Its lines counted: no room left.
  assert.equal(limit.admit(logger, "m", "c"), undefined);
  assert.equal(limit.admit(logger, "m", "t4", true), undefined);
  now = 1000;
  assert.equal(limit.admit(logger, "m", "d"), "d");
  limit.end();
});

Deno.test("OutputRateLimit counts a long line as many and cuts it: a model printing 1 MB lines does not flood the log", () => {
  const now = 0;
  const limit = new OutputRateLimit("w1", { now: () => now });
  const none = () => {};
  const logger: Logger = {
    trace: none,
    debug: none,
    info: none,
    warn: none,
    error: none,
    fatal: none,
  };
  try {
    const line = "x".repeat(1_000_000);
    let logged = 0;
    let entries = 0;
    for (let i = 0; i < 1000; i++) {
      for (const whole of [false, true]) {
        const kept = limit.admit(logger, "m", line, whole);
        if (kept === undefined) continue;
        entries++;
        logged += kept.length;
        assert.ok(kept.endsWith("… (1000000 characters)"), kept.slice(-40));
      }
    }
    // Before: 100 entries, 100 MB, in the second (chaos53). Now each is 64
    // KiB and counts as 17 lines: 6 of them (~400 KB).
    assert.equal(entries, 6);
    assert.ok(logged <= 100 * 4096 + 65_536 + 100, String(logged));
    // Short lines are as before.
    assert.equal(limit.admit(logger, "n", "a\nb"), "a\nb");
  } finally {
    limit.end();
  }
});
