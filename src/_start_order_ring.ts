/**
 * Entries in start order with one deadline rule, for watchers that sweep
 * the oldest entries with a single timer (internal).
 *
 * @module
 */

/** An entry of a {@linkcode StartOrderRing}: the ring keeps its slot. */
export interface RingEntry {
  /** Its index in the ring while there, -1 once out. */
  slot: number;
}

/**
 * A growable ring of entries in the order they were added. Removing an
 * entry clears its slot at once (it dies young, for V8); sweeps take the
 * old entries from the head. A power-of-two capacity keeps indexing a mask.
 *
 * @example
 * ```ts ignore
 * const ring = new StartOrderRing<{ slot: number; at: number }>(64);
 * ring.push(entry);
 * const next = ring.takeOld((e) => e.at <= now, (e) => expire(e));
 * ```
 */
export class StartOrderRing<T extends RingEntry> {
  #ring: (T | undefined)[];
  #head = 0;
  #size = 0;

  /** An empty ring of `capacity` slots (a power of two). */
  constructor(capacity: number) {
    this.#ring = new Array(capacity).fill(undefined);
  }

  /** Appends `entry` (the newest). */
  push(entry: T): void {
    if (this.#size === this.#ring.length) this.#grow();
    entry.slot = (this.#head + this.#size) & (this.#ring.length - 1);
    this.#ring[entry.slot] = entry;
    this.#size++;
  }

  /** Takes `entry` out, if it is still in. */
  remove(entry: T): void {
    if (entry.slot >= 0 && this.#ring[entry.slot] === entry) {
      this.#ring[entry.slot] = undefined;
    }
    entry.slot = -1;
  }

  /**
   * Takes the entries from the oldest on while `isOld` says so, handing each
   * to `take`; returns the first entry that is not old (every later one is
   * younger), or `undefined` once the ring is empty.
   */
  takeOld(
    isOld: (entry: T) => boolean,
    take: (entry: T) => void,
  ): T | undefined {
    const ring = this.#ring;
    const mask = ring.length - 1;
    while (this.#size > 0) {
      const entry = ring[this.#head];
      if (entry !== undefined) {
        if (!isOld(entry)) return entry;
        entry.slot = -1;
        take(entry);
      }
      ring[this.#head] = undefined;
      this.#head = (this.#head + 1) & mask;
      this.#size--;
    }
    return undefined;
  }

  /** The entries still in, oldest first. */
  entries(): T[] {
    const out: T[] = [];
    for (let i = 0; i < this.#size; i++) {
      const entry = this.#ring[(this.#head + i) & (this.#ring.length - 1)];
      if (entry !== undefined) out.push(entry);
    }
    return out;
  }

  /** Forgets every entry (their slots are cleared). */
  clear(): void {
    const ring = this.#ring;
    for (let i = 0; i < this.#size; i++) {
      ring[(this.#head + i) & (ring.length - 1)] = undefined;
    }
    this.#head = 0;
    this.#size = 0;
  }

  #grow(): void {
    const old = this.#ring;
    const ring = new Array<T | undefined>(old.length * 2).fill(undefined);
    for (let i = 0; i < this.#size; i++) {
      const entry = old[(this.#head + i) & (old.length - 1)];
      if (entry !== undefined) entry.slot = i;
      ring[i] = entry;
    }
    old.fill(undefined); // no stale references in the old array (V8's old generation)
    this.#ring = ring;
    this.#head = 0;
  }
}
