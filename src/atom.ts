/**
 * Remote evaluation: {@linkcode Atom} is one piece of Python code running on a
 * worker, with its result, its live output and cancellation.
 *
 * Eval is arbitrary code execution on the workers: it is available to
 * whoever holds the pool (and, through the gateway, to whoever its
 * authentication lets in).
 *
 * @module
 */
import type { AtomRegistry } from "./atom_registry.ts";
import { CancelledError, PyProxyError, TimeoutError } from "./errors.ts";
import { OutputBuffer, type OutputChunk } from "./output_buffer.ts";
import type { ReplayBudget } from "./replay_budget.ts";
import { callOptionsError } from "./_call_options.ts";
import type { PoolEvent } from "./pool_events.ts";
import { setTimeoutOrNever } from "./_timer.ts";
import { jsonLength } from "./_json_length.ts";

/**
 * How long a cancelled eval's worker may take to answer the cancel, and the
 * ping that decides, once `cancelGrace` is over, whether the code still
 * runs (its server's loop answers both at once unless something blocks it).
 */
const CANCEL_ANSWER_MS = 2000;
/** The longest delay a timer takes (~24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export type { OutputChunk } from "./output_buffer.ts";

/**
 * The pool request options eval needs (a subset of the pool's).
 *
 * @example
 * ```ts
 * import type { EvalRequestOptions } from "@pyproxy/pyproxy";
 * const options: EvalRequestOptions = { worker: "w1", timeout: Infinity };
 * console.log(options.worker);
 * ```
 */
export interface EvalRequestOptions {
  /** Pin the request to this worker slot. */
  worker?: string;
  /** Request timeout (eval passes `Infinity`: the atom keeps its own deadline). */
  timeout?: number;
  /** Abort the request (used only before the code started). */
  signal?: AbortSignal;
  /** Events whose `id` is the request's. */
  onEvent?: (event: Record<string, unknown>) => void;
  /** Called when the request is written to a worker (it left the queue). */
  onSend?: () => void;
}

/**
 * The part of a pool that eval uses (structural: `Pool` implements it).
 *
 * @example
 * ```ts ignore
 * import type { EvalPool } from "@pyproxy/pyproxy";
 * const target: EvalPool = pool; // a Pool
 * ```
 */
export interface EvalPool {
  /** Sends a command to a worker. */
  request<T = unknown>(
    cmd: string,
    args?: Record<string, unknown>,
    options?: EvalRequestOptions,
  ): Promise<T>;
  /** Subscribes to pool events; returns the unsubscribe function. */
  on(listener: (ev: PoolEvent) => void): () => void;
  /** Kills a worker's process (the pool then replaces it). */
  killWorker(id: string, reason?: string): void;
  /**
   * Sends a small command straight on a worker's current connection,
   * bypassing the pool queue and in-flight bound (acks must never wait behind
   * the evals they unblock); rejects when the worker's pid is not `pid`.
   */
  control<T = unknown>(
    worker: string,
    cmd: string,
    args: Record<string, unknown>,
    options?: { pid?: number; timeout?: number },
  ): Promise<T>;
  /** The pool's atoms, for {@linkcode getAtom}. */
  readonly atoms: AtomRegistry<Atom>;
  /**
   * The bound its running atoms' replay buffers share (`evalReplayBudget`);
   * without one, only each atom's `replayBytes` bounds them.
   */
  readonly replayBudget?: ReplayBudget;
}

/**
 * The eval session an atom runs in (`EvalSession` implements it).
 *
 * @example
 * ```ts ignore
 * const session: AtomSession = await pool.openSession();
 * console.log(session.id, session.worker);
 * ```
 */
export interface AtomSession {
  /** Server-assigned session id. */
  readonly id: string;
  /** The worker slot holding the namespace. */
  readonly worker: string;
  /** The error every eval gets once the session is lost or closed, else `undefined`. */
  readonly unusable: Error | undefined;
  /** Marks the session lost (its worker or connection died). */
  markLost(cause: unknown): void;
}

/**
 * Options of `pool.eval` / {@linkcode startAtom}. Evals ignore the pool's
 * `requestTimeout`: give `timeout` here.
 *
 * @example
 * ```ts
 * import type { EvalOptions } from "@pyproxy/pyproxy";
 * const options: EvalOptions = { locals: { n: 3 }, timeout: 5000, cancelGrace: 1000 };
 * console.log(options.timeout);
 * ```
 */
export interface EvalOptions {
  /** Names bound for this atom only (removed from a session's namespace afterwards). */
  locals?: Record<string, unknown>;
  /** Names merged into the namespace (they persist in a session). */
  globals?: Record<string, unknown>;
  /**
   * Call the code's single top-level function (or its final callable
   * expression) with these: an array for positional, an object for keyword
   * arguments.
   */
  args?: unknown[] | Record<string, unknown>;
  /**
   * Milliseconds before the atom is interrupted and rejects with
   * `TimeoutError`, counted from `eval()`: in a session, the time it waits
   * for the session's earlier atoms counts (one that times out then never
   * runs, and its message says so). A number >= 0; `0` rejects at once
   * without running the code; `Infinity` (or absent) means none, and so does anything beyond
   * 2^31 − 1 (~24.8 days, a timer's range). `pool.eval` throws a
   * `ConfigError` for anything else, and for a bad `signal`, `cancelGrace`
   * or `replayBytes`.
   */
  timeout?: number;
  /** Aborting interrupts the code; the atom rejects with `CancelledError`. */
  signal?: AbortSignal;
  /** Run in this session's namespace (on its worker) instead of a fresh one. */
  session?: AtomSession;
  /**
   * Milliseconds an interrupted atom may take to stop before its worker is
   * killed and replaced (code blocked in C, such as `time.sleep`, cannot be
   * interrupted otherwise): a number >= 0, counted from the worker's answer
   * to the cancel; the worker goes once its answer to a ping shows the code
   * still running, or when it answers neither the cancel nor the ping
   * within 2 s (or the grace, if longer). `Infinity`, or anything beyond
   * 2^31 − 1 (~24.8 days, a timer's range), means no limit: the worker is
   * never killed for it, and the atom's `stopped` waits for the code.
   *
   * @default {2000}
   */
  cancelGrace?: number;
  /**
   * Output kept for replay (UTF-16 code units). While the atom runs, the
   * pool's `evalReplayBudget` bounds it too, shared with its other running
   * atoms.
   *
   * @default {8388608}
   */
  replayBytes?: number;
  /** Start only after this settles (sessions run their atoms in order). */
  after?: Promise<unknown>;
  /**
   * The request id of the eval (e.g. the gateway's `X-Request-Id`): sent
   * with it (protocol §6, `requestId`), so that its code reads it with
   * `host.request_id()` and the worker's log line of its exception names
   * it; kept as {@linkcode Atom.requestId}. 1 to 128 characters of
   * `A-Za-z0-9._:-`; `pool.eval` throws a `ConfigError` for anything else.
   */
  requestId?: string;
}

/**
 * An atom's life: `running` until it settles one way (a timeout counts as
 * `cancelled`).
 *
 * @example
 * ```ts
 * import type { AtomState } from "@pyproxy/pyproxy";
 * const state: AtomState = "running";
 * console.log(state);
 * ```
 */
export type AtomState = "running" | "succeeded" | "failed" | "cancelled";

interface EvalReply {
  value: unknown;
  chunks?: number;
}

/**
 * One evaluation of Python code on a worker. `result` settles with the value
 * of the final expression (or the called function); `output` streams what the
 * code prints, while it runs. Create one with `pool.eval(code, options)`.
 *
 * Reading `output` applies backpressure: an attached reader that stops
 * reading eventually blocks the printing code (so read it concurrently with
 * awaiting `result`, or cancel it). Output nobody reads is kept in a bounded
 * replay buffer; beyond its cap (`replayBytes`, or the pool's
 * `evalReplayBudget` shared by its running atoms) the oldest chunks are
 * dropped and a late reader sees `truncated` on the next chunk.
 *
 * @example
 * ```ts ignore
 * const atom = pool.eval("print('hi')\n6 * 7");
 * for await (const chunk of atom.output) console.log(chunk.fd, chunk.data);
 * console.log(await atom.result); // 42
 * ```
 */
export class Atom {
  /** Host-assigned unique id (use it with {@linkcode getAtom}). */
  readonly id: string = crypto.randomUUID();
  /** The request id it was started with (`requestId` of its options), if any. */
  readonly requestId: string | undefined;
  /** Settles with the JSON value, or rejects (`PythonError`, `CancelledError`, `TimeoutError`, ...). */
  readonly result: Promise<unknown>;
  /**
   * Resolves once the code stopped running and all its output arrived. For a
   * cancelled atom this is later than `result` (the interrupt, or the kill
   * after `cancelGrace`, takes effect after the rejection). Never rejects.
   */
  readonly stopped: Promise<void>;
  #stopped!: () => void;
  #pool: EvalPool;
  #buffer: OutputBuffer;
  #output: ReadableStream<OutputChunk> | undefined;
  #state: AtomState = "running";
  #finished = false;
  #sessionId: string | undefined;
  #worker: string | undefined;
  #target: number | undefined;
  #pid: number | undefined;
  #interrupt: { error: Error } | undefined;
  #requestDone = false;
  /** The request was written to a worker: the code may run before `evalStart` arrives. */
  #sent = false;
  /** Waiting for the session's earlier atoms to stop (`after`). */
  #waiting = false;
  #controller = new AbortController();
  #cancelGrace: number;
  #ackSeq = -1;
  #ackScheduled = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;
  #resolve!: (value: unknown) => void;
  #reject!: (error: unknown) => void;
  #cleanup: Array<() => void> = [];
  #resultBytes = 0;

  /** Use `pool.eval()` or {@linkcode startAtom}. */
  constructor(
    pool: EvalPool,
    options: Pick<
      EvalOptions,
      "cancelGrace" | "replayBytes" | "requestId"
    > = {},
  ) {
    this.#pool = pool;
    this.requestId = options.requestId;
    this.#cancelGrace = options.cancelGrace ?? 2000;
    const budget = pool.replayBudget;
    this.#buffer = new OutputBuffer({
      maxBytes: options.replayBytes ?? 8 * 1024 * 1024,
      onAck: (seq) => this.#scheduleAck(seq),
      // Until the atom finishes (#finish ends the buffer), whichever way.
      ...(budget === undefined ? {} : { budget }),
    });
    this.stopped = new Promise((resolve) => this.#stopped = resolve);
    this.result = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // A caller that only reads output must not get an unhandled rejection.
    this.result.catch(() => {});
  }

  /** The server-assigned namespace id (the session's, or a one-off `t-...`); set once the code started. */
  get sessionId(): string | undefined {
    return this.#sessionId;
  }

  /** The worker slot running the code; set once the code started. */
  get worker(): string | undefined {
    return this.#worker;
  }

  /** `running`, `succeeded`, `failed` or `cancelled` (timeouts count as cancelled). */
  get state(): AtomState {
    return this.#state;
  }

  /** `true` once the code stopped and all its output arrived. */
  get done(): boolean {
    return this.#finished;
  }

  /** Output kept for replay, in UTF-16 code units. */
  get bufferedBytes(): number {
    return this.#buffer.bytes;
  }

  /**
   * About the length of the result's JSON once it succeeded (0 before, or
   * when it failed), for the pool's registry of finished atoms.
   */
  get resultBytes(): number {
    return this.#resultBytes;
  }

  /**
   * The live output from the first chunk on (the same stream on every access).
   * Chunks arrive while the code runs; the stream closes when it stops.
   */
  get output(): ReadableStream<OutputChunk> {
    return this.#output ??= this.#buffer.readable(0);
  }

  /**
   * A new stream of the output from sequence number `fromSeq` on: the kept
   * chunks, then live ones until the atom ends. The first chunk after
   * dropped ones carries `truncated` (how many are missing).
   */
  replay(fromSeq = 0): ReadableStream<OutputChunk> {
    return this.#buffer.readable(fromSeq);
  }

  /**
   * Interrupts the code (like aborting `signal`); the atom rejects with
   * `CancelledError` at once. Code still queued never runs; code already
   * sent to a worker is interrupted as soon as it starts, and `stopped`
   * waits for it in every case.
   */
  cancel(reason = "cancelled"): void {
    this.#abort(new CancelledError(`Cannot complete eval: ${reason}`));
  }

  /** Starts the request (called once by {@linkcode startAtom}). */
  async run(code: string, options: EvalOptions): Promise<void> {
    const { signal, timeout, session } = options;
    if (signal) {
      const onAbort = (): void =>
        this.#abort(
          new CancelledError("Cannot complete eval: aborted", {
            cause: signal.reason,
          }),
        );
      if (signal.aborted) return onAbort(), this.#finish();
      signal.addEventListener("abort", onAbort, { once: true });
      this.#cleanup.push(() => signal.removeEventListener("abort", onAbort));
    }
    // A session's atom may spend its whole timeout behind the atoms before
    // it: say so, or the cell reads as one that ran too long.
    const expire = (): void =>
      this.#abort(
        new TimeoutError(
          `Cannot complete eval: timed out after ${timeout} ms` +
            (this.#waiting
              ? ", before its code started: it waited for the session's earlier evals (its timeout counts from eval())"
              : ""),
        ),
      );
    // 0: already past its deadline, never sent. Beyond a timer's range (~24.8 days) a timer would
    // fire at once, so such a timeout counts as none, like Infinity.
    if (timeout === 0) return expire(), this.#finish();
    if (timeout !== undefined) this.#timer = setTimeoutOrNever(expire, timeout);
    if (options.after) {
      this.#waiting = true;
      await options.after.then(() => {}, () => {});
      this.#waiting = false;
    }
    if (this.#state !== "running") return this.#finish();
    const unusable = session?.unusable;
    if (unusable) return this.#settle(unusable), this.#finish();
    const args: Record<string, unknown> = { code };
    if (session) args.session = session.id;
    if (options.globals) args.globals = options.globals;
    if (options.locals) args.locals = options.locals;
    if (options.args !== undefined) args.args = options.args;
    if (this.requestId !== undefined) args.requestId = this.requestId;
    const requestOptions: EvalRequestOptions = {
      // The atom owns its deadline (interrupt, then kill after the grace):
      // the pool's default request timeout must not cut it short.
      timeout: Infinity,
      signal: this.#controller.signal,
      onEvent: (event) => this.#onEvent(event),
      onSend: () => this.#sent = true,
    };
    if (session) requestOptions.worker = session.worker;
    try {
      const reply = await this.#pool.request<EvalReply>(
        "eval",
        args,
        requestOptions,
      );
      this.#settle(undefined, reply.value);
    } catch (error) {
      if (session && isLoss(error)) {
        session.markLost(error);
        this.#settle(session.unusable ?? error);
      } else {
        this.#settle(error);
      }
    } finally {
      this.#finish();
    }
  }

  #onEvent(event: Record<string, unknown>): void {
    if (event.event === "output") {
      const fd = event.fd === 2 ? 2 : 1;
      this.#buffer.push({
        fd,
        data: String(event.data ?? ""),
        seq: Number(event.seq),
      });
    } else if (event.event === "evalStart") {
      this.#target = typeof event.id === "number" ? event.id : undefined;
      if (typeof event.session === "string") this.#sessionId = event.session;
      if (typeof event.serverId === "string") this.#worker = event.serverId;
      if (typeof event.pid === "number") this.#pid = event.pid;
      if (this.#interrupt) this.#sendCancel();
    }
  }

  #scheduleAck(seq: number): void {
    this.#ackSeq = seq;
    if (this.#ackScheduled) return;
    this.#ackScheduled = true;
    // One ack per batch of events: the events of one socket read arrive in
    // one synchronous burst.
    queueMicrotask(() => {
      this.#ackScheduled = false;
      if (
        this.#target === undefined || this.#worker === undefined ||
        this.#requestDone
      ) return;
      this.#pool.control(this.#worker, "outputAck", {
        target: this.#target,
        seq: this.#ackSeq,
      }, this.#where())
        .catch(() => {}); // the eval's own reply reports a lost connection
    });
  }

  #where(): { pid?: number } {
    return this.#pid === undefined ? {} : { pid: this.#pid };
  }

  #abort(error: Error): void {
    if (this.#state !== "running" || this.#interrupt) return;
    this.#interrupt = { error };
    this.#settle(error);
    if (this.#target !== undefined) this.#sendCancel();
    // Written but not started yet: its `evalStart` sends the cancel (see
    // #onEvent), and `stopped` waits for the reply as for a started atom.
    else if (this.#sent) return;
    else this.#controller.abort(error); // still queued: drop it from the queue
  }

  #sendCancel(): void {
    if (
      this.#requestDone || this.#target === undefined ||
      this.#worker === undefined
    ) return;
    const worker = this.#worker;
    const where = this.#where();
    const kill = () => {
      if (!this.#requestDone) {
        this.#pool.killWorker(
          worker,
          `eval ${this.id} did not stop after cancel`,
        );
      }
    };
    // Unanswered in time: kill. Any other failure (the connection lost, or
    // another process in the slot now) means the eval ended with the
    // process that ran it.
    const killIfUnanswered = (err: unknown) => {
      if (err instanceof TimeoutError) kill();
    };
    // Code blocked in C never sees the KeyboardInterrupt: replace the
    // worker. A grace beyond a timer's range (Infinity too) waits for the
    // code to stop. The grace counts from the server's answer to the cancel
    // (a busy host may write the cancel late), and ends with a ping: the
    // server answers it after every reply it wrote before, so a code that
    // stopped in time, whose reply a busy host has not read yet when the
    // timer runs, keeps its worker. A server that answers neither in time
    // (its loop blocked) loses it.
    const grace = this.#cancelGrace;
    const finite = grace <= MAX_TIMER_MS;
    this.#pool.control(
      worker,
      "cancel",
      { target: this.#target },
      finite ? { ...where, timeout: Math.max(grace, CANCEL_ANSWER_MS) } : where,
    ).then(() => {
      if (this.#requestDone || !finite) return;
      this.#graceTimer = setTimeout(() => {
        if (this.#requestDone) return;
        this.#pool.control(worker, "ping", {}, {
          ...where,
          timeout: CANCEL_ANSWER_MS,
        }).then(kill, killIfUnanswered);
      }, grace);
    }, finite ? killIfUnanswered : () => {});
  }

  #settle(error: unknown, value?: unknown): void {
    if (this.#state !== "running") return;
    if (error === undefined) {
      this.#state = "succeeded";
      // Past the registry's default bound, the exact size does not matter.
      this.#resultBytes = jsonLength(value, RESULT_BYTES_CAP);
      this.#resolve(value);
      return;
    }
    this.#state =
      error instanceof CancelledError || error instanceof TimeoutError
        ? "cancelled"
        : "failed";
    this.#reject(error);
  }

  #finish(): void {
    this.#requestDone = true;
    if (this.#finished) return;
    this.#finished = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#graceTimer);
    for (const fn of this.#cleanup) fn();
    this.#buffer.end();
    this.#pool.atoms.finished(this.id);
    this.#stopped();
  }
}

/** Where counting a result's size stops (the registry's default `maxBytes`). */
const RESULT_BYTES_CAP = 64 * 1024 * 1024;

function isLoss(error: unknown): boolean {
  return error instanceof PyProxyError &&
    ["SESSION_LOST", "WORKER_CRASHED", "CONNECTION_LOST"].includes(error.code);
}

/**
 * Starts evaluating `code` on a worker of `pool` (what `pool.eval` does):
 * registers the atom in `pool.atoms` and returns it at once.
 *
 * This runs arbitrary Python code with the workers' privileges.
 *
 * @example
 * ```ts ignore
 * const atom = startAtom(pool, "def add(a, b):\n    return a + b", { args: [2, 3] });
 * console.log(await atom.result); // 5
 * ```
 */
export function startAtom(
  pool: EvalPool,
  code: string,
  options: EvalOptions = {},
): Atom {
  if (typeof code !== "string") {
    throw new TypeError("Cannot eval: code must be a string");
  }
  const invalid = callOptionsError("Cannot eval", options);
  if (invalid !== undefined) throw invalid;
  const atom = new Atom(pool, options);
  pool.atoms.add(atom);
  void atom.run(code, options);
  return atom;
}

/**
 * The atom with this id, while the pool still keeps it (running atoms always;
 * finished ones within the registry's bounds).
 *
 * @example
 * ```ts ignore
 * const atom = getAtom(pool, id);
 * if (atom) for await (const chunk of atom.replay(lastSeq + 1)) send(chunk);
 * ```
 */
export function getAtom(
  pool: Pick<EvalPool, "atoms">,
  id: string,
): Atom | undefined {
  return pool.atoms.get(id);
}
