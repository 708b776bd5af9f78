/**
 * gRPC's framing over one HTTP/2 stream (`node:http2`): a unary call's one
 * length-prefixed message read with its limits, an answer written as a
 * message and trailers or as Trailers-Only, and the HTTP answers of a
 * request that is no gRPC call.
 *
 * @module
 */
import type * as http2 from "node:http2";
import { GrpcMessageError } from "./_grpc_message_error.ts";
import { ProtobufError } from "./_protobuf.ts";
import { GrpcStatus, percentEncode } from "./_grpc_status.ts";
import { resetIfFull, writeCounted } from "./_grpc_unread.ts";

/** What a call answers: a message, or a status. */
export interface Answer {
  status: number;
  message?: string;
  body?: Uint8Array;
  headers?: Record<string, string>;
}

/** An error thrown while reading a call as its answer. */
export function answerOfError(err: unknown): Answer {
  if (err instanceof GrpcMessageError || err instanceof ProtobufError) {
    return { status: GrpcStatus.INVALID_ARGUMENT, message: err.message };
  }
  return {
    status: GrpcStatus.INTERNAL,
    message: `Cannot answer: ${err instanceof Error ? err.message : err}`,
  };
}

/** Reads and drops what the client still sends (its answer is known). */
export function discard(stream: http2.ServerHttp2Stream): void {
  stream.on("data", () => {});
  stream.on("error", () => {});
}

export function respondHttp(
  stream: http2.ServerHttp2Stream,
  status: number,
  text: string,
): void {
  discard(stream);
  if (stream.destroyed || stream.headersSent) return;
  stream.respond({ ":status": status, "content-type": "text/plain" });
  stream.end(text);
}

/**
 * The answer, as a message and trailers or as trailers only. A message on a
 * connection that holds its limit of answers not read resets the stream
 * (ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED to gRPC clients), unwritten,
 * unless not `bounded`.
 */
export function send(
  stream: http2.ServerHttp2Stream,
  answer: Answer,
  bounded = true,
): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  if (bounded && answer.body !== undefined && resetIfFull(stream)) return;
  const trailers: Record<string, string> = {
    "grpc-status": String(answer.status),
  };
  if (answer.message !== undefined) {
    trailers["grpc-message"] = percentEncode(answer.message);
  }
  try {
    if (answer.body === undefined) {
      // Trailers-Only: one HEADERS frame that ends the stream.
      stream.respond(
        {
          ":status": 200,
          "content-type": "application/grpc",
          ...answer.headers,
          ...trailers,
        },
        { endStream: true },
      );
      return;
    }
    stream.respond(
      { ":status": 200, "content-type": "application/grpc", ...answer.headers },
      { waitForTrailers: true },
    );
    stream.once("wantTrailers", () => {
      try {
        stream.sendTrailers(trailers);
      } catch {
        // The stream went meanwhile.
      }
    });
    const frame = new Uint8Array(5 + answer.body.byteLength);
    new DataView(frame.buffer).setUint32(1, answer.body.byteLength);
    frame.set(answer.body, 5);
    writeCounted(stream, frame);
    stream.end();
  } catch {
    // Reset by the client between the check and the write.
  }
}

/**
 * The call's one message, or the answer that refuses it: a length over the
 * limit (RESOURCE_EXHAUSTED as soon as its prefix is read, before its
 * bytes), a compressed one (no `grpc-encoding`), none or more than one, a
 * truncated one (INVALID_ARGUMENT), the client gone (CANCELLED, unsent),
 * nothing sent for `stallMs` (DEADLINE_EXCEEDED, then the stream reset;
 * `0`: no bound).
 */
export function readMessage(
  stream: http2.ServerHttp2Stream,
  limit: number,
  stallMs = 0,
): Promise<Uint8Array | Answer> {
  return new Promise((resolve) => {
    const chunks: Uint8Array[] = [];
    let size = 0;
    let expected = -1;
    let done = false;
    // A client that sends nothing for stallMs: its call is not kept open
    // (it kept the connection from its idle timeout for ever).
    let last = 0;
    let stall: ReturnType<typeof setTimeout> | undefined;
    const stalled = () => {
      const left = last + stallMs - Date.now();
      if (left > 0) {
        stall = setTimeout(stalled, left);
        return;
      }
      finish({
        status: GrpcStatus.DEADLINE_EXCEEDED,
        message:
          `Cannot read the request: nothing came for ${stallMs} ms (the gRPC port's idle timeout)`,
      });
      // The client's half is not ended: reset once the answer is written
      // (RST_STREAM NO_ERROR), so that the connection can close when idle.
      setTimeout(() => {
        if (!stream.closed && !stream.destroyed) stream.close(0);
      }, 0);
    };
    if (stallMs > 0) {
      last = Date.now();
      stall = setTimeout(stalled, stallMs);
    }
    const finish = (result: Uint8Array | Answer) => {
      if (done) return;
      done = true;
      clearTimeout(stall);
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("close", onClose);
      if (!(result instanceof Uint8Array)) discard(stream);
      resolve(result);
    };
    const onData = (chunk: Uint8Array) => {
      if (stall !== undefined) last = Date.now();
      chunks.push(chunk);
      size += chunk.byteLength;
      if (expected < 0 && size >= 5) {
        const head = concat(chunks, size).subarray(0, 5);
        if (head[0] !== 0) {
          return finish({
            status: head[0] === 1
              ? GrpcStatus.INTERNAL
              : GrpcStatus.INVALID_ARGUMENT,
            message: head[0] === 1
              ? "Cannot read the message: it is compressed, and the call has no grpc-encoding"
              : `Cannot read the message: compressed flag ${head[0]}`,
          });
        }
        expected = new DataView(head.buffer, head.byteOffset, 5).getUint32(1);
        if (expected > limit) {
          return finish({
            status: GrpcStatus.RESOURCE_EXHAUSTED,
            message:
              `Cannot read the message: it has ${expected} bytes, over the gateway's body limit of ${limit} bytes (--body-limit)`,
          });
        }
      }
      if (expected >= 0 && size > 5 + expected) {
        finish({
          status: GrpcStatus.INVALID_ARGUMENT,
          message:
            "Cannot read the request: more than one message (the method is unary)",
        });
      }
    };
    const onEnd = () => {
      if (size === 0) {
        return finish({
          status: GrpcStatus.INVALID_ARGUMENT,
          message: "Cannot read the request: no message (the method is unary)",
        });
      }
      if (expected < 0 || size < 5 + expected) {
        return finish({
          status: GrpcStatus.INVALID_ARGUMENT,
          message: `Cannot read the request: its message is truncated (${
            Math.max(size - 5, 0)
          } bytes of ${expected < 0 ? "a length not given" : expected})`,
        });
      }
      finish(concat(chunks, size).subarray(5));
    };
    const onClose = () =>
      finish({ status: GrpcStatus.CANCELLED, message: "Cancelled" });
    stream.on("data", onData);
    stream.on("end", onEnd);
    stream.on("close", onClose);
    stream.on("error", () => {});
  });
}

export function concat(chunks: Uint8Array[], size: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  chunks.length = 0;
  chunks.push(out);
  return out;
}
