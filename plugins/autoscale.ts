/**
 * The autoscale policy: grows the pool while calls queue or its workers are
 * busy, and shrinks it while they idle, within `{ min, max }`, through
 * `PluginContext.resize`. Not on by default: add `autoscale()` to a pool's
 * plugins, or `plugins.autoscale` to the gateway's `pyproxy.json`.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import * as v from "valibot";
import { ConfigError } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";
import type {
  Plugin,
  PluginMetric,
  ScaleBounds,
  ScaleBoundsChange,
} from "../src/plugin.ts";
import { MAX_TIMER_MS, setIntervalOrNever } from "../src/_timer.ts";
import { onePool } from "./_one_pool.ts";
import { checkOptionKeys } from "./_plugin_options.ts";
import {
  AUTOSCALE,
  Autoscaler,
  type AutoscalerSettings,
} from "./_autoscaler.ts";
import type { AutoscaleStats, AutoscaleStatus } from "./_autoscale_status.ts";

export type {
  AutoscaleDecision,
  AutoscaleState,
  AutoscaleStats,
  AutoscaleStatus,
} from "./_autoscale_status.ts";

/**
 * Options of {@linkcode autoscale}. Durations are in milliseconds.
 *
 * @example
 * ```ts
 * import { autoscale, type AutoscaleOptions } from "@pyproxy/pyproxy";
 * const options: AutoscaleOptions = { min: 1, max: 8, upAfterMs: 1000, downAfterMs: 30_000 };
 * console.log(autoscale(options).name); // "autoscale"
 * ```
 */
export interface AutoscaleOptions {
  /** Fewest worker slots: an integer from 1 to 1024. @default {the pool's size at start (at most `max`)} */
  min?: number;
  /**
   * Most worker slots: an integer from 1 to 1024, not below `min`.
   * @default {the largest of the cpu count, 2 × min and the pool's size at start, at most 1024}
   */
  max?: number;
  /**
   * A sample is busy when any call waits in the pool queue, or when this
   * many calls (or more) are in flight per ready worker: a number > 0.
   * @default {2}
   */
  upInFlight?: number;
  /**
   * A sample is idle when no call is queued and at most this many calls
   * are in flight per ready worker, parked streams included (and one worker
   * less would not be busy): a number >= 0, below `upInFlight`.
   * @default {0.5, or half of upInFlight when that is lower}
   */
  downInFlight?: number;
  /** The samples must have been busy this long before the pool grows: a number >= 0. @default {2000} */
  upAfterMs?: number;
  /**
   * The samples must have been idle this long before the pool shrinks by
   * one worker: a number >= 0 (`Infinity`: never shrink).
   * @default {60000}
   */
  downAfterMs?: number;
  /** No decision this long after any resize ended (its own or another's): a number >= 0. @default {5000} */
  cooldownMs?: number;
  /** Workers added by one scale-up (never beyond `max`): an integer from 1 to 1024. @default {1} */
  step?: number;
  /**
   * No decision this long after a resize by someone else ended
   * (`pool.resize`, `PUT /v1/workers`): a number >= 0 (`Infinity`: the
   * plugin stops deciding after the first one).
   * @default {60000}
   */
  manualHoldMs?: number;
  /**
   * Milliseconds between two load samples: a number from 1 to 2^31 − 1.
   * @default {min(1000, upAfterMs / 4, downAfterMs / 4), at least 10}
   */
  sampleInterval?: number;
  /** Where decisions are logged. @default {getLogger(["pyproxy", "autoscale"])} */
  logger?: Logger;
}

/**
 * The plugin {@linkcode autoscale} returns: a {@linkcode Plugin} that also
 * shows its current bounds and counters.
 *
 * @example
 * ```ts
 * import { autoscale, type AutoscalePlugin } from "@pyproxy/pyproxy";
 * const scaler: AutoscalePlugin = autoscale({ min: 1, max: 4 });
 * console.log(scaler.bounds, scaler.stats.up); // undefined 0 (no pool yet)
 * ```
 */
export interface AutoscalePlugin extends Plugin {
  /** The bounds in force (a manual resize outside them moves them); `undefined` before the pool starts. */
  readonly bounds: { min: number; max: number } | undefined;
  /** What it did, for tests and metrics (kept after the pool closes). */
  readonly stats: Readonly<AutoscaleStats>;
  /**
   * Its bounds, target, state, last decision, back-off and counters
   * (`pool.pluginStatus().autoscale`, `GET /v1/status`); `{}` before the
   * pool starts (kept after it closes, in state `stopped`).
   */
  status(): AutoscaleStatus | Record<string, never>;
  /** The `pyproxy_autoscale_*` series of `GET /metrics` (none before the pool starts). */
  metrics(): PluginMetric[];
  /**
   * Sets the bounds at run time, for the pool's life or until the next
   * call (a manual resize outside them still moves them): a number sets
   * one, `null` restores the one configured at start, absent keeps it.
   * Logged at info; returns the bounds in force. A pool outside the new
   * bounds is brought within them once the cooldown after the last resize
   * is over. Throws `RangeError` (not integers from 1 to 1024, or `max`
   * below `min`) or `TypeError`, changing nothing, and `ConfigError`
   * before the pool starts.
   *
   * @example
   * ```ts ignore
   * scaler.setBounds({ max: 8 }); // { min: 1, max: 8 }
   * scaler.setBounds({ min: null, max: null }); // the configured bounds again
   * ```
   */
  setBounds(change: ScaleBoundsChange): ScaleBounds;
}

const KNOWN = [
  "min",
  "max",
  "upInFlight",
  "downInFlight",
  "upAfterMs",
  "downAfterMs",
  "cooldownMs",
  "step",
  "manualHoldMs",
  "sampleInterval",
] as const;
// A logger is an object of functions: no JSON gives one.
const CODE_ONLY = ["logger"] as const;

const count = (what: string) => {
  const message = `expected ${what} from 1 to 1024`;
  return v.optional(v.pipe(
    v.number(message),
    v.integer(message),
    v.minValue(1, message),
    v.maxValue(1024, message),
  ));
};
const duration = v.optional(v.pipe(
  v.number("expected a number of milliseconds >= 0"),
  v.check((n) => n >= 0, "expected a number of milliseconds >= 0"),
));

const Schema = v.object({
  min: count("an integer"),
  max: count("an integer"),
  upInFlight: v.optional(v.pipe(
    v.number("expected a number > 0"),
    v.finite("expected a number > 0"),
    v.gtValue(0, "expected a number > 0"),
  )),
  downInFlight: v.optional(v.pipe(
    v.number("expected a number >= 0"),
    v.finite("expected a number >= 0"),
    v.minValue(0, "expected a number >= 0"),
  )),
  upAfterMs: duration,
  downAfterMs: duration,
  cooldownMs: duration,
  manualHoldMs: duration,
  step: count("an integer"),
  sampleInterval: v.optional(v.pipe(
    v.number(`expected a number from 1 to ${MAX_TIMER_MS}`),
    v.minValue(1, `expected a number from 1 to ${MAX_TIMER_MS}`),
    v.maxValue(MAX_TIMER_MS, `expected a number from 1 to ${MAX_TIMER_MS}`),
  )),
  logger: v.optional(v.custom<Logger>(
    (x) =>
      typeof x === "object" && x !== null &&
      ["debug", "info", "warn"].every((m) =>
        typeof (x as Record<string, unknown>)[m] === "function"
      ),
    "expected a logger (an object with debug, info and warn methods; set from code only, not in pyproxy.json)",
  )),
});

function refuse(field: string, message: string, got?: unknown): never {
  const shown = typeof got === "number"
    ? ` (got ${got})`
    : typeof got === "string" || typeof got === "boolean" || got === null
    ? ` (got ${JSON.stringify(got)})`
    : "";
  throw new ConfigError(
    `Cannot create autoscale plugin: ${field}: ${message}${shown}`,
    { details: { field } },
  );
}

/**
 * Creates the autoscale policy plugin. Every `sampleInterval` it reads
 * the pool's load (`ctx.load()`: a few counters) and:
 *
 * - grows the pool by `step` workers (up to `max`) once the samples have
 *   been busy for `upAfterMs`: a call waits in the pool queue, or
 *   `upInFlight` calls or more are in flight per ready worker;
 * - shrinks it by one worker (down to `min`) once they have been idle for
 *   `downAfterMs`: nothing queued, at most `downInFlight` calls in flight
 *   per ready worker, and one worker less would not be busy (the pool
 *   removes the least busy worker, after its calls finish);
 * - waits `cooldownMs` after every resize ends (the windows start again
 *   after it), makes one resize at a time and none while any other runs
 *   or waits, none once `pool.close()` started, and none while no worker
 *   is ready (replacing crashed workers is the restart policy's job).
 *
 * A resize by someone else (`pool.resize`, `PUT /v1/workers`) wins: a count
 * outside the bounds becomes the new bound (a resize to 8 with `max` 4 makes
 * `max` 8), and the plugin makes no decision for `manualHoldMs` after it
 * ends. A pool started outside the bounds is brought into them at once.
 * Each decision is logged at info (LogTape category `pyproxy.autoscale`)
 * with its reason and numbers, and shows as a pool event
 * `{ type: "resize", from, to, by: "autoscale", reason }`. Throws
 * `ConfigError` for a bad option, naming it.
 *
 * @example Scale between 1 and 4 workers
 * ```ts ignore
 * import { Pool } from "@pyproxy/pyproxy";
 * import { autoscale } from "@pyproxy/pyproxy";
 * await using pool = await Pool.start({
 *   workers: 1,
 *   plugins: [autoscale({ max: 4, upAfterMs: 1000, downAfterMs: 30_000 })],
 * });
 * pool.on((ev) => {
 *   if (ev.type === "resize") console.log(`${ev.from} -> ${ev.to}: ${ev.reason}`);
 * });
 * ```
 */
export function autoscale(options: AutoscaleOptions = {}): AutoscalePlugin {
  checkOptionKeys(AUTOSCALE, options, KNOWN, undefined, CODE_ONLY);
  const parsed = v.safeParse(Schema, options);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    refuse(v.getDotPath(issue) ?? "", issue.message, issue.input);
  }
  const o = parsed.output;
  if (o.min !== undefined && o.max !== undefined && o.max < o.min) {
    refuse("max", `expected at least min (${o.min})`, o.max);
  }
  const upInFlight = o.upInFlight ?? 2;
  const downInFlight = o.downInFlight ?? Math.min(0.5, upInFlight / 2);
  if (downInFlight >= upInFlight) {
    refuse(
      "downInFlight",
      `expected less than upInFlight (${upInFlight})`,
      downInFlight,
    );
  }
  const upAfterMs = o.upAfterMs ?? 2000;
  const downAfterMs = o.downAfterMs ?? 60_000;
  const interval = o.sampleInterval ??
    Math.max(10, Math.min(1000, upAfterMs / 4, downAfterMs / 4));
  const logger = o.logger ?? getLogger(["pyproxy", AUTOSCALE]);
  const owner = onePool(AUTOSCALE);
  let scaler: Autoscaler | undefined;
  let stats: AutoscaleStats = {
    samples: 0,
    up: 0,
    down: 0,
    failed: 0,
    failedUp: 0,
    manual: 0,
  };
  let stop = (): void => {};

  return {
    name: AUTOSCALE,
    get bounds() {
      return scaler === undefined
        ? undefined
        : { min: scaler.settings.min, max: scaler.settings.max };
    },
    get stats() {
      return stats;
    },
    status() {
      return scaler?.status() ?? {};
    },
    metrics() {
      return scaler?.metrics() ?? [];
    },
    setBounds(change) {
      if (scaler === undefined) {
        throw new ConfigError(
          "Cannot set autoscale bounds: the plugin serves no pool yet (give min and max to autoscale())",
        );
      }
      return scaler.setBounds(change);
    },
    onPoolStart(ctx) {
      owner.claim(ctx.pool);
      const size = ctx.workers().length;
      const max = o.max ??
        Math.min(
          1024,
          Math.max(ctx.runtime.cpuCount(), 2 * (o.min ?? size), size),
        );
      const settings: AutoscalerSettings = {
        min: o.min ?? Math.min(size, max),
        max,
        upInFlight,
        downInFlight,
        upAfterMs,
        downAfterMs,
        cooldownMs: o.cooldownMs ?? 5000,
        step: o.step ?? 1,
        manualHoldMs: o.manualHoldMs ?? 60_000,
      };
      const run = new Autoscaler(ctx, settings, logger);
      scaler = run;
      stats = run.stats;
      const off = ctx.pool.on((ev) => run.onEvent(ev));
      const timer = setIntervalOrNever(() => run.sample(), interval);
      if (timer !== undefined) ctx.runtime.unrefTimer?.(timer);
      stop = () => {
        run.stop();
        off();
        clearInterval(timer);
      };
      logger.info(
        "Autoscaling between {min} and {max} workers (now {size})",
        { min: settings.min, max: settings.max, size },
      );
    },
    onPoolClose(ctx) {
      if (!owner.owns(ctx.pool)) return;
      stop();
      stop = () => {};
      owner.release(ctx.pool);
    },
  };
}
