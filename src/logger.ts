/**
 * The logger pyproxy writes to: the part of a LogTape `Logger` it uses, so a
 * `getLogger(...)` result fits without LogTape's types being part of the
 * public API.
 *
 * @module
 */

/**
 * A structured logger: `message` may hold `{placeholders}` filled from
 * `properties`. Every LogTape `Logger` is one; so is a small adapter over
 * another logging library, which fills them: pyproxy's records are
 * templates (what a model prints comes as `"{message}"`, the line in
 * `properties.message`, with `model`, `worker` and `stream`).
 *
 * @example Pass a LogTape logger, or an adapter
 * ```ts
 * import type { Logger } from "@pyproxy/pyproxy";
 * const fill = (message: string, properties: Record<string, unknown>) =>
 *   message.replace(/\{(\w+)\}/g, (all, key: string) => key in properties ? String(properties[key]) : all);
 * const log = (level: string) => (message: string, properties: Record<string, unknown> = {}) =>
 *   console.log(level, fill(message, properties), properties);
 * const logger: Logger = {
 *   trace: log("trace"),
 *   debug: log("debug"),
 *   info: log("info"),
 *   warn: log("warn"),
 *   error: log("error"),
 *   fatal: log("fatal"),
 * };
 * logger.info("Started {workers} workers", { workers: 2 });
 * ```
 */
export interface Logger {
  /** Logs at the `trace` level. */
  trace(message: string, properties?: Record<string, unknown>): void;
  /** Logs at the `debug` level. */
  debug(message: string, properties?: Record<string, unknown>): void;
  /** Logs at the `info` level. */
  info(message: string, properties?: Record<string, unknown>): void;
  /** Logs at the `warning` level. */
  warn(message: string, properties?: Record<string, unknown>): void;
  /** Logs at the `error` level. */
  error(message: string, properties?: Record<string, unknown>): void;
  /** Logs at the `fatal` level. */
  fatal(message: string, properties?: Record<string, unknown>): void;
  /**
   * Whether a record of `level` would be written (LogTape's loggers have it):
   * hot paths skip building the properties of a record nobody reads. Without
   * it, every record is built.
   */
  isEnabledFor?(
    level: "trace" | "debug" | "info" | "warning" | "error" | "fatal",
  ): boolean;
}
