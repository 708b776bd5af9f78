/**
 * A request body's chunks joined as they are read, without keeping them.
 *
 * @module
 */

/** The smallest first buffer (made when a second chunk comes; at most the capacity). */
const FIRST_BUFFER = 4096;

/**
 * Bytes read in chunks, copied into one buffer as they come (grown by
 * doubling, never past `capacity`) instead of kept as they are: Deno
 * gives each chunk of a request body as a view of a 64 KiB buffer of its
 * own, however few bytes it holds, so a body sent in 1-byte chunks held 64
 * KiB per byte until it was joined (50 KB sent that way held 2 GB). A lone
 * chunk is kept as it is: a body that came in one piece is not copied.
 *
 * @example
 * ```ts ignore
 * const collector = new ByteCollector(1024);
 * collector.push(new Uint8Array([1]));
 * collector.push(new Uint8Array([2, 3]));
 * console.log(collector.bytes()); // Uint8Array(3) [ 1, 2, 3 ]
 * ```
 */
export class ByteCollector {
  /** Most bytes pushed in all (the reader checks its limit before pushing). */
  readonly capacity: number;
  /** The first chunk, while it is the only one. */
  #first: Uint8Array | undefined;
  #buffer: Uint8Array | undefined;
  #size = 0;

  /** The size of the first buffer, when the total is known. */
  #expected: number;

  /**
   * An empty collector of at most `capacity` bytes; `expected` (a declared
   * `Content-Length`), when given, sizes its buffer, so that a body of that
   * many bytes is copied once, as a join of its chunks would.
   */
  constructor(capacity: number, expected = 0) {
    this.capacity = capacity;
    this.#expected = expected;
  }

  /** Bytes pushed so far. */
  get size(): number {
    return this.#size;
  }

  /** Adds `chunk` (copied, unless it is the first): `RangeError` past the capacity. */
  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    const size = this.#size + chunk.byteLength;
    if (size > this.capacity) {
      throw new RangeError(
        `Cannot collect bytes: ${size} are over the capacity of ${this.capacity}`,
      );
    }
    if (this.#buffer === undefined && this.#first === undefined) {
      this.#first = chunk;
      this.#size = size;
      return;
    }
    const held = this.#buffer?.byteLength ?? 0;
    if (size > held) {
      const grown = held > 0
        ? held * 2
        : this.#expected > 0
        ? this.#expected
        : Math.max(size * 2, FIRST_BUFFER);
      const next = new Uint8Array(
        Math.min(this.capacity, Math.max(size, grown)),
      );
      next.set(this.#buffer?.subarray(0, this.#size) ?? this.#first!);
      this.#buffer = next;
      this.#first = undefined;
    }
    this.#buffer!.set(chunk, this.#size);
    this.#size = size;
  }

  /** The bytes pushed, joined (a view of the collector's buffer). */
  bytes(): Uint8Array {
    return this.#first ?? this.#buffer?.subarray(0, this.#size) ??
      new Uint8Array(0);
  }
}
