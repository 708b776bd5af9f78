/**
 * Scenario 1: one call in flight; calls/s, p50, p99.
 *
 * @module
 */
import { runEchoWindow } from "../drivers.ts";
import { infoRatio, ratioTarget } from "../targets.ts";
import type { Scenario, Target } from "../types.ts";

const PYPROXY = ["pyproxy Session", "pyproxy Pool (1 worker)"];

/**
 * Sequential execute of the echo model with a ~100 byte message.
 *
 * @example
 * ```ts ignore
 * const rows = await sequential.run({ rounds: 5, roundMs: 1000, quick: false });
 * ```
 */
export const sequential: Scenario = {
  id: "sequential",
  title: "sequential execute (1 in flight, ~100 B echo)",
  run(config) {
    return runEchoWindow(config, 1);
  },
  targets(rows): Target[] {
    return PYPROXY.flatMap((name) => [
      ratioTarget(rows, {
        label: `${name} calls/s ≥ 1.0x stdio`,
        num: name,
        den: "stdio",
        metric: "calls/s",
        threshold: 1,
      }),
      ratioTarget(rows, {
        label: `${name} p99 < 2x stdio p99`,
        num: name,
        den: "stdio",
        metric: "p99 ms",
        threshold: 2,
        op: "<",
      }),
      infoRatio(rows, {
        label: `${name} calls/s / floor`,
        num: name,
        den: "floor",
        metric: "calls/s",
        threshold: 1,
      }),
    ]);
  },
  timeoutMs: (config) => 60_000 + config.rounds * config.roundMs * 4 * 2,
};
