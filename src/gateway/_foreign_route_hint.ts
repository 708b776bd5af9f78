/**
 * What a 404 (or a 405) adds for a route of the servers that pyproxy
 * replaces (TorchServe's inference API, a `:predict` with its colon encoded, a
 * sidecar's health check or its FastAPI `/docs`): a client being migrated learns the gateway's
 * route from the error instead of the docs.
 *
 * @module
 */

// TorchServe: POST /predictions/{model}[/{version}].
const PREDICTIONS = /^\/predictions\/([^/]+)(?:\/[^/]+)?\/?$/;
// TorchServe's /ping; a FastAPI sidecar's usual /health (and Kubernetes' names).
const HEALTH = /^\/(?:ping|health|livez|readyz)\/?$/;
// A FastAPI sidecar's interactive docs (Swagger UI, ReDoc).
const API_DOCS = /^\/(?:docs|redoc)(?:\/oauth2-redirect)?\/?$/;
// TensorFlow Serving's and KServe V1's POST /v1/models/{model}:predict
// with its colon percent-encoded: the router matches the colon as it is
// (no model name has one).
const ENCODED_VERB =
  /^\/v1\/models\/((?:[^/]+\/versions\/)?[^/]+?)%3[aA](predict|explain|classify|regress)\/?$/;

// Triton's model configuration: read here, never written (its 405).
const MODEL_CONFIG = /^\/v2\/models\/[^/]+(?:\/versions\/[^/]+)?\/config$/;

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
  const verb = ENCODED_VERB.exec(path);
  if (verb !== null) {
    const model = verb[1]!.length <= 64 ? verb[1] : "{name}";
    return ` (write the colon before ${
      verb[2]
    } as it is, not percent-encoded: POST /v1/models/${model}:${verb[2]})`;
  }
  if (MODEL_CONFIG.test(path)) {
    return " (a model's configuration comes from its class and its spec, and GET reads it; to change it, load the model again with another spec: PUT /v1/models/{name}, or POST /v2/repository/models/{name}/load with a config, both with --allow-manage; docs/gateway.md)";
  }
  if (HEALTH.test(path)) {
    return " (the health check is GET /healthz; docs/migrating.md)";
  }
  if (API_DOCS.test(path)) {
    return " (no Swagger UI here: the API is described by GET /openapi.json, which Swagger UI or ReDoc can load, and the dashboard is GET /; docs/migrating.md)";
  }
  return "";
}
