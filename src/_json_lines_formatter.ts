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

/** JSON's replacer for a BigInt, which `JSON.stringify` refuses. */
function bigints(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/**
 * {@linkcode bigints}, and an object that contains itself written
 * `"[Circular]"` (as LogTape's own formatter writes one): a fresh one per
 * `JSON.stringify`.
 */
function withoutCycles(): (
  this: unknown,
  key: string,
  value: unknown,
) => unknown {
  const holders: unknown[] = [];
  return function (this: unknown, key: string, value: unknown): unknown {
    const out = bigints(key, value);
    if (typeof out !== "object" || out === null) return out;
    // `this` is the object holding `value`: the ones above it are its path.
    while (holders.length > 0 && holders[holders.length - 1] !== this) {
      holders.pop();
    }
    if (holders.includes(out)) return "[Circular]";
    holders.push(out);
    return out;
  };
}

/**
 * A value of a message as the text log shows it: strings as they are, other
 * values as JSON (a BigInt as its digits, a cycle as `"[Circular]"`, as
 * LogTape's formatter wrote them). Never throws: a value that cannot be
 * written (a `null`-prototype object of a cycle, a throwing `toJSON`) is
 * its tag, `[object Object]`, and the record is still written.
 */
function plain(value: unknown): string {
  if (typeof value === "string") return value;
  try {
    if (value === null || typeof value !== "object") return String(value);
    if (value instanceof Error) return String(value);
    try {
      return JSON.stringify(value, bigints) ?? String(value);
    } catch {
      return JSON.stringify(value, withoutCycles()) ?? String(value);
    }
  } catch {
    // `String()` of an object without `toString` (`Object.create(null)`).
    return Object.prototype.toString.call(value);
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
  try {
    return logTapeJsonLines({ ...record, message: [text], properties });
  } catch {
    // A property JSON cannot write (a throwing `toJSON`, a getter that
    // throws): that one as text, the others and the record as they are.
    return logTapeJsonLines({
      ...record,
      message: [text],
      properties: writable(properties),
    });
  }
}

/** `properties` with each value JSON cannot write as its {@linkcode plain} text. */
function writable(
  properties: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(properties)) {
    let value: unknown;
    try {
      value = properties[key];
      JSON.stringify(value, withoutCycles());
    } catch {
      value = plain(value);
    }
    out[key] = value;
  }
  return out;
}
