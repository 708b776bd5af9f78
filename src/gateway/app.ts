/**
 * The gateway's Hono app: security middleware, status and metrics routes,
 * the dashboard, and the model, eval and channel route groups.
 *
 * @module
 */
import { DEFAULT_MAX_JSON_DEPTH } from "../_json_depth.ts";
import { ConfigError } from "../errors.ts";
import { StartSkips } from "./_start_skips.ts";
import { loggedPath, RefusalLog } from "./_refusal_log.ts";
import { type Context, Hono, type MiddlewareHandler, type Next } from "hono";
import { RegExpRouter } from "hono/router/reg-exp-router";
import { getLogger } from "@logtape/logtape";
import type { Logger } from "../logger.ts";
import type { Runtime, ServeRequestInfo } from "../runtime/types.ts";
import { defaultRuntime } from "../runtime/mod.ts";
import { answerBody } from "./_answer_body.ts";
import { DisconnectWatch } from "./disconnect_watch.ts";
import { ChannelHub } from "./channels.ts";
import { channelRoutes } from "./channel_routes.ts";
import { dashboardCsp, dashboardHtml } from "./dashboard.ts";
import { httpError, REQUEST_ID_HEADER } from "./error_response.ts";
import {
  channelTenant,
  tenantChannelRefusal,
  tenantOwnsChannel,
} from "./_tenant_channels.ts";
import { foreignRouteHint } from "./_foreign_route_hint.ts";
import { routeError } from "./_route_error.ts";
import { evalRoutes } from "./eval_routes.ts";
import type { GatewayModelSpec, GatewayPool } from "./gateway_pool.ts";
import { GatewayMetrics } from "./metrics.ts";
import { GatewayTracing, TRACING_OF } from "./_gateway_tracing.ts";
import { type GatewayTokens, SET_TOKENS_OF } from "./_gateway_tokens.ts";
import { TokenHolders } from "./_token_holders.ts";
import { checkToken } from "./_token_files.ts";
import type { TracingOptions } from "./tracing_options.ts";
import { ModelCatalog } from "./model_catalog.ts";
import { modelView } from "./_model_view.ts";
import { openApiDocument } from "./openapi.ts";
import { isPredictPath, predictCalls } from "./_predict_routes.ts";
import { PYTHON_MANIFEST } from "../runtime/python_manifest.ts";
import {
  readProcessResources,
  readWorkerResources,
} from "./process_resources.ts";
import {
  clientRequestId,
  modelExecutor,
  modelNotFound,
  modelRoutes,
} from "./model_routes.ts";
import { modelStreamRoutes } from "./model_stream_routes.ts";
import { wantsInferenceStream } from "./_inference_stream.ts";
import { forwardHeaderList } from "./_forward_headers.ts";
import { workerRoutes } from "./worker_routes.ts";
import { hasModel, workersOf } from "./_pool_reads.ts";
import { versionKey } from "../_model_version.ts";
import {
  inferenceProtocolError,
  inferenceProtocolRoutes,
  isInferenceProtocolPath,
} from "./inference_protocol_routes.ts";
import { BodyReadGuard } from "./read_json_body.ts";
import { jsonResponse } from "./json_response.ts";
import { ResponseCompression } from "./_response_compression.ts";
import { ModelChanges } from "./_model_changes.ts";
import type { RouteContext } from "./route_context.ts";
import { closeAfter } from "./_close_after.ts";
import { runtimeVersion } from "./_runtime_version.ts";
import { routeTemplate } from "./_route_template.ts";
import {
  discardUnreadBody,
  dropUnauthenticatedBody,
  dropUnreadBody,
} from "./_unread_body.ts";
import {
  bearerAuth,
  bearerToken,
  type CorsConfig,
  corsMiddleware,
  hostGuard,
  MAX_TOKENS,
  originGuard,
  requestAuthority,
  requestHostChecker,
  tokenId,
  tokenIdentifier,
  tokenMatcher,
} from "./security.ts";

/**
 * Options for {@linkcode createGateway}.
 *
 * @example
 * ```ts
 * import type { GatewayOptions } from "@pyproxy/pyproxy";
 * const options: GatewayOptions = {
 *   token: "a-long-random-secret-token",
 *   port: () => 8000,
 *   cors: { origins: ["https://app.example.com"] },
 *   allowEval: false,
 *   requestTimeout: 10_000,
 * };
 * console.log(options.requestTimeout); // 10000
 * ```
 */
export interface GatewayOptions {
  /**
   * Bearer token required on every route except `/healthz`; several are
   * accepted alike (rotation, a token per client: at most
   * {@linkcode MAX_TOKENS}, 1024). Each at least 16 characters and not
   * clearly weak (`ConfigError`, as `serve`'s configuration: make one with
   * `openssl rand -base64 32`); `manageToken`'s too.
   */
  token?: string | readonly string[];
  /**
   * The management token(s): when set, eval and model management (the
   * routes `allowEval` and `allowManage` turn on) take only these, and
   * answer `token` with 403; these are accepted on every route (not as the
   * dashboard's `?token=`). Requires `token`.
   */
  manageToken?: string | readonly string[];
  /**
   * Of `token`'s tokens, those of tenants (a token file's lines marked
   * `tenant`): they call models (and read their descriptions), but get 403
   * `ForbiddenToken` on the operator's routes: `/metrics`, `/v1/status`,
   * the dashboard `/`, `GET /v1/channels`, the `/v2` statistics, eval and
   * model management; they subscribe and publish only to the channels
   * named by their {@linkcode tokenId} (`<id>`, `<id>.events`), and read
   * no details of the workers and the queue in answers. Each must be one
   * of `token`'s. The other tokens keep every route. @default {[]}
   */
  tenantToken?: readonly string[];
  /** The port the server listens on, for the Host check (a function: port 0 is known late). @default {() => 8000} */
  port?: () => number;
  /** Extra allowed `Host` values (`"*"` disables the check). */
  allowedHosts?: string[];
  /**
   * Also accept any IP address as `Host` (on any port): `serve` sets it when
   * binding a non-loopback address, where clients and load balancers use
   * the machine's IP. DNS rebinding needs a name, so an IP is safe to accept.
   *
   * @default {false}
   */
  allowIpHosts?: boolean;
  /** CORS; off unless set. */
  cors?: CorsConfig;
  /** Largest request body in bytes. @default {1048576} */
  bodyLimit?: number;
  /**
   * Most digits of an integer literal in a request body (at least 16): a
   * longer one is refused with 400 `InvalidRequestError` before the gateway
   * makes a `BigInt` of it. `RangeError` for one that is not an
   * integer >= 16 (or `Infinity`: no bound). @default {4300}
   */
  maxIntegerDigits?: number;
  /**
   * Deepest nesting of arrays and objects in a request body, the body being
   * level 1: a deeper one is refused with 400 `InvalidRequestError` before it
   * is parsed. The default leaves room under what Python 3.9–3.11 decode
   * (about 980 levels of a model's input) and under the host's own check of
   * outgoing messages (900 levels of the message, `MAX_JSON_DEPTH`).
   * `RangeError` for one that is not a positive integer (or `Infinity`).
   * @default {800}
   */
  maxJsonDepth?: number;
  /**
   * Default and maximum execute/eval timeout in ms; also the time a request
   * may take to send its body (408 after). @default {30000}
   */
  requestTimeout?: number;
  /**
   * Milliseconds without an event after which a model stream
   * (`POST /v1/models/{name}/stream`) sends a `: keep-alive` comment, so
   * that proxies keep it open: between its items, and before its first
   * one when the request asks for its headers at once (`?early=1`); an
   * eval's event stream too (whose idle bound it also paces). An
   * integer from 100 to 2^31 - 1 (`limits.streamKeepAlive`'s range):
   * `RangeError` otherwise.
   * @default {15000}
   */
  streamKeepAlive?: number;
  /**
   * Milliseconds a model stream may take to its first item, its wait for a
   * worker included (504 `TimeoutError` with `bound: "firstItemTimeout"`
   * after); a request's `?firstItemTimeout=` may lower it. Absent: only the
   * stream's whole timeout bounds it. A number > 0 (`Infinity`: none):
   * `RangeError` otherwise.
   */
  streamFirstItemTimeout?: number;
  /**
   * Milliseconds an eval's event stream (`POST /v1/eval`,
   * `GET /v1/eval/{id}/events`) may keep an event its client does not take
   * (its socket full: a client that stopped reading): then the stream ends
   * with an `error` event `StreamIdleError` (408) after the events not taken
   * yet, and lets go of the eval's output, whose code runs on instead of
   * waiting for the client (resumable). Checked on the keep-alive's timer,
   * so up to `streamKeepAlive` late. A number > 0 (`Infinity`: none):
   * `RangeError` otherwise. Model streams have the pool's
   * `streamIdleTimeout`; `serve` sets both from `limits.streamIdleTimeout`.
   * @default {60000}
   */
  evalStreamIdleTimeout?: number;
  /**
   * Time a `PUT /v1/models/{name}` may take to load the model, and a
   * `DELETE` to remove it, in ms (504 after). @default {120000}
   */
  loadTimeout?: number;
  /**
   * Gzip for model results of at least `minBytes` bytes (JSON, and `bytes`
   * of a text, JSON, XML or JavaScript media type) when the client's
   * `Accept-Encoding` takes it; `false`: never. Off by default, as
   * uvicorn: docs/gateway.md "Compression" says why. `true` is
   * `{ minBytes: 1024 }`. `RangeError` for a `minBytes` that is not a
   * positive integer.
   *
   * @default {false}
   */
  compress?: boolean | {
    /** Smallest result compressed, in bytes. @default {1024} */
    minBytes?: number;
  };
  /**
   * Enables `PUT`/`DELETE /v1/models/{name}` and `PUT /v1/workers`: with a
   * `token`, or `insecureNoAuth`. @default {false}
   */
  allowManage?: boolean;
  /**
   * Enables `POST /v1/eval`: with a `token`, or `insecureNoAuth`.
   * @default {false}
   */
  allowEval?: boolean;
  /**
   * Lets `allowEval` and `allowManage` serve without a `token`: for an app
   * mounted behind authentication of your own. Without it, either of them
   * and no token is a `ConfigError` (eval runs code as this user, and every
   * local process reaches a loopback port; `serve` generates a token
   * instead).
   * @default {false}
   */
  insecureNoAuth?: boolean;
  /**
   * A client that disconnects cancels its execute call (Python gets
   * `cancel`), once the call has run for 50 ms (shorter calls finish: see
   * `DisconnectWatch` and docs/gateway.md).
   *
   * @default {true}
   */
  cancelOnDisconnect?: boolean;
  /**
   * Request headers that reach the models (`host.headers()`), by name
   * (any case; at most 32): none unless listed. Refused (`RangeError`):
   * hop-by-hop headers, `host`, `content-length`, `content-type`,
   * `content-encoding`, `x-request-id`, and `authorization` while `token` is set (it holds the
   * token). docs/gateway.md, "Request headers for models".
   *
   * @default {[]}
   */
  forwardHeaders?: string[];
  /**
   * Details in responses: Python tracebacks and full messages in error
   * bodies, models' options and workers' `stderrTail` in `/v1/status` and
   * `/v1/models`. With `manageToken` set, only requests that present the
   * management token see them (the inference token's clients are the ones
   * the management token keeps apart).
   * @default {false}
   */
  debug?: boolean;
  /**
   * The pool's models directory: `PUT /v1/models/{name}` answers 404 for a
   * file missing from it, and its absolute path is removed from error
   * messages unless `debug`.
   */
  modelsDir?: string;
  /**
   * Models configured by name with their specs (`serve` passes
   * `pyproxy.json`'s `models`): the Open Inference Protocol's model
   * repository extension (`POST /v2/repository/...`, with `allowManage`)
   * lists them beside the models directory's files, and loads one with its
   * spec (a name listed with several `version`s: each of them, the first
   * listed the default when none is loaded). @default {[]}
   */
  repositoryModels?: ReadonlyArray<{ name: string } & GatewayModelSpec>;
  /**
   * The models the start skipped, with why (`serve`'s `skippedModels`): the
   * model repository extension's index shows each `UNAVAILABLE` with that
   * reason until it loads. @default {[]}
   */
  skippedModels?: ReadonlyArray<{ name: string; error: string }>;
  /**
   * Those of them that are models whose load failed (their import or
   * constructor raised, or timed out), not files that are no model (a
   * helper module, a name that is no model name): until a load of the name
   * succeeds, their calls' 404 says why and `/metrics` has their
   * `pyproxy_models_ready` at 0 (`StartSkips`). @default {[]}
   */
  failedModels?: ReadonlyArray<{ name: string; error: string }>;
  /** Channels (shared with the channels plugin of the pool). @default {a new hub} */
  hub?: ChannelHub;
  /** Metrics. @default {new metrics} */
  metrics?: GatewayMetrics;
  /** Model descriptions (filled when models are loaded through it). @default {a new catalog} */
  catalog?: ModelCatalog;
  /** Runtime adapter (WebSocket upgrades). @default {defaultRuntime()} */
  runtime?: Runtime;
  /** Logger. @default {getLogger(["pyproxy", "gateway"])} */
  logger?: Logger;
  /**
   * When aborted, the server is draining: new requests get 503, and so do
   * requests still sending their body.
   */
  signal?: AbortSignal;
  /**
   * When aborted, the readiness routes say not ready (`/healthz` 503
   * `"draining"`, `/v2/health/ready`, each model's ready, the gRPC health
   * service NOT_SERVING) while every other route still serves: a shutdown
   * delay, for the load balancers to stop sending before the drain
   * (`limits.shutdownDelay`). `signal`'s abort implies it.
   */
  unreadySignal?: AbortSignal;
  /**
   * When aborted, the shutdown grace is over: an eval stream whose code is
   * still running ends with an `error` event of type `ShuttingDownError`
   * (until then, eval streams keep streaming while the server drains), and
   * the gateway stops following the pool's model events. Abort it when you
   * drop a gateway made over a pool that lives on.
   */
  stopSignal?: AbortSignal;
  /** Version shown by the dashboard and `/v1/status`. */
  version?: string;
  /**
   * How often the dashboard page (`GET /`) refreshes, in ms: at least 200,
   * at most 2^31 − 1; one that is not a finite number is the default. Each
   * refresh is three requests (`/v1/status`, `/metrics?format=json`,
   * `/v1/channels`).
   * @default {1000}
   */
  dashboardIntervalMs?: number;
  /**
   * OpenTelemetry tracing of model calls, sent to a collector over OTLP/HTTP
   * (docs/gateway.md, "Tracing"); off unless set. `stopSignal` sends the
   * spans that wait (`serve` waits for them, up to 2 s).
   */
  tracing?: TracingOptions;
  /**
   * Whether the token files polled (`tokenFile`, `manageTokenFile`) could
   * not be used at their last read, the tokens in force kept: `/metrics`'
   * `pyproxy_token_files_refused` (absent when it answers `undefined`: no
   * files polled). `serve` sets it.
   */
  tokenFilesRefused?: () => boolean | undefined;
}

/**
 * The gateway app: a `fetch` handler for any server that takes one (Deno,
 * Bun, Node adapters) and `request()` for calling it without a socket.
 *
 * @example
 * ```ts ignore
 * import { createGateway, type GatewayApp } from "@pyproxy/pyproxy";
 * declare const pool: Parameters<typeof createGateway>[0];
 * const app: GatewayApp = createGateway(pool, { port: () => 8000 });
 * Deno.serve({ hostname: "127.0.0.1", port: 8000 }, (req) => app.fetch(req));
 * ```
 */
export interface GatewayApp {
  /** Answers one HTTP request. */
  fetch(request: Request, env?: unknown): Response | Promise<Response>;
  /** Answers a request built from `input` and `init` (handy in tests). */
  request(
    input: string | URL | Request,
    init?: RequestInit,
  ): Response | Promise<Response>;
}

/**
 * The gateway's log line for a channel subscriber dropped as too slow: it
 * lost messages, and its client is told only in the stream it stopped
 * reading.
 *
 * @example
 * ```ts
 * import { getLogger } from "@logtape/logtape";
 * import { ChannelHub } from "./channels.ts";
 * import { droppedSubscriberLogger } from "./app.ts";
 * const hub = new ChannelHub({
 *   onDrop: droppedSubscriberLogger(getLogger(["pyproxy", "gateway"])),
 * });
 * hub.close();
 * ```
 */
export function droppedSubscriberLogger(
  logger: Logger,
): (channel: string, reason: string) => void {
  return (channel, reason) =>
    logger.warn("Dropped a subscriber of channel {channel}: {reason}", {
      channel,
      reason,
    });
}

/**
 * Creates the gateway app (a Hono app) for a pool. Serve it with any server that
 * takes a `fetch` handler (see `serve()` for the complete server).
 *
 * @example
 * ```ts ignore
 * import { Pool } from "@pyproxy/pyproxy";
 * import { createGateway } from "@pyproxy/pyproxy";
 * // The pool keeps the process alive until it is closed: `await using` does it.
 * await using pool = await Pool.start({ workers: 2, modelsDir: "./examples/models", handleSignals: false });
 * const app = createGateway(pool, { port: () => 8000 });
 * const res = await app.request("http://127.0.0.1:8000/healthz", { headers: { host: "127.0.0.1:8000" } });
 * console.log(res.status); // 200
 * ```
 */
export function createGateway(
  pool: GatewayPool,
  options: GatewayOptions = {},
): GatewayApp {
  const signal = options.signal ?? new AbortController().signal;
  // Read by the readiness routes only (not the execute fast path).
  const unready = options.unreadySignal === undefined
    ? signal
    : AbortSignal.any([signal, options.unreadySignal]);
  const requestTimeout = options.requestTimeout ?? 30_000;
  const maxIntegerDigits = options.maxIntegerDigits ?? 4300;
  // Below 16 it would not hold: shorter literals are never looked at (they
  // may be safe integers), so 15 digits would pass a limit of 10.
  if (
    !(maxIntegerDigits === Infinity ||
      (Number.isInteger(maxIntegerDigits) && maxIntegerDigits >= 16))
  ) {
    throw new RangeError(
      `Cannot create gateway: maxIntegerDigits ${maxIntegerDigits} is not an integer >= 16`,
    );
  }
  const maxJsonDepth = options.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH;
  if (
    !(maxJsonDepth === Infinity ||
      (Number.isInteger(maxJsonDepth) && maxJsonDepth >= 1))
  ) {
    throw new RangeError(
      `Cannot create gateway: maxJsonDepth ${maxJsonDepth} is not an integer >= 1`,
    );
  }
  // Checked here, not per stream: a bad bound answered every stream with a
  // 400 blaming the client's request, and a keep-alive of 0 sent a comment
  // at every turn of the event loop (chaos47: ~470 a second per stream).
  const { streamKeepAlive, streamFirstItemTimeout, evalStreamIdleTimeout } =
    options;
  if (
    streamKeepAlive !== undefined &&
    !(Number.isInteger(streamKeepAlive) && streamKeepAlive >= 100 &&
      streamKeepAlive < 2 ** 31)
  ) {
    throw new RangeError(
      `Cannot create gateway: streamKeepAlive ${streamKeepAlive} is not an integer from 100 to ${
        2 ** 31 - 1
      } (ms)`,
    );
  }
  if (
    streamFirstItemTimeout !== undefined &&
    !(typeof streamFirstItemTimeout === "number" && streamFirstItemTimeout > 0)
  ) {
    throw new RangeError(
      `Cannot create gateway: streamFirstItemTimeout ${streamFirstItemTimeout} is not a number > 0 (ms) or Infinity`,
    );
  }
  if (
    evalStreamIdleTimeout !== undefined &&
    !(typeof evalStreamIdleTimeout === "number" && evalStreamIdleTimeout > 0)
  ) {
    throw new RangeError(
      `Cannot create gateway: evalStreamIdleTimeout ${evalStreamIdleTimeout} is not a number > 0 (ms) or Infinity`,
    );
  }
  // An empty token would be presented by `/?token=`, an empty or undecodable
  // token subprotocol: the dashboard and channel subscriptions would be open.
  let { tokens, manageTokens, tenantIds } = checkedTokens(
    options,
    "create gateway",
  );
  if (
    tokens === undefined && options.insecureNoAuth !== true &&
    (options.allowEval === true || options.allowManage === true)
  ) {
    // A server of the user's own: it served eval (code as this user) and
    // model management to whoever reached it (claims26).
    throw new ConfigError(
      `Cannot create gateway: ${
        options.allowEval === true ? "allowEval" : "allowManage"
      } needs a token (eval runs code as this user, management loads any model file), or insecureNoAuth: true behind authentication of your own`,
    );
  }
  let manageMatches = manageTokens === undefined
    ? undefined
    : tokenMatcher(manageTokens);
  const presentsManageToken = (request: Request): boolean => {
    const token = bearerToken(request.headers.get("authorization") ?? "");
    return token !== undefined && manageMatches !== undefined &&
      manageMatches(token);
  };
  // A tenant's token: read as an error is answered (debug), never on a
  // request's way in.
  const presentsTenantToken = (request: Request): boolean => {
    if (tenantIds === undefined) return false;
    const token = bearerToken(request.headers.get("authorization") ?? "");
    const id = token === undefined ? undefined : tokenMatches?.(token);
    return id !== undefined && tenantIds.has(id);
  };
  const compress = options.compress === true ? {} : options.compress;
  const minBytes = compress ? compress.minBytes : undefined;
  if (
    minBytes !== undefined && !(Number.isInteger(minBytes) && minBytes >= 1)
  ) {
    throw new RangeError(
      `Cannot create gateway: compress.minBytes ${minBytes} is not an integer >= 1`,
    );
  }
  const forwardHeaders = forwardHeaderList(
    options.forwardHeaders ?? [],
    options.token !== undefined,
  );
  const logger = options.logger ?? getLogger(["pyproxy", "gateway"]);
  // A tenant's token refused another's channel (one line a minute at most).
  const channelRefusals = new RefusalLog(logger);
  const runtime = options.runtime ?? defaultRuntime();
  const ctx: RouteContext = {
    pool,
    hub: options.hub ??
      new ChannelHub({ onDrop: droppedSubscriberLogger(logger) }),
    // Past its maxModels names, a model the pool has still gets series.
    metrics: options.metrics ??
      new GatewayMetrics({ isModel: (name) => hasModel(pool, name) }),
    catalog: options.catalog ?? new ModelCatalog(),
    runtime,
    logger,
    signal,
    unready,
    stopSignal: options.stopSignal ?? new AbortController().signal,
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    maxIntegerDigits,
    maxJsonDepth,
    // Its timer stays armed between bursts only where the drain's signal
    // will clear it: without one, an armed timer kept the process alive up
    // to requestTimeout after the last body read (a script calling
    // `app.request`, a gateway dropped by `stopSignal`, which still answers).
    bodyReads: new BodyReadGuard(
      options.signal === undefined
        ? { timeoutMs: requestTimeout }
        : { timeoutMs: requestTimeout, signal },
    ),
    requestTimeout,
    streamKeepAlive: options.streamKeepAlive ?? 15_000,
    streamFirstItemTimeout: options.streamFirstItemTimeout,
    evalStreamIdleTimeout: evalStreamIdleTimeout ?? 60_000,
    loadTimeout: options.loadTimeout ?? 120_000,
    allowManage: options.allowManage ?? false,
    allowEval: options.allowEval ?? false,
    disconnects: options.cancelOnDisconnect ?? true
      ? new DisconnectWatch()
      : undefined,
    // With a management token, its requests only (read as an error is
    // answered, never on a request's way in).
    // Never to a tenant's: a traceback or stderr names paths and secrets.
    debug: options.debug !== true
      ? () => false
      : (request) =>
        manageMatches === undefined
          ? !presentsTenantToken(request)
          : presentsManageToken(request),
    manageDebug: options.debug === true,
    modelsDir: options.modelsDir,
    repositoryModels: groupByName(options.repositoryModels ?? []),
    skippedModels: options.skippedModels ?? [],
    startSkips: new StartSkips(
      options.failedModels ?? [],
      options.modelsDir,
      options.debug === true,
    ),
    modelChanges: new ModelChanges(),
    forwardHeaders,
    refusedHeaderWarnings: new Map(),
    compression: compress
      ? new ResponseCompression({
        ...compress,
        // A large answer's delivery is waited for by the server's shutdown.
        deliver: (request, body, headers) =>
          answerBody(runtime, request, body, headers),
      })
      : undefined,
    exposedHeaders: new WeakMap(),
    tracing: options.tracing === undefined ? undefined : new GatewayTracing(
      options.tracing,
      logger,
      options.version,
      options.runtime ?? defaultRuntime(),
    ),
    tokenHolders: tokens === undefined ? undefined : new TokenHolders(),
    callers: tokens === undefined ? undefined : new WeakMap(),
    isTenant: (request, caller) => {
      if (tenantIds === undefined) return false;
      const id = caller ?? ctx.callers?.get(request);
      return id !== undefined && tenantIds.has(id);
    },
    channelAccess: tokens === undefined
      ? undefined
      : (request, channel, action) => {
        // Asked only of a channel route or a `?publish=`: the tenants'
        // current ids (a reload replaces them).
        if (tenantIds === undefined) return;
        const id = ctx.callers!.get(request);
        if (
          id === undefined || !tenantIds.has(id) ||
          tenantOwnsChannel(id, channel)
        ) return;
        channelRefusals.refused(
          "Refused a tenant's token {caller} (403 ForbiddenToken) on {method} {path}: not its channel",
          {
            caller: id,
            method: request.method,
            path: loggedPath(new URL(request.url).pathname),
          },
        );
        throw httpError(
          403,
          "ForbiddenToken",
          `Cannot ${action} channel ${JSON.stringify(channel)}: ${
            tenantChannelRefusal(id)
          }`,
        );
      },
  };
  // A tenant's channels count against its own bounds (channels,
  // subscribers, history bytes): one tenant holding 1000 subscriptions
  // blocked every new channel, and its large messages pushed out the others'
  // history. Asked as a channel is made, of the tenants of now.
  if (tokens !== undefined) {
    ctx.hub.tenantOf = (channel) =>
      tenantIds === undefined ? undefined : channelTenant(tenantIds, channel);
    // A model's host.publish in a tenant's call: that tenant's channels
    // only (channels_plugin.ts), as its token's own publishes.
    ctx.hub.tenantOfCaller = (caller) =>
      tenantIds?.has(caller) === true ? caller : undefined;
  }
  // Model changes made on the pool directly (a library Pool) show in the
  // descriptions, validation and timeouts: no cost per request. Until
  // `stopSignal` aborts: a gateway made again and again over one long-lived
  // pool would otherwise leave a listener (and its catalog) on the pool each.
  const unfollow = ctx.catalog.follow(pool);
  if (ctx.stopSignal.aborted) unfollow();
  else ctx.stopSignal.addEventListener("abort", unfollow, { once: true });
  // A model removed on the pool directly takes its series with it, as a
  // DELETE's does: models coming and going under new names would otherwise
  // keep theirs (and, past maxModels, each gets some).
  const unforget = ctx.stopSignal.aborted ? undefined : pool.on?.((ev) => {
    if (
      ev.type === "model" && ev.action === "remove" &&
      typeof ev.name === "string"
    ) {
      ctx.metrics.forget(
        ev.version === undefined ? ev.name : versionKey(ev.name, ev.version),
      );
    }
  });
  if (unforget !== undefined) {
    ctx.stopSignal.addEventListener("abort", unforget, { once: true });
  }
  const tracing = ctx.tracing;
  if (tracing !== undefined) {
    // Closed (its TLS client freed, no timer left) unless its owner closes
    // it later (`serve`, after the last responses).
    const stop = () =>
      void (tracing.closeOnStop ? tracing.close(2000) : tracing.flush(2000));
    if (ctx.stopSignal.aborted) stop();
    else ctx.stopSignal.addEventListener("abort", stop, { once: true });
  }
  const started = Date.now();
  // RegExpRouter only (Hono's default tries it, then falls back for good to
  // its slower TrieRouter when a route's pattern is beyond it, e.g. a `:` in
  // a segment): such a route fails every request, and the tests, at once.
  const app = new Hono({ router: new RegExpRouter() });
  // The requests refused before they were let in (a Host or Origin not
  // allowed, no valid token): their bodies are not waited for.
  const notLetIn = new WeakSet<Request>();

  app.use(async (c, next) => {
    const t0 = performance.now();
    // Every response of this path counts for the drain until it is
    // delivered (the runtime's `completed`, asked for in fetch below), else
    // made: over HTTP/2 the server's shutdown resets a stream not answered
    // or not written yet (a model load or removal, a resize, an eval's
    // events whose code ended in the grace). The fast path's model calls
    // count through metrics.start.
    const release = ctx.metrics.hold();
    let held = false;
    try {
      await route(c, next, t0);
      // A refusal made before the body was read (404, 405, 413 from
      // Content-Length, 415, drain): the body first, up to a bound, so that
      // HTTP/2 clients such as curl read the answer (_unread_body.ts). A
      // client not let in (no valid token, a Host or Origin not allowed)
      // gets its answer at once, its body not waited for.
      // A 404 (a model or a route there is not) is answered at once too:
      // no body changes it, and a slow one made it a 408.
      if (notLetIn.has(c.req.raw)) dropUnauthenticatedBody(c.req.raw, c.res);
      else if (c.res.status === 404) dropUnreadBody(c.req.raw, c.res);
      else if (c.res.status >= 400) await discardUnreadBody(c.req.raw);
      const completed = (c.env as ServeRequestInfo | undefined)?.completed;
      // A WebSocket's 101: its connection lives on, ended by the drain.
      if (completed !== undefined && c.res.status !== 101) {
        held = true;
        completed.then(release, release);
      }
    } finally {
      if (!held) release();
    }
  });

  const route = async (
    c: Context,
    next: Next,
    t0: number,
  ): Promise<void> => {
    // The client's request id comes back on every response (a model call's
    // may have one made up for its error: that one stays). Read first: a
    // WebSocket upgrade takes the request, whose headers then cannot be read.
    const clientId = clientRequestId(c.req.raw);
    if (signal.aborted && c.req.path !== "/healthz") {
      c.res = Response.json(
        {
          error: {
            type: "ShuttingDownError",
            message: "Cannot serve request: the server is shutting down",
          },
        },
        { status: 503, headers: { "retry-after": "5", connection: "close" } },
      );
    } else {
      await next();
      // Draining: no further request on this connection (it would be
      // reset when the shutdown closes it).
      if (signal.aborted) closeAfter(c.res);
    }
    // The Open Inference Protocol's clients read `{"error": "message"}`,
    // and so do TensorFlow Serving's and KServe V1's (`:predict`): every
    // error of their paths (auth, Host, 404, 405, drain, the routes' own) in
    // that shape, same status and headers. Only error responses of `/v2`
    // and `:verb` paths pay for it.
    // Not for ModelStreamInfer's own requests: its error response carries
    // the error's type and a timeout's bound and wait (_grpc_stream_infer.ts).
    if (
      c.res.status >= 400 &&
      (isInferenceProtocolPath(c.req.path) || isPredictPath(c.req.path)) &&
      !wantsInferenceStream(c.req.raw)
    ) {
      const shaped = await inferenceProtocolError(c.res);
      // Not merged with the old response's headers (Hono's setter would).
      c.res = undefined;
      c.res = shaped;
    }
    // Hono answers HEAD with the GET response's headers and no body, and the
    // runtime then says `content-length: 0`: give the GET body's length
    // (RFC 9110 §9.3.2). Event streams have none (their HEAD opens nothing).
    if (c.req.method === "HEAD" && c.res.body !== null) {
      const length = (await c.res.clone().arrayBuffer()).byteLength;
      c.res.headers.set("content-length", String(length));
    }
    let requestId = c.res.headers.get(REQUEST_ID_HEADER) ?? undefined;
    if (requestId === undefined && clientId !== undefined) {
      requestId = clientId;
      // Not on a WebSocket upgrade's 101: the runtime's own response.
      if (c.res.status !== 101) c.res.headers.set(REQUEST_ID_HEADER, clientId);
    }
    ctx.metrics.countHttp(c.res.status, routeTemplate(c));
    const properties = {
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      ms: Math.round((performance.now() - t0) * 10) / 10,
    };
    if (requestId === undefined) {
      ctx.logger.debug("{method} {path} {status} {ms} ms", properties);
    } else {
      ctx.logger.debug(
        "{method} {path} {status} {ms} ms (request id {requestId})",
        { ...properties, requestId },
      );
    }
  };
  // Whether a `/healthz` request reads the workers' counts: where tokens
  // are set, only with an operator's (a valid token not a tenant's). A
  // probe without one reads whether the gateway serves, which is all a
  // load balancer needs: the counts told anyone who reached the port how
  // the gateway is deployed (its workers) and, as they go down, when a
  // tenant's calls crash them (tenants30). Read as the request is
  // answered: the tokens of now (a reload replaces them).
  const readsHealthCounts = (request: Request): boolean => {
    if (tokenMatches === undefined) return true;
    const token = bearerToken(request.headers.get("authorization") ?? "");
    const id = token === undefined ? undefined : tokenMatches(token);
    return id !== undefined && tenantIds?.has(id) !== true;
  };
  // Before the guards: a load balancer probes by IP or by a name nobody
  // listed, and the answer holds nothing a cross-site page could use.
  app.get("/healthz", (c) => {
    // The workers alone: a probe's cost does not grow with the models.
    const workers = workersOf(pool);
    const ready = workers.filter((w) => w.state === "ready").length;
    const ok = ready > 0 && !unready.aborted;
    const status = unready.aborted ? "draining" : ok ? "ok" : "unavailable";
    return c.json(
      readsHealthCounts(c.req.raw)
        ? { status, ready, workers: workers.length }
        : { status },
      ok ? 200 : 503,
    );
  });
  const hostOptions = {
    port: options.port ?? (() => 8000),
    allowedHosts: options.allowedHosts ?? [],
    ipHosts: options.allowIpHosts ?? false,
    onRefused: (c: Context) => void notLetIn.add(c.req.raw),
  };
  app.use(hostGuard(hostOptions));
  // Said in the log now and then: a page or client refused here got only
  // its status, and the log said nothing (newcomer26).
  const originRefusals = new RefusalLog(logger);
  const originOptions = {
    origins: options.cors?.origins ?? [],
    onRefused: (c: Context, origin: string | undefined) => {
      notLetIn.add(c.req.raw);
      originRefusals.refused(
        "Refused a cross-origin request (403 ForbiddenOrigin) from {origin} to {path}: list the origin in cors.origins to allow it",
        { origin: origin?.slice(0, 200) ?? null, path: loggedPath(c.req.path) },
      );
    },
  };
  app.use(originGuard(originOptions));
  const cors = corsMiddleware(
    options.cors,
    forwardHeaders,
    ctx.exposedHeaders,
  );
  if (cors) app.use(cors);
  let authMiddleware: MiddlewareHandler | undefined;
  let renewAuth = (): void => {};
  // One for the gateway's life: a reload's new middleware keeps its pace.
  const tokenRefusals = new RefusalLog(logger);
  // A WebSocket handshake's subprotocols refused (400): a page's
  // `new WebSocket(url, [token])` without pyproxy.v1 got only a 1006 close,
  // and the log said nothing (security27).
  const offerRefusals = new RefusalLog(logger);
  if (tokens !== undefined) {
    // The routes only the management token may call: those the flags turn
    // on, as the router matched them (the same decoding, the same paths).
    const manageKeys = new Set(Object.keys({
      ...(ctx.allowManage ? MANAGE_ROUTES : {}),
      ...(ctx.allowEval ? EVAL_ROUTES : {}),
    }));
    const manageRoute = (c: Context): boolean =>
      c.req.matchedRoutes.some((r) => manageKeys.has(`${r.method} ${r.path}`));
    // Asked for a tenant's token only: nobody else pays for it. (An
    // execute's `?publish=` is checked by its route: a tenant's own
    // channels only, `_tenant_channels.ts`.)
    const operatorRoute = (c: Context): boolean =>
      c.req.path === "/v2/models/stats" ||
      c.req.matchedRoutes.some((r) =>
        OPERATOR_KEYS.has(`${r.method} ${r.path}`)
      );
    const tenantRefusals = new RefusalLog(logger);
    const auth = (): MiddlewareHandler =>
      bearerAuth({
        token: tokens!,
        ...(manageTokens === undefined
          ? {}
          : { manageToken: manageTokens, manageRoute }),
        ...(tenantIds === undefined ? {} : {
          tenantIds,
          operatorRoute,
          onTenantRefused: (c: Context, id: string) =>
            tenantRefusals.refused(
              "Refused a tenant's token {caller} (403 ForbiddenToken) on {method} {path}: an operator's route",
              {
                caller: id,
                method: c.req.method,
                path: loggedPath(c.req.path),
              },
            ),
        }),
        webSocketPath: isChannelPath,
        onAuthenticated: (c, id) => ctx.callers!.set(c.req.raw, id),
        onRefused: (c) => {
          notLetIn.add(c.req.raw);
          tokenRefusals.refused(
            "Refused a request without a valid token (401) to {path}",
            { path: loggedPath(c.req.path) },
          );
        },
        onBadOffer: (c, problem) =>
          offerRefusals.refused(
            "Refused a WebSocket upgrade (400) to {path}: {problem}",
            { path: loggedPath(c.req.path), problem },
          ),
      });
    // Replaced as a whole by a reload: a request sees the old tokens or
    // the new ones, never a mix.
    authMiddleware = auth();
    renewAuth = () => (authMiddleware = auth());
    app.use((c, next) => authMiddleware!(c, next));
  }

  // A model a plugin's canCall hides from the request's token (a tenant's
  // kept from another's models): its descriptions (/v1 and /v2 metadata,
  // ready, config, versions; gRPC's, made as the /v2 requests) answer 404
  // as for a model that is not there, as its list leaves it out. Calls are
  // the plugin's own onCall's to refuse.
  const canCall = pool.canCall;
  if (canCall !== undefined) {
    app.use(async (c, next) => {
      const method = c.req.method;
      if (method === "GET" || method === "HEAD") {
        const name = describedModel(c.req.path);
        if (
          name !== undefined &&
          !canCall.call(pool, name, ctx.callers?.get(c.req.raw))
        ) throw modelNotFound(name);
      }
      await next();
    });
  }

  app.get("/v1/status", (c) => {
    const debug = ctx.debug(c.req.raw);
    const read = pool.status();
    const status = read as unknown as Record<string, unknown> & {
      workers: ReadonlyArray<Record<string, unknown> & { restarts: number }>;
    };
    const workers = status.workers.map((w) => {
      // stderr can hold paths and secrets printed by models: only shown with --debug.
      const { stderrTail: _tail, ...rest } = w;
      return debug ? w : rest;
    });
    // jsonResponse: a plugin's status, or a model's options (--debug), may hold a BigInt.
    return jsonResponse({
      ...status,
      version: options.version,
      uptime: Date.now() - started,
      draining: unready.aborted,
      workers,
      // Only when a plugin reports one (autoscale): additive.
      ...pluginStatusOf(pool),
      // The status read above (not built again: every model, every worker).
      models: ctx.catalog.list({ status: () => read }).map((m) =>
        modelView(m, debug, ctx.requestTimeout)
      ),
      restarts: status.workers.reduce((n, w) => n + w.restarts, 0),
      gateway: {
        inFlight: ctx.metrics.inFlight,
        // Other requests whose response is not delivered yet (this one
        // included): a drain waits for them too.
        othersInFlight: ctx.metrics.held,
        subscribers: ctx.hub.subscriberCount,
        channels: ctx.hub.list().length,
      },
    });
  });

  app.get("/metrics", async (c) => {
    if (c.req.query("format") === "json") {
      return c.json({
        ...ctx.metrics.toJSON(),
        subscribers: ctx.hub.subscriberCount,
        droppedSubscribers: ctx.hub.droppedCount,
        ...(ctx.tracing === undefined
          ? {}
          : { droppedSpans: ctx.tracing.dropped }),
        ...(pool.modelMetrics === undefined
          ? {}
          : { modelMetrics: pool.modelMetrics() }),
      });
    }
    const status = pool.status();
    const readyWorkers = new Set<string>();
    for (const w of status.workers) {
      if (w.state === "ready") readyWorkers.add(w.id);
    }
    const modelReady = new Map<string, boolean>();
    for (const m of status.models) {
      modelReady.set(
        m.version === undefined ? m.name : `${m.name}@${m.version}`,
        // Not ready during a shutdown delay, as the readiness routes say.
        !unready.aborted && m.failedReason === undefined &&
          (m.slots === undefined
            ? readyWorkers.size > 0
            : m.slots.some((id) => readyWorkers.has(id))),
      );
    }
    // A model the start skipped (its file failed to import) is not ready:
    // without its series, an alert on `pyproxy_models_ready == 0` missed it.
    for (const name of ctx.startSkips.names()) {
      if (!status.models.some((m) => m.name === name)) {
        modelReady.set(name, false);
      }
    }
    // Read at the scrape, never on a request's path: the gateway's process,
    // and each worker's from /proc (a worker that died meanwhile is left out).
    const [gatewayProcess, workerResources] = await Promise.all([
      readProcessResources(ctx.runtime),
      readWorkerResources(ctx.runtime, status.workers),
    ]);
    const limits = status.limits;
    const text = ctx.metrics.render({
      workers: status.workers,
      build: {
        version: options.version ?? PYTHON_MANIFEST.version,
        runtime: ctx.runtime.name,
        runtimeVersion: runtimeVersion(),
        python: status.workers.find((w) => w.python !== undefined)?.python ??
          "",
      },
      limits: {
        ...(limits?.maxInFlightPerWorker === undefined
          ? {}
          : { maxInFlightPerWorker: limits.maxInFlightPerWorker }),
        ...(limits?.maxQueue === undefined
          ? {}
          : { maxQueue: limits.maxQueue }),
        ...(limits?.evalReplayBudget === undefined
          ? {}
          : { evalReplayBytes: limits.evalReplayBudget }),
        bodyBytes: ctx.bodyLimit,
        requestTimeoutSeconds: ctx.requestTimeout / 1000,
      },
      ...(status.exits === undefined ? {} : { exits: status.exits }),
      process: gatewayProcess,
      workerResources,
      subscribers: ctx.hub.subscriberCount,
      droppedSubscribers: ctx.hub.droppedCount,
      ...(ctx.tracing === undefined
        ? {}
        : { droppedSpans: ctx.tracing.dropped }),
      ...(status.evalReplayBytes === undefined
        ? {}
        : { evalReplayBytes: status.evalReplayBytes }),
      ...(status.queue === undefined ? {} : { queued: status.queue }),
      ...tokenFilesState(options.tokenFilesRefused?.()),
      outOfService: status.models.filter((m) => m.failedReason !== undefined)
        .length,
      modelReady,
      ...(pool.queueWaits === undefined
        ? {}
        : { queueWaits: pool.queueWaits() }),
      plugins: pool.pluginMetrics?.() ?? [],
      ...(pool.modelMetrics === undefined
        ? {}
        : { modelMetrics: pool.modelMetrics() }),
    });
    return c.body(text, 200, {
      "content-type": "text/plain; version=0.0.4; charset=utf-8",
    });
  });

  app.get("/", (c) => {
    const nonce = crypto.randomUUID().replaceAll("-", "");
    return c.html(
      dashboardHtml({
        nonce,
        ...(options.version ? { version: options.version } : {}),
        ...(options.dashboardIntervalMs === undefined
          ? {}
          : { intervalMs: options.dashboardIntervalMs }),
      }),
      200,
      {
        "content-security-policy": dashboardCsp(nonce),
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
        "cache-control": "no-store",
      },
    );
  });

  // Built when the models (names, catalog versions, labels) or the server URL
  // differ from the last request's, else the same text again: models come
  // and go (PUT, DELETE), and a document of many models is large (~3 KB and
  // ~45 µs each). Execute calls never touch it. Behind the Host check, so
  // the server URL names a host the gateway accepts; with
  // `allowedHosts: ["*"]` any Host passes, and the URL is left relative
  // rather than reflect one.
  const anyHost = hostOptions.allowedHosts.includes("*");
  let openApi: { key: string; body: Uint8Array<ArrayBuffer> } | undefined;
  // A tenant's token's: without eval, management and the management token
  // (the routes it is refused), whatever this configuration serves.
  let tenantOpenApi: typeof openApi;
  app.get("/openapi.json", (c) => {
    const tenant = ctx.isTenant(c.req.raw);
    // The Host header, or HTTP/2's :authority.
    const host = requestAuthority(c.req.raw);
    const scheme = new URL(c.req.url).protocol === "https:" ? "https" : "http";
    const serverUrl = anyHost || !host
      ? "/"
      : `${scheme}://${host.toLowerCase()}`;
    const all = ctx.catalog.list(pool);
    // Those the token may call (a plugin's canCall): a document of fewer
    // is made for its request alone, not kept (it would be another's).
    const caller = ctx.callers?.get(c.req.raw);
    const models = canCall === undefined
      ? all
      : all.filter((m) => canCall.call(pool, m.name, caller));
    const own = models.length !== all.length;
    // A version's entry: its label, and whether it is the default (whose
    // inputs the name's own paths document) — a PUT .../default changes
    // no count.
    const key = JSON.stringify([
      serverUrl,
      models.map((m) =>
        m.label === undefined
          ? [m.name, m.version ?? null]
          : [m.name, m.version ?? null, m.label, m.default === true]
      ),
    ]);
    let cached = own ? undefined : tenant ? tenantOpenApi : openApi;
    if (cached?.key !== key) {
      const doc = openApiDocument({
        version: options.version ?? PYTHON_MANIFEST.version,
        serverUrl,
        token: options.token !== undefined,
        manageToken: !tenant && manageTokens !== undefined,
        allowEval: !tenant && ctx.allowEval,
        allowManage: !tenant && ctx.allowManage,
        streams: pool.executeStream !== undefined,
        bodyLimit: ctx.bodyLimit,
        requestTimeout: ctx.requestTimeout,
        streamKeepAlive: ctx.streamKeepAlive,
        ...(ctx.streamFirstItemTimeout === undefined
          ? {}
          : { streamFirstItemTimeout: ctx.streamFirstItemTimeout }),
        forwardHeaders: ctx.forwardHeaders,
        models,
      });
      cached = { key, body: new TextEncoder().encode(JSON.stringify(doc)) };
      if (!own) {
        if (tenant) tenantOpenApi = cached;
        else openApi = cached;
      }
    }
    return c.body(cached.body, 200, {
      "content-type": "application/json",
      "cache-control": "no-store",
    });
  });

  app.route("/", modelRoutes(ctx));
  app.route("/", modelStreamRoutes(ctx));
  app.route("/", workerRoutes(ctx));
  app.route("/", evalRoutes(ctx));
  app.route("/", channelRoutes(ctx));
  app.route(
    "/",
    inferenceProtocolRoutes(ctx, options.version ?? PYTHON_MANIFEST.version),
  );

  // A known path asked with another method is a 405 naming the allowed ones:
  // those this configuration serves (a route its flag turns off answers only
  // 403; the message names it with its flag).
  const allowedMethods = methodsByPath(app, {
    ...(ctx.allowManage ? {} : MANAGE_ROUTES),
    ...(ctx.allowEval ? {} : EVAL_ROUTES),
  });
  // A tenant's token: as if eval and management were off, and without
  // their flags, whatever this configuration serves (its 403 on them says
  // no more): the Allow header and the message named what was on.
  const tenantMethods = methodsByPath(app, {
    ...MANAGE_ROUTES,
    ...EVAL_ROUTES,
  });
  // The usual slips get a hint: a POST to a model without /execute, a path
  // without its /v1, another server's route (a client being migrated).
  // TensorFlow Serving's and KServe V1's `:predict`: not a route (see
  // predictCalls), answered here, behind the guards.
  const predict = predictCalls(ctx);
  app.notFound((c) => {
    const { method, path } = c.req;
    if (method === "POST") {
      const answer = predict(c.req.raw, path);
      if (answer !== undefined) return answer;
    }
    // A tenant's token, or no token at all where tokens are set: an
    // OPTIONS (a preflight, let in without one) read the Allow header and
    // the flags of what eval and management serve, before any token.
    const tenant = ctx.isTenant(c.req.raw) ||
      (ctx.callers !== undefined && !ctx.callers.has(c.req.raw));
    const methods = (tenant ? tenantMethods : allowedMethods)(path);
    const allow = methods.allow;
    // Those turned off, with their flag: never to a tenant.
    const off = tenant ? [] : methods.off;
    if (allow.length > 0 || methods.off.length > 0) {
      // A :predict whose colon is percent-encoded reads as a model name here.
      const run = foreignRouteHint(path) ||
        (method === "POST" &&
            allowedMethods(`${path}/execute`).allow.includes("POST")
          ? ` (to run the model: POST ${path}/execute)`
          : "");
      // Those turned off, with their flag, unless a hint says what to call.
      const flags = run !== "" ? "" : [
        ...new Set(off.map(([, flag]) => flag)),
      ].map((flag) =>
        `; ${
          off.filter(([, f]) => f === flag).map(([m]) => m).join(", ")
        } with ${flag}`
      ).join("");
      return c.json(
        {
          error: {
            type: "MethodNotAllowed",
            message: `Cannot ${method} ${path}: allowed: ${
              allow.length > 0 ? allow.join(", ") : "none"
            }${flags}${run}`,
          },
        },
        405,
        { allow: allow.join(", ") },
      );
    }
    const v1 = (tenant ? tenantMethods : allowedMethods)(`/v1${path}`);
    const hint = v1.allow.length > 0 || v1.off.length > 0
      ? ` (did you mean /v1${path}?)`
      : foreignRouteHint(path);
    return c.json({
      error: {
        type: "NotFound",
        message: `Cannot find route ${method} ${path}${hint}`,
      },
    }, 404);
  });
  app.onError((err, c) => routeError(ctx, err, c));

  // Model calls are the hot path: a plain one (no query string, no CORS, Host
  // and token accepted, no Origin or Sec-Fetch-Site) skips the router and the middleware chain, whose
  // cost is a large share of a small call. Anything else, including every
  // refusal, goes through the app above, so the responses are the same.
  const hostAllowed = requestHostChecker(hostOptions);
  // Execute is an inference route: the management token is accepted too.
  // `let`: a reload replaces them (one closure variable read, as before).
  let tokenMatches = anyTokenMatcher(tokens, manageTokens);
  const execute = modelExecutor(ctx, true);
  // The id of the token fastName let the request in with (read at once).
  let fastCaller: string | undefined;
  const fastName = (request: Request): string | undefined => {
    if (cors !== undefined || request.method !== "POST" || signal.aborted) {
      return undefined;
    }
    const url = request.url;
    const colon = url.indexOf(":");
    const start = url.indexOf("/", colon + 4);
    if (
      start < 0 || !url.startsWith(EXECUTE_PREFIX, start) ||
      !url.endsWith(EXECUTE_SUFFIX)
    ) return undefined;
    const name = url.slice(
      start + EXECUTE_PREFIX.length,
      url.length - EXECUTE_SUFFIX.length,
    );
    if (!PLAIN_NAME.test(name)) return undefined;
    const headers = request.headers;
    // The Host header and the URL's authority (HTTP/2's :authority), found
    // above: between the scheme's "://" and the path.
    if (!hostAllowed(headers.get("host"), url, colon + 3, start)) {
      return undefined;
    }
    // A browser's request (it sends one of these) takes the app's path and
    // its Origin check; two header reads keep the direct path for the rest.
    if (headers.get("origin") !== null) return undefined;
    if (headers.get("sec-fetch-site") !== null) return undefined;
    if (tokenMatches !== undefined) {
      const token = bearerToken(headers.get("authorization") ?? "");
      if (token === undefined) return undefined;
      fastCaller = tokenMatches(token);
      if (fastCaller === undefined) return undefined;
    }
    return name;
  };
  const fetch = (
    request: Request,
    env: unknown,
  ): Response | Promise<Response> => {
    const name = fastName(request);
    if (name !== undefined) {
      return execute(
        request,
        name,
        undefined,
        undefined,
        undefined,
        undefined,
        fastCaller,
      );
    }
    // The drain waits for this response's delivery (the middleware).
    if (typeof env === "object" && env !== null && Object.isExtensible(env)) {
      (env as ServeRequestInfo).wantsCompleted = true;
    }
    return app.fetch(request, env);
  };
  // Tracing wraps the whole app only when on: off, no request pays for it.
  const setTokens = (next: GatewayTokens): void => {
    const checked = checkedTokens(next, "replace tokens");
    // Leaving tenantToken out of a replacement is no tenants: a token file
    // whose marks are all gone.
    for (
      const [name, before, after] of [
        ["token", tokens, checked.tokens],
        ["manageToken", manageTokens, checked.manageTokens],
      ] as const
    ) {
      if ((before === undefined) !== (after === undefined)) {
        throw new RangeError(
          `Cannot replace tokens: ${name} cannot be turned ${
            after === undefined ? "off" : "on"
          } while serving (restart for that)`,
        );
      }
    }
    // All computed first: nothing is replaced unless everything is.
    const nextAny = anyTokenMatcher(checked.tokens, checked.manageTokens);
    const nextManage = checked.manageTokens === undefined
      ? undefined
      : tokenMatcher(checked.manageTokens);
    // What an eval held needs: the management token, else an operator's
    // (an inference token not marked a tenant's). Without this, an operator
    // token re-marked `tenant` kept the evals it had opened running, where
    // its next eval got 403.
    const nextTenants = checked.tenantIds;
    const nextOperator = nextManage ??
      (nextTenants === undefined ? undefined : (token: string): boolean => {
        const id = nextAny?.(token);
        return id !== undefined && !nextTenants.has(id);
      });
    tokens = checked.tokens;
    manageTokens = checked.manageTokens;
    tenantIds = checked.tenantIds;
    renewAuth();
    tokenMatches = nextAny;
    manageMatches = nextManage;
    // A retired token's channel subscriptions and streams end too: they
    // would go on for as long as their clients stay (days), where its next
    // request gets 401.
    // A subscription's token made a tenant's keeps only its own channels.
    const nextChannel = nextTenants === undefined
      ? undefined
      : (token: string, channel: string): boolean => {
        const id = nextAny?.(token);
        return id === undefined || !nextTenants.has(id) ||
          tenantOwnsChannel(id, channel);
      };
    const ended = nextAny === undefined ? undefined : ctx.tokenHolders?.revoke(
      (t) => nextAny(t) !== undefined,
      nextOperator,
      nextChannel,
      nextManage !== undefined,
    );
    if (ended !== undefined && ended.subscription > 0) {
      logger.info(
        "Ended {count} channel subscription(s) whose token is no longer accepted",
        { count: ended.subscription },
      );
    }
    if (ended !== undefined && ended.stream > 0) {
      logger.info(
        "Ended {count} model or eval stream(s) whose token is no longer accepted",
        { count: ended.stream },
      );
    }
    // Still accepted: a tenant's now, or no longer the management token.
    if (ended !== undefined && ended.demoted.subscription > 0) {
      logger.info(
        "Ended {count} channel subscription(s) whose token may no longer follow their channel (now a tenant's)",
        { count: ended.demoted.subscription },
      );
    }
    if (ended !== undefined && ended.demoted.stream > 0) {
      logger.info(
        "Ended {count} eval stream(s) whose token may no longer run eval (now a tenant's, or no longer the management token)",
        { count: ended.demoted.stream },
      );
    }
  };
  if (tracing === undefined) {
    const plain: GatewayApp = {
      fetch,
      request: (input, init) => app.request(input, init),
    };
    SET_TOKENS_OF.set(plain, setTokens);
    return plain;
  }
  // A call without the token makes no span: a client that may not call
  // models would otherwise fill the export queue (the others' spans then
  // dropped) and add spans to any trace it names (its traceparent).
  if (tokenMatches !== undefined) {
    tracing.admits = (request) => {
      const token = bearerToken(request.headers.get("authorization") ?? "");
      // The current tokens (a reload replaces them; never turns them off).
      return token !== undefined && tokenMatches?.(token) !== undefined;
    };
  }
  const traced: GatewayApp = {
    fetch: (request, env) =>
      tracing.serve(
        request,
        () => fetch(request, env),
        (env as ServeRequestInfo | undefined)?.remoteAddr,
      ),
    request: (input, init) => {
      // As Hono's request(): a path is on http://localhost.
      const request = input instanceof Request
        ? (init === undefined ? input : new Request(input, init))
        : new Request(
          typeof input === "string" && !/^https?:\/\//.test(input)
            ? `http://localhost${input.startsWith("/") ? "" : "/"}${input}`
            : input,
          init,
        );
      return tracing.serve(request, () => app.request(request));
    },
  };
  TRACING_OF.set(traced, tracing);
  SET_TOKENS_OF.set(traced, setTokens);
  return traced;
}

/** `{ pluginStatus }` when the pool's plugins report any state, else `{}`. */
/** The configured models' specs by name, a name's versions in their order. */
function groupByName(
  models: ReadonlyArray<{ name: string } & GatewayModelSpec>,
): Map<string, GatewayModelSpec[]> {
  const byName = new Map<string, GatewayModelSpec[]>();
  for (const { name, ...spec } of models) {
    const specs = byName.get(name);
    if (specs === undefined) byName.set(name, [spec]);
    else specs.push(spec);
  }
  return byName;
}

function pluginStatusOf(
  pool: GatewayPool,
): { pluginStatus?: Record<string, Record<string, unknown>> } {
  const status = pool.pluginStatus?.() ?? {};
  return Object.keys(status).length === 0 ? {} : { pluginStatus: status };
}

/** The token lists of `options`, checked (a `RangeError` says why not). */
function checkedTokens(
  options: GatewayTokens,
  action: string,
): {
  tokens?: readonly string[];
  manageTokens?: readonly string[];
  tenantIds?: ReadonlySet<string>;
} {
  tokenListProblem("token", options.token, action);
  tokenListProblem("manageToken", options.manageToken, action);
  // As serve's configuration is (ConfigError): at least 16 characters,
  // sendable, not clearly weak (`aaaaaaaaaaaaaaaa`, `password12345678`),
  // which a library gateway took (tenants28). Never the token in the error.
  for (const name of ["token", "manageToken"] as const) {
    const value = options[name];
    if (value !== undefined) {
      checkToken(
        name,
        value,
        action === "create gateway" ? "createGateway's options" : action,
      );
    }
  }
  if (options.manageToken !== undefined && options.token === undefined) {
    throw new RangeError(
      `Cannot ${action}: manageToken requires token (the inference token)`,
    );
  }
  const tokens = options.token === undefined
    ? undefined
    : typeof options.token === "string"
    ? [options.token]
    : options.token;
  const manageTokens = options.manageToken === undefined
    ? undefined
    : typeof options.manageToken === "string"
    ? [options.manageToken]
    : options.manageToken;
  if (manageTokens?.some((t) => tokens?.includes(t))) {
    throw new RangeError(
      `Cannot ${action}: manageToken must differ from every token`,
    );
  }
  const tenants = options.tenantToken ?? [];
  if (tenants.length > 0) {
    const listed = new Set(tokens);
    if (!tenants.every((t) => listed.has(t))) {
      throw new RangeError(
        `Cannot ${action}: tenantToken lists a token that is not one of token's (a tenant's token is an inference token that may not read the operator's routes)`,
      );
    }
  }
  return {
    ...(tokens === undefined ? {} : { tokens: [...tokens] }),
    ...(manageTokens === undefined ? {} : { manageTokens: [...manageTokens] }),
    ...(tenants.length === 0
      ? {}
      : { tenantIds: new Set(tenants.map(tokenId)) }),
  };
}

/**
 * Matches either kind of token (execute is an inference route: both may
 * call it), answering the matched one's id (`tokenId`).
 */
function anyTokenMatcher(
  tokens: readonly string[] | undefined,
  manageTokens: readonly string[] | undefined,
): ((presented: string) => string | undefined) | undefined {
  return tokens === undefined ? undefined : tokenIdentifier(
    manageTokens === undefined ? tokens : [...tokens, ...manageTokens],
  );
}

/** Throws when a token option is empty, or a list is empty, too long or repeats one. */
function tokenListProblem(
  name: string,
  value: string | readonly string[] | undefined,
  action: string,
): void {
  if (value === undefined) return;
  const list = typeof value === "string" ? [value] : value;
  // An empty token would be presented by `/?token=`, an empty or undecodable
  // token subprotocol: the dashboard and channel subscriptions would be open.
  const problem = list.length === 0
    ? "is an empty list (leave it out for no token)"
    : list.length > MAX_TOKENS
    ? `lists ${list.length} tokens (at most ${MAX_TOKENS})`
    : list.includes("")
    ? "is empty (leave it out for no token)"
    : new Set(list).size < list.length
    ? "lists a token twice"
    : undefined;
  if (problem !== undefined) {
    throw new RangeError(`Cannot ${action}: ${name} ${problem}`);
  }
}

/** `/v1/channels/{name}`: the route that upgrades to a WebSocket (subscribe). */
function isChannelPath(path: string): boolean {
  return path.startsWith("/v1/channels/") && path.indexOf("/", 13) < 0;
}

const EXECUTE_PREFIX = "/v1/models/";
const EXECUTE_SUFFIX = "/execute";
// Names the router would pass on unchanged (no percent-decoding, no extra segment).
const PLAIN_NAME = /^[A-Za-z0-9_.-]+$/;

/**
 * Routes registered in every configuration that answer only 403 without
 * `--allow-manage` (`"METHOD /path"` as registered, to the flag).
 */
const MANAGE_ROUTES: Readonly<Record<string, string>> = {
  "PUT /v1/models/:name": "--allow-manage",
  "DELETE /v1/models/:name": "--allow-manage",
  "PUT /v1/models/:name/versions/:version": "--allow-manage",
  "DELETE /v1/models/:name/versions/:version": "--allow-manage",
  "PUT /v1/models/:name/default": "--allow-manage",
  "PUT /v1/workers": "--allow-manage",
  "POST /v2/repository/index": "--allow-manage",
  "POST /v2/repository/models/:name/load": "--allow-manage",
  "POST /v2/repository/models/:name/unload": "--allow-manage",
};

/** The same for `--allow-eval`. */
const EVAL_ROUTES: Readonly<Record<string, string>> = {
  "POST /v1/eval": "--allow-eval",
  "GET /v1/eval/:id/events": "--allow-eval",
};

/**
 * The routes a tenant's token is refused (`"METHOD /path"` as
 * registered), as they show or change what is every tenant's: the pool's
 * and the plugins' state (their per-tenant counts), every channel's
 * messages, every model's call counts, eval and management. A tenant's
 * token calls models and reads their descriptions (`/v1/models`, `/v2`
 * metadata, `/openapi.json`), subscribes and publishes to its own
 * channels (the routes check the name: `channelAccess`), and nothing
 * else. `GET /v2/models/stats` is `GET /v2/models/:name` (the
 * router takes no static route beside it): matched by its path.
 */
const OPERATOR_KEYS: ReadonlySet<string> = new Set([
  "GET /v1/status",
  "GET /metrics",
  "GET /",
  "GET /v1/channels",
  "GET /v2/models/:name/stats",
  "GET /v2/models/:name/versions/:version/stats",
  ...Object.keys(MANAGE_ROUTES),
  ...Object.keys(EVAL_ROUTES),
]);

/**
 * The methods of the app's routes whose pattern matches a path (HEAD with
 * GET), from the routes registered so far: `allow` those served, `off`
 * those of `off`'s routes (turned off in this configuration) with their
 * flag; both `[]` for a path no route has.
 */
function methodsByPath(
  app: Hono,
  offRoutes: Readonly<Record<string, string>>,
): (path: string) => { allow: string[]; off: Array<[string, string]> } {
  const routes: Array<
    { method: string; pattern: RegExp; flag: string | undefined }
  > = [];
  for (const r of app.routes) {
    if (r.method === "ALL" || r.path.includes("*")) continue;
    const source = r.path.split("/").map((part) =>
      part.startsWith(":")
        ? "[^/]+"
        : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
    ).join("/");
    routes.push({
      method: r.method,
      pattern: new RegExp(`^${source}$`),
      flag: offRoutes[`${r.method} ${r.path}`],
    });
  }
  return (path) => {
    const allow = new Set<string>();
    const off = new Map<string, string>();
    for (const r of routes) {
      if (!r.pattern.test(path)) continue;
      const methods = r.method === "GET" ? ["GET", "HEAD"] : [r.method];
      for (const m of methods) {
        if (r.flag === undefined) allow.add(m);
        else off.set(m, r.flag);
      }
    }
    for (const m of allow) off.delete(m);
    return { allow: [...allow], off: [...off] };
  };
}

/** `/v1/models/{name}...`, `/v2/models/{name}...`: the model's name. */
const DESCRIBED_MODEL = /^\/v[12]\/models\/([^/]+)/;

/**
 * The model a GET of `path` describes (`/v1/models/{name}`, its versions
 * and metadata; `/v2/models/{name}`, its ready, config and versions), its
 * name decoded; `undefined` for any other path, and for Triton's
 * `/v2/models/stats` (every model's: an operator's route).
 */
function describedModel(path: string): string | undefined {
  const match = DESCRIBED_MODEL.exec(path);
  if (match === null) return undefined;
  let name: string;
  try {
    name = decodeURIComponent(match[1]!);
  } catch {
    return undefined;
  }
  return path === "/v2/models/stats" ? undefined : name;
}

/** `{ tokenFilesRefused }` for the metrics when token files are polled. */
function tokenFilesState(
  refused: boolean | undefined,
): { tokenFilesRefused?: boolean } {
  return refused === undefined ? {} : { tokenFilesRefused: refused };
}
