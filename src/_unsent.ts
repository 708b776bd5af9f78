/**
 * Internals: the mark of a request's error that the session set because no
 * byte of the request was written (the outbox refused to encode it, or an
 * outgoing middleware failed on it: a `SerializationError`, a plugin's
 * error). Sending it again cannot run anything twice; the model batcher
 * relies on it to take a batch apart when one call's message cannot be
 * encoded (docs/models.md, "Batching"). An error that came back from the
 * server never has it.
 *
 * @module
 */

/** The key of the mark: a symbol, so that no data (`details`, JSON) shows it. */
const UNSENT: unique symbol = Symbol("pyproxy.unsent");

/**
 * Marks `error` as the failure of a request that was never written. Never
 * throws: an error that cannot take a property (frozen) stays unmarked, and
 * whoever reads the mark then treats it as sent, the safe side.
 *
 * @example
 * ```ts
 * import { markUnsent, wasUnsent } from "./_unsent.ts";
 * const err = new Error("Cannot send executeBatch: msgs[1].x is a BigInt");
 * markUnsent(err);
 * console.log(wasUnsent(err), wasUnsent(new Error("sent"))); // true false
 * ```
 */
export function markUnsent(error: Error): void {
  // Not enumerable: a logged or inspected error looks as before.
  Reflect.defineProperty(error, UNSENT, { value: true, configurable: true });
}

/** Whether {@linkcode markUnsent} marked `error`: its request was never written. */
export function wasUnsent(error: unknown): boolean {
  return typeof error === "object" && error !== null &&
    (error as { [UNSENT]?: unknown })[UNSENT] === true;
}
