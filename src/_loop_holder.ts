/**
 * Internals: the mark a session sets on the `TimeoutError` of a request
 * that held the server's event loop when it timed out (its `busy` events
 * named it: an inline call, which cannot even read its cancel). The pool
 * marks the model threaded on such a timeout only: another call of the same
 * model that timed out behind it (queued on the server, never run) says
 * nothing about that call, which may be slow and complete (docs/reliability.md,
 * "A fast model's call hangs").
 *
 * @module
 */

/** The key of the mark: a symbol, so that no data (`details`, JSON) shows it. */
const HELD: unique symbol = Symbol("pyproxy.heldLoop");

/**
 * Marks `error` as the timeout of a call of model `model` that held the
 * server's event loop. Never throws: an error that cannot take a property
 * stays unmarked (the model is then not marked threaded at the timeout; the
 * hang probe's kill still marks it).
 *
 * @example
 * ```ts
 * import { heldLoopOf, markHeldLoop } from "./_loop_holder.ts";
 * const err = new Error("Cannot complete executeModel: timed out after 400 ms");
 * markHeldLoop(err, "scorer");
 * console.log(heldLoopOf(err), heldLoopOf(new Error("x"))); // "scorer" undefined
 * ```
 */
export function markHeldLoop(error: Error, model: string): void {
  // Not enumerable: a logged or inspected error looks as before.
  Reflect.defineProperty(error, HELD, { value: model, configurable: true });
}

/** The model {@linkcode markHeldLoop} named on `error`, or `undefined`. */
export function heldLoopOf(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const model = (error as { [HELD]?: unknown })[HELD];
  return typeof model === "string" ? model : undefined;
}
