/**
 * What a 404 adds for a route of the servers that pyproxy replaces
 * (TorchServe's inference API, a sidecar's health check): a client being
 * migrated learns the gateway's route from the error instead of the docs.
 *
 * @module
 */

// TorchServe: POST /predictions/{model}[/{version}].
const PREDICTIONS = /^\/predictions\/([^/]+)(?:\/[^/]+)?\/?$/;
// TorchServe's /ping; a FastAPI sidecar's usual /health (and Kubernetes' names).
const HEALTH = /^\/(?:ping|health|livez|readyz)\/?$/;

/**
 * The hint for a path of another server's API, or `""`: the route that does
 * the same here, in parentheses after the 404's message.
 *
 * @example
 * ```ts
 * import { foreignRouteHint } from "./_foreign_route_hint.ts";
 * console.log(foreignRouteHint("/predictions/textclf"));
 * // " (to run a model: POST /v1/models/textclf/execute; docs/migrating.md)"
 * ```
 */
export function foreignRouteHint(path: string): string {
  const found = PREDICTIONS.exec(path)?.[1];
  if (found !== undefined) {
    // The path is in the message already: not twice at any length.
    const model = found.length <= 64 ? found : "{name}";
    return ` (to run a model: POST /v1/models/${model}/execute; docs/migrating.md)`;
  }
  if (HEALTH.test(path)) {
    return " (the health check is GET /healthz; docs/migrating.md)";
  }
  return "";
}
