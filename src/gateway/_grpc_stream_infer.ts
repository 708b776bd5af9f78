/**
 * `ModelStreamInfer` (Triton's bidirectional stream, what
 * `tritonclient.grpc`'s `start_stream`/`async_stream_infer` use): each
 * `ModelInferRequest` on the stream is one infer through the REST route,
 * answered by one `ModelStreamInferResponse` as it completes (in the order
 * they complete, as Triton's; a client matches them by `id`). A request
 * that fails is answered with its `error_message` and the stream goes on.
 *
 * Bounded: at most `window` infers in flight per stream, and none read
 * while the client does not read its answers (HTTP/2 flow control then
 * holds the client), nor while its connection holds its limit of answers
 * not read (`_grpc_unread.ts`: an answer that comes then resets the
 * stream). The client's half-close ends the stream once the
 * infers in flight are answered; its cancel (or a disconnect, or the
 * deadline) cancels them in Python. The server's shutdown ends it once its
 * infers in flight have answered. docs/gateway.md, "gRPC".
 *
 * @module
 */
import type * as http2 from "node:http2";
import { LEN, ProtoWriter } from "./_protobuf.ts";
import { type Answer, answerOfError } from "./_grpc_framing.ts";
import {
  decodeModelInferRequest,
  encodeModelInferResponse,
  type GrpcInferCall,
} from "./_grpc_infer_messages.ts";
import { INFERENCE_STREAM_TYPE } from "./_inference_stream.ts";
import { streamItems } from "./_grpc_stream_items.ts";
import { inferResponse, inferRest } from "./_grpc_inference_calls.ts";
import {
  errorMessage,
  type RestCall,
  type RestError,
  restError,
  restErrorOf,
} from "./_grpc_rest.ts";
import {
  GrpcStatus,
  grpcStatusName,
  grpcStatusOf,
  percentEncode,
} from "./_grpc_status.ts";
import { resetIfFull, unreadOf, writeCounted } from "./_grpc_unread.ts";

/** Options of {@linkcode streamInfer}. */
export interface StreamInferOptions {
  /** The largest request message in bytes (the gateway's body limit). */
  limit: number;
  /** Infers in flight at most, per stream. @default {16} */
  window?: number;
  /** Aborts the stream's infers (the client gone, the deadline). */
  abort: AbortController;
  /** The deadline's answer, once it passed. */
  deadline?: Promise<Answer>;
  /**
   * The server's shutdown: no more requests are read, and the stream ends
   * with UNAVAILABLE once its infers in flight have answered (at once when
   * it has none: an idle stream does not hold the drain for its grace).
   */
  stop?: AbortSignal;
  /**
   * Aborted, its reason the message to end with, when the token the call
   * was opened with is retired (a reload, a token file: the REST route's
   * hold of a yielding model's infer tells it). The stream ends
   * UNAUTHENTICATED, reset if its client does not take that end within
   * {@linkcode RETIRED_FLUSH_MS}.
   */
  retired?: AbortSignal;
}

/**
 * How long a stream ended for its retired token (UNAUTHENTICATED) waits
 * for its client to take its last answers and trailers before it is reset
 * (`RST_STREAM` `CANCEL`, gRPC's CANCELLED): a client that reads nothing
 * held it open for as long as it stayed, and the gateway's drain for its
 * whole grace. As long as an ended health watch waits for its reader.
 */
export const RETIRED_FLUSH_MS = 1000;

/** HTTP/2's `CANCEL` error code (RST_STREAM): gRPC's CANCELLED. */
const CANCEL = 0x8;

/**
 * The retry hint of a stream a drain ended: the REST routes' `Retry-After`
 * of a drain's 503 (5 s), and gRPC's own (A6) in ms.
 */
const DRAIN_RETRY: Readonly<Record<string, string>> = {
  "retry-after": "5",
  "grpc-retry-pushback-ms": "5000",
};

/** A frame of one message. */
function frame(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + message.byteLength);
  new DataView(out.buffer).setUint32(1, message.byteLength);
  out.set(message, 5);
  return out;
}

/**
 * A `ModelStreamInferResponse` of an error (`error_message` 1) for a request.
 * An error is the request's last response: its `infer_response` says so with
 * Triton's `triton_final_response`, as a success's last does (a client that
 * waits for the final flag waited for ever after an error). An error the
 * REST route told (`error`: its status before a yielding model's first
 * item, its record's status and body after it) adds string parameters:
 * `grpc_status`, the name of the status a unary call would have ended with
 * (`DEADLINE_EXCEEDED` for a 504), `error_type` (`TimeoutError`), a model's
 * `exception` (`ValueError`), the `request_id`, and a timeout's `bound` and
 * `waited`, as the REST body's.
 */
function errorResponse(
  message: string,
  request?: { name: string; version: string; id?: string },
  error?: RestError & { status: number },
): Uint8Array {
  const w = new ProtoWriter(message.length + 128).string(1, message);
  if (request !== undefined) {
    // Its infer_response (2) names the request, for a client that matches by id.
    const r = new ProtoWriter(128).string(1, request.name)
      .string(2, request.version).string(3, request.id ?? "")
      // parameters (4): a map entry, key 1, value 2 (InferParameter,
      // bool_param 1, string_param 3).
      .message(
        4,
        new ProtoWriter(32).string(1, "triton_final_response")
          .message(2, new ProtoWriter(4).bool(1, true)),
      );
    if (error !== undefined) {
      const string = (key: string, value: string | undefined) => {
        if (value === undefined) return;
        r.message(
          4,
          new ProtoWriter(key.length + value.length + 16).string(1, key)
            .message(2, new ProtoWriter(value.length + 8).string(3, value)),
        );
      };
      string("grpc_status", grpcStatusName(error.status));
      string("error_type", error.type);
      string("exception", error.exception);
      string("request_id", error.requestId);
      string("bound", error.bound);
      string("waited", error.waited);
    }
    w.message(2, r);
  }
  return w.finish();
}

/** A `ModelStreamInferResponse` of an `InferResponse` (`infer_response` 2). */
function inferResponseMessage(response: Uint8Array): Uint8Array {
  return new ProtoWriter(response.byteLength + 8).tag(2, LEN)
    .varint(response.byteLength).raw(response).finish();
}

/** Triton's flag of a stream's last response to a request. */
const final = (last: boolean) => ({ triton_final_response: last });

/** The `id` of a request's JSON header, for its error's answer. */
function idOf(header: Uint8Array): string | undefined {
  try {
    const id = JSON.parse(new TextDecoder().decode(header)).id;
    return typeof id === "string" ? id : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Runs the stream on `stream` to its end: answers each request message,
 * then ends with OK (the client's half-close), or with the status that
 * ended it early (a frame over the limit, the deadline); nothing when the
 * client left.
 */
export function streamInfer(
  stream: http2.ServerHttp2Stream,
  rest: RestCall,
  options: StreamInferOptions,
): Promise<void> {
  const window = options.window ?? 16;
  const { abort, stop, retired } = options;
  // The answers the connection's client has not read, all its streams'.
  const unread = unreadOf(stream);
  let waiting: (() => void) | undefined;
  return new Promise<void>((resolve) => {
    // The bytes read and not yet a whole message: chunks, joined only once
    // a message is whole (never a copy per chunk).
    let chunks: Uint8Array[] = [];
    let size = 0;
    const joined = (): Uint8Array => {
      if (chunks.length !== 1) {
        const out = new Uint8Array(size);
        let at = 0;
        for (const c of chunks) {
          out.set(c, at);
          at += c.byteLength;
        }
        chunks = [out];
      }
      return chunks[0]!;
    };
    let inFlight = 0;
    let halfClosed = false;
    let writeBlocked = false;
    let done = false;
    const onStop = () => flow();
    try {
      stream.respond(
        { ":status": 200, "content-type": "application/grpc" },
        { waitForTrailers: true },
      );
    } catch {
      resolve();
      return;
    }
    const finish = (answer: Answer) => {
      if (done) return;
      done = true;
      waiting?.();
      stop?.removeEventListener("abort", onStop);
      retired?.removeEventListener("abort", onRetired);
      clearTimeout(retiredTimer);
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.on("data", () => {});
      if (answer.status !== GrpcStatus.OK) abort.abort();
      const trailers: Record<string, string> = {
        ...answer.headers,
        "grpc-status": String(answer.status),
      };
      if (answer.message !== undefined) {
        trailers["grpc-message"] = percentEncode(answer.message);
      }
      if (stream.destroyed || stream.closed) return resolve();
      stream.once("wantTrailers", () => {
        try {
          stream.sendTrailers(trailers);
        } catch {
          // The stream went meanwhile.
        }
      });
      try {
        stream.end();
      } catch {
        // Reset by the client.
      }
      resolve();
    };
    /**
     * The call's token retired: the stream ends UNAUTHENTICATED saying why,
     * and is reset if its client has not taken that end within
     * {@linkcode RETIRED_FLUSH_MS} (it reads nothing: its answers, and the
     * trailers behind them, wait for HTTP/2 flow control). Before, such a
     * stream's loop waited for room to write an answer the client never
     * took: it saw no retirement, and stayed open for as long as its
     * client did (a drain waited its whole grace for it).
     */
    const retire = (message: string) => {
      if (done) return;
      finish({ status: GrpcStatus.UNAUTHENTICATED, message });
      if (stream.destroyed || stream.closed) return;
      const timer = setTimeout(() => {
        try {
          if (!stream.destroyed && !stream.closed) stream.close(CANCEL);
        } catch {
          // Gone meanwhile.
        }
      }, RETIRED_FLUSH_MS);
      stream.once("close", () => clearTimeout(timer));
    };
    /**
     * Told of the retirement by the REST route's hold. A client that reads
     * gets the infer's own end (its error response, then UNAUTHENTICATED)
     * through the REST body, as before; one that does not (the loop waits
     * for room), or whose stream has not ended within
     * {@linkcode RETIRED_FLUSH_MS}, is ended here.
     */
    let retiredTimer: ReturnType<typeof setTimeout> | undefined;
    const onRetired = () => {
      const message = String(retired?.reason);
      if (writeBlocked || unread?.full) return retire(message);
      retiredTimer = setTimeout(() => retire(message), RETIRED_FLUSH_MS);
    };
    const flow = () => {
      if (done) return;
      pump();
      if (done) return;
      if (unread?.full && waiting === undefined) {
        // Woken once the connection's client has read enough.
        waiting = unread.onRoom(() => {
          waiting = undefined;
          flow();
        });
      }
      if (
        inFlight >= window || writeBlocked || stop?.aborted || unread?.full
      ) stream.pause();
      else stream.resume();
      if (halfClosed && inFlight === 0) {
        // What is left after the whole messages is a truncated one.
        finish(
          size === 0 ? { status: GrpcStatus.OK } : {
            status: GrpcStatus.INVALID_ARGUMENT,
            message: "Cannot read the request: its last message is truncated",
          },
        );
      } else if (stop?.aborted && inFlight === 0) {
        // Its infers answered, the requests not read yet are not run: the
        // client sends them again on a new stream (elsewhere, or later).
        finish({
          status: GrpcStatus.UNAVAILABLE,
          message:
            "The server is shutting down: the stream ended (the requests without an answer did not run; send them on a new stream)",
          // As the REST routes' 503 of a drain (ShuttingDownError).
          headers: DRAIN_RETRY,
        });
      }
    };
    const write = (message: Uint8Array) => {
      if (done || stream.destroyed || stream.closed) return;
      // An answer of an infer in flight while the connection holds its
      // limit unread: the stream is reset (its close cancels the others).
      if (resetIfFull(stream)) return;
      if (!writeCounted(stream, frame(message)) && !writeBlocked) {
        writeBlocked = true;
        stream.once("drain", () => {
          writeBlocked = false;
          flow();
        });
      }
    };
    const one = async (bytes: Uint8Array) => {
      let request: { name: string; version: string; id?: string } | undefined;
      try {
        const infer = decodeModelInferRequest(bytes);
        const id = idOf(infer.header);
        request = {
          name: infer.name,
          version: infer.version,
          ...(id === undefined ? {} : { id }),
        };
        const res = await inferRest(infer, rest, INFERENCE_STREAM_TYPE);
        if (res.status === 401) {
          // The call's credentials, not this infer's: the stream ends.
          return retire(await errorMessage(res));
        }
        if (!res.ok) {
          const error = await restError(res);
          write(
            errorResponse(error.message, request, {
              ...error,
              status: grpcStatusOf(res.status),
            }),
          );
          return;
        }
        if (
          res.headers.get("content-type") === INFERENCE_STREAM_TYPE &&
          res.body !== null
        ) {
          return await items(res.body, infer, request);
        }
        // One response: the request's last.
        write(
          inferResponseMessage(await inferResponse(res, infer, final(true))),
        );
      } catch (err) {
        if (abort.signal.aborted) return;
        write(errorResponse(answerOfError(err).message ?? "", request));
      }
    };
    /**
     * Until the client takes what was written, and its connection holds
     * less than its limit unread (or it leaves).
     */
    const writable = async () => {
      while (
        (writeBlocked || unread?.full) && !done && !stream.destroyed
      ) {
        await new Promise<void>((resolve) => {
          let cancel = () => {};
          const on = () => {
            stream.off("drain", on);
            stream.off("close", on);
            cancel();
            resolve();
          };
          stream.on("drain", on);
          stream.on("close", on);
          if (unread?.full) cancel = unread.onRoom(on);
        });
      }
    };
    /**
     * A yielding model's items, a response each as they come (none read
     * while the client does not read): each flagged not final but the last;
     * or, when the request asked for an empty final response, all not
     * final and then an empty one that is (Triton's decoupled form).
     */
    const items = async (
      body: ReadableStream<Uint8Array>,
      infer: GrpcInferCall,
      request: { name: string; version: string; id?: string },
    ) => {
      let held: { header: unknown; binary: Uint8Array } | undefined;
      const send = (
        item: { header: unknown; binary: Uint8Array },
        last: boolean,
      ) =>
        write(inferResponseMessage(
          encodeModelInferResponse(
            item.header as Record<string, unknown>,
            item.binary,
            infer.raw,
            final(last),
          ),
        ));
      const empty = {
        header: {
          model_name: request.name,
          ...(request.version === "" ? {} : { model_version: request.version }),
          ...(request.id === undefined ? {} : { id: request.id }),
        },
        binary: new Uint8Array(0),
      };
      for await (const item of streamItems(body)) {
        await writable();
        if (done) return;
        if (item.kind === "error") {
          if (held !== undefined) send(held, false);
          write(
            errorResponse(
              item.message,
              request,
              item.status === undefined ? undefined : {
                ...restErrorOf(item.body, item.message),
                status: grpcStatusOf(item.status),
              },
            ),
          );
          // The call's credentials retired (a reload, a token file), not
          // this infer's failure: the stream ends, as at a 401 before the
          // first item. It stayed open, its infers refused one by one, for
          // as long as the client kept it (chaos51).
          if (item.status === 401) return retire(item.message);
          return;
        }
        if (infer.emptyFinal) send(item, false);
        else {
          if (held !== undefined) send(held, false);
          held = item;
        }
      }
      send(held ?? empty, true);
    };
    /** Starts the infers of the messages read, up to the window. */
    const pump = () => {
      while (
        !done && !stop?.aborted && !unread?.full && inFlight < window &&
        size >= 5
      ) {
        const head = chunks[0]!.byteLength >= 5 ? chunks[0]! : joined();
        const view = new DataView(head.buffer, head.byteOffset, 5);
        if (head[0] !== 0) {
          return finish({
            status: GrpcStatus.INTERNAL,
            message:
              "Cannot read the message: it is compressed, and the call has no grpc-encoding",
          });
        }
        const length = view.getUint32(1);
        if (length > options.limit) {
          return finish({
            status: GrpcStatus.RESOURCE_EXHAUSTED,
            message:
              `Cannot read the message: it has ${length} bytes, over the gateway's body limit of ${options.limit} bytes (--body-limit)`,
          });
        }
        if (size < 5 + length) break;
        const all = joined();
        const message = all.slice(5, 5 + length);
        const rest = all.subarray(5 + length);
        chunks = rest.byteLength === 0 ? [] : [rest];
        size = rest.byteLength;
        inFlight++;
        one(message).finally(() => {
          inFlight--;
          flow();
        });
      }
    };
    const onData = (chunk: Uint8Array) => {
      chunks.push(chunk);
      size += chunk.byteLength;
      flow();
    };
    const onEnd = () => {
      halfClosed = true;
      flow();
    };
    stream.on("data", onData);
    stream.on("end", onEnd);
    stream.on("error", () => {});
    stop?.addEventListener("abort", onStop, { once: true });
    if (retired?.aborted) onRetired();
    else retired?.addEventListener("abort", onRetired, { once: true });
    stream.once("close", () => {
      waiting?.();
      stop?.removeEventListener("abort", onStop);
      retired?.removeEventListener("abort", onRetired);
      clearTimeout(retiredTimer);
      abort.abort();
      done = true;
      resolve();
    });
    options.deadline?.then(finish);
  });
}
