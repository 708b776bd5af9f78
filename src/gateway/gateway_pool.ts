/**
 * The part of a `Pool` the gateway uses, as a structural interface: the
 * gateway works with the real pool and with a stand-in in unit tests.
 *
 * @module
 */
import type { ModelMetricsSnapshot } from "../model_metrics.ts";
import type {
  PluginMetric,
  ScaleBounds,
  ScaleBoundsChange,
} from "../plugin.ts";
import type { StreamIdleError } from "../errors.ts";
import type { ResponseMeta } from "../session_types.ts";
import type { QueueWaitStats } from "../queue_waits.ts";
import type { ModelSuspicion } from "../model_registry.ts";

/**
 * A model file to load (what `PUT /v1/models/{name}` sends to the pool).
 *
 * @example
 * ```ts
 * import type { GatewayModelSpec } from "@pyproxy/pyproxy";
 * const spec: GatewayModelSpec = { file: "doubler.py", options: { k: 3 } };
 * console.log(spec.file);
 * ```
 */
export interface GatewayModelSpec {
  /** File under the models directory. */
  file?: string;
  /** Constructor options. */
  options?: Record<string, unknown>;
  /** Class name when the file holds several. */
  class?: string;
  /**
   * The default timeout of the model's calls in ms (1 to 2^31 − 1): the
   * pool's `ModelSpec.timeout`, the gateway's `models[].timeout`.
   */
  timeout?: number;
  /**
   * How many workers load the model (1 to 1024; absent: every worker): the
   * pool's `ModelSpec.workers`, the gateway's `models[].workers`. A pool of
   * your own given to `createGateway` places the model as it can, or
   * refuses a spec with it.
   */
  workers?: number;
  /**
   * The version label (docs/models.md, "Versions"): the pool's
   * `ModelSpec.version`, `PUT /v1/models/{name}/versions/{version}`.
   */
  version?: string;
}

/**
 * A worker as listed by `status()`.
 *
 * @example
 * ```ts
 * import type { GatewayWorkerStatus } from "@pyproxy/pyproxy";
 * const worker: GatewayWorkerStatus = { id: "w0", pid: 4242, state: "ready", restarts: 0, inFlight: 1 };
 * console.log(`${worker.id}: ${worker.state}`); // "w0: ready"
 * ```
 */
export interface GatewayWorkerStatus {
  /** Slot id. */
  readonly id: string;
  /** Process id, or `null`. */
  readonly pid: number | null;
  /** The slot's index (the `slot` label of the workers' `/metrics` series). */
  readonly index?: number;
  /** State (`ready`, `starting`, ...). */
  readonly state: string;
  /** Restarts of the slot. */
  readonly restarts: number;
  /** The slot's processes that ended, by cause (`WorkerInfo.exits`). */
  readonly exits?: Readonly<Record<string, number>>;
  /** Calls in flight on it (parked streams excepted). */
  readonly inFlight: number;
  /** Streams in flight on it that wait for their reader, holding no slot. */
  readonly parked?: number;
  /** Calls queued for it. */
  readonly queued?: number;
  /**
   * Calls given up on that it still runs, by model (`WorkerInfo.abandoned`):
   * `/metrics`' `pyproxy_abandoned_calls`, and a model's 504 says so.
   */
  readonly abandoned?: Readonly<Record<string, number>>;
  /** Milliseconds since it became ready. */
  readonly uptime?: number;
  /** Its Python version (`WorkerInfo.python`; `pyproxy_build_info`). */
  readonly python?: string;
}

/**
 * What `status()` returns (only the fields the gateway reads are required).
 *
 * @example
 * ```ts
 * import type { GatewayPoolStatus } from "@pyproxy/pyproxy";
 * const status: GatewayPoolStatus = {
 *   workers: [{ id: "w0", pid: 4242, state: "ready", restarts: 0, inFlight: 0 }],
 *   models: [{ name: "doubler" }],
 * };
 * console.log(status.models.map((m) => m.name)); // ["doubler"]
 * ```
 */
export interface GatewayPoolStatus {
  /** Every worker slot. */
  workers: readonly GatewayWorkerStatus[];
  /**
   * Registered models; `timeout`: the default timeout of a model's calls
   * when it has one of its own, `spec.timeout`: the loader's (absent: its
   * class's `timeout_ms`), so that a gateway over a pool shows the models
   * added to that pool directly as they are.
   */
  models: ReadonlyArray<
    {
      name: string;
      timeout?: number;
      spec?: { timeout?: number; workers?: number };
      /** The workers holding it, for a model with `spec.workers`. */
      slots?: readonly string[];
      /** Why a placed model is out of service (absent: it is not). */
      failedReason?: string;
      /**
       * Set while the model is suspected of killing its worker soon after
       * its load (`ModelInfo.suspected`; the pool's `loadCrashWindow`).
       */
      suspected?: ModelSuspicion;
      /** Why its calls run threaded (`ModelInfo.threaded`). */
      threaded?: string;
      /** Its `close_timeout_ms`, for a model with a `close()`. */
      closeTimeoutMs?: number;
      /** A version's label (each version of a model is listed on its own). */
      version?: string;
      /** With `version`: whether it is the model's default one. */
      default?: boolean;
    }
  >;
  /** `true` while a resize runs or waits (absent: not known). */
  resizing?: boolean;
  /** Eval output the running evals keep for replay, in UTF-16 code units (absent: not known). */
  evalReplayBytes?: number;
  /** Calls waiting in the pool queue (absent: not known). */
  queue?: number;
  /**
   * Every worker process ended over the pool's life, by cause, the slots a
   * resize removed included (`PoolStatus.exits`; absent: not known).
   */
  exits?: Readonly<Record<string, number>>;
  /**
   * The pool's bounds in force (`PoolStatus.limits`; `/metrics`'
   * `pyproxy_limit_*`; absent: not known).
   */
  limits?: {
    readonly maxInFlightPerWorker?: number;
    readonly maxQueue?: number;
    readonly evalReplayBudget?: number;
  };
}

/**
 * A pool event as the gateway reads it (the library's `PoolEvent`): it
 * follows the `model` events (`action` `"add"`, `"update"` with the `spec`
 * and answered `description`, `"remove"`) and ignores the others.
 *
 * @example
 * ```ts
 * import type { GatewayPoolEvent } from "@pyproxy/pyproxy";
 * const ev: GatewayPoolEvent = {
 *   type: "model",
 *   action: "update",
 *   name: "doubler",
 *   spec: { file: "doubler.py" },
 *   description: { name: "doubler", class: "Doubler", version: 2 },
 * };
 * console.log(ev.type, ev.action); // "model update"
 * ```
 */
export interface GatewayPoolEvent {
  /** The event's kind (`"model"`, `"worker-state"`...). */
  readonly type: string;
  /** A `model` event's command: `"add"`, `"update"`, `"remove"`, `"init"`. */
  readonly action?: string;
  /** A `model` event's model name. */
  readonly name?: string;
  /** The version it was about, for a model with versions. */
  readonly version?: string;
  /** The spec of an add or update. */
  readonly spec?: GatewayModelSpec;
  /** The description an add or update answered (protocol §6). */
  readonly description?: unknown;
}

/**
 * One output chunk of an eval.
 *
 * @example
 * ```ts
 * import type { GatewayOutputChunk } from "@pyproxy/pyproxy";
 * const chunk: GatewayOutputChunk = { fd: 1, data: "hello\n", seq: 0 };
 * console.log(chunk.fd === 1 ? "stdout" : "stderr", chunk.data);
 * ```
 */
export interface GatewayOutputChunk {
  /** 1 = stdout, 2 = stderr. */
  fd: number;
  /** The text. */
  data: string;
  /** Sequence number, from 0. */
  seq: number;
  /** Chunks missing before this one (dropped from the replay buffer). */
  truncated?: number;
}

/**
 * An eval in progress (the gateway's view of `Atom`).
 *
 * @example
 * ```ts
 * import type { GatewayAtom } from "@pyproxy/pyproxy";
 * async function printOutput(atom: GatewayAtom): Promise<unknown> {
 *   for await (const chunk of atom.output) console.log(chunk.data);
 *   return await atom.result;
 * }
 * console.log(typeof printOutput); // "function"
 * ```
 */
export interface GatewayAtom {
  /** Atom id. */
  readonly id: string;
  /** The value, or a rejection. */
  readonly result: Promise<unknown>;
  /** Live output from the start. */
  readonly output: ReadableStream<GatewayOutputChunk>;
  /** Output from `fromSeq` on. */
  replay(fromSeq?: number): ReadableStream<GatewayOutputChunk>;
  /** Interrupts the code. */
  cancel(reason?: string): void;
  /**
   * The request id it was started with (the `X-Request-Id` of its `POST
   * /v1/eval`), if any: a replay's `error` event names it.
   */
  readonly requestId?: string | undefined;
}

/**
 * The pool methods the gateway calls.
 *
 * @example A stand-in for tests
 * ```ts
 * import type { GatewayPool } from "@pyproxy/pyproxy";
 * const pool: Pick<GatewayPool, "status"> = { status: () => ({ workers: [], models: [] }) };
 * console.log(pool.status().workers.length); // 0
 * ```
 */
export interface GatewayPool {
  /**
   * Runs a model. `requestId`: the client's `X-Request-Id`, for the model
   * (`host.request_id()`) and its log records.
   */
  execute(
    name: string,
    msg: unknown,
    options?: {
      key?: string;
      timeout?: number;
      signal?: AbortSignal;
      requestId?: string;
      /** The media type of a binary body (`msg` is then a `Uint8Array`). */
      contentType?: string;
      /** The request headers `forwardHeaders` lists, for `host.headers()`. */
      headers?: Record<string, string>;
      /** The id of the token that let the request in, for the call hooks. */
      caller?: string;
      /** Gets the status and headers the model chose for its success. */
      onResponseMeta?: (meta: ResponseMeta) => void;
      /** A call's W3C trace context, for `host.trace_context()` (tracing on). */
      traceparent?: string;
      /** Its `tracestate`, with `traceparent`. */
      tracestate?: string;
      /** Called with the id of the worker the call is written to (tracing on). */
      onSend?: (worker: string) => void;
    },
  ): Promise<unknown>;
  /**
   * Runs a model and gives its items as they come (`POST
   * /v1/models/{name}/stream`); a pool without it answers that route 501.
   */
  executeStream?(
    name: string,
    msg: unknown,
    options?: {
      key?: string;
      timeout?: number;
      onIdle?: (error: StreamIdleError) => void;
      requestId?: string;
      /** The media type of a binary body (`msg` is then a `Uint8Array`). */
      contentType?: string;
      /** The request headers `forwardHeaders` lists, for `host.headers()`. */
      headers?: Record<string, string>;
      /** The id of the token that let the request in, for the call hooks. */
      caller?: string;
      /** Gets the headers the model set before its first item. */
      onResponseMeta?: (meta: ResponseMeta) => void;
      /** A call's W3C trace context, for `host.trace_context()` (tracing on). */
      traceparent?: string;
      /** Its `tracestate`, with `traceparent`. */
      tracestate?: string;
      /** Called with the id of the worker the stream is written to (tracing on). */
      onSend?: (worker: string) => void;
    },
  ): AsyncIterableIterator<unknown> & { cancel(): void };
  /** Adds a model on every worker; resolves with the model description. */
  addModel(
    name: string,
    spec: GatewayModelSpec,
    options?: { timeout?: number; signal?: AbortSignal },
  ): Promise<unknown>;
  /** Replaces a model; resolves with the new description. */
  updateModel(
    name: string,
    spec: GatewayModelSpec,
    options?: { timeout?: number },
  ): Promise<unknown>;
  /** Removes a model. */
  removeModel(
    name: string,
    options?: { timeout?: number; version?: string },
  ): Promise<unknown>;
  /**
   * The name the workers know a model by: `name@version` for a model with
   * versions (its default one without `version`), else `name`; throws
   * `ModelNotFoundError` for a version it does not have (docs/models.md,
   * "Versions"). A pool without it serves no versions.
   */
  resolveModel?(name: string, version?: string): string;
  /** A model's version labels and its default one (`undefined`: it has none). */
  modelVersions?(
    name: string,
  ): { versions: string[]; default: string } | undefined;
  /** Makes version `version` the default of model `name`. */
  setDefaultVersion?(name: string, version: string): Promise<void>;
  /** Workers and models. */
  status(): GatewayPoolStatus;
  /**
   * The entries `status().models` lists under `name` (each version of a
   * model with versions), `[]` for none: what the routes about one model
   * read (`GET /v1/models/{name}`, `/v2/models/{name}/ready`, the calls).
   * A pool without it has its whole `status()` built for each of them.
   */
  modelStatus?(name: string): GatewayPoolStatus["models"];
  /**
   * The one entry of `modelStatus(name)` for `version` (the default one
   * without it; a model without versions: no `version`), `undefined` for
   * none: what a readiness probe of one version reads, at a cost that
   * does not grow with the number of versions. A pool without it has
   * `modelStatus` read instead.
   */
  modelVersionStatus?(
    name: string,
    version?: string,
  ): GatewayPoolStatus["models"][number] | undefined;
  /**
   * The workers as `status().workers` lists them: what `/healthz` and the
   * readiness routes read. A pool without it has its whole `status()`
   * built for them.
   */
  workerStatus?(): readonly GatewayWorkerStatus[];
  /**
   * Calls `listener` with every pool event; returns the function that
   * removes it. The gateway follows the `model` events, so the models
   * changed on the pool directly are described, validated and timed as the
   * pool has them; a pool without it shows only what went through the
   * gateway.
   */
  on?(listener: (ev: GatewayPoolEvent) => void): () => void;
  /**
   * Grows or shrinks the pool to `count` workers and resolves with the
   * status once done (`PUT /v1/workers`); a pool without it answers that
   * route 501.
   */
  resize?(count: number): Promise<GatewayPoolStatus>;
  /**
   * What the plugins report of their state, by plugin name (`GET
   * /v1/status` shows it as `pluginStatus` when there is any).
   */
  pluginStatus?(): Record<string, Record<string, unknown>>;
  /** The plugins' samples for `GET /metrics`. */
  pluginMetrics?(): PluginMetric[];
  /** Whether `caller` may call `model` (`Pool.canCall`): what it is shown. */
  canCall?(model: string, caller: string | undefined): boolean;
  /** What model code records (`pyproxy.metrics`) for `GET /metrics`. */
  modelMetrics?(): ModelMetricsSnapshot;
  /** How long routed calls waited in the pool queue (`GET /metrics`). */
  queueWaits?(): QueueWaitStats;
  /**
   * The default timeout of a model's calls when it has one of its own (its
   * spec's `timeout`, else its class's `timeout_ms`), else `undefined`:
   * what the gateway gives a call to a model added to the pool directly
   * (not through the gateway's config or `PUT`).
   */
  modelTimeout?(name: string): number | undefined;
  /**
   * The batches a model that batches ran, by size (the pool's
   * `batchStats`): `undefined` for a model that does not batch.
   */
  batchStats?(
    name: string,
  ): Array<{ size: number; count: number; ms: number }> | undefined;
  /**
   * Changes the bounds of the plugins that size the pool (`PUT /v1/workers`
   * `{"min", "max"}`); returns those in force by plugin name, `{}` when no
   * plugin sizes it.
   */
  setScaleBounds?(change: ScaleBoundsChange): Record<string, ScaleBounds>;
  /**
   * Starts an eval. `requestId`: the client's `X-Request-Id`, for the code
   * (`host.request_id()`) and the worker's log line of its exception.
   */
  eval(
    code: string,
    options?: {
      locals?: Record<string, unknown>;
      args?: unknown[] | Record<string, unknown>;
      timeout?: number;
      signal?: AbortSignal;
      requestId?: string;
    },
  ): GatewayAtom;
  /** Atoms by id (running, and recent finished ones). */
  readonly atoms: { get(id: string): GatewayAtom | undefined };
  /** Stops the workers. */
  close(): Promise<void>;
}
