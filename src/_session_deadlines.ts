/**
 * Internals of `Session`: request timeouts on one shared timer. A timer per
 * request (set and cleared for nearly every call) costs several microseconds;
 * here a request costs an array push and a swap-remove. Deadlines are grouped
 * in slots of `RESOLUTION` ms and fire at the end of their slot: never early,
 * at most `RESOLUTION` ms late.
 *
 * Plain arrays, no `Map` or `Set`, on purpose. V8 links a hash table it
 * outgrows (or compacts) to its replacement and leaves the entries in the
 * old one. Once a long-lived table sits in the old generation, every table
 * after it, with the requests it held, is kept by the young-generation
 * collector until a full collection: under load ~10% of everything a request
 * allocates was promoted, and the young generation grew from ~3 to ~25 MB,
 * with scavenge pauses of 3–7 ms (the HTTP gateway's p99). Arrays hold no
 * such link, and a bucket is a fresh array for each slot.
 *
 * @module
 */
import { MAX_TIMER_MS } from "./_timer.ts";

const RESOLUTION = 4;

/** What {@linkcode Deadlines} tracks: anything with an id and these fields. */
export interface Expiring {
  readonly id: number;
  /** The slot holding it, or -1. Owned by {@linkcode Deadlines}. */
  slot: number;
  /** The bucket holding it. Owned by {@linkcode Deadlines}. */
  bucket: unknown[] | undefined;
  /** Its index in `bucket`. Owned by {@linkcode Deadlines}. */
  index: number;
}

/** Request deadlines on one timer, armed for the earliest non-empty slot. */
export class Deadlines<T extends Expiring> {
  /**
   * Slots ascending (new slots almost always append), and their buckets:
   * `null` once emptied, until the timer passes the slot.
   */
  #slots: number[] = [];
  #buckets: (T[] | null)[] = [];
  #count = 0;
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
    const slots = this.#slots;
    const buckets = this.#buckets;
    let at = slots.length - 1;
    if (at < 0 || slots[at]! < slot) {
      slots.push(slot);
      buckets.push(null);
      at++;
    } else if (slots[at] !== slot) {
      at = lowerBound(slots, slot);
      if (slots[at] !== slot) {
        slots.splice(at, 0, slot);
        buckets.splice(at, 0, null);
      }
    }
    let bucket = buckets[at]!;
    if (bucket === null) {
      bucket = buckets[at] = [];
      this.#count++;
    }
    item.slot = slot;
    item.bucket = bucket;
    item.index = bucket.length;
    bucket.push(item);
    if (slot < this.#timerSlot) this.#arm(slot);
  }

  /**
   * Forgets `item` (settled before its deadline). A bucket left empty is
   * dropped at once: with long timeouts, empty buckets kept until their
   * deadline would pile up (a 30 s timeout under load: thousands of them).
   * Its slot stays listed until the timer passes it.
   */
  remove(item: T): void {
    const bucket = item.bucket as T[] | undefined;
    if (bucket === undefined) return;
    const slot = item.slot;
    const index = item.index;
    item.slot = -1;
    item.bucket = undefined;
    const last = bucket.pop()!;
    if (last !== item) {
      bucket[index] = last;
      last.index = index;
    }
    if (bucket.length > 0) return;
    const at = lowerBound(this.#slots, slot);
    if (this.#buckets[at] === bucket) {
      this.#buckets[at] = null;
      this.#count--;
    }
  }

  #arm(slot: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerSlot = slot;
    this.#timer = setTimeout(
      this.#tick,
      // A deadline beyond a timer's range (~24.8 days) is not dropped but
      // kept: the timer wakes at the range's end and re-arms.
      Math.min(MAX_TIMER_MS, Math.max(0, slot * RESOLUTION - Date.now())),
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
      const bucket = buckets[done++];
      if (bucket === null) continue; // every request of it settled
      this.#count--;
      for (const item of bucket!) {
        item.slot = -1;
        item.bucket = undefined;
        expired.push(item);
      }
    }
    // Slots whose requests all settled need no wake-up.
    while (done < slots.length && buckets[done] === null) done++;
    if (done > 0) {
      slots.splice(0, done);
      buckets.splice(0, done);
    }
    if (slots.length > 0) this.#arm(slots[0]!);
    for (const item of expired) this.#onExpire(item);
  }

  /** Stops the timer and forgets everything. */
  clear(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerSlot = Infinity;
    for (const bucket of this.#buckets) {
      if (bucket === null) continue;
      for (const item of bucket) {
        item.slot = -1;
        item.bucket = undefined;
      }
    }
    this.#slots = [];
    this.#buckets = [];
    this.#count = 0;
  }

  /** How many deadline buckets are held (each holds at least one item). */
  get bucketCount(): number {
    return this.#count;
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
