/**
 * The messages of the Open Inference Protocol's gRPC service (KServe V2
 * `grpc_predict_v2.proto`, package `inference`, which Triton's
 * `grpc_service.proto` extends), read and written field by field.
 *
 * A `ModelInferRequest` becomes the REST request that means the same (a
 * JSON header and the binary tensor data extension's bytes: every input as
 * binary data, typed `contents` converted to it), so both transports go
 * through one core (`_inference_request.ts`), with its checks and its
 * messages. Its response comes back the same way, every output as binary
 * data, and becomes `raw_output_contents` (when the request sent raw
 * inputs, as `tritonclient.grpc` does) or typed `contents`.
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

/** A request's message that is not what the protocol says (INVALID_ARGUMENT). */
export class GrpcMessageError extends Error {
  /** Stable code. */
  readonly code = "GRPC_INVALID_MESSAGE";
  constructor(message: string) {
    super(message);
    this.name = "GrpcMessageError";
  }
}

const bad = (message: string) =>
  new GrpcMessageError(`Cannot infer: ${message}`);

/** A `ModelInferRequest` as the REST infer call that means the same. */
export interface GrpcInferCall {
  /** `model_name`. */
  name: string;
  /** `model_version`, `""` when not given. */
  version: string;
  /** The REST request's JSON header (`Inference-Header-Content-Length` bytes). */
  header: Uint8Array;
  /** The inputs' bytes after it (binary tensor data extension). */
  binary: Uint8Array[];
  /** Whether the request sent `raw_input_contents` (the response then does). */
  raw: boolean;
}

const ENCODER = new TextEncoder();

/** `JSON.rawJSON` where the runtime has it (an int64 beyond ±2^53 stays exact). */
const rawJson = (JSON as { rawJSON?: (text: string) => unknown }).rawJSON;

/** An `InferParameter` (a oneof: bool 1, int64 2, string 3, double 4, uint64 5). */
function readParameter(r: ProtoReader): unknown {
  let value: unknown = null;
  while (r.more()) {
    const tag = r.tag();
    switch (tag) {
      case 1 << 3 | VARINT:
        value = r.varint() !== 0;
        break;
      case 2 << 3 | VARINT:
        value = r.int64();
        break;
      case 3 << 3 | LEN:
        value = r.string();
        break;
      case 4 << 3 | FIXED64: {
        value = r.fixed64().getFloat64(r.pos - 8, true);
        break;
      }
      case 5 << 3 | VARINT: {
        const v = r.varint64();
        value = v <= 9007199254740991n ? Number(v) : v;
        break;
      }
      default:
        r.skip(tag);
    }
  }
  if (typeof value === "bigint") {
    value = rawJson === undefined ? String(value) : rawJson(String(value));
  }
  return value;
}

/** One entry of a `map<string, InferParameter>` into `into`. */
function readParameterEntry(r: ProtoReader, into: Record<string, unknown>) {
  let key = "";
  let value: unknown = null;
  while (r.more()) {
    const tag = r.tag();
    if (tag === (1 << 3 | LEN)) key = r.string();
    else if (tag === (2 << 3 | LEN)) value = readParameter(r.message());
    else r.skip(tag);
  }
  // defineProperty: a key "__proto__" is a parameter like any other.
  Object.defineProperty(into, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

/** The typed `InferTensorContents` field of each datatype. */
const CONTENTS_FIELD: Readonly<Record<string, number>> = {
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
function contentsAsBinary(
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

/** A name for a message: at most 64 characters of it. */
function quote(text: string): string {
  return JSON.stringify(text.length <= 64 ? text : `${text.slice(0, 64)}...`);
}

/**
 * A `ModelInferRequest` as its REST call. Throws a `GrpcMessageError` (or a
 * `ProtobufError`, both INVALID_ARGUMENT) for bytes that are not one, and
 * for what only gRPC can get wrong (`raw_input_contents` not one per input,
 * `contents` with raw inputs, an integer out of its datatype's range); the
 * rest (shapes, counts, datatypes, outputs) the REST core checks.
 */
export function decodeModelInferRequest(bytes: Uint8Array): GrpcInferCall {
  const r = new ProtoReader(bytes);
  let name = "";
  let version = "";
  let id: string | undefined;
  const parameters: Record<string, unknown> = {};
  const inputs: Array<
    {
      name: string;
      datatype: string;
      shape: Array<number | bigint>;
      contents?: [number, number];
    }
  > = [];
  const outputs: Array<{ name: string; parameters: Record<string, unknown> }> =
    [];
  const raw: Uint8Array[] = [];
  while (r.more()) {
    const tag = r.tag();
    switch (tag) {
      case 1 << 3 | LEN:
        name = r.string();
        break;
      case 2 << 3 | LEN:
        version = r.string();
        break;
      case 3 << 3 | LEN:
        id = r.string();
        break;
      case 4 << 3 | LEN:
        readParameterEntry(r.message(), parameters);
        break;
      case 5 << 3 | LEN:
        inputs.push(readInput(r.message()));
        break;
      case 6 << 3 | LEN: {
        const o = r.message();
        const out = { name: "", parameters: {} as Record<string, unknown> };
        while (o.more()) {
          const t = o.tag();
          if (t === (1 << 3 | LEN)) out.name = o.string();
          else if (t === (2 << 3 | LEN)) {
            readParameterEntry(o.message(), out.parameters);
          } else o.skip(t);
        }
        outputs.push(out);
        break;
      }
      case 7 << 3 | LEN:
        raw.push(r.bytesField());
        break;
      default:
        r.skip(tag);
    }
  }
  const isRaw = raw.length > 0;
  if (isRaw && raw.length !== inputs.length) {
    throw bad(
      `raw_input_contents has ${raw.length} entr${
        raw.length === 1 ? "y" : "ies"
      }, and there are ${inputs.length} inputs (one each, in the order of the inputs)`,
    );
  }
  const binary: Uint8Array[] = [];
  const restInputs = inputs.map((input, i) => {
    const what = `input ${quote(input.name)}`;
    let data: Uint8Array;
    if (isRaw) {
      if (input.contents !== undefined) {
        throw bad(
          `${what} has contents, and the request raw_input_contents (one or the other for all inputs)`,
        );
      }
      data = raw[i]!;
    } else {
      data = input.contents === undefined
        ? new Uint8Array(0)
        : contentsAsBinary(
          new ProtoReader(bytes, input.contents[0], input.contents[1]),
          input.datatype,
          what,
        );
    }
    binary.push(data);
    return {
      name: input.name,
      datatype: input.datatype,
      shape: input.shape,
      parameters: { binary_data_size: data.byteLength },
    };
  });
  // Every output as binary data: its bytes are raw_output_contents, or
  // become typed contents.
  const { binary_data_output: _, ...rest } = parameters;
  const body: Record<string, unknown> = {
    inputs: restInputs,
    parameters: { ...rest, binary_data_output: true },
  };
  if (id !== undefined && id !== "") body.id = id;
  if (outputs.length > 0) {
    body.outputs = outputs.map((o) => ({
      name: o.name,
      parameters: { ...o.parameters, binary_data: true },
    }));
  }
  return {
    name,
    version,
    header: ENCODER.encode(JSON.stringify(body, bigints)),
    binary,
    raw: isRaw,
  };
}

/** A shape's int64 beyond ±2^53, as exact JSON where the runtime can. */
function bigints(_key: string, value: unknown): unknown {
  if (typeof value !== "bigint") return value;
  return rawJson === undefined ? String(value) : rawJson(String(value));
}

function readInput(r: ProtoReader) {
  const input: {
    name: string;
    datatype: string;
    shape: Array<number | bigint>;
    contents?: [number, number];
  } = { name: "", datatype: "", shape: [] };
  while (r.more()) {
    const tag = r.tag();
    switch (tag) {
      case 1 << 3 | LEN:
        input.name = r.string();
        break;
      case 2 << 3 | LEN:
        input.datatype = r.string();
        break;
      case 3 << 3 | LEN: {
        const [from, to] = r.span();
        const inner = new ProtoReader(r.bytes, from, to);
        while (inner.more()) input.shape.push(inner.int64());
        break;
      }
      case 3 << 3 | VARINT:
        input.shape.push(r.int64());
        break;
      case 5 << 3 | LEN:
        // Read once its datatype is known (fields come in any order).
        input.contents = r.span();
        break;
      default:
        // parameters (4): the binary extension's are the transport's here.
        r.skip(tag);
    }
  }
  return input;
}

/** A `ModelReadyRequest` or `ModelMetadataRequest`: name 1, version 2. */
export function decodeModelRef(
  bytes: Uint8Array,
): { name: string; version: string } {
  const r = new ProtoReader(bytes);
  let name = "";
  let version = "";
  while (r.more()) {
    const tag = r.tag();
    if (tag === (1 << 3 | LEN)) name = r.string();
    else if (tag === (2 << 3 | LEN)) version = r.string();
    else r.skip(tag);
  }
  return { name, version };
}

/** A message of one bool field 1 (ServerLive, ServerReady, ModelReady responses). */
export function encodeFlag(value: boolean): Uint8Array {
  return new ProtoWriter(4).bool(1, value).finish();
}

/** A `ServerMetadataResponse` from `/v2`'s JSON. */
export function encodeServerMetadata(
  body: { name?: unknown; version?: unknown; extensions?: unknown },
): Uint8Array {
  const w = new ProtoWriter();
  w.string(1, String(body.name ?? "")).string(2, String(body.version ?? ""));
  for (const e of Array.isArray(body.extensions) ? body.extensions : []) {
    w.bytesField(3, ENCODER.encode(String(e)));
  }
  return w.finish();
}

function packedInt64(values: readonly unknown[]): ProtoWriter {
  const inner = new ProtoWriter(16);
  for (const v of values) inner.varint64(Number(v));
  return inner;
}

function tensorMetadata(t: unknown): ProtoWriter {
  const tensor = t as { name?: unknown; datatype?: unknown; shape?: unknown };
  const w = new ProtoWriter(64);
  w.string(1, String(tensor.name ?? "")).string(
    2,
    String(tensor.datatype ?? ""),
  );
  const shape = Array.isArray(tensor.shape) ? tensor.shape : [];
  if (shape.length > 0) w.message(3, packedInt64(shape));
  return w;
}

/** A `ModelMetadataResponse` from `/v2/models/{name}`'s JSON. */
export function encodeModelMetadata(body: Record<string, unknown>): Uint8Array {
  const w = new ProtoWriter();
  w.string(1, String(body.name ?? ""));
  for (const v of Array.isArray(body.versions) ? body.versions : []) {
    w.bytesField(2, ENCODER.encode(String(v)));
  }
  w.string(3, String(body.platform ?? ""));
  for (const t of Array.isArray(body.inputs) ? body.inputs : []) {
    w.message(4, tensorMetadata(t));
  }
  for (const t of Array.isArray(body.outputs) ? body.outputs : []) {
    w.message(5, tensorMetadata(t));
  }
  return w.finish();
}

/** An output's binary bytes as typed `InferTensorContents`. */
function typedContents(datatype: string, bytes: Uint8Array): ProtoWriter {
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

/** An output of the REST response's JSON header. */
interface RestOutput {
  name?: unknown;
  datatype?: unknown;
  shape?: unknown;
  parameters?: { binary_data_size?: unknown };
}

/**
 * A `ModelInferResponse` from the REST response's JSON header and binary
 * data (every output as binary data): its outputs' bytes as
 * `raw_output_contents` when `raw` (or an output has no typed field:
 * FP16, BF16), else as typed `contents`.
 */
export function encodeModelInferResponse(
  header: {
    model_name?: unknown;
    model_version?: unknown;
    id?: unknown;
    outputs?: unknown;
  },
  binary: Uint8Array,
  raw: boolean,
): Uint8Array {
  const outputs =
    (Array.isArray(header.outputs) ? header.outputs : []) as RestOutput[];
  const w = new ProtoWriter(binary.byteLength + 256);
  w.string(1, String(header.model_name ?? ""));
  if (header.model_version !== undefined) {
    w.string(2, String(header.model_version));
  }
  if (typeof header.id === "string") w.string(3, header.id);
  const asRaw = raw ||
    outputs.some((o) => CONTENTS_FIELD[String(o.datatype)] === undefined);
  const chunks: Uint8Array[] = [];
  let at = 0;
  for (const o of outputs) {
    const size = Number(o.parameters?.binary_data_size ?? 0);
    const bytes = binary.subarray(at, at + size);
    at += size;
    const t = new ProtoWriter(64);
    t.string(1, String(o.name ?? "")).string(2, String(o.datatype ?? ""));
    const shape = Array.isArray(o.shape) ? o.shape : [];
    if (shape.length > 0) t.message(3, packedInt64(shape));
    if (asRaw) chunks.push(bytes);
    else t.message(5, typedContents(String(o.datatype), bytes));
    w.message(5, t);
  }
  for (const c of chunks) w.bytesField(6, c);
  return w.finish();
}
