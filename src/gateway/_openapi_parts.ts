/**
 * Building blocks of the gateway's OpenAPI document (`openapi.ts`): the
 * shared components and the responses, parameters and bodies the routes
 * have in common.
 *
 * @module
 */
import type { JsonSchema } from "./_declared_schema.ts";

/** An OpenAPI object (operation, response, parameter...), as plain JSON. */
export type OpenApiObject = Record<string, unknown>;

/** A `$ref` to a component. */
export function ref(kind: string, name: string): OpenApiObject {
  return { $ref: `#/components/${kind}/${name}` };
}

/** A JSON response whose body has `schema`. */
export function jsonResponse(
  description: string,
  schema: JsonSchema,
  headers?: OpenApiObject,
): OpenApiObject {
  return {
    description,
    ...(headers === undefined ? {} : { headers }),
    content: { "application/json": { schema } },
  };
}

/** An error response (`{"error": {"type", "message", ...}}`), `description` naming its types. */
export function errorResponse(
  description: string,
  headers?: OpenApiObject,
): OpenApiObject {
  return jsonResponse(description, ref("schemas", "Error"), headers);
}

/** The `Retry-After` response header (429, and the 503s of a drain or no worker). */
export const RETRY_AFTER: OpenApiObject = {
  "Retry-After": {
    description: "Seconds to wait before trying again.",
    schema: { type: "integer" },
  },
};

/** The `WWW-Authenticate` response header of a 401. */
export const WWW_AUTHENTICATE: OpenApiObject = {
  "WWW-Authenticate": {
    description: 'Always `Bearer realm="pyproxy"`.',
    schema: { type: "string" },
  },
};

/** The `X-Request-Id` header (parameter and response header: one schema). */
export const REQUEST_ID_SCHEMA: JsonSchema = {
  type: "string",
  pattern: "^[A-Za-z0-9._:-]{1,128}$",
};

/** The `X-Request-Id` response header of a model call or stream. */
export const REQUEST_ID_RESPONSE: OpenApiObject = {
  "X-Request-Id": {
    description:
      "The client's `X-Request-Id`, echoed; on an error response without one, the id the gateway made up (as `error.requestId`).",
    schema: REQUEST_ID_SCHEMA,
  },
};

/** An error response with a `Retry-After` header. */
export function retryResponse(description: string): OpenApiObject {
  return errorResponse(description, RETRY_AFTER);
}

/**
 * A Server-Sent Events response: `events` maps each event name to the
 * schema of its `data` (JSON), listed in `x-sse-events` (OpenAPI 3.1 has
 * no way to type the events of a stream).
 */
export function sseResponse(
  description: string,
  events: Record<string, JsonSchema>,
  headers?: OpenApiObject,
): OpenApiObject {
  return {
    description,
    ...(headers === undefined ? {} : { headers }),
    content: {
      "text/event-stream": {
        schema: {
          type: "string",
          description: `Server-Sent Events: ${
            Object.keys(events).map((e) => `\`${e}\``).join(", ")
          } (each event's data is JSON).`,
        },
        "x-sse-events": events,
      },
    },
  };
}

/** A JSON request body. */
export function jsonBody(
  schema: JsonSchema,
  required: boolean,
  example?: unknown,
): OpenApiObject {
  return {
    required,
    content: {
      "application/json": {
        schema,
        ...(example === undefined ? {} : { example }),
      },
    },
  };
}

/** A path parameter. */
export function pathParam(
  name: string,
  description: string,
  schema: JsonSchema,
): OpenApiObject {
  return { name, in: "path", required: true, description, schema };
}

/** An optional query parameter. */
export function queryParam(
  name: string,
  description: string,
  schema: JsonSchema,
): OpenApiObject {
  return { name, in: "query", required: false, description, schema };
}

/** `Last-Event-ID` (header) and `lastEventId` (query), for resuming a stream. */
export function lastEventIdParams(
  what: string,
  pattern = "^\\d{1,15}$",
): OpenApiObject[] {
  const schema = { type: "string", pattern };
  return [
    {
      name: "Last-Event-ID",
      in: "header",
      required: false,
      description: `Resume after this ${what}.`,
      schema,
    },
    queryParam(
      "lastEventId",
      "As `Last-Event-ID`, for clients that cannot set headers.",
      schema,
    ),
  ];
}

/** The responses a route that reads a body can give before it runs. */
export function bodyErrors(bodyLimit: number): Record<string, OpenApiObject> {
  return {
    "408": errorResponse(
      "`RequestTimeout`: the body did not arrive within `limits.requestTimeout` (with `Connection: close`).",
    ),
    "413": errorResponse(
      `\`PayloadTooLarge\`: the body is over ${bodyLimit} bytes (\`limits.bodyLimit\`), as sent or once decoded (\`decoded\`: a compressed body).`,
    ),
    "415": errorResponse(
      "`UnsupportedMediaType`: a `Content-Encoding` other than gzip, x-gzip and deflate, or more than two codings (`supported` lists them, as the `Accept-Encoding` header does).",
    ),
  };
}

/**
 * The shared components: the error body, the model description and the
 * common responses, plus the bearer scheme when a token is set (and the
 * management token's when one is set too).
 */
export function components(
  token: boolean,
  manageToken = false,
): OpenApiObject {
  const error: JsonSchema = {
    type: "object",
    required: ["error"],
    properties: {
      error: {
        type: "object",
        required: ["type", "message"],
        properties: {
          type: {
            type: "string",
            description:
              "Stable type name: `ValidationError`, `ModelNotFoundError`, `PythonError`, `TimeoutError`...",
          },
          message: { type: "string", description: "Human-readable message." },
          exception: {
            type: "string",
            description: "The Python exception's class (`PythonError`).",
          },
          traceback: {
            type: "string",
            description: "The Python traceback (with `--debug` only).",
          },
          status: {
            type: "integer",
            minimum: 400,
            maximum: 599,
            description:
              "`HTTPError`: the status the model's `pyproxy.HTTPError` chose (the response's).",
          },
          detail: {
            description:
              "`HTTPError`: the model's `detail`, any JSON (a FastAPI-style list of `{loc, msg}` as it was); absent when it gave none.",
          },
          waited: {
            type: "string",
            enum: ["queue", "worker", "plugin"],
            description:
              "`TimeoutError` of a model call (504): where it waited when its timeout passed. `queue`: for a worker, so it never ran (safe to retry); `plugin`: for a plugin's asynchronous `onCall`, so it never ran either; `worker`: it ran, then was cancelled.",
          },
          fields: {
            type: "array",
            maxItems: 100,
            description:
              "`ValidationError` of a body the model's declared inputs refuse: every bad field (at most 100, in declared order; `message` names the same ones). FastAPI's `detail`, with `path` for its `loc` (less the leading `\"body\"`).",
            items: {
              type: "object",
              required: ["path", "message", "expected", "received"],
              properties: {
                path: {
                  type: "array",
                  items: { type: ["string", "integer"] },
                  description:
                    'Where, from the body down: `["age"]`; `[]` for the body itself (not a JSON object).',
                },
                message: {
                  type: "string",
                  description: "`expected an integer`, `is required`...",
                },
                expected: {
                  type: "string",
                  description:
                    "The declared type (`integer`, `number`, `string`, `boolean`, `array`, `object`, `any`...); `object` for the body itself.",
                },
                received: {
                  type: "string",
                  description:
                    "The JSON type sent: `missing`, `null`, `boolean`, `number`, `string`, `array` or `object` (never the value).",
                },
              },
            },
          },
          requestId: {
            type: "string",
            description:
              "The request id of a failed model call, stream or eval route: the client's `X-Request-Id`, or one the gateway made up; also the response's `X-Request-Id` header. The gateway's log line for the failure, if any, names it.",
          },
        },
        additionalProperties: true,
      },
    },
  };
  const declared: JsonSchema = {
    type: "object",
    additionalProperties: { type: "string" },
    description:
      'Field name → `"number"`, `"integer"`, `"string"`, `"boolean"`, `"array"`, `"object"` or `"any"`; a trailing `?` for a field that may be left out.',
  };
  const model: JsonSchema = {
    type: "object",
    required: ["name"],
    properties: {
      name: { type: "string" },
      class: { type: "string" },
      file: { type: "string" },
      version: { type: "integer", minimum: 1 },
      inputs: declared,
      outputs: declared,
      doc: { type: "string" },
      batch: {
        type: "object",
        properties: {
          size: { type: "integer" },
          delayMs: { type: "number" },
        },
      },
      streams: { type: "boolean" },
      timeout: {
        type: ["integer", "null"],
        minimum: 1,
        description:
          "The timeout of its calls in ms, by default and at most (`?timeout=` may lower it); `null`: none (a model given `timeout: Infinity` in a library pool the gateway serves, or a gateway made with `requestTimeout: Infinity`).",
      },
      timeoutSource: {
        type: "string",
        enum: ["spec", "class", "default"],
        description:
          "Where `timeout` comes from: the model's config entry or `PUT` body, its class's `timeout_ms`, or the gateway's `limits.requestTimeout`.",
      },
      closeTimeoutMs: {
        type: "integer",
        minimum: 1,
        maximum: 60000,
        description:
          "For a model with a `close()`: its class's `close_timeout_ms` (default 5000). A `DELETE`, or a `PUT` that replaces it, may spend up to twice this (its calls in flight, then `close()`) on top of `limits.loadTimeout`.",
      },
      workers: {
        type: "integer",
        minimum: 1,
        description:
          "How many workers load it (its config entry's or `PUT` body's `workers`); absent: every worker.",
      },
      slots: {
        type: "array",
        items: { type: "string" },
        description:
          "With `workers`: the workers that hold it now (their ids); its calls go to them only.",
      },
      failedReason: {
        type: "string",
        description:
          "Why it is out of service: with `workers`, it crashed the workers it was moved to, past the pool's `placement.maxRelocations`; any model, it killed its worker twice soon after its load (the pool's `loadCrashWindow`). It is on no worker, and its calls answer 503 `ModelUnavailableError` until a `PUT` loads it again. Absent: in service.",
      },
      threaded: {
        type: "string",
        description:
          "Why its calls run on call threads, never inline on a worker's event loop: one of its inline calls held that loop past its timeout, or while the pool killed the worker for answering nothing (a hung call). Absent otherwise; a `PUT` clears it.",
      },
      suspected: {
        type: "object",
        required: ["reason", "deaths", "strikes", "held", "since"],
        description:
          "Set while it is suspected of killing its worker soon after its load (the pool's `loadCrashWindow`), before it is out of service (`failedReason`) or cleared; it still serves meanwhile. Absent: not suspected.",
        properties: {
          reason: {
            type: "string",
            description:
              "The deaths laid on it so far: each worker and pid, how it ended, how long after the load, what else ran there, its last stderr line.",
          },
          deaths: {
            type: "integer",
            description: "Worker deaths laid on it (strikes included).",
          },
          strikes: {
            type: "integer",
            description:
              "Deaths with nothing else running there: 2 take it out of service.",
          },
          held: {
            type: "boolean",
            description:
              "Whether the next restarted worker loads it alone, first, and holds back from calls until it outlived it.",
          },
          since: {
            type: "number",
            description:
              "When the last death was laid on it (ms since the epoch).",
          },
          heldWorker: {
            type: "string",
            description: "The worker held on its replay now, if one is.",
          },
          heldUntil: {
            type: "number",
            description: "When that hold ends (ms since the epoch).",
          },
        },
      },
      optionKeys: { type: "array", items: { type: "string" } },
      options: {
        type: "object",
        description: "The options' values: with `--debug` only.",
      },
    },
  };
  const out: OpenApiObject = {
    schemas: { Error: error, ModelDescription: model },
    responses: {
      Forbidden: errorResponse(
        "`ForbiddenHost` (the `Host` header is not allowed) or `ForbiddenOrigin` (a cross-site request).",
      ),
      ShuttingDown: retryResponse(
        "`ShuttingDownError`: the server is draining (with `Connection: close`).",
      ),
      ...(token
        ? {
          Unauthorized: errorResponse(
            "`Unauthorized`: missing or wrong bearer token.",
            WWW_AUTHENTICATE,
          ),
        }
        : {}),
    },
  };
  if (token) {
    out.securitySchemes = {
      bearer: {
        type: "http",
        scheme: "bearer",
        description:
          "The gateway's token (`--token`, `PYPROXY_TOKEN`, or the one `serve` generated and printed).",
      },
      dashboardToken: {
        type: "apiKey",
        in: "query",
        name: "token",
        description:
          "The token as `?token=`: accepted by the dashboard page `/` only.",
      },
      ...(manageToken
        ? {
          manageBearer: {
            type: "http",
            scheme: "bearer",
            description:
              "The management token (`--manage-token`, `PYPROXY_MANAGE_TOKEN`): the only one eval and model management accept (the inference token gets 403 `ForbiddenToken` there); it is accepted on every other route too.",
          },
        }
        : {}),
    };
  }
  return out;
}

/**
 * The responses every route but `/healthz` can give (its guards, and the
 * drain), added to `responses`.
 */
export function withGuards(
  responses: Record<string, OpenApiObject>,
  token: boolean,
): Record<string, OpenApiObject> {
  return {
    ...responses,
    ...(token ? { "401": ref("responses", "Unauthorized") } : {}),
    "403": responses["403"] ?? ref("responses", "Forbidden"),
    "503": responses["503"] ?? ref("responses", "ShuttingDown"),
  };
}

/** What decides which routes the document lists, and their bounds. */
export interface GatewayRouteOptions {
  /** A token is required (every route but `/healthz`). */
  token: boolean;
  /** `POST /v1/eval` and its events are enabled. */
  allowEval: boolean;
  /** `PUT`/`DELETE /v1/models/{name}` and `PUT /v1/workers` are enabled. */
  allowManage: boolean;
  /** Largest request body in bytes. */
  bodyLimit: number;
}

/** A channel name (`ChannelHub.isValidName`). */
export const CHANNEL_NAME: JsonSchema = {
  type: "string",
  pattern: "^[A-Za-z0-9_.:-]{1,128}$",
};
