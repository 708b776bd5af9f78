/**
 * A cheap upper bound of the UTF-8 size of `JSON.stringify(value)`, so the
 * spill-over plugin stringifies only the messages that may be large.
 *
 * @module
 */

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
 * (objects with `toJSON`, bigints): stringify those.
 *
 * @example
 * ```ts
 * import { jsonSizeBound } from "./_json_size.ts";
 * console.log(jsonSizeBound({ a: [1, "xy"] }, 14)); // 14, the length of {"a":[1,"xy"]}
 * console.log(jsonSizeBound({ a: [1, "xy"] }, 1000)); // 53: coarse, and within 1000
 * ```
 */
export function jsonSizeBound(value: unknown, limit: number): number {
  const coarse = bound(value, limit, 0, false);
  return coarse <= limit ? coarse : bound(value, limit, 0, true);
}

function bound(
  value: unknown,
  limit: number,
  acc: number,
  precise: boolean,
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
      if (typeof (value as { toJSON?: unknown }).toJSON === "function") {
        return Infinity;
      }
      if (Array.isArray(value)) {
        acc += value.length === 0 ? 2 : value.length + 1; // brackets and commas
        for (const item of value) {
          acc = item === undefined || typeof item === "function" ||
              typeof item === "symbol"
            ? acc + 4
            : bound(item, limit, acc, precise);
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
        acc = bound(item, limit, bound(key, limit, acc, precise) + 2, precise); // colon and comma (or closing brace)
        if (acc > limit) return acc;
      }
      return acc === start + 1 ? acc + 1 : acc;
    }
    case "undefined":
    case "function":
    case "symbol":
      return acc;
    default:
      return Infinity;
  }
}
