/**
 * Pool life-cycle as data: the {@linkcode PoolEvent} tagged union and the
 * small {@linkcode PoolEventHub} that fans events out to listeners and async
 * iterators.
 *
 * @module
 */
import type { InFlight, ModelSpec } from "./session.ts";
import type { WorkerState } from "./worker.ts";

/**
 * Everything that happens to a pool's workers and models. `worker` is the
 * slot id (`"w1"`, `"w2"`, ...).
 *
 * @example Log every state change
 * ```ts ignore
 * for await (const ev of pool.events()) {
 *   if (ev.type === "worker-state") console.log(`${ev.worker}: ${ev.from} -> ${ev.to}`);
 * }
 * ```
 */
export type PoolEvent =
  | { type: "worker-state"; worker: string; from: WorkerState; to: WorkerState }
  /**
   * A worker's process ended (or its start failed). `inFlight`: the calls
   * it was running then, by model (evals as `eval`), as in its `lastExit`
   * and its lost calls' `WorkerCrashedError`; absent when none were.
   */
  | {
    type: "worker-exit";
    worker: string;
    pid: number | null;
    code: number | null;
    signal: string | null;
    reason: string;
    inFlight?: InFlight;
    /**
     * The model whose call held the worker's event loop when the pool
     * killed it for answering nothing (a hung inline call): its calls run
     * threaded (`model-threaded`). Absent on a death by another cause.
     */
    heldLoop?: string;
  }
  | {
    type: "restarting";
    worker: string;
    /** Restarts since the slot was last ready (1 for the first). */
    attempt: number;
    delayMs: number;
  }
  | { type: "failed"; worker: string; reason: string; stderrTail: string }
  /**
   * A resize that changes the size began (its turn came): the slots go from
   * `from` to `to` (`worker-added` or `worker-removed` events follow). `by`
   * is the plugin that asked (`PluginContext.resize`, e.g. `"autoscale"`)
   * with its `reason`; both are `null` for `pool.resize` (a library call,
   * `PUT /v1/workers`).
   */
  | {
    type: "resize";
    from: number;
    to: number;
    by: string | null;
    reason: string | null;
  }
  /** `pool.resize` added this slot (it starts next; `worker-state` follows). */
  | { type: "worker-added"; worker: string }
  /**
   * `pool.resize` took this slot out of rotation: it drains, stops
   * (`worker-state`, `worker-exit` follow) and then leaves `status()`.
   */
  | { type: "worker-removed"; worker: string }
  /**
   * A model command succeeded. An `add` or `update` carries the `spec` it
   * was given and the `description` the workers answered (protocol §6:
   * inputs, outputs, doc, `timeoutMs`, `closeTimeoutMs`...), so a listener
   * (a gateway over the pool) can follow the pool's models without asking.
   * Emitted before the command's promise resolves.
   */
  | {
    type: "model";
    /** `default`: `setDefaultVersion` made `version` the default. */
    action: "add" | "remove" | "update" | "init" | "default";
    name: string;
    /**
     * The version it was about, for a model with versions
     * (`ModelSpec.version`, docs/models.md "Versions"); absent otherwise.
     */
    version?: string;
    /** The spec of an `add` or `update`. */
    spec?: ModelSpec;
    /** The description an `add` or `update` answered (absent otherwise). */
    description?: unknown;
  }
  /**
   * A model command given up on for this worker (a timeout, an abort) was
   * answered late, so the worker may have applied it while the others did
   * not: the pool loaded the model as the registry holds it again (removed
   * it when the registry has none). `ok: false`: that failed too, and the
   * worker was killed (its restart replays the registry); `reason` says why.
   */
  | {
    type: "model-resync";
    worker: string;
    name: string;
    ok: boolean;
    reason?: string;
  }
  /**
   * A placed model (`ModelSpec.workers`) is moved off slot `from`, which
   * failed for good, to slot `to` (`null`: no ready worker lacks it, or,
   * `counted`, the one there was would have been among the pool's last
   * workers, kept for the other models; the first to come back takes it). `counted`: the model
   * was implicated in the slot's last crash (its calls in flight, its load
   * under way), so the move counts towards `placement.maxRelocations`.
   */
  | {
    type: "model-relocated";
    name: string;
    from: string;
    to: string | null;
    counted: boolean;
  }
  /**
   * A model was taken out of service: placed, it crashed one slot too many
   * (`placement.maxRelocations` within `relocationWindow`), or it killed
   * its worker twice soon after its load (`loadCrashWindow`). It is on no
   * slot, its calls fail with `ModelUnavailableError` and its
   * `pool.modelStatus()` entry has `failedReason` (`reason` here) until it
   * is updated. `name`: as the workers know it (a version's is
   * `name@version`); `worker`: the slot whose failure (or death) decided it.
   */
  | { type: "model-failed"; name: string; worker: string; reason: string }
  /**
   * A call of model `name` held a worker's event loop (a model that proved
   * fast runs inline, on that loop, and one of its calls hung there): its
   * timeout passed while it held it, or the hang probe or heartbeat is
   * killing the worker for it. The pool runs the
   * model's calls on call threads from then on, on every worker, so the
   * next such call times out on its thread instead of costing a worker;
   * `pool.modelStatus()` shows it as `threaded` (`reason` here) until the
   * model is updated. `worker`: the slot whose loop it held. Emitted before
   * that worker's exit (at the timeout, when a call of the model timed out
   * there).
   */
  | { type: "model-threaded"; name: string; worker: string; reason: string }
  | { type: "plugin-error"; plugin: string; hook: string; message: string };

/** Options of {@linkcode PoolEventHub}. */
export interface PoolEventHubOptions {
  /** Events kept per iterator that is not reading; older ones are dropped. @default {1024} */
  bufferSize?: number;
  /**
   * Called when a listener throws (the other listeners still get the
   * event): the pool logs it. @default {ignore the error}
   */
  onListenerError?: (error: unknown, ev: PoolEvent) => void;
  /**
   * Called when an iterator that is not reading starts losing its oldest
   * events (once until it has caught up with every event it kept): the pool
   * logs it. @default {ignore it}
   */
  onOverflow?: (bufferSize: number) => void;
}

/**
 * Fans events out to listeners (`on`) and async iterators (`iterate`). An
 * iterator that does not keep up loses its oldest events rather than growing
 * without bound; iterators end when the hub is closed.
 *
 * @example
 * ```ts
 * import { PoolEventHub } from "./pool_events.ts";
 * const hub = new PoolEventHub();
 * const off = hub.on((ev) => console.log(ev.type));
 * hub.emit({ type: "model", action: "add", name: "doubler" }); // logs "model"
 * off();
 * hub.close();
 * ```
 */
export class PoolEventHub {
  #listeners = new Set<(ev: PoolEvent) => void>();
  #closers = new Set<() => void>();
  #bufferSize: number;
  #onListenerError: ((error: unknown, ev: PoolEvent) => void) | undefined;
  #onOverflow: ((bufferSize: number) => void) | undefined;
  #closed = false;

  /** Creates an open hub. */
  constructor(options: PoolEventHubOptions = {}) {
    this.#bufferSize = options.bufferSize ?? 1024;
    this.#onListenerError = options.onListenerError;
    this.#onOverflow = options.onOverflow;
  }

  /** Delivers an event to every listener (a throwing listener is ignored). */
  emit(ev: PoolEvent): void {
    if (this.#closed) return;
    for (const listener of [...this.#listeners]) {
      try {
        listener(ev);
      } catch (error) {
        // A listener's bug must not break the pool, nor go unseen.
        try {
          this.#onListenerError?.(error, ev);
        } catch {
          // the reporter's own failure: nothing left to tell
        }
      }
    }
  }

  /** Adds a listener; returns the function that removes it. */
  on(listener: (ev: PoolEvent) => void): () => void {
    if (this.#closed) return () => {};
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** An async iterator over the events emitted from now on; ends on `close()` or `signal`. */
  iterate(signal?: AbortSignal): AsyncIterableIterator<PoolEvent> {
    const buffer: PoolEvent[] = [];
    let wake: (() => void) | undefined;
    let done = this.#closed;
    // Losing events since the reader last emptied its buffer (told once).
    let lagging = false;
    const finish = (): void => {
      done = true;
      off();
      signal?.removeEventListener("abort", finish);
      wake?.();
    };
    const off = this.on((ev) => {
      if (buffer.length >= this.#bufferSize) {
        buffer.shift();
        if (!lagging) {
          lagging = true;
          try {
            this.#onOverflow?.(this.#bufferSize);
          } catch {
            // the reporter's failure must not break the pool
          }
        }
      }
      buffer.push(ev);
      wake?.();
    });
    this.#closers.add(finish);
    signal?.addEventListener("abort", finish, { once: true });
    if (signal?.aborted) finish();
    const iterator: AsyncIterableIterator<PoolEvent> = {
      next: async (): Promise<IteratorResult<PoolEvent>> => {
        while (buffer.length === 0 && !done) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
        }
        const ev = buffer.shift();
        if (buffer.length === 0) lagging = false;
        if (ev !== undefined) return { value: ev, done: false };
        this.#closers.delete(finish);
        return { value: undefined, done: true };
      },
      return: (): Promise<IteratorResult<PoolEvent>> => {
        finish();
        buffer.length = 0;
        this.#closers.delete(finish);
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  /** Ends every iterator and drops every listener. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const finish of [...this.#closers]) finish();
    this.#closers.clear();
    this.#listeners.clear();
  }
}
