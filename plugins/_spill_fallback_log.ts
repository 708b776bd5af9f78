/**
 * The spill-over's bounded warning about spill files the file system refused
 * (a full `/dev/shm`, a read-only or vanished directory), per worker.
 *
 * Why a bound: with the directory full, every large message fails its
 * write; at hundreds a second one line each would flood the log for as long
 * as it stays full. The first refusal of a worker is logged as it happens;
 * the ones after it within `intervalMs` are only counted, and the worker's
 * next line (the first refusal after that time) says how many there were.
 * No timer: nothing to stop at close, and the plugin's stats
 * (`writeFailures`, `inlineFallbacks`) hold the exact counts meanwhile.
 *
 * @module
 */

/** The logger method used (the pool's logger). */
interface WarnLogger {
  warn(message: string, props?: Record<string, unknown>): void;
}

/** Options of {@linkcode SpillFallbackLog}. */
export interface SpillFallbackLogOptions {
  /**
   * The time after a worker's line within which its refusals are only counted.
   * @default {60000}
   */
  intervalMs?: number;
  /** Clock in ms (tests). @default {Date.now} */
  now?: () => number;
}

interface WorkerLog {
  since: number;
  counted: number;
}

/**
 * Logs spill write refusals at most once per `intervalMs` per worker.
 *
 * @example
 * ```ts ignore
 * const log = new SpillFallbackLog();
 * log.refused(logger, "w1", "/dev/shm/pyproxy-spill-x/w1-3", "No space left on device", true);
 * ```
 */
export class SpillFallbackLog {
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #workers = new Map<string, WorkerLog>();

  /** A log with `options` (defaults: a minute, `Date.now`). */
  constructor(options: SpillFallbackLogOptions = {}) {
    this.#intervalMs = options.intervalMs ?? 60_000;
    this.#now = options.now ?? Date.now;
  }

  /**
   * A spill file of `worker` in `dir` could not be written (`reason`); the
   * message went inline (`inline`) or failed.
   */
  refused(
    logger: WarnLogger,
    worker: string,
    dir: string,
    reason: string,
    inline: boolean,
  ): void {
    const now = this.#now();
    const entry = this.#workers.get(worker);
    if (entry !== undefined && now - entry.since < this.#intervalMs) {
      entry.counted++;
      return;
    }
    const before = entry?.counted ?? 0;
    this.#workers.set(worker, { since: now, counted: 0 });
    logger.warn(
      `Spill-over: cannot write a spill file for worker {worker} in {dir} ({reason}): ${
        inline
          ? "the message went inline instead"
          : "the message failed (too large to go inline)"
      }; make room there or give the spill-over more (docs/reliability.md, "The spill directory is full")${
        before > 0
          ? ` (${before} more ${
            before === 1 ? "refusal" : "refusals"
          } of this worker's writes in the ${
            Math.round(this.#intervalMs / 1000)
          } s before, not logged)`
          : ""
      }`,
      { worker, dir, reason, inline, unlogged: before },
    );
  }

  /** Forgets every worker (the pool closed). Kept across a worker's restarts: a crash loop on a full directory is one worker. */
  clear(): void {
    this.#workers.clear();
  }
}
