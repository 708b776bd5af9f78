/**
 * Triton's model configuration extension over gRPC: a `ModelConfigResponse`
 * (`config` 1, a `ModelConfig` of Triton's `model_config.proto`) from the
 * REST answer's JSON (`GET /v2/models/{name}[/versions/{v}]/config`,
 * `_inference_model_config.ts`): the fields REST answers, no others.
 *
 * @module
 */
import { ProtoWriter, VARINT } from "./_protobuf.ts";

type Json = Record<string, unknown>;

const record = (v: unknown): Json =>
  typeof v === "object" && v !== null ? v as Json : {};
const list = (v: unknown): unknown[] => Array.isArray(v) ? v : [];

/** `model_config.proto`'s `DataType` numbers. */
export const DATA_TYPES: Readonly<Record<string, number>> = {
  TYPE_BOOL: 1,
  TYPE_UINT8: 2,
  TYPE_UINT16: 3,
  TYPE_UINT32: 4,
  TYPE_UINT64: 5,
  TYPE_INT8: 6,
  TYPE_INT16: 7,
  TYPE_INT32: 8,
  TYPE_INT64: 9,
  TYPE_FP16: 10,
  TYPE_FP32: 11,
  TYPE_FP64: 12,
  TYPE_STRING: 13,
  TYPE_BF16: 14,
};

/** `ModelInstanceGroup.Kind` numbers. */
const KINDS: Readonly<Record<string, number>> = {
  KIND_AUTO: 0,
  KIND_GPU: 1,
  KIND_CPU: 2,
  KIND_MODEL: 3,
};

/** A varint field (an enum, an int32, a uint64; left out when zero). */
function varint(w: ProtoWriter, field: number, value: number): void {
  if (Number.isSafeInteger(value) && value !== 0) {
    w.tag(field, VARINT).varint64(value);
  }
}

/** Packed int64s (`dims`; -1 is ten bytes, as int64 says). */
function packed(values: unknown[]): ProtoWriter {
  const w = new ProtoWriter(16);
  for (const v of values) w.varint64(Math.trunc(Number(v)));
  return w;
}

/** A `ModelInput` (dims 4, optional 8) or a `ModelOutput` (dims 3). */
function tensor(value: unknown, input: boolean): ProtoWriter {
  const t = record(value);
  const w = new ProtoWriter(64);
  w.string(1, String(t.name ?? ""));
  varint(w, 2, DATA_TYPES[String(t.data_type)] ?? 0);
  const dims = list(t.dims);
  if (dims.length > 0) w.message(input ? 4 : 3, packed(dims));
  if (input) w.bool(8, t.optional === true);
  return w;
}

/**
 * A `ModelConfigResponse` from the REST answer's JSON: `name` 1, `platform`
 * 2, `backend` 17, `version_policy` 3 (`latest` 1 or `all` 2),
 * `max_batch_size` 4, `input` 5, `output` 6, `instance_group` 7 (`name` 1,
 * `count` 2, `kind` 4) and `dynamic_batching` 11
 * (`preferred_batch_size` 1, `max_queue_delay_microseconds` 2),
 * `model_transaction_policy` 19 (`decoupled` 1).
 *
 * @example
 * ```ts
 * import { encodeModelConfig } from "./_grpc_model_config_messages.ts";
 * const bytes = encodeModelConfig({ name: "echo", platform: "pyproxy" });
 * console.log(bytes.byteLength > 0); // true
 * ```
 */
export function encodeModelConfig(config: unknown): Uint8Array {
  const c = record(config);
  const w = new ProtoWriter(256);
  w.string(1, String(c.name ?? "")).string(2, String(c.platform ?? ""));
  const policy = record(c.version_policy);
  if (policy.latest !== undefined) {
    const latest = new ProtoWriter(8);
    varint(latest, 1, Number(record(policy.latest).num_versions ?? 0));
    w.message(3, new ProtoWriter(8).message(1, latest));
  } else if (policy.all !== undefined) {
    w.message(3, new ProtoWriter(8).message(2, new ProtoWriter(1)));
  }
  varint(w, 4, Number(c.max_batch_size ?? 0));
  for (const t of list(c.input)) w.message(5, tensor(t, true));
  for (const t of list(c.output)) w.message(6, tensor(t, false));
  for (const g of list(c.instance_group)) {
    const group = record(g);
    const gw = new ProtoWriter(32);
    gw.string(1, String(group.name ?? ""));
    varint(gw, 2, Number(group.count ?? 0));
    varint(gw, 4, KINDS[String(group.kind)] ?? 0);
    w.message(7, gw);
  }
  if (c.dynamic_batching !== undefined) {
    const d = record(c.dynamic_batching);
    const dw = new ProtoWriter(16);
    const sizes = list(d.preferred_batch_size);
    if (sizes.length > 0) dw.message(1, packed(sizes));
    varint(dw, 2, Number(d.max_queue_delay_microseconds ?? 0));
    w.message(11, dw);
  }
  w.string(17, String(c.backend ?? ""));
  if (record(c.model_transaction_policy).decoupled === true) {
    w.message(19, new ProtoWriter(2).bool(1, true));
  }
  return new ProtoWriter(w.length + 8).message(1, w).finish();
}
