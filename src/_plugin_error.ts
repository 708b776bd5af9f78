/**
 * Internals of the plugins: the errors of hooks that throw.
 *
 * @module
 */
import { PluginError, PyProxyError } from "./errors.ts";

/** A hook's error, wrapped in a `PluginError` naming its plugin and hook (one already is: as it is). */
export function pluginError(
  name: string,
  hook: string,
  err: unknown,
): PluginError {
  if (err instanceof PluginError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new PluginError(
    `Cannot run hook ${hook} of plugin '${name}': ${message}`,
    {
      cause: err,
      details: { plugin: name, hook },
    },
  );
}

/**
 * What a caller gets when a message hook throws: a pyproxy error thrown on
 * purpose (`SpillError`, `SerializationError`, ...) is the documented
 * outcome and reaches the caller as it is; anything else is a bug in the
 * plugin and is wrapped in a `PluginError` that names it.
 */
export function messageHookError(
  name: string,
  hook: string,
  err: unknown,
): Error {
  return err instanceof PyProxyError ? err : pluginError(name, hook, err);
}
