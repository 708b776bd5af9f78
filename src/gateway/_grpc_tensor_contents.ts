/**
 * `InferTensorContents`, the typed form of a tensor's elements in a gRPC
 * infer message, to and from the binary tensor data extension's bytes (the
 * form the REST core reads and writes): a request's typed `contents`
 * become its input's bytes, a response's output bytes become typed
 * `contents` when the request sent no raw inputs.
 *
 * @module
 */
import {
  FIXED32,
  FIXED64,
  LEN,
  ProtobufError,
  ProtoReader,
  ProtoWriter,
  VARINT,
} from "./_protobuf.ts";
import { inferError as bad } from "./_grpc_message_error.ts";

/** The typed `InferTensorContents` field of each datatype. */
export const CONTENTS_FIELD: Readonly<Record<string, number>> = {
  BOOL: 1,
  INT8: 2,
  INT16: 2,
  INT32: 2,
  INT64: 3,
  UINT8: 4,
  UINT16: 4,
  UINT32: 4,
  UINT64: 5,
  FP32: 6,
  FP64: 7,
  BYTES: 8,
};

const FIELD_NAMES = [
  "",
  "bool_contents",
  "int_contents",
  "int64_contents",
  "uint_contents",
  "uint64_contents",
  "fp32_contents",
  "fp64_contents",
  "bytes_contents",
];

/** Each integer datatype's range (but the 64-bit ones, whose field fits). */
const RANGE: Readonly<Record<string, readonly [number, number]>> = {
  INT8: [-128, 127],
  INT16: [-32768, 32767],
  INT32: [-2147483648, 2147483647],
  UINT8: [0, 255],
  UINT16: [0, 65535],
  UINT32: [0, 4294967295],
};

const SIZE: Readonly<Record<string, number>> = {
  BOOL: 1,
  INT8: 1,
  INT16: 2,
  INT32: 4,
  INT64: 8,
  UINT8: 1,
  UINT16: 2,
  UINT32: 4,
  UINT64: 8,
  FP32: 4,
  FP64: 8,
};

/**
 * An input's typed `contents` in the binary extension's form: its elements
 * little-endian (BOOL a byte, BYTES each a 4-byte length then the bytes).
 */
export function contentsAsBinary(
  r: ProtoReader,
  datatype: string,
  what: string,
): Uint8Array {
  const field = CONTENTS_FIELD[datatype];
  if (field === undefined) {
    // FP16, BF16 (no typed field) and unknown ones: the core names the
    // datatype's problem first; an FP16 one is told here.
    if (datatype === "FP16" || datatype === "BF16") {
      throw bad(
        `${what}: ${datatype} has no typed contents field: send it in raw_input_contents`,
      );
    }
    return new Uint8Array(0);
  }
  const numbers: Array<number | bigint> = [];
  const floats: Uint8Array[] = [];
  const strings: Uint8Array[] = [];
  while (r.more()) {
    const tag = r.tag();
    const number = tag >>> 3;
    if (number < 1 || number > 8) {
      r.skip(tag);
      continue;
    }
    if (number !== field) {
      throw bad(
        `${what}: contents has ${
          FIELD_NAMES[number]
        }, and datatype ${datatype} takes ${FIELD_NAMES[field]}`,
      );
    }
    const wire = tag & 7;
    if (number === 8) {
      if (wire !== LEN) {
        throw new ProtobufError(`bytes_contents of wire type ${wire}`);
      }
      strings.push(r.bytesField());
    } else if (number === 6 || number === 7) {
      const width = number === 6 ? 4 : 8;
      if (wire === LEN) {
        const [from, to] = r.span();
        if ((to - from) % width !== 0) {
          throw new ProtobufError(
            `packed ${FIELD_NAMES[number]} of ${to - from} bytes`,
          );
        }
        floats.push(r.bytes.subarray(from, to));
      } else if (wire === (width === 4 ? FIXED32 : FIXED64)) {
        const from = r.pos;
        if (width === 4) r.fixed32();
        else r.fixed64();
        floats.push(r.bytes.subarray(from, from + width));
      } else {throw new ProtobufError(
          `${FIELD_NAMES[number]} of wire type ${wire}`,
        );}
    } else {
      if (wire === LEN) {
        const [from, to] = r.span();
        const inner = new ProtoReader(r.bytes, from, to);
        while (inner.more()) numbers.push(element(inner, number));
      } else if (wire === VARINT) numbers.push(element(r, number));
      else {throw new ProtobufError(
          `${FIELD_NAMES[number]} of wire type ${wire}`,
        );}
    }
  }
  if (field === 8) {
    let size = 0;
    for (const s of strings) size += 4 + s.byteLength;
    const out = new Uint8Array(size);
    const view = new DataView(out.buffer);
    let at = 0;
    for (const s of strings) {
      view.setUint32(at, s.byteLength, true);
      out.set(s, at + 4);
      at += 4 + s.byteLength;
    }
    return out;
  }
  if (field === 6 || field === 7) {
    // Little-endian on the wire as in the binary extension: copied as is.
    if (floats.length === 1) return floats[0]!;
    let size = 0;
    for (const f of floats) size += f.byteLength;
    const out = new Uint8Array(size);
    let at = 0;
    for (const f of floats) {
      out.set(f, at);
      at += f.byteLength;
    }
    return out;
  }
  const size = SIZE[datatype]!;
  const out = new Uint8Array(size * numbers.length);
  const view = new DataView(out.buffer);
  const range = RANGE[datatype];
  for (let i = 0; i < numbers.length; i++) {
    const v = numbers[i]!;
    if (
      range !== undefined &&
      ((v as number) < range[0] || (v as number) > range[1])
    ) {
      throw bad(
        `${what}: ${
          FIELD_NAMES[field]
        }[${i}]: ${v} is out of range of ${datatype}`,
      );
    }
    const at = i * size;
    switch (datatype) {
      case "BOOL":
      case "UINT8":
        view.setUint8(at, v as number);
        break;
      case "INT8":
        view.setInt8(at, v as number);
        break;
      case "INT16":
        view.setInt16(at, v as number, true);
        break;
      case "UINT16":
        view.setUint16(at, v as number, true);
        break;
      case "INT32":
        view.setInt32(at, v as number, true);
        break;
      case "UINT32":
        view.setUint32(at, v as number, true);
        break;
      case "INT64":
        view.setBigInt64(at, v as bigint, true);
        break;
      default:
        view.setBigUint64(at, v as bigint, true);
    }
  }
  return out;
}

/** One element of a varint contents field. */
function element(r: ProtoReader, field: number): number | bigint {
  switch (field) {
    case 1:
      return r.varint() !== 0 ? 1 : 0;
    case 2:
      return r.int32();
    case 3:
      return BigInt.asIntN(64, r.varint64());
    case 4:
      return r.varint();
    default:
      return r.varint64();
  }
}

/** An output's binary bytes as typed `InferTensorContents`. */
export function typedContents(
  datatype: string,
  bytes: Uint8Array,
): ProtoWriter {
  const field = CONTENTS_FIELD[datatype]!;
  const w = new ProtoWriter(bytes.byteLength + 16);
  if (field === 8) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let at = 0; at + 4 <= bytes.byteLength;) {
      const n = view.getUint32(at, true);
      w.bytesField(8, bytes.subarray(at + 4, at + 4 + n));
      at += 4 + n;
    }
    return w;
  }
  if (bytes.byteLength === 0) return w;
  if (field === 1 || field === 6 || field === 7) {
    // BOOL's bytes are its varints (0 or 1); floats are little-endian.
    return w.bytesField(field, bytes);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const size = SIZE[datatype]!;
  const inner = new ProtoWriter(bytes.byteLength * 2 + 8);
  for (let at = 0; at < bytes.byteLength; at += size) {
    switch (datatype) {
      case "INT8":
        inner.varint64(view.getInt8(at));
        break;
      case "INT16":
        inner.varint64(view.getInt16(at, true));
        break;
      case "INT32":
        inner.varint64(view.getInt32(at, true));
        break;
      case "UINT8":
        inner.varint(view.getUint8(at));
        break;
      case "UINT16":
        inner.varint(view.getUint16(at, true));
        break;
      case "UINT32":
        inner.varint(view.getUint32(at, true));
        break;
      case "INT64":
        inner.varint64(view.getBigInt64(at, true));
        break;
      default:
        inner.varint64(view.getBigUint64(at, true));
    }
  }
  return w.message(field, inner);
}
