/**
 * The storage interface behind the shared cache plugin: implemented by
 * {@linkcode MemoryStore} (in-process) and {@linkcode RedisStore} (shared by
 * several hosts), and by any store a user writes.
 *
 * @module
 */

/**
 * Options of {@linkcode CacheStore.set}.
 *
 * @example
 * ```ts
 * import { MemoryStore } from "@pyproxy/pyproxy";
 * const store = new MemoryStore();
 * await store.set("session:42", { user: "ada" }, { ttl: 60 });
 * console.log(await store.get("session:42")); // { user: "ada" }
 * await store.close();
 * ```
 */
export interface CacheSetOptions {
  /** Time to live in seconds (fractions allowed); no expiry when absent. */
  ttl?: number;
}

/**
 * A key/value store of JSON values. Every method is asynchronous so a store
 * may live in another process. `get` resolves `undefined` for a missing or
 * expired key (a stored `null` comes back as `null`).
 *
 * @example A store that keeps nothing
 * ```ts
 * import type { CacheStore } from "@pyproxy/pyproxy";
 * const nothing: CacheStore = {
 *   get: () => Promise.resolve(undefined),
 *   set: () => Promise.resolve(),
 *   delete: () => Promise.resolve(false),
 *   clear: () => Promise.resolve(),
 *   close: () => Promise.resolve(),
 * };
 * console.log(await nothing.get("k")); // undefined
 * ```
 */
export interface CacheStore {
  /** The value stored under `key`, or `undefined`. */
  get(key: string): Promise<unknown>;
  /** Stores a JSON value (a copy: later changes to `value` are not seen). */
  set(key: string, value: unknown, options?: CacheSetOptions): Promise<void>;
  /** Removes `key`; resolves `true` when it existed. */
  delete(key: string): Promise<boolean>;
  /** Removes every key of this store. */
  clear(): Promise<void>;
  /** Releases connections and timers; the store is unusable afterwards. */
  close(): Promise<void>;
}
