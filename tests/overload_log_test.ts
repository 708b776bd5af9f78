/**
 * OverloadLog (src/_overload_log.ts): a pool's queue-full refusals, one
 * warning at once, then at most one a minute with the count since.
 */
import assert from "node:assert/strict";
import { OverloadLog } from "../src/_overload_log.ts";
import { OverloadedError } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";

Deno.test("OverloadLog: the first refusal at once, then one line per interval with the refusals since", () => {
  const lines: Array<[string, Record<string, unknown> | undefined]> = [];
  const none = () => {};
  const logger: Logger = {
    trace: none,
    debug: none,
    info: none,
    warn: (message, properties) => void lines.push([message, properties]),
    error: none,
    fatal: none,
    isEnabledFor: () => true,
  };
  let now = 1_000_000;
  const log = new OverloadLog(logger, { now: () => now });
  const err = (model?: string) =>
    new OverloadedError("Cannot accept call executeModel: ...", {
      details: {
        queue: 1024,
        maxQueue: 1024,
        maxInFlightPerWorker: 64,
        ...(model === undefined ? {} : { model }),
      },
    });
  log.refused(err("a"));
  for (let i = 0; i < 99; i++) {
    now += 100;
    log.refused(err("a"));
  }
  assert.equal(lines.length, 1);
  now += 60_000;
  log.refused(err("b@2"));
  now += 1;
  log.refused(err());
  assert.equal(lines.length, 2);
  assert.match(lines[1]![0], /^Overloaded: refused \{refused\} calls since/);
  assert.deepEqual(lines[1]![1], {
    refused: 100,
    seconds: 70,
    model: "b@2",
    maxQueue: 1024,
    maxInFlightPerWorker: 64,
  });
});
