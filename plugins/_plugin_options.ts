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
 * `codeOnly` are known options whose values JSON cannot express (a logger,
 * a store): the list names them apart, so that a reader of the error about
 * `pyproxy.json` is not sent to set them there.
 */
export function checkOptionKeys(
  plugin: string,
  options: unknown,
  known: readonly string[],
  field?: string,
  codeOnly: readonly string[] = [],
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
  const qualified = (k: string) => field === undefined ? k : `${field}.${k}`;
  for (const key of Object.keys(options)) {
    if (!known.includes(key) && !codeOnly.includes(key)) {
      const name = qualified(key);
      const fromCode = codeOnly.length === 0
        ? ""
        : `; from code only, not in pyproxy.json: ${
          codeOnly.map(qualified).join(", ")
        }`;
      throw new ConfigError(
        `Cannot create ${plugin} plugin: unknown option '${name}' (known: ${
          known.map(qualified).join(", ")
        }${fromCode})`,
        { details: { field: name } },
      );
    }
  }
}
