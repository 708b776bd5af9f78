/**
 * The Open Inference Protocol's gRPC transport (KServe V2
 * `inference.GRPCInferenceService`, Triton's port 8001): plain-text HTTP/2
 * (h2c, what gRPC clients use for an insecure channel) on its own port,
 * with gRPC's framing written here (`node:http2`, in Deno and Bun alike;
 * no gRPC library).
 *
 * Each call becomes the `/v2` REST request that means the same and goes
 * through the gateway's `fetch`: one path for both transports, so the
 * token, the body limit, request ids, metrics (a call counts as its REST
 * route), the drain and cancel-on-disconnect are the REST routes' own.
 * docs/gateway.md, "gRPC".
 *
 * @module
 */
import * as http2 from "node:http2";
import type { ServeRequestInfo } from "../runtime/types.ts";
import {
  decodeModelInferRequest,
  decodeModelRef,
  encodeFlag,
  encodeModelInferResponse,
  encodeModelMetadata,
  encodeServerMetadata,
  GrpcMessageError,
} from "./_grpc_inference_messages.ts";
import { ProtobufError } from "./_protobuf.ts";

/** gRPC status codes. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/**
 * The gRPC status of a REST status: docs/gateway.md, "gRPC" (the table).
 *
 * @example
 * ```ts
 * import { grpcStatusOf } from "./grpc_server.ts";
 * console.log(grpcStatusOf(404)); // 5 (NOT_FOUND)
 * ```
 */
export function grpcStatusOf(status: number): number {
  switch (status) {
    case 400:
    case 422:
      return GrpcStatus.INVALID_ARGUMENT;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.NOT_FOUND;
    case 405:
    case 501:
      return GrpcStatus.UNIMPLEMENTED;
    case 408:
    case 504:
      return GrpcStatus.DEADLINE_EXCEEDED;
    case 409:
    case 412:
      return GrpcStatus.FAILED_PRECONDITION;
    case 413:
    case 429:
      return GrpcStatus.RESOURCE_EXHAUSTED;
    case 499:
      return GrpcStatus.CANCELLED;
    case 503:
      return GrpcStatus.UNAVAILABLE;
    default:
      return status >= 500 ? GrpcStatus.INTERNAL : GrpcStatus.UNKNOWN;
  }
}

/** The service's path prefix. */
const SERVICE = "/inference.GRPCInferenceService/";

/** The methods answered (the others: UNIMPLEMENTED). */
const METHODS = new Set([
  "ServerLive",
  "ServerReady",
  "ModelReady",
  "ServerMetadata",
  "ModelMetadata",
  "ModelInfer",
]);

/** Request metadata that is the transport's, not passed to the gateway. */
const TRANSPORT_HEADERS = new Set([
  "te",
  "content-type",
  "content-length",
  "grpc-timeout",
  "grpc-encoding",
  "grpc-accept-encoding",
  "user-agent",
  "host",
]);

/** The longest `grpc-message` sent (a model's message can be long). */
const MAX_MESSAGE = 4096;

/**
 * `grpc-message`'s percent-encoding (the spec's: bytes outside printable
 * ASCII, and `%`).
 */
export function percentEncode(message: string): string {
  const text = message.length > MAX_MESSAGE
    ? `${message.slice(0, MAX_MESSAGE)}...`
    : message;
  let out = "";
  for (const byte of new TextEncoder().encode(text)) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25
      ? String.fromCharCode(byte)
      : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** `grpc-timeout` in ms (`undefined`: none or unreadable). */
export function grpcTimeoutMs(value: string | undefined): number | undefined {
  const m = value === undefined ? null : /^(\d{1,8})([HMSmun])$/.exec(value);
  if (m === null) return undefined;
  const n = Number(m[1]);
  const scale: Record<string, number> = {
    H: 3_600_000,
    M: 60_000,
    S: 1000,
    m: 1,
    u: 1e-3,
    n: 1e-6,
  };
  return n * scale[m[2]!]!;
}

/** What a call answers: a message, or a status. */
interface Answer {
  status: number;
  message?: string;
  body?: Uint8Array;
  headers?: Record<string, string>;
}

/**
 * Options of {@linkcode serveGrpc}.
 *
 * @example
 * ```ts ignore
 * const options: GrpcServeOptions = { hostname: "127.0.0.1", port: 8001, fetch: app.fetch, httpPort: () => 8000, bodyLimit: 1 << 20 };
 * ```
 */
export interface GrpcServeOptions {
  /** Address to bind. */
  hostname: string;
  /** Port to bind (`0`: a free one). */
  port: number;
  /** The gateway's handler (its `app.fetch`). */
  fetch: (
    request: Request,
    info: ServeRequestInfo,
  ) => Response | Promise<Response>;
  /** The gateway's HTTP port (the `Host` of the REST requests made). */
  httpPort: () => number;
  /** The largest request message in bytes (the gateway's body limit). */
  bodyLimit: number;
  /** Concurrent calls per connection (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`). @default {100} */
  maxConcurrentStreams?: number;
  /**
   * Calls per connection, after which the server asks the client to move
   * on (a GOAWAY that still accepts the calls it sent meanwhile: gRPC
   * clients put their next calls on a new connection by themselves) and
   * closes the connection once its calls are answered; a connection is
   * closed outright at this many plus `maxConcurrentStreams` (the calls
   * over that get UNAVAILABLE, "Stream refused", which clients may retry).
   * `serve` sets 64 in Deno, whose `node:http2` server aborts the process
   * (an nghttp2 assertion, `find_stream_on_goaway_func`) when a client
   * closes a connection that carried more than about 100 streams.
   * @default {Infinity}
   */
  maxStreamsPerConnection?: number;
}

/**
 * A running gRPC server.
 *
 * @example
 * ```ts ignore
 * const grpc = await serveGrpc(options);
 * console.log(grpc.port);
 * await grpc.close();
 * ```
 */
export interface GrpcServer {
  /** The bound port. */
  readonly port: number;
  /** The bound address. */
  readonly hostname: string;
  /** Calls in flight. */
  readonly inFlight: number;
  /**
   * Stops listening, lets the calls in flight answer for up to `graceMs`,
   * then closes every connection.
   */
  close(graceMs?: number): Promise<void>;
}

/**
 * Starts the gRPC transport on `options.hostname:port`.
 *
 * @example
 * ```ts ignore
 * const grpc = await serveGrpc({ hostname: "127.0.0.1", port: 0, fetch: app.fetch, httpPort: () => 8000, bodyLimit: 1 << 20 });
 * ```
 */
export async function serveGrpc(
  options: GrpcServeOptions,
): Promise<GrpcServer> {
  /** Each open connection, and its streams. */
  const sessions = new Map<
    http2.Http2Session,
    { carried: number; active: number; warned: boolean }
  >();
  const concurrent = options.maxConcurrentStreams ?? 100;
  const perConnection = options.maxStreamsPerConnection ?? Infinity;
  const closeIdle = (session: http2.Http2Session) => {
    if (!session.closed && !session.destroyed) session.close();
  };
  let inFlight = 0;
  let idle: (() => void) | undefined;
  const server = http2.createServer({
    settings: { maxConcurrentStreams: concurrent },
    // An HTTP/1.1 client is closed at once, not after 10 s.
    unknownProtocolTimeout: 1000,
  });
  server.on("session", (session: http2.Http2Session) => {
    sessions.set(session, { carried: 0, active: 0, warned: false });
    session.on("close", () => sessions.delete(session));
    session.on("error", () => {});
  });
  server.on(
    "stream",
    (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      inFlight++;
      const session = stream.session;
      const state = session === undefined ? undefined : sessions.get(session);
      if (state !== undefined) {
        state.carried++;
        state.active++;
        if (state.carried === perConnection) {
          // "Go elsewhere", refusing nothing yet (the last stream id
          // possible): the calls the client sent meanwhile are answered.
          state.warned = true;
          try {
            session!.goaway(http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
          } catch {
            // Closing already.
          }
        }
        if (state.carried >= perConnection + concurrent) closeIdle(session!);
      }
      handle(stream, headers, options).finally(() => {
        if (state !== undefined) {
          state.active--;
          if (state.warned && state.active === 0) closeIdle(session!);
        }
        inFlight--;
        if (inFlight === 0) idle?.();
      });
    },
  );
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error) => reject(err);
    server.once("error", fail);
    server.listen(options.port, options.hostname, () => {
      server.off("error", fail);
      resolve();
    });
  });
  server.on("error", () => {});
  const address = server.address();
  const port = typeof address === "object" && address !== null
    ? address.port
    : options.port;
  let closing: Promise<void> | undefined;
  return {
    port,
    hostname: options.hostname,
    get inFlight() {
      return inFlight;
    },
    close(graceMs = 0) {
      closing ??= (async () => {
        server.close();
        if (inFlight > 0) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([
            new Promise<void>((resolve) => (idle = resolve)),
            new Promise<void>((resolve) => {
              timer = setTimeout(resolve, graceMs);
            }),
          ]);
          clearTimeout(timer);
        }
        // Written answers reach the client before the connection goes.
        await new Promise((resolve) => setTimeout(resolve, 0));
        for (const session of sessions.keys()) session.destroy();
        sessions.clear();
      })();
      return closing;
    },
  };
}

/** One call, settled once: its answer, or nothing when the client left. */
async function handle(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  options: GrpcServeOptions,
): Promise<void> {
  const path = String(headers[":path"] ?? "");
  const contentType = String(headers["content-type"] ?? "");
  if (
    contentType !== "application/grpc" &&
    !contentType.startsWith("application/grpc+") &&
    !contentType.startsWith("application/grpc;")
  ) {
    // Not a gRPC client: an HTTP answer (the spec's 415).
    respondHttp(stream, 415, "expected content-type application/grpc\n");
    return;
  }
  if (headers[":method"] !== "POST") {
    respondHttp(stream, 405, "gRPC calls are POST\n");
    return;
  }
  const encoding = headers["grpc-encoding"];
  if (encoding !== undefined && encoding !== "identity") {
    discard(stream);
    return send(stream, {
      status: GrpcStatus.UNIMPLEMENTED,
      message: `grpc-encoding ${
        String(encoding).slice(0, 64)
      } is not supported (identity only: send uncompressed messages)`,
      headers: { "grpc-accept-encoding": "identity" },
    });
  }
  const method = path.startsWith(SERVICE)
    ? path.slice(SERVICE.length)
    : undefined;
  if (method === undefined || !METHODS.has(method)) {
    discard(stream);
    return send(stream, {
      status: GrpcStatus.UNIMPLEMENTED,
      message: `Method ${
        path.slice(0, 128)
      } is not implemented (inference.GRPCInferenceService answers ${
        [...METHODS].join(", ")
      })`,
    });
  }
  const abort = new AbortController();
  const gone = () => abort.abort();
  stream.once("close", gone);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const timeout = grpcTimeoutMs(
      headers["grpc-timeout"] as string | undefined,
    );
    const deadline = timeout === undefined
      ? undefined
      : new Promise<Answer>((resolve) => {
        timer = setTimeout(() => {
          resolve({
            status: GrpcStatus.DEADLINE_EXCEEDED,
            message: "Deadline exceeded",
          });
          abort.abort();
        }, Math.max(1, timeout));
      });
    const work = (async (): Promise<Answer> => {
      const message = await readMessage(stream, options.bodyLimit);
      if (!(message instanceof Uint8Array)) return message;
      return await call(method, message, stream, headers, options, abort);
    })();
    const answer = deadline === undefined
      ? await work
      : await Promise.race([work, deadline]);
    send(stream, answer);
  } catch (err) {
    send(stream, answerOfError(err));
  } finally {
    clearTimeout(timer);
    stream.off("close", gone);
  }
}

/** An error thrown while reading a call as its answer. */
function answerOfError(err: unknown): Answer {
  if (err instanceof GrpcMessageError || err instanceof ProtobufError) {
    return { status: GrpcStatus.INVALID_ARGUMENT, message: err.message };
  }
  return {
    status: GrpcStatus.INTERNAL,
    message: `Cannot answer: ${err instanceof Error ? err.message : err}`,
  };
}

/** Reads and drops what the client still sends (its answer is known). */
function discard(stream: http2.ServerHttp2Stream): void {
  stream.on("data", () => {});
  stream.on("error", () => {});
}

function respondHttp(
  stream: http2.ServerHttp2Stream,
  status: number,
  text: string,
): void {
  discard(stream);
  if (stream.destroyed || stream.headersSent) return;
  stream.respond({ ":status": status, "content-type": "text/plain" });
  stream.end(text);
}

/** The answer, as a message and trailers or as trailers only. */
function send(stream: http2.ServerHttp2Stream, answer: Answer): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
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
    stream.end(frame);
  } catch {
    // Reset by the client between the check and the write.
  }
}

/**
 * The call's one message, or the answer that refuses it: a length over the
 * limit (RESOURCE_EXHAUSTED as soon as its prefix is read, before its
 * bytes), a compressed one (no `grpc-encoding`), none or more than one, a
 * truncated one (INVALID_ARGUMENT), the client gone (CANCELLED, unsent).
 */
function readMessage(
  stream: http2.ServerHttp2Stream,
  limit: number,
): Promise<Uint8Array | Answer> {
  return new Promise((resolve) => {
    const chunks: Uint8Array[] = [];
    let size = 0;
    let expected = -1;
    let done = false;
    const finish = (result: Uint8Array | Answer) => {
      if (done) return;
      done = true;
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("close", onClose);
      if (!(result instanceof Uint8Array)) discard(stream);
      resolve(result);
    };
    const onData = (chunk: Uint8Array) => {
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

function concat(chunks: Uint8Array[], size: number): Uint8Array {
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

const enc = encodeURIComponent;

/** One method's call through the gateway's REST route. */
async function call(
  method: string,
  message: Uint8Array,
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  options: GrpcServeOptions,
  abort: AbortController,
): Promise<Answer> {
  const rest = (
    path: string,
    init: { method?: string; body?: Uint8Array; headers?: HeadersInit } = {},
  ) => {
    const forwarded = new Headers(init.headers);
    for (const [name, value] of Object.entries(headers)) {
      if (
        name.startsWith(":") || TRANSPORT_HEADERS.has(name) ||
        value === undefined
      ) continue;
      forwarded.set(name, Array.isArray(value) ? value.join(", ") : value);
    }
    const request = new Request(
      `http://localhost:${options.httpPort()}${path}`,
      {
        method: init.method ?? "GET",
        headers: forwarded,
        signal: abort.signal,
        ...(init.body === undefined ? {} : { body: init.body as BodyInit }),
      },
    );
    return options.fetch(request, {
      remoteAddr: stream.session?.socket?.remoteAddress ?? "",
    });
  };
  const modelPath = (name: string, version: string) =>
    `/v2/models/${enc(name)}${
      version === "" ? "" : `/versions/${enc(version)}`
    }`;
  switch (method) {
    case "ServerLive":
      return await flag(await rest("/v2/health/live"), "live");
    case "ServerReady":
      return await flag(await rest("/v2/health/ready"), "ready");
    case "ModelReady": {
      const { name, version } = decodeModelRef(message);
      return await flag(
        await rest(`${modelPath(name, version)}/ready`),
        "ready",
      );
    }
    case "ServerMetadata": {
      const res = await rest("/v2");
      if (!res.ok) return await failure(res);
      return ok(res, encodeServerMetadata(await res.json()));
    }
    case "ModelMetadata": {
      const { name, version } = decodeModelRef(message);
      const res = await rest(modelPath(name, version));
      if (!res.ok) return await failure(res);
      return ok(res, encodeModelMetadata(await res.json()));
    }
    default: {
      const infer = decodeModelInferRequest(message);
      let size = infer.header.byteLength;
      for (const b of infer.binary) size += b.byteLength;
      const body = new Uint8Array(size);
      body.set(infer.header, 0);
      let at = infer.header.byteLength;
      for (const b of infer.binary) {
        body.set(b, at);
        at += b.byteLength;
      }
      const res = await rest(`${modelPath(infer.name, infer.version)}/infer`, {
        method: "POST",
        body,
        headers: {
          "content-type": "application/octet-stream",
          "inference-header-content-length": String(infer.header.byteLength),
        },
      });
      if (!res.ok) return await failure(res);
      const bytes = new Uint8Array(await res.arrayBuffer());
      const length = res.headers.get("inference-header-content-length");
      const split = length === null ? bytes.byteLength : Number(length);
      const header = JSON.parse(
        new TextDecoder().decode(bytes.subarray(0, split)),
      );
      return ok(
        res,
        encodeModelInferResponse(header, bytes.subarray(split), infer.raw),
      );
    }
  }
}

/** A success, with the REST answer's request id as response metadata. */
function ok(res: Response, body: Uint8Array): Answer {
  const id = res.headers.get("x-request-id");
  return {
    status: GrpcStatus.OK,
    body,
    ...(id === null ? {} : { headers: { "x-request-id": id } }),
  };
}

/**
 * A readiness answer: `{live}`/`{ready}` whatever the status (a 503 is
 * "not ready", not an error), else the error.
 */
async function flag(res: Response, key: string): Promise<Answer> {
  if (res.ok || res.status === 503) {
    const body = await res.clone().json().catch(() => undefined) as
      | Record<string, unknown>
      | undefined;
    if (typeof body?.[key] === "boolean") {
      return ok(res, encodeFlag(body[key] as boolean));
    }
  }
  return await failure(res);
}

/** A REST error as its gRPC status, its message as `grpc-message`. */
async function failure(res: Response): Promise<Answer> {
  const text = await res.text().catch(() => "");
  let message = text || `HTTP ${res.status}`;
  try {
    const body = JSON.parse(text) as { error?: unknown };
    const error = body.error as string | { message?: unknown } | undefined;
    if (typeof error === "string") message = error;
    else if (typeof error?.message === "string") message = error.message;
  } catch {
    // Not JSON: the text as it is.
  }
  const headers: Record<string, string> = {};
  const id = res.headers.get("x-request-id");
  if (id !== null) headers["x-request-id"] = id;
  const retry = res.headers.get("retry-after");
  if (retry !== null) headers["retry-after"] = retry;
  return { status: grpcStatusOf(res.status), message, headers };
}
