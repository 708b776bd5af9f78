/**
 * The JSON schemas of Triton's statistics and model configuration
 * extensions (`GET /v2/models[/{name}[/versions/{v}]]/stats`, `.../config`;
 * _inference_statistics.ts, _inference_model_config.ts) for the OpenAPI
 * document.
 *
 * @module
 */
import type { JsonSchema } from "./_declared_schema.ts";
import { INFER_PHASES } from "./_inference_statistics.ts";

const duration: JsonSchema = {
  type: "object",
  required: ["count", "ns"],
  properties: {
    count: { type: "integer", minimum: 0 },
    ns: { type: "integer", minimum: 0 },
  },
};

const phases = (names: readonly string[]): JsonSchema => ({
  type: "object",
  required: names,
  properties: Object.fromEntries(names.map((n) => [n, duration])),
});

/** A statistics response (Triton's `$stats_model_response`). */
export const STATISTICS_SCHEMA: JsonSchema = {
  type: "object",
  required: ["model_stats"],
  properties: {
    model_stats: {
      type: "array",
      items: {
        type: "object",
        required: [
          "name",
          "version",
          "last_inference",
          "inference_count",
          "execution_count",
          "inference_stats",
          "batch_stats",
        ],
        properties: {
          name: { type: "string" },
          version: { type: "string" },
          last_inference: {
            type: "integer",
            description:
              "When the last request that ended began, in ms since the epoch; 0: none.",
          },
          inference_count: { type: "integer", minimum: 0 },
          execution_count: { type: "integer", minimum: 0 },
          inference_stats: phases(INFER_PHASES),
          batch_stats: {
            type: "array",
            items: {
              type: "object",
              required: [
                "batch_size",
                "compute_input",
                "compute_infer",
                "compute_output",
              ],
              properties: {
                batch_size: { type: "integer", minimum: 1 },
                compute_input: duration,
                compute_infer: duration,
                compute_output: duration,
              },
            },
          },
          response_stats: { type: "object" },
          memory_usage: { type: "array" },
        },
      },
    },
  },
};

const configTensor: JsonSchema = {
  type: "object",
  required: ["name", "data_type", "dims"],
  properties: {
    name: { type: "string" },
    data_type: { type: "string" },
    dims: { type: "array", items: { type: "integer", minimum: -1 } },
    optional: { type: "boolean" },
  },
};

/** A model configuration (Triton's `ModelConfig`, the fields that map). */
export const MODEL_CONFIG_SCHEMA: JsonSchema = {
  type: "object",
  required: [
    "name",
    "platform",
    "backend",
    "max_batch_size",
    "input",
    "output",
    "instance_group",
    "version_policy",
  ],
  properties: {
    name: { type: "string" },
    platform: { type: "string", const: "pyproxy" },
    backend: { type: "string", const: "pyproxy" },
    max_batch_size: { type: "integer", const: 0 },
    input: { type: "array", items: configTensor },
    output: { type: "array", items: configTensor },
    dynamic_batching: {
      type: "object",
      properties: {
        preferred_batch_size: { type: "array", items: { type: "integer" } },
        max_queue_delay_microseconds: { type: "integer" },
      },
    },
    model_transaction_policy: {
      type: "object",
      description:
        "A model whose execute yields: Triton's decoupled model (its items over gRPC's ModelStreamInfer)",
      properties: { decoupled: { type: "boolean", const: true } },
    },
    instance_group: {
      type: "array",
      items: {
        type: "object",
        properties: {
          name: { type: "string" },
          kind: { type: "string", const: "KIND_CPU" },
          count: { type: "integer", minimum: 0 },
        },
      },
    },
    version_policy: { type: "object" },
  },
};
