/**
 * How errors become HTTP responses in the gateway: one JSON shape,
 * `{"error": {"type", "message", ...}}`, and one status per error class.
 *
 * @module
 */
import { IDLE_SETTING } from "../_stream_idle_watch.ts";
import { describeInFlight } from "../_in_flight.ts";
import { modelResponseHeaders } from "./_model_http_headers.ts";
import { stringifyJson } from "../_exact_json.ts";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import {
  CancelledError,
  ConfigError,
  ConnectionLostError,
  type FieldProblem,
  ModelHTTPError,
  ModelUnavailableError,
  NoWorkerError,
  OverloadedError,
  PyProxyError,
  PythonError,
  RemoteError,
  SerializationError,
  SessionLostError,
  ShuttingDownError,
  SpillError,
  StartError,
  StreamIdleError,
  TimeoutError,
  UnsafeIntegerError,
  ValidationError,
  WorkerCrashedError,
} from "../errors.ts";

/**
 * The body of every error response.
 *
 * @example
 * ```ts
 * import type { ErrorBody } from "@pyproxy/pyproxy";
 * const res = Response.json({ error: { type: "NotFound", message: "Cannot find model: nope" } }, { status: 404 });
 * const { error } = await res.json() as { error: ErrorBody };
 * console.log(error.type); // "NotFound"
 * ```
 */
export interface ErrorBody {
  /** Stable type name, e.g. `"PythonError"`, `"ValidationError"`. */
  type: string;
  /** Human-readable message. */
  message: string;
  /**
   * The request id of a model call or stream that failed: the client's
   * `X-Request-Id`, or one the gateway made up (docs/gateway.md, "Request
   * ids"); also the response's `X-Request-Id` header.
   */
  requestId?: string;
  /**
   * A `ValidationError`'s bad fields (a body the model's declared inputs
   * refuse): at most 100, in declared order; `message` names the same ones.
   */
  fields?: readonly FieldProblem[];
  /** Further fields (`exception`, `traceback`, `limit`, ...). */
  [field: string]: unknown;
}

/**
 * Builds an error to throw from a route: the gateway answers it with
 * `status` and `{"error": {type, message, ...extra}}`.
 *
 * @example
 * ```ts
 * import { httpError } from "./error_response.ts";
 * const err = httpError(403, "Forbidden", "Cannot eval: eval is disabled (start with --allow-eval)");
 * console.log(err.status); // 403
 * ```
 */
export function httpError(
  status: ContentfulStatusCode,
  type: string,
  message: string,
  extra: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): HTTPException {
  return new RouteError(status, { type, message, ...extra }, headers);
}

/**
 * What {@linkcode httpError} throws: Hono's `HTTPException` with its
 * response, and its body and headers kept apart, so that
 * {@linkcode errorResponse} can answer it with a request id added.
 */
class RouteError extends HTTPException {
  readonly body: ErrorBody;
  readonly headers: Record<string, string>;

  constructor(
    status: ContentfulStatusCode,
    body: ErrorBody,
    headers: Record<string, string>,
  ) {
    const res = errorJson(body, status, headers);
    super(status, { message: body.message, res });
    this.body = body;
    this.headers = headers;
  }
}

/** What a model's `MemoryError` (507) adds to its message. */
const MEMORY_HINT =
  ": the model's worker could not allocate the memory it asked for (a " +
  "limit of the workers: a ulimit of serve --python's wrapper, the " +
  "container's; or one allocation beyond any); /metrics has each worker's " +
  "pyproxy_worker_resident_memory_bytes, and a PUT of the model loads it " +
  "again, freeing what its instance held (docs/reliability.md, Runbook)";

const REMOTE_STATUS: Record<string, ContentfulStatusCode> = {
  ModelNotFoundError: 404,
  InvalidRequestError: 400,
  PathError: 400,
  ModelLoadError: 422,
  SerializationError: 422,
  UnknownCommandError: 501,
  SpillError: 502,
};

/**
 * Maps an error to its status and body. `debug` adds Python tracebacks and
 * the messages of unexpected errors.
 *
 * @example
 * ```ts
 * import { OverloadedError } from "../errors.ts";
 * import { describeError } from "./error_response.ts";
 * console.log(describeError(new OverloadedError("Cannot accept call: queue full"), false).status); // 429
 * ```
 */
export function describeError(
  err: unknown,
  debug: boolean,
): {
  status: ContentfulStatusCode;
  body: ErrorBody;
  headers: Record<string, string>;
} {
  const headers: Record<string, string> = {};
  const body = (
    type: string,
    message: string,
    extra: Record<string, unknown> = {},
  ): ErrorBody => ({
    type,
    message,
    ...extra,
  });
  if (err instanceof RouteError) {
    // One of the gateway's own answers, already made (a load's 404 for a
    // missing file, an error with the models directory hidden): as it is.
    return {
      status: err.status as ContentfulStatusCode,
      headers: { ...err.headers },
      body: { ...err.body },
    };
  }
  if (err instanceof ModelHTTPError) {
    // The model's own answer: its status, its detail, and those of its
    // headers the allow-list takes (model_routes.ts logs the others).
    return {
      status: err.status as ContentfulStatusCode,
      headers: modelResponseHeaders(err.headers).allowed,
      body: body("HTTPError", err.reason, {
        status: err.status,
        ...(err.detail === undefined ? {} : { detail: err.detail }),
        ...(debug && err.traceback ? { traceback: err.traceback } : {}),
      }),
    };
  }
  if (err instanceof PythonError) {
    const memory = err.type === "MemoryError";
    return {
      // Out of memory is the server's lack, not the request's fault: a 5xx
      // (TorchServe's 507), which alerts on 5xx and retrying clients see.
      status: memory ? 507 : 422,
      headers,
      // A bare "MemoryError" (its usual message: none) told an on-call
      // engineer neither where nor what to do.
      body: body(
        "PythonError",
        memory ? `${err.message}${MEMORY_HINT}` : err.message,
        {
          exception: err.type,
          ...(debug && err.traceback ? { traceback: err.traceback } : {}),
        },
      ),
    };
  }
  if (err instanceof OverloadedError) {
    headers["retry-after"] = retryAfter(err, "1");
    return {
      status: 429,
      headers,
      body: body(err.name, overloadedMessage(err)),
    };
  }
  if (err instanceof ModelUnavailableError) {
    // A placed model out of service (it crashed the workers it went to):
    // no Retry-After, as retrying cannot help until it is updated.
    return {
      status: 503,
      headers,
      body: body(
        err.name,
        outOfServiceMessage(err),
        err.details.version === undefined
          ? { model: err.details.model }
          : { model: err.details.model, version: err.details.version },
      ),
    };
  }
  if (err instanceof NoWorkerError || err instanceof ShuttingDownError) {
    // A call cut off while it ran (`started`) may have done part of its
    // work: no Retry-After, which retrying clients read as "not processed".
    if (err.details.started !== true) {
      headers["retry-after"] = retryAfter(
        err,
        err instanceof ShuttingDownError ? "5" : "1",
      );
    }
    return { status: 503, headers, body: body(err.name, err.message) };
  }
  if (err instanceof TimeoutError) {
    // Where a model call waited (its details): "queue" (and "plugin": a
    // plugin's asynchronous onCall held it) tells a client the call never
    // ran, so a retry is safe (the message says so in words).
    const waited = err.details.waited;
    // A stream's first-item bound, told from its whole timeout.
    const bound = err.details.bound === "firstItemTimeout"
      ? { bound: "firstItemTimeout" }
      : undefined;
    return {
      status: 504,
      headers,
      body: waited === "queue" || waited === "worker" || waited === "plugin"
        ? body(err.name, err.message, { waited, ...bound })
        : body(err.name, err.message),
    };
  }
  if (err instanceof StreamIdleError) {
    // The client took no event for the idle timeout: its fault, not the
    // model's (504) nor a departure (499).
    // Named by the gateway's setting: its clients cannot set a pool's.
    const message = err.message.replace(
      `(${IDLE_SETTING})`,
      "(the gateway's limits.streamIdleTimeout, serve --stream-idle-timeout)",
    );
    return { status: 408, headers, body: body(err.name, message) };
  }
  if (err instanceof WorkerCrashedError) {
    // What the worker was running when it died, by model: the crasher's
    // call beside its victims. Model names are no secret to a caller who can
    // call models (/v1/models lists them); tracebacks are no part of it.
    // A version is named as the gateway's routes name it (`bad version 2`),
    // its internal name (`bad@2`) kept as data in `call` and `inFlight`.
    const { worker, call, model, version, inFlight, inFlightCalls } =
      err.details;
    return {
      status: 502,
      headers,
      body: body(err.name, crashMessage(err), {
        ...(worker === undefined ? {} : { worker }),
        ...(call === undefined ? {} : { call }),
        ...(typeof version === "string" ? { model, version } : {}),
        ...(inFlight === undefined ? {} : { inFlight, inFlightCalls }),
      }),
    };
  }
  if (err instanceof ConnectionLostError || err instanceof SessionLostError) {
    return { status: 502, headers, body: body(err.name, err.message) };
  }
  if (err instanceof StartError) {
    // Workers that could not start (a resize): their stderr tails, which can
    // hold paths and secrets printed by models, only with debug.
    const message = debug ? err.message : err.message.split("\n")[0]!;
    return { status: 502, headers, body: body(err.name, message) };
  }
  if (err instanceof SerializationError) {
    // What the model returned, nested too deep to read its integers beyond
    // ±2^53 exactly (the host's refusal of a reply, `details.depth`): a
    // result JSON cannot carry to the client, as a Python SerializationError
    // is (422), not a request too large (its `limit` is not the body's).
    if (typeof err.details.depth === "number") {
      return { status: 422, headers, body: body(err.name, err.message) };
    }
    // The request holds what cannot be sent to Python (too deep, too large for a frame).
    return {
      status: typeof err.details.limit === "number" ? 413 : 400,
      headers,
      body: body(err.name, err.message),
    };
  }
  if (err instanceof UnsafeIntegerError) {
    // What the model returned cannot be represented (a pool of the caller's
    // with integers: "number"; the gateway's own pool keeps them exact).
    return { status: 422, headers, body: body(err.name, err.message) };
  }
  if (err instanceof SpillError) {
    // The host's own spill-over failed: over maxBytes (retry later), or its
    // files, whose absolute paths are the server's business (--debug shows them).
    const message = debug ? err.message : withoutSpillPaths(err.message);
    if (typeof err.details.maxBytes === "number") {
      headers["retry-after"] = retryAfter(err, "1");
      return { status: 503, headers, body: body(err.name, message) };
    }
    return { status: 502, headers, body: body(err.name, message) };
  }
  if (err instanceof ValidationError) {
    // A body the model's declared inputs refuse: 400, not FastAPI's 422
    // (clients rely on it); `fields` is FastAPI's `detail` for programs.
    return {
      status: 400,
      headers,
      body: body(err.name, err.message, { fields: err.fields }),
    };
  }
  if (err instanceof CancelledError) {
    headers["retry-after"] = retryAfter(err, "1");
    return { status: 503, headers, body: body(err.name, err.message) };
  }
  if (
    err instanceof ConfigError || err instanceof TypeError ||
    err instanceof RangeError
  ) {
    return {
      status: 400,
      headers,
      body: body(
        err instanceof ConfigError ? err.name : "InvalidRequestError",
        err.message,
      ),
    };
  }
  if (err instanceof RemoteError && err.remoteType === "HostError") {
    // Only model code calls the host (host.publish, ...): a HostError it did
    // not catch is the model raising, like any other exception.
    return {
      status: 422,
      headers,
      body: body("PythonError", err.message, {
        exception: "HostError",
        ...(debug && typeof err.details.traceback === "string" &&
            err.details.traceback
          ? { traceback: err.details.traceback }
          : {}),
      }),
    };
  }
  if (err instanceof RemoteError && err.remoteType === "SpillError" && !debug) {
    return {
      status: REMOTE_STATUS[err.remoteType] ?? 500,
      headers,
      body: body(err.remoteType, withoutSpillPaths(err.message)),
    };
  }
  if (err instanceof RemoteError && err.remoteType === "InvalidRequestError") {
    const message = versionsMessage(err);
    if (message !== undefined) {
      return {
        status: 400,
        headers,
        body: body(err.remoteType, message),
      };
    }
  }
  if (err instanceof RemoteError) {
    const d = err.details;
    const extra: Record<string, unknown> = {};
    if (typeof d.exception === "string") extra.exception = d.exception;
    if (debug && typeof d.traceback === "string" && d.traceback) {
      extra.traceback = d.traceback;
    }
    return {
      status: REMOTE_STATUS[err.remoteType] ?? 500,
      headers,
      body: body(err.remoteType, err.message, extra),
    };
  }
  if (err instanceof PyProxyError) {
    return { status: 500, headers, body: body(err.name, err.message) };
  }
  const message = debug && err instanceof Error
    ? err.message
    : "Cannot serve request: internal error";
  return { status: 500, headers, body: body("InternalError", message) };
}

/**
 * The `Retry-After` of an error answered with one: its
 * `details.retryAfterMs` in seconds, rounded up (a plugin's quota that
 * frees up in 60 s: `"60"`), else `fallback`. A value that is not a finite
 * number >= 0 is ignored.
 */
function retryAfter(err: PyProxyError, fallback: string): string {
  const ms = err.details.retryAfterMs;
  if (typeof ms !== "number" || !(ms >= 0) || !Number.isFinite(ms)) {
    return fallback;
  }
  return String(Math.ceil(ms / 1000));
}

/** A spill error's message with each absolute path cut to its file name. */
function withoutSpillPaths(message: string): string {
  return message.replace(
    /(^|[\s'"(])\/[^\s'":]*\/([^\s'":/]+)/g,
    (_, lead: string, name: string) => `${lead}${name}`,
  );
}

/**
 * The pool's queue-full 429 in the gateway's terms: the library's message
 * names the pool's options (`maxQueue`, `maxInFlightPerWorker`) and its
 * internal command (`executeModel`), which an operator paged at night
 * cannot find in `serve --help`; this one names the model and serve's
 * flags with their `pyproxy.json` keys. Worded from the error's `details`
 * (the pool router's); any other `OverloadedError` (a plugin's quota, a
 * server's own refusal, a tenant's channel bound) keeps its message.
 */
function overloadedMessage(err: OverloadedError): string {
  const { queue, maxQueue, maxInFlightPerWorker, model } = err.details;
  if (
    typeof queue !== "number" || typeof maxQueue !== "number" ||
    typeof maxInFlightPerWorker !== "number"
  ) return err.message;
  const what = typeof model !== "string"
    ? "accept call"
    : model.includes("@")
    ? `run model '${model.slice(0, model.indexOf("@"))}' version '${
      model.slice(model.indexOf("@") + 1)
    }'`
    : `run model '${model}'`;
  // A batching model's note: its queue counts batches, not calls.
  const batch = / \(a batch of \d+ calls?: [^)]*\)/.exec(err.message)?.[0] ??
    "";
  return `Cannot ${what}${batch}: the gateway is overloaded: ${queue} ${
    queue === 1 ? "call waits" : "calls wait"
  } for a worker (limits.maxQueue ${maxQueue}, serve --max-queue) ` +
    `and the workers it may go to run ${maxInFlightPerWorker} each ` +
    `(limits.maxInFlightPerWorker, serve --max-in-flight): retry later; ` +
    `if the load is normal, add workers (serve --workers, --autoscale, ` +
    `PUT /v1/workers) or raise --max-queue`;
}

/**
 * A `ModelUnavailableError`'s message in the gateway's terms: the library's
 * names the pool's options (`placement.maxRelocations`,
 * `pool.updateModel`) and the restart policy's (`reconnect({
 * failedRetryAfter })`, through its last worker's reason), which a
 * gateway's operator sets as `limits.*` in pyproxy.json, or acts on with a
 * `PUT`. Worded from the error's `details`; an error without them (one of
 * a pool's own making) keeps its message.
 */
function outOfServiceMessage(err: ModelUnavailableError): string {
  const { model, cmd, crashed, relocationWindow, maxRelocations, lastExit } =
    err.details;
  if (typeof model !== "string") return err.message;
  // A version as the gateway's routes name it.
  const name = model;
  const label = typeof err.details.version === "string"
    ? err.details.version
    : undefined;
  const shown = label === undefined
    ? `model '${name}'`
    : `model '${name}' version '${label}'`;
  const path = label === undefined
    ? `/v1/models/${name}`
    : `/v1/models/${name}/versions/${label}`;
  const again = `PUT ${path} loads it again ` +
    `(with --allow-manage; without it, restart the gateway)`;
  const { reason, loadCrashWindow } = err.details;
  if (typeof loadCrashWindow === "number" && typeof reason === "string") {
    // Quarantined for killing its worker soon after its load: the pool's
    // reason says each death; the library's advice (pool.updateModel, a
    // PUT that a gateway without --allow-manage refuses) is the gateway's.
    return `Cannot ${cmd === "initModel" ? "init" : "call"} ${shown}: ` +
      `it is out of service: ${reason} (limits.loadCrashWindow in ` +
      `pyproxy.json); ${again}`;
  }
  if (
    !Array.isArray(crashed) || typeof relocationWindow !== "number" ||
    typeof maxRelocations !== "number"
  ) return err.message;
  const times = crashed.length === 1 ? "once" : `${crashed.length} times`;
  const last = typeof lastExit === "string" ? `; the last: ${lastExit}` : "";
  return `Cannot ${cmd === "initModel" ? "init" : "call"} ${shown}: ` +
    `it is out of service: it crashed the workers it was placed on ${times} ` +
    `within ${relocationWindow} ms (${crashed.join(", ")}${last}), past ` +
    `limits.maxRelocations ${maxRelocations} (pyproxy.json; its window: ` +
    `limits.relocationWindow); ${again}`;
}

/**
 * The pool's refusals about versions in the gateway's terms: the library's
 * name `spec.version` and `updateModel`, which a gateway's client gives as
 * a route (`PUT /v1/models/{name}/versions/{version}`). Worded from the
 * error's `details` (`reason` and the model's versions); any other
 * `InvalidRequestError` keeps its message (`undefined`).
 */
function versionsMessage(err: RemoteError): string | undefined {
  const d = err.details.details;
  if (typeof d !== "object" || d === null) return undefined;
  const { reason, action, model, versions, version } = d as Record<
    string,
    unknown
  >;
  if (typeof model !== "string") return undefined;
  const routes = `/v1/models/${model}`;
  if (reason === "hasVersions" && Array.isArray(versions)) {
    const dflt = (d as Record<string, unknown>).default;
    return `Cannot ${
      action === "update" ? "replace" : "load"
    } model '${model}' ` +
      `without a version: it has versions (${versions.join(", ")}${
        typeof dflt === "string" ? `; default ${dflt}` : ""
      }): PUT ${routes}/versions/{version} loads or replaces one, ` +
      `DELETE ${routes} removes every version`;
  }
  if (reason === "versionExists" && typeof version === "string") {
    return `Cannot load model '${model}' version '${version}': it is ` +
      `already loaded (PUT ${routes}/versions/${version} replaces it)`;
  }
  return undefined;
}

/**
 * A `WorkerCrashedError`'s message with versions named as the gateway's
 * routes name them (`model 'bad' version '2'`, `bad version 2 (1 call)`)
 * where the library's names their internal name (`bad@2`). Worded from the
 * error's `details`; an error without versions, or without the details (one
 * of a pool's own making), keeps its message.
 */
function crashMessage(err: WorkerCrashedError): string {
  const d = err.details;
  const versions = (typeof d.inFlightVersions === "object" &&
      d.inFlightVersions !== null
    ? d.inFlightVersions
    : {}) as Record<string, { model: string; version: string }>;
  if (
    typeof d.version !== "string" && Object.keys(versions).length === 0
  ) return err.message;
  const { cmd, call, worker, pid, reason, inFlight, inFlightCalls } = d;
  if (
    typeof cmd !== "string" || typeof call !== "string" ||
    typeof worker !== "string" || typeof reason !== "string"
  ) return err.message;
  const verb = cmd === "executeStream" ? "stream" : "run";
  const what = typeof d.version === "string"
    ? `${verb} model '${d.model}' version '${d.version}'`
    : call === cmd
    ? `complete call ${cmd}`
    : `${verb} model '${call}'`;
  const running = typeof inFlight === "object" && inFlight !== null &&
      typeof inFlightCalls === "number" && inFlightCalls > 0
    ? ` while running: ${
      describeInFlight(
        {
          byName: inFlight as Record<string, number>,
          calls: inFlightCalls,
        },
        (name) =>
          Object.hasOwn(versions, name)
            ? `${versions[name]!.model} version ${versions[name]!.version}`
            : name,
      )
    }`
    : "";
  return `Cannot ${what}: worker ${worker}${
    typeof pid === "number" ? ` (pid ${pid})` : ""
  } died: ${reason}${running}`;
}

/** The header of a request id, in requests and responses. */
export const REQUEST_ID_HEADER = "x-request-id";

/**
 * The response for any error thrown while serving a request. With
 * `requestId`, the body's error has it as `requestId` and the response as
 * its `X-Request-Id` header (docs/gateway.md, "Request ids").
 *
 * @example
 * ```ts
 * import { TimeoutError } from "@pyproxy/pyproxy";
 * import { errorResponse } from "@pyproxy/pyproxy";
 * const res = errorResponse(new TimeoutError("Cannot complete request: timed out"), false, "req-42");
 * console.log(res.status, res.headers.get("x-request-id")); // 504 "req-42"
 * ```
 */
export function errorResponse(
  err: unknown,
  debug: boolean,
  requestId?: string,
): Response {
  if (err instanceof HTTPException) {
    if (requestId === undefined) return err.getResponse();
    if (err instanceof RouteError) {
      return errorJson({ ...err.body, requestId }, err.status, {
        ...err.headers,
        [REQUEST_ID_HEADER]: requestId,
      });
    }
    // Not ours (Hono's own): its body as it is.
    const res = err.getResponse();
    res.headers.set(REQUEST_ID_HEADER, requestId);
    return res;
  }
  const { status, body, headers } = describeError(err, debug);
  if (requestId !== undefined) {
    body.requestId = requestId;
    headers[REQUEST_ID_HEADER] = requestId;
  }
  return errorJson(body, status, headers);
}

/**
 * `Response.json({error: body})`, except that a body holding a `BigInt` (a
 * model's `HTTPError` detail: the gateway's pool keeps integers exact) is
 * written with its exact integer literals instead of failing the response.
 */
function errorJson(
  body: ErrorBody,
  status: number,
  headers: Record<string, string>,
): Response {
  try {
    return Response.json({ error: body }, { status, headers });
  } catch (err) {
    const text = stringifyJson({ error: body });
    if (text === undefined) throw err;
    return new Response(text, {
      status,
      headers: { ...headers, "content-type": "application/json" },
    });
  }
}
