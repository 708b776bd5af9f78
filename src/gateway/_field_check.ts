/**
 * The check of a body against declared fields with constraints (dict
 * forms): every bad field, with its path from the body down, in declared
 * order. Bodies of models declared with string forms only are checked by
 * `input_schema.ts`, as before.
 *
 * @module
 */
import type { FieldProblem } from "../errors.ts";
import {
  type FieldNode,
  indexFields,
  type PropertyIndex,
} from "./_field_declaration.ts";

/** Problems collected at most: the walk stops there (bounded work on a bad body). */
export const MAX_PROBLEMS = 1000;
/** The longest string a `pattern` is run on (UTF-16 code units). */
export const MAX_PATTERN_INPUT = 10_000;
/**
 * Automaton steps a body's patterns may take in all (a thread on a
 * character: a plain pattern takes a few a character, one of 2000 states up
 * to 2000): about 15 ms of the gateway's thread at most. A string
 * checked once they ran out fails its pattern.
 */
export const MAX_PATTERN_STEPS = 1_000_000;

/** The JSON type of a value, as {@linkcode FieldProblem.received} names it. */
export function jsonType(value: unknown): string {
  if (value === undefined) return "missing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  // A bigint: an integer beyond ±2^53 in a body, kept exact.
  if (typeof value === "bigint") return "number";
  return typeof value === "object" ? "object" : typeof value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `s`, or its first `max - 1` characters and an ellipsis. */
function cut(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/**
 * The first values of an `enum`, for a message: each cut at 40 characters
 * (a value may have 1000; 100 problems quoting 10 of them made a 1 MB
 * answer to a body of a few hundred bytes).
 */
function quote(values: readonly unknown[]): string {
  const shown = values.slice(0, 10).map((v) => cut(JSON.stringify(v), 40));
  if (values.length > 10) shown.push(`and ${values.length - 10} more`);
  return shown.join(", ");
}

/**
 * Code points of `s` (Python's `len()`: a surrogate pair is one, a lone
 * surrogate one too), counting at most `limit + 1` of them.
 */
function codePoints(s: string, limit: number): number {
  // Two units a code point at most: past `2 × limit` units, over the limit.
  if (s.length > 2 * limit + 2) return limit + 1;
  let n = 0;
  for (let i = 0; i < s.length && n <= limit; i++) {
    const c = s.charCodeAt(i);
    // A low surrogate after a high one ends a pair, counted at its start.
    if (c < 0xdc00 || c > 0xdfff || i === 0) n++;
    else {
      const prev = s.charCodeAt(i - 1);
      if (prev < 0xd800 || prev > 0xdbff) n++;
    }
  }
  return n;
}

function isMultiple(value: number | bigint, of: number): boolean {
  if (typeof value === "bigint") {
    if (Number.isInteger(of)) return value % BigInt(of) === 0n;
    value = Number(value);
  }
  if (Number.isInteger(of) && Number.isInteger(value)) return value % of === 0;
  const q = value / of;
  // Decimal steps (0.01) are not exact in binary: q may be off its integer
  // by 1e-9 of a step, or by the rounding of a double that large (not
  // 1e-9 × q: 1e9 + 0.5 passed multipleOf 1).
  return Math.abs(q - Math.round(q)) <=
    Math.max(1e-9, Math.abs(q) * 4 * Number.EPSILON);
}

/** Walks a body, collecting problems into `out` (at most {@linkcode MAX_PROBLEMS}). */
export class FieldChecker {
  readonly out: FieldProblem[] = [];
  /** The walk stopped at {@linkcode MAX_PROBLEMS}: there may be more. */
  truncated = false;
  /** What the body's patterns may still spend. */
  readonly #budget = { steps: MAX_PATTERN_STEPS };

  #add(
    path: Array<string | number>,
    message: string,
    node: FieldNode,
    value: unknown,
  ): void {
    if (this.out.length >= MAX_PROBLEMS) {
      this.truncated = true;
      return;
    }
    this.out.push({
      path: [...path],
      message,
      expected: node.type,
      received: jsonType(value),
    });
  }

  /**
   * Checks the declared `fields` of the object `body`, in declared order.
   * With their `index`, an object with fewer keys than `fields` costs its
   * keys (a body of 200,000 `{}` against 200 optional properties took 3 s).
   */
  fields(
    fields: ReadonlyArray<[string, FieldNode]>,
    body: Record<string, unknown>,
    path: Array<string | number>,
    additional = true,
    index?: PropertyIndex,
  ): void {
    const keys = index === undefined ? undefined : Object.keys(body);
    if (keys !== undefined && keys.length < fields.length) {
      if (this.#sparse(fields, body, path, index!, keys)) {
        if (!additional) this.#extra(body, path, index!, keys);
        return;
      }
    }
    for (const [name, node] of fields) {
      if (this.out.length >= MAX_PROBLEMS) {
        this.truncated = true;
        return;
      }
      path.push(name);
      if (Object.hasOwn(body, name)) this.value(node, body[name], path);
      else if (!node.optional) this.#add(path, "is required", node, undefined);
      path.pop();
    }
    if (!additional) {
      this.#extra(body, path, index ?? indexFields(fields), keys);
    }
  }

  /**
   * The declared fields among `keys`, in declared order; false (nothing
   * checked) when a required one is missing: the full walk names it.
   */
  #sparse(
    fields: ReadonlyArray<[string, FieldNode]>,
    body: Record<string, unknown>,
    path: Array<string | number>,
    index: PropertyIndex,
    keys: string[],
  ): boolean {
    const present: number[] = [];
    let required = 0;
    for (const key of keys) {
      const i = index.positions.get(key);
      if (i === undefined) continue;
      present.push(i);
      if (!fields[i]![1].optional) required++;
    }
    if (required < index.required) return false;
    present.sort((a, b) => a - b);
    for (const i of present) {
      if (this.out.length >= MAX_PROBLEMS) {
        this.truncated = true;
        return true;
      }
      const [name, node] = fields[i]!;
      path.push(name);
      this.value(node, body[name], path);
      path.pop();
    }
    return true;
  }

  /** A problem for each key of `body` that is not a declared field. */
  #extra(
    body: Record<string, unknown>,
    path: Array<string | number>,
    index: PropertyIndex,
    keys = Object.keys(body),
  ): void {
    for (const key of keys) {
      if (index.positions.has(key)) continue;
      if (this.out.length >= MAX_PROBLEMS) {
        this.truncated = true;
        return;
      }
      path.push(key);
      this.out.push({
        path: [...path],
        message: "is not allowed (not a declared field)",
        expected: "missing",
        received: jsonType(body[key]),
      });
      path.pop();
    }
  }

  /** Checks one present value against its field. */
  value(node: FieldNode, value: unknown, path: Array<string | number>): void {
    if (value === null && node.nullable) return;
    if (!this.#type(node, value, path)) return;
    // A set: 0 and -0 are one value, as with includes().
    if (node.enumSet !== undefined && !node.enumSet.has(value)) {
      this.#add(path, `expected one of ${quote(node.enum!)}`, node, value);
      return;
    }
    if (!node.constrained) return;
    switch (node.type) {
      case "number":
      case "integer":
        return this.#number(node, value as number | bigint, path);
      case "string":
        return this.#string(node, value as string, path);
      case "array":
        return this.#array(node, value as unknown[], path);
      case "object": {
        if (node.properties === undefined) return;
        return this.fields(
          node.properties,
          value as Record<string, unknown>,
          path,
          node.additionalProperties ?? true,
          node.propertyIndex,
        );
      }
    }
  }

  /** The type check, with `input_schema.ts`'s messages; false when it fails. */
  #type(
    node: FieldNode,
    value: unknown,
    path: Array<string | number>,
  ): boolean {
    let message: string | undefined;
    switch (node.type) {
      case "number":
        if (typeof value === "bigint") break;
        if (typeof value !== "number") message = "expected a number";
        else if (!Number.isFinite(value)) message = "expected a finite number";
        break;
      case "integer":
        if (typeof value === "bigint") break;
        if (typeof value !== "number" || !Number.isInteger(value)) {
          message = "expected an integer";
        } else if (!Number.isSafeInteger(value)) {
          message =
            "expected an integer (one beyond ±2^53 must be written as digits, without a fraction or exponent)";
        }
        break;
      case "string":
        if (typeof value !== "string") message = "expected a string";
        break;
      case "boolean":
        if (typeof value !== "boolean") message = "expected a boolean";
        break;
      case "array":
        if (!Array.isArray(value)) message = "expected an array";
        break;
      case "object":
        if (!isPlainObject(value)) message = "expected an object";
        break;
    }
    if (message === undefined) return true;
    this.#add(path, message, node, value);
    return false;
  }

  #number(
    node: FieldNode,
    n: number | bigint,
    path: Array<string | number>,
  ): void {
    // A bigint compares exactly with a number bound (`<` does not round it).
    if (node.minimum !== undefined && n < node.minimum) {
      this.#add(path, `expected at least ${node.minimum}`, node, n);
    } else if (
      node.exclusiveMinimum !== undefined && n <= node.exclusiveMinimum
    ) {
      this.#add(path, `expected more than ${node.exclusiveMinimum}`, node, n);
    } else if (node.maximum !== undefined && n > node.maximum) {
      this.#add(path, `expected at most ${node.maximum}`, node, n);
    } else if (
      node.exclusiveMaximum !== undefined && n >= node.exclusiveMaximum
    ) {
      this.#add(path, `expected less than ${node.exclusiveMaximum}`, node, n);
    } else if (
      node.multipleOf !== undefined && !isMultiple(n, node.multipleOf)
    ) {
      this.#add(path, `expected a multiple of ${node.multipleOf}`, node, n);
    }
  }

  #string(node: FieldNode, s: string, path: Array<string | number>): void {
    if (node.minLength !== undefined || node.maxLength !== undefined) {
      const limit = Math.max(node.minLength ?? 0, node.maxLength ?? 0);
      const length = codePoints(s, limit);
      if (node.minLength !== undefined && length < node.minLength) {
        this.#add(
          path,
          `expected at least ${node.minLength} character${
            node.minLength === 1 ? "" : "s"
          }`,
          node,
          s,
        );
        return;
      }
      if (node.maxLength !== undefined && length > node.maxLength) {
        this.#add(
          path,
          `expected at most ${node.maxLength} character${
            node.maxLength === 1 ? "" : "s"
          }`,
          node,
          s,
        );
        return;
      }
    }
    if (node.compiledPattern === undefined) return;
    if (s.length > MAX_PATTERN_INPUT) {
      this.#add(
        path,
        `expected at most ${MAX_PATTERN_INPUT} characters (the longest a pattern is checked on)`,
        node,
        s,
      );
    } else {
      const matched = node.compiledPattern.testWithin(s, this.#budget);
      if (matched === undefined) {
        this.#add(
          path,
          `expected fewer characters to check against patterns (a body's patterns may take ${MAX_PATTERN_STEPS} steps)`,
          node,
          s,
        );
      } else if (!matched) {
        this.#add(
          path,
          `expected to match the pattern ${
            cut(JSON.stringify(node.pattern), 200)
          }`,
          node,
          s,
        );
      }
    }
  }

  #array(node: FieldNode, a: unknown[], path: Array<string | number>): void {
    // The length first: a million items against maxItems 10 is one problem, no walk.
    if (node.minItems !== undefined && a.length < node.minItems) {
      this.#add(
        path,
        `expected at least ${node.minItems} item${
          node.minItems === 1 ? "" : "s"
        }`,
        node,
        a,
      );
      return;
    }
    if (node.maxItems !== undefined && a.length > node.maxItems) {
      this.#add(
        path,
        `expected at most ${node.maxItems} item${
          node.maxItems === 1 ? "" : "s"
        }`,
        node,
        a,
      );
      return;
    }
    const items = node.items;
    if (items === undefined) return;
    for (let i = 0; i < a.length; i++) {
      if (this.out.length >= MAX_PROBLEMS) {
        this.truncated = true;
        return;
      }
      path.push(i);
      this.value(items, a[i], path);
      path.pop();
    }
  }
}
