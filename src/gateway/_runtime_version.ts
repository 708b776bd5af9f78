/**
 * The running runtime's version, for `pyproxy_build_info`. Internal.
 *
 * @module
 */

/**
 * Deno's (`Deno.version.deno`) or Bun's (`Bun.version`) version; `""`
 * where neither says.
 *
 * @example
 * ```ts
 * import { runtimeVersion } from "./_runtime_version.ts";
 * console.log(/^\d+\.\d+/.test(runtimeVersion())); // true
 * ```
 */
export function runtimeVersion(): string {
  const g = globalThis as {
    Bun?: { version?: unknown };
    Deno?: { version?: { deno?: unknown } };
  };
  const bun = g.Bun?.version;
  if (typeof bun === "string") return bun;
  const deno = g.Deno?.version?.deno;
  return typeof deno === "string" ? deno : "";
}
