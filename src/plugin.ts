/**
 * The public plugin API: the {@linkcode Plugin} shape every plugin returns,
 * the {@linkcode PluginContext} it receives, and {@linkcode PluginHost}, which
 * resolves the plugin list of a pool and runs the hooks in registration order.
 *
 * See `docs/plugins.md` for a guide.
 *
 * @module
 */
import type { Logger } from "./logger.ts";
import { ConfigError, type PluginError } from "./errors.ts";
import type { Runtime } from "./runtime/types.ts";
import type { InFlight, Session, SessionConnectOptions } from "./session.ts";
import type { Pool, PoolStatus, ResizeOptions } from "./pool.ts";
import type { WorkerInfo } from "./worker.ts";
import { settleWithin } from "./_settle_within.ts";
import { messageHookError, pluginError } from "./_plugin_error.ts";
import { isThenable } from "./_thenable.ts";
import { parseJson, stringifyJson } from "./_exact_json.ts";

/**
 * A message on the wire (request, reply or event), as a plain object.
 *
 * @example
 * ```ts
 * import type { Plugin, WireMessage } from "@pyproxy/pyproxy";
 * const tagger: Plugin = {
 *   name: "tagger",
 *   onRequest(msg: WireMessage): WireMessage {
 *     return { ...msg, tag: "from-ts" };
 *   },
 * };
 * console.log(tagger.name);
 * ```
 */
export type WireMessage = Record<string, unknown>;

/**
 * What `onRequest` / `onReply` receive besides the message.
 *
 * @example
 * ```ts
 * import type { Plugin } from "@pyproxy/pyproxy";
 * const tracer: Plugin = {
 *   name: "tracer",
 *   onReply(msg, mc) {
 *     mc.plugin.logger.debug("Reply from {worker}", { worker: mc.worker.id, id: msg.id });
 *   },
 * };
 * console.log(tracer.name);
 * ```
 */
export interface MessageContext {
  /** The worker the session belongs to (a live view: fields change over time). */
  worker: WorkerInfo;
  /** The session the message travels on. */
  session: Session;
  /** The plugin context of the pool. */
  plugin: PluginContext;
}

/**
 * Handles a Python → host command (see protocol §7). The return value is the reply.
 *
 * @example
 * ```ts
 * import type { HostHandler, Plugin } from "@pyproxy/pyproxy";
 * // Python calls it with host.call("time.now", {}).
 * const now: HostHandler = () => ({ now: Date.now() });
 * const clock: Plugin = { name: "clock", handlers: { "time.now": now } };
 * console.log(Object.keys(clock.handlers ?? {})); // ["time.now"]
 * ```
 */
export type HostHandler = (
  args: unknown,
  call: {
    worker: WorkerInfo;
    session: Session;
    signal: AbortSignal;
    /**
     * Who made the model call whose code sent the command
     * (`HandlerCall.callers`: its `caller` as a list of one, a
     * batch's `callers`); absent when unknown.
     */
    callers?: readonly (string | null)[];
    /**
     * `true` when the command names a model call that has ended (code it
     * left running): its caller is unknown, maybe a tenant (`HandlerCall`).
     */
    callEnded?: true;
  },
) => unknown | Promise<unknown>;

/**
 * `onWorkerStart`: the worker is connected; models are not replayed yet and it takes no traffic.
 *
 * @example
 * ```ts
 * import type { Plugin } from "@pyproxy/pyproxy";
 * const warmup: Plugin = {
 *   name: "warmup",
 *   onWorkerStart(ev, ctx) {
 *     ctx.logger.info("Worker {id} started (restart: {restart})", { id: ev.worker.id, restart: ev.restart });
 *   },
 * };
 * console.log(warmup.name);
 * ```
 */
export interface WorkerStartEvent {
  /** The worker. */
  worker: WorkerInfo;
  /** Its new session. */
  session: Session;
  /** `true` when this is a restart of the slot, `false` for its first start. */
  restart: boolean;
}

/**
 * `onWorkerExit`: the worker's process ended (or never got ready).
 *
 * @example
 * ```ts
 * import type { Plugin } from "@pyproxy/pyproxy";
 * const alert: Plugin = {
 *   name: "alert",
 *   onWorkerExit(ev, ctx) {
 *     // ev.inFlight?.byName: { bad: 1, plain: 3 }, the calls it was running
 *     if (!ev.intentional) ctx.logger.warn("Worker {id} died: {reason} ({running})", { id: ev.worker.id, reason: ev.reason, running: ev.inFlight?.byName });
 *   },
 * };
 * console.log(alert.name);
 * ```
 */
export interface WorkerExitEvent {
  /** The worker (its `state` is already `stopped`, `failed`, ...). */
  worker: WorkerInfo;
  /**
   * The process id of the Python server that exited (also one that ended
   * before its ready line), or `null` when none was spawned (a start that
   * failed before the spawn).
   */
  pid: number | null;
  /** Exit code, or `null` when killed by a signal or unknown. */
  code: number | null;
  /** The signal that ended it, or `null`. */
  signal: string | null;
  /** Human-readable reason, e.g. `"killed by SIGKILL"`, `"missed heartbeat"`, `"start failed: ..."`. */
  reason: string;
  /**
   * The calls it was running when it died, by model (evals as `eval`; the
   * host's own commands, a heartbeat's `ping`, left out), as in
   * `worker.lastExit` and its lost calls' `WorkerCrashedError`: absent when
   * none were.
   */
  inFlight?: InFlight;
  /**
   * The model whose call held the server's event loop when the pool killed
   * it for answering nothing (a hung inline call; `worker.lastExit.heldLoop`,
   * {@linkcode KillWorkerOptions.hung}): the pool runs that model's calls
   * threaded (event `model-threaded`). Absent otherwise, also when it died
   * of another cause while such a call ran.
   */
  heldLoop?: string;
  /**
   * `true` when the pool stopped it on purpose (close, `failWorker`, or
   * `restartWorker` of a running worker, which the pool then restarts
   * itself): not a crash, and a policy should not restart it.
   */
  intentional: boolean;
}

/**
 * `onTimeout`: a call on a worker exceeded its timeout (the Session already sent `cancel`).
 *
 * @example
 * ```ts
 * import type { Plugin } from "@pyproxy/pyproxy";
 * const timeouts: Plugin = {
 *   name: "timeouts",
 *   onTimeout(ev, ctx) {
 *     ctx.logger.warn("{cmd} exceeded {ms} ms", { cmd: ev.cmd, ms: ev.timeoutMs });
 *   },
 * };
 * console.log(timeouts.name);
 * ```
 */
export interface TimeoutEvent {
  /** The worker that ran the call. */
  worker: WorkerInfo;
  /**
   * The command that timed out, as the caller called it (e.g.
   * `"executeModel"`, also for a call of a model that batches, once per
   * call: docs/plugins.md).
   */
  cmd: string;
  /** The timeout that was exceeded, in milliseconds (a batched call's own). */
  timeoutMs: number;
  /**
   * The model of a model call (`executeModel`, `executeStream`), as the
   * workers know it (`scorer@2` for a version); absent for other commands.
   */
  model?: string;
  /**
   * The call's request id (`RequestOptions.requestId`, the gateway's
   * `X-Request-Id`), when it has one: what ties this event to the call's
   * message (`requestId`, a batch's `requestIds`), whose reply comes later
   * as a `CancelledError`, as a caller's cancel's does.
   */
  requestId?: string;
}

/**
 * A model call as the call hooks see it ({@linkcode Plugin.onCall},
 * {@linkcode Plugin.onSettle}): one per `pool.execute` or
 * `pool.executeStream` (batched or not, however often it is sent), made
 * when the caller makes the call. The same object reaches `onCall` and
 * `onSettle`: a plugin may key per-call state by it (a `WeakMap`).
 *
 * @example
 * ```ts
 * import type { ModelCall, Plugin } from "@pyproxy/pyproxy";
 * const perModel = new Map<string, number>();
 * const counter: Plugin = {
 *   name: "counter",
 *   onCall(call: ModelCall) {
 *     // "scorer@2" for a version: each version counted apart.
 *     perModel.set(call.resolved, (perModel.get(call.resolved) ?? 0) + 1);
 *   },
 * };
 * console.log(counter.name);
 * ```
 */
export interface ModelCall {
  /** `"execute"` (`pool.execute`) or `"stream"` (`pool.executeStream`). */
  readonly kind: "execute" | "stream";
  /** The model as the caller named it (`"scorer"`). */
  readonly model: string;
  /** The version the caller asked for (`ExecuteOptions.version`), if any. */
  readonly version?: string;
  /**
   * The model as the workers know it when the call is made: `"scorer@2"`
   * for a version (the default's, for a call that asks none), else the
   * model's name (`pool.resolveModel`).
   */
  readonly resolved: string;
  /** The message, as the caller gave it (do not change it). */
  readonly msg: unknown;
  /** The call's request id (`ExecuteOptions.requestId`, the gateway's `X-Request-Id`). */
  readonly requestId?: string;
  /** The call's routing key (`ExecuteOptions.key`). */
  readonly key?: string;
  /** The call's request headers (`ExecuteOptions.headers`: the gateway's `forwardHeaders`). */
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * Who made the call (`ExecuteOptions.caller`): for a call of the gateway,
   * the id of the bearer token its request was let in with (`tokenId`: the
   * first 16 hex digits of the token's SHA-256), so a quota or an audit per
   * client keys on what the client proved, not on a header it chose.
   * Absent when the gateway has no token, and for a library call that
   * gives none.
   */
  readonly caller?: string;
}

/**
 * What {@linkcode Plugin.onCall} may return to answer a call in its
 * worker's place: `{ result }` (the call resolves with it; a stream gives
 * it as its one item, as a model that is no generator does) or, for a
 * stream only, `{ items }` (the stream gives them, in order).
 *
 * @example
 * ```ts
 * import type { CallAnswer, Plugin } from "@pyproxy/pyproxy";
 * const cache = new Map<string, unknown>();
 * const cached: Plugin = {
 *   name: "cached",
 *   onCall(call): CallAnswer | void {
 *     if (call.kind !== "execute") return;
 *     const key = `${call.resolved} ${JSON.stringify(call.msg)}`;
 *     if (cache.has(key)) return { result: cache.get(key) };
 *   },
 * };
 * console.log(cached.name);
 * ```
 */
export type CallAnswer = { result: unknown } | { items: readonly unknown[] };

/**
 * How a call ended ({@linkcode Plugin.onSettle}): `ok` with its result, or
 * not with its error, and where and how long it went.
 *
 * @example
 * ```ts
 * import type { CallOutcome } from "@pyproxy/pyproxy";
 * const line = (o: CallOutcome): string =>
 *   o.ok
 *     ? `ok on ${o.worker ?? o.answeredBy} in ${o.durationMs} ms`
 *     : `${(o.error as { code?: string }).code} after ${o.attempts} attempts`;
 * console.log(line({ ok: true, worker: "w1", durationMs: 3, attempts: 1 })); // "ok on w1 in 3 ms"
 * ```
 */
export type CallOutcome = CallSuccess | CallFailure;

/**
 * What the two kinds of {@linkcode CallOutcome} share.
 *
 * @example
 * ```ts
 * import type { CallOutcomeBase } from "@pyproxy/pyproxy";
 * const base: CallOutcomeBase = { durationMs: 12, attempts: 2, worker: "w2" };
 * console.log(base.attempts); // 2: its first worker died, the retry ran on w2
 * ```
 */
export interface CallOutcomeBase {
  /**
   * The worker it was last sent to (`"w1"`); absent when it was never sent
   * (refused, answered by a plugin, given up on in the queue).
   */
  worker?: string;
  /** Milliseconds from the call (before `onCall`) to its end. */
  durationMs: number;
  /**
   * How many times it was sent to a worker (`onSend`'s count): `0` when it
   * never was, `2` for an idempotent call sent again after its worker died.
   * A call of a model that batches counts each batch it went in (a batch
   * refused unrun and taken apart sends it again: docs/plugins.md).
   */
  attempts: number;
  /** The plugin whose `onCall` answered it (no worker ran it). */
  answeredBy?: string;
}

/**
 * A {@linkcode CallOutcome} that succeeded.
 *
 * @example
 * ```ts
 * import type { CallSuccess } from "@pyproxy/pyproxy";
 * const ok: CallSuccess = { ok: true, result: { y: 2 }, worker: "w1", durationMs: 1, attempts: 1 };
 * console.log(ok.result);
 * ```
 */
export interface CallSuccess extends CallOutcomeBase {
  /** It succeeded. */
  ok: true;
  /**
   * What the caller got (`pool.execute`'s result, by reference: do not
   * change it); absent for a stream.
   */
  result?: unknown;
  /** A stream's item count (`ModelStream.total`); absent for `execute`. */
  items?: number;
}

/**
 * A {@linkcode CallOutcome} that failed.
 *
 * @example
 * ```ts
 * import type { CallFailure } from "@pyproxy/pyproxy";
 * import { OverloadedError } from "@pyproxy/pyproxy";
 * const failed: CallFailure = { ok: false, error: new OverloadedError("queue full"), durationMs: 0, attempts: 0 };
 * console.log((failed.error as OverloadedError).code); // "OVERLOADED"
 * ```
 */
export interface CallFailure extends CallOutcomeBase {
  /** It failed. */
  ok: false;
  /**
   * What the caller got: its `code` says why (`TIMEOUT` with
   * `details.waited` `"queue"`, `"worker"` or `"plugin"` (an asynchronous
   * `onCall` held it), `CANCELLED`,
   * `WORKER_CRASHED`, `SHUTTING_DOWN`, `OVERLOADED` for a full queue, a
   * `PythonError` of the model...), or the error an `onCall` threw.
   */
  error: unknown;
  /** The plugin whose `onCall` threw it (the call was never queued). */
  refusedBy?: string;
}

/**
 * Options of {@linkcode PluginContext.restartWorker}.
 *
 * @example
 * ```ts
 * import type { Plugin } from "@pyproxy/pyproxy";
 * const restartSlowly: Plugin = {
 *   name: "restartSlowly",
 *   onWorkerExit(ev, ctx) {
 *     if (!ev.intentional) ctx.restartWorker(ev.worker.id, { delayMs: 1000, reason: ev.reason });
 *   },
 * };
 * console.log(restartSlowly.name);
 * ```
 */
export interface RestartWorkerOptions {
  /**
   * Wait this long before spawning the new process. Beyond 2^31 − 1
   * (~24.8 days, a timer's range) the slot is never restarted (it stays
   * `restarting` until the pool closes).
   * @default {0}
   */
  delayMs?: number;
  /** Why (shown in logs). */
  reason?: string;
}

/**
 * Options of {@linkcode PluginContext.killWorker}.
 *
 * @example
 * ```ts
 * import type { Plugin } from "@pyproxy/pyproxy";
 * const strict: Plugin = {
 *   name: "strict",
 *   async onTimeout(ev, ctx) {
 *     if (!(await ctx.ping(ev.worker.id, 500))) {
 *       ctx.killWorker(ev.worker.id, "SIGKILL", "no answer after a timeout", { hung: true });
 *     }
 *   },
 * };
 * console.log(strict.name);
 * ```
 */
export interface KillWorkerOptions {
  /**
   * The worker is killed because it answers nothing (a ping left
   * unanswered after a call's timeout, a missed heartbeat): a hang. When a
   * model's inline call holds its event loop then (`Session.loopHeldBy`),
   * the pool runs that model's calls on call threads from now on (event
   * `model-threaded`, marked before the kill: calls sent or retried after
   * it go threaded) and the exit names it (`heldLoop`). Leave it out for a
   * kill for any other cause: a model is marked only for a hang.
   * @default {false}
   */
  hung?: boolean;
}

/**
 * A cheap snapshot of how busy the pool is ({@linkcode PluginContext.load}):
 * a few counters, no per-worker objects, for a policy that samples often.
 *
 * @example
 * ```ts
 * import type { PoolLoad } from "@pyproxy/pyproxy";
 * const perWorker = (load: PoolLoad): number => load.inFlight / Math.max(1, load.ready);
 * console.log(perWorker({ workers: 2, ready: 2, inFlight: 6, parked: 0, queue: 0, resizing: false, starting: false })); // 3
 * ```
 */
export interface PoolLoad {
  /** Worker slots, in any state (as `status().workers.length`). */
  workers: number;
  /** Slots in state `ready` (taking calls). */
  ready: number;
  /**
   * Calls sent and not yet settled, over all workers, that hold a
   * `maxInFlightPerWorker` slot (as `status().inFlight`: a stream parked
   * behind its slow reader costs its worker nothing and is not counted).
   */
  inFlight: number;
  /**
   * Streams sent and not yet settled that are parked behind their slow
   * readers (as `status().parked`): no load, but a worker removed while it
   * holds them cuts them short once its drain grace is over.
   */
  parked: number;
  /** Calls waiting in the pool queue. */
  queue: number;
  /** `true` while a resize runs or waits for its turn (its own or anyone's). */
  resizing: boolean;
  /** `true` until `Pool.start` has finished starting the first workers. */
  starting: boolean;
}

/**
 * Options of {@linkcode PluginContext.resize}: those of `pool.resize`, and
 * who asks and why, which the `resize` pool event carries.
 *
 * @example
 * ```ts
 * import type { PluginResizeOptions } from "@pyproxy/pyproxy";
 * const options: PluginResizeOptions = { by: "autoscale", reason: "12 calls queued for 2000 ms" };
 * console.log(options.by); // "autoscale"
 * // await ctx.resize(3, options);
 * ```
 */
export interface PluginResizeOptions extends ResizeOptions {
  /** The name of the plugin that resizes (the event's `by`): a non-empty string. */
  by: string;
  /** Why, for logs and the event's `reason`. */
  reason?: string;
}

/**
 * One sample a plugin reports for the gateway's `GET /metrics`
 * ({@linkcode Plugin.metrics}), rendered in the Prometheus text format next
 * to the gateway's own `pyproxy_*` series.
 *
 * @example
 * ```ts
 * import type { PluginMetric } from "@pyproxy/pyproxy";
 * const sample: PluginMetric = {
 *   name: "pyproxy_autoscale_scale_ups_total",
 *   type: "counter",
 *   help: "Scale-ups the autoscale plugin asked for.",
 *   value: 3,
 * };
 * console.log(sample.name);
 * ```
 */
export interface PluginMetric {
  /**
   * The series name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, in the style of the
   * gateway's (`pyproxy_<plugin>_<what>`, a counter ending in `_total`).
   * A name the gateway itself renders, or an invalid one, is left out.
   */
  name: string;
  /** `"counter"` (never goes down) or `"gauge"`. */
  type: "counter" | "gauge";
  /** What it measures, in one line (the first sample of a name gives it). */
  help: string;
  /** The value. */
  value: number;
  /** Labels of this sample (names `[a-zA-Z_][a-zA-Z0-9_]*`), e.g. `{ direction: "up" }`. */
  labels?: Record<string, string>;
}

/**
 * The size bounds a sizing plugin keeps the pool within
 * ({@linkcode Plugin.setBounds}).
 *
 * @example
 * ```ts
 * import type { ScaleBounds } from "@pyproxy/pyproxy";
 * const bounds: ScaleBounds = { min: 1, max: 4 };
 * console.log(bounds.max - bounds.min); // 3
 * ```
 */
export interface ScaleBounds {
  /** Fewest worker slots. */
  min: number;
  /** Most worker slots. */
  max: number;
}

/**
 * A change of {@linkcode ScaleBounds}: a number sets the bound, `null`
 * restores the one the plugin was configured with, absent keeps it.
 *
 * @example
 * ```ts
 * import type { ScaleBoundsChange } from "@pyproxy/pyproxy";
 * const change: ScaleBoundsChange = { max: 8, min: null };
 * console.log(change); // max 8, min back to its configured value
 * ```
 */
export interface ScaleBoundsChange {
  /** Fewest worker slots: an integer from 1 to 1024, or `null`. */
  min?: number | null;
  /** Most worker slots: an integer from 1 to 1024 (not below `min`), or `null`. */
  max?: number | null;
}

/**
 * What every hook receives: the pool, its runtime and logger, and the worker
 * controls a supervision policy (like `reconnect()`) needs.
 *
 * @example
 * ```ts
 * import type { Plugin } from "@pyproxy/pyproxy";
 * const census: Plugin = {
 *   name: "census",
 *   onPoolStart(ctx) {
 *     ctx.logger.info("{n} workers", { n: ctx.workers().length });
 *   },
 * };
 * console.log(census.name);
 * ```
 */
export interface PluginContext {
  /** The pool. */
  readonly pool: Pool;
  /** The runtime adapter of the pool. */
  readonly runtime: Runtime;
  /** The pool's logger. */
  readonly logger: Logger;
  /** `true` once `pool.close()` started: policies must not restart anything. */
  readonly closing: boolean;
  /** Snapshots of every slot, in slot order. */
  workers(): WorkerInfo[];
  /**
   * Schedules a restart of a slot that is `stopped` (after a crash) or kills
   * and restarts a running one. Returns `false` when nothing was scheduled
   * (the pool is closing, the slot is `failed`, or a restart is already pending).
   */
  restartWorker(id: string, options?: RestartWorkerOptions): boolean;
  /** Marks the slot `failed` (kills its process if any); routing skips it until `reviveWorker`. */
  failWorker(id: string, reason: string): void;
  /**
   * Schedules a new start of a `failed` slot whose process has exited (a
   * policy's cool-down: `reconnect()` retries after `failedRetryAfter`).
   * Returns `false` when nothing was scheduled (the slot is not failed, its
   * process is still exiting, or the pool is closing).
   */
  reviveWorker(id: string, options?: RestartWorkerOptions): boolean;
  /**
   * Kills the slot's process; `reason` becomes `lastExit.reason`. The exit
   * then reaches `onWorkerExit`. `options.hung`: killed for answering
   * nothing (see {@linkcode KillWorkerOptions}).
   */
  killWorker(
    id: string,
    signal?: "SIGTERM" | "SIGKILL",
    reason?: string,
    options?: KillWorkerOptions,
  ): void;
  /**
   * Pings a ready worker; `true` when it answered within `timeoutMs`. Never
   * throws. When its connection ends meanwhile (the process died), `false`
   * comes once the exit is in (or `timeoutMs` passed): the slot is then no
   * longer ready with that pid, and its `lastExit` says why it ended.
   */
  ping(id: string, timeoutMs: number): Promise<boolean>;
  /**
   * When the worker's connection last showed signs of life, in `Date.now()`
   * milliseconds (see `Session.lastActivity`: bytes received, or now while a
   * message is being written or received); `undefined` without a connection.
   * A worker busy with a large message answers pings late but is alive.
   */
  lastActivity(id: string): number | undefined;
  /**
   * Whether the worker's event loop is seen idle, waiting for I/O, within
   * `withinMs` milliseconds (sampled from the operating system; resolves as
   * soon as it is seen). A worker that answered no ping but waits for its
   * next message is alive: its reply sits unread on the host's side (a host
   * busy enough reads a ready socket late). A wedged worker (a call holding
   * the GIL, a stopped process) never waits for I/O. Linux only (its main
   * thread's wait channel in `/proc`); `false` elsewhere, and when the
   * system cannot tell (Deno reads `/proc/<pid>` only with `--allow-all`).
   * Never throws.
   */
  waitsForIO(id: string, withinMs: number): Promise<boolean>;
  /**
   * How busy the pool is now: slots, ready ones, calls in flight and
   * queued, and whether a resize is under way or the pool still starts.
   * Cheap (no per-worker objects): a policy may sample it on a timer.
   *
   * @example
   * ```ts
   * import type { Plugin } from "@pyproxy/pyproxy";
   * const watch: Plugin = {
   *   name: "watch",
   *   onPoolStart(ctx) {
   *     const { queue, inFlight, ready } = ctx.load();
   *     ctx.logger.debug("{queue} queued, {inFlight} in flight on {ready} workers", { queue, inFlight, ready });
   *   },
   * };
   * console.log(watch.name);
   * ```
   */
  load(): PoolLoad;
  /**
   * `pool.resize(count, options)` on behalf of a plugin: the same
   * serialised resize (one at a time, in call order, the same checks and
   * errors), announced by the pool event
   * `{ type: "resize", from, to, by, reason }` with the plugin's name as
   * `by` (a `pool.resize` call, `PUT /v1/workers` included, has `by: null`),
   * so other plugins can tell who resized. Rejects with `ConfigError` when
   * `by` is not a non-empty string or `reason` not a string.
   *
   * @example
   * ```ts
   * import type { Plugin } from "@pyproxy/pyproxy";
   * const atLeastTwo: Plugin = {
   *   name: "atLeastTwo",
   *   onWorkerExit(_ev, ctx) {
   *     const { workers, resizing } = ctx.load();
   *     if (!ctx.closing && !resizing && workers < 2) {
   *       ctx.resize(2, { by: "atLeastTwo", reason: "fewer than 2 slots" }).catch(() => {});
   *     }
   *   },
   * };
   * console.log(atLeastTwo.name);
   * ```
   */
  resize(count: number, options: PluginResizeOptions): Promise<PoolStatus>;
}

/**
 * A plugin: a name and some hooks. Write one as a factory function returning
 * this object (see {@linkcode PluginFactory}).
 *
 * @example A plugin that counts requests
 * ```ts
 * import type { Plugin } from "@pyproxy/pyproxy";
 * function counter(): Plugin & { count: number } {
 *   return {
 *     name: "counter",
 *     count: 0,
 *     onRequest(msg) {
 *       if (typeof msg.cmd === "string") this.count++;
 *     },
 *   };
 * }
 * console.log(counter().name); // "counter"
 * ```
 */
export interface Plugin {
  /** Unique name; a plugin with the name of a default plugin replaces it. */
  name: string;
  /** Names of plugins that must also be registered (checked at `Pool.start`). */
  requires?: string[];
  /** After the plugins are resolved, before the workers start. */
  onPoolStart?(ctx: PluginContext): void | Promise<void>;
  /**
   * When `pool.close()` starts, before the workers are stopped: calls in
   * flight still run (and may still use what the plugin holds).
   */
  onPoolClose?(ctx: PluginContext): void | Promise<void>;
  /**
   * Once every worker has stopped and every exit hook has run: nothing runs
   * any more, so what calls in flight used (files, a store) can go.
   * `pool.close()` resolves after it.
   */
  onPoolClosed?(ctx: PluginContext): void | Promise<void>;
  /** A worker is connected; runs before its models are replayed and before it takes traffic. */
  onWorkerStart?(
    ev: WorkerStartEvent,
    ctx: PluginContext,
  ): void | Promise<void>;
  /** A worker's process ended or its start failed. */
  onWorkerExit?(ev: WorkerExitEvent, ctx: PluginContext): void | Promise<void>;
  /** A session to a worker was opened. */
  onSessionOpen?(
    ev: { worker: WorkerInfo; session: Session },
    ctx: PluginContext,
  ): void | Promise<void>;
  /** A session to a worker was closed. */
  onSessionClose?(
    ev: { worker: WorkerInfo; session: Session },
    ctx: PluginContext,
  ): void | Promise<void>;
  /** A call on a worker timed out. */
  onTimeout?(ev: TimeoutEvent, ctx: PluginContext): void | Promise<void>;
  /**
   * Once per model call (`pool.execute`, `pool.executeStream`, batched or
   * not), when the caller makes it, before it is queued (after the pool's
   * own checks: its options, its version, the pool not closing). Throw to
   * fail that call alone with the error (a `PyProxyError` as it is, any
   * other wrapped in a `PluginError`); return a {@linkcode CallAnswer} to
   * answer it without a worker (the later plugins' `onCall` are not run);
   * return nothing to let it go on. May be `async` (`hookTimeout` applies;
   * the call's own timeout counts from the call, the hooks' time included,
   * and its timeout, signal or the pool's close end it without waiting for
   * a hook that hangs: `TimeoutError` with `details.waited: "plugin"`,
   * `CancelledError`, `ShuttingDownError`; the hook's late result is
   * ignored, its late failure reported once as a `plugin-error`).
   *
   * @example A quota that refuses one call (of a batch too)
   * ```ts
   * import { OverloadedError } from "@pyproxy/pyproxy";
   * import type { Plugin } from "@pyproxy/pyproxy";
   * let left = 100;
   * const quota: Plugin = {
   *   name: "quota",
   *   onCall() {
   *     if (left-- <= 0) {
   *       throw new OverloadedError("Cannot run call: quota used up", { details: { retryAfterMs: 60_000 } });
   *     }
   *   },
   * };
   * console.log(quota.name);
   * ```
   */
  onCall?(
    call: ModelCall,
    ctx: PluginContext,
  ): CallAnswer | void | Promise<CallAnswer | void>;
  /**
   * Exactly once per model call that reached `onCall` (also one an `onCall`
   * refused or answered: `refusedBy`, `answeredBy`), once it settled:
   * just before its caller gets the outcome (a stream's: its end). Every
   * plugin's `onSettle` runs, in order, whether or not its own `onCall` ran
   * for the call. It cannot change the outcome; a throw (or a rejection,
   * or a hook past `hookTimeout`) is logged and reported as a
   * `plugin-error` event, never failing the call. Nothing waits for an
   * asynchronous one but the next plugin's `onSettle` and `pool.close()`,
   * whose `onPoolClosed` comes after every call's `onSettle`.
   *
   * @example An audit line per call
   * ```ts
   * import type { Plugin } from "@pyproxy/pyproxy";
   * const audit: Plugin = {
   *   name: "audit",
   *   onSettle(call, outcome, ctx) {
   *     ctx.logger.info("{model} {requestId}: {ok} ({attempts} attempts)", {
   *       model: call.resolved,
   *       requestId: call.requestId,
   *       ok: outcome.ok,
   *       attempts: outcome.attempts,
   *     });
   *   },
   * };
   * console.log(audit.name);
   * ```
   */
  onSettle?(
    call: ModelCall,
    outcome: CallOutcome,
    ctx: PluginContext,
  ): void | Promise<void>;
  /**
   * Every outgoing message; return a replacement or nothing to keep it, or
   * throw to fail its call. Beside the defaults it runs before the
   * spill-over's: a large call is seen as it is, not as its `$spill` stub.
   */
  onRequest?(
    msg: WireMessage,
    mc: MessageContext,
  ): WireMessage | void | Promise<WireMessage | void>;
  /** Every incoming message; return a replacement or nothing to keep it. */
  onReply?(
    msg: WireMessage,
    mc: MessageContext,
  ): WireMessage | void | Promise<WireMessage | void>;
  /**
   * Whether `caller` (a call's {@linkcode ModelCall.caller}: on the gateway,
   * the id of the token that let the request in) may call `model` (its
   * name as callers name it): `false` leaves the model out of what that
   * caller is shown of the models (the gateway's `GET /v1/models` and
   * `/openapi.json`; its `/v1` and `/v2` descriptions answer 404 as for a
   * model that is not there), so that a tenant sees only the models it
   * may call. It
   * refuses no call itself: a plugin that keeps models from tokens says
   * the same here as its `onCall` does (docs/gateway.md, "Serving many
   * tenants"). Synchronous and cheap (asked once per model listed); a
   * throw counts as `false`. Without it, every model.
   *
   * @example Per-token access: refused calls and hidden models alike
   * ```ts
   * import { ModelHTTPError } from "@pyproxy/pyproxy";
   * import type { Plugin } from "@pyproxy/pyproxy";
   * const allow: Record<string, string[]> = { "4f0a9c2e71d3b8a6": ["scorer"] };
   * const may = (model: string, caller: string | undefined) =>
   *   caller !== undefined && (allow[caller]?.includes(model) ?? false);
   * const access: Plugin = {
   *   name: "access",
   *   canCall: may,
   *   onCall(call) {
   *     if (!may(call.model, call.caller)) {
   *       throw new ModelHTTPError(403, `Cannot run model '${call.model}': not allowed for this token`);
   *     }
   *   },
   * };
   * console.log(access.canCall?.("scorer", "4f0a9c2e71d3b8a6")); // true
   * ```
   */
  canCall?(model: string, caller: string | undefined): boolean;
  /** Python → host commands this plugin serves. */
  handlers?: Record<string, HostHandler>;
  /**
   * A JSON-safe snapshot of the plugin's state for operators: shown by
   * `pool.pluginStatus()`, the gateway's `GET /v1/status` (`pluginStatus`)
   * and its dashboard. Called on every read: keep it cheap. A throw, a
   * value JSON cannot write (a cycle) or one that is not an object shows as
   * `{ error }` instead. `BigInt`s are kept (written as exact integers).
   */
  status?(): Record<string, unknown>;
  /**
   * Samples for the gateway's `GET /metrics` (`pool.pluginMetrics()`).
   * Called on every scrape: keep it cheap. A throw leaves them out.
   */
  metrics?(): PluginMetric[];
  /**
   * For a plugin that sizes the pool (such as `autoscale`): changes the
   * bounds it keeps the pool within, at run time, and returns those in
   * force. Reached through `pool.setScaleBounds` and the gateway's
   * `PUT /v1/workers` `{"min", "max"}`. Throws `RangeError` (or
   * `TypeError`) for bounds it refuses, changing nothing. An empty change
   * (`{}`) must change nothing: it reads the bounds in force.
   */
  setBounds?(change: ScaleBoundsChange): ScaleBounds;
}

/**
 * A plugin factory: `reconnect(options)`, `spillover(options)`, ...
 *
 * @example
 * ```ts
 * import type { Plugin, PluginFactory } from "@pyproxy/pyproxy";
 * const logRequests: PluginFactory<{ prefix?: string }> = (options = {}): Plugin => ({
 *   name: "logRequests",
 *   onRequest(msg) {
 *     console.log(options.prefix ?? ">", msg.cmd);
 *   },
 * });
 * console.log(logRequests({ prefix: "->" }).name); // "logRequests"
 * ```
 */
export type PluginFactory<O = unknown> = (options?: O) => Plugin;

/**
 * How a pool's plugin list is given: an array adds to the defaults (same
 * name replaces a default); the object form can drop all defaults
 * (`defaults: false`) or some of them (`remove`).
 *
 * @example
 * ```ts
 * import type { PluginsOption } from "@pyproxy/pyproxy";
 * // Keep the defaults but the spillover plugin, and add one plugin.
 * const plugins: PluginsOption = { remove: ["spillover"], use: [{ name: "mine" }] };
 * console.log(plugins);
 * ```
 */
export type PluginsOption = Plugin[] | {
  /** Start from the default plugins. @default {true} */
  defaults?: boolean;
  /** Plugins to add (same name as a default replaces it). */
  use?: Plugin[];
  /** Names of default plugins to leave out. */
  remove?: string[];
};

/**
 * The lifecycle hooks {@linkcode PluginHost.run} can run.
 *
 * @example
 * ```ts
 * import type { LifecycleHook } from "@pyproxy/pyproxy";
 * const hook: LifecycleHook = "onWorkerExit";
 * console.log(hook);
 * ```
 */
export type LifecycleHook =
  | "onPoolStart"
  | "onPoolClose"
  | "onPoolClosed"
  | "onWorkerStart"
  | "onWorkerExit"
  | "onSessionOpen"
  | "onSessionClose"
  | "onTimeout";

type SessionMiddlewares = NonNullable<SessionConnectOptions["middleware"]>;
type SessionHandlers = NonNullable<SessionConnectOptions["handlers"]>;

/**
 * Options of {@linkcode PluginHost}.
 *
 * @example
 * ```ts
 * import { PluginHost } from "@pyproxy/pyproxy";
 * const host = new PluginHost([{ name: "noop" }], {
 *   onError: (error, plugin, hook) => console.error(plugin, hook, error.message),
 * });
 * console.log(host instanceof PluginHost); // true
 * ```
 */
export interface PluginHostOptions {
  /** Called with every error a lifecycle hook threw (already wrapped in a `PluginError`). */
  onError?: (error: PluginError, plugin: string, hook: string) => void;
  /**
   * How long an asynchronous hook (lifecycle or message) may take, in ms,
   * before it fails with a `PluginError` ("did not settle within ... ms") and
   * what waits for it goes on. `Infinity`, or anything beyond 2^31 − 1
   * (~24.8 days, a timer's range), waits forever.
   *
   * @default {30000}
   */
  hookTimeout?: number;
  /**
   * The name of a plugin whose `onRequest` runs after every other plugin's
   * (its `onReply` keeps its place). The pool names its spill-over when the
   * defaults are on: the plugins added after it then see a call's message
   * rather than its `$spill` stub, and it sizes what they made. None by
   * default: every hook in registration order.
   */
  lastOnRequest?: string;
}

/**
 * Runs the plugins of a pool: resolves defaults, replacements and removals,
 * checks `requires`, runs lifecycle hooks in registration order (a throwing
 * hook is reported as a `PluginError` and never stops the others), and turns
 * `onRequest`/`onReply` and `handlers` into Session middleware and handlers.
 *
 * @example
 * ```ts
 * import { PluginHost } from "@pyproxy/pyproxy";
 * const plugins = PluginHost.resolve([{ name: "a" }, { name: "b" }], { remove: ["b"], use: [{ name: "c" }] });
 * const host = new PluginHost(plugins);
 * host.check();
 * console.log(host.plugins.map((p) => p.name)); // ["a", "c"]
 * ```
 */
export class PluginHost {
  #plugins: readonly Plugin[];
  #onError: (error: PluginError, plugin: string, hook: string) => void;
  #hookTimeout: number;
  #lastOnRequest: string | undefined;

  /** Creates a host for an already resolved plugin list (see {@linkcode PluginHost.resolve}). */
  constructor(plugins: readonly Plugin[], options: PluginHostOptions = {}) {
    this.#plugins = [...plugins];
    this.#onError = options.onError ?? (() => {});
    this.#hookTimeout = options.hookTimeout ?? 30_000;
    this.#lastOnRequest = options.lastOnRequest;
  }

  /**
   * Applies a `plugins` option to the default list: defaults first (a
   * same-name plugin replaces a default at the default's position), then the
   * added plugins in the order given.
   */
  static resolve(
    defaults: readonly Plugin[],
    option: PluginsOption = [],
  ): Plugin[] {
    const opts = Array.isArray(option) ? { use: option } : option;
    const removed = new Set(opts.remove ?? []);
    for (const name of removed) {
      if (!defaults.some((p) => p.name === name)) {
        throw new ConfigError(
          `Cannot start pool: plugins.remove: '${name}' is not a default plugin (defaults: ${
            defaults.map((p) => p.name).join(", ")
          })`,
          { details: { field: "plugins.remove" } },
        );
      }
    }
    const use = opts.use ?? [];
    const base = opts.defaults === false
      ? []
      : defaults.filter((p) => !removed.has(p.name));
    const out = [...base];
    for (const plugin of use) {
      const at = out.findIndex((p) => p.name === plugin.name);
      if (at >= 0 && base.includes(out[at]!)) out[at] = plugin;
      else out.push(plugin);
    }
    return out;
  }

  /** The plugins in registration order. */
  get plugins(): readonly Plugin[] {
    return this.#plugins;
  }

  /** Whether a plugin with this name is registered. */
  has(name: string): boolean {
    return this.#plugins.some((p) => p.name === name);
  }

  /**
   * The {@linkcode Plugin.status} of every plugin that has one, by name, as
   * a JSON copy (`BigInt`s kept): a plugin whose status throws, cannot be
   * written as JSON (a cycle, a `toJSON` that throws) or is not an object
   * shows as `{ error: "Cannot read status: ..." }`, so that one plugin
   * cannot break what reads them all (the gateway's `/v1/status`).
   */
  statuses(): Record<string, Record<string, unknown>> {
    const out: Record<string, Record<string, unknown>> = {};
    for (const p of this.#plugins) {
      if (typeof p.status !== "function") continue;
      let status: unknown;
      try {
        const text = stringifyJson(p.status());
        status = text === undefined ? undefined : parseJson(text);
      } catch (err) {
        out[p.name] = {
          error: `Cannot read status: ${
            err instanceof Error ? err.message : String(err)
          }`,
        };
        continue;
      }
      out[p.name] = typeof status === "object" && status !== null &&
          !Array.isArray(status)
        ? status as Record<string, unknown>
        : {
          error: `Cannot read status: expected an object, got ${
            Array.isArray(status) ? "an array" : String(status)
          }`.slice(0, 200),
        };
    }
    return out;
  }

  /**
   * Whether every plugin's {@linkcode Plugin.canCall} lets `caller` call
   * `model` (a throw: no); `true` when none has one.
   */
  canCall(model: string, caller: string | undefined): boolean {
    for (const p of this.#plugins) {
      if (typeof p.canCall !== "function") continue;
      try {
        if (p.canCall(model, caller) !== true) return false;
      } catch {
        return false;
      }
    }
    return true;
  }

  /** The {@linkcode Plugin.metrics} of every plugin, in order (a throwing one's are left out). */
  metrics(): PluginMetric[] {
    const out: PluginMetric[] = [];
    for (const p of this.#plugins) {
      if (typeof p.metrics !== "function") continue;
      try {
        const samples = p.metrics();
        if (Array.isArray(samples)) out.push(...samples);
      } catch {
        // A scrape shows what the other plugins report.
      }
    }
    return out;
  }

  /**
   * Calls {@linkcode Plugin.setBounds} of every plugin that has one, and
   * returns the bounds each keeps, by name (empty: no plugin sizes the
   * pool). The first refusal (`RangeError`...) is thrown as it is, and the
   * plugins changed before it get their bounds back, so that a refusal
   * changes nothing. A read (`{}`, no bound given) leaves out a plugin that
   * throws on it, as {@linkcode PluginHost.metrics} does, so that one plugin
   * cannot hide the others' bounds.
   */
  setBounds(change: ScaleBoundsChange): Record<string, ScaleBounds> {
    const out: Record<string, ScaleBounds> = {};
    const sizing = this.#plugins.filter((p) =>
      typeof p.setBounds === "function"
    );
    const read = typeof change === "object" && change !== null &&
      change.min === undefined && change.max === undefined;
    if (read) {
      for (const p of sizing) {
        try {
          out[p.name] = p.setBounds!(change);
        } catch {
          // Its bounds are unknown: the others' are still shown.
        }
      }
      return out;
    }
    // Each one's bounds before, to give them back if a later one refuses.
    const changed: Array<[Plugin, ScaleBounds | undefined]> = [];
    for (const p of sizing) {
      let before: ScaleBounds | undefined;
      try {
        before = p.setBounds!({});
      } catch {
        before = undefined;
      }
      try {
        out[p.name] = p.setBounds!(change);
      } catch (err) {
        for (const [q, bounds] of changed) {
          if (bounds === undefined) continue;
          try {
            q.setBounds!({ min: bounds.min, max: bounds.max });
          } catch {
            // It took them before: nothing more to do.
          }
        }
        throw err;
      }
      changed.push([p, before]);
    }
    return out;
  }

  /** Checks names, `requires` and handler conflicts; throws `ConfigError`. */
  check(): void {
    const names = new Set<string>();
    for (const p of this.#plugins) {
      if (typeof p?.name !== "string" || p.name === "") {
        throw new ConfigError(
          "Cannot start pool: plugins: every plugin needs a non-empty name",
        );
      }
      if (names.has(p.name)) {
        throw new ConfigError(
          `Cannot start pool: plugins: plugin '${p.name}' is registered twice`,
        );
      }
      names.add(p.name);
    }
    const owners = new Map<string, string>();
    for (const p of this.#plugins) {
      for (const need of p.requires ?? []) {
        if (!names.has(need)) {
          throw new ConfigError(
            `Cannot start pool: plugins: plugin '${p.name}' requires plugin '${need}'`,
          );
        }
      }
      for (const cmd of Object.keys(p.handlers ?? {})) {
        const other = owners.get(cmd);
        if (other !== undefined) {
          throw new ConfigError(
            `Cannot start pool: plugins: handler '${cmd}' is registered by both '${other}' and '${p.name}'`,
          );
        }
        owners.set(cmd, p.name);
      }
    }
  }

  /**
   * Runs one lifecycle hook on every plugin that has it, in order, awaiting
   * each for up to `hookTimeout`. Errors (a hook that did not settle in time
   * included) are wrapped in `PluginError`, reported to `onError` and
   * returned; they never stop the remaining plugins.
   */
  async run<H extends LifecycleHook>(
    hook: H,
    ...args: Parameters<NonNullable<Plugin[H]>>
  ): Promise<PluginError[]> {
    const errors: PluginError[] = [];
    for (const plugin of this.#plugins) {
      const fn = plugin[hook] as ((...a: unknown[]) => unknown) | undefined;
      if (typeof fn !== "function") continue;
      try {
        const out = fn.apply(plugin, args) as { then?: unknown } | undefined;
        if (typeof out?.then === "function") {
          await settleWithin(
            Promise.resolve(out),
            this.#hookTimeout,
            plugin.name,
            hook,
          );
        }
      } catch (err) {
        const wrapped = pluginError(plugin.name, hook, err);
        errors.push(wrapped);
        this.#onError(wrapped, plugin.name, hook);
      }
    }
    return errors;
  }

  /**
   * One Session middleware per plugin with `onRequest`/`onReply`, named after
   * the plugin. `mc.session` is filled in from the session the middleware
   * runs on. Empty when no plugin has message hooks, so the Session keeps its
   * synchronous path.
   *
   * In registration order, but for the `onRequest` of the plugin named by
   * `lastOnRequest`, which runs after all the others.
   */
  middleware(
    mc: Omit<MessageContext, "session"> & { session?: Session },
  ): NonNullable<SessionConnectOptions["middleware"]> {
    const out: SessionMiddlewares = [];
    const ctx = mc as MessageContext;
    const ms = this.#hookTimeout;
    let last: SessionMiddlewares[number] | undefined;
    for (const plugin of this.#plugins) {
      const onRequest = plugin.onRequest;
      const onReply = plugin.onReply;
      if (onRequest === undefined && onReply === undefined) continue;
      const entry: SessionMiddlewares[number] = { name: plugin.name };
      if (onRequest !== undefined) {
        entry.outgoing = (msg: WireMessage, session: Session) => {
          ctx.session = session;
          return applyHook(plugin, "onRequest", onRequest, msg, ctx, ms);
        };
      }
      if (onReply !== undefined) {
        entry.incoming = (msg: WireMessage, session: Session) => {
          ctx.session = session;
          return applyHook(plugin, "onReply", onReply, msg, ctx, ms);
        };
      }
      if (plugin.name !== this.#lastOnRequest || onRequest === undefined) {
        out.push(entry);
        continue;
      }
      // Split in two (the Session runs each direction's in array order).
      if (entry.incoming !== undefined) {
        out.push({ name: entry.name, incoming: entry.incoming });
      }
      last = { name: entry.name, outgoing: entry.outgoing! };
    }
    if (last !== undefined) out.push(last);
    return out;
  }

  /** The Session handlers of every plugin, each told which worker it runs for. */
  handlers(
    worker: WorkerInfo,
  ): NonNullable<SessionConnectOptions["handlers"]> {
    const out: SessionHandlers = {};
    for (const plugin of this.#plugins) {
      const own = plugin.handlers;
      if (own === undefined) continue;
      for (const [cmd, handler] of Object.entries(own)) {
        out[cmd] = (args, call) =>
          handler.call(
            own,
            args,
            call.callers !== undefined
              ? {
                worker,
                session: call.session,
                signal: call.signal,
                callers: call.callers,
              }
              : call.callEnded === true
              ? {
                worker,
                session: call.session,
                signal: call.signal,
                callEnded: true,
              }
              : { worker, session: call.session, signal: call.signal },
          );
      }
    }
    return out;
  }
}

type MessageHook = (
  msg: WireMessage,
  mc: MessageContext,
) => WireMessage | void | Promise<WireMessage | void>;

// Kept synchronous when the hook is, so a plugin that never awaits costs no promise per message.
function applyHook(
  plugin: Plugin,
  hook: string,
  fn: MessageHook,
  msg: WireMessage,
  mc: MessageContext,
  timeoutMs: number,
): WireMessage | Promise<WireMessage> {
  let out: WireMessage | void | Promise<WireMessage | void>;
  try {
    out = fn.call(plugin, msg, mc);
  } catch (err) {
    throw messageHookError(plugin.name, hook, err);
  }
  if (isThenable(out)) {
    return settleWithin(
      Promise.resolve(out) as Promise<WireMessage | void>,
      timeoutMs,
      plugin.name,
      hook,
    ).then(
      (v) => v ?? msg,
      (err) => {
        throw messageHookError(plugin.name, hook, err);
      },
    );
  }
  return out ?? msg;
}
