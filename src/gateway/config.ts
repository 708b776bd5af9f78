/**
 * Loading the gateway configuration: `pyproxy.json` validated with valibot,
 * merged under the command-line flags, with defaults applied.
 *
 * @module
 */
import * as v from "valibot";
import { ConfigError } from "../errors.ts";
import { untrustedPath } from "./_untrusted_path.ts";
import type { Runtime } from "../runtime/types.ts";
import { defaultRuntime } from "../runtime/mod.ts";
import {
  ConfigSchema,
  type GatewayConfig,
  type LogLevel,
  type ModelEntry,
  TOKEN_UNUSABLE,
  usableToken,
} from "./config_schema.ts";
import { type CorsConfig, isLoopback } from "./security.ts";

export type { GatewayConfig, LogLevel, ModelEntry } from "./config_schema.ts";

/**
 * The effective configuration: file + flags + defaults.
 *
 * @example
 * ```ts
 * import { type ResolvedConfig, resolveConfig } from "./config.ts";
 * const config: ResolvedConfig = resolveConfig({ cwd: "/srv", cli: { workers: 3 } });
 * console.log(config.workers, config.limits.requestTimeout); // 3 30000
 * ```
 */
export interface ResolvedConfig {
  /** Address to bind. @default {"127.0.0.1"} */
  host: string;
  /** Port to bind (`0` picks a free one). @default {8000} */
  port: number;
  /** Python workers. @default {2} */
  workers: number;
  /** Python executable. */
  python?: string;
  /** Absolute models directory (model files are confined to it). */
  modelsDir: string;
  /** Models to load at start; `"auto"` loads every `*.py` of `modelsDir`. */
  models: ModelEntry[] | "auto";
  /** Plugin options by plugin name (`false` disables a default plugin). */
  plugins: Record<string, Record<string, unknown> | false>;
  /** Request and pool limits. */
  limits: {
    bodyLimit: number;
    requestTimeout: number;
    loadTimeout: number;
    shutdownGrace: number;
    maxInFlightPerWorker?: number;
    maxQueue?: number;
  };
  /** Channel buffers. */
  channels: { historySize: number; bufferSize: number };
  /** Bearer token (required when `host` is not loopback). */
  token?: string;
  /** Extra allowed `Host` header values. */
  allowedHosts: string[];
  /** CORS (off unless set). */
  cors?: CorsConfig;
  /** Enables `POST /v1/eval`. */
  allowEval: boolean;
  /** A client that disconnects cancels its execute call. */
  cancelOnDisconnect: boolean;
  /** Workers run under Linux `SCHED_BATCH` (they do not preempt the gateway's thread). */
  schedBatch: boolean;
  /** Enables `PUT`/`DELETE /v1/models/{name}`. */
  allowManage: boolean;
  /** Includes Python tracebacks in error responses. */
  debug: boolean;
  /** Default log level of the `pyproxy` category. */
  logLevel: LogLevel;
  /** Levels by category, e.g. `{"pyproxy.pool": "debug"}`. */
  logLevels: Record<string, LogLevel>;
  /** The config file used, if any. */
  configPath?: string;
}

/** Defaults applied under the file and the flags. */
export const DEFAULTS = {
  host: "127.0.0.1",
  port: 8000,
  workers: 2,
  bodyLimit: 1024 * 1024,
  requestTimeout: 30_000,
  loadTimeout: 120_000,
  shutdownGrace: 10_000,
  historySize: 50,
  bufferSize: 256,
  logLevel: "info" as LogLevel,
} as const;

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
 * import { parseConfig } from "./config.ts";
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
 * import { resolveConfig } from "./config.ts";
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
  /** `PYPROXY_TOKEN` from the environment, used when neither flag nor file sets a token. */
  envToken?: string;
  /** The config file path, for messages. */
  configPath?: string;
}

/**
 * Merges defaults, file and flags (flags win) and checks the combination:
 * binding a non-loopback address without a token is refused.
 *
 * @example
 * ```ts
 * import { resolveConfig } from "./config.ts";
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
  const token = cli.token ?? (options.envToken || undefined) ?? file.token;
  const config: ResolvedConfig = {
    host: pick("host") ?? DEFAULTS.host,
    port: pick("port") ?? DEFAULTS.port,
    workers: pick("workers") ?? DEFAULTS.workers,
    modelsDir,
    // --models picks a directory: its files are the models unless a list is given with it.
    models: cli.models ??
      (cli.modelsDir !== undefined ? undefined : file.models) ?? "auto",
    plugins: { ...file.plugins, ...cli.plugins },
    limits: {
      bodyLimit: limits.bodyLimit ?? DEFAULTS.bodyLimit,
      requestTimeout: limits.requestTimeout ?? DEFAULTS.requestTimeout,
      loadTimeout: limits.loadTimeout ?? DEFAULTS.loadTimeout,
      shutdownGrace: limits.shutdownGrace ?? DEFAULTS.shutdownGrace,
      ...(limits.maxInFlightPerWorker === undefined
        ? {}
        : { maxInFlightPerWorker: limits.maxInFlightPerWorker }),
      ...(limits.maxQueue === undefined ? {} : { maxQueue: limits.maxQueue }),
    },
    channels: {
      historySize: channels.historySize ?? DEFAULTS.historySize,
      bufferSize: channels.bufferSize ?? DEFAULTS.bufferSize,
    },
    allowedHosts: [...(file.allowedHosts ?? []), ...(cli.allowedHosts ?? [])],
    allowEval: pick("allowEval") ?? false,
    cancelOnDisconnect: pick("cancelOnDisconnect") ?? true,
    schedBatch: pick("schedBatch") ?? true,
    allowManage: pick("allowManage") ?? false,
    debug: pick("debug") ?? false,
    logLevel: pick("logLevel") ?? DEFAULTS.logLevel,
    logLevels: { ...file.logLevels, ...cli.logLevels },
  };
  const python = pick("python");
  if (python !== undefined) config.python = python;
  if (token !== undefined) config.token = token;
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
  if (config.token === undefined) {
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
        `${open[0]}: ${
          open[1]
        }: it requires a token (--token, the PYPROXY_TOKEN ` +
          `environment variable, or "token" in pyproxy.json) (at ${
            options.configPath ?? "config"
          }: ${open[0]})`,
        { details: { path: open[0] } },
      );
    }
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
  if (!isLoopback(config.host) && config.token === undefined) {
    throw new ConfigError(
      `Cannot serve on ${config.host}: binding a non-loopback address requires a token ` +
        `(--token, the PYPROXY_TOKEN environment variable, or "token" in pyproxy.json)`,
      { details: { path: "host" } },
    );
  }
  if (config.token !== undefined) {
    // The file's and the flag's tokens went through the schema; the
    // environment's did not.
    const where = cli.token !== undefined
      ? "command line: --token"
      : options.envToken
      ? "environment: PYPROXY_TOKEN"
      : `${options.configPath ?? "pyproxy.json"}: token`;
    const problem = config.token.length < 16
      ? "expected a token of at least 16 characters"
      : usableToken(config.token)
      ? undefined
      : TOKEN_UNUSABLE;
    if (problem !== undefined) {
      throw new ConfigError(`token: ${problem} (at ${where})`, {
        details: { path: "token", source: where },
      });
    }
  }
  return config;
}

/**
 * Options for {@linkcode loadConfig}.
 *
 * @example
 * ```ts
 * import type { LoadConfigOptions } from "./config.ts";
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
  /** Runtime adapter. */
  runtime?: Runtime;
}

/**
 * Reads and validates the config file (if any), merges the flags and the
 * defaults. Throws {@linkcode ConfigError} with the field and file on bad input.
 *
 * @example
 * ```ts ignore
 * import { loadConfig } from "./config.ts";
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
    try {
      text = new TextDecoder().decode(await runtime.readFile(path));
    } catch (err) {
      throw new ConfigError(
        `Cannot read config file ${path}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
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
  const config = resolveConfig({
    ...(file === undefined ? {} : { file }),
    ...(path === undefined ? {} : { fileDir: dirname(path), configPath: path }),
    cli,
    cwd,
    ...(envToken === undefined ? {} : { envToken }),
  });
  if (cli.modelsDir === undefined && file?.modelsDir === undefined) {
    config.modelsDir = await defaultModelsDir(runtime, config.modelsDir, cwd);
  }
  return config;
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
 * The example models ship with a source checkout only, not with the JSR or
 * npm package: there `./models` is used when it exists, else the start fails
 * now rather than with an empty or unreadable directory later.
 */
async function defaultModelsDir(
  runtime: Runtime,
  preferred: string,
  cwd: string,
): Promise<string> {
  const local = resolvePath(cwd, "models");
  for (const dir of new Set([preferred, local])) {
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
