/**
 * An in-process {@linkcode CacheStore}: least-recently-used eviction bounded
 * by entry count and size, and per-key time to live.
 *
 * @module
 */
import type { CacheSetOptions, CacheStore } from "./cache_store.ts";
import { ConnectionLostError } from "../src/errors.ts";
import { decodeCacheValue, encodeCacheValue } from "./_cache_value.ts";

/**
 * Options of {@linkcode MemoryStore}.
 *
 * @example
 * ```ts
 * import { MemoryStore } from "@pyproxy/pyproxy";
 * const store = new MemoryStore({ maxEntries: 1000, maxBytes: 1024 * 1024, defaultTtl: 300 });
 * await store.set("k", [1, 2, 3]);
 * console.log(await store.get("k")); // [1, 2, 3]
 * await store.close();
 * ```
 */
export interface MemoryStoreOptions {
  /** Most entries kept; the least recently used go first. @default {10000} */
  maxEntries?: number;
  /**
   * Most bytes kept, counted as the key plus its JSON text (UTF-16 code
   * units, equal to bytes for ASCII; bytes values count as their base64
   * text). A single value above it is refused.
   * @default {67108864}
   */
  maxBytes?: number;
  /** Time to live (seconds) of a `set` without `ttl`; none when absent. */
  defaultTtl?: number;
  /** The clock in milliseconds; inject one in tests. @default {Date.now} */
  now?: () => number;
}

interface Entry {
  json: string;
  size: number;
  expires: number;
}

/**
 * The default store of the shared cache. Values are kept as JSON text, so a
 * `get` returns a fresh copy and the size bound is exact. Bytes (a
 * `Uint8Array`, any `ArrayBuffer` view, an `ArrayBuffer`) come back as
 * `Uint8Array`s, kept as base64 text (counted so).
 *
 * @example
 * ```ts
 * import { MemoryStore } from "@pyproxy/pyproxy";
 * let now = 0;
 * const store = new MemoryStore({ maxEntries: 2, now: () => now });
 * await store.set("a", { n: 1 }, { ttl: 1 });
 * console.log(await store.get("a")); // { n: 1 }
 * now = 1000;
 * console.log(await store.get("a")); // undefined
 * ```
 */
export class MemoryStore implements CacheStore {
  // Map iteration order is insertion order: re-inserting on access makes the first key the least recently used.
  #entries = new Map<string, Entry>();
  #bytes = 0;
  #maxEntries: number;
  #maxBytes: number;
  #defaultTtl: number | undefined;
  #now: () => number;
  #closed = false;

  /** Creates an empty store. */
  constructor(options: MemoryStoreOptions = {}) {
    this.#maxEntries = positive("maxEntries", options.maxEntries ?? 10_000);
    if (!Number.isInteger(this.#maxEntries)) {
      throw new RangeError(
        `Cannot create MemoryStore: maxEntries must be an integer, got ${this.#maxEntries}`,
      );
    }
    this.#maxBytes = positive("maxBytes", options.maxBytes ?? 64 * 1024 * 1024);
    this.#defaultTtl = options.defaultTtl === undefined
      ? undefined
      : ttlOf(options.defaultTtl);
    this.#now = options.now ?? Date.now;
  }

  /** Number of entries held (expired ones may count until touched or evicted). */
  get size(): number {
    return this.#entries.size;
  }

  /** Bytes held, as counted for `maxBytes`. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The value under `key`, or `undefined` when missing or expired. */
  get(key: string): Promise<unknown> {
    if (this.#closed) return this.#closedError("read");
    const entry = this.#entries.get(key);
    if (entry === undefined) return Promise.resolve(undefined);
    if (entry.expires <= this.#now()) {
      this.#drop(key, entry);
      return Promise.resolve(undefined);
    }
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return Promise.resolve(decodeCacheValue(entry.json));
  }

  /** Stores a copy of `value`; evicts least recently used entries to stay in bounds. */
  set(
    key: string,
    value: unknown,
    options: CacheSetOptions = {},
  ): Promise<void> {
    if (this.#closed) return this.#closedError("write to");
    try {
      const json = encodeCacheValue(value);
      if (json === undefined) {
        throw new TypeError(`Cannot cache '${key}': the value is not JSON`);
      }
      const size = key.length + json.length;
      if (size > this.#maxBytes) {
        throw new RangeError(
          `Cannot cache '${key}': ${size} bytes exceed maxBytes ${this.#maxBytes}`,
        );
      }
      const ttl = options.ttl === undefined
        ? this.#defaultTtl
        : ttlOf(options.ttl);
      const expires = ttl === undefined ? Infinity : this.#now() + ttl * 1000;
      const old = this.#entries.get(key);
      if (old !== undefined) this.#drop(key, old);
      this.#entries.set(key, { json, size, expires });
      this.#bytes += size;
      this.#evict();
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Removes `key`; `true` when it held a live value. */
  delete(key: string): Promise<boolean> {
    if (this.#closed) return this.#closedError("delete from");
    const entry = this.#entries.get(key);
    if (entry === undefined) return Promise.resolve(false);
    this.#drop(key, entry);
    return Promise.resolve(entry.expires > this.#now());
  }

  /** Removes everything. */
  clear(): Promise<void> {
    if (this.#closed) return this.#closedError("clear");
    this.#entries.clear();
    this.#bytes = 0;
    return Promise.resolve();
  }

  /**
   * Frees every entry; afterwards the other methods reject with a
   * `ConnectionLostError`, as `RedisStore`'s do (a second `close()` is a
   * no-op).
   */
  close(): Promise<void> {
    this.#entries.clear();
    this.#bytes = 0;
    this.#closed = true;
    return Promise.resolve();
  }

  #closedError(action: string): Promise<never> {
    return Promise.reject(
      new ConnectionLostError(
        `Cannot ${action} the memory store: the store is closed`,
      ),
    );
  }

  #drop(key: string, entry: Entry): void {
    this.#entries.delete(key);
    this.#bytes -= entry.size;
  }

  // Only the least recently used end is scanned, so a full store costs O(1) per set; an expired entry
  // elsewhere waits until it is read or reaches that end.
  #evict(): void {
    for (const [key, entry] of this.#entries) {
      if (
        this.#entries.size <= this.#maxEntries && this.#bytes <= this.#maxBytes
      ) break;
      this.#drop(key, entry);
    }
  }
}

function positive(name: string, value: number): number {
  if (!(value >= 1)) {
    throw new RangeError(
      `Cannot create MemoryStore: ${name} must be >= 1, got ${value}`,
    );
  }
  return value;
}

function ttlOf(ttl: number): number {
  if (!(typeof ttl === "number" && ttl > 0 && ttl !== Infinity)) {
    throw new RangeError(
      `Cannot cache value: ttl must be a positive number of seconds, got ${ttl}`,
    );
  }
  return ttl;
}
