/**
 * A model's declared `inputs` or `outputs` (field name → `"number"`,
 * `"integer"`, `"string"`, `"boolean"`, `"array"`, `"object"`, `"any"`,
 * with a trailing `?` for a field that may be left out) as a JSON Schema
 * (2020-12, the dialect of OpenAPI 3.1), for `GET /openapi.json`.
 *
 * It says what `input_schema.ts` checks, no more and no less: declared
 * fields with their types, optional ones left out of `required` (but typed
 * when present: `null` is not a number), other fields allowed.
 *
 * @module
 */

/** A JSON Schema, as plain JSON. */
export type JsonSchema = Record<string, unknown>;

const TYPES = new Set([
  "number",
  "integer",
  "string",
  "boolean",
  "array",
  "object",
]);

/**
 * The schema of one declared type name: `{}` (any JSON value, `null`
 * included) for `"any"` and for names the gateway does not know, which it
 * checks for presence only.
 */
function typeSchema(type: string): JsonSchema {
  return TYPES.has(type) ? { type } : {};
}

/**
 * The object schema of declared fields, or `undefined` when there are none
 * (the gateway then passes any JSON value to the model).
 *
 * @example
 * ```ts
 * import { declaredSchema } from "./_declared_schema.ts";
 * console.log(declaredSchema({ x: "number", ttl: "number?" }));
 * // { type: "object", properties: { x: { type: "number" }, ttl: { type: "number" } }, required: ["x"], additionalProperties: true }
 * ```
 */
export function declaredSchema(
  fields: Record<string, unknown> | undefined,
): JsonSchema | undefined {
  if (fields === undefined) return undefined;
  const properties: Array<[string, JsonSchema]> = [];
  const required: string[] = [];
  for (const [name, declared] of Object.entries(fields)) {
    // A non-string type is checked as "any" (input_schema.ts).
    const type = typeof declared === "string" ? declared : "any";
    const optional = type.endsWith("?");
    properties.push([name, typeSchema(optional ? type.slice(0, -1) : type)]);
    if (!optional) required.push(name);
  }
  return {
    type: "object",
    // fromEntries: a field named "__proto__" stays a field.
    properties: Object.fromEntries(properties),
    ...(required.length > 0 ? { required } : {}),
    additionalProperties: true,
  };
}
