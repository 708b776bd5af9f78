/**
 * Internals of `StderrLog`: what a line of the server's own log format says
 * (`2026-12-05 01:33:49,123 WARNING [thread] logger: message`), its level as
 * the host logs it and the fields `onStderr` gets with it.
 *
 * @module
 */

/** A line of the server's own log format: `2026-12-05 01:33:49,123 WARNING [...]`. */
const SERVER_RECORD =
  /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) /;

/** A record's text as the server wrote it before escaping it into one line. */
export function unescape(line: string): string {
  return line.replace(
    /\\([\\nr])/g,
    (_, c: string) => c === "n" ? "\n" : c === "r" ? "\r" : "\\",
  );
}

/** A level as the host logs it. */
export type Level = "debug" | "info" | "warn" | "error" | "fatal";

/** A record of the server's: its level, the fields of its line and its message. */
const RECORD_FIELDS =
  /^\S+ \S+ (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \[(.*?)\] (\S+): /;

/**
 * One of the server's own log records on its stderr, as `onStderr` gets it
 * beside the record's text (docs/gateway.md: the records a worker writes to
 * stderr with `--log-dir -`, or when its log file cannot be opened).
 *
 * @example Only a worker's errors, with their tracebacks
 * ```ts
 * import type { StderrRecord } from "@pyproxy/pyproxy";
 * const errors: string[] = [];
 * const onStderr = (text: string, record?: StderrRecord): void => {
 *   if (record?.level === "error") errors.push(`${record.logger}: ${record.message}`);
 * };
 * onStderr("2026-12-07 19:12:51,970 ERROR [bg] loader: failed\n", {
 *   level: "error",
 *   logger: "loader",
 *   thread: "bg",
 *   message: "failed",
 * });
 * ```
 */
export interface StderrRecord {
  /** Its level as the host logs it (Python's `WARNING` is `"warn"`, `CRITICAL` `"fatal"`). */
  level: "debug" | "info" | "warn" | "error" | "fatal";
  /** The Python logger's name (`pyproxy_server`, a model's `scorer`). */
  logger?: string;
  /** The name of the Python thread that logged it. */
  thread?: string;
  /** What follows `<logger>: `: the message, with its traceback. */
  message: string;
}

const LEVELS: Record<string, Level> = {
  DEBUG: "debug",
  INFO: "info",
  WARNING: "warn",
  ERROR: "error",
  CRITICAL: "fatal",
};

/** The level the host logs a record's `text` at (`"warn"` when it names none). */
export function recordLevel(text: string): Level {
  return LEVELS[SERVER_RECORD.exec(text)?.[1] ?? ""] ?? "warn";
}

/** The record of the server's that `text` (unescaped, without its mark) is, at `level`. */
export function serverRecord(text: string, level: Level): StderrRecord {
  const fields = RECORD_FIELDS.exec(text);
  return fields === null ? { level, message: text } : {
    level,
    logger: fields[2]!,
    thread: fields[1]!,
    message: text.slice(fields[0].length),
  };
}

/** A record's line up to its logger: time, level and `[thread]`. */
const RECORD_HEAD =
  /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \[.*?\] (?=\S+: )/;

/**
 * `line` without the time, level and thread of a record of the server's
 * (`pyproxy_server: cannot listen: ...`, as the server said it before its
 * start-up exits were records); any other line as it is.
 */
export function withoutRecordHead(line: string): string {
  return line.replace(RECORD_HEAD, "");
}
