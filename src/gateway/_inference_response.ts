/**
 * An Open Inference Protocol (KServe V2) inference response from a model's
 * result: a dict's entries are the outputs (anything else is one output,
 * `output0`), each one's shape read from its nesting and its datatype from
 * the model's declared `outputs` or from its values, or both as a
 * `pyproxy.Tensor` gives them (`{"datatype", "shape", "data"}`); JSON, or
 * JSON then the outputs' bytes (the binary tensor data extension).
 *
 * @module
 */
import { stringifyJson } from "../_exact_json.ts";
import { elementsAsDatatype, encodeBinaryTensor } from "./_inference_binary.ts";
import {
  classifiedCount,
  classify,
  declaredLabels,
  isScoreDatatype,
  MAX_CLASSIFIED,
} from "./_inference_classification.ts";
import type {
  InferenceRequest,
  RequestedOutput,
} from "./_inference_request.ts";
import {
  type Datatype,
  elementCount,
  elementProblem,
  flattenData,
  flattenResult,
  type FlatTensor,
  isDatatype,
  resultDatatype,
  shapeProblem,
} from "./_inference_tensors.ts";
import { httpError } from "./error_response.ts";

/** The name of the output a result that is not a dict is answered as. */
export const SINGLE_OUTPUT = "output0";

/** The header giving the length of the JSON before the binary tensors. */
export const HEADER_LENGTH = "inference-header-content-length";

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const ENCODER = new TextEncoder();

/** What the response needs to know of the model. */
export interface InferenceModel {
  name: string;
  version: string | undefined;
  /** Its declared outputs (field → type name, or dict form). */
  outputs: Record<string, string | Record<string, unknown>> | undefined;
}

function isDict(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x) &&
    !(x instanceof Uint8Array);
}

const wrong = (model: string, message: string) =>
  httpError(
    500,
    "InvalidModelOutput",
    `Cannot answer inference request: model '${model}' ${message}`,
  );

/**
 * Whether a result value is an explicit tensor (`pyproxy.Tensor`): a dict
 * of exactly `datatype` (a string or null), `shape` and `data`. No model
 * output is a dict otherwise (an object is not a tensor element), and a
 * model's outputs named exactly so, with a string or null `datatype`, are
 * read as one.
 */
function isExplicitTensor(x: Record<string, unknown>): boolean {
  let keys = 0;
  for (const key in x) {
    if (key !== "datatype" && key !== "shape" && key !== "data") return false;
    keys++;
  }
  return keys === 3 && (x.datatype === null || typeof x.datatype === "string");
}

/** An explicit tensor's elements, checked against its shape (a 500 if not). */
function explicitTensor(
  value: Record<string, unknown>,
  model: string,
  what: string,
): FlatTensor {
  const problem = shapeProblem(value.shape);
  if (problem !== undefined) {
    throw wrong(model, `returned a Tensor for ${what} whose shape ${problem}`);
  }
  const shape = value.shape as number[];
  const count = elementCount(shape);
  const data = flattenData(value.data, shape, count);
  if (data === undefined || typeof data === "string") {
    throw wrong(
      model,
      `returned a Tensor for ${what} whose ${data ?? "data is not a list"}`,
    );
  }
  if (data.length !== count) {
    throw wrong(
      model,
      `returned a Tensor for ${what} whose shape ${
        JSON.stringify(shape)
      } holds ${
        count === Infinity ? "more than 2^53" : count
      } elements, and its data ${
        data.length > count ? `more than ${count}` : data.length
      }`,
    );
  }
  return { shape, data };
}

/** A Tensor's datatype when its elements fit it, else the problem. */
function explicitDatatype(data: readonly unknown[], datatype: string): string {
  if (!isDatatype(datatype)) {
    return `is a Tensor of datatype ${
      JSON.stringify(datatype.slice(0, 64))
    }, not one of the protocol's`;
  }
  for (let j = 0; j < data.length; j++) {
    const problem = elementProblem(data[j], datatype);
    if (problem !== undefined) {
      return `is a Tensor of datatype ${datatype} whose element ${j}: ${problem}`;
    }
  }
  return datatype;
}

/** Whether a declared output may be left out: `"type?"`, `optional`, `nullable`. */
function mayBeAbsent(declared: unknown): boolean {
  if (typeof declared === "string") return declared.endsWith("?");
  return isDict(declared) &&
    (declared.optional === true || declared.nullable === true);
}

/**
 * Throws a 400 for an output the request asks for that the model's
 * declared outputs do not have (before the call; a model without declared
 * outputs is told apart only by its result).
 */
export function checkRequestedOutputs(
  request: InferenceRequest,
  model: InferenceModel,
): void {
  const declared = model.outputs;
  if (request.outputs === undefined || declared === undefined) return;
  for (const { name } of request.outputs) {
    if (!Object.hasOwn(declared, name)) throw unknownOutput(model.name, name);
  }
}

function unknownOutput(model: string, name: string) {
  return httpError(
    400,
    "InvalidRequestError",
    `Cannot infer: model '${model}' has no output ${
      JSON.stringify(name.slice(0, 64))
    }`,
  );
}

/**
 * The response to `request` for the model's `result`. Throws a 400 for an
 * output asked for that the result does not have, a 500
 * `InvalidModelOutput` naming the output whose value is not a tensor
 * (ragged lists, an object, mixed types, bytes that are not UTF-8 for a
 * JSON output, a Tensor whose data does not fit its shape or datatype). `respond` makes the response of its body and headers (the
 * gateway's `compress`: `ResponseCompression.body`).
 */
export function inferenceResponse(
  result: unknown,
  request: InferenceRequest,
  model: InferenceModel,
  respond: (
    body: string | Uint8Array,
    headers: Record<string, string>,
  ) => Response = plainResponse,
): Response {
  const values: Record<string, unknown> = result === null ||
      result === undefined
    ? {}
    : isDict(result) && !isExplicitTensor(result)
    ? result
    : { [SINGLE_OUTPUT]: result };
  const wanted: readonly RequestedOutput[] = request.outputs ??
    Object.keys(values).map((name) => ({
      name,
      binary: request.binaryOutput,
    }));
  const outputs: Record<string, unknown>[] = [];
  const chunks: Uint8Array[] = [];
  let classified = 0;
  for (const { name, binary, classification } of wanted) {
    const value = values[name];
    // An output declared optional or nullable that is None is absent, as an
    // optional input sent as null is.
    if (
      !Object.hasOwn(values, name) ||
      (value === null && mayBeAbsent(model.outputs?.[name]))
    ) {
      if (request.outputs === undefined) continue;
      throw unknownOutput(model.name, name);
    }
    const what = `output ${JSON.stringify(name.slice(0, 64))}`;
    let tensor: FlatTensor | undefined;
    let datatype: string;
    if (isDict(value) && isExplicitTensor(value)) {
      // A pyproxy.Tensor: its shape and datatype as the model gave them.
      tensor = explicitTensor(value, model.name, what);
      datatype = value.datatype === null
        ? resultDatatype(tensor.data, model.outputs?.[name])
        : explicitDatatype(tensor.data, value.datatype as string);
    } else {
      tensor = flattenResult(value);
      if (tensor === undefined) {
        throw wrong(
          model.name,
          `returned ragged lists for ${what} (a tensor's lists at one depth all have one length, and at most 64 levels)`,
        );
      }
      datatype = resultDatatype(tensor.data, model.outputs?.[name]);
    }
    if (!isDatatype(datatype)) {
      throw wrong(model.name, `returned ${what} that ${datatype}`);
    }
    let type: Datatype = datatype;
    if (classification !== undefined) {
      if (!isScoreDatatype(type)) {
        throw httpError(
          400,
          "InvalidRequestError",
          `Cannot infer: ${what} of model '${model.name}' is ${datatype}, and classification ranks numbers only`,
        );
      }
      // Checked before any is written: their count bounds the work.
      classified += classifiedCount(tensor, classification);
      if (classified > MAX_CLASSIFIED) {
        throw httpError(
          400,
          "InvalidRequestError",
          `Cannot infer: the classification of ${what} of model '${model.name}' would answer ${classified} classes in all (a row's top n, for each row of each output asked for so), over the limit of ${MAX_CLASSIFIED} per request: ask for fewer classes, or send a smaller batch`,
        );
      }
      tensor = classify(
        tensor,
        type,
        classification,
        declaredLabels(model.outputs?.[name]),
      );
      type = "BYTES";
    }
    const output: Record<string, unknown> = {
      name,
      datatype: type,
      shape: tensor.shape,
    };
    if (binary) {
      const bytes = encodeBinaryTensor(tensor.data, type);
      output.parameters = { binary_data_size: bytes.byteLength };
      chunks.push(bytes);
    } else {
      output.data = type === "BYTES"
        ? tensor.data.map((v) => {
          if (!(v instanceof Uint8Array)) return v;
          try {
            return UTF8.decode(v);
          } catch {
            throw wrong(
              model.name,
              `returned bytes that are not UTF-8 in ${what}: JSON carries text only (ask for it as binary data: "parameters": {"binary_data": true})`,
            );
          }
        })
        : elementsAsDatatype(tensor.data, datatype);
    }
    outputs.push(output);
  }
  const body: Record<string, unknown> = { model_name: model.name };
  if (model.version !== undefined) body.model_version = model.version;
  if (request.id !== undefined) body.id = request.id;
  body.outputs = outputs;
  // Integers beyond ±2^53 stay exact (the gateway's pool reads them as BigInts).
  const text = stringifyJson(body)!;
  if (chunks.length === 0) {
    return respond(text, { "content-type": "application/json" });
  }
  const header = ENCODER.encode(text);
  const all = new Uint8Array(
    chunks.reduce((n, c) => n + c.byteLength, header.byteLength),
  );
  all.set(header, 0);
  let at = header.byteLength;
  for (const c of chunks) {
    all.set(c, at);
    at += c.byteLength;
  }
  // The header's length is the uncompressed one, as Triton sends it.
  return respond(all, {
    "content-type": "application/octet-stream",
    [HEADER_LENGTH]: String(header.byteLength),
  });
}

/** A response as it is (no `compress`). */
function plainResponse(
  body: string | Uint8Array,
  headers: Record<string, string>,
): Response {
  return new Response(body as BodyInit, { headers });
}
