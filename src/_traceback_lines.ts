/**
 * Internals of `StderrLog`: which lines of a process's stderr belong to one
 * Python traceback (or `faulthandler` dump), so that it is one log entry
 * however slowly it was written.
 *
 * Why: lines were joined into one entry only while they came within 50 ms of
 * the first; a traceback written a line at a time (a model's own
 * `os.write(2, ...)` loop, a starved process, a subprocess's) became an
 * entry per line, each a warning, and a log collector could not tell one
 * traceback's lines from another's.
 *
 * @module
 */

/**
 * What a traceback being joined is waiting for:
 * - `"frames"`: a Python traceback before its exception line (`XxxError: ...`);
 * - `"ended"`: after it: a chained exception's lines, or the notes, may follow;
 * - `"head"`: a block without an end line (a `faulthandler` dump, an
 *   exception group's indented traceback) before its first frame;
 * - `"open"`: after it: it ends at a line not its own or when no more come.
 */
export type TracebackState = "frames" | "ended" | "head" | "open";

/** What Python's `traceback` module starts a traceback with. */
const PYTHON_START = "Traceback (most recent call last):";

/** The line between two tracebacks of a chain (each then has its first line). */
const CHAIN =
  /^(During handling of the above exception, another exception occurred:|The above exception was the direct cause of the following exception:)$/;

/** An exception group's traceback (Python 3.11+): every line indented. */
const GROUP_START =
  /^ {2}\+ Exception Group Traceback \(most recent call last\):$/;

/** The first line of a `faulthandler` dump (a crash's, `dump_traceback`'s, a timeout's). */
const DUMP_START =
  /^(Fatal Python error: |(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):$|Stack \(most recent call first\):$|Timeout \(\d+:\d\d:\d\d(\.\d+)?\)!$)/;

/** The lines of a dump that are not indented, after its first. */
const DUMP_LINE =
  /^((Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):$|Stack \(most recent call first\):$|Python runtime state: |Extension modules: )/;

/** Whether `line` starts with a space or a tab (a frame, its code, a caret line). */
function indented(line: string): boolean {
  const c = line.charCodeAt(0);
  return c === 32 || c === 9;
}

/**
 * The state a traceback starting with `line` is in, or `undefined` when it
 * starts none; `error`: whether it reports a failure (any Python traceback,
 * a crash's dump) rather than where threads are (`dump_traceback`).
 */
export function tracebackStart(
  line: string,
): { state: TracebackState; error: boolean } | undefined {
  if (line === PYTHON_START) return { state: "frames", error: true };
  if (GROUP_START.test(line)) return { state: "head", error: true };
  if (DUMP_START.test(line)) {
    return { state: "head", error: line.startsWith("Fatal Python error: ") };
  }
  return undefined;
}

/**
 * The traceback's state once `line` is joined to it, or `undefined` when
 * `line` is not its own (the traceback ended before it; `line` may start
 * another). Blank and indented lines are always its own.
 */
export function tracebackContinues(
  state: TracebackState,
  line: string,
): TracebackState | undefined {
  if (line.trim() === "") return state;
  if (indented(line)) return state === "head" ? "open" : state;
  switch (state) {
    case "frames":
      // Anything else not indented is the exception's line: the end, unless
      // a chained exception (or notes, a message's further lines) follow.
      return line === PYTHON_START || CHAIN.test(line) ? "frames" : "ended";
    case "ended":
      if (CHAIN.test(line)) return "frames";
      // Another traceback, not a chain's (those come after CHAIN's line).
      if (line === PYTHON_START || DUMP_START.test(line)) return undefined;
      // A message's further lines, the exception's notes.
      return "ended";
    case "head":
    case "open":
      return DUMP_LINE.test(line) ? state : undefined;
  }
}
