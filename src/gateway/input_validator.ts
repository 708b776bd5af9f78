/**
 * The check of a body against a model's declared `inputs`, as the gateway
 * makes it before a call: for the library too, which does not check them.
 *
 * @module
 */
import * as v from "valibot";
import { type FieldProblem, ValidationError } from "../errors.ts";
import {
  buildInputSchema,
  type InputSchema,
  isPlainObject,
} from "./input_schema.ts";
import {
  type FieldNode,
  hasDictForm,
  readFields,
} from "./_field_declaration.ts";
import { FieldChecker, jsonType } from "./_field_check.ts";

/**
 * Checks bodies against a model's declared `inputs` (protocol §6: field
 * name → `"number"`, `"integer"`, `"string"`, `"boolean"`, `"array"`,
 * `"object"` or `"any"`, with a trailing `?` for a field that may be left
 * out; or a dict of constraints, docs/models.md "Constraints"), as the
 * gateway does before each call: the body must be a JSON object, and its
 * declared fields present with their types and within their constraints
 * (other fields pass). `pool.execute` does not check `inputs`: build one validator per
 * model version (from the description `pool.addModel` returns) and call
 * {@linkcode InputValidator.check} before `execute`.
 *
 * @example Check a body before a call
 * ```ts
 * import { InputValidator } from "@pyproxy/pyproxy";
 * import { ValidationError } from "@pyproxy/pyproxy";
 * // const { inputs } = await pool.addModel("scorer", { file: "scorer.py" });
 * const inputs = { age: "integer", income: "number", note: "string?" };
 * const validator = new InputValidator(inputs);
 * validator.check({ age: 40, income: 52000 }); // passes
 * try {
 *   validator.check({ age: "forty" }, "scorer");
 * } catch (err) {
 *   if (!(err instanceof ValidationError)) throw err;
 *   console.log(err.message);
 *   // "Cannot execute model 'scorer': age: expected an integer; income: is required"
 *   console.log(err.fields.map((f) => f.path.join("."))); // ["age", "income"]
 * }
 * ```
 *
 * @example Constraints
 * ```ts
 * import { InputValidator } from "@pyproxy/pyproxy";
 * const validator = new InputValidator({
 *   p: { type: "number", minimum: 0, maximum: 1 },
 *   mode: { enum: ["fast", "exact"] },
 *   points: { type: "array", items: "number", minItems: 3 },
 * });
 * console.log(validator.problems({ p: 0.5, mode: "fast", points: [1, 2, 3] })); // null
 * console.log(validator.problems({ p: 2, mode: "slow", points: [1, "x", 3] })?.map((f) => `${f.path.join(".")}: ${f.message}`));
 * // ["p: expected at most 1", 'mode: expected one of "fast", "exact"', "points.1: expected a number"]
 * ```
 */
export class InputValidator {
  #schema: InputSchema;
  /** Declared field → its type without the `?`. */
  #types = new Map<string, string>();
  /**
   * Whether a declared name is one every object inherits (`toString`,
   * `constructor`, `__proto__`...): the schema finds a field with `in`, so
   * a body without it would be read as having the inherited value.
   */
  #inherited = false;
  /**
   * The fields, when one has constraints (a dict form): then they are
   * checked by {@linkcode FieldChecker}, else by the valibot schema as
   * before (a model declared with string forms pays nothing new).
   */
  #fields: Array<[string, FieldNode]> | undefined;

  /**
   * Builds the check of `inputs` (a model description's); without
   * `inputs`, any JSON object passes. Throws a `TypeError` naming the field
   * and the keyword when a dict form is outside the supported subset
   * (docs/models.md, "Constraints").
   */
  constructor(inputs: Record<string, unknown> | undefined) {
    if (inputs !== undefined && hasDictForm(inputs)) {
      this.#fields = readFields(inputs);
    }
    this.#schema = buildInputSchema(inputs);
    for (const [name, declared] of Object.entries(inputs ?? {})) {
      // A non-string type is checked as "any" (input_schema.ts).
      const type = typeof declared === "string" ? declared : "any";
      this.#types.set(name, type.endsWith("?") ? type.slice(0, -1) : type);
      if (name in Object.prototype) this.#inherited = true;
    }
  }

  /**
   * `null` when `body` passes, else every bad field in declared order (the
   * body itself, `path: []`, when it is not a JSON object), with paths
   * into nested fields (`["items", 2, "x"]`). As many entries as declared
   * fields at most for string forms; with constraints, at most 1000 (the
   * walk stops there).
   */
  problems(body: unknown): FieldProblem[] | null {
    // valibot's object schemas take arrays for objects.
    if (!isPlainObject(body)) {
      return [{
        path: [],
        message: "expected a JSON object",
        expected: "object",
        received: jsonType(body),
      }];
    }
    if (this.#fields !== undefined) {
      const checker = new FieldChecker();
      checker.fields(this.#fields, body, []);
      return checker.out.length === 0 ? null : checker.out;
    }
    // Only such a model's bodies are copied: the fields of one without a
    // prototype are its own (a "__proto__" key stays a field).
    const result = v.safeParse(
      this.#schema,
      this.#inherited ? Object.assign(Object.create(null), body) : body,
    );
    if (result.success) return null;
    return result.issues.map((issue): FieldProblem => {
      const path = (issue.path ?? []).map((item) =>
        typeof item.key === "number" ? item.key : String(item.key)
      );
      const field = path[0];
      return {
        path,
        message: issue.message,
        expected: typeof field === "string"
          ? this.#types.get(field) ?? "object"
          : "object",
        received: jsonType(issue.input),
      };
    });
  }

  /**
   * Returns when `body` passes; else throws {@linkcode ValidationError},
   * whose message names every bad field (`"Cannot execute model 'scorer':
   * age: expected an integer; income: is required"`; without `model`,
   * `"Cannot validate input: ..."`) and whose `fields` lists them (both
   * stop at {@linkcode ValidationError.MAX_FIELDS}, the message saying how
   * many more there were).
   */
  check(body: unknown, model?: string): void {
    const problems = this.problems(body);
    if (problems === null) return;
    const max = ValidationError.MAX_FIELDS;
    const shown = problems.slice(0, max).map((p) =>
      p.path.length > 0 ? `${p.path.join(".")}: ${p.message}` : p.message
    );
    if (problems.length > max) {
      shown.push(`and ${problems.length - max} more`);
    }
    const action = model === undefined
      ? "Cannot validate input"
      : `Cannot execute model '${model}'`;
    throw new ValidationError(`${action}: ${shown.join("; ")}`, problems);
  }
}

/** Options for {@linkcode InputValidatorCache}. */
export interface InputValidatorCacheOptions {
  /**
   * Models kept at most (least recently built dropped first).
   * @default {1000}
   */
  maxEntries?: number;
}

/**
 * Caches one validator per model name and version, so a body is checked
 * without rebuilding its schema, and a model update builds a new one.
 * Internal to the gateway.
 *
 * @example
 * ```ts
 * import { InputValidatorCache } from "./input_validator.ts";
 * const cache = new InputValidatorCache();
 * const a = cache.get("scorer", 1, { age: "number" });
 * console.log(a === cache.get("scorer", 1, { age: "number" })); // true
 * ```
 */
export class InputValidatorCache {
  #entries = new Map<string, { version: unknown; validator: InputValidator }>();
  #max: number;

  /** Creates an empty cache. */
  constructor(options: InputValidatorCacheOptions = {}) {
    this.#max = options.maxEntries ?? 1000;
  }

  /** The validator for `name` at `version`, built from `inputs` on a miss. */
  get(
    name: string,
    version: unknown,
    inputs: Record<string, unknown> | undefined,
  ): InputValidator {
    const hit = this.#entries.get(name);
    if (hit && hit.version === version) return hit.validator;
    const validator = new InputValidator(inputs);
    this.#entries.delete(name);
    if (this.#entries.size >= this.#max) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(name, { version, validator });
    return validator;
  }

  /** Forgets a model (removed or replaced). */
  delete(name: string): void {
    this.#entries.delete(name);
  }
}
