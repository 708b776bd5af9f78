/**
 * `/v2` infer of a model whose `execute` yields, in the form the gRPC
 * transport's `ModelStreamInfer` reads (asked for with
 * `Accept: application/x-pyproxy-inference-stream` on the transport's own
 * requests; a REST client gets the 400 that points to
 * `/v1/models/{name}/stream`, with that header or without): each item is the inference
 * response REST would answer for a model that returned it (the same mapping
 * of a result to outputs), one record after the other.
 *
 * A record: a kind byte (0: an item, 1: the error that ended the stream),
 * the item's JSON header length and the record's length (both uint32
 * big-endian), then its bytes (an item: the JSON header and its binary
 * outputs; an error: its message, UTF-8, with a header length of 0, or,
 * with a header length of the whole record, the JSON `{"status", "error"}`
 * of REST's status and error body, for {@linkcode errorRecord}).
 * docs/gateway.md, "gRPC".
 *
 * @module
 */

/** The media type of the streamed form. */
export const INFERENCE_STREAM_TYPE = "application/x-pyproxy-inference-stream";

/**
 * The requests the gRPC transport made (the streamed form is theirs only),
 * each with what it is told of its call's retired token, if anything.
 */
const transportRequests = new WeakMap<
  Request,
  ((message: string) => void) | undefined
>();

/**
 * Marks `request` as the gRPC transport's own. `onRetired`: told (with the
 * message to end with) when the token its call was opened with is retired
 * while its streamed form runs ({@linkcode transportRetired}), so that the
 * transport ends its stream also while its client reads nothing.
 */
export function markTransportRequest(
  request: Request,
  onRetired?: (message: string) => void,
): Request {
  transportRequests.set(request, onRetired);
  return request;
}

/**
 * Tells the transport that made `request` (nothing for another request)
 * that its call's token was retired: `message` says why.
 */
export function transportRetired(request: Request, message: string): void {
  transportRequests.get(request)?.(message);
}

/** Whether `request` is the gRPC transport's (a unary call's included). */
export function isTransportRequest(request: Request): boolean {
  return transportRequests.has(request);
}

/**
 * Whether `request` asks for the streamed form: the transport's request
 * with its media type as `Accept`. An HTTP client sending that type gets
 * what it would without it (REST's 400 for a yielding model): the form is
 * private, not an API (it would escape what the event stream of
 * `/v1/models/{name}/stream` keeps, such as its end at the drain).
 */
export function wantsInferenceStream(request: Request): boolean {
  return request.headers.get("accept") === INFERENCE_STREAM_TYPE &&
    transportRequests.has(request);
}

/** Record kinds. */
export const RecordKind = { ITEM: 0, ERROR: 1 } as const;

/** One record's bytes. */
export function streamRecord(
  kind: number,
  headerLength: number,
  bytes: Uint8Array,
): Uint8Array {
  const out = new Uint8Array(9 + bytes.byteLength);
  const view = new DataView(out.buffer);
  out[0] = kind;
  view.setUint32(1, headerLength);
  view.setUint32(5, bytes.byteLength);
  out.set(bytes, 9);
  return out;
}

/**
 * The record of the error that ended a stream: its REST `status` and error
 * `body` (`{type, message, requestId...}`, as a status would have carried
 * it before the first item) when known, else its message alone.
 */
export function errorRecord(
  message: string,
  described?: { status: number; body: unknown },
): Uint8Array {
  if (described === undefined) {
    return streamRecord(RecordKind.ERROR, 0, new TextEncoder().encode(message));
  }
  const bytes = new TextEncoder().encode(
    JSON.stringify({ status: described.status, error: described.body }),
  );
  return streamRecord(RecordKind.ERROR, bytes.byteLength, bytes);
}

/** Options of {@linkcode inferenceStreamResponse}. */
export interface InferenceStreamOptions {
  /** Aborting (the client gone) cancels the items. */
  signal?: AbortSignal;
  /**
   * Aborting (the token the stream was opened with retired) cancels the
   * items and ends the stream with `retiredError` (its message) as the last
   * record.
   */
  retire?: AbortSignal;
  /** The error a retired stream ends with (`retire`). */
  retiredError?: () => Error;
  /**
   * What an error after the first item (`items` items sent) is shown as:
   * its message is the last record, and it is the error `onEnd` gets (the
   * route names the model and its setting in a timeout, and hides the
   * models directory, as in its error bodies). The error itself without it.
   */
  hideError?: (err: unknown, items: number) => Promise<unknown>;
  /**
   * The REST status and error body of an error after the first item (as
   * `hideError` shows it, a retired token's included): its record carries
   * them, so the transport tells a timeout from the model's error or a
   * retired token as it does before the first item. Its message alone
   * without it.
   */
  describeError?: (err: unknown) => { status: number; body: unknown };
  /**
   * Called once, when the stream is over: `"done"` after its last item,
   * `{ error }` with the error that ended it after its first item,
   * `"cancelled"` when it was cancelled (the signal, or the body's reader).
   * Not called when the first item fails: that error is thrown, the
   * request's. (The metrics count the call then, not at its first item.)
   */
  onEnd?: (outcome: InferenceStreamOutcome) => void;
}

/** How a stream of items ended ({@linkcode InferenceStreamOptions.onEnd}). */
export type InferenceStreamOutcome = "done" | "cancelled" | { error: unknown };

/**
 * The streamed response of a model's items: waits for the first (an error
 * before it is the request's error, thrown: REST's status), then sends each
 * as `respond` makes it (REST's response of that one result), and an error
 * after the first as the last record. Cancelling the body (the client gone)
 * or aborting `options.signal` cancels the items.
 */
export async function inferenceStreamResponse(
  items: AsyncIterableIterator<unknown> & { cancel(): void },
  respond: (item: unknown) => Response,
  options: InferenceStreamOptions = {},
): Promise<Response> {
  const { signal, retire } = options;
  let ended = false;
  /** The error of a retired token, written as the last record. */
  let retired: Error | undefined;
  const end = (outcome: InferenceStreamOutcome) => {
    if (ended) return;
    ended = true;
    signal?.removeEventListener("abort", cancel);
    retire?.removeEventListener("abort", onRetire);
    options.onEnd?.(outcome);
  };
  const cancel = () => {
    items.cancel();
    end("cancelled");
  };
  const onRetire = () => {
    if (ended) return;
    retired = options.retiredError?.() ?? new Error("token retired");
    items.cancel();
    end({ error: retired });
  };
  signal?.addEventListener("abort", cancel, { once: true });
  // Retired already: the token went between the request's check and now
  // (a reload while its body came in).
  if (retire?.aborted) onRetire();
  else retire?.addEventListener("abort", onRetire, { once: true });
  let first: IteratorResult<unknown>;
  try {
    first = await items.next();
  } catch (err) {
    signal?.removeEventListener("abort", cancel);
    retire?.removeEventListener("abort", onRetire);
    throw err;
  }
  if (signal?.aborted) {
    // Gone while the first item came: no body will be read.
    cancel();
  }
  const record = async (item: unknown): Promise<Uint8Array> => {
    const res = respond(item);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const length = res.headers.get("inference-header-content-length");
    return streamRecord(
      RecordKind.ITEM,
      length === null ? bytes.byteLength : Number(length),
      bytes,
    );
  };
  let pending: IteratorResult<unknown> | undefined = first;
  /** The items sent, for an error after them (hideError). */
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const next = pending ?? await items.next();
        pending = undefined;
        if (ended) {
          // Cancelled meanwhile: the items were dropped. A retired token's
          // stream says why, as an error after its first item does.
          if (retired !== undefined) {
            controller.enqueue(
              errorRecord(retired.message, options.describeError?.(retired)),
            );
          }
          controller.close();
          return;
        }
        if (next.done) {
          end("done");
          controller.close();
          return;
        }
        controller.enqueue(await record(next.value));
        sent++;
      } catch (caught) {
        const err = options.hideError === undefined
          ? caught
          : await options.hideError(caught, sent).catch(() => caught);
        const message = err instanceof Error ? err.message : String(err);
        end({ error: err });
        controller.enqueue(
          errorRecord(message, options.describeError?.(err)),
        );
        controller.close();
      }
    },
    cancel() {
      cancel();
    },
  }, { highWaterMark: 0 });
  return new Response(body, {
    headers: { "content-type": INFERENCE_STREAM_TYPE },
  });
}
