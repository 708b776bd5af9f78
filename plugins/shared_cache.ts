/**
 * The shared-cache plugin: a key/value cache of JSON values on the host that
 * Python models use while they run (`host.cache.get/set/delete`, protocol
 * §7), shared by every worker of the pool, and by several pools when the
 * store is shared (a {@linkcode RedisStore}).
 *
 * @module
 */
import { checkOptionKeys } from "./_plugin_options.ts";
import { ConfigError, InvalidRequestError } from "../src/errors.ts";
import * as v from "valibot";
import type { HostHandler, Plugin } from "../src/plugin.ts";
import type { CacheSetOptions, CacheStore } from "./cache_store.ts";
import { MemoryStore } from "./memory_store.ts";

/**
 * Options of {@linkcode sharedCache}.
 *
 * @example
 * ```ts
 * import { MemoryStore } from "@pyproxy/pyproxy";
 * import { sharedCache } from "@pyproxy/pyproxy";
 * const cache = sharedCache({ store: new MemoryStore({ maxEntries: 100 }), namespace: "app", closeStore: true });
 * console.log(cache.name); // "sharedCache"
 * ```
 */
export interface SharedCacheOptions {
  /** Where values live. @default {new MemoryStore({ maxEntries: 10000, maxBytes: 64 MiB })} */
  store?: CacheStore;
  /** Prepended as `namespace + ":"` to every key, for Python and TypeScript alike. */
  namespace?: string;
  /** Close the store when the pool closes. @default {true for the default store, false for a given one} */
  closeStore?: boolean;
  /** Longest key accepted from Python, in characters. @default {1024} */
  maxKeyLength?: number;
}

/**
 * The plugin returned by {@linkcode sharedCache}.
 *
 * @example
 * ```ts
 * import { sharedCache } from "@pyproxy/pyproxy";
 * const cache = sharedCache({ namespace: "app" });
 * await cache.store.set("config", { level: 3 });
 * console.log(await cache.store.get("config")); // { level: 3 }
 * ```
 */
export interface SharedCachePlugin extends Plugin {
  /** The cache as Python models see it (namespaced), for TypeScript code. */
  readonly store: CacheStore;
}

/**
 * Creates the shared-cache plugin (a default plugin of every pool). It
 * serves `cache.get` (`{key}` → value or `null`), `cache.set`
 * (`{key, value, ttl?}`, ttl in seconds) and `cache.delete` (`{key}` →
 * boolean).
 *
 * @example Share a cache between TypeScript and Python models
 * ```ts ignore
 * import { Pool } from "@pyproxy/pyproxy";
 * import { sharedCache } from "@pyproxy/pyproxy";
 * const cache = sharedCache({ namespace: "app" });
 * await using pool = await Pool.start({ plugins: [cache] });
 * await cache.store.set("config", { level: 3 });
 * // a model: host.cache.get("config") == {"level": 3}
 * ```
 */
export function sharedCache(
  options: SharedCacheOptions = {},
): SharedCachePlugin {
  // A store is an object of functions: no JSON gives one.
  checkOptionKeys(
    "sharedCache",
    options,
    [
      "namespace",
      "closeStore",
      "maxKeyLength",
    ],
    undefined,
    ["store"],
  );
  const bad = (field: string, expected: string, got: unknown) =>
    new ConfigError(
      `Cannot create sharedCache plugin: ${field}: expected ${expected}, got ${
        typeof got === "bigint"
          ? String(got)
          : JSON.stringify(got) ?? String(got)
      }`,
      { details: { field } },
    );
  const given = options.store as unknown;
  if (
    given !== undefined &&
    (typeof given !== "object" || given === null ||
      ["get", "set", "delete"].some((m) =>
        typeof (given as Record<string, unknown>)[m] !== "function"
      ))
  ) {
    throw bad(
      "store",
      "a CacheStore (get, set, delete; set from code only, not in pyproxy.json)",
      given,
    );
  }
  if (
    options.namespace !== undefined &&
    (typeof options.namespace !== "string" || options.namespace === "")
  ) throw bad("namespace", "a non-empty string", options.namespace);
  if (
    options.closeStore !== undefined && typeof options.closeStore !== "boolean"
  ) throw bad("closeStore", "a boolean", options.closeStore);
  if (
    options.maxKeyLength !== undefined &&
    !(Number.isInteger(options.maxKeyLength) && options.maxKeyLength >= 1)
  ) throw bad("maxKeyLength", "an integer >= 1", options.maxKeyLength);
  const own = options.store === undefined;
  const inner = options.store ??
    new MemoryStore({ maxEntries: 10_000, maxBytes: 64 * 1024 * 1024 });
  const closeStore = options.closeStore ?? own;
  const prefix = options.namespace === undefined ? "" : `${options.namespace}:`;
  const store = prefix === "" ? inner : namespaced(inner, prefix);

  const key = v.pipe(
    v.string("key must be a string"),
    v.minLength(1, "key must not be empty"),
    v.maxLength(options.maxKeyLength ?? 1024, "key is too long"),
  );
  const GetArgs = v.object({ key });
  const SetArgs = v.object({
    key,
    value: v.optional(v.unknown()),
    ttl: v.nullish(
      v.pipe(
        v.number("ttl must be a number"),
        v.gtValue(0, "ttl must be > 0"),
        v.finite(),
      ),
    ),
  });

  function parse<S extends v.GenericSchema>(
    cmd: string,
    schema: S,
    args: unknown,
  ): v.InferOutput<S> {
    const result = v.safeParse(schema, args);
    if (!result.success) {
      throw new InvalidRequestError(
        `Cannot run ${cmd}: ${result.issues.map((i) => i.message).join("; ")}`,
      );
    }
    return result.output;
  }

  const handlers: Record<string, HostHandler> = {
    async "cache.get"(args) {
      const { key } = parse("cache.get", GetArgs, args);
      return (await store.get(key)) ?? null;
    },
    async "cache.set"(args) {
      const { key, value, ttl } = parse("cache.set", SetArgs, args);
      if (value === undefined) {
        throw new InvalidRequestError(
          "Cannot run cache.set: value is required",
        );
      }
      await store.set(key, value, ttl == null ? {} : { ttl });
      return null;
    },
    "cache.delete"(args) {
      const { key } = parse("cache.delete", GetArgs, args);
      return store.delete(key);
    },
  };

  return {
    name: "sharedCache",
    store,
    handlers,
    // Once the workers have stopped: a model's cache call in the close's
    // grace still reaches the store.
    async onPoolClosed(): Promise<void> {
      if (closeStore) await inner.close();
    },
  };
}

function namespaced(inner: CacheStore, prefix: string): CacheStore {
  return {
    get: (key: string) => inner.get(prefix + key),
    set: (key: string, value: unknown, options?: CacheSetOptions) =>
      inner.set(prefix + key, value, options),
    delete: (key: string) => inner.delete(prefix + key),
    // The inner store may hold other namespaces; only a store of its own can be cleared safely.
    clear: () =>
      Promise.reject(
        new TypeError(
          `Cannot clear a namespaced cache: clear the underlying store instead`,
        ),
      ),
    close: () => inner.close(),
  };
}
