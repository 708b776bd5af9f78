/**
 * Runtime adapters: pick the one for the runtime we run on.
 *
 * @module
 */
import { bunRuntime } from "./bun.ts";
import { denoRuntime } from "./deno.ts";
import type { Runtime } from "./types.ts";

export type * from "./types.ts";
export { LARGE_BODY_BYTES } from "./types.ts";
export { denoRuntime } from "./deno.ts";
export { bunRuntime } from "./bun.ts";
export {
  materializePythonPackage,
  type MaterializePythonPackageOptions,
  type PythonManifest,
  type PythonManifestFile,
} from "./python_package.ts";

/**
 * Returns the adapter for the current runtime: {@linkcode bunRuntime} when
 * `globalThis.Bun` exists, else {@linkcode denoRuntime}.
 *
 * @example Print the runtime in use
 * ```ts
 * import { defaultRuntime } from "@pyproxy/pyproxy";
 * console.log(defaultRuntime().name); // "deno" (or "bun" under Bun)
 * ```
 */
export function defaultRuntime(): Runtime {
  return "Bun" in globalThis ? bunRuntime() : denoRuntime();
}
