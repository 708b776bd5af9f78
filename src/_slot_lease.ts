/**
 * {@linkcode SlotLease}: a sent call's hold on one of its worker's
 * `maxInFlightPerWorker` slots, which a stream gives back while it is parked.
 *
 * @module
 */
import type { Worker } from "./worker.ts";

/**
 * Counts one call sent to `worker` from its send until {@linkcode end}, as
 * holding a slot or, between {@linkcode park} and {@linkcode unpark}, as
 * parked. Every transition happens at most once per state, so the counts stay
 * exact whatever order the stream's acks and the call's end come in: `end`
 * releases what the call holds at that moment, and `park`/`unpark` after it
 * do nothing.
 *
 * @example
 * ```ts ignore
 * const lease = new SlotLease(worker, () => router.pump(false));
 * lease.park(); // the stream's reader is a window behind: the slot is free
 * lease.unpark(); // it caught up: the stream holds a slot again
 * lease.end(); // the call settled (or its cancel was answered)
 * ```
 */
export class SlotLease {
  #worker: Worker;
  #freed: () => void;
  #maxParked: number;
  #state: "held" | "parked" | "ended" = "held";

  /**
   * Counts the call in flight on `worker`; `freed` runs when a slot frees
   * up. At most `maxParked` streams of the worker are parked at once: the
   * next ones keep their slots.
   */
  constructor(worker: Worker, freed: () => void, maxParked: number) {
    this.#worker = worker;
    this.#freed = freed;
    this.#maxParked = maxParked;
    worker.acquire();
  }

  /** Gives the slot back while the stream waits for its reader (room permitting). */
  park(): void {
    if (this.#state !== "held") return;
    if (this.#worker.parked >= this.#maxParked) return;
    this.#state = "parked";
    this.#worker.park();
    this.#freed();
  }

  /**
   * Takes a slot again, even when that puts the worker above
   * `maxInFlightPerWorker` for a while: the reader is ready for the items,
   * and making it wait for a slot could wait for ever (the slots may be
   * held by calls that wait for this very reader).
   */
  unpark(): void {
    if (this.#state !== "parked") return;
    this.#state = "held";
    this.#worker.unpark();
  }

  /**
   * The call is over on the server: releases what it holds, once (with
   * `abandoned`, a call counted by the worker's `abandon(what)`).
   */
  end(abandoned = false, what?: string): void {
    const state = this.#state;
    if (state === "ended") return;
    this.#state = "ended";
    this.#worker.release(state === "parked", abandoned, what);
    this.#freed();
  }
}
