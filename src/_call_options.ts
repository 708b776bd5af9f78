/**
 * Checks of per-call options (`pool.request`/`execute`, `session.request`,
 * `pool.eval`, `openSession`), which unlike the pool's options arrive on
 * every call: a few `typeof` tests on the fields that are present, no
 * allocation unless one is wrong.
 *
 * A `timeout` is a number of milliseconds >= 0: `Infinity` means none (it
 * overrides the pool's `requestTimeout`), and `0` means the deadline has
 * already passed, so the call rejects with `TimeoutError` at once and is
 * never sent (on every runtime: a 0 ms timer raced the reply before).
 * `cancelGrace` is a number of milliseconds >= 0 too; `Infinity`, or any
 * value beyond 2^31 − 1 (a timer's range), means no limit. A stream's
 * `idleTimeout` is a number of milliseconds > 0 (`Infinity`, or beyond a
 * timer's range: none): `0` would cut every stream before its reader could
 * take an item, so it is refused rather than given a meaning. A
 * `requestId` (`execute`, `executeStream`) is a string of 1 to 128
 * characters of `A-Za-z0-9._:-`, as the gateway accepts in `X-Request-Id`.
 *
 * @module
 */
import { ConfigError } from "./errors.ts";
import { isRequestId, REQUEST_ID_SHAPE } from "./_request_id.ts";

/** The per-call fields this module knows; anything else is not looked at. */
export interface CallOptionFields {
  timeout?: unknown;
  key?: unknown;
  worker?: unknown;
  signal?: unknown;
  onEvent?: unknown;
  onSend?: unknown;
  idempotent?: unknown;
  cancelGrace?: unknown;
  replayBytes?: unknown;
  idleTimeout?: unknown;
  requestId?: unknown;
  contentType?: unknown;
}

/**
 * The `ConfigError` for the first invalid field of `options`, or
 * `undefined`. `action` and `subject` start the message ("Cannot send call"
 * and "executeModel"): joined only when a field is wrong.
 */
export function callOptionsError(
  action: string,
  options: CallOptionFields,
  subject?: string,
): ConfigError | undefined {
  const { timeout, key, worker, signal } = options;
  if (timeout !== undefined && !(typeof timeout === "number" && timeout >= 0)) {
    return invalid(action, subject, "timeout", "a number of ms >= 0", timeout);
  }
  if (key !== undefined && typeof key !== "string") {
    return invalid(action, subject, "key", "a string", key);
  }
  if (worker !== undefined && (typeof worker !== "string" || worker === "")) {
    return invalid(
      action,
      subject,
      "worker",
      'a worker id such as "w1"',
      worker,
    );
  }
  if (signal !== undefined && !isSignal(signal)) {
    return invalid(action, subject, "signal", "an AbortSignal", signal);
  }
  return rareFieldsError(action, options, subject);
}

// Split off so the common call (timeout, key) runs the short function above.
function rareFieldsError(
  action: string,
  options: CallOptionFields,
  subject: string | undefined,
): ConfigError | undefined {
  const {
    onEvent,
    onSend,
    idempotent,
    cancelGrace,
    replayBytes,
    idleTimeout,
    requestId,
    contentType,
  } = options;
  if (onEvent !== undefined && typeof onEvent !== "function") {
    return invalid(action, subject, "onEvent", "a function", onEvent);
  }
  if (onSend !== undefined && typeof onSend !== "function") {
    return invalid(action, subject, "onSend", "a function", onSend);
  }
  if (idempotent !== undefined && typeof idempotent !== "boolean") {
    return invalid(action, subject, "idempotent", "a boolean", idempotent);
  }
  if (
    cancelGrace !== undefined &&
    !(typeof cancelGrace === "number" && cancelGrace >= 0)
  ) {
    return invalid(
      action,
      subject,
      "cancelGrace",
      "a number of ms >= 0",
      cancelGrace,
    );
  }
  if (
    replayBytes !== undefined &&
    !(typeof replayBytes === "number" && replayBytes >= 0)
  ) {
    return invalid(
      action,
      subject,
      "replayBytes",
      "a number >= 0",
      replayBytes,
    );
  }
  if (
    idleTimeout !== undefined &&
    !(typeof idleTimeout === "number" && idleTimeout > 0)
  ) {
    return invalid(
      action,
      subject,
      "idleTimeout",
      "a number of ms > 0",
      idleTimeout,
    );
  }
  if (requestId !== undefined && !isRequestId(requestId)) {
    return invalid(action, subject, "requestId", REQUEST_ID_SHAPE, requestId);
  }
  if (contentType !== undefined && !isMediaType(contentType)) {
    return invalid(
      action,
      subject,
      "contentType",
      "a media type of 1 to 256 printable ASCII characters",
      contentType,
    );
  }
  return undefined;
}

const MEDIA_TYPE = /^[\x20-\x7e]{1,256}$/;

/** A `contentType`: what an HTTP header can hold, 1 to 256 characters. */
function isMediaType(value: unknown): boolean {
  return typeof value === "string" && MEDIA_TYPE.test(value);
}

function isSignal(value: unknown): boolean {
  return typeof value === "object" && value !== null &&
    typeof (value as AbortSignal).aborted === "boolean" &&
    typeof (value as AbortSignal).addEventListener === "function";
}

function invalid(
  action: string,
  subject: string | undefined,
  field: string,
  expected: string,
  got: unknown,
): ConfigError {
  const shown = typeof got === "string"
    ? JSON.stringify(got)
    : typeof got === "function"
    ? "a function"
    : typeof got === "object" && got !== null
    ? (Array.isArray(got) ? "an array" : "an object")
    : String(got);
  return new ConfigError(
    `${action}${
      subject === undefined ? "" : ` ${subject}`
    }: ${field}: expected ${expected}, got ${shown}`,
    { details: { field } },
  );
}
