/**
 * `JSON.stringify` as a sequence of pieces, so that a message holding a
 * 100 MB string can be written to a spill file without ever building its
 * 100 MB JSON text. Private to `spillover()`.
 *
 * @module
 */
import { MAX_JSON_DEPTH } from "../src/_json_check.ts";
import { jsonSizeBound } from "./_json_size.ts";
import { NonFiniteNumberError, nonFiniteReason } from "../src/_non_finite.ts";
import {
  bytesOf,
  holdsBytes,
  isBytes,
  type Step,
  toBase64,
} from "../src/_binary.ts";

// Subtrees whose JSON is bounded by this are stringified at once; longer strings are cut in pieces of this size.
const PIECE = 32 * 1024;

/**
 * Yields strings whose concatenation is `JSON.stringify(value)` (for a value
 * it does not return undefined for). Large strings come in pieces of about
 * 32 Ki characters, never split inside a surrogate pair. Throws like
 * `JSON.stringify` on bigints and circular structures, a `RangeError` for
 * nesting deeper than `MAX_JSON_DEPTH`, and a `NonFiniteNumberError` (a
 * `TypeError`) for NaN or an infinity, which `JSON.stringify` writes as
 * `null` (`nonFiniteReason` of the whole value then says where, as a
 * session does). With `segments`, long strings below the root become
 * `null` and are collected with their paths instead.
 *
 * @example
 * ```ts
 * import { jsonPieces } from "./_json_pieces.ts";
 * console.log([...jsonPieces({ a: [1, "x"] })].join("")); // {"a":[1,"x"]}
 * ```
 */
export function* jsonPieces(
  value: unknown,
  segments?: JsonSegments,
): Generator<string, void, void> {
  const resolved = resolve(value, "");
  if (omitted(resolved)) return;
  if (segments !== undefined && segments.minLength <= PIECE) {
    throw new RangeError(
      `Cannot take strings out: minLength must be above ${PIECE}`,
    );
  }
  yield* pieces(
    resolved,
    [],
    segments === undefined
      ? { minLength: Infinity, found: [], path: [], base64: [] }
      : { ...segments, path: [], base64: [] },
  );
}

/** A string {@linkcode jsonPieces} took out of the JSON, and where it was. */
export interface JsonSegment {
  /** Steps from the root: object keys and array indices. */
  at: (string | number)[];
  /** The string, or the bytes (a bytes segment). */
  value: string | Uint8Array;
}

/**
 * Asks {@linkcode jsonPieces} to write `null` instead of each well-formed
 * string of at least `minLength` characters below the root (protocol §8,
 * string segments), and to append it to `found`.
 */
export interface JsonSegments {
  /** Shortest string taken out; above 32 Ki (smaller subtrees are stringified at once). */
  minLength: number;
  /** Filled in the order the strings are met. */
  found: JsonSegment[];
  /**
   * Bytes (`Uint8Array`s...) below the root become `null` and go to `found`
   * too (protocol §8, bytes segments). Without it they are written as
   * base64 strings, and the root object gets `$bytes` naming them.
   */
  bytes?: boolean;
}

interface SegmentWalk extends JsonSegments {
  path: (string | number)[];
  /** Where bytes went as base64 strings: the root's `$bytes`. */
  base64: Step[][];
}

// A `JSON.rawJSON` value (how `integers: "bigint"` writes a BigInt, through
// `withRawIntegers`) is one literal to JSON.stringify, not an object to walk:
// walked, its digits came out as `{"rawJSON":"…"}` once there were more than
// fit in one piece.
const isRawJson = (JSON as { isRawJSON?: (value: unknown) => boolean })
  .isRawJSON;

// Where String.prototype.isWellFormed is missing, any surrogate keeps a string in the JSON.
const SURROGATE = /[\uD800-\uDFFF]/;
function wellFormed(text: string): boolean {
  const native = (text as { isWellFormed?: () => boolean }).isWellFormed;
  return typeof native === "function"
    ? native.call(text)
    : !SURROGATE.test(text);
}

function resolve(value: unknown, key: string): unknown {
  // Bytes are bytes, whatever their toJSON says (a Node Buffer has one).
  if (isBytes(value)) return value;
  if (
    typeof value === "object" && value !== null &&
    typeof (value as { toJSON?: unknown }).toJSON === "function"
  ) {
    value = (value as { toJSON(key: string): unknown }).toJSON(key);
  }
  if (
    value instanceof String || value instanceof Number ||
    value instanceof Boolean
  ) {
    return value.valueOf();
  }
  return value;
}

function omitted(value: unknown): boolean {
  return value === undefined || typeof value === "function" ||
    typeof value === "symbol";
}

function* pieces(
  value: unknown,
  ancestors: object[],
  walk: SegmentWalk,
): Generator<string, void, void> {
  if (isBytes(value)) {
    const bytes = bytesOf(value);
    if (walk.bytes === true && walk.path.length > 0) {
      walk.found.push({ at: walk.path.slice(), value: bytes });
      yield "null";
    } else {
      walk.base64.push(walk.path.slice());
      yield JSON.stringify(toBase64(bytes));
    }
    return;
  }
  if (typeof value === "string") {
    if (
      value.length >= walk.minLength &&
      walk.path.length > 0 && wellFormed(value)
    ) {
      walk.found.push({ at: walk.path.slice(), value });
      yield "null";
      return;
    }
    if (value.length <= PIECE) {
      yield JSON.stringify(value);
      return;
    }
    yield '"';
    let pos = 0;
    while (pos < value.length) {
      let end = Math.min(value.length, pos + PIECE);
      const last = value.charCodeAt(end - 1);
      if (end < value.length && last >= 0xd800 && last <= 0xdbff) end--;
      const quoted = JSON.stringify(value.slice(pos, end));
      yield quoted.slice(1, -1);
      pos = end;
    }
    yield '"';
    return;
  }
  if (
    typeof value !== "object" || value === null || isRawJson?.(value) === true
  ) {
    // Numbers, booleans, null; a bigint throws here as it would in JSON.stringify.
    if (typeof value === "number" && value - value !== 0) {
      throw new NonFiniteNumberError();
    }
    yield JSON.stringify(value);
    return;
  }
  if (ancestors.includes(value)) {
    throw new TypeError("Converting circular structure to JSON");
  }
  if (ancestors.length === 0 && Object.hasOwn(value, "$bytes")) {
    // The receiver would decode the caller's paths (protocol §3, Bytes).
    throw new TypeError(
      "Cannot encode message: '$bytes' is a field of the protocol, not an argument",
    );
  }
  // toJSON of nested objects (Infinity) and big subtrees go piece by piece; the rest in one call.
  if (ancestors.length >= MAX_JSON_DEPTH) {
    throw new RangeError(
      `Cannot encode message: nested deeper than ${MAX_JSON_DEPTH} levels`,
    );
  }
  if (
    ancestors.length > 0 &&
    jsonSizeBound(value, PIECE, ancestors.length) <= PIECE &&
    !holdsBytes(value)
  ) {
    const text = JSON.stringify(value);
    if (nonFiniteReason(value, text) !== undefined) {
      throw new NonFiniteNumberError();
    }
    yield text;
    return;
  }
  ancestors.push(value);
  try {
    if (Array.isArray(value)) {
      yield "[";
      for (let i = 0; i < value.length; i++) {
        if (i > 0) yield ",";
        const item = resolve(value[i], String(i));
        if (omitted(item)) yield "null";
        else {
          walk.path.push(i);
          yield* pieces(item, ancestors, walk);
          walk.path.pop();
        }
      }
      yield "]";
      return;
    }
    let first = true;
    yield "{";
    for (const key of Object.keys(value)) {
      const item = resolve((value as Record<string, unknown>)[key], key);
      if (omitted(item)) continue;
      yield (first ? "" : ",") + JSON.stringify(key) + ":";
      first = false;
      walk.path.push(key);
      yield* pieces(item, ancestors, walk);
      walk.path.pop();
    }
    if (ancestors.length === 1 && walk.base64.length > 0) {
      // The root object: the places of the bytes sent as base64 (protocol §3).
      yield (first ? "" : ",") + '"$bytes":' + JSON.stringify(walk.base64);
    }
    yield "}";
  } finally {
    ancestors.pop();
  }
}
