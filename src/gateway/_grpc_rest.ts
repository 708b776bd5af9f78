/**
 * The gRPC transport's translation to REST: a call becomes the `/v2`
 * request that means the same, made through the gateway's `fetch` (so the
 * token, the body limit, request ids, metrics, the drain and
 * cancel-on-disconnect are the REST routes' own), and the REST answer
 * becomes the call's (a message, or its status as gRPC's).
 *
 * @module
 */
import type * as http2 from "node:http2";
import type { ServeRequestInfo } from "../runtime/types.ts";
import type { Answer } from "./_grpc_framing.ts";
import { GrpcStatus, grpcStatusOf } from "./_grpc_status.ts";
import { markTransportRequest } from "./_inference_stream.ts";

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
  // The transport's choice of the REST answer's form (ModelStreamInfer's
  // streamed form), not the client's: a call's answer is protobuf.
  "accept",
]);

/** The gateway as the transport sees it. */
export interface GrpcGateway {
  /** The gateway's handler (its `app.fetch`). */
  fetch: (
    request: Request,
    info: ServeRequestInfo,
  ) => Response | Promise<Response>;
  /** The gateway's HTTP port (the `Host` of the REST requests made). */
  httpPort: () => number;
}

/** A REST request of one call. */
export type RestCall = (
  path: string,
  init?: { method?: string; body?: Uint8Array; headers?: HeadersInit },
) => Promise<Response>;

/**
 * The REST requests of the call on `stream`: its metadata as their headers
 * (but the transport's, and under the headers the transport sets), cancelled
 * with `signal`; marked as the transport's own.
 */
export function restCall(
  gateway: GrpcGateway,
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  signal: AbortSignal,
  onRetired?: (message: string) => void,
): RestCall {
  return async (path, init = {}) => {
    const forwarded = new Headers();
    for (const [name, value] of Object.entries(headers)) {
      if (
        name.startsWith(":") || TRANSPORT_HEADERS.has(name) ||
        value === undefined
      ) continue;
      forwarded.set(name, Array.isArray(value) ? value.join(", ") : value);
    }
    // The transport's own headers (the body's form) win over the client's
    // metadata of the same name.
    new Headers(init.headers).forEach((value, name) =>
      forwarded.set(name, value)
    );
    const request = markTransportRequest(
      new Request(
        `http://localhost:${gateway.httpPort()}${path}`,
        {
          method: init.method ?? "GET",
          headers: forwarded,
          signal,
          ...(init.body === undefined ? {} : { body: init.body as BodyInit }),
        },
      ),
      onRetired,
    );
    return await gateway.fetch(request, {
      remoteAddr: stream.session?.socket?.remoteAddress ?? "",
    });
  };
}

const enc = encodeURIComponent;

/** A model's `/v2` path: `/v2/models/{name}[/versions/{version}]`. */
export function modelPath(name: string, version: string): string {
  return `/v2/models/${enc(name)}${
    version === "" ? "" : `/versions/${enc(version)}`
  }`;
}

/** A success, with the REST answer's request id as response metadata. */
export function ok(res: Response, body: Uint8Array): Answer {
  const id = res.headers.get("x-request-id");
  return {
    status: GrpcStatus.OK,
    body,
    ...(id === null ? {} : { headers: { "x-request-id": id } }),
  };
}

/** A REST error's message: its JSON `error` (or `error.message`), else its text. */
export async function errorMessage(res: Response): Promise<string> {
  return (await restError(res)).message;
}

/** A REST error as a gRPC stream's error response tells it. */
export interface RestError {
  /** Its message: {@linkcode errorMessage}'s. */
  message: string;
  /** Its `error.type` (`TimeoutError`), when its body has one. */
  type?: string;
  /** A model's exception's type (`error.exception`: `ValueError`). */
  exception?: string;
  /** Its `error.requestId`, when its body has one. */
  requestId?: string;
  /** A timeout's `error.bound` (`firstItemTimeout`), when it has one. */
  bound?: string;
  /** A timeout's `error.waited` (`queue`, `worker`), when it has one. */
  waited?: string;
}

/** A REST error's message, and its type and a timeout's bound and wait. */
export async function restError(res: Response): Promise<RestError> {
  const text = await res.text().catch(() => "");
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    // Not JSON: the text as it is.
  }
  return restErrorOf(body, text || `HTTP ${res.status}`);
}

/**
 * A REST error body's (`{"error": ...}`) message and fields: `fallback` as
 * its message when it has none.
 */
export function restErrorOf(body: unknown, fallback: string): RestError {
  const out: RestError = { message: fallback };
  const error = (body as { error?: unknown } | null)?.error as
    | string
    | Record<string, unknown>
    | undefined;
  if (typeof error === "string") out.message = error;
  else if (typeof error === "object" && error !== null) {
    if (typeof error.message === "string") out.message = error.message;
    for (const key of ["type", "exception", "requestId", "bound", "waited"]) {
      const value = error[key];
      if (typeof value === "string") out[key as keyof RestError] = value;
    }
  }
  return out;
}

/**
 * A REST error as its gRPC status, its message as `grpc-message`; its
 * `Retry-After` as `retry-after` and as gRPC's own retry hint,
 * `grpc-retry-pushback-ms` (gRPC A6), which a client's retry policy
 * obeys: the same wait, in ms.
 */
export async function failure(res: Response): Promise<Answer> {
  const message = await errorMessage(res);
  const headers: Record<string, string> = {};
  const id = res.headers.get("x-request-id");
  if (id !== null) headers["x-request-id"] = id;
  const retry = res.headers.get("retry-after");
  if (retry !== null) {
    headers["retry-after"] = retry;
    const pushback = retryPushbackMs(retry);
    if (pushback !== undefined) headers["grpc-retry-pushback-ms"] = pushback;
  }
  return { status: grpcStatusOf(res.status), message, headers };
}

/**
 * A `Retry-After` of delta-seconds (what the gateway sends: an error's
 * `details.retryAfterMs` rounded up to seconds) as gRPC's
 * `grpc-retry-pushback-ms`; `undefined` for another form (an HTTP date a
 * model's own `HTTPError` may set): no hint rather than a wrong one.
 *
 * @example
 * ```ts ignore
 * retryPushbackMs("60"); // "60000"
 * ```
 */
export function retryPushbackMs(retryAfter: string): string | undefined {
  const seconds = retryAfter.trim();
  if (!/^\d{1,9}$/.test(seconds)) return undefined;
  return String(Number(seconds) * 1000);
}
