/**
 * Triton's model configuration extension (`GET /v2/models/{name}[/versions/{v}]/config`):
 * the parts of Triton's model configuration that a pyproxy model has,
 * from its description (declared inputs and outputs, batching) and where
 * the pool placed it. A plain function of that state, for any transport
 * (REST here, gRPC later). docs/gateway.md, "Model configuration".
 *
 * @module
 */
import type { GatewayModelInfo } from "./model_catalog.ts";
import type { GatewayPoolStatus } from "./gateway_pool.ts";
import { declaredTensor } from "./_inference_tensors.ts";

/** A tensor of the configuration (Triton's `ModelInput` / `ModelOutput`, the fields that map). */
export interface ConfigTensor {
  /** The declared field's name. */
  name: string;
  /** Its datatype in the configuration's spelling (`TYPE_FP32`; `BYTES` is `TYPE_STRING`). */
  data_type: string;
  /** Its shape as the `/v2` metadata gives it (-1: a dimension of any size). */
  dims: number[];
  /** An input that may be left out (declared with a trailing `?` or `"optional": true`). */
  optional?: boolean;
}

/** The configuration of one model version (Triton's `ModelConfig`, the fields that map). */
export interface ModelConfig {
  /** The model's name. */
  name: string;
  /** Always `"pyproxy"`. */
  platform: string;
  /** Always `"pyproxy"`. */
  backend: string;
  /**
   * Always 0: a request's tensors have no batch dimension, even for a model
   * that batches (it gathers whole calls; its `batch_size` is
   * `dynamic_batching.preferred_batch_size`).
   */
  max_batch_size: number;
  /** Its declared inputs that map to tensors. */
  input: ConfigTensor[];
  /** Its declared outputs that map to tensors. */
  output: ConfigTensor[];
  /**
   * A model that batches: how many calls a batch holds at most
   * (`batch_size`) and how long a call waits for others (`batch_delay_ms`).
   */
  dynamic_batching?: {
    preferred_batch_size: number[];
    max_queue_delay_microseconds: number;
  };
  /**
   * A model whose `execute` yields: Triton's decoupled models (any number of
   * responses per request, over gRPC's `ModelStreamInfer`), what Triton's
   * clients read to choose the stream (perf_analyzer, genai-perf). Absent
   * for the others, as Triton leaves it when not decoupled.
   */
  model_transaction_policy?: { decoupled: true };
  /**
   * The workers that load it: those it is placed on, else every worker
   * (`count` left out for a tenant's token: `_tenant_view.ts`).
   */
  instance_group: Array<{ name: string; kind: "KIND_CPU"; count?: number }>;
  /** A model with versions serves each loaded one; one without, its current one. */
  version_policy:
    | { all: Record<string, never> }
    | { latest: { num_versions: 1 } };
}

/** The configuration's spelling of a datatype. */
function configType(datatype: string): string {
  return datatype === "BYTES" ? "TYPE_STRING" : `TYPE_${datatype}`;
}

function tensors(
  declared: Record<string, unknown> | undefined,
  inputs: boolean,
): ConfigTensor[] {
  return Object.entries(declared ?? {}).flatMap(([name, d]) => {
    const tensor = declaredTensor(d);
    if (tensor === undefined) return [];
    const out: ConfigTensor = {
      name,
      data_type: configType(tensor.datatype),
      dims: tensor.shape,
    };
    if (inputs) {
      out.optional = typeof d === "string"
        ? d.endsWith("?")
        : (d as { optional?: unknown } | null)?.optional === true;
    }
    return [out];
  });
}

/**
 * The model configuration of one model version. Declared inputs and
 * outputs map as in the `/v2` metadata (the fields that are not tensors,
 * `"object"` and `"any"`, are left out); `dims` are the shape of one call's
 * tensor: a model that batches gathers whole calls, so its `dims` hold no
 * batch dimension and a request's tensors carry none either.
 *
 * @example
 * ```ts
 * import { inferenceModelConfig } from "./_inference_model_config.ts";
 * const config = inferenceModelConfig(
 *   { name: "scorer", inputs: { x: { type: "array", items: "number" } }, batch: { size: 8, delayMs: 5 } },
 *   { workers: [{ id: "w0", pid: 1, state: "ready", restarts: 0, inFlight: 0 }] },
 * );
 * console.log(config.max_batch_size, config.dynamic_batching?.preferred_batch_size); // 0 [ 8 ]
 * console.log(config.input[0]?.data_type, config.input[0]?.dims); // TYPE_FP64 [ -1 ]
 * ```
 */
export function inferenceModelConfig(
  model: GatewayModelInfo,
  status: Pick<GatewayPoolStatus, "workers">,
): ModelConfig {
  const config: ModelConfig = {
    name: model.name,
    platform: "pyproxy",
    backend: "pyproxy",
    // Triton's clients (perf_analyzer, tritonclient's helpers) put a batch
    // dimension in front of `dims` when this is above 0; a pyproxy model that
    // batches gathers whole calls, whose tensors have none.
    max_batch_size: 0,
    input: tensors(model.inputs, true),
    output: tensors(model.outputs, false),
    instance_group: [{
      name: model.name,
      kind: "KIND_CPU",
      count: model.slots?.length ?? status.workers.length,
    }],
    version_policy: model.label === undefined
      ? { latest: { num_versions: 1 } }
      : { all: {} },
  };
  if (model.batch !== undefined) {
    config.dynamic_batching = {
      preferred_batch_size: [model.batch.size],
      max_queue_delay_microseconds: Math.round(model.batch.delayMs * 1000),
    };
  }
  if (model.streams === true) {
    config.model_transaction_policy = { decoupled: true };
  }
  return config;
}
