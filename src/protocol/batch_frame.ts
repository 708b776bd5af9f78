/**
 * Batch frames (protocol §3, negotiated in the handshake): one frame whose
 * payload is `{"batch": [message, ...]}` carries several small messages, so
 * they share one MD5, one frame header and one JSON document.
 *
 * @module
 */
import { ProtocolError } from "../errors.ts";

/**
 * Limits of {@linkcode batchMessages}, in UTF-16 units of JSON text.
 *
 * @example
 * ```ts
 * import type { BatchLimits } from "@pyproxy/pyproxy";
 * const small: BatchLimits = { maxItem: 1024, maxBatch: 4096 };
 * console.log(small.maxBatch); // 4096
 * ```
 */
export interface BatchLimits {
  /** A message longer than this is framed alone. */
  maxItem: number;
  /** A batch stops growing before this many units. */
  maxBatch: number;
}

/**
 * The host's limits: 16 Ki units per message, 64 Ki units per batch (at most
 * 192 KiB of UTF-8).
 *
 * @example
 * ```ts
 * import { BATCH_LIMITS } from "@pyproxy/pyproxy";
 * console.log(BATCH_LIMITS.maxItem); // 16384
 * ```
 */
export const BATCH_LIMITS: BatchLimits = { maxItem: 16384, maxBatch: 65536 };

/**
 * The smallest frame limit a peer must accept for a side to send it batches
 * (and that a side must have to ask for them): 256 KiB.
 *
 * @example
 * ```ts
 * import { MIN_BATCH_FRAME_SIZE } from "@pyproxy/pyproxy";
 * console.log(MIN_BATCH_FRAME_SIZE); // 262144
 * ```
 */
export const MIN_BATCH_FRAME_SIZE: number = 4 * BATCH_LIMITS.maxBatch;

const OPEN = '{"batch":[';
const CLOSE = "]}";

/**
 * Groups a flush's queued messages (JSON text, or UTF-8 bytes for large
 * ones) into batch frames: each run of consecutive small texts becomes one
 * `{"batch":[...]}` text, a run of one stays as it is, bytes stay alone.
 * Order is kept. Returns `items` itself when nothing is grouped.
 *
 * @example
 * ```ts
 * import { BATCH_LIMITS, batchMessages } from "@pyproxy/pyproxy";
 * const out = batchMessages(['{"id":1,"cmd":"ping"}', '{"id":2,"cmd":"ping"}'], BATCH_LIMITS);
 * console.log(out); // ['{"batch":[{"id":1,"cmd":"ping"},{"id":2,"cmd":"ping"}]}']
 * ```
 */
export function batchMessages(
  items: (string | Uint8Array)[],
  limits: BatchLimits,
): (string | Uint8Array)[] {
  const n = items.length;
  if (n < 2) return items;
  const out: (string | Uint8Array)[] = [];
  let start = 0; // first item of the current run of small texts
  let units = 0;
  const close = (end: number) => {
    if (end - start === 1) out.push(items[start]!);
    else if (end > start) {
      out.push(OPEN + items.slice(start, end).join(",") + CLOSE);
    }
  };
  for (let i = 0; i < n; i++) {
    const item = items[i]!;
    if (typeof item !== "string" || item.length > limits.maxItem) {
      close(i);
      out.push(item);
      start = i + 1;
      units = 0;
      continue;
    }
    if (units + item.length + 1 > limits.maxBatch && i > start) {
      close(i);
      start = i;
      units = 0;
    }
    units += item.length + 1;
  }
  close(n);
  return out.length === n ? items : out;
}

/**
 * The messages of a decoded batch frame, or a `ProtocolError` when it is not
 * one: `batch` must be an array of JSON objects, none of them a batch
 * ({@linkcode isBatch} tells which payloads are batches).
 *
 * @example
 * ```ts
 * import { unbatch } from "@pyproxy/pyproxy";
 * console.log(unbatch({ batch: [{ id: 1, ok: true, result: 2 }] })); // [{ id: 1, ok: true, result: 2 }]
 * ```
 */
export function unbatch(
  payload: Record<string, unknown>,
): Record<string, unknown>[] | ProtocolError {
  const list = payload.batch;
  if (!Array.isArray(list)) {
    return new ProtocolError("Cannot parse payload: 'batch' must be an array");
  }
  for (const msg of list) {
    if (typeof msg !== "object" || msg === null || Array.isArray(msg)) {
      return new ProtocolError(
        "Cannot parse payload: a batch item is not a JSON object",
      );
    }
    if (isBatch(msg)) {
      return new ProtocolError("Cannot parse payload: a batch inside a batch");
    }
  }
  return list;
}

/**
 * Whether a decoded payload is a batch frame's: `batch` without `id`, `cmd`
 * and `event` (the `hello` event's `batch: true` is a capability).
 *
 * @example
 * ```ts
 * import { isBatch } from "@pyproxy/pyproxy";
 * console.log(isBatch({ batch: [] }), isBatch({ id: 1, cmd: "x", batch: [] })); // true false
 * ```
 */
export function isBatch(payload: Record<string, unknown>): boolean {
  return payload.batch !== undefined && payload.id === undefined &&
    payload.cmd === undefined && payload.event === undefined;
}
