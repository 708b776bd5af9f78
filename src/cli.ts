/**
 * The `pyproxy` command line: `serve` starts the HTTP gateway.
 *
 * @module
 */
import { X509Certificate } from "node:crypto";
import { parseArgs } from "node:util";
import {
  configure,
  getConsoleSink,
  getLogger,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";
import { autoscale } from "../plugins/autoscale.ts";
import { closestName } from "./_closest_name.ts";
import { withoutRecordHead } from "./_server_record.ts";
import { withoutColours } from "./_stderr_log.ts";
import { journaldFormatter } from "./_journald_formatter.ts";
import { jsonLinesFormatter } from "./_json_lines_formatter.ts";
import { ConfigError, StartError } from "./errors.ts";
import type { Runtime } from "./runtime/types.ts";
import { defaultRuntime } from "./runtime/mod.ts";
import {
  removeGeneratedToken,
  tokenFingerprint,
  writeGeneratedToken,
} from "./gateway/_generated_token_file.ts";
import { PYTHON_MANIFEST } from "./runtime/python_manifest.ts";
import {
  type GatewayConfig,
  loadConfig,
  type ResolvedConfig,
} from "./gateway/config.ts";
import { serve } from "./gateway/serve.ts";
import { exampleBody } from "./gateway/example_body.ts";
import { CERTIFICATE, firstPemBlock } from "./gateway/_pem_file.ts";
import { exposedTokenWarnings } from "./gateway/_exposed_tokens.ts";
import { untrustedFile } from "./gateway/_untrusted_path.ts";

// The manifest carries deno.json's version (scripts/gen_python_manifest.ts,
// checked by tests/python_manifest_test.ts), so no JSON import is needed:
// deno.json may be missing from JSR's npm tarball.
const VERSION: string = PYTHON_MANIFEST.version;

const HELP = `pyproxy ${VERSION}: run Python models as a service

Usage:
  deno run -A mod.ts serve [options]
  bun run mod.ts serve [options]

Starts the HTTP gateway: a pool of Python workers serving the models of a
directory. Without options: 2 workers, the models of ./models when it exists,
else the example models of a checkout, http://127.0.0.1:8000. Every option
can also be set in pyproxy.json (see docs/gateway.md); flags override the file.

Options:
  -p, --port <n>            Port to listen on; 0 picks a free one (default 8000)
  -H, --host <address>      Address to bind (default 127.0.0.1); a non-loopback
                            address requires a token
      --grpc-port <n>       Also serve the Open Inference Protocol over gRPC
                            (KServe V2 / Triton clients, h2c) on this port; 0
                            picks a free one (off by default)
      --grpc-host <address> Address of the gRPC port (default: --host's)
      --grpc-stream-window <n>
                            Infers a gRPC ModelStreamInfer stream runs at once,
                            1 to 1024 (default 16)
      --grpc-max-unread <bytes>
                            Bytes of answers a gRPC connection holds that its
                            client has not read, at most (default 67108864)
      --grpc-max-unread-total <bytes>
                            The same for all gRPC connections together
                            (default 536870912; from half of it, an address
                            holding its share is refused)
      --grpc-max-connections <n>
                            Open connections the gRPC port holds at most; the
                            next is closed as it comes (default 1024; 0: no
                            bound)
  -w, --workers <n>         Python worker processes (default 2)
  -m, --models <dir>        Models directory; every *.py in it is loaded at start
                            unless the config lists models (default ./models,
                            else the checkout's examples/models)
  -c, --config <file>       Config file (default ./pyproxy.json when it exists)
      --python <exe>        Python executable (default python3)
      --log-dir <dir>       The workers' log files go here (default
                            <models>/logs; - : into serve's own log on
                            stderr, no files, e.g. in a container)
      --env <NAME=VALUE>    Set a variable in every worker's environment;
                            {worker} and {index} are filled in per worker
                            (repeatable; over pyproxy.json's env)
      --token <token>       Require "Authorization: Bearer <token>" on every route
                            except /healthz (>= 16 characters); every local user
                            sees a flag's value (ps): set PYPROXY_TOKEN instead
      --manage-token <token>
                            The only token eval and model management accept (the
                            --token gets 403 there); accepted on every route but
                            as the dashboard's ?token= (as --token: set
                            PYPROXY_MANAGE_TOKEN instead)
      --token-file <file>   Read --token from this file (one token a line, e.g. a
                            mounted secret), again whenever it changes (or set
                            PYPROXY_TOKEN_FILE)
      --manage-token-file <file>
                            Read --manage-token from this file, as --token-file
                            (or set PYPROXY_MANAGE_TOKEN_FILE)
      --token-file-interval <ms>
                            How often the token files are read for a change
                            (default 10000; 0: on SIGHUP only; else >= 100)
      --tls-cert <file>     Serve HTTPS (and HTTP/2 on Deno) with this PEM
                            certificate (chain); needs --tls-key
      --tls-key <file>      The PEM private key of --tls-cert
      --tls-file-interval <ms>
                            How often the TLS files are read for a renewed
                            certificate (default 60000; 0: on SIGHUP only; else
                            >= 100)
      --allowed-host <host> Also accept this Host header (repeatable; "*" = any)
      --forward-header <name>
                            Pass this request header to the models, read with
                            host.headers() (repeatable; none by default)
      --cors-origin <url>   Allow CORS, and requests from pages, from this origin
                            (repeatable; off by default: other origins get 403)
      --body-limit <bytes>  Largest request body, as sent and once decoded (gzip
                            and deflate bodies are decoded; default 1048576)
      --max-integer-digits <n>
                            Most digits of an integer in a request body, >= 16
                            (default 4300, Python's own limit)
      --max-json-depth <n>  Deepest nesting of arrays/objects in a request body
                            (default 800, under what Python's json decodes)
      --timeout <ms>        Execute/eval timeout (default 30000)
      --load-timeout <ms>   Time a model may take to load, at start or by PUT
                            (default 120000)
      --stream-idle-timeout <ms>
                            Cancel a model stream whose client took no event
                            for this long (default 60000)
      --stream-first-item-timeout <ms>
                            Fail a model stream (504) whose first item took
                            longer, its queue wait included (default: none)
      --stream-keep-alive <ms>
                            Send ": keep-alive" on a model stream after this
                            long without an event, >= 100 (default 15000)
      --keep-alive-timeout <ms>
                            Close an HTTP/1.1 keep-alive connection idle this
                            long after an answer, 1000-255000 (Bun; default 75000)
      --max-queue <n>       Calls that may wait for a worker before 429 (default 1024)
      --max-in-flight <n>   Calls in flight per worker (default 64)
      --tenant-max-channels <n>
                            Channels one tenant's token keeps (its own; default
                            100): past it its idle ones are forgotten, with
                            subscribers on all a new one gets 429
      --tenant-max-subscribers <n>
                            Subscribers of one tenant's channels together
                            (default 1000; past it 429)
      --tenant-max-history-bytes <n>
                            JSON kept in one tenant's channels' histories
                            (default 8388608; past it its oldest are forgotten)
      --eval-replay-budget <units>
                            Eval output kept for replay over all running evals,
                            in UTF-16 code units (default 67108864)
      --grace <ms>          Shutdown grace period for in-flight requests (default 10000)
      --shutdown-delay <ms> Keep serving this long after SIGINT/SIGTERM, readiness
                            saying not ready, before the drain (default 0)
      --allow-eval          Enable POST /v1/eval (runs arbitrary Python code;
                            without a token, one is generated and printed)
      --allow-manage        Enable PUT/DELETE /v1/models/{name} (and its versions,
                            its default), PUT /v1/workers and POST
                            /v2/repository/... (token: as above)
      --autoscale <min:max> Grow the pool while calls queue, shrink it while idle,
                            between min and max workers (either may be left out:
                            2:, :8; default min --workers; see docs/plugins.md)
      --plugin <module>     Load a plugin of your own from this .ts or .js file
                            (or file: URL), relative to the working directory:
                            its default export, a factory (options) => Plugin
                            (called without options) or a plugin (repeatable;
                            options go in pyproxy.json's plugins; see
                            docs/plugins.md "Loading your plugin in serve")
      --compress            Gzip model results of 1024 bytes and more for clients
                            that accept it (off by default: see docs/gateway.md)
      --compress-min-bytes <bytes>
                            Gzip model results from this size on (turns it on)
      --no-compress         Turn off compress from the config file
      --trace-endpoint <url>
                            Trace model calls with OpenTelemetry: send spans to
                            this OTLP/HTTP collector URL, JSON encoding (e.g.
                            http://127.0.0.1:4318/v1/traces; off by default,
                            or set OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
                            OTEL_EXPORTER_OTLP_ENDPOINT; more in pyproxy.json
                            "tracing", docs/gateway.md "Tracing")
      --no-cancel-on-disconnect
                            Let execute calls run on when their client disconnects
                            (no faster: see docs/gateway.md)
      --no-sched-batch      Leave the workers' Linux scheduling policy alone (by
                            default they run under SCHED_BATCH, so a request does
                            not make a worker preempt the gateway's thread)
      --oom-score-adj <n>   Raise the workers' Linux oom_score_adj by n, 0 to 1000
                            (default 500), so that the kernel's OOM killer ends a
                            worker, which restarts, before the gateway (in a
                            container, PID 1: its death ends every worker)
      --log-level <level>   trace, debug, info, warning, error, fatal; or
                            category=level, e.g. pyproxy.pool=debug (repeatable)
      --log-format <format> text (default); json: one JSON object a line on
                            stderr, with its date, level, logger and properties;
                            journald: each line with its syslog priority (<3>)
                            for journalctl -p, no time stamp
      --debug               Include Python tracebacks in error responses, worker
                            stderr in /v1/status, model option values
  -h, --help                Show this help
  -V, --version             Show the version

Routes (see docs/gateway.md):
  GET    /                          Dashboard (?token=<token> with a token)
  GET    /healthz                   Health check (no token needed)
  GET    /metrics                   Prometheus metrics (?format=json)
  GET    /openapi.json              OpenAPI 3.1 document of this gateway and its models
  GET    /v1/status                 Workers, models, queue, restarts
  GET    /v1/models                 Model descriptions
  GET    /v1/models/{name}          One model's description
  POST   /v1/models/{name}/execute  Run a model (?key=, ?timeout=, ?publish=)
  POST   /v1/models/{name}/stream   Run a model, its items as SSE (?key=, ?timeout=)
  PUT    /v1/models/{name}          Add or update a model (--allow-manage)
  DELETE /v1/models/{name}          Remove a model, every version of it (--allow-manage)
  PUT    /v1/models/{name}/default  Set the default version: {"version": "2"} (--allow-manage)
  PUT    /v1/workers                Resize the pool: {"count": N} (--allow-manage)
  POST   /v1/eval                   Run Python code, output as SSE (--allow-eval)
  GET    /v1/eval/{id}/events       Resume an eval's SSE stream (Last-Event-ID)
  GET    /v1/channels               Channels, subscribers, recent history
  GET    /v1/channels/{name}        Subscribe (SSE, or a WebSocket upgrade)
  POST   /v1/channels/{name}        Publish a JSON message

Versions of a model served side by side (docs/gateway.md "Versions"):
  GET    /v1/models/{name}/versions/{version}          One version's description
  POST   /v1/models/{name}/versions/{version}/execute  Run that version
  POST   /v1/models/{name}/versions/{version}/stream   Run that version, items as SSE
  PUT    /v1/models/{name}/versions/{version}          Add or replace it (--allow-manage)
  DELETE /v1/models/{name}/versions/{version}          Remove it (--allow-manage)

Open Inference Protocol (KServe V2 REST, as Triton and KServe clients call it):
  GET    /v2                                          Server metadata
  GET    /v2/health/live                              Liveness
  GET    /v2/health/ready                             Readiness (as /healthz)
  GET    /v2/models/{name}                            Model metadata (tensors)
  GET    /v2/models/{name}/versions/{version}         Model metadata of a version
  GET    /v2/models/{name}/ready                      Model readiness
  GET    /v2/models/{name}/versions/{version}/ready   Model readiness of a version
  POST   /v2/models/{name}/infer                      Run a model on tensors
  POST   /v2/models/{name}/versions/{version}/infer   Run a version on tensors
  GET    /v2/models/stats                             Statistics of every model (Triton's)
  GET    /v2/models/{name}/stats                      Statistics of a model's versions
  GET    /v2/models/{name}/versions/{version}/stats   Statistics of a version
  GET    /v2/models/{name}/config                     Model configuration (Triton's)
  GET    /v2/models/{name}/versions/{version}/config  Model configuration of a version
  POST   /v2/repository/index                         Models loaded and loadable (--allow-manage)
  POST   /v2/repository/models/{name}/load            Load or reload a model (--allow-manage)
  POST   /v2/repository/models/{name}/unload          Unload a model (--allow-manage)

TensorFlow Serving's REST API (KServe V1; errors as {"error": "message"}):
  POST   /v1/models/{name}:predict                      Run a model: {"instances": [...]} (or "inputs")
  POST   /v1/models/{name}/versions/{version}:predict   Run a version the same way
  GET    /v1/models/{name}/metadata                     Signature metadata (declared tensors)
  GET    /v1/models/{name}/versions/{version}/metadata  Signature metadata of a version
  (GET /v1/models/{name} also answers "ready" and "model_version_status")
`;

/** Options of {@linkcode main}. */
export interface MainOptions {
  /** Runtime adapter. @default {defaultRuntime()} */
  runtime?: Runtime;
  /** Exit the process with the resulting code (set `false` in tests). @default {true} */
  exit?: boolean;
}

const OPTIONS = {
  port: { type: "string", short: "p" },
  host: { type: "string", short: "H" },
  "grpc-port": { type: "string" },
  "grpc-host": { type: "string" },
  "grpc-stream-window": { type: "string" },
  "grpc-max-unread": { type: "string" },
  "grpc-max-unread-total": { type: "string" },
  "grpc-max-connections": { type: "string" },
  workers: { type: "string", short: "w" },
  models: { type: "string", short: "m" },
  config: { type: "string", short: "c" },
  python: { type: "string" },
  "log-dir": { type: "string" },
  env: { type: "string", multiple: true },
  token: { type: "string" },
  "manage-token": { type: "string" },
  "token-file": { type: "string" },
  "manage-token-file": { type: "string" },
  "token-file-interval": { type: "string" },
  "tls-file-interval": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  "allowed-host": { type: "string", multiple: true },
  "forward-header": { type: "string", multiple: true },
  "cors-origin": { type: "string", multiple: true },
  "body-limit": { type: "string" },
  "max-integer-digits": { type: "string" },
  "max-json-depth": { type: "string" },
  timeout: { type: "string" },
  "load-timeout": { type: "string" },
  "stream-idle-timeout": { type: "string" },
  "stream-keep-alive": { type: "string" },
  "stream-first-item-timeout": { type: "string" },
  "keep-alive-timeout": { type: "string" },
  "max-queue": { type: "string" },
  "max-in-flight": { type: "string" },
  "tenant-max-channels": { type: "string" },
  "tenant-max-subscribers": { type: "string" },
  "tenant-max-history-bytes": { type: "string" },
  "eval-replay-budget": { type: "string" },
  grace: { type: "string" },
  "shutdown-delay": { type: "string" },
  "allow-eval": { type: "boolean" },
  "no-cancel-on-disconnect": { type: "boolean" },
  "no-sched-batch": { type: "boolean" },
  "oom-score-adj": { type: "string" },
  compress: { type: "boolean" },
  "no-compress": { type: "boolean" },
  "trace-endpoint": { type: "string" },
  "compress-min-bytes": { type: "string" },
  "allow-manage": { type: "boolean" },
  autoscale: { type: "string" },
  plugin: { type: "string", multiple: true },
  "log-level": { type: "string", multiple: true },
  "log-format": { type: "string" },
  debug: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/**
 * `--port -1` as `--port=-1`: parseArgs takes a value starting with a dash
 * for a forgotten value, and its multi-line complaint would hide the real
 * one ("port: expected an integer from 0 to 65535").
 */
function joinDashValues(args: string[]): string[] {
  const takesValue = new Set<string>();
  const long = new Map<string, string>();
  for (const [name, o] of Object.entries(OPTIONS)) {
    if (o.type !== "string") continue;
    takesValue.add(`--${name}`);
    long.set(`--${name}`, name);
    if ("short" in o) {
      takesValue.add(`-${o.short}`);
      long.set(`-${o.short}`, name);
    }
  }
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const next = args[i + 1];
    if (arg === "--") {
      out.push(...args.slice(i));
      break;
    }
    if (takesValue.has(arg) && next !== undefined && /^-[\d.]/.test(next)) {
      out.push(`--${long.get(arg)}=${next}`);
      i++;
    } else out.push(arg);
  }
  return out;
}

/** A message on one line: the CLI promises one `error: ...` line. */
function oneLine(message: string): string {
  return message.split("\n").map((l) => l.trim()).filter(Boolean).join(" ");
}

/**
 * `parseArgs`'s error in our words: node's text for an unknown option (about
 * positional arguments after `--`) does not fit a command that takes none.
 */
function argsError(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const message = oneLine(String(e?.message ?? err));
  const unknown = /^Unknown option '([^']+)'/.exec(message)?.[1];
  if (e?.code !== "ERR_PARSE_ARGS_UNKNOWN_OPTION" || unknown === undefined) {
    return message;
  }
  const near = closestOption(unknown);
  return `unknown option ${unknown}${
    near === undefined ? "" : ` (did you mean --${near}?)`
  }`;
}

/** The option most like `given` (`--models-dir` → `models`), if one is close. */
function closestOption(given: string): string | undefined {
  return closestName(
    given.replace(/^-+/, "").replace(/=.*$/, ""),
    Object.keys(OPTIONS),
  );
}

/**
 * Writes the CLI's one `error: ...` line; with `--log-format json` (or
 * `journald`) resolved, as a record of that format instead (`fatal`, the
 * category `pyproxy.cli`): a log shipper reading the container's stderr as
 * JSON Lines got every line as JSON but the one that said why it stopped.
 */
function printError(message: string, format?: string): void {
  if (format !== "json" && format !== "journald") {
    console.error(`error: ${message}`);
    return;
  }
  const text = `error: ${message}`;
  const record: LogRecord = {
    category: ["pyproxy", "cli"],
    level: "fatal",
    message: [text],
    rawMessage: text,
    timestamp: Date.now(),
    properties: {},
  };
  const line = format === "json"
    ? jsonLinesFormatter(record)
    : journaldFormatter()(record);
  console.error(line.endsWith("\n") ? line.slice(0, -1) : line);
}

/**
 * The one line for an error: its first line, then (for a report over
 * several lines, like the pool's per-worker one) its cause's first line, and
 * for a pool whose first worker wrote to stderr before it died, the last line
 * of that (what a Python that exits at start says: a traceback ends with it),
 * or its first for a command not found (status 127).
 */
function errorLine(err: unknown): string {
  if (!(err instanceof Error)) return oneLine(String(err));
  const [first = "", ...rest] = err.message.split("\n");
  if (rest.length === 0) return first;
  const cause = err.cause instanceof Error
    ? err.cause.message.split("\n")[0]
    : undefined;
  if (!cause) return oneLine(err.message);
  const workers = (err as { details?: { workers?: unknown } }).details
    ?.workers;
  const tail = Array.isArray(workers)
    ? (workers[0] as { stderrTail?: unknown } | undefined)?.stderrTail
    : undefined;
  // Status 127 is a shell's "command not found" (a pyenv shim or a wrapper
  // script naming a missing program): its first line says what is missing,
  // the last ones only advice ("... to be found at the same time.").
  // A record of the server's (a start-up exit's: --path not a directory,
  // cannot listen) without its time, level and thread.
  const lines = typeof tail === "string"
    ? tail.split("\n").map((line) =>
      withoutRecordHead(withoutColours(line).trim())
    ).filter(
      (line) => line,
    )
    : [];
  const why = /\(code 127\)/.test(cause) ? lines[0] : lines.at(-1);
  return why ? `${first}: ${cause}: ${why}` : `${first}: ${cause}`;
}

// Deno's words for a missing permission ("Requires net access to ...,
// run again with the --allow-net flag"), wherever in the chain it failed.
const MISSING_PERMISSION =
  /Requires \w+ access to .*run again with the --allow-/;

/**
 * Adds to an error that a missing Deno permission caused what `serve` needs:
 * following Deno's advice one flag at a time takes six runs (read, env,
 * write, run, sys, net). Not "every permission": narrower lists are
 * documented and work (docs/runtimes.md), and an operator who narrowed them
 * on purpose (a production pod) needs the path or name to add to a list,
 * which Deno's words before this give (newcomer21).
 */
function withPermissionHint(line: string): string {
  return MISSING_PERMISSION.test(line)
    ? `${line} (serve needs -A, or all of --allow-read, --allow-write, --allow-net, --allow-run, --allow-env and --allow-sys, which may list what they allow: docs/runtimes.md)`
    : line;
}

// The flag that sets each config field (cliOverrides, in reverse).
const FLAG_OF: Record<string, string> = {
  port: "--port",
  host: "--host",
  "grpc.hostname": "--grpc-host",
  "grpc.streamWindow": "--grpc-stream-window",
  "grpc.maxUnreadBytes": "--grpc-max-unread",
  "grpc.maxUnreadBytesTotal": "--grpc-max-unread-total",
  "grpc.maxConnections": "--grpc-max-connections",
  grpc: "--grpc-port",
  workers: "--workers",
  modelsDir: "--models",
  python: "--python",
  logDir: "--log-dir",
  env: "--env",
  token: "--token",
  manageToken: "--manage-token",
  tokenFileInterval: "--token-file-interval",
  tokenFile: "--token-file",
  manageTokenFile: "--manage-token-file",
  "tls.cert": "--tls-cert",
  "tls.key": "--tls-key",
  tlsFileInterval: "--tls-file-interval",
  allowedHosts: "--allowed-host",
  forwardHeaders: "--forward-header",
  "cors.origins": "--cors-origin",
  "limits.bodyLimit": "--body-limit",
  // Before "compress": the first field that is a prefix of the path names the flag.
  "compress.minBytes": "--compress-min-bytes",
  "compress": "--compress",
  "tracing.endpoint": "--trace-endpoint",
  "limits.maxIntegerDigits": "--max-integer-digits",
  "limits.maxJsonDepth": "--max-json-depth",
  "limits.requestTimeout": "--timeout",
  "limits.loadTimeout": "--load-timeout",
  "limits.streamIdleTimeout": "--stream-idle-timeout",
  "limits.streamKeepAlive": "--stream-keep-alive",
  "limits.streamFirstItemTimeout": "--stream-first-item-timeout",
  "limits.keepAliveTimeout": "--keep-alive-timeout",
  "limits.maxQueue": "--max-queue",
  "limits.maxInFlightPerWorker": "--max-in-flight",
  "channels.tenantMaxChannels": "--tenant-max-channels",
  "channels.tenantMaxSubscribers": "--tenant-max-subscribers",
  "channels.tenantMaxHistoryBytes": "--tenant-max-history-bytes",
  "limits.evalReplayBudget": "--eval-replay-budget",
  "limits.shutdownGrace": "--grace",
  "limits.shutdownDelay": "--shutdown-delay",
  logLevel: "--log-level",
  logLevels: "--log-level",
  logFormat: "--log-format",
};

/**
 * A bad flag value is validated as the config field it sets: the error
 * says where as the flag the user typed (`at command line: --timeout`), not
 * the field (`limits.requestTimeout`).
 */
function namingTheFlag(line: string, err: unknown): string {
  const details = (err as { details?: { path?: unknown; source?: unknown } })
    ?.details;
  if (details?.source !== "command line" || typeof details.path !== "string") {
    return line;
  }
  const path = details.path;
  const field = Object.keys(FLAG_OF).find((f) =>
    path === f || path.startsWith(`${f}[`) || path.startsWith(`${f}.`)
  );
  const suffix = `(at command line: ${path})`;
  return field !== undefined && line.endsWith(suffix)
    ? `${line.slice(0, -suffix.length)}(at command line: ${FLAG_OF[field]})`
    : line;
}

const LEVELS = new Set(["trace", "debug", "info", "warning", "error", "fatal"]);

function toNumber(value: string | undefined): number | undefined {
  return value === undefined
    ? undefined
    : (value.trim() === "" ? Number.NaN : Number(value));
}

/**
 * `--autoscale min:max` as the options of `plugins.autoscale` (either may be
 * left out); checked here so that an error names the flag, not the file.
 */
function autoscaleFlag(value: string): { min?: number; max?: number } {
  const where = "(at command line: --autoscale)";
  const m = /^\s*(\d*)\s*:\s*(\d*)\s*$/.exec(value);
  if (m === null) {
    throw new ConfigError(
      `autoscale: expected min:max, e.g. 1:4 (either may be left out: 2:, :8; got ${
        JSON.stringify(value)
      }) ${where}`,
      { details: { path: "plugins.autoscale", source: "command line" } },
    );
  }
  const options: { min?: number; max?: number } = {};
  if (m[1]) options.min = Number(m[1]);
  if (m[2]) options.max = Number(m[2]);
  try {
    autoscale(options);
  } catch (err) {
    throw new ConfigError(`${(err as Error).message} ${where}`, {
      cause: err,
      details: { path: "plugins.autoscale", source: "command line" },
    });
  }
  return options;
}

/**
 * `--env NAME=VALUE` flags as `env` (split at the first `=`; a later flag
 * of a name wins); names and values are checked as the file's `env` is.
 */
function envFlags(
  entries: string[] | undefined,
): Record<string, string> | undefined {
  if (!entries?.length) return undefined;
  const env = new Map<string, string>();
  for (const entry of entries) {
    const eq = entry.indexOf("=");
    if (eq < 0) {
      throw new ConfigError(
        `env: expected NAME=VALUE, e.g. OMP_NUM_THREADS=2 (got ${
          JSON.stringify(entry.length > 64 ? `${entry.slice(0, 64)}...` : entry)
        }) (at command line: --env)`,
        { details: { path: "env", source: "command line" } },
      );
    }
    env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  // fromEntries: a name "__proto__" stays a variable (a valid name).
  return Object.fromEntries(env);
}

/** Turns parsed flags into config-shaped overrides (validated like the file). */
function cliOverrides(
  values: Record<string, string | boolean | string[] | undefined>,
): { cli: GatewayConfig; config?: string; pluginModules?: string[] } {
  const cli: Record<string, unknown> = {};
  const str = (k: string) => values[k] as string | undefined;
  const set = (key: string, value: unknown) => {
    if (value !== undefined) cli[key] = value;
  };
  set("port", toNumber(str("port")));
  set("host", str("host"));
  const grpcPort = toNumber(str("grpc-port"));
  const grpcHost = str("grpc-host");
  const grpcWindow = toNumber(str("grpc-stream-window"));
  const grpcUnread = toNumber(str("grpc-max-unread"));
  const grpcUnreadTotal = toNumber(str("grpc-max-unread-total"));
  const grpcConnections = toNumber(str("grpc-max-connections"));
  if (
    grpcPort !== undefined || grpcHost !== undefined ||
    grpcWindow !== undefined || grpcUnread !== undefined ||
    grpcUnreadTotal !== undefined || grpcConnections !== undefined
  ) {
    cli.grpc = {
      ...(grpcPort === undefined ? {} : { port: grpcPort }),
      ...(grpcHost === undefined ? {} : { hostname: grpcHost }),
      ...(grpcWindow === undefined ? {} : { streamWindow: grpcWindow }),
      ...(grpcUnread === undefined ? {} : { maxUnreadBytes: grpcUnread }),
      ...(grpcUnreadTotal === undefined
        ? {}
        : { maxUnreadBytesTotal: grpcUnreadTotal }),
      ...(grpcConnections === undefined
        ? {}
        : { maxConnections: grpcConnections }),
    };
  }
  set("workers", toNumber(str("workers")));
  set("modelsDir", str("models"));
  set("python", str("python"));
  set("logDir", str("log-dir"));
  set("token", str("token"));
  set("manageToken", str("manage-token"));
  set("tokenFile", str("token-file"));
  set("manageTokenFile", str("manage-token-file"));
  set("tokenFileInterval", toNumber(str("token-file-interval")));
  set("tlsFileInterval", toNumber(str("tls-file-interval")));
  const cert = str("tls-cert");
  const key = str("tls-key");
  if ((cert === undefined) !== (key === undefined)) {
    throw new ConfigError(
      `${cert === undefined ? "--tls-key" : "--tls-cert"}: needs ${
        cert === undefined ? "--tls-cert" : "--tls-key"
      } too (the certificate and its private key)`,
      { details: { path: cert === undefined ? "tls.cert" : "tls.key" } },
    );
  }
  if (cert !== undefined && key !== undefined) set("tls", { cert, key });
  if (values["allow-eval"]) cli.allowEval = true;
  if (values["allow-manage"]) cli.allowManage = true;
  if (values["no-cancel-on-disconnect"]) cli.cancelOnDisconnect = false;
  if (values["no-sched-batch"]) cli.schedBatch = false;
  set("oomScoreAdj", toNumber(str("oom-score-adj")));
  const minBytes = toNumber(str("compress-min-bytes"));
  if (values["no-compress"]) cli.compress = false;
  else if (minBytes !== undefined) cli.compress = { minBytes };
  else if (values.compress) cli.compress = true;
  if (values.debug) cli.debug = true;
  const traceEndpoint = str("trace-endpoint");
  if (traceEndpoint !== undefined) cli.tracing = { endpoint: traceEndpoint };
  const scale = str("autoscale");
  if (scale !== undefined) cli.plugins = { autoscale: autoscaleFlag(scale) };
  const hosts = values["allowed-host"] as string[] | undefined;
  if (hosts?.length) cli.allowedHosts = hosts;
  const forward = values["forward-header"] as string[] | undefined;
  if (forward?.length) cli.forwardHeaders = forward;
  const origins = values["cors-origin"] as string[] | undefined;
  if (origins?.length) cli.cors = { origins };
  const limits: Record<string, unknown> = {};
  const limit = (key: string, flag: string) => {
    const n = toNumber(str(flag));
    if (n !== undefined) limits[key] = n;
  };
  limit("bodyLimit", "body-limit");
  limit("maxIntegerDigits", "max-integer-digits");
  limit("maxJsonDepth", "max-json-depth");
  limit("requestTimeout", "timeout");
  limit("loadTimeout", "load-timeout");
  limit("streamIdleTimeout", "stream-idle-timeout");
  limit("streamKeepAlive", "stream-keep-alive");
  limit("streamFirstItemTimeout", "stream-first-item-timeout");
  limit("keepAliveTimeout", "keep-alive-timeout");
  limit("maxQueue", "max-queue");
  limit("maxInFlightPerWorker", "max-in-flight");
  limit("evalReplayBudget", "eval-replay-budget");
  limit("shutdownGrace", "grace");
  limit("shutdownDelay", "shutdown-delay");
  if (Object.keys(limits).length) cli.limits = limits;
  const channels: Record<string, unknown> = {};
  for (
    const [key, flag] of [
      ["tenantMaxChannels", "tenant-max-channels"],
      ["tenantMaxSubscribers", "tenant-max-subscribers"],
      ["tenantMaxHistoryBytes", "tenant-max-history-bytes"],
    ]
  ) {
    const n = toNumber(str(flag!));
    if (n !== undefined) channels[key!] = n;
  }
  if (Object.keys(channels).length) cli.channels = channels;
  const logLevels: Record<string, string> = {};
  for (const entry of (values["log-level"] as string[] | undefined) ?? []) {
    const eq = entry.indexOf("=");
    if (eq < 0) cli.logLevel = entry;
    else logLevels[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  if (Object.keys(logLevels).length) cli.logLevels = logLevels;
  set("logFormat", str("log-format"));
  const env = envFlags(values.env as string[] | undefined);
  if (env !== undefined) cli.env = env;
  const config = str("config");
  const pluginModules = values.plugin as string[] | undefined;
  return {
    cli: cli as GatewayConfig,
    ...(config === undefined ? {} : { config }),
    ...(pluginModules?.length ? { pluginModules } : {}),
  };
}

/**
 * While the gateway starts, log records wait: a start that fails prints its
 * one `error:` line (which says why) without the warnings that led to it, and
 * a start that succeeds prints them then. At debug or trace nothing waits.
 * With `--log-format json` or `journald`, a failed start's records at
 * `error` and above go out before that line: a worker's traceback (one
 * record with its id, `pyproxy.python-server.stderr`) is what a log
 * collector has to say why, the line has its last line only.
 */
interface StartLog {
  /**
   * Writes the waiting records (`true`), those at `error` and above
   * (`"errors"`), or drops them; later ones go out at once.
   */
  release(write: boolean | "errors"): void;
}

/** After this long starting, the held records go out, and later ones at once. */
const SLOW_START_MS = 3_000;

/** Records held at most while starting; beyond this they are written at once. */
const MAX_HELD = 1000;

async function setupLogging(config: ResolvedConfig): Promise<StartLog> {
  // Logs go to stderr: stdout carries the "listening on" line that scripts read.
  const toStderr = Object.fromEntries(
    [...LEVELS].map((l) => [l, "error"]),
  ) as Record<LogLevel, "error">;
  const categories = new Map<string, LogLevel>([["pyproxy", config.logLevel]]);
  for (const [cat, level] of Object.entries(config.logLevels)) {
    categories.set(cat, level);
  }
  // JSON Lines for log shippers: one object a record, its date and time,
  // level, category (`logger`) and properties (the model, the worker) as
  // fields, newlines in a message escaped. The text format spreads a
  // message holding a newline (a traceback a model printed) over lines.
  const toConsole = getConsoleSink({
    levelMap: toStderr,
    ...(config.logFormat === "json"
      ? { formatter: jsonLinesFormatter }
      : config.logFormat === "journald"
      ? { formatter: journaldFormatter() }
      : {}),
  });
  // What this function writes itself (the records held while starting)
  // does not pass through LogTape, which drops a record its sink throws on:
  // a stderr that cannot be written (a full disk, ENOSPC, under
  // `2>>file`) threw out of the start, after it had succeeded, and the
  // gateway exited with status 1. Such a record is dropped the same way.
  const write = (record: LogRecord): void => {
    try {
      toConsole(record);
    } catch {
      // stderr cannot take it: nowhere left to say so
    }
  };
  const verbose = [...categories.values()].some((l) =>
    l === "debug" || l === "trace"
  );
  let held: LogRecord[] | undefined = verbose ? undefined : [];
  const sink = (record: LogRecord): void => {
    if (held === undefined || held.length >= MAX_HELD) write(record);
    else held.push(record);
  };
  await configure({
    reset: true,
    sinks: { console: sink },
    loggers: [
      {
        category: ["logtape", "meta"],
        lowestLevel: "warning",
        sinks: ["console"],
      },
      ...[...categories].map(([cat, level]) => ({
        category: cat.split("."),
        lowestLevel: level,
        // Each category owns the sink: an inherited sink would apply the parent's level too.
        sinks: ["console"],
        parentSinks: "override" as const,
      })),
    ],
  });
  return {
    release(writeHeld) {
      const records = held ?? [];
      held = undefined;
      if (writeHeld === "errors") {
        for (const r of records) {
          if (r.level === "error" || r.level === "fatal") write(r);
        }
      } else if (writeHeld) { for (const r of records) write(r); }
    },
  };
}

/**
 * Runs the command line. `serve` resolves once the gateway has drained
 * after SIGINT/SIGTERM. Returns the exit code (and exits with it unless
 * `exit: false`).
 *
 * @example
 * ```ts ignore
 * import { main } from "@pyproxy/pyproxy";
 * await main(["serve", "--port", "0"]);
 * ```
 */
export async function main(
  args?: string[],
  options: MainOptions = {},
): Promise<number> {
  const runtime = options.runtime ?? defaultRuntime();
  const code = await run(args ?? runtime.args(), runtime);
  if (options.exit ?? true) runtime.exit(code);
  return code;
}

async function run(args: string[], runtime: Runtime): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: joinDashValues(args),
      allowPositionals: true,
      strict: true,
      options: OPTIONS,
    });
  } catch (err) {
    printError(`${argsError(err)} (run with --help for usage)`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.version) {
    console.log(`pyproxy ${VERSION}`);
    return 0;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const command = positionals[0];
  if (command !== "serve" || positionals.length > 1) {
    printError(
      command === undefined
        ? "missing command (try: serve; run with --help for usage)"
        : command === "serve"
        ? `unexpected argument ${
          JSON.stringify(positionals[1])
        } after serve: it takes options only (run with --help for usage)`
        : `unknown command ${
          JSON.stringify(command)
        } (try: serve; run with --help for usage)`,
    );
    return 2;
  }
  let startLog: StartLog | undefined;
  let logFormat: string | undefined;
  try {
    const { cli, config: configPath, pluginModules } = cliOverrides(values);
    // The flag's, until the configuration is read: reading it fails for a
    // token file missing or refused (a container's Secret not mounted), and
    // that line was plain text among a JSON log's records.
    logFormat = cli.logFormat;
    const config = await loadConfig({
      cli,
      runtime,
      ...(configPath === undefined ? {} : { path: configPath }),
      ...(pluginModules === undefined ? {} : { pluginModules }),
    });
    logFormat = config.logFormat;
    startLog = await setupLogging(config);
    for (
      const warning of await exposedTokenWarnings(
        runtime,
        cli,
        config.configPath,
      )
    ) getLogger(["pyproxy", "gateway"]).warn(warning);
    // Named by --config, it is taken whoever owns it, and one found in the
    // working directory is checked there (its file and directory); a reload
    // checks more (the links, the directories above: its tokens are
    // applied): what it would refuse is said now, not at the first SIGHUP.
    if (config.configPath !== undefined) {
      const why = await untrustedFile(runtime, config.configPath).catch(() =>
        undefined
      );
      if (why !== undefined) {
        getLogger(["pyproxy", "gateway"]).warn(
          "Config file {path}: {why}; used, but a reload (SIGHUP) refuses it while another user owns it or could replace it (they could put tokens of theirs in it)",
          { path: config.configPath, why },
        );
      }
    }
    // A slow start (a model still loading) shows its records as they come:
    // held, it looked like a hang.
    const log = startLog;
    const slowStart = setTimeout(() => log.release(true), SLOW_START_MS);
    const server = await serve(config, {
      runtime,
      handleSignals: true,
      // SIGHUP reads the same sources again: the file, the flags, the
      // environment (docs/gateway.md, "Reloading").
      // Checked as read: another user's file is refused (security27).
      reloadConfig: () =>
        loadConfig({
          cli,
          runtime,
          ...(configPath === undefined ? {} : { path: configPath }),
          ...(pluginModules === undefined ? {} : { pluginModules }),
          trustedOnly: true,
        }),
      version: VERSION,
    }).finally(() => clearTimeout(slowStart));
    startLog.release(true);
    // $PYPROXY_TOKEN only where that is the token (not a --token or one
    // from pyproxy.json); never the token itself (stdout may be logged).
    const generated = config.tokenGenerated === true
      ? await generatedTokenShown(
        runtime,
        config,
        server.hostname,
        Number(new URL(server.url).port),
      )
      : undefined;
    if (generated?.lost !== undefined) {
      // A gateway whose every route needs a token nobody has, yet whose
      // /healthz says ok: a probe would keep it, unusable, for good.
      printError(generated.lost);
      await server.shutdown();
      return 1;
    }
    const shown = generated?.shown ?? "<token>";
    const auth = config.token === undefined
      ? ""
      : ` -H "Authorization: Bearer ${
        runtime.env("PYPROXY_TOKEN") === config.token ? "$PYPROXY_TOKEN" : shown
      }"`;
    // A self-signed certificate (its own issuer, as one made with openssl
    // for a test): curl refuses it unless told to trust it, so the try:
    // line says --cacert. A certificate a CA signed needs nothing.
    const cacert = config.tls !== undefined &&
        await selfSigned(runtime, config.tls.cert)
      ? ` --cacert ${shellWord(config.tls.cert)}`
      : "";
    const described = server.models();
    const models = described.map((m) => m.name);
    // echo, else a model whose declared inputs say what body works: the
    // first model declaring none may need fields {"hello":"world"} lacks.
    const example = models.includes("echo")
      ? "echo"
      : described.find((m) => m.inputs !== undefined)?.name ?? models[0] ??
        "<model>";
    // A body the model's declared inputs accept, quoted for a POSIX shell.
    const body = `'${
      exampleBody(described.find((m) => m.name === example)?.inputs)
        .replaceAll("'", "'\\''")
    }'`;
    const workers = `${config.workers} worker${
      config.workers === 1 ? "" : "s"
    }`;
    // server.url is a loopback URL when bound to every interface: say so.
    const bound = server.url.includes(`//${server.hostname}:`) ||
        server.url.includes(`//[${server.hostname}]:`)
      ? ""
      : `bound to ${server.hostname}, `;
    console.log(
      `pyproxy ${VERSION} listening on ${server.url} (${bound}${workers}, models: ${
        modelList(described) || "none"
      })`,
    );
    console.log(
      `  try:       curl -s${cacert} -X POST${auth} ${server.url}/v1/models/${example}/execute -d ${body}`,
    );
    if (server.grpcTarget !== undefined) {
      // As the URL, the target is a loopback one when bound to every
      // interface: say where it is bound, as the first line does.
      const grpcHost = config.grpc?.hostname ?? config.host;
      const grpcBound = server.grpcTarget.startsWith(`${grpcHost}:`) ||
          server.grpcTarget.startsWith(`[${grpcHost}]:`)
        ? ""
        : `bound to ${grpcHost}, `;
      console.log(
        `  gRPC:      ${server.grpcTarget} (${grpcBound}Open Inference Protocol, inference.GRPCInferenceService, ${
          server.url.startsWith("https:")
            ? "HTTP/2 over TLS"
            : "plain-text HTTP/2"
        })`,
      );
    }
    console.log(
      `  dashboard: ${server.url}/${
        config.token === undefined
          ? ""
          : `?token=${generated?.inUrl ?? "<token>"}`
      }`,
    );
    if (generated !== undefined) console.log(`  token:     ${generated.line}`);
    if (config.configPath) console.log(`  config:    ${config.configPath}`);
    for (const s of server.skippedModels) {
      console.log(`  skipped model ${s.name}: ${oneLine(s.error)}`);
    }
    await server.finished;
    if (generated?.path !== undefined) {
      await removeGeneratedToken(runtime, generated.path, String(config.token));
    }
    return 0;
  } catch (err) {
    // A collector's records say why (a worker's traceback); a terminal's
    // one line does.
    startLog?.release(
      logFormat === "json" || logFormat === "journald" ? "errors" : false,
    );
    const signal = err instanceof StartError ? err.details.signal : undefined;
    if (signal === "SIGINT" || signal === "SIGTERM" || signal === "SIGHUP") {
      // Stopped on request while starting (SIGHUP: its terminal hung up):
      // not a failure to explain, and maybe to no terminal.
      try {
        console.error(`pyproxy: stopped by ${signal} while starting`);
      } catch {
        // the terminal is gone
      }
      return signal === "SIGINT" ? 130 : signal === "SIGHUP" ? 129 : 143;
    }
    printError(
      withPermissionHint(namingTheFlag(errorLine(err), err)),
      logFormat,
    );
    return 1;
  }
}

/**
 * How the banner shows a token `serve` generated: itself on a terminal
 * (nobody else knows it, as Jupyter's); elsewhere (a service's journald,
 * `docker logs`, a file: kept, shipped, and read by more people than the
 * gateway's user) written to a file of mode 0600 (removed at exit), whose
 * path the banner gives with the token's fingerprint, or, when no such
 * file can be written, not at all.
 */
async function generatedTokenShown(
  runtime: Runtime,
  config: {
    token?: string | readonly string[];
    allowEval: boolean;
    allowManage: boolean;
  },
  host: string,
  port: number,
): Promise<
  { shown: string; inUrl: string; line: string; path?: string; lost?: string }
> {
  const token = String(config.token);
  const purpose = `generated for ${
    [
      ...(config.allowEval ? ["--allow-eval"] : []),
      ...(config.allowManage ? ["--allow-manage"] : []),
    ].join(" and ") || "the inference routes beside --manage-token"
  }, which would otherwise be open to every local user; every route but /healthz needs it`;
  const choose = "set PYPROXY_TOKEN or --token-file to choose one";
  if (runtime.stdoutIsTerminal?.() === true) {
    return { shown: token, inUrl: token, line: `${purpose} (${choose})` };
  }
  const notPrinted =
    "not printed, as this output is not a terminal and may be kept in a log";
  const written = await writeGeneratedToken(runtime, token, host, port);
  if ("path" in written) {
    return {
      shown: `$(cat ${shellWord(written.path)})`,
      inUrl: `<the token in ${written.path}>`,
      line:
        `${purpose}; in ${written.path} (mode 0600, removed at exit; sha256 ${
          tokenFingerprint(token)
        }...), ${notPrinted} (${choose})`,
      path: written.path,
    };
  }
  // Nobody could call it: the start fails rather than serve a gateway
  // that only /healthz answers.
  return {
    shown: "<token>",
    inUrl: "<token>",
    line: "",
    lost:
      `Cannot start: a token was ${purpose}; it is ${notPrinted}, nor written to a file (${written.unwritten}), so nobody could call the gateway: ${choose}, or give the service a writable RuntimeDirectory= or XDG_STATE_HOME`,
  };
}

/**
 * Models named on the banner's first line, the rest counted: with thousands
 * of models the line ran to tens of KiB, which container runtimes split
 * into pieces (Docker and containerd at 16 KiB) and log viewers cut;
 * `GET /v1/models` lists them all.
 */
const BANNER_MODELS = 50;

/**
 * The banner's models: a name once, with its versions when it has some
 * (`scorer (versions 1, 2; default 1)`), not once per version.
 */
function modelList(
  described: ReadonlyArray<{ name: string; label?: string; default?: boolean }>,
  max = BANNER_MODELS,
): string {
  const byName = new Map<string, { labels: string[]; default?: string }>();
  for (const m of described) {
    let entry = byName.get(m.name);
    if (entry === undefined) byName.set(m.name, entry = { labels: [] });
    if (m.label === undefined) continue;
    entry.labels.push(m.label);
    if (m.default === true) entry.default = m.label;
  }
  const names = [...byName];
  const listed = names.slice(0, max).map(([name, { labels, default: d }]) =>
    labels.length === 0
      ? name
      : `${name} (versions ${labels.join(", ")}${
        d === undefined ? "" : `; default ${d}`
      })`
  ).join(", ");
  return names.length > max
    ? `${listed} and ${names.length - max} more`
    : listed;
}

/** Whether the PEM certificate at `path` is its own issuer (self-signed). */
async function selfSigned(runtime: Runtime, path: string): Promise<boolean> {
  try {
    // Its first certificate (a file with the key first is served).
    const pem = new TextDecoder().decode(await runtime.readFile(path));
    const cert = new X509Certificate(firstPemBlock(pem, CERTIFICATE) ?? pem);
    return cert.issuer === cert.subject && cert.checkIssued(cert);
  } catch {
    return false; // serve read it already; a hint is not worth an error
  }
}

/** `word` as one word of a POSIX shell command line. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word)
    ? word
    : `'${word.replaceAll("'", "'\\''")}'`;
}
