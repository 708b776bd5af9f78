/**
 * How long calls waited in the pool's queue for a worker slot: a histogram
 * of every call the pool routed to a worker.
 *
 * @module
 */

/**
 * Upper bounds, in seconds, of {@linkcode QueueWaits}' buckets (the last,
 * `+Inf`, is implied by `count`).
 *
 * @example The bound of a snapshot's bucket
 * ```ts
 * import { QUEUE_WAIT_BUCKETS, QueueWaits } from "@pyproxy/pyproxy";
 * const waits = new QueueWaits();
 * waits.observe(0.003);
 * const { buckets } = waits.snapshot();
 * const first = buckets.findIndex((n) => n > 0);
 * console.log(`waited at most ${QUEUE_WAIT_BUCKETS[first]} s`); // "waited at most 0.005 s"
 * ```
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
 * Why a queued call left the queue without being sent: its deadline passed
 * (`timeout`), its signal aborted (`cancelled`), or it could no longer be
 * routed (`failed`: its pinned worker or every worker gone, the pool
 * closing).
 *
 * @example
 * ```ts
 * import { QueueWaits, type QueueWaitOutcome } from "@pyproxy/pyproxy";
 * const waits = new QueueWaits();
 * const why: QueueWaitOutcome = "cancelled";
 * waits.abandon(why, 0.5); // left the queue after 0.5 s, unsent
 * console.log(waits.snapshot().abandoned[why].count); // 1
 * ```
 */
export type QueueWaitOutcome = "timeout" | "cancelled" | "failed";

/**
 * The outcomes of {@linkcode QueueWaitOutcome}, in the order `/metrics` lists them.
 *
 * @example Calls that left the queue unsent, by outcome
 * ```ts
 * import { QUEUE_WAIT_OUTCOMES, QueueWaits } from "@pyproxy/pyproxy";
 * const waits = new QueueWaits();
 * waits.abandon("timeout", 2);
 * const { abandoned } = waits.snapshot();
 * for (const outcome of QUEUE_WAIT_OUTCOMES) {
 *   console.log(outcome, abandoned[outcome].count); // timeout 1, cancelled 0, failed 0
 * }
 * ```
 */
export const QUEUE_WAIT_OUTCOMES: readonly QueueWaitOutcome[] = Object.freeze([
  "timeout",
  "cancelled",
  "failed",
]);

/**
 * A histogram of the waits of the calls that left the queue one way
 * (Prometheus numbers; bounds in {@linkcode QueueWaitStats.le}).
 *
 * @example The mean wait of the calls that timed out in the queue
 * ```ts
 * import { QueueWaits, type QueueWaitHistogram } from "@pyproxy/pyproxy";
 * const waits = new QueueWaits();
 * waits.abandon("timeout", 2);
 * waits.abandon("timeout", 4);
 * const timedOut: QueueWaitHistogram = waits.snapshot().abandoned.timeout;
 * console.log(timedOut.sum / timedOut.count); // 3
 * ```
 */
export interface QueueWaitHistogram {
  /** Cumulative counts: calls that waited at most `le[i]` seconds. */
  buckets: number[];
  /** Calls (`+Inf`). */
  count: number;
  /** Seconds waited, over all of them. */
  sum: number;
}

/**
 * A snapshot of {@linkcode QueueWaits}: Prometheus histogram numbers. The
 * top-level numbers are the calls sent to a worker; `abandoned` those that
 * waited in the queue and left it unsent, by why.
 *
 * @example
 * ```ts
 * import type { QueueWaitStats } from "@pyproxy/pyproxy";
 * const none = { buckets: [0, 0], count: 0, sum: 0 };
 * const stats: QueueWaitStats = {
 *   le: [0.001, 0.005],
 *   buckets: [3, 4],
 *   count: 5,
 *   sum: 0.012,
 *   queued: 2,
 *   abandoned: { timeout: { buckets: [0, 0], count: 1, sum: 2 }, cancelled: none, failed: none },
 * };
 * console.log(stats.count - stats.queued); // 3 calls went to a worker at once
 * console.log(stats.abandoned.timeout.count); // 1 timed out in the queue
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
  /**
   * The calls that waited in the queue and left it without being sent, by
   * outcome, with how long they waited: not in `count`. A call abandoned in
   * the queue is one that waited longest of all (its whole deadline, for
   * `timeout`).
   */
  abandoned: Record<QueueWaitOutcome, QueueWaitHistogram>;
  /**
   * The model calls (execute, stream, batch) that waited in the queue, by
   * model (a version's: `name@label`), as `sent` and `abandoned` histograms:
   * the calls sent at once are not in them (they cost no lookup). A model
   * gets an entry with its first call that queued, loses it when it is
   * removed; past {@linkcode QUEUE_WAIT_MAX_MODELS} names the others count
   * under `"_other"`.
   */
  models?: ReadonlyMap<string, QueueWaitModelStats>;
}

/**
 * One model's queued calls in {@linkcode QueueWaitStats.models}.
 *
 * @example
 * ```ts
 * import { QueueWaits } from "@pyproxy/pyproxy";
 * const waits = new QueueWaits();
 * waits.observe(0.2, "scorer");
 * waits.abandon("timeout", 1, "scorer");
 * const scorer = waits.snapshot().models?.get("scorer");
 * console.log(scorer?.sent.count, scorer?.abandoned.timeout.count); // 1 1
 * ```
 */
export interface QueueWaitModelStats {
  /** The model's calls that waited and were sent. */
  sent: QueueWaitHistogram;
  /** The model's calls that waited and left unsent, by outcome. */
  abandoned: Record<QueueWaitOutcome, QueueWaitHistogram>;
}

/**
 * Model names {@linkcode QueueWaits} keeps queue waits of; the further ones
 * are counted under `"_other"` (a library user calling made-up names must
 * not grow `/metrics` without end).
 *
 * @example
 * ```ts
 * import { QUEUE_WAIT_MAX_MODELS } from "@pyproxy/pyproxy";
 * console.log(QUEUE_WAIT_MAX_MODELS); // 1000
 * ```
 */
export const QUEUE_WAIT_MAX_MODELS = 1000;

/** One model's counts: sent, and abandoned by outcome. */
class ModelCounts {
  sent = new Counts();
  abandoned: Record<QueueWaitOutcome, Counts> = {
    timeout: new Counts(),
    cancelled: new Counts(),
    failed: new Counts(),
  };
}

/** One histogram's counts: per bucket (not cumulative), plus one past the last bound. */
class Counts {
  counts: number[] = new Array(QUEUE_WAIT_BUCKETS.length + 1).fill(0);
  n = 0;
  sum = 0;

  add(seconds: number): void {
    const s = seconds > 0 ? seconds : 0;
    let i = 0;
    while (i < QUEUE_WAIT_BUCKETS.length && s > QUEUE_WAIT_BUCKETS[i]!) i++;
    this.counts[i]!++;
    this.n++;
    this.sum += s;
  }

  histogram(base: number): QueueWaitHistogram {
    const buckets: number[] = [];
    let running = base;
    for (let i = 0; i < QUEUE_WAIT_BUCKETS.length; i++) {
      running += this.counts[i]!;
      buckets.push(running);
    }
    return { buckets, count: base + this.n, sum: this.sum };
  }
}

/**
 * Counts the calls routed to a worker and how long each waited in the
 * queue, and apart from them the queued calls that left it unsent (timed
 * out, cancelled, failed) with how long they had waited. A call sent at
 * once costs one increment (no clock read); only a call that queued reads
 * the clock, when it is queued and when it leaves. A call re-routed after
 * its worker died counts again.
 *
 * @example
 * ```ts
 * import { QueueWaits } from "@pyproxy/pyproxy";
 * const waits = new QueueWaits();
 * waits.none();          // sent at once
 * waits.observe(0.0042); // waited 4.2 ms
 * waits.abandon("timeout", 2); // timed out after 2 s in the queue
 * const s = waits.snapshot();
 * console.log(s.count, s.queued, s.buckets[1]); // 2 1 2
 * console.log(s.abandoned.timeout.count, s.abandoned.timeout.sum); // 1 2
 * ```
 */
export class QueueWaits {
  #immediate = 0;
  #sent = new Counts();
  #abandoned: Record<QueueWaitOutcome, Counts> = {
    timeout: new Counts(),
    cancelled: new Counts(),
    failed: new Counts(),
  };
  #models = new Map<string, ModelCounts>();

  /** A call sent to a worker without waiting. */
  none(): void {
    this.#immediate++;
  }

  /**
   * A call that waited `seconds` in the queue before it was sent; `model`:
   * the model it calls, if any (counted for that model too).
   */
  observe(seconds: number, model?: string): void {
    this.#sent.add(seconds);
    if (model !== undefined) this.#model(model).sent.add(seconds);
  }

  /** A call that waited `seconds` in the queue and left it unsent. */
  abandon(outcome: QueueWaitOutcome, seconds: number, model?: string): void {
    this.#abandoned[outcome].add(seconds);
    if (model !== undefined) {
      this.#model(model).abandoned[outcome].add(seconds);
    }
  }

  /** Drops a removed model's waits (added again, it counts from zero). */
  forget(model: string): void {
    if (model !== "_other") this.#models.delete(model);
  }

  #model(name: string): ModelCounts {
    let counts = this.#models.get(name);
    if (counts !== undefined) return counts;
    if (this.#models.size >= QUEUE_WAIT_MAX_MODELS && name !== "_other") {
      return this.#model("_other");
    }
    counts = new ModelCounts();
    this.#models.set(name, counts);
    return counts;
  }

  /** The histograms so far (new objects). */
  snapshot(): QueueWaitStats {
    const sent = this.#sent.histogram(this.#immediate);
    const a = this.#abandoned;
    return {
      le: QUEUE_WAIT_BUCKETS,
      buckets: sent.buckets,
      count: sent.count,
      sum: sent.sum,
      queued: this.#sent.n,
      abandoned: {
        timeout: a.timeout.histogram(0),
        cancelled: a.cancelled.histogram(0),
        failed: a.failed.histogram(0),
      },
      ...(this.#models.size === 0 ? {} : {
        models: new Map(
          [...this.#models].map(([name, m]) => [name, {
            sent: m.sent.histogram(0),
            abandoned: {
              timeout: m.abandoned.timeout.histogram(0),
              cancelled: m.abandoned.cancelled.histogram(0),
              failed: m.abandoned.failed.histogram(0),
            },
          }]),
        ),
      }),
    };
  }
}
