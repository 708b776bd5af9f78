/**
 * Triton's statistics extension (`GET /v2/models[/{name}[/versions/{v}]]/stats`)
 * built from what the gateway and the pool measure anyway: the gateway's
 * request metrics (`GatewayMetrics`, `pyproxy_requests_total` and
 * `pyproxy_request_duration_seconds`) and the pool's batch sizes of a model
 * that batches. Plain functions of that state, for any transport (REST
 * here, gRPC later). docs/gateway.md, "Statistics".
 *
 * @module
 */
import type { GatewayMetrics } from "./metrics.ts";
import type { GatewayModelInfo } from "./model_catalog.ts";
import type { GatewayPool } from "./gateway_pool.ts";
import { versionKey } from "../_model_version.ts";

/** A count of events and their total duration in nanoseconds (Triton's `$duration_stat`). */
export interface DurationStat {
  /** Events counted. */
  count: number;
  /** Their durations summed, in nanoseconds. */
  ns: number;
}

/**
 * The phases of Triton's `InferStatistics`, in the order of its protobuf
 * fields (1 to 8): the keys of a {@linkcode ModelStat}'s `inference_stats`.
 *
 * @example
 * ```ts
 * import { INFER_PHASES } from "./_inference_statistics.ts";
 * console.log(INFER_PHASES[0], INFER_PHASES.length); // success 8
 * ```
 */
export const INFER_PHASES = [
  "success",
  "fail",
  "queue",
  "compute_input",
  "compute_infer",
  "compute_output",
  "cache_hit",
  "cache_miss",
] as const;

/** One of {@linkcode INFER_PHASES}. */
export type InferPhase = typeof INFER_PHASES[number];

/** The statistics of one model version (Triton's `$model_stat`). */
export interface ModelStat {
  /** The model's name. */
  name: string;
  /** Its version: a version's label, else its load count; `""`: unknown. */
  version: string;
  /** When its last request that ended began, in ms since the epoch; 0: none. */
  last_inference: number;
  /** Successful requests (one inference each; a batch holds several). */
  inference_count: number;
  /** Model executions: batches for a model that batches, else successful requests. */
  execution_count: number;
  /** Per phase; those the gateway does not measure are zero. */
  inference_stats: Record<InferPhase, DurationStat>;
  /** A model that batches: its batches by size; else `[]`. */
  batch_stats: Array<{
    batch_size: number;
    compute_input: DurationStat;
    compute_infer: DurationStat;
    compute_output: DurationStat;
  }>;
  /** Triton's per-response statistics (decoupled models): none here. */
  response_stats: Record<string, never>;
  /** Triton's memory usage per device: none here. */
  memory_usage: never[];
}

const zero = (): DurationStat => ({ count: 0, ns: 0 });
const ns = (seconds: number): number => Math.round(seconds * 1e9);

/**
 * The name the pool and the metrics know a model (or one of its versions)
 * by: `name`, or a version's `name@label`.
 */
export function statisticsKey(model: GatewayModelInfo): string {
  return model.label === undefined
    ? model.name
    : versionKey(model.name, model.label);
}

/**
 * The statistics of one model version, from the gateway's request metrics
 * (every call through the gateway: `/v1` execute and stream, `/v2` infer,
 * `:predict`) and the pool's batches of a model that batches.
 *
 * - `success`, `fail`: the requests that ended with a status below 400, of
 *   400 or more (a client that went away, 499, is a failure), with their
 *   duration as `pyproxy_request_duration_seconds` has it: from the route
 *   taking the request to its response being made.
 * - `compute_infer`: the successful requests' count and duration again (the
 *   worker reports no time of its own: it includes the pool's queue and
 *   the trip to the worker); for a model that batches, its batches'
 *   duration from written to a worker to answered is in `batch_stats`.
 * - `queue`, `compute_input`, `compute_output`, `cache_hit`, `cache_miss`:
 *   zero (the pool's queue wait is measured for all models together, in
 *   `pyproxy_queue_wait_seconds`; there is no response cache).
 *
 * @example
 * ```ts
 * import { GatewayMetrics } from "./metrics.ts";
 * import { modelStat } from "./_inference_statistics.ts";
 * const metrics = new GatewayMetrics();
 * metrics.start("echo")(200);
 * metrics.start("echo")(500);
 * const stat = modelStat({ name: "echo", version: 1 }, metrics, {});
 * console.log(stat.inference_stats.success.count, stat.inference_stats.fail.count); // 1 1
 * ```
 */
export function modelStat(
  model: GatewayModelInfo,
  metrics: Pick<GatewayMetrics, "modelTotals">,
  pool: Pick<GatewayPool, "batchStats">,
): ModelStat {
  const key = statisticsKey(model);
  const totals = metrics.modelTotals(key);
  const batches = model.batch === undefined
    ? undefined
    : pool.batchStats?.(key);
  const success: DurationStat = totals === undefined
    ? zero()
    : { count: totals.success.count, ns: ns(totals.success.seconds) };
  let executions = success.count;
  const batchStats: ModelStat["batch_stats"] = [];
  if (batches !== undefined) {
    executions = 0;
    for (const b of batches) {
      executions += b.count;
      batchStats.push({
        batch_size: b.size,
        compute_input: zero(),
        compute_infer: { count: b.count, ns: ns(b.ms / 1000) },
        compute_output: zero(),
      });
    }
  }
  return {
    name: model.name,
    version: model.label ??
      (model.version === undefined ? "" : String(model.version)),
    last_inference: totals?.last === undefined ? 0 : Math.floor(totals.last),
    inference_count: success.count,
    execution_count: executions,
    inference_stats: {
      success,
      fail: totals === undefined
        ? zero()
        : { count: totals.fail.count, ns: ns(totals.fail.seconds) },
      queue: zero(),
      compute_input: zero(),
      compute_infer: { ...success },
      compute_output: zero(),
      cache_hit: zero(),
      cache_miss: zero(),
    },
    batch_stats: batchStats,
    response_stats: {},
    memory_usage: [],
  };
}

/**
 * The statistics response (`{"model_stats": [...]}`) of the model versions
 * given, in their order.
 *
 * @example
 * ```ts
 * import { GatewayMetrics } from "./metrics.ts";
 * import { inferenceStatistics } from "./_inference_statistics.ts";
 * const body = inferenceStatistics([{ name: "echo", version: 1 }], new GatewayMetrics(), {});
 * console.log(body.model_stats[0]?.inference_count); // 0
 * ```
 */
export function inferenceStatistics(
  models: readonly GatewayModelInfo[],
  metrics: Pick<GatewayMetrics, "modelTotals">,
  pool: Pick<GatewayPool, "batchStats">,
): { model_stats: ModelStat[] } {
  return { model_stats: models.map((m) => modelStat(m, metrics, pool)) };
}
