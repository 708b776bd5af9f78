/**
 * The gateway's OpenTelemetry tracing (docs/gateway.md, "Tracing"): a
 * SERVER span per model call (`POST /v1/models/{name}/execute`,
 * `.../versions/{version}/execute`, `/stream`, `/v2/.../infer`,
 * `:predict`), the client's W3C `traceparent` its parent, sampled
 * parent-based (a parent's decision is followed; without a parent,
 * `sampleRatio`), sent by {@linkcode OtlpExporter}. Every model call sends
 * the model its trace context (`host.trace_context()`): a sampled call's
 * is the gateway's span, the parent of the model's own spans; an unsampled
 * call's is that of a span that is not recorded (the parent's trace id or
 * a new one, a new span id, flags `00`), as an OpenTelemetry SDK's
 * non-recording span propagates: the model's own calls stay in the trace
 * and follow its decision.
 *
 * A stream's span ends with its last event; one still open when the
 * gateway stops, or after `maxStreamSpanMs`, is ended then (and says so:
 * `pyproxy.stream.span_end`), so that no span waits for ever.
 *
 * The app wraps its `fetch` with {@linkcode GatewayTracing.serve} only when
 * tracing is on: off, nothing of this runs and no header is read.
 *
 * @module
 */
import type { Logger } from "../logger.ts";
import type { Runtime, TlsFetch } from "../runtime/types.ts";
import {
  checkTracestate,
  formatTraceparent,
  parseTraceparent,
  RandomHexIds,
} from "../_trace_context.ts";
import { type ExportSpan, OtlpExporter } from "./_otlp_exporter.ts";
import { traceHeadersProblem } from "./_trace_headers.ts";
import { INFERENCE_STREAM_TYPE } from "./_inference_stream.ts";
import { REQUEST_ID_HEADER } from "./error_response.ts";
import { setTimeoutOrNever } from "../_timer.ts";
import type { TracingOptions } from "./tracing_options.ts";

/**
 * What a call's span holds until its response is made; an unsampled call's
 * (`sampled` false) is only the context its model gets.
 */
interface OpenSpan {
  sampled: boolean;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  traceState: string | undefined;
  route: string;
  model: string;
  version: string | undefined;
  path: string;
  scheme: string;
  worker: string | undefined;
  /**
   * The OpenTelemetry HTTP server span's `server.address`, `server.port`,
   * `client.address` and `user_agent.original` (a sampled span's only).
   */
  peer?: Record<string, string | number>;
  startMs: number;
  /**
   * A stream's failure after its first item (its error is its last event,
   * under the 200 its response began with): the status it would have had,
   * and its message.
   */
  failure?: { status: number; message: string };
}

/** The route template of a model call's path, and its name and version. */
interface ModelCall {
  route: string;
  model: string;
  version: string | undefined;
  /** The URL's path as sent (no query), and its scheme. */
  path: string;
  scheme: string;
}

// The model call routes: [path pattern, route template]. The version's
// group is absent from the routes without one.
const MODEL_CALLS: ReadonlyArray<readonly [RegExp, string]> = [
  [/^\/v1\/models\/([^/]+)\/execute$/, "/v1/models/{name}/execute"],
  [
    /^\/v1\/models\/([^/]+)\/versions\/([^/]+)\/execute$/,
    "/v1/models/{name}/versions/{version}/execute",
  ],
  [/^\/v1\/models\/([^/]+)\/stream$/, "/v1/models/{name}/stream"],
  [
    /^\/v1\/models\/([^/]+)\/versions\/([^/]+)\/stream$/,
    "/v1/models/{name}/versions/{version}/stream",
  ],
  [/^\/v2\/models\/([^/]+)\/infer$/, "/v2/models/{name}/infer"],
  [
    /^\/v2\/models\/([^/]+)\/versions\/([^/]+)\/infer$/,
    "/v2/models/{name}/versions/{version}/infer",
  ],
  [/^\/v1\/models\/([^/:]+):predict$/, "/v1/models/{name}:predict"],
  [
    /^\/v1\/models\/([^/:]+)\/versions\/([^/:]+):predict$/,
    "/v1/models/{name}/versions/{version}:predict",
  ],
];

/**
 * The route of a model call (`POST` only), or `undefined` for any other
 * request.
 */
function modelCall(request: Request): ModelCall | undefined {
  if (request.method !== "POST") return undefined;
  const url = request.url;
  const start = url.indexOf("/", url.indexOf("://") + 3);
  if (start < 0) return undefined;
  const query = url.indexOf("?", start);
  const path = query < 0 ? url.slice(start) : url.slice(start, query);
  for (const [pattern, route] of MODEL_CALLS) {
    const match = pattern.exec(path);
    if (match === null) continue;
    return {
      route,
      model: decoded(match[1]!),
      version: match[2] === undefined ? undefined : decoded(match[2]),
      path,
      scheme: url.startsWith("https:") ? "https" : "http",
    };
  }
  return undefined;
}

/** The most characters of a `User-Agent` a span keeps. */
const MAX_USER_AGENT = 512;

/**
 * The HTTP server span conventions' `server.address` and `server.port` (the
 * request's authority: its `Host`, HTTP/2's `:authority`), `client.address`
 * (the connection's peer: behind a proxy, the proxy; no `X-Forwarded-For`
 * is read, a client could write any) and `user_agent.original` (cut at 512
 * characters), each when known.
 */
function peerAttributes(
  request: Request,
  remoteAddr: string | undefined,
): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  const url = request.url;
  const begin = url.indexOf("://") + 3;
  let end = url.indexOf("/", begin);
  if (end < 0) end = url.length;
  const authority = url.slice(begin, end);
  // `[::1]:8000`, `example.com:8000`, `example.com`.
  const colon = authority.lastIndexOf(":");
  const bracket = authority.lastIndexOf("]");
  const host = colon > bracket ? authority.slice(0, colon) : authority;
  if (host !== "") {
    out["server.address"] = cut(
      host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host,
      MAX_NAME,
    );
  }
  const port = colon > bracket
    ? Number(authority.slice(colon + 1))
    : url.startsWith("https:")
    ? 443
    : 80;
  if (Number.isInteger(port) && port > 0) out["server.port"] = port;
  if (remoteAddr !== undefined && remoteAddr !== "") {
    out["client.address"] = remoteAddr;
  }
  const agent = request.headers.get("user-agent");
  if (agent !== null && agent !== "") {
    out["user_agent.original"] = cut(agent, MAX_USER_AGENT);
  }
  return out;
}

function decoded(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/**
 * The tracing of each gateway app made with it on (`serve` flushes it as
 * it stops).
 */
export const TRACING_OF: WeakMap<object, GatewayTracing> = new WeakMap();

/**
 * The gateway's tracing; see the module doc.
 *
 * @example
 * ```ts ignore
 * const tracing = new GatewayTracing({ endpoint: "http://127.0.0.1:4318/v1/traces" }, logger);
 * const fetch = (request: Request) => tracing.serve(request, () => app.fetch(request));
 * ```
 */
export class GatewayTracing {
  readonly #exporter: OtlpExporter;
  readonly #ratio: number;
  /** Clients' `traceparent` read (`propagation` not `none`). */
  readonly #readParent: boolean;
  readonly #maxStreamSpanMs: number;
  readonly #spans = new WeakMap<Request, OpenSpan>();
  readonly #ids = new RandomHexIds();
  /** The open streams' spans: each one's end, given why it ends early. */
  readonly #streams = new Set<(why: StreamSpanEnd) => void>();
  /**
   * Whether a model call answered 401 or 403 still has its span (the
   * gateway's: it carried the token). Default: all.
   */
  admits: (request: Request) => boolean = () => true;

  constructor(
    options: TracingOptions,
    logger: Logger,
    version?: string,
    runtime?: Runtime,
  ) {
    const ratio = options.sampleRatio ?? 1;
    if (!(ratio >= 0 && ratio <= 1)) {
      throw new RangeError(
        `Cannot create gateway: tracing.sampleRatio ${ratio} is not a number from 0 to 1`,
      );
    }
    let url: URL;
    try {
      url = new URL(options.endpoint);
    } catch {
      url = new URL("invalid:");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new RangeError(
        `Cannot create gateway: tracing.endpoint ${
          JSON.stringify(options.endpoint)
        } is not an http(s) URL (OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces)`,
      );
    }
    const headersProblem = options.headers === undefined
      ? undefined
      : traceHeadersProblem(options.headers);
    if (headersProblem !== undefined) {
      throw new RangeError(
        `Cannot create gateway: tracing.headers ${headersProblem}`,
      );
    }
    const maxStreamSpanMs = options.maxStreamSpanMs ??
      DEFAULT_MAX_STREAM_SPAN_MS;
    if (!(maxStreamSpanMs > 0)) {
      throw new RangeError(
        `Cannot create gateway: tracing.maxStreamSpanMs ${maxStreamSpanMs} is not a number > 0`,
      );
    }
    let tlsFetch: TlsFetch | undefined;
    if (options.tls !== undefined) {
      if (runtime?.tlsFetch === undefined) {
        throw new RangeError(
          "Cannot create gateway: tracing.tls needs a runtime with tlsFetch (Deno's and Bun's have it)",
        );
      }
      if (url.protocol === "http:") {
        // Certificates for a collector reached without TLS: the operator
        // meant https (the spans and the headers, an API key, go in clear).
        logger.warn(
          "Tracing: certificates are set (tracing.tls, OTEL_EXPORTER_OTLP_CERTIFICATE or the client certificate variables) but the endpoint {endpoint} is http://: they are not used, and the spans and headers travel in clear text (use https://)",
          { endpoint: `${url.protocol}//${url.host}${url.pathname}` },
        );
      }
      tlsFetch = runtime.tlsFetch(options.tls);
    }
    this.#ratio = ratio;
    this.#readParent = options.propagation !== "none";
    this.#maxStreamSpanMs = maxStreamSpanMs;
    this.#exporter = new OtlpExporter({
      endpoint: url.href,
      logger,
      ...(options.serviceName === undefined
        ? {}
        : { serviceName: options.serviceName }),
      ...(options.headers === undefined ? {} : { headers: options.headers }),
      ...(options.resourceAttributes === undefined
        ? {}
        : { resourceAttributes: options.resourceAttributes }),
      ...(options.maxQueue === undefined ? {} : { maxQueue: options.maxQueue }),
      ...(options.batchIntervalMs === undefined
        ? {}
        : { intervalMs: options.batchIntervalMs }),
      ...(options.exportTimeoutMs === undefined
        ? {}
        : { timeoutMs: options.exportTimeoutMs }),
      ...(options.batchSize === undefined
        ? {}
        : { batchSize: options.batchSize }),
      ...(options.compression === undefined
        ? {}
        : { compression: options.compression }),
      ...(version === undefined ? {} : { version }),
      ...(tlsFetch === undefined
        ? {}
        : { fetch: tlsFetch.fetch, closeFetch: tlsFetch.close }),
    });
  }

  /** Spans dropped: the queue was full, or the collector failed (`/metrics`). */
  get dropped(): number {
    return this.#exporter.dropped;
  }

  /** Spans the collector accepted. */
  get exported(): number {
    return this.#exporter.exported;
  }

  /**
   * Answers `request` with `handle`, in a span when it is a sampled model
   * call. Never throws more than `handle` does.
   */
  async serve(
    request: Request,
    handle: () => Response | Promise<Response>,
    remoteAddr?: string,
  ): Promise<Response> {
    const call = modelCall(request);
    const span = call === undefined
      ? undefined
      : this.#start(request, call, remoteAddr);
    if (span === undefined || !span.sampled) return await handle();
    let res: Response;
    try {
      res = await handle();
    } catch (err) {
      this.#end(span, 500, undefined, errorText(err));
      throw err;
    }
    // A call refused before it reached a model makes no span when it did
    // not carry the token: asked of a 401 or 403 only (an answered call
    // carried it), so a traced call pays nothing for it.
    if ((res.status === 401 || res.status === 403) && !this.admits(request)) {
      return res;
    }
    const requestId = res.headers.get(REQUEST_ID_HEADER) ?? undefined;
    // A stream's span lasts until its last event is sent (or the client
    // leaves): its body is passed through. A stream: an event stream of
    // `/stream`, or the items of a yielding model's `/v2` infer (the gRPC
    // transport's ModelStreamInfer), which ended its span at the first.
    if (res.status === 200 && res.body !== null) {
      const type = span.route.endsWith("/stream")
        ? res.headers.get("content-type")?.startsWith("text/event-stream")
        : span.route.endsWith("/infer") &&
          res.headers.get("content-type") === INFERENCE_STREAM_TYPE;
      if (type === true) return this.#streamed(span, res, requestId);
    }
    // 422 is a model's failure (its exception, an unserializable result).
    const failed = res.status >= 500 || res.status === 422;
    this.#end(
      span,
      res.status,
      requestId,
      failed ? await errorMessage(res) : undefined,
    );
    return res;
  }

  /**
   * The trace context a model call sends to Python, and the worker that
   * ran it: sets `options.traceparent` and `tracestate` when `request` is a
   * model call (sampled or not), and `onSend` when it is in a sampled span.
   * `name`: the model as the pool knows it (`name@version` for a version).
   */
  callOptions(
    request: Request,
    name: string,
    options: {
      traceparent?: string;
      tracestate?: string;
      onSend?: (worker: string) => void;
    },
  ): void {
    const span = this.#spans.get(request);
    if (span === undefined) return;
    if (!span.sampled) {
      options.traceparent = formatTraceparent(span.traceId, span.spanId, false);
      if (span.traceState !== undefined) options.tracestate = span.traceState;
      return;
    }
    const at = name.lastIndexOf("@");
    if (at > 0) span.version = name.slice(at + 1);
    options.traceparent = formatTraceparent(span.traceId, span.spanId, true);
    if (span.traceState !== undefined) options.tracestate = span.traceState;
    options.onSend = (worker) => {
      span.worker = worker;
    };
  }

  /**
   * Tells that the stream answering `request` failed after its first item
   * (its error sent as its last event or record, under the 200 its
   * response began with): its span ends with status ERROR, `message` its
   * status message and `status` (the status the error would have had
   * before the first item: 422 a model's exception, 502, 504...) its
   * `error.type`, as a failed call's. Nothing for a call not traced.
   */
  streamFailed(request: Request, status: number, message: string): void {
    const span = this.#spans.get(request);
    if (span?.sampled !== true) return;
    span.failure ??= { status, message };
  }

  /**
   * A graceful shutdown's last export: ends the spans of the streams still
   * open (`pyproxy.stream.span_end` `"shutdown"`), then sends the spans
   * that wait, waiting at most `timeoutMs`.
   */
  flush(timeoutMs?: number): Promise<void> {
    for (const end of [...this.#streams]) end("shutdown");
    return this.#exporter.flush(timeoutMs);
  }

  /**
   * Whether the gateway's `stopSignal` closes the tracing ({@linkcode close}),
   * or only flushes it: `serve` closes it itself, after the last responses
   * (spans of calls that outlived the grace come after `stopSignal`).
   */
  closeOnStop = true;
  #closed: Promise<void> | undefined;

  /**
   * The gateway's end: {@linkcode flush}, then no more exports (spans
   * added later are dropped), no timer left, and the exporter's TLS client
   * freed. Once; later calls wait for the first.
   */
  close(timeoutMs?: number): Promise<void> {
    this.#closed ??= this.flush(timeoutMs).finally(() =>
      this.#exporter.close()
    );
    return this.#closed;
  }

  #start(
    request: Request,
    call: ModelCall,
    remoteAddr: string | undefined,
  ): OpenSpan {
    const header = this.#readParent ? request.headers.get("traceparent") : null;
    const parent = header === null ? undefined : parseTraceparent(header);
    const sampled = parent !== undefined ? parent.sampled : this.#sampled();
    let traceState: string | undefined;
    if (parent !== undefined) {
      const state = request.headers.get("tracestate");
      if (state !== null) traceState = checkTracestate(state);
    }
    const span: OpenSpan = {
      sampled,
      traceId: parent?.traceId ?? this.#ids.next(16),
      spanId: this.#ids.next(8),
      parentSpanId: parent?.parentId,
      traceState,
      route: call.route,
      model: call.model,
      version: call.version,
      path: call.path,
      scheme: call.scheme,
      worker: undefined,
      startMs: performance.timeOrigin + performance.now(),
    };
    if (sampled) span.peer = peerAttributes(request, remoteAddr);
    this.#spans.set(request, span);
    return span;
  }

  #sampled(): boolean {
    const ratio = this.#ratio;
    return ratio >= 1 || (ratio > 0 && Math.random() < ratio);
  }

  #end(
    span: OpenSpan,
    status: number,
    requestId: string | undefined,
    error: string | undefined,
    streamEnd?: StreamSpanEnd,
    errorType: number = status,
  ): void {
    // The client's strings (a name from the URL, a model's error message
    // that may repeat its input) are cut: a queued span stays small.
    const attributes: Record<string, string | number> = {
      "http.request.method": "POST",
      "http.route": span.route,
      "http.response.status_code": status,
      // Required by the HTTP server span conventions.
      "url.scheme": span.scheme,
      "url.path": cut(span.path, MAX_PATH),
      "pyproxy.model": cut(span.model, MAX_NAME),
    };
    if (span.peer !== undefined) Object.assign(attributes, span.peer);
    if (span.version !== undefined) {
      attributes["pyproxy.model.version"] = cut(span.version, MAX_NAME);
    }
    if (requestId !== undefined) attributes["pyproxy.request_id"] = requestId;
    if (span.worker !== undefined) attributes["pyproxy.worker"] = span.worker;
    if (streamEnd !== undefined) {
      attributes["pyproxy.stream.span_end"] = streamEnd;
    }
    if (error !== undefined) {
      attributes["error.type"] = String(errorType);
    }
    const out: ExportSpan = {
      traceId: span.traceId,
      spanId: span.spanId,
      name: `POST ${span.route}`,
      kind: 2,
      startMs: span.startMs,
      endMs: performance.timeOrigin + performance.now(),
      attributes,
    };
    if (span.parentSpanId !== undefined) out.parentSpanId = span.parentSpanId;
    if (span.traceState !== undefined) out.traceState = span.traceState;
    if (error !== undefined) out.error = cut(error, MAX_ERROR);
    this.#exporter.add(out);
  }

  #streamed(
    span: OpenSpan,
    res: Response,
    requestId: string | undefined,
  ): Response {
    const reader = res.body!.getReader();
    let ended = false;
    const streams = this.#streams;
    const end = (error: string | undefined, early?: StreamSpanEnd) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      streams.delete(endEarly);
      // Failed after its first item: its last event said so, under a 200.
      const failure = error === undefined && early === undefined
        ? span.failure
        : undefined;
      if (failure !== undefined) {
        this.#end(
          span,
          res.status,
          requestId,
          failure.message,
          undefined,
          failure.status,
        );
      } else this.#end(span, res.status, requestId, error, early);
    };
    // A stream may outlast the gateway's patience for its span (or the
    // gateway): its span is then ended while the stream goes on.
    const endEarly = (why: StreamSpanEnd) => end(undefined, why);
    streams.add(endEarly);
    const timer = setTimeoutOrNever(
      () => endEarly("max_duration"),
      this.#maxStreamSpanMs,
    );
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            end(undefined);
            controller.close();
          } else {
            controller.enqueue(value);
          }
        } catch (err) {
          end(errorText(err));
          controller.error(err);
        }
      },
      cancel(reason) {
        end(undefined);
        return reader.cancel(reason);
      },
    });
    return new Response(body, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
  }
}

/**
 * Why a stream's span ended before its stream (`pyproxy.stream.span_end`):
 * the gateway stopped, or the stream outlived `maxStreamSpanMs`.
 */
type StreamSpanEnd = "shutdown" | "max_duration";

/** The longest a stream's span lasts by default, in ms (10 minutes). */
const DEFAULT_MAX_STREAM_SPAN_MS = 600_000;
/** The longest model name or version a span keeps, in characters. */
const MAX_NAME = 256;
/** The longest error message a span keeps (its status message). */
const MAX_ERROR = 1024;
// A URL path's, which holds a model name the client chose.
const MAX_PATH = 1024;

/** `text`, cut to `max` characters with an ellipsis when longer. */
function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** The message of an error response's body (`{"error": {"message"}}` or `{"error": "..."}`). */
async function errorMessage(res: Response): Promise<string> {
  let body: unknown;
  try {
    body = await res.clone().json();
  } catch {
    // Not JSON: the status says it.
  }
  return errorBodyMessage(body, res.status);
}

/**
 * The message of an error body as the gateway answers one (`{"error":
 * {"type", "message"}}` or `{"error": "..."}`): `type: message`, else
 * `HTTP <status>`. A stream's `error` event carries the same body.
 */
export function errorBodyMessage(body: unknown, status: number): string {
  const error = (body as
    | {
      error?: string | { type?: unknown; message?: unknown };
    }
    | null
    | undefined)?.error;
  if (typeof error === "string") return error;
  if (typeof error?.message === "string") {
    return typeof error.type === "string"
      ? `${error.type}: ${error.message}`
      : error.message;
  }
  return `HTTP ${status}`;
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}
