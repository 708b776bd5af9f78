/**
 * The bundled plugins. `reconnect`, `spillover` and `sharedCache` are on by
 * default in `Pool.start`; `autoscale` is added on request; see
 * `docs/plugins.md`.
 *
 * @module
 */
export {
  reconnect,
  type ReconnectBackoff,
  type ReconnectOptions,
} from "./reconnect.ts";
export * from "./spillover.ts";
export * from "./shared_cache.ts";
export * from "./autoscale.ts";
export * from "./cache_store.ts";
export * from "./memory_store.ts";
export * from "./redis_store.ts";
