/**
 * Validation and defaults for {@linkcode PoolOptions}: one valibot schema, so
 * a bad option fails early with a `ConfigError` naming the field.
 *
 * @module
 */
import * as v from "valibot";
import { unixByDefault } from "./python_server.ts";
import { getLogger } from "@logtape/logtape";
import type { Logger } from "./logger.ts";
import { ConfigError } from "./errors.ts";
import { defaultRuntime } from "./runtime/mod.ts";
import type { Runtime } from "./runtime/types.ts";
import type { PluginsOption } from "./plugin.ts";
import type { PlacementOptions, PoolOptions } from "./pool.ts";
import type { ModelMetricsOptions } from "./model_metrics.ts";
import {
  partLogger,
  type PythonLoggers,
  pythonLoggers,
} from "./_python_log.ts";
import { plainRecord } from "./_plain_record.ts";
import { closestName } from "./_closest_name.ts";

/** {@linkcode PoolOptions} with every default filled in. */
export interface ResolvedPoolOptions {
  /** Number of worker slots. */
  workers: number;
  /** Python executable. */
  python: string;
  /** The servers' `--path`, or undefined for a fresh temp dir. */
  modelsDir: string | undefined;
  /** Where the servers write their log files (`Pool.start` sets its default), or undefined for `<modelsDir>/logs` of a temporary models directory. */
  logDir: string | undefined;
  /** Bind address of the servers. */
  host: string;
  /** Socket kind. */
  transport: "tcp" | "unix";
  /** The `plugins` option as given. */
  plugins: PluginsOption;
  /** In-flight bound per worker. */
  maxInFlightPerWorker: number;
  /** Parked streams per worker that hold no in-flight slot. */
  maxParkedPerWorker: number;
  /** Bound of the pool queue. */
  maxQueue: number;
  /** Eval output kept for replay over all running evals (UTF-16 code units; `Infinity`: none). */
  evalReplayBudget: number;
  /** Default call timeout in ms, or undefined for none. */
  requestTimeout: number | undefined;
  /** Default idle timeout of a stream's reader in ms (`Infinity`: none). */
  streamIdleTimeout: number;
  /** Default timeout of model commands and of a restarted worker's model replay, in ms (`Infinity`: none). */
  loadTimeout: number;
  /** How long close() lets in-flight calls finish, in ms. */
  shutdownGrace: number;
  /** How long a server may take to print its ready line, in ms. */
  readyTimeout: number;
  /** The handshake's bound when `readyTimeout` is `Infinity`, in ms (`Infinity`: none). */
  handshakeTimeout: number;
  /** How long an asynchronous plugin hook may take, in ms (`Infinity`: no limit). */
  hookTimeout: number;
  /** Retries of an `idempotent` call whose worker crashed. */
  maxRetries: number;
  /** Window after a model's load in which a worker death counts against it (0: off). */
  loadCrashWindow: number;
  /** The bound on moving a placed model that crashes its workers. */
  placement: Required<PlacementOptions>;
  /** Close the pool and exit on SIGINT/SIGTERM. */
  handleSignals: boolean;
  /** Runtime adapter. */
  runtime: Runtime;
  /** Logger. */
  logger: Logger;
  /** The loggers of what model code prints, by model name. */
  pythonLoggers: PythonLoggers;
  /** With a logger of the caller's: the workers' sessions' (else their own). */
  sessionLogger: Logger | undefined;
  /** With a logger of the caller's: the servers' launcher and stderr (else their own). */
  serverLogger: Logger | undefined;
  /** Extra environment of a worker. */
  env: (
    workerId: string,
    slot: { index: number },
  ) => Record<string, string> | undefined;
  /** Extra server arguments of a worker. */
  serverArgs: (workerId: string) => string[] | undefined;
  /** Frame size limit, or undefined for the default. */
  maxFrameSize: number | undefined;
  /** Workers run under `SCHED_BATCH`. */
  schedBatch: boolean;
  /** How much the workers raise their `oom_score_adj`. */
  oomScoreAdj: number;
  /** How integers beyond ±2^53 are exchanged. */
  integers: "number" | "bigint";
  /** Bounds of the model metrics. */
  modelMetrics: Required<ModelMetricsOptions>;
}

const int = (min: number) => {
  const message = `expected an integer >= ${min}`;
  return v.optional(
    v.pipe(v.number(message), v.integer(message), v.minValue(min, message)),
  );
};
const positive = v.optional(
  v.pipe(
    v.number("expected a number > 0"),
    v.gtValue(0, "expected a number > 0"),
  ),
);
const text = v.optional(
  v.pipe(
    v.string("expected a non-empty string"),
    v.minLength(1, "expected a non-empty string"),
  ),
);
const isObject = (x: unknown): boolean => typeof x === "object" && x !== null;
/** What the pool calls on its runtime (see `Runtime`). */
const RUNTIME_METHODS = [
  "connect",
  "spawn",
  "serve",
  "mkdir",
  "makeTempDir",
  "remove",
  "readFile",
  "writeFile",
  "openWrite",
  "openRead",
  "stat",
  "readDir",
  "realPath",
  "env",
  "cpuCount",
  "pid",
  "memoryRss",
  "onSignal",
  "exit",
  "args",
  "tempDir",
  "shmDir",
] as const;
const missingRuntimeMethods = (r: unknown): string[] =>
  RUNTIME_METHODS.filter((m) =>
    typeof (r as Record<string, unknown>)[m] !== "function"
  );
const plugin = v.custom<unknown>(
  (p) => isObject(p) && typeof (p as { name?: unknown }).name === "string",
  "expected a plugin object with a name",
);
const plugins = v.union([
  v.array(
    plugin,
    "expected an array of plugins or { defaults?, use?, remove? }",
  ),
  v.strictObject({
    defaults: v.optional(v.boolean("expected a boolean")),
    use: v.optional(v.array(plugin, "expected an array of plugins")),
    remove: v.optional(
      v.array(v.string(), "expected an array of plugin names"),
    ),
  }, "expected an array of plugins or { defaults?, use?, remove? }"),
], "expected an array of plugins or { defaults?, use?, remove? }");

const schema = v.strictObject({
  // As the gateway's bound: each worker is a process (1e9 ran Deno out of memory).
  workers: v.optional(
    v.pipe(
      v.number("expected an integer from 1 to 1024"),
      v.integer("expected an integer from 1 to 1024"),
      v.minValue(1, "expected an integer from 1 to 1024"),
      v.maxValue(1024, "expected an integer from 1 to 1024"),
    ),
  ),
  python: text,
  modelsDir: text,
  logDir: text,
  host: text,
  transport: v.optional(
    v.picklist(["tcp", "unix"], 'expected "tcp" or "unix"'),
  ),
  plugins: v.optional(plugins),
  maxInFlightPerWorker: int(1),
  maxParkedPerWorker: int(0),
  maxQueue: int(0),
  evalReplayBudget: v.optional(
    v.pipe(
      v.number("expected a number >= 0"),
      v.minValue(0, "expected a number >= 0"),
    ),
  ),
  requestTimeout: positive,
  streamIdleTimeout: positive,
  loadTimeout: positive,
  shutdownGrace: int(0),
  readyTimeout: positive,
  handshakeTimeout: positive,
  hookTimeout: positive,
  maxRetries: int(0),
  loadCrashWindow: int(0),
  placement: v.optional(v.strictObject({
    maxRelocations: v.optional(
      v.custom<number>(
        (x) => x === Infinity || (Number.isInteger(x) && (x as number) >= 0),
        "expected an integer >= 0, or Infinity",
      ),
    ),
    relocationWindow: positive,
    settingName: v.optional(
      v.custom<(option: string) => string>(
        (x) => typeof x === "function",
        "expected a function",
      ),
    ),
  }, "expected { maxRelocations?, relocationWindow?, settingName? }")),
  handleSignals: v.optional(v.boolean("expected a boolean")),
  runtime: v.optional(
    v.custom<unknown>(
      (r) => isObject(r) && missingRuntimeMethods(r).length === 0,
      (issue) =>
        isObject(issue.input)
          ? `expected a Runtime object (missing ${
            missingRuntimeMethods(issue.input).join(", ")
          })`
          : "expected a Runtime object",
    ),
  ),
  logger: v.optional(v.custom<unknown>(isObject, "expected a logtape Logger")),
  env: v.optional(v.union([
    plainRecord(v.string(), "expected a record of strings or a function"),
    v.function(),
  ], "expected a record of strings or a function")),
  serverArgs: v.optional(v.union([
    v.array(v.string(), "expected an array of strings or a function"),
    v.function(),
  ], "expected an array of strings or a function")),
  // Smaller, and the handshake's own messages would not fit (the pool would
  // time out starting instead of saying why).
  maxFrameSize: int(4096),
  schedBatch: v.optional(v.boolean("expected a boolean")),
  oomScoreAdj: v.optional(v.pipe(
    v.number("expected an integer from 0 to 1000"),
    v.integer("expected an integer from 0 to 1000"),
    v.minValue(0, "expected an integer from 0 to 1000"),
    v.maxValue(1000, "expected an integer from 0 to 1000"),
  )),
  integers: v.optional(
    v.picklist(["number", "bigint"], 'expected "number" or "bigint"'),
  ),
  modelMetrics: v.optional(v.strictObject({
    maxSeriesPerModel: int(0),
    maxSeries: int(0),
  }, "expected { maxSeriesPerModel?, maxSeries }")),
}, "expected an options object");

/**
 * The default `loadTimeout`, as the gateway's `limits.loadTimeout`: a model
 * import or `__init__` that hangs (a lock, a network drive) must not hold an
 * `addModel` or a restarted worker's replay for ever.
 */
const DEFAULT_LOAD_TIMEOUT = 120_000;

/**
 * The default `handshakeTimeout`: a server that printed its ready line
 * answers the handshake at once on any machine; 10 s is the session's own
 * `connectTimeout` default.
 */
const DEFAULT_HANDSHAKE_TIMEOUT = 10_000;

/**
 * The default `evalReplayBudget`: 64 Mi code units, as the registry of
 * finished atoms and the gateway's channel histories. Eight evals keep their
 * whole 8 Mi `replayBytes`; 128 running at once (two workers of 64) keep
 * ~512 Ki each instead of 1 GiB together.
 */
const DEFAULT_EVAL_REPLAY_BUDGET = 64 * 1024 * 1024;

/**
 * The default `streamIdleTimeout` of a library pool: 5 minutes. A program's
 * reader may work on one item for a while (write it to a database, call
 * another service) and is no network client that froze; a forgotten stream
 * (no `await using`, no `cancel()`) still gives back its generator, its items
 * and its slot within minutes, not never. The gateway, whose readers are
 * sockets, uses 60 s (`limits.streamIdleTimeout`, as nginx's `send_timeout`).
 */
const DEFAULT_STREAM_IDLE_TIMEOUT = 300_000;

/**
 * "unknown option", with the known one of its object most like it: an
 * untyped caller (JavaScript, Bun without a type check) who wrote `worker`
 * learns of `workers`.
 */
function unknownOption(keys: string[]): string {
  let at: unknown = schema;
  for (const key of keys.slice(0, -1)) {
    at = entriesOf(at)?.[key];
    if ((at as { type?: unknown } | undefined)?.type === "optional") {
      at = (at as { wrapped: unknown }).wrapped;
    }
  }
  const siblings = entriesOf(at);
  const near = siblings === undefined
    ? undefined
    : closestName(keys[keys.length - 1]!, Object.keys(siblings));
  return near === undefined
    ? "unknown option"
    : `unknown option (did you mean ${near}?)`;
}

function entriesOf(s: unknown): Record<string, unknown> | undefined {
  return (s as { entries?: Record<string, unknown> } | undefined)?.entries;
}

/**
 * Validates pool options and fills in defaults. Throws `ConfigError`
 * ("Cannot start pool: workers: expected an integer from 1 to 1024").
 *
 * @example
 * ```ts
 * import { resolvePoolOptions } from "./pool_options.ts";
 * console.log(resolvePoolOptions({ workers: 2 }).maxQueue); // 1024
 * ```
 */
export function resolvePoolOptions(
  options: PoolOptions = {},
): ResolvedPoolOptions {
  const parsed = v.safeParse(schema, options);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    const keys = issue.path?.map((p) => String(p.key)) ?? [];
    const path = keys.join(".");
    const message = issue.type === "strict_object" && path !== ""
      ? unknownOption(keys)
      : issue.message;
    throw new ConfigError(
      `Cannot start pool: ${path === "" ? "" : `${path}: `}${message}`,
      {
        details: { field: path },
      },
    );
  }
  const runtime = options.runtime ?? defaultRuntime();
  const env = options.env;
  const args = options.serverArgs;
  return {
    workers: options.workers ?? runtime.cpuCount(),
    python: options.python ?? "python3",
    modelsDir: options.modelsDir,
    logDir: options.logDir,
    host: options.host ?? "127.0.0.1",
    transport: options.transport ?? (unixByDefault() ? "unix" : "tcp"),
    plugins: options.plugins ?? [],
    maxInFlightPerWorker: options.maxInFlightPerWorker ?? 64,
    maxParkedPerWorker: options.maxParkedPerWorker ?? 256,
    maxQueue: options.maxQueue ?? 1024,
    evalReplayBudget: options.evalReplayBudget ?? DEFAULT_EVAL_REPLAY_BUDGET,
    requestTimeout: options.requestTimeout,
    streamIdleTimeout: options.streamIdleTimeout ?? DEFAULT_STREAM_IDLE_TIMEOUT,
    loadTimeout: options.loadTimeout ?? DEFAULT_LOAD_TIMEOUT,
    shutdownGrace: options.shutdownGrace ?? 5000,
    readyTimeout: options.readyTimeout ?? 15000,
    handshakeTimeout: options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT,
    hookTimeout: options.hookTimeout ?? 30_000,
    maxRetries: options.maxRetries ?? 2,
    loadCrashWindow: options.loadCrashWindow ?? 3000,
    placement: {
      maxRelocations: options.placement?.maxRelocations ?? 2,
      relocationWindow: options.placement?.relocationWindow ?? 600_000,
      settingName: options.placement?.settingName ??
        ((option) => `placement.${option}`),
    },
    handleSignals: options.handleSignals ?? true,
    runtime,
    logger: options.logger ?? getLogger(["pyproxy", "pool"]),
    pythonLoggers: pythonLoggers(options.logger),
    sessionLogger: partLogger(options.logger, ["session"]),
    serverLogger: partLogger(options.logger, ["python-server"]),
    env: typeof env === "function" ? env : () => env,
    serverArgs: typeof args === "function" ? args : () => args,
    maxFrameSize: options.maxFrameSize,
    schedBatch: options.schedBatch ?? false,
    oomScoreAdj: options.oomScoreAdj ?? 500,
    integers: options.integers ?? "number",
    modelMetrics: {
      maxSeriesPerModel: options.modelMetrics?.maxSeriesPerModel ?? 1000,
      maxSeries: options.modelMetrics?.maxSeries ?? 10000,
    },
  };
}
