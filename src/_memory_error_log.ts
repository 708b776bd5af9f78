/**
 * The pool's log of its models' `MemoryError`s: a worker out of memory (its
 * limit reached: a `ulimit` of its wrapper, a container's) fails the calls
 * of its models with it, and the gateway answers 507, while `serve`'s log
 * said nothing (the on-call walkthrough: a leaking model's 507s showed in
 * `/metrics` only). One warning at once, then at most one per interval with
 * the count since, so a worker failing every call cannot flood the log.
 * Internal.
 *
 * @module
 */
import type { Logger } from "./logger.ts";

/** Options of {@linkcode MemoryErrorLog}. */
export interface MemoryErrorLogOptions {
  /** Least time between two lines, in ms. @default {60000} */
  intervalMs?: number;
  /** The clock (tests). @default {Date.now} */
  now?: () => number;
}

/**
 * Logs the calls that failed with the model's `MemoryError` at `warning`:
 * the first at once, then at most one line per `intervalMs`, with how many
 * since the last line and the last one's model and worker.
 *
 * @example
 * ```ts ignore
 * const memory = new MemoryErrorLog(logger);
 * memory.raised("leaky", "w1", 4242);
 * ```
 */
export class MemoryErrorLog {
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #last = -Infinity;
  #since = 0;

  constructor(logger: Logger, options: MemoryErrorLogOptions = {}) {
    this.#logger = logger;
    this.#intervalMs = options.intervalMs ?? 60_000;
    this.#now = options.now ?? Date.now;
  }

  /** A call of `model` failed with `MemoryError` on `worker` (`pid`). */
  raised(model: string, worker: string, pid: number | null): void {
    this.#since++;
    const now = this.#now();
    if (now - this.#last < this.#intervalMs) return;
    const count = this.#since;
    const seconds = this.#last === -Infinity
      ? undefined
      : Math.round((now - this.#last) / 1000);
    this.#last = now;
    this.#since = 0;
    const advice =
      "its worker could not allocate memory (a limit of the workers: a ulimit of the python wrapper, the container's): each worker's resident memory is in status and /metrics (pyproxy_worker_resident_memory_bytes); updateModel (PUT in serve) frees what the model's instance holds";
    this.#logger.warn(
      seconds === undefined
        ? `Model {model} raised MemoryError on worker {worker} (pid {pid}): ${advice}; further ones get one line a minute at most, with their count`
        : `Models raised MemoryError in {count} calls since the last such line {seconds} s ago, the last of {model} on worker {worker} (pid {pid}): ${advice}`,
      {
        model,
        worker,
        pid,
        count,
        ...(seconds === undefined ? {} : { seconds }),
      },
    );
  }
}
