/**
 * The {@linkcode Pool}: a set of supervised Python servers behind one call
 * API, with a model registry replayed onto restarted workers, round-robin and
 * keyed routing, bounded backpressure and a clean shutdown.
 *
 * @module
 */
import { MemoryErrorLog } from "./_memory_error_log.ts";
import { OverloadLog } from "./_overload_log.ts";
import { callTimedOut } from "./_call_timeout.ts";
import type { QueueWaitStats } from "./queue_waits.ts";
import {
  type ModelMetricsOptions,
  type ModelMetricsSnapshot,
  ModelMetricStore,
} from "./model_metrics.ts";
import type { Logger } from "./logger.ts";
import { misspelledHook } from "./_plugin_problem.ts";
import { type Atom, type EvalOptions, startAtom } from "./atom.ts";
import { AtomRegistry } from "./atom_registry.ts";
import {
  type EachOptions,
  type EachResult,
  executeEach,
} from "./execute_each.ts";
import { ReplayBudget } from "./replay_budget.ts";
import {
  type EvalSession,
  openEvalSession,
  type OpenSessionOptions,
} from "./eval_session.ts";
import {
  CancelledError,
  ConfigError,
  ConnectionLostError,
  errorFromWire,
  ModelUnavailableError,
  NoWorkerError,
  OverloadedError,
  PluginError,
  PythonError,
  ShuttingDownError,
  TimeoutError,
  WorkerCrashedError,
} from "./errors.ts";
import {
  type ModelCallOptions,
  type ModelInfo,
  ModelRegistry,
} from "./model_registry.ts";
import {
  type ModelCall,
  type Plugin,
  PluginHost,
  type PluginMetric,
  type PluginResizeOptions,
  type PluginsOption,
  type ScaleBounds,
  type ScaleBoundsChange,
} from "./plugin.ts";
import { type PoolEvent, PoolEventHub } from "./pool_events.ts";
import { callName, type PoolCall, PoolRouter } from "./pool_router.ts";
import { describeInFlight, type InFlight, inFlightName } from "./_in_flight.ts";
import {
  type ResolvedPoolOptions,
  resolvePoolOptions,
} from "./pool_options.ts";
import type { Runtime } from "./runtime/types.ts";
import type { ModelSpec, RequestOptions, ResponseMeta } from "./session.ts";
import { Supervisor } from "./supervisor.ts";
import type { Worker, WorkerExit, WorkerInfo } from "./worker.ts";
import { reconnect } from "../plugins/reconnect.ts";
import { spillover } from "../plugins/spillover.ts";
import { sharedCache } from "../plugins/shared_cache.ts";
import { withinRunningTime, withTimeout } from "./_with_timeout.ts";
import { setTimeoutOrNever } from "./_timer.ts";
import { heldLoopOf } from "./_loop_holder.ts";
import { callOptionsError, traceContextArgs } from "./_call_options.ts";
import { type BatchSettings, ModelBatcher } from "./_model_batcher.ts";
import {
  closeTimeoutOf,
  isModelTimeout,
  MODEL_TIMEOUT_SHAPE,
  modelTimeoutOf,
} from "./_model_timeout.ts";
import { SlotLease } from "./_slot_lease.ts";
import { CallHooks } from "./_call_hooks.ts";
import { type ModelPlacement, outOfService } from "./_model_placement.ts";
import { StreamIdleWatch } from "./_stream_idle_watch.ts";
import {
  type ExecuteStreamOptions,
  ModelStream,
  type StreamPool,
  type StreamRequestOptions,
} from "./model_stream.ts";
import { hostDirPrefix, removeDeadHostDirs } from "./_dead_host_dirs.ts";
import { defaultLogDir } from "./_default_log_dir.ts";
import { relativeToModelsDir } from "./_models_dir_relative.ts";
import { closeAllOnSignal, closeOnSignal } from "./_signal_close.ts";
import {
  quoteLabel,
  versionKey,
  versionLabelProblem,
} from "./_model_version.ts";

/** The temporary directories a pool or its servers make (`<kind>-<pid>-...`). */
const TEMP_DIR_KINDS = ["pyproxy-sock", "pyproxy-models"] as const;

export type {
  ModelCallOptions,
  ModelInfo,
  ModelSuspicion,
} from "./model_registry.ts";
export type { PoolEvent } from "./pool_events.ts";
export type { WorkerExit, WorkerInfo, WorkerState } from "./worker.ts";

/**
 * Options of {@linkcode Pool.request}.
 *
 * @example
 * ```ts
 * import type { PoolRequestOptions } from "@pyproxy/pyproxy";
 * const options: PoolRequestOptions = { key: "user-42", timeout: 5000, idempotent: true };
 * console.log(options.key);
 * // await pool.request("executeModel", { name: "doubler", input: { x: 5 } }, options);
 * ```
 */
export interface PoolRequestOptions {
  /** Calls with the same key go to the same worker while it is up (rendezvous hashing). */
  key?: string;
  /** Send to this worker only (e.g. `"w1"`); rejects with `NoWorkerError` when it is not ready. */
  worker?: string;
  /**
   * Timeout in ms, counted from the call (queue time included): a
   * number >= 0, `Infinity` for none; `0` rejects with `TimeoutError` at
   * once without sending. Anything else rejects with `ConfigError`, as does a
   * wrongly typed `key`, `worker`, `signal`, `onEvent`, `onSend` or
   * `idempotent`.
   * @default {PoolOptions.requestTimeout}
   */
  timeout?: number;
  /** Aborts the call (`CancelledError`); a sent call is cancelled on the server. */
  signal?: AbortSignal;
  /** Events the server sends for this call (e.g. output). */
  onEvent?: (event: Record<string, unknown>) => void;
  /**
   * Called each time the call leaves the queue and is written to a worker
   * (again after a retry), with the worker's id (`"w1"`). From then on,
   * aborting `signal` cancels it on the server instead of dropping it from
   * the queue. A call of a model that batches is sent with its batch: called
   * each time a batch holding it goes to a worker, so again for the part it
   * goes in when its batch is taken apart because a message of it cannot be
   * sent (or read); the last call names the worker that ran it. A throw
   * from it is logged (`warn`) and the call goes on.
   */
  onSend?: (worker: string) => void;
  /** May be retried on another worker when its worker crashes (up to `maxRetries`). @default {false} */
  idempotent?: boolean;
  /**
   * Receives the HTTP status and headers the model chose for its success
   * (`host.set_status(201)`, `host.set_header("Location", ...)`:
   * docs/models.md, "Statuses and headers"), just before the call
   * resolves with its result as usual; not called when the model set none
   * or the call fails. For a model that batches, each call gets its own
   * message's. A throw is logged, the call resolves anyway.
   */
  onResponseMeta?: (meta: ResponseMeta) => void;
}

/**
 * Options of {@linkcode Pool.execute}.
 *
 * @example
 * ```ts
 * import type { ExecuteOptions } from "@pyproxy/pyproxy";
 * const options: ExecuteOptions = { timeout: 2000, signal: AbortSignal.timeout(5000), requestId: "req-42" };
 * console.log(options.timeout);
 * // await pool.execute("doubler", { x: 5 }, options);
 * ```
 */
export interface ExecuteOptions extends Omit<PoolRequestOptions, "onEvent"> {
  /**
   * The request id of the call (e.g. the gateway's `X-Request-Id`): sent
   * with it (protocol §6, `requestId`), so that the model reads it with
   * `host.request_id()` and its log records carry it (`requestId` in their
   * properties). 1 to 128 characters of `A-Za-z0-9._:-`; anything else
   * rejects with `ConfigError`. For a model that batches (`batch_size`),
   * its batch's `requestIds` holds it: `execute_batch` reads it in
   * `host.request_ids()`, and its log records carry the batch's ids as
   * `requestIds`.
   */
  requestId?: string;
  /**
   * The media type of a `msg` that is bytes (the gateway passes a binary
   * body's `Content-Type`): sent with the call (protocol §6,
   * `contentType`), the model reads it with `host.content_type()`. 1 to
   * 256 printable ASCII characters; anything else rejects with
   * `ConfigError`. Not sent for a model that batches (`batch_size`):
   * `host.content_type()` is `None` in `execute_batch`.
   */
  contentType?: string;
  /**
   * Request headers for the model (the gateway passes those its
   * `forwardHeaders` lists): sent with the call (protocol §6, `headers`),
   * the model reads them with `host.headers()`. A plain object of at most
   * 64 lower-case HTTP header names → strings of at most 8192 characters
   * without CR, LF or NUL; anything else rejects with `ConfigError`. For a
   * model that batches (`batch_size`), its batch's `messageHeaders` holds
   * them: `execute_batch` reads them in `host.message_headers()`.
   */
  headers?: Record<string, string>;
  /**
   * Who makes the call, for the plugins' call hooks (`ModelCall.caller`):
   * a quota or an audit per client keys on it. The gateway gives the id of
   * the bearer token that let the request in (`tokenId`). Sent with the
   * call (protocol §6, `caller`): the model reads it with `host.caller()`
   * (for a model that batches, its batch's `callers` holds it:
   * `execute_batch` reads it in `host.callers()`). A string of 1 to 128
   * characters; anything else rejects with `ConfigError`.
   */
  caller?: string;
  /**
   * A W3C `traceparent` (the caller's span, docs/gateway.md "Tracing"): sent
   * with the call (protocol §6, `traceparent`) so that the model starts its
   * own spans under it, reading it with `host.trace_context()`. The gateway
   * passes its span's when tracing is on (flags `00` for a call it does
   * not sample); a library caller passes its own (the pool makes no
   * spans). One the W3C spec refuses rejects with `ConfigError`. For a
   * model that batches (`batch_size`), its batch's `traceContexts` holds
   * it: `execute_batch` reads it in `host.trace_contexts()` (for the links
   * of the batch's span), `host.trace_context()` being `None` there.
   */
  traceparent?: string;
  /**
   * The W3C `tracestate` that goes with `traceparent` (sent only with it);
   * one the spec refuses (or longer than 512 characters) rejects with
   * `ConfigError`.
   */
  tracestate?: string;
  /**
   * The version of the model to run, for a model added with versions
   * (`ModelSpec.version`, docs/models.md "Versions"); absent: its default
   * version (or the model, when it has no versions). A version the model
   * does not have rejects with `ModelNotFoundError` naming the ones it has.
   */
  version?: string;
}

/**
 * Options of {@linkcode Pool.executeEach}: those of each call (as
 * {@linkcode Pool.execute}'s, without the ones that name one call) and
 * those of the run ({@linkcode EachOptions}: `concurrency`, `ordered`,
 * `signal`).
 *
 * @example
 * ```ts
 * import type { ExecuteEachOptions } from "@pyproxy/pyproxy";
 * const options: ExecuteEachOptions = { concurrency: 256, idempotent: true, timeout: 10_000 };
 * console.log(options.concurrency);
 * // for await (const r of pool.executeEach("risk", rows, options)) ...
 * ```
 */
export interface ExecuteEachOptions extends
  Omit<
    ExecuteOptions,
    "signal" | "requestId" | "onSend" | "onResponseMeta"
  >,
  EachOptions {}

/** The longest an `executeEach` row waits for room in a full queue before it tries again. */
const ROOM_RETRY_MS = 1000;

/** The most calls `executeEach` keeps pending by default. */
const EACH_WINDOW_MAX = 8192;

/**
 * What {@linkcode Pool.modelVersions} returns: a model's version labels,
 * in the order they were added, and its default one.
 *
 * @example
 * ```ts
 * import type { ModelVersions } from "@pyproxy/pyproxy";
 * const v: ModelVersions = { versions: ["1", "2"], default: "1" };
 * console.log(v.versions.includes(v.default)); // true
 * ```
 */
export interface ModelVersions {
  /** The labels, in the order they were added. */
  versions: string[];
  /** The label of the version calls without one run. */
  default: string;
}

/**
 * What {@linkcode Pool.status} returns.
 *
 * @example
 * ```ts
 * import type { PoolStatus } from "@pyproxy/pyproxy";
 * const summary = (s: PoolStatus): string =>
 *   `${s.workers.filter((w) => w.state === "ready").length}/${s.workers.length} ready, ${s.queue} queued`;
 * console.log(typeof summary); // "function"
 * // console.log(summary(pool.status()));
 * ```
 */
export interface PoolStatus {
  /** Every slot, in slot order. */
  workers: WorkerInfo[];
  /** The registered models, in the order they were added. */
  models: ModelInfo[];
  /** Calls waiting in the pool queue. */
  queue: number;
  /**
   * Calls sent and not yet settled, over all workers, that hold a
   * `maxInFlightPerWorker` slot (parked streams excepted).
   */
  inFlight: number;
  /**
   * Streams sent and not yet settled, over all workers, whose reader is a
   * full window (64 items or 1 MiB) behind: they hold no slot meanwhile.
   */
  parked: number;
  /** Milliseconds since the pool started. */
  uptime: number;
  /** `true` once `close()` was called. */
  closing: boolean;
  /**
   * `true` while a resize runs or waits for its turn (`pool.resize`, a
   * plugin's such as `autoscale`, `PUT /v1/workers`).
   */
  resizing: boolean;
  /** Names of the active plugins, in order. */
  plugins: string[];
  /**
   * Eval output the running evals keep for replay, together, in UTF-16
   * code units (bounded by `evalReplayBudget`).
   */
  evalReplayBytes: number;
  /**
   * Every worker process that ended over the pool's life, by cause
   * (`WorkerInfo.exits` summed over the slots, those a resize removed
   * included): never goes down, where the slots' own counts leave with
   * their slot (`/metrics`' `pyproxy_pool_worker_exits_total`).
   */
  exits: Record<string, number>;
  /**
   * The pool's bounds in force, for a monitor to compare the counts above
   * with (`/metrics`' `pyproxy_limit_*`): `maxInFlightPerWorker`,
   * `maxQueue`, `evalReplayBudget` (UTF-16 code units, as
   * `evalReplayBytes`; `Infinity`: no bound).
   */
  limits: PoolLimits;
}

/**
 * The bounds of a pool in force ({@linkcode PoolStatus.limits}).
 *
 * @example
 * ```ts ignore
 * const { maxQueue } = pool.status().limits;
 * console.log(pool.status().queue / maxQueue); // how full the queue is
 * ```
 */
export interface PoolLimits {
  /** Calls in flight per worker before calls wait in the queue. */
  maxInFlightPerWorker: number;
  /** Calls that may wait in the queue before `OverloadedError`. */
  maxQueue: number;
  /** Eval output kept for replay over all running evals, in UTF-16 code units. */
  evalReplayBudget: number;
}

/**
 * Options of {@linkcode Pool.resize}.
 *
 * @example
 * ```ts
 * import type { ResizeOptions } from "@pyproxy/pyproxy";
 * const options: ResizeOptions = { timeout: 120_000, signal: AbortSignal.timeout(300_000) };
 * console.log(options.timeout); // 120000
 * // await pool.resize(4, options);
 * ```
 */
export interface ResizeOptions {
  /**
   * How long to wait for the resize, in ms, counted from the call (time
   * queued behind another resize included): a number >= 0, `Infinity` for
   * none. Past it the promise rejects with `TimeoutError`: a resize that had
   * not begun is dropped, one under way carries on (its effect shows in
   * `status()`). Each step is bounded anyway (`readyTimeout`, `loadTimeout`
   * per model, `hookTimeout`, `shutdownGrace`).
   * @default {Infinity}
   */
  timeout?: number;
  /** Stops waiting, as `timeout` does, with `CancelledError`. */
  signal?: AbortSignal;
}

/**
 * Options of {@linkcode PoolOptions.placement}: how often a placed model may
 * be moved off slots it made fail before it is taken out of service.
 *
 * @example
 * ```ts
 * import type { PlacementOptions } from "@pyproxy/pyproxy";
 * const placement: PlacementOptions = { maxRelocations: 1, relocationWindow: 300_000 };
 * console.log(placement.maxRelocations); // 1
 * // await using pool = await Pool.start({ placement });
 * ```
 */
export interface PlacementOptions {
  /**
   * Moves of a placed model off slots that failed for good with it
   * implicated, within `relocationWindow`, before the next one fails the
   * model (`ModelUnavailableError`): an integer >= 0 (0: the first such
   * failure does), `Infinity` for no bound. Below `Infinity`, a counted
   * move never goes to the pool's last workers (its last ready one, or one
   * that would leave every worker still up holding the model): the model
   * keeps its other slots, or waits on its failed slot until it is revived.
   * @default {2}
   */
  maxRelocations?: number;
  /** The window of `maxRelocations`, in ms: a number > 0, `Infinity` for the pool's life. @default {600000} */
  relocationWindow?: number;
  /**
   * How the reasons the pool gives (a model's `failedReason`) name these
   * options: a program that sets them under other names says so (the
   * gateway names pyproxy.json's `limits.maxRelocations`).
   * @default {(option) => `placement.${option}`}
   */
  settingName?: (option: "maxRelocations" | "relocationWindow") => string;
}

/**
 * Options of {@linkcode Pool.start}. Every field is optional.
 *
 * @example
 * ```ts
 * import type { PoolOptions } from "@pyproxy/pyproxy";
 * const options: PoolOptions = {
 *   workers: 4,
 *   modelsDir: "./models",
 *   requestTimeout: 30_000,
 *   maxQueue: 256,
 *   handleSignals: false,
 * };
 * console.log(options.workers);
 * // await using pool = await Pool.start(options);
 * ```
 */
export interface PoolOptions {
  /** Number of worker slots (1 to 1024); `pool.resize` changes it later. @default {runtime.cpuCount()} */
  workers?: number;
  /** Python executable. @default {"python3"} */
  python?: string;
  /**
   * Directory with the model files (the servers' `--path`); `file` and data
   * files are relative to it. Without it the servers get an empty temporary
   * directory, so models come as `source` (a `file` is a `ConfigError`).
   * @default {a fresh temp dir}
   */
  modelsDir?: string;
  /**
   * Directory of the workers' log files (`pythonserverslot0.log`, ...: one
   * per slot index, each rotated at 10 MiB with 3 old files kept), made
   * (0700) when missing; an existing one's mode is left alone. Relative to
   * the current directory. Without it, a pool with `modelsDir` logs to a
   * directory of its own outside it, under the temp directory:
   * `<temp>/pyproxy-logs-<uid>/<name>-<hash>` (`<name>` the models
   * directory's name, `<hash>` one of its real path: the same each start;
   * `pool.logDir` says where; each start removes those whose models
   * directory is gone, a test's temporary one). Before, it was `<modelsDir>/logs`, where a
   * watcher of the models (`deno test --watch=models/`) saw each call's log
   * lines as a change and restarted for ever: pass
   * `logDir: "<modelsDir>/logs"` to keep them there. Set it when the logs
   * must outlive a reboot, or a pool without `modelsDir` (whose temporary
   * directory, logs included, goes with it).
   * `"-"`: no files; each worker logs to its stderr, whose lines go into
   * the pool's log (`logger`; else the category `["pyproxy",
   * "python-server", "stderr"]`), each at its level, at most 1000 lines a
   * second per worker (the rest counted): for a container, whose platform
   * collects the host's stderr.
   * @default {`<temp>/pyproxy-logs-<uid>/<name>-<hash>` (`pool.logDir`)}
   */
  logDir?: string;
  /** Bind address of the servers (TCP). @default {"127.0.0.1"} */
  host?: string;
  /** Socket kind. @default {"unix" on Linux/macOS, else "tcp"} */
  transport?: "tcp" | "unix";
  /** Plugins: an array adds to the defaults (same name replaces); `{ defaults: false, use }` starts from none. */
  plugins?: PluginsOption;
  /** Calls in flight per worker before calls wait in the queue. @default {64} */
  maxInFlightPerWorker?: number;
  /**
   * Streams per worker that may be parked (their reader a window behind)
   * without holding one of its `maxInFlightPerWorker` slots; beyond, a
   * parked stream keeps its slot, so stalled readers cannot make a worker
   * hold streams without bound (each may buffer up to 64 items or 1 MiB on
   * each side). @default {256}
   */
  maxParkedPerWorker?: number;
  /** Calls that may wait in the pool queue before `OverloadedError`. @default {1024} */
  maxQueue?: number;
  /**
   * Bounds of the metrics model code records (`pyproxy.metrics`,
   * {@linkcode Pool.modelMetrics}): series per model and in all; updates
   * of further series are dropped, counted and warned about once per model.
   * @default {{ maxSeriesPerModel: 1000, maxSeries: 10000 }}
   */
  modelMetrics?: ModelMetricsOptions;
  /**
   * The most eval output the pool keeps for replay over all its running
   * evals together, in UTF-16 code units (as `pool.eval`'s `replayBytes`,
   * each eval's own bound, 8 Mi by default): a number >= 0, `Infinity` for
   * no pool-wide bound. Past it, the evals holding the most drop their
   * oldest output from the replay (a late reader sees `truncated`), down
   * towards the next largest's level, so evals printing little keep theirs.
   * Live readers lose nothing. Each eval still keeps its newest chunk (at
   * most 64 Ki) and what its attached reader has not taken yet (at most
   * its 1 Mi window). Finished evals count in `pool.atoms` instead. The
   * gateway's is `limits.evalReplayBudget`.
   *
   * @default {67108864}
   */
  evalReplayBudget?: number;
  /**
   * Default timeout of every call in ms: a number > 0, `Infinity` for none;
   * one beyond 2^31 − 1 (~24.8 days, a timer's range) is never cut short.
   * @default {none}
   */
  requestTimeout?: number;
  /**
   * Default idle timeout of `executeStream` (per stream: `idleTimeout`), in
   * ms: a stream whose reader takes no item for this long (counted from the
   * last item it took, or the start, and not while it waits for the model)
   * is cancelled (the model's generator closed, its items dropped, its slot
   * freed) and its next read rejects with `StreamIdleError`. A number > 0,
   * `Infinity` (or beyond 2^31 − 1) for none. Checked on one timer per
   * pool, so it fires up to ~50 ms late. The gateway's pool uses 60 000
   * (`limits.streamIdleTimeout`).
   * @default {300000}
   */
  streamIdleTimeout?: number;
  /**
   * Timeout in ms of model commands (`addModel`, `updateModel`,
   * `removeModel`, `initModel`) that give none, and of loading the models
   * onto a restarted worker: a restart whose model replay runs past it (a
   * model whose import or `__init__` hangs) fails like a crash, and the
   * worker is killed (and restarted by `reconnect`) instead of staying
   * `restarting` for ever. A number > 0, `Infinity` for none (separate
   * from `requestTimeout`: loading weights may take longer than a call).
   * @default {120000}
   */
  loadTimeout?: number;
  /**
   * How long `close()` lets in-flight calls finish, in ms: an integer >= 0;
   * beyond 2^31 − 1 (~24.8 days, a timer's range) `close()` waits until
   * they finish. The models' `close()` hooks run after it, with bounds of
   * their own (`close_timeout_ms`).
   * @default {5000}
   */
  shutdownGrace?: number;
  /**
   * How long a server may take to become ready, in ms: a number > 0;
   * `Infinity`, or anything beyond 2^31 − 1 (~24.8 days), means no limit.
   * One bound for the whole start of a process, counted from its spawn:
   * the ready line, the handshake (the connection, `hello` and
   * authentication), and the answer to the pool's `configure` on the new
   * connection. A worker that runs out of it is killed (and restarted by
   * `reconnect`); its start fails with a `StartTimeoutError` whose
   * `details.phase` is `"ready"`, `"handshake"` or `"configure"`.
   * @default {15000}
   */
  readyTimeout?: number;
  /**
   * The handshake's own bound when `readyTimeout` is `Infinity` (a slow
   * import may take what it takes, but a server that printed its ready
   * line answers the handshake at once, or never), in ms, counted from
   * the ready line: the connection, `hello` and authentication. A
   * number > 0; `Infinity`, or anything beyond 2^31 − 1 (~24.8 days), means
   * no limit. A finite `readyTimeout` bounds the handshake itself (what is
   * left of it), and this is not used. A worker past it is killed (and
   * restarted by `reconnect`); its start fails with a `StartTimeoutError`
   * whose `details.phase` is `"handshake"`.
   * @default {10000}
   */
  handshakeTimeout?: number;
  /**
   * How long an asynchronous plugin hook may take, in ms: a lifecycle hook
   * still pending then fails with a `PluginError` (reported like a throwing
   * hook, and what waited for it goes on), a message hook fails its one call.
   * `Infinity`, or anything beyond 2^31 − 1 (~24.8 days), waits forever.
   *
   * @default {30000}
   */
  hookTimeout?: number;
  /** Retries of an `idempotent` call whose worker crashed. @default {2} */
  maxRetries?: number;
  /**
   * The bound on a model whose load answers but which kills its worker
   * soon after (a thread that calls `os._exit`, a fault on a timer), in ms:
   * a worker death within this long after a model's load completed on it
   * (an add, an update, a restart's replay), with no call running there and
   * not by SIGKILL (the OOM killer, `kill -9`, the host's own kills) nor
   * stopped from outside (SIGTERM, SIGINT, SIGHUP), is a strike against
   * that model (with calls running, a suspicion). A
   * restart replays a suspected model alone, first, and holds the worker
   * back from calls until it outlived twice the delay of the death after
   * the load (250 ms at least, this window at most; the whole window once
   * it has a strike, or once it outlived a shorter hold and that process
   * then died, laid on it again); while suspected, its
   * `pool.modelStatus(name)` entry has `suspected`; at its second strike
   * the model is taken out of service: never replayed again, unloaded, its
   * calls failing with `ModelUnavailableError` (its
   * `pool.modelStatus(name)` entry's `failedReason` says why; a
   * `model-failed` event) until `updateModel`. An integer >= 0; 0 turns
   * it off (such a model is replayed onto every restart until the restart
   * policy gives up on the workers). The gateway's is
   * `limits.loadCrashWindow`.
   * @default {3000}
   */
  loadCrashWindow?: number;
  /**
   * The bound on a placed model (`ModelSpec.workers`) that crashes the
   * workers it goes to (docs/models.md, "Placement"). When the restart
   * policy gives up on a slot (`failed`) whose last process died with the
   * model's calls in flight (a timed-out one that still ran there: a hang),
   * or while loading it, the model is moved to another worker at most
   * `maxRelocations` times within `relocationWindow` ms; the next such slot
   * failure marks the model failed instead: it is unloaded from its slots,
   * loaded nowhere (not on revived or added workers either), and its calls
   * fail at once with `ModelUnavailableError` until `updateModel` (or a
   * remove and an add).
   * A slot failed for other reasons (the process died with none of the
   * model's calls, a plugin's `failWorker` on a running process) moves the
   * model without counting. `maxRelocations`: an integer >= 0, `Infinity`
   * for no bound (every failed slot hands the model on, as before);
   * `relocationWindow`: a number > 0, `Infinity` for the pool's life.
   * @default {{ maxRelocations: 2, relocationWindow: 600000 }}
   */
  placement?: PlacementOptions;
  /**
   * On SIGINT/SIGTERM, close the pool (and every other open pool with this
   * option) and then exit the process (status 130/143). @default {true}
   */
  handleSignals?: boolean;
  /** Runtime adapter. @default {defaultRuntime()} */
  runtime?: Runtime;
  /**
   * Logger. What model code prints (its `log` events) goes to the category
   * `["pyproxy", "python", <model>]` (stdout at `info`, stderr at
   * `warning`), or with a logger given here to its child
   * `["python", <model>]` (itself when it has no `getChild`). With a logger
   * given here, the workers' sessions log to its child `["session"]` and
   * the servers' launcher and stderr lines to `["python-server"]` (again
   * itself without `getChild`); without one, to `["pyproxy", "session"]`
   * and `["pyproxy", "python-server"]` (stderr: `[..., "stderr"]`).
   * @default {getLogger(["pyproxy", "pool"])}
   */
  logger?: Logger;
  /**
   * Extra environment for the servers, or a function of the worker id and
   * its slot's `index` (`WorkerInfo.index`: from 0, reused after a resize
   * removed a slot, so it stays below the most workers the pool had at
   * once), called once per slot: a restarted worker keeps its environment.
   * One GPU per worker:
   * `env: (_id, { index }) => ({ CUDA_VISIBLE_DEVICES: String(index) })`. A
   * `PYTHONPATH` is kept, after the server package's directory (it
   * replaces the host's own `PYTHONPATH`, which is kept otherwise). The
   * host's `OTEL_*` variables (its tracing's) are not inherited: a model's
   * own OpenTelemetry SDK gets its own here (`OTEL_SERVICE_NAME`...).
   */
  env?:
    | Record<string, string>
    | ((
      workerId: string,
      slot: { index: number },
    ) => Record<string, string> | undefined);
  /** Extra server arguments, or a function of the worker id. */
  serverArgs?: string[] | ((workerId: string) => string[] | undefined);
  /** Frame size limit in bytes, at least 4096. @default {67108864} */
  maxFrameSize?: number;
  /**
   * Runs the workers under Linux `SCHED_BATCH` (see
   * `PythonServerOptions.schedBatch`): a request that wakes a worker does
   * not preempt the host's event loop on that core. Pays where the host's
   * thread is the bottleneck (the gateway turns it on: +7–9% requests/s on
   * the benchmark machine).
   *
   * @default {false}
   */
  schedBatch?: boolean;
  /**
   * How much the workers raise their Linux `oom_score_adj` (0 to 1000; see
   * `PythonServerOptions.oomScoreAdj`): when memory runs out (a container's
   * limit covers the host and its workers together), the kernel's OOM killer
   * ends a worker, which the pool restarts, rather than the host, which is
   * often the largest process (measured: four workers growing together
   * under a 300 MiB cgroup got the gateway, PID 1, killed, and with it every
   * worker's calls; with 500 a worker). 0 leaves it alone.
   *
   * @default {500}
   */
  oomScoreAdj?: number;
  /**
   * How the workers' sessions exchange integers outside ±(2^53 − 1)
   * (`Number.isSafeInteger`), which a `number` would round. `"number"`: a
   * result, stream item, eval value or host command argument holding one
   * fails with an `UnsafeIntegerError` naming its path (e.g. `result.id`),
   * and a `BigInt` argument is refused with a `SerializationError`.
   * `"bigint"`: they arrive as exact `BigInt`s (smaller integers stay
   * numbers), and `BigInt`s in arguments and host command results are sent
   * as exact JSON integers. See docs/models.md "Large integers".
   *
   * @default {"number"}
   */
  integers?: "number" | "bigint";
}

/**
 * A pool of supervised Python servers.
 *
 * @example Start a pool and execute a model
 * ```ts ignore
 * import { Pool } from "@pyproxy/pyproxy";
 * await using pool = await Pool.start({ workers: 2, modelsDir: "./models" });
 * await pool.addModel("doubler", { file: "doubler.py", options: { k: 3 } });
 * console.log(await pool.execute("doubler", { x: 5 })); // { y: 15 }
 * ```
 */
export class Pool implements AsyncDisposable {
  #opts: ResolvedPoolOptions;
  #plugins: PluginHost;
  /** The plugins' `onCall`/`onSettle`; `undefined` when none has them. */
  #callHooks: CallHooks | undefined;
  #events: PoolEventHub;
  #registry: ModelRegistry;
  /** The registry's placed models (read on each call: none, most often). */
  #placements: ReadonlyMap<string, ModelPlacement>;
  #modelMetrics: ModelMetricStore;
  #supervisor: Supervisor;
  #router: PoolRouter;
  /** The models' MemoryErrors: a warning, one a minute at most. */
  #memoryErrors: MemoryErrorLog;
  #startedAt = Date.now();
  /** `Pool.start` has finished starting the first workers. */
  #started = false;
  #closing = false;
  #closed: Promise<void> | undefined;
  #tempDirs: string[] = [];
  #offSignals: Array<() => void> = [];
  /** The models directory as given and its real path (`relativeToModelsDir`). */
  #modelsDirs: string[] = [];
  /** The last resize queued: the next one runs after it. */
  #resizes: Promise<void> = Promise.resolve();
  /** Resizes running or waiting for their turn (`PluginContext.load().resizing`). */
  #resizesPending = 0;
  /** Model operations in flight (`close()` lets them finish). */
  #modelOps = new Set<Promise<unknown>>();
  /** The batching models' batchers, by model name. */
  #batchers = new Map<string, ModelBatcher>();
  /**
   * The models with a call timeout of their own (spec's, else class's), by
   * name: the default of their calls instead of `requestTimeout`. Set when
   * an add or update succeeds, so a call in flight keeps the one it got.
   */
  #modelTimeouts = new Map<string, number>();
  /**
   * The models whose calls go with `threaded: true` (never inline, protocol
   * §6), by name: why. One of their inline calls held a worker's event
   * loop past its timeout, or while the worker was killed for answering
   * nothing (`model-threaded`); forgotten when the model is updated, added
   * again or removed.
   */
  #threadedOnly = new Map<string, string>();
  /**
   * The models added with versions, by name: their labels in the order
   * they were added, and the default's. Changed under the registry's lock
   * (its `check`/`done` hooks), so it is in step with what it loads.
   */
  #versions = new Map<string, ModelVersions>();
  /**
   * The labels of each of `#versions`, as a set, changed with it: whether a
   * version is there is a lookup, not a scan of its labels (`status()` and
   * `modelStatus()` ask it of each version: a model with 2000 versions took
   * 4 million comparisons a read).
   */
  #labels = new Map<string, Set<string>>();
  /**
   * Each versioned model's name → the internal name of its default version
   * (`name@label`): what its calls without a `version` run. Read by a call
   * only while some model has versions (a size check otherwise).
   */
  #defaults = new Map<string, string>();
  /**
   * The `close_timeout_ms` of the models with a `close()`, by name (the
   * description's `closeTimeoutMs`), for `status()`.
   */
  #closeTimeouts = new Map<string, number>();
  /** Wake-ups of model operations waiting for a ready worker (`close()` calls them). */
  #modelWaits = new Set<() => void>();
  /** executeEach rows waiting for room in the full queue (#queueRoom). */
  #roomWaits = new Set<() => void>();
  /** The pool's eval atoms (running ones, and recently finished ones for replay). */
  readonly atoms: AtomRegistry<Atom> = new AtomRegistry<Atom>();

  /**
   * Where the workers write their log files (`pythonserverslot<index>.log`):
   * `logDir` as given, else, for a pool with `modelsDir`, its default
   * outside the models directory; `"-"`: none (they log to the pool's
   * logger); `undefined`: a pool without `modelsDir`, whose temporary
   * models directory holds them (`logs/`, gone with it).
   *
   * @example
   * ```ts ignore
   * const pool = await Pool.start({ modelsDir: "./models" });
   * console.log(pool.logDir); // "/tmp/pyproxy-logs-1000/models-3f2a9c1e"
   * ```
   */
  get logDir(): string | undefined {
    const { logDir, modelsDir } = this.#opts;
    // None with modelsDir: its `logs/`, the workers' own default.
    return logDir ??
      (modelsDir === undefined ? undefined : `${modelsDir}/logs`);
  }
  /** What the running atoms keep for replay, together (`evalReplayBudget`). */
  readonly replayBudget: ReplayBudget;
  /** Streams with an idle timeout, on one timer. */
  #idleWatch: StreamIdleWatch;
  /** The pool as its streams use it: their calls get their slot leases. */
  #streamPool: StreamPool;

  private constructor(opts: ResolvedPoolOptions, plugins: Plugin[]) {
    this.#opts = opts;
    this.replayBudget = new ReplayBudget({ maxBytes: opts.evalReplayBudget });
    this.#idleWatch = new StreamIdleWatch((stream, error) => {
      opts.logger.info(
        "A stream of model {model} ({worker}) was cancelled: its reader took no item for {ms} ms (streamIdleTimeout)",
        {
          model: stream.model,
          worker: stream.worker ?? "not sent yet",
          ms: stream.idleTimeout,
        },
      );
      if (error !== undefined) {
        opts.logger.warn(
          "The onIdle callback of a stream of model {model} threw: {error}",
          {
            model: stream.model,
            error,
          },
        );
      }
    });
    this.#streamPool = {
      request: <T>(
        cmd: string,
        args?: Record<string, unknown>,
        options: StreamRequestOptions = {},
      ) => this.#request<T>(cmd, args, options, options.onSlot),
      control: <T>(
        worker: string,
        cmd: string,
        args: Record<string, unknown>,
        options?: { pid?: number; timeout?: number },
      ) => this.control<T>(worker, cmd, args, options),
      streamIdleTimeout: opts.streamIdleTimeout,
      watchIdle: (stream) => this.#idleWatch.watch(stream),
    };
    this.#events = new PoolEventHub({
      onListenerError: (error, ev) =>
        opts.logger.warn("A pool event listener threw on {type}: {error}", {
          type: ev.type,
          error,
        }),
      onOverflow: (bufferSize) =>
        opts.logger.warn(
          "A pool.events() reader fell {bufferSize} events behind: it loses the oldest ones until it catches up",
          { bufferSize },
        ),
    });
    this.#modelMetrics = new ModelMetricStore(opts.modelMetrics, opts.logger);
    this.#registry = new ModelRegistry({
      timeout: opts.loadTimeout,
      // A failedReason names no absolute path in the models directory.
      loadErrorText: (text) => relativeToModelsDir(text, this.#modelsDirs),
      onResync: (ev) => {
        if (ev.ok) {
          opts.logger.warn(
            "Model {name} was loaded again on {worker}: a model command given up on there was answered late, and the worker may have applied it",
            { name: ev.name, worker: ev.worker },
          );
        } else {
          opts.logger.warn("Killed worker {worker}: {reason}", {
            worker: ev.worker,
            reason: ev.reason,
          });
        }
        this.#events.emit({ type: "model-resync", ...ev });
      },
      onUnplace: (placement) => this.#router.unplace(placement),
      onMoveFailed: (ev) =>
        opts.logger.warn("Killed worker {worker}: {reason}", ev),
      maxRelocations: opts.placement.maxRelocations,
      relocationWindow: opts.placement.relocationWindow,
      loadCrashWindow: opts.loadCrashWindow,
      onLoadCrash: (ev) =>
        opts.logger.warn(
          ev.counted
            ? "Model {name} is suspected of killing worker {worker} {afterMs} ms after its load, with no call running ({reason}): strike {strikes} of 2 (loadCrashWindow)"
            : ev.struckOn !== undefined
            ? "Model {name} is suspected of killing worker {worker} {afterMs} ms after its load ({reason}), the same load as its strike on worker {struckOn}: no second strike (one load's deaths count once), its next replay loads it alone and holds the worker back from calls for a while"
            : "Model {name} is suspected of killing worker {worker} {afterMs} ms after its load ({reason}); calls or other models' loads ran there too, so no strike: its next replay loads it alone and holds the worker back from calls for a while",
          { ...ev },
        ),
      settingName: opts.placement.settingName,
      onRelocated: (ev) => {
        opts.logger[ev.to === null ? "warn" : "info"](
          ev.to === null
            ? "Model {name} stays on failed worker {from}: no ready worker lacks it, or the only one is the pool's last and the model crashed that slot (the first to come back takes it)"
            : "Moving model {name} off failed worker {from} to {to}",
          ev,
        );
        this.#events.emit({ type: "model-relocated", ...ev });
      },
      onModelFailed: (ev) => {
        // A load's failure carries its `exception` and `traceback` (as a
        // first load's failure logs them); the event has the reason only.
        opts.logger.error(
          "Model {name} is out of service: {reason}; its calls fail with ModelUnavailableError until it is updated",
          ev,
        );
        const { name, worker, reason } = ev;
        this.#events.emit({ type: "model-failed", name, worker, reason });
      },
      onUnloadFailed: (ev) =>
        opts.logger.warn(
          ev.killed
            ? "Killed worker {worker}: {reason}"
            : "Model {name} was not unloaded cleanly from {worker}, a slot it left: {reason}",
          ev,
        ),
    });
    this.#placements = this.#registry.placements;
    const pluginFailed = (
      error: PluginError,
      plugin: string,
      hook: string,
    ): void => {
      // The error too: its cause holds the plugin's own error and stack.
      opts.logger.warn("{message}", {
        message: error.message,
        plugin,
        hook,
        error,
      });
      this.#events.emit({
        type: "plugin-error",
        plugin,
        hook,
        message: error.message,
      });
    };
    this.#plugins = new PluginHost(plugins, {
      hookTimeout: opts.hookTimeout,
      // Beside the defaults, the plugins added after the spill-over see a
      // call's message, not its `$spill` stub (no name, msg, requestId or
      // headers), and what they add counts in its size check. With
      // `defaults: false`, the order given (a plugin before it sees stubs).
      ...(composedWithDefaults(opts.plugins)
        ? { lastOnRequest: "spillover" }
        : {}),
      onError: pluginFailed,
    });
    // Looked up once: a pool whose plugins have no call hooks pays nothing per call.
    this.#callHooks = CallHooks.of(plugins, {
      hookTimeout: opts.hookTimeout,
      context: () => this.#supervisor.context,
      onError: pluginFailed,
    });
    this.#supervisor = new Supervisor({
      pool: this,
      options: opts,
      plugins: this.#plugins,
      registry: this.#registry,
      modelMetrics: this.#modelMetrics,
      events: this.#events,
      pump: (full) => {
        this.#router.pump(full);
        // A worker's state settled (ready, failed, or its exit hooks done):
        // model operations waiting for a ready worker look again.
        if (full) { for (const wake of [...this.#modelWaits]) wake(); }
      },
      closing: () => this.#closing,
      started: () => this.#started,
      queued: () => this.#router.queued,
      resizing: () => this.#resizesPending > 0,
      loopHeld: (worker, name, reason) =>
        this.#heldLoop(
          worker,
          name,
          `worker ${worker} answered nothing while a call of it held the worker's event loop, and is replaced (the inline fast path, docs/models.md; ${
            reason ?? "killed"
          })`,
        ),
      resize: (count, options) => {
        const { by, reason, ...rest } = options ?? {} as PluginResizeOptions;
        if (typeof by !== "string" || by === "") {
          return Promise.reject(
            new ConfigError(
              "Cannot resize pool: by: expected the resizing plugin's name (a non-empty string)",
              { details: { field: "by" } },
            ),
          );
        }
        if (reason !== undefined && typeof reason !== "string") {
          return Promise.reject(
            new ConfigError("Cannot resize pool: reason: expected a string", {
              details: { field: "reason" },
            }),
          );
        }
        return this.#resize(count, rest, by, reason ?? null);
      },
    });
    // Calls refused for a full queue: a warning, one a minute at most.
    const overloads = new OverloadLog(opts.logger);
    this.#memoryErrors = new MemoryErrorLog(opts.logger);
    this.#router = new PoolRouter({
      workers: this.#supervisor.workers,
      maxInFlightPerWorker: opts.maxInFlightPerWorker,
      maxQueue: opts.maxQueue,
      send: (call, worker) => this.#send(call, worker),
      coming: (worker) => this.#supervisor.settling(worker),
      onOverloaded: (err) => overloads.refused(err),
    });
  }

  /**
   * Validates the options, starts every worker in parallel and resolves when
   * they are ready. Workers that fail to start are left to the reconnect
   * policy; when all fail, everything is killed and it rejects with a
   * `StartError` carrying their stderr tails (its `details.workers`, their
   * status; its `cause`, the first worker's error, such as a
   * `StartTimeoutError` for `readyTimeout`).
   */
  static async start(options: PoolOptions = {}): Promise<Pool> {
    const opts = resolvePoolOptions(options);
    const plugins = PluginHost.resolve([
      reconnect(),
      spillover(),
      sharedCache(),
    ], opts.plugins);
    new PluginHost(plugins).check();
    // The pool runs the hooks it knows and ignores other keys: a typo
    // (onRequst) would never run, without a word. A warning, not a
    // refusal: a plugin may have on... methods of its own.
    for (const plugin of plugins) {
      const typo = misspelledHook(plugin);
      if (typo !== undefined) {
        opts.logger.warn("Plugin {plugin}: {problem}", {
          plugin: plugin.name,
          problem: typo,
        });
      }
    }
    if (opts.modelsDir !== undefined) {
      const stat = await opts.runtime.stat(opts.modelsDir);
      if (stat === null || !stat.isDirectory) {
        throw new ConfigError(
          `Cannot start pool: modelsDir: no such directory '${opts.modelsDir}'`,
          {
            details: { field: "modelsDir" },
          },
        );
      }
    }
    // No logDir: outside the models directory (defaultLogDir), where a
    // watcher of the models saw each call's log lines as a change.
    if (opts.logDir === undefined && opts.modelsDir !== undefined) {
      opts.logDir = await defaultLogDir(opts.runtime, opts.modelsDir);
      await checkLogDir(opts.runtime, opts.logDir);
    } else if (
      opts.logDir !== undefined && isModelsLogs(opts.logDir, opts.modelsDir)
    ) {
      // `<modelsDir>/logs` (the old default, the gateway's): the workers'
      // own default, unchecked as it always was (where it cannot be
      // written, a read-only models directory, they log to stderr).
      opts.logDir = undefined;
    } else if (opts.logDir !== undefined && opts.logDir !== "-") {
      await checkLogDir(opts.runtime, opts.logDir);
    }
    const pool = new Pool(opts, plugins);
    await pool.#start();
    return pool;
  }

  async #start(): Promise<void> {
    const { runtime } = this.#opts;
    // What hosts killed before their close() left here (SIGKILL, a crash),
    // swept while the workers start: it reads the temp directory and a
    // /proc file per such directory, and the spawns waited for it (it never
    // touches a directory of a host that runs, this one's included). The
    // start still ends with it.
    const sweep = (async () => {
      await Promise.all([
        removeDeadHostDirs(runtime, runtime.tempDir(), TEMP_DIR_KINDS),
        // Where sockets go when the temp directory's paths are too long.
        runtime.tempDir() === "/tmp"
          ? undefined
          : removeDeadHostDirs(runtime, "/tmp", ["pyproxy-sock"]),
      ]);
    })().then(() => undefined, (err: unknown) => ({ err }));
    try {
      let path = this.#opts.modelsDir;
      if (path !== undefined) {
        // As given, and as the servers report it (absolute, symlinks resolved).
        this.#modelsDirs = [
          path,
          await runtime.realPath(path).catch(() => path!),
        ];
      }
      if (path === undefined) {
        path = await runtime.makeTempDir({
          prefix: await hostDirPrefix("pyproxy-models", runtime),
        });
        this.#tempDirs.push(path);
      }
      if (this.#opts.handleSignals) {
        this.#offSignals.push(closeOnSignal(() => this.close()));
        for (
          const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const
        ) {
          this.#offSignals.push(runtime.onSignal(signal, () => {
            // Every pool's listener runs for the same signal: the first one
            // closes every such pool of the program (each pool's listener
            // exiting once its own pool had closed cut the others short: no
            // grace for their calls, their directories left behind), and
            // each exits once all are closed.
            closeAllOnSignal().finally(() => runtime.exit(code));
          }));
        }
      }
      // Each worker process makes (and removes) its own socket directory.
      await this.#supervisor.start(path, this.#opts.transport);
      const swept = await sweep;
      if (swept !== undefined) throw swept.err;
      this.#started = true;
    } catch (err) {
      await sweep;
      await this.close();
      throw err;
    }
  }

  /**
   * Registers a model and loads it on every ready worker (rolled back
   * everywhere if one fails). While every worker is restarting it waits for
   * one; with no ready worker and none coming back it rejects with
   * `NoWorkerError`, and once the pool closes with `ShuttingDownError`. A
   * model that fails to import or construct rejects with a `RemoteError`
   * named `ModelLoadError` (`code` `"MODEL_LOAD"`, its message the Python
   * error's: `SyntaxError: expected ':' (scorer.py, line 2)`). Resolves with
   * the model's description as the workers loaded it (a
   * `ModelDescription`: `name`, `class`, `version`, `file`, `doc`,
   * its declared `inputs` and `outputs`).
   *
   * @example
   * ```ts ignore
   * const d = await pool.addModel("scorer", { file: "scorer.py" }) as ModelDescription;
   * console.log(d.class, d.version); // "Scorer" 1
   * ```
   */
  async addModel(
    name: string,
    spec: ModelSpec,
    options: ModelCallOptions = {},
  ): Promise<unknown> {
    this.#admit("add model");
    const label = this.#labelOf("add model", name, spec);
    const key = label === undefined ? name : versionKey(name, label);
    this.#checkModelOptions("add model", key, options);
    this.#checkModelsDir("add model", key, spec);
    this.#checkModelTimeout("add model", key, spec);
    this.#checkModelWorkers("add model", key, spec);
    await this.#someWorkerReady("add model", key, options);
    const out = await this.#modelOp(
      "add model",
      key,
      this.#onceMore("add model", key, options, () =>
        this.#registry.add(
          key,
          spec,
          () => this.#modelTargets("add model", key, true),
          options,
          {
            check: () => {
              this.#checkVersionedAdd(name, label);
              // In the name's turn: a remove of it queued before this add
              // forgets its metrics first (called before the turn, the add
              // was undone by that remove's forgetting, and the new model's
              // metrics were dropped for good).
              this.#modelMetrics.modelAdded(key);
            },
            done: () => {
              if (label === undefined) return;
              const set = this.#versions.get(name);
              this.#labels.get(name)?.add(label) ??
                this.#labels.set(name, new Set([label]));
              if (set !== undefined) set.versions.push(label);
              else {
                // The first version added is the default.
                this.#versions.set(name, { versions: [label], default: label });
                this.#defaults.set(name, key);
              }
            },
          },
        )),
    );
    this.#timeoutOf(key, spec, out);
    this.#batchingOf(key, out);
    this.#events.emit({
      type: "model",
      action: "add",
      name,
      ...(label === undefined ? {} : { version: label }),
      spec,
      description: out,
    });
    return out;
  }

  /**
   * A spec's `version` label, checked (`undefined`: none). A model with
   * versions has a name without `@`: its versions' internal names are
   * `name@label`.
   */
  #labelOf(action: string, name: string, spec: ModelSpec): string | undefined {
    const label = (spec as { version?: unknown } | null)?.version;
    if (label === undefined) return undefined;
    const problem = versionLabelProblem(label);
    if (problem !== undefined) {
      throw new ConfigError(
        `Cannot ${action} '${name}': version: ${problem}, got ${
          quoteLabel(label)
        }`,
        { details: { field: "version" } },
      );
    }
    if (typeof name === "string" && name.includes("@")) {
      throw new ConfigError(
        `Cannot ${action} '${name}' with a version: the name of a model with versions has no '@'`,
        { details: { field: "name" } },
      );
    }
    return label as string;
  }

  /** Whether `name` has version `label`: a lookup. */
  #hasVersion(name: string, label: string): boolean {
    return this.#labels.get(name)?.has(label) ?? false;
  }

  /** An add of `name` (with version `label`, or none) fits its other versions. */
  #checkVersionedAdd(name: string, label: string | undefined): void {
    const set = this.#versions.get(name);
    if (label === undefined) {
      if (set !== undefined) throw hasVersions("add", name, set);
      this.#checkNotVersionName("add", name);
      return;
    }
    if (
      !this.#hasVersion(name, label) &&
      this.#registry.has(versionKey(name, label))
    ) {
      // A model named `name@label` added without a version (the library
      // allows `@` there) holds the internal name this version would take.
      throw errorFromWire({
        type: "InvalidRequestError",
        message:
          `Cannot add model '${name}' version '${label}': a model named '${
            versionKey(name, label)
          }' is loaded without a version (remove it first, or use another label)`,
      });
    }
    if (set === undefined && this.#registry.has(name)) {
      throw errorFromWire({
        type: "InvalidRequestError",
        message:
          `Cannot add model '${name}' version '${label}': '${name}' is loaded without a version (remove it first, or add the versions under another name)`,
      });
    }
    if (this.#hasVersion(name, label)) {
      throw errorFromWire({
        type: "InvalidRequestError",
        message:
          `Cannot add model '${name}' version '${label}': it already exists (updateModel replaces it)`,
        details: { reason: "versionExists", model: name, version: label },
      });
    }
  }

  /**
   * The model and label of a version's internal name (`name@label`) while
   * the pool has that version; `undefined` for anything else (a model
   * without versions, whose name may hold an `@`).
   */
  #versionOf(key: string): { model: string; version: string } | undefined {
    if (this.#versions.size === 0) return undefined;
    // Labels hold no `@`: the last one splits a key.
    const at = key.lastIndexOf("@");
    if (at < 0) return undefined;
    const model = key.slice(0, at);
    const version = key.slice(at + 1);
    return this.#hasVersion(model, version) ? { model, version } : undefined;
  }

  /**
   * Refuses a command without a version on the internal name of a version
   * (`name@label`): run as a model of its own, it would change the version
   * behind its name's back (an update dropping its label, a remove leaving
   * the label listed with nothing to run it).
   */
  #checkNotVersionName(action: string, key: string): void {
    if (this.#versions.size === 0 || typeof key !== "string") return;
    const at = key.indexOf("@");
    if (at < 0) return;
    const name = key.slice(0, at);
    const label = key.slice(at + 1);
    if (this.#hasVersion(name, label)) {
      throw errorFromWire({
        type: "InvalidRequestError",
        message:
          `Cannot ${action} model '${key}': it is version '${label}' of model '${name}' (${action} '${name}' with version '${label}')`,
        details: { model: name, version: label },
      });
    }
  }

  /**
   * The internal name of version `label` of `name`, which must exist; a
   * `ModelNotFoundError` naming the versions there are otherwise.
   */
  #versionName(action: string, name: string, label: unknown): string {
    const set = typeof name === "string" ? this.#versions.get(name) : undefined;
    if (typeof label !== "string" || !this.#hasVersion(name, label)) {
      throw noSuchVersion(action, name, label, set);
    }
    return versionKey(name, label);
  }

  /**
   * The name the workers know a model's version by: `name@version` for a
   * model added with versions (`ModelSpec.version`), `version` or else its
   * default one; `name` itself for a model without versions. Rejects a
   * version the model does not have with `ModelNotFoundError` (its
   * `details.versions` lists the ones it has). What `execute` and the
   * other calls do with their `version` option; the gateway uses it to
   * find a version's description and metrics.
   *
   * @example
   * ```ts ignore
   * await pool.addModel("scorer", { file: "scorer_v1.py", version: "1" });
   * console.log(pool.resolveModel("scorer")); // "scorer@1"
   * console.log(pool.resolveModel("scorer", "1")); // "scorer@1"
   * ```
   */
  resolveModel(name: string, version?: string): string {
    if (version !== undefined) {
      return this.#versionName("find", name, version);
    }
    return this.#defaults.size === 0 ? name : this.#defaults.get(name) ?? name;
  }

  /**
   * The versions of a model added with versions (labels in the order they
   * were added, and the default's); `undefined` for a model without
   * versions or none of that name.
   *
   * @example
   * ```ts ignore
   * await pool.addModel("scorer", { file: "scorer_v1.py", version: "1" });
   * await pool.addModel("scorer", { file: "scorer_v2.py", version: "2" });
   * console.log(pool.modelVersions("scorer")); // { versions: ["1", "2"], default: "1" }
   * ```
   */
  modelVersions(name: string): ModelVersions | undefined {
    const set = this.#versions.get(name);
    return set === undefined
      ? undefined
      : { versions: [...set.versions], default: set.default };
  }

  /**
   * Makes version `version` of model `name` its default: the calls without
   * a `version` that start from now on run it (calls already sent finish
   * where they are). Runs after the commands of that model under way; rejects with
   * `ModelNotFoundError` for a version the model does not have.
   *
   * @example
   * ```ts ignore
   * await pool.addModel("scorer", { file: "scorer_v1.py", version: "1" });
   * await pool.addModel("scorer", { file: "scorer_v2.py", version: "2" });
   * await pool.setDefaultVersion("scorer", "2");
   * await pool.execute("scorer", { x: 1 }); // runs version 2
   * ```
   */
  async setDefaultVersion(name: string, version: string): Promise<void> {
    this.#admit("set default version");
    await this.#registry.forModel(name, () => {
      const key = this.#versionName("set default version of", name, version);
      this.#versions.get(name)!.default = version;
      this.#defaults.set(name, key);
      return Promise.resolve();
    });
    this.#events.emit({ type: "model", action: "default", name, version });
  }

  /**
   * Replaces a model on every ready worker (restored everywhere if one
   * fails). A model out of service (`failedReason`: `ModelUnavailableError`
   * for its calls) comes back with it, with a clean count.
   *
   * @example Bring back a model taken out of service, its source fixed
   * ```ts ignore
   * pool.on((ev) => {
   *   if (ev.type === "model-failed") console.error(`${ev.name}: ${ev.reason}`);
   * });
   * // ... scorer.py fixed on disk, then:
   * await pool.updateModel("scorer", { file: "scorer.py" });
   * console.log(pool.modelStatus("scorer")[0]?.failedReason); // undefined
   * ```
   */
  async updateModel(
    name: string,
    spec: ModelSpec,
    options: ModelCallOptions = {},
  ): Promise<unknown> {
    this.#admit("update model");
    const label = this.#labelOf("update model", name, spec);
    const key = label === undefined ? name : versionKey(name, label);
    this.#checkModelOptions("update model", key, options);
    this.#checkModelsDir("update model", key, spec);
    this.#checkModelTimeout("update model", key, spec);
    this.#checkModelWorkers("update model", key, spec);
    // The calls made before the update go first, to the current version.
    this.#batchers.get(key)?.flush();
    await this.#someWorkerReady("update model", key, options);
    const out = await this.#modelOp(
      "update model",
      key,
      this.#onceMore("update model", key, options, () =>
        this.#registry.update(
          key,
          spec,
          () => this.#modelTargets("update model", key, true),
          options,
          {
            check: () => {
              const set = this.#versions.get(name);
              if (label === undefined) {
                if (set !== undefined) throw hasVersions("update", name, set);
                this.#checkNotVersionName("update", name);
              } else this.#versionName("update", name, label);
            },
          },
        )),
    );
    this.#timeoutOf(key, spec, out);
    this.#batchingOf(key, out);
    this.#events.emit({
      type: "model",
      action: "update",
      name,
      ...(label === undefined ? {} : { version: label }),
      spec,
      description: out,
    });
    return out;
  }

  /**
   * Unregisters a model and removes it from every ready worker. With
   * `options.version`, that version of a model with versions: its default
   * one only when it is the last (`setDefaultVersion` first), else
   * `InvalidRequestError`. Without, every version of it (the default last).
   */
  async removeModel(
    name: string,
    options: ModelCallOptions = {},
  ): Promise<unknown> {
    this.#admit("remove model");
    const label = (options as { version?: unknown } | null)?.version;
    if (label === undefined && this.#versions.has(name)) {
      return await this.#removeVersions(name, options);
    }
    const key = label === undefined
      ? name
      : this.#versionName("remove", name, label);
    this.#checkModelOptions("remove model", key, options);
    // The calls made before the removal go first.
    this.#batchingOf(key, undefined);
    const out = await this.#modelOp(
      "remove model",
      key,
      this.#registry.remove(
        key,
        () => this.#modelTargets("remove model", key, false),
        options,
        label === undefined
          ? {
            check: () => this.#checkNotVersionName("remove", name),
            done: () => {
              this.#modelMetrics.forgetModel(key);
              this.#router.waits.forget(key);
            },
          }
          : {
            check: () => {
              const set = this.#versions.get(name);
              this.#versionName("remove", name, label);
              if (set!.default === label && set!.versions.length > 1) {
                throw errorFromWire({
                  type: "InvalidRequestError",
                  message:
                    `Cannot remove model '${name}' version '${label}': it is the default version; make another one the default first (setDefaultVersion; versions: ${
                      set!.versions.join(", ")
                    })`,
                  details: { model: name, version: label },
                });
              }
            },
            done: () => {
              this.#modelMetrics.forgetModel(key);
              this.#router.waits.forget(key);
              const set = this.#versions.get(name)!;
              set.versions.splice(set.versions.indexOf(label as string), 1);
              this.#labels.get(name)?.delete(label as string);
              if (set.versions.length === 0) {
                this.#versions.delete(name);
                this.#labels.delete(name);
                this.#defaults.delete(name);
              }
            },
          },
      ),
    );
    this.#modelTimeouts.delete(key);
    this.#closeTimeouts.delete(key);
    this.#threadedOnly.delete(key);
    this.#events.emit({
      type: "model",
      action: "remove",
      name,
      ...(label === undefined ? {} : { version: label as string }),
    });
    return out;
  }

  /**
   * Removes every version of `name`, one at a time, the default last (it
   * may not go while others stay), each chosen as its turn comes: a version
   * added or a default moved meanwhile (a call not waiting for this one)
   * does not leave the model half removed.
   */
  async #removeVersions(
    name: string,
    options: ModelCallOptions,
  ): Promise<unknown> {
    let out: unknown;
    let warned: unknown;
    let raced: unknown;
    for (
      let set = this.#versions.get(name);
      set !== undefined;
      set = this.#versions.get(name)
    ) {
      const seen = `${set.default} ${set.versions.join(" ")}`;
      const label = set.versions.find((l) => l !== set.default) ??
        set.default;
      try {
        out = await this.removeModel(name, { ...options, version: label });
        raced = undefined;
      } catch (err) {
        // Refused as the versions changed under it (that one removed, or
        // made the default while another was added): look again.
        const refused = (err as Error | null)?.name;
        const now = this.#versions.get(name);
        if (
          (refused !== "ModelNotFoundError" &&
            refused !== "InvalidRequestError") ||
          (now !== undefined &&
            `${now.default} ${now.versions.join(" ")}` === seen)
        ) throw err;
        raced = err;
        continue;
      }
      warned ??= (out as { closeWarning?: unknown } | null)?.closeWarning ===
          undefined
        ? undefined
        : out;
    }
    if (raced !== undefined) throw raced;
    return withWarning(out, warned);
  }

  /** Runs a model's `init(dataFile)` on every ready worker; replayed on restarts. */
  async initModel(
    name: string,
    dataFile: string,
    options: ModelCallOptions = {},
  ): Promise<unknown> {
    this.#admit("init model");
    const label = (options as { version?: unknown } | null)?.version;
    const key = label === undefined
      ? name
      : this.#versionName("init", name, label);
    if (label === undefined) this.#checkNotVersionName("init", name);
    this.#checkModelOptions("init model", key, options);
    this.#checkModelsDir("init model", key, { dataFile });
    await this.#someWorkerReady("init model", key, options);
    const out = await this.#modelOp(
      "init model",
      key,
      this.#registry.init(
        key,
        dataFile,
        () => this.#modelTargets("init model", key, true),
        options,
      ),
    );
    this.#events.emit({
      type: "model",
      action: "init",
      name,
      ...(label === undefined ? {} : { version: label as string }),
    });
    return out;
  }

  /**
   * Runs a model on one worker (round-robin, or by `key`). Calls of a model
   * that declares `batch_size` are gathered into batches for its
   * `execute_batch` (docs/models.md, "Batching"); a call with `key` or
   * `worker` is then a batch of its own. A call without `timeout` gets the
   * model's own (its spec's `timeout`, else its class's `timeout_ms`), else
   * the pool's `requestTimeout`.
   *
   * `msg` is what the model's `execute(self, msg)` gets: any JSON value (an
   * object, an array, a string, a number, `null`; `undefined` as `None`),
   * with `Uint8Array`s (any `ArrayBuffer` view, an `ArrayBuffer`) as `bytes`.
   * It resolves with what the model returned: any JSON value, `bytes` as a
   * `Uint8Array`, `None` as `null`. Its type `T` is the caller's word, not
   * checked: `Record<string, unknown> | null` unless given (pass `unknown`
   * for a model that may return anything else). A model's exception rejects
   * with a `PythonError`; the other failures have classes of their own
   * (`TimeoutError`, `CancelledError`, `WorkerCrashedError`, ... in
   * errors.ts, each with a stable `code`), a model not loaded a `RemoteError`
   * named `ModelNotFoundError` (`code` `"MODEL_NOT_FOUND"`).
   *
   * @example Typed results, options and errors
   * ```ts ignore
   * const { score } = await pool.execute<{ score: number }>(
   *   "scorer",
   *   { text: "hello" },
   *   { timeout: 2_000, signal: req.signal },
   * );
   * const rows = await pool.execute<number[][]>("embed", ["a", "b"]);
   * try {
   *   await pool.execute("scorer", { text: "" });
   * } catch (err) {
   *   if (err instanceof PythonError) console.log(err.type, err.traceback);
   *   else if (err instanceof PyProxyError) console.log(err.code); // "TIMEOUT", ...
   *   else throw err;
   * }
   * ```
   */
  execute<T = Record<string, unknown> | null>(
    name: string,
    msg: unknown,
    options: ExecuteOptions = {},
  ): Promise<T> {
    const asked = name;
    // A model with versions: the one asked for, else its default (no
    // lookup while no model has versions).
    if (options.version !== undefined) {
      try {
        name = this.#versionName("execute", name, options.version);
      } catch (err) {
        return Promise.reject(err);
      }
    } else if (this.#defaults.size > 0) {
      name = this.#defaults.get(name) ?? name;
    }
    if (this.#callHooks !== undefined) {
      return this.#hookedExecute<T>(this.#callHooks, asked, name, msg, options);
    }
    return this.#executeResolved<T>(name, msg, options);
  }

  /**
   * `execute` through the plugins' call hooks: what the pool refuses at
   * once never reaches them; the call goes on as usual once `onCall` let
   * it (its `onSend` counting its attempts).
   */
  #hookedExecute<T>(
    hooks: CallHooks,
    asked: string,
    name: string,
    msg: unknown,
    options: ExecuteOptions,
  ): Promise<T> {
    const refused = this.#refusal("executeModel", options);
    if (refused !== undefined) return Promise.reject(refused);
    return hooks.run<T>(
      modelCall("execute", asked, name, msg, options),
      options,
      // Its whole timeout, as #request and the batcher take it: an
      // asynchronous onCall's time counts in it.
      options.timeout ?? this.#modelTimeouts.get(name) ??
        this.#opts.requestTimeout,
      (onSend, spentMs) =>
        this.#executeResolved<T>(name, msg, { ...options, onSend }, spentMs),
      (answer, plugin) => {
        if ("result" in answer) return answer.result as T;
        throw wrongAnswer(plugin);
      },
    );
  }

  /**
   * `execute` of the model as the workers know it (`scorer@2`); `spentMs`
   * of its timeout already gone (in its plugins' asynchronous `onCall`).
   */
  #executeResolved<T>(
    name: string,
    msg: unknown,
    options: ExecuteOptions,
    spentMs = 0,
  ): Promise<T> {
    if (this.#batchers.size > 0) {
      const batcher = this.#batchers.get(name);
      if (batcher !== undefined) {
        return this.#executeBatched(
          batcher,
          msg as Record<string, unknown>,
          options,
          spentMs,
        ) as Promise<T>;
      }
    }
    const { requestId, contentType, headers, traceparent, caller } = options;
    const args: Record<string, unknown> = requestId === undefined
      ? { name, msg }
      : { name, msg, requestId };
    if (contentType !== undefined) args.contentType = contentType;
    if (headers !== undefined) args.headers = headers;
    if (traceparent !== undefined) traceContextArgs(args, options);
    if (caller !== undefined) args.caller = caller;
    // No lookup while no model's call has hung a worker's loop.
    if (this.#threadedOnly.size > 0 && this.#threadedOnly.has(name)) {
      args.threaded = true;
    }
    return this.#request<T>(
      "executeModel",
      args,
      options,
      undefined,
      // No lookup for a call with its own timeout (the gateway's), nor
      // while no model has one.
      options.timeout !== undefined || this.#modelTimeouts.size === 0
        ? undefined
        : this.#modelTimeouts.get(name),
      undefined,
      spentMs,
    );
  }

  #executeBatched(
    batcher: ModelBatcher,
    msg: Record<string, unknown>,
    options: ExecuteOptions,
    spentMs: number,
  ): Promise<unknown> {
    const refused = this.#refusal("executeModel", options);
    if (refused !== undefined) return Promise.reject(refused);
    return batcher.add(msg, options, spentMs);
  }

  /** Starts, replaces or ends the batching of model `name` after a load. */
  #batchingOf(name: string, description: unknown): void {
    const old = this.#batchers.get(name);
    old?.flush();
    this.#batchers.delete(name);
    const settings = batchSettings(description);
    if (settings === undefined) return;
    this.#batchers.set(
      name,
      new ModelBatcher(
        name,
        settings,
        (msgs, options, requestIds, messageHeaders, traceContexts, callers) => {
          // split: a batch that reaches a version of the model updated
          // meanwhile (smaller batch_size, or none) still runs.
          const args: Record<string, unknown> = requestIds === undefined
            ? { name, msgs, split: true }
            : { name, msgs, split: true, requestIds };
          if (messageHeaders !== undefined) {
            args.messageHeaders = messageHeaders;
          }
          if (traceContexts !== undefined) args.traceContexts = traceContexts;
          if (callers !== undefined) args.callers = callers;
          // A part of a batch taken apart was admitted with it: routed as a
          // retry, past a full queue (maxQueue), or a good call of the
          // batch would fail for another call's message.
          return this.#request(
            "executeBatch",
            args,
            options,
            undefined,
            undefined,
            options.again === true ? "again" : "first",
          );
        },
        this.#modelTimeouts.get(name) ?? this.#opts.requestTimeout ??
          Infinity,
        // One batch per ready worker (of its slots, when placed) goes at
        // once; more wait and gather.
        () => {
          let ready = 0;
          const slots = this.#registry.placements.get(name)?.workers ??
            this.#supervisor.workers;
          for (const w of slots) if (modelReady(w)) ready++;
          return Math.max(1, ready);
        },
        // An update's batcher goes on counting where the old one was.
        old?.sizes,
        // A call of it timed out on a worker: what its caller called
        // (pool.execute), once per call, as for a model that does not batch.
        (id, timeoutMs, requestId) => {
          const worker = this.#supervisor.workers.find((w) => w.id === id);
          if (worker === undefined) return;
          this.#plugins.run("onTimeout", {
            worker,
            cmd: BATCHED_CMD,
            timeoutMs,
            model: name,
            ...(requestId === undefined ? {} : { requestId }),
          }, this.#supervisor.context);
        },
        // Its batch waited in the queue while its version was removed (the
        // default moved first): a call that names no version runs on the
        // default of now, as an unbatched one does (#followDefault); its
        // own timeout and signal still hold (the batcher's), so none here.
        (msg, options, signal) => {
          if ((options as ExecuteOptions).version !== undefined) return;
          const at = name.lastIndexOf("@");
          if (at < 0 || this.#versionOf(name) !== undefined) return;
          const model = name.slice(0, at);
          const now = this.#defaults.get(model);
          if (now === undefined || now === name) return;
          // The same call, gone on: not through the call hooks again (its
          // onCall ran, its onSettle comes once it settles; pool.execute
          // ran both a second time).
          return this.#executeResolved(now, msg, {
            ...(options as ExecuteOptions),
            signal,
            timeout: Infinity,
          });
        },
      ),
    );
  }

  /**
   * Runs model `name` once per input of `inputs` (an array, any iterable, an
   * async iterable such as a file read line by line or a `ReadableStream`)
   * with at most `concurrency` calls pending, and yields each input with its
   * result or its error: `{ index, input, ok: true, result }` or `{ index,
   * input, ok: false, error }` (an error is never thrown: a row that fails
   * is an item), in the inputs' order unless `ordered: false`. The source
   * is read only as fast as the loop takes results (backpressure), and no
   * more than `concurrency` calls wait anywhere, so a job of millions of
   * rows holds neither the pool's queue nor memory (docs/performance.md,
   * "Scoring many rows"). Leaving the loop early (`break`, a throw) or
   * aborting `signal` cancels the pending calls and waits for them; then
   * the source's `return()` runs. When the pool closes, no more rows are
   * read: the calls already made come as items (those cut off as
   * `ShuttingDownError`s), then the loop throws a `ShuttingDownError`. The
   * same for a failure every later row would have too: the model out of
   * service (`ModelUnavailableError`), the model (or the `version` asked
   * for) no longer in the pool (`ModelNotFoundError`: removed mid-run, or
   * never added), no worker left to take calls and
   * none coming back (`NoWorkerError`: every worker `failed` after a
   * restart storm, or the pinned `worker` gone or refusing the model for
   * good). A run pinned to a `worker` waits for it while it restarts
   * (within each row's timeout), where a pinned `execute` fails at once
   * with `NoWorkerError`; a retry of the run can
   * start from the last item's `index` + 1.
   * Like Python's `multiprocessing`
   * `Pool.imap` (`imap_unordered` with `ordered: false`).
   *
   * `concurrency` defaults to the workers × `maxInFlightPerWorker` (what
   * runs at once without queueing), times the model's `batch_size` for a
   * model that batches, at most 8192. One above what the pool takes
   * without refusing (that plus `maxQueue`, × `batch_size`) is lowered to
   * it: the rest would only have been `OverloadedError` items. The other
   * callers' calls share the queue: a row that finds it full waits for a
   * call to leave (a slot or a place in the queue), within its timeout. Each call goes through
   * {@linkcode Pool.execute} with the other options (and the plugins' call
   * hooks).
   *
   * @example Score a JSON lines file, writing results as they come
   * ```ts ignore
   * for await (const r of pool.executeEach("risk", rows, { idempotent: true })) {
   *   if (r.ok) out.write(JSON.stringify(r.result) + "\n");
   *   else failed.push({ id: r.input.id, error: String(r.error) });
   * }
   * ```
   */
  executeEach<I = unknown, T = Record<string, unknown> | null>(
    name: string,
    inputs: Iterable<I> | AsyncIterable<I>,
    options: ExecuteEachOptions = {},
  ): AsyncGenerator<EachResult<I, T>, void, undefined> {
    const { concurrency, ordered: _ordered, signal: _signal, ...call } =
      options;
    const { running, capacity } = this.#eachWindow(name, call.version);
    const pinned = call.worker;
    return executeEach<I, T>(
      inputs,
      (input, abort) =>
        this.#eachRow<T>(name, input, { ...call, signal: abort }, pinned),
      {
        ...options,
        // More pending than the pool takes without refusing would make the
        // rest of the window OverloadedError items: lowered to it.
        concurrency: concurrency === undefined
          ? Math.min(EACH_WINDOW_MAX, running)
          : Number.isInteger(concurrency) && concurrency > capacity
          ? capacity
          : concurrency,
      },
      (error) => this.#endsEach(error, name, call.version, pinned),
    );
  }

  /**
   * A row of an `executeEach` run. Two failures of a call that never ran
   * wait and go again, within the row's timeout, instead of being the
   * row's item: the pool's queue full (`OverloadedError`: other callers
   * filled it; the row waits for a call to leave), and, for a run
   * pinned to worker `pinned`, `NoWorkerError` while that worker restarts (a
   * pinned call does not wait in the queue as the others do). Each made
   * the run read the rest of its source as failed rows in a blink: 20 000
   * `OverloadedError`s in 0.14 s beside another caller's full queue, 19 485
   * `NoWorkerError`s in 0.3 s across a restart.
   */
  async #eachRow<T>(
    name: string,
    input: unknown,
    options: ExecuteOptions & { signal: AbortSignal },
    pinned: string | undefined,
  ): Promise<T> {
    let deadline: number | undefined;
    while (true) {
      let full: boolean;
      try {
        return await this.execute<T>(name, input, options);
      } catch (error) {
        full = error instanceof OverloadedError &&
          (error.details as { maxQueue?: unknown } | undefined)?.maxQueue !==
            undefined;
        const restarting = !full && pinned !== undefined &&
          error instanceof NoWorkerError && this.#comingBack(pinned);
        if (!full && !restarting) throw error;
        if (deadline === undefined) {
          const timeout = options.timeout ?? this.#opts.requestTimeout;
          deadline = timeout === undefined ? Infinity : Date.now() + timeout;
        }
        if (
          options.signal.aborted || this.#closing || Date.now() >= deadline
        ) throw error;
      }
      if (full) await this.#queueRoom(deadline, options.signal);
      else {
        await this.#backAgain([pinned!], {
          timeout: deadline - Date.now(),
          signal: options.signal,
        });
      }
      if (options.timeout !== undefined || deadline !== Infinity) {
        options = { ...options, timeout: Math.max(1, deadline - Date.now()) };
      }
    }
  }

  /**
   * Waits until a call leaves the pool's queue full (`#pumpQueue`), the
   * pool closes, `signal` aborts or `deadline` passes.
   */
  #queueRoom(deadline: number, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        this.#roomWaits.delete(done);
        if (timer !== undefined) clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      // At least once a second too: a call that left before this row
      // waited (its continuation ran after a hook's await) woke none.
      const timer = setTimeoutOrNever(
        done,
        Math.min(ROOM_RETRY_MS, deadline - Date.now()),
      );
      signal.addEventListener("abort", done, { once: true });
      this.#roomWaits.add(done);
    });
  }

  /** Whether worker `id` is not ready now but is on its way back (a restart). */
  #comingBack(id: string): boolean {
    const w = this.#supervisor.get(id);
    return w !== undefined && !modelReady(w) &&
      (w.state === "starting" || w.state === "restarting" ||
        w.state === "ready" || this.#supervisor.settling(w));
  }

  /**
   * `executeEach`'s windows for model `name`: the calls that run at once
   * without queueing (its default) and those the pool takes without
   * refusing (`maxQueue` more; a batching model's counted in batches).
   */
  #eachWindow(
    name: string,
    version: string | undefined,
  ): { running: number; capacity: number } {
    const slots = Math.max(1, this.#supervisor.workers.length) *
      this.#opts.maxInFlightPerWorker;
    let resolved = this.#defaults.get(name) ?? name;
    if (version !== undefined) {
      try {
        resolved = this.#versionName("execute", name, version);
      } catch {
        // Each call rejects with the error itself.
      }
    }
    const batch = this.#batchers.get(resolved)?.settings.size ?? 1;
    return {
      running: slots * batch,
      capacity: (slots + this.#opts.maxQueue) * batch,
    };
  }

  /**
   * Whether a row's failure is one every later row of an `executeEach` run
   * would have too, so that the run ends with it instead of reading the
   * rest of its source and yielding each row failed at once: the pool
   * closing; the model out of service (until an update); the model (its
   * version) not in the pool now: a worker's `ModelNotFoundError` while the
   * pool still has it (a worker behind an update) does not end the run; no
   * worker able to
   * take calls and none coming back (every one `failed` after a restart
   * storm, or the pinned `worker` gone).
   */
  #endsEach(
    error: unknown,
    name: string,
    version: string | undefined,
    pinned: string | undefined,
  ): boolean {
    if (error instanceof ShuttingDownError) return this.#closing;
    if (error instanceof ModelUnavailableError) return true;
    // Only on a failed row: no lookup for the rows that succeed.
    if ((error as Error | null)?.name === "ModelNotFoundError") {
      try {
        return !this.#registry.has(this.resolveModel(name, version));
      } catch {
        return true; // the version is gone
      }
    }
    if (!(error instanceof NoWorkerError)) return false;
    const alive = (w: Worker) =>
      w.state === "ready" || w.state === "starting" ||
      w.state === "restarting" || w.state === "draining" ||
      this.#supervisor.settling(w);
    const workers = this.#supervisor.workers;
    if (pinned === undefined) return !workers.some(alive);
    // Pinned: its rows wait while it restarts (#eachPinned); a worker that
    // is there and ready, or draining, refuses the rows for good (a placed
    // model it does not hold, a slot being removed).
    return !this.#comingBack(pinned);
  }

  /**
   * Runs a model whose `execute` is a generator (or returns an iterator) and
   * gives its items as they come: `for await (const item of
   * pool.executeStream(name, msg))`. Any other model gives one item, its
   * result. `timeout` covers the whole stream (without one: the model's
   * own, else the pool's `requestTimeout`). See {@linkcode ModelStream}.
   */
  executeStream<T = unknown>(
    name: string,
    msg: unknown,
    options: ExecuteStreamOptions = {},
  ): ModelStream<T> {
    const asked = name;
    if (options.version !== undefined) {
      // A version it does not have: the stream's first read rejects.
      try {
        name = this.#versionName("execute", name, options.version);
      } catch (err) {
        return new ModelStream<T>(
          this.#streamPool,
          name,
          msg,
          {},
          err as Error,
        );
      }
    } else if (this.#defaults.size > 0) {
      name = this.#defaults.get(name) ?? name;
    }
    const timeout = options.timeout === undefined
      ? this.#modelTimeouts.get(name)
      : undefined;
    return new ModelStream<T>(
      this.#callHooks === undefined
        ? this.#streamPool
        : this.#hookedStreamPool(this.#callHooks, asked, options),
      name,
      msg,
      timeout === undefined ? options : { ...options, timeout },
    );
  }

  /**
   * The pool as one stream sees it, its call through the plugins' call
   * hooks: an `onCall`'s answer is given as the stream's items.
   */
  #hookedStreamPool(
    hooks: CallHooks,
    asked: string,
    options: ExecuteStreamOptions,
  ): StreamPool {
    return {
      ...this.#streamPool,
      request: <T>(
        cmd: string,
        args: Record<string, unknown> = {},
        opts: StreamRequestOptions = {},
      ): Promise<T> => {
        const refused = this.#refusal(cmd, opts);
        if (refused !== undefined) return Promise.reject(refused);
        return hooks.run<T>(
          modelCall(
            "stream",
            asked,
            args.name as string,
            args.msg,
            options,
          ),
          opts,
          // Its whole timeout (executeStream gave the model's).
          opts.timeout ?? this.#opts.requestTimeout,
          (onSend, spentMs) =>
            this.#request<T>(
              cmd,
              args,
              { ...opts, onSend },
              opts.onSlot,
              undefined,
              undefined,
              spentMs,
            ),
          (answer, plugin) => {
            const items = "items" in answer ? answer.items : [answer.result];
            if (!Array.isArray(items)) {
              throw new PluginError(
                `Cannot run hook onCall of plugin '${plugin}': it answered a stream with { items } that is not an array`,
                { details: { plugin, hook: "onCall" } },
              );
            }
            for (const data of items) opts.onEvent?.({ event: "item", data });
            return { items: items.length } as T;
          },
        );
      },
    };
  }

  /**
   * Sends any command to one worker: round-robin, by `key`, or to `worker`.
   * At most `maxInFlightPerWorker` calls run per worker; beyond, calls wait in
   * one queue of `maxQueue`; beyond that it rejects with `OverloadedError`.
   * The command goes as it is: an `executeModel` of a model with versions
   * names the one to run as the workers know it
   * (`pool.resolveModel(name, version)`, `"scorer@2"`; docs/models.md,
   * "Versions"), and gets no batching nor the model's own timeout
   * (`execute` does both), nor the plugins' call hooks (`onCall`,
   * `onSettle`: a quota or an audit sees no such call; `onRequest` does):
   * the raw way around them, which the gateway never takes
   * (docs/plugins.md, "Call hooks").
   *
   * @example
   * ```ts ignore
   * const name = pool.resolveModel("scorer"); // its default: "scorer@1"
   * await pool.request("executeModel", { name, msg: { x: 1 } });
   * ```
   */
  request<T = unknown>(
    cmd: string,
    args?: Record<string, unknown>,
    options: PoolRequestOptions = {},
  ): Promise<T> {
    return this.#request<T>(cmd, args, options, undefined);
  }

  /**
   * `defaultTimeout`: the model's own, for a call that gives none. `batch`:
   * the call is a model's batch (`executeBatch`, ModelBatcher), whose
   * errors name `executeModel`, what its callers called; `"again"`: a part
   * of a batch taken apart, admitted before, so routed as a retry is (to the
   * queue's front, never refused by a full one) and not counted again in
   * the queue waits (the batch it came from was). `spentMs`: of its
   * timeout, already gone before it came here (a model call's plugins'
   * asynchronous `onCall`: the caller's timeout counts from the call).
   */
  #request<T>(
    cmd: string,
    args: Record<string, unknown> | undefined,
    options: PoolRequestOptions,
    onSlot: ((slot: SlotLease) => void) | undefined,
    defaultTimeout?: number,
    batch?: "first" | "again",
    spentMs = 0,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const refused = this.#refusal(
        batch === undefined ? cmd : BATCHED_CMD,
        options,
      );
      if (refused !== undefined) return reject(refused);
      const timeout = options.timeout ?? defaultTimeout ??
        this.#opts.requestTimeout;
      const call: PoolCall = {
        cmd,
        args,
        options,
        deadline: timeout === undefined
          ? Infinity
          : Date.now() + timeout - spentMs,
        timeoutMs: timeout,
        retries: 0,
        resolve: resolve as (value: unknown) => void,
        reject,
      };
      if (onSlot !== undefined) call.onSlot = onSlot;
      if (batch !== undefined) {
        call.what = BATCHED_CMD;
        if (batch === "again") call.again = true;
      }
      // A placed model's calls go to its slots only (no lookup while no
      // model is placed).
      const placements = this.#placements;
      if (placements.size > 0 && args !== undefined && MODEL_CALLS.has(cmd)) {
        const placement = placements.get(args.name as string);
        if (placement !== undefined) call.placement = placement;
      }
      this.#router.route(call, batch === "again", batch !== "again");
    });
  }

  /** Why a call is refused before it is queued (none: `undefined`). */
  #refusal(cmd: string, options: PoolRequestOptions): Error | undefined {
    if (this.#closing) {
      return new ShuttingDownError(
        `Cannot accept call ${cmd}: pool is closing`,
      );
    }
    const invalid = callOptionsError("Cannot send call", options, cmd);
    if (invalid !== undefined) return invalid;
    if (options.signal?.aborted) {
      return new CancelledError(`Cannot send call ${cmd}: aborted`, {
        cause: options.signal.reason,
      });
    }
    if ((options.timeout ?? this.#opts.requestTimeout) === 0) {
      return new TimeoutError(`Cannot send call ${cmd}: timeout is 0 ms`);
    }
    return undefined;
  }

  /**
   * Evaluates Python code on a worker and returns the running {@linkcode Atom}
   * (its `result`, live `output`, cancellation). Arbitrary code execution:
   * only for whoever may hold the pool.
   */
  eval(code: string, options: EvalOptions = {}): Atom {
    return startAtom(this, code, options);
  }

  /** Opens an eval session: a namespace kept on one worker between atoms. */
  openSession(options: OpenSessionOptions = {}): Promise<EvalSession> {
    return openEvalSession(this, options);
  }

  /**
   * Sends a small command straight on a worker's current connection,
   * bypassing the queue and the in-flight bound. Rejects with
   * `NoWorkerError` when the worker has no connection or its pid is not `pid`.
   */
  control<T = unknown>(
    worker: string,
    cmd: string,
    args: Record<string, unknown>,
    options: { pid?: number; timeout?: number } = {},
  ): Promise<T> {
    const w = this.#supervisor.get(worker);
    const session = w?.session;
    if (
      w === undefined || session === undefined ||
      (options.pid !== undefined && w.pid !== options.pid)
    ) {
      return Promise.reject(
        new NoWorkerError(
          `Cannot send ${cmd}: worker ${worker} is not the one that ran the call`,
        ),
      );
    }
    return session.request<T>(
      cmd,
      args,
      options.timeout === undefined ? {} : { timeout: options.timeout },
    );
  }

  /**
   * Grows or shrinks the pool to `count` worker slots (an integer from 1 to
   * 1024, as `workers`) while it serves, and resolves with the status once
   * done. Resizes run one at a time, in call order, each to its own count:
   * the last one called sets the final size.
   *
   * Growing adds slots with ids never used before in this pool (`w3`,
   * `w4`, ...), started as at `Pool.start`: plugin hooks (`onWorkerStart`,
   * ...), then the registered models loaded (each bounded by
   * `loadTimeout`), and traffic only once they are. It resolves when each
   * new slot is ready or its first start failed: such a slot stays, left to
   * the restart policy (`reconnect()`), and counts in the size. When every
   * new slot fails, they are removed again and it rejects with
   * `StartError` (the size is unchanged). A first start whose death was
   * laid on a model's load (a model suspected of killing its worker soon
   * after its load, `loadCrashWindow`, killed it during its held replay)
   * is not the slot's failure: its restart decides instead (the model
   * quarantined meanwhile, or held again).
   *
   * Shrinking waits for a model operation in flight (`addModel`, ...), then
   * removes first the slots that serve nothing (`failed`,
   * `stopped`, `restarting`, `starting`), then the ready ones with the
   * fewest calls in flight (within a factor of two: among those, the ones
   * holding the fewest placed models, whose models would have to move), the
   * newest first among equals. They take no new
   * call at once (`worker-removed` event, state `draining`): queued calls go
   * to the other workers (a call pinned to a removed one fails with
   * `NoWorkerError`), keyed calls move only if their key was on a removed
   * slot, eval sessions there are lost (`SessionLostError` on their next
   * eval). Calls in flight get `shutdownGrace` to finish; then the process
   * is stopped (killed 1 s after `stopServer` at most, plus the bound of
   * its models' `close()` hooks), and a call cut short
   * is retried elsewhere when `idempotent`, else rejects with
   * `ShuttingDownError`. It resolves once their processes have exited.
   *
   * Rejects with `ConfigError` for a bad `count` or options, and with
   * `ShuttingDownError` once `close()` was called (also for a resize cut
   * short by it).
   *
   * @example Scale out for a batch job, then back
   * ```ts ignore
   * await using pool = await Pool.start({ workers: 1, modelsDir: "./models" });
   * await pool.addModel("doubler", { file: "doubler.py" });
   * const status = await pool.resize(4); // w2, w3, w4 have doubler loaded
   * console.log(status.workers.map((w) => `${w.id} ${w.state}`));
   * await pool.resize(1, { timeout: 60_000 });
   * ```
   */
  resize(count: number, options: ResizeOptions = {}): Promise<PoolStatus> {
    return this.#resize(count, options, null, null);
  }

  /** `resize`, asked by `by` (a plugin's name; `null`: `pool.resize`) for `reason`. */
  #resize(
    count: number,
    options: ResizeOptions,
    by: string | null,
    reason: string | null,
  ): Promise<PoolStatus> {
    const action = `resize pool to ${String(count)} workers`;
    if (this.#closing) {
      return Promise.reject(
        new ShuttingDownError(`Cannot ${action}: pool is closing`),
      );
    }
    if (
      typeof count !== "number" || !Number.isInteger(count) || count < 1 ||
      count > 1024
    ) {
      return Promise.reject(
        new ConfigError(
          `Cannot resize pool: count: expected an integer from 1 to 1024 (got ${
            typeof count === "number" ? count : typeof count
          })`,
          { details: { field: "count" } },
        ),
      );
    }
    const invalid = typeof options === "object" && options !== null
      ? callOptionsError("Cannot resize pool", {
        timeout: options.timeout,
        signal: options.signal,
      })
      : new ConfigError("Cannot resize pool: options must be an object");
    if (invalid !== undefined) return Promise.reject(invalid);
    const { signal } = options;
    const timeout = options.timeout ?? Infinity;
    if (signal?.aborted) {
      return Promise.reject(
        new CancelledError(`Cannot ${action}: aborted`, {
          cause: signal.reason,
        }),
      );
    }
    if (timeout === 0) {
      return Promise.reject(
        new TimeoutError(`Cannot ${action}: timeout is 0 ms`),
      );
    }
    // Set when the caller stopped waiting: a resize not begun by then is dropped.
    let dropped: Error | undefined;
    this.#resizesPending++;
    const run = this.#resizes.then(async () => {
      if (dropped !== undefined) throw dropped;
      this.#admit(action);
      const from = this.#supervisor.workers.length;
      if (from !== count) {
        this.#events.emit({ type: "resize", from, to: count, by, reason });
      }
      await this.#supervisor.resize(count, this.#opts.shutdownGrace);
      if (this.#closing) {
        throw new ShuttingDownError(
          `Cannot ${action}: the pool closed before it finished`,
        );
      }
      return this.status();
    }).finally(() => this.#resizesPending--);
    this.#resizes = run.then(() => {}, () => {});
    if (timeout === Infinity && signal === undefined) return run;
    return new Promise<PoolStatus>((resolve, reject) => {
      const done = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const giveUp = (error: Error): void => {
        dropped = error;
        done();
        reject(error);
      };
      const timer = setTimeoutOrNever(
        () =>
          giveUp(
            new TimeoutError(
              `Cannot ${action}: not done within ${timeout} ms (it goes on if it had begun)`,
            ),
          ),
        timeout,
      );
      const onAbort = (): void =>
        giveUp(
          new CancelledError(
            `Cannot ${action}: aborted (it goes on if it had begun)`,
            { cause: signal?.reason },
          ),
        );
      signal?.addEventListener("abort", onAbort, { once: true });
      run.then((status) => {
        done();
        resolve(status);
      }, (error) => {
        done();
        reject(error);
      });
    });
  }

  /** Kills a worker's process with SIGKILL; the reconnect policy replaces it. */
  killWorker(id: string, reason?: string): void {
    this.#supervisor.get(id)?.kill("SIGKILL", reason ?? "killed on request");
  }

  /**
   * The batches a model that batches (`batch_size`, docs/models.md
   * "Batching") ran since it was added, by size, smallest first: how many
   * were answered and their milliseconds from written to a worker to
   * answered (the worker's `execute_batch` and the trip there and back),
   * across its updates and its workers' restarts; `[]` for a model that
   * batches and ran none, `undefined` for one that does not batch (or is
   * unknown). `name` as the workers know it: a version's is
   * `pool.resolveModel(name, version)`. Gathering the sizes costs one
   * clock read per batch sent and one per answer.
   *
   * @example
   * ```ts ignore
   * await pool.addModel("scorer", { file: "scorer.py" }); // batch_size = 8
   * for (const b of pool.batchStats("scorer") ?? []) {
   *   console.log(`${b.size}: ${b.count} batches, ${b.ms / b.count} ms each`);
   * }
   * ```
   */
  batchStats(
    name: string,
  ): Array<{ size: number; count: number; ms: number }> | undefined {
    const sizes = this.#batchers.get(name)?.sizes;
    if (sizes === undefined) return undefined;
    return [...sizes].map(([size, s]) => ({ size, count: s.count, ms: s.ms }))
      .sort((a, b) => a.size - b.size);
  }

  /**
   * The default timeout in ms of a model's calls when it has one of its
   * own: its spec's `timeout`, else its class's `timeout_ms`
   * (docs/models.md, "Timeouts and cancellation"); `undefined` when its
   * calls get the pool's `requestTimeout` (or the model is unknown).
   *
   * @example
   * ```ts ignore
   * await pool.addModel("slow", { file: "slow.py", timeout: 120_000 });
   * console.log(pool.modelTimeout("slow")); // 120000
   * ```
   */
  modelTimeout(name: string): number | undefined {
    return this.#modelTimeouts.size === 0
      ? undefined
      : this.#modelTimeouts.get(name);
  }

  /**
   * Snapshot of workers, models, queue and counters. It lists every model
   * (and every worker's models): to read one model, or the workers alone,
   * on each request, {@linkcode Pool.modelStatus} and
   * {@linkcode Pool.workerStatus} cost no more with thousands of models.
   */
  status(): PoolStatus {
    const workers = this.workerStatus();
    const models = this.#registry.list();
    return {
      workers: workers.map((w) => ({
        ...w,
        models: models.filter((m) =>
          m.failedReason === undefined && (m.slots?.includes(w.id) ?? true)
        ).map((m) => m.name),
      })),
      models: models.map((m) => this.#modelEntry(m)),
      queue: this.#router.queued,
      inFlight: this.#supervisor.workers.reduce((n, w) => n + w.inFlight, 0),
      parked: this.#supervisor.workers.reduce((n, w) => n + w.parked, 0),
      uptime: Date.now() - this.#startedAt,
      closing: this.#closing,
      resizing: this.#resizesPending > 0,
      plugins: this.#plugins.plugins.map((p) => p.name),
      evalReplayBytes: this.replayBudget.bytes,
      exits: this.#supervisor.exits(),
      limits: {
        maxInFlightPerWorker: this.#opts.maxInFlightPerWorker,
        maxQueue: this.#opts.maxQueue,
        evalReplayBudget: this.replayBudget.maxBytes,
      },
    };
  }

  /**
   * The entries {@linkcode Pool.status} lists under `name` in `models`:
   * the model without versions, or each of its versions (in the order they
   * were added); `[]` when there is none. One model's lookups, whatever the
   * number of models: what a readiness probe per model should read rather
   * than the whole status. An entry is ready when it has no `failedReason`
   * (out of service: on no worker, whatever `slots` says) and a worker of
   * its `slots` is ready (no `slots`: any worker), as the gateway's
   * `/v2/models/{name}/ready` reads it.
   *
   * @example
   * ```ts ignore
   * await pool.addModel("scorer", { file: "scorer.py", workers: 1 });
   * const [scorer] = pool.modelStatus("scorer");
   * console.log(scorer?.slots); // ["w1"]
   * ```
   *
   * @example A readiness check per model
   * ```ts ignore
   * function modelReady(pool: Pool, name: string): boolean {
   *   const ready = new Set(
   *     pool.workerStatus().filter((w) => w.state === "ready").map((w) => w.id),
   *   );
   *   return pool.modelStatus(name).some((m) =>
   *     m.failedReason === undefined &&
   *     (m.slots === undefined ? ready.size > 0 : m.slots.some((id) => ready.has(id)))
   *   );
   * }
   * ```
   */
  modelStatus(name: string): ModelInfo[] {
    const set = this.#versions.get(name);
    const keys = set === undefined
      ? [name]
      : [name, ...set.versions.map((label) => versionKey(name, label))];
    const out: ModelInfo[] = [];
    for (const key of keys) {
      const m = this.#registry.get(key);
      if (m === undefined) continue;
      const entry = this.#modelEntry(m);
      // A version's internal name is listed under its model's name only.
      if (entry.name === name) out.push(entry);
    }
    return out;
  }

  /**
   * The one entry {@linkcode Pool.modelStatus} lists for model `name` at
   * `version`: that version of a model with versions (its default one
   * without `version`), or the model without versions (no `version`);
   * `undefined` when there is none. A few map lookups, whatever the number
   * of versions: what a readiness probe of one version reads
   * (`/v2/models/{name}/ready` read every version's entry, 1.5 ms a probe
   * at 2000 versions).
   *
   * @example
   * ```ts ignore
   * await pool.addModel("scorer", { file: "scorer_v1.py", version: "1" });
   * await pool.addModel("scorer", { file: "scorer_v2.py", version: "2" });
   * console.log(pool.modelVersionStatus("scorer")?.version); // "1" (the default)
   * console.log(pool.modelVersionStatus("scorer", "2")?.failedReason); // undefined: in service
   * ```
   */
  modelVersionStatus(name: string, version?: string): ModelInfo | undefined {
    const set = this.#versions.get(name);
    let key: string;
    if (set === undefined) {
      if (version !== undefined) return undefined;
      key = name;
    } else {
      const label = version ?? set.default;
      if (!this.#hasVersion(name, label)) return undefined;
      key = versionKey(name, label);
    }
    const m = this.#registry.get(key);
    if (m === undefined) return undefined;
    const entry = this.#modelEntry(m);
    // A version's internal name is listed under its model's name only.
    return entry.name === name ? entry : undefined;
  }

  /**
   * The workers as {@linkcode Pool.status} lists them, without the models
   * each holds: what `/healthz` reads, at a cost that does not grow with
   * the number of models.
   *
   * @example
   * ```ts ignore
   * const ready = pool.workerStatus().filter((w) => w.state === "ready");
   * console.log(`${ready.length} workers ready`);
   * ```
   */
  workerStatus(): WorkerInfo[] {
    const queued = this.#router.queuedPerWorker();
    for (const w of this.#supervisor.workers) w.queued = queued.get(w.id) ?? 0;
    return this.#supervisor.workers.map((w) => w.info());
  }

  /**
   * A call of model `name` held worker `worker`'s event loop past what the
   * host waits for (`reason`: the call timed out, or the worker is killed
   * for answering nothing): a hung inline call. Its calls run threaded
   * from now on, on every worker (the next hang costs a call thread, which
   * the server replaces, not a worker), until it is updated.
   */
  #heldLoop(worker: string, name: string, reason: string): void {
    if (this.#threadedOnly.has(name) || !this.#registry.has(name)) return;
    this.#threadedOnly.set(name, reason);
    this.#opts.logger.error(
      "Model {name} runs its calls on call threads from now on: {reason}; a hung call then times out on its thread instead of costing a worker (updateModel makes it eligible for the inline fast path again)",
      { name, reason },
    );
    this.#events.emit({ type: "model-threaded", name, worker, reason });
  }

  /**
   * Adds `threaded: true` to an `executeModel` of a model marked threaded
   * (`#heldLoop`) that lacks it: made before the mark, or sent with
   * `pool.request` (its arguments are the caller's: copied).
   */
  #threadedIfMarked(call: PoolCall): void {
    const args = call.args;
    if (
      call.cmd === "executeModel" && args !== undefined &&
      args.threaded !== true && typeof args.name === "string" &&
      this.#threadedOnly.has(args.name)
    ) call.args = { ...args, threaded: true };
  }

  /** A registry entry as `status()` lists it: timeouts, and a version's name and label. */
  #modelEntry(m: ModelInfo): ModelInfo {
    const timeout = this.#modelTimeouts.get(m.name);
    const closeTimeoutMs = this.#closeTimeouts.get(m.name);
    const out: ModelInfo = timeout === undefined ? m : { ...m, timeout };
    if (closeTimeoutMs !== undefined) out.closeTimeoutMs = closeTimeoutMs;
    const threaded = this.#threadedOnly.get(m.name);
    if (threaded !== undefined) out.threaded = threaded;
    // A version: its model's name, its label and whether it is the default.
    const label = m.spec.version;
    if (label !== undefined && this.#versions.size > 0) {
      const name = m.name.slice(0, m.name.length - label.length - 1);
      const set = this.#versions.get(name);
      if (set !== undefined && this.#hasVersion(name, label)) {
        return {
          ...out,
          name,
          version: label,
          default: set.default === label,
        };
      }
    }
    return out;
  }

  /**
   * How long the calls routed to a worker (model calls, streams, evals)
   * waited in the pool queue for a `maxInFlightPerWorker` slot, as a
   * histogram: a call sent at once counts with a wait of 0 (and costs no
   * clock read). It tells queueing from compute when calls are slow (the
   * gateway's `pyproxy_queue_wait_seconds`, `outcome="sent"`).
   *
   * The calls that waited in the queue and left it unsent are in
   * `abandoned`, by outcome, with how long they waited: `timeout` (their
   * deadline passed in the queue), `cancelled` (their signal aborted),
   * `failed` (no worker left for them, the pool closing). They are not in
   * `count`: a saturated pool whose calls time out in the queue shows there,
   * not as short waits of the calls that got through.
   *
   * @example
   * ```ts ignore
   * const w = pool.queueWaits();
   * console.log(`${w.queued} of ${w.count} calls queued, ${(w.sum / Math.max(1, w.queued) * 1000).toFixed(1)} ms on average`);
   * console.log(`${w.abandoned.timeout.count} timed out in the queue`);
   * ```
   */
  queueWaits(): QueueWaitStats {
    return this.#router.waits.snapshot();
  }

  /**
   * What the plugins that report it say of their state (`Plugin.status`),
   * by plugin name: `{ autoscale: { min, max, target, state, ... } }` with
   * `autoscale()`; `{}` when none does.
   */
  pluginStatus(): Record<string, Record<string, unknown>> {
    return this.#plugins.statuses();
  }

  /** The plugins' samples for `GET /metrics` (`Plugin.metrics`), in plugin order. */
  pluginMetrics(): PluginMetric[] {
    return this.#plugins.metrics();
  }

  /**
   * Whether the plugins let `caller` call `model` (`Plugin.canCall`: every
   * one that has it says yes): what the gateway shows that caller of the
   * models. `true` without such a plugin. Refuses no call itself.
   *
   * @example
   * ```ts ignore
   * const shown = pool.status().models.filter((m) => pool.canCall(m.name, caller));
   * ```
   */
  canCall(model: string, caller: string | undefined): boolean {
    return this.#plugins.canCall(model, caller);
  }

  /**
   * The metrics model code recorded with `pyproxy.metrics` (docs/models.md,
   * "Metrics"), a copy: counters and histograms summed over the workers
   * and their restarts, gauges per worker, and the updates dropped by the
   * bounds (`modelMetrics` option) by model. The workers send them in
   * batches, so an update shows here within about half a second. A
   * removed model's series go with it.
   *
   * @example
   * ```ts ignore
   * // model code: metrics.counter("hits_total", labels={"path": "/a"})
   * const { series } = pool.modelMetrics();
   * const hits = series.find((s) => s.model === "scorer" && s.name === "hits_total");
   * console.log(hits?.value);
   * ```
   */
  modelMetrics(): ModelMetricsSnapshot {
    return this.#modelMetrics.snapshot();
  }

  /**
   * Changes the size bounds of the plugins that size the pool
   * (`Plugin.setBounds`, such as `autoscale()`'s): a number sets a bound,
   * `null` restores the configured one. Returns the bounds in force by
   * plugin name, `{}` when no plugin sizes the pool (nothing changed).
   * Throws `RangeError` for bounds a plugin refuses. The pool's size is
   * not changed here: the plugin brings it within the bounds. `{}` reads
   * the bounds in force (a resize outside them moves them), leaving out a
   * plugin that throws on it.
   *
   * @example
   * ```ts ignore
   * pool.setScaleBounds({ min: 1, max: 4 }); // { autoscale: { min: 1, max: 4 } }
   * pool.setScaleBounds({ min: null, max: null }); // back to autoscale()'s options
   * pool.setScaleBounds({}); // reads them: { autoscale: { min: 1, max: 2 } }
   * ```
   */
  setScaleBounds(change: ScaleBoundsChange): Record<string, ScaleBounds> {
    return this.#plugins.setBounds(change);
  }

  /** Pool events from now on, until the pool closes (or `signal` aborts). */
  events(
    options: { signal?: AbortSignal } = {},
  ): AsyncIterableIterator<PoolEvent> {
    return this.#events.iterate(options.signal);
  }

  /** Calls `listener` with every pool event; returns the function that removes it. */
  on(listener: (ev: PoolEvent) => void): () => void {
    return this.#events.on(listener);
  }

  /**
   * Stops admitting calls (`ShuttingDownError`), fails queued calls at once,
   * lets in-flight calls finish up to `shutdownGrace` (not the calls given up
   * on, timed out or cancelled, that a server still runs), stops the servers
   * and kills whatever remains. Idempotent.
   */
  close(): Promise<void> {
    return this.#closed ??= this.#close();
  }

  /** Same as {@linkcode Pool.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    this.#closing = true;
    for (const off of this.#offSignals.splice(0)) off();
    this.#router.drain((call) =>
      new ShuttingDownError(
        `Cannot send call ${callName(call)}: pool is closing`,
      )
    );
    for (const batcher of this.#batchers.values()) {
      batcher.close(
        new ShuttingDownError(
          `Cannot send call ${BATCHED_CMD}: pool is closing`,
        ),
      );
    }
    // Calls still held by an asynchronous onCall end as the queued ones.
    this.#callHooks?.close();
    for (const wake of [...this.#modelWaits]) wake();
    for (const wake of [...this.#roomWaits]) wake();
    // A model operation in flight gets the grace too (calls get it from the
    // workers' drain; model commands bypass the router, so they are awaited
    // here); the ones queued behind it fail at once (#modelTargets).
    const grace = this.#opts.shutdownGrace;
    const t0 = Date.now();
    if (this.#modelOps.size > 0) {
      await withTimeout(
        Promise.allSettled([...this.#modelOps]),
        grace,
      );
    }
    // onPoolClosed comes after every call's onSettle, an async one's too.
    const hooks = this.#callHooks;
    await this.#supervisor.stop(
      Math.max(0, grace - (Date.now() - t0)),
      hooks === undefined ? undefined : () => hooks.settled(),
    );
    // Streams that ended with items unread: nothing to cancel any more.
    this.#idleWatch.clear();
    this.#events.close();
    for (const dir of this.#tempDirs) {
      await this.#opts.runtime.remove(dir, { recursive: true }).catch(() => {});
    }
  }

  #admit(action: string): void {
    if (this.#closing) {
      throw new ShuttingDownError(`Cannot ${action}: pool is closing`);
    }
  }

  // -- model operations -----------------------------------------------------

  #checkModelOptions(
    action: string,
    name: string,
    options: ModelCallOptions,
  ): void {
    const invalid = typeof options === "object" && options !== null
      ? callOptionsError(`Cannot ${action}`, {
        timeout: options.timeout,
        signal: options.signal,
      }, `'${name}'`)
      : new ConfigError(
        `Cannot ${action} '${name}': options must be an object`,
      );
    if (invalid !== undefined) throw invalid;
  }

  /** A spec's `timeout`, when given, must be one a model can have. */
  #checkModelTimeout(action: string, name: string, spec: ModelSpec): void {
    const timeout = (spec as { timeout?: unknown } | null)?.timeout;
    if (timeout === undefined || isModelTimeout(timeout)) return;
    throw new ConfigError(
      `Cannot ${action} '${name}': timeout: expected ${MODEL_TIMEOUT_SHAPE}, or Infinity for none, got ${
        typeof timeout === "string" ? JSON.stringify(timeout) : String(timeout)
      }`,
      { details: { field: "timeout" } },
    );
  }

  /** A spec's `workers`, when given, must be a slot count (docs/models.md, "Placement"). */
  #checkModelWorkers(action: string, name: string, spec: ModelSpec): void {
    const workers = (spec as { workers?: unknown } | null)?.workers;
    if (
      workers === undefined ||
      (typeof workers === "number" && Number.isInteger(workers) &&
        workers >= 1 && workers <= 1024)
    ) return;
    throw new ConfigError(
      `Cannot ${action} '${name}': workers: expected an integer from 1 to 1024 (how many workers load the model; absent: every worker), got ${
        typeof workers === "string" ? JSON.stringify(workers) : String(workers)
      }`,
      { details: { field: "workers" } },
    );
  }

  /** Records the call timeout of model `name` after a load (none: forgets it). */
  #timeoutOf(name: string, spec: ModelSpec, description: unknown): void {
    // New code: it gets to prove itself fast again.
    this.#threadedOnly.delete(name);
    const timeout = modelTimeoutOf(spec, description);
    if (timeout === undefined) this.#modelTimeouts.delete(name);
    else this.#modelTimeouts.set(name, timeout);
    const close = closeTimeoutOf(description);
    if (close === undefined) this.#closeTimeouts.delete(name);
    else this.#closeTimeouts.set(name, close);
  }

  /**
   * A pool started without `modelsDir` serves from an empty private temp
   * directory, so a `file` (or data file) there cannot exist: say so, rather
   * than let Python fail to open a path the user never chose.
   */
  #checkModelsDir(
    action: string,
    name: string,
    spec: { file?: unknown; source?: unknown; dataFile?: unknown },
  ): void {
    if (
      this.#opts.modelsDir !== undefined || typeof spec !== "object" ||
      spec === null
    ) return;
    let field: "file" | "dataFile";
    if (typeof spec.dataFile === "string") field = "dataFile";
    else if (typeof spec.file === "string" && spec.source === undefined) {
      field = "file";
    } else return;
    const path = spec[field];
    throw new ConfigError(
      `Cannot ${action} '${name}': ${field} '${String(path)}' is relative to ` +
        "the pool's modelsDir, and this pool was started without one (its " +
        "models directory is an empty temporary one); pass modelsDir to " +
        "Pool.start" + (field === "file" ? ", or give the code as source" : ""),
      { details: { field, [field]: path } },
    );
  }

  /**
   * The workers a model operation applies to, read when its turn comes (it
   * may have waited behind others): none once the pool is closing, and at
   * least one ready worker for an operation that must be checked by one
   * (otherwise nothing would validate it, and a bad model would only fail
   * the restarted workers' replays).
   */
  #modelTargets(action: string, name: string, needOne: boolean): Worker[] {
    if (this.#closing) {
      throw new ShuttingDownError(
        `Cannot ${action} '${name}': pool is closing`,
      );
    }
    const workers = this.#supervisor.workers;
    if (needOne && !workers.some(modelReady)) {
      throw new NoWorkerError(
        `Cannot ${action} '${name}': no worker is ready to load it (${
          workers.map((w) =>
            `${w.id} ${w.state}${
              w.state === "ready" && !modelReady(w)
                ? " but its connection closed"
                : ""
            }`
          ).join(", ")
        })`,
        { details: { workers: workers.map((w) => w.info()) } },
      );
    }
    return workers;
  }

  /**
   * Waits until some worker is ready, as calls wait in the queue while
   * workers restart: returns at once when one is, and throws `NoWorkerError`
   * when none is and none is coming back (or `ShuttingDownError`).
   */
  async #someWorkerReady(
    action: string,
    name: string,
    options: ModelCallOptions,
  ): Promise<void> {
    const workers = () => this.#supervisor.workers;
    // A "ready" worker whose connection closed is about to be seen exiting
    // (and restarted): its process just died (a model's close() that called
    // os._exit, a crash).
    const coming = (w: Worker) =>
      w.state === "starting" || w.state === "restarting" ||
      this.#supervisor.settling(w) ||
      (w.state === "ready" && !modelReady(w));
    const { signal } = options;
    const timeout = options.timeout ?? this.#opts.requestTimeout;
    const deadline = timeout === undefined ? Infinity : Date.now() + timeout;
    while (!this.#closing && !workers().some(modelReady)) {
      if (!workers().some(coming)) return; // #modelTargets says why
      if (signal?.aborted) {
        throw new CancelledError(`Cannot ${action} '${name}': aborted`, {
          cause: signal.reason,
        });
      }
      if (Date.now() >= deadline) {
        throw new TimeoutError(
          `Cannot ${action} '${name}': no worker became ready within ${timeout} ms`,
        );
      }
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.#modelWaits.delete(wake);
          if (timer !== undefined) clearTimeout(timer);
          signal?.removeEventListener("abort", wake);
          resolve();
        };
        const timer = setTimeoutOrNever(wake, deadline - Date.now());
        signal?.addEventListener("abort", wake, { once: true });
        this.#modelWaits.add(wake);
      });
    }
    if (this.#closing) {
      throw new ShuttingDownError(
        `Cannot ${action} '${name}': pool is closing`,
      );
    }
  }

  /**
   * Runs a load (`addModel`, `updateModel`) and, when a worker died under it
   * of something else, runs it once more; the second outcome stands. Its
   * `WorkerCrashedError` tells: `details.notThisLoad` (calls were running
   * there, a SIGKILL from outside), or `details.blamed`, the models whose
   * loads there just before the death was laid on (`loadCrashWindow`).
   * Either way the workers that died are waited for first (back, or not
   * coming back), so that the load goes to them again: a load whose own
   * import kills a worker fails there again rather than succeed on the
   * others and crash the restarted one on replay. A death laid on other
   * models is retried only if one of them was taken out of service
   * meanwhile (its held replay killed the worker again); if they outlived
   * their holds, the death was most likely this load's, and its error
   * stands.
   */
  async #onceMore<T>(
    action: string,
    name: string,
    options: ModelCallOptions,
    run: () => Promise<T>,
  ): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (!(err instanceof WorkerCrashedError) || this.#closing) throw err;
      const { notThisLoad, blamed, workers } = err.details;
      const others = Array.isArray(blamed) ? blamed as string[] : [];
      if (typeof notThisLoad !== "string" && others.length === 0) throw err;
      const died = Array.isArray(workers) ? workers as string[] : [];
      await this.#backAgain(died, options);
      if (
        typeof notThisLoad !== "string" &&
        !others.some((n) => this.#registry.outOfService(n))
      ) throw err;
      this.#opts.logger.warn(
        "Loading model {name} once more ({action}): {message}",
        { action, name, message: err.message },
      );
      await this.#someWorkerReady(action, name, options);
      return await run();
    }
  }

  /**
   * Waits until each worker of `ids` is ready again (a new process), or
   * not coming back, within the command's timeout (else the pool's
   * `loadTimeout`); returns either way.
   */
  async #backAgain(ids: string[], options: ModelCallOptions): Promise<void> {
    const timeout = options.timeout ?? this.#opts.loadTimeout;
    const deadline = Date.now() + timeout;
    const pending = () =>
      this.#supervisor.workers.filter((w) =>
        ids.includes(w.id) && !modelReady(w) &&
        (w.state === "starting" || w.state === "restarting" ||
          w.state === "ready" || this.#supervisor.settling(w))
      );
    while (!this.#closing && pending().length > 0) {
      if (options.signal?.aborted || Date.now() >= deadline) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.#modelWaits.delete(wake);
          if (timer !== undefined) clearTimeout(timer);
          resolve();
        };
        const timer = setTimeoutOrNever(wake, deadline - Date.now());
        this.#modelWaits.add(wake);
      });
    }
  }

  /**
   * Runs a model operation, counted until it settles so `close()` lets it
   * finish (up to `shutdownGrace`); one that the closing pool cut short
   * fails with `ShuttingDownError`.
   */
  async #modelOp<T>(
    action: string,
    name: string,
    run: Promise<T>,
  ): Promise<T> {
    this.#modelOps.add(run);
    try {
      return await run;
    } catch (err) {
      if (this.#closing && err instanceof ConnectionLostError) {
        throw new ShuttingDownError(
          `Cannot ${action} '${name}': the pool closed before it finished`,
          { cause: err },
        );
      }
      throw err;
    } finally {
      this.#modelOps.delete(run);
    }
  }

  // -- calls ----------------------------------------------------------------

  #send(call: PoolCall, worker: Worker): void {
    const session = worker.session!;
    // A model marked threaded after the call was made (it waited in the
    // queue, or is retried after its worker died: the hung call itself):
    // the mark goes with it (no lookup while no model is marked).
    if (this.#threadedOnly.size > 0) this.#threadedIfMarked(call);
    const gen = worker.generation;
    const { signal, onEvent, onResponseMeta } = call.options;
    const { onSlot } = call;
    const remaining = call.deadline === Infinity
      ? undefined
      : Math.max(1, call.deadline - Date.now());
    // The common call has no timeout, signal or listener: no options object then.
    let options: RequestOptions | undefined;
    // Given up on (its promise rejected before the server was done with
    // it): still holding its slot, but no longer waited for by a stop.
    let over = false;
    let abandoned = false;
    // What it counts as in the worker's `abandoned` once given up on: its
    // model (a version's `name@label`), else its command.
    const name = call.args?.name;
    const what = call.cmd !== "eval" && typeof name === "string"
      ? name
      : callName(call);
    if (
      remaining !== undefined || signal !== undefined ||
      onEvent !== undefined || onSlot !== undefined ||
      onResponseMeta !== undefined
    ) {
      // The worker stays counted busy with a call given up on (timeout,
      // abort) until the server answers its cancel: new calls then wait in
      // the pool's bounded queue instead of piling onto a worker still busy
      // with abandoned work (large requests timing out in bursts got workers
      // killed by the hang probe, then marked failed).
      //
      // A stream's slot is a lease: parked while its reader is a window
      // behind, released (from whichever count holds it) at the same point.
      const lease = onSlot === undefined ? undefined : new SlotLease(
        worker,
        () => this.#pumpQueue(),
        this.#opts.maxParkedPerWorker,
      );
      if (lease === undefined) worker.acquire();
      const done = lease === undefined
        ? () => {
          over = true;
          this.#released(worker, abandoned, what);
        }
        : () => {
          over = true;
          lease.end(abandoned, what);
        };
      const placement = call.placement;
      options = {
        // A placed model's call the server was still on when its session
        // closed (given up on here: timed out, aborted) implicates the
        // model in the process's death (ModelRegistry.relocate); one it
        // finished first does not.
        onDone: placement === undefined ? done : () => {
          if (session.isClosed) {
            this.#registry.implicate(worker, gen, placement.name);
          }
          done();
        },
      };
      if (remaining !== undefined) options.timeout = remaining;
      if (signal !== undefined) options.signal = signal;
      if (onEvent !== undefined) options.onEvent = onEvent;
      if (onResponseMeta !== undefined) {
        options.onResponseMeta = onResponseMeta;
      }
      if (lease !== undefined) onSlot!(lease);
    } else {
      worker.acquire();
    }
    const releaseOnSettle = options === undefined;
    const onSend = call.options.onSend;
    if (onSend !== undefined) {
      // The caller's callback: a throw (as an onEvent's) is logged, not
      // let out of the send, which it cut between the slot's acquire and
      // the request: the slot stayed taken for good and the call never
      // settled (with maxInFlightPerWorker 1, the pool then queued every
      // call for ever; chaos42).
      try {
        onSend(worker.id);
      } catch (error) {
        this.#opts.logger.warn(
          "The onSend callback of call {call} threw: {error}",
          { call: callName(call), error },
        );
      }
    }
    session.request(call.cmd, call.args, options).then(
      (value) => {
        if (releaseOnSettle) this.#released(worker);
        call.resolve(value);
      },
      (error) => {
        if (releaseOnSettle) this.#released(worker);
        else if (!over) {
          abandoned = true;
          worker.abandon(what);
        }
        this.#onCallError(call, worker, gen, error, remaining);
        if (this.#router.queued > 0) this.#router.pump(false);
      },
    );
  }

  /**
   * A call of `worker` is done on the server: room for a queued call
   * (`abandoned`: one counted by `worker.abandon()`).
   */
  #released(worker: Worker, abandoned = false, what?: string): void {
    worker.release(false, abandoned, what);
    this.#pumpQueue();
  }

  /** A slot freed up: queued calls that can go now are sent. */
  #pumpQueue(): void {
    if (this.#router.queued > 0) this.#router.pump(false);
    // An executeEach row that found the queue full goes again: a slot or a
    // place in the queue freed up (with maxQueue 0 the queue is always
    // "full": a free slot is the room). One per call that left, the one
    // that waited longest: waking every row made each release cost as
    // many OverloadedErrors as rows waited.
    if (this.#roomWaits.size > 0) this.#roomWaits.values().next().value!();
  }

  /**
   * Sends again, to its model's default now, a call that reached a version
   * removed after the call had been resolved to it (it waited in the queue
   * meanwhile): a call that names no version runs on the default, whichever
   * it is when the call is sent. One that asked for a version, a batch (its
   * calls were sent before the removal) and a call of a version still there
   * are not. Returns whether it was sent again.
   */
  #followDefault(call: PoolCall): boolean {
    if (
      (call.cmd !== "executeModel" && call.cmd !== "executeStream") ||
      call.options.version !== undefined || call.args === undefined
    ) return false;
    const key = call.args.name;
    if (typeof key !== "string") return false;
    const at = key.lastIndexOf("@");
    if (at < 0 || this.#versionOf(key) !== undefined) return false;
    const now = this.#defaults.get(key.slice(0, at));
    if (now === undefined || now === key) return false;
    call.args = { ...call.args, name: now };
    call.placement = this.#placements.get(now);
    this.#router.route(call, true);
    return true;
  }

  #onCallError(
    call: PoolCall,
    worker: Worker,
    gen: number,
    error: unknown,
    timeoutMs: number | undefined,
  ): void {
    // A placed model's call that a worker died under implicates the model
    // if the slot then fails for good: it is moved off it a bounded number
    // of times (ModelRegistry.relocate). One that timed out implicates it
    // only if it still runs there when the process dies (its onDone, in
    // #send): a hang the pool kills, not a slow call the cancel ended.
    if (call.placement !== undefined && error instanceof ConnectionLostError) {
      this.#registry.implicate(worker, gen, call.placement.name);
    }
    // A worker out of memory: said in the log (its calls' errors say it to
    // their callers only).
    if (error instanceof PythonError && error.type === "MemoryError") {
      const name = call.args?.name;
      this.#memoryErrors.raised(
        typeof name === "string" ? name : callName(call),
        worker.id,
        worker.pid,
      );
    }
    if (error instanceof TimeoutError) {
      // Given up on while it held the loop itself (an inline call, where
      // not even its cancel can be read): marked now, not at the hang
      // probe's kill (hangGrace later), when a poison sent meanwhile had gone
      // inline to another worker and hung that one too. Not a call of the
      // model that waited behind another, which may be slow and complete.
      if (call.cmd === "executeModel" && worker.generation === gen) {
        const held = heldLoopOf(error);
        if (held !== undefined && held === call.args?.name) {
          this.#heldLoop(
            worker.id,
            held,
            `a call of it on worker ${worker.id} timed out after ${
              timeoutMs ?? 0
            } ms while it held the worker's event loop, where its cancel cannot be read (the inline fast path, docs/models.md)`,
          );
        }
      }
      // A model's batch (`what`: sent by its batcher, not a caller's own
      // executeBatch): the batcher tells each of its calls that timed out
      // (their own timeouts, not the batch's).
      if (call.what === undefined) {
        this.#plugins.run("onTimeout", {
          worker,
          cmd: call.cmd,
          // The caller's whole timeout, as a batched call's is (what was
          // sent is what was left of it after the queue: 49 for 50).
          timeoutMs: call.timeoutMs ?? timeoutMs ?? 0,
          ...timedOutCall(call),
        }, this.#supervisor.context);
      }
      return call.reject(callTimedOut(call, error, "worker"));
    }
    if (!(error instanceof ConnectionLostError)) {
      // Only on this error path: no lookup for the calls that succeed.
      if ((error as Error | null)?.name === "ModelNotFoundError") {
        if (this.#defaults.size > 0 && this.#followDefault(call)) return;
        // Queued before its model was taken out of service (the crash
        // quarantine unloads it): the error its other calls get.
        const p = this.#placements.get(String(call.args?.name));
        if (p?.failed !== undefined) {
          return call.reject(outOfService(p, callName(call)));
        }
      }
      return call.reject(error);
    }
    // The connection ended under the call: wait for the exit so the error
    // can say how the worker died (in the host's running time: a host that
    // stalled past the wait still reads an exit that came meanwhile).
    const removed = this.#supervisor.removed(worker);
    withinRunningTime(worker.exitOf(gen), 2000).then((exit) => {
      // A process that ended by itself while its slot drained (its model
      // crashed it) is a crash, whatever stopped the slot; a call the stop
      // cut off (its grace ran out) is the stop's.
      const crashed = exit !== undefined && !worker.cutByStop(gen);
      if (this.#closing) {
        // Nothing is sent again once the pool closes.
        return call.reject(
          crashed
            ? crashError(
              call,
              worker.id,
              exit,
              error,
              (key) => this.#versionOf(key),
            )
            : new ShuttingDownError(
              `Cannot complete call ${callName(call)}: pool closed`,
              // It ran, and may have done part of its work: a client must
              // not take it for a call refused unrun (the gateway sends no
              // Retry-After for it).
              { cause: error, details: { started: true } },
            ),
        );
      }
      if (
        call.options.idempotent && call.retries < this.#opts.maxRetries &&
        call.deadline > Date.now()
      ) {
        call.retries++;
        // A part of a batch taken apart counts nowhere, retried or not.
        return this.#router.route(call, true, call.again !== true);
      }
      if (removed && !crashed) {
        // Not a crash: its slot was removed and the call outlasted the grace
        // (a process that ended by itself meanwhile crashed: its error).
        return call.reject(
          new ShuttingDownError(
            `Cannot complete call ${
              callName(call)
            }: worker ${worker.id} was removed by a resize before the call finished (shutdownGrace ${this.#opts.shutdownGrace} ms)`,
            { cause: error, details: { started: true } },
          ),
        );
      }
      call.reject(
        crashError(call, worker.id, exit, error, (key) => this.#versionOf(key)),
      );
    });
  }
}

/** The call hooks' view of a model call (`pool.execute`, `pool.executeStream`). */
function modelCall(
  kind: ModelCall["kind"],
  model: string,
  resolved: string,
  msg: unknown,
  options: {
    version?: string;
    requestId?: string;
    key?: string;
    headers?: Record<string, string>;
    caller?: string;
  },
): ModelCall {
  const call: {
    -readonly [K in keyof ModelCall]: ModelCall[K];
  } = { kind, model, resolved, msg };
  if (options.version !== undefined) call.version = options.version;
  if (options.requestId !== undefined) call.requestId = options.requestId;
  if (options.key !== undefined) call.key = options.key;
  if (options.headers !== undefined) call.headers = options.headers;
  if (options.caller !== undefined) call.caller = options.caller;
  return call;
}

/** An `onCall` of an `execute` answered `{ items }`, a stream's answer. */
function wrongAnswer(plugin: string): PluginError {
  return new PluginError(
    `Cannot run hook onCall of plugin '${plugin}': it answered an execute with { items }, a stream's answer (expected { result })`,
    { details: { plugin, hook: "onCall" } },
  );
}

function crashError(
  call: PoolCall,
  id: string,
  exit: WorkerExit | undefined,
  cause: ConnectionLostError,
  versionOf: (key: string) => { model: string; version: string } | undefined,
): WorkerCrashedError {
  const how = exit === undefined ? "connection lost" : exit.reason;
  const pid = exit?.pid ?? null;
  // What the process was running when it died (the session counted its
  // pending requests once, as it closed): the crasher's call among them.
  const inFlight = cause.details.inFlight as InFlight | undefined;
  const name = inFlightName(call.cmd, call.args);
  // A version's internal name (`name@label`) told apart from a model whose
  // name holds an `@`, for whoever words it otherwise (the gateway).
  const own = name === call.cmd ? undefined : versionOf(name);
  const versions: Record<string, { model: string; version: string }> = {};
  for (const key of Object.keys(inFlight?.byName ?? {})) {
    const v = versionOf(key);
    if (v !== undefined) versions[key] = v;
  }
  // A model's call says what its caller did (`run model 'm'`), not the
  // command the workers know it by (`executeModel`).
  const what = name === call.cmd
    ? `complete call ${call.cmd}`
    : `${call.cmd === "executeStream" ? "stream" : "run"} model '${name}'`;
  return new WorkerCrashedError(
    `Cannot ${what}: worker ${id}${
      pid === null ? "" : ` (pid ${pid})`
    } died: ${how}${
      inFlight === undefined
        ? ""
        : ` while running: ${describeInFlight(inFlight)}`
    }`,
    {
      cause,
      details: {
        worker: id,
        pid,
        code: exit?.code ?? null,
        signal: exit?.signal ?? null,
        reason: how,
        cmd: callName(call),
        call: name,
        ...(own === undefined ? {} : own),
        inFlight: inFlight?.byName ?? {},
        inFlightCalls: inFlight?.calls ?? 0,
        ...(Object.keys(versions).length === 0
          ? {}
          : { inFlightVersions: versions }),
      },
    },
  );
}

/**
 * What a model's batch (`executeBatch`) is called in its calls' errors: the
 * command of `pool.execute`, which its callers called.
 */
const BATCHED_CMD = "executeModel";

/** The commands that call a model: a placed model's go to its slots. */
const MODEL_CALLS: ReadonlySet<string> = new Set([
  "executeModel",
  "executeBatch",
  "executeStream",
]);

/** Whether a `plugins` option keeps the defaults (the array form does). */
function composedWithDefaults(option: PoolOptions["plugins"]): boolean {
  return option === undefined || Array.isArray(option) ||
    option.defaults !== false;
}

/**
 * What `onTimeout` tells of a call beyond its command: the model of a model
 * call and the call's request id (only on a timeout: no cost per call).
 */
function timedOutCall(
  call: PoolCall,
): { model?: string; requestId?: string } {
  const args = call.args;
  if (args === undefined) return {};
  const { name, requestId } = args;
  const model = call.cmd === "executeModel" || call.cmd === "executeStream"
    ? name
    : undefined;
  return {
    ...(typeof model === "string" ? { model } : {}),
    ...(typeof requestId === "string" ? { requestId } : {}),
  };
}

/** A worker a model operation can be applied on now. */
function modelReady(w: Worker): boolean {
  return w.state === "ready" && w.session !== undefined &&
    !w.session.isClosed;
}

/** The `batch` of a model's description, when it declares batching. */
function batchSettings(description: unknown): BatchSettings | undefined {
  const batch = (description as { batch?: unknown } | undefined)?.batch;
  if (typeof batch !== "object" || batch === null) return undefined;
  const { size, delayMs } = batch as Record<string, unknown>;
  if (
    typeof size !== "number" || !Number.isInteger(size) || size < 1 ||
    typeof delayMs !== "number" || !(delayMs >= 0)
  ) return undefined;
  return { size, delayMs };
}

/**
 * The refusal of an add or update without a version of a model that has
 * versions: which one is meant cannot be guessed.
 */
function hasVersions(
  action: string,
  name: string,
  set: ModelVersions,
): Error {
  return errorFromWire({
    type: "InvalidRequestError",
    message:
      `Cannot ${action} model '${name}' without a version: it has versions (${
        set.versions.join(", ")
      }; default ${set.default}); give spec.version`,
    // What the gateway words its own answer from (it names routes, not spec fields).
    details: {
      reason: "hasVersions",
      action,
      model: name,
      versions: [...set.versions],
      default: set.default,
    },
  });
}

/** A `ModelNotFoundError` for a version a model does not have, naming the ones it has. */
function noSuchVersion(
  action: string,
  name: string,
  label: unknown,
  set: ModelVersions | undefined,
): Error {
  const has = set === undefined
    ? "it has no versions (it is not in the pool, or was added without one)"
    : `its versions are ${set.versions.join(", ")} (default ${set.default})`;
  return errorFromWire({
    type: "ModelNotFoundError",
    message: `Cannot ${action} model ${quoteLabel(name)} version ${
      quoteLabel(label)
    }: ${has}`,
    details: {
      model: name,
      version: String(label),
      versions: set === undefined ? [] : [...set.versions],
    },
  });
}

/** `last` (a remove's answer) with `earlier`'s `closeWarning` when it has none. */
function withWarning(last: unknown, earlier: unknown): unknown {
  const warning = (earlier as { closeWarning?: unknown } | null)?.closeWarning;
  if (typeof warning !== "string") return last;
  // The last version went while no worker was ready (nothing answered).
  if (last === null) return earlier;
  if (typeof last !== "object" || "closeWarning" in last) return last;
  return { ...last, closeWarning: warning };
}

/** Whether `dir` is `<modelsDir>/logs` (as written: `.` and `/` aside). */
function isModelsLogs(dir: string, modelsDir: string | undefined): boolean {
  if (modelsDir === undefined) return false;
  const plain = (p: string) =>
    p.replace(/\\/g, "/").split("/").filter((seg, i) =>
      seg !== "." && !(seg === "" && i > 0)
    ).join("/");
  return plain(dir) === `${plain(modelsDir)}/logs`;
}

/**
 * Makes `dir` (0700 when made) and checks that a file can be made in it:
 * a log directory that is a file or not writable failed no start, and the
 * workers logged to their stderr, unsaid.
 */
async function checkLogDir(runtime: Runtime, dir: string): Promise<void> {
  try {
    await runtime.mkdir(dir, 0o700);
    const stat = await runtime.stat(dir);
    if (stat === null || !stat.isDirectory) throw new Error("not a directory");
    await runtime.remove(
      await runtime.makeTempDir({ dir, prefix: ".pyproxy-log-check-" }),
      { recursive: true },
    );
  } catch (err) {
    throw new ConfigError(
      `Cannot start pool: logDir: cannot write log files in '${dir}' (${
        err instanceof Error ? err.message : String(err)
      }): give a directory the workers can write in, or "-" for no files ` +
        `(their records go into the pool's log: serve --log-dir -)`,
      { cause: err, details: { field: "logDir", dir } },
    );
  }
}
