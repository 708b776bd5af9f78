/**
 * The OpenAPI paths of TensorFlow Serving's REST API (KServe's V1
 * protocol): `:predict`, its refused verbs, model metadata, and the
 * readiness fields `GET /v1/models/{name}` adds (`_predict_routes.ts`).
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
  REQUEST_ID_RESPONSE,
  REQUEST_ID_SCHEMA,
  RETRY_AFTER,
  WWW_AUTHENTICATE,
} from "./_openapi_parts.ts";

const ERROR: JsonSchema = {
  type: "object",
  required: ["error"],
  properties: { error: { type: "string" } },
};

/** An error in the protocol's shape, with the response `headers` it carries. */
const error = (description: string, headers?: OpenApiObject): OpenApiObject =>
  jsonResponse(description, ERROR, headers);

/**
 * What `GET /v1/models/{name}` (and a version's) adds to the description
 * for KServe V1's clients (`ready`) and TensorFlow Serving's
 * (`model_version_status`).
 *
 * @example
 * ```ts
 * import { READINESS } from "./_openapi_predict_routes.ts";
 * console.log(Object.keys(READINESS.properties as object)); // ["ready", "model_version_status"]
 * ```
 */
export const READINESS: JsonSchema = {
  type: "object",
  properties: {
    ready: {
      type: "boolean",
      description:
        "A worker that holds the model is ready, it is in service, and the gateway is not draining (KServe V1).",
    },
    model_version_status: {
      type: "array",
      description:
        "TensorFlow Serving's model status: one entry (a model with versions, by its name: one per version).",
      items: {
        type: "object",
        required: ["version", "state", "status"],
        properties: {
          version: {
            type: "string",
            description:
              "The version's label, else the model's version number.",
          },
          state: {
            type: "string",
            enum: ["AVAILABLE", "UNAVAILABLE", "LOADING"],
          },
          status: {
            type: "object",
            required: ["error_code", "error_message"],
            properties: {
              error_code: { type: "string", enum: ["OK", "UNAVAILABLE"] },
              error_message: { type: "string" },
            },
          },
        },
      },
    },
  },
};

const PREDICT_REQUEST: JsonSchema = {
  type: "object",
  properties: {
    instances: {
      type: "array",
      description:
        "Row format: one item per instance. A model with `execute_batch` gets one message per instance, in its batches; another gets the whole body.",
    },
    inputs: {
      description:
        "Columnar format (a list, or an object of lists): a batching model reads it row by row.",
    },
    signature_name: {
      type: "string",
      description: "Passed to a model that gets the whole body; else ignored.",
    },
  },
};

const PREDICT_RESPONSE: JsonSchema = {
  type: "object",
  description:
    "`predictions` for `instances`, `outputs` for `inputs`; a model's own dict with either key as it returned it.",
  properties: { predictions: {}, outputs: {} },
};

const TENSOR_INFO: JsonSchema = {
  type: "object",
  properties: {
    dtype: { type: "string" },
    tensor_shape: { type: "object" },
    name: { type: "string" },
  },
};

const METADATA: JsonSchema = {
  type: "object",
  required: ["model_spec", "metadata"],
  properties: {
    model_spec: {
      type: "object",
      properties: {
        name: { type: "string" },
        signature_name: { type: "string" },
        version: { type: "string" },
      },
    },
    metadata: {
      type: "object",
      description:
        "`signature_def.signature_def.serving_default`: `inputs` and `outputs` (the declared fields that map to tensors) by name, each `{dtype, tensor_shape, name}`.",
      properties: {
        signature_def: {
          type: "object",
          additionalProperties: {
            type: "object",
            additionalProperties: {
              type: "object",
              properties: {
                inputs: { type: "object", additionalProperties: TENSOR_INFO },
                outputs: { type: "object", additionalProperties: TENSOR_INFO },
                method_name: { type: "string" },
              },
            },
          },
        },
      },
    },
  },
};

/** The guards' and the drain's answers, in `{"error": message}`. */
function guarded(
  responses: Record<string, OpenApiObject>,
  token: boolean,
): Record<string, OpenApiObject> {
  return {
    ...responses,
    ...(token
      ? { "401": error("Missing or wrong bearer token.", WWW_AUTHENTICATE) }
      : {}),
    "403": error("`Host` or `Origin` not allowed."),
    "503": responses["503"] ??
      error("The server is draining (with `Retry-After`).", RETRY_AFTER),
  };
}

/**
 * The `:predict` paths (answered `{"error": message}` on failure) and
 * TensorFlow Serving's model metadata.
 *
 * @example
 * ```ts
 * import { predictPaths } from "./_openapi_predict_routes.ts";
 * const paths = predictPaths({ token: false, allowEval: false, allowManage: false, bodyLimit: 1024 });
 * console.log("/v1/models/{name}:predict" in paths); // true
 * ```
 */
export function predictPaths(
  o: GatewayRouteOptions,
): Record<string, OpenApiObject> {
  const name = pathParam("name", "The model's name.", { type: "string" });
  const version = pathParam(
    "version",
    "A version's label, or a model's own version number (as `GET /v1/models/{name}` shows it); another is a 404.",
    { type: "string" },
  );
  const predict = (operationId: string, parameters: OpenApiObject[]) => ({
    post: {
      operationId,
      tags: ["execute"],
      summary: "Run a model (TensorFlow Serving's REST predict, KServe V1)",
      description:
        "`:explain`, `:classify` and `:regress` in place of `:predict` are a 501 naming what to call.",
      parameters: [
        ...parameters,
        {
          name: "X-Request-Id",
          in: "header",
          required: false,
          schema: REQUEST_ID_SCHEMA,
        },
      ],
      requestBody: jsonBody(PREDICT_REQUEST, true),
      responses: guarded({
        "200": jsonResponse(
          "The predictions.",
          PREDICT_RESPONSE,
          REQUEST_ID_RESPONSE,
        ),
        "400": error(
          'A body that is not `{"instances": [...]}` or `{"inputs": ...}`, inputs the model declares otherwise, or a model that streams (call `/stream`).',
        ),
        "404": error("No such model, or not that version."),
        "408": error("The body did not arrive within `limits.requestTimeout`."),
        "413": error(`The body is over ${o.bodyLimit} bytes.`),
        "422": error("The model raised an exception."),
        "429": error("The queue is full (with `Retry-After`).", RETRY_AFTER),
        "501": error("`:explain`, `:classify`, `:regress`: not served."),
        "502": error("The worker died during the call."),
        "503": error(
          "No worker, the server is draining (both with `Retry-After`), or the model is out of service (no `Retry-After`).",
          RETRY_AFTER,
        ),
        "504": error("The call timed out."),
        "4XX": error(
          "The model raised `pyproxy.HTTPError` with this status (and the allowed headers).",
        ),
        "5XX": error(
          "The model raised `pyproxy.HTTPError` with this status (and the allowed headers).",
        ),
      }, o.token),
    },
  });
  const metadata = (operationId: string, parameters: OpenApiObject[]) => ({
    get: {
      operationId,
      tags: ["models"],
      summary: "A model's signature metadata (TensorFlow Serving)",
      parameters,
      responses: {
        "200": jsonResponse("The metadata.", METADATA),
        "404": jsonResponse("`ModelNotFoundError`: no such model.", {
          $ref: "#/components/schemas/Error",
        }),
        ...(o.token
          ? { "401": { $ref: "#/components/responses/Unauthorized" } }
          : {}),
        "403": { $ref: "#/components/responses/Forbidden" },
        "503": { $ref: "#/components/responses/ShuttingDown" },
      },
    },
  });
  return {
    "/v1/models/{name}:predict": predict("predict", [name]),
    "/v1/models/{name}/versions/{version}:predict": predict(
      "predictVersion",
      [name, version],
    ),
    "/v1/models/{name}/metadata": metadata("modelMetadata", [name]),
    "/v1/models/{name}/versions/{version}/metadata": metadata(
      "modelVersionMetadata",
      [name, version],
    ),
  };
}
