/**
 * The pool's log of the calls it refuses with `OverloadedError` because its
 * queue is full: a burst answered thousands of 429s and the gateway's log
 * said nothing (the on-call walkthrough: 43,198 refusals in 3 s, no line).
 * One warning at once, then at most one per interval with the refusals
 * counted since, so the burst itself cannot flood the log (the refusals of
 * a burst's end are told by the next line, if any: their count is in the
 * gateway's `pyproxy_requests_total{status="429"}`). Internal.
 *
 * @module
 */
import type { OverloadedError } from "./errors.ts";
import type { Logger } from "./logger.ts";

/** Options of {@linkcode OverloadLog}. */
export interface OverloadLogOptions {
  /** Least time between two lines, in ms. @default {60000} */
  intervalMs?: number;
  /** The clock (tests). @default {Date.now} */
  now?: () => number;
}

/**
 * Logs a pool's queue-full refusals at `warning`: the first at once, then
 * at most one line per `intervalMs`, with how many were refused since the
 * last line and the last one's model and bounds.
 *
 * @example
 * ```ts ignore
 * const overloads = new OverloadLog(logger);
 * overloads.refused(err); // an OverloadedError of the pool's router
 * ```
 */
export class OverloadLog {
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #last = -Infinity;
  #since = 0;

  constructor(logger: Logger, options: OverloadLogOptions = {}) {
    this.#logger = logger;
    this.#intervalMs = options.intervalMs ?? 60_000;
    this.#now = options.now ?? Date.now;
  }

  /** One call refused with `err` (its `details`: `queue`, `maxQueue`, ...). */
  refused(err: OverloadedError): void {
    this.#since++;
    const now = this.#now();
    if (now - this.#last < this.#intervalMs) return;
    const refused = this.#since;
    const seconds = this.#last === -Infinity
      ? undefined
      : Math.round((now - this.#last) / 1000);
    this.#last = now;
    this.#since = 0;
    const { model, maxQueue, maxInFlightPerWorker } = err.details;
    this.#logger.warn(
      seconds === undefined
        ? "Overloaded: refused a call of {model} (OverloadedError, 429 in serve): the pool queue is full ({maxQueue} calls wait: maxQueue, serve --max-queue) and its workers run {maxInFlightPerWorker} each (maxInFlightPerWorker, serve --max-in-flight); further refusals get one line a minute at most, with their count"
        : "Overloaded: refused {refused} calls since the last such line {seconds} s ago, the last of {model} (OverloadedError, 429 in serve): the pool queue is full ({maxQueue} calls wait: maxQueue, serve --max-queue) and its workers run {maxInFlightPerWorker} each (maxInFlightPerWorker, serve --max-in-flight)",
      {
        refused,
        ...(seconds === undefined ? {} : { seconds }),
        model: typeof model === "string" ? model : null,
        maxQueue,
        maxInFlightPerWorker,
      },
    );
  }
}
