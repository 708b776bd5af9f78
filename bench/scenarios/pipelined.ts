/**
 * Scenario 2: 64 calls in flight on one worker; calls/s.
 *
 * @module
 */
import { runEchoWindow } from "../drivers.ts";
import { ratioTarget } from "../targets.ts";
import type { Scenario, Target } from "../types.ts";

/** Calls kept in flight. */
export const PIPELINE_WINDOW = 64;

const PYPROXY = ["pyproxy Session", "pyproxy Pool (1 worker)"];

/**
 * Pipelined execute of the echo model: the same window for every
 * implementation.
 *
 * @example
 * ```ts ignore
 * const rows = await pipelined.run({ rounds: 5, roundMs: 1000, quick: false });
 * ```
 */
export const pipelined: Scenario = {
  id: "pipelined",
  title:
    `pipelined execute (${PIPELINE_WINDOW} in flight on one worker, ~100 B echo)`,
  run(config) {
    return runEchoWindow(config, PIPELINE_WINDOW);
  },
  targets(rows): Target[] {
    return PYPROXY.flatMap((name) => [
      ratioTarget(rows, {
        label: `${name} ≥ 1.0x stdio`,
        num: name,
        den: "stdio",
        metric: "calls/s",
        threshold: 1,
      }),
      ratioTarget(rows, {
        label: `${name} ≥ 1.5x floor`,
        num: name,
        den: "floor",
        metric: "calls/s",
        threshold: 1.5,
      }),
    ]);
  },
  timeoutMs: (config) => 60_000 + config.rounds * config.roundMs * 4 * 2,
};
