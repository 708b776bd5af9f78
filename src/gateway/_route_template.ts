/**
 * The route template of a request the gateway's app answered, for the
 * `route` label of `pyproxy_http_responses_total`. Internal.
 *
 * @module
 */
import type { Context } from "hono";
import { matchedRoutes } from "hono/route";

/** The `route` of a path that no route matched (a 404 of no route, a refusal before routing). */
export const UNMATCHED_ROUTE = "_unmatched";

/** What the direct path of `POST /v1/models/{name}/execute` counts under (app.ts). */
export const EXECUTE_ROUTE = "/v1/models/{name}/execute";

/** `:predict` is answered by a middleware, not a route of its own. */
const PREDICT: ReadonlyArray<readonly [RegExp, string]> = [
  [/^\/v1\/models\/[^/:]+:[^/]*$/, "/v1/models/{name}:{verb}"],
  [
    /^\/v1\/models\/[^/:]+\/versions\/[^/:]+:[^/]*$/,
    "/v1/models/{name}/versions/{version}:{verb}",
  ],
];

/**
 * The template of the route that answered `c` (`/v1/models/{name}/execute`:
 * Hono's `:name` written as OpenAPI's and the spans' `http.route` write
 * it), never the path as sent: a label whose values are as few as the
 * routes, whatever the clients send. A `:predict` (or other `:verb`) path
 * has its own; any other path no route matched is
 * {@linkcode UNMATCHED_ROUTE}.
 *
 * @example
 * ```ts ignore
 * app.use(async (c, next) => {
 *   await next();
 *   metrics.countHttp(c.res.status, routeTemplate(c));
 * });
 * ```
 */
export function routeTemplate(c: Context): string {
  const routes = matchedRoutes(c);
  // The handlers come after the middlewares (`ALL`) that match every path.
  for (let i = routes.length - 1; i >= 0; i--) {
    const route = routes[i]!;
    if (route.method !== "ALL") {
      return route.path.replace(/:(\w+)(\{[^}]*\})?/g, "{$1}");
    }
  }
  const path = c.req.path;
  for (const [pattern, template] of PREDICT) {
    if (pattern.test(path)) return template;
  }
  return UNMATCHED_ROUTE;
}
