/**
 * What the autoscale plugin shows operators (internal): its counters, its
 * status (`GET /v1/status`, the dashboard) and its `pyproxy_autoscale_*`
 * series (`GET /metrics`).
 *
 * @module
 */
import type { PluginMetric, ScaleBounds } from "../src/plugin.ts";

/**
 * What the plugin counted (`autoscale().stats`), for tests and metrics.
 *
 * @example
 * ```ts
 * import { autoscale, type AutoscaleStats } from "@pyproxy/pyproxy";
 * const stats: AutoscaleStats = autoscale({ min: 1, max: 4 }).stats;
 * console.log(stats.up + stats.down); // 0 (no pool yet)
 * ```
 */
export interface AutoscaleStats {
  /** Load samples taken. */
  samples: number;
  /** Scale-ups asked for (a growth to `min` included). */
  up: number;
  /** Scale-downs asked for (a shrink to `max` included). */
  down: number;
  /** Resizes of the plugin's that failed (a new worker that could not start). */
  failed: number;
  /** Of them, scale-ups (those the back-off is about). */
  failedUp: number;
  /** Resizes by someone else seen (`pool.resize`, `PUT /v1/workers`). */
  manual: number;
}

/**
 * What the plugin is doing, as {@linkcode AutoscaleStatus.state} says.
 *
 * @example
 * ```ts
 * import type { AutoscaleState } from "@pyproxy/pyproxy";
 * const waitingForLoad = (state: AutoscaleState): boolean =>
 *   state === "busy" || state === "idle";
 * console.log(waitingForLoad("cooldown")); // false
 * ```
 */
export type AutoscaleState =
  | "steady"
  | "busy"
  | "idle"
  | "cooldown"
  | "hold"
  | "backoff"
  | "waiting"
  | "resizing"
  | "stopped";

/** Every {@linkcode AutoscaleState}, each always in `pyproxy_autoscale_state`. */
const AUTOSCALE_STATES: readonly AutoscaleState[] = Object.keys(
  {
    steady: true,
    busy: true,
    idle: true,
    cooldown: true,
    hold: true,
    backoff: true,
    waiting: true,
    resizing: true,
    stopped: true,
  } satisfies Record<AutoscaleState, true>,
) as AutoscaleState[];

/**
 * One resize the plugin asked for.
 *
 * @example
 * ```ts
 * import type { AutoscaleDecision } from "@pyproxy/pyproxy";
 * const last: AutoscaleDecision = { at: Date.now(), from: 2, to: 3, reason: "busy for 30000 ms", outcome: "done" };
 * console.log(`${last.from} -> ${last.to}: ${last.outcome}`); // "2 -> 3: done"
 * ```
 */
export interface AutoscaleDecision {
  /** When, in `Date.now()` milliseconds. */
  at: number;
  /** Workers before. */
  from: number;
  /** Workers asked for. */
  to: number;
  /** Why, as logged. */
  reason: string;
  /** How it went: under way, done, failed, or cut short by `close()`. */
  outcome: "running" | "done" | "failed" | "cancelled";
}

/**
 * What `autoscale().status()` returns (JSON-safe; a type, so that it is a
 * `Record<string, unknown>` as `Plugin.status` returns).
 *
 * @example Read it from a pool's plugin status
 * ```ts ignore
 * import type { AutoscaleStatus } from "@pyproxy/pyproxy";
 * const st = pool.pluginStatus().autoscale as AutoscaleStatus;
 * console.log(st.state, st.target, st.lastDecision?.reason);
 * ```
 */
export type AutoscaleStatus = {
  /** Fewest workers, in force. */
  min: number;
  /** Most workers, in force. */
  max: number;
  /** The bounds it was configured with (`setBounds` with `null` restores them). */
  configured: ScaleBounds;
  /** Workers it aims at: its resize under way, else the pool's size within the bounds. */
  target: number;
  /**
   * `steady` (neither busy nor idle), `busy` / `idle` (a window open, not
   * yet long enough), `cooldown` (after a resize), `hold` (after someone
   * else's), `backoff` (busy, but scale-ups failed: waiting to retry),
   * `waiting` (another resize, or the pool's start, under way), `resizing`
   * (its own), `stopped` (the pool closed).
   */
  state: AutoscaleState;
  /** Milliseconds the hold after someone else's resize still lasts (0: none). */
  holdMs: number;
  /** Scale-ups failed in a row, and milliseconds before the next may be tried. */
  backoff: { failures: number; retryInMs: number };
  /** Its last resize, or `null`. */
  lastDecision: AutoscaleDecision | null;
  /** Its counters (as `plugin.stats`). */
  stats: AutoscaleStats;
};

/** A status as the `pyproxy_autoscale_*` samples of `GET /metrics`. */
export function autoscaleMetrics(st: AutoscaleStatus): PluginMetric[] {
  const gauge = (
    name: string,
    help: string,
    value: number,
  ): PluginMetric => ({
    name: `pyproxy_autoscale_${name}`,
    type: "gauge",
    help,
    value,
  });
  const counter = (
    name: string,
    help: string,
    value: number,
    labels?: Record<string, string>,
  ): PluginMetric => ({
    name: `pyproxy_autoscale_${name}_total`,
    type: "counter",
    help,
    value,
    ...(labels === undefined ? {} : { labels }),
  });
  const stats = st.stats;
  return [
    gauge(
      "min_workers",
      "Fewest workers the autoscale plugin keeps (bound in force).",
      st.min,
    ),
    gauge(
      "max_workers",
      "Most workers the autoscale plugin keeps (bound in force).",
      st.max,
    ),
    gauge(
      "target_workers",
      "Workers the autoscale plugin aims at: its resize under way, else the pool's size within the bounds.",
      st.target,
    ),
    ...AUTOSCALE_STATES.map((state): PluginMetric => ({
      name: "pyproxy_autoscale_state",
      type: "gauge",
      help: "What the autoscale plugin is doing (1 for the current state).",
      value: st.state === state ? 1 : 0,
      labels: { state },
    })),
    counter(
      "scale_ups",
      "Scale-ups the autoscale plugin asked for.",
      stats.up,
    ),
    counter(
      "scale_downs",
      "Scale-downs the autoscale plugin asked for.",
      stats.down,
    ),
    counter(
      "failed_resizes",
      "Resizes of the autoscale plugin that failed, by direction.",
      stats.failedUp,
      { direction: "up" },
    ),
    counter(
      "failed_resizes",
      "Resizes of the autoscale plugin that failed, by direction.",
      stats.failed - stats.failedUp,
      { direction: "down" },
    ),
    counter(
      "manual_resizes",
      "Resizes by someone else the autoscale plugin saw (pool.resize, PUT /v1/workers).",
      stats.manual,
    ),
    gauge(
      "up_backoff_failures",
      "Scale-ups of the autoscale plugin that failed in a row.",
      st.backoff.failures,
    ),
    gauge(
      "up_backoff_seconds",
      "Seconds before the autoscale plugin may try a scale-up again after failed ones.",
      st.backoff.retryInMs / 1000,
    ),
    gauge(
      "hold_seconds",
      "Seconds the autoscale plugin still holds after a resize by someone else.",
      st.holdMs / 1000,
    ),
  ];
}
