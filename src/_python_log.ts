/**
 * Where what model code prints and logs ends up: the server sends it as `log`
 * events (protocol §6, "Model output"), and the pool writes each one to a
 * logger of its own category, `["pyproxy", "python", <model>]`, at the
 * event's level (stdout `info`, stderr `warning`; a Python `logging` record
 * at its own level, `debug` to `error`).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Logger } from "./logger.ts";
import type { OutputRateLimit } from "./_output_rate_limit.ts";
import { parseTraceparent } from "./_trace_context.ts";

/**
 * A logger per model name (`""`: output of no model); `size` is how many it
 * holds on to.
 */
export type PythonLoggers = ((model: string) => Logger) & {
  readonly size: number;
};

/**
 * Loggers kept for reuse at most: models added and removed under new names
 * grew the cache by one logger per name for the pool's life. Past it the
 * oldest is dropped (LogTape gives the same category again on a miss).
 */
const MAX_CACHED = 256;

/**
 * The loggers for model output. With the pool's default logger they are
 * LogTape's `["pyproxy", "python", <model>]`; with a logger of the caller's,
 * its child `["python", <model>]` when it has `getChild` (LogTape's do),
 * else that logger itself (the record's properties still say which model).
 */
export function pythonLoggers(custom: Logger | undefined): PythonLoggers {
  const cache = new Map<string, Logger>();
  const getChild = (custom as {
    getChild?: (sub: readonly [string, ...string[]]) => Logger;
  } | undefined)?.getChild;
  const make = (model: string): Logger => {
    const sub: [string, ...string[]] = model === ""
      ? ["python"]
      : ["python", model];
    if (custom === undefined) return getLogger(["pyproxy", ...sub]);
    return typeof getChild === "function" ? getChild.call(custom, sub) : custom;
  };
  const loggers = (model: string): Logger => {
    let logger = cache.get(model);
    if (logger === undefined) {
      if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!);
      cache.set(model, logger = make(model));
    }
    return logger;
  };
  return Object.defineProperty(loggers, "size", {
    get: () => cache.size,
  }) as PythonLoggers;
}

/**
 * The logger of a part of the pool (`["session"]`, `["python-server"]`): the
 * caller's logger's child when it has `getChild` (LogTape's do), else that
 * logger itself; `undefined` without a logger of the caller's (the part then
 * keeps its own LogTape category, `["pyproxy", ...sub]`).
 */
export function partLogger(
  custom: Logger | undefined,
  sub: [string, ...string[]],
): Logger | undefined {
  if (custom === undefined) return undefined;
  const getChild = (custom as {
    getChild?: (sub: readonly [string, ...string[]]) => Logger;
  }).getChild;
  return typeof getChild === "function" ? getChild.call(custom, sub) : custom;
}

/**
 * Writes one `log` event of worker `worker` to its model's logger; other
 * events are ignored. With `limit`, only the lines it admits (the rest are
 * counted and reported by it).
 */
export function logPythonOutput(
  loggers: PythonLoggers,
  worker: string,
  event: Record<string, unknown>,
  limit?: OutputRateLimit,
): void {
  if (event.event !== "log") return;
  const model = typeof event.model === "string" ? event.model : "";
  const logger = loggers(model);
  let message: string | undefined = String(event.message ?? "");
  if (limit !== undefined) {
    // Records below the logger's level do not count toward the limit.
    const level = event.level === "warning" || event.level === "error" ||
        event.level === "debug"
      ? event.level
      : "info";
    if (logger.isEnabledFor?.(level) === false) return;
    // An error's record whole (a traceback printed or logged): its lines
    // count, but the last ones, the exception's, are not cut off.
    message = limit.admit(logger, model, message, level === "error");
    if (message === undefined) return;
  }
  const properties: Record<string, unknown> = {
    message,
    model: model === "" ? null : model,
    stream: event.stream,
    request: event.request,
    worker,
  };
  // A Python logging record's logger name (stream "logging").
  if (typeof event.logger === "string") properties.logger = event.logger;
  // The call's trace (protocol §6, `traceparent`): its trace id and the
  // gateway's span of the call (the caller's, from the library), as
  // OpenTelemetry's log records name them, so that a log joins its trace.
  if (typeof event.traceparent === "string") {
    const parent = parseTraceparent(event.traceparent);
    if (parent !== undefined) {
      properties.traceId = parent.traceId;
      properties.spanId = parent.parentId;
    }
  }
  // The call's request id (protocol §6, `requestId`), or a batch's
  // (`requestIds`): in the line too, so a text log can be searched for it.
  let template = "{message}";
  if (typeof event.requestId === "string") {
    properties.requestId = event.requestId;
    template = "{message} (request id {requestId})";
  } else if (Array.isArray(event.requestIds)) {
    // A batch's record: the ids of the calls it serves.
    const ids = event.requestIds.filter((id) => typeof id === "string");
    if (ids.length > 0) {
      properties.requestIds = ids;
      // In the line as one string: a console prints an array over several
      // lines once the line is long (Bun past ~80 columns, even with two
      // ids; Deno past six items), and a text log is searched line by line.
      properties.requestIdList = ids.join(", ");
      template = "{message} (request ids {requestIdList})";
    }
  }
  switch (event.level) {
    case "warning":
      logger.warn(template, properties);
      break;
    case "error":
      logger.error(template, properties);
      break;
    case "debug":
      logger.debug(template, properties);
      break;
    default:
      logger.info(template, properties);
  }
}
