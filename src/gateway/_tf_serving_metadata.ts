/**
 * TensorFlow Serving's model metadata (`GET /v1/models/{name}/metadata`),
 * from a model's declared inputs and outputs.
 *
 * @module
 */
import { type Datatype, declaredTensor } from "./_inference_tensors.ts";
import type { GatewayModelInfo } from "./model_catalog.ts";

/** TensorFlow's dtype names of the `/v2` datatypes. */
const TF_DTYPES: Readonly<Record<Datatype, string>> = {
  BOOL: "DT_BOOL",
  UINT8: "DT_UINT8",
  UINT16: "DT_UINT16",
  UINT32: "DT_UINT32",
  UINT64: "DT_UINT64",
  INT8: "DT_INT8",
  INT16: "DT_INT16",
  INT32: "DT_INT32",
  INT64: "DT_INT64",
  FP16: "DT_HALF",
  FP32: "DT_FLOAT",
  FP64: "DT_DOUBLE",
  BYTES: "DT_STRING",
};

function tensorInfos(
  declared: Record<string, unknown> | undefined,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, d] of Object.entries(declared ?? {})) {
    const tensor = declaredTensor(d);
    if (tensor === undefined) continue;
    out[name] = {
      dtype: TF_DTYPES[tensor.datatype],
      tensor_shape: {
        dim: tensor.shape.map((size) => ({ size: String(size), name: "" })),
        unknown_rank: false,
      },
      name,
    };
  }
  return out;
}

/**
 * TensorFlow Serving's model metadata (`GET /v1/models/{name}/metadata`)
 * of a model: one signature, `serving_default`, whose inputs and outputs
 * are the model's declared ones that map to tensors (as `/v2`'s metadata
 * lists them), each dimension of unknown size `-1`.
 *
 * @example
 * ```ts
 * import { tfServingMetadata } from "./_tf_serving_metadata.ts";
 * const m = tfServingMetadata({ name: "iris", version: 1, inputs: { x: "number" } });
 * console.log(m.model_spec.version); // "1"
 * ```
 */
export function tfServingMetadata(model: GatewayModelInfo): {
  model_spec: { name: string; signature_name: string; version: string };
  metadata: { signature_def: Record<string, unknown> };
} {
  return {
    model_spec: {
      name: model.name,
      signature_name: "",
      version: model.label ?? String(model.version ?? 0),
    },
    metadata: {
      signature_def: {
        signature_def: {
          serving_default: {
            inputs: tensorInfos(model.inputs),
            outputs: tensorInfos(model.outputs),
            method_name: "tensorflow/serving/predict",
          },
        },
      },
    },
  };
}
