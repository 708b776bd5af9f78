/**
 * Internals of `Session`: request timeouts on one shared timer. A timer per
 * request (set and cleared for nearly every call) costs several microseconds;
 * here a request costs a `Set` insert and delete. Deadlines are grouped in
 * slots of `RESOLUTION` ms and fire at the end of their slot: never early, at
 * most `RESOLUTION` ms late.
 *
 * @module
 */

const RESOLUTION = 4;
/** The longest delay timers support; a later deadline re-arms on wake-up. */
const MAX_DELAY = 2 ** 31 - 1;
/** Emptied buckets kept for reuse (a sequential caller empties one per call). */
const SPARE_BUCKETS = 8;

/** What {@linkcode Deadlines} tracks: anything with an id and a slot field. */
export interface Expiring {
  readonly id: number;
  /** The slot holding it, or -1. Owned by {@linkcode Deadlines}. */
  slot: number;
}

/** Request deadlines on one timer, armed for the earliest non-empty slot. */
export class Deadlines<T extends Expiring> {
  #buckets = new Map<number, Set<T>>();
  #spare: Set<T>[] = [];
  /** Slots of `#buckets`, ascending (new slots almost always append). */
  #slots: number[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerSlot = Infinity;
  #onExpire: (item: T) => void;
  #tick = (): void => this.#fire();

  constructor(onExpire: (item: T) => void) {
    this.#onExpire = onExpire;
  }

  /** Expires `item` once `ms` milliseconds passed (unless removed before). */
  add(item: T, ms: number): void {
    // Like setTimeout: a negative or NaN delay means now.
    const slot = Math.ceil((Date.now() + (ms >= 0 ? ms : 0)) / RESOLUTION);
    let bucket = this.#buckets.get(slot);
    if (bucket === undefined) {
      bucket = this.#spare.pop() ?? new Set();
      this.#buckets.set(slot, bucket);
      // The slot may still be listed from an earlier bucket (see remove).
      const slots = this.#slots;
      const last = slots.length === 0 ? -Infinity : slots[slots.length - 1]!;
      if (last < slot) slots.push(slot);
      else if (last !== slot) {
        const at = lowerBound(slots, slot);
        if (slots[at] !== slot) slots.splice(at, 0, slot);
      }
    }
    bucket.add(item);
    item.slot = slot;
    if (slot < this.#timerSlot) this.#arm(slot);
  }

  /**
   * Forgets `item` (settled before its deadline). A bucket left empty is
   * dropped at once: with long timeouts, empty buckets kept until their
   * deadline would pile up (a 30 s timeout under load: ~20 MB of empty sets,
   * all promoted to the old generation), costing GC pauses and memory. Its
   * slot stays listed until the timer passes it.
   */
  remove(item: T): void {
    const slot = item.slot;
    if (slot < 0) return;
    item.slot = -1;
    const bucket = this.#buckets.get(slot);
    if (bucket === undefined || !bucket.delete(item) || bucket.size > 0) return;
    this.#buckets.delete(slot);
    if (this.#spare.length < SPARE_BUCKETS) this.#spare.push(bucket);
  }

  #arm(slot: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerSlot = slot;
    this.#timer = setTimeout(
      this.#tick,
      Math.min(MAX_DELAY, Math.max(0, slot * RESOLUTION - Date.now())),
    );
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerSlot = Infinity;
    const now = Date.now();
    const slots = this.#slots;
    const buckets = this.#buckets;
    let done = 0;
    const expired: T[] = [];
    while (done < slots.length && slots[done]! * RESOLUTION <= now) {
      const slot = slots[done++]!;
      const bucket = buckets.get(slot);
      if (bucket === undefined) continue; // every request of it settled
      buckets.delete(slot);
      for (const item of bucket) {
        item.slot = -1;
        expired.push(item);
      }
    }
    // Slots whose requests all settled need no wake-up.
    while (done < slots.length && !buckets.has(slots[done]!)) done++;
    if (done > 0) slots.splice(0, done);
    if (slots.length > 0) this.#arm(slots[0]!);
    for (const item of expired) this.#onExpire(item);
  }

  /** Stops the timer and forgets everything. */
  clear(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerSlot = Infinity;
    for (const bucket of this.#buckets.values()) {
      for (const item of bucket) item.slot = -1;
    }
    this.#buckets.clear();
    this.#slots = [];
    this.#spare = [];
  }

  /** How many deadline buckets are held (each holds at least one item). */
  get bucketCount(): number {
    return this.#buckets.size;
  }
}

function lowerBound(sorted: number[], value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
