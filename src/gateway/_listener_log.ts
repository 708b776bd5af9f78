/**
 * The gateway's log of its HTTP port's listener failing and listening again
 * (Deno: the accept loop ends at `EMFILE`; src/runtime/_deno_relisten.ts).
 *
 * Why a bound: under a flood of connections that never speak the cycle is
 * fail, listen again a second later, fail at once: each turn logged three
 * lines (the failure, the port back, the gRPC port made to listen again),
 * ~10 000 lines an hour for as long as the flood lasts. Here the first
 * failure and the port's return are logged as they happen; the turns after
 * them within `intervalMs` are counted, and one line says how many there
 * were (and whether the port accepts now) once that time is over. A port
 * another process took meanwhile (`EADDRINUSE` on listening again) is said
 * once per outage: the gateway goes on trying (that process may leave), and
 * says so.
 *
 * @module
 */
import type { ListenerEvent } from "../runtime/types.ts";

/** The logger methods used. */
interface ListenerLogger {
  error(message: string): void;
  info(message: string): void;
}

/** Options of {@linkcode ListenerLog}. */
export interface ListenerLogOptions {
  /** Where the lines go (the gateway's logger). */
  logger: ListenerLogger;
  /** Told when the port listens again (the gRPC port's check). */
  onListening?: () => void;
  /**
   * The time after a line within which further failures are only counted.
   * @default {60000}
   */
  intervalMs?: number;
  /** Clock in ms (tests). @default {Date.now} */
  now?: () => number;
}

/**
 * Logs a {@linkcode ListenerEvent} stream at a bounded rate.
 *
 * @example
 * ```ts ignore
 * const log = new ListenerLog({ logger });
 * runtime.serve({ hostname, port, onListener: (e) => log.event(e) }, handler);
 * // at shutdown
 * log.close();
 * ```
 */
export class ListenerLog {
  readonly #logger: ListenerLogger;
  readonly #onListening: (() => void) | undefined;
  readonly #intervalMs: number;
  readonly #now: () => number;
  /** When the last line was logged (-Infinity: none yet). */
  #since = -Infinity;
  /** Accept-loop failures counted, not logged, since `#since`. */
  #counted = 0;
  /** The last counted failure's message. */
  #lastError = "";
  /** Whether the port listens (as of the last event). */
  #listening = true;
  /** The port in use by another process was said (until it listens again). */
  #portTakenSaid = false;
  /** Logs the count once `intervalMs` after `#since` is over. */
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** Logs to `options.logger`. */
  constructor(options: ListenerLogOptions) {
    this.#logger = options.logger;
    this.#onListening = options.onListening;
    this.#intervalMs = options.intervalMs ?? 60_000;
    this.#now = options.now ?? Date.now;
  }

  /** Logs (or counts) `event`. */
  event(event: ListenerEvent): void {
    switch (event.type) {
      case "failed": {
        this.#listening = false;
        const now = this.#now();
        if (now - this.#since < this.#intervalMs) {
          this.#counted++;
          this.#lastError = event.error.message;
          this.#schedule();
          return;
        }
        this.#since = now;
        clearTimeout(this.#timer);
        this.#timer = undefined;
        this.#logger.error(
          `The HTTP port stopped accepting connections (${event.error.message}). Listening again in ${event.retryIn} ms, and every ${event.retryIn} ms until it can (docs/security.md, "Connections that never speak")${this.#takeCount()}`,
        );
        return;
      }
      case "retryFailed":
        if (!event.portTaken || this.#portTakenSaid) return;
        this.#portTakenSaid = true;
        this.#logger.error(
          `The HTTP port is in use by another process (${event.error.message}): it was taken while this gateway's listener was down. Trying to listen again every ${event.retryIn} ms for as long as it is taken; stop that process, or restart the gateway on another port`,
        );
        return;
      case "listening":
        this.#listening = true;
        this.#portTakenSaid = false;
        // The return of the failure logged: logged. Those of the counted
        // ones go in the count's line.
        if (this.#counted === 0) {
          this.#logger.info(
            `The HTTP port accepts connections again (${event.port})`,
          );
        }
        this.#onListening?.();
        return;
    }
  }

  /** Logs what is counted (if anything); no line after. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#counted > 0) this.#flush();
  }

  #schedule(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#counted > 0) this.#flush();
    }, Math.max(0, this.#since + this.#intervalMs - this.#now()));
  }

  #flush(): void {
    this.#since = this.#now();
    const line =
      `The HTTP port stopped accepting connections ${this.#counted} more ${
        this.#counted === 1 ? "time" : "times"
      } (the last: ${this.#lastError}) and was listened on again each time; it ${
        this.#listening
          ? "accepts connections now"
          : "does not accept connections now (listening again)"
      } (docs/security.md, "Connections that never speak")`;
    this.#counted = 0;
    this.#logger.error(line);
  }

  /** `; N more failures ...` when some were counted before this line. */
  #takeCount(): string {
    if (this.#counted === 0) return "";
    const n = this.#counted;
    this.#counted = 0;
    return ` (${n} more ${n === 1 ? "time" : "times"} before)`;
  }
}
