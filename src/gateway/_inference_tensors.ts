/**
 * Tensors of the Open Inference Protocol (KServe V2) as the gateway maps
 * them to a model's `msg` and back: datatypes and their value checks, a
 * shape's element count, the reshape of flat row-major data to nested lists
 * and the flatten (with shape inference) of a model's nested result.
 * Everything here is iterative and linear in the data: the depth of a
 * request is bounded by the body's (`maxJsonDepth`), a result's by the
 * host's check of replies, and neither is recursed on.
 *
 * @module
 */
import { MAX_DEPTH } from "./_field_declaration.ts";

/** The tensor datatypes the gateway takes (the protocol's, without BF16). */
export const DATATYPES = [
  "BOOL",
  "UINT8",
  "UINT16",
  "UINT32",
  "UINT64",
  "INT8",
  "INT16",
  "INT32",
  "INT64",
  "FP16",
  "FP32",
  "FP64",
  "BYTES",
] as const;

/** A tensor datatype. */
export type Datatype = typeof DATATYPES[number];

const KNOWN: ReadonlySet<string> = new Set(DATATYPES);

/** Whether `name` is a datatype the gateway takes. */
export function isDatatype(name: unknown): name is Datatype {
  return typeof name === "string" && KNOWN.has(name);
}

/** Integer datatypes: their inclusive range. */
const INTEGER_RANGE: Readonly<Record<string, readonly [bigint, bigint]>> = {
  INT8: [-(2n ** 7n), 2n ** 7n - 1n],
  INT16: [-(2n ** 15n), 2n ** 15n - 1n],
  INT32: [-(2n ** 31n), 2n ** 31n - 1n],
  INT64: [-(2n ** 63n), 2n ** 63n - 1n],
  UINT8: [0n, 2n ** 8n - 1n],
  UINT16: [0n, 2n ** 16n - 1n],
  UINT32: [0n, 2n ** 32n - 1n],
  UINT64: [0n, 2n ** 64n - 1n],
};

/**
 * Float datatypes: the smallest magnitude that rounds to infinity in them
 * (IEEE 754, to nearest, ties to even): 3.4028235e38, how numpy prints
 * float32's largest value, is that value, not out of range.
 */
const FLOAT_OVERFLOW: Readonly<Record<string, number>> = {
  FP16: 65520,
  FP32: 2 ** 128 - 2 ** 103,
  FP64: Infinity,
};

/** Bytes per element in the binary extension (BYTES: none, length-prefixed). */
export const ELEMENT_SIZE: Readonly<Record<Datatype, number>> = {
  BOOL: 1,
  UINT8: 1,
  INT8: 1,
  UINT16: 2,
  INT16: 2,
  FP16: 2,
  UINT32: 4,
  INT32: 4,
  FP32: 4,
  UINT64: 8,
  INT64: 8,
  FP64: 8,
  BYTES: 0,
};

/** Most dimensions of a tensor (numpy's limit). */
export const MAX_RANK = 64;

/**
 * What is wrong with a tensor element for `datatype`, `undefined` when
 * nothing is. Integers may be `BigInt`s (a request's integers beyond ±2^53
 * are parsed exactly); BYTES elements are strings, or bytes from the binary
 * extension.
 */
export function elementProblem(
  value: unknown,
  datatype: Datatype,
): string | undefined {
  if (datatype === "BOOL") {
    return typeof value === "boolean" ? undefined : `expected a boolean`;
  }
  if (datatype === "BYTES") {
    return typeof value === "string" || value instanceof Uint8Array
      ? undefined
      : "expected a string";
  }
  const range = INTEGER_RANGE[datatype];
  if (range !== undefined) {
    if (typeof value === "bigint") {
      return value < range[0] || value > range[1]
        ? `${value} is out of range of ${datatype}`
        : undefined;
    }
    if (typeof value !== "number" || !Number.isInteger(value)) {
      return "expected an integer";
    }
    // Safe integers compare exactly as numbers; a float past them (1e19,
    // 9223372036854775807.0, which is 2^63) as its exact value: the range's
    // ends as numbers round up to 2^63 and 2^64, which would pass.
    if (!Number.isSafeInteger(value)) {
      return elementProblem(BigInt(value), datatype);
    }
    return value < Number(range[0]) || value > Number(range[1])
      ? `${value} is out of range of ${datatype}`
      : undefined;
  }
  const overflow = FLOAT_OVERFLOW[datatype]!;
  const n = typeof value === "bigint" ? Number(value) : value;
  if (typeof n !== "number") return "expected a number";
  if (!Number.isFinite(n)) return "expected a finite number";
  return Math.abs(n) >= overflow
    ? `${value} is out of range of ${datatype}`
    : undefined;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * What is wrong with `shape` (a list of at most {@linkcode MAX_RANK}
 * integers >= 0), `undefined` when nothing is.
 */
export function shapeProblem(shape: unknown): string | undefined {
  if (!Array.isArray(shape)) return "expected an array of integers >= 0";
  if (shape.length > MAX_RANK) {
    return `has ${shape.length} dimensions, over the limit of ${MAX_RANK}`;
  }
  for (const d of shape) {
    // A BigInt: the gateway's pool reads integers past 2^53 so.
    if (
      typeof d === "bigint"
        ? d > MAX_SAFE
        : Number.isInteger(d) && d > Number.MAX_SAFE_INTEGER
    ) {
      return `has dimension ${d}, beyond 2^53`;
    }
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      return `expected an array of integers >= 0, got ${
        JSON.stringify(typeof d === "bigint" ? String(d) : d) ?? String(d)
      }`;
    }
  }
  return undefined;
}

/** The number of elements of a (valid) shape; `Infinity` past 2^53. */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return Number.isSafeInteger(n) ? n : Infinity;
}

/**
 * How many nested lists the reshape of a (valid) shape makes below the
 * outermost one: bounded by the rank times the elements unless the shape
 * holds a 0 after large dimensions (`[1000000000, 0]`: that many empty
 * lists), which the caller refuses.
 */
export function listCount(shape: readonly number[]): number {
  let lists = 0;
  let prefix = 1;
  for (let k = 0; k < shape.length - 1; k++) {
    prefix *= shape[k]!;
    lists += prefix;
  }
  return lists;
}

/**
 * The elements of `data` in row-major order, without recursion: `data` is
 * flat (no item a list), or nested exactly as `shape` says (every list at
 * depth k has `shape[k]` items, lists down to the last dimension and
 * elements there). A string naming where nested data differs from the
 * shape (`data[1] has 3 items...`); `undefined` when `data` is not an
 * array. Flat data stops once past `expected` elements (the caller reports
 * the count): the work is bounded by the data, never by a shape.
 */
export function flattenData(
  data: unknown,
  shape: readonly number[],
  expected: number = elementCount(shape),
): unknown[] | string | undefined {
  if (!Array.isArray(data)) return undefined;
  const out: unknown[] = [];
  if (data.length === 0 || !Array.isArray(data[0])) {
    for (let j = 0; j < data.length; j++) {
      const item = data[j];
      if (Array.isArray(item)) {
        return `data[${j}] is a list, and data[0] is not (data is flat, or nested exactly as its shape ${
          JSON.stringify(shape)
        })`;
      }
      out.push(item);
      if (out.length > expected) return out;
    }
    return out;
  }
  const rank = shape.length;
  const stack: Array<{ list: readonly unknown[]; at: number }> = [];
  // Where the walk is: data[i][j]... of the lists entered.
  const where = (extra?: number) =>
    "data" + stack.map((s) => `[${s.at - 1}]`).join("") +
    (extra === undefined ? "" : `[${extra}]`);
  const shown = JSON.stringify(shape);
  const enter = (list: readonly unknown[]): string | undefined => {
    const size = shape[stack.length];
    if (list.length !== size) {
      const at = stack.length === 0 ? "data" : where();
      return `${at} has ${list.length} item${
        list.length === 1 ? "" : "s"
      }, and dimension ${stack.length} of shape ${shown} is ${size}`;
    }
    stack.push({ list, at: 0 });
    return undefined;
  };
  if (rank === 0) {
    return `data[0] is a list, and shape [] holds a single element`;
  }
  const first = enter(data);
  if (first !== undefined) return first;
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (top.at >= top.list.length) {
      stack.pop();
      continue;
    }
    const item = top.list[top.at++];
    if (stack.length === rank) {
      if (Array.isArray(item)) {
        return `${where()} is a list, and shape ${shown} has ${rank} dimension${
          rank === 1 ? "" : "s"
        }`;
      }
      out.push(item);
    } else if (!Array.isArray(item)) {
      return `${where()} is not a list, and shape ${shown} has ${rank} dimensions (data is flat, or nested exactly as its shape)`;
    } else {
      const problem = enter(item);
      if (problem !== undefined) return problem;
    }
  }
  return out;
}

/**
 * The nested lists of `shape` holding `flat` in row-major order: `[]` is
 * the single element itself, `[3]` a list of 3, `[2, 3]` two lists of 3.
 * `flat` must hold exactly the shape's element count.
 */
export function reshape(
  flat: readonly unknown[],
  shape: readonly number[],
): unknown {
  const rank = shape.length;
  if (rank === 0) return flat[0];
  // Innermost level first: lists of shape[rank - 1] elements, then lists of
  // shape[rank - 2] of those... Counted by the dimensions before each level
  // (not by division), so that a 0 anywhere gives the right empty lists.
  let level: unknown[] = flat as unknown[];
  for (let k = rank - 1; k >= 0; k--) {
    const size = shape[k]!;
    let lists = 1;
    for (let i = 0; i < k; i++) lists *= shape[i]!;
    const next: unknown[] = new Array(lists);
    let at = 0;
    for (let j = 0; j < lists; j++) {
      next[j] = level.slice(at, at + size);
      at += size;
    }
    level = next;
  }
  return level[0];
}

/** A result value as a tensor: its shape and its elements, row-major. */
export interface FlatTensor {
  shape: number[];
  data: unknown[];
}

/**
 * The shape and flat elements of a model's result value: a scalar is shape
 * `[]`, nested lists give one dimension per level, read from their first
 * items. `undefined` when the lists are ragged (a list of another length
 * than its siblings', or a scalar beside lists).
 */
export function flattenResult(value: unknown): FlatTensor | undefined {
  const shape: number[] = [];
  for (let v = value; Array.isArray(v); v = v[0]) {
    shape.push(v.length);
    if (v.length === 0 || shape.length > MAX_RANK) break;
  }
  if (shape.length > MAX_RANK) return undefined;
  const rank = shape.length;
  if (rank === 0) return { shape, data: [value] };
  const data: unknown[] = [];
  const stack: Array<{ list: readonly unknown[]; at: number }> = [];
  const enter = (list: unknown, depth: number): boolean => {
    if (!Array.isArray(list) || list.length !== shape[depth]) return false;
    stack.push({ list, at: 0 });
    return true;
  };
  if (!enter(value, 0)) return undefined;
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    if (top.at >= top.list.length) {
      stack.pop();
      continue;
    }
    const item = top.list[top.at++];
    if (stack.length === rank) {
      if (Array.isArray(item)) return undefined;
      data.push(item);
    } else if (!enter(item, stack.length)) {
      return undefined;
    }
  }
  return { shape, data };
}

/**
 * The datatype of a result's elements: `declared`'s (the model's
 * `outputs` field: "integer", "number", "boolean", "string", arrays of
 * them, a dict form's `datatype`: {@linkcode declaredTensor}) when given, else
 * from the values: all booleans BOOL, all integers INT64 (UINT64 when one
 * is above 2^63 − 1), numbers FP64, strings or bytes BYTES; an empty tensor
 * FP64. A string naming the problem when the values do not fit.
 */
export function resultDatatype(
  data: readonly unknown[],
  declared: unknown,
): Datatype | string {
  const wanted = declaredTensor(declared)?.datatype;
  let bools = 0;
  let ints = 0;
  let floats = 0;
  let texts = 0;
  let above = false;
  for (const v of data) {
    if (typeof v === "boolean") bools++;
    else if (typeof v === "bigint") {
      ints++;
      if (v > INTEGER_RANGE.INT64![1]) above = true;
    } else if (typeof v === "number") {
      // The gateway's pool reads integers beyond ±2^53 as BigInts: a number
      // past them (1e300) was a float.
      if (Number.isSafeInteger(v)) ints++;
      else floats++;
    } else if (typeof v === "string" || v instanceof Uint8Array) texts++;
    else {
      return `holds ${v === null ? "null" : "an object"}, not a tensor element`;
    }
  }
  const kinds = (bools > 0 ? 1 : 0) + (ints + floats > 0 ? 1 : 0) +
    (texts > 0 ? 1 : 0);
  if (kinds > 1) {
    return "mixes booleans, numbers and strings (a tensor has one datatype)";
  }
  const found: Datatype = bools > 0
    ? "BOOL"
    : texts > 0
    ? "BYTES"
    : floats > 0 || ints === 0
    ? "FP64"
    : above
    ? "UINT64"
    : "INT64";
  if (wanted === undefined) {
    if (found === "UINT64" || found === "INT64") {
      for (const v of data) {
        if (elementProblem(v, found) !== undefined) {
          return `holds ${v}, beyond 64-bit integers`;
        }
      }
    }
    return found;
  }
  if (data.length === 0) return wanted;
  // Integers are numbers too: an output declared "number" is FP64.
  if (wanted === "FP64" && (found === "INT64" || found === "UINT64")) {
    return "FP64";
  }
  for (const v of data) {
    if (elementProblem(v, wanted) !== undefined) {
      return `is declared ${
        typeof declared === "string" ? JSON.stringify(declared) : wanted
      } and holds ${shown(v)}`;
    }
  }
  return wanted;
}

/** An element for a message: at most 64 characters of it. */
function shown(v: unknown): string {
  const text = typeof v === "bigint"
    ? String(v)
    : v instanceof Uint8Array
    ? `${v.byteLength} bytes`
    : JSON.stringify(v) ?? String(v);
  return text.length <= 64 ? text : `${text.slice(0, 64)}...`;
}

/** The datatype of a declared field type, for those that map to one. */
export const DECLARED_DATATYPE: Readonly<Record<string, Datatype>> = {
  integer: "INT64",
  number: "FP64",
  boolean: "BOOL",
  string: "BYTES",
};

/**
 * The tensor a declared field describes (`{name, datatype, shape}` of the
 * `/v2` metadata, without its name): a type name that maps to a datatype,
 * or a dict form's (its `datatype`, when an output gives one); each
 * `"array"` level (`items`) a dimension of unknown size, `-1`. `undefined`
 * for the others (`"object"`, `"any"`, a bare `"array"`). As deep as a
 * declaration nests (dicts down to `MAX_DEPTH`, then a type name: one level
 * more), without recursion.
 */
export function declaredTensor(
  declared: unknown,
): { datatype: Datatype; shape: number[] } | undefined {
  const shape: number[] = [];
  let field = declared;
  for (let depth = 0; depth <= MAX_DEPTH + 1; depth++) {
    const dict = typeof field === "object" && field !== null &&
        !Array.isArray(field)
      ? field as Record<string, unknown>
      : undefined;
    const type = typeof field === "string"
      ? field.replace(/\?$/, "")
      : dict?.type;
    if (type === "array" && dict !== undefined) {
      shape.push(-1);
      field = dict.items;
      continue;
    }
    const datatype = isDatatype(dict?.datatype)
      ? dict.datatype
      : typeof type === "string"
      ? DECLARED_DATATYPE[type]
      : undefined;
    return datatype === undefined ? undefined : { datatype, shape };
  }
  return undefined;
}
