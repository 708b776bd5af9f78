/**
 * Internals of the pool: a bound on how much of what model code prints
 * reaches the host's log.
 *
 * Why: a model printing in a tight loop sent ~50,000 lines a second, each
 * one a record of the host's log (the gateway's stderr): the log grew
 * without bound and the host spent its time writing it. Per worker and
 * model, at most `maxLinesPerSecond` lines are logged; the rest are counted
 * and their number logged as a warning when the second ends (with the
 * model's next logged output if that comes first, or when the worker's
 * session ends).
 *
 * A window is kept per model name while it may still matter: one whose
 * second is over and that holds no count is dropped when new names come
 * (models added and removed under new names, each printing once, grew the
 * table of a long-lived session by one window per name).
 *
 * @module
 */
import type { Logger } from "./logger.ts";

/** Options of {@linkcode OutputRateLimit}. */
export interface OutputRateLimitOptions {
  /** Lines logged per second and model at most. @default {100} */
  maxLinesPerSecond?: number;
  /** Clock in ms (tests). @default {Date.now} */
  now?: () => number;
}

interface Window {
  start: number;
  used: number;
  dropped: number;
  logger: Logger;
  /** Reports `dropped` at the end of the second (set while it is > 0). */
  timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * Decides, for one worker's session, which model output is logged.
 *
 * @example
 * ```ts
 * import { getLogger } from "@logtape/logtape";
 * import { OutputRateLimit } from "./_output_rate_limit.ts";
 * const limit = new OutputRateLimit("w1", { maxLinesPerSecond: 2 });
 * const logger = getLogger(["pyproxy", "python", "noisy"]);
 * console.log(limit.admit(logger, "noisy", "a\nb\nc")); // "a\nb"
 * console.log(limit.admit(logger, "noisy", "d")); // undefined
 * limit.end(); // logs "w1: 2 lines printed by model noisy not logged ..."
 * ```
 */
export class OutputRateLimit {
  #worker: string;
  #max: number;
  #now: () => number;
  #windows = new Map<string, Window>();
  /** Table size at which the stale windows are dropped (doubles with the live ones). */
  #pruneAt = PRUNE_MIN;

  constructor(worker: string, options: OutputRateLimitOptions = {}) {
    this.#worker = worker;
    this.#max = options.maxLinesPerSecond ?? 100;
    this.#now = options.now ?? Date.now;
  }

  /**
   * The part of `message` (lines of `model`'s output) to log now, or
   * `undefined` for none; what is left out is counted. A count left out
   * earlier is logged first, on `logger`. `whole`: all of it or nothing,
   * all of it while the second has room left (a traceback's record, cut
   * after the lines that fit, lost its exception's line).
   */
  admit(
    logger: Logger,
    model: string,
    message: string,
    whole = false,
  ): string | undefined {
    const now = this.#now();
    let w = this.#windows.get(model);
    if (w === undefined) {
      if (this.#windows.size >= this.#pruneAt) this.#prune(now);
      w = { start: now, used: 0, dropped: 0, logger, timer: undefined };
      this.#windows.set(model, w);
    } else if (now - w.start >= 1000) {
      w.start = now;
      w.used = 0;
    }
    w.logger = logger;
    const room = this.#max - w.used;
    if (room <= 0) {
      w.dropped += lineCount(message);
      this.#reportLater(model, w, now);
      return undefined;
    }
    this.#report(model, w);
    if (whole) {
      w.used += lineCount(message);
      return this.#bounded(w, message);
    }
    // Only the lines that fit: one event may carry many of them.
    let end = -1;
    let lines = 0;
    while (lines < room) {
      const next = message.indexOf("\n", end + 1);
      lines++;
      if (next < 0) {
        w.used += lines;
        return this.#bounded(w, message);
      }
      end = next;
    }
    w.used = this.#max;
    w.dropped += lineCount(message.slice(end + 1));
    this.#reportLater(model, w, now);
    return this.#bounded(w, message.slice(0, end));
  }

  /**
   * `message` (admitted, its lines counted) cut to `MAX_MESSAGE_CHARS`, and
   * each `LINE_CHARS` characters counted as a line: lines were counted
   * whatever their length, and a model printing a 1 MB line in a loop had
   * 100 MB a second logged (chaos53).
   */
  #bounded(w: Window, message: string): string {
    if (message.length <= LINE_CHARS) return message;
    const kept = message.length > MAX_MESSAGE_CHARS
      ? `${message.slice(0, MAX_MESSAGE_CHARS)}… (${message.length} characters)`
      : message;
    w.used += Math.floor(kept.length / LINE_CHARS);
    return kept;
  }

  /** Windows held (one per model that printed lately, or whose count is not yet reported). */
  get size(): number {
    return this.#windows.size;
  }

  /** The session ended: logs every count still held. */
  end(): void {
    for (const [model, w] of this.#windows) this.#report(model, w);
    this.#windows.clear();
  }

  /**
   * The count is reported when the second ends even if the model prints
   * nothing more: a burst followed by silence was reported only hours later.
   */
  #reportLater(model: string, w: Window, now: number): void {
    if (w.timer !== undefined) return;
    w.timer = setTimeout(() => {
      w.timer = undefined;
      this.#report(model, w);
    }, Math.max(0, w.start + 1000 - now));
  }

  /**
   * Drops the windows whose second is over and that hold no count: a new
   * window for that model later starts the same. Amortized: the next prune
   * comes once the table doubled again.
   */
  #prune(now: number): void {
    for (const [model, w] of this.#windows) {
      if (now - w.start >= 1000 && w.dropped === 0 && w.timer === undefined) {
        this.#windows.delete(model);
      }
    }
    this.#pruneAt = Math.max(PRUNE_MIN, 2 * this.#windows.size);
  }

  #report(model: string, w: Window): void {
    clearTimeout(w.timer);
    w.timer = undefined;
    if (w.dropped === 0) return;
    w.logger.warn(
      "{worker}: {count} lines printed by model {model} not logged (more than {max} a second)",
      {
        worker: this.#worker,
        count: w.dropped,
        model: model === "" ? null : model,
        max: this.#max,
      },
    );
    w.dropped = 0;
  }
}

/** Windows held before the first prune. */
const PRUNE_MIN = 64;

/** Characters that count as one more line of a message (a long line is several). */
const LINE_CHARS = 4096;

/** A message logged is cut to this many characters (a traceback's event is at most 64 KiB). */
const MAX_MESSAGE_CHARS = 65_536;

function lineCount(text: string): number {
  let n = 1;
  for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) n++;
  return n;
}
