/**
 * One slot of a pool: a Python server process, its Session, and the state
 * machine `starting → ready → draining → stopped`, plus `restarting` and
 * `failed`. The pool decides policy (through plugins); a worker only keeps
 * its facts straight: which process is current, why it ended, how many calls
 * it carries.
 *
 * @module
 */
import type { Logger } from "./logger.ts";
import { type OomKills, OUT_OF_MEMORY } from "./_oom_kills.ts";
import { PythonServer, type PythonServerOptions } from "./python_server.ts";
import type { Session, SessionConnectOptions } from "./session.ts";
import { withinRunningTime, withTimeout } from "./_with_timeout.ts";
import { MAX_TIMER_MS, setTimeoutOrNever } from "./_timer.ts";
import { StartTimeoutError, TimeoutError } from "./errors.ts";
import type { InFlight } from "./_in_flight.ts";

// How long a stopping worker may take to exit after `stopServer` before it is killed (plus the
// `closeMs` of its reply: its models' close() hooks).
const STOP_WAIT_MS = 1000;

// How long a worker whose connection ended waits for its process's exit
// before it takes the process for alive ("connection lost") and kills it,
// in the host's running time (withinRunningTime); after the server's
// `stopping` event, STOP_WAIT_MS plus its `closeMs` instead.
const EXIT_AFTER_CLOSE_MS = 250;

/**
 * The `closeMs` of a `stopServer` reply or a `stopping` event (protocol §6): how long the server's
 * model `close()` hooks may hold its exit; 0 when absent or not a number a
 * timer can wait (a server before `close()`, or a bad one).
 */
function closeMsOf(reply: unknown): number {
  const ms = (reply as { closeMs?: unknown } | null)?.closeMs;
  return typeof ms === "number" && Number.isInteger(ms) && ms > 0
    ? Math.min(ms, MAX_TIMER_MS - STOP_WAIT_MS)
    : 0;
}

/**
 * The states of a pool slot.
 *
 * @example
 * ```ts
 * import type { WorkerState } from "@pyproxy/pyproxy";
 * const routable = (state: WorkerState): boolean => state === "ready";
 * console.log(routable("draining")); // false
 * ```
 */
export type WorkerState =
  | "starting"
  | "ready"
  | "draining"
  | "stopped"
  | "restarting"
  | "failed";

/**
 * How a worker's process last ended.
 *
 * @example
 * ```ts
 * import type { WorkerExit } from "@pyproxy/pyproxy";
 * const exit: WorkerExit = { pid: 4242, code: null, signal: "SIGKILL", reason: "killed by SIGKILL", at: Date.now() };
 * console.log(exit.reason);
 * ```
 */
export interface WorkerExit {
  /** Pid of the process that ended, also before its ready line (`null` when none was spawned). */
  pid: number | null;
  /** Exit code, `null` when killed by a signal or unknown. */
  code: number | null;
  /** Signal that ended it, or `null`. */
  signal: string | null;
  /** Why, in words: `"killed by SIGKILL"`, `"missed heartbeat"`, `"wedged: ..."`, `"start failed: ..."`. */
  reason: string;
  /** When (ms since the epoch). */
  at: number;
  /**
   * The calls it was running, by model (other commands by their name), when
   * its connection closed; absent when none were.
   */
  inFlight?: InFlight;
  /**
   * The calls given up on (timed out, cancelled, a client gone) that it
   * still ran when its connection closed, by model, as `inFlight`; absent
   * when none. The call that hung a worker is often here, having timed out
   * first, and its victims in `inFlight`.
   */
  givenUp?: InFlight;
  /**
   * The model whose call held the server's event loop when the pool killed
   * it for answering nothing (the hang probe after a call's timeout, or the
   * heartbeat): an inline call that sent `busy` events and had no reply, a
   * hung fast model (protocol §4). Absent otherwise: a death by another
   * cause (killed from outside, `os._exit`, a crash) while such a call ran
   * does not set it, nor does an intentional stop.
   */
  heldLoop?: string;
}

/**
 * What the pool shows about a slot (`pool.status().workers`, plugin hooks).
 *
 * @example
 * ```ts ignore
 * for (const w of pool.status().workers) console.log(w.id, w.state, w.lastExit?.reason);
 * ```
 */
export interface WorkerInfo {
  /** Slot id: `"w1"`, `"w2"`, ... (also the server's `--id`); never reused in a pool, even after `pool.resize` removed its slot. */
  readonly id: string;
  /**
   * The slot's index: the lowest from 0 that no other slot of the pool held
   * when it was created (the first slots: 0, 1, ...), kept across restarts.
   * Unlike the id, it is reused: a slot added after a resize removed one
   * (once that one's process is gone) takes its index, so `index` stays
   * below the largest number of slots the pool had at once (one GPU per
   * worker: the `env` function's second argument). It also names the
   * slot's log file, `pythonserverslot<index>.log` in the pool's `logDir`.
   */
  readonly index: number;
  /** Pid of the running process, `null` when none. */
  readonly pid: number | null;
  /** Current state. */
  readonly state: WorkerState;
  /** How many times the slot was restarted. */
  readonly restarts: number;
  /**
   * Calls sent and not yet settled that hold one of the worker's
   * `maxInFlightPerWorker` slots (parked streams excepted).
   */
  readonly inFlight: number;
  /**
   * Streams sent and not yet settled whose reader is a full window behind
   * (64 items or 1 MiB unread): parked on the server, they hold no
   * `maxInFlightPerWorker` slot until the reader catches up.
   */
  readonly parked: number;
  /** Calls waiting in the pool queue that can only go to this worker (pinned or keyed). */
  readonly queued: number;
  /**
   * Calls given up on (timed out, aborted, a gateway client gone) that the
   * server still runs, by model (another command by its name: `eval`...),
   * counted in `inFlight` too: a model blocked outside Python (a sleep, a
   * lock, I/O without a timeout), which no cancel reaches, shows here as
   * its calls time out, before it wedges the worker
   * (docs/reliability.md, "Runbook"). `{}` when there are none.
   */
  readonly abandoned: Readonly<Record<string, number>>;
  /** Milliseconds since the current process became ready (0 when not running). */
  readonly uptime: number;
  /** How the previous process ended, or `null`. */
  readonly lastExit: WorkerExit | null;
  /**
   * The slot's processes that ended, by cause (see {@linkcode exitCause}):
   * `stopped` (on purpose), `pool` (killed by the pool: a hang, a missed
   * heartbeat, wedged, a lost connection, a failed start, `pool.kill`), a
   * signal's name (killed from outside or crashed: `SIGKILL` is how the
   * kernel's OOM killer ends one; during a close's or a resize's drain
   * too; a `SIGTERM` or `SIGINT` the server handled, exiting cleanly with
   * code 143 or 130, counts as the signal too), `exit_<code>` (it exited
   * by itself). A process that ended before its
   * ready line counts too (its exit code, or `pool` when the start killed
   * it: no ready line within `readyTimeout`).
   */
  readonly exits: Readonly<Record<string, number>>;
  /** The last lines the server wrote to stderr (current or last process). */
  readonly stderrTail: string;
  /** Why the slot is `failed`, else `null`. */
  readonly failedReason: string | null;
  /**
   * The Python version of the slot's last process that became ready
   * (`"3.12.1"`, from its ready line; absent until one did, or from an
   * older server): `/metrics`' `pyproxy_build_info`.
   */
  readonly python?: string;
  /**
   * The models it holds (`pool.status()` only): every model but the placed
   * ones (`ModelSpec.workers`) whose slot it is not.
   */
  readonly models?: string[];
}

type SessionSetup = Pick<
  SessionConnectOptions,
  "middleware" | "handlers" | "logger"
>;

/** The pool's side of a worker's life: called at each edge. */
export interface WorkerHooks {
  /** Middleware and handlers for a new session of this worker. */
  sessionOptions(worker: Worker): SessionSetup;
  /**
   * The session is open, the worker takes no traffic yet: run plugin hooks,
   * replay models, then call `worker.markReady()`. Throwing aborts the start
   * (the process is killed and the exit reported). `timeLeft()`: the
   * milliseconds of `readyTimeout` left for this start (`Infinity`: no
   * limit), which bounds the first request on the session.
   */
  prepare(
    worker: Worker,
    session: Session,
    restart: boolean,
    timeLeft: () => number,
  ): Promise<void>;
  /** The state changed. */
  stateChanged(worker: Worker, from: WorkerState, to: WorkerState): void;
  /** The process ended, or the start failed before a process was up. */
  exited(
    worker: Worker,
    exit: WorkerExit,
    intentional: boolean,
    session: Session | undefined,
  ): void;
}

/** Options of {@linkcode Worker}. */
export interface WorkerOptions {
  /** Slot id. */
  id: string;
  /** Slot index ({@linkcode WorkerInfo.index}). @default {0} */
  index?: number;
  /**
   * How to start the server (the worker adds `id` and, for Unix transport,
   * `socketName`). No `secret` nor `unix` path: every process of the slot
   * gets a fresh secret and socket directory.
   */
  server: Omit<PythonServerOptions, "id" | "unix" | "secret" | "socketName">;
  /**
   * Listen on a Unix socket (`<id>.sock`) in a new private directory per
   * process, removed when it exits; else TCP, as `server` says.
   */
  unix?: boolean;
  /**
   * The handshake's bound in ms when `server.readyTimeout` is `Infinity`
   * (the pool's `handshakeTimeout`; `Infinity`: none).
   * @default {10000}
   */
  handshakeTimeout?: number;
  /** The pool's callbacks. */
  hooks: WorkerHooks;
  /** Logger. */
  logger: Logger;
  /**
   * The OOM kills of the host's memory cgroup, shared by the pool's workers:
   * a process killed by SIGKILL from outside while one was counted says so
   * in its exit's reason.
   */
  oomKills?: OomKills;
}

/**
 * One pool slot. Internal to the pool; plugins see it as a {@linkcode WorkerInfo}.
 *
 * @example
 * ```ts ignore
 * const worker = new Worker({ id: "w1", server: { path: dir }, hooks, logger });
 * await worker.start(false);
 * ```
 */
export class Worker implements WorkerInfo {
  readonly id: string;
  readonly index: number;
  #options: WorkerOptions;
  #state: WorkerState = "starting";
  #gen = 0;
  #server: PythonServer | undefined;
  /** The server of the process that ended last (its stderr may still come). */
  #lastServer: { gen: number; server: PythonServer } | undefined;
  /** Whether the process that ended last was stopped on purpose, by generation. */
  #lastStop: { gen: number; intentional: boolean } | undefined;
  #session: Session | undefined;
  #pid: number | null = null;
  /** The Python version of the last process that became ready (`WorkerInfo.python`). */
  #python: string | undefined;
  #restarts = 0;
  #attempt = 0;
  #readyAt = 0;
  #lastExit: WorkerExit | null = null;
  /** Processes ended, by cause (`exits`). */
  #exits: Record<string, number> = {};
  #stderrTail = "";
  #failedReason: string | null = null;
  #killReason: string | undefined;
  /**
   * The model whose inline call held the event loop when this process was
   * killed for not answering (`killHung`): its exit's `heldLoop`.
   */
  #hungOn: string | undefined;
  /** The start failed and the pool killed the process for it (SIGKILL). */
  #startFailed = false;
  #intentional = false;
  /**
   * How long the current process may take to exit once its connection
   * ended: longer after its `stopping` event (a stop the pool did not ask
   * for, such as a SIGTERM from elsewhere, announcing its `closeMs`).
   */
  #exitAfterCloseMs = EXIT_AFTER_CLOSE_MS;
  #stopping = false;
  /** The generation whose process the stop cut off (see `cutByStop`). */
  #cutGen = 0;
  #stopped: Promise<void> | undefined;
  #pendingRestart: number | undefined;
  #restartTimer: ReturnType<typeof setTimeout> | undefined;
  #starting: Promise<Error | undefined> | undefined;
  #exitWaiters: Array<(exit: WorkerExit) => void> = [];
  #inFlight = 0;
  #parked = 0;
  /** Calls in flight whose callers have their answer already (abandon()). */
  #abandoned = 0;
  /** Those of them by model (or command), as `info().abandoned` shows them. */
  #abandonedBy = new Map<string, number>();
  #idleWaiters: Array<() => void> = [];
  /** Calls in the pool queue bound to this worker (kept by the pool). */
  queued = 0;

  /** Creates a slot in state `starting`; call {@linkcode Worker.start}. */
  constructor(options: WorkerOptions) {
    this.id = options.id;
    this.index = options.index ?? 0;
    this.#options = options;
  }

  /** Current state. */
  get state(): WorkerState {
    return this.#state;
  }
  /** Pid of the running process, or `null`. */
  get pid(): number | null {
    return this.#pid;
  }
  /** How many restarts were scheduled for this slot. */
  get restarts(): number {
    return this.#restarts;
  }
  /** Calls in flight on the current process that hold a slot. */
  get inFlight(): number {
    return this.#inFlight;
  }
  /** Calls given up on that the server still runs, by model (`WorkerInfo.abandoned`). */
  get abandoned(): Readonly<Record<string, number>> {
    return Object.fromEntries(this.#abandonedBy);
  }
  /** Streams in flight on the current process, parked (no slot held). */
  get parked(): number {
    return this.#parked;
  }
  /** Milliseconds since ready. */
  get uptime(): number {
    return this.#state === "ready" || this.#state === "draining"
      ? Date.now() - this.#readyAt
      : 0;
  }
  /** How the previous process ended. */
  get lastExit(): WorkerExit | null {
    return this.#lastExit;
  }
  /** The slot's processes that ended, by cause ({@linkcode WorkerInfo.exits}). */
  get exits(): Readonly<Record<string, number>> {
    return { ...this.#exits };
  }
  /** The server's stderr tail (current process, else the last one). */
  get stderrTail(): string {
    return this.#server?.stderrTail() ?? this.#stderrTail;
  }
  /**
   * The stderr tail of process `gen`: the current one's, else (the one that
   * ended last) once its
   * stderr has reached its end (at most `ms` of waiting): the last words of
   * a process that just died.
   */
  async settledStderrTail(gen: number, ms: number): Promise<string> {
    if (gen === this.#gen && this.#server !== undefined) {
      return this.#server.stderrTail();
    }
    const last = this.#lastServer;
    if (last === undefined || last.gen !== gen) return "";
    return await last.server.stderrSettled(ms);
  }
  /**
   * Whether process `gen` was stopped on purpose (the pool closing, a resize,
   * `failWorker`, `restartWorker`): its death is no crash. Read once its
   * connection is lost (the flag is set before the kill).
   */
  stoppedOnPurpose(gen: number): boolean {
    if (gen === this.#gen) return this.#intentional;
    return this.#lastStop?.gen === gen && this.#lastStop.intentional;
  }
  /** Why the slot failed. */
  get failedReason(): string | null {
    return this.#failedReason;
  }
  /** The session of the ready process (undefined when none). */
  get session(): Session | undefined {
    return this.#session;
  }
  /** Generation of the current process; changes on every (re)start. */
  get generation(): number {
    return this.#gen;
  }

  /** A plain, JSON-friendly snapshot. */
  info(): WorkerInfo {
    return {
      id: this.id,
      index: this.index,
      pid: this.pid,
      state: this.state,
      restarts: this.restarts,
      inFlight: this.inFlight,
      parked: this.parked,
      queued: this.queued,
      abandoned: this.abandoned,
      uptime: this.uptime,
      lastExit: this.lastExit,
      exits: this.exits,
      stderrTail: this.stderrTail,
      failedReason: this.failedReason,
      ...(this.#python === undefined ? {} : { python: this.#python }),
    };
  }

  /** Counts a call that is being sent to this worker. */
  acquire(): void {
    this.#inFlight++;
  }

  /**
   * Counts a call that settled: one that held a slot, or with `parked` a
   * parked one ({@linkcode Worker.park}); with `abandoned`, one counted by
   * {@linkcode Worker.abandon} before (`what`: the name it was given).
   */
  release(parked = false, abandoned = false, what?: string): void {
    if (parked) this.#parked--;
    else this.#inFlight--;
    if (abandoned) {
      this.#abandoned--;
      const n = what === undefined ? undefined : this.#abandonedBy.get(what);
      if (n !== undefined) {
        if (n > 1) this.#abandonedBy.set(what!, n - 1);
        else this.#abandonedBy.delete(what!);
      }
    }
    this.#wakeIfDrained();
  }

  /**
   * A call in flight whose caller already has its answer, an error (its
   * timeout, its abort, a client that left), while the server still runs
   * it until its cancel is answered: it keeps its slot (new calls must not
   * pile onto a worker still busy with it), but `stop()`'s drain does not
   * wait for it, as nobody waits for its result (a close after a call
   * timed out in a model's `time.sleep(10)` took the whole
   * `shutdownGrace`). Released with `release(parked, true, what)`;
   * `what` (its model, or its command) counts it in `info().abandoned`.
   */
  abandon(what?: string): void {
    this.#abandoned++;
    if (what !== undefined) {
      this.#abandonedBy.set(what, (this.#abandonedBy.get(what) ?? 0) + 1);
    }
    this.#wakeIfDrained();
  }

  /** Wakes the drain once every call in flight is settled or abandoned. */
  #wakeIfDrained(): void {
    if (
      this.#inFlight + this.#parked === this.#abandoned &&
      this.#idleWaiters.length > 0
    ) {
      for (const wake of this.#idleWaiters.splice(0)) wake();
    }
  }

  /**
   * A call in flight gives its slot back and counts as parked (a stream
   * waiting for its reader); it is still in flight for `stop()`'s drain.
   */
  park(): void {
    this.#inFlight--;
    this.#parked++;
  }

  /** A parked call takes a slot again (even beyond `maxInFlightPerWorker`). */
  unpark(): void {
    this.#parked--;
    this.#inFlight++;
  }

  /**
   * Whether `stop()` ended the process of generation `gen` while it was
   * serving (its grace ran out, or its calls had ended), rather than the
   * process ending by itself during the drain (a crash): a call that died
   * with it was cut off by the stop.
   */
  cutByStop(gen: number): boolean {
    return this.#cutGen === gen;
  }

  /** Resolves with the exit of the process of generation `gen` (at once if it already ended). */
  exitOf(gen: number): Promise<WorkerExit> {
    if (gen !== this.#gen || this.#pid === null) {
      return Promise.resolve(
        this.#lastExit ??
          {
            pid: null,
            code: null,
            signal: null,
            reason: "not running",
            at: Date.now(),
          },
      );
    }
    return new Promise((resolve) => this.#exitWaiters.push(resolve));
  }

  /**
   * Starts a process for this slot (state must be `starting` or
   * `restarting`). Resolves with `undefined` once ready, or with the error
   * that stopped it (the exit was already reported through the hooks).
   */
  start(restart: boolean): Promise<Error | undefined> {
    const run = this.#start(restart);
    this.#starting = run;
    return run;
  }

  async #start(restart: boolean): Promise<Error | undefined> {
    const gen = ++this.#gen;
    this.#killReason = undefined;
    this.#hungOn = undefined;
    this.#startFailed = false;
    this.#intentional = false;
    this.#exitAfterCloseMs = EXIT_AFTER_CLOSE_MS;
    // readyTimeout bounds the whole start, from the spawn to the answer to
    // the pool's first request: the ready line, then the handshake (which
    // had 10 s of its own whatever readyTimeout said), then `configure`.
    const readyTimeout = this.#options.server.readyTimeout ?? 15_000;
    const deadline = readyTimeout <= MAX_TIMER_MS
      ? Date.now() + readyTimeout
      : Infinity;
    const timeLeft = (): number =>
      deadline === Infinity ? Infinity : Math.max(0, deadline - Date.now());
    let server: PythonServer;
    try {
      // No secret given: PythonServer makes a fresh one for this process
      // alone. With one secret for the whole pool, anyone able to open TCP
      // connections to two workers could have one worker authenticate the
      // other (relay worker B's nonce to a connection the host opens to A,
      // hand A's MAC back to B); a secret of its own also means a restarted
      // process does not accept what its predecessor did.
      //
      // A Unix socket goes in a directory made for this process (no `unix`
      // path given: PythonServer makes a fresh 0700 one and removes it with
      // the process). A directory kept for the slot had to be made again
      // when something deleted it (a /tmp cleaner under a long-running
      // service), and by then another local user could have made it first:
      // the worker's socket in their directory, which they could swap for
      // their own, to be sent the models, their options and every call.
      server = await PythonServer.start({
        ...this.#options.server,
        id: this.id,
        ...(this.#options.unix === true
          ? { socketName: `${this.id}.sock` }
          : {}),
      });
    } catch (err) {
      if (gen !== this.#gen) return asError(err);
      this.#stderrTail = stderrOf(err);
      // A process that exited before its ready line: its pid, its code (or
      // signal); one that gave none in time (or a bad one) was killed by
      // the start. No pid: none was spawned.
      const exit = (err as {
        details?: { code?: unknown; signal?: unknown; pid?: unknown };
      })?.details;
      const pid = typeof exit?.pid === "number" ? exit.pid : null;
      const code = typeof exit?.code === "number" ? exit.code : null;
      const signal = typeof exit?.signal === "string" ? exit.signal : null;
      if (pid !== null) {
        // Counted as any process that ended (an import that crashes at
        // every start is a crash loop `exits` shows).
        this.#count(
          exitCause(
            this.#intentional,
            code === null && signal === null,
            code,
            signal,
          ),
        );
      }
      this.#report(gen, {
        pid,
        code,
        signal,
        reason: `start failed: ${firstLine(messageOf(err))}`,
        at: Date.now(),
      });
      return asError(err);
    }
    this.#server = server;
    this.#pid = server.pid;
    if (typeof server.ready.python === "string") {
      this.#python = server.ready.python.slice(0, 64);
    }
    server.exited.then((st) => {
      const oomKills = this.#options.oomKills;
      // A SIGKILL the pool did not send: the OOM killer's when its cgroup
      // counted a kill (nothing else tells it from a `kill -9`).
      if (
        st.signal === "SIGKILL" && this.#killReason === undefined &&
        oomKills !== undefined
      ) {
        oomKills.claim().then(
          (oom) => this.#onExit(gen, st.code, st.signal, oom),
          () => this.#onExit(gen, st.code, st.signal, false),
        );
      } else this.#onExit(gen, st.code, st.signal, false);
    });
    if (this.#stopping) {
      this.#intentional = true;
      server.kill("SIGKILL");
      return await this.#failedStart(
        gen,
        new Error("pool is closing"),
        restart,
      );
    }
    try {
      // With no readyTimeout (`Infinity`: a slow import may take what it
      // takes), the handshake still has its own bound: a server that printed
      // its ready line answers it at once, or never.
      const unbounded = deadline === Infinity;
      const handshakeMs = this.#options.handshakeTimeout ??
        HANDSHAKE_TIMEOUT_MS;
      const session = await server.connect({
        ...this.#options.hooks.sessionOptions(this),
        connectTimeout: unbounded ? handshakeMs : timeLeft(),
      }).catch((err: unknown) => {
        if (!(err instanceof TimeoutError)) throw err;
        const step = err.details.phase;
        const where = HANDSHAKE_STEPS[String(step)] ?? err.message;
        throw new StartTimeoutError(
          unbounded
            ? `Cannot start worker ${this.id}: handshake not done within ${handshakeMs} ms of the ready line (readyTimeout is Infinity; ${where})`
            : `Cannot start worker ${this.id}: handshake not done within readyTimeout (${readyTimeout} ms from the spawn; ${where})`,
          {
            cause: err,
            details: {
              phase: "handshake",
              step,
              timeoutMs: unbounded ? handshakeMs : readyTimeout,
              id: this.id,
            },
          },
        );
      });
      if (gen !== this.#gen || this.#pid === null) {
        await session.close();
        return await this.#failedStart(
          gen,
          new Error("process ended while connecting"),
          restart,
        );
      }
      this.#session = session;
      session.closed.then(() => this.#onSessionClosed(gen));
      session.onEvent((event) => {
        if (event.event === "wedged") {
          this.#onWedged(gen, session, event.reason);
        } else if (event.event === "stopping" && gen === this.#gen) {
          // The server stops (a SIGTERM from elsewhere): its connections
          // close next, then its models' close() and the end of its process
          // group take up to `closeMs`, which a kill 250 ms after the close
          // cut short (and under --allow-run=python3 left what its models
          // started running).
          this.#exitAfterCloseMs = STOP_WAIT_MS + closeMsOf(event);
        }
      });
      await this.#options.hooks.prepare(this, session, restart, timeLeft);
      // A stop that came once it was ready (a close right after a restart)
      // drains it: the start did its part, the stop does the rest (a throw
      // here killed the process under the stop, its models' close() unrun).
      if (
        this.#state !== "ready" &&
        !(this.#stopping && this.#state === "draining")
      ) throw new Error(`worker is ${this.#state}`);
      return undefined;
    } catch (err) {
      // (A process already reported gone, its restart maybe under way: a
      // held replay waits for the exit before it gives up the start.)
      if (gen === this.#gen && this.#killReason === undefined) {
        this.#killReason = `start failed: ${messageOf(err)}`;
        this.#startFailed = true;
      }
      server.kill("SIGKILL");
      return await this.#failedStart(gen, err, restart);
    }
  }

  async #failedStart(
    gen: number,
    err: unknown,
    restart: boolean,
  ): Promise<Error> {
    await this.exitOf(gen);
    // A first start (Pool.start, a resize) rejects with nothing of it left
    // running; a restart does not wait (it added up to 1 s to each turn of
    // a failing slot's restarts; a stop still waits for the last one's).
    if (!restart) await this.#stderrEnded(gen);
    return asError(err);
  }

  /**
   * Waits (at most {@linkcode STDERR_END_MS}) for the stderr of process
   * `gen`, which has exited, to reach its end: a process it started may
   * hold the pipe a little longer (a wrapper's, or model code's outside its
   * group). So a failed start or a stop leaves no read of it behind (Deno's
   * test sanitizers report one, and the tail gets the last words).
   */
  async #stderrEnded(gen: number): Promise<void> {
    const last = this.#lastServer;
    if (last !== undefined && last.gen === gen) {
      await last.server.stderrSettled(STDERR_END_MS);
    }
  }

  /** Called by the pool's `prepare` hook once the worker may take traffic. */
  markReady(): void {
    if (this.#stopping || this.#pid === null) return;
    this.#readyAt = Date.now();
    this.#attempt = 0;
    this.#setState("ready");
    // Kills counted until now are not this process's (nor a later one's).
    this.#options.oomKills?.note().catch(() => {});
  }

  /**
   * Schedules a restart after `delayMs` (beyond `MAX_TIMER_MS`, never). A
   * running process is killed first (SIGTERM) and the restart follows its
   * exit. Returns the attempt number, or `undefined` when nothing was
   * scheduled.
   */
  scheduleRestart(
    delayMs: number,
    reason = "restart requested",
  ): number | undefined {
    if (this.#stopping || this.#state === "failed") return undefined;
    if (
      this.#state === "restarting" || this.#state === "starting" ||
      this.#pendingRestart !== undefined
    ) {
      return undefined;
    }
    if (this.#pid !== null) {
      this.#pendingRestart = delayMs;
      // Asked for (a plugin recycling its worker): not a crash, so a restart
      // policy does not count it towards marking the slot failed.
      this.#intentional = true;
      this.kill("SIGTERM", reason);
      return this.#attempt + 1;
    }
    return this.#scheduleNow(delayMs);
  }

  #scheduleNow(delayMs: number): number {
    this.#restarts++;
    this.#attempt++;
    this.#setState("restarting");
    // Beyond a timer's range (~24.8 days) the restart never comes (a timer
    // would fire at once).
    this.#restartTimer = setTimeoutOrNever(() => {
      this.#restartTimer = undefined;
      if (this.#stopping) return;
      this.start(true);
    }, Math.max(0, delayMs));
    return this.#attempt;
  }

  /**
   * Gives a `failed` slot another start after `delayMs` (a restart policy's
   * cool-down): the attempt number of the restart, or `undefined` when the
   * slot is not failed, its process has not exited yet, or the pool is
   * stopping.
   */
  revive(delayMs: number): number | undefined {
    if (this.#stopping || this.#state !== "failed" || this.#pid !== null) {
      return undefined;
    }
    this.#failedReason = null;
    return this.#scheduleNow(delayMs);
  }

  /** Marks the slot failed (until `revive`) and kills its process. */
  fail(reason: string): void {
    if (this.#state === "failed") return;
    this.#failedReason = reason;
    this.#cancelRestart();
    if (this.#pid !== null) {
      this.#intentional = true;
      this.#killReason ??= `failed: ${reason}`;
      this.#server?.kill("SIGKILL");
    }
    this.#setState("failed");
  }

  /** Kills the current process; `reason` becomes `lastExit.reason`. */
  kill(signal: "SIGTERM" | "SIGKILL" = "SIGKILL", reason?: string): void {
    if (this.#pid === null || this.#server === undefined) return;
    this.#killReason ??= reason ?? `killed by ${signal} (requested)`;
    this.#server.kill(signal);
  }

  /**
   * Kills the current process because it answers nothing (a ping left
   * unanswered: the hang probe after a timeout, the heartbeat). Returns the
   * model whose inline call holds its event loop now
   * (`Session.loopHeldBy`), which becomes `lastExit.heldLoop`; `undefined`
   * when none does, or when the process was already being killed for
   * another reason (that reason stays its exit's). Only this kill names a
   * model: a death by any other cause (killed from outside, `os._exit`, a
   * segfault) while an inline call ran says nothing about that call.
   */
  killHung(
    signal: "SIGTERM" | "SIGKILL" = "SIGKILL",
    reason?: string,
  ): string | undefined {
    if (this.#pid === null || this.#server === undefined) return undefined;
    const held = this.#killReason === undefined && !this.#intentional
      ? this.#session?.loopHeldBy
      : undefined;
    this.#hungOn ??= held;
    this.kill(signal, reason);
    return held;
  }

  /**
   * Stops the slot for good: no more restarts; waits for in-flight calls up
   * to `graceMs` (state `draining`; beyond `MAX_TIMER_MS`, ~24.8 days, until
   * they finish), sends `stopServer`, and kills the process when it has not
   * exited 1 s later, or, when the reply says its models' `close()` hooks
   * may take `closeMs`, 1 s + `closeMs` later: at most `graceMs` + 1 s
   * (+ `closeMs`), plus the kill itself.
   * `reason` becomes `lastExit.reason` (unless the process ended otherwise
   * first). Later calls return the first one's promise.
   */
  stop(graceMs: number, reason = "stopped"): Promise<void> {
    // Once: a second stop (close() while a resize removes this slot) would
    // take the draining slot for a start in progress and kill it at once.
    return this.#stopped ??= this.#stop(graceMs, reason);
  }

  async #stop(graceMs: number, reason: string): Promise<void> {
    this.#stopping = true;
    this.#cancelRestart();
    if (this.#state === "restarting") this.#setState("stopped");
    if (this.#starting !== undefined && this.#state !== "ready") {
      // A start in progress sees #stopping and kills its own process.
      this.#intentional = true;
      this.#cutGen = this.#gen;
      this.#server?.kill("SIGKILL");
      await this.#starting;
    }
    const gen = this.#gen;
    if (this.#pid === null) {
      // (Ended before the stop: a crash not restarted yet, a failed slot.)
      await this.#stderrEnded(gen);
      return;
    }
    this.#intentional = true;
    if (this.#state === "ready") this.#setState("draining");
    // Calls whose callers have their answer already (timed out, aborted)
    // are not waited for: the stop cuts them short, as their cancel would.
    if (this.#inFlight + this.#parked > this.#abandoned) {
      await withTimeout(
        new Promise<void>((resolve) => this.#idleWaiters.push(resolve)),
        graceMs,
      );
    }
    const exited = this.exitOf(gen);
    const session = this.#session;
    // The stop ends its process from here: what still runs there is cut off
    // by it. Not a process whose connection ended during the drain (its
    // model crashed it): its calls failed with the crash, and its exit
    // tells how it ended ("exited with code 3", not the stop's reason).
    if (session !== undefined && !session.isClosed) {
      this.#cutGen = gen;
      this.#killReason ??= reason;
    }
    // The server replies, then exits: one second covers both (waiting for the reply first, then
    // for the exit, let close() take shutdownGrace + 2 s). A reply with `closeMs` (its models'
    // close() hooks may hold the exit that long) extends the wait by as much.
    let closeMs = 0;
    if (session !== undefined && !session.isClosed) {
      session.request("stopServer").then(
        (reply) => closeMs = closeMsOf(reply),
        () => {},
      );
    }
    if (
      await withTimeout(exited, STOP_WAIT_MS) === undefined &&
      (closeMs === 0 || await withTimeout(exited, closeMs) === undefined)
    ) {
      this.#killReason ??= reason;
      this.#server?.kill("SIGKILL");
    }
    await exited;
    await this.#stderrEnded(gen);
  }

  #cancelRestart(): void {
    if (this.#restartTimer !== undefined) clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    this.#pendingRestart = undefined;
  }

  #onSessionClosed(gen: number): void {
    // A stopping server closes its connections, then runs its models'
    // close() hooks before it exits: the stop kills it when that runs late.
    if (gen !== this.#gen || this.#pid === null || this.#stopping) return;
    // Usually the process died and took the socket with it: give its exit a
    // moment to arrive so lastExit tells the real cause.
    withinRunningTime(this.exitOf(gen), this.#exitAfterCloseMs).then((exit) => {
      if (exit !== undefined || gen !== this.#gen || this.#pid === null) return;
      // A session that ends while its process lives is as good as dead: we
      // cannot tell what ran.
      this.#killReason ??= this.#intentional ? "stopped" : "connection lost";
      this.#server?.kill("SIGKILL");
    });
  }

  /**
   * The server says it cannot run calls as it should any more (protocol §6,
   * `wedged`: its call threads are stuck in C code that no cancel reaches).
   * It still answers pings, so no heartbeat would ever notice: replace it
   * now. The kill is not intentional, so the exit goes through the restart
   * policy like any crash, and calls in flight fail with
   * `WorkerCrashedError` naming the reason.
   */
  #onWedged(gen: number, session: Session, reason: unknown): void {
    if (gen !== this.#gen || this.#pid === null) return;
    const why = `wedged: ${
      typeof reason === "string" && reason !== ""
        ? reason
        : "the server reported it"
    }`;
    this.#options.logger.warn("worker {id} (pid {pid}) is {reason}", {
      id: this.id,
      pid: this.#pid,
      reason: why,
    });
    this.kill("SIGKILL", why);
    // No more calls for it while its exit is on the way (the router skips a
    // closed session); those in flight see the exit's reason.
    session.close().catch(() => {});
  }

  #onExit(
    gen: number,
    code: number | null,
    signal: string | null,
    outOfMemory: boolean,
  ): void {
    if (gen !== this.#gen) return;
    const status = signal !== null
      ? `killed by ${signal}${outOfMemory ? OUT_OF_MEMORY : ""}`
      : `exited with code ${code}`;
    let reason = this.#killReason ?? status;
    // A start that failed because the process ended by itself (a model's
    // import calling os._exit or crashing while replayed): the start's error
    // only says the connection closed, so the reason also says how it ended.
    if (this.#startFailed && signal !== "SIGKILL") reason += ` (${status})`;
    // A process that ended by itself while a stop drained it (its model
    // crashed it, the OOM killer's SIGKILL) counts by its own cause, as its
    // exit's reason and its calls' errors tell it: not as `stopped`, which
    // hid a crash or an OOM kill during a close or a resize (chaos42).
    const byItself = this.#stopping && this.#cutGen !== gen &&
      this.#killReason === undefined;
    const cause = exitCause(
      this.#intentional && !byItself,
      this.#killReason !== undefined,
      code,
      signal,
    );
    this.#count(cause);
    this.#report(gen, { pid: this.#pid, code, signal, reason, at: Date.now() });
  }

  /** One more process ended by `cause` (`exits`). */
  #count(cause: string): void {
    this.#exits[cause] = (this.#exits[cause] ?? 0) + 1;
  }

  #report(gen: number, exit: WorkerExit): void {
    if (gen !== this.#gen) return;
    const session = this.#session;
    this.#session = undefined;
    if (this.#server !== undefined) {
      this.#stderrTail = this.#server.stderrTail();
      this.#lastServer = { gen, server: this.#server };
    }
    this.#lastStop = { gen, intentional: this.#intentional };
    this.#server = undefined;
    this.#pid = null;
    this.#lastExit = exit;
    session?.close().catch(() => {});
    // Counted as the session closed (now, at the latest).
    const inFlight = session?.inFlightAtClose;
    if (inFlight !== undefined) exit.inFlight = inFlight;
    const givenUp = session?.givenUpAtClose;
    if (givenUp !== undefined) exit.givenUp = givenUp;
    if (this.#hungOn !== undefined && !this.#intentional) {
      exit.heldLoop = this.#hungOn;
    }
    if (this.#state !== "failed") this.#setState("stopped");
    const restartDelay = this.#pendingRestart;
    this.#pendingRestart = undefined;
    if (
      restartDelay !== undefined && !this.#stopping && this.#state === "stopped"
    ) this.#scheduleNow(restartDelay);
    for (const wake of this.#exitWaiters.splice(0)) wake(exit);
    this.#options.hooks.exited(this, exit, this.#intentional, session);
  }

  #setState(to: WorkerState): void {
    const from = this.#state;
    if (from === to) return;
    this.#state = to;
    this.#options.logger.debug("worker {id}: {from} -> {to}", {
      id: this.id,
      from,
      to,
    });
    this.#options.hooks.stateChanged(this, from, to);
  }
}

/** How long a stop or a failed start waits for an exited process's stderr to end. */
const STDERR_END_MS = 1000;

/** The handshake's bound when `readyTimeout` is `Infinity` and no `handshakeTimeout` is given (the session's own default). */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/** What a handshake that timed out was waiting for, by the session's `details.phase`. */
const HANDSHAKE_STEPS: Record<string, string> = {
  connect: "not connected yet",
  hello: "no hello from the server yet",
  auth: "not authenticated yet",
};

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function firstLine(text: string): string {
  const at = text.indexOf("\n");
  return at < 0 ? text : text.slice(0, at);
}

function stderrOf(err: unknown): string {
  if (err instanceof Error && "details" in err) {
    const details = (err as { details?: Record<string, unknown> }).details ??
      {};
    for (const key of ["stderrTail", "stderr"]) {
      if (typeof details[key] === "string") return details[key] as string;
    }
  }
  return "";
}

/**
 * The cause of a worker process's end, as `WorkerInfo.exits` and the
 * gateway's `pyproxy_worker_exits_total` count it (a bounded set of values):
 * `stopped` when the pool stopped it on purpose, `pool` when the pool killed
 * it for a fault (its own kill has a reason), else the signal that ended it
 * (from outside: the OOM killer's `SIGKILL`, a crash's `SIGSEGV`; also a
 * `SIGTERM` or `SIGINT` the server handled, exiting with code 143 or 130) or
 * `exit_<code>`.
 *
 * @example
 * ```ts
 * import { exitCause } from "./worker.ts";
 * console.log(exitCause(false, false, null, "SIGKILL")); // "SIGKILL"
 * console.log(exitCause(false, false, 1, null)); // "exit_1"
 * console.log(exitCause(false, false, 143, null)); // "SIGTERM"
 * ```
 */
export function exitCause(
  intentional: boolean,
  killedByPool: boolean,
  code: number | null,
  signal: string | null,
): string {
  if (intentional) return "stopped";
  if (killedByPool) return "pool";
  if (signal !== null) return signal;
  if (code === null) return "unknown";
  return STOPPED_BY_SIGNAL[code] ?? `exit_${code}`;
}

/**
 * The exit codes of a server that stopped cleanly for a signal from outside
 * (128 + its number, protocol §6), by the signal's name: counted as the
 * signal, as a process it killed is, never as the pool's own stop (0).
 */
const STOPPED_BY_SIGNAL: Readonly<Record<number, string>> = {
  130: "SIGINT",
  143: "SIGTERM",
};
