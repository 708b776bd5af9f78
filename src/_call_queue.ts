/**
 * The pool's queue of calls waiting for a worker (one for the calls that may
 * go anywhere, one per placed model), in arrival order.
 *
 * An array whose sent calls leave a hole behind a moving head: taking the
 * oldest call, or one at any place (a timeout, a cancel: each call knows its
 * place), is O(1). A plain array's `splice` (or `shift`) copied every call
 * behind it: with 100k calls queued (`maxQueue` raised for a batch job),
 * dispatch spent 70% of its time there (13k -> 500 calls/s from 50k to 1M
 * queued; newcomer22). The holes are squeezed out once they outnumber the
 * calls (at least 1024 of them), when no scan is running.
 *
 * @module
 */
import type { PoolCall } from "./pool_router.ts";

/** Room left before the head when the array is rebuilt (for `unshift`). */
const SLACK = 16;
/** Holes tolerated before a squeeze, whatever the size. */
const MIN_HOLES = 1024;

/**
 * A FIFO of calls with O(1) removal anywhere, scanned by index
 * (`start`/`end`/`at`), which `epoch` tells to restart after a rebuild.
 *
 * @example
 * ```ts ignore
 * const q = new CallQueue();
 * q.push(call);
 * for (let i = q.start; i < q.end; i++) {
 *   const c = q.at(i);
 *   if (c !== undefined && canSend(c)) q.removeAt(i);
 * }
 * q.remove(timedOut); // false when it was not queued
 * ```
 */
export class CallQueue {
  #calls: Array<PoolCall | undefined> = [];
  #head = 0;
  #size = 0;
  #epoch = 0;
  #scans = 0;
  /** One past the last call of the run queued first (`unshift`) at the head. */
  #frontEnd = 0;

  /** Calls waiting. */
  get size(): number {
    return this.#size;
  }

  /**
   * Changes when the array is rebuilt or calls in it move (a retry queued
   * behind earlier ones): a scan by index starts again.
   */
  get epoch(): number {
    return this.#epoch;
  }

  /** The first index of a scan. */
  get start(): number {
    return this.#head;
  }

  /** One past the last index of a scan (read it each turn: calls may come). */
  get end(): number {
    return this.#calls.length;
  }

  /** The call at index `i`, `undefined` for a hole. */
  at(i: number): PoolCall | undefined {
    return this.#calls[i];
  }

  /** The oldest call waiting. */
  first(): PoolCall | undefined {
    this.#skipHoles();
    return this.#calls[this.#head];
  }

  /** Queues `call` last. */
  push(call: PoolCall): void {
    this.#place(call, this.#calls.length);
    this.#calls.push(call);
    this.#size++;
  }

  /**
   * Queues `call` first (a retry), behind the calls queued first before it
   * that still wait: retries go in the order they came. Each before went
   * ahead of the others: a worker's crash retried its calls 3, 2, 1, 0.
   */
  unshift(call: PoolCall): void {
    if (this.#head === 0) this.#rebuild(this.#live(), SLACK);
    call.queuedFirst = true;
    const calls = this.#calls;
    let i = --this.#head;
    if (this.#frontEnd > i + 1) {
      // The run of calls queued first moves up one (only they: a few).
      for (; i + 1 < this.#frontEnd; i++) {
        const next = calls[i + 1];
        calls[i] = next;
        if (next !== undefined) this.#place(next, i);
      }
      this.#epoch++;
    } else this.#frontEnd = i + 1;
    this.#place(call, i);
    calls[i] = call;
    this.#size++;
  }

  /** Takes the call at index `i` out (from a scan). */
  removeAt(i: number): void {
    if (this.#calls[i] === undefined) return;
    this.#calls[i] = undefined;
    this.#size--;
    if (i === this.#head) this.#skipHoles();
  }

  /** Takes `call` out; `false` when it is not queued here. */
  remove(call: PoolCall): boolean {
    const i = this.#slotOf(call);
    if (i === undefined) return false;
    this.removeAt(i);
    this.#squeeze();
    return true;
  }

  /** Every call waiting, in order. */
  values(): PoolCall[] {
    return this.#live();
  }

  /** Takes every call out, in order. */
  takeAll(): PoolCall[] {
    const calls = this.#live();
    this.#rebuild([], 0);
    return calls;
  }

  /** Replaces the queue's calls with `calls`, in that order. */
  replaceAll(calls: PoolCall[]): void {
    this.#rebuild(calls, 0);
  }

  /**
   * Runs a scan by index: no squeeze while it runs (its indexes stay
   * valid, but for an `unshift` at the very front: see `epoch`).
   */
  scan(body: () => void): void {
    this.#scans++;
    try {
      body();
    } finally {
      this.#scans--;
      this.#squeeze();
    }
  }

  #place(call: PoolCall, i: number): void {
    call.queueSlot = i;
  }

  #slotOf(call: PoolCall): number | undefined {
    const i = call.queueSlot;
    return i !== undefined && this.#calls[i] === call ? i : undefined;
  }

  #skipHoles(): void {
    const calls = this.#calls;
    let head = this.#head;
    while (head < calls.length && calls[head] === undefined) head++;
    this.#head = head;
    if (this.#size === 0 && this.#scans === 0 && calls.length > 0) {
      this.#rebuild([], 0);
    }
  }

  #squeeze(): void {
    if (this.#scans > 0) return;
    const holes = this.#calls.length - this.#size;
    if (holes > MIN_HOLES && holes > this.#size) {
      this.#rebuild(this.#live(), 0);
    }
  }

  #live(): PoolCall[] {
    const out: PoolCall[] = [];
    const calls = this.#calls;
    for (let i = this.#head; i < calls.length; i++) {
      const call = calls[i];
      if (call !== undefined) out.push(call);
    }
    return out;
  }

  #rebuild(calls: PoolCall[], slack: number): void {
    const next: Array<PoolCall | undefined> = new Array(slack).fill(undefined);
    for (const call of calls) {
      this.#place(call, next.length);
      next.push(call);
    }
    this.#calls = next;
    this.#head = slack;
    this.#size = calls.length;
    this.#epoch++;
    let end = slack;
    while (end < next.length && next[end]!.queuedFirst === true) end++;
    this.#frontEnd = end;
  }
}
