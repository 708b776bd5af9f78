/**
 * Where a pool call goes and when: round-robin or rendezvous-hashed (`key`)
 * or pinned (`worker`) routing over ready workers, the in-flight bound per
 * worker, and the one bounded queue in front of them. A call of a placed
 * model (`ModelSpec.workers`) goes only to its model's slots, and waits in
 * its model's part of the queue: it never holds up calls that may go
 * elsewhere.
 *
 * @module
 */
import { callTimedOut } from "./_call_timeout.ts";
import { type QueueWaitOutcome, QueueWaits } from "./queue_waits.ts";
import {
  CancelledError,
  type ModelUnavailableError,
  NoWorkerError,
  OverloadedError,
  TimeoutError,
} from "./errors.ts";
import type { Worker } from "./worker.ts";
import type { ResponseMeta } from "./session_types.ts";
import type { SlotLease } from "./_slot_lease.ts";
import {
  type ModelPlacement,
  outOfService,
  placedModel,
} from "./_model_placement.ts";
import { hash32, mix32 } from "./_hash32.ts";
import { setTimeoutOrNever } from "./_timer.ts";
import { CallQueue } from "./_call_queue.ts";

/** A call as the router sees it (the pool adds nothing else). */
export interface PoolCall {
  /** Command sent to the server. */
  cmd: string;
  /** Its arguments. */
  args: Record<string, unknown> | undefined;
  /** Routing and delivery options of the call. */
  options: {
    key?: string;
    worker?: string;
    signal?: AbortSignal;
    onEvent?: (event: Record<string, unknown>) => void;
    onSend?: (worker: string) => void;
    idempotent?: boolean;
    /** The model's success status and headers (`RequestOptions.onResponseMeta`). */
    onResponseMeta?: (meta: ResponseMeta) => void;
    /**
     * The version a model call asked for: it never follows its model's
     * default to another one (absent: it does when the version it was
     * resolved to is removed before it is sent).
     */
    version?: string;
  };
  /** Absolute deadline (ms since the epoch), `Infinity` for none. */
  deadline: number;
  /** The whole timeout in ms the deadline came from (its error says it). */
  timeoutMs?: number | undefined;
  /** Retries so far (idempotent calls). */
  retries: number;
  /**
   * A stream's hook: gets the call's slot lease each time it is sent, to
   * park the slot while its reader is a window behind (`executeStream`).
   */
  onSlot?: ((slot: SlotLease) => void) | undefined;
  /** Settles the caller's promise. */
  resolve: (value: unknown) => void;
  /** Settles the caller's promise. */
  reject: (error: unknown) => void;
  /** Queue timeout timer (router-owned). */
  timer?: ReturnType<typeof setTimeout> | undefined;
  /** Abort listener while queued (router-owned). */
  onAbort?: (() => void) | undefined;
  /** `performance.now()` when it was queued (router-owned; set only then). */
  queuedAt?: number;
  /** Its index in its queue while queued (the queue's own: `CallQueue`). */
  queueSlot?: number;
  /** Queued first (a retry) at least once (the queue's own: `CallQueue`). */
  queuedFirst?: boolean;
  /** The slots of the placed model it calls (none: any worker). */
  placement?: ModelPlacement | undefined;
  /**
   * The command its errors name, when not `cmd`: a model's batch
   * (`executeBatch`) carries `pool.execute` calls, which name
   * `executeModel` (see {@linkcode callName}).
   */
  what?: string;
  /**
   * A part of a batch taken apart and sent again: the batch it came from
   * was counted in the queue waits, so it is not counted again.
   */
  again?: boolean;
}

/**
 * The command a call's errors name: `what` the caller called, else `cmd`.
 *
 * @example
 * ```ts ignore
 * callName({ cmd: "executeBatch", what: "executeModel", ... }); // "executeModel"
 * ```
 */
export function callName(call: PoolCall): string {
  return call.what ?? call.cmd;
}

/** Options of {@linkcode PoolRouter}. */
export interface PoolRouterOptions {
  /** The pool's slots, in slot order (the array is read live). */
  workers: readonly Worker[];
  /** Calls in flight per worker before calls queue. */
  maxInFlightPerWorker: number;
  /** Calls that may wait before `OverloadedError`. */
  maxQueue: number;
  /** Sends a call to a worker that has room. */
  send: (call: PoolCall, worker: Worker) => void;
  /** Whether a worker that is not ready may still come back (so calls should wait). */
  coming: (worker: Worker) => boolean;
  /** A call refused because the queue is full (the pool logs it, bounded). */
  onOverloaded?: (err: OverloadedError) => void;
}

/**
 * Routes calls to workers. Never holds more than `maxQueue` new calls;
 * retried calls jump the queue (they were admitted once already).
 *
 * @example
 * ```ts ignore
 * const router = new PoolRouter({ workers, maxInFlightPerWorker: 64, maxQueue: 1024, send, coming });
 * router.route(call, false);
 * router.pump(true); // after a worker became ready
 * ```
 */
export class PoolRouter {
  #opts: PoolRouterOptions;
  #queue: CallQueue = new CallQueue();
  /**
   * The calls of placed models that wait, per model: each waits for a slot
   * of its own model, so a scan for a freed slot looks at the head of each
   * model's queue, not past every call that cannot use it.
   */
  #placed = new Map<ModelPlacement, CallQueue>();
  /** Calls in `#placed`, together. */
  #placedQueued = 0;
  #seeds = new Map<string, number>();
  #rr = 0;
  /** How long the calls routed to a worker waited in the queue. */
  readonly waits: QueueWaits = new QueueWaits();

  /** Creates an empty router. */
  constructor(options: PoolRouterOptions) {
    this.#opts = options;
  }

  /** Calls waiting. */
  get queued(): number {
    return this.#queue.size + this.#placedQueued;
  }

  /**
   * Sends the call, queues it, or rejects it (no worker / overloaded).
   * `counted`: its wait goes in the queue waits (not for a part of a batch
   * taken apart: the batch was).
   */
  route(call: PoolCall, retry: boolean, counted = true): void {
    const pick = this.#pick(call);
    if (pick === null) {
      const queued = this.queued;
      if (!retry && queued >= this.#opts.maxQueue) {
        // A batching model's batch is one call of the queue and of a
        // worker's slots: "1024 calls queued" was 1 024 batches, ~262 000
        // of its callers' calls for a batch_size of 256.
        const batch = call.cmd === "executeBatch"
          ? ` (a batch of ${
            (call.args?.msgs as unknown[] | undefined)?.length ?? 0
          } calls: a batch counts as one call here)`
          : "";
        const err = new OverloadedError(
          `Cannot accept call ${callName(call)}${batch}: ${queued} ${
            queued === 1 ? "call" : "calls"
          } queued (maxQueue ${this.#opts.maxQueue}) and the workers it may go to have ${this.#opts.maxInFlightPerWorker} in flight each (maxInFlightPerWorker): retry later, or raise maxQueue, maxInFlightPerWorker or workers`,
          {
            details: {
              queue: queued,
              maxQueue: this.#opts.maxQueue,
              maxInFlightPerWorker: this.#opts.maxInFlightPerWorker,
              // The model (a version's `name@label`) for the gateway's
              // 429, which names it and serve's settings.
              ...modelDetail(call),
            },
          },
        );
        this.#opts.onOverloaded?.(err);
        return call.reject(err);
      }
      return this.#enqueue(call, retry);
    }
    if (pick instanceof Error) return call.reject(pick);
    if (counted) this.waits.none();
    this.#opts.send(call, pick);
  }

  /**
   * Sends queued calls that can go now, in queue order. `full` also rejects
   * calls that can no longer be routed (after a worker failed or stopped);
   * otherwise it stops as soon as no worker has room.
   */
  pump(full: boolean): void {
    if (this.#placedQueued === 0) return this.#pumpQueue(this.#queue, full);
    // The queue whose oldest call waited longest goes first: calls that may
    // go anywhere do not starve a placed model of its slots, nor the reverse.
    const queues: Array<[CallQueue, ModelPlacement | undefined, number]> = [];
    const head = (q: CallQueue) => q.first()?.queuedAt ?? 0;
    if (this.#queue.size > 0) {
      queues.push([this.#queue, undefined, head(this.#queue)]);
    }
    for (const [p, q] of this.#placed) {
      if (q.size > 0) queues.push([q, p, head(q)]);
    }
    queues.sort((a, b) => a[2] - b[2]);
    for (const [q, p] of queues) this.#pumpQueue(q, full, p);
  }

  /** `pump` over one queue: the unplaced calls', or one placed model's. */
  #pumpQueue(
    queue: CallQueue,
    full: boolean,
    placement?: ModelPlacement,
  ): void {
    queue.scan(() => this.#scanQueue(queue, full, placement));
  }

  #scanQueue(
    queue: CallQueue,
    full: boolean,
    placement: ModelPlacement | undefined,
  ): void {
    let epoch = queue.epoch;
    for (let i = queue.start; i < queue.end; i++) {
      if (!full && !this.#hasRoom(placement)) return;
      // Rebuilt meanwhile (a retry queued first by a send): again from the
      // head, past the calls that cannot go yet as before.
      if (queue.epoch !== epoch) {
        epoch = queue.epoch;
        i = queue.start - 1;
        continue;
      }
      const call = queue.at(i);
      if (call === undefined) continue;
      const pick = this.#pick(call);
      if (pick === null) continue;
      queue.removeAt(i);
      if (placement !== undefined) this.#leftPlaced(placement, queue);
      this.#unqueue(call);
      if (pick instanceof Error) {
        this.#abandoned(call, "failed");
        call.reject(pick);
      } else {
        if (call.again !== true) {
          this.waits.observe(
            (performance.now() - (call.queuedAt ?? 0)) / 1000,
            modelOf(call),
          );
        }
        this.#opts.send(call, pick);
      }
    }
  }

  /** Rejects every queued call with `error(call)`. */
  drain(error: (call: PoolCall) => Error): void {
    const calls = this.#queue.takeAll();
    for (const q of this.#placed.values()) calls.push(...q.takeAll());
    this.#placed.clear();
    this.#placedQueued = 0;
    for (const call of calls) {
      this.#unqueue(call);
      this.#abandoned(call, "failed");
      call.reject(error(call));
    }
  }

  /**
   * A model is placed no more (removed, or updated to every worker): its
   * waiting calls join the unplaced ones, in the order they came.
   */
  unplace(placement: ModelPlacement): void {
    const q = this.#placed.get(placement);
    this.#placed.delete(placement);
    if (q === undefined || q.size === 0) return;
    const calls = q.takeAll();
    this.#placedQueued -= calls.length;
    for (const call of calls) call.placement = undefined;
    const all = this.#queue.takeAll().concat(calls);
    all.sort((a, b) => (a.queuedAt ?? 0) - (b.queuedAt ?? 0));
    this.#queue.replaceAll(all);
    this.pump(true);
  }

  /** Queued calls per worker id, for the calls bound to one (pinned or keyed). */
  queuedPerWorker(): Map<string, number> {
    const out = new Map<string, number>();
    const count = (call: PoolCall) => {
      const w = this.ownerOf(call);
      if (w !== undefined) out.set(w.id, (out.get(w.id) ?? 0) + 1);
    };
    this.#queue.values().forEach(count);
    for (const q of this.#placed.values()) q.values().forEach(count);
    return out;
  }

  /**
   * The worker a pinned or keyed call belongs to. Keys use rendezvous
   * hashing over the ready workers: a key stays on its worker while that is
   * up, and moves to one deterministic other worker while it is not.
   */
  ownerOf(call: PoolCall): Worker | undefined {
    const { worker, key } = call.options;
    const among = call.placement?.workers ?? this.#opts.workers;
    if (worker !== undefined) return among.find((w) => w.id === worker);
    if (key === undefined) return undefined;
    const h = hash32(key, 0);
    let best: Worker | undefined;
    let bestScore = -1;
    for (const w of among) {
      if (!routable(w)) continue;
      const score = mix32(h ^ this.#seed(w.id));
      if (score > bestScore) [best, bestScore] = [w, score];
    }
    return best;
  }

  /**
   * A worker with room, an error that ends the call, or `null` to wait.
   * For a call of a placed model, the same rules over the model's slots
   * only, with its own round-robin position; a pinned call naming a slot
   * without the model ends with `NoWorkerError`.
   */
  #pick(call: PoolCall): Worker | Error | null {
    const max = this.#opts.maxInFlightPerWorker;
    const p = call.placement;
    const pinned = call.options.worker;
    if (pinned !== undefined) {
      const w = this.ownerOf(call);
      if (w === undefined) return this.#notThere(call, pinned, p);
      if (!routable(w)) {
        return new NoWorkerError(
          `Cannot route call ${callName(call)}: worker ${pinned} is ${
            w.state === "ready" ? "disconnected" : w.state
          }`,
        );
      }
      return w.inFlight < max ? w : null;
    }
    if (call.options.key !== undefined) {
      const owner = this.ownerOf(call);
      if (owner === undefined) return this.#noneReady(call, p);
      return owner.inFlight < max ? owner : null;
    }
    const workers = p?.workers ?? this.#opts.workers;
    const rr = p?.rr ?? this.#rr;
    const n = workers.length;
    let anyReady = false;
    for (let i = 0; i < n; i++) {
      const idx = (rr + i) % n;
      const w = workers[idx]!;
      if (!routable(w)) continue;
      anyReady = true;
      if (w.inFlight < max) {
        if (p === undefined) this.#rr = (idx + 1) % n;
        else p.rr = (idx + 1) % n;
        return w;
      }
    }
    return anyReady ? null : this.#noneReady(call, p);
  }

  /** The error of a call pinned to a worker it cannot go to: none such, or (placed) one without its model. */
  #notThere(
    call: PoolCall,
    pinned: string,
    p: ModelPlacement | undefined,
  ): NoWorkerError | ModelUnavailableError {
    if (p?.failed !== undefined) return unavailable(call, p);
    if (p === undefined) {
      return new NoWorkerError(
        `Cannot route call ${callName(call)}: no worker '${pinned}'`,
      );
    }
    const ids = p.workers.map((s) => s.id);
    const { who, details } = placedModel(p);
    return new NoWorkerError(
      this.#opts.workers.some((s) => s.id === pinned)
        ? `Cannot route call ${
          callName(call)
        }: worker ${pinned} does not hold model ${who} (it is placed on ${
          ids.join(", ") || "no worker"
        }: workers ${p.count})`
        : `Cannot route call ${callName(call)}: no worker '${pinned}'`,
      { details: { ...details, worker: pinned, slots: ids } },
    );
  }

  #noneReady(
    call: PoolCall,
    p?: ModelPlacement,
  ): NoWorkerError | ModelUnavailableError | null {
    // Out of service: on no slot, and none to come until an update.
    if (p?.failed !== undefined) return unavailable(call, p);
    const workers = p?.workers ?? this.#opts.workers;
    // A model moving off a failed slot gets a slot soon.
    if (p?.moving) return null;
    if (
      workers.some((w) =>
        w.state === "starting" || w.state === "restarting" ||
        w.state === "ready" || this.#opts.coming(w)
      )
    ) {
      return null;
    }
    const placed = p === undefined ? undefined : placedModel(p);
    return new NoWorkerError(
      placed === undefined
        ? `Cannot route call ${callName(call)}: no worker is ready`
        : `Cannot route call ${
          callName(call)
        }: no worker of model ${placed.who} is ready (it is placed on ${
          workers.map((w) => `${w.id} ${w.state}`).join(", ") || "no worker"
        })`,
      {
        details: {
          ...placed?.details,
          workers: workers.map((w) => ({
            id: w.id,
            state: w.state,
            failedReason: w.failedReason,
          })),
        },
      },
    );
  }

  #hasRoom(placement?: ModelPlacement): boolean {
    const max = this.#opts.maxInFlightPerWorker;
    return (placement?.workers ?? this.#opts.workers).some((w) =>
      routable(w) && w.inFlight < max
    );
  }

  /**
   * A call left a placed model's queue: an emptied queue goes, so `pump`
   * scans the models with calls waiting, not every model that ever had one.
   */
  #leftPlaced(placement: ModelPlacement, queue: CallQueue): void {
    this.#placedQueued--;
    if (queue.size === 0 && this.#placed.get(placement) === queue) {
      this.#placed.delete(placement);
    }
  }

  /** Placed models with calls waiting (each its own queue). */
  get placedQueues(): number {
    return this.#placed.size;
  }

  #enqueue(call: PoolCall, front: boolean): void {
    call.queuedAt = performance.now();
    let queue = this.#queue;
    if (call.placement !== undefined) {
      queue = this.#placed.get(call.placement) ?? new CallQueue();
      if (queue.size === 0) this.#placed.set(call.placement, queue);
      this.#placedQueued++;
    }
    if (front) queue.unshift(call);
    else queue.push(call);
    // A delay past a timer's range (~24.8 days) would fire at once: such a
    // call waits in the queue without a timer, like one with no timeout.
    if (call.timer === undefined && call.deadline !== Infinity) {
      call.timer = setTimeoutOrNever(() => {
        this.#drop(
          call,
          "timeout",
          callTimedOut(
            call,
            new TimeoutError(
              `Cannot complete call ${
                callName(call)
              }: timed out in the pool queue`,
            ),
            "queue",
          ),
        );
      }, Math.max(0, call.deadline - Date.now()));
    }
    const signal = call.options.signal;
    if (signal !== undefined && call.onAbort === undefined) {
      call.onAbort = () =>
        this.#drop(
          call,
          "cancelled",
          new CancelledError(`Cannot send call ${callName(call)}: aborted`, {
            cause: signal.reason,
          }),
        );
      signal.addEventListener("abort", call.onAbort, { once: true });
    }
  }

  #drop(call: PoolCall, outcome: QueueWaitOutcome, error: Error): void {
    const queue = call.placement === undefined
      ? this.#queue
      : this.#placed.get(call.placement);
    if (queue === undefined || !queue.remove(call)) return;
    if (call.placement !== undefined) this.#leftPlaced(call.placement, queue);
    this.#unqueue(call);
    this.#abandoned(call, outcome);
    call.reject(error);
  }

  /** Counts a queued call that leaves the queue unsent, with its wait. */
  #abandoned(call: PoolCall, outcome: QueueWaitOutcome): void {
    if (call.again === true) return;
    this.waits.abandon(
      outcome,
      (performance.now() - (call.queuedAt ?? 0)) / 1000,
      modelOf(call),
    );
  }

  #unqueue(call: PoolCall): void {
    if (call.timer !== undefined) clearTimeout(call.timer);
    if (call.onAbort !== undefined) {
      call.options.signal?.removeEventListener("abort", call.onAbort);
    }
    call.timer = undefined;
    call.onAbort = undefined;
  }

  /** Worker ids whose rendezvous seed is kept (at most twice the slots). */
  get seeds(): number {
    return this.#seeds.size;
  }

  #seed(id: string): number {
    let seed = this.#seeds.get(id);
    if (seed === undefined) {
      // Ids are never reused (a resize makes new ones, w3, w4, ...): forget
      // those of removed workers, or a pool resized for months (autoscale)
      // keeps one entry per worker it ever had.
      if (this.#seeds.size >= 2 * this.#opts.workers.length) {
        const live = new Set(this.#opts.workers.map((w) => w.id));
        for (const old of this.#seeds.keys()) {
          if (!live.has(old)) this.#seeds.delete(old);
        }
      }
      this.#seeds.set(id, seed = hash32(id, 0x9747b28c));
    }
    return seed;
  }
}

/** The error of a call of a placed model taken out of service. */
function unavailable(
  call: PoolCall,
  p: ModelPlacement,
): ModelUnavailableError {
  return outOfService(p, callName(call));
}

// A ready worker whose connection just ended is as good as gone (the pool
// kills it), but its state changes only once its exit is seen: calls sent to
// it meanwhile would fail without ever reaching a server.
function routable(w: Worker): boolean {
  return w.state === "ready" && w.session?.isClosed === false;
}

/**
 * The model a queued call calls (a version's key, `name@label`), for its
 * queue wait by model; `undefined` for other commands (evals, model loads).
 * Read only for calls that queued: a call sent at once costs nothing more.
 */
function modelOf(call: PoolCall): string | undefined {
  if (
    call.cmd !== "executeModel" && call.cmd !== "executeStream" &&
    call.cmd !== "executeBatch"
  ) return undefined;
  const name = call.args?.name;
  return typeof name === "string" ? name : undefined;
}

/** `{ model }` of a model's call (see {@linkcode modelOf}), else `{}`. */
function modelDetail(call: PoolCall): { model?: string } {
  const model = modelOf(call);
  return model === undefined ? {} : { model };
}
