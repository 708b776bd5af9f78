/**
 * Internals: the server's refusal of a request it could not read at all, so
 * ran nothing of: valid JSON nested deeper than its Python's parser allows,
 * or holding an integer of more digits than its Python converts
 * (docs/protocol.md §2, "Too deep", "Too long an integer"). The server
 * answers such a request, in a frame or a spill file, with an
 * `InvalidRequestError` reply worded `Cannot parse request <id>: ...` or
 * `Cannot read spill file: ...` before anything of it is dispatched. Sending
 * it again (in parts) cannot run anything twice: the model batcher relies on
 * it to take apart a batch refused for one call's message
 * (docs/models.md, "Batching"). The host cannot tell those limits in advance:
 * they depend on the server's Python (about 1000 levels on 3.9–3.11, 1500 on
 * 3.12, 10000 on 3.13) and on what a model's code set
 * (`sys.set_int_max_str_digits`).
 *
 * @module
 */

/** The server's wording for a request refused before it was read (§2). */
const UNREAD =
  /^Cannot (?:parse request \d+|read spill file): (?:JSON nested deeper than the server's parser allows|an integer of \d+ digits)/;

/**
 * Whether `error` is the server's refusal of a request it could not read
 * (too deep, too long an integer): nothing of the request ran.
 *
 * @example
 * ```ts
 * import { RemoteError } from "./errors.ts";
 * import { wasUnread } from "./_unread_request.ts";
 * const err = new RemoteError(
 *   "InvalidRequestError",
 *   "Cannot parse request 7: JSON nested deeper than the server's parser allows (maximum recursion depth exceeded)",
 * );
 * console.log(wasUnread(err)); // true
 * ```
 */
export function wasUnread(error: unknown): boolean {
  if (!(error instanceof Error) || error.name !== "InvalidRequestError") {
    return false;
  }
  // Servers since 2026-12-07 mark it (protocol §2, `unread: true`); the
  // wording is for older ones.
  const details = (error as { details?: { unread?: unknown } }).details;
  return details?.unread === true || UNREAD.test(error.message);
}
