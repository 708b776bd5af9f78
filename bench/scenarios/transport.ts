/**
 * Scenario 7: Unix socket vs TCP for the sequential and pipelined cases.
 *
 * @module
 */
import { floorCaller, sessionCaller } from "../callers.ts";
import {
  checkEcho,
  measureWindow,
  runInterleaved,
  SMALL_MESSAGE,
} from "../drivers.ts";
import { PIPELINE_WINDOW } from "./pipelined.ts";
import { ratioTarget } from "../targets.ts";
import type { Scenario, Target } from "../types.ts";

/**
 * The same Session/floor calls over TCP and over a Unix socket.
 *
 * @example
 * ```ts ignore
 * const rows = await transport.run({ rounds: 5, roundMs: 1000, quick: false });
 * ```
 */
export const transport: Scenario = {
  id: "transport",
  title: `Unix socket vs TCP (sequential and ${PIPELINE_WINDOW} in flight)`,
  run(config) {
    const half = Math.max(100, Math.round(config.roundMs / 2));
    return runInterleaved(
      [
        sessionCaller("echo", { unix: false }),
        sessionCaller("echo", { unix: true }),
        floorCaller("echo", { unix: false }),
        floorCaller("echo", { unix: true }),
      ],
      config,
      {
        check: (c) => checkEcho(c, SMALL_MESSAGE),
        measure: async (c) => {
          const seq = await measureWindow(c, 1, half, SMALL_MESSAGE);
          const pipe = await measureWindow(
            c,
            PIPELINE_WINDOW,
            half,
            SMALL_MESSAGE,
          );
          return {
            "seq calls/s": seq["calls/s"]!,
            "seq p99 ms": seq["p99 ms"]!,
            "pipelined calls/s": pipe["calls/s"]!,
          };
        },
      },
    );
  },
  targets(rows): Target[] {
    // No target is set for the transport; these ratios are informational.
    const info = (t: Target): Target => ({ ...t, pass: null, info: true });
    return [
      info(ratioTarget(rows, {
        label: "pyproxy unix/TCP sequential",
        num: "pyproxy Session (unix)",
        den: "pyproxy Session (TCP)",
        metric: "seq calls/s",
        threshold: 1,
      })),
      info(ratioTarget(rows, {
        label: "pyproxy unix/TCP pipelined",
        num: "pyproxy Session (unix)",
        den: "pyproxy Session (TCP)",
        metric: "pipelined calls/s",
        threshold: 1,
      })),
    ];
  },
  timeoutMs: (config) => 60_000 + config.rounds * config.roundMs * 4 * 2,
};
