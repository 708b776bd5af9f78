/**
 * How long calls waited in the pool's queue for a worker slot: a histogram
 * of every call the pool routed to a worker.
 *
 * @module
 */

/**
 * Upper bounds, in seconds, of {@linkcode QueueWaits}' buckets (the last,
 * `+Inf`, is implied by `count`).
 */
export const QUEUE_WAIT_BUCKETS: readonly number[] = Object.freeze([
  0.001,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
]);

/**
 * A snapshot of {@linkcode QueueWaits}: Prometheus histogram numbers.
 *
 * @example
 * ```ts
 * import type { QueueWaitStats } from "./queue_waits.ts";
 * const stats: QueueWaitStats = { le: [0.001, 0.005], buckets: [3, 4], count: 5, sum: 0.012, queued: 2 };
 * console.log(stats.count - stats.queued); // 3 calls went to a worker at once
 * ```
 */
export interface QueueWaitStats {
  /** Bucket upper bounds in seconds (ascending; `+Inf` is `count`). */
  le: readonly number[];
  /** Cumulative counts: calls that waited at most `le[i]` seconds. */
  buckets: number[];
  /** Calls routed to a worker (those sent at once included, with a wait of 0). */
  count: number;
  /** Seconds waited, over all of them. */
  sum: number;
  /** Of `count`, the calls that waited in the queue at all. */
  queued: number;
}

/**
 * Counts the calls routed to a worker and how long each waited in the
 * queue. A call sent at once costs one increment (no clock read); only a
 * call that queued reads the clock, when it is queued and when it leaves.
 * A call re-routed after its worker died counts again.
 *
 * @example
 * ```ts
 * import { QueueWaits } from "./queue_waits.ts";
 * const waits = new QueueWaits();
 * waits.none();          // sent at once
 * waits.observe(0.0042); // waited 4.2 ms
 * const s = waits.snapshot();
 * console.log(s.count, s.queued, s.buckets[1]); // 2 1 2
 * ```
 */
export class QueueWaits {
  #immediate = 0;
  // Per bucket (not cumulative), plus one past the last bound.
  #counts: number[] = new Array(QUEUE_WAIT_BUCKETS.length + 1).fill(0);
  #queued = 0;
  #sum = 0;

  /** A call sent to a worker without waiting. */
  none(): void {
    this.#immediate++;
  }

  /** A call that waited `seconds` in the queue before it was sent. */
  observe(seconds: number): void {
    const s = seconds > 0 ? seconds : 0;
    let i = 0;
    while (i < QUEUE_WAIT_BUCKETS.length && s > QUEUE_WAIT_BUCKETS[i]!) i++;
    this.#counts[i]!++;
    this.#queued++;
    this.#sum += s;
  }

  /** The histogram so far (a new object). */
  snapshot(): QueueWaitStats {
    const buckets: number[] = [];
    let running = this.#immediate;
    for (let i = 0; i < QUEUE_WAIT_BUCKETS.length; i++) {
      running += this.#counts[i]!;
      buckets.push(running);
    }
    return {
      le: QUEUE_WAIT_BUCKETS,
      buckets,
      count: this.#immediate + this.#queued,
      sum: this.#sum,
      queued: this.#queued,
    };
  }
}
