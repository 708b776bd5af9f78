/**
 * `SpawnOptions.unsetEnv` against an environment: its names, a name ending
 * in `*` standing for every variable whose name starts with the rest.
 *
 * @module
 */

/**
 * The variables of `env` (the current environment) that `unsetEnv` names
 * and `given` (the child's own `env`) does not set.
 *
 * @example
 * ```ts
 * import { unsetNames } from "./_unset_env.ts";
 * const env = { OTEL_SERVICE_NAME: "a", OTEL_EXPORTER_OTLP_HEADERS: "k=v", HOME: "/" };
 * console.log(unsetNames(["OTEL_*", "PYPROXY_TOKEN"], env, { OTEL_SERVICE_NAME: "b" }));
 * // ["OTEL_EXPORTER_OTLP_HEADERS"]
 * ```
 */
export function unsetNames(
  unsetEnv: readonly string[],
  env: Record<string, string | undefined>,
  given: Record<string, string> | undefined,
): string[] {
  const out: string[] = [];
  for (const entry of unsetEnv) {
    if (entry.endsWith("*")) {
      const prefix = entry.slice(0, -1);
      for (const name of Object.keys(env)) {
        if (name.startsWith(prefix)) out.push(name);
      }
    } else if (env[entry] !== undefined) out.push(entry);
  }
  return out.filter((name) => given?.[name] === undefined);
}
