/**
 * Request metrics for the gateway, rendered in the Prometheus text format
 * (and as JSON for the dashboard).
 *
 * @module
 */
import {
  QUEUE_WAIT_OUTCOMES,
  type QueueWaitHistogram,
  type QueueWaitModelStats,
  type QueueWaitStats,
} from "../queue_waits.ts";
import type { PluginMetric } from "../plugin.ts";
import type { ModelMetricsSnapshot } from "../model_metrics.ts";
import type { WorkerState } from "../worker.ts";
import type { ProcessResources, WorkerResources } from "./process_resources.ts";

/**
 * Pool-level numbers sampled at scrape time.
 *
 * @example
 * ```ts
 * import type { MetricsSnapshot } from "@pyproxy/pyproxy";
 * const snapshot: MetricsSnapshot = {
 *   workers: [{ id: "w0", state: "ready", restarts: 0 }],
 *   subscribers: 2,
 * };
 * console.log(snapshot.workers.length); // 1
 * ```
 */
export interface MetricsSnapshot {
  /** Workers by id with their state, restart count, parked streams and ended processes by cause. */
  workers: ReadonlyArray<
    {
      id: string;
      state: string;
      restarts: number;
      parked?: number;
      exits?: Readonly<Record<string, number>>;
      /** Calls given up on that the worker still runs, by model (`WorkerInfo.abandoned`). */
      abandoned?: Readonly<Record<string, number>>;
    }
  >;
  /**
   * The pool's ended worker processes by cause, removed slots included
   * (`PoolStatus.exits`): `pyproxy_pool_worker_exits_total`.
   */
  exits?: Readonly<Record<string, number>>;
  /** Live channel subscribers. */
  subscribers?: number;
  /** Channel subscribers dropped as too slow since the start. */
  droppedSubscribers?: number;
  /** Trace spans dropped since the start (tracing on only: docs/gateway.md "Tracing"). */
  droppedSpans?: number;
  /**
   * Whether the polled token files could not be used at their last read
   * (the tokens in force kept): `pyproxy_token_files_refused`; absent when
   * no token file is polled.
   */
  tokenFilesRefused?: boolean;
  /** Eval output the running evals keep for replay (UTF-16 code units). */
  evalReplayBytes?: number;
  /** Calls waiting in the pool queue now. */
  queued?: number;
  /**
   * Placed models out of service now (they crashed the workers they were
   * placed on: `failedReason` in `pool.status().models`).
   */
  outOfService?: number;
  /**
   * Each model's readiness now, by name (`name@version` for a version):
   * true when it can take calls (in service, and a worker that holds it is
   * ready), as `GET /v2/models/{name}/ready` says.
   */
  modelReady?: ReadonlyMap<string, boolean>;
  /** How long the calls routed to a worker waited in the pool queue. */
  queueWaits?: QueueWaitStats;
  /**
   * The plugins' samples (`pool.pluginMetrics()`), rendered after the
   * gateway's own series; one whose name or labels are not valid
   * Prometheus, or whose name the gateway renders itself, is left out.
   */
  plugins?: readonly PluginMetric[];
  /**
   * What model code records (`pool.modelMetrics()`), rendered as
   * `pyproxy_model_<name>` with a `model` label (docs/gateway.md, "GET
   * /metrics"), and the updates dropped by the bounds as
   * `pyproxy_dropped_model_series_total`.
   */
  modelMetrics?: ModelMetricsSnapshot;
  /**
   * The gateway's own process (`readProcessResources`), rendered as the
   * standard `process_*` metrics and `pyproxy_js_heap_*_bytes`.
   */
  process?: ProcessResources;
  /**
   * The workers' processes read at the scrape (`readWorkerResources`):
   * `pyproxy_worker_resident_memory_bytes` and
   * `pyproxy_worker_cpu_seconds_total`, one series per worker listed.
   */
  workerResources?: readonly WorkerResources[];
  /**
   * What runs: `pyproxy_build_info`'s labels (1 its only value), for a
   * dashboard to tell versions apart during an upgrade.
   */
  build?: BuildInfo;
  /**
   * The bounds in force, as `pyproxy_limit_*` gauges, for alerts to compare
   * the counts with (`pyproxy_queued_calls / pyproxy_limit_max_queue`)
   * rather than a number written in the rule. `Infinity`: no bound
   * (`+Inf`). Each absent one is not rendered.
   */
  limits?: MetricsLimits;
}

/**
 * `pyproxy_build_info`'s labels ({@linkcode MetricsSnapshot.build}).
 *
 * @example
 * ```ts
 * import type { BuildInfo } from "@pyproxy/pyproxy";
 * const build: BuildInfo = { version: "0.1.0", runtime: "deno", runtimeVersion: "2.5.6", python: "3.12.1" };
 * console.log(build.runtime); // "deno"
 * ```
 */
export interface BuildInfo {
  /** pyproxy's version. */
  version: string;
  /** `"deno"` or `"bun"`. */
  runtime: string;
  /** The runtime's version. */
  runtimeVersion: string;
  /** The workers' Python version (`""` until a worker was ready). */
  python: string;
}

/**
 * The bounds rendered as `pyproxy_limit_*` ({@linkcode MetricsSnapshot.limits}).
 *
 * @example
 * ```ts
 * import type { MetricsLimits } from "@pyproxy/pyproxy";
 * const limits: MetricsLimits = { maxQueue: 1024, maxInFlightPerWorker: 64 };
 * console.log(limits.maxQueue); // 1024
 * ```
 */
export interface MetricsLimits {
  /** `pyproxy_limit_max_in_flight_per_worker` (`limits.maxInFlightPerWorker`). */
  maxInFlightPerWorker?: number;
  /** `pyproxy_limit_max_queue` (`limits.maxQueue`): 429 past it. */
  maxQueue?: number;
  /** `pyproxy_limit_body_bytes` (`limits.bodyLimit`): 413 past it. */
  bodyBytes?: number;
  /** `pyproxy_limit_request_timeout_seconds` (`limits.requestTimeout`). */
  requestTimeoutSeconds?: number;
  /** `pyproxy_limit_eval_replay_bytes` (`limits.evalReplayBudget`, UTF-16 code units as `pyproxy_eval_replay_bytes`). */
  evalReplayBytes?: number;
}

/** The `pyproxy_limit_*` gauges: name, field, help. */
const LIMIT_GAUGES: ReadonlyArray<
  readonly [string, keyof MetricsLimits, string]
> = [
  [
    "pyproxy_limit_max_in_flight_per_worker",
    "maxInFlightPerWorker",
    "Calls in flight per worker before calls wait in the pool queue (limits.maxInFlightPerWorker).",
  ],
  [
    "pyproxy_limit_max_queue",
    "maxQueue",
    "Calls that may wait in the pool queue before 429 (limits.maxQueue): compare pyproxy_queued_calls.",
  ],
  [
    "pyproxy_limit_body_bytes",
    "bodyBytes",
    "Largest request body in bytes before 413 (limits.bodyLimit).",
  ],
  [
    "pyproxy_limit_request_timeout_seconds",
    "requestTimeoutSeconds",
    "Default and largest timeout of a call in seconds (limits.requestTimeout).",
  ],
  [
    "pyproxy_limit_eval_replay_bytes",
    "evalReplayBytes",
    "Eval output kept for replay over all running evals, in UTF-16 code units (limits.evalReplayBudget): compare pyproxy_eval_replay_bytes.",
  ],
];

/**
 * Per-model numbers as returned by {@linkcode GatewayMetrics.toJSON}.
 *
 * @example
 * ```ts
 * import { GatewayMetrics, type ModelMetrics } from "@pyproxy/pyproxy";
 * const metrics = new GatewayMetrics();
 * const done = metrics.start("doubler");
 * done(200);
 * const doubler: ModelMetrics | undefined = metrics.toJSON().models["doubler"];
 * console.log(doubler?.requests); // { "200": 1 }
 * ```
 */
export interface ModelMetrics {
  /** Requests by HTTP status. */
  requests: Record<string, number>;
  /** Requests currently executing. */
  inFlight: number;
  /** Sum of request durations in seconds. */
  durationSum: number;
}

/**
 * Options for {@linkcode GatewayMetrics}.
 *
 * @example
 * ```ts
 * import { GatewayMetrics } from "@pyproxy/pyproxy";
 * const metrics = new GatewayMetrics({ buckets: [0.01, 0.1, 1, 10] });
 * console.log(metrics instanceof GatewayMetrics); // true
 * ```
 */
export interface GatewayMetricsOptions {
  /**
   * Upper bounds (seconds) of the latency histogram buckets.
   * Past the last, `histogram_quantile` answers that last bound: the default
   * reaches 2 minutes, past `limits.requestTimeout`'s default (30 s).
   * @default {[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]}
   */
  buckets?: number[];
  /**
   * Distinct model label values kept for names that are not a model loaded
   * now (per {@linkcode GatewayMetricsOptions.isModel}); further such names
   * are counted under `"_other"` (requests that found no model are counted
   * under `"_unknown"`). A model loaded now always gets series of its own:
   * a deployment of more models than this counts each.
   * @default {1000}
   */
  maxModels?: number;
  /**
   * Whether a model label value (a model's name, a version's `name@label`)
   * is a model loaded now: asked only when a name without series comes
   * past `maxModels`. `createGateway` gives the metrics it makes one that
   * asks its pool (one map lookup with the library's `Pool`). Absent: every
   * name past `maxModels` is counted under `"_other"`.
   * @default {undefined}
   */
  isModel?: (name: string) => boolean;
}

/**
 * Upper bounds (seconds) of `pyproxy_stream_first_item_seconds`: a chat
 * model's first token comes in tens of ms to a minute (a long prompt, a
 * queue behind one generation at a time).
 */
const FIRST_ITEM_BUCKETS = [
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
];

/**
 * Exit causes listed at 0 before their first count, for each worker and the
 * pool: Prometheus takes a counter's first sample as its start, so a series
 * born at 1 (the first OOM kill) would leave `increase(...) > 0` at 0 and its
 * alert silent. The causes alerts name: the OOM killer's, a crash in C, the
 * pool's kill of a hung worker. Other causes (`exit_<code>`, other signals)
 * are born at their first count.
 */
const LISTED_EXIT_CAUSES = ["pool", "SIGKILL", "SIGSEGV"] as const;

/**
 * Statuses of `pyproxy_requests_total` listed at 0 for each model the pool
 * has (`MetricsSnapshot.modelReady`, at most `maxModels` of them) before
 * their first count, for the same reason: a model's first error, born at 1,
 * was not in `rate()` nor `increase()`, and an error-ratio alert missed it.
 * Those the docs' alerts and dashboard name: a success, the model's errors
 * (422, 502, 503, 504, 507) and the queue's 429. Other statuses (a client's
 * 400, 404, 413, a 499) are born at their first count.
 */
const LISTED_STATUSES = [200, 422, 429, 502, 503, 504, 507] as const;

/** A model's event streams: their first items' waits and their items. */
interface StreamStats {
  buckets: number[];
  count: number;
  sum: number;
  items: number;
}

interface ModelStats {
  /** Its event streams; absent until one gave an item. */
  streams?: StreamStats;
  requests: Map<number, number>;
  inFlight: number;
  /** Calls in each bucket alone (not cumulative: summed when rendered). */
  buckets: number[];
  count: number;
  sum: number;
  /** Seconds of the requests that ended with a status >= 400 (in `sum` too). */
  failSum: number;
  /** When the last request that ended began (`performance.now()`); -1: none. */
  last: number;
}

/**
 * A model's request totals as {@linkcode GatewayMetrics.modelTotals} gives
 * them (what Triton's statistics extension reads).
 *
 * @example
 * ```ts
 * import { GatewayMetrics, type ModelTotals } from "@pyproxy/pyproxy";
 * const metrics = new GatewayMetrics();
 * metrics.start("echo")(200);
 * const totals: ModelTotals | undefined = metrics.modelTotals("echo");
 * console.log(totals?.success.count); // 1
 * ```
 */
export interface ModelTotals {
  /** Requests that ended with a status below 400, and their seconds. */
  success: { count: number; seconds: number };
  /** Requests that ended with a status of 400 or more, and their seconds. */
  fail: { count: number; seconds: number };
  /** When the last request that ended began, in ms since the epoch; absent: none ended. */
  last?: number;
}

/**
 * Counts requests by model and status, a latency histogram per model and
 * in-flight gauges; renders them with pool numbers (worker states, restarts).
 *
 * @example
 * ```ts
 * import { GatewayMetrics } from "@pyproxy/pyproxy";
 * const metrics = new GatewayMetrics();
 * const done = metrics.start("echo");
 * done(200);
 * console.log(metrics.render({ workers: [] }).includes('pyproxy_requests_total{model="echo",status="200"} 1')); // true
 * ```
 */
export class GatewayMetrics {
  #buckets: number[];
  #maxModels: number;
  #isModel: ((name: string) => boolean) | undefined;
  #models = new Map<string, ModelStats>();
  /** Responses by route template, then status. */
  #http = new Map<string, Map<number, number>>();
  #started = Date.now();
  // Model requests started and not ended, forgotten models' included, and
  // other responses held (hold), and who waits for there to be none
  // (whenIdle).
  #pending = 0;
  #held = 0;
  #idle: Array<() => void> = [];
  #evalStreamsIdle = 0;

  /** Creates empty metrics. */
  constructor(options: GatewayMetricsOptions = {}) {
    this.#buckets = [
      ...(options.buckets ??
        [
          0.001,
          0.0025,
          0.005,
          0.01,
          0.025,
          0.05,
          0.1,
          0.25,
          0.5,
          1,
          2.5,
          5,
          10,
          30,
          60,
          120,
        ]),
    ]
      .sort((a, b) => a - b);
    this.#maxModels = options.maxModels ?? 1000;
    this.#isModel = options.isModel;
  }

  /**
   * Marks a model request as started; call the returned function with the
   * final status, and `modelAnswered` `true` when that status is the
   * model's own (its `HTTPError`, or an error after its stream began).
   * Another 404 is a call that found no model: it is counted under
   * `"_unknown"`, and a name with no finished request of its own is
   * forgotten once none of its requests is in flight, so a client calling
   * made-up names, even many at once, adds no series (and does not push
   * real models into `"_other"`). A model's own 404 counts as its call,
   * its first one too.
   */
  start(model: string): (status: number, modelAnswered?: boolean) => void {
    const own = this.#stats(model);
    own.inFlight++;
    this.#pending++;
    const t0 = performance.now();
    let ended = false;
    return (status: number, modelAnswered = false) => {
      if (ended) return;
      ended = true;
      own.inFlight--;
      this.#ended();
      let stats = own;
      if (status === 404 && !modelAnswered && model !== UNKNOWN) {
        if (
          own.count === 0 && own.inFlight === 0 &&
          this.#models.get(model) === own
        ) {
          this.#models.delete(model);
        }
        stats = this.#stats(UNKNOWN);
      }
      const seconds = (performance.now() - t0) / 1000;
      stats.requests.set(status, (stats.requests.get(status) ?? 0) + 1);
      stats.count++;
      stats.sum += seconds;
      if (status >= 400) stats.failSum += seconds;
      stats.last = t0;
      // One count, in the call's own bucket (cumulated when rendered): a
      // fast call costs one comparison, however many buckets there are.
      const bounds = this.#buckets;
      let i = 0;
      while (i < bounds.length && seconds > bounds[i]!) i++;
      if (i < bounds.length) stats.buckets[i]!++;
    };
  }

  /**
   * Records the first item of an event stream of `model` (`POST
   * .../stream`), `seconds` after its request came: its time to first token
   * (queue, prompt and first step), `pyproxy_stream_first_item_seconds`.
   * Call the returned function once, when the stream ends, with the items
   * it sent (`pyproxy_stream_items_total`: with the requests' durations,
   * tokens a second); nothing is counted per item. A model that is no
   * longer loaded (per `isModel`) and was forgotten is not counted.
   *
   * @example
   * ```ts
   * import { GatewayMetrics } from "@pyproxy/pyproxy";
   * const metrics = new GatewayMetrics();
   * const ended = metrics.firstItem("chat", 0.42);
   * ended(128);
   * console.log(metrics.render({ workers: [] }).includes('pyproxy_stream_items_total{model="chat"} 128')); // true
   * ```
   */
  firstItem(model: string, seconds: number): (items: number) => void {
    // A model removed (forgotten) while its stream waited for this item:
    // counted nowhere, as its request's end is, rather than re-creating its
    // series for good.
    if (
      !this.#models.has(model) && this.#isModel?.(model) === false &&
      model !== "_other" && model !== UNKNOWN
    ) {
      return () => {};
    }
    const stats = this.#stats(model);
    const s = stats.streams ??= {
      buckets: FIRST_ITEM_BUCKETS.map(() => 0),
      count: 0,
      sum: 0,
      items: 0,
    };
    s.count++;
    s.sum += seconds;
    for (let i = 0; i < FIRST_ITEM_BUCKETS.length; i++) {
      if (seconds <= FIRST_ITEM_BUCKETS[i]!) s.buckets[i]!++;
    }
    let ended = false;
    return (items: number) => {
      if (ended) return;
      ended = true;
      s.items += items;
    };
  }

  /**
   * Drops the series of a removed model: models added and removed under new
   * names kept theirs for the gateway's life (~18 lines of `/metrics` each),
   * until `maxModels` names were used and every later model was counted
   * under `"_other"`. Its calls still in flight finish uncounted; a model
   * added again under the name starts from zero, as after a restart.
   */
  forget(model: string): void {
    if (model !== UNKNOWN && model !== "_other") this.#models.delete(model);
  }

  /**
   * The totals of one model label value (a model's name, or a version's
   * `name@label`) as of now: its requests that ended, by success (a status
   * below 400) or failure, with their seconds, and when the last of them
   * began; `undefined` when none ended under that name (never called,
   * forgotten, or counted under `"_other"` past `maxModels`). Requests in
   * flight are not in it until they end.
   */
  modelTotals(model: string): ModelTotals | undefined {
    const s = this.#models.get(model);
    if (s === undefined || s.count === 0) return undefined;
    let failed = 0;
    for (const [status, n] of s.requests) if (status >= 400) failed += n;
    const out: ModelTotals = {
      success: { count: s.count - failed, seconds: s.sum - s.failSum },
      fail: { count: failed, seconds: s.failSum },
    };
    // The same at every read (from the clock of now it would move by a
    // millisecond between reads).
    if (s.last >= 0) out.last = performance.timeOrigin + s.last;
    return out;
  }

  /** Model label values held (one per model with calls counted or in flight). */
  get size(): number {
    return this.#models.size;
  }

  /**
   * Counts one HTTP response of any route: `route` is its template
   * (`/v1/models/{name}/execute`, never the path as sent, so the series stay
   * as few as the routes; `"_unmatched"` for a path of no route).
   */
  countHttp(status: number, route: string): void {
    let statuses = this.#http.get(route);
    if (statuses === undefined) this.#http.set(route, statuses = new Map());
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
  }

  /**
   * Marks the response of a request other than a model call as in the
   * making (a model load or removal, a resize, an eval's event stream);
   * call the returned function once it is made (a stream: once it ended).
   * Not counted in any series: only {@linkcode GatewayMetrics.whenIdle}
   * waits for it, so that a drain lets it finish; `held` says how many are.
   * Calling the function again does nothing.
   *
   * @example
   * ```ts
   * import { GatewayMetrics } from "@pyproxy/pyproxy";
   * const metrics = new GatewayMetrics();
   * const release = metrics.hold();
   * const idle = metrics.whenIdle().then(() => console.log("idle"));
   * console.log(metrics.held); // 1
   * release();
   * await idle; // "idle"
   * ```
   */
  hold(): () => void {
    this.#held++;
    this.#pending++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#held--;
      this.#ended();
    };
  }

  /**
   * Counts an eval event stream ended because its client took no event for
   * the idle timeout (`pyproxy_eval_streams_idle_total`).
   *
   * @example
   * ```ts
   * import { GatewayMetrics } from "@pyproxy/pyproxy";
   * const metrics = new GatewayMetrics();
   * metrics.evalStreamIdle();
   * console.log(metrics.evalStreamsIdle); // 1
   * ```
   */
  evalStreamIdle(): void {
    this.#evalStreamsIdle++;
  }

  /** Eval event streams ended for an idle client ({@linkcode GatewayMetrics.evalStreamIdle}). */
  get evalStreamsIdle(): number {
    return this.#evalStreamsIdle;
  }

  /** Responses of other routes in the making ({@linkcode GatewayMetrics.hold}). */
  get held(): number {
    return this.#held;
  }

  #ended(): void {
    if (--this.#pending === 0 && this.#idle.length > 0) {
      for (const resolve of this.#idle.splice(0)) resolve();
    }
  }

  /**
   * Resolves once no request is in flight, at once if none is: each model
   * request (execute or stream) has then made its response or ended its
   * stream, and each response of another route held with
   * {@linkcode GatewayMetrics.hold} is made.
   *
   * @example
   * ```ts
   * import { GatewayMetrics } from "@pyproxy/pyproxy";
   * const metrics = new GatewayMetrics();
   * const done = metrics.start("echo");
   * const idle = metrics.whenIdle().then(() => console.log("idle"));
   * done(200);
   * await idle; // "idle"
   * ```
   */
  whenIdle(): Promise<void> {
    if (this.#pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Model requests currently executing, across models. */
  get inFlight(): number {
    let n = 0;
    for (const s of this.#models.values()) n += s.inFlight;
    return n;
  }

  /** Totals for the dashboard. */
  toJSON(): {
    uptime: number;
    requests: number;
    inFlight: number;
    http: Record<string, number>;
    models: Record<string, ModelMetrics>;
    evalStreamsIdle: number;
  } {
    const models: Record<string, ModelMetrics> = {};
    let requests = 0;
    for (const [name, s] of this.#models) {
      models[name] = {
        requests: Object.fromEntries(
          [...s.requests].map(([k, v]) => [String(k), v]),
        ),
        inFlight: s.inFlight,
        durationSum: s.sum,
      };
      requests += s.count;
    }
    return {
      uptime: (Date.now() - this.#started) / 1000,
      requests,
      inFlight: this.inFlight,
      http: Object.fromEntries(
        [...this.#httpByStatus()].map(([k, v]) => [String(k), v]),
      ),
      models,
      evalStreamsIdle: this.#evalStreamsIdle,
    };
  }

  /** The metrics in the Prometheus text exposition format (version 0.0.4). */
  render(snapshot: MetricsSnapshot): string {
    const lines: string[] = [];
    const families = new Set<string>();
    const family = (name: string, type: string, help: string): void => {
      families.add(name);
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    };
    family(
      "pyproxy_requests_total",
      "counter",
      "Model execute requests by model and HTTP status.",
    );
    // The models the pool has, each with the statuses alerts name listed
    // from 0 (at most maxModels of them).
    const listed = new Set<string>();
    for (const model of snapshot.modelReady?.keys() ?? []) {
      if (listed.size >= this.#maxModels) break;
      listed.add(model);
    }
    // A listed model's statuses not counted yet, at 0.
    const zeros = (model: string, counted?: Map<number, number>): void => {
      for (const status of LISTED_STATUSES) {
        if (counted?.has(status) === true) continue;
        lines.push(
          `pyproxy_requests_total{${modelLabels(model)},status="${status}"} 0`,
        );
      }
    };
    for (const [model, s] of this.#models) {
      for (const [status, n] of s.requests) {
        lines.push(
          `pyproxy_requests_total{${
            modelLabels(model)
          },status="${status}"} ${n}`,
        );
      }
      if (listed.delete(model)) zeros(model, s.requests);
    }
    for (const model of listed) zeros(model);
    family(
      "pyproxy_request_duration_seconds",
      "histogram",
      "Model execute latency in seconds.",
    );
    for (const [model, s] of this.#models) {
      // Not before its first observation: the entry of a name whose calls
      // are all in flight goes away if they end in 404 (counted under
      // "_unknown"), and a counter series must not vanish.
      if (s.count === 0) continue;
      const m = modelLabels(model);
      let cumulative = 0;
      this.#buckets.forEach((le, i) => {
        cumulative += s.buckets[i]!;
        lines.push(
          `pyproxy_request_duration_seconds_bucket{${m},le="${le}"} ${cumulative}`,
        );
      });
      lines.push(
        `pyproxy_request_duration_seconds_bucket{${m},le="+Inf"} ${s.count}`,
      );
      lines.push(`pyproxy_request_duration_seconds_sum{${m}} ${s.sum}`);
      lines.push(
        `pyproxy_request_duration_seconds_count{${m}} ${s.count}`,
      );
    }
    family(
      "pyproxy_stream_first_item_seconds",
      "histogram",
      "Event streams' time from the request to the first item (time to first token).",
    );
    for (const [model, s] of this.#models) {
      const st = s.streams;
      if (st === undefined || st.count === 0) continue;
      const m = modelLabels(model);
      FIRST_ITEM_BUCKETS.forEach((le, i) => {
        lines.push(
          `pyproxy_stream_first_item_seconds_bucket{${m},le="${le}"} ${
            st.buckets[i]
          }`,
        );
      });
      lines.push(
        `pyproxy_stream_first_item_seconds_bucket{${m},le="+Inf"} ${st.count}`,
        `pyproxy_stream_first_item_seconds_sum{${m}} ${st.sum}`,
        `pyproxy_stream_first_item_seconds_count{${m}} ${st.count}`,
      );
    }
    family(
      "pyproxy_stream_items_total",
      "counter",
      "Items sent on event streams (tokens, for a text generator), counted as each stream ends.",
    );
    for (const [model, s] of this.#models) {
      if (s.streams === undefined) continue;
      lines.push(
        `pyproxy_stream_items_total{${modelLabels(model)}} ${s.streams.items}`,
      );
    }
    family(
      "pyproxy_in_flight_requests",
      "gauge",
      "Model execute requests in flight.",
    );
    for (const [model, s] of this.#models) {
      lines.push(
        `pyproxy_in_flight_requests{${modelLabels(model)}} ${s.inFlight}`,
      );
    }
    family(
      "pyproxy_http_responses_total",
      "counter",
      "HTTP responses of every route by route template and status.",
    );
    for (const [route, statuses] of this.#http) {
      for (const [status, n] of statuses) {
        lines.push(
          `pyproxy_http_responses_total{route="${
            label(route)
          }",status="${status}"} ${n}`,
        );
      }
    }
    family(
      "pyproxy_eval_streams_idle_total",
      "counter",
      "Eval event streams ended because their client took no event for limits.streamIdleTimeout (StreamIdleError, 408); their evals ran on.",
    );
    lines.push(`pyproxy_eval_streams_idle_total ${this.#evalStreamsIdle}`);
    family("pyproxy_worker_restarts_total", "counter", "Restarts per worker.");
    for (const w of snapshot.workers) {
      lines.push(
        `pyproxy_worker_restarts_total{worker="${label(w.id)}"} ${w.restarts}`,
      );
    }
    family(
      "pyproxy_worker_exits_total",
      "counter",
      "Worker processes that ended, by cause: stopped (on purpose), pool (killed by the pool: a hang, a missed heartbeat, wedged, a lost connection, a failed start), a signal's name (from outside or a crash: SIGKILL is the OOM killer's), exit_<code> (exited by itself).",
    );
    const exitLines = (
      exits: Readonly<Record<string, number>>,
      labels: string,
      name: string,
    ) => {
      for (const cause of LISTED_EXIT_CAUSES) {
        lines.push(`${name}{${labels}cause="${cause}"} ${exits[cause] ?? 0}`);
      }
      for (const cause in exits) {
        if ((LISTED_EXIT_CAUSES as readonly string[]).includes(cause)) continue;
        lines.push(`${name}{${labels}cause="${label(cause)}"} ${exits[cause]}`);
      }
    };
    for (const w of snapshot.workers) {
      if (w.exits === undefined) continue;
      exitLines(
        w.exits,
        `worker="${label(w.id)}",`,
        "pyproxy_worker_exits_total",
      );
    }
    if (snapshot.exits !== undefined) {
      // A removed slot's series above goes with it (ids are never reused:
      // kept, they would pile up under an autoscaler); these keep its counts.
      family(
        "pyproxy_pool_worker_exits_total",
        "counter",
        "Worker processes that ended over the pool's life, by cause (as pyproxy_worker_exits_total), the slots a resize removed included: never goes down.",
      );
      exitLines(snapshot.exits, "", "pyproxy_pool_worker_exits_total");
    }
    family(
      "pyproxy_parked_streams",
      "gauge",
      "Model streams parked per worker (their reader a window behind; they hold no call slot).",
    );
    for (const w of snapshot.workers) {
      lines.push(
        `pyproxy_parked_streams{worker="${label(w.id)}"} ${w.parked ?? 0}`,
      );
    }
    // Only the workers and models that have any: a series per model and
    // worker would be mostly zeros. A model blocked outside Python (which
    // no cancel reaches) shows here as its calls time out, before it wedges
    // its worker.
    family(
      "pyproxy_abandoned_calls",
      "gauge",
      "Calls given up on (timed out, cancelled, client gone) that a worker still runs, by worker and model: a model blocked outside Python (a sleep, a lock, I/O without a timeout) shows here before it wedges the worker (docs/reliability.md, Runbook).",
    );
    for (const w of snapshot.workers) {
      for (const [model, n] of Object.entries(w.abandoned ?? {})) {
        lines.push(
          `pyproxy_abandoned_calls{worker="${label(w.id)}",${
            modelLabels(model)
          }} ${n}`,
        );
      }
    }
    family("pyproxy_workers", "gauge", "Workers by state.");
    // Every state, 0 included: an alert on `pyproxy_workers{state="ready"} < 1`
    // must see the series when no worker is ready.
    const states = new Map<string, number>(WORKER_STATES.map((s) => [s, 0]));
    for (const w of snapshot.workers) {
      states.set(w.state, (states.get(w.state) ?? 0) + 1);
    }
    for (const [state, n] of states) {
      lines.push(`pyproxy_workers{state="${label(state)}"} ${n}`);
    }
    if (snapshot.outOfService !== undefined) {
      // Failed slots come back after their cool-down, such a model does
      // not: pyproxy_workers forgets it within a minute, this does not.
      family(
        "pyproxy_models_out_of_service",
        "gauge",
        "Models taken out of service (placed ones that crashed the workers they were placed on, any that killed its worker twice soon after its load, or whose load failed on a restarted worker): their calls fail with 503 until a PUT (or a restart) loads them again; /v1/status says why.",
      );
      lines.push(`pyproxy_models_out_of_service ${snapshot.outOfService}`);
    }
    if (snapshot.modelReady !== undefined && snapshot.modelReady.size > 0) {
      family(
        "pyproxy_models_ready",
        "gauge",
        "1 when a model (a version) can take calls now: in service, and a worker that holds it is ready (GET /v2/models/{name}/ready); 0 otherwise.",
      );
      for (const [model, ready] of snapshot.modelReady) {
        lines.push(
          `pyproxy_models_ready{${modelLabels(model)}} ${ready ? 1 : 0}`,
        );
      }
    }
    if (snapshot.subscribers !== undefined) {
      family(
        "pyproxy_channel_subscribers",
        "gauge",
        "Live channel subscribers.",
      );
      lines.push(`pyproxy_channel_subscribers ${snapshot.subscribers}`);
    }
    if (snapshot.droppedSubscribers !== undefined) {
      family(
        "pyproxy_channel_subscribers_dropped_total",
        "counter",
        "Channel subscribers dropped as too slow, or with their channel when a full hub is shared out among tenants (they lost messages).",
      );
      lines.push(
        `pyproxy_channel_subscribers_dropped_total ${snapshot.droppedSubscribers}`,
      );
    }
    if (snapshot.droppedSpans !== undefined) {
      family(
        "pyproxy_trace_spans_dropped_total",
        "counter",
        "Trace spans dropped: the export queue was full (tracing.maxQueue), or the collector refused or missed their batch.",
      );
      lines.push(`pyproxy_trace_spans_dropped_total ${snapshot.droppedSpans}`);
    }
    if (snapshot.tokenFilesRefused !== undefined) {
      family(
        "pyproxy_token_files_refused",
        "gauge",
        "1 while the token files (--token-file, --manage-token-file) could not be used at their last read (unreadable, or not a valid token list): the gateway keeps the tokens in force, and a restart would fail on the files; 0 otherwise.",
      );
      lines.push(
        `pyproxy_token_files_refused ${snapshot.tokenFilesRefused ? 1 : 0}`,
      );
    }
    if (snapshot.queued !== undefined) {
      family(
        "pyproxy_queued_calls",
        "gauge",
        "Calls waiting in the pool queue for a worker slot (limits.maxInFlightPerWorker); 429 past limits.maxQueue.",
      );
      lines.push(`pyproxy_queued_calls ${snapshot.queued}`);
    }
    const waits = snapshot.queueWaits;
    if (waits !== undefined) {
      family(
        "pyproxy_queue_wait_seconds",
        "histogram",
        'Seconds calls waited in the pool queue, by outcome: "sent" to a worker (model calls, streams, evals; 0 for those sent at once), or left unsent: "timeout", "cancelled", "failed" (no worker left, pool closing).',
      );
      const histogram = (
        outcome: string,
        h: { buckets: readonly number[]; count: number; sum: number },
      ): void => {
        waits.le.forEach((le, i) => {
          lines.push(
            `pyproxy_queue_wait_seconds_bucket{outcome="${outcome}",le="${le}"} ${
              h.buckets[i]
            }`,
          );
        });
        lines.push(
          `pyproxy_queue_wait_seconds_bucket{outcome="${outcome}",le="+Inf"} ${h.count}`,
          `pyproxy_queue_wait_seconds_sum{outcome="${outcome}"} ${h.sum}`,
          `pyproxy_queue_wait_seconds_count{outcome="${outcome}"} ${h.count}`,
        );
      };
      histogram("sent", waits);
      // Every outcome always listed (zeros too): a bounded, stable set of series.
      for (const outcome of QUEUE_WAIT_OUTCOMES) {
        const h = waits.abandoned?.[outcome];
        if (h !== undefined) histogram(outcome, h);
      }
      if (waits.models !== undefined && waits.models.size > 0) {
        modelWaitLines(waits.le, waits.models, family, lines);
      }
    }
    if (snapshot.evalReplayBytes !== undefined) {
      family(
        "pyproxy_eval_replay_bytes",
        "gauge",
        "Eval output the running evals keep for replay, in UTF-16 code units (bounded by limits.evalReplayBudget).",
      );
      lines.push(`pyproxy_eval_replay_bytes ${snapshot.evalReplayBytes}`);
    }
    family(
      "pyproxy_uptime_seconds",
      "gauge",
      "Seconds since the gateway started.",
    );
    lines.push(`pyproxy_uptime_seconds ${(Date.now() - this.#started) / 1000}`);
    const build = snapshot.build;
    if (build !== undefined) {
      family(
        "pyproxy_build_info",
        "gauge",
        "What runs: pyproxy's version, the runtime and its version, the workers' Python version; always 1.",
      );
      lines.push(
        `pyproxy_build_info{version="${label(build.version)}",runtime="${
          label(build.runtime)
        }",runtime_version="${label(build.runtimeVersion)}",python_version="${
          label(build.python)
        }"} 1`,
      );
    }
    const limits = snapshot.limits;
    if (limits !== undefined) {
      for (const [name, key, help] of LIMIT_GAUGES) {
        const value = limits[key];
        if (value === undefined) continue;
        family(name, "gauge", help);
        lines.push(`${name} ${sampleValue(value)}`);
      }
    }
    if (snapshot.process !== undefined) {
      processLines(snapshot.process, family, lines);
    }
    if (snapshot.workerResources !== undefined) {
      family(
        "pyproxy_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of each worker's Python process in bytes (Linux /proc; workers with a live process only).",
      );
      for (const w of snapshot.workerResources) {
        lines.push(
          `pyproxy_worker_resident_memory_bytes{${workerLabels(w)}} ${w.rss}`,
        );
      }
      family(
        "pyproxy_worker_cpu_seconds_total",
        "counter",
        "CPU seconds (user and system) of each worker's Python process; from 0 again after a restart (Linux /proc).",
      );
      for (const w of snapshot.workerResources) {
        lines.push(
          `pyproxy_worker_cpu_seconds_total{${
            workerLabels(w)
          }} ${w.cpuSeconds}`,
        );
      }
    }
    if (snapshot.modelMetrics !== undefined) {
      lines.push(...modelLines(snapshot.modelMetrics, families));
    }
    // Also the names a histogram's series take.
    for (const name of [...families]) {
      for (const suffix of ["_bucket", "_sum", "_count"]) {
        families.add(name + suffix);
      }
    }
    lines.push(...pluginLines(snapshot.plugins ?? [], families));
    return lines.join("\n") + "\n";
  }

  /** The responses by status, over the routes. */
  #httpByStatus(): Map<number, number> {
    const total = new Map<number, number>();
    for (const statuses of this.#http.values()) {
      for (const [status, n] of statuses) {
        total.set(status, (total.get(status) ?? 0) + n);
      }
    }
    return total;
  }

  #stats(model: string): ModelStats {
    let stats = this.#models.get(model);
    if (stats) return stats;
    // Past the bound, only a model loaded now gets series of its own: the
    // models bound those, `maxModels` the other names.
    if (
      this.#models.size >= this.#maxModels && model !== "_other" &&
      model !== UNKNOWN && this.#isModel?.(model) !== true
    ) {
      return this.#stats("_other");
    }
    stats = {
      requests: new Map(),
      inFlight: 0,
      buckets: this.#buckets.map(() => 0),
      count: 0,
      sum: 0,
      failSum: 0,
      last: -1,
    };
    this.#models.set(model, stats);
    return stats;
  }
}

/**
 * `pyproxy_queue_wait_by_model_seconds`: each model's calls that queued, by
 * outcome (`sent` always, once the model has an entry; the others once
 * some call left that way: a model whose calls never queue adds nothing).
 */
function modelWaitLines(
  le: readonly number[],
  models: ReadonlyMap<string, QueueWaitModelStats>,
  family: (name: string, type: string, help: string) => void,
  lines: string[],
): void {
  const name = "pyproxy_queue_wait_by_model_seconds";
  family(
    name,
    "histogram",
    'Seconds the calls of each model that waited in the pool queue waited there, by outcome ("sent", or left unsent: "timeout", "cancelled", "failed"); calls sent at once are not in it.',
  );
  for (const [model, stats] of models) {
    const m = modelLabels(model);
    const histogram = (outcome: string, h: QueueWaitHistogram): void => {
      const labels = `${m},outcome="${outcome}"`;
      le.forEach((bound, i) => {
        lines.push(`${name}_bucket{${labels},le="${bound}"} ${h.buckets[i]}`);
      });
      lines.push(
        `${name}_bucket{${labels},le="+Inf"} ${h.count}`,
        `${name}_sum{${labels}} ${h.sum}`,
        `${name}_count{${labels}} ${h.count}`,
      );
    };
    histogram("sent", stats.sent);
    for (const outcome of QUEUE_WAIT_OUTCOMES) {
      const h = stats.abandoned[outcome];
      if (h.count > 0) histogram(outcome, h);
    }
  }
}

/** The gateway's process as the standard `process_*` metrics, and its JS heap. */
function processLines(
  p: ProcessResources,
  family: (name: string, type: string, help: string) => void,
  lines: string[],
): void {
  const gauge = (name: string, help: string, value: number | undefined) => {
    if (value === undefined) return;
    family(name, name.endsWith("_total") ? "counter" : "gauge", help);
    lines.push(`${name} ${value}`);
  };
  gauge(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
    p.cpuSeconds,
  );
  gauge(
    "process_resident_memory_bytes",
    "Resident memory size in bytes.",
    p.rss,
  );
  gauge(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
    p.startTime,
  );
  gauge("process_open_fds", "Number of open file descriptors.", p.openFds);
  gauge(
    "process_max_fds",
    "Maximum number of open file descriptors.",
    p.maxFds,
  );
  gauge(
    "pyproxy_js_heap_used_bytes",
    "JS heap in use in bytes (V8's under Deno, JavaScriptCore's under Bun).",
    p.heapUsed,
  );
  gauge(
    "pyproxy_js_heap_total_bytes",
    "JS heap reserved in bytes (V8's under Deno; JavaScriptCore's under Bun, where it is the heap in use).",
    p.heapTotal,
  );
}

/** A worker's labels: `worker="w1",slot="0"` (`slot` when the pool says). */
function workerLabels(w: WorkerResources): string {
  return w.index === undefined
    ? `worker="${label(w.id)}"`
    : `worker="${label(w.id)}",slot="${w.index}"`;
}

/** Worker states, each always rendered in `pyproxy_workers` (a state added to `WorkerState` must be listed: the type says so). */
const WORKER_STATES = Object.keys(
  {
    starting: true,
    ready: true,
    draining: true,
    stopped: true,
    restarting: true,
    failed: true,
  } satisfies Record<WorkerState, true>,
);

/** The label of requests for models that do not exist. */
const UNKNOWN = "_unknown";

/**
 * The `model` label values the metrics use for calls of no single model
 * (`_unknown`: models that do not exist; `_other`: names past `maxModels`):
 * the gateway refuses them as model names, whose counts they would mix in.
 *
 * @example
 * ```ts
 * import { RESERVED_MODEL_NAMES } from "./metrics.ts";
 * console.log(RESERVED_MODEL_NAMES.includes("_unknown")); // true
 * ```
 */
export const RESERVED_MODEL_NAMES: readonly string[] = Object.freeze([
  UNKNOWN,
  "_other",
]);

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * The plugins' samples as exposition lines, grouped by name (each family
 * once, with the HELP and TYPE of its first sample, all its samples
 * together as the format requires). `taken`: the gateway's own names.
 */
function pluginLines(
  samples: readonly PluginMetric[],
  taken: ReadonlySet<string>,
): string[] {
  const byName = new Map<string, PluginMetric[]>();
  for (const m of samples) {
    if (
      typeof m?.name !== "string" || !METRIC_NAME.test(m.name) ||
      taken.has(m.name) || typeof m.value !== "number" ||
      (m.type !== "counter" && m.type !== "gauge") ||
      !Object.keys(m.labels ?? {}).every((k) =>
        LABEL_NAME.test(k) && !k.startsWith("__")
      )
    ) continue;
    const list = byName.get(m.name);
    if (list === undefined) byName.set(m.name, [m]);
    else list.push(m);
  }
  const lines: string[] = [];
  for (const [name, list] of byName) {
    // A sample whose help or label values cannot be made strings (a throwing
    // toString) is left out, not the scrape.
    const family: string[] = [];
    for (const m of list) {
      try {
        const labels = Object.entries(m.labels ?? {}).map(([k, v]) =>
          `${k}="${label(String(v))}"`
        ).join(",");
        family.push(
          `${name}${labels === "" ? "" : `{${labels}}`} ${
            sampleValue(m.value)
          }`,
        );
      } catch {
        continue;
      }
    }
    let help: string;
    try {
      help = String(list[0]!.help ?? "");
    } catch {
      help = "";
    }
    if (family.length === 0) continue;
    lines.push(
      `# HELP ${name} ${help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`,
      `# TYPE ${name} ${list[0]!.type}`,
      ...family,
    );
  }
  return lines;
}

/** The prefix of the model metrics' names: the gateway's own never start with it. */
const MODEL_PREFIX = "pyproxy_model_";
const HISTOGRAM_SUFFIXES = ["_bucket", "_sum", "_count"];

/**
 * The model metrics as exposition lines, one family per name (its samples
 * together, its HELP and TYPE once), each name under
 * {@linkcode MODEL_PREFIX}; the names they take go into `taken` (plugins
 * cannot take them). Names and labels were checked when they came in
 * (`ModelMetricStore`): only label values and help need escaping.
 */
function modelLines(
  snapshot: ModelMetricsSnapshot,
  taken: Set<string>,
): string[] {
  const lines: string[] = [];
  const dropped = Object.entries(snapshot.dropped);
  if (dropped.length > 0) {
    const name = "pyproxy_dropped_model_series_total";
    taken.add(name);
    lines.push(
      `# HELP ${name} Model metric updates dropped: series past the bounds (modelMetrics option, and 2000 per Python process), or not valid.`,
      `# TYPE ${name} counter`,
    );
    for (const [model, n] of dropped) {
      lines.push(`${name}{${modelLabels(model)}} ${n}`);
    }
  }
  const byName = new Map<string, ModelMetricsSnapshot["series"]>();
  for (const s of snapshot.series) {
    const list = byName.get(s.name);
    if (list === undefined) byName.set(s.name, [s]);
    else list.push(s);
  }
  for (const [own, list] of byName) {
    const name = MODEL_PREFIX + own;
    const first = list[0]!;
    // One of two models' names that collide (`x_count` and histogram `x`'s series).
    if (
      taken.has(name) || (first.type === "histogram" &&
        HISTOGRAM_SUFFIXES.some((suffix) => taken.has(name + suffix)))
    ) continue;
    taken.add(name);
    lines.push(
      `# HELP ${name} ${
        // An empty description is none: "# HELP name " says nothing.
        (first.help ||
          `Recorded by model code (pyproxy.metrics.${first.type}).`)
          .replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`,
      `# TYPE ${name} ${first.type}`,
    );
    for (const s of list) {
      let labels = modelLabels(s.model ?? "");
      for (const [k, v] of Object.entries(s.labels)) {
        labels += `,${k}="${label(v)}"`;
      }
      if (s.worker !== undefined) labels += `,worker="${label(s.worker)}"`;
      if (s.type !== "histogram") {
        lines.push(`${name}{${labels}} ${sampleValue(s.value ?? 0)}`);
        continue;
      }
      const bounds = s.buckets ?? [];
      const counts = s.counts ?? [];
      let cumulative = 0;
      for (let i = 0; i < bounds.length; i++) {
        cumulative += counts[i] ?? 0;
        lines.push(
          `${name}_bucket{${labels},le="${bounds[i]}"} ${cumulative}`,
        );
      }
      lines.push(
        `${name}_bucket{${labels},le="+Inf"} ${s.count ?? 0}`,
        `${name}_sum{${labels}} ${sampleValue(s.sum ?? 0)}`,
        `${name}_count{${labels}} ${s.count ?? 0}`,
      );
    }
    for (const suffix of HISTOGRAM_SUFFIXES) taken.add(name + suffix);
  }
  return lines;
}

/** A number as the exposition format writes it (`+Inf`, `-Inf`, `NaN`). */
function sampleValue(n: number): string {
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

/**
 * The labels of a model's series: `model="name"`, and for a version of a
 * model with versions (the pool's `name@version`; a gateway model name has
 * no `@`) `model="name",version="label"` (docs/models.md, "Versions").
 */
function modelLabels(model: string): string {
  const at = model.lastIndexOf("@");
  return at <= 0
    ? `model="${label(model)}"`
    : `model="${label(model.slice(0, at))}",version="${
      label(model.slice(at + 1))
    }"`;
}

function label(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(
    /\n/g,
    "\\n",
  );
}
