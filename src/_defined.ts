/**
 * Options with `exactOptionalPropertyTypes`: an optional key may be missing
 * but not `undefined`, so a value that may be `undefined` cannot be passed on
 * as it is. `defined` keeps only the keys whose value is not `undefined`, to
 * be spread into the options, instead of one
 * `...(x === undefined ? {} : { key: x })` per key. Not for hot paths (a
 * new object and a loop over its keys).
 *
 * @module
 */

/** `T` with every key optional and `undefined` taken out of its values. */
export type Defined<T> = { [K in keyof T]?: Exclude<T[K], undefined> };

/**
 * A copy of `values` without its keys whose value is `undefined`.
 *
 * @example
 * ```ts
 * import { defined } from "./_defined.ts";
 * const limit: number | undefined = undefined;
 * console.log({ workers: 2, ...defined({ limit, name: "echo" }) });
 * // { workers: 2, name: "echo" }
 * ```
 */
export function defined<T extends object>(values: T): Defined<T> {
  const out: Partial<T> = {};
  for (const key in values) {
    if (values[key] !== undefined) out[key] = values[key];
  }
  return out as Defined<T>;
}
