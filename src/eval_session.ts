/**
 * Eval sessions: a namespace kept on one worker between atoms
 * (`pool.openSession()`).
 *
 * @module
 */
import {
  type Atom,
  type AtomSession,
  type EvalOptions,
  type EvalPool,
  startAtom,
} from "./atom.ts";
import { SessionLostError, ShuttingDownError } from "./errors.ts";

/**
 * Options of {@linkcode openEvalSession} / `pool.openSession`.
 *
 * @example
 * ```ts
 * import type { OpenSessionOptions } from "@pyproxy/pyproxy";
 * const options: OpenSessionOptions = { worker: "w2" };
 * console.log(options.worker);
 * ```
 */
export interface OpenSessionOptions {
  /** Open it on this worker slot; otherwise the pool routes the request. */
  worker?: string;
  /** Abort opening. */
  signal?: AbortSignal;
}

interface OpenReply {
  session: string;
  serverId?: string;
  pid?: number;
}

/**
 * A Python namespace kept on one worker: `x = 1` in one atom is visible to
 * the next. Atoms of a session run one after the other, in `eval` order.
 * When the worker dies (or its connection drops, or `pool.resize` removes
 * it) the namespace is gone: the session is lost for good, atoms in flight reject with `SessionLostError`
 * (the worker's error as `cause`), and so does every later `eval`. Sessions
 * are not re-opened.
 *
 * Like `pool.eval`, this runs arbitrary code with the workers' privileges.
 * The sessions of a worker share its process: one can read another's
 * variables and change the modules they use, so they do not isolate users
 * from one another (docs/security.md §1).
 * Close sessions you no longer need (`await using`): a worker holds at most
 * `--max-eval-sessions` (default 1024) per connection, and `openSession`
 * beyond that rejects with `OverloadedError`.
 *
 * @example
 * ```ts ignore
 * await using session = await pool.openSession();
 * await session.eval("x = 1").result;
 * console.log(await session.eval("x + 1").result); // 2
 * ```
 */
export class EvalSession implements AtomSession {
  /** Server-assigned session id. */
  readonly id: string;
  /** The worker slot holding the namespace. */
  readonly worker: string;
  /** The pid of the worker process that holds it. */
  readonly pid: number | undefined;
  #pool: EvalPool;
  #unusable: Error | undefined;
  #tail: Promise<unknown> = Promise.resolve();
  // Atoms not yet stopped, running or waiting their turn: close() cancels them.
  #atoms = new Set<Atom>();
  #off: () => void;

  /** Use {@linkcode openEvalSession} or `pool.openSession()`. */
  constructor(
    pool: EvalPool,
    id: string,
    worker: string,
    pid: number | undefined,
  ) {
    this.#pool = pool;
    this.id = id;
    this.worker = worker;
    this.pid = pid;
    this.#off = pool.on((ev) => {
      if (
        ev.type === "worker-exit" && ev.worker === worker &&
        (pid === undefined || ev.pid === pid)
      ) {
        this.markLost(new Error(`worker ${worker} exited: ${ev.reason}`));
      } else if (ev.type === "worker-removed" && ev.worker === worker) {
        // Its atoms in flight get the drain's grace; later evals fail now.
        this.markLost(
          new Error(`worker ${worker} was removed from the pool by a resize`),
        );
      }
    });
  }

  /** `true` once the worker died or the connection dropped. */
  get lost(): boolean {
    return this.#unusable instanceof SessionLostError;
  }

  /** The error every eval now gets (lost or closed), else `undefined`. */
  get unusable(): Error | undefined {
    return this.#unusable;
  }

  /** Marks the session lost (called when its worker or connection died). */
  markLost(cause: unknown): void {
    if (this.#unusable) return;
    this.#unusable = new SessionLostError(
      `Cannot eval: session ${this.id} on worker ${this.worker} is lost`,
      {
        cause,
      },
    );
    this.#off();
  }

  /** Evaluates `code` in this session's namespace, after the atoms before it. */
  eval(
    code: string,
    options: Omit<EvalOptions, "session" | "after"> = {},
  ): Atom {
    const atom = startAtom(this.#pool, code, {
      ...options,
      session: this,
      after: this.#tail,
    });
    // The next atom waits until this one's code really stopped (a cancelled
    // atom rejects before its code is interrupted).
    this.#tail = atom.stopped;
    if (!atom.done) {
      this.#atoms.add(atom);
      atom.stopped.then(() => this.#atoms.delete(atom));
    }
    return atom;
  }

  /**
   * Cancels the atoms still running or waiting in this session (they reject
   * with `CancelledError`), waits until their code stopped, then drops the
   * namespace on the server. Code that ignores the interrupt (blocked in C)
   * gets its atom's `cancelGrace` (default 2000 ms), after which its worker
   * is killed: close never waits longer than that (a `cancelGrace` beyond
   * a timer's range, ~24.8 days, waits for the code). Later evals reject.
   */
  async close(): Promise<void> {
    if (this.#unusable) return;
    this.#unusable = new ShuttingDownError(
      `Cannot eval: session ${this.id} is closed`,
    );
    this.#off();
    for (const atom of this.#atoms) atom.cancel("the session was closed");
    await this.#tail;
    await this.#pool.request("closeSession", { session: this.id }, {
      worker: this.worker,
    }).catch(() => {});
  }

  /** Same as {@linkcode EvalSession.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Opens a session (what `pool.openSession` does): the namespace lives on the
 * worker that answered, and every atom of the session is pinned to it.
 *
 * @example
 * ```ts ignore
 * const session = await openEvalSession(pool);
 * await session.eval("import math").result;
 * console.log(await session.eval("math.pi").result);
 * ```
 */
export async function openEvalSession(
  pool: EvalPool,
  options: OpenSessionOptions = {},
): Promise<EvalSession> {
  const requestOptions: { worker?: string; signal?: AbortSignal } = {};
  if (options.worker !== undefined) requestOptions.worker = options.worker;
  if (options.signal !== undefined) requestOptions.signal = options.signal;
  const reply = await pool.request<OpenReply>(
    "openSession",
    {},
    requestOptions,
  );
  const worker = reply.serverId ?? options.worker;
  if (typeof reply.session !== "string" || worker === undefined) {
    throw new SessionLostError(
      "Cannot open session: the server did not say which worker holds it",
    );
  }
  return new EvalSession(pool, reply.session, worker, reply.pid);
}
