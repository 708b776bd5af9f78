/**
 * NaN and infinities in an outgoing message: `JSON.stringify` writes them
 * as `null`, so `{x: NaN}` reached Python as `{"x": None}` with no error
 * (and a gateway body's `1e400`, which `JSON.parse` reads as `Infinity`,
 * the same). The Python server refuses to send them
 * (`SerializationError`); the host now refuses them too, naming the place.
 *
 * A message pays one native search of its JSON text for `null`; only a text
 * holding it is walked (a message with no `null` holds no NaN).
 *
 * @module
 */
import { isBytes } from "./_binary.ts";
import { shortenPath } from "./_json_check.ts";

/**
 * Thrown by an encoder that met NaN or an infinity (the spill-over's
 * `jsonPieces`): its catcher may then call {@linkcode nonFiniteReason} on the
 * value, which is known to be acyclic and to hold one (the walk follows no
 * cycle check: any other failure, a cycle's too, must not reach it).
 */
export class NonFiniteNumberError extends TypeError {
  /** @param message What was met. */
  constructor(
    message =
      "Cannot encode message: it holds NaN or an infinity (JSON has neither)",
  ) {
    super(message);
  }
}

/**
 * Why `value` cannot be sent as it is: `"msg.x is NaN (...)"` for its first
 * NaN, `Infinity` or `-Infinity` where `JSON.stringify` writes it: in its
 * arrays and plain objects, in what a `toJSON` gives (called again, with
 * the key `JSON.stringify` gave it) and in a boxed `new Number(NaN)` (bytes,
 * which go as bytes, are not entered), or `undefined` when it holds none.
 * `text` is what `JSON.stringify` wrote for it: without `null` in it,
 * nothing is walked. `value` must be acyclic (`JSON.stringify` accepted it).
 *
 * @example
 * ```ts ignore
 * nonFiniteReason({ msg: { x: [1, NaN] } }, '{"msg":{"x":[1,null]}}');
 * // "msg.x[1] is NaN (JSON has no NaN or infinities: it would arrive as None; send null, or a string)"
 * ```
 */
export function nonFiniteReason(
  value: unknown,
  text: string,
): string | undefined {
  if (!text.includes("null") || !holdsNonFinite(value)) return undefined;
  return describe(value);
}

/**
 * What a `toJSON` gives for `value` under `key` (called again: `undefined`
 * when it throws this time), a boxed number's value: what `JSON.stringify`
 * writes in its place. An object it gives is walked as it is:
 * `JSON.stringify` calls no `toJSON` of a `toJSON`'s output.
 */
function toJSONOf(value: object, key: string | number): unknown {
  // A Date's gives a string or null, never a number: not called again (a
  // walk of 100k Dates beside nulls cost 39 ms, its JSON.stringify 50 ms).
  if ((value as { toJSON?: unknown }).toJSON === DATE_TO_JSON) return null;
  let out: unknown;
  try {
    out = (value as { toJSON(key: string): unknown }).toJSON(String(key));
  } catch {
    return undefined;
  }
  return out instanceof Number ? out.valueOf() : out;
}

/**
 * Whether `value` holds NaN or an infinity where `JSON.stringify` writes
 * it: a walk of its arrays and plain objects, of `toJSON` outputs and boxed
 * numbers (not of bytes). Iterative: any depth.
 */
function holdsNonFinite(value: unknown): boolean {
  if (
    typeof value === "object" && value !== null &&
    typeof (value as { toJSON?: unknown }).toJSON === "function" &&
    !isBytes(value)
  ) value = toJSONOf(value, "");
  if (typeof value === "number") return value - value !== 0;
  if (typeof value !== "object" || value === null) return false;
  const stack: object[] = [value];
  while (stack.length > 0) {
    const v = stack.pop()!;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        let item: unknown = v[i];
        if (
          typeof item === "object" && item !== null &&
          typeof (item as { toJSON?: unknown }).toJSON === "function" &&
          !isBytes(item)
        ) item = toJSONOf(item, i);
        if (typeof item === "number") {
          if (item - item !== 0) return true; // NaN, Infinity, -Infinity
        } else if (typeof item === "object" && item !== null) {
          stack.push(item);
        }
      }
      continue;
    }
    // (A toJSON's object is walked here too, its own toJSON not called.)
    if (isBytes(v)) continue;
    if (v instanceof Number) {
      const n = v.valueOf();
      if (n - n !== 0) return true;
      continue;
    }
    for (const key in v) {
      if (!Object.hasOwn(v, key)) continue;
      let item: unknown = (v as Record<string, unknown>)[key];
      if (
        typeof item === "object" && item !== null &&
        typeof (item as { toJSON?: unknown }).toJSON === "function" &&
        !isBytes(item)
      ) item = toJSONOf(item, key);
      if (typeof item === "number") {
        if (item - item !== 0) return true;
      } else if (typeof item === "object" && item !== null) {
        stack.push(item);
      }
    }
  }
  return false;
}

/**
 * The reason for the first NaN or infinity in `value` (in the order
 * `JSON.stringify` writes), with its path: the walk of
 * {@linkcode holdsNonFinite}, depth first, once one was found. Iterative.
 */
function describe(value: unknown): string | undefined {
  const stack: [unknown, string, string | number][] = [[value, "", ""]];
  while (stack.length > 0) {
    let [v, path, key] = stack.pop()!;
    if (typeof v === "object" && v !== null) {
      if (isBytes(v)) continue;
      if (typeof (v as { toJSON?: unknown }).toJSON === "function") {
        // (Its object is walked below, its own toJSON not called.)
        v = toJSONOf(v, key);
        if (typeof v === "object" && v !== null && isBytes(v)) continue;
      } else if (v instanceof Number) v = v.valueOf();
    }
    if (typeof v === "number") {
      if (v - v === 0) continue;
      // Shortened as a too deep path is: 100,000 levels wrote 300 KB.
      return `${shortenPath(path) || "the message"} is ${v} (${
        v === v ? INFINITY_HINT : NAN_HINT
      })`;
    }
    if (typeof v !== "object" || v === null) continue;
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) {
        stack.push([v[i], `${path}[${i}]`, i]);
      }
      continue;
    }
    const keys = Object.keys(v);
    for (let i = keys.length - 1; i >= 0; i--) {
      const k = keys[i]!;
      stack.push([
        (v as Record<string, unknown>)[k],
        path === "" ? k : `${path}.${k}`,
        k,
      ]);
    }
  }
  return undefined;
}

const DATE_TO_JSON = Date.prototype.toJSON;

const NAN_HINT =
  "JSON has no NaN or infinities: it would arrive as None; send null, or a string";
const INFINITY_HINT =
  "JSON has no NaN or infinities, and a number literal beyond ±1.8e308 such as 1e400 reads as one: it would arrive as None; send null, or a string";
