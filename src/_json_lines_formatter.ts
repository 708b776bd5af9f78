/**
 * The `json` log format of `serve` (`--log-format json`): LogTape's JSON
 * Lines (`@timestamp`, `level`, `message`, `logger`, `properties`), with the
 * message as plain text. Internal.
 *
 * Why: LogTape's own formatter writes each value of a message as JSON, so a
 * string came quoted and escaped inside the message
 * (`"message":"\"w1\" stderr: \"Traceback ...\\n ...\""`), and the text a
 * model printed was in the record twice (the message and
 * `properties.message`; a worker's stderr in `properties.line`): a 64 KiB
 * traceback made a 130 KiB line, and a log pipeline had to unquote the
 * message to read it.
 *
 * @module
 */
import { jsonLinesFormatter as logTapeJsonLines } from "@logtape/logtape";
import type { LogRecord } from "@logtape/logtape";

/**
 * Templates whose record is the text of a property (what a model printed or
 * logged, `_python_log.ts`; a line of a worker's stderr, `_stderr_log.ts`),
 * decorated for a text log with fields that are properties of their own
 * (the request id, the worker's id): the property that holds the text.
 */
const TEXT_TEMPLATES: ReadonlyArray<readonly [RegExp, string]> = [
  [/^\{message\}(?: \(request ids? \{\w+\}\))?$/, "message"],
  [/^\{id\} stderr: \{line\}$/, "line"],
];

/** A value of a message as the text log shows it: strings as they are. */
function plain(value: unknown): string {
  if (typeof value === "string") return value;
  if (value === null || typeof value !== "object") return String(value);
  if (value instanceof Error) return String(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/**
 * A record as one JSON line: its `message` the text with its values as
 * they are (strings unquoted); a record that is a text a model printed or
 * logged, or a line of a worker's stderr, has that text, as written, as its
 * `message`, and not again among its `properties` (the request id, the
 * worker are properties of their own).
 *
 * @example
 * ```ts ignore
 * getConsoleSink({ formatter: jsonLinesFormatter });
 * // {"@timestamp":"...","level":"WARN","message":"worker w2 exited","logger":"pyproxy.pool","properties":{"id":"w2"}}
 * ```
 */
export function jsonLinesFormatter(record: LogRecord): string {
  const template = record.rawMessage;
  let properties = record.properties;
  let text: string | undefined;
  if (typeof template === "string") {
    for (const [pattern, key] of TEXT_TEMPLATES) {
      const value = properties[key];
      if (typeof value === "string" && pattern.test(template)) {
        text = value;
        properties = { ...properties };
        delete properties[key];
        break;
      }
    }
  }
  if (text === undefined) {
    const parts = record.message;
    text = "";
    for (let i = 0; i < parts.length; i++) {
      text += i % 2 === 0 ? String(parts[i]) : plain(parts[i]);
    }
  }
  return logTapeJsonLines({ ...record, message: [text], properties });
}
