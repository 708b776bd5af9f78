/**
 * A cheap upper bound of the UTF-8 size of `JSON.stringify(value)`, so the
 * spill-over plugin stringifies only the messages that may be large.
 *
 * @module
 */

import { MAX_JSON_DEPTH } from "../src/_json_check.ts";
import { isBytes } from "../src/_binary.ts";

// A string without these characters encodes as itself between two quotes: one byte per UTF-16 unit.
// deno-lint-ignore no-control-regex
const SPECIAL = /["\\\u0000-\u001f\u007f-\uffff]/;

/**
 * Returns a number >= the byte length of `JSON.stringify(value)` encoded as
 * UTF-8, or stops as soon as the bound passes `limit` and returns a number
 * above it; never scans more than about `limit` characters. A first, coarse
 * walk counts every string at its worst (6 bytes per UTF-16 unit) and every
 * number at 25 characters, without looking at them: when that is within
 * `limit` (the common small message) it is the answer. Otherwise the precise
 * walk follows, exact for ASCII data without escapes whose long strings are
 * within a factor 6 of the limit. `Infinity` for values it cannot bound
 * (objects with `toJSON`, bigints with a `toJSON`): stringify those.
 *
 * Throws a `RangeError` for nesting deeper than `MAX_JSON_DEPTH` (counting
 * from `depth`, the level of `value` in its message) and a `TypeError` for a
 * bigint JSON cannot encode, as far as the walk goes: the caller turns them
 * into a `SerializationError`. A circular value passes the limit or the
 * depth, whichever comes first.
 *
 * @example
 * ```ts
 * import { jsonSizeBound } from "./_json_size.ts";
 * console.log(jsonSizeBound({ a: [1, "xy"] }, 14)); // 14, the length of {"a":[1,"xy"]}
 * console.log(jsonSizeBound({ a: [1, "xy"] }, 1000)); // 53: coarse, and within 1000
 * ```
 */
export function jsonSizeBound(
  value: unknown,
  limit: number,
  depth = 0,
): number {
  const coarse = bound(value, limit, 0, false, depth);
  return coarse <= limit ? coarse : bound(value, limit, 0, true, depth);
}

function bound(
  value: unknown,
  limit: number,
  acc: number,
  precise: boolean,
  depth: number,
): number {
  switch (typeof value) {
    case "string": {
      if (!precise) return acc + value.length * 6 + 2;
      const plain = acc + value.length + 2;
      const worst = acc + value.length * 6 + 2;
      // A long string is scanned only when the answer depends on it: long enough to pass the limit at
      // one byte per unit, or short enough to stay under it at six, it needs no scan.
      if (value.length > 64 && (plain > limit || worst <= limit)) {
        return plain > limit ? plain : worst;
      }
      return SPECIAL.test(value) ? worst : plain;
    }
    case "number":
      // The longest a number prints is 25 characters (-0.0000012345678901234567).
      if (!precise) return acc + 25;
      return acc + (Number.isFinite(value) ? String(value).length : 4);
    case "boolean":
      return acc + (value ? 4 : 5);
    case "object": {
      if (value === null) return acc + 4;
      // Bounds the walk's own recursion too (it overflowed the stack at a few thousand levels).
      if (++depth > MAX_JSON_DEPTH) {
        throw new RangeError(
          `Cannot measure message: nested deeper than ${MAX_JSON_DEPTH} levels`,
        );
      }
      if (isBytes(value)) {
        // Sent as base64 (4 characters per 3 bytes) or raw in a spill file: bounded by the base64.
        return acc + Math.ceil(value.byteLength / 3) * 4 + 2;
      }
      if (typeof (value as { toJSON?: unknown }).toJSON === "function") {
        return Infinity;
      }
      if (Array.isArray(value)) {
        acc += value.length === 0 ? 2 : value.length + 1; // brackets and commas
        for (const item of value) {
          acc = item === undefined || typeof item === "function" ||
              typeof item === "symbol"
            ? acc + 4
            : bound(item, limit, acc, precise, depth);
          if (acc > limit) return acc;
        }
        return acc;
      }
      const start = acc;
      acc += 1;
      for (const key in value) {
        if (!Object.hasOwn(value, key)) continue;
        const item = (value as Record<string, unknown>)[key];
        if (
          item === undefined || typeof item === "function" ||
          typeof item === "symbol"
        ) continue;
        // The key (inlined when coarse: this walk runs on every message), colon and comma (or brace).
        const keyed = precise
          ? bound(key, limit, acc, true, depth)
          : acc + key.length * 6 + 2;
        acc = bound(item, limit, keyed + 2, precise, depth);
        if (acc > limit) return acc;
      }
      return acc === start + 1 ? acc + 1 : acc;
    }
    case "undefined":
    case "function":
    case "symbol":
      return acc;
    case "bigint":
      // Found here, before any spill file or hash thread is started for it.
      if (typeof (value as { toJSON?: unknown }).toJSON === "function") {
        return Infinity;
      }
      throw new TypeError("Do not know how to serialize a BigInt");
    default:
      return Infinity;
  }
}
