/**
 * The Open Inference Protocol's gRPC infer messages (KServe V2
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
import { FIXED64, LEN, ProtoReader, ProtoWriter, VARINT } from "./_protobuf.ts";
import { inferError as bad } from "./_grpc_message_error.ts";
import {
  CONTENTS_FIELD,
  contentsAsBinary,
  typedContents,
} from "./_grpc_tensor_contents.ts";
import { packedInt64 } from "./_grpc_metadata_messages.ts";

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
  /**
   * Its `triton_enable_empty_final_response` parameter (Triton's, of a
   * stream: the transport's, not passed to the model).
   */
  emptyFinal: boolean;
  /**
   * Its `firstItemTimeout` parameter (pyproxy's, of a stream: ms, the
   * transport's, not passed to the model), as the text the stream route's
   * `?firstItemTimeout=` would be; `undefined` when not given.
   */
  firstItemTimeout?: string;
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
  const {
    binary_data_output: _,
    triton_enable_empty_final_response: emptyFinal,
    firstItemTimeout,
    ...rest
  } = parameters;
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
    emptyFinal: emptyFinal === true,
    // Checked by the route as its query's (a bool or a string that is no
    // integer is its 400).
    ...(firstItemTimeout === undefined
      ? {}
      : { firstItemTimeout: parameterText(firstItemTimeout) }),
  };
}

/** A parameter's value as text (an int64 beyond ±2^53 is `JSON.rawJSON`'s). */
function parameterText(value: unknown): string {
  return typeof value === "object" && value !== null && "rawJSON" in value
    ? String(value.rawJSON)
    : String(value);
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
  parameters: Readonly<Record<string, boolean>> = {},
): Uint8Array {
  const outputs =
    (Array.isArray(header.outputs) ? header.outputs : []) as RestOutput[];
  const w = new ProtoWriter(binary.byteLength + 256);
  w.string(1, String(header.model_name ?? ""));
  if (header.model_version !== undefined) {
    w.string(2, String(header.model_version));
  }
  if (typeof header.id === "string") w.string(3, header.id);
  for (const [key, value] of Object.entries(parameters)) {
    // A map<string, InferParameter> entry: key 1, value 2 (bool_param 1).
    const entry = new ProtoWriter(32).string(1, key);
    entry.message(2, new ProtoWriter(4).tag(1, VARINT).varint(value ? 1 : 0));
    w.message(4, entry);
  }
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
