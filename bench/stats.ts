/**
 * Summaries for benchmark rounds: median/min/max over rounds, and
 * nearest-rank percentiles over per-call latencies.
 *
 * @module
 */

/** Median, minimum and maximum of a metric over the rounds. */
export interface Summary {
  /** Median over the rounds. */
  median: number;
  /** Smallest round. */
  min: number;
  /** Largest round. */
  max: number;
  /** Number of rounds. */
  n: number;
}

/**
 * Median/min/max of `values` (NaN entries are dropped).
 *
 * @example
 * ```ts
 * import { summarize } from "./stats.ts";
 * console.log(summarize([3, 1, 2])); // { median: 2, min: 1, max: 3, n: 3 }
 * ```
 */
export function summarize(values: number[]): Summary {
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 === 1
    ? sorted[mid]!
    : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return {
    median,
    min: sorted[0]!,
    max: sorted[sorted.length - 1]!,
    n: sorted.length,
  };
}

/**
 * The nearest-rank `p`-th percentile (0–100) of an ascending array.
 *
 * @example
 * ```ts
 * import { percentile } from "./stats.ts";
 * console.log(percentile([1, 2, 3, 4], 50)); // 2
 * ```
 */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/**
 * Collects latencies (ms) without per-sample allocation; sorts once.
 *
 * @example
 * ```ts
 * import { LatencyRecorder } from "./stats.ts";
 * const rec = new LatencyRecorder();
 * rec.add(1.5); rec.add(0.5);
 * console.log(rec.percentile(50)); // 0.5
 * ```
 */
export class LatencyRecorder {
  #data = new Float64Array(1024);
  #count = 0;
  #sorted = true;

  /** Records one latency. */
  add(ms: number): void {
    if (this.#count === this.#data.length) {
      const grown = new Float64Array(this.#data.length * 2);
      grown.set(this.#data);
      this.#data = grown;
    }
    this.#data[this.#count++] = ms;
    this.#sorted = false;
  }

  /** Number of samples. */
  get count(): number {
    return this.#count;
  }

  /** The `p`-th percentile of the samples so far. */
  percentile(p: number): number {
    const view = this.#data.subarray(0, this.#count);
    if (!this.#sorted) {
      view.sort();
      this.#sorted = true;
    }
    return percentile(view, p);
  }
}
