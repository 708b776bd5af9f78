/**
 * Triton's statistics extension over gRPC: a `ModelStatisticsResponse`
 * (Triton's `grpc_service.proto`) from the REST answer's JSON
 * (`GET /v2/models[/{name}[/versions/{v}]]/stats`, `_inference_statistics.ts`).
 *
 * @module
 */
import { INFER_PHASES } from "./_inference_statistics.ts";
import { ProtoWriter, VARINT } from "./_protobuf.ts";

type Json = Record<string, unknown>;

const record = (v: unknown): Json =>
  typeof v === "object" && v !== null ? v as Json : {};

/** A uint64 field (left out when zero, as proto3 does). */
function uint64(w: ProtoWriter, field: number, value: unknown): void {
  const n = Math.max(0, Math.trunc(Number(value ?? 0)));
  if (Number.isFinite(n) && n > 0) w.tag(field, VARINT).varint(n);
}

/** A `StatisticDuration` (count 1, ns 2). */
function duration(value: unknown): ProtoWriter {
  const d = record(value);
  const w = new ProtoWriter(24);
  uint64(w, 1, d.count);
  uint64(w, 2, d.ns);
  return w;
}

/** One `ModelStatistics`. */
function modelStatistics(value: unknown): ProtoWriter {
  const s = record(value);
  const w = new ProtoWriter(256);
  w.string(1, String(s.name ?? "")).string(2, String(s.version ?? ""));
  uint64(w, 3, s.last_inference);
  uint64(w, 4, s.inference_count);
  uint64(w, 5, s.execution_count);
  const stats = record(s.inference_stats);
  const inferStats = new ProtoWriter(128);
  INFER_PHASES.forEach((name, i) => {
    inferStats.message(i + 1, duration(stats[name]));
  });
  w.message(6, inferStats);
  for (const b of Array.isArray(s.batch_stats) ? s.batch_stats : []) {
    const batch = record(b);
    const bw = new ProtoWriter(64);
    uint64(bw, 1, batch.batch_size);
    bw.message(2, duration(batch.compute_input));
    bw.message(3, duration(batch.compute_infer));
    bw.message(4, duration(batch.compute_output));
    w.message(7, bw);
  }
  // memory_usage (8) and response_stats (9): none here.
  return w;
}

/**
 * A `ModelStatisticsResponse` (`model_stats` 1) from the REST answer's JSON
 * (`{"model_stats": [...]}`).
 *
 * @example
 * ```ts
 * import { encodeModelStatistics } from "./_grpc_statistics_messages.ts";
 * const bytes = encodeModelStatistics({ model_stats: [{ name: "echo", version: "1" }] });
 * console.log(bytes.byteLength > 0); // true
 * ```
 */
export function encodeModelStatistics(body: unknown): Uint8Array {
  const w = new ProtoWriter(512);
  const stats = record(body).model_stats;
  for (const s of Array.isArray(stats) ? stats : []) {
    w.message(1, modelStatistics(s));
  }
  return w.finish();
}
