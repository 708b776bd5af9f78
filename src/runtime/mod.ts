/**
 * Runtime adapters: pick the one for the runtime we run on.
 *
 * @module
 */
import { denoRuntime } from "./deno.ts";
import type { Runtime } from "./types.ts";

export type * from "./types.ts";
export { denoRuntime } from "./deno.ts";

/**
 * Returns the adapter for the current runtime (Deno or Bun).
 *
 * @example
 * ```ts
 * import { defaultRuntime } from "./mod.ts";
 * console.log(defaultRuntime().name);
 * ```
 */
export function defaultRuntime(): Runtime {
  return denoRuntime();
}
