/**
 * The decisions of the autoscale plugin (internal): one {@linkcode Autoscaler}
 * per pool, fed a load sample on a timer and the pool's `resize` events.
 *
 * @module
 */
import type { Logger } from "../src/logger.ts";
import type {
  PluginContext,
  PluginMetric,
  PoolLoad,
  ScaleBounds,
  ScaleBoundsChange,
} from "../src/plugin.ts";
import type { PoolEvent } from "../src/pool_events.ts";
import {
  type AutoscaleDecision,
  autoscaleMetrics,
  type AutoscaleState,
  type AutoscaleStats,
  type AutoscaleStatus,
} from "./_autoscale_status.ts";

/** The plugin's name: the `by` of its resizes. */
export const AUTOSCALE = "autoscale";

/**
 * The longest wait before another scale-up after failed ones: each failure
 * in a row doubles the wait (from the cooldown), up to this.
 */
export const MAX_UP_BACKOFF_MS = 300_000;

/** The resolved settings of one pool's autoscaler. */
export interface AutoscalerSettings {
  /** Fewest slots (a manual resize below it lowers it). */
  min: number;
  /** Most slots (a manual resize above it raises it). */
  max: number;
  /** A sample is busy at this many calls in flight per ready worker, or any queued call. */
  upInFlight: number;
  /** A sample is idle at or below this many calls in flight (or parked streams) per ready worker. */
  downInFlight: number;
  /** Busy samples for this long → grow. */
  upAfterMs: number;
  /** Idle samples for this long → shrink by one. */
  downAfterMs: number;
  /** No decision this long after any resize ended. */
  cooldownMs: number;
  /** Slots added by one scale-up. */
  step: number;
  /** No decision this long after a resize of someone else's ended. */
  manualHoldMs: number;
}

/**
 * One pool's scaling state. Every decision is made in {@linkcode sample}:
 * hysteresis windows (how long the samples have been busy or idle), a
 * cooldown after every resize, and a hold after a resize of someone else's.
 * A resize under way (its own or anyone's) suspends the windows: the load
 * after it is a new one.
 */
export class Autoscaler {
  readonly settings: AutoscalerSettings;
  readonly stats: AutoscaleStats = {
    samples: 0,
    up: 0,
    down: 0,
    failed: 0,
    failedUp: 0,
    manual: 0,
  };
  /** The bounds it was configured with (a `null` in `setBounds` restores one). */
  readonly configured: Readonly<ScaleBounds>;
  #ctx: PluginContext;
  #log: Logger;
  #busySince: number | undefined;
  #idleSince: number | undefined;
  // When the last resize was seen ending: the cooldown counts from there.
  #quietSince: number;
  #holdUntil = 0;
  // A resize was seen (an event, or a sample during it) and not yet its end.
  #seenResize = false;
  // One of them was someone else's: the hold starts when they are over.
  #manual = false;
  #running: Promise<void> | undefined;
  // "Busy at max" and "idle at min" are said once per spell, not per sample.
  #toldAtMax = false;
  #toldAtMin = false;
  #stopped = false;
  // Scale-ups that failed in a row (a new worker that cannot start: a model
  // whose import fails there), and no scale-up before this time: each one
  // doubles the wait, so a pool that cannot grow does not start (and log)
  // a doomed worker every cooldown for ever.
  #upFailures = 0;
  #upRetryAt = 0;
  // Its last resize, for operators (status, metrics).
  #last: AutoscaleDecision | undefined;

  /** Starts with the pool's current size; the first decision waits for a full window. */
  constructor(ctx: PluginContext, settings: AutoscalerSettings, log: Logger) {
    this.#ctx = ctx;
    this.settings = settings;
    this.configured = { min: settings.min, max: settings.max };
    this.#log = log;
    this.#quietSince = Date.now();
  }

  /** No more decisions (the pool closes); a resize under way goes on. */
  stop(): void {
    this.#stopped = true;
  }

  /** A pool event: someone else's resize moves the bounds and holds the plugin. */
  onEvent(ev: PoolEvent): void {
    if (ev.type !== "resize" || ev.by === AUTOSCALE || this.#stopped) return;
    const s = this.settings;
    this.stats.manual++;
    if (ev.to > s.max) s.max = ev.to;
    if (ev.to < s.min) s.min = ev.to;
    this.#manual = true;
    this.#seenResize = true;
    // Someone changed the pool by hand (maybe after fixing what failed
    // the plugin's scale-ups): its next one is tried at once after the hold.
    this.#upFailures = 0;
    this.#upRetryAt = 0;
    this.#reset();
    this.#log.info(
      "Resize from {from} to {to} workers by {by}: autoscale holds for {holdMs} ms after it, within {min} to {max} workers",
      {
        from: ev.from,
        to: ev.to,
        by: ev.by ?? "pool.resize",
        holdMs: s.manualHoldMs,
        min: s.min,
        max: s.max,
      },
    );
  }

  /** Takes one load sample and acts on it (at most one resize at a time). */
  sample(now: number = Date.now()): void {
    const ctx = this.#ctx;
    if (this.#stopped || ctx.closing) return;
    this.stats.samples++;
    const load = ctx.load();
    const s = this.settings;
    // The pool still starting counts as a resize: the cooldown follows it.
    if (this.#running !== undefined || load.resizing || load.starting) {
      this.#seenResize = true;
      return this.#reset();
    }
    if (this.#seenResize) {
      // The first sample after the resizes ended: no earlier than their end.
      this.#seenResize = false;
      this.#quietSince = Math.max(this.#quietSince, now);
      if (this.#manual) this.#holdUntil = now + s.manualHoldMs;
      this.#manual = false;
    }
    const cooled = now - this.#quietSince >= s.cooldownMs;
    // Out of bounds (a pool started outside them): no window to wait for,
    // and no cooldown before the first resize (a failed one is retried
    // after it).
    const acted = this.stats.up + this.stats.down > 0;
    const mayGrow = now >= this.#upRetryAt;
    if ((cooled || !acted) && mayGrow && load.workers < s.min) {
      return this.#resize(load, s.min, `${load.workers} below min ${s.min}`);
    }
    if ((cooled || !acted) && load.workers > s.max) {
      return this.#resize(load, s.max, `${load.workers} above max ${s.max}`);
    }
    // Growth is for load, not for crashes (that is the restart policy's).
    if (now < this.#holdUntil || load.ready === 0) return this.#reset();
    const perWorker = load.inFlight / load.ready;
    const busy = load.queue > 0 || perWorker >= s.upInFlight;
    // Idle, and one worker less would not be busy at once. Parked streams
    // are no load for growing (their readers are slow, not the workers), but
    // count for shrinking as the calls they are: a worker removed while it
    // holds them cuts them short after its drain grace, so readers that
    // merely paused on every worker must not make the pool look idle.
    const held = (load.inFlight + load.parked) / load.ready;
    const idle = !busy && held <= s.downInFlight &&
      (load.ready <= 1 || load.inFlight / (load.ready - 1) < s.upInFlight);
    if (busy) {
      this.#idleSince = undefined;
      this.#toldAtMin = false;
      this.#busySince ??= now;
    } else {
      this.#busySince = undefined;
      this.#toldAtMax = false;
      this.#idleSince = idle ? this.#idleSince ?? now : undefined;
      if (!idle) this.#toldAtMin = false;
    }
    if (!cooled) return;
    if (this.#busySince !== undefined) {
      const ms = now - this.#busySince;
      if (ms < s.upAfterMs || !mayGrow) return;
      if (load.workers >= s.max) {
        if (!this.#toldAtMax) {
          this.#toldAtMax = true;
          this.#log.info(
            "Busy at max {max} workers: {why}; autoscale cannot grow further (autoscale({ max }))",
            { max: s.max, why: describe(load, s, ms), ...numbers(load) },
          );
        }
        return;
      }
      const to = Math.min(s.max, load.workers + s.step);
      return this.#resize(load, to, describe(load, s, ms));
    }
    if (this.#idleSince !== undefined) {
      const ms = now - this.#idleSince;
      if (ms < s.downAfterMs) return;
      if (load.workers > s.min) {
        return this.#resize(load, load.workers - 1, describe(load, s, ms));
      }
      if (!this.#toldAtMin) {
        this.#toldAtMin = true;
        this.#log.debug("Idle at min {min} workers: {why}", {
          min: s.min,
          why: describe(load, s, ms),
          ...numbers(load),
        });
      }
    }
  }

  /**
   * Sets the bounds at run time (a `null` restores the configured one) and
   * returns those in force (`{}` changes nothing, and logs nothing); a pool outside them is brought within them
   * after the cooldown, as one started outside them. Throws `TypeError` or
   * `RangeError`, changing nothing, for bounds that are not integers from 1
   * to 1024 with `min <= max`.
   */
  setBounds(change: ScaleBoundsChange): ScaleBounds {
    if (typeof change !== "object" || change === null) {
      throw new TypeError(
        "Cannot set autoscale bounds: expected {min?, max?}",
      );
    }
    const s = this.settings;
    const pick = (field: "min" | "max"): number => {
      const value = change[field];
      if (value === undefined) return s[field];
      if (value === null) return this.configured[field];
      if (
        typeof value !== "number" || !Number.isInteger(value) || value < 1 ||
        value > 1024
      ) {
        const got = typeof value === "number" || typeof value === "string"
          ? ` (got ${JSON.stringify(value) ?? String(value)})`
          : "";
        throw new RangeError(
          `Cannot set autoscale bounds: ${field}: expected an integer from 1 to 1024, or null for the configured one${got}`,
        );
      }
      return value;
    };
    const min = pick("min");
    const max = pick("max");
    if (max < min) {
      throw new RangeError(
        `Cannot set autoscale bounds: max: expected at least min (${min}) (got ${max})`,
      );
    }
    // Nothing to change (`{}` reads the bounds): nothing to log or redo.
    if (min === s.min && max === s.max) return { min, max };
    const before = { min: s.min, max: s.max };
    s.min = min;
    s.max = max;
    // "Busy at max" and "idle at min" are news again at the new bounds.
    this.#toldAtMax = false;
    this.#toldAtMin = false;
    this.#log.info(
      "Autoscale bounds set to {min} to {max} workers (were {fromMin} to {fromMax}; configured {configuredMin} to {configuredMax})",
      {
        min,
        max,
        fromMin: before.min,
        fromMax: before.max,
        configuredMin: this.configured.min,
        configuredMax: this.configured.max,
      },
    );
    return { min, max };
  }

  /** What it is doing and has done, JSON-safe, for `GET /v1/status` and the dashboard. */
  status(now: number = Date.now()): AutoscaleStatus {
    const s = this.settings;
    const last = this.#last;
    return {
      min: s.min,
      max: s.max,
      configured: { ...this.configured },
      target: this.#target(),
      state: this.#state(now),
      holdMs: Math.max(0, this.#holdUntil - now),
      backoff: {
        failures: this.#upFailures,
        retryInMs: Math.max(0, this.#upRetryAt - now),
      },
      lastDecision: last === undefined ? null : { ...last },
      stats: { ...this.stats },
    };
  }

  /** Its numbers as `pyproxy_autoscale_*` series for `GET /metrics`. */
  metrics(now: number = Date.now()): PluginMetric[] {
    return autoscaleMetrics(this.status(now));
  }

  #target(): number {
    const last = this.#last;
    if (this.#running !== undefined && last !== undefined) return last.to;
    const s = this.settings;
    return Math.min(s.max, Math.max(s.min, this.#ctx.load().workers));
  }

  #state(now: number): AutoscaleState {
    if (this.#stopped || this.#ctx.closing) return "stopped";
    if (this.#running !== undefined) return "resizing";
    if (this.#seenResize) return "waiting";
    if (now < this.#holdUntil) return "hold";
    if (now - this.#quietSince < this.settings.cooldownMs) return "cooldown";
    if (this.#busySince !== undefined) {
      return now < this.#upRetryAt ? "backoff" : "busy";
    }
    if (this.#idleSince !== undefined) return "idle";
    return "steady";
  }

  #reset(): void {
    this.#busySince = undefined;
    this.#idleSince = undefined;
  }

  #resize(load: PoolLoad, to: number, reason: string): void {
    const from = load.workers;
    const up = to > from;
    this.stats[up ? "up" : "down"]++;
    this.#log.info(
      up
        ? "Scaling up from {from} to {to} workers: {reason}"
        : "Scaling down from {from} to {to} workers: {reason}",
      { from, to, reason, ...numbers(load) },
    );
    this.#reset();
    const decision: AutoscaleDecision = {
      at: Date.now(),
      from,
      to,
      reason,
      outcome: "running",
    };
    this.#last = decision;
    this.#running = this.#ctx.resize(to, { by: AUTOSCALE, reason }).then(
      () => {
        if (up) this.#upFailures = 0;
        decision.outcome = "done";
      },
      (err) => {
        // close() cuts a resize short: no failure of the policy's.
        if (this.#stopped || this.#ctx.closing) {
          decision.outcome = "cancelled";
          return;
        }
        this.stats.failed++;
        if (up) this.stats.failedUp++;
        decision.outcome = "failed";
        const cooldownMs = this.settings.cooldownMs;
        let retryMs = cooldownMs;
        if (up) {
          // The first failure waits the cooldown, as any resize; the next
          // ones in a row 2, 4, 8... times as long (the cooldown, or 1 s).
          if (this.#upFailures > 0) {
            retryMs = Math.min(
              MAX_UP_BACKOFF_MS,
              Math.max(cooldownMs, 1000) * 2 ** this.#upFailures,
            );
          }
          this.#upFailures++;
          this.#upRetryAt = Date.now() + retryMs;
        }
        this.#log.warn(
          "Cannot scale from {from} to {to} workers (failure {failures} in a row): {message}; no scale-up for {retryMs} ms",
          {
            from,
            to,
            failures: up ? this.#upFailures : 1,
            retryMs,
            message: err instanceof Error ? err.message : err,
          },
        );
      },
    ).finally(() => {
      this.#running = undefined;
      this.#quietSince = Date.now();
      this.#reset();
    });
  }
}

/** The numbers behind a decision, as log properties. */
function numbers(load: PoolLoad): Record<string, number> {
  return {
    queue: load.queue,
    inFlight: load.inFlight,
    parked: load.parked,
    ready: load.ready,
    perWorker: load.inFlight / Math.max(1, load.ready),
  };
}

/** Why the samples were busy or idle, in words. */
function describe(load: PoolLoad, s: AutoscalerSettings, ms: number): string {
  const each = load.inFlight / Math.max(1, load.ready);
  const inFlight =
    `${load.inFlight} calls in flight on ${load.ready} ready workers (${
      round(each)
    } each`;
  const queued = load.queue > 0 ? `, ${load.queue} queued` : "";
  const parked = load.parked > 0 ? `, ${load.parked} parked streams` : "";
  return load.queue > 0 || each >= s.upInFlight
    ? `${inFlight}, upInFlight ${s.upInFlight}${queued}) for ${ms} ms`
    : `${inFlight}${parked}, downInFlight ${s.downInFlight}) for ${ms} ms`;
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
