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
 * above it. Exact for ASCII data without escapes whose long strings are
 * within a factor 6 of the limit; never scans more than about `limit`
 * characters. `Infinity` for values
 * it cannot bound (objects with `toJSON`, bigints): stringify those.
 *
 * @example
 * ```ts
 * import { jsonSizeBound } from "./_json_size.ts";
 * console.log(jsonSizeBound({ a: [1, "xy"] }, 1000)); // 14, the length of {"a":[1,"xy"]}
 * ```
 */
export function jsonSizeBound(value: unknown, limit: number): number {
  return bound(value, limit, 0);
}

function bound(value: unknown, limit: number, acc: number): number {
  switch (typeof value) {
    case "string": {
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
            : bound(item, limit, acc);
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
        acc = bound(item, limit, bound(key, limit, acc) + 2); // colon and comma (or closing brace)
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
