/**
 * What a host handler's result holds that JSON would change without a
 * word: a `Map` or `Set` (written `{}`), a function or symbol (left out, or
 * `None`), an `Error` (`{}`), a `Promise` not awaited (`{}`); and what it
 * cannot write (`NaN`, infinities, a `BigInt` unless the pool sends them
 * exactly), named here with the command. Such a result
 * fails the model's `host.call` with a `SerializationError` naming the
 * command and the place, rather than reaching Python as `{}` or `None`
 * (docs/plugins.md, "Host handlers' results"). Internal.
 *
 * @module
 */
import { isBytes } from "./_binary.ts";
import { MAX_JSON_DEPTH } from "./_json_check.ts";

/**
 * Why `value` (a handler's result) cannot be sent as it is, with its place
 * (`result.rows[2].tags is a Set ...`), or `undefined`. Values with a
 * `toJSON` are what it gives (not looked into); bytes are bytes; `undefined`
 * in an object is left out and in an array is `None`, as JSON has it; a
 * `BigInt` is one when `bigints` (the pool's `integers: "bigint"`). Walks
 * the whole value once, keeping only the objects above the one it looks at
 * (the place is built on the way out); it stops at a cycle, whose error
 * JSON gives. Throws what the value's getters or a proxy's traps throw.
 */
export function hostResultProblem(
  value: unknown,
  bigints = false,
): string | undefined {
  if (!mayHide(value, bigints)) return undefined;
  const found = problemAt(value, [], bigints);
  return found === undefined ? undefined : `result${found}`;
}

/**
 * `above`: the objects that hold `value`, outermost first. A cycle ends
 * the walk there: cut only by the depth, an object that holds itself under
 * k keys was walked k^900 times (4 keys hung the host's event loop).
 */
function problemAt(
  value: unknown,
  above: object[],
  bigints: boolean,
): string | undefined {
  switch (typeof value) {
    case "number":
      return ` is ${value} (JSON has no NaN or infinities: it would arrive as None; send null, or a string)`;
    case "bigint":
      return ' is a BigInt (send a number or a string, or use integers: "bigint" to send it exactly)';
    case "function":
      return " is a function (JSON has no functions: it would arrive as None, or be left out; return what it computes)";
    case "symbol":
      return " is a symbol (JSON has none: it would arrive as None, or be left out; return a string)";
    case "object":
      break;
    default:
      return undefined;
  }
  // A cycle, or deeper than Python reads: the outbox's own error says so.
  if (
    value === null || above.length > MAX_JSON_DEPTH || above.includes(value)
  ) return undefined;
  const proto = Object.getPrototypeOf(value);
  if (proto === Array.prototype) {
    const list = value as unknown[];
    above.push(list);
    try {
      for (let i = 0; i < list.length; i++) {
        const item = list[i];
        if (!mayHide(item, bigints)) continue;
        const inner = problemAt(item, above, bigints);
        if (inner !== undefined) return `[${i}]${inner}`;
      }
      return undefined;
    } finally {
      above.pop();
    }
  }
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") {
    return undefined;
  }
  // Plain objects, the most common by far, skip the class checks.
  if (proto !== Object.prototype && proto !== null) {
    if (isBytes(value)) return undefined;
    const kind = unwritable(value);
    if (kind !== undefined) return kind;
  }
  above.push(value);
  try {
    for (const key in value) {
      const item = (value as Record<string, unknown>)[key];
      if (!mayHide(item, bigints) || !Object.hasOwn(value, key)) continue;
      const inner = problemAt(item, above, bigints);
      if (inner !== undefined) {
        return `${
          /^[A-Za-z_$][\w$]*$/.test(key)
            ? `.${key}`
            : `[${JSON.stringify(key)}]`
        }${inner}`;
      }
    }
    return undefined;
  } finally {
    above.pop();
  }
}

/** Whether a value may be, or hold, what JSON changes or cannot write. */
function mayHide(item: unknown, bigints: boolean): boolean {
  const type = typeof item;
  return type === "object" || type === "function" || type === "symbol" ||
    (type === "number" && !Number.isFinite(item)) ||
    (type === "bigint" && !bigints);
}

/** The kinds of objects JSON writes as `{}`, with what to return instead. */
function unwritable(value: object): string | undefined {
  if (value instanceof Map) {
    return " is a Map (JSON writes it as {}: return Object.fromEntries(map), or [...map] for its entries)";
  }
  if (value instanceof Set) {
    return " is a Set (JSON writes it as {}: return [...set])";
  }
  if (value instanceof WeakMap || value instanceof WeakSet) {
    return " is a WeakMap or WeakSet (JSON writes it as {})";
  }
  if (value instanceof Error) {
    return " is an Error (JSON writes it as {}: throw it to fail the call, or return its message)";
  }
  if (value instanceof Promise) {
    return " is a Promise (JSON writes it as {}: await it, and return its value)";
  }
  return undefined;
}
