/**
 * Whether a plugin's `canCall` hides a model from a request's token.
 * Internal.
 *
 * @module
 */
import type { RouteContext } from "./route_context.ts";

/**
 * `true` when the pool's `canCall` (its plugins') says the token `request`
 * was let in with (`caller`, when the direct path read it) may not call
 * `model`: a call of it is answered as one of a model that is not there
 * (404, before its body), as its descriptions are. `false` without
 * `canCall`.
 *
 * @example
 * ```ts ignore
 * if (hidesModel(ctx, request, "scorer")) throw modelNotFound("scorer");
 * ```
 */
export function hidesModel(
  ctx: Pick<RouteContext, "pool" | "callers">,
  request: Request,
  model: string,
  caller?: string,
): boolean {
  const pool = ctx.pool;
  const canCall = pool.canCall;
  if (canCall === undefined) return false;
  return !canCall.call(pool, model, caller ?? ctx.callers?.get(request));
}
