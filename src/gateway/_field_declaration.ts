/**
 * A model's declared fields read into one shape: a string form (`"number"`,
 * `"integer?"`) or a dict form with constraints, a small JSON Schema subset
 * (docs/models.md, "Constraints"). The Python server refuses a declaration
 * outside the subset when the model loads (`pyproxy_server/declared.py`);
 * this reads it again on the host, refusing the same (a `TypeError` naming
 * the field and the keyword), so that nothing a declaration says is ever
 * silently left unchecked.
 *
 * @module
 */
import { type CompiledPattern, compilePattern } from "./_pattern.ts";

/** A JSON scalar, as `enum` lists them. */
export type EnumValue = string | number | boolean | null;

/** One declared field, string form or dict form, read. */
export interface FieldNode {
  /** `"number"`, `"integer"`, `"string"`, `"boolean"`, `"array"`, `"object"`, `"any"`, or a string form's unknown type name. */
  type: string;
  /** It may be left out (a trailing `?`, or `"optional": true`). */
  optional: boolean;
  /** `null` passes too (`"nullable": true`). */
  nullable: boolean;
  /** Whether it came from a dict form (a string form is checked as it always was). */
  constrained: boolean;
  description?: string;
  enum?: EnumValue[];
  /** `enum` as a set (a check is one look-up, not up to 256 comparisons). */
  enumSet?: ReadonlySet<unknown>;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  multipleOf?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  compiledPattern?: CompiledPattern;
  items?: FieldNode;
  minItems?: number;
  maxItems?: number;
  /** Declared order. */
  properties?: Array<[string, FieldNode]>;
  /**
   * `properties` by name (their positions) and how many are required:
   * built once, so that an object of a body is checked in time of its own
   * keys, not of every declared property.
   */
  propertyIndex?: PropertyIndex;
  /** `false`: fields not in `properties` are refused. */
  additionalProperties?: boolean;
  /** Declared outputs only: the element type's Open Inference Protocol datatype (`"FP32"`...). */
  datatype?: string;
}

/** Declared fields by name, for {@linkcode FieldNode.propertyIndex}. */
export interface PropertyIndex {
  /** Each field's position in the declared order. */
  positions: ReadonlyMap<string, number>;
  /** Fields that are not optional. */
  required: number;
}

/** The index of `fields` (declared order). */
export function indexFields(
  fields: ReadonlyArray<[string, FieldNode]>,
): PropertyIndex {
  return {
    positions: new Map(fields.map(([name], i) => [name, i])),
    required: fields.filter(([, node]) => !node.optional).length,
  };
}

/** Type names of the string forms (each also with a trailing `?`). */
export const TYPE_NAMES: ReadonlySet<string> = new Set([
  "number",
  "integer",
  "string",
  "boolean",
  "array",
  "object",
  "any",
]);

/** Levels of `items` and `properties` below a top-level field, at most. */
export const MAX_DEPTH = 8;
/** Dict forms in a declaration, with every field inside them, at most. */
export const MAX_CONSTRAINED_FIELDS = 1000;
/** Values of one `enum`, at most. */
export const MAX_ENUM_VALUES = 256;
/** Characters of a `description`, or of an `enum` string, at most. */
export const MAX_TEXT = 1000;
/** Automaton states of a declaration's patterns in all, at most (their memory). */
export const MAX_PATTERN_STATES_TOTAL = 20_000;

const COMMON = ["type", "optional", "nullable", "description", "enum"];
const KEYWORDS: Record<string, string[]> = {
  number: [
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
  ],
  integer: [
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
  ],
  string: ["minLength", "maxLength", "pattern"],
  array: ["items", "minItems", "maxItems"],
  object: ["properties", "additionalProperties"],
  boolean: [],
  any: [],
};

/**
 * The keywords of an output's dict form: declared outputs are not checked
 * (they describe a result), so they take what describes a tensor only.
 */
const OUTPUT_KEYWORDS = [
  "type",
  "optional",
  "nullable",
  "description",
  "items",
  "datatype",
  "labels",
];

/** An output's class labels, at most (the classification extension's). */
export const MAX_LABELS = 1 << 20;

/** The datatypes an output's element type may name, by type. */
export const OUTPUT_DATATYPES: Readonly<Record<string, readonly string[]>> = {
  number: ["FP16", "FP32", "FP64"],
  integer: [
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
  ],
  boolean: ["BOOL"],
  string: ["BYTES"],
};

/**
 * Whether `s` has at most {@linkcode MAX_TEXT} characters, counted as
 * Python's `len()` counts them (code points: an emoji is one, not two).
 */
function shortText(s: string): boolean {
  return s.length <= MAX_TEXT ||
    (s.length <= 2 * MAX_TEXT && [...s].length <= MAX_TEXT);
}

class Reader {
  count = 0;
  states = 0;
  constructor(readonly side: "inputs" | "outputs") {}
  fail(path: string[], what: string): never {
    throw new TypeError(
      `Cannot read declared ${this.side}: ${path.join(".")}: ${what}`,
    );
  }

  field(declared: unknown, path: string[], depth: number, inArray: boolean) {
    if (typeof declared === "string") {
      return this.#stringForm(declared, path, depth, inArray);
    }
    if (
      typeof declared !== "object" || declared === null ||
      Array.isArray(declared)
    ) {
      this.fail(path, "expected a type name or a dict of constraints");
    }
    return this.#dictForm(
      declared as Record<string, unknown>,
      path,
      depth,
      inArray,
    );
  }

  #stringForm(
    t: string,
    path: string[],
    depth: number,
    inArray: boolean,
  ): FieldNode {
    const optional = t.endsWith("?");
    const type = optional ? t.slice(0, -1) : t;
    // A top-level string form is read as it always was (an unknown name
    // checks presence only); inside a dict form, only known names.
    if (depth > 0) {
      this.count++;
      if (!TYPE_NAMES.has(type)) {
        this.fail(path, `unknown type ${JSON.stringify(t)}`);
      }
      if (optional && inArray) {
        this.fail(path, "an array's items cannot be optional");
      }
    }
    return { type, optional, nullable: false, constrained: false };
  }

  #dictForm(
    d: Record<string, unknown>,
    path: string[],
    depth: number,
    inArray: boolean,
  ): FieldNode {
    if (++this.count > MAX_CONSTRAINED_FIELDS) {
      this.fail(
        path,
        `more than ${MAX_CONSTRAINED_FIELDS} constrained fields in the declaration`,
      );
    }
    if (depth > MAX_DEPTH) {
      this.fail(path, `nested deeper than ${MAX_DEPTH} levels`);
    }
    if (this.side === "outputs") {
      return this.#outputForm(d, path, depth, inArray);
    }
    let type: string;
    if (d.type === undefined) {
      if (d.enum === undefined) {
        this.fail(path, "'type' is required (or 'enum')");
      }
      type = "any";
    } else if (typeof d.type !== "string" || !TYPE_NAMES.has(d.type)) {
      this.fail(path, `'type' must be one of ${[...TYPE_NAMES].join(", ")}`);
    } else type = d.type;
    const allowed = [...COMMON, ...KEYWORDS[type]!];
    for (const key of Object.keys(d)) {
      if (!allowed.includes(key)) {
        this.fail(
          path,
          Object.values(KEYWORDS).some((k) => k.includes(key))
            ? `'${key}' does not apply to type "${type}"`
            : `unsupported keyword '${key}'`,
        );
      }
    }
    const node: FieldNode = {
      type,
      optional: this.#flag(d, "optional", path),
      nullable: this.#flag(d, "nullable", path),
      constrained: true,
    };
    if (node.optional && inArray) {
      this.fail(path, "an array's items cannot be optional");
    }
    if (d.description !== undefined) {
      if (
        typeof d.description !== "string" || !shortText(d.description)
      ) {
        this.fail(
          path,
          `'description' must be a string of at most ${MAX_TEXT} characters`,
        );
      }
      node.description = d.description;
    }
    if (d.enum !== undefined) {
      node.enum = this.#enum(d.enum, type, path);
      node.enumSet = new Set(node.enum);
    }
    for (
      const key of [
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
      ] as const
    ) {
      if (d[key] === undefined) continue;
      const n = d[key];
      if (typeof n !== "number" || !Number.isFinite(n)) {
        this.fail(path, `'${key}' must be a finite number`);
      }
      if (Math.abs(n) > Number.MAX_SAFE_INTEGER) {
        this.fail(path, `'${key}' must be within ±2^53`);
      }
      if (key === "multipleOf" && !(n > 0)) {
        this.fail(path, "'multipleOf' must be above 0");
      }
      node[key] = n;
    }
    const low = node.minimum ?? node.exclusiveMinimum;
    const high = node.maximum ?? node.exclusiveMaximum;
    if (
      node.minimum !== undefined && node.exclusiveMinimum !== undefined ||
      node.maximum !== undefined && node.exclusiveMaximum !== undefined
    ) {
      this.fail(
        path,
        "give 'minimum' or 'exclusiveMinimum' (and 'maximum' or 'exclusiveMaximum'), not both",
      );
    }
    if (
      low !== undefined && high !== undefined &&
      (low > high ||
        (low === high &&
          (node.minimum === undefined || node.maximum === undefined)))
    ) {
      this.fail(path, `no number is within the bounds (${low} to ${high})`);
    }
    if (type === "integer" && low !== undefined && high !== undefined) {
      const first = node.minimum !== undefined
        ? Math.ceil(low)
        : Math.floor(low) + 1;
      const last = node.maximum !== undefined
        ? Math.floor(high)
        : Math.ceil(high) - 1;
      if (first > last) {
        this.fail(path, `no integer is within the bounds (${low} to ${high})`);
      }
    }
    for (
      const key of ["minLength", "maxLength", "minItems", "maxItems"] as const
    ) {
      if (d[key] === undefined) continue;
      const n = d[key];
      if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) {
        this.fail(path, `'${key}' must be an integer >= 0`);
      }
      node[key] = n;
    }
    if ((node.minLength ?? 0) > (node.maxLength ?? Infinity)) {
      this.fail(path, "'minLength' is above 'maxLength'");
    }
    if ((node.minItems ?? 0) > (node.maxItems ?? Infinity)) {
      this.fail(path, "'minItems' is above 'maxItems'");
    }
    if (d.pattern !== undefined) {
      if (typeof d.pattern !== "string") {
        this.fail(path, "'pattern' must be a string");
      }
      try {
        node.compiledPattern = compilePattern(d.pattern);
      } catch (err) {
        // Only a pattern outside the subset throws.
        this.fail(
          path,
          `'pattern' ${JSON.stringify(d.pattern)}: ${(err as Error).message}`,
        );
      }
      node.pattern = d.pattern;
      this.states += node.compiledPattern!.states;
      if (this.states > MAX_PATTERN_STATES_TOTAL) {
        this.fail(
          path,
          `'pattern': the declaration's patterns have more than ${MAX_PATTERN_STATES_TOTAL} automaton states in all`,
        );
      }
    }
    if (d.items !== undefined) {
      node.items = this.field(d.items, [...path, "items"], depth + 1, true);
    }
    if (d.properties !== undefined) {
      const props = d.properties;
      if (typeof props !== "object" || props === null || Array.isArray(props)) {
        this.fail(path, "'properties' must be a dict of field name to field");
      }
      node.properties = Object.entries(props).map((
        [name, field],
      ) => [name, this.field(field, [...path, name], depth + 1, false)]);
      node.propertyIndex = indexFields(node.properties);
    }
    if (d.additionalProperties !== undefined) {
      if (typeof d.additionalProperties !== "boolean") {
        this.fail(path, "'additionalProperties' must be true or false");
      }
      node.additionalProperties = d.additionalProperties;
    }
    return node;
  }

  #outputForm(
    d: Record<string, unknown>,
    path: string[],
    depth: number,
    inArray: boolean,
  ): FieldNode {
    if (d.type === undefined) this.fail(path, "'type' is required");
    if (typeof d.type !== "string" || !TYPE_NAMES.has(d.type)) {
      this.fail(path, `'type' must be one of ${[...TYPE_NAMES].join(", ")}`);
    }
    const type = d.type;
    for (const key of Object.keys(d)) {
      if (!OUTPUT_KEYWORDS.includes(key)) {
        this.fail(
          path,
          `'${key}' does not apply to outputs (a result is not checked against its declaration)`,
        );
      }
    }
    const node: FieldNode = {
      type,
      optional: this.#flag(d, "optional", path),
      nullable: this.#flag(d, "nullable", path),
      constrained: true,
    };
    if (node.optional && inArray) {
      this.fail(path, "an array's items cannot be optional");
    }
    if (d.description !== undefined) {
      if (typeof d.description !== "string" || !shortText(d.description)) {
        this.fail(
          path,
          `'description' must be a string of at most ${MAX_TEXT} characters`,
        );
      }
      node.description = d.description;
    }
    if (d.labels !== undefined) {
      if (depth > 0 || type !== "array") {
        this.fail(
          path,
          "'labels' applies to an output of type 'array' (its classes), not to its items",
        );
      }
      const labels = d.labels;
      if (
        !Array.isArray(labels) || labels.length > MAX_LABELS ||
        !labels.every((l) => typeof l === "string" && shortText(l))
      ) {
        this.fail(
          path,
          `'labels' must be a list of at most ${MAX_LABELS} strings of at most ${MAX_TEXT} characters`,
        );
      }
    }
    if (d.datatype !== undefined) {
      const allowed = OUTPUT_DATATYPES[type];
      if (allowed === undefined) {
        this.fail(
          path,
          "'datatype' applies to types number, integer, boolean and string",
        );
      }
      if (typeof d.datatype !== "string" || !allowed.includes(d.datatype)) {
        this.fail(
          path,
          `'datatype' must be one of ${allowed.join(", ")} for type "${type}"`,
        );
      }
      node.datatype = d.datatype;
    }
    if (d.items !== undefined) {
      if (type !== "array") {
        this.fail(path, `'items' does not apply to type "${type}"`);
      }
      node.items = this.field(d.items, [...path, "items"], depth + 1, true);
    }
    return node;
  }

  #flag(d: Record<string, unknown>, key: string, path: string[]): boolean {
    const value = d[key];
    if (value === undefined) return false;
    if (typeof value !== "boolean") {
      this.fail(path, `'${key}' must be true or false`);
    }
    return value;
  }

  #enum(values: unknown, type: string, path: string[]): EnumValue[] {
    if (
      !Array.isArray(values) || values.length === 0 ||
      values.length > MAX_ENUM_VALUES
    ) {
      this.fail(
        path,
        `'enum' must be a list of 1 to ${MAX_ENUM_VALUES} values`,
      );
    }
    for (const value of values) {
      const ok = value === null || typeof value === "boolean" ||
        (typeof value === "string" && shortText(value)) ||
        (typeof value === "number" && Number.isFinite(value) &&
          Math.abs(value) <= Number.MAX_SAFE_INTEGER);
      if (!ok) {
        this.fail(
          path,
          `'enum' values must be strings (at most ${MAX_TEXT} characters), finite numbers within ±2^53, booleans or null`,
        );
      }
      const of = value === null
        ? "null"
        : typeof value === "number"
        ? (Number.isInteger(value) ? "integer" : "number")
        : typeof value;
      const fits = type === "any" || of === "null" || of === type ||
        (type === "number" && of === "integer");
      if (!fits) {
        this.fail(
          path,
          `'enum' value ${JSON.stringify(value)} is not of type "${type}"`,
        );
      }
    }
    return values as EnumValue[];
  }
}

/**
 * Reads declared fields (string forms and dict forms) or throws a
 * `TypeError` naming the field and the keyword. `side` `"outputs"`: dict
 * forms of `type`, `items`, `description`, `optional`, `nullable` and
 * `datatype` only (`pyproxy_server/declared.py`'s `read_outputs`).
 *
 * @example
 * ```ts
 * import { readFields } from "./_field_declaration.ts";
 * const fields = readFields({ age: "integer", p: { type: "number", minimum: 0, maximum: 1 } });
 * console.log(fields.map(([name, f]) => [name, f.type, f.constrained]));
 * // [["age", "integer", false], ["p", "number", true]]
 * ```
 */
export function readFields(
  declared: Record<string, unknown>,
  side: "inputs" | "outputs" = "inputs",
): Array<[string, FieldNode]> {
  const reader = new Reader(side);
  return Object.entries(declared).map((
    [name, field],
  ) => [name, reader.field(field, [name], 0, false)]);
}

/** Whether `declared` has a dict form (else the string forms' fast check applies). */
export function hasDictForm(
  declared: Record<string, unknown> | undefined,
): boolean {
  for (const field of Object.values(declared ?? {})) {
    if (typeof field === "object" && field !== null) return true;
  }
  return false;
}
