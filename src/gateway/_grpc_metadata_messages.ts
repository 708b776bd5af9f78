/**
 * The gRPC service's health and metadata messages (`ServerLive`,
 * `ServerReady`, `ModelReady`, `ServerMetadata`, `ModelMetadata`): a
 * model reference read, the REST answers' JSON written.
 *
 * @module
 */
import { LEN, ProtoReader, ProtoWriter } from "./_protobuf.ts";

const ENCODER = new TextEncoder();

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

export function packedInt64(values: readonly unknown[]): ProtoWriter {
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
