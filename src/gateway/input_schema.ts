/**
 * Request-body validation built from a model's declared `inputs`
 * (protocol §6: field name → `"number"`, `"integer"`, `"string"`,
 * `"boolean"`, `"array"`, `"object"`, `"any"`; with a trailing `?`, as in
 * `"number?"`, the field may be left out).
 *
 * @module
 */
import * as v from "valibot";

/** A valibot schema for an execute body. */
export type InputSchema = v.GenericSchema<unknown, Record<string, unknown>>;

/** Whether `value` is a JSON object (not an array, not `null`). */
export function isPlainObject(
  value: unknown,
): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function fieldSchema(type: string): v.GenericSchema {
  switch (type) {
    // A bigint: an integer beyond ±2^53 in the body, kept exact (docs/gateway.md).
    case "number":
      return v.union([
        v.pipe(
          v.number("expected a number"),
          v.finite("expected a finite number"),
        ),
        v.bigint(),
      ], "expected a number");
    case "integer":
      return v.union([
        v.pipe(
          v.number("expected an integer"),
          v.integer("expected an integer"),
          // An unsafe one here was written with a fraction or an exponent
          // (`12345678901234567890.0`, `1e20`): read as a double, it would
          // reach the model rounded. Integer literals of any size are BigInts.
          // A fraction is the integer check's alone: the pipe runs every
          // check, and both messages would be given for `1.5`.
          v.check(
            (n: number) => !Number.isInteger(n) || Number.isSafeInteger(n),
            "expected an integer (one beyond ±2^53 must be written as digits, without a fraction or exponent)",
          ),
        ),
        v.bigint(),
      ], "expected an integer");
    case "string":
      return v.string("expected a string");
    case "boolean":
      return v.boolean("expected a boolean");
    case "array":
      return v.array(v.unknown(), "expected an array");
    case "object":
      return v.custom<Record<string, unknown>>(
        isPlainObject,
        "expected an object",
      );
    default:
      // "any" and type names we do not know: presence is all we can check.
      return v.custom<unknown>((x) => x !== undefined, "is required");
  }
}

/**
 * Builds the schema of an execute body from declared inputs: a JSON object
 * whose declared fields are present with the declared types (other fields
 * pass through). A type with a trailing `?` (`"number?"`) declares an
 * optional field: it may be left out, but when present (`null` included) it
 * must have the type. Without declared inputs any JSON object is accepted.
 *
 * @example
 * ```ts
 * import * as v from "valibot";
 * import { buildInputSchema } from "./input_schema.ts";
 * const schema = buildInputSchema({ age: "integer", income: "number", ttl: "number?" });
 * console.log(v.safeParse(schema, { age: 40, income: 52000 }).success); // true
 * console.log(v.safeParse(schema, { age: 40, income: 52000, ttl: "x" }).success); // false
 * console.log(v.safeParse(schema, { age: "x" }).success); // false
 * ```
 */
export function buildInputSchema(
  inputs: Record<string, unknown> | undefined,
): InputSchema {
  const entries: Record<string, v.GenericSchema> = {};
  for (const [name, type] of Object.entries(inputs ?? {})) {
    const t = typeof type === "string" ? type : "any";
    entries[name] = t.endsWith("?")
      ? v.optional(fieldSchema(t.slice(0, -1)))
      : fieldSchema(t);
  }
  return v.looseObject(
    entries,
    // A missing declared field is reported by the object schema, with the field in its path.
    (issue) => (issue.path?.length ? "is required" : "expected a JSON object"),
  ) as unknown as InputSchema;
}
