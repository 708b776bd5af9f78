/**
 * The answer to an error a route threw (the app's `onError`, and the eval
 * routes' own, which add a request id), and its log line.
 *
 * @module
 */
import type { Context } from "hono";
import { errorResponse } from "./error_response.ts";
import type { RouteContext } from "./route_context.ts";

/**
 * The error response for `err` (`requestId`: in its body and its
 * `X-Request-Id` header), logged when the client cannot see what happened:
 * a 500 (it reads "internal error" unless `debug`) with its stack, other
 * 5xx in one line.
 *
 * @example
 * ```ts ignore
 * app.onError((err, c) => routeError(ctx, err, c));
 * ```
 */
export function routeError(
  ctx: Pick<RouteContext, "debug" | "logger">,
  err: unknown,
  c: Context,
  requestId?: string,
): Response {
  const res = errorResponse(err, ctx.debug(c.req.raw), requestId);
  if (res.status < 500) return res;
  if (res.status === 500) {
    // Unexpected: the error with its stack.
    if (requestId === undefined) {
      ctx.logger.warn("Request failed: {error}", { error: err });
    } else {
      ctx.logger.warn("Request failed (request id {requestId}): {error}", {
        error: err,
        requestId,
      });
    }
    return res;
  }
  // An outcome the error names (a PUT past loadTimeout, no worker): one
  // line, no stack.
  const properties = {
    method: c.req.method,
    path: c.req.path,
    status: res.status,
    message: err instanceof Error ? err.message : String(err),
  };
  if (requestId === undefined) {
    ctx.logger.warn(
      "{method} {path} failed with {status}: {message}",
      properties,
    );
  } else {
    ctx.logger.warn(
      "{method} {path} failed with {status} (request id {requestId}): {message}",
      { ...properties, requestId },
    );
  }
  return res;
}
