/**
 * Internals: a table of values by string key over two plain arrays, for
 * long-lived tables that see an insert and a delete per operation (the
 * pool's atoms: one per eval).
 *
 * A long-lived `Map` used that way makes V8 keep garbage: when it outgrows
 * or compacts its hash table, the old table is linked to the new one and
 * keeps its entries, so once the map sits in the old generation every value
 * it held survives the young generation's collections until the next full
 * one (see `_session_pending_table.ts`). A loop of small evals with the
 * registry's `Map` and `Set`: ~10% of what an eval allocated survived each
 * scavenge and pauses grew from ~0.2 to 2–3 ms. Here keys and values sit in
 * arrays written in place (open addressing, linear probing): a delete
 * clears its slots and leaves a tombstone, and the arrays are rebuilt (the
 * old ones cleared) only when tombstones and entries fill half of them.
 *
 * @module
 */
import { hash32 } from "./_hash32.ts";

/** Marks a deleted slot: probing goes on past it, an insert may reuse it. */
const TOMBSTONE: unique symbol = Symbol("deleted");

/** Slots at first (a power of two). */
const MIN_CAPACITY = 64;

/** Values by string key (any string; insertion order is not kept). */
export class StringTable<T> {
  #keys: (string | typeof TOMBSTONE | undefined)[];
  #values: (T | undefined)[];
  #size = 0;
  /** Slots holding a key or a tombstone. */
  #used = 0;

  /** An empty table. */
  constructor() {
    this.#keys = new Array(MIN_CAPACITY).fill(undefined);
    this.#values = new Array(MIN_CAPACITY).fill(undefined);
  }

  /** Entries held. */
  get size(): number {
    return this.#size;
  }

  /** Slots (entries and tombstones fill at most half of them). */
  get capacity(): number {
    return this.#keys.length;
  }

  /** The value under `key`, if any. */
  get(key: string): T | undefined {
    const slot = this.#find(key);
    return slot < 0 ? undefined : this.#values[slot];
  }

  /** Sets the value under `key` (replacing any). */
  set(key: string, value: T): void {
    const found = this.#find(key);
    if (found >= 0) {
      this.#values[found] = value;
      return;
    }
    if ((this.#used + 1) * 2 > this.#keys.length) {
      // Half full of entries and tombstones: rebuilt with entries filling
      // less than a quarter (bigger after growth, smaller after a burst).
      let capacity = MIN_CAPACITY;
      while (capacity <= this.#size * 4) capacity *= 2;
      this.#rebuild(capacity);
    }
    const keys = this.#keys;
    const mask = keys.length - 1;
    let slot = hash32(key, 0) & mask;
    while (keys[slot] !== undefined && keys[slot] !== TOMBSTONE) {
      slot = (slot + 1) & mask;
    }
    if (keys[slot] === undefined) this.#used++;
    keys[slot] = key;
    this.#values[slot] = value;
    this.#size++;
  }

  /** Removes `key`; false when it was not there. */
  delete(key: string): boolean {
    const slot = this.#find(key);
    if (slot < 0) return false;
    this.#keys[slot] = TOMBSTONE;
    this.#values[slot] = undefined;
    this.#size--;
    return true;
  }

  /** Every value, in no particular order. */
  values(): T[] {
    const out: T[] = [];
    const keys = this.#keys;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i];
      if (key !== undefined && key !== TOMBSTONE) out.push(this.#values[i]!);
    }
    return out;
  }

  /** The slot of `key`, or -1. */
  #find(key: string): number {
    const keys = this.#keys;
    const mask = keys.length - 1;
    let slot = hash32(key, 0) & mask;
    for (;;) {
      const k = keys[slot];
      if (k === key) return slot;
      if (k === undefined) return -1;
      slot = (slot + 1) & mask;
    }
  }

  /** New arrays of `capacity` slots, without tombstones; the old ones cleared. */
  #rebuild(capacity: number): void {
    const keys = this.#keys;
    const values = this.#values;
    this.#keys = new Array(capacity).fill(undefined);
    this.#values = new Array(capacity).fill(undefined);
    this.#size = 0;
    this.#used = 0;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i];
      if (key !== undefined && key !== TOMBSTONE) this.set(key, values[i]!);
    }
    keys.fill(undefined); // no stale references left in the old generation
    values.fill(undefined);
  }
}
