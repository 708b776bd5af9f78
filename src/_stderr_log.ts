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
  /**
   * Lines logged per second at most (a record of the server's counts once,
   * whatever its traceback); the rest are counted. @default {50}
   */
  maxLinesPerSecond?: number;
  /** A longer line (or lines joined into one entry) is cut to this many characters. @default {4096} */
  maxLineChars?: number;
  /**
   * What the server's own records start with (`<mark> `, then the record):
   * the server's `PYPROXY_LOG_MARK`, random per process. Only such a line
   * is logged at its record's level and unescaped; any other line is text
   * of the process's (a C library, a subprocess, `os.write(2, ...)`), a
   * warning as it is, whatever it looks like. Without one, every line is.
   * @default {undefined}
   */
  mark?: string;
  /**
   * Milliseconds within which other lines than records are joined into one
   * entry (from the first; a traceback printed by a subprocess), and after
   * which an unfinished line with no more text is logged (a progress line
   * without its newline).
   * @default {50}
   */
  flushMs?: number;
  /** Lines joined into one entry at most. @default {100} */
  maxJoinedLines?: number;
  /** Clock in ms (tests). @default {Date.now} */
  now?: () => number;
}

/**
 * Logs a child's stderr text a line at a time. A record of the server's
 * (a line that starts with `options.mark`) is one entry at its own level,
 * unescaped (a record with a traceback is one line, its newlines escaped as
 * `\n` and its backslashes as `\\`). Any other lines are warnings, those
 * that come within `flushMs` of the first joined into one entry (up to
 * `maxJoinedLines` and `maxLineChars`): a traceback another program prints
 * is one entry, not a warning per line. An unfinished line is logged
 * `flushMs` after the last text (up to 1 s when its end may be the start of
 * a record's mark), or as a record starts after it on its line.
 * Text on stderr cannot pass for a record: the mark is random per process
 * (model code, which runs in that process, can find it; text it prints
 * cannot carry it by accident).
 *
 * A line longer than `maxLineChars` is cut, `… (N characters)`; one of the
 * server's records is one entry even when it is read in pieces, any other
 * line without an end yet is logged in cuts. Past `maxLinesPerSecond`
 * lines, lines are dropped and their number is logged with the next
 * entry, when the second they were dropped in ends, or at
 * {@linkcode StderrLog.end}.
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
  /** `<mark> `, or undefined: no line is a record. */
  #prefix: string | undefined;
  #partial = "";
  /**
   * Characters past the kept `#partial` of a server record longer than
   * `maxLineChars` whose line has not ended yet (0: none): dropped, and
   * counted in its one entry's "… (N characters)".
   */
  #over = 0;
  #max: number;
  #maxChars: number;
  #flushMs: number;
  #maxJoined: number;
  #now: () => number;
  #windowStart = -Infinity;
  #inWindow = 0;
  #dropped = 0;
  #pendingDrops = 0;
  /** Lines (not records) joined so far into the next entry, "\n" between them. */
  #group = "";
  #groupLines = 0;
  #groupAt = 0;
  /** When the last text came. */
  #textAt = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;

  constructor(logger: Logger, id: string, options: StderrLogOptions = {}) {
    this.#logger = logger;
    this.#id = id;
    this.#prefix = options.mark === undefined ? undefined : `${options.mark} `;
    this.#max = options.maxLinesPerSecond ?? 50;
    this.#maxChars = options.maxLineChars ?? 4096;
    this.#flushMs = options.flushMs ?? 50;
    this.#maxJoined = options.maxJoinedLines ?? 100;
    this.#now = options.now ?? Date.now;
  }

  /** Lines dropped by the rate limit so far. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Takes the next piece of text (any split; a line may span pieces). */
  push(text: string): void {
    this.#textAt = this.#now();
    let start = 0;
    for (;;) {
      const nl = text.indexOf("\n", start);
      if (nl < 0) break;
      if (this.#over > 0) {
        this.#record(
          this.#partial,
          this.#partial.length + this.#over + nl - start,
        );
        this.#over = 0;
      } else {
        const piece = text.slice(start, nl);
        this.#complete(this.#partial === "" ? piece : this.#partial + piece);
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
      if (this.#partial.length > this.#maxChars) this.#bound();
      // Not a record's start (which the server ends): logged when idle.
      if (this.#partial !== "" && !this.#isRecord(this.#partial)) {
        this.#arm(this.#textAt + this.#flushMs);
      }
    }
  }

  /** The stream ended: logs an unfinished last line and what was dropped. */
  end(): void {
    if (this.#over > 0) {
      this.#record(this.#partial, this.#partial.length + this.#over);
    } else if (this.#partial !== "") {
      this.#complete(this.#partial);
    }
    this.#partial = "";
    this.#over = 0;
    this.#flushGroup();
    this.#reportDropped();
    // Last: what was just flushed may have set it.
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }

  #isRecord(line: string): boolean {
    return this.#prefix !== undefined && line.startsWith(this.#prefix);
  }

  /** A whole line: a record, other text, or other text a record follows. */
  #complete(line: string): void {
    const at = this.#prefix === undefined ? -1 : line.indexOf(this.#prefix);
    if (at < 0) return this.#text(line);
    // Text without its newline yet, then the server's record.
    if (at > 0) this.#text(line.slice(0, at));
    this.#record(at > 0 ? line.slice(at) : line);
  }

  /** `#partial` is longer than a line may be: bounded. */
  #bound(): void {
    const at = this.#prefix === undefined
      ? -1
      : this.#partial.indexOf(this.#prefix);
    if (at > 0) {
      // Text without its newline, then a record: that text is a line.
      this.#text(this.#partial.slice(0, at));
      this.#partial = this.#partial.slice(at);
    }
    if (at >= 0) {
      // A record of the server's, longer than a line may be (read in
      // pieces): one entry at its level, cut, as when it is read whole.
      const keep = this.#maxChars + this.#prefix!.length;
      if (this.#partial.length <= keep) return;
      this.#over = this.#partial.length - keep;
      this.#partial = this.#partial.slice(0, keep);
      return;
    }
    // Bounded: any other line without an end is logged in cuts; not
    // through the start of a record's mark that may end it (its rest not
    // read yet): cut there, the record was a warning, and its mark was
    // logged, in two pieces (chaos48).
    const keep = this.#markStart(this.#partial);
    while (this.#partial.length > this.#maxChars) {
      const cut = Math.min(this.#maxChars, this.#partial.length - keep);
      this.#alone(this.#partial.slice(0, cut));
      this.#partial = this.#partial.slice(cut);
    }
  }

  /** A record of the server's (`#prefix` first); `length`: before a cut. */
  #record(raw: string, length = raw.length): void {
    if (this.#group !== "") this.#flushGroup();
    if (!this.#admit(1)) return;
    const skip = this.#prefix?.length ?? 0;
    const line = raw.endsWith("\r") ? raw.slice(skip, -1) : raw.slice(skip);
    length -= skip;
    const text = length > this.#maxChars
      ? `${line.slice(0, this.#maxChars)}… (${length} characters)`
      : line;
    // The server writes a record as one line, its traceback's newlines
    // escaped: one record at its level, counted once (not a warning per
    // line of the traceback).
    this.#logger[LEVELS[SERVER_RECORD.exec(text)?.[1] ?? ""] ?? "warn"](
      "{id} stderr: {line}",
      { id: this.#id, line: text.includes("\\") ? unescape(text) : text },
    );
  }

  /** A line of other text: joined with those that came just before it. */
  #text(raw: string, length = raw.length): void {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.trim() === "") return;
    if (
      this.#group !== "" &&
      (this.#group.length + 1 + line.length > this.#maxChars ||
        this.#groupLines >= this.#maxJoined ||
        this.#textAt - this.#groupAt >= this.#flushMs)
    ) this.#flushGroup();
    if (length > this.#maxChars) return this.#alone(line, length);
    if (this.#group === "") {
      this.#group = line;
      this.#groupAt = this.#textAt;
      this.#arm(this.#textAt + this.#flushMs);
    } else {
      this.#group += "\n" + line;
    }
    this.#groupLines++;
  }

  /** A line of other text as an entry of its own: cut (`length`: before the cut). */
  #alone(line: string, length = line.length): void {
    this.#flushGroup();
    if (!this.#admit(1)) return;
    this.#logger.warn("{id} stderr: {line}", {
      id: this.#id,
      line: length > this.#maxChars
        ? `${line.slice(0, this.#maxChars)}… (${length} characters)`
        : line,
    });
  }

  #flushGroup(): void {
    if (this.#group === "") return;
    const group = this.#group;
    const lines = this.#groupLines;
    this.#group = "";
    this.#groupLines = 0;
    if (!this.#admit(lines)) return;
    this.#logger.warn("{id} stderr: {line}", { id: this.#id, line: group });
  }

  /**
   * Whether an entry of `lines` lines may be logged now (else counted as
   * dropped). Lines joined into one entry each count (a record counts
   * once): joining them does not let more text through.
   */
  #admit(lines: number): boolean {
    const now = this.#now();
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#inWindow = 0;
    }
    if (this.#inWindow >= this.#max) {
      if (this.#pendingDrops === 0) this.#arm(this.#windowStart + 1000);
      this.#dropped += lines;
      this.#pendingDrops += lines;
      return false;
    }
    this.#inWindow += lines;
    this.#reportDropped();
    return true;
  }

  /** Runs `#tick` at `at` (ms of `now`), or sooner when already due then. */
  #arm(at: number): void {
    if (this.#timer !== undefined && this.#timerAt <= at) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(
      () => this.#tick(),
      Math.max(0, Math.min(at - this.#now(), 1000)),
    );
  }

  /** Whether `text` ends with the start of the mark (read apart from its rest). */
  #mayStartRecord(text: string): boolean {
    return this.#markStart(text) > 0;
  }

  /** How many characters at the end of `text` may start the mark (0: none). */
  #markStart(text: string): number {
    const prefix = this.#prefix;
    if (prefix === undefined) return 0;
    for (let k = Math.min(text.length, prefix.length - 1); k > 0; k--) {
      if (prefix.startsWith(text.slice(text.length - k))) return k;
    }
    return 0;
  }

  /** What is due: lines joined long enough, an idle unfinished line, drops of a second that ended. */
  #tick(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = this.#now();
    let next = Infinity;
    if (
      this.#partial !== "" && this.#over === 0 &&
      !this.#isRecord(this.#partial)
    ) {
      const idle = now - this.#textAt;
      if (idle < this.#flushMs) next = this.#textAt + this.#flushMs;
      else if (idle < 1000 && this.#mayStartRecord(this.#partial)) {
        // Its end may be the start of a record read in two pieces: the
        // rest comes at once, unless the server is starved.
        next = this.#textAt + 1000;
      } else {
        const at = this.#prefix === undefined
          ? -1
          : this.#partial.indexOf(this.#prefix);
        // Logged as it is; a record's start after it waits for its end.
        this.#text(at > 0 ? this.#partial.slice(0, at) : this.#partial);
        this.#partial = at > 0 ? this.#partial.slice(at) : "";
        this.#flushGroup();
      }
    }
    if (this.#group !== "") {
      if (now - this.#groupAt >= this.#flushMs) this.#flushGroup();
      else next = Math.min(next, this.#groupAt + this.#flushMs);
    }
    if (this.#pendingDrops > 0) {
      if (now - this.#windowStart >= 1000) this.#reportDropped();
      else next = Math.min(next, this.#windowStart + 1000);
    }
    if (next !== Infinity) this.#arm(next);
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
