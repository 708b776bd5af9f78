/**
 * The Open Inference Protocol's model repository extension
 * (`_inference_repository_routes.ts`) as OpenAPI path items, listed with
 * model management only, as `PUT /v1/models/{name}` is; errors in the
 * protocol's shape, `{"error": "message"}`.
 *
 * @module
 */
import type { JsonSchema } from "./_declared_schema.ts";
import {
  type GatewayRouteOptions,
  jsonBody,
  jsonResponse,
  type OpenApiObject,
  pathParam,
} from "./_openapi_parts.ts";

const ERROR: JsonSchema = {
  type: "object",
  required: ["error"],
  properties: { error: { type: "string" } },
};

const error = (description: string): OpenApiObject =>
  jsonResponse(description, ERROR);

const NAME = [pathParam("name", "The model's name.", { type: "string" })];

const DONE: OpenApiObject = { description: "Done (no body, as Triton)." };

/**
 * `POST /v2/repository/index`, `.../models/{name}/load` and `.../unload`,
 * when `allowManage`.
 */
export function repositoryPaths(
  o: GatewayRouteOptions,
): Record<string, OpenApiObject> {
  if (!o.allowManage) return {};
  const guarded = (
    responses: Record<string, OpenApiObject>,
  ): Record<string, OpenApiObject> => ({
    ...responses,
    "400": responses["400"] ??
      error("A body that is not the route's, or not JSON."),
    ...(o.token ? { "401": error("Missing or wrong bearer token.") } : {}),
    "403": error("`Host` or `Origin` not allowed."),
    "413": error(`The body is over ${o.bodyLimit} bytes.`),
    "503": error("The server is draining."),
  });
  const post = (
    operationId: string,
    summary: string,
    body: JsonSchema,
    responses: Record<string, OpenApiObject>,
    parameters?: OpenApiObject[],
  ): OpenApiObject => ({
    post: {
      operationId,
      tags: ["inference protocol", "management"],
      summary,
      ...(parameters === undefined ? {} : { parameters }),
      requestBody: jsonBody(body, false),
      responses: guarded(responses),
    },
  });
  return {
    "/v2/repository/index": post(
      "inferenceRepositoryIndex",
      "The models loaded and those the repository could load",
      {
        type: "object",
        properties: {
          ready: {
            type: "boolean",
            description: "Only the models ready for inference.",
          },
        },
        additionalProperties: false,
      },
      {
        "200": jsonResponse("Each model, by name.", {
          type: "array",
          items: {
            type: "object",
            required: ["name", "state", "reason"],
            properties: {
              name: { type: "string" },
              version: { type: "string" },
              state: {
                type: "string",
                enum: ["READY", "UNAVAILABLE", "LOADING", "UNLOADING"],
              },
              reason: { type: "string" },
            },
          },
        }),
      },
    ),
    "/v2/repository/models/{name}/load": post(
      "inferenceRepositoryModelLoad",
      "Load a model of the repository, or reload it",
      {
        type: "object",
        properties: {
          parameters: {
            type: "object",
            properties: {
              config: {
                type: "string",
                description:
                  "Triton's model configuration as JSON: `name`, `parameters` (string values: the options), `instance_group` (one group's `count`: the workers), and pyproxy's `options`, `class`, `timeout`, `workers`.",
              },
            },
            additionalProperties: false,
          },
        },
        additionalProperties: false,
      },
      {
        "200": DONE,
        "400": error(
          "A bad name, body or config, a `file:` parameter, a path out of the models directory, or a model that fails to load.",
        ),
        "404": error("The repository has no such model."),
        "504": error("Not loaded within `limits.loadTimeout`."),
      },
      NAME,
    ),
    "/v2/repository/models/{name}/unload": post(
      "inferenceRepositoryModelUnload",
      "Unload a model (its calls in flight finish)",
      {
        type: "object",
        properties: {
          parameters: {
            type: "object",
            properties: {
              unload_dependents: {
                type: "boolean",
                description: "Accepted and ignored: no model has dependents.",
              },
            },
            additionalProperties: false,
          },
        },
        additionalProperties: false,
      },
      {
        "200": DONE,
        "400": error("A bad body, or a model that is not loaded."),
        "504": error("Not unloaded within `limits.loadTimeout`."),
      },
      NAME,
    ),
  };
}
