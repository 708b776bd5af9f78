/**
 * The Open Inference Protocol's routes (`/v2`, inference_protocol_routes.ts)
 * as OpenAPI path items, for `openapi.ts` through `_openapi_routes.ts`:
 * their errors are the protocol's `{"error": "message"}`, with the
 * gateway's statuses.
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
import { DATATYPES, MAX_RANK } from "./_inference_tensors.ts";
import {
  MODEL_CONFIG_SCHEMA,
  STATISTICS_SCHEMA,
} from "./_openapi_inference_extensions.ts";

const ERROR: JsonSchema = {
  type: "object",
  required: ["error"],
  properties: { error: { type: "string" } },
};

/** An error in the protocol's shape, with the response `headers` it carries. */
const error = (description: string, headers?: OpenApiObject): OpenApiObject =>
  jsonResponse(description, ERROR, headers);

const TENSOR_META: JsonSchema = {
  type: "object",
  required: ["name", "datatype", "shape"],
  properties: {
    name: { type: "string" },
    datatype: { type: "string", enum: [...DATATYPES] },
    shape: { type: "array", items: { type: "integer", minimum: -1 } },
  },
};

const PARAMETERS: JsonSchema = { type: "object" };

const INFER_REQUEST: JsonSchema = {
  type: "object",
  required: ["inputs"],
  properties: {
    id: { type: "string", description: "Echoed in the response." },
    parameters: {
      type: "object",
      description:
        'Reach the model as `msg["parameters"]` (but `binary_data_output`).',
    },
    inputs: {
      type: "array",
      items: {
        type: "object",
        required: ["name", "datatype", "shape"],
        properties: {
          name: { type: "string", minLength: 1 },
          datatype: { type: "string", enum: [...DATATYPES] },
          shape: {
            type: "array",
            items: { type: "integer", minimum: 0 },
            maxItems: MAX_RANK,
          },
          parameters: PARAMETERS,
          data: {
            type: "array",
            description: "Row-major, flat or nested.",
          },
        },
      },
    },
    outputs: {
      type: "array",
      items: {
        type: "object",
        required: ["name"],
        properties: {
          name: { type: "string" },
          parameters: {
            type: "object",
            properties: {
              binary_data: { type: "boolean" },
              classification: {
                type: "integer",
                minimum: 1,
                description:
                  "The classification extension: the output's top n classes, as BYTES `score:index[:label]`.",
              },
            },
          },
        },
      },
    },
  },
};

const INFER_RESPONSE: JsonSchema = {
  type: "object",
  required: ["model_name", "outputs"],
  properties: {
    model_name: { type: "string" },
    model_version: { type: "string" },
    id: { type: "string" },
    outputs: {
      type: "array",
      items: {
        type: "object",
        required: ["name", "datatype", "shape"],
        properties: {
          name: { type: "string" },
          datatype: { type: "string", enum: [...DATATYPES] },
          shape: { type: "array", items: { type: "integer", minimum: 0 } },
          parameters: PARAMETERS,
          data: { type: "array" },
        },
      },
    },
  },
};

/** A body of the binary tensor data extension: JSON, then the tensors' bytes. */
const BINARY: OpenApiObject = {
  schema: {
    type: "string",
    contentMediaType: "application/octet-stream",
    description:
      "`Inference-Header-Content-Length` bytes of JSON (the JSON form's schema, `binary_data_size` in the parameters of the tensors that follow), then each such tensor's bytes in order.",
  },
};

const HEADER_LENGTH_SCHEMA: JsonSchema = { type: "integer", minimum: 0 };

/** A model's `HTTPError`: any status of its choice (as on `/v1`). */
const MODEL_HTTP_ERROR =
  "The model raised `pyproxy.HTTPError` with this status (and the allowed headers); it may also answer a status listed here.";

const MODEL_PARAMS = [
  pathParam("name", "The model's name.", { type: "string" }),
];
const VERSION_PARAMS = [
  ...MODEL_PARAMS,
  pathParam(
    "version",
    "The model's current version (docs/gateway.md); another is a 404.",
    { type: "string" },
  ),
];

/** `body` (a request body or a response) that may also come as `type`. */
function withContent(
  body: OpenApiObject,
  type: string,
  media: OpenApiObject,
): OpenApiObject {
  return {
    ...body,
    content: { ...(body.content as OpenApiObject), [type]: media },
  };
}

/** The guards' and the drain's answers, in the protocol's shape. */
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
 * The `/v2` paths: health, server and model metadata, model readiness and
 * inference.
 */
export function inferencePaths(
  o: GatewayRouteOptions,
): Record<string, OpenApiObject> {
  const get = (
    operationId: string,
    summary: string,
    responses: Record<string, OpenApiObject>,
    parameters?: OpenApiObject[],
  ): OpenApiObject => ({
    get: {
      operationId,
      tags: ["inference protocol"],
      summary,
      ...(parameters === undefined ? {} : { parameters }),
      responses: guarded(responses, o.token),
    },
  });
  const ready = (what: string) =>
    jsonResponse(what, {
      type: "object",
      required: ["ready"],
      properties: { name: { type: "string" }, ready: { type: "boolean" } },
    });
  const metadata = jsonResponse("The model's metadata.", {
    type: "object",
    required: ["name", "versions", "platform", "inputs", "outputs"],
    properties: {
      name: { type: "string" },
      versions: { type: "array", items: { type: "string" } },
      platform: { type: "string", const: "pyproxy" },
      inputs: { type: "array", items: TENSOR_META },
      outputs: { type: "array", items: TENSOR_META },
    },
  });
  const infer = (operationId: string, parameters: OpenApiObject[]) => ({
    post: {
      operationId,
      tags: ["inference protocol"],
      summary: "Run the model on tensors (KServe V2 / Triton)",
      description:
        "JSON, or with `Inference-Header-Content-Length` that many bytes of JSON then the inputs' binary data (Triton's binary tensor data extension; the response likewise for outputs asked for as binary).",
      parameters: [
        ...parameters,
        {
          name: "X-Request-Id",
          in: "header",
          required: false,
          schema: REQUEST_ID_SCHEMA,
        },
        {
          name: "Inference-Header-Content-Length",
          in: "header",
          required: false,
          description:
            "The length of the body's JSON, which binary tensors follow (the binary tensor data extension).",
          schema: HEADER_LENGTH_SCHEMA,
        },
      ],
      requestBody: withContent(
        jsonBody(INFER_REQUEST, true),
        "application/octet-stream",
        BINARY,
      ),
      responses: guarded({
        "200": withContent(
          jsonResponse("The outputs.", INFER_RESPONSE, {
            ...REQUEST_ID_RESPONSE,
            "Inference-Header-Content-Length": {
              description:
                "With outputs asked for as binary data: the length of the JSON that their bytes follow.",
              schema: HEADER_LENGTH_SCHEMA,
            },
          }),
          "application/octet-stream",
          BINARY,
        ),
        "400": error(
          "A request that does not fit the protocol or the model's declared inputs, or a compressed body that is corrupt or cut short.",
        ),
        "404": error("No such model, or not that version."),
        "408": error(
          "The body did not arrive within `limits.requestTimeout`.",
        ),
        "413": error(
          `The body is over ${o.bodyLimit} bytes, as sent or once decoded.`,
        ),
        "415": error(
          "A `Content-Encoding` other than gzip, x-gzip and deflate, or more than two codings.",
        ),
        "422": error("The model raised an exception."),
        "429": error("The queue is full (with `Retry-After`).", RETRY_AFTER),
        "500": error(
          "The model's result is not a tensor (ragged lists, objects, mixed types).",
        ),
        "502": error("The worker died during the call."),
        "503": error(
          "No worker, the server is draining (both with `Retry-After`), or the model is out of service (placed on some workers, it crashed those it was moved to; no `Retry-After`).",
          RETRY_AFTER,
        ),
        "504": error("The call timed out."),
        "4XX": error(MODEL_HTTP_ERROR),
        "5XX": error(MODEL_HTTP_ERROR),
      }, o.token),
    },
  });
  const notFound = { "404": error("No such model, or not that version.") };
  const stats = jsonResponse(
    "Triton's statistics: requests that ended through any route (`success`: status below 400, `fail`: 400 or more, with their durations; `compute_infer` is `success` again), and a batching model's batches by size with their time on the worker; `queue`, `compute_input`, `compute_output` and the cache's are zero (not measured per model).",
    STATISTICS_SCHEMA,
  );
  const config = jsonResponse(
    "Triton's model configuration, the fields that map: declared inputs and outputs as tensors (as the metadata's), batching, the workers that hold the model.",
    MODEL_CONFIG_SCHEMA,
  );
  return {
    "/v2": get("inferenceServerMetadata", "Server metadata", {
      "200": jsonResponse("The server's name, version and extensions.", {
        type: "object",
        required: ["name", "version", "extensions"],
        properties: {
          name: { type: "string" },
          version: { type: "string" },
          extensions: { type: "array", items: { type: "string" } },
        },
      }),
    }),
    "/v2/health/live": get("inferenceServerLive", "Liveness", {
      "200": ready("The server answers."),
    }),
    "/v2/health/ready": get("inferenceServerReady", "Readiness", {
      "200": ready("A worker is ready (as `/healthz` says)."),
      "503": ready("No worker is ready, or the server is draining."),
    }),
    "/v2/models/{name}": get(
      "inferenceModelMetadata",
      "Model metadata",
      { "200": metadata, ...notFound },
      MODEL_PARAMS,
    ),
    "/v2/models/{name}/versions/{version}": get(
      "inferenceModelVersionMetadata",
      "Model metadata of a version",
      { "200": metadata, ...notFound },
      VERSION_PARAMS,
    ),
    "/v2/models/{name}/ready": get(
      "inferenceModelReady",
      "Model readiness",
      {
        "200": ready("A worker that holds the model is ready."),
        ...notFound,
        "503": ready("No worker that holds the model is ready."),
      },
      MODEL_PARAMS,
    ),
    "/v2/models/{name}/versions/{version}/ready": get(
      "inferenceModelVersionReady",
      "Model readiness of a version",
      {
        "200": ready("A worker that holds the model is ready."),
        ...notFound,
        "503": ready("No worker that holds the model is ready."),
      },
      VERSION_PARAMS,
    ),
    "/v2/models/stats": get(
      "inferenceStatistics",
      "Statistics of every model version (Triton's statistics extension)",
      { "200": stats },
    ),
    "/v2/models/{name}/stats": get(
      "inferenceModelStatistics",
      "Statistics of each version of a model",
      { "200": stats, ...notFound },
      MODEL_PARAMS,
    ),
    "/v2/models/{name}/versions/{version}/stats": get(
      "inferenceModelVersionStatistics",
      "Statistics of a model version",
      { "200": stats, ...notFound },
      VERSION_PARAMS,
    ),
    "/v2/models/{name}/config": get(
      "inferenceModelConfig",
      "Model configuration (Triton's model configuration extension)",
      { "200": config, ...notFound },
      MODEL_PARAMS,
    ),
    "/v2/models/{name}/versions/{version}/config": get(
      "inferenceModelVersionConfig",
      "Model configuration of a version",
      { "200": config, ...notFound },
      VERSION_PARAMS,
    ),
    "/v2/models/{name}/infer": infer("inferenceModelInfer", MODEL_PARAMS),
    "/v2/models/{name}/versions/{version}/infer": infer(
      "inferenceModelVersionInfer",
      VERSION_PARAMS,
    ),
  };
}
