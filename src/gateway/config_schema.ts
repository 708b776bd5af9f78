/**
 * The valibot schema of `pyproxy.json`, the gateway's config file.
 *
 * @module
 */
import * as v from "valibot";
import { plainRecord } from "../_plain_record.ts";
import {
  HEADER_NAME_RULE,
  HEADER_VALUE_RULE,
  headerNameOk,
  headerValueOk,
} from "./_trace_headers.ts";
import { modelNameProblem } from "./model_name_problem.ts";
import { pluginSpecifierProblem } from "./_plugin_modules.ts";
import { tokenFileIntervalProblem } from "./_token_file_interval.ts";
import { MAX_TOKENS } from "./_max_tokens.ts";
import { MAX_MODEL_TIMEOUT } from "../_model_timeout.ts";
import { VersionLabel } from "../_model_version.ts";
import { envNameProblem, envSizeProblem, isEnvValue } from "./_worker_env.ts";
import {
  forwardHeaderProblem,
  MAX_FORWARD_HEADERS,
} from "./_forward_headers.ts";

/**
 * A LogTape log level.
 *
 * @example
 * ```ts
 * import type { LogLevel } from "@pyproxy/pyproxy";
 * const level: LogLevel = "debug";
 * console.log(level);
 * ```
 */
export type LogLevel =
  | "trace"
  | "debug"
  | "info"
  | "warning"
  | "error"
  | "fatal";

const LEVELS: readonly LogLevel[] = [
  "trace",
  "debug",
  "info",
  "warning",
  "error",
  "fatal",
];

/**
 * A model loaded at start.
 *
 * @example
 * ```ts
 * import type { ModelEntry } from "@pyproxy/pyproxy";
 * const entry: ModelEntry = { name: "doubler", file: "doubler.py", options: { k: 3 } };
 * console.log(entry.name);
 * ```
 */
export interface ModelEntry {
  /** Model name (letters, digits, `_ . -`; at most 128 characters). */
  name: string;
  /** Python file, relative to `modelsDir`. */
  file: string;
  /** Options passed to the model's constructor. */
  options?: Record<string, unknown> | undefined;
  /** Class to instantiate when the file defines several. */
  class?: string | undefined;
  /**
   * The default (and largest, for `?timeout=`) timeout of the model's calls
   * in ms, 1 to 2^31 − 1: above or below `limits.requestTimeout`, which
   * applies to the models without one (docs/gateway.md).
   */
  timeout?: number | undefined;
  /**
   * How many workers load the model, 1 to 1024 (absent: every worker): its
   * calls go to those only (docs/models.md, "Placement").
   */
  workers?: number | undefined;
  /**
   * Its version label (docs/gateway.md, "Versions"): entries of one name
   * with different labels are served side by side, the first one listed
   * the default.
   */
  version?: string | undefined;
}

/**
 * `pyproxy.json` as parsed (every field optional). See `docs/gateway.md` for
 * the meaning and default of each field.
 *
 * @example
 * ```ts
 * import type { GatewayConfig } from "@pyproxy/pyproxy";
 * const config: GatewayConfig = { port: 9000, workers: 4, limits: { requestTimeout: 5000 } };
 * console.log(config.port);
 * ```
 */
export interface GatewayConfig {
  /** JSON schema reference, ignored. */
  $schema?: string | undefined;
  /** Address to bind. */
  host?: string | undefined;
  /** Port to bind (`0` picks a free one). */
  port?: number | undefined;
  /**
   * The Open Inference Protocol's gRPC transport (off unless `port` is
   * given): its port, its address (the HTTP `host` unless set), and the
   * infers a `ModelStreamInfer` stream runs at once (1 to 1024; 16 unless
   * set).
   */
  grpc?:
    | {
      port?: number | undefined;
      hostname?: string | undefined;
      /**
       * Closes a connection that has had no call for this many ms (its
       * client reconnects when it calls again); `0`: never. Default 300000.
       */
      idleTimeout?: number | undefined;
      /** The infers one `ModelStreamInfer` stream runs at once (1-1024; default 16). */
      streamWindow?: number | undefined;
      /**
       * Bytes of answers one connection holds that its client has not read,
       * at most (65536 or more; default 67108864, 64 MiB): past them its
       * calls are RESOURCE_EXHAUSTED.
       */
      maxUnreadBytes?: number | undefined;
      /**
       * Bytes of answers all connections hold that their clients have not
       * read, at most (65536 or more; default 536870912, 512 MiB): past them
       * every connection is refused as at `maxUnreadBytes`, and from half
       * of them the connections of a peer address holding its share of
       * that half are.
       */
      maxUnreadBytesTotal?: number | undefined;
      /**
       * Open connections the port holds at most (0 to 2^31 − 1; default
       * 1024; `0`: no bound): the next is closed as it comes, so that
       * connections that never make a call cannot take every fd of the
       * process (docs/security.md, "Connections that never speak").
       */
      maxConnections?: number | undefined;
    }
    | undefined;
  /** Python workers (1 to 1024). */
  workers?: number | undefined;
  /** Python executable. */
  python?: string | undefined;
  /**
   * Directory of the workers' log files instead of `<modelsDir>/logs`
   * (relative to the file's directory; `--log-dir`: to the working one);
   * `"-"`: no files, the workers' logs go into the gateway's log (stderr).
   */
  logDir?: string | undefined;
  /**
   * Extra environment of the workers (over `serve`'s own): name → value,
   * `{worker}` in a value replaced by the worker's id (`w2`) and `{index}`
   * by its slot's index (0, 1, ...; reused after a resize). Not
   * `PYTHONPATH`, `PYTHONHOME`, `PYTHONPLATLIBDIR`, `PYTHONUNBUFFERED`, `PYTHONSAFEPATH`,
   * `PYTHONINSPECT` nor `PYPROXY_*` (the host's, for the server's own start
   * and protocol).
   */
  env?: Record<string, string> | undefined;
  /** Models directory. */
  modelsDir?: string | undefined;
  /** Models to load at start. */
  models?: ModelEntry[] | undefined;
  /**
   * Plugin options by plugin name (`false` disables a default plugin), or
   * a plugin of one's own: `{"module": "./audit.ts", "options": {...}}`
   * (a path relative to the file, or a `file:` URL), whose plugin must be
   * named as its key (docs/plugins.md, "Loading your plugin in serve").
   */
  plugins?: Record<string, Record<string, unknown> | false> | undefined;
  /** Request and pool limits. */
  limits?: {
    /** Maximum request body, in bytes. */
    bodyLimit?: number | undefined;
    /**
     * Most digits of an integer literal in a request body (at least 16; 400
     * above, before the gateway makes a `BigInt` of it).
     */
    maxIntegerDigits?: number | undefined;
    /**
     * Deepest nesting of arrays and objects in a request body, the body
     * being level 1 (400 deeper, before it is parsed).
     */
    maxJsonDepth?: number | undefined;
    /** Request timeout, in milliseconds. */
    requestTimeout?: number | undefined;
    /**
     * Time a model may take to load (at start, `PUT`) or to be removed
     * (`DELETE`), in milliseconds.
     */
    loadTimeout?: number | undefined;
    /**
     * Time a model stream's client may take no event (its socket full)
     * before the stream is cancelled, in milliseconds.
     */
    streamIdleTimeout?: number | undefined;
    /**
     * Silence, in milliseconds, after which a model stream sends a
     * `: keep-alive` comment (also before its first item, with `?early=1`).
     */
    streamKeepAlive?: number | undefined;
    /**
     * Time a model stream may take to its first item (its wait for a worker
     * included), in milliseconds; a request's `?firstItemTimeout=` may
     * lower it. Absent: only the stream's whole timeout bounds it.
     */
    streamFirstItemTimeout?: number | undefined;
    /**
     * Time an HTTP/1.1 keep-alive connection may stay idle after a fixed
     * answer before the gateway closes it, in milliseconds (Bun; Deno's
     * server has no such bound).
     */
    keepAliveTimeout?: number | undefined;
    /** Concurrent requests per worker. */
    maxInFlightPerWorker?: number | undefined;
    /** Queued requests before refusing. */
    maxQueue?: number | undefined;
    /** Series of model metrics per model (`pyproxy.metrics`). */
    modelMetricSeriesPerModel?: number | undefined;
    /** Series of model metrics in all. */
    modelMetricSeries?: number | undefined;
    /**
     * Moves of a placed model off slots it crashed, within
     * `relocationWindow`, before it is out of service (the pool's
     * `placement.maxRelocations`; docs/models.md, "Placement").
     */
    maxRelocations?: number | undefined;
    /** The window of `maxRelocations`, in milliseconds. */
    relocationWindow?: number | undefined;
    /**
     * A worker death within this many ms of a model's load counts against
     * that model; at its second strike it is out of service (the pool's
     * `loadCrashWindow`; docs/reliability.md). 0: off.
     */
    loadCrashWindow?: number | undefined;
    /**
     * Eval output kept for replay over all running evals together, in UTF-16
     * code units (the pool's `evalReplayBudget`).
     */
    evalReplayBudget?: number | undefined;
    /** Grace period of a shutdown, in milliseconds. */
    shutdownGrace?: number | undefined;
    /**
     * Milliseconds the gateway keeps serving after SIGINT/SIGTERM, its
     * readiness saying not ready, before its drain starts.
     */
    shutdownDelay?: number | undefined;
  } | undefined;
  /** Channel buffers. */
  channels?: {
    /** Messages kept per channel. */
    historySize?: number | undefined;
    /** Messages buffered per subscriber. */
    bufferSize?: number | undefined;
    /** Channels one tenant's token keeps (its own, by its id). */
    tenantMaxChannels?: number | undefined;
    /** Subscribers of one tenant's channels together. */
    tenantMaxSubscribers?: number | undefined;
    /** Characters of JSON kept in one tenant's channels' histories. */
    tenantMaxHistoryBytes?: number | undefined;
  } | undefined;
  /**
   * Bearer token (at least 16 characters), or several accepted alike
   * (rotation, a token per client; at most 1024).
   */
  token?: string | string[] | undefined;
  /**
   * The management token(s): when set, eval and model management take only
   * these (docs/gateway.md, "Security").
   */
  manageToken?: string | string[] | undefined;
  /**
   * A file holding `token`: one token a line (1 to 1024; blank lines and
   * lines starting with `#` skipped), such as a mounted Kubernetes secret.
   * Read at start, on a reload, and when it changes (see
   * `tokenFileInterval`). Not with `token` (docs/gateway.md, "Security").
   */
  tokenFile?: string | undefined;
  /** A file holding `manageToken`, as `tokenFile` holds `token`. */
  manageTokenFile?: string | undefined;
  /**
   * How often the token files are read to notice a change, in ms: `0`
   * (only on a reload) or at least 100. @default {10000}
   */
  tokenFileInterval?: number | undefined;
  /**
   * How often the TLS files (`tls`) are read to notice a renewed
   * certificate (a mounted secret the certificate manager updated), in ms:
   * `0` (only on a reload) or at least 100. @default {60000}
   */
  tlsFileInterval?: number | undefined;
  /** TLS: PEM files of the certificate (chain) and its private key. */
  tls?: {
    /** Path of the certificate chain (PEM). */
    cert: string;
    /** Path of the private key (PEM). */
    key: string;
  } | undefined;
  /** Extra allowed `Host` header values. */
  allowedHosts?: string[] | undefined;
  /**
   * Request headers that reach the models (`host.headers()`), by name: none
   * unless listed (docs/gateway.md, "Request headers for models").
   */
  forwardHeaders?: string[] | undefined;
  /**
   * Gzip for large model results when the client accepts it (off by
   * default); `true`: bodies of 1024 bytes and more.
   */
  compress?: boolean | {
    /** Smallest body compressed, in bytes (default 1024). */
    minBytes?: number | undefined;
  } | undefined;
  /**
   * OpenTelemetry tracing of model calls over OTLP/HTTP (JSON); off unless
   * an endpoint is set here, by `--trace-endpoint` or by the OpenTelemetry
   * variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`...), off with
   * `OTEL_SDK_DISABLED=true` (docs/gateway.md, "Tracing").
   */
  tracing?: {
    /** The collector's traces URL, e.g. `http://127.0.0.1:4318/v1/traces`. */
    endpoint?: string | undefined;
    /** The spans' `service.name` (default `"pyproxy"`). */
    serviceName?: string | undefined;
    /** Share of calls without a client's `traceparent` that are traced, 0 to 1 (default 1). */
    sampleRatio?: number | undefined;
    /** Headers of each POST to the collector (an API key). */
    headers?: Record<string, string> | undefined;
    /** Attributes of the spans' resource (`deployment.environment`...), over `OTEL_RESOURCE_ATTRIBUTES`'. */
    resourceAttributes?: Record<string, string> | undefined;
    /** Most spans waiting to be sent (default 2048); beyond, dropped. */
    maxQueue?: number | undefined;
    /** How often waiting spans are sent, in ms (default 5000). */
    batchIntervalMs?: number | undefined;
    /** Most spans per POST (default 512): a full batch goes at once. */
    batchSize?: number | undefined;
    /** How long a POST to the collector may take, in ms (default 10000). */
    exportTimeoutMs?: number | undefined;
    /** `gzip`: the POSTs' bodies compressed (`Content-Encoding: gzip`); default `none`. */
    compression?: "gzip" | "none" | undefined;
    /** `none`: clients' `traceparent` headers are not read (default `tracecontext`). */
    propagation?: "tracecontext" | "none" | undefined;
    /** The longest a stream's span lasts, in ms (default 600000): then it is sent, the stream goes on. */
    maxStreamSpanMs?: number | undefined;
  } | undefined;
  /** CORS settings. */
  cors?: {
    /** Allowed origins. */
    origins: string[];
    /** Allow credentials. */
    credentials?: boolean | undefined;
    /** Preflight cache duration, in seconds. */
    maxAge?: number | undefined;
  } | undefined;
  /** Enables `POST /v1/eval`. */
  allowEval?: boolean | undefined;
  /** A client that disconnects cancels its execute call (default true). */
  cancelOnDisconnect?: boolean | undefined;
  /** Workers run under Linux `SCHED_BATCH` (default true). */
  schedBatch?: boolean | undefined;
  /** How much the workers raise their Linux `oom_score_adj`, 0 to 1000 (default 500). */
  oomScoreAdj?: number | undefined;
  /** Enables `PUT`/`DELETE /v1/models/{name}`. */
  allowManage?: boolean | undefined;
  /** Includes Python tracebacks in error responses. */
  debug?: boolean | undefined;
  /** Default log level of the `pyproxy` category. */
  logLevel?: LogLevel | undefined;
  /** Levels by category. */
  logLevels?: Record<string, LogLevel> | undefined;
  /**
   * How `serve` writes its log to stderr: `"text"` (default, for a
   * terminal), `"json"` (one JSON object a line, for a log shipper) or
   * `"journald"` (each line with its syslog priority, `<4>`, for a systemd
   * service).
   */
  logFormat?: LogFormat | undefined;
}

/**
 * The log formats of `serve` (`logFormat`, `--log-format`): `"text"` lines
 * for a terminal, `"json"`, one JSON object a line (JSON Lines), or
 * `"journald"`, text lines each prefixed with its syslog priority (`<4>`)
 * for systemd-journald, without a time stamp.
 *
 * @example
 * ```ts
 * import type { LogFormat } from "@pyproxy/pyproxy";
 * const format: LogFormat = "json";
 * ```
 */
export type LogFormat = "text" | "json" | "journald";

/**
 * Whether a client can present `token`: a request's bearer token is read
 * without surrounding whitespace, and a header cannot carry control
 * characters, so a token with either would lock every client out. Nor one
 * with a character beyond U+00FF: a header's bytes are read as Latin-1, so
 * no bytes read back as such a character (fetch refuses it in a header;
 * curl sends its UTF-8 bytes, read back as other characters). A Latin-1
 * token (`é`) is sent as its own byte by fetch.
 *
 * @example
 * ```ts
 * import { usableToken } from "./config_schema.ts";
 * console.log(usableToken("0123456789abcdef"), usableToken(" ".repeat(16))); // true false
 * ```
 */
export function usableToken(token: string): boolean {
  // deno-lint-ignore no-control-regex
  return token.trim() === token && !/[\x00-\x1f\x7f]|[^\x00-\xff]/.test(token);
}

/** Why {@linkcode usableToken} refused a token. */
export const TOKEN_UNUSABLE =
  "expected a token without leading or trailing whitespace, control characters or characters beyond U+00FF";

/** A token, or a list of 1 to `MAX_TOKENS` different ones (rotation, a token per client). */
function tokenSchema(): v.GenericSchema<string | string[]> {
  const one = v.pipe(
    v.string("expected a string"),
    v.minLength(16, "expected a token of at least 16 characters"),
    v.check(usableToken, TOKEN_UNUSABLE),
  );
  return v.union([
    one,
    v.pipe(
      v.array(one, "expected a token or an array of tokens"),
      v.minLength(1, "expected at least one token (leave it out for none)"),
      v.maxLength(MAX_TOKENS, `expected at most ${MAX_TOKENS} tokens`),
      v.check(
        (list) => new Set(list).size === list.length,
        "expected different tokens (one is listed twice)",
      ),
    ),
  ], "expected a token or an array of tokens");
}

type IntSchema = v.GenericSchema<number>;
type StrSchema = v.GenericSchema<string>;

function int(min: number, max = Number.MAX_SAFE_INTEGER): IntSchema {
  const msg = max === Number.MAX_SAFE_INTEGER
    ? `expected an integer >= ${min}`
    : `expected an integer from ${min} to ${max}`;
  return v.pipe(
    v.number(msg),
    v.integer(msg),
    v.minValue(min, msg),
    v.maxValue(max, msg),
  );
}

function isHttpUrl(value: string): boolean {
  try {
    const { protocol } = new URL(value);
    return protocol === "http:" || protocol === "https:";
  } catch {
    return false;
  }
}

const str = (what = "a non-empty string"): StrSchema =>
  v.pipe(v.string(`expected ${what}`), v.minLength(1, `expected ${what}`));
const bool = (): v.GenericSchema<boolean> =>
  v.boolean("expected true or false");
const level = (): v.GenericSchema<LogLevel> =>
  v.picklist(LEVELS, `expected one of ${LEVELS.join(", ")}`);
// Not v.record: it takes an array for an object ([1] → {"0": 1}).
const isPlainObject = (x: unknown): boolean =>
  typeof x === "object" && x !== null && !Array.isArray(x);
const record = (): v.GenericSchema<unknown, Record<string, unknown>> =>
  plainRecord(v.unknown(), "expected an object");

function strict<T extends v.ObjectEntries>(entries: T) {
  const allowed = Object.keys(entries).join(", ");
  return v.pipe(
    // valibot's object schemas take an array for an object: refused first.
    v.custom<Record<string, unknown>>(isPlainObject, "expected an object"),
    // One message for both failures: the issue of an unknown key carries that key in its path.
    v.strictObject(
      entries,
      (issue) => {
        if (issue.expected === "never") {
          return `unknown field (allowed: ${allowed})`;
        }
        if (issue.input === undefined && issue.path?.length) {
          return "is required";
        }
        return "expected an object";
      },
    ),
  );
}

/**
 * What is wrong with a `plugins` entry that has a `module`, and under
 * which of its keys, or `undefined`.
 */
function pluginModuleEntryProblem(
  entry: Record<string, unknown>,
): { key?: string; message: string } | undefined {
  for (const key of Object.keys(entry)) {
    if (key !== "module" && key !== "options") {
      return {
        key,
        message:
          "unknown field (allowed: module, options; a module's options go under options)",
      };
    }
  }
  if (typeof entry.module !== "string" || entry.module === "") {
    return {
      key: "module",
      message: "expected a module path (a .ts or .js file, or a file: URL)",
    };
  }
  const problem = pluginSpecifierProblem(entry.module);
  if (problem !== undefined) return { key: "module", message: problem };
  if (entry.options !== undefined && !isPlainObject(entry.options)) {
    return { key: "options", message: "expected an object" };
  }
  return undefined;
}

const ModelEntrySchema: v.GenericSchema<unknown, ModelEntry> = strict({
  name: v.pipe(
    v.string("expected a model name"),
    v.rawCheck(({ dataset, addIssue }) => {
      if (!dataset.typed) return;
      const problem = modelNameProblem(dataset.value);
      if (problem !== undefined) {
        addIssue({ message: `expected a model name: ${problem}` });
      }
    }),
  ),
  file: str("a file path under modelsDir"),
  options: v.optional(record()),
  class: v.optional(str("a class name")),
  timeout: v.optional(int(1, MAX_MODEL_TIMEOUT)),
  workers: v.optional(int(1, 1024)),
  version: v.optional(VersionLabel),
});

const LimitsSchema: v.GenericSchema<
  unknown,
  GatewayConfig["limits"] & object
> = strict({
  bodyLimit: v.optional(int(1)),
  // Shorter literals may be safe integers, which the gateway does not look at.
  maxIntegerDigits: v.optional(int(16)),
  maxJsonDepth: v.optional(int(1)),
  requestTimeout: v.optional(int(1)),
  loadTimeout: v.optional(int(1)),
  streamIdleTimeout: v.optional(int(1)),
  // A timer's longest delay (2^31 - 1 ms): a longer one fires at once.
  streamKeepAlive: v.optional(int(100, 2 ** 31 - 1)),
  streamFirstItemTimeout: v.optional(int(1)),
  keepAliveTimeout: v.optional(int(1000, 255_000)),
  maxInFlightPerWorker: v.optional(int(1)),
  maxQueue: v.optional(int(0)),
  evalReplayBudget: v.optional(int(0)),
  modelMetricSeriesPerModel: v.optional(int(0)),
  modelMetricSeries: v.optional(int(0)),
  maxRelocations: v.optional(int(0)),
  relocationWindow: v.optional(int(1)),
  loadCrashWindow: v.optional(int(0)),
  shutdownGrace: v.optional(int(0)),
  shutdownDelay: v.optional(int(0)),
});

/**
 * What a browser sends in `Origin` (`https://app.example.com`,
 * `http://localhost:5173`), or `"*"`. Anything else could never match one: a
 * typo (`app.example.com`, a trailing `/`) would leave CORS silently off.
 */
function isOrigin(origin: string): boolean {
  if (origin === "*") return true;
  if (!/^[a-z][a-z0-9+.-]*:\/\/[^/?#\s@]+$/i.test(origin)) return false;
  try {
    const url = new URL(origin);
    // Special schemes normalise (default port, case, IDN): the browser sends that form.
    return url.origin === "null" ||
      url.origin.toLowerCase() === origin.toLowerCase();
  } catch {
    return false;
  }
}

const CorsSchema: v.GenericSchema<
  unknown,
  GatewayConfig["cors"] & object
> = strict({
  origins: v.array(
    v.pipe(
      str("an origin"),
      v.check(
        isOrigin,
        'expected an origin, scheme://host[:port] with no path (such as "https://app.example.com"), or "*"',
      ),
    ),
    "expected an array of origins",
  ),
  credentials: v.optional(bool()),
  maxAge: v.optional(int(0)),
});

/**
 * The schema of `pyproxy.json`. Every field is optional; unknown fields are
 * refused so typos do not pass silently.
 *
 * @example
 * ```ts
 * import * as v from "valibot";
 * import { ConfigSchema } from "./config_schema.ts";
 * console.log(v.safeParse(ConfigSchema, { workers: 4, port: 9000 }).success); // true
 * console.log(v.safeParse(ConfigSchema, { workers: 0 }).success); // false
 * ```
 */
export const ConfigSchema: v.GenericSchema<unknown, GatewayConfig> = strict({
  $schema: v.optional(v.string()),
  host: v.optional(str("a hostname or IP address")),
  port: v.optional(int(0, 65535)),
  grpc: v.optional(
    strict({
      port: v.optional(int(0, 65535)),
      hostname: v.optional(str("a hostname or IP address")),
      idleTimeout: v.optional(int(0, 2 ** 31 - 1)),
      streamWindow: v.optional(int(1, 1024)),
      maxUnreadBytes: v.optional(int(65536)),
      maxUnreadBytesTotal: v.optional(int(65536)),
      maxConnections: v.optional(int(0, 2 ** 31 - 1)),
    }),
  ),
  workers: v.optional(int(1, 1024)),
  python: v.optional(str("a python executable")),
  logDir: v.optional(str("a directory")),
  env: v.optional(
    v.pipe(
      plainRecord(
        v.pipe(
          v.string('expected a string (a number too: "2", not 2)'),
          v.check(
            isEnvValue,
            "expected a value without a NUL character, under 128 KiB (a larger one fails every worker's start: Argument list too long)",
          ),
        ),
        "expected an object of variable name → value",
      ),
      v.rawCheck(({ dataset, addIssue }) => {
        if (!dataset.typed) return;
        for (const name of Object.keys(dataset.value)) {
          const problem = envNameProblem(name);
          if (problem === undefined) continue;
          addIssue({
            message: problem,
            path: [{
              type: "object",
              origin: "value",
              input: dataset.value,
              key: name,
              value: dataset.value[name],
            }],
          });
        }
        const size = envSizeProblem(dataset.value);
        if (size === undefined) return;
        addIssue({
          message: size.message,
          ...(size.name === undefined ? {} : {
            path: [{
              type: "object",
              origin: "value",
              input: dataset.value,
              key: size.name,
              value: dataset.value[size.name],
            }],
          }),
        });
      }),
    ),
  ),
  modelsDir: v.optional(str("a directory")),
  models: v.optional(
    v.pipe(
      v.array(
        ModelEntrySchema,
        "expected an array of {name, file, options?, class?, timeout?, workers?}",
      ),
      // Caught here, before any worker starts (the pool would refuse the
      // later entry only once the earlier ones are loaded).
      v.rawCheck(({ dataset, addIssue }) => {
        if (!dataset.typed) return;
        const problem = modelEntriesProblem(dataset.value);
        if (problem === undefined) return;
        addIssue({
          message: problem.message,
          path: [{
            type: "array",
            origin: "value",
            input: dataset.value,
            key: problem.index,
            value: dataset.value[problem.index],
          }],
        });
      }),
    ),
  ),
  plugins: v.optional(
    v.pipe(
      plainRecord(
        v.union(
          [record(), v.literal(false)],
          'expected an options object, false, or {"module": "<file>", "options": {...}}',
        ),
        "expected an object",
      ),
      // An entry with a module is a plugin of one's own: checked here, so
      // that a bad one fails before anything starts, naming its place.
      v.rawCheck(({ dataset, addIssue }) => {
        if (!dataset.typed) return;
        for (const [name, entry] of Object.entries(dataset.value)) {
          if (entry === false || !Object.hasOwn(entry, "module")) continue;
          const problem = pluginModuleEntryProblem(entry);
          if (problem === undefined) continue;
          addIssue({
            message: problem.message,
            path: [
              {
                type: "object",
                origin: "value",
                input: dataset.value,
                key: name,
                value: entry,
              },
              ...(problem.key === undefined ? [] : [{
                type: "object" as const,
                origin: "value" as const,
                input: entry,
                key: problem.key,
                value: entry[problem.key],
              }]),
            ],
          });
          return;
        }
      }),
    ),
  ),
  limits: v.optional(LimitsSchema),
  channels: v.optional(
    strict({
      historySize: v.optional(int(0)),
      bufferSize: v.optional(int(1)),
      tenantMaxChannels: v.optional(int(1)),
      tenantMaxSubscribers: v.optional(int(1)),
      tenantMaxHistoryBytes: v.optional(int(0)),
    }),
  ),
  token: v.optional(tokenSchema()),
  manageToken: v.optional(tokenSchema()),
  tokenFile: v.optional(str("a file path")),
  manageTokenFile: v.optional(str("a file path")),
  tokenFileInterval: v.optional(
    v.pipe(
      int(0, 2 ** 31 - 1),
      v.check(
        (ms) => tokenFileIntervalProblem(ms) === undefined,
        (issue) => tokenFileIntervalProblem(issue.input as number)!,
      ),
    ),
  ),
  tlsFileInterval: v.optional(
    v.pipe(
      int(0, 2 ** 31 - 1),
      v.check(
        (ms) => tokenFileIntervalProblem(ms) === undefined,
        (issue) => tokenFileIntervalProblem(issue.input as number)!,
      ),
    ),
  ),
  tls: v.optional(
    strict({ cert: str("a file path"), key: str("a file path") }),
  ),
  allowedHosts: v.optional(
    v.array(str("a host name"), "expected an array of host names"),
  ),
  forwardHeaders: v.optional(
    v.pipe(
      v.array(
        v.pipe(
          str("a header name"),
          v.check(
            (name) =>
              forwardHeaderProblem(name.toLowerCase(), false) === undefined,
            (issue) =>
              `expected a header name a model may get: ${
                JSON.stringify(String(issue.input).slice(0, 64))
              } is ${
                forwardHeaderProblem(String(issue.input).toLowerCase(), false)
              }`,
          ),
        ),
        "expected an array of header names",
      ),
      v.maxLength(
        MAX_FORWARD_HEADERS,
        `expected at most ${MAX_FORWARD_HEADERS} header names`,
      ),
    ),
  ),
  compress: v.optional(
    v.union(
      [bool(), strict({ minBytes: v.optional(int(1)) })],
      "expected true, false or { minBytes }",
    ),
  ),
  tracing: v.optional(strict({
    endpoint: v.optional(
      v.pipe(
        v.string("expected an http(s) URL"),
        v.check(
          isHttpUrl,
          "expected an http(s) URL (OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces)",
        ),
      ),
    ),
    serviceName: v.optional(str()),
    sampleRatio: v.optional(
      v.pipe(
        v.number("expected a number from 0 to 1"),
        v.minValue(0, "expected a number from 0 to 1"),
        v.maxValue(1, "expected a number from 0 to 1"),
      ),
    ),
    headers: v.optional(
      v.pipe(
        plainRecord(
          v.pipe(
            v.string("expected a string"),
            v.check(
              (value) => !/[\r\n\0]/.test(value),
              "expected a header value without CR, LF or NUL",
            ),
            v.check(headerValueOk, HEADER_VALUE_RULE),
          ),
          "expected an object of header name → value",
        ),
        // A name fetch refuses would fail every POST (every span dropped).
        v.check(
          (headers) => Object.keys(headers).every(headerNameOk),
          HEADER_NAME_RULE,
        ),
      ),
    ),
    resourceAttributes: v.optional(
      plainRecord(
        v.string("expected a string"),
        "expected an object of attribute name → string value",
      ),
    ),
    maxQueue: v.optional(int(1, 1_000_000)),
    batchIntervalMs: v.optional(int(1, 3_600_000)),
    batchSize: v.optional(int(1, 1_000_000)),
    exportTimeoutMs: v.optional(int(1, 600_000)),
    compression: v.optional(
      v.picklist(["gzip", "none"], 'expected "gzip" or "none"'),
    ),
    propagation: v.optional(
      v.picklist(["tracecontext", "none"], 'expected "tracecontext" or "none"'),
    ),
    maxStreamSpanMs: v.optional(int(1, 86_400_000)),
  })),
  cors: v.optional(CorsSchema),
  allowEval: v.optional(bool()),
  cancelOnDisconnect: v.optional(bool()),
  schedBatch: v.optional(bool()),
  oomScoreAdj: v.optional(int(0, 1000)),
  allowManage: v.optional(bool()),
  debug: v.optional(bool()),
  logLevel: v.optional(level()),
  logFormat: v.optional(
    v.picklist(
      ["text", "json", "journald"],
      "expected one of text, json, journald",
    ),
  ),
  logLevels: v.optional(
    v.pipe(
      plainRecord(level(), "expected an object of category → level"),
      // Any other category is nobody's: its level would do nothing, silently
      // (`gateway=debug` for `pyproxy.gateway=debug`).
      v.check(
        (levels) => Object.keys(levels).every((c) => CATEGORY.test(c)),
        (issue) =>
          `unknown category ${
            JSON.stringify(
              Object.keys(issue.input as Record<string, unknown>).find((c) =>
                !CATEGORY.test(c)
              ),
            )
          }: expected pyproxy or a category under it (pyproxy.gateway, pyproxy.pool, pyproxy.python.<model>, ...)`,
      ),
    ),
  ),
});

/**
 * The first entry of `models` that cannot be loaded beside the earlier ones:
 * a name and version listed twice, or a name listed with a version and
 * without one (a name is loaded with versions or without). The file's
 * `models` are checked so as they are parsed, the models a program gives
 * `resolveConfig` (its `cli`) when they are merged.
 *
 * @example
 * ```ts ignore
 * modelEntriesProblem([{ name: "m", file: "a.py" }, { name: "m", file: "b.py" }]);
 * // { index: 1, message: "model 'm' is listed twice (models[0] too): list each name once" }
 * ```
 */
export function modelEntriesProblem(
  entries: readonly ModelEntry[],
): { index: number; message: string } | undefined {
  // name → the index of its first entry, with or without a version.
  const first = new Map<
    string,
    { index: number; version: string | undefined }
  >();
  const seen = new Map<string, number>();
  for (const [index, { name, version }] of entries.entries()) {
    const shown = version === undefined
      ? `model '${name}'`
      : `model '${name}' version '${version}'`;
    // JSON keeps the pair apart whatever characters either holds.
    const key = JSON.stringify([name, version ?? null]);
    const earlier = seen.get(key);
    if (earlier !== undefined) {
      return {
        index,
        message: `${shown} is listed twice (models[${earlier}] too): ` +
          `list each ${
            version === undefined ? "name" : "name and version"
          } once`,
      };
    }
    seen.set(key, index);
    const other = first.get(name);
    if (
      other !== undefined &&
      (other.version === undefined) !== (version === undefined)
    ) {
      return {
        index,
        message:
          `${
            version === undefined ? `model '${name}' without a version` : shown
          }: models[${other.index}] lists '${name}' ${
            other.version === undefined
              ? "without a version"
              : `with version '${other.version}'`
          }, and a name is loaded with versions or without (give every entry ` +
          `of '${name}' a version, or none)`,
      };
    }
    if (other === undefined) first.set(name, { index, version });
  }
  return undefined;
}

/** pyproxy's log categories: `pyproxy` and its children, dot-separated. */
const CATEGORY = /^pyproxy(\.[^.]+)*$/;
