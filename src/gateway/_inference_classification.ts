/**
 * The Open Inference Protocol's classification extension: an output asked
 * for with `"parameters": {"classification": n}` is answered as its top `n`
 * classes, a BYTES tensor of `"<score>:<index>"` strings (with
 * `":<label>"` when the model declares the output's `labels`), highest
 * score first, ties by the lower index. A tensor of rank 0 or 1 is one row
 * (shape `[k]`); of rank 2 or more, its first dimension is the batch and
 * the rest of each row its classes (shape `[batch, k]`), `k` being `n` or
 * the number of classes when fewer. The scores read as Triton prints them
 * (C++'s `std::to_string`): integers as they are, floats with six decimals
 * (`%f`). docs/gateway.md, "Classification extension".
 *
 * @module
 */
import { halfToNumber, numberToHalf } from "./_inference_binary.ts";
import type { Datatype, FlatTensor } from "./_inference_tensors.ts";

/** The datatypes whose elements are scores. */
const NUMERIC: ReadonlySet<string> = new Set([
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
]);

/** Whether a datatype's elements can be ranked as classes' scores. */
export function isScoreDatatype(datatype: string): boolean {
  return NUMERIC.has(datatype);
}

/**
 * The labels an output declares (`{"type": "array", ..., "labels": [...]}`
 * in the model's `outputs`), when it declares some.
 */
export function declaredLabels(
  declared: unknown,
): readonly unknown[] | undefined {
  if (typeof declared !== "object" || declared === null) return undefined;
  const labels = (declared as Record<string, unknown>).labels;
  return Array.isArray(labels) ? labels : undefined;
}

/**
 * A score as C's `printf("%f")` writes it (what Triton's `std::to_string`
 * of a float gives): six decimals, never an exponent; `inf`, `-inf`, `nan`.
 */
export function formatFloatScore(value: number): string {
  if (Number.isNaN(value)) return "nan";
  if (value === Infinity) return "inf";
  if (value === -Infinity) return "-inf";
  if (Object.is(value, -0)) return "-0.000000";
  // toFixed switches to an exponent from 1e21: such a double is an integer.
  if (Math.abs(value) >= 1e21) return `${BigInt(value)}.000000`;
  const fixed = value.toFixed(6);
  // An exact tie at the sixth decimal (a value with seven, the last a 5:
  // exactly the odd multiples of 1/128, 1/128 = 0.0078125 itself, a uniform
  // score over 128 classes): toFixed rounds it away from zero, C to even.
  const t = value * 128;
  if (!Number.isInteger(t) || t % 2 === 0) return fixed;
  const seven = value.toFixed(7);
  return (seven.charCodeAt(seven.length - 2) - 48) % 2 === 0
    ? seven.slice(0, -1)
    : fixed;
}

/** How a score of the datatype (as {@linkcode heldScores} holds it) is written. */
function scoreFormat(datatype: string): (v: unknown) => string {
  if (datatype === "FP16" || datatype === "FP32" || datatype === "FP64") {
    return (v) => formatFloatScore(Number(v));
  }
  // Integers (numbers, or BigInts beyond 2^53) as they are.
  return (v) => String(v);
}

/**
 * The scores as the datatype holds them, as Triton ranks and writes them:
 * an FP32 output's values rounded to float32, an FP16 one's to half
 * precision (65519 is 65504, 0.1 is 0.0999755859375; two that round to one
 * value tie), others as they are.
 */
function heldScores(
  data: readonly unknown[],
  datatype: string,
): readonly unknown[] {
  if (datatype === "FP32") return data.map((v) => Math.fround(Number(v)));
  if (datatype === "FP16") {
    return data.map((v) => {
      const x = Number(v);
      // Elements past the half range are refused before (and NaN stays).
      return Math.abs(x) < 65520 ? halfToNumber(numberToHalf(x)) : x;
    });
  }
  return data;
}

/** `a` ranks before `b`: a higher score; NaN after every number. */
function higher(a: unknown, b: unknown): boolean {
  // Numbers and BigInts compare with each other exactly.
  return (a as number) > (b as number) ||
    (Number.isNaN(b) && !Number.isNaN(a));
}

/**
 * The indices of the top `k` of `row` (`row[start]` to `row[start + count - 1]`,
 * relative to `start`), best first, ties by the lower index. A bounded heap
 * when `k` is small beside `count` (O(count log k)), else a sort.
 */
function topIndices(
  row: readonly unknown[],
  start: number,
  count: number,
  k: number,
): Uint32Array {
  // Plain numbers (the usual row): their keys in a typed array compare
  // several times faster than through `higher`, in the sort and the heap.
  let keys: Float64Array | undefined = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const v = row[start + i];
    if (typeof v !== "number" || Number.isNaN(v)) {
      keys = undefined;
      break;
    }
    keys[i] = v;
  }
  // i ranks before j.
  const before = keys === undefined
    ? (i: number, j: number): boolean => {
      const a = row[start + i], b = row[start + j];
      if (higher(a, b)) return true;
      if (higher(b, a)) return false;
      return i < j;
    }
    : (i: number, j: number): boolean =>
      keys[i]! > keys[j]! || (keys[i] === keys[j] && i < j);
  if (k * 8 >= count) {
    const order = new Uint32Array(count);
    for (let i = 0; i < count; i++) order[i] = i;
    if (keys !== undefined) order.sort((i, j) => keys[j]! - keys[i]! || i - j);
    else order.sort((i, j) => before(i, j) ? -1 : before(j, i) ? 1 : 0);
    return order.subarray(0, k);
  }
  // A min-heap (the worst of the best k at its root).
  const heap = new Uint32Array(k);
  let size = 0;
  const down = (at: number): void => {
    for (;;) {
      const l = 2 * at + 1, r = l + 1;
      let worst = at;
      if (l < size && before(heap[worst]!, heap[l]!)) worst = l;
      if (r < size && before(heap[worst]!, heap[r]!)) worst = r;
      if (worst === at) return;
      [heap[at], heap[worst]] = [heap[worst]!, heap[at]!];
      at = worst;
    }
  };
  for (let i = 0; i < count; i++) {
    if (size < k) {
      heap[size] = i;
      let at = size++;
      while (at > 0) {
        const parent = (at - 1) >> 1;
        if (!before(heap[parent]!, heap[at]!)) break;
        [heap[at], heap[parent]] = [heap[parent]!, heap[at]!];
        at = parent;
      }
    } else if (before(i, heap[0]!)) {
      heap[0] = i;
      down(0);
    }
  }
  return heap.sort((i, j) => before(i, j) ? -1 : 1);
}

/**
 * The most classes the classifications of one response answer, over its
 * outputs and their rows. Each is a string the gateway's thread writes (and
 * encodes, as binary data): about 1-3 us apiece, so that a model answering
 * 10^6 classes, asked for all of them, held the thread for 2.5-4 s. At
 * most, about 0.1-0.2 s (docs/gateway.md, "Classification extension").
 */
export const MAX_CLASSIFIED = 65536;

/**
 * How many classes the classification of `tensor` answers, `n` per row
 * (all of a row's when fewer): what {@linkcode MAX_CLASSIFIED} counts.
 */
export function classifiedCount(tensor: FlatTensor, n: number): number {
  const rows = tensor.shape.length >= 2 ? tensor.shape[0]! : 1;
  const classes = rows === 0 ? 0 : tensor.data.length / rows;
  return rows * Math.min(n, classes);
}

/**
 * The classification of a tensor: per row, its top `n` classes as
 * `"<score>:<index>[:<label>]"` strings, in a BYTES tensor. `datatype`
 * must be numeric ({@linkcode isScoreDatatype}).
 */
export function classify(
  tensor: FlatTensor,
  datatype: Datatype,
  n: number,
  labels: readonly unknown[] | undefined,
): FlatTensor {
  const { shape } = tensor;
  const data = heldScores(tensor.data, datatype);
  const rows = shape.length >= 2 ? shape[0]! : 1;
  const classes = rows === 0 ? 0 : data.length / rows;
  const k = Math.min(n, classes);
  const format = scoreFormat(datatype);
  const out: string[] = new Array(rows * k);
  let at = 0;
  for (let r = 0; r < rows; r++) {
    const start = r * classes;
    for (const i of topIndices(data, start, classes, k)) {
      const label = labels?.[i];
      out[at++] = typeof label === "string"
        ? `${format(data[start + i])}:${i}:${label}`
        : `${format(data[start + i])}:${i}`;
    }
  }
  return { shape: shape.length >= 2 ? [rows, k] : [k], data: out };
}
