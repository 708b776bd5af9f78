/**
 * The supervising half of the pool: creates the worker slots (and adds or
 * removes them when the pool is resized), runs the plugin lifecycle hooks at
 * each edge of a worker's life (start, model replay, exit), and gives
 * plugins the worker controls of
 * {@linkcode PluginContext}. Policy (when to restart, when to give up) lives
 * in plugins such as `reconnect()`; this file only carries it out.
 *
 * @module
 */
import type { ModelMetricStore } from "./model_metrics.ts";
import {
  ConfigError,
  ShuttingDownError,
  StartError,
  StartTimeoutError,
  TimeoutError,
} from "./errors.ts";
import type { ModelRegistry } from "./model_registry.ts";
import type { PluginContext, PluginHost } from "./plugin.ts";
import type { Pool } from "./pool.ts";
import type { PoolEventHub } from "./pool_events.ts";
import type { ResolvedPoolOptions } from "./pool_options.ts";
import { Worker, type WorkerExit, type WorkerHooks } from "./worker.ts";
import { logPythonOutput } from "./_python_log.ts";
import { OutputRateLimit } from "./_output_rate_limit.ts";
import { waitsForIO } from "./_waits_for_io.ts";
import { withTimeout } from "./_with_timeout.ts";
import { describeInFlight, type InFlight } from "./_in_flight.ts";
import { OomKills } from "./_oom_kills.ts";

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
  /** Where the workers' model metrics go. */
  modelMetrics: ModelMetricStore;
  /** Where worker events go. */
  events: PoolEventHub;
  /** Called when routing may have changed (`full`: also fail calls that can no longer be routed). */
  pump: (full: boolean) => void;
  /**
   * Whether `pool.close()` started (`PluginContext.closing`): it first lets
   * model operations finish, before the supervisor stops.
   */
  closing: () => boolean;
  /** Calls waiting in the pool queue (`PluginContext.load`). */
  queued: () => number;
  /** Whether `Pool.start` has finished (`PluginContext.load`). */
  started: () => boolean;
  /** Whether a resize runs or waits for its turn (`PluginContext.load`). */
  resizing: () => boolean;
  /** The pool's resize on behalf of a plugin (`PluginContext.resize`). */
  resize: PluginContext["resize"];
  /**
   * A worker is being killed for answering nothing while a call of model
   * `name` holds its event loop (`KillWorkerOptions.hung`): the pool runs
   * that model's calls threaded. `reason`: the kill's.
   */
  loopHeld: (worker: string, name: string, reason: string | undefined) => void;
}

/**
 * Owns the pool's worker slots and their life-cycle.
 *
 * @example
 * ```ts ignore
 * const supervisor = new Supervisor({ pool, options, plugins, registry, events, pump, closing, started, queued, resizing, resize });
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
  #hookRuns = new Set<Promise<void>>();
  // Per worker, the exit hooks still running for its last exit.
  #exitHooks = new Map<Worker, Promise<void>>();
  /** Told of every worker state change (a resize waits for a restart). */
  #stateWaits = new Set<() => void>();
  #hooks: WorkerHooks;
  #path: string | undefined;
  #transport: "unix" | "tcp" = "unix";
  #started = false;
  // Slot ids are never reused: `w<n>` counts up for the pool's life.
  #nextId = 1;
  // Slots a resize is removing → their stop.
  #removing = new Map<Worker, Promise<void>>();
  #removed = new WeakSet<Worker>();
  /**
   * The ended processes of the slots a resize removed, by cause: kept
   * when their slot goes, so the pool's totals ({@linkcode Supervisor.exits})
   * never go down.
   */
  #removedExits: Record<string, number> = {};
  /** The OOM kills of the host's cgroup, which tell the workers' SIGKILLs apart. */
  #oomKills: OomKills;

  /** Creates a supervisor with no slots yet. */
  constructor(options: SupervisorOptions) {
    this.#opts = options;
    this.#oomKills = new OomKills(options.options.runtime);
    this.context = this.#makeContext();
    this.#hooks = this.#workerHooks();
  }

  /**
   * Warns, once the workers started, when their raised `oom_score_adj`
   * cannot spare the host: its memory cgroup is killed as a whole
   * ({@linkcode OomKills.groupKill}).
   */
  #warnGroupKill(): void {
    this.#oomKills.groupKill().then((group) => {
      if (!group) return;
      this.#opts.options.logger.warn(
        "The memory cgroup kills as a group (memory.oom.group is 1, as Kubernetes 1.28+ sets on cgroup v2): an OOM kill of a worker ends every process of the group, this one too, whatever oomScoreAdj; a kubelet with singleProcessOOMKill: true (1.32+) kills one process",
      );
    }, () => {});
  }

  /**
   * Every process the pool's slots ended, by cause (`WorkerInfo.exits`
   * summed), the slots a resize removed included: only ever goes up.
   */
  exits(): Record<string, number> {
    const total = { ...this.#removedExits };
    for (const w of this.workers) addCounts(total, w.exits);
    return total;
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
    this.#path = path;
    this.#transport = transport;
    for (let i = 0; i < this.#opts.options.workers; i++) this.#add();
    const startErrors = await this.#opts.plugins.run(
      "onPoolStart",
      this.context,
    );
    // Other hook errors are reported and the pool runs without that plugin's part; a ConfigError
    // means the pool would not run as configured, so it fails the start.
    const config = startErrors.find((e) => e.cause instanceof ConfigError);
    if (config !== undefined) throw config.cause;
    this.#started = true;
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
    if (this.#opts.options.oomScoreAdj > 0) this.#warnGroupKill();
  }

  /**
   * Stops for good: no more restarts, `onPoolClose`, every worker drained
   * (up to `graceMs`) and stopped, every exit hook finished, `before`
   * (the calls' last `onSettle`s), then `onPoolClosed`, then the reads of
   * the cgroup's OOM count still in flight.
   */
  async stop(
    graceMs: number,
    before?: () => Promise<void>,
  ): Promise<void> {
    this.#closing = true;
    await this.#opts.plugins.run("onPoolClose", this.context);
    // A slot a resize is removing keeps the grace that resize gave it.
    await Promise.all(
      this.workers.map((w) => this.#removing.get(w) ?? w.stop(graceMs)),
    );
    while (this.#hookRuns.size > 0) await Promise.all([...this.#hookRuns]);
    await before?.();
    await this.#opts.plugins.run("onPoolClosed", this.context);
    // The reads of the cgroup's OOM count nobody awaits (a ready worker's
    // note, the start's group-kill look): none outlives the close.
    await this.#oomKills.settled();
  }

  /**
   * Grows or shrinks the slots to `count` (the pool serialises calls). New
   * slots get ids never used before in this pool, start like the first ones
   * (plugin hooks, model replay bounded by `loadTimeout`, traffic once
   * ready) and it resolves once each is ready or its first start failed (a
   * failed one stays, left to the restart policy, as at `start`); when every
   * new slot failed, they are removed again and it throws `StartError`
   * (a first start whose death was laid on a model's load waits for the
   * slot's restart instead: `#firstStart`). Removed slots are the ones least in use (see `pickVictims`):
   * out of rotation at once, drained up to `graceMs`, stopped, then gone
   * from `workers`.
   */
  async resize(count: number, graceMs: number): Promise<void> {
    if (this.#closing || this.#path === undefined) {
      throw new ShuttingDownError("Cannot resize pool: pool is closing");
    }
    const current = this.workers.length;
    if (count === current) return;
    if (count < current) {
      // Between model operations: a model command is not a call the drain
      // waits for, so one in flight on a victim would be cut short (and the
      // next one must not pick it).
      // (An object: a promise returned here would be awaited in the lock.)
      // The placed models on the victims are loaded elsewhere first, so
      // their calls keep a slot.
      const registry = this.#opts.registry;
      const removal = await registry.exclusive(async () => {
        if (this.#closing) return { done: undefined };
        const victims = pickVictims(
          this.workers,
          this.workers.length - count,
          (w) => registry.placedOn(w),
        );
        if (registry.placements.size > 0) {
          await registry.evacuate(
            victims,
            this.workers.filter((w) => !victims.includes(w)),
          );
        }
        return {
          done: this.#closing ? undefined : this.#retire(victims, graceMs),
        };
      });
      await removal.done;
      return;
    }
    const added: Worker[] = [];
    for (let i = current; i < count; i++) added.push(this.#add());
    const results = await Promise.all(
      added.map(async (w) => this.#firstStart(w, await w.start(false))),
    );
    if (this.#closing || !results.every((r) => r !== undefined)) return;
    const report = added.map((w) =>
      `${w.id}: ${w.lastExit?.reason ?? "did not start"}${
        w.stderrTail ? `\n${indent(w.stderrTail)}` : ""
      }`
    ).join("\n");
    const details = { workers: added.map((w) => w.info()) };
    await this.#retire(added, 0);
    throw new StartError(
      `Cannot resize pool to ${count} workers: all ${added.length} new workers failed to start\n${report}`,
      { cause: results[0], details },
    );
  }

  /**
   * The outcome of new slot `worker`'s first start, `err` (a resize's):
   * when its process died of a model's load (the crash quarantine laid the
   * death on one: a suspected model's held replay killed it), that is no
   * fault of the slot, so its restart (the policy's, as after any crash,
   * the death counted against the model) decides instead, and the next
   * after that, as long as the deaths are laid on a model: a resize must
   * not fail because one model is bad. `undefined` once it is ready.
   */
  async #firstStart(
    worker: Worker,
    err: Error | undefined,
  ): Promise<Error | undefined> {
    const registry = this.#opts.registry;
    while (
      err !== undefined && !this.#closing &&
      registry.laidOnModel(worker, worker.generation)
    ) {
      // Its restart policy's decision: a restart scheduled, or not.
      await this.#exitHooks.get(worker);
      if (this.#closing || worker.state !== "restarting") return err;
      const gen = worker.generation;
      // Until that restart is ready, failed, or its process gone again.
      await new Promise<void>((resolve) => {
        const wake = () => {
          if (
            worker.state === "ready" || worker.state === "failed" ||
            (worker.state === "stopped" && worker.generation > gen) ||
            this.#closing
          ) {
            this.#stateWaits.delete(wake);
            resolve();
          }
        };
        this.#stateWaits.add(wake);
        wake();
      });
      // (Read afresh: the narrowing above does not see the wait.)
      const now: string = worker.state;
      if (now === "ready") return undefined;
      if (now !== "stopped") return err;
      err = new Error(worker.lastExit?.reason ?? "start failed");
    }
    return err;
  }

  /** Whether a resize removed (or is removing) `worker`. */
  removed(worker: Worker): boolean {
    return this.#removed.has(worker);
  }

  /** Whether the pool ever had a slot with this id (now or removed). */
  #hadId(id: string): boolean {
    const n = /^w([1-9][0-9]*)$/.exec(id)?.[1];
    return n !== undefined && Number(n) < this.#nextId;
  }

  /** Creates the next slot (an id never used before) and appends it. */
  #add(): Worker {
    const o = this.#opts.options;
    const id = `w${this.#nextId++}`;
    // The lowest index no slot holds (a removed one's until its process is
    // gone): one GPU per worker stays one GPU per process through resizes.
    const held = new Set(this.workers.map((w) => w.index));
    let index = 0;
    while (held.has(index)) index++;
    const env = o.env(id, { index });
    const args = o.serverArgs(id);
    const transport = this.#transport;
    const worker = new Worker({
      id,
      index,
      server: {
        python: o.python,
        path: this.#path!,
        host: o.host,
        readyTimeout: o.readyTimeout,
        runtime: o.runtime,
        // Named after the index, not the id: ids are never reused, so every
        // resize (an autoscale step) left one more log file of up to 40 MiB
        // (measured: 50 steps 1 -> 3 -> 1 left 101 logs and 101 lock files).
        // An index is reused only once its last process is gone, so a slot
        // appends to its predecessor's log (a post-mortem stays readable
        // until rotation) and the files stay as many as the most slots at once.
        logName: `slot${index}`,
        ...(o.logDir === undefined ? {} : { logDir: o.logDir }),
        ...(env === undefined ? {} : { env }),
        ...(args === undefined ? {} : { args }),
        ...(o.maxFrameSize === undefined
          ? {}
          : { maxFrameSize: o.maxFrameSize }),
        ...(o.schedBatch ? { schedBatch: true } : {}),
        ...(o.oomScoreAdj === 0 ? {} : { oomScoreAdj: o.oomScoreAdj }),
        ...(o.serverLogger === undefined ? {} : { logger: o.serverLogger }),
        // A PythonServer given neither port nor socket listens on a Unix
        // socket of its own: TCP workers ask for a port.
        ...(transport === "tcp" ? { port: 0 } : {}),
      },
      ...(transport === "unix" ? { unix: true } : {}),
      handshakeTimeout: o.handshakeTimeout,
      hooks: this.#hooks,
      logger: o.logger,
      oomKills: this.#oomKills,
    });
    this.workers.push(worker);
    this.#byId.set(id, worker);
    // The first slots are the pool's own: only a resize's are news.
    if (this.#started) {
      this.#opts.events.emit({ type: "worker-added", worker: id });
    }
    return worker;
  }

  /**
   * Takes `victims` out of rotation at once (their queued calls go
   * elsewhere, or fail when pinned to them); the promise drains and stops
   * them, then drops them from the slots. `stop` waits for these too.
   */
  #retire(victims: Worker[], graceMs: number): Promise<void> {
    const { events, pump } = this.#opts;
    const stops = victims.map((w) => {
      this.#removed.add(w);
      events.emit({ type: "worker-removed", worker: w.id });
      const stop = w.stop(graceMs, "removed by resize");
      this.#removing.set(w, stop);
      return stop;
    });
    pump(true);
    return this.#drop(victims, stops);
  }

  async #drop(victims: Worker[], stops: Promise<void>[]): Promise<void> {
    const { pump } = this.#opts;
    await Promise.all(stops);
    // A removed slot's onSessionClose/onWorkerExit have run when it is gone.
    await Promise.all(victims.map((w) => this.#exitHooks.get(w)));
    for (const w of victims) {
      this.#removing.delete(w);
      const at = this.workers.indexOf(w);
      if (at >= 0) {
        this.workers.splice(at, 1);
        // In the same turn: a read sees them in the slot or here, never in
        // neither.
        addCounts(this.#removedExits, w.exits);
      }
      this.#byId.delete(w.id);
      this.#opts.registry.forget(w);
    }
    pump(true);
  }

  #workerHooks(): WorkerHooks {
    const { plugins, registry, events, pump } = this.#opts;
    const ctx = this.context;
    return {
      sessionOptions: (worker) => ({
        middleware: plugins.middleware({ worker, plugin: ctx }),
        handlers: plugins.handlers(worker),
        integers: this.#opts.options.integers,
        metrics: true,
        ...(this.#opts.options.sessionLogger === undefined
          ? {}
          : { logger: this.#opts.options.sessionLogger }),
      }),
      prepare: async (worker, session, restart, timeLeft) => {
        // What model code prints (`log` events) goes to the pool's model loggers.
        const loggers = this.#opts.options.pythonLoggers;
        // At most 100 lines a second per model reach the log (a model
        // printing in a loop flooded it); the rest are counted.
        const limit = new OutputRateLimit(worker.id);
        session.onEvent((event) =>
          logPythonOutput(loggers, worker.id, event, limit)
        );
        session.closed.then(() => limit.end());
        // Model metrics (protocol §6): summed per model; the gauges this
        // connection set go with it.
        const metrics = this.#opts.modelMetrics;
        const source = { worker: worker.id };
        session.onEvent((event) => {
          if (event.event === "metrics") metrics.ingest(source, event);
        });
        session.closed.then(() => metrics.forgetSource(source));
        // Model code's Python logging records too (protocol §6; a server
        // from before them ignores the field). Without them the worker
        // serves as before: a failure here is the connection's, met next.
        // But a server that does not answer (stopped, frozen) fails the
        // start: nothing else bounds a starting worker (no call and no
        // heartbeat reaches it), so it stayed `restarting` for ever. Its
        // bound is what is left of readyTimeout, counted from the spawn.
        await session.request("configure", { logRecords: true }, {
          timeout: timeLeft(),
        }).catch((err) => {
          if (!(err instanceof TimeoutError)) return;
          const readyTimeout = this.#opts.options.readyTimeout;
          throw new StartTimeoutError(
            `Cannot start worker ${worker.id}: no answer to configure within readyTimeout (${readyTimeout} ms from the spawn)`,
            {
              cause: err,
              details: {
                phase: "configure",
                timeoutMs: readyTimeout,
                id: worker.id,
              },
            },
          );
        });
        await plugins.run("onWorkerStart", { worker, session, restart }, ctx);
        await plugins.run("onSessionOpen", { worker, session }, ctx);
        await registry.exclusive(async () => {
          try {
            await registry.replay(session, worker, () => this.workers, {
              restart,
            });
          } catch (err) {
            // A model that loaded before and no longer does (a package it
            // imports changed on disk): its traceback, as a first load's
            // failure has (the exit's warning has the message's first line).
            const details = (err as { details?: Record<string, unknown> })
              .details;
            if (typeof details?.traceback === "string") {
              this.#opts.options.logger.error(
                "worker {id} cannot load its models again: {message}",
                {
                  id: worker.id,
                  message: (err as Error).message,
                  exception: details.exception,
                  traceback: details.traceback,
                },
              );
            }
            throw err;
          }
          worker.markReady();
        });
      },
      stateChanged: (worker, from, to) => {
        for (const wake of [...this.#stateWaits]) wake();
        // A restart's outcome: its failures are logged as exits.
        if (from === "restarting" && to === "ready") {
          this.#opts.options.logger.info(
            "worker {id} restarted (pid {pid}, restarts {restarts})",
            { id: worker.id, pid: worker.pid, restarts: worker.restarts },
          );
        }
        events.emit({ type: "worker-state", worker: worker.id, from, to });
        if (to === "ready") pump(true);
        else if (to === "failed") {
          // Its placed models move to other slots (their calls wait
          // meanwhile). Its process already gone: the restart policy gave
          // up after a crash (a model implicated in it counts the move).
          void registry.relocate(
            worker,
            () => this.workers,
            worker.pid === null,
          ).then(() => pump(true));
          queueMicrotask(() => pump(true));
        }
      },
      exited: (worker, exit, intentional, session) => {
        // A death soon after a model's load counts against that model
        // (PoolOptions.loadCrashWindow): at its second strike it is out of
        // service before the restart replays it.
        registry.exited(
          worker,
          worker.generation,
          exit,
          intentional,
          () => this.workers,
        );
        // One line per death, naming what it was running (its calls'
        // errors say it too).
        const running = exit.inFlight === undefined
          ? undefined
          : describeInFlight(exit.inFlight);
        // And the request ids of those calls, as the ids their clients got.
        const requestIds = exit.inFlight?.requestIds?.join(", ");
        // The calls it still ran that their callers had given up on: the
        // one that hung it is often there (it timed out first), its
        // victims above (an inline model's spin blamed "echo (1 call)").
        const givenUp = exit.givenUp === undefined
          ? undefined
          : describeInFlight(exit.givenUp);
        this.#opts.options.logger[intentional ? "debug" : "warn"](
          `worker {id}${
            exit.pid === null ? "" : " (pid {pid})"
          } exited: {reason}${
            running === undefined ? "" : " while running: {running}"
          }${requestIds === undefined ? "" : " (request ids {requestIds})"}${
            givenUp === undefined
              ? ""
              : "; still running, given up on (timed out or cancelled): {givenUp}"
          }`,
          {
            id: worker.id,
            pid: exit.pid,
            reason: exit.reason,
            running,
            ...(requestIds === undefined ? {} : { requestIds }),
            ...(givenUp === undefined ? {} : { givenUp }),
          },
        );
        events.emit({
          type: "worker-exit",
          worker: worker.id,
          ...pickExit(exit),
        });
        this.#settling.add(worker);
        const hooks: Promise<void> = (async () => {
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
          this.#hookRuns.delete(hooks);
          if (this.#exitHooks.get(worker) === hooks) {
            this.#exitHooks.delete(worker);
          }
          pump(true);
        });
        this.#hookRuns.add(hooks);
        this.#exitHooks.set(worker, hooks);
      },
    };
  }

  #makeContext(): PluginContext {
    const { options, events } = this.#opts;
    // The pool's flag: close() lets model operations finish before stop().
    const isClosing = (): boolean => this.#closing || this.#opts.closing();
    // A slot a resize removed is no error: a policy may still act on its
    // exit (then nothing happens). Only an id the pool never had is.
    const find = (id: string): Worker | undefined => {
      const w = this.#byId.get(id);
      if (w === undefined && !this.#hadId(id)) {
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
        if (isClosing()) return false;
        const delayMs = opts.delayMs ?? 0;
        const attempt = find(id)?.scheduleRestart(delayMs, opts.reason);
        if (attempt === undefined) return false;
        events.emit({ type: "restarting", worker: id, attempt, delayMs });
        return true;
      },
      reviveWorker: (id, opts = {}) => {
        if (isClosing()) return false;
        const delayMs = opts.delayMs ?? 0;
        const attempt = find(id)?.revive(delayMs);
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
        if (w === undefined || w.state === "failed") return;
        w.fail(reason);
        options.logger.error("worker {id} failed: {reason}", { id, reason });
        events.emit({
          type: "failed",
          worker: id,
          reason,
          stderrTail: w.stderrTail,
        });
      },
      killWorker: (id, signal = "SIGKILL", reason, opts) => {
        const w = find(id);
        if (w === undefined) return;
        if (opts?.hung !== true) return w.kill(signal, reason);
        // In the same turn as the kill, before its exit is read: calls sent
        // or retried from now on carry the mark.
        const held = w.killHung(signal, reason);
        if (held !== undefined) this.#opts.loopHeld(w.id, held, reason);
      },
      lastActivity: (id) => this.#byId.get(id)?.session?.lastActivity,
      waitsForIO: (id, withinMs) => {
        const pid = this.#byId.get(id)?.pid;
        return pid === null || pid === undefined
          ? Promise.resolve(false)
          // A pool closing meanwhile ends the watch: no timer outlives close().
          : waitsForIO(options.runtime, pid, withinMs, isClosing);
      },
      load: () => {
        let ready = 0;
        let inFlight = 0;
        let parked = 0;
        for (const w of this.workers) {
          if (w.state === "ready") ready++;
          inFlight += w.inFlight;
          parked += w.parked;
        }
        return {
          workers: this.workers.length,
          ready,
          inFlight,
          parked,
          queue: this.#opts.queued(),
          resizing: this.#opts.resizing(),
          starting: !this.#opts.started(),
        };
      },
      resize: (count, opts) => this.#opts.resize(count, opts),
      ping: async (id, timeoutMs) => {
        const w = this.#byId.get(id);
        const session = w?.session;
        if (w === undefined || session === undefined) return false;
        const gen = w.generation;
        try {
          await session.request("ping", undefined, { timeout: timeoutMs });
          return true;
        } catch {
          // A ping that failed because the connection ended was not left
          // unanswered: the process died (or is killed for it soon), and
          // its exit says why. Its exit is reaped a few ms later, and a
          // heartbeat that killed it meanwhile named itself the cause
          // ("missed heartbeat" for a model's os._exit): answer once the
          // exit is in, when the slot is no longer ready with that pid.
          if (session.isClosed) await withTimeout(w.exitOf(gen), timeoutMs);
          return false;
        }
      },
    };
  }
}

/**
 * The `n` slots a shrink removes: first those with no process serving
 * (`failed`, `stopped`, `restarting`, `starting`, or a ready one whose
 * connection just ended), then ready ones with the fewest calls in flight
 * (parked streams included), counted within a factor of two (0, 1, 2-3,
 * 4-7, ...: a call more or less is no reason to move a model); among
 * those, the ones holding the fewest placed models (`placed`: removing one
 * that holds some loads them elsewhere first); then exact calls in
 * flight; among equals, the newest slot.
 */
function pickVictims(
  workers: readonly Worker[],
  n: number,
  placed: (w: Worker) => number = () => 0,
): Worker[] {
  const serving = (w: Worker) =>
    w.state === "ready" && w.session?.isClosed === false ? 1 : 0;
  return workers
    .map((w, at) => {
      const busy = w.inFlight + w.parked;
      return {
        w,
        at,
        busy,
        band: Math.ceil(Math.log2(1 + busy)),
        placed: placed(w),
      };
    })
    .sort((a, b) =>
      serving(a.w) - serving(b.w) ||
      a.band - b.band ||
      a.placed - b.placed ||
      a.busy - b.busy ||
      b.at - a.at
    )
    .slice(0, n)
    .map(({ w }) => w);
}

function pickExit(
  exit: WorkerExit,
): {
  pid: number | null;
  code: number | null;
  signal: string | null;
  reason: string;
  inFlight?: InFlight;
  heldLoop?: string;
} {
  return {
    pid: exit.pid,
    code: exit.code,
    signal: exit.signal,
    reason: exit.reason,
    ...(exit.inFlight === undefined ? {} : { inFlight: exit.inFlight }),
    ...(exit.heldLoop === undefined ? {} : { heldLoop: exit.heldLoop }),
  };
}

function indent(text: string): string {
  return text.trimEnd().split("\n").slice(-20).map((l) => `    ${l}`).join(
    "\n",
  );
}

/** Adds the counts of `from` to `into`, by key. */
function addCounts(
  into: Record<string, number>,
  from: Readonly<Record<string, number>>,
): void {
  for (const key in from) into[key] = (into[key] ?? 0) + from[key]!;
}
