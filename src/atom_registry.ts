/**
 * The bounded registry of a pool's atoms, so a late reader (the gateway's SSE
 * `Last-Event-ID`) can find an atom by id and replay its output.
 *
 * @module
 */

/**
 * What the registry needs to know about an atom (`Atom` implements it).
 *
 * @example
 * ```ts
 * import type { RegisteredAtom } from "./atom_registry.ts";
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
}

/**
 * Options of {@linkcode AtomRegistry}.
 *
 * @example
 * ```ts
 * import type { AtomRegistryOptions } from "./atom_registry.ts";
 * const options: AtomRegistryOptions = { maxAtoms: 100, maxBytes: 32 * 1024 * 1024 };
 * console.log(options.maxAtoms);
 * ```
 */
export interface AtomRegistryOptions {
  /** Finished atoms kept at most; the oldest are forgotten first. @default {256} */
  maxAtoms?: number;
  /** Replay output kept at most over all finished atoms (UTF-16 code units). @default {67108864} */
  maxBytes?: number;
}

/**
 * Running atoms are always kept; finished ones are kept in finishing order
 * until either bound is exceeded.
 *
 * @example
 * ```ts
 * import { AtomRegistry } from "./atom_registry.ts";
 * const registry = new AtomRegistry({ maxAtoms: 1 });
 * registry.add({ id: "a", done: true, bufferedBytes: 0 });
 * registry.finished("a");
 * console.log(registry.get("a")?.id); // "a"
 * ```
 */
export class AtomRegistry<A extends RegisteredAtom = RegisteredAtom> {
  #atoms = new Map<string, A>();
  // Insertion order = finishing order.
  #finished = new Set<string>();
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
    this.#atoms.set(atom.id, atom);
    if (atom.done) this.finished(atom.id);
  }

  /** The atom with this id, or `undefined` (unknown or forgotten). */
  get(id: string): A | undefined {
    return this.#atoms.get(id);
  }

  /** Every atom known, oldest first. */
  list(): A[] {
    return [...this.#atoms.values()];
  }

  /** Records that an atom finished, then forgets the oldest finished atoms beyond the bounds. */
  finished(id: string): void {
    if (!this.#atoms.has(id)) return;
    this.#finished.delete(id);
    this.#finished.add(id);
    let bytes = 0;
    for (const key of this.#finished) {
      bytes += this.#atoms.get(key)?.bufferedBytes ?? 0;
    }
    for (const key of this.#finished) {
      if (this.#finished.size <= this.#maxAtoms && bytes <= this.#maxBytes) {
        break;
      }
      bytes -= this.#atoms.get(key)?.bufferedBytes ?? 0;
      this.#finished.delete(key);
      this.#atoms.delete(key);
    }
  }
}
