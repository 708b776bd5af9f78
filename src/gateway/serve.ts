/**
 * `serve()`: the complete HTTP gateway: a pool with the configured plugins
 * and models, the Hono app on the runtime's HTTP server, and a graceful
 * drain on shutdown.
 *
 * @module
 */
import { refuseUntrustedConfig } from "./_config_file_trust.ts";
import { exposedTokenWarnings } from "./_exposed_tokens.ts";
import { TRACING_OF } from "./_gateway_tracing.ts";
import { getLogger, type Logger } from "@logtape/logtape";
import {
  ConfigError,
  ShuttingDownError,
  StartError,
  TimeoutError,
} from "../errors.ts";
import type { Plugin } from "../plugin.ts";
import { Pool, type PoolOptions } from "../pool.ts";
import type {
  FetchHandler,
  HttpServer,
  ListenerEvent,
  Runtime,
} from "../runtime/types.ts";
import { defaultRuntime } from "../runtime/mod.ts";
import { autoscale, sharedCache, spillover } from "../../plugins/mod.ts";
import { reconnectNamed } from "../../plugins/reconnect.ts";
import {
  createGateway,
  droppedSubscriberLogger,
  type GatewayApp,
} from "./app.ts";
import { ChannelHub } from "./channels.ts";
import { channelsPlugin } from "./channels_plugin.ts";
import { loadPluginModule } from "./_plugin_modules.ts";
import { DEFAULTS, type ModelEntry, type ResolvedConfig } from "./config.ts";
import {
  certificateSummary,
  checkTokensSet,
  reloadPlan,
  withTlsFilesOf,
} from "./_config_reload.ts";
import { SET_TOKENS_OF } from "./_gateway_tokens.ts";
import {
  type FileTokens,
  hasTokenFiles,
  type ReadableWarnings,
  tokenChanges,
  type TokenFileReads,
  TokenFileWatch,
  warnReadableTokenFiles,
  withFileTokens,
  withTokenFilesOf,
  withTokensRead,
} from "./_token_files.ts";
import { checkTokenFileInterval } from "./_token_file_interval.ts";
import { GatewayMetrics } from "./metrics.ts";
import { hasModel } from "./_pool_reads.ts";
import { type GatewayModelInfo, ModelCatalog } from "./model_catalog.ts";
import { ListenerLog } from "./_listener_log.ts";
import { modelNameProblem } from "./model_name_problem.ts";
import { modelFiles } from "./_model_files.ts";
import { isLoopback } from "./security.ts";
import { readTls } from "./_tls_files.ts";
import { TlsFileWatch } from "./_tls_file_watch.ts";
import { otherListeners } from "./_port_sharers.ts";
import { workerEnv } from "./_worker_env.ts";
import type { GrpcServer } from "./grpc_server.ts";
import { setTimeoutOrNever } from "../_timer.ts";
import { connectHost } from "../_connect_host.ts";
import { defined } from "../_defined.ts";

/** Addresses that bind every interface: no client can connect to them. */
const WILDCARD = new Set(["0.0.0.0", "::", "[::]"]);

/** `host:port`, with an IPv6 address in brackets. */
function hostPort(host: string, port: number): string {
  return `${
    host.includes(":") && !host.startsWith("[") ? `[${host}]` : host
  }:${port}`;
}

/**
 * Options of {@linkcode serve} besides the configuration.
 *
 * @example
 * ```ts
 * import type { ServeOptions } from "@pyproxy/pyproxy";
 * const options: ServeOptions = { handleSignals: true, version: "1.2.3" };
 * console.log(options.handleSignals);
 * // const server = await serve(config, options);
 * ```
 */
export interface ServeOptions {
  /** Runtime adapter. @default {defaultRuntime()} */
  runtime?: Runtime;
  /**
   * Drain and stop on SIGINT/SIGTERM (then `finished` resolves; after
   * `limits.shutdownDelay` ms of serving unready, a second signal meanwhile
   * ending the delay), and reload on SIGHUP (with `reloadConfig`: without
   * it, or once a shutdown began, its delay included, the reload fails and
   * is logged; while starting, a SIGHUP is logged and
   * ignored). Off, the program's own signal handling applies (a SIGHUP
   * that nothing listens for ends the process).
   * @default {false}
   */
  handleSignals?: boolean;
  /**
   * Plugins added to the configured ones, after them (as `Pool.start({
   * plugins })` adds to its defaults). A hook's error is answered by its
   * class (docs/plugins.md, "Errors"): one of your own is a 500, one
   * extending `OverloadedError` a 429.
   */
  plugins?: Plugin[];
  /** Version reported by `/v1/status` and the dashboard. */
  version?: string;
  /**
   * How often the dashboard page (`GET /`) refreshes, in ms (200 at least;
   * as `createGateway`'s option of the same name).
   * @default {1000}
   */
  dashboardIntervalMs?: number;
  /**
   * Reads the configuration again, for {@linkcode GatewayServer.reload}
   * (and SIGHUP with `handleSignals`): the CLI passes its `loadConfig` call;
   * pass the one you started with (the same `path` and `cli`), so that a
   * reload reads the same sources. Without it, `reload()` rejects with a
   * `ConfigError`.
   *
   * @example
   * ```ts ignore
   * const readConfig = () => loadConfig({ cli: { port: 0, tokenFile: "/run/secrets/token" } });
   * await using server = await serve(await readConfig(), { reloadConfig: readConfig });
   * ```
   */
  reloadConfig?: () => Promise<ResolvedConfig>;
}

/**
 * What a {@linkcode GatewayServer.reload} changed.
 *
 * @example
 * ```ts
 * import type { ReloadResult } from "@pyproxy/pyproxy";
 * const result: ReloadResult = { changed: ["token (2)"], ignored: ["workers"] };
 * console.log(result.changed.join(", ")); // "token (2)"
 * ```
 */
export interface ReloadResult {
  /**
   * What changed, never a secret: `token (2)` (two tokens now),
   * `manageToken (1)`, `tls (<subject>, valid until <date>)`.
   */
  changed: string[];
  /** Settings that differ but take effect at a restart only (warned about). */
  ignored: string[];
}

/**
 * Options of {@linkcode GatewayServer.shutdown}.
 *
 * @example
 * ```ts
 * import type { GatewayShutdownOptions } from "@pyproxy/pyproxy";
 * // What SIGTERM does with limits.shutdownDelay 5000:
 * const options: GatewayShutdownOptions = { delay: 5000 };
 * console.log(options.delay); // 5000
 * // await server.shutdown(options);
 * ```
 */
export interface GatewayShutdownOptions {
  /**
   * Milliseconds to keep serving before the drain, the readiness routes
   * saying not ready (`/healthz` 503 `"draining"`, `/v2/health/ready`,
   * each model's ready, the gRPC health service NOT_SERVING): the time a
   * load balancer takes to stop sending. `shutdown()` called again during
   * it starts the drain at once (beyond 2^31 − 1, a timer's range: only
   * then). A signal (`handleSignals`) uses `limits.shutdownDelay`.
   * @default {0}
   */
  delay?: number;
}

/**
 * A running gateway.
 *
 * @example
 * ```ts
 * import type { GatewayServer } from "@pyproxy/pyproxy";
 * async function healthy(server: GatewayServer): Promise<boolean> {
 *   const res = await fetch(`${server.url}/healthz`);
 *   await res.body?.cancel();
 *   return res.ok;
 * }
 * console.log(typeof healthy); // "function"
 * // await using server = await serve(config); console.log(await healthy(server));
 * ```
 */
export interface GatewayServer extends AsyncDisposable {
  /**
   * Base URL, e.g. `http://127.0.0.1:8000`; bound to every interface
   * (`0.0.0.0`, `::`), it is the loopback URL (`http://127.0.0.1:8000`).
   */
  readonly url: string;
  /** Bound port. */
  readonly port: number;
  /** Bound address (`0.0.0.0` stays `0.0.0.0`; see {@linkcode GatewayServer.url}). */
  readonly hostname: string;
  /**
   * The gRPC transport's address (`host:port`, for a gRPC client's target)
   * when `grpc.port` was given; `undefined` otherwise.
   */
  readonly grpcTarget?: string;
  /** The pool. */
  readonly pool: Pool;
  /** The channels. */
  readonly hub: ChannelHub;
  /** The gateway app (its `fetch` handler serves the routes). */
  readonly app: GatewayApp;
  /**
   * Models that failed to load at start (auto-discovered ones only; listed
   * ones abort the start). A model whose load answered but that was taken
   * out of service later (`limits.loadCrashWindow`) is not here: its
   * `pool.modelStatus(name)` entry has `failedReason`.
   */
  readonly skippedModels: Array<{ name: string; error: string }>;
  /** The models served, described as `GET /v1/models` describes them. */
  models(): GatewayModelInfo[];
  /**
   * Drains: answers new requests with 503 (the port stays open), ends the
   * channel streams, lets in-flight requests (eval streams included) finish
   * for up to `shutdownGrace` ms (counted from the drain's start), stops the
   * workers, then closes the port. With `delay` (ms), the readiness routes
   * say not ready at once, and the drain starts after it (every other
   * route serving until then); called again meanwhile, the drain starts at
   * once. Without it, at once (as `await using` does), whatever
   * `limits.shutdownDelay` says: that applies to the signals
   * (`handleSignals`). A `delay` that is not an integer ≥ 0 rejects with a
   * `RangeError`.
   */
  shutdown(options?: GatewayShutdownOptions): Promise<void>;
  /** Resolves once shut down (by `shutdown()` or a signal). */
  readonly finished: Promise<void>;
  /**
   * Reads the configuration again ({@linkcode ServeOptions.reloadConfig})
   * and the TLS files, checked as at start, and applies the tokens and the
   * certificate: new requests take the new tokens, new connections get the
   * new certificate (the old listener drains its connections). Anything
   * wrong: rejects with its {@linkcode ConfigError} (once `shutdown()`
   * began: `ShuttingDownError`), nothing changed, and logs it. Other
   * settings that differ are named in `ignored` (a restart applies them).
   * SIGHUP calls it when `handleSignals` is on (not on Windows). A new
   * certificate needs Linux and, on Deno, its unstable net APIs in the
   * program that runs `serve` (`--unstable-net`, or `"unstable": ["net"]`
   * in your own `deno.json`: a linked pyproxy's does not count); elsewhere
   * `serve` warns at start and such a reload rejects.
   *
   * @example An admin route of your own that reloads
   * ```ts ignore
   * const readConfig = () => loadConfig({ cli: { port: 0, tokenFile: "./token" } });
   * await using server = await serve(await readConfig(), { reloadConfig: readConfig });
   * Deno.serve({ port: 9091, hostname: "127.0.0.1" }, async () => {
   *   try {
   *     return Response.json(await server.reload()); // { changed: ["token (1)"], ignored: [] }
   *   } catch (err) {
   *     return Response.json({ error: (err as Error).message }, { status: 500 });
   *   }
   * });
   * ```
   */
  reload(): Promise<ReloadResult>;
}

function listenError(config: ResolvedConfig, err: unknown): StartError {
  // Deno and Bun both set code EADDRINUSE; their messages differ.
  const inUse = (err as { code?: unknown }).code === "EADDRINUSE"
    ? " (another process listens there: stop it, or pass another --port, or 0 for a free one)"
    : "";
  return new StartError(
    `Cannot listen on ${hostPort(config.host, config.port)}: ${
      (err as Error).message
    }${inUse}`,
    { cause: err },
  );
}

type PluginFactory = (options?: Record<string, unknown>) => Plugin;
/**
 * The restart policy naming its options as pyproxy.json sets them in the
 * reasons `/v1/status` and the dashboard show (`failedReason`,
 * `lastExit.reason`): `plugins.reconnect.failedRetryAfter`, not the
 * library's `reconnect({ failedRetryAfter })`.
 */
const gatewayReconnect: PluginFactory = (options = {}) =>
  reconnectNamed(options, (option) => `plugins.reconnect.${option}`);
const BUILTIN_PLUGINS: Record<string, PluginFactory> = {
  reconnect: gatewayReconnect,
  spillover: spillover as PluginFactory,
  sharedCache: sharedCache as PluginFactory,
  autoscale: autoscale as PluginFactory,
};
/** The plugins a pool has unless removed (`false` removes them; for the others it is a no-op). */
const DEFAULT_PLUGINS = new Set(["reconnect", "spillover", "sharedCache"]);

/**
 * The pool's plugins: the configured ones in order (built-in ones by name,
 * one's own loaded from their modules), then the command line's modules,
 * then `extra` (the gateway's own and a program's). A module's plugin
 * named as a default replaces it; one named as another plugin is refused.
 */
async function pluginsOption(
  config: ResolvedConfig,
  extra: Plugin[],
  runtime: Runtime,
  logger: Logger,
): Promise<NonNullable<PoolOptions["plugins"]>> {
  const use: Plugin[] = [];
  const remove: string[] = [];
  const where = config.configPath ?? "config";
  // Who gave each name, to refuse a second one naming its first.
  const givenBy = new Map<string, string>();
  // The modules' plugins by name, where they were given.
  const loaded = new Map<
    string,
    { module: string; path: string; where: string }
  >();
  for (const [name, opts] of Object.entries(config.plugins)) {
    if (opts !== false && typeof opts.module === "string") {
      const plugin = await loadPluginModule(
        {
          module: opts.module,
          ...(opts.options === undefined
            ? {}
            : { options: opts.options as Record<string, unknown> }),
          name,
          where: `${where}: plugins.${name}`,
          path: `plugins.${name}`,
        },
        runtime,
        { logger },
      );
      givenBy.set(name, `plugins.${name} (${opts.module})`);
      loaded.set(name, {
        module: opts.module,
        path: `plugins.${name}`,
        where: `${where}: plugins.${name}`,
      });
      use.push(plugin);
      continue;
    }
    givenBy.set(name, `plugins.${name}`);
    const factory = BUILTIN_PLUGINS[name];
    if (!factory) {
      throw new ConfigError(
        `plugins.${name}: unknown plugin (known: ${
          Object.keys(BUILTIN_PLUGINS).join(", ")
        }) (at ${config.configPath ?? "config"}: plugins.${name})`,
      );
    }
    if (opts === false) {
      if (DEFAULT_PLUGINS.has(name)) remove.push(name);
    } else {
      try {
        use.push(factory(opts));
      } catch (err) {
        throw new ConfigError(
          `plugins.${name}: ${(err as Error).message} (at ${
            config.configPath ?? "config"
          }: plugins.${name})`,
          { cause: err },
        );
      }
    }
  }
  for (const module of config.pluginModules ?? []) {
    const plugin = await loadPluginModule(
      {
        module,
        where: `command line: --plugin ${module}`,
        path: "--plugin",
      },
      runtime,
      { logger },
    );
    const first = givenBy.get(plugin.name);
    if (first !== undefined) {
      throw new ConfigError(
        `--plugin: Cannot load plugin module ${module}: its plugin '${plugin.name}' is given already, by ${first}: give each plugin once (at command line: --plugin ${module})`,
        { details: { path: "--plugin", module } },
      );
    }
    givenBy.set(plugin.name, `--plugin ${module}`);
    loaded.set(plugin.name, {
      module,
      path: "--plugin",
      where: `command line: --plugin ${module}`,
    });
    use.push(plugin);
  }
  for (const plugin of extra) {
    const module = loaded.get(plugin.name);
    if (module !== undefined) {
      throw new ConfigError(
        `${module.path}: Cannot load plugin module ${module.module}: its plugin is named '${plugin.name}', as ${
          plugin.name === "channels"
            ? "the gateway's own (channels)"
            : "a plugin the program running serve gives"
        }: give it another name (at ${module.where})`,
        { details: { path: module.path, module: module.module } },
      );
    }
  }
  for (const [name, { module }] of loaded) {
    logger.info("Loaded plugin {name} from {module}", { name, module });
  }
  // The pool's default reconnect() would name the library's options: the
  // same policy, worded for the gateway, replaces it (same name).
  if (!givenBy.has("reconnect")) {
    use.unshift(gatewayReconnect());
  }
  return { use: [...use, ...extra], remove };
}

/** A model still loading after this long at start is announced in the log. */
/** The Python server's ModelLoadError for a module without a model class. */
const NO_MODEL_CLASS =
  /no class with an execute\(msg\) or execute_batch\(msgs\) method/;

const STILL_LOADING_MS = 5_000;

async function modelsToLoad(
  config: ResolvedConfig,
  runtime: Runtime,
): Promise<
  {
    list: ModelEntry[];
    strict: boolean;
    misnamed: Array<{ name: string; error: string }>;
  }
> {
  if (config.models !== "auto") {
    return { list: config.models, strict: true, misnamed: [] };
  }
  const files = (await modelFiles(
    runtime,
    config.modelsDir,
    (await runtime.readDir(config.modelsDir)).filter((f) =>
      f.endsWith(".py") && !f.startsWith("_")
    ),
  )).sort();
  const list: ModelEntry[] = [];
  const misnamed: Array<{ name: string; error: string }> = [];
  for (const file of files) {
    const name = file.slice(0, -3);
    const problem = modelNameProblem(name);
    if (problem === undefined) list.push({ name, file });
    else {
      // Loaded, it would be served but could never be replaced or removed
      // by PUT/DELETE, which refuse the name.
      misnamed.push({
        name,
        error: `${
          JSON.stringify(file)
        } does not name a model: expected ${problem}; rename the file, or list it under "models" in pyproxy.json with a name`,
      });
    }
  }
  return { list, strict: false, misnamed };
}

/**
 * Starts the gateway: validates the security settings, starts the pool
 * (with the channels plugin, so models can `host.publish`), loads the
 * models, and listens.
 *
 * @example
 * ```ts ignore
 * import { loadConfig, serve } from "@pyproxy/pyproxy";
 * await using server = await serve(await loadConfig({ cli: { port: 0 } }));
 * console.log(server.url);
 * ```
 */
export async function serve(
  config: ResolvedConfig,
  options: ServeOptions = {},
): Promise<GatewayServer> {
  const runtime = options.runtime ?? defaultRuntime();
  const logger = getLogger(["pyproxy", "gateway"]);
  // A TLS listener is bound with SO_REUSEPORT where a reload can start the
  // new certificate's listener beside it (there is no other way on Deno);
  // elsewhere a new certificate needs a restart.
  const reusePort = runtime.reusePortTls === true;
  const modelsDir = await runtime.stat(config.modelsDir);
  if (modelsDir?.isDirectory !== true) {
    throw new ConfigError(
      `modelsDir: ${config.modelsDir} ${
        modelsDir === null ? "does not exist" : "is not a directory"
      }`,
    );
  }
  // Read again: a configuration from resolveConfig has not read them, and
  // a rotation may have happened since loadConfig did.
  // The token files' reads under way, bounded across this gateway's reads.
  const tokenFileReads: TokenFileReads = new Map();
  // A configuration built by hand skips the schema's floor.
  checkTokenFileInterval(config);
  config = await withFileTokens(runtime, config, tokenFileReads);
  // The files warned about (again on a reload or a poll: for another file).
  const readableWarnings: ReadableWarnings = new Map();
  await warnReadableTokenFiles(runtime, config, logger, readableWarnings);
  checkTokensSet(config);
  if ((config.allowEval || config.allowManage) && config.token === undefined) {
    // Every local user (any process reaches the loopback) would run code as
    // this user through eval, or import any .py of the models directory.
    // resolveConfig generates a token; a config built by hand must set one.
    const what = config.allowEval ? "allowEval" : "allowManage";
    throw new ConfigError(
      `${what}: eval and model management require a token (resolveConfig generates one when none is set); without one, any process on this machine, of any user, could use them`,
      { details: { path: what } },
    );
  }
  // Read and checked before the workers start (which can take minutes).
  const tls = config.tls === undefined ? undefined : await readTls(
    runtime,
    config.tls,
    config.configPath,
    logger,
    readableWarnings,
  );
  if (
    tls === undefined && config.token !== undefined && !isLoopback(config.host)
  ) {
    logger.warn(
      "Serving plain HTTP on {host}: the bearer token travels in clear text; serve HTTPS (--tls-cert and --tls-key, or tls in pyproxy.json), unless a proxy in front terminates TLS",
      { host: config.host },
    );
  }
  // The gRPC port too, when bound elsewhere (--grpc-host): it serves TLS
  // only with the gateway's certificate.
  if (
    tls === undefined && config.grpc !== undefined &&
    config.token !== undefined && !isLoopback(config.grpc.hostname)
  ) {
    logger.warn(
      "Serving gRPC in plain text (h2c) on {host}: the bearer token travels in clear text; serve TLS (--tls-cert and --tls-key: the gRPC port uses them too), unless a proxy in front terminates TLS",
      { host: config.grpc.hostname },
    );
  }
  // Said at start: otherwise found at the first renewal (months on, the
  // certificate in force about to expire), when the reload or the TLS
  // files' poll refuses it.
  if (
    tls !== undefined && !reusePort &&
    (options.reloadConfig !== undefined ||
      (config.tlsFileInterval ?? DEFAULTS.tlsFileInterval) > 0)
  ) {
    // Two messages rather than a property: a logger renders a string
    // property quoted ('...'), in the middle of the sentence.
    logger.warn(
      runtime.name === "deno"
        ? 'Serving TLS where a reload cannot change the certificate: a renewed one takes a restart (a reload starts a listener beside the old one, which needs Linux\'s SO_REUSEPORT, and on Deno its unstable net APIs: --unstable-net, or "unstable": ["net"] in deno.json)'
        : "Serving TLS where a reload cannot change the certificate: a renewed one takes a restart (a reload starts a listener beside the old one, which needs Linux's SO_REUSEPORT)",
    );
  }
  const hub = new ChannelHub({
    ...config.channels,
    onDrop: droppedSubscriberLogger(logger),
  });
  const catalog = new ModelCatalog();
  // Past its maxModels names, a model the pool has still gets series.
  const metrics = new GatewayMetrics({
    isModel: (name) => pool !== undefined && hasModel(pool, name),
  });
  const envOption = workerEnv(config.env ?? {});
  const poolOptions: PoolOptions = {
    workers: config.workers,
    modelsDir: config.modelsDir,
    plugins: await pluginsOption(
      config,
      [
        channelsPlugin({ hub, maxMessageBytes: config.limits.bodyLimit }),
        ...(options.plugins ?? []),
      ],
      runtime,
      logger,
    ),
    handleSignals: false,
    runtime,
    shutdownGrace: config.limits.shutdownGrace,
    // Bounds the models' replay onto a restarted worker too: a model whose
    // import hangs left the slot `restarting` for ever, silently.
    loadTimeout: config.limits.loadTimeout,
    // A client that stops reading its stream (its socket full) loses it.
    streamIdleTimeout: config.limits.streamIdleTimeout,
    // The gateway's thread is its bottleneck: a worker woken by a request
    // must not preempt it (docs/gateway.md).
    schedBatch: config.schedBatch,
    // In a container's memory limit the gateway (PID 1) is often the largest
    // process: the OOM killer must take a worker, which restarts, instead.
    oomScoreAdj: config.oomScoreAdj,
    // JSON in, JSON out: integers beyond ±2^53 pass through exactly (docs/gateway.md).
    integers: "bigint",
    ...defined({
      python: config.python,
      // The gateway's workers log in the models directory, as always
      // (docs/gateway.md): a library pool's default is elsewhere.
      logDir: config.logDir ?? `${config.modelsDir}/logs`,
      // The config's env, `{worker}` and `{index}` filled in per slot (a
      // restarted worker keeps its slot's).
      env: envOption,
      maxInFlightPerWorker: config.limits.maxInFlightPerWorker,
      maxQueue: config.limits.maxQueue,
      evalReplayBudget: config.limits.evalReplayBudget,
      // A model that kills its worker soon after its load: out of service
      // at its second strike (docs/reliability.md).
      loadCrashWindow: config.limits.loadCrashWindow,
    }),
    // A placed model that crashes the slots it goes to: moves before it is
    // out of service (docs/models.md, "Placement").
    placement: {
      ...defined({
        maxRelocations: config.limits.maxRelocations,
        relocationWindow: config.limits.relocationWindow,
      }),
      // A model's failedReason names pyproxy.json's keys, as the 503 does.
      settingName: (option) => `limits.${option}`,
    },
    modelMetrics: defined({
      maxSeriesPerModel: config.limits.modelMetricSeriesPerModel,
      maxSeries: config.limits.modelMetricSeries,
    }),
  };
  if (config.port !== 0) {
    // A port in use fails the start before the workers and the models
    // load (which can take minutes), not after. (Still checked at the real
    // listen below: another process may take the port meanwhile.)
    let probe: HttpServer;
    try {
      probe = await runtime.serve(
        { hostname: config.host, port: config.port },
        () => new Response(null, { status: 503 }),
      );
    } catch (err) {
      throw listenError(config, err);
    }
    await probe.shutdown();
  }
  // A SIGINT/SIGTERM while the workers start and the models load (which can
  // take minutes) stops the start: the pool is closed (workers stopped,
  // their socket directories removed) and serve rejects. A second one exits
  // at once.
  let interrupted: "SIGINT" | "SIGTERM" | "SIGHUP" | undefined;
  // The pool once started (a signal then closes it).
  const starting: { pool?: Pool } = {};
  // Gives up the model load in flight, which close() would wait for.
  const startAbort = new AbortController();
  const startSignals: Array<() => void> = [];
  const offStartSignals = (): void => {
    for (const off of startSignals.splice(0)) off();
  };
  if (options.handleSignals) {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      startSignals.push(runtime.onSignal(signal, () => {
        if (interrupted !== undefined) {
          runtime.exit(signal === "SIGINT" ? 130 : 143);
          return;
        }
        interrupted = signal;
        logger.info("Received {signal} while starting: stopping", { signal });
        startAbort.abort();
        void starting.pool?.close();
      }));
    }
    // SIGHUP's default action ends the process: while starting (minutes,
    // the models loading) it is logged and ignored instead; unless it is
    // the hang-up of the terminal serve was started on (stdout no longer
    // one), which stops the start as SIGTERM does. Ignored, the start went
    // on and its banner's write to the terminal gone failed it with
    // "Input/output error" after the models had loaded (chaos48).
    const startedOnTerminal = runtime.stdoutIsTerminal?.() === true;
    try {
      startSignals.push(runtime.onSignal("SIGHUP", () => {
        if (startedOnTerminal && runtime.stdoutIsTerminal?.() !== true) {
          if (interrupted !== undefined) return;
          interrupted = "SIGHUP";
          logger.info(
            "Received {signal} while starting: its terminal hung up: stopping",
            { signal: "SIGHUP" },
          );
          startAbort.abort();
          void starting.pool?.close();
          return;
        }
        logger.warn(
          "Received {signal} while starting: ignored (a reload applies to a started gateway)",
          { signal: "SIGHUP" },
        );
      }));
    } catch {
      // No SIGHUP (Windows).
    }
  }
  const interruption = (): StartError | undefined =>
    interrupted === undefined ? undefined : new StartError(
      `Cannot start gateway: interrupted by ${interrupted}`,
      { details: { signal: interrupted } },
    );
  let pool: Pool;
  try {
    pool = await Pool.start(poolOptions);
  } catch (err) {
    offStartSignals();
    throw interruption() ?? err;
  }
  starting.pool = pool;
  if (interrupted !== undefined) await pool.close();
  const skippedModels: Array<{ name: string; error: string }> = [];
  // Those that are models whose load failed (not helper modules, nor
  // misnamed files): the routes and /metrics say so (StartSkips).
  const failedModels: Array<{ name: string; error: string }> = [];
  let server: HttpServer | undefined;
  let grpcServer: GrpcServer | undefined;
  let listenerLog: ListenerLog | undefined;
  const drain = new AbortController();
  // Aborted at the shutdown's start: the readiness routes say not ready,
  // through the delay (limits.shutdownDelay) and the drain.
  const unready = new AbortController();
  // Aborted when the grace is over: the eval streams still running end then.
  const stop = new AbortController();
  try {
    const stopped = interruption();
    if (stopped !== undefined) throw stopped;
    const { list, strict, misnamed } = await modelsToLoad(config, runtime);
    for (const skipped of misnamed) {
      skippedModels.push(skipped);
      logger.warn("Skipped model {name}: {message}", {
        name: skipped.name,
        message: skipped.error,
      });
    }
    const loadTimeout = config.limits.loadTimeout;
    for (const [i, m] of list.entries()) {
      // A model whose import hangs held the start for ever, silently: it
      // gives up after loadTimeout, and says it is still waiting before.
      const slow = loadTimeout <= STILL_LOADING_MS
        ? undefined
        : setTimeout(() => {
          logger.info(
            "Still loading model {name} ({file}) after {seconds} s; giving up after {limit} s (limits.loadTimeout, --load-timeout)",
            {
              name: m.name,
              file: m.file,
              seconds: STILL_LOADING_MS / 1000,
              limit: loadTimeout / 1000,
            },
          );
        }, STILL_LOADING_MS);
      try {
        await catalog.add(pool, m.name, modelSpecOf(m), {
          timeout: loadTimeout,
          signal: startAbort.signal,
        });
      } catch (err) {
        const stopped = interruption();
        if (stopped !== undefined) throw stopped;
        let message = err instanceof TimeoutError
          ? `${err.message} (limits.loadTimeout, --load-timeout)`
          : (err as Error).message;
        // A helper module beside the models (no model class) is the usual
        // case: say how to keep it from being loaded as a model.
        if (!strict && NO_MODEL_CLASS.test(message)) {
          const base = m.file.replace(/^.*\//, "");
          message += `; if ${base} is a helper module, name it _${base} ` +
            "(files whose names start with _ are not loaded as models)";
        }
        if (strict) {
          throw new ConfigError(
            `models[${i}]: cannot load model '${m.name}': ${message} (at ${
              config.configPath ?? "config"
            }: models[${i}])`,
            { cause: err },
          );
        }
        skippedModels.push({ name: m.name, error: message });
        // Its import or constructor raised: an error, with the traceback
        // and the workers (a log collector had the message's last line).
        const details = (err as { details?: Record<string, unknown> })
          .details;
        if (
          typeof details?.traceback === "string" || err instanceof TimeoutError
        ) {
          failedModels.push({ name: m.name, error: message });
        }
        if (typeof details?.traceback === "string") {
          logger.error("Skipped model {name}: {message}", {
            name: m.name,
            message,
            exception: details.exception,
            traceback: details.traceback,
            workers: Array.isArray(details.workers)
              ? details.workers.join(", ")
              : undefined,
          });
        } else {
          logger.warn("Skipped model {name}: {message}", {
            name: m.name,
            message,
          });
        }
      } finally {
        clearTimeout(slow);
      }
    }
    let port = config.port;
    // The token files' poll starts below, after the app: read through this.
    let tokenFilesRefused = (): boolean | undefined => undefined;
    const app = createGateway(pool, {
      tokenFilesRefused: () => tokenFilesRefused(),
      port: () => port,
      allowedHosts: [
        ...config.allowedHosts,
        ...(WILDCARD.has(config.host) ? [] : [config.host]),
      ],
      // Off loopback, clients and load balancers use the machine's IPs.
      allowIpHosts: !isLoopback(config.host),
      bodyLimit: config.limits.bodyLimit,
      maxIntegerDigits: config.limits.maxIntegerDigits,
      maxJsonDepth: config.limits.maxJsonDepth,
      requestTimeout: config.limits.requestTimeout,
      streamKeepAlive: config.limits.streamKeepAlive,
      // The pool's streamIdleTimeout bounds model streams; this, eval streams.
      evalStreamIdleTimeout: config.limits.streamIdleTimeout,
      ...(config.limits.streamFirstItemTimeout === undefined ? {} : {
        streamFirstItemTimeout: config.limits.streamFirstItemTimeout,
      }),
      loadTimeout: config.limits.loadTimeout,
      allowEval: config.allowEval,
      cancelOnDisconnect: config.cancelOnDisconnect,
      compress: config.compress,
      forwardHeaders: config.forwardHeaders,
      allowManage: config.allowManage,
      debug: config.debug,
      modelsDir: config.modelsDir,
      skippedModels,
      failedModels,
      // A configured model unloaded (or never loaded) is loaded again with
      // its spec by the model repository extension.
      ...(config.models === "auto" ? {} : {
        repositoryModels: config.models.map((m) => ({
          name: m.name,
          ...modelSpecOf(m),
        })),
      }),
      hub,
      metrics,
      catalog,
      runtime,
      signal: drain.signal,
      unreadySignal: unready.signal,
      stopSignal: stop.signal,
      ...defined({
        token: config.token,
        manageToken: config.manageToken,
        tenantToken: config.tenantToken,
        cors: config.cors,
        tracing: config.tracing,
        version: options.version,
        dashboardIntervalMs: options.dashboardIntervalMs,
      }),
    });
    const handler: FetchHandler = (req, info) => app.fetch(req, info);
    // Deno's accept loop ends at EMFILE (connections that never speak fill
    // the fd table): the port is listened on again (docs/security.md), and
    // said at a bounded rate (a flood fails it again every second).
    let probing = false;
    listenerLog = new ListenerLog({
      logger,
      // The fd table was full: the gRPC port's listener (node:net) may
      // have died as silently as it does on Deno, so it is made again if
      // it did (listening again sends its idle connections a GOAWAY: not
      // at every turn of a flood).
      onListening: () => {
        if (grpcServer === undefined || probing) return;
        probing = true;
        const grpc = grpcServer;
        grpc.accepting().then((accepting) =>
          accepting ? undefined : grpc.listenAgain().then(
            () => logger.info("The gRPC port listens again"),
            (err: Error) =>
              logger.error(
                `The gRPC port could not listen again (${err.message}): restart the gateway to serve gRPC`,
              ),
          )
        ).finally(() => probing = false);
      },
    });
    const onListener = (event: ListenerEvent) => listenerLog?.event(event);
    try {
      server = await runtime.serve(
        {
          hostname: config.host,
          port: config.port,
          // A reload's new certificate is served by a new listener beside
          // this one (there is no other way on Deno), which then closes.
          ...(tls === undefined ? {} : { tls, reusePort }),
          onListener,
          keepAliveTimeout: config.limits.keepAliveTimeout,
        },
        handler,
      );
    } catch (err) {
      throw listenError(config, err);
    }
    if (tls !== undefined && reusePort) {
      // SO_REUSEPORT let this listen succeed beside another process's
      // (a second serve started with this one: both passed the probe,
      // before their models loaded); the kernel would share the
      // connections between them, silently.
      // Deno without --allow-all would ask for /proc: cannot tell then.
      const others = runtime.mayReadProc?.() === false
        ? 0
        : otherListeners(server.port);
      if (others > 0) {
        throw listenError(
          config,
          Object.assign(
            new Error(
              `${others} listener(s) of another process share the port (SO_REUSEPORT, which the TLS port is bound with for a reload's new certificate)`,
            ),
            { code: "EADDRINUSE" },
          ),
        );
      }
    }
    port = server.port;
    if (server.warning !== undefined) logger.warn(server.warning);
    const url = `${tls === undefined ? "http" : "https"}://${
      hostPort(connectHost(server.hostname), server.port)
    }`;
    if (config.grpc !== undefined) {
      // Off unless asked: the HTTP gateway pays nothing for it (node:http2
      // is not even loaded).
      try {
        const { serveGrpc } = await import("./grpc_server.ts");
        grpcServer = await serveGrpc({
          hostname: config.grpc.hostname,
          port: config.grpc.port,
          fetch: (req, info) => app.fetch(req, info),
          httpPort: () => port,
          bodyLimit: config.limits.bodyLimit,
          // Health watches hear of the shutdown at its start (the
          // delay's, if any: NOT_SERVING while the calls are still served).
          drain: unready.signal,
          ...defined({
            idleTimeout: config.grpc.idleTimeout,
            streamWindow: config.grpc.streamWindow,
            maxUnreadBytes: config.grpc.maxUnreadBytes,
            maxUnreadBytesTotal: config.grpc.maxUnreadBytesTotal,
            maxConnections: config.grpc.maxConnections,
            tls,
          }),
        });
      } catch (err) {
        throw new StartError(
          `Cannot listen for gRPC on ${
            hostPort(config.grpc.hostname, config.grpc.port)
          }: ${err instanceof Error ? err.message : err}${
            (err as { code?: unknown })?.code === "EADDRINUSE"
              ? " (another process listens there: stop it, or pass another --grpc-port, or 0 for a free one)"
              : ""
          }`,
          { cause: err },
        );
      }
    }
    const grpc = grpcServer;
    let resolveFinished!: () => void;
    const finished = new Promise<void>((
      resolve,
    ) => (resolveFinished = resolve));
    let shutting: Promise<void> | undefined;
    const offSignals: Array<() => void> = [];
    let httpServer = server;
    /** Listeners a reload replaced, draining their connections. */
    const draining = new Set<Promise<void>>();
    /** The token files' poll, with its interval (none: not polled). */
    let tokenWatch: { watch: TokenFileWatch; interval: number } | undefined;
    tokenFilesRefused = () => tokenWatch?.watch.refused;
    /** The TLS files' poll, with its interval (none: not polled). */
    let tlsWatch: { watch: TlsFileWatch; interval: number } | undefined;
    /** Ends the shutdown delay in progress (none: does nothing). */
    let endDelay = (): void => {};
    const shutdown = (
      shutdownOptions: GatewayShutdownOptions = {},
    ): Promise<void> => {
      if (shutting !== undefined) {
        // Asked again during the delay: the drain starts now.
        endDelay();
        return shutting;
      }
      const delay = shutdownOptions.delay ?? 0;
      if (!(Number.isInteger(delay) && delay >= 0)) {
        return Promise.reject(
          new RangeError(
            `Cannot shut down: delay ${delay} is not an integer >= 0 (ms)`,
          ),
        );
      }
      shutting = (async () => {
        tokenWatch?.watch.stop();
        tlsWatch?.watch.stop();
        // Not ready from now on (load balancers take the endpoint out);
        // during the delay every other route still serves.
        unready.abort();
        if (delay > 0) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          await new Promise<void>((resolve) => {
            endDelay = resolve;
            timer = setTimeoutOrNever(resolve, delay);
          });
          clearTimeout(timer);
          endDelay = () => {};
        }
        for (const off of offSignals) off();
        const grace = config.limits.shutdownGrace;
        logger.info("Draining: waiting up to {ms} ms for in-flight requests", {
          ms: grace,
        });
        const deadline = Date.now() + grace;
        // The listener stays open while draining: new requests get 503 with
        // Retry-After (a closed port would look like a crash to clients and
        // load balancers) and /healthz says "draining".
        drain.abort();
        hub.close("server shutting down");
        // Eval streams go on in the grace (their code runs, and its result is
        // sent). Those whose code still runs when it is over end then with a
        // ShuttingDownError event: written before the workers are stopped,
        // not after (that can take another second).
        // Beyond a timer's range (~24.8 days: the calls get until they
        // finish), never: a setTimeout would fire at once and end the eval
        // streams at the drain's start.
        const graceOver = setTimeoutOrNever(() => stop.abort(), grace);
        // The pool is the one grace: it lets the calls in flight finish for
        // up to shutdownGrace, then stops the workers (their requests then
        // get their error responses).
        await pool.close();
        clearTimeout(graceOver);
        stop.abort();
        // Every call has settled: what remains is writing responses. Streams
        // that outlive the grace (a slow reader) are cut off; a grace beyond
        // a timer's range (~24.8 days) waits for them.
        let timer: ReturnType<typeof setTimeout> | undefined;
        const left = new Promise<void>((resolve) => {
          timer = setTimeoutOrNever(
            resolve,
            Math.max(deadline - Date.now(), 100),
          );
        });
        // Deno's shutdown lets an HTTP/1.1 response that is not written yet
        // finish, but resets such an HTTP/2 stream at once (RST_STREAM
        // CANCEL): a call settled just now (503 ShuttingDownError, or its
        // result) would reach an HTTP/2 client as a reset. So the model
        // requests first make their responses, and a turn of the event loop
        // hands them to the server.
        await Promise.race([
          metrics.whenIdle().then(() =>
            new Promise<void>((resolve) => setTimeout(resolve, 0))
          ),
          left,
        ]);
        // Both ports, bounded by the rest of the grace. (gRPC's close was
        // an entry of the race beside the HTTP server's: without a gRPC port
        // an `undefined` that won at once, and with one a close that ends
        // before the HTTP responses; either way a large answer still being
        // written was cut when the process exited.)
        await Promise.race([
          Promise.all([
            // Its large answers still being delivered first: over HTTP/2
            // Deno's shutdown ends a stream whose body is not all sent.
            httpServer.shutdown({
              deliveryTimeout: Math.max(deadline - Date.now(), 0),
            }).catch(() => {}),
            ...draining,
            grpc?.close(Math.max(deadline - Date.now(), 0)),
          ]),
          left,
        ]);
        await grpc?.close();
        listenerLog?.close();
        clearTimeout(timer);
        // The spans of the last calls: sent, up to 2 s more (tracing on);
        // then its timers stopped and its TLS client freed.
        await TRACING_OF.get(app)?.close(2000);
        // A poll of the token or TLS files under way at the stop: its
        // reads end before the shutdown does.
        await tokenWatch?.watch.settled();
        await tlsWatch?.watch.settled();
        logger.info("Stopped");
        resolveFinished();
      })();
      return shutting;
    };
    // The settings in force, and the certificate served.
    let current = config;
    let served = tls;
    let reloading: Promise<unknown> = Promise.resolve();
    /**
     * A poll as a reload leaves it: kept when it runs at `interval` already,
     * otherwise stopped and, unless `interval` is 0 (none wanted), started
     * again at it; after the start, logged (`said`: when it runs from now
     * on, when it no longer does).
     */
    const repoll = <W extends { stop(): void }>(
      poll: { watch: W; interval: number } | undefined,
      interval: number,
      start: (interval: number) => W,
      said: readonly [running: string, stopped: string],
    ): { watch: W; interval: number } | undefined => {
      if (interval > 0 && poll?.interval === interval) return poll;
      poll?.watch.stop();
      const next = interval > 0
        ? { interval, watch: start(interval) }
        : undefined;
      // At start: the configuration says it all.
      if (started && (poll !== undefined || next !== undefined)) {
        logger.info(next === undefined ? said[1] : said[0], { ms: interval });
      }
      return next;
    };
    /**
     * Polls the token files `current` names, at its interval: started,
     * stopped or restarted after a reload that names files where there
     * were none (or none where there were), or another interval. The poll
     * reads `current`'s paths each time: another file needs no restart.
     */
    const watchTokenFiles = (): void => {
      // A configuration built by hand may leave the interval out.
      const interval = current.tokenFileInterval ?? DEFAULTS.tokenFileInterval;
      tokenWatch = repoll(
        tokenWatch,
        hasTokenFiles(current) ? interval : 0,
        (interval) =>
          new TokenFileWatch({
            runtime,
            logger,
            interval,
            reading: tokenFileReads,
            warned: readableWarnings,
            current: () => current,
            apply: applyFileTokens,
          }),
        [
          "Token files: read every {ms} ms from now on",
          "Token files: no longer read but on a reload",
        ],
      );
    };
    /**
     * Polls the TLS files `current` names, at its interval: started,
     * stopped or restarted after a reload that sets another interval. The
     * poll reads `current`'s paths each time: a reload naming other files
     * re-points it.
     */
    const watchTlsFiles = (): void => {
      const interval = current.tlsFileInterval ?? DEFAULTS.tlsFileInterval;
      tlsWatch = repoll(
        tlsWatch,
        current.tls === undefined ? 0 : interval,
        (interval) =>
          new TlsFileWatch({
            runtime,
            logger,
            interval,
            current: () => current,
            served: () => served,
            warned: readableWarnings,
            apply: applyTlsFiles,
          }),
        [
          "TLS files: read every {ms} ms from now on",
          "TLS files: no longer read but on a reload",
        ],
      );
    };
    /**
     * Throws the {@linkcode ConfigError} of a gateway that cannot serve a
     * new certificate without a restart (before the files are read again:
     * a poll finding a renewed certificate there does not warn of its key
     * each time).
     */
    const checkSwitchable = (): void => {
      if (reusePort) return;
      throw new ConfigError(
        `tls: the certificate changed, and here only a restart serves a new one: a reload starts a listener beside the old one, which needs Linux's SO_REUSEPORT${
          runtime.name === "deno"
            ? ', and on Deno its unstable net APIs (--unstable-net, or "unstable": ["net"] in deno.json)'
            : ""
        }`,
        { details: { path: "tls" } },
      );
    };
    /**
     * A listener on the gateway's port serving `cert`, beside the one in
     * force (SO_REUSEPORT): what a new certificate takes, on a reload or
     * a poll. A {@linkcode ConfigError} where it cannot be.
     */
    const listenWith = async (
      cert: { cert: string; key: string },
    ): Promise<HttpServer> => {
      checkSwitchable();
      try {
        return await runtime.serve({
          hostname: config.host,
          port: httpServer.port,
          tls: cert,
          reusePort: true,
          onListener,
          keepAliveTimeout: config.limits.keepAliveTimeout,
        }, handler);
      } catch (err) {
        throw new ConfigError(
          `tls: cannot listen with the new certificate on ${
            hostPort(config.host, httpServer.port)
          }: ${(err as Error).message}`,
          { cause: err, details: { path: "tls" } },
        );
      }
    };
    /**
     * Serves `cert` from `fresh` (from {@linkcode listenWith}) and the gRPC
     * port: new connections get it, the old listener drains its own.
     */
    const switchTo = (
      fresh: HttpServer,
      cert: { cert: string; key: string },
    ): void => {
      const old = httpServer;
      httpServer = fresh;
      // New connections go to the new listener; the old one's continue
      // until they end (its shutdown waits for them). Its large answers
      // being delivered are waited for first, for up to shutdownGrace: over
      // HTTP/2 Deno's shutdown ends a stream whose body is not all sent
      // (meanwhile the old listener still takes its share of new
      // connections, with the certificate it serves).
      const closing = old.shutdown({
        deliveryTimeout: current.limits.shutdownGrace,
      }).catch(() => {}).finally(() => draining.delete(closing));
      draining.add(closing);
      grpc?.setTls(cert);
      served = cert;
    };
    let started = false;
    const reloadNow = async (): Promise<ReloadResult> => {
      const refuse = (err: unknown): never => {
        logger.error(
          "Reload failed; the settings in force are kept: {message}",
          { message: err instanceof Error ? err.message : String(err) },
        );
        throw err;
      };
      if (shutting !== undefined) {
        refuse(
          new ShuttingDownError("Cannot reload: the gateway is shutting down"),
        );
      }
      if (options.reloadConfig === undefined) {
        refuse(
          new ConfigError(
            "Cannot reload: serve was given a configuration but not how to read it again (ServeOptions.reloadConfig)",
          ),
        );
      }
      let plan: Awaited<ReturnType<typeof reloadPlan>>;
      let next: ResolvedConfig;
      try {
        const read = await options.reloadConfig!();
        // Its tokens are applied: a file another user came to own or be
        // able to replace since the start (a chown, a chmod o+w) let their
        // token in (security27). As a token file is; whatever read it.
        if (read.configPath !== undefined) {
          await refuseUntrustedConfig(runtime, read.configPath);
        }
        next = await withFileTokens(runtime, read, tokenFileReads);
        plan = await reloadPlan(
          current,
          served,
          next,
          runtime,
          logger,
          readableWarnings,
        );
      } catch (err) {
        return refuse(err);
      }
      let fresh: HttpServer | undefined;
      if (plan.tls !== undefined) {
        try {
          fresh = await listenWith(plan.tls);
        } catch (err) {
          refuse(err);
        }
      }
      // A shutdown that began while this reload read its files or started
      // the listener already closed the listener it found: the new one
      // would stay open after `finished` (and serve the drain's 503s).
      if (shutting !== undefined) {
        await fresh?.shutdown().catch(() => {});
        refuse(
          new ShuttingDownError("Cannot reload: the gateway is shutting down"),
        );
      }
      try {
        // Its own checks (a `reloadConfig` of the caller's may skip
        // `loadConfig`'s): a refusal changes nothing.
        SET_TOKENS_OF.get(app)!({
          ...defined({
            token: plan.token,
            manageToken: plan.manageToken,
            tenantToken: plan.tenantToken,
          }),
        });
      } catch (err) {
        await fresh?.shutdown().catch(() => {});
        refuse(
          new ConfigError(`token: ${(err as Error).message}`, {
            cause: err,
            details: { path: "token" },
          }),
        );
      }
      // Everything checked and ready: nothing below fails.
      if (fresh !== undefined) switchTo(fresh, plan.tls!);
      const { tenantToken: _marked, ...before } = current;
      current = {
        ...withTokenFilesOf(before, next),
        ...defined({
          token: plan.token,
          manageToken: plan.manageToken,
          tenantToken: plan.tenantToken,
        }),
        // The TLS files read, polled from now on (another path, another
        // interval).
        ...withTlsFilesOf(next),
      };
      watchTokenFiles();
      watchTlsFiles();
      // A file named now, or replaced since (the kubelet's rotation).
      await warnReadableTokenFiles(runtime, current, logger, readableWarnings);
      // The config file's tokens open to other users: said at start only,
      // so a chmod since went unsaid (security27). At each reload.
      for (
        const warning of await exposedTokenWarnings(
          runtime,
          {},
          next.configPath,
        )
      ) logger.warn(warning);
      logger.info("Reloaded the configuration: {changes}", {
        changes: plan.changed.length === 0
          ? "nothing changed"
          : plan.changed.join(", "),
      });
      if (plan.ignored.length > 0) {
        logger.warn(
          "Reload ignored {keys}: they take effect at a restart only",
          { keys: plan.ignored.join(", ") },
        );
      }
      return { changed: plan.changed, ignored: plan.ignored };
    };
    /** The reload queued behind the one running, not started yet. */
    let queuedReload: Promise<ReloadResult> | undefined;
    // One at a time: each compares with what the last one applied. One
    // asked while another waits joins it (it reads everything after the
    // ask): a SIGHUP storm (a supervisor's loop) costs two reloads, not a
    // queue of one per signal, each reading every file again.
    const reload = (): Promise<ReloadResult> => {
      if (queuedReload !== undefined) return queuedReload;
      const start = (): Promise<ReloadResult> => {
        queuedReload = undefined;
        return reloadNow();
      };
      const run = reloading.then(start, start);
      queuedReload = run;
      reloading = run.catch(() => {});
      return run;
    };
    // A token file's new tokens: applied as a reload applies them (one at
    // a time with the reloads), the rest of the configuration untouched.
    const applyFileTokens = (
      tokens: FileTokens,
      read: ResolvedConfig,
    ): Promise<void> => {
      const apply = async (): Promise<void> => {
        // A reload applied since the files were read: what it read may be
        // newer (or name other files, or none); the next poll compares
        // with it. Only a reload or this replaces `current`.
        if (shutting !== undefined || read !== current) return;
        const changed = tokenChanges(current, tokens);
        if (changed.length > 0) {
          const next = withTokensRead(current, tokens);
          SET_TOKENS_OF.get(app)!({
            ...defined({
              token: next.token,
              manageToken: next.manageToken,
              tenantToken: next.tenantToken,
            }),
          });
          current = next;
        }
        logger.info("Read the token files again: {changes}", {
          changes: changed.length === 0
            ? "nothing changed"
            : changed.join(", "),
        });
        // The new content may be another file (the kubelet's rotation).
        await warnReadableTokenFiles(
          runtime,
          current,
          logger,
          readableWarnings,
        );
      };
      const run = reloading.then(apply, apply);
      reloading = run.catch(() => {});
      return run;
    };
    // The TLS files' new certificate: served as a reload serves one (one at
    // a time with the reloads, read again in the chain: a reload applied
    // meanwhile may have served it), the rest of the configuration
    // untouched.
    const applyTlsFiles = (read: ResolvedConfig): Promise<void> => {
      const apply = async (): Promise<void> => {
        // A reload since the poll named other files: the next poll reads
        // those.
        if (
          shutting !== undefined || current.tls === undefined ||
          read.tls?.cert !== current.tls.cert ||
          read.tls.key !== current.tls.key
        ) return;
        checkSwitchable();
        const cert = await readTls(
          runtime,
          current.tls,
          current.configPath,
          logger,
          readableWarnings,
        );
        if (
          served !== undefined && cert.cert === served.cert &&
          cert.key === served.key
        ) return;
        const fresh = await listenWith(cert);
        // A shutdown that began meanwhile closed the listener it found.
        if (shutting !== undefined) {
          await fresh.shutdown().catch(() => {});
          return;
        }
        switchTo(fresh, cert);
        logger.info("Read the TLS files again: {changes}", {
          changes: `tls (${certificateSummary(cert)})`,
        });
      };
      const run = reloading.then(apply, apply);
      reloading = run.catch(() => {});
      return run;
    };
    const late = interruption();
    if (late !== undefined) throw late;
    if (options.handleSignals) {
      offStartSignals();
      for (const signal of ["SIGINT", "SIGTERM"] as const) {
        offSignals.push(runtime.onSignal(signal, () => {
          if (shutting !== undefined) {
            // During the delay (the drain removed this listener): the
            // drain starts now.
            logger.info("Received {signal} again: draining now", { signal });
            endDelay();
            return;
          }
          const delay = config.limits.shutdownDelay;
          if (delay > 0) {
            logger.info(
              "Received {signal}: serving for {ms} ms more, not ready",
              { signal, ms: delay },
            );
          } else {
            logger.info("Received {signal}", { signal });
          }
          void shutdown({ delay });
        }));
      }
      // Started on a terminal: a SIGHUP that finds it gone is its hang-up
      // (the window closed, the ssh session ended), not a reload's. Taken
      // for one, it left the gateway serving, its workers and eval with it,
      // after its user had left, its log going nowhere (security25).
      const onTerminal = runtime.stdoutIsTerminal?.() === true;
      try {
        // Kept until stopped: while draining, SIGHUP's default action
        // would end the process (the reload refuses then, and says so).
        const offHup = runtime.onSignal("SIGHUP", () => {
          if (onTerminal && runtime.stdoutIsTerminal?.() !== true) {
            if (shutting !== undefined) return;
            logger.info(
              "Received {signal}: its terminal hung up: stopping",
              { signal: "SIGHUP" },
            );
            void shutdown();
            return;
          }
          logger.info("Received {signal}: reloading", { signal: "SIGHUP" });
          // A failure was logged, the settings in force kept.
          reload().catch(() => {});
        });
        void finished.then(offHup);
      } catch {
        // No SIGHUP (Windows): reload() only (docs/gateway.md, "Reloading").
      }
    }
    // Polled for a rotation of the mounted secret (no signal comes).
    watchTokenFiles();
    // Polled for a renewed certificate (no signal comes either).
    watchTlsFiles();
    started = true;
    // Closed by the shutdown, after the last responses' spans (a start that
    // fails closes it with `stop`).
    const tracing = TRACING_OF.get(app);
    if (tracing !== undefined) tracing.closeOnStop = false;
    return {
      url,
      port: server.port,
      hostname: server.hostname,
      ...(grpc === undefined
        ? {}
        : { grpcTarget: hostPort(connectHost(grpc.hostname), grpc.port) }),
      pool,
      hub,
      app,
      skippedModels,
      models: () => catalog.list(pool),
      shutdown,
      finished,
      reload,
      [Symbol.asyncDispose]: () => shutdown(),
    };
  } catch (err) {
    offStartSignals();
    drain.abort();
    stop.abort();
    await server?.shutdown().catch(() => {});
    await grpcServer?.close();
    listenerLog?.close();
    await pool.close();
    throw interruption() ?? err;
  }
}

/** A configured model's spec, as `catalog.add` and the repository take it. */
function modelSpecOf(m: ModelEntry) {
  return {
    file: m.file,
    ...defined({
      options: m.options,
      class: m.class,
      timeout: m.timeout,
      workers: m.workers,
      version: m.version,
    }),
  };
}
