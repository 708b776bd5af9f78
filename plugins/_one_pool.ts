/**
 * Keeps a bundled plugin instance to one pool at a time. Private to the
 * bundled plugins.
 *
 * @module
 */
import { ConfigError } from "../src/errors.ts";

/**
 * The pool a plugin instance serves. Per-pool state (a timer, a spill
 * directory, per-worker-id maps) lives in the factory's closure, so a second
 * pool started with the same instance would overwrite the first one's (and
 * worker ids such as `w1` repeat from pool to pool): {@linkcode OnePool.claim}
 * refuses it with a `ConfigError`, which fails that `Pool.start`.
 *
 * @example
 * ```ts
 * import { onePool } from "./_one_pool.ts";
 * const owner = onePool("spillover");
 * const a = {}, b = {};
 * owner.claim(a);
 * console.log(owner.owns(a), owner.owns(b)); // true false
 * owner.release(a);
 * owner.claim(b); // free again once the first pool closed
 * ```
 */
export interface OnePool {
  /** Takes the instance for `pool` (at `onPoolStart`); throws `ConfigError` while another pool holds it. */
  claim(pool: object): void;
  /** Whether `pool` holds the instance (a failed second start must not tear down the first pool's state). */
  owns(pool: object): boolean;
  /** Frees the instance (at `onPoolClose` or `onPoolClosed`), when `pool` holds it. */
  release(pool: object): void;
}

/** Creates the owner record of one plugin instance; `factory` names the call that makes another. */
export function onePool(factory: string): OnePool {
  let owner: object | undefined;
  return {
    claim(pool) {
      if (owner !== undefined && owner !== pool) {
        throw new ConfigError(
          `Cannot start ${factory} plugin: this instance already serves another pool (call ${factory}() once per pool)`,
          { details: { plugin: factory } },
        );
      }
      owner = pool;
    },
    owns: (pool) => owner === pool,
    release(pool) {
      if (owner === pool) owner = undefined;
    },
  };
}
