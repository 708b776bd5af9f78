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
