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
 * `headers` (`execute`, `executeStream`: request headers for the model's
 * `host.headers()`) is a plain object of at most 64 lower-case HTTP header
 * names (tokens of at most 256 characters) → strings of at most 8192
 * characters without CR, LF or NUL. A `caller` (`execute`, `executeStream`:
 * who makes the call, for the call hooks) is a string of 1 to 128
 * characters.
 *
 * @module
 */
import { ConfigError } from "./errors.ts";
import { isRequestId, REQUEST_ID_SHAPE } from "./_request_id.ts";
import { checkTracestate, parseTraceparent } from "./_trace_context.ts";

/** The per-call fields this module knows; anything else is not looked at. */
export interface CallOptionFields {
  timeout?: unknown;
  key?: unknown;
  worker?: unknown;
  signal?: unknown;
  onEvent?: unknown;
  onSend?: unknown;
  onResponseMeta?: unknown;
  idempotent?: unknown;
  cancelGrace?: unknown;
  replayBytes?: unknown;
  idleTimeout?: unknown;
  requestId?: unknown;
  contentType?: unknown;
  headers?: unknown;
  caller?: unknown;
  traceparent?: unknown;
  tracestate?: unknown;
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
    onResponseMeta,
    idempotent,
    cancelGrace,
    replayBytes,
    idleTimeout,
    requestId,
    contentType,
    headers,
    caller,
    traceparent,
    tracestate,
  } = options;
  if (onEvent !== undefined && typeof onEvent !== "function") {
    return invalid(action, subject, "onEvent", "a function", onEvent);
  }
  if (onSend !== undefined && typeof onSend !== "function") {
    return invalid(action, subject, "onSend", "a function", onSend);
  }
  if (onResponseMeta !== undefined && typeof onResponseMeta !== "function") {
    return invalid(
      action,
      subject,
      "onResponseMeta",
      "a function",
      onResponseMeta,
    );
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
  if (headers !== undefined) {
    const problem = headersProblem(headers);
    if (problem !== undefined) {
      return invalid(action, subject, "headers", problem, headers);
    }
  }
  if (
    caller !== undefined &&
    !(typeof caller === "string" && caller.length >= 1 && caller.length <= 128)
  ) {
    return invalid(
      action,
      subject,
      "caller",
      "a string of 1 to 128 characters",
      caller,
    );
  }
  if (
    traceparent !== undefined &&
    !(typeof traceparent === "string" && parseTraceparent(traceparent))
  ) {
    return invalid(
      action,
      subject,
      "traceparent",
      // The shape alone misled: an all-zero id has it, and is refused.
      "a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, lower-case hex, neither id all zeros)",
      traceparent,
    );
  }
  if (
    tracestate !== undefined &&
    !(typeof tracestate === "string" && checkTracestate(tracestate))
  ) {
    return invalid(
      action,
      subject,
      "tracestate",
      "a W3C tracestate of at most 512 characters",
      tracestate,
    );
  }
  return undefined;
}

/**
 * Puts a call's `traceparent` (and `tracestate`, only with it) in its
 * `args` (protocol §6): checked with the other options when it is sent.
 */
export function traceContextArgs(
  args: Record<string, unknown>,
  options: { traceparent?: string; tracestate?: string },
): void {
  args.traceparent = options.traceparent;
  if (options.tracestate !== undefined) args.tracestate = options.tracestate;
}

/** Most entries of a call's `headers`, and the longest value of one. */
export const MAX_CALL_HEADERS = 64;
/** See {@linkcode MAX_CALL_HEADERS}. */
export const MAX_CALL_HEADER_VALUE = 8192;

// A lower-case RFC 9110 token: how the gateway (and HTTP/2) spells a name.
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9a-z-]{1,256}$/;
const LINE_BREAK_OR_NUL = /[\r\n\0]/;

/** What is wrong with a call's `headers`, or `undefined`. */
function headersProblem(headers: unknown): string | undefined {
  const shape =
    `a plain object of at most ${MAX_CALL_HEADERS} lower-case HTTP header names → strings`;
  if (
    typeof headers !== "object" || headers === null || Array.isArray(headers)
  ) {
    return shape;
  }
  const names = Object.keys(headers);
  if (names.length > MAX_CALL_HEADERS) return shape;
  for (const name of names) {
    const value = (headers as Record<string, unknown>)[name];
    if (!HEADER_NAME.test(name)) {
      const shown = JSON.stringify(name.slice(0, 64));
      // A name in any case is what fetch's Headers and HTTP take: say the fix.
      const lower = name.toLowerCase();
      return HEADER_NAME.test(lower)
        ? `${shape} (${shown} is not lower-case: write ${
          JSON.stringify(lower.slice(0, 64))
        })`
        : `${shape} (${shown} is not one)`;
    }
    if (
      typeof value !== "string" || value.length > MAX_CALL_HEADER_VALUE ||
      LINE_BREAK_OR_NUL.test(value)
    ) {
      return `${shape} (the value of ${name} is not a string of at most ${MAX_CALL_HEADER_VALUE} characters without CR, LF or NUL)`;
    }
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
