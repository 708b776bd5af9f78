/**
 * Triton's binary tensor data extension of the Open Inference Protocol:
 * tensor elements as raw little-endian bytes after the JSON header of a
 * request or response (BOOL one byte, numbers their native size, BYTES each
 * a 4-byte length then the bytes). What `tritonclient.http` sends for
 * numpy arrays by default.
 *
 * @module
 */
import { type Datatype, ELEMENT_SIZE } from "./_inference_tensors.ts";

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const ENCODER = new TextEncoder();

/**
 * The elements of a binary tensor of `count` elements: numbers (64-bit
 * integers beyond ±2^53 as `BigInt`s), booleans, and for BYTES a string
 * where the element is UTF-8, else its bytes. A string naming the problem
 * when the bytes do not hold `count` elements of `datatype` exactly, or
 * hold what JSON cannot carry to the model (NaN, infinities, a BOOL byte
 * other than 0 and 1).
 */
export function decodeBinaryTensor(
  bytes: Uint8Array,
  datatype: Datatype,
  count: number,
): unknown[] | string {
  if (datatype === "BYTES") return decodeBytesElements(bytes, count);
  const size = ELEMENT_SIZE[datatype];
  if (bytes.byteLength !== size * count) {
    return `has ${bytes.byteLength} bytes of binary data, and ${count} elements of ${datatype} take ${
      size * count
    }`;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: unknown[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const at = i * size;
    let v: number | bigint | boolean;
    switch (datatype) {
      case "BOOL": {
        const b = view.getUint8(at);
        if (b > 1) return `element ${i} is the byte ${b}, not a BOOL (0 or 1)`;
        v = b === 1;
        break;
      }
      case "UINT8":
        v = view.getUint8(at);
        break;
      case "INT8":
        v = view.getInt8(at);
        break;
      case "UINT16":
        v = view.getUint16(at, true);
        break;
      case "INT16":
        v = view.getInt16(at, true);
        break;
      case "UINT32":
        v = view.getUint32(at, true);
        break;
      case "INT32":
        v = view.getInt32(at, true);
        break;
      case "UINT64":
        v = exact(view.getBigUint64(at, true));
        break;
      case "INT64":
        v = exact(view.getBigInt64(at, true));
        break;
      case "FP16":
        v = halfToNumber(view.getUint16(at, true));
        break;
      case "FP32":
        v = view.getFloat32(at, true);
        break;
      default:
        v = view.getFloat64(at, true);
    }
    if (typeof v === "number" && !Number.isFinite(v)) {
      return `element ${i} is ${v} (JSON, which carries the tensor to the model, has no NaN or infinities)`;
    }
    out[i] = v;
  }
  return out;
}

/** A 64-bit integer as a number when that is exact, else as it is. */
function exact(v: bigint): number | bigint {
  return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
}

/** An IEEE 754 half-precision value. */
export function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction === 0 ? sign * Infinity : NaN;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

function decodeBytesElements(
  bytes: Uint8Array,
  count: number,
): unknown[] | string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: unknown[] = [];
  let at = 0;
  while (at < bytes.byteLength) {
    if (out.length === count) {
      return `has more than its ${count} BYTES elements in its binary data`;
    }
    if (at + 4 > bytes.byteLength) {
      return `has a BYTES element whose 4-byte length is cut short`;
    }
    const length = view.getUint32(at, true);
    at += 4;
    if (at + length > bytes.byteLength) {
      return `has a BYTES element of ${length} bytes past the end of its binary data`;
    }
    const element = bytes.subarray(at, at + length);
    at += length;
    out.push(textOrBytes(element));
  }
  if (out.length !== count) {
    return `has ${out.length} BYTES elements in its binary data, and its shape holds ${count}`;
  }
  return out;
}

/** UTF-8 bytes as their text, other bytes as a copy of them. */
function textOrBytes(element: Uint8Array): string | Uint8Array {
  try {
    return UTF8.decode(element);
  } catch {
    return element.slice();
  }
}

/**
 * BYTES elements, each a 4-byte length and its bytes. Strings are encoded
 * into one buffer (sized for ASCII, grown when one is longer in UTF-8): a
 * `TextEncoder.encode` of each cost several times more (10^6 short strings,
 * a classification's: 1.8 s, now about 0.4 s).
 */
function encodeBytesTensor(data: readonly unknown[]): Uint8Array {
  let size = 0;
  for (const v of data) {
    size += 4 + (v instanceof Uint8Array ? v.byteLength : String(v).length);
  }
  let out = new Uint8Array(size);
  let view = new DataView(out.buffer);
  let at = 0;
  const room = (bytes: number): void => {
    if (at + bytes <= out.byteLength) return;
    const grown = new Uint8Array(Math.max(out.byteLength * 2, at + bytes));
    grown.set(out.subarray(0, at));
    out = grown;
    view = new DataView(out.buffer);
  };
  for (const v of data) {
    if (v instanceof Uint8Array) {
      room(4 + v.byteLength);
      view.setUint32(at, v.byteLength, true);
      out.set(v, at + 4);
      at += 4 + v.byteLength;
      continue;
    }
    const text = String(v);
    room(4 + text.length);
    let { read, written } = ENCODER.encodeInto(text, out.subarray(at + 4));
    if (read! < text.length) {
      // Longer in UTF-8 than in UTF-16 code units: at most 3 bytes each.
      room(4 + 3 * text.length);
      ({ read, written } = ENCODER.encodeInto(text, out.subarray(at + 4)));
    }
    view.setUint32(at, written!, true);
    at += 4 + written!;
  }
  return at === out.byteLength ? out : out.subarray(0, at);
}

/**
 * The binary form of an output's elements (as the gateway's result
 * datatypes come: BOOL, INT64, UINT64, FP64, BYTES).
 */
export function encodeBinaryTensor(
  data: readonly unknown[],
  datatype: Datatype,
): Uint8Array {
  if (datatype === "BYTES") return encodeBytesTensor(data);
  const size = ELEMENT_SIZE[datatype];
  const out = new Uint8Array(size * data.length);
  const view = new DataView(out.buffer);
  data.forEach((v, i) => {
    const at = i * size;
    switch (datatype) {
      case "BOOL":
        view.setUint8(at, v === true ? 1 : 0);
        break;
      // Narrower datatypes: a pyproxy.Tensor's, its elements checked in range.
      case "UINT8":
        view.setUint8(at, Number(v));
        break;
      case "INT8":
        view.setInt8(at, Number(v));
        break;
      case "UINT16":
        view.setUint16(at, Number(v), true);
        break;
      case "INT16":
        view.setInt16(at, Number(v), true);
        break;
      case "UINT32":
        view.setUint32(at, Number(v), true);
        break;
      case "INT32":
        view.setInt32(at, Number(v), true);
        break;
      case "FP16":
        view.setUint16(at, numberToHalf(Number(v)), true);
        break;
      case "FP32":
        view.setFloat32(at, Number(v), true);
        break;
      case "INT64":
        view.setBigInt64(at, BigInt(v as number | bigint), true);
        break;
      case "UINT64":
        view.setBigUint64(at, BigInt(v as number | bigint), true);
        break;
      default:
        view.setFloat64(at, Number(v), true);
    }
  });
  return out;
}

/**
 * The elements of a JSON output of `datatype` as that datatype holds them:
 * FP32 ones rounded to float32 (`0.1` answers `0.10000000149011612`, as
 * Triton does and as the binary form's bytes are), FP16 ones to half
 * precision; the elements of other datatypes as they are (the same array).
 * One pass over the elements, for those two datatypes only.
 */
export function elementsAsDatatype(
  data: readonly unknown[],
  datatype: string,
): readonly unknown[] {
  if (datatype === "FP32") return data.map((v) => Math.fround(Number(v)));
  if (datatype === "FP16") {
    return data.map((v) => halfToNumber(numberToHalf(Number(v))));
  }
  return data;
}

/** Rounds half to even (`y` >= 0). */
function roundEven(y: number): number {
  const f = Math.floor(y);
  const d = y - f;
  return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}

/**
 * The IEEE 754 half-precision bits of a finite `x` below 65520 in
 * magnitude (an FP16 element, checked), rounded to nearest, ties to even,
 * from the double itself (not through a float32: that would round twice).
 */
export function numberToHalf(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  // Subnormals (and zero): multiples of 2^-24; 1024 of them is the
  // smallest normal, whose bits they then are.
  if (a < 2 ** -14) return sign | roundEven(a * 2 ** 24);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  // Exact: a scaling by a power of two.
  let m = roundEven((a / 2 ** e - 1) * 1024);
  if (m === 1024) {
    m = 0;
    e++;
  }
  return sign | ((e + 15) << 10) | m;
}
