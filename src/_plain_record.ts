/**
 * Internals: a valibot record schema that takes only plain JSON objects.
 *
 * @module
 */
import * as v from "valibot";

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * `v.record(v.string(), value, message)` refusing arrays (and `null`) with
 * `message`: valibot's `record` takes an array for an object and turns
 * `[1]` into `{"0": 1}`, so `"options": [1]` would pass silently.
 *
 * @example
 * ```ts
 * import * as v from "valibot";
 * import { plainRecord } from "./_plain_record.ts";
 * const schema = plainRecord(v.unknown(), "expected an object");
 * console.log(v.safeParse(schema, { a: 1 }).success); // true
 * console.log(v.safeParse(schema, [1]).issues?.[0].message); // "expected an object"
 * ```
 */
export function plainRecord<T extends v.GenericSchema>(
  value: T,
  message: string,
): v.GenericSchema<unknown, Record<string, v.InferOutput<T>>> {
  return v.pipe(
    v.custom<Record<string, unknown>>(isPlainObject, message),
    v.record(v.string(), value, message),
  ) as unknown as v.GenericSchema<unknown, Record<string, v.InferOutput<T>>>;
}
