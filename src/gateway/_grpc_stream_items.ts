/**
 * The records of `/v2` infer's streamed form (`_inference_stream.ts`), read
 * from a REST response's body one by one as they come: what the gRPC
 * transport's `ModelStreamInfer` answers a yielding model's items with.
 *
 * @module
 */
import { RecordKind } from "./_inference_stream.ts";

/**
 * One record: an item (its JSON header and binary outputs), or an error
 * (with its REST `status` and error `body` when the record has them).
 */
export type StreamItem =
  | { kind: "item"; header: unknown; binary: Uint8Array }
  | { kind: "error"; message: string; status?: number; body?: unknown };

const DECODER = new TextDecoder();

/**
 * The records of `body`, each once it is whole. A body that ends inside a
 * record ends with an error item (the stream was cut).
 */
export async function* streamItems(
  body: ReadableStream<Uint8Array>,
): AsyncGenerator<StreamItem> {
  const reader = body.getReader();
  let buffered = new Uint8Array(0);
  try {
    for (;;) {
      while (buffered.byteLength >= 9) {
        const view = new DataView(
          buffered.buffer,
          buffered.byteOffset,
          buffered.byteLength,
        );
        const headerLength = view.getUint32(1);
        const length = view.getUint32(5);
        if (buffered.byteLength < 9 + length) break;
        const bytes = buffered.subarray(9, 9 + length);
        if (buffered[0] === RecordKind.ERROR) {
          yield errorItem(DECODER.decode(bytes), headerLength > 0);
        } else {
          yield {
            kind: "item",
            header: JSON.parse(DECODER.decode(bytes.subarray(0, headerLength))),
            binary: bytes.subarray(headerLength),
          };
        }
        buffered = buffered.subarray(9 + length);
      }
      const { done, value } = await reader.read();
      if (done) {
        if (buffered.byteLength > 0) {
          yield { kind: "error", message: "Cannot infer: the stream was cut" };
        }
        return;
      }
      const next = new Uint8Array(buffered.byteLength + value.byteLength);
      next.set(buffered, 0);
      next.set(value, buffered.byteLength);
      buffered = next;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** An error record's item: its message, or its JSON status and body. */
function errorItem(text: string, json: boolean): StreamItem {
  if (!json) return { kind: "error", message: text };
  try {
    const { status, error } = JSON.parse(text) as {
      status?: unknown;
      error?: { message?: unknown };
    };
    const message = typeof error?.message === "string" ? error.message : text;
    return typeof status === "number"
      ? { kind: "error", message, status, body: { error } }
      : { kind: "error", message };
  } catch {
    return { kind: "error", message: text };
  }
}
