/**
 * A request body that a model's declared `inputs` accept, for the `try:`
 * line `serve` prints and the examples of `/openapi.json`: `{"hello":"world"}`
 * sent to a model that declares `{"x": "number"}` was a 400 ("x: is
 * required"), the first thing a new user saw.
 *
 * @module
 */
import {
  type FieldNode,
  hasDictForm,
  readFields,
} from "./_field_declaration.ts";
import { FieldChecker } from "./_field_check.ts";

const SAMPLES: Record<string, unknown> = {
  number: 1,
  integer: 1,
  string: "text",
  boolean: true,
  array: [],
  object: {},
};

/** Whether `value` passes `node`. */
function passes(node: FieldNode, value: unknown): boolean {
  const checker = new FieldChecker();
  checker.value(node, value, []);
  return checker.out.length === 0;
}

/** The first of `candidates` that passes `node`, else the last. */
function firstPassing(node: FieldNode, candidates: unknown[]): unknown {
  for (const c of candidates) if (passes(node, c)) return c;
  return candidates[candidates.length - 1];
}

function numberCandidates(n: FieldNode): number[] {
  const low = n.minimum ?? n.exclusiveMinimum;
  const high = n.maximum ?? n.exclusiveMaximum;
  const out = [1, 0];
  const m = n.multipleOf;
  if (low !== undefined) {
    out.push(low, Math.floor(low) + 1, Math.ceil(low));
    if (m !== undefined) {
      out.push(Math.ceil(low / m) * m, (Math.floor(low / m) + 1) * m);
    }
  }
  if (high !== undefined) {
    out.push(high, Math.ceil(high) - 1, Math.floor(high));
    if (m !== undefined) {
      out.push(Math.floor(high / m) * m, (Math.ceil(high / m) - 1) * m);
    }
  }
  if (low !== undefined && high !== undefined) out.push((low + high) / 2);
  if (m !== undefined) out.push(m);
  return out;
}

/**
 * Characters an example may take, about: `minItems` and `minLength` go up
 * to 2^53 and nest (1000 arrays of 1000 arrays...); past it, strings and
 * arrays are cut short (that example fails its check: best effort).
 */
const MAX_EXAMPLE = 100_000;

/** What an example may still take, in characters (about). */
interface Budget {
  left: number;
}

function stringCandidates(n: FieldNode, budget: Budget): string[] {
  const min = Math.min(n.minLength ?? 0, Math.max(0, budget.left));
  const out = ["text", "x".repeat(min)];
  const p = n.compiledPattern;
  if (p !== undefined) {
    const s = p.sample(0);
    // An unanchored pattern with a minLength: its sample, padded.
    const pad = "x".repeat(Math.max(0, min - [...s].length));
    out.push(s, p.sample(1), p.sample(min), s + pad, pad + s);
  }
  return out;
}

/** A value that passes `node` (best effort for a pattern with lengths). */
function sampleOf(node: FieldNode, budget: Budget): unknown {
  budget.left--;
  if (node.enum !== undefined) return node.enum[0];
  if (!node.constrained) {
    return Object.hasOwn(SAMPLES, node.type) ? SAMPLES[node.type] : null;
  }
  switch (node.type) {
    case "number":
    case "integer":
      return firstPassing(node, numberCandidates(node));
    case "string": {
      const s = firstPassing(node, stringCandidates(node, budget)) as string;
      budget.left -= s.length;
      return s;
    }
    case "boolean":
      return true;
    case "array": {
      const before = budget.left;
      const item = node.items === undefined
        ? null
        : sampleOf(node.items, budget);
      // Each item takes what the first took.
      const each = Math.max(1, before - budget.left);
      budget.left = before;
      const n = Math.min(node.minItems ?? 0, Math.floor(before / each));
      budget.left -= n * each;
      return new Array(Math.max(0, n)).fill(item);
    }
    case "object":
      return node.properties === undefined
        ? {}
        : sampleFields(node.properties, budget);
    default:
      return null;
  }
}

function sampleFields(
  fields: ReadonlyArray<[string, FieldNode]>,
  budget: Budget,
): Record<string, unknown> {
  // fromEntries: a field named "__proto__" stays a field.
  return Object.fromEntries(
    fields.filter(([, node]) => !node.optional).map((
      [name, node],
    ) => {
      budget.left -= name.length;
      return [name, sampleOf(node, budget)];
    }),
  );
}

/** Fields read from a declaration; `undefined` when one is outside the subset. */
function readOrUndefined(
  inputs: Record<string, unknown>,
): Array<[string, FieldNode]> | undefined {
  try {
    return readFields(inputs);
  } catch {
    return undefined;
  }
}

/**
 * The JSON text of a body that passes `inputs` (every required field with
 * a value of its type and within its constraints, optional ones left out;
 * `"any"` and unknown types get `null`, an `enum` its first value), or
 * `{"hello":"world"}` when the model declares none.
 *
 * @example
 * ```ts
 * import { exampleBody } from "./example_body.ts";
 * console.log(exampleBody({ x: "number", ttl: "number?" })); // {"x":1}
 * console.log(exampleBody({ p: { type: "number", minimum: 2, maximum: 3 } })); // {"p":2}
 * console.log(exampleBody(undefined)); // {"hello":"world"}
 * ```
 */
export function exampleBody(
  inputs: Record<string, unknown> | undefined,
): string {
  if (inputs !== undefined && hasDictForm(inputs)) {
    const fields = readOrUndefined(inputs);
    if (fields !== undefined) {
      return JSON.stringify(sampleFields(fields, { left: MAX_EXAMPLE }));
    }
  }
  const body: Record<string, unknown> = {};
  let declared = false;
  for (const [name, type] of Object.entries(inputs ?? {})) {
    declared = true;
    if (typeof type === "string" && type.endsWith("?")) continue;
    body[name] = typeof type === "string" && Object.hasOwn(SAMPLES, type)
      ? SAMPLES[type]
      : null;
  }
  return JSON.stringify(declared ? body : { hello: "world" });
}
