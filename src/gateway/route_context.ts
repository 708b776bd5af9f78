/**
 * What the route groups of the gateway share.
 *
 * @module
 */
import type { StartSkips } from "./_start_skips.ts";
import type { GatewayTracing } from "./_gateway_tracing.ts";
import type { Logger } from "../logger.ts";
import type { Runtime } from "../runtime/types.ts";
import type { ResponseCompression } from "./_response_compression.ts";
import type { ChannelHub } from "./channels.ts";
import type { DisconnectWatch } from "./disconnect_watch.ts";
import type { GatewayModelSpec, GatewayPool } from "./gateway_pool.ts";
import type { GatewayMetrics } from "./metrics.ts";
import type { ModelCatalog } from "./model_catalog.ts";
import type { BodyReadGuard } from "./read_json_body.ts";
import type { ExposedModelHeaders } from "./_model_http_headers.ts";
import type { ModelChanges } from "./_model_changes.ts";
import type { TokenHolders } from "./_token_holders.ts";

/**
 * The state every route group receives from `createGateway`.
 *
 * @example
 * ```ts ignore
 * const routes = modelRoutes(ctx); // ctx: RouteContext
 * ```
 */
export interface RouteContext {
  /** The pool. */
  pool: GatewayPool;
  /** Channels. */
  hub: ChannelHub;
  /** Request metrics. */
  metrics: GatewayMetrics;
  /** Model descriptions and input schemas. */
  catalog: ModelCatalog;
  /** Runtime adapter (WebSocket upgrade). */
  runtime: Runtime;
  /** Logger of the `pyproxy.gateway` category. */
  logger: Logger;
  /** Aborted when the server starts draining: new requests get 503. */
  signal: AbortSignal;
  /**
   * Aborted when the readiness routes say not ready: at the drain's start,
   * or before it, at a shutdown delay's (the other routes still serve).
   */
  unready: AbortSignal;
  /**
   * Aborted when the shutdown grace is over: eval streams whose code still
   * runs end with a `ShuttingDownError` event.
   */
  stopSignal: AbortSignal;
  /** Largest request body in bytes. */
  bodyLimit: number;
  /** Most digits of an integer literal in a request body. */
  maxIntegerDigits: number;
  /** Deepest nesting of arrays and objects in a request body (the body is level 1). */
  maxJsonDepth: number;
  /** Bounds the time a request may take to send its body (and fails body reads at drain). */
  bodyReads: BodyReadGuard;
  /** Default (and maximum) execute timeout in ms. */
  requestTimeout: number;
  /**
   * Silence (ms) after which a model stream sends a `: keep-alive` comment:
   * between its items, and before its first with `?early=1`; an eval's
   * event stream too.
   */
  streamKeepAlive: number;
  /**
   * Bound (ms) of a model stream's time to its first item, which a
   * request's `?firstItemTimeout=` may lower; `undefined`: none.
   */
  streamFirstItemTimeout: number | undefined;
  /**
   * How long (ms) an eval's event stream may keep an event its client does
   * not take before it ends with `StreamIdleError` (`Infinity`: never).
   */
  evalStreamIdleTimeout: number;
  /** Bound of a model's load (`PUT`) or removal (`DELETE`), and of a resize (`PUT /v1/workers`), in ms. */
  loadTimeout: number;
  /** `PUT`/`DELETE /v1/models/{name}` and `PUT /v1/workers` allowed. */
  allowManage: boolean;
  /** `POST /v1/eval` allowed. */
  allowEval: boolean;
  /** Watches the clients of execute calls (a client that disconnects cancels its call); none when off. */
  disconnects: DisconnectWatch | undefined;
  /**
   * Whether `request` is shown the details (tracebacks and internal
   * messages in error responses, options, `stderrTail`): `--debug`, and
   * with a management token set, a request that presents it.
   */
  debug: (request: Request) => boolean;
  /**
   * `--debug` itself: the details of the management routes' own records
   * (the repository index's reasons), which only the management token
   * reads when one is set.
   */
  manageDebug: boolean;
  /** The models directory (kept out of error messages unless `debug`), when known. */
  modelsDir: string | undefined;
  /**
   * The models configured by name (`pyproxy.json` `models`), with their
   * specs: the model repository extension lists them, and loads one with
   * its specs (one each of its versions, in the order configured).
   */
  repositoryModels: ReadonlyMap<string, readonly GatewayModelSpec[]>;
  /** The models the start skipped, with why (the repository index's reasons). */
  skippedModels: ReadonlyArray<{ name: string; error: string }>;
  /**
   * Those of them that are models whose load failed (not helper modules)
   * and not loaded since (a `PUT` or a repository load of the name takes
   * it out): their calls' 404 says why, and `/metrics` has their
   * `pyproxy_models_ready` at 0.
   */
  startSkips: StartSkips;
  /**
   * Loads and removals of models in progress, one per name at a time
   * (`PUT`/`DELETE /v1/models/{name}` and the repository extension's load
   * and unload queue together).
   */
  modelChanges: ModelChanges;
  /** The request headers models get (lower-case, each once); empty: none, and none is read. */
  forwardHeaders: readonly string[];
  /** Gzip for large model results (`compress`); `undefined`: off. */
  compression: ResponseCompression | undefined;
  /**
   * When the log last warned of each model's refused `HTTPError` headers
   * (ms since the epoch): at most once a minute per model; under
   * `?early=1 <model>`, of the headers an early stream could not send.
   */
  refusedHeaderWarnings: Map<string, number>;
  /** The model headers each response got, for CORS to expose. */
  exposedHeaders: ExposedModelHeaders;
  /** OpenTelemetry tracing of model calls; `undefined`: off, nothing read. */
  tracing: GatewayTracing | undefined;
  /**
   * The channel subscriptions by the token each presented, for a reload
   * that retires a token to end them; `undefined` without a token.
   */
  tokenHolders: TokenHolders | undefined;
  /**
   * The id of the token each routed request was let in with (`tokenId`),
   * set by the authentication, read as its model calls' `caller`;
   * `undefined` without a token.
   */
  callers: WeakMap<Request, string> | undefined;
  /**
   * Throws 403 `ForbiddenToken` (and logs it now and then) when `request`
   * was let in by a tenant's token and `channel` is not one of its own
   * (named by its id: `_tenant_channels.ts`); `action` is what it asked
   * (`"subscribe to"`, `"publish to"`). `undefined` without a token.
   */
  /**
   * Whether `request` was let in by a tenant's token (`caller`: its token's
   * id, when the request skipped the router); `false` without tenants.
   * Asked as an answer is made, never on a request's way in.
   */
  isTenant: (request: Request, caller?: string) => boolean;
  channelAccess:
    | ((request: Request, channel: string, action: string) => void)
    | undefined;
}
