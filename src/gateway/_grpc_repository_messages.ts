/**
 * Triton's model repository extension over gRPC (`RepositoryIndex`,
 * `RepositoryModelLoad`, `RepositoryModelUnload` of Triton's
 * `grpc_service.proto`): the requests as the REST bodies of
 * `POST /v2/repository/index` and `.../models/{name}/load|unload`, the
 * index answer's JSON as a `RepositoryIndexResponse`.
 *
 * @module
 */
import { LEN, ProtoReader, ProtoWriter, VARINT } from "./_protobuf.ts";

/** A `RepositoryIndexRequest` (`repository_name` 1, `ready` 2). */
export function decodeRepositoryIndexRequest(
  bytes: Uint8Array,
): { repository: string; ready: boolean } {
  const r = new ProtoReader(bytes);
  let repository = "";
  let ready = false;
  while (r.more()) {
    const tag = r.tag();
    if (tag === (1 << 3 | LEN)) repository = r.string();
    else if (tag === (2 << 3 | VARINT)) ready = r.varint() !== 0;
    else r.skip(tag);
  }
  return { repository, ready };
}

/** A `ModelRepositoryParameter` (a oneof: bool 1, int64 2, string 3, bytes 4). */
function readParameter(r: ProtoReader): unknown {
  let value: unknown = null;
  while (r.more()) {
    const tag = r.tag();
    if (tag === (1 << 3 | VARINT)) value = r.varint() !== 0;
    else if (tag === (2 << 3 | VARINT)) {
      const v = r.int64();
      value = typeof v === "bigint" ? String(v) : v;
    } else if (tag === (3 << 3 | LEN)) value = r.string();
    // bytes (a file's content): a string REST refuses by its key ("file:").
    else if (tag === (4 << 3 | LEN)) value = `<${r.bytesField().length} bytes>`;
    else r.skip(tag);
  }
  return value;
}

/**
 * A `RepositoryModelLoadRequest` or `RepositoryModelUnloadRequest`
 * (`repository_name` 1, `model_name` 2, `parameters` 3) as the model's name
 * and the REST body (`{"parameters": {...}}`).
 */
export function decodeRepositoryModelRequest(
  bytes: Uint8Array,
): { repository: string; name: string; body: Uint8Array } {
  const r = new ProtoReader(bytes);
  let repository = "";
  let name = "";
  const parameters: Record<string, unknown> = {};
  while (r.more()) {
    const tag = r.tag();
    if (tag === (1 << 3 | LEN)) repository = r.string();
    else if (tag === (2 << 3 | LEN)) name = r.string();
    else if (tag === (3 << 3 | LEN)) {
      const entry = r.message();
      let key = "";
      let value: unknown = null;
      while (entry.more()) {
        const t = entry.tag();
        if (t === (1 << 3 | LEN)) key = entry.string();
        else if (t === (2 << 3 | LEN)) value = readParameter(entry.message());
        else entry.skip(t);
      }
      // defineProperty: a key "__proto__" is a parameter like any other.
      Object.defineProperty(parameters, key, {
        value,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    } else r.skip(tag);
  }
  return {
    repository,
    name,
    body: new TextEncoder().encode(JSON.stringify({ parameters })),
  };
}

/**
 * A `RepositoryIndexResponse` (`models` 1: `name` 1, `version` 2, `state` 3,
 * `reason` 4) from the REST index's JSON (an array of entries).
 *
 * @example
 * ```ts
 * import { encodeRepositoryIndex } from "./_grpc_repository_messages.ts";
 * const bytes = encodeRepositoryIndex([{ name: "echo", state: "READY" }]);
 * console.log(bytes.byteLength); // 15
 * ```
 */
export function encodeRepositoryIndex(entries: unknown): Uint8Array {
  const w = new ProtoWriter(256);
  for (const e of Array.isArray(entries) ? entries : []) {
    const entry = (typeof e === "object" && e !== null ? e : {}) as Record<
      string,
      unknown
    >;
    const m = new ProtoWriter(64);
    m.string(1, String(entry.name ?? ""))
      .string(2, String(entry.version ?? ""))
      .string(3, String(entry.state ?? ""))
      .string(4, String(entry.reason ?? ""));
    w.message(1, m);
  }
  return w.finish();
}
