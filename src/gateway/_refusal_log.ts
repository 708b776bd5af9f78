/**
 * One log line now and then for requests the gateway refuses before any
 * route (a 403 for a cross-origin page, a 401 without a valid token): a
 * misconfigured page or client got only its status, and the operator's log
 * said nothing at the default level (newcomer26: a page on another origin
 * got "TypeError: Failed to fetch", the gateway logged nothing). At most one
 * line per `intervalMs` per kind, which counts the refusals left out since
 * the last one, so a flood cannot fill the log. Internal.
 *
 * @module
 */
import type { Logger } from "../logger.ts";

/** Options of {@linkcode RefusalLog}. */
export interface RefusalLogOptions {
  /** Least time between two lines, in ms. @default {60000} */
  intervalMs?: number;
  /** The clock (tests). @default {Date.now} */
  now?: () => number;
}

/**
 * Logs a kind of refusal at `info`, the first at once, then at most one
 * line per `intervalMs`, with how many were left out since the last.
 *
 * @example
 * ```ts ignore
 * const origins = new RefusalLog(logger);
 * origins.refused("Refused a cross-origin request from {origin} to {path}", { origin, path });
 * ```
 */
export class RefusalLog {
  readonly #logger: Logger;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #last = -Infinity;
  #leftOut = 0;

  constructor(logger: Logger, options: RefusalLogOptions = {}) {
    this.#logger = logger;
    this.#intervalMs = options.intervalMs ?? 60_000;
    this.#now = options.now ?? Date.now;
  }

  /**
   * One refusal: logged (`message` with `props`, and `{leftOut}`, the
   * refusals not logged since the last line) unless a line went out less
   * than `intervalMs` ago.
   */
  refused(message: string, props: Record<string, unknown>): void {
    const now = this.#now();
    if (now - this.#last < this.#intervalMs) {
      this.#leftOut++;
      return;
    }
    this.#last = now;
    const leftOut = this.#leftOut;
    this.#leftOut = 0;
    this.#logger.info(
      leftOut === 0
        ? message
        : `${message} ({leftOut} more such refusals since the last line)`,
      { ...props, leftOut },
    );
  }
}

/** A request's path for a log line: at most 200 characters. */
export function loggedPath(path: string): string {
  return path.length > 200 ? `${path.slice(0, 200)}…` : path;
}
