/**
 * The bounded registry of a pool's atoms, so a late reader (the gateway's SSE
 * `Last-Event-ID`) can find an atom by id and replay its output.
 *
 * @module
 */
import { StringTable } from "./_string_table.ts";

/**
 * What the registry needs to know about an atom (`Atom` implements it).
 *
 * @example
 * ```ts
 * import type { RegisteredAtom } from "@pyproxy/pyproxy";
 * const entry: RegisteredAtom = { id: "a", done: false, bufferedBytes: 0 };
 * console.log(entry.id);
 * ```
 */
export interface RegisteredAtom {
  /** The atom id. */
  readonly id: string;
  /** `true` once the atom finished (its output is complete). */
  readonly done: boolean;
  /** Output kept for replay, in UTF-16 code units. */
  readonly bufferedBytes: number;
  /**
   * Memory the atom's result holds (about the length of its JSON), counted
   * with `bufferedBytes` toward `maxBytes`: a finished atom keeps its result.
   */
  readonly resultBytes?: number;
}

/**
 * Options of {@linkcode AtomRegistry}.
 *
 * @example
 * ```ts
 * import type { AtomRegistryOptions } from "@pyproxy/pyproxy";
 * const options: AtomRegistryOptions = { maxAtoms: 100, maxBytes: 32 * 1024 * 1024 };
 * console.log(options.maxAtoms);
 * ```
 */
export interface AtomRegistryOptions {
  /** Finished atoms kept at most; the oldest are forgotten first. @default {256} */
  maxAtoms?: number;
  /**
   * Replay output and results kept at most over all finished atoms (UTF-16
   * code units; a result counts about the length of its JSON).
   * @default {67108864}
   */
  maxBytes?: number;
}

/**
 * Running atoms are always kept; finished ones are kept in finishing order
 * until either bound is exceeded (an atom's `bufferedBytes` is read when it
 * finishes: its output is complete then).
 *
 * @example
 * ```ts
 * import { AtomRegistry } from "@pyproxy/pyproxy";
 * const registry = new AtomRegistry({ maxAtoms: 1 });
 * registry.add({ id: "a", done: true, bufferedBytes: 0 });
 * registry.finished("a");
 * console.log(registry.get("a")?.id); // "a"
 * ```
 */
export class AtomRegistry<A extends RegisteredAtom = RegisteredAtom> {
  // No Map or Set: one insert and one delete per eval would make V8 keep
  // every atom they held until a full collection (_string_table.ts).
  #atoms = new StringTable<Entry<A>>();
  #added = 0;
  // Finished atoms in finishing order: a ring of entries with the finish
  // number they had when queued (an entry finished again is queued again,
  // its older place skipped).
  #queue: (Entry<A> | undefined)[] = new Array(16).fill(undefined);
  #queued: number[] = new Array(16).fill(0);
  #head = 0;
  #length = 0;
  #finishes = 0;
  #finishedCount = 0;
  /** Replay bytes of the finished atoms kept (read when each finished). */
  #bytes = 0;
  #maxAtoms: number;
  #maxBytes: number;

  /** Creates an empty registry. */
  constructor(options: AtomRegistryOptions = {}) {
    this.#maxAtoms = options.maxAtoms ?? 256;
    this.#maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
  }

  /** Number of atoms known (running and finished). */
  get size(): number {
    return this.#atoms.size;
  }

  /** Registers a new (running) atom. */
  add(atom: A): void {
    this.#atoms.set(atom.id, {
      atom,
      order: this.#added++,
      finish: -1,
      bytes: 0,
    });
    if (atom.done) this.finished(atom.id);
  }

  /** The atom with this id, or `undefined` (unknown or forgotten). */
  get(id: string): A | undefined {
    return this.#atoms.get(id)?.atom;
  }

  /** Every atom known, oldest first. */
  list(): A[] {
    return this.#atoms.values().sort((a, b) => a.order - b.order).map((e) =>
      e.atom
    );
  }

  /** Records that an atom finished, then forgets the oldest finished atoms beyond the bounds. */
  finished(id: string): void {
    const entry = this.#atoms.get(id);
    if (entry === undefined) return;
    if (entry.finish < 0) this.#finishedCount++;
    else this.#bytes -= entry.bytes; // finished again: counted anew
    entry.finish = this.#finishes++;
    // Final once it finished. The result too: 256 evals returning 2 MB
    // each kept 512 MB, counted as nothing.
    entry.bytes = entry.atom.bufferedBytes + (entry.atom.resultBytes ?? 0);
    this.#bytes += entry.bytes;
    this.#push(entry);
    while (
      this.#length > 0 &&
      (this.#finishedCount > this.#maxAtoms || this.#bytes > this.#maxBytes)
    ) {
      const oldest = this.#shift();
      if (oldest === undefined) continue; // finished again later: queued further on
      this.#bytes -= oldest.bytes;
      this.#finishedCount--;
      this.#atoms.delete(oldest.atom.id);
    }
  }

  #push(entry: Entry<A>): void {
    if (this.#length === this.#queue.length) this.#grow();
    const slot = (this.#head + this.#length) & (this.#queue.length - 1);
    this.#queue[slot] = entry;
    this.#queued[slot] = entry.finish;
    this.#length++;
  }

  /** The oldest queued entry, or undefined when that place is stale. */
  #shift(): Entry<A> | undefined {
    const slot = this.#head;
    const entry = this.#queue[slot];
    const current = entry !== undefined && entry.finish === this.#queued[slot];
    this.#queue[slot] = undefined;
    this.#head = (slot + 1) & (this.#queue.length - 1);
    this.#length--;
    return current ? entry : undefined;
  }

  /** Doubles the ring, oldest first at slot 0; the old array is cleared. */
  #grow(): void {
    const queue = new Array<Entry<A> | undefined>(this.#queue.length * 2).fill(
      undefined,
    );
    const queued = new Array<number>(queue.length).fill(0);
    const mask = this.#queue.length - 1;
    for (let i = 0; i < this.#length; i++) {
      const slot = (this.#head + i) & mask;
      queue[i] = this.#queue[slot];
      queued[i] = this.#queued[slot] ?? 0;
    }
    this.#queue.fill(undefined); // no stale references left in the old generation
    this.#queue = queue;
    this.#queued = queued;
    this.#head = 0;
  }
}

/** An atom with its registration number, finish number (-1: running) and
 * replay bytes when it finished. */
interface Entry<A> {
  readonly atom: A;
  readonly order: number;
  finish: number;
  bytes: number;
}
