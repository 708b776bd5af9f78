/**
 * Internals of `Session`: the requests in flight by id, without a `Map` (also
 * the server's host commands in progress).
 *
 * A `Map` that lives long and sees an insert and a delete per request
 * makes V8 keep garbage: when it outgrows or compacts its hash table, the
 * old table is linked to the new one and keeps its entries. Once the map's
 * table is in the old generation (after any full collection), the chain of
 * its successors, and every request they held, survives the young
 * generation's collections until the next full one: under gateway load ~10%
 * of everything a request allocated was promoted, the young generation grew
 * to ~25 MB and its pauses to 3–7 ms. Here the requests sit in a ring
 * indexed by the low bits of their id (ids only grow): an entry is written
 * when the request is sent and cleared when it settles. The ring doubles
 * (up to 65536 slots) when more than half of it is in flight; a request
 * still in flight when its slot comes round again moves to a small overflow
 * map.
 *
 * @module
 */

/** Ring slots at first, and at most (powers of two; `maxPending` is 65536 by default). */
const RING = 1024;
const MAX_RING = 65536;

/** Requests by id: what the table holds. */
export interface Identified {
  readonly id: number;
}

/** Requests in flight by their (increasing) integer id. */
export class PendingTable<T extends Identified> {
  #ring: (T | undefined)[] = new Array<T | undefined>(RING).fill(undefined);
  #overflow: Map<number, T> | undefined;
  #size = 0;

  /** Requests held. */
  get size(): number {
    return this.#size;
  }

  /**
   * Adds `item` under its id. Any integer works; ids that follow each other
   * stay in the ring. An id added again while held (a peer's bug) hides the
   * older entry until one of them is deleted.
   */
  add(item: T): void {
    let ring = this.#ring;
    let slot = item.id & (ring.length - 1);
    if (ring[slot] !== undefined) {
      // Many in flight (more than half the ring): a bigger ring, once.
      if (this.#size * 2 >= ring.length && ring.length < MAX_RING) {
        ring = this.#grow();
        slot = item.id & (ring.length - 1);
      }
      const old = ring[slot];
      if (old !== undefined) (this.#overflow ??= new Map()).set(old.id, old);
    }
    ring[slot] = item;
    this.#size++;
  }

  /** The request with id `id`, if held. */
  get(id: number): T | undefined {
    const ring = this.#ring;
    const item = ring[id & (ring.length - 1)];
    if (item !== undefined && item.id === id) return item;
    return this.#overflow?.get(id);
  }

  /** Requests held in the overflow map (outlived their ring slot). */
  get overflowSize(): number {
    return this.#overflow?.size ?? 0;
  }

  /** Forgets request `id`; false when it was not held. */
  delete(id: number): boolean {
    const ring = this.#ring;
    const slot = id & (ring.length - 1);
    const item = ring[slot];
    if (item !== undefined && item.id === id) {
      ring[slot] = undefined;
    } else if (this.#overflow === undefined || !this.#overflow.delete(id)) {
      return false;
    } else if (this.#overflow.size === 0) {
      this.#overflow = undefined;
    }
    this.#size--;
    return true;
  }

  /** Doubles the ring (distinct slots stay distinct); the old array is cleared. */
  #grow(): (T | undefined)[] {
    const old = this.#ring;
    const ring = new Array<T | undefined>(old.length * 2).fill(undefined);
    const mask = ring.length - 1;
    for (const item of old) if (item !== undefined) ring[item.id & mask] = item;
    old.fill(undefined); // no stale references left in the old generation
    this.#ring = ring;
    return ring;
  }

  /** Removes and returns every request held, oldest first. */
  drain(): T[] {
    const out: T[] = [];
    if (this.#overflow !== undefined) out.push(...this.#overflow.values());
    for (const item of this.#ring) if (item !== undefined) out.push(item);
    out.sort((a, b) => a.id - b.id);
    this.#ring.fill(undefined);
    this.#overflow = undefined;
    this.#size = 0;
    return out;
  }
}
