/**
 * An Open Inference Protocol (KServe V2) inference request, checked and
 * read into the model's `msg`: every input's shape, datatype and elements
 * are checked before the call reaches Python, and its flat data reshaped
 * to nested lists.
 *
 * @module
 */
import { httpError } from "./error_response.ts";
import { decodeBinaryTensor } from "./_inference_binary.ts";
import {
  type Datatype,
  DATATYPES,
  elementCount,
  elementProblem,
  flattenData,
  isDatatype,
  listCount,
  reshape,
  shapeProblem,
} from "./_inference_tensors.ts";

/** An output the request asks for. */
export interface RequestedOutput {
  name: string;
  /** Wanted as binary data (its `binary_data`, else the request's `binary_data_output`). */
  binary: boolean;
  /** Its top classes wanted (the classification extension's `classification`), how many. */
  classification?: number;
}

/** A checked inference request. */
export interface InferenceRequest {
  /** The request's `id`, echoed in the response. */
  id?: string;
  /** Its `parameters`, but the binary extension's. */
  parameters?: Record<string, unknown>;
  /** Each input's elements, flat (row-major), checked against its datatype. */
  inputs: Array<
    { name: string; datatype: Datatype; shape: number[]; data: unknown[] }
  >;
  /** The outputs asked for (`undefined`: all, as `binaryOutput` says). */
  outputs?: RequestedOutput[];
  /** The request's `binary_data_output`: every output as binary data unless one says otherwise. */
  binaryOutput: boolean;
}

/**
 * The most nested lists an input's reshape makes per element (beyond one
 * per dimension): a shape such as [n, 1, 1] makes 2 per element.
 */
const MAX_LISTS_PER_ELEMENT = 2;

const bad = (message: string) =>
  httpError(400, "InvalidRequestError", `Cannot infer: ${message}`);

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x) &&
    !(x instanceof Uint8Array);
}

/** A name for a message: at most 64 characters of it. */
function quote(text: string): string {
  return text.length <= 64
    ? JSON.stringify(text)
    : `${JSON.stringify(text.slice(0, 64))}...`;
}

/**
 * Checks a parsed request body; `binary`: the bytes after its JSON header
 * (the binary tensor data extension), in the order of the inputs that give
 * a `binary_data_size`. Throws a 400 naming the input and the problem.
 */
export function readInferenceRequest(
  body: unknown,
  binary: Uint8Array | undefined,
): InferenceRequest {
  if (!isRecord(body)) {
    throw bad(
      'expected an object {"inputs": [...], "id"?, "parameters"?, "outputs"?}',
    );
  }
  const out: InferenceRequest = { inputs: [], binaryOutput: false };
  // Clients write an optional field they leave empty as null (KServe's
  // Python types serialize their None): null is absent.
  const id = body.id ?? undefined;
  const parameters = body.parameters ?? undefined;
  const outputs = body.outputs ?? undefined;
  if (id !== undefined) {
    if (typeof id !== "string") throw bad("id: expected a string");
    out.id = id;
  }
  if (parameters !== undefined) {
    if (!isRecord(parameters)) {
      throw bad("parameters: expected an object");
    }
    const { binary_data_output: sent, ...rest } = parameters;
    const binaryOutput = sent ?? undefined;
    if (binaryOutput !== undefined && typeof binaryOutput !== "boolean") {
      throw bad("parameters.binary_data_output: expected a boolean");
    }
    out.binaryOutput = binaryOutput === true;
    if (Object.keys(rest).length > 0) out.parameters = rest;
  }
  if (!Array.isArray(body.inputs)) throw bad("inputs: expected an array");
  const names = new Set<string>();
  let offset = 0;
  for (const [i, input] of body.inputs.entries()) {
    if (!isRecord(input)) throw bad(`inputs[${i}]: expected an object`);
    const { name, datatype, shape } = input;
    const data = input.data ?? undefined;
    const parameters = input.parameters ?? undefined;
    if (typeof name !== "string" || name === "") {
      throw bad(`inputs[${i}].name: expected a non-empty string`);
    }
    const what = `input ${quote(name)}`;
    if (names.has(name)) throw bad(`${what} is given twice`);
    names.add(name);
    if (!isDatatype(datatype)) {
      throw bad(
        `${what}: datatype ${
          typeof datatype === "string" ? quote(datatype) : "missing"
        } is not one of ${DATATYPES.join(", ")}`,
      );
    }
    const shapeIssue = shapeProblem(shape);
    if (shapeIssue !== undefined) throw bad(`${what}: shape ${shapeIssue}`);
    const dims = shape as number[];
    const count = elementCount(dims);
    if (parameters !== undefined && !isRecord(parameters)) {
      throw bad(`${what}: parameters: expected an object`);
    }
    const size = parameters?.binary_data_size ?? undefined;
    let flat: unknown[] | string | undefined;
    if (size !== undefined) {
      if (data !== undefined) {
        throw bad(`${what} has both data and parameters.binary_data_size`);
      }
      if (binary === undefined) {
        throw bad(
          `${what}: parameters.binary_data_size without binary data (send the Inference-Header-Content-Length header)`,
        );
      }
      if (
        typeof size !== "number" || !Number.isSafeInteger(size) || size < 0 ||
        offset + size > binary.byteLength
      ) {
        throw bad(
          `${what}: parameters.binary_data_size ${
            JSON.stringify(typeof size === "bigint" ? String(size) : size)
          } is not an integer within the ${
            binary.byteLength - offset
          } bytes of binary data left`,
        );
      }
      // Not more elements than bytes (BYTES: 4 a piece): a shape cannot ask
      // for more than the data holds, whatever its count.
      flat = count > size * (datatype === "BYTES" ? 0.25 : 1) && count > 0
        ? `shape ${JSON.stringify(dims)} holds ${
          count === Infinity ? "more than 2^53" : count
        } elements, more than its ${size} bytes of binary data can`
        : decodeBinaryTensor(
          binary.subarray(offset, offset + size),
          datatype,
          count,
        );
      offset += size;
    } else {
      flat = flattenData(data, dims, count);
      if (typeof flat === "string") throw bad(`${what}: ${flat}`);
      if (flat === undefined) {
        throw bad(
          `${what}: data: expected an array${
            data === undefined ? " (or parameters.binary_data_size)" : ""
          }`,
        );
      }
      if (flat.length !== count) {
        throw bad(
          `${what}: shape ${JSON.stringify(dims)} holds ${
            count === Infinity ? "more than 2^53" : count
          } elements, and data has ${
            flat.length > count ? `more than ${count}` : flat.length
          }`,
        );
      }
      for (let j = 0; j < flat.length; j++) {
        const problem = elementProblem(flat[j], datatype);
        if (problem !== undefined) {
          throw bad(`${what}: data[${j}]: ${problem}`);
        }
      }
    }
    if (typeof flat === "string") throw bad(`${what} ${flat}`);
    // The nested lists are made here and again in Python, each costing
    // more than an element: bounded by the elements (twice: [n, 1, 1]).
    // [1000000000, 0] holds no element but would make a billion empty
    // lists; [200000, 1, ... 1] (64 dimensions), in a body of 400 KB, 12.6
    // million lists (seconds of the gateway's thread, a gigabyte).
    const lists = listCount(dims);
    if (lists > MAX_LISTS_PER_ELEMENT * flat.length + dims.length) {
      throw bad(
        `${what}: shape ${
          JSON.stringify(dims)
        } would make ${lists} nested lists for its ${flat.length} elements (at most ${MAX_LISTS_PER_ELEMENT} per element and one per dimension: leave out dimensions of 1)`,
      );
    }
    out.inputs.push({ name, datatype, shape: dims, data: flat });
  }
  if (binary !== undefined && offset !== binary.byteLength) {
    throw bad(
      `the binary data has ${binary.byteLength} bytes, and the inputs' binary_data_size add up to ${offset}`,
    );
  }
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) throw bad("outputs: expected an array");
    const wanted = new Set<string>();
    out.outputs = outputs.map((o, i) => {
      if (!isRecord(o) || typeof o.name !== "string") {
        throw bad(`outputs[${i}]: expected an object with a name`);
      }
      if (wanted.has(o.name)) {
        throw bad(`output ${quote(o.name)} is asked for twice`);
      }
      wanted.add(o.name);
      const parameters = o.parameters ?? undefined;
      if (parameters !== undefined && !isRecord(parameters)) {
        throw bad(`output ${quote(o.name)}: parameters: expected an object`);
      }
      // Refused rather than ignored: an answer without what a parameter
      // asked for would pass for one with it.
      for (const key of Object.keys(parameters ?? {})) {
        if (
          key === "binary_data" || key === "classification" ||
          parameters![key] == null
        ) continue;
        throw bad(
          `output ${quote(o.name)}: parameter ${
            quote(key)
          } is not supported (an output takes binary_data and classification)`,
        );
      }
      const flag = parameters?.binary_data ?? undefined;
      if (flag !== undefined && typeof flag !== "boolean") {
        throw bad(
          `output ${quote(o.name)}: parameters.binary_data: expected a boolean`,
        );
      }
      const asked: RequestedOutput = {
        name: o.name,
        binary: flag ?? out.binaryOutput,
      };
      const classes = classCount(parameters?.classification, o.name);
      if (classes !== undefined) asked.classification = classes;
      return asked;
    });
  }
  return out;
}

/**
 * An output's `classification` (how many top classes): a positive integer
 * (one beyond 2^53, a BigInt, asks for every class as well).
 */
function classCount(value: unknown, output: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "bigint" && value >= 1n) return Number.MAX_SAFE_INTEGER;
  if (typeof value === "number" && Number.isInteger(value) && value >= 1) {
    return Math.min(value, Number.MAX_SAFE_INTEGER);
  }
  throw bad(
    `output ${
      quote(output)
    }: parameters.classification: expected a positive integer (how many of the top classes to answer), not ${
      typeof value === "string"
        ? quote(value)
        : JSON.stringify(typeof value === "bigint" ? String(value) : value)
          ?.slice(0, 64)
    }`,
  );
}

/** The declared input types that take a single element as it is. */
const SCALAR_TYPES = new Set(["number", "integer", "boolean", "string"]);

/** A declared input's type name ("number?" → "number"), when it has one. */
function declaredType(declared: unknown): string | undefined {
  const type = typeof declared === "string"
    ? declared
    : isRecord(declared) && typeof declared.type === "string"
    ? declared.type
    : undefined;
  return type?.replace(/\?$/, "");
}

/**
 * The model's `msg`: each input by name, its data reshaped to nested lists
 * by its shape (a one-element tensor of an input the model declares a
 * number, integer, boolean or string is that element), and the request's
 * `parameters` under `"parameters"` when it has any (400 when an input has
 * that name too).
 */
export function inferenceMessage(
  request: InferenceRequest,
  declared: Record<string, unknown> | undefined,
): Record<string, unknown> {
  const msg: Record<string, unknown> = {};
  const put = (key: string, value: unknown) =>
    // Not `msg[key] =`: an input named "__proto__" is a key like any other.
    Object.defineProperty(msg, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  for (const { name, shape, data } of request.inputs) {
    const type = declared !== undefined && Object.hasOwn(declared, name)
      ? declaredType(declared[name])
      : undefined;
    const scalar = data.length === 1 && type !== undefined &&
      SCALAR_TYPES.has(type);
    put(name, scalar ? data[0] : reshape(data, shape));
  }
  if (request.parameters !== undefined) {
    if (Object.hasOwn(msg, "parameters")) {
      throw bad(
        'an input is named "parameters", which is where the model receives the request\'s parameters: rename the input or leave the parameters out',
      );
    }
    put("parameters", request.parameters);
  }
  return msg;
}
