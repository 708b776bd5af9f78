/**
 * Scenario 3: a CPU-bound model (~1 ms of pure Python per call) on 1 and 2
 * workers.
 *
 * @module
 */
import { poolCaller, stdioCaller } from "../callers.ts";
import { measureWindow, runInterleaved } from "../drivers.ts";
import { ratioTarget } from "../targets.ts";
import type { Scenario, Target } from "../types.ts";

/** Calls in flight: enough to keep every worker busy. */
export const SCALING_WINDOW = 16;

const MSG = { job: "cpu" };

/**
 * Pool scaling with the CPU-bound model.
 *
 * @example
 * ```ts ignore
 * const rows = await scaling.run({ rounds: 5, roundMs: 1000, quick: false });
 * ```
 */
export const scaling: Scenario = {
  id: "scaling",
  title: `pool scaling (CPU-bound ~1 ms/call, ${SCALING_WINDOW} in flight)`,
  run(config) {
    return runInterleaved(
      [
        poolCaller("cpu", { workers: 1 }),
        poolCaller("cpu", { workers: 2 }),
        stdioCaller("cpu", "stdio (1 process, reference)"),
        stdioCaller("cpu", "stdio (2 processes, reference)", undefined, 2),
      ],
      config,
      {
        check: async (c) => {
          const got = await c.call(MSG) as { total?: unknown };
          if (typeof got?.total !== "number") {
            throw new Error(
              `Cannot benchmark: wrong result ${JSON.stringify(got)}`,
            );
          }
        },
        measure: (c) => measureWindow(c, SCALING_WINDOW, config.roundMs, MSG),
      },
    );
  },
  targets(rows): Target[] {
    return [
      ratioTarget(rows, {
        label: "2 workers ≥ 1.7x 1 worker",
        num: "pyproxy Pool (2 workers)",
        den: "pyproxy Pool (1 worker)",
        metric: "calls/s",
        threshold: 1.7,
      }),
      {
        // What this machine allows: the same ratio for two bare stdio workers.
        ...ratioTarget(rows, {
          label: "stdio 2 processes / 1 process (machine ceiling)",
          num: "stdio (2 processes, reference)",
          den: "stdio (1 process, reference)",
          metric: "calls/s",
          threshold: 1.7,
        }),
        pass: null,
        info: true,
      },
    ];
  },
  timeoutMs: (config) => 60_000 + config.rounds * config.roundMs * 4 * 2,
};
