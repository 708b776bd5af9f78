/**
 * The gateway's own routes (all but the per-model execute and stream
 * paths) as OpenAPI path items, for `openapi.ts`: each with the parameters,
 * bodies, responses and error statuses the route really has
 * (docs/gateway.md, "Routes").
 *
 * @module
 */
import type { JsonSchema } from "./_declared_schema.ts";
import { channelPaths, evalPaths } from "./_openapi_event_routes.ts";
import { inferencePaths } from "./_openapi_inference_routes.ts";
import { predictPaths, READINESS } from "./_openapi_predict_routes.ts";
import { repositoryPaths } from "./_openapi_repository_routes.ts";
import {
  bodyErrors,
  errorResponse,
  type GatewayRouteOptions,
  jsonBody,
  jsonResponse,
  type OpenApiObject,
  pathParam,
  queryParam,
  ref,
  retryResponse,
  withGuards,
} from "./_openapi_parts.ts";

const MODEL_NAME: JsonSchema = {
  type: "string",
  pattern: "^[A-Za-z_][A-Za-z0-9_.-]{0,127}$",
  not: { enum: ["_unknown", "_other"] },
};

const WORKER: JsonSchema = {
  type: "object",
  required: ["id", "pid", "state", "restarts", "inFlight"],
  properties: {
    id: { type: "string" },
    index: {
      type: "integer",
      minimum: 0,
      description:
        "The slot's index (`env`'s `{index}`): from 0, the lowest no other worker held when it was created, reused after a resize.",
    },
    pid: { type: ["integer", "null"] },
    state: {
      type: "string",
      enum: [
        "starting",
        "ready",
        "draining",
        "stopped",
        "restarting",
        "failed",
      ],
    },
    restarts: { type: "integer" },
    inFlight: { type: "integer" },
    parked: { type: "integer" },
    queued: { type: "integer" },
    abandoned: {
      type: "object",
      additionalProperties: { type: "integer" },
      description:
        "Calls given up on (timed out, cancelled, client gone) that the worker still runs, by model: a model blocked outside Python (a sleep, a lock, I/O without a timeout) shows here before it wedges the worker.",
    },
    uptime: { type: "number" },
    lastExit: {
      type: ["object", "null"],
      description: "How its last process ended; `null` before any did.",
    },
    exits: {
      type: "object",
      additionalProperties: { type: "integer" },
      description:
        "The slot's processes that ended, by cause: `stopped`, `pool` (killed by the pool), a signal's name (`SIGKILL`: from outside, the OOM killer's), `exit_<code>`.",
    },
    failedReason: {
      type: ["string", "null"],
      description: "Why the slot is `failed`, else `null`.",
    },
    python: {
      type: "string",
      description:
        "The Python version of the slot's last process that became ready.",
    },
    stderrTail: { type: "string", description: "With `--debug` only." },
    models: {
      type: "array",
      items: { type: "string" },
      description:
        "The models it holds: every model but the placed ones (`workers`) whose slot it is not.",
    },
  },
};

const HEALTH: JsonSchema = {
  type: "object",
  required: ["status"],
  properties: {
    status: { type: "string", enum: ["ok", "unavailable", "draining"] },
    ready: {
      type: "integer",
      description:
        "Workers ready: without tokens, or to an operator's token (not a tenant's) where they are set.",
    },
    workers: {
      type: "integer",
      description: "Workers in all: as `ready`.",
    },
  },
};

/** `GET /healthz`, `/v1/status`, `/metrics`, `/` and `/openapi.json`. */
function systemPaths(o: GatewayRouteOptions): Record<string, OpenApiObject> {
  const guarded = (r: Record<string, OpenApiObject>) => withGuards(r, o.token);
  return {
    "/healthz": {
      get: {
        operationId: "health",
        tags: ["system"],
        summary: "Liveness and readiness",
        description:
          "Needs no token and answers whatever the `Host` or `Origin` (load balancers probe by IP). Where tokens are set, the workers' counts (`ready`, `workers`) only to an operator's token.",
        ...(o.token ? { security: [] } : {}),
        responses: {
          "200": jsonResponse("At least one worker is ready.", HEALTH),
          "503": jsonResponse(
            "No worker is ready (`unavailable`), or the server is draining or about to (`draining`: from the shutdown signal on, through `limits.shutdownDelay`, during which the other routes still serve, and the drain).",
            HEALTH,
          ),
        },
      },
    },
    "/v1/status": {
      get: {
        operationId: "status",
        tags: ["system"],
        summary: "Workers, models, queue and gateway numbers",
        responses: guarded({
          "200": jsonResponse("The status.", {
            type: "object",
            required: ["workers", "models", "uptime", "draining"],
            properties: {
              version: { type: "string" },
              uptime: { type: "number" },
              draining: { type: "boolean" },
              workers: { type: "array", items: WORKER },
              models: {
                type: "array",
                items: ref("schemas", "ModelDescription"),
              },
              queue: { type: "integer" },
              inFlight: { type: "integer" },
              parked: { type: "integer" },
              evalReplayBytes: { type: "integer" },
              closing: {
                type: "boolean",
                description: "`true` once the pool began to close.",
              },
              resizing: {
                type: "boolean",
                description:
                  "`true` while a resize runs or waits for its turn (`PUT /v1/workers`, autoscale).",
              },
              plugins: {
                type: "array",
                items: { type: "string" },
                description: "The active plugins' names, in order.",
              },
              limits: {
                type: "object",
                description:
                  "The pool's bounds in force (`/metrics`' `pyproxy_limit_*`); `null`: no bound.",
                properties: {
                  maxInFlightPerWorker: { type: "integer" },
                  maxQueue: { type: "integer" },
                  evalReplayBudget: {
                    type: ["integer", "null"],
                    description:
                      "Eval output kept for replay over all running evals, in UTF-16 code units (`limits.evalReplayBudget`).",
                  },
                },
              },
              exits: {
                type: "object",
                additionalProperties: { type: "integer" },
                description:
                  "Every worker process that ended over the pool's life, by cause (as each worker's `exits`), the slots a resize removed included: never goes down.",
              },
              restarts: { type: "integer" },
              pluginStatus: { type: "object" },
              gateway: {
                type: "object",
                properties: {
                  inFlight: { type: "integer" },
                  subscribers: { type: "integer" },
                  channels: { type: "integer" },
                },
              },
            },
          }),
        }),
      },
    },
    "/metrics": {
      get: {
        operationId: "metrics",
        tags: ["system"],
        summary: "Prometheus metrics",
        parameters: [
          queryParam(
            "format",
            "`json` for the totals as JSON (used by the dashboard).",
            { type: "string", enum: ["json"] },
          ),
        ],
        responses: guarded({
          "200": {
            description: "Prometheus text format, or JSON with `?format=json`.",
            content: {
              "text/plain; version=0.0.4; charset=utf-8": {
                schema: { type: "string" },
              },
              "application/json": { schema: { type: "object" } },
            },
          },
        }),
      },
    },
    "/": {
      get: {
        operationId: "dashboard",
        tags: ["system"],
        summary: "The live dashboard (HTML)",
        ...(o.token
          ? { security: [{ bearer: [] }, { dashboardToken: [] }] }
          : {}),
        responses: guarded({
          "200": {
            description: "The dashboard page.",
            content: { "text/html": { schema: { type: "string" } } },
          },
        }),
      },
    },
    "/openapi.json": {
      get: {
        operationId: "openapi",
        tags: ["system"],
        summary: "This document",
        description:
          "Built for each request from the gateway's configuration and its models as they are then.",
        responses: guarded({
          "200": jsonResponse("The OpenAPI 3.1 document.", { type: "object" }),
        }),
      },
    },
  };
}

/** `GET /v1/models`, and `GET` (plus `PUT` and `DELETE` with management) of one. */
function modelPaths(o: GatewayRouteOptions): Record<string, OpenApiObject> {
  const guarded = (r: Record<string, OpenApiObject>) => withGuards(r, o.token);
  const name = pathParam("name", "The model's name.", { type: "string" });
  const one: OpenApiObject = {
    parameters: [name],
    get: {
      operationId: "describeModel",
      tags: ["models"],
      summary: "A model's description",
      responses: guarded({
        "200": jsonResponse(
          "The description, with its readiness for KServe V1's and TensorFlow Serving's clients (`ready`, `model_version_status`).",
          { allOf: [ref("schemas", "ModelDescription"), READINESS] },
        ),
        "503": jsonResponse(
          "Not ready (KServe V1's status): the description with `ready: false` and the reason in `model_version_status` (`UNAVAILABLE`); for a model whose first load (or, by its version's path, a version's load) is under way, only `name`, `ready` and `model_version_status` (`LOADING`, with the version being loaded).",
          READINESS,
        ),
        "404": errorResponse("`ModelNotFoundError`: no such model."),
      }),
    },
  };
  if (o.allowManage) {
    const loaded = {
      type: "object",
      required: ["action", "model"],
      properties: {
        action: { type: "string", enum: ["added", "updated"] },
        model: ref("schemas", "ModelDescription"),
        closeWarning: {
          type: "string",
          description:
            "An update's: the replaced version's `close()` raised or overran its `close_timeout_ms` (updated all the same).",
        },
      },
    };
    one.put = {
      operationId: "putModel",
      tags: ["management"],
      summary: "Add or update a model from a file of the models directory",
      parameters: [pathParam("name", "The model's name.", MODEL_NAME)],
      requestBody: jsonBody(
        {
          type: "object",
          required: ["file"],
          properties: {
            file: {
              type: "string",
              minLength: 1,
              description:
                "A `.py` file, relative to the models directory and inside it.",
            },
            options: { type: "object" },
            class: { type: "string", minLength: 1 },
            timeout: {
              type: "integer",
              minimum: 1,
              maximum: 2 ** 31 - 1,
              description:
                "The timeout of the model's calls in ms, by default and at most, instead of `limits.requestTimeout` (above or below it) and of its class's `timeout_ms`.",
            },
            workers: {
              type: "integer",
              minimum: 1,
              maximum: 1024,
              description:
                "How many workers load the model (absent: every worker); more than the pool has: every worker, and new ones as it grows. Its calls go to those workers only.",
            },
          },
          additionalProperties: false,
        },
        true,
        { file: "echo.py" },
      ),
      responses: guarded({
        "200": jsonResponse("Updated (`version` incremented).", loaded),
        "201": jsonResponse("Added.", loaded),
        "400": errorResponse(
          "`ValidationError` (the body), `PathError` (the file's path), `InvalidRequestError` (the name, an integer of more than `limits.maxIntegerDigits` digits, or a body nested deeper than `limits.maxJsonDepth`), `InvalidJson` or `IncompleteBody`.",
        ),
        "404": errorResponse(
          "`ModelFileNotFound`: no such file in the models directory.",
        ),
        ...bodyErrors(o.bodyLimit),
        "422": errorResponse(
          "`ModelLoadError`: the file cannot be loaded (a syntax error, a failed import, no model class).",
        ),
        "502": errorResponse("A worker died during the load."),
        "504": errorResponse(
          "`TimeoutError`: not loaded within `limits.loadTimeout`.",
        ),
      }),
    };
    one.delete = {
      operationId: "deleteModel",
      tags: ["management"],
      summary: "Remove a model",
      responses: guarded({
        "200": jsonResponse("Removed.", {
          type: "object",
          required: ["name", "removed"],
          properties: {
            name: { type: "string" },
            removed: { type: "boolean", const: true },
            closeWarning: {
              type: "string",
              description:
                "The model's `close()` raised or overran its `close_timeout_ms` (removed all the same).",
            },
          },
        }),
        "404": errorResponse("`ModelNotFoundError`: no such model."),
        "504": errorResponse(
          "`TimeoutError`: not removed within `limits.loadTimeout`.",
        ),
      }),
    };
  }
  return {
    "/v1/models": {
      get: {
        operationId: "listModels",
        tags: ["models"],
        summary: "The models' descriptions",
        responses: guarded({
          "200": jsonResponse("The models.", {
            type: "object",
            required: ["models"],
            properties: {
              models: {
                type: "array",
                items: ref("schemas", "ModelDescription"),
              },
            },
          }),
        }),
      },
    },
    "/v1/models/{name}": one,
    ...versionPaths(o, one.put as OpenApiObject | undefined),
  };
}

const VERSION_LABEL: JsonSchema = {
  type: "string",
  pattern: "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
};

/**
 * `GET /v1/models/{name}/versions/{version}`, plus its `PUT` and `DELETE`
 * and `PUT /v1/models/{name}/default` with management (docs/gateway.md,
 * "Versions").
 */
function versionPaths(
  o: GatewayRouteOptions,
  put: OpenApiObject | undefined,
): Record<string, OpenApiObject> {
  const guarded = (r: Record<string, OpenApiObject>) => withGuards(r, o.token);
  const name = pathParam("name", "The model's name.", { type: "string" });
  const version = pathParam(
    "version",
    "The version's label.",
    VERSION_LABEL,
  );
  const missing = errorResponse(
    "`ModelNotFoundError`: no such model, or no such version of it (the message names the versions there are).",
  );
  const one: OpenApiObject = {
    parameters: [name, version],
    get: {
      operationId: "describeModelVersion",
      tags: ["models"],
      summary: "One version of a model",
      responses: guarded({
        "200": jsonResponse(
          "The version's description (`label`, `default`), with its readiness (`ready`, `model_version_status`).",
          { allOf: [ref("schemas", "ModelDescription"), READINESS] },
        ),
        "503": jsonResponse(
          "Not ready: the version's description with `ready: false` and the reason in `model_version_status`.",
          { allOf: [ref("schemas", "ModelDescription"), READINESS] },
        ),
        "404": missing,
      }),
    },
  };
  const paths: Record<string, OpenApiObject> = {
    "/v1/models/{name}/versions/{version}": one,
  };
  if (!o.allowManage || put === undefined) return paths;
  one.put = {
    ...put,
    operationId: "putModelVersion",
    summary: "Add or replace one version of a model",
    parameters: [name, version],
    responses: {
      ...put.responses as OpenApiObject,
      "400": errorResponse(
        "As `PUT /v1/models/{name}`'s, and `InvalidRequestError` for a label that is not one or a model loaded without versions.",
      ),
    },
  };
  one.delete = {
    operationId: "deleteModelVersion",
    tags: ["management"],
    summary: "Remove one version of a model",
    responses: guarded({
      "200": jsonResponse("Removed.", {
        type: "object",
        required: ["name", "version", "removed"],
        properties: {
          name: { type: "string" },
          version: { type: "string" },
          removed: { type: "boolean", const: true },
          closeWarning: { type: "string" },
        },
      }),
      "400": errorResponse(
        "`InvalidRequestError`: it is the default version and others remain (make another the default first).",
      ),
      "404": missing,
      "504": errorResponse(
        "`TimeoutError`: not removed within `limits.loadTimeout`.",
      ),
    }),
  };
  paths["/v1/models/{name}/default"] = {
    parameters: [name],
    put: {
      operationId: "setDefaultModelVersion",
      tags: ["management"],
      summary: "Make one version the default of a model",
      requestBody: jsonBody(
        {
          type: "object",
          required: ["version"],
          properties: { version: VERSION_LABEL },
          additionalProperties: false,
        },
        true,
        { version: "2" },
      ),
      responses: guarded({
        "200": jsonResponse("Done: the labels and the default now.", {
          type: "object",
          required: ["name", "versions", "default"],
          properties: {
            name: { type: "string" },
            versions: { type: "array", items: { type: "string" } },
            default: { type: "string" },
          },
        }),
        "400": errorResponse(
          "`ValidationError` (the body), `InvalidJson` or `IncompleteBody`.",
        ),
        ...bodyErrors(o.bodyLimit),
        "404": missing,
      }),
    },
  };
  return paths;
}

/** `PUT /v1/workers` (management only). */
function workerPaths(o: GatewayRouteOptions): Record<string, OpenApiObject> {
  if (!o.allowManage) return {};
  const bound = {
    type: ["integer", "null"],
    minimum: 1,
    maximum: 1024,
    description: "`null`: back to the configured bound.",
  };
  return {
    "/v1/workers": {
      put: {
        operationId: "resizePool",
        tags: ["management"],
        summary: "Resize the pool, or set the autoscale bounds",
        requestBody: jsonBody(
          {
            type: "object",
            properties: {
              count: { type: "integer", minimum: 1, maximum: 1024 },
              min: bound,
              max: bound,
            },
            minProperties: 1,
            additionalProperties: false,
          },
          true,
          { count: 2 },
        ),
        responses: withGuards({
          "200": jsonResponse("Resized (or the bounds set).", {
            type: "object",
            required: ["count"],
            properties: {
              previous: { type: "integer" },
              count: { type: "integer" },
              bounds: { type: "object" },
              workers: { type: "array", items: WORKER },
            },
          }),
          "400": errorResponse(
            "`ValidationError` (the body, or a count outside the bounds given), `InvalidRequestError` (bounds refused, an integer of more than `limits.maxIntegerDigits` digits, or a body nested deeper than `limits.maxJsonDepth`), `InvalidJson` or `IncompleteBody`.",
          ),
          ...bodyErrors(o.bodyLimit),
          "409": retryResponse(
            "`ResizeInProgress` (another resize runs) or `NoScalePolicy` (bounds without the autoscale plugin).",
          ),
          "501": errorResponse(
            "`NotImplemented`: this pool cannot be resized, or has no size bounds.",
          ),
          "502": errorResponse("`StartError`: no new worker could start."),
          "504": errorResponse(
            "`TimeoutError`: not done within `limits.loadTimeout` (it goes on).",
          ),
        }, o.token),
      },
    },
  };
}

/**
 * The gateway's own routes as enabled by `options`.
 *
 * @example
 * ```ts
 * import { gatewayPaths } from "./_openapi_routes.ts";
 * const paths = gatewayPaths({ token: false, allowEval: false, allowManage: false, bodyLimit: 1024 });
 * console.log("/v1/eval" in paths); // false
 * ```
 */
export function gatewayPaths(
  options: GatewayRouteOptions,
): Record<string, OpenApiObject> {
  return {
    ...systemPaths(options),
    ...modelPaths(options),
    ...workerPaths(options),
    ...evalPaths(options),
    ...channelPaths(options),
    ...predictPaths(options),
    ...inferencePaths(options),
    ...repositoryPaths(options),
  };
}
