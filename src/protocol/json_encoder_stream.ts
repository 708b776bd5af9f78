/**
 * Messages → payloads, the first stage of the write side.
 *
 * @module
 */

/**
 * Options of {@linkcode JsonEncoderStream}.
 *
 * @example
 * ```ts
 * import { JsonEncoderStream } from "@pyproxy/pyproxy";
 * const encoder = new JsonEncoderStream({ sharedBufferLimit: 64 * 1024 });
 * console.log(encoder.readable instanceof ReadableStream); // true
 * ```
 */
export interface JsonEncoderStreamOptions {
  /**
   * Batches whose JSON text is at most this many UTF-16 code units in total
   * are encoded into one shared buffer (one allocation per batch); larger
   * ones message by message, so the worst-case 3-bytes-per-unit reserve
   * stays small.
   *
   * @default {262144}
   */
  sharedBufferLimit?: number;
}

/**
 * Encodes each message of a batch as UTF-8 JSON. An item may be a plain
 * object (stringified here), a `string` of JSON text, or a `Uint8Array` of
 * already-encoded JSON (passed through untouched). A value `JSON.stringify`
 * rejects errors the stream with its `TypeError`, so callers that must not
 * lose the stream stringify first and pass strings.
 *
 * @example
 * ```ts
 * import { JsonEncoderStream } from "@pyproxy/pyproxy";
 * const [batch] = await Array.fromAsync(ReadableStream.from([[{ id: 1, cmd: "ping" }]]).pipeThrough(new JsonEncoderStream()));
 * console.log(new TextDecoder().decode(batch![0])); // '{"id":1,"cmd":"ping"}'
 * ```
 */
export class JsonEncoderStream
  extends TransformStream<Array<object | string | Uint8Array>, Uint8Array[]> {
  /** Creates the stage. */
  constructor(options: JsonEncoderStreamOptions = {}) {
    const limit = options.sharedBufferLimit ?? 262144;
    const encoder = new TextEncoder();
    super({
      transform(items, controller) {
        controller.enqueue(encodeJsonBatch(items, encoder, limit));
      },
    });
  }
}

/**
 * The logic of {@linkcode JsonEncoderStream} as a plain function (for hot
 * paths that skip the stream plumbing): encodes each item as UTF-8 JSON,
 * sharing one buffer when the batch has at most `limit` UTF-16 units of text.
 * Throws a `TypeError` for a value `JSON.stringify` rejects.
 *
 * @example
 * ```ts
 * import { encodeJsonBatch } from "@pyproxy/pyproxy";
 * const [bytes] = encodeJsonBatch(['{"id":1}'], new TextEncoder());
 * console.log(bytes!.length); // 8
 * ```
 */
export function encodeJsonBatch(
  items: ArrayLike<object | string | Uint8Array>,
  encoder: TextEncoder,
  limit = 262144,
): Uint8Array[] {
  const n = items.length;
  const texts = new Array<string | Uint8Array>(n);
  let units = 0;
  for (let i = 0; i < n; i++) {
    const item = items[i]!;
    const t = typeof item === "string" || item instanceof Uint8Array
      ? item
      : stringify(item);
    texts[i] = t;
    if (typeof t === "string") units += t.length;
  }
  const out = new Array<Uint8Array>(n);
  if (units > limit) {
    for (let i = 0; i < n; i++) {
      const t = texts[i]!;
      out[i] = typeof t === "string" ? encoder.encode(t) : t;
    }
  } else {
    const buffer = new Uint8Array(units * 3);
    let pos = 0;
    for (let i = 0; i < n; i++) {
      const t = texts[i]!;
      if (typeof t !== "string") {
        out[i] = t;
        continue;
      }
      const written = encoder.encodeInto(t, buffer.subarray(pos)).written;
      out[i] = buffer.subarray(pos, pos + written);
      pos += written;
    }
  }
  return out;
}

function stringify(value: object): string {
  const text = JSON.stringify(value);
  if (typeof text !== "string") {
    throw new TypeError("Cannot encode message: it is not JSON serialisable");
  }
  return text;
}
