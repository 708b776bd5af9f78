/**
 * Internals of the atoms: about how much memory a decoded JSON value holds,
 * so the atom registry can count the results it keeps for replay.
 *
 * @module
 */

/**
 * About the length of `JSON.stringify(value)` in UTF-16 code units (escapes
 * not counted), for a value decoded from JSON; stops walking as soon as the
 * count passes `cap` and returns it then. Recursion is bounded by the value's
 * nesting (a decoded message is at most `MAX_JSON_DEPTH` deep).
 *
 * @example
 * ```ts
 * import { jsonLength } from "./_json_length.ts";
 * console.log(jsonLength({ a: [1, "xy"] }, Infinity)); // 23 (numbers count 8)
 * console.log(jsonLength("x".repeat(100), 10) > 10); // true
 * ```
 */
export function jsonLength(value: unknown, cap: number): number {
  return walk(value, cap, 0);
}

function walk(value: unknown, cap: number, acc: number): number {
  if (typeof value === "string") return acc + value.length + 2;
  if (typeof value !== "object" || value === null) return acc + 8;
  acc += 2;
  if (Array.isArray(value)) {
    for (const item of value) {
      acc = walk(item, cap, acc + 1);
      if (acc > cap) return acc;
    }
    return acc;
  }
  for (const key in value) {
    acc = walk(
      (value as Record<string, unknown>)[key],
      cap,
      acc + key.length + 4,
    );
    if (acc > cap) return acc;
  }
  return acc;
}
