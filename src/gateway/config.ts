/**
 * Loading the gateway configuration: `pyproxy.json` validated with valibot,
 * merged under the command-line flags, with defaults applied.
 *
 * @module
 */
import type { TracingOptions } from "./tracing_options.ts";
import { otelEnv, type OtelField } from "./_otel_env.ts";
import { otlpTlsFiles, readOtlpTls } from "./_otlp_tls.ts";

/** The fields of `tracing` the OpenTelemetry variables can set, checked. */
const OTEL_FIELDS: readonly OtelField[] = [
  "headers",
  "resourceAttributes",
  "sampleRatio",
  "maxQueue",
  "batchIntervalMs",
  "batchSize",
  "exportTimeoutMs",
  "compression",
  "propagation",
];

/**
 * Where a token may come from, as the refusal of a non-loopback address
 * without one lists them: the token file too, a mounted secret being what a
 * container deployment has (newcomer21: the message named only the inline
 * ways).
 */
const TOKEN_SOURCES =
  `(--token or --token-file, the PYPROXY_TOKEN or PYPROXY_TOKEN_FILE environment variable, or "token" or "tokenFile" in pyproxy.json)`;
import { DEFAULT_MAX_JSON_DEPTH } from "../_json_depth.ts";
import { randomBytes } from "node:crypto";
import * as v from "valibot";
import { ConfigError } from "../errors.ts";
import { envSizeProblem } from "./_worker_env.ts";
import { MAX_FORWARD_HEADERS } from "./_forward_headers.ts";
import { parseJson } from "../_exact_json.ts";
import { untrustedPath } from "./_untrusted_path.ts";
import { type OpenedFile, readTrusted } from "./_trusted_file_read.ts";
import { untrustedConfigError } from "./_config_file_trust.ts";
import { pluginSpecifierProblem } from "./_plugin_modules.ts";
import type { Runtime } from "../runtime/types.ts";
import { defaultRuntime } from "../runtime/mod.ts";
import {
  ConfigSchema,
  type GatewayConfig,
  type LogFormat,
  type LogLevel,
  modelEntriesProblem,
  type ModelEntry,
} from "./config_schema.ts";
import { type CorsConfig, isLoopback } from "./security.ts";
import { checkToken, readTokenFiles } from "./_token_files.ts";

export type {
  GatewayConfig,
  LogFormat,
  LogLevel,
  ModelEntry,
} from "./config_schema.ts";

/**
 * The effective configuration: file + flags + defaults.
 *
 * @example
 * ```ts
 * import { type ResolvedConfig, resolveConfig } from "@pyproxy/pyproxy";
 * const config: ResolvedConfig = resolveConfig({ cwd: "/srv", cli: { workers: 3 } });
 * console.log(config.workers, config.limits.requestTimeout); // 3 30000
 * ```
 */
export interface ResolvedConfig {
  /** Address to bind. @default {"127.0.0.1"} */
  host: string;
  /** Port to bind (`0` picks a free one). @default {8000} */
  port: number;
  /**
   * The gRPC transport's address and port, how long a connection without
   * calls stays open (ms, `0`: for ever; `serve`'s default when missing) and
   * the infers a `ModelStreamInfer` stream runs at once (absent: 16), the
   * bytes of answers a connection holds unread at most (absent: 64 MiB),
   * and all connections together (absent: 512 MiB), the connections open
   * at once (absent: 1024);
   * `undefined`: off (the default).
   */
  grpc?: {
    hostname: string;
    port: number;
    idleTimeout?: number;
    streamWindow?: number;
    maxUnreadBytes?: number;
    maxUnreadBytesTotal?: number;
    maxConnections?: number;
  };
  /** Python workers. @default {2} */
  workers: number;
  /** Python executable. */
  python?: string;
  /** Absolute directory of the workers' log files. @default {`<modelsDir>/logs`} */
  logDir?: string;
  /**
   * Extra environment of the workers (`{worker}` and `{index}` filled in
   * per worker); the file's, under the command line's.
   * @default {{}}
   */
  env?: Record<string, string>;
  /** Absolute models directory (model files are confined to it). */
  modelsDir: string;
  /** Models to load at start; `"auto"` loads every `*.py` of `modelsDir`. */
  models: ModelEntry[] | "auto";
  /**
   * Plugin options by plugin name (`false` disables a default plugin); a
   * plugin of one's own is `{ module, options? }`, its `module` an
   * absolute path or a `file:` URL, loaded by `serve`.
   */
  plugins: Record<string, Record<string, unknown> | false>;
  /**
   * Plugin modules of the command line (`--plugin`, absolute paths or
   * `file:` URLs), loaded by `serve` after the configured plugins, their
   * factories called without options.
   */
  pluginModules?: string[];
  /** Request and pool limits. */
  limits: {
    bodyLimit: number;
    /** Most digits of an integer literal in a request body. */
    maxIntegerDigits: number;
    /** Deepest nesting of arrays and objects in a request body. */
    maxJsonDepth: number;
    requestTimeout: number;
    loadTimeout: number;
    streamIdleTimeout: number;
    /** Silence (ms) after which a model stream sends `: keep-alive`. */
    streamKeepAlive: number;
    /** Bound (ms) of a model stream's time to its first item; absent: none. */
    streamFirstItemTimeout?: number;
    /** Idle keep-alive bound after a fixed answer, ms (Bun only). */
    keepAliveTimeout: number;
    shutdownGrace: number;
    /**
     * Milliseconds served after SIGINT/SIGTERM before the drain, readiness
     * saying not ready (0: the drain starts at once).
     */
    shutdownDelay: number;
    maxInFlightPerWorker?: number;
    maxQueue?: number;
    evalReplayBudget?: number;
    /** Series of model metrics per model (the pool's `modelMetrics.maxSeriesPerModel`). */
    modelMetricSeriesPerModel?: number;
    /** Series of model metrics in all (the pool's `modelMetrics.maxSeries`). */
    modelMetricSeries?: number;
    /** The pool's `placement.maxRelocations`. */
    maxRelocations?: number;
    /** The pool's `placement.relocationWindow`, in ms. */
    relocationWindow?: number;
    /** The pool's `loadCrashWindow`, in ms (0: off). */
    loadCrashWindow?: number;
  };
  /** Channel buffers, and each tenant's share of the channels. */
  channels: {
    historySize: number;
    bufferSize: number;
    tenantMaxChannels: number;
    tenantMaxSubscribers: number;
    tenantMaxHistoryBytes: number;
  };
  /**
   * Bearer token (required when `host` is not loopback; generated when eval
   * or model management is on and none is set: see `tokenGenerated`).
   */
  token?: string | string[];
  /**
   * The management token(s): when set, eval and model management take only
   * these, and answer `token` with 403 (docs/gateway.md, "Security").
   * Requires `token` (generated when missing).
   */
  manageToken?: string | string[];
  /**
   * The file `token` is read from (absolute): one token a line, read by
   * {@linkcode loadConfig} and again by `serve` at start, on a reload and
   * when it changes (docs/gateway.md, "Security"). `token` holds what was
   * read (nothing yet in a configuration from {@linkcode resolveConfig}).
   */
  tokenFile?: string;
  /**
   * Of `token`'s tokens, the tenants': those `tokenFile` marks `tenant`
   * (`<token> tenant`). They call models, but not the operator's views
   * (`/metrics`, `/v1/status`, the dashboard, channels' list and publish,
   * statistics, eval, management): docs/gateway.md, "Serving many
   * tenants". Only a token file marks them.
   */
  tenantToken?: string[];
  /** The file `manageToken` is read from, as `tokenFile` for `token`. */
  manageTokenFile?: string;
  /**
   * How often `serve` reads the token files to notice a change, in ms
   * (`0`: only on a reload); set with a token file.
   */
  tokenFileInterval?: number;
  /**
   * How often `serve` reads the TLS files (`tls`) to notice a renewed
   * certificate, in ms (`0`: only on a reload); set with `tls`.
   */
  tlsFileInterval?: number;
  /**
   * TLS: the certificate chain's and private key's PEM files (paths
   * resolved, read by `serve` at start).
   */
  tls?: { cert: string; key: string };
  /**
   * `true` when `token` was generated by {@linkcode resolveConfig}: eval or
   * model management was turned on without a token, and without one every
   * local user could use them. `serve` prints it, as Jupyter prints its own.
   */
  tokenGenerated?: boolean;
  /** Extra allowed `Host` header values. */
  allowedHosts: string[];
  /** Request headers that reach the models, lower-case, each once (none by default). */
  forwardHeaders: string[];
  /** Gzip for large model results (`false`: off, the default). */
  compress: false | { minBytes: number };
  /**
   * OpenTelemetry tracing (off unless an endpoint is set: the flag's, the
   * file's, then `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
   * `OTEL_EXPORTER_OTLP_ENDPOINT`; off with `OTEL_SDK_DISABLED=true`).
   */
  tracing?: TracingOptions;
  /** CORS (off unless set). */
  cors?: CorsConfig;
  /** Enables `POST /v1/eval`. */
  allowEval: boolean;
  /** A client that disconnects cancels its execute call. */
  cancelOnDisconnect: boolean;
  /** Workers run under Linux `SCHED_BATCH` (they do not preempt the gateway's thread). */
  schedBatch: boolean;
  /** How much the workers raise their Linux `oom_score_adj` (the OOM killer takes one before the gateway). */
  oomScoreAdj: number;
  /** Enables `PUT`/`DELETE /v1/models/{name}`. */
  allowManage: boolean;
  /** Includes Python tracebacks in error responses. */
  debug: boolean;
  /** Default log level of the `pyproxy` category. */
  logLevel: LogLevel;
  /** Levels by category, e.g. `{"pyproxy.pool": "debug"}`. */
  logLevels: Record<string, LogLevel>;
  /** How `serve` writes its log: text lines, or one JSON object a line. */
  logFormat: LogFormat;
  /** The config file used, if any. */
  configPath?: string;
}

/** Defaults applied under the file and the flags. */
export const DEFAULTS = {
  host: "127.0.0.1",
  port: 8000,
  workers: 2,
  bodyLimit: 1024 * 1024,
  // Python's own default (sys.get_int_max_str_digits()).
  maxIntegerDigits: 4300,
  // Under what Python decodes and the host's walk allows (src/_json_depth.ts).
  maxJsonDepth: DEFAULT_MAX_JSON_DEPTH,
  requestTimeout: 30_000,
  loadTimeout: 120_000,
  streamIdleTimeout: 60_000,
  // Under the read timeouts of proxies (nginx's 60 s, an ALB's 60 s idle).
  streamKeepAlive: 15_000,
  keepAliveTimeout: 75_000,
  shutdownGrace: 10_000,
  shutdownDelay: 0,
  historySize: 50,
  bufferSize: 256,
  // A tenant's share: a tenth of the hub's 1000 channels, an eighth of its
  // 64 MiB of history.
  tenantMaxChannels: 100,
  tenantMaxSubscribers: 1000,
  tenantMaxHistoryBytes: 8 * 1024 * 1024,
  compressMinBytes: 1024,
  // gRPC clients reconnect by themselves; an idle connection costs a socket
  // and nghttp2's state for nothing.
  grpcIdleTimeout: 300_000,
  // A rotation writes the new token beside the old one, and removes the
  // old one only once the clients moved: seconds do not matter.
  tokenFileInterval: 10_000,
  // A certificate manager renews days before the expiry (cert-manager: at
  // two thirds of the lifetime), and the kubelet takes up to a minute to
  // update a mounted secret: a minute more does not matter.
  tlsFileInterval: 60_000,
  logLevel: "info" as LogLevel,
} as const;

/**
 * `tracing` from the flags, the file and the OpenTelemetry variables, field
 * by field: the endpoint is the flag's, else the file's, else the
 * variables'; `serviceName`, `headers`, `sampleRatio`, `maxQueue`,
 * `batchIntervalMs`, `batchSize` and `exportTimeoutMs` the file's, else the
 * variables'; no endpoint (or `OTEL_SDK_DISABLED=true`), no tracing.
 */
function resolveTracing(
  file: GatewayConfig["tracing"],
  cli: GatewayConfig["tracing"],
  env: ResolveConfigOptions["otelEnv"],
): TracingOptions | undefined {
  if (env?.disabled) return undefined;
  const endpoint = cli?.endpoint ?? file?.endpoint ?? env?.endpoint;
  if (endpoint === undefined) return undefined;
  const merged = { ...file, ...cli };
  // A wrong variable fails the start only when tracing uses it: the
  // attributes' always (merged under the file's key by key, a wrong one
  // dropped its entries silently when the file had attributes too).
  for (const field of OTEL_FIELDS) {
    const problem = env?.problems?.[field];
    if (
      problem !== undefined &&
      (merged[field] === undefined || field === "resourceAttributes")
    ) throw problem;
  }
  // The variable's attributes under the file's, key by key (as an SDK
  // merges its environment's resource under the code's); `service.name`
  // among them is the name when nothing else sets one (the spec's order:
  // OTEL_SERVICE_NAME over OTEL_RESOURCE_ATTRIBUTES).
  const attributes = merged.resourceAttributes === undefined &&
      env?.resourceAttributes === undefined
    ? undefined
    : new Map<string, string>([
      ...Object.entries(env?.resourceAttributes ?? {}),
      ...Object.entries(merged.resourceAttributes ?? {}),
    ]);
  // An empty one is none, as an empty OTEL_SERVICE_NAME (and as the file's
  // serviceName cannot be): `service.name=` named the service "".
  const serviceName = merged.serviceName ?? env?.serviceName ??
    (attributes?.get("service.name") || undefined);
  attributes?.delete("service.name");
  const out: TracingOptions = { endpoint };
  if (serviceName !== undefined) out.serviceName = serviceName;
  if (attributes !== undefined && attributes.size > 0) {
    out.resourceAttributes = Object.fromEntries(attributes);
  }
  const sampleRatio = merged.sampleRatio ?? env?.sampleRatio;
  if (sampleRatio !== undefined) out.sampleRatio = sampleRatio;
  const headers = merged.headers ?? env?.headers;
  if (headers !== undefined) out.headers = headers;
  for (
    const field of [
      "maxQueue",
      "batchIntervalMs",
      "batchSize",
      "exportTimeoutMs",
    ] as const
  ) {
    const value = merged[field] ?? env?.[field];
    if (value !== undefined) out[field] = value;
  }
  const compression = merged.compression ?? env?.compression;
  if (compression !== undefined) out.compression = compression;
  const propagation = merged.propagation ?? env?.propagation;
  if (propagation !== undefined) out.propagation = propagation;
  if (merged.maxStreamSpanMs !== undefined) {
    out.maxStreamSpanMs = merged.maxStreamSpanMs;
  }
  return out;
}

/**
 * `compress` from the file and the flags: off unless one turns it on; the
 * flags' `minBytes` over the file's; `true` is the default threshold.
 */
function resolveCompress(
  file: GatewayConfig["compress"],
  cli: GatewayConfig["compress"],
): ResolvedConfig["compress"] {
  const on = cli ?? file;
  if (!on) return false;
  const minBytes = (typeof cli === "object" ? cli.minBytes : undefined) ??
    (typeof file === "object" ? file.minBytes : undefined) ??
    DEFAULTS.compressMinBytes;
  return { minBytes };
}

function formatPath(issue: v.BaseIssue<unknown>): string {
  let out = "";
  for (const item of issue.path ?? []) {
    const key = item.key;
    if (typeof key === "number") out += `[${key}]`;
    else if (!/^[A-Za-z_$][\w$]*$/.test(String(key))) {
      out += `[${JSON.stringify(String(key))}]`;
    } else out += out ? `.${String(key)}` : String(key);
  }
  return out;
}

/**
 * Validates a parsed config object; throws a {@linkcode ConfigError} naming
 * the first bad field and where it is, e.g.
 * `workers: expected an integer from 1 to 1024 (at pyproxy.json: workers)`.
 *
 * @example
 * ```ts
 * import { parseConfig } from "@pyproxy/pyproxy";
 * console.log(parseConfig({ workers: 3 }).workers); // 3
 * try {
 *   parseConfig({ workers: 0 });
 * } catch (err) {
 *   console.log((err as Error).message);
 * }
 * ```
 */
export function parseConfig(
  input: unknown,
  source = "pyproxy.json",
): GatewayConfig {
  if (Array.isArray(input)) {
    throw new ConfigError(`expected an object (at ${source})`, {
      details: { path: "", source },
    });
  }
  const result = v.safeParse(ConfigSchema, input);
  if (result.success) return result.output;
  const issue = result.issues[0];
  const path = formatPath(issue);
  const where = path ? `${path}: ` : "";
  throw new ConfigError(
    `${where}${issue.message} (at ${source}${path ? `: ${path}` : ""})`,
    {
      details: { path, source },
    },
  );
}

/** Joins `path` onto the absolute directory `base` unless it is absolute. */
export function resolvePath(base: string, path: string): string {
  if (path.startsWith("/")) return normalize(path);
  return normalize(`${base.replace(/\/+$/, "")}/${path}`);
}

function normalize(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return "/" + out.join("/");
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/** The examples directory of this checkout, or undefined when not loaded from files (e.g. from JSR). */
function embeddedModelsDir(): string | undefined {
  const url = new URL("../../examples/models", import.meta.url);
  return url.protocol === "file:"
    ? decodeURIComponent(url.pathname)
    : undefined;
}

/**
 * Where each layer's relative paths start from.
 *
 * @example
 * ```ts
 * import { resolveConfig } from "@pyproxy/pyproxy";
 * const config = resolveConfig({
 *   file: { workers: 4, modelsDir: "models" },
 *   fileDir: "/etc/pyproxy",
 *   cli: { port: 9000 },
 *   cwd: "/srv",
 * });
 * console.log(config.modelsDir, config.port); // "/etc/pyproxy/models" 9000
 * ```
 */
export interface ResolveConfigOptions {
  /** The parsed file (`undefined` when there is none). */
  file?: GatewayConfig;
  /** Directory of the file (its relative paths resolve against it). */
  fileDir?: string;
  /** The command-line overrides. */
  cli?: GatewayConfig;
  /** The working directory (command-line paths resolve against it). */
  cwd: string;
  /**
   * Plugin modules of the command line (`--plugin`: paths relative to
   * `cwd`, or `file:` URLs).
   */
  pluginModules?: string[];
  /** `PYPROXY_TOKEN` from the environment, used when neither flag nor file sets a token. */
  envToken?: string;
  /**
   * The OpenTelemetry variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
   * `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_TRACES_SAMPLER`...: docs/gateway.md
   * "Tracing"): under the flags and the file's `tracing`, field by field;
   * `disabled` (`OTEL_SDK_DISABLED=true`) turns tracing off.
   */
  otelEnv?: {
    /** The traces endpoint (the base one's with `/v1/traces`). */
    endpoint?: string;
    /** `OTEL_SERVICE_NAME`. */
    serviceName?: string;
    /** `OTEL_RESOURCE_ATTRIBUTES`. */
    resourceAttributes?: Record<string, string>;
    /** The traces' headers, else the base ones. */
    headers?: Record<string, string>;
    /** From `OTEL_TRACES_SAMPLER` (and its argument). */
    sampleRatio?: number;
    /** `OTEL_BSP_MAX_QUEUE_SIZE`. */
    maxQueue?: number;
    /** `OTEL_BSP_SCHEDULE_DELAY`. */
    batchIntervalMs?: number;
    /** `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`. */
    batchSize?: number;
    /** The exporter's timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`...) and `OTEL_BSP_EXPORT_TIMEOUT`'s smaller. */
    exportTimeoutMs?: number;
    /** `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION`, else `OTEL_EXPORTER_OTLP_COMPRESSION`. */
    compression?: "gzip" | "none";
    /** From `OTEL_PROPAGATORS`. */
    propagation?: "tracecontext" | "none";
    /** `OTEL_SDK_DISABLED=true`. */
    disabled?: true;
    /**
     * A variable set but wrong: thrown when tracing is on and that field
     * comes from the variables.
     */
    problems?: {
      headers?: Error;
      resourceAttributes?: Error;
      sampleRatio?: Error;
      maxQueue?: Error;
      batchIntervalMs?: Error;
      batchSize?: Error;
      exportTimeoutMs?: Error;
      compression?: Error;
      propagation?: Error;
    };
  };
  /** `PYPROXY_MANAGE_TOKEN` from the environment, used when neither flag nor file sets a management token. */
  envManageToken?: string;
  /** `PYPROXY_TOKEN_FILE`, as `envToken` (not with it): a file holding the token(s). */
  envTokenFile?: string;
  /** `PYPROXY_MANAGE_TOKEN_FILE`, as `envManageToken` (not with it). */
  envManageTokenFile?: string;
  /** The config file path, for messages. */
  configPath?: string;
}

/**
 * Merges defaults, file and flags (flags win) and checks the combination:
 * binding a non-loopback address without a token is refused, and eval or
 * model management without a token gets a generated one (`tokenGenerated`).
 *
 * @example
 * ```ts
 * import { resolveConfig } from "@pyproxy/pyproxy";
 * const config = resolveConfig({ cwd: "/srv", cli: { port: 9000 } });
 * console.log(config.host, config.port, config.workers); // "127.0.0.1" 9000 2
 * ```
 */
export function resolveConfig(options: ResolveConfigOptions): ResolvedConfig {
  const file = options.file ?? {};
  const cli = options.cli ?? {};
  const pick = <K extends keyof GatewayConfig>(key: K): GatewayConfig[K] =>
    cli[key] ?? file[key];
  const fileDir = options.fileDir ?? options.cwd;
  let modelsDir: string;
  if (cli.modelsDir !== undefined) {
    modelsDir = resolvePath(options.cwd, cli.modelsDir);
  } else if (file.modelsDir !== undefined) {
    modelsDir = resolvePath(fileDir, file.modelsDir);
  } else modelsDir = embeddedModelsDir() ?? resolvePath(options.cwd, "models");
  const limits = { ...file.limits, ...cli.limits };
  const channels = { ...file.channels, ...cli.channels };
  const tokenFrom = tokenSource("token", file, cli, options);
  const manageFrom = tokenSource("manageToken", file, cli, options);
  const token = tokenFrom?.value;
  const manageToken = manageFrom?.value;
  const config: ResolvedConfig = {
    host: pick("host") ?? DEFAULTS.host,
    port: pick("port") ?? DEFAULTS.port,
    workers: pick("workers") ?? DEFAULTS.workers,
    modelsDir,
    env: { ...file.env, ...cli.env },
    // --models picks a directory: its files are the models unless a list is given with it.
    models: cli.models ??
      (cli.modelsDir !== undefined ? undefined : file.models) ?? "auto",
    plugins: mergePlugins(
      withModulesResolved(file.plugins, fileDir),
      withModulesResolved(cli.plugins, options.cwd),
    ),
    limits: {
      bodyLimit: limits.bodyLimit ?? DEFAULTS.bodyLimit,
      maxIntegerDigits: limits.maxIntegerDigits ?? DEFAULTS.maxIntegerDigits,
      maxJsonDepth: limits.maxJsonDepth ?? DEFAULTS.maxJsonDepth,
      requestTimeout: limits.requestTimeout ?? DEFAULTS.requestTimeout,
      loadTimeout: limits.loadTimeout ?? DEFAULTS.loadTimeout,
      streamIdleTimeout: limits.streamIdleTimeout ??
        DEFAULTS.streamIdleTimeout,
      streamKeepAlive: limits.streamKeepAlive ?? DEFAULTS.streamKeepAlive,
      keepAliveTimeout: limits.keepAliveTimeout ?? DEFAULTS.keepAliveTimeout,
      shutdownGrace: limits.shutdownGrace ?? DEFAULTS.shutdownGrace,
      shutdownDelay: limits.shutdownDelay ?? DEFAULTS.shutdownDelay,
      ...(limits.streamFirstItemTimeout === undefined
        ? {}
        : { streamFirstItemTimeout: limits.streamFirstItemTimeout }),
      ...(limits.maxInFlightPerWorker === undefined
        ? {}
        : { maxInFlightPerWorker: limits.maxInFlightPerWorker }),
      ...(limits.maxQueue === undefined ? {} : { maxQueue: limits.maxQueue }),
      ...(limits.evalReplayBudget === undefined
        ? {}
        : { evalReplayBudget: limits.evalReplayBudget }),
      ...(limits.modelMetricSeriesPerModel === undefined
        ? {}
        : { modelMetricSeriesPerModel: limits.modelMetricSeriesPerModel }),
      ...(limits.modelMetricSeries === undefined
        ? {}
        : { modelMetricSeries: limits.modelMetricSeries }),
      ...(limits.maxRelocations === undefined
        ? {}
        : { maxRelocations: limits.maxRelocations }),
      ...(limits.relocationWindow === undefined
        ? {}
        : { relocationWindow: limits.relocationWindow }),
      ...(limits.loadCrashWindow === undefined
        ? {}
        : { loadCrashWindow: limits.loadCrashWindow }),
    },
    channels: {
      historySize: channels.historySize ?? DEFAULTS.historySize,
      bufferSize: channels.bufferSize ?? DEFAULTS.bufferSize,
      tenantMaxChannels: channels.tenantMaxChannels ??
        DEFAULTS.tenantMaxChannels,
      tenantMaxSubscribers: channels.tenantMaxSubscribers ??
        DEFAULTS.tenantMaxSubscribers,
      tenantMaxHistoryBytes: channels.tenantMaxHistoryBytes ??
        DEFAULTS.tenantMaxHistoryBytes,
    },
    allowedHosts: [...(file.allowedHosts ?? []), ...(cli.allowedHosts ?? [])],
    // HTTP names ignore case: listed twice in any case, forwarded once.
    forwardHeaders: [
      ...new Set(
        [...(file.forwardHeaders ?? []), ...(cli.forwardHeaders ?? [])].map((
          name,
        ) => name.toLowerCase()),
      ),
    ],
    allowEval: pick("allowEval") ?? false,
    cancelOnDisconnect: pick("cancelOnDisconnect") ?? true,
    compress: resolveCompress(file.compress, cli.compress),
    schedBatch: pick("schedBatch") ?? true,
    oomScoreAdj: pick("oomScoreAdj") ?? 500,
    allowManage: pick("allowManage") ?? false,
    debug: pick("debug") ?? false,
    logLevel: pick("logLevel") ?? DEFAULTS.logLevel,
    logLevels: { ...file.logLevels, ...cli.logLevels },
    logFormat: pick("logFormat") ?? "text",
  };
  const grpc = { ...file.grpc, ...cli.grpc };
  if (grpc.port !== undefined) {
    config.grpc = {
      hostname: grpc.hostname ?? config.host,
      port: grpc.port,
      idleTimeout: grpc.idleTimeout ?? DEFAULTS.grpcIdleTimeout,
      ...(grpc.streamWindow === undefined
        ? {}
        : { streamWindow: grpc.streamWindow }),
      ...(grpc.maxUnreadBytes === undefined
        ? {}
        : { maxUnreadBytes: grpc.maxUnreadBytes }),
      ...(grpc.maxUnreadBytesTotal === undefined
        ? {}
        : { maxUnreadBytesTotal: grpc.maxUnreadBytesTotal }),
      ...(grpc.maxConnections === undefined
        ? {}
        : { maxConnections: grpc.maxConnections }),
    };
  }
  if (options.pluginModules !== undefined) {
    config.pluginModules = options.pluginModules.map((spec) => {
      const problem = spec === ""
        ? "expected a module path"
        : pluginSpecifierProblem(spec);
      if (problem !== undefined) {
        throw new ConfigError(
          `--plugin: ${problem} (at command line: --plugin ${spec})`,
          { details: { path: "--plugin", source: "command line" } },
        );
      }
      return moduleSpecifier(options.cwd, spec);
    });
  }
  const python = pick("python");
  if (python !== undefined) config.python = python;
  // "-": the workers log to stderr, into the gateway's log (no file).
  const logDir = cli.logDir ?? file.logDir;
  if (logDir !== undefined) {
    config.logDir = logDir === "-"
      ? "-"
      : resolvePath(cli.logDir !== undefined ? options.cwd : fileDir, logDir);
  }
  const tracing = resolveTracing(file.tracing, cli.tracing, options.otelEnv);
  if (tracing !== undefined) config.tracing = tracing;
  if (token !== undefined) config.token = token;
  if (manageToken !== undefined) config.manageToken = manageToken;
  if (tokenFrom?.path !== undefined) config.tokenFile = tokenFrom.path;
  if (manageFrom?.path !== undefined) config.manageTokenFile = manageFrom.path;
  if (tokenFrom?.path !== undefined || manageFrom?.path !== undefined) {
    config.tokenFileInterval = pick("tokenFileInterval") ??
      DEFAULTS.tokenFileInterval;
  }
  // A token read from a file counts as set: the file is read later
  // (loadConfig, serve), asynchronously.
  const hasToken = config.token !== undefined ||
    config.tokenFile !== undefined;
  const tls = resolveTls(file, cli, options);
  if (tls !== undefined) {
    config.tls = tls;
    config.tlsFileInterval = pick("tlsFileInterval") ??
      DEFAULTS.tlsFileInterval;
  }
  const cors = pick("cors");
  if (cors !== undefined) {
    config.cors = {
      origins: cors.origins,
      ...(cors.credentials === undefined
        ? {}
        : { credentials: cors.credentials }),
      ...(cors.maxAge === undefined ? {} : { maxAge: cors.maxAge }),
    };
  }
  if (options.configPath !== undefined) config.configPath = options.configPath;
  // Without a token, "*" would let any web page call the gateway: through
  // CORS, or through DNS rebinding once the Host check is off.
  if (!hasToken) {
    const open = config.cors?.origins.includes("*")
      ? ["cors", 'cors.origins "*" lets every web page call the gateway']
      : config.allowedHosts.includes("*")
      ? [
        "allowedHosts",
        'allowedHosts "*" turns off the Host check that stops DNS rebinding',
      ]
      : undefined;
    if (open !== undefined) {
      throw new ConfigError(
        `${open[0]}: ${open[1]}: it requires a token ${TOKEN_SOURCES} (at ${
          options.configPath ?? "config"
        }: ${open[0]})`,
        { details: { path: open[0] } },
      );
    }
  }
  // The file's models were checked as it was parsed; a program's (`cli`)
  // here, before any worker starts (the pool would refuse the later entry
  // only once the earlier ones are loaded).
  if (Array.isArray(cli.models)) {
    const problem = modelEntriesProblem(cli.models);
    if (problem !== undefined) {
      throw new ConfigError(
        `models[${problem.index}]: ${problem.message} (at command line: models[${problem.index}])`,
        { details: { path: `models[${problem.index}]` } },
      );
    }
  }
  // Each source was checked alone; together they may be too large to start.
  const envSize = envSizeProblem(config.env ?? {});
  if (envSize !== undefined) {
    throw new ConfigError(
      `env: ${envSize.message} (at ${
        options.configPath ?? "config"
      } and command line: env, --env)`,
      { details: { path: "env" } },
    );
  }
  if (config.cors?.credentials === true && config.cors.origins.includes("*")) {
    throw new ConfigError(
      `cors: credentials cannot be used with the origin "*" (browsers refuse ` +
        `credentialed responses to any origin): list the origins (at ${
          options.configPath ?? "config"
        }: cors)`,
      { details: { path: "cors" } },
    );
  }
  if (!isLoopback(config.host) && !hasToken) {
    throw new ConfigError(
      `Cannot serve on ${config.host}: binding a non-loopback address requires a token ` +
        TOKEN_SOURCES,
      { details: { path: "host" } },
    );
  }
  if (
    config.grpc !== undefined && !isLoopback(config.grpc.hostname) &&
    !hasToken
  ) {
    throw new ConfigError(
      `Cannot serve gRPC on ${config.grpc.hostname}: binding a non-loopback address requires a token ` +
        TOKEN_SOURCES,
      { details: { path: "grpc.hostname" } },
    );
  }
  forwardedAuthorization(config, cli, options);
  if (config.manageToken !== undefined) {
    checkToken("manageToken", config.manageToken, manageFrom!.where);
  }
  if (
    !hasToken &&
    (config.allowEval || config.allowManage ||
      config.manageToken !== undefined || config.manageTokenFile !== undefined)
  ) {
    // Eval runs code as this user, and management imports any .py of the
    // models directory: every local user (any process reaches the loopback)
    // would get both. A random token keeps them to whoever reads the banner.
    // A management token needs an inference token beside it (else the
    // inference routes would take the management one only).
    config.token = randomBytes(24).toString("base64url");
    config.tokenGenerated = true;
    return config;
  }
  if (config.token !== undefined) {
    // The file's and the flag's tokens went through the schema; the
    // environment's did not.
    checkToken("token", config.token, tokenFrom!.where);
    const manage = tokenList(config.manageToken);
    if (tokenList(config.token).some((t) => manage.includes(t))) {
      throw new ConfigError(
        "manageToken: must differ from token (the inference token): with the same one, every client that may call a model could run code and load models",
        { details: { path: "manageToken" } },
      );
    }
  }
  return config;
}

/**
 * A token option as a list (`[]` for none).
 *
 * @example
 * ```ts
 * import { tokenList } from "./config.ts";
 * console.log(tokenList("a"), tokenList(["a", "b"]), tokenList(undefined)); // ["a"] ["a", "b"] []
 * ```
 */
export function tokenList(
  token: string | readonly string[] | undefined,
): string[] {
  return token === undefined
    ? []
    : typeof token === "string"
    ? [token]
    : [...token];
}

/**
 * A token option and its file option from the first layer that sets
 * either (the flags, the environment, then pyproxy.json: a file there
 * yields to a token on the command line, as a token does), its path
 * resolved; both in one layer is a {@linkcode ConfigError} naming them.
 */
function tokenSource(
  name: "token" | "manageToken",
  file: GatewayConfig,
  cli: GatewayConfig,
  options: ResolveConfigOptions,
):
  | { value?: string | string[]; path?: string; where: string }
  | undefined {
  const option = `${name}File` as const;
  const flag = name === "token" ? "--token" : "--manage-token";
  const variable = name === "token" ? "PYPROXY_TOKEN" : "PYPROXY_MANAGE_TOKEN";
  const configPath = options.configPath ?? "pyproxy.json";
  const layers = [
    {
      value: cli[name],
      path: cli[option],
      dir: options.cwd,
      names: [flag, `${flag}-file`],
      where: "command line",
    },
    {
      value: (name === "token" ? options.envToken : options.envManageToken) ||
        undefined,
      path:
        (name === "token"
          ? options.envTokenFile
          : options.envManageTokenFile) || undefined,
      dir: options.cwd,
      names: [variable, `${variable}_FILE`],
      where: "environment",
    },
    {
      value: file[name],
      path: file[option],
      dir: options.fileDir ?? options.cwd,
      names: [name, option],
      where: configPath,
    },
  ];
  for (const layer of layers) {
    if (layer.value !== undefined && layer.path !== undefined) {
      throw new ConfigError(
        `${option}: ${layer.names[0]} and ${
          layer.names[1]
        } are both set; set one (at ${layer.where}: ${layer.names.join(", ")})`,
        { details: { path: option, source: layer.where } },
      );
    }
    if (layer.value !== undefined) {
      return { value: layer.value, where: `${layer.where}: ${layer.names[0]}` };
    }
    if (layer.path !== undefined) {
      return {
        path: resolvePath(layer.dir, layer.path),
        where: `${layer.where}: ${layer.names[1]}`,
      };
    }
  }
  return undefined;
}

/**
 * `tls` from the flags (both, or neither) or the file, its paths resolved
 * (the file's against its directory).
 */
function resolveTls(
  file: GatewayConfig,
  cli: GatewayConfig,
  options: ResolveConfigOptions,
): { cert: string; key: string } | undefined {
  if (cli.tls !== undefined) {
    return {
      cert: resolvePath(options.cwd, cli.tls.cert),
      key: resolvePath(options.cwd, cli.tls.key),
    };
  }
  if (file.tls === undefined) return undefined;
  const dir = options.fileDir ?? options.cwd;
  return {
    cert: resolvePath(dir, file.tls.cert),
    key: resolvePath(dir, file.tls.key),
  };
}

/**
 * Refuses `forwardHeaders` with `authorization` when the gateway has a
 * token (set, or about to be generated for eval or management): that
 * header holds the token, and model code would read it. Also checks the
 * count of the file's and the flags' names together.
 */
function forwardedAuthorization(
  config: ResolvedConfig,
  cli: GatewayConfig,
  options: ResolveConfigOptions,
): void {
  const where =
    cli.forwardHeaders?.some((n) => n.toLowerCase() === "authorization")
      ? "command line: --forward-header"
      : `${options.configPath ?? "pyproxy.json"}: forwardHeaders`;
  if (config.forwardHeaders.length > MAX_FORWARD_HEADERS) {
    throw new ConfigError(
      `forwardHeaders: expected at most ${MAX_FORWARD_HEADERS} header names, got ${config.forwardHeaders.length} (at ${
        options.configPath ?? "config"
      } and command line: forwardHeaders, --forward-header)`,
      { details: { path: "forwardHeaders" } },
    );
  }
  // A management token alone gets an inference token generated beside it.
  const tokenNeeded = config.token !== undefined ||
    config.tokenFile !== undefined || config.allowEval ||
    config.allowManage || config.manageToken !== undefined ||
    config.manageTokenFile !== undefined;
  if (tokenNeeded && config.forwardHeaders.includes("authorization")) {
    throw new ConfigError(
      `forwardHeaders: "authorization" cannot be forwarded while the gateway has a token: it holds the gateway's bearer token, which model code would read (send the model's own credentials in another header, such as x-user-token) (at ${where})`,
      { details: { path: "forwardHeaders" } },
    );
  }
}

/** A plugin module's path resolved against `dir`; a `file:` URL as it is. */
function moduleSpecifier(dir: string, specifier: string): string {
  return /^file:/i.test(specifier) ? specifier : resolvePath(dir, specifier);
}

/**
 * The plugins with their `module` paths resolved against `dir` (the
 * file's directory, or the working directory for a program's `cli`).
 */
function withModulesResolved(
  plugins: GatewayConfig["plugins"],
  dir: string,
): GatewayConfig["plugins"] {
  if (plugins === undefined) return undefined;
  return Object.fromEntries(
    Object.entries(plugins).map(([name, entry]) =>
      entry !== false && typeof entry.module === "string"
        ? [name, { ...entry, module: moduleSpecifier(dir, entry.module) }]
        : [name, entry]
    ),
  );
}

/**
 * The file's plugin options under the flags': a plugin both set gets the
 * options of both, the flag's winning (`--autoscale 1:4` keeps the file's
 * `upAfterMs`); `false` on either side replaces the other.
 */
function mergePlugins(
  file: GatewayConfig["plugins"] = {},
  cli: GatewayConfig["plugins"] = {},
): ResolvedConfig["plugins"] {
  // fromEntries and spreads define keys: a "__proto__" key stays a key.
  return {
    ...file,
    ...Object.fromEntries(
      Object.entries(cli).map(([name, options]) => {
        const under = Object.hasOwn(file, name) ? file[name] : undefined;
        return [
          name,
          options !== false && under !== undefined && under !== false
            ? { ...under, ...options }
            : options,
        ];
      }),
    ),
  };
}

/**
 * Options for {@linkcode loadConfig}.
 *
 * @example
 * ```ts
 * import type { LoadConfigOptions } from "@pyproxy/pyproxy";
 * const options: LoadConfigOptions = { path: "pyproxy.json", cli: { port: 0 } };
 * console.log(options.path);
 * // const config = await loadConfig(options);
 * ```
 */
export interface LoadConfigOptions {
  /** Config file path; when absent `./pyproxy.json` is used if it exists. */
  path?: string;
  /** Command-line overrides (validated like the file). */
  cli?: GatewayConfig;
  /**
   * Plugin modules of the command line (`--plugin`): paths relative to
   * the working directory, or `file:` URLs.
   */
  pluginModules?: string[];
  /** Runtime adapter. */
  runtime?: Runtime;
  /**
   * Refuse the config file when another user owns it or could replace it
   * (it, its directory, a link to it or a directory above: as a token
   * file), checked as read: what `serve`'s reload passes (SIGHUP), since
   * a reload applies the file's tokens, and a file of theirs let their
   * token in. A file found in the working directory is refused so always
   * (its file and directory); one named by `path` is taken at start
   * whoever owns it (you chose it). Security27.
   * @default {false}
   */
  trustedOnly?: boolean;
}

/**
 * The largest config file read by a {@linkcode LoadConfigOptions.trustedOnly}
 * load (read bounded, as a token file is): a configuration with thousands
 * of models fits.
 */
const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/**
 * Reads and validates the config file (if any), merges the flags and the
 * defaults. Throws {@linkcode ConfigError} with the field and file on bad input.
 *
 * @example
 * ```ts ignore
 * import { loadConfig } from "@pyproxy/pyproxy";
 * const config = await loadConfig({ path: "examples/pyproxy.json", cli: { port: 0 } });
 * console.log(config.workers);
 * ```
 */
export async function loadConfig(
  options: LoadConfigOptions = {},
): Promise<ResolvedConfig> {
  const runtime = options.runtime ?? defaultRuntime();
  const cwd = await runtime.realPath(".");
  const cli = parseConfig(options.cli ?? {}, "command line");
  let path = options.path === undefined
    ? undefined
    : resolvePath(cwd, options.path);
  if (path === undefined) {
    const candidate = resolvePath(cwd, "pyproxy.json");
    if ((await runtime.stat(candidate))?.isFile) {
      // Found, not chosen: in a shared directory (/tmp, a shared checkout)
      // another user's file would pick the models dir or the python binary
      // and run their code as this user.
      await refuseUntrusted(runtime, candidate, "--config");
      path = candidate;
    }
  }
  let file: GatewayConfig | undefined;
  if (path !== undefined) {
    let text: string;
    let untrusted: string | undefined;
    try {
      if (options.trustedOnly === true) {
        const got = await readTrusted(
          runtime,
          path,
          () => readConfig(runtime, path!),
        );
        untrusted = got.untrusted;
        text = got.untrusted === undefined
          ? new TextDecoder().decode(got.value)
          : "";
      } else {
        text = new TextDecoder().decode(await runtime.readFile(path));
      }
    } catch (err) {
      throw new ConfigError(
        `Cannot read config file ${path}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (untrusted !== undefined) throw untrustedConfigError(path, untrusted);
    let json: unknown;
    try {
      // Integers beyond ±2^53 (a model's options) stay exact, as in a request body.
      json = parseJson(text);
    } catch (err) {
      // V8 quotes the start of the text, line breaks included: one line.
      throw new ConfigError(
        `Cannot parse config file ${path}: ${
          (err as Error).message.replace(/\r?\n/g, "\\n")
        }`,
        { cause: err },
      );
    }
    file = parseConfig(json, path);
  }
  const envToken = runtime.env("PYPROXY_TOKEN");
  const otelEnv = otelVariables(runtime);
  const envManageToken = runtime.env("PYPROXY_MANAGE_TOKEN");
  const envTokenFile = runtime.env("PYPROXY_TOKEN_FILE");
  const envManageTokenFile = runtime.env("PYPROXY_MANAGE_TOKEN_FILE");
  const config = resolveConfig({
    ...(otelEnv === undefined ? {} : { otelEnv }),
    ...(file === undefined ? {} : { file }),
    ...(path === undefined ? {} : { fileDir: dirname(path), configPath: path }),
    cli,
    cwd,
    ...(options.pluginModules === undefined
      ? {}
      : { pluginModules: options.pluginModules }),
    ...(envToken === undefined ? {} : { envToken }),
    ...(envManageToken === undefined ? {} : { envManageToken }),
    ...(envTokenFile === undefined ? {} : { envTokenFile }),
    ...(envManageTokenFile === undefined ? {} : { envManageTokenFile }),
  });
  // Read here too (serve reads them again): a program sees its tokens,
  // and an unreadable or invalid file fails as an invalid token does.
  Object.assign(config, await readTokenFiles(runtime, config));
  // The collector's CA and the client's certificate, read only when
  // tracing is on (an environment made for other services' SDKs does not
  // fail a gateway that does not trace).
  const otlpTls = config.tracing === undefined || config.tracing.tls
    ? undefined
    : otlpTlsFiles((name) => runtime.env(name));
  if (otlpTls !== undefined) {
    config.tracing!.tls = await readOtlpTls(
      runtime,
      otlpTls,
      (path) => resolvePath(cwd, path),
    );
  }
  if (cli.modelsDir === undefined && file?.modelsDir === undefined) {
    config.modelsDir = await defaultModelsDir(runtime, config.modelsDir, cwd);
  }
  return config;
}

/**
 * The OpenTelemetry variables (src/gateway/_otel_env.ts), an endpoint
 * checked as the file's `tracing.endpoint` is and named by its variable.
 */
function otelVariables(runtime: Runtime): ResolveConfigOptions["otelEnv"] {
  return otelEnv(
    (name) => runtime.env(name),
    (endpoint, source) => void parseConfig({ tracing: { endpoint } }, source),
  );
}

/**
 * The config file's bytes for {@linkcode readTrusted}, with what its open
 * descriptor says of it; a plain read where the runtime has no
 * `readRegularFile`.
 */
async function readConfig(
  runtime: Runtime,
  path: string,
): Promise<{ value: Uint8Array; file?: OpenedFile }> {
  if (runtime.readRegularFile === undefined) {
    return { value: await runtime.readFile(path) };
  }
  const got = await runtime.readRegularFile(path, MAX_CONFIG_BYTES);
  if (got === null) throw new Error("not a regular file");
  if (got.bytes.length > MAX_CONFIG_BYTES) {
    throw new Error(`larger than ${MAX_CONFIG_BYTES} bytes`);
  }
  return { value: got.bytes, file: got };
}

async function refuseUntrusted(
  runtime: Runtime,
  path: string,
  flag: string,
): Promise<void> {
  const why = await untrustedPath(runtime, path);
  if (why === undefined) return;
  throw new ConfigError(
    `Cannot use ${path} found in the working directory: ${why}, and what another user put there would run their code as this user; pass ${flag} ${path} to use it anyway`,
    { details: { path, reason: why } },
  );
}

/**
 * `./models` when it exists: someone running `serve` in their project from
 * a checkout elsewhere means their own models, not the checkout's examples.
 * Else the example models, which ship with a source checkout only, not with
 * the JSR or npm package: without them the start fails now rather than with
 * an empty or unreadable directory later.
 */
async function defaultModelsDir(
  runtime: Runtime,
  examples: string,
  cwd: string,
): Promise<string> {
  const local = resolvePath(cwd, "models");
  for (const dir of new Set([local, examples])) {
    if ((await runtime.stat(dir))?.isDirectory) {
      if (dir === local) await refuseUntrusted(runtime, dir, "--models");
      return dir;
    }
  }
  throw new ConfigError(
    `Cannot find a models directory: no --models flag or "modelsDir" in ` +
      `pyproxy.json, and neither ${local} nor the example models (shipped ` +
      `with a source checkout only) exist; pass --models <dir>`,
    { details: { path: "modelsDir" } },
  );
}
