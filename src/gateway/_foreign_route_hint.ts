/**
 * What a 404 (or a 405) adds for a route of the servers that pyproxy
 * replaces (TorchServe's inference API, KServe's V1 `:predict`, a
 * sidecar's health check): a client being migrated learns the gateway's
 * route from the error instead of the docs.
 *
 * @module
 */

// TorchServe: POST /predictions/{model}[/{version}].
const PREDICTIONS = /^\/predictions\/([^/]+)(?:\/[^/]+)?\/?$/;
// TorchServe's /ping; a FastAPI sidecar's usual /health (and Kubernetes' names).
const HEALTH = /^\/(?:ping|health|livez|readyz)\/?$/;
// KServe's V1 protocol: POST /v1/models/{model}:predict (or :explain), a
// path the gateway's own /v1/models/{name} takes for a model name (no model
// name has a colon).
const KSERVE_V1 = /^\/v1\/models\/([^/:]+):(?:predict|explain)\/?$/;

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
  const v1 = KSERVE_V1.exec(path)?.[1];
  if (v1 !== undefined) {
    const model = v1.length <= 64 ? v1 : "{name}";
    return ` (KServe's V1 protocol is not served: POST /v1/models/${model}/execute runs the model with a JSON body of its own, POST /v2/models/${model}/infer takes the Open Inference Protocol; docs/migrating.md)`;
  }
  if (HEALTH.test(path)) {
    return " (the health check is GET /healthz; docs/migrating.md)";
  }
  return "";
}
