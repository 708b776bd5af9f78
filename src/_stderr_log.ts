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
import {
  tracebackContinues,
  tracebackStart,
  type TracebackState,
} from "./_traceback_lines.ts";
import {
  recordLevel,
  serverRecord,
  type StderrRecord,
  unescape,
} from "./_server_record.ts";

/** Characters of a record that count as one line toward the rate limit. */
const LINE_CHARS = 4096;

/** An ANSI SGR sequence (colour, bold): `ESC [ <params> m`. */
// deno-lint-ignore no-control-regex
const SGR = /\x1b\[[0-9;]*m/g;

/** `text` without its ANSI colours (a Python 3.13 traceback's under `FORCE_COLOR`). */
export function withoutColours(text: string): string {
  return text.includes("\x1b[") ? text.replace(SGR, "") : text;
}

/** Options of {@linkcode StderrLog}. */
export interface StderrLogOptions {
  /**
   * Lines logged per second at most (a record of the server's counts once,
   * whatever its traceback; any entry at least once per 4096 characters);
   * the rest are counted. @default {50}
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
  /** Lines joined into one entry at most (but a traceback's). @default {100} */
  maxJoinedLines?: number;
  /**
   * A Python traceback (`Traceback (most recent call last):` to its
   * exception's line, with a chain's and the notes), an exception group's or
   * a `faulthandler` dump is one entry however slowly it is written, up to
   * this many characters (its rest then goes on in another entry).
   * @default {65536}
   */
  maxTracebackChars?: number;
  /**
   * Milliseconds a traceback is joined at most, from its first line: one
   * whose end never comes is logged as it is then, and the lines after it
   * are joined as any others.
   * @default {5000}
   */
  maxTracebackMs?: number;
  /** Clock in ms (tests). @default {Date.now} */
  now?: () => number;
  /**
   * Called with all the text, not rate-limited, a line at a time as it is
   * taken (with its `\n`; an unfinished line, or its cuts, when they are
   * logged): a record of the server's without its mark, unescaped (its
   * traceback over lines), with `record`.
   * @default {undefined}
   */
  onText?: (text: string, record?: StderrRecord) => void;
}

/**
 * Logs a child's stderr text a line at a time. A record of the server's
 * (a line that starts with `options.mark`) is one entry at its own level,
 * unescaped (a record with a traceback is one line, its newlines escaped as
 * `\n` and its backslashes as `\\`). Any other lines are warnings, those
 * that come within `flushMs` of the first joined into one entry (up to
 * `maxJoinedLines` and `maxLineChars`). A Python traceback (from its
 * `Traceback (most recent call last):`, with a header line just before it
 * such as `Exception in thread t:`, to its exception's line, a chain's
 * tracebacks and the notes after it), an exception group's, and a
 * `faulthandler` dump are one entry however slowly they come (a line a
 * second, from a starved process): an error (a dump that is not a crash's,
 * a warning), joined until the next line is not theirs, or after their end
 * no more comes for `flushMs` or twice the longest pause between their lines,
 * up to `maxTracebackChars` and `maxTracebackMs`. Records that come
 * meanwhile are logged at once (from other threads). An unfinished line is logged
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
  /** What the traceback `#group` holds waits for; undefined: it holds none. */
  #traceback: TracebackState | undefined;
  #groupError = false;
  /** When the traceback's first and last lines came, and the longest pause between two. */
  #tracebackAt = 0;
  #tracebackLast = 0;
  #tracebackGap = 0;
  #maxTracebackChars: number;
  #maxTracebackMs: number;
  #onText: ((text: string, record?: StderrRecord) => void) | undefined;
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
    this.#maxTracebackChars = options.maxTracebackChars ?? 65_536;
    this.#maxTracebackMs = options.maxTracebackMs ?? 5000;
    this.#onText = options.onText;
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
          true,
          this.#partial.length + this.#over + nl - start,
        );
        this.#over = 0;
      } else {
        const piece = text.slice(start, nl);
        this.#complete(
          this.#partial === "" ? piece : this.#partial + piece,
          true,
        );
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
      this.#record(this.#partial, false, this.#partial.length + this.#over);
    } else if (this.#partial !== "") {
      this.#complete(this.#partial, false);
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

  /**
   * A whole line (`nl`: its newline came; else the stream's unfinished
   * end): a record, other text, or other text a record follows.
   */
  #complete(line: string, nl: boolean): void {
    const at = this.#prefix === undefined ? -1 : line.indexOf(this.#prefix);
    if (at < 0) {
      if (this.#onText !== undefined) this.#give(nl ? line + "\n" : line);
      return this.#text(line);
    }
    // Text without its newline yet, then the server's record.
    if (at > 0) this.#textPiece(line.slice(0, at));
    this.#record(at > 0 ? line.slice(at) : line, nl);
  }

  /** Text without its newline (cut from its line), given and logged. */
  #textPiece(text: string): void {
    if (this.#onText !== undefined) this.#give(text);
    this.#text(text);
  }

  /** `onText`'s call: what it throws must not stop the drain, nor leave this half done. */
  #give(text: string, record?: StderrRecord): void {
    try {
      this.#onText!(text, record);
    } catch {
      // the caller's callback: nothing to do about it here
    }
  }

  /** `#partial` is longer than a line may be: bounded. */
  #bound(): void {
    const at = this.#prefix === undefined
      ? -1
      : this.#partial.indexOf(this.#prefix);
    if (at > 0) {
      // Text without its newline, then a record: that text is a line.
      this.#textPiece(this.#partial.slice(0, at));
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
      const piece = this.#partial.slice(0, cut);
      if (this.#onText !== undefined) this.#give(piece);
      this.#alone(piece);
      this.#partial = this.#partial.slice(cut);
    }
  }

  /**
   * A record of the server's (`#prefix` first; `nl`: its newline came);
   * `length`: before a cut.
   */
  #record(raw: string, nl: boolean, length = raw.length): void {
    // A traceback still coming is not cut by another thread's record.
    if (
      this.#group !== "" &&
      (this.#traceback === undefined || this.#traceback === "ended")
    ) this.#flushGroup();
    const skip = this.#prefix?.length ?? 0;
    const line = raw.endsWith("\r") ? raw.slice(skip, -1) : raw.slice(skip);
    length -= skip;
    const cut = length > this.#maxChars
      ? `${line.slice(0, this.#maxChars)}… (${length} characters)`
      : line;
    // The server writes a record as one line, its traceback's newlines
    // escaped: one record at its level, counted once (not a warning per
    // line of the traceback).
    const text = cut.includes("\\") ? unescape(cut) : cut;
    const level = recordLevel(text);
    const record = serverRecord(text, level);
    if (this.#onText !== undefined) {
      this.#give(nl ? text + "\n" : text, record);
    }
    // Counted once, but each LINE_CHARS characters more as another line: a
    // model printing 60 KB lines from a thread (logDir "-", where a record
    // may be 64 KiB) had 1000 of them, 64 MB, logged a second (chaos53).
    if (!this.#admit(1, Math.min(length, this.#maxChars))) return;
    // Its fields too: a log collector's query for a worker's errors by
    // logger or message (a start-up exit's reason) need not parse the line.
    this.#logger[level]("{id} stderr: {line}", {
      id: this.#id,
      line: text,
      ...(record.logger === undefined
        ? {}
        : { logger: record.logger, thread: record.thread }),
      message: record.message,
    });
  }

  /** A line of other text: joined with those that came just before it. */
  #text(raw: string, length = raw.length): void {
    let line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    // Colours (Python 3.13's tracebacks under FORCE_COLOR or PYTHON_COLORS,
    // a subprocess's): a log collector got the escape codes in its lines.
    line = withoutColours(line);
    if (this.#traceback !== undefined) {
      // Its time is up (the timer did not fire yet): it ended before this line.
      if (this.#textAt > this.#groupDue()) this.#flushGroup();
      else {
        const state = tracebackContinues(this.#traceback, line);
        if (state !== undefined) {
          return this.#joinTraceback(state, line, length);
        }
        this.#flushGroup();
      }
    }
    if (line.trim() === "") return;
    const start = tracebackStart(line);
    if (start !== undefined) {
      // A line just before it is its header ("Exception in thread t:").
      if (
        this.#group !== "" &&
        (this.#textAt - this.#groupAt >= this.#flushMs ||
          this.#groupLines >= this.#maxJoined)
      ) this.#flushGroup();
      if (this.#group === "") this.#groupAt = this.#textAt;
      this.#traceback = start.state;
      this.#groupError = start.error;
      this.#tracebackAt = this.#tracebackLast = this.#textAt;
      this.#tracebackGap = 0;
      return this.#joinTraceback(start.state, line, length);
    }
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

  /** `line` into the traceback `#group` holds (or starts), which is then in `state`. */
  #joinTraceback(state: TracebackState, line: string, length: number): void {
    const text = length > this.#maxChars
      ? `${line.slice(0, this.#maxChars)}… (${length} characters)`
      : line;
    if (
      this.#group !== "" &&
      this.#group.length + 1 + text.length > this.#maxTracebackChars
    ) {
      // Bounded: this much is an entry, its rest another (still joined).
      this.#emitGroup();
      this.#groupAt = this.#textAt;
    }
    if (this.#group === "") this.#group = text;
    else this.#group += "\n" + text;
    if (text.trim() !== "") this.#groupLines++;
    this.#traceback = state;
    const gap = this.#textAt - this.#tracebackLast;
    if (gap > this.#tracebackGap) this.#tracebackGap = gap;
    this.#tracebackLast = this.#textAt;
    this.#arm(this.#groupDue());
  }

  /**
   * When the lines `#group` holds are logged without another: `flushMs`
   * after the first; a traceback's when its time is up, or (past its end,
   * or a dump's first frame) once no line came for `flushMs` or twice its
   * longest pause, whichever is longer.
   */
  #groupDue(): number {
    if (this.#traceback === undefined) return this.#groupAt + this.#flushMs;
    const last = this.#tracebackAt + this.#maxTracebackMs;
    if (this.#traceback === "frames" || this.#traceback === "head") {
      return last;
    }
    return Math.min(
      last,
      this.#tracebackLast + Math.max(this.#flushMs, 2 * this.#tracebackGap),
    );
  }

  /** A line of other text as an entry of its own: cut (`length`: before the cut). */
  #alone(line: string, length = line.length): void {
    this.#flushGroup();
    if (!this.#admit(1, Math.min(length, this.#maxChars))) return;
    this.#logger.warn("{id} stderr: {line}", {
      id: this.#id,
      line: length > this.#maxChars
        ? `${line.slice(0, this.#maxChars)}… (${length} characters)`
        : line,
    });
  }

  /** Logs the lines joined so far as one entry; a traceback among them ends. */
  #flushGroup(): void {
    this.#emitGroup();
    this.#traceback = undefined;
    this.#groupError = false;
  }

  /** Logs the lines joined so far as one entry (a traceback's go on joining). */
  #emitGroup(): void {
    if (this.#group === "") return;
    // A traceback's blank lines are kept (between a chain's), not at its end.
    const group = this.#traceback === undefined
      ? this.#group
      : this.#group.trimEnd();
    const lines = this.#groupLines;
    this.#group = "";
    this.#groupLines = 0;
    if (!this.#admit(lines, group.length)) return;
    this.#logger[this.#groupError ? "error" : "warn"](
      "{id} stderr: {line}",
      { id: this.#id, line: group },
    );
  }

  /**
   * Whether an entry of `lines` lines and `chars` characters may be logged
   * now (else counted as dropped). Lines joined into one entry each count (a
   * record counts once): joining them does not let more text through; and
   * an entry counts at least a line per `LINE_CHARS` characters: long lines
   * do not either (chaos53).
   */
  #admit(lines: number, chars: number): boolean {
    if (chars > lines * LINE_CHARS) lines = Math.ceil(chars / LINE_CHARS);
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
      else if (this.#traceback !== undefined && now < this.#groupDue()) {
        // A traceback's line written in pieces (a starved process): its
        // rest is still its own, until the traceback's time is up.
        next = this.#groupDue();
      } else if (idle < 1000 && this.#mayStartRecord(this.#partial)) {
        // Its end may be the start of a record read in two pieces: the
        // rest comes at once, unless the server is starved.
        next = this.#textAt + 1000;
      } else {
        const at = this.#prefix === undefined
          ? -1
          : this.#partial.indexOf(this.#prefix);
        // Logged as it is; a record's start after it waits for its end.
        this.#textPiece(at > 0 ? this.#partial.slice(0, at) : this.#partial);
        this.#partial = at > 0 ? this.#partial.slice(at) : "";
        this.#flushGroup();
      }
    }
    if (this.#group !== "") {
      const due = this.#groupDue();
      if (now >= due) this.#flushGroup();
      else next = Math.min(next, due);
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
