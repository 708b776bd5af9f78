/**
 * The supervising half of the pool: creates the worker slots, runs the
 * plugin lifecycle hooks at each edge of a worker's life (start, model
 * replay, exit), and gives plugins the worker controls of
 * {@linkcode PluginContext}. Policy (when to restart, when to give up) lives
 * in plugins such as `reconnect()`; this file only carries it out.
 *
 * @module
 */
import { ConfigError, StartError, TimeoutError } from "./errors.ts";
import type { ModelRegistry } from "./model_registry.ts";
import type { PluginContext, PluginHost } from "./plugin.ts";
import type { Pool } from "./pool.ts";
import type { PoolEventHub } from "./pool_events.ts";
import type { ResolvedPoolOptions } from "./pool_options.ts";
import { Worker, type WorkerExit, type WorkerHooks } from "./worker.ts";
import { logPythonOutput } from "./_python_log.ts";
import { OutputRateLimit } from "./_output_rate_limit.ts";
import { waitsForIO } from "./_waits_for_io.ts";

/** Options of {@linkcode Supervisor}. */
export interface SupervisorOptions {
  /** The pool (for `ctx.pool`). */
  pool: Pool;
  /** Resolved pool options. */
  options: ResolvedPoolOptions;
  /** The pool's plugins. */
  plugins: PluginHost;
  /** The model registry replayed onto every (re)started worker. */
  registry: ModelRegistry;
  /** Where worker events go. */
  events: PoolEventHub;
  /** Called when routing may have changed (`full`: also fail calls that can no longer be routed). */
  pump: (full: boolean) => void;
}

/**
 * Owns the pool's worker slots and their life-cycle.
 *
 * @example
 * ```ts ignore
 * const supervisor = new Supervisor({ pool, options, plugins, registry, events, pump });
 * await supervisor.start(modelsDir, "unix");
 * await supervisor.stop(5000);
 * ```
 */
export class Supervisor {
  /** The slots, in slot order (filled by `start`; the array is stable). */
  readonly workers: Worker[] = [];
  /** The context every plugin hook receives. */
  readonly context: PluginContext;
  #opts: SupervisorOptions;
  #byId = new Map<string, Worker>();
  #closing = false;
  // Workers whose exit hooks still run: the policy may yet bring them back.
  #settling = new Set<Worker>();
  #hooks = new Set<Promise<void>>();

  /** Creates a supervisor with no slots yet. */
  constructor(options: SupervisorOptions) {
    this.#opts = options;
    this.context = this.#makeContext();
  }

  /** The slot with this id. */
  get(id: string): Worker | undefined {
    return this.#byId.get(id);
  }

  /** Whether a stopped worker may still come back (its exit is being handled). */
  settling(worker: Worker): boolean {
    return this.#settling.has(worker);
  }

  /**
   * Creates the slots, runs `onPoolStart`, and starts every worker in
   * parallel. Throws `StartError` (with every stderr tail) when none started,
   * or the `ConfigError` an `onPoolStart` hook threw.
   */
  async start(path: string, transport: "unix" | "tcp"): Promise<void> {
    const o = this.#opts.options;
    const hooks = this.#workerHooks();
    for (let i = 1; i <= o.workers; i++) {
      const id = `w${i}`;
      const env = o.env(id);
      const args = o.serverArgs(id);
      const worker = new Worker({
        id,
        server: {
          python: o.python,
          path,
          host: o.host,
          readyTimeout: o.readyTimeout,
          runtime: o.runtime,
          ...(env === undefined ? {} : { env }),
          ...(args === undefined ? {} : { args }),
          ...(o.maxFrameSize === undefined
            ? {}
            : { maxFrameSize: o.maxFrameSize }),
          ...(o.schedBatch ? { schedBatch: true } : {}),
          ...(o.serverLogger === undefined ? {} : { logger: o.serverLogger }),
          // A PythonServer given neither port nor socket listens on a Unix
          // socket of its own: TCP workers ask for a port.
          ...(transport === "tcp" ? { port: 0 } : {}),
        },
        ...(transport === "unix" ? { unix: true } : {}),
        hooks,
        logger: o.logger,
      });
      this.workers.push(worker);
      this.#byId.set(id, worker);
    }
    const startErrors = await this.#opts.plugins.run(
      "onPoolStart",
      this.context,
    );
    // Other hook errors are reported and the pool runs without that plugin's part; a ConfigError
    // means the pool would not run as configured, so it fails the start.
    const config = startErrors.find((e) => e.cause instanceof ConfigError);
    if (config !== undefined) throw config.cause;
    const results = await Promise.all(this.workers.map((w) => w.start(false)));
    if (results.every((r) => r !== undefined)) {
      const report = this.workers.map((w) =>
        `${w.id}: ${w.lastExit?.reason ?? "did not start"}${
          w.stderrTail ? `\n${indent(w.stderrTail)}` : ""
        }`
      ).join("\n");
      throw new StartError(
        `Cannot start pool: all ${this.workers.length} workers failed to start\n${report}`,
        {
          cause: results[0],
          details: { workers: this.workers.map((w) => w.info()) },
        },
      );
    }
  }

  /**
   * Stops for good: no more restarts, `onPoolClose`, every worker drained
   * (up to `graceMs`) and stopped, and every exit hook finished.
   */
  async stop(graceMs: number): Promise<void> {
    this.#closing = true;
    await this.#opts.plugins.run("onPoolClose", this.context);
    await Promise.all(this.workers.map((w) => w.stop(graceMs)));
    while (this.#hooks.size > 0) await Promise.all([...this.#hooks]);
  }

  #workerHooks(): WorkerHooks {
    const { plugins, registry, events, pump } = this.#opts;
    const ctx = this.context;
    return {
      sessionOptions: (worker) => ({
        middleware: plugins.middleware({ worker, plugin: ctx }),
        handlers: plugins.handlers(worker),
        ...(this.#opts.options.sessionLogger === undefined
          ? {}
          : { logger: this.#opts.options.sessionLogger }),
      }),
      prepare: async (worker, session, restart) => {
        // What model code prints (`log` events) goes to the pool's model loggers.
        const loggers = this.#opts.options.pythonLoggers;
        // At most 100 lines a second per model reach the log (a model
        // printing in a loop flooded it); the rest are counted.
        const limit = new OutputRateLimit(worker.id);
        session.onEvent((event) =>
          logPythonOutput(loggers, worker.id, event, limit)
        );
        session.closed.then(() => limit.end());
        // Model code's Python logging records too (protocol §6; a server
        // from before them ignores the field). Without them the worker
        // serves as before: a failure here is the connection's, met next.
        // But a server that does not answer (stopped, frozen) fails the
        // start: nothing else bounds a starting worker (no call and no
        // heartbeat reaches it), so it stayed `restarting` for ever.
        await session.request("configure", { logRecords: true }, {
          timeout: this.#opts.options.readyTimeout,
        }).catch((err) => {
          if (err instanceof TimeoutError) throw err;
        });
        await plugins.run("onWorkerStart", { worker, session, restart }, ctx);
        await plugins.run("onSessionOpen", { worker, session }, ctx);
        await registry.exclusive(async () => {
          await registry.replay(session);
          worker.markReady();
        });
      },
      stateChanged: (worker, from, to) => {
        // A restart's outcome: its failures are logged as exits.
        if (from === "restarting" && to === "ready") {
          this.#opts.options.logger.info(
            "worker {id} restarted (pid {pid}, restarts {restarts})",
            { id: worker.id, pid: worker.pid, restarts: worker.restarts },
          );
        }
        events.emit({ type: "worker-state", worker: worker.id, from, to });
        if (to === "ready") pump(true);
        else if (to === "failed") queueMicrotask(() => pump(true));
      },
      exited: (worker, exit, intentional, session) => {
        this.#opts.options.logger[intentional ? "debug" : "warn"](
          exit.pid === null
            ? "worker {id} exited: {reason}"
            : "worker {id} (pid {pid}) exited: {reason}",
          { id: worker.id, pid: exit.pid, reason: exit.reason },
        );
        events.emit({
          type: "worker-exit",
          worker: worker.id,
          ...pickExit(exit),
        });
        this.#settling.add(worker);
        const hooks = (async () => {
          if (session !== undefined) {
            await plugins.run("onSessionClose", { worker, session }, ctx);
          }
          await plugins.run("onWorkerExit", {
            worker,
            ...pickExit(exit),
            intentional,
          }, ctx);
        })().finally(() => {
          this.#settling.delete(worker);
          this.#hooks.delete(hooks);
          pump(true);
        });
        this.#hooks.add(hooks);
      },
    };
  }

  #makeContext(): PluginContext {
    const { options, events } = this.#opts;
    const isClosing = (): boolean => this.#closing;
    const find = (id: string): Worker => {
      const w = this.#byId.get(id);
      if (w === undefined) {
        throw new RangeError(`Cannot find worker: no worker '${id}'`);
      }
      return w;
    };
    return {
      pool: this.#opts.pool,
      runtime: options.runtime,
      logger: options.logger,
      get closing() {
        return isClosing();
      },
      workers: () => this.workers.map((w) => w.info()),
      restartWorker: (id, opts = {}) => {
        if (this.#closing) return false;
        const delayMs = opts.delayMs ?? 0;
        const attempt = find(id).scheduleRestart(delayMs, opts.reason);
        if (attempt === undefined) return false;
        events.emit({ type: "restarting", worker: id, attempt, delayMs });
        return true;
      },
      reviveWorker: (id, opts = {}) => {
        if (this.#closing) return false;
        const delayMs = opts.delayMs ?? 0;
        const attempt = find(id).revive(delayMs);
        if (attempt === undefined) return false;
        options.logger.info("Retrying failed worker {id}: {reason}", {
          id,
          reason: opts.reason ?? "revived",
        });
        events.emit({ type: "restarting", worker: id, attempt, delayMs });
        return true;
      },
      failWorker: (id, reason) => {
        const w = find(id);
        if (w.state === "failed") return;
        w.fail(reason);
        options.logger.error("worker {id} failed: {reason}", { id, reason });
        events.emit({
          type: "failed",
          worker: id,
          reason,
          stderrTail: w.stderrTail,
        });
      },
      killWorker: (id, signal = "SIGKILL", reason) =>
        find(id).kill(signal, reason),
      lastActivity: (id) => this.#byId.get(id)?.session?.lastActivity,
      waitsForIO: (id, withinMs) => {
        const pid = this.#byId.get(id)?.pid;
        return pid === null || pid === undefined
          ? Promise.resolve(false)
          // A pool closing meanwhile ends the watch: no timer outlives close().
          : waitsForIO(options.runtime, pid, withinMs, isClosing);
      },
      ping: async (id, timeoutMs) => {
        const session = this.#byId.get(id)?.session;
        if (session === undefined) return false;
        try {
          await session.request("ping", undefined, { timeout: timeoutMs });
          return true;
        } catch {
          return false;
        }
      },
    };
  }
}

function pickExit(
  exit: WorkerExit,
): {
  pid: number | null;
  code: number | null;
  signal: string | null;
  reason: string;
} {
  return {
    pid: exit.pid,
    code: exit.code,
    signal: exit.signal,
    reason: exit.reason,
  };
}

function indent(text: string): string {
  return text.trimEnd().split("\n").slice(-20).map((l) => `    ${l}`).join(
    "\n",
  );
}
