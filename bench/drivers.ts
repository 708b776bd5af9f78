/**
 * Measurement loops shared by the scenarios, and the round-robin runner that
 * interleaves the rounds of every implementation so that noise from the
 * (shared, 2-core) machine hits them all alike.
 *
 * @module
 */
import {
  type Caller,
  type CallerFactory,
  floorCaller,
  poolCaller,
  sessionCaller,
  stdioCaller,
} from "./callers.ts";
import { LatencyRecorder, summarize } from "./stats.ts";
import type { BenchConfig, Row } from "./types.ts";

/** A ~100 byte JSON message (the "small message" of every scenario). */
export const SMALL_MESSAGE: Readonly<Record<string, unknown>> = Object.freeze({
  user: "bench",
  text: "the quick brown fox jumps over the lazy dog",
  values: [1, 2, 3, 4, 5],
  ok: true,
});

/** Metrics of one round. */
export type RoundMetrics = Record<string, number>;

/**
 * Calls `caller` with `window` calls in flight for `ms` milliseconds
 * (`window = 1` is the sequential case): calls/s, p50 and p99 latency.
 *
 * @example
 * ```ts ignore
 * const m = await measureWindow(caller, 64, 1000, SMALL_MESSAGE);
 * console.log(m["calls/s"]);
 * ```
 */
export async function measureWindow(
  caller: Caller,
  window: number,
  ms: number,
  msg: unknown,
): Promise<RoundMetrics> {
  const rec = new LatencyRecorder();
  const start = performance.now();
  const deadline = start + ms;
  const lane = async (): Promise<void> => {
    let t = performance.now();
    while (t < deadline) {
      await caller.call(msg);
      const now = performance.now();
      rec.add(now - t);
      t = now;
    }
  };
  await Promise.all(Array.from({ length: window }, lane));
  const elapsed = (performance.now() - start) / 1000;
  return {
    "calls/s": rec.count / elapsed,
    "p50 ms": rec.percentile(50),
    "p99 ms": rec.percentile(99),
  };
}

/**
 * Checks that `caller` echoes `msg` (an implementation that answers wrong
 * must not be timed).
 *
 * @example
 * ```ts ignore
 * await checkEcho(caller, SMALL_MESSAGE);
 * ```
 */
export async function checkEcho(caller: Caller, msg: unknown): Promise<void> {
  const got = await caller.call(msg);
  if (JSON.stringify(got) !== JSON.stringify(msg)) {
    throw new Error(
      `Cannot benchmark: wrong echo ${JSON.stringify(got).slice(0, 200)}`,
    );
  }
}

/** Options for {@linkcode runInterleaved}. */
export interface InterleavedOptions {
  /** Run once per caller after opening (correctness check). */
  check?: (caller: Caller) => Promise<void>;
  /** One round of measurement. */
  measure: (caller: Caller) => Promise<RoundMetrics>;
  /** Unmeasured warm-up rounds per caller. @default 1 */
  warmup?: number;
}

/**
 * Opens every implementation, warms each up, then runs `config.rounds`
 * rounds round-robin (A B C A B C ...) and summarizes each metric as
 * median/min/max. An implementation that fails to open or fails mid-way
 * becomes a "skipped" row with the reason; everything opened is closed.
 *
 * @example
 * ```ts ignore
 * const rows = await runInterleaved([floorCaller("echo")], config, { measure: (c) => measureWindow(c, 1, 500, SMALL_MESSAGE) });
 * ```
 */
export async function runInterleaved(
  factories: CallerFactory[],
  config: BenchConfig,
  options: InterleavedOptions,
): Promise<Row[]> {
  const open: Array<
    {
      factory: CallerFactory;
      caller?: Caller;
      rounds: RoundMetrics[];
      skipped?: string;
    }
  > = [];
  try {
    for (const factory of factories) {
      const entry: (typeof open)[number] = { factory, rounds: [] };
      open.push(entry);
      try {
        entry.caller = await factory.open();
        await options.check?.(entry.caller);
        for (let i = 0; i < (options.warmup ?? 1); i++) {
          await options.measure(entry.caller);
        }
      } catch (err) {
        entry.skipped = oneLine(err);
        await entry.caller?.close().catch(() => {});
        delete entry.caller;
      }
    }
    for (let round = 0; round < config.rounds; round++) {
      for (const entry of open) {
        if (entry.caller === undefined) continue;
        try {
          entry.rounds.push(await options.measure(entry.caller));
        } catch (err) {
          entry.skipped = `failed in round ${round + 1}: ${oneLine(err)}`;
          await entry.caller.close().catch(() => {});
          delete entry.caller;
        }
      }
    }
  } finally {
    for (const entry of open) await entry.caller?.close().catch(() => {});
  }
  return open.map((entry) =>
    entry.skipped !== undefined
      ? { name: entry.factory.name, metrics: {}, skipped: entry.skipped }
      : { name: entry.factory.name, metrics: summarizeRounds(entry.rounds) }
  );
}

/**
 * The echo model with `window` calls in flight and a ~100 byte message, on
 * every implementation (pyproxy Session and Pool, floor, stdio), interleaved.
 *
 * @example
 * ```ts ignore
 * const rows = await runEchoWindow({ rounds: 5, roundMs: 1000, quick: false }, 64);
 * ```
 */
export function runEchoWindow(
  config: BenchConfig,
  window: number,
): Promise<Row[]> {
  return runInterleaved(
    [
      sessionCaller("echo"),
      poolCaller("echo"),
      floorCaller("echo"),
      stdioCaller("echo"),
    ],
    config,
    {
      check: (c) => checkEcho(c, SMALL_MESSAGE),
      measure: (c) => measureWindow(c, window, config.roundMs, SMALL_MESSAGE),
    },
  );
}

/**
 * Turns per-round metrics into per-metric summaries.
 *
 * @example
 * ```ts
 * import { summarizeRounds } from "./drivers.ts";
 * console.log(summarizeRounds([{ a: 1 }, { a: 3 }]).a?.median); // 2
 * ```
 */
export function summarizeRounds(rounds: RoundMetrics[]): Row["metrics"] {
  const out: Row["metrics"] = {};
  const keys = new Set(rounds.flatMap((r) => Object.keys(r)));
  for (const key of keys) {
    out[key] = summarize(rounds.map((r) => r[key] ?? NaN));
  }
  return out;
}

/**
 * The first line of an error's message (for "skipped" rows).
 *
 * @example
 * ```ts
 * import { oneLine } from "./drivers.ts";
 * console.log(oneLine(new Error("a\nb"))); // "a"
 * ```
 */
export function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return (text.split("\n")[0] ?? "").slice(0, 300);
}
