/**
 * Checks of a plugin factory's options object (internal): the plugins are
 * configured from `pyproxy.json` too, where a typo must not pass silently.
 *
 * @module
 */
import { ConfigError } from "../src/errors.ts";

/**
 * Throws a `ConfigError` when `options` is not a plain object or has a key
 * outside `known` ("Cannot create reconnect plugin: unknown option
 * 'maxCrash' (known: ...)"). `field` names a nested object ("backoff").
 */
export function checkOptionKeys(
  plugin: string,
  options: unknown,
  known: readonly string[],
  field?: string,
): void {
  const where = field === undefined ? "" : `${field}: `;
  if (
    typeof options !== "object" || options === null || Array.isArray(options)
  ) {
    throw new ConfigError(
      `Cannot create ${plugin} plugin: ${where}expected an options object`,
      { details: field === undefined ? {} : { field } },
    );
  }
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      const name = field === undefined ? key : `${field}.${key}`;
      throw new ConfigError(
        `Cannot create ${plugin} plugin: unknown option '${name}' (known: ${
          known.map((k) => field === undefined ? k : `${field}.${k}`).join(
            ", ",
          )
        })`,
        { details: { field: name } },
      );
    }
  }
}
