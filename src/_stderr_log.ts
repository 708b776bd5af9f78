/**
 * Internals of `PythonServer`: a server's stderr, line by line, into the
 * host's log.
 *
 * Why: what a worker writes to stderr is what nobody else sees: a thread's
 * uncaught traceback, a C library's complaint, `faulthandler`'s dump before a
 * crash, and the server's whole log when its log file cannot be opened (it
 * then logs to stderr). The host kept only the last 64 KiB for crash reports
 * and `/v1/status`; now each line is also logged, under a rate limit so that
 * a worker flooding stderr cannot flood the host's log.
 *
 * @module
 */
import type { Logger } from "./logger.ts";

/** A line of the server's own log format: `2026-12-05 01:33:49,123 WARNING [...]`. */
const SERVER_RECORD =
  /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) /;

/** A record's text as the server wrote it before escaping it into one line. */
function unescape(line: string): string {
  return line.replace(
    /\\([\\nr])/g,
    (_, c: string) => c === "n" ? "\n" : c === "r" ? "\r" : "\\",
  );
}

type Level = "debug" | "info" | "warn" | "error" | "fatal";

const LEVELS: Record<string, Level> = {
  DEBUG: "debug",
  INFO: "info",
  WARNING: "warn",
  ERROR: "error",
  CRITICAL: "fatal",
};

/** Options of {@linkcode StderrLog}. */
export interface StderrLogOptions {
  /** Lines logged per second at most; the rest are counted. @default {50} */
  maxLinesPerSecond?: number;
  /** A longer line is cut to this many characters. @default {4096} */
  maxLineChars?: number;
  /** Clock in ms (tests). @default {Date.now} */
  now?: () => number;
}

/**
 * Logs a child's stderr text a line at a time: a line in the server's log
 * format at its own level (a record with a traceback is one line, its
 * newlines escaped as `\n` and its backslashes as `\\`: unescaped here),
 * any other line (a thread's uncaught traceback, C libraries) as a warning. A
 * line longer than `maxLineChars` is cut, `… (N characters)`; one of the
 * server's records is one entry even when it is read in pieces, any other
 * line without an end yet is logged in cuts. Past `maxLinesPerSecond`, lines are dropped and their number is
 * logged with the next line that is logged (or at {@linkcode StderrLog.end}).
 *
 * @example
 * ```ts
 * import { getLogger } from "@logtape/logtape";
 * import { StderrLog } from "./_stderr_log.ts";
 * const log = new StderrLog(getLogger(["pyproxy", "python-server", "stderr"]), "w1");
 * log.push("Traceback (most recent call last):\n  File ");
 * log.push('"m.py", line 1\n');
 * log.end();
 * ```
 */
export class StderrLog {
  #logger: Logger;
  #id: string;
  #partial = "";
  /**
   * Characters past the kept `#partial` of a server record longer than
   * `maxLineChars` whose line has not ended yet (0: none): dropped, and
   * counted in its one entry's "… (N characters)".
   */
  #over = 0;
  #max: number;
  #maxChars: number;
  #now: () => number;
  #windowStart = -Infinity;
  #inWindow = 0;
  #dropped = 0;
  #pendingDrops = 0;

  constructor(logger: Logger, id: string, options: StderrLogOptions = {}) {
    this.#logger = logger;
    this.#id = id;
    this.#max = options.maxLinesPerSecond ?? 50;
    this.#maxChars = options.maxLineChars ?? 4096;
    this.#now = options.now ?? Date.now;
  }

  /** Lines dropped by the rate limit so far. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Takes the next piece of text (any split; a line may span pieces). */
  push(text: string): void {
    let start = 0;
    for (;;) {
      const nl = text.indexOf("\n", start);
      if (nl < 0) break;
      if (this.#over > 0) {
        this.#line(
          this.#partial,
          this.#partial.length + this.#over + nl - start,
        );
        this.#over = 0;
      } else {
        const piece = text.slice(start, nl);
        this.#line(this.#partial === "" ? piece : this.#partial + piece);
      }
      this.#partial = "";
      start = nl + 1;
    }
    if (start < text.length) {
      if (this.#over > 0) {
        this.#over += text.length - start;
        return;
      }
      this.#partial += text.slice(start);
      if (this.#partial.length <= this.#maxChars) return;
      if (SERVER_RECORD.test(this.#partial)) {
        // A record of the server's, longer than a line may be (read in
        // pieces): one entry at its level, cut, as when it is read whole.
        // Its rest was logged as lines of their own, warnings of escaped
        // text, each counted in the rate limit.
        this.#over = this.#partial.length - this.#maxChars;
        this.#partial = this.#partial.slice(0, this.#maxChars);
        return;
      }
      // Bounded: any other line without an end is logged in cuts.
      while (this.#partial.length > this.#maxChars) {
        this.#line(this.#partial.slice(0, this.#maxChars));
        this.#partial = this.#partial.slice(this.#maxChars);
      }
    }
  }

  /** The stream ended: logs an unfinished last line and what was dropped. */
  end(): void {
    if (this.#partial !== "") {
      this.#line(this.#partial, this.#partial.length + this.#over);
    }
    this.#partial = "";
    this.#over = 0;
    this.#reportDropped();
  }

  /** Logs a line; `length`: its length before a cut (`raw` is its start). */
  #line(raw: string, length = raw.length): void {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "") return;
    const now = this.#now();
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#inWindow = 0;
    }
    if (this.#inWindow >= this.#max) {
      this.#dropped++;
      this.#pendingDrops++;
      return;
    }
    this.#inWindow++;
    this.#reportDropped();
    const text = length > this.#maxChars
      ? `${line.slice(0, this.#maxChars)}… (${length} characters)`
      : line;
    const own = LEVELS[SERVER_RECORD.exec(text)?.[1] ?? ""];
    this.#logger[own ?? "warn"]("{id} stderr: {line}", {
      id: this.#id,
      // The server writes a record as one line, its traceback's newlines
      // escaped: one record at its level, counted once (not a warning per
      // line of the traceback).
      line: own !== undefined && text.includes("\\") ? unescape(text) : text,
    });
  }

  #reportDropped(): void {
    if (this.#pendingDrops === 0) return;
    this.#logger.warn(
      "{id} stderr: {count} lines not logged (more than {max} a second; the last 64 KiB are in its stderrTail)",
      { id: this.#id, count: this.#pendingDrops, max: this.#max },
    );
    this.#pendingDrops = 0;
  }
}
