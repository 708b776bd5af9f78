/**
 * A model's declared `inputs` or `outputs` (field name → `"number"`,
 * `"integer"`, `"string"`, `"boolean"`, `"array"`, `"object"`, `"any"`,
 * with a trailing `?` for a field that may be left out) as a JSON Schema
 * (2020-12, the dialect of OpenAPI 3.1), for `GET /openapi.json`.
 *
 * It says what `input_schema.ts` checks, no more and no less: declared
 * fields with their types, optional ones left out of `required` (but typed
 * when present: `null` is not a number), other fields allowed; and the
 * constraints of dict forms (`_field_check.ts`), which are JSON Schema
 * keywords already.
 *
 * @module
 */
import {
  type FieldNode,
  hasDictForm,
  readFields,
} from "./_field_declaration.ts";

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

const KEYWORDS = [
  "description",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "multipleOf",
  "minLength",
  "maxLength",
  "pattern",
  "minItems",
  "maxItems",
] as const;

/** The JSON Schema of one field read by `readFields`. */
function nodeSchema(node: FieldNode): JsonSchema {
  if (!node.constrained) return typeSchema(node.type);
  const schema: JsonSchema = {};
  if (node.type !== "any") {
    schema.type = node.nullable ? [node.type, "null"] : node.type;
  }
  if (node.enum !== undefined) {
    schema.enum = node.nullable && !node.enum.includes(null)
      ? [...node.enum, null]
      : node.enum;
  }
  for (const key of KEYWORDS) {
    if (node[key] !== undefined) schema[key] = node[key];
  }
  if (node.items !== undefined) schema.items = nodeSchema(node.items);
  if (node.properties !== undefined) {
    // The properties and required, not the type: a nullable object's stays
    // ["object", "null"].
    const { properties, required } = objectSchema(node.properties);
    schema.properties = properties;
    if (required !== undefined) schema.required = required;
  }
  if (node.additionalProperties === false) schema.additionalProperties = false;
  return schema;
}

function objectSchema(fields: ReadonlyArray<[string, FieldNode]>): JsonSchema {
  const required = fields.filter(([, node]) => !node.optional).map((
    [name],
  ) => name);
  return {
    type: "object",
    // fromEntries: a field named "__proto__" stays a field.
    properties: Object.fromEntries(
      fields.map(([name, node]) => [name, nodeSchema(node)]),
    ),
    ...(required.length > 0 ? { required } : {}),
    additionalProperties: true,
  };
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
  side: "inputs" | "outputs" = "inputs",
): JsonSchema | undefined {
  if (fields === undefined) return undefined;
  if (hasDictForm(fields)) {
    try {
      // An output's `datatype` is the Open Inference Protocol's, not a
      // JSON Schema keyword: its type says what JSON holds.
      return objectSchema(readFields(fields, side));
    } catch {
      // Outside the subset (the Python server refuses it): as before, a
      // dict is "any".
    }
  }
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
