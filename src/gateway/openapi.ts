/**
 * The OpenAPI 3.1 document of a running gateway (`GET /openapi.json`): its
 * routes as configured, and for each model a concrete execute (and stream)
 * path whose request body is the model's declared inputs.
 *
 * @module
 */
import { declaredSchema, type JsonSchema } from "./_declared_schema.ts";
import { exampleBody } from "./example_body.ts";
import type { GatewayModelInfo } from "./model_catalog.ts";
import {
  bodyErrors,
  CHANNEL_NAME,
  components,
  errorResponse,
  jsonBody,
  jsonResponse,
  type OpenApiObject,
  pathParam,
  queryParam,
  ref,
  REQUEST_ID_RESPONSE,
  REQUEST_ID_SCHEMA,
  retryResponse,
  sseResponse,
  withGuards,
} from "./_openapi_parts.ts";
import { gatewayPaths } from "./_openapi_routes.ts";

/** What {@linkcode openApiDocument} describes. */
export interface OpenApiOptions {
  /** `info.version`: the package version. */
  version: string;
  /** `servers[0].url`: where the document was fetched from (`"/"` when not known). */
  serverUrl: string;
  /** A bearer token is required on every route but `/healthz`. */
  token: boolean;
  /**
   * A management token is set: the eval and management operations name the
   * `manageBearer` scheme instead of `bearer` (the inference token gets 403
   * there).
   * @default {false}
   */
  manageToken?: boolean;
  /** `POST /v1/eval` and its events are listed. */
  allowEval: boolean;
  /** `PUT`/`DELETE /v1/models/{name}` and `PUT /v1/workers` are listed. */
  allowManage: boolean;
  /** The pool streams (`POST /v1/models/{name}/stream` is listed per model). */
  streams: boolean;
  /** Largest request body in bytes. */
  bodyLimit: number;
  /** Default and maximum execute timeout in ms. */
  requestTimeout: number;
  /**
   * Milliseconds between a stream's `: keep-alive` comments
   * (`limits.streamKeepAlive`), as the `early` parameter says.
   * @default {15000}
   */
  streamKeepAlive?: number;
  /** `limits.streamFirstItemTimeout`, as the `firstItemTimeout` parameter says. */
  streamFirstItemTimeout?: number;
  /**
   * The request headers the gateway forwards to models (`forwardHeaders`),
   * listed as header parameters of execute and stream.
   * @default {[]}
   */
  forwardHeaders?: readonly string[];
  /** The models, as the catalog describes them (`options` are not read). */
  models: ReadonlyArray<
    Pick<
      GatewayModelInfo,
      | "name"
      | "inputs"
      | "outputs"
      | "doc"
      | "streams"
      | "timeout"
      | "mediaType"
    >
  >;
}

/** The OpenAPI document, as plain JSON. */
export type OpenApiDocument = Record<string, unknown>;

type Model = OpenApiOptions["models"][number];

/**
 * The query parameters of execute and stream, in `components.parameters`
 * (each model's paths refer to them: the document grows by little per model).
 */
function callParameters(o: OpenApiOptions): Record<string, OpenApiObject> {
  return {
    key: queryParam(
      "key",
      "Calls with the same key go to the same worker (partitioned state).",
      { type: "string" },
    ),
    timeout: queryParam(
      "timeout",
      `Lowers the call's timeout (ms); at most, and by default, the model's \`timeout\` (its own, else ${o.requestTimeout}).`,
      { type: "integer", minimum: 1 },
    ),
    early: queryParam(
      "early",
      `Streams only: \`1\` or \`true\` sends the 200 and its headers at once, then a \`: keep-alive\` comment every ${
        o.streamKeepAlive ?? 15_000
      } ms until the first item (behind a proxy with a read timeout); an error before it is then the stream's \`error\` event, not the response's status.`,
      { type: "string", enum: ["1", "true", "0", "false"] },
    ),
    firstItemTimeout: queryParam(
      "firstItemTimeout",
      `Streams only: the most ms to the first item, its wait for a worker included (504 \`TimeoutError\` with \`bound: "firstItemTimeout"\` after)${
        o.streamFirstItemTimeout === undefined
          ? ""
          : `; at most, and by default, ${o.streamFirstItemTimeout}`
      }.`,
      { type: "integer", minimum: 1 },
    ),
    publish: queryParam(
      "publish",
      'After the call, publishes `{"model", "result"}` to this channel.',
      CHANNEL_NAME,
    ),
    requestId: {
      name: "X-Request-Id",
      in: "header",
      required: false,
      description:
        "A request id: sent to the model (`host.request_id()`), carried by its log records, echoed on the response. Any other value is ignored.",
      schema: REQUEST_ID_SCHEMA,
    },
    // As FastAPI lists a route's Header() parameters; index keys: a header
    // name may hold characters a component key may not.
    ...Object.fromEntries(
      (o.forwardHeaders ?? []).map((name, i) => [`forward${i}`, {
        name,
        in: "header",
        required: false,
        description:
          "Forwarded to the model (the gateway's `forwardHeaders`): `host.headers()` has it under its lower-case name. Over 8192 characters: a 431.",
        schema: { type: "string", maxLength: 8192 },
      }]),
    ),
  };
}

/**
 * A model's `HTTPError`, which may answer any status from 400 to 599, those
 * listed with a meaning of the gateway's too.
 */
const MODEL_HTTP_ERROR =
  "`HTTPError`: the model raised `pyproxy.HTTPError` with this status (`status`, `detail`; the response headers of the gateway's allow-list). It may answer a status listed here with a meaning of the gateway's too (a 404, a 503): `type` tells them apart.";

/**
 * The errors of a model call before its result (or first item), in
 * `components.responses` as `Call<status>`.
 */
function callResponses(o: OpenApiOptions): Record<string, OpenApiObject> {
  const responses: Record<string, OpenApiObject> = {
    "400": errorResponse(
      "`InvalidJson`, `ValidationError` (the body does not match the declared inputs), `SerializationError` (a message the host cannot send), `IncompleteBody`, `InvalidContentEncoding` (a compressed body that is corrupt or cut short), or `InvalidRequestError` (a bad `timeout` or `publish`, an integer of more than `limits.maxIntegerDigits` digits, or a body nested deeper than `limits.maxJsonDepth`).",
    ),
    "404": errorResponse("`ModelNotFoundError`: the model is not loaded."),
    ...bodyErrors(o.bodyLimit),
    "415": errorResponse(
      `${
        bodyErrors(o.bodyLimit)["415"]!.description
      } Or a binary body (not JSON) for a model that declares \`inputs\`.`,
    ),
    "422": errorResponse(
      "`PythonError`: the model raised (`exception` names its class; `traceback` with `--debug`); or `SerializationError`: it returned what JSON cannot carry (or an integer beyond ±2^53 nested deeper than 1000 levels).",
    ),
    "429": retryResponse("`OverloadedError`: the pool's queue is full."),
    "502": errorResponse(
      "`WorkerCrashedError`: the worker died during the call. `worker` names it, `call` this call's model, `inFlight` the calls it was running when it died by model (evals by `eval`; at most 10 names; a version by its internal name `name@label`, the message by `name version label`) and `inFlightCalls` their number: the call that took it down is among them. The call of a version adds `model` and `version`.",
    ),
    "503": retryResponse(
      "`NoWorkerError` (no worker available), `ShuttingDownError` (the server is draining) or `ModelUnavailableError` (a model placed on some workers that crashed the workers it was moved to: out of service until a `PUT`; `model` names it, no `Retry-After`).",
    ),
    "504": errorResponse("`TimeoutError`: the call timed out."),
    "507": errorResponse(
      "`PythonError` with `exception` `MemoryError`: the model ran out of memory (the worker serves on).",
    ),
    "4XX": errorResponse(
      `${MODEL_HTTP_ERROR} Also \`RequestHeaderTooLarge\` (431): a header the gateway's \`forwardHeaders\` lists is over 8192 characters.`,
    ),
    "5XX": errorResponse(MODEL_HTTP_ERROR),
  };
  // Every error of a call carries a request id (the client's or a new one).
  return Object.fromEntries(
    Object.entries(responses).map((
      [status, r],
    ) => [`Call${status}`, {
      ...r,
      headers: { ...(r.headers as OpenApiObject), ...REQUEST_ID_RESPONSE },
    }]),
  );
}

/** `response` that may also be bytes of media type `type` (a model's `bytes` result). */
function withBytes(response: OpenApiObject, type: string): OpenApiObject {
  (response.content as OpenApiObject)[type] = {
    schema: { type: "string", contentMediaType: type },
  };
  return response;
}

/** References to {@linkcode callResponses}, by status. */
const CALL_ERRORS: Record<string, OpenApiObject> = Object.fromEntries(
  [
    "400",
    "404",
    "408",
    "413",
    "415",
    "422",
    "429",
    "502",
    "503",
    "504",
    "507",
    "4XX",
    "5XX",
  ].map(
    (status) => [status, ref("responses", `Call${status}`)],
  ),
);

const EXECUTE_PARAMS = ["key", "timeout", "publish", "requestId"].map((p) =>
  ref("parameters", p)
);
const STREAM_PARAMS = [
  "key",
  "timeout",
  "firstItemTimeout",
  "early",
  "requestId",
].map((p) => ref("parameters", p));

const VERSION_PARAMS = [
  pathParam("name", "The model's name.", { type: "string" }),
  pathParam(
    "version",
    'The version\'s label (docs/models.md, "Versions").',
    { type: "string", pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$" },
  ),
];

/**
 * `POST /v1/models/{name}/versions/{version}/execute` and `/stream`: one
 * path for every version (each model's own paths run its default one).
 */
function versionCallPaths(o: OpenApiOptions): Record<string, OpenApiObject> {
  const body = jsonBody(
    {
      description:
        "The version's `msg`: JSON as its declared inputs say (`GET /v1/models/{name}/versions/{version}`), or a body of another media type as `bytes`.",
    },
    false,
  );
  const paths: Record<string, OpenApiObject> = {
    "/v1/models/{name}/versions/{version}/execute": {
      parameters: VERSION_PARAMS,
      post: {
        operationId: "executeVersion",
        tags: ["execute"],
        summary: "Execute one version of a model",
        description:
          "As the model's own execute path, run by that version; a version the model does not have is a 404 `ModelNotFoundError` naming the ones it has.",
        parameters: EXECUTE_PARAMS,
        requestBody: body,
        responses: withGuards({
          "200": jsonResponse(
            "The version's result: JSON, or the body itself when it returns `bytes`.",
            {},
            REQUEST_ID_RESPONSE,
          ),
          "204": {
            description: "It returned `None`.",
            headers: REQUEST_ID_RESPONSE,
          },
          ...CALL_ERRORS,
        }, o.token),
      },
    },
  };
  if (o.streams) {
    paths["/v1/models/{name}/versions/{version}/stream"] = {
      parameters: VERSION_PARAMS,
      post: {
        operationId: "streamVersion",
        tags: ["execute"],
        summary: "Stream the items of one version of a model",
        parameters: STREAM_PARAMS,
        requestBody: body,
        responses: withGuards({
          "200": sseResponse(
            "As the model's own stream path, run by that version.",
            {
              item: {},
              end: {
                type: "object",
                required: ["items"],
                properties: { items: { type: "integer" } },
              },
              error: { $ref: "#/components/schemas/Error" },
            },
            REQUEST_ID_RESPONSE,
          ),
          ...CALL_ERRORS,
        }, o.token),
      },
    };
  }
  return paths;
}

/** `POST /v1/models/{name}/execute` and `/stream` of one model. */
function modelCallPaths(
  o: OpenApiOptions,
  model: Model,
): Record<string, OpenApiObject> {
  const { name } = model;
  const inputs = declaredSchema(model.inputs);
  const output: JsonSchema = declaredSchema(model.outputs, "outputs") ?? {};
  const body = jsonBody(
    inputs ??
      {
        description:
          "Any JSON value (the model declares no inputs): its `msg`.",
      },
    Array.isArray(inputs?.required),
    JSON.parse(exampleBody(model.inputs)),
  );
  if (inputs === undefined) {
    // Any Content-Type but JSON, text/plain and form data: bytes for the model.
    body.description =
      "JSON, or any other media type (an image, audio...): the raw body, which the model gets as `bytes` (`host.content_type()` tells its type).";
    (body.content as OpenApiObject)["*/*"] = {
      schema: { type: "string", contentMediaType: "application/octet-stream" },
    };
  }
  const bytesType = model.mediaType ?? "application/octet-stream";
  const description = (model.doc ?? `Runs model \`${name}\`.`) +
    (model.timeout === undefined
      ? ""
      : `\n\nIts calls time out after ${model.timeout} ms (\`?timeout=\` may lower it).`);
  const segment = `/v1/models/${encodeURIComponent(name)}`;
  const forwarded = (o.forwardHeaders ?? []).map((_, i) =>
    ref("parameters", `forward${i}`)
  );
  const paths: Record<string, OpenApiObject> = {
    [`${segment}/execute`]: {
      post: {
        operationId: `execute_${name}`,
        tags: ["execute"],
        summary: `Execute model ${name}`,
        description: model.streams
          ? `${description}\n\nThe model yields: the answer is its items as one JSON array (\`/stream\` sends them as they come).`
          : description,
        parameters: [...EXECUTE_PARAMS, ...forwarded],
        requestBody: body,
        responses: withGuards({
          "200": withBytes(
            jsonResponse(
              "The model's result: JSON, or the body itself when the model returns `bytes`.",
              model.streams ? { type: "array", items: output } : output,
              REQUEST_ID_RESPONSE,
            ),
            bytesType,
          ),
          "204": {
            description: "The model returned `None`.",
            headers: REQUEST_ID_RESPONSE,
          },
          "2XX": {
            description:
              "Another success status the model chose (`host.set_status`, docs/models.md): its result as for 200 (none for 204 and 205), with the headers it set that the gateway's allow-list takes (`Location`, `Cache-Control`, `ETag`, `X-…`...).",
            headers: REQUEST_ID_RESPONSE,
          },
          ...CALL_ERRORS,
        }, o.token),
      },
    },
  };
  if (o.streams) {
    paths[`${segment}/stream`] = {
      post: {
        operationId: `stream_${name}`,
        tags: ["execute"],
        summary: `Stream the items of model ${name}`,
        description: model.streams
          ? description
          : `${description}\n\nThe model does not yield: the stream has one item, its result.`,
        parameters: [...STREAM_PARAMS, ...forwarded],
        requestBody: body,
        responses: withGuards({
          "200": sseResponse(
            "`item` events (id: the item's index), then `end`, or `error` (as execute's error bodies) when the model fails after its first item or the gateway stops.",
            {
              item: output,
              end: {
                type: "object",
                required: ["items"],
                properties: { items: { type: "integer" } },
              },
              error: { $ref: "#/components/schemas/Error" },
            },
            REQUEST_ID_RESPONSE,
          ),
          ...CALL_ERRORS,
        }, o.token),
      },
    };
  }
  return paths;
}

/**
 * The OpenAPI 3.1 document of a gateway: every route it serves with the
 * configuration given (eval and management routes only when enabled), the
 * error responses each gives, and a concrete execute (and stream) path per
 * model with its declared inputs as the request body's schema, its outputs
 * as the result's, its docstring as the description and an example body.
 *
 * @example
 * ```ts
 * import { openApiDocument } from "./openapi.ts";
 * const doc = openApiDocument({
 *   version: "0.1.0",
 *   serverUrl: "http://127.0.0.1:8000",
 *   token: false,
 *   allowEval: false,
 *   allowManage: false,
 *   streams: true,
 *   bodyLimit: 1048576,
 *   requestTimeout: 30000,
 *   models: [{ name: "doubler", inputs: { x: "number" }, outputs: { y: "number" } }],
 * });
 * console.log(Object.keys(doc.paths as object).includes("/v1/models/doubler/execute")); // true
 * ```
 */
export function openApiDocument(options: OpenApiOptions): OpenApiDocument {
  const paths = gatewayPaths(options);
  const shared = components(options.token, options.manageToken === true);
  if (options.token && options.manageToken === true) manageSecurity(paths);
  for (const model of options.models) {
    // A model with versions: its name's paths run the default one.
    if ((model as { default?: boolean }).default === false) continue;
    Object.assign(paths, modelCallPaths(options, model));
  }
  Object.assign(paths, versionCallPaths(options));
  return {
    openapi: "3.1.0",
    info: {
      title: "pyproxy gateway",
      version: options.version,
      description:
        'Python models as a service. Every error is `{"error": {"type", "message", ...}}`; a path no route has is a 404 `NotFound`, a route\'s path with another method a 405 `MethodNotAllowed`.',
      license: { name: "MIT", identifier: "MIT" },
    },
    servers: [{ url: options.serverUrl }],
    ...(options.token ? { security: [{ bearer: [] }] } : {}),
    tags: [
      { name: "execute", description: "Run the models." },
      { name: "models", description: "The models' descriptions." },
      ...(options.allowManage
        ? [{
          name: "management",
          description: "Models and workers (`--allow-manage`).",
        }]
        : []),
      ...(options.allowEval
        ? [{ name: "eval", description: "Run Python code (`--allow-eval`)." }]
        : []),
      { name: "channels", description: "Publish and subscribe." },
      { name: "system", description: "Health, status, metrics, dashboard." },
    ],
    paths,
    components: {
      ...shared,
      parameters: callParameters(options),
      responses: { ...shared.responses as object, ...callResponses(options) },
    },
  };
}

/** The tags of the operations only the management token may call. */
const MANAGE_TAGS = new Set(["management", "eval"]);

/** Sets `manageBearer` as the security of the eval and management operations. */
function manageSecurity(paths: Record<string, unknown>): void {
  for (const item of Object.values(paths)) {
    for (const op of Object.values(item as Record<string, OpenApiObject>)) {
      const tags = (op as { tags?: unknown }).tags;
      if (Array.isArray(tags) && tags.some((t) => MANAGE_TAGS.has(t))) {
        op.security = [{ manageBearer: [] }];
      }
    }
  }
}
