/**
 * Request ids: the id a client gives a model call (the gateway's
 * `X-Request-Id` header, `pool.execute`'s `requestId`), sent to Python with
 * the call (protocol §6, `requestId`) and carried by the model's log records.
 *
 * @module
 */

/** 1 to 128 characters of `A-Za-z0-9._:-`: safe in a header, a log line and a file name. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * What a request id may be, for messages: "1 to 128 characters of
 * A-Za-z0-9._:-".
 */
export const REQUEST_ID_SHAPE = "1 to 128 characters of A-Za-z0-9._:-";

/**
 * Whether `value` is a valid request id (a string of
 * {@linkcode REQUEST_ID_SHAPE}).
 *
 * @example
 * ```ts
 * import { isRequestId } from "./_request_id.ts";
 * console.log(isRequestId("req-42")); // true
 * console.log(isRequestId("a b")); // false
 * ```
 */
export function isRequestId(value: unknown): value is string {
  return typeof value === "string" && REQUEST_ID.test(value);
}
