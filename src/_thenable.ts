/**
 * Internals: whether a hook's or a handler's result is awaitable.
 *
 * @module
 */

/**
 * True for anything with a `then` method: a Promise, or another awaitable
 * (a query builder, a promise of another realm or library), which
 * `instanceof Promise` misses.
 *
 * @example
 * ```ts
 * import { isThenable } from "./_thenable.ts";
 * console.log(isThenable(Promise.resolve(1)), isThenable({ then() {} }), isThenable({ id: 1 })); // true true false
 * ```
 */
export function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null | undefined)?.then ===
    "function";
}
