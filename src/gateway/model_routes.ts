/**
 * Model routes: list, describe, execute, and (with `allowManage`) add,
 * update and remove models.
 *
 * @module
 */
import { type Context, Hono } from "hono";
import * as v from "valibot";
import { ChannelHub } from "./channels.ts";
import { plainRecord } from "../_plain_record.ts";
import { ModelHTTPError } from "../errors.ts";
import { forwardedHeaders } from "./_forward_headers.ts";
import { modelResponseHeaders } from "./_model_http_headers.ts";
import { withModelMeta } from "./_model_success.ts";
import {
  noTransform,
  type ResponseCompression,
} from "./_response_compression.ts";
import type { ResponseMeta } from "../session_types.ts";
import {
  describeError,
  errorResponse,
  httpError,
  REQUEST_ID_HEADER,
} from "./error_response.ts";
import { isRequestId } from "../_request_id.ts";
import { closestName } from "../_closest_name.ts";
import { validBody } from "./_valid_body.ts";
import type { GatewayModelSpec } from "./gateway_pool.ts";
import type { GatewayModelInfo } from "./model_catalog.ts";
import { tfServingMetadata } from "./_tf_serving_metadata.ts";
import { modelNameProblem } from "./model_name_problem.ts";
import {
  hideModelsDir,
  loadModel,
  quoteShort,
  unloadModel,
} from "./_model_changes.ts";
import { VersionLabel, versionLabelProblem } from "../_model_version.ts";
import {
  isBinaryType,
  readBinaryBody,
  readJsonBody,
} from "./read_json_body.ts";
import { type ModelView, modelView } from "./_model_view.ts";
import { hasModel, modelEntries, statusOf, workersOf } from "./_pool_reads.ts";
import type { WatchedCall } from "./disconnect_watch.ts";
import type { RouteContext } from "./route_context.ts";
import { jsonResponse } from "./json_response.ts";
import { answerBody, jsonAnswer } from "./_answer_body.ts";
import { MAX_MODEL_TIMEOUT, MODEL_TIMEOUT_SHAPE } from "../_model_timeout.ts";
import { explainedTimeout, withAbandonedHint } from "./_timeout_explained.ts";
import { notAStream } from "./_first_item_timeout.ts";
import { closeAfter } from "./_close_after.ts";
import { discardUnreadBody, dropUnreadBody } from "./_unread_body.ts";
import { EXECUTE_ROUTE } from "./_route_template.ts";
import {
  tenantError,
  tenantFailedReason,
  tenantModelView,
} from "./_tenant_view.ts";

const SPEC_SHAPE = "expected {file, options?, class?, timeout?, workers?}";
const WORKERS_SHAPE =
  "expected an integer from 1 to 1024 (how many workers load the model; absent: every worker)";

// valibot's object schemas take an array for an object: refused first.
const ModelSpecBody = v.pipe(
  v.custom<Record<string, unknown>>(
    (x) => typeof x === "object" && x !== null && !Array.isArray(x),
    SPEC_SHAPE,
  ),
  v.strictObject(
    {
      file: v.pipe(
        v.string("expected a file path"),
        v.minLength(1, "expected a file path"),
      ),
      // Not v.record alone: it takes an array for an object ([1] → {"0": 1}).
      options: v.optional(plainRecord(v.unknown(), "expected an object")),
      class: v.optional(
        v.pipe(
          v.string("expected a class name"),
          v.minLength(1, "expected a class name"),
        ),
      ),
      timeout: v.optional(
        v.pipe(
          v.number(`expected ${MODEL_TIMEOUT_SHAPE}`),
          v.integer(`expected ${MODEL_TIMEOUT_SHAPE}`),
          v.minValue(1, `expected ${MODEL_TIMEOUT_SHAPE}`),
          v.maxValue(MAX_MODEL_TIMEOUT, `expected ${MODEL_TIMEOUT_SHAPE}`),
        ),
      ),
      workers: v.optional(
        v.pipe(
          v.number(WORKERS_SHAPE),
          v.integer(WORKERS_SHAPE),
          v.minValue(1, WORKERS_SHAPE),
          v.maxValue(1024, WORKERS_SHAPE),
        ),
      ),
    },
    // One message for three failures: an unknown key and a missing one carry
    // the key in their path; a body that is not an object has none.
    (issue) =>
      issue.expected === "never"
        ? "unknown field (allowed: file, options, class, timeout, workers)"
        : issue.input === undefined && issue.path?.length
        ? "is required"
        : SPEC_SHAPE,
  ),
);

/** The longest model name (no model has a longer one). */
export const MAX_NAME = 128;

function tooLongName(
  name: string,
  direct: boolean,
  metrics: RouteContext["metrics"],
  requestId: string,
): Promise<Response> {
  // A call of a model that does not exist, as any other such call.
  metrics.start("_unknown")(404);
  if (direct) metrics.countHttp(404, EXECUTE_ROUTE);
  return Promise.resolve(errorResponse(
    httpError(
      404,
      "ModelNotFoundError",
      `Cannot find model ${
        quoteShort(name)
      }: model names have at most ${MAX_NAME} characters`,
    ),
    false,
    requestId,
  ));
}

/**
 * The name the pool knows version `version` of model `name` by
 * (`name@version`), or the error telling it has no such version (its
 * message names the versions there are).
 */
export function findVersion(
  ctx: RouteContext,
  name: string,
  version: string,
): string | Error {
  const { pool } = ctx;
  if (pool.resolveModel === undefined) {
    return httpError(
      404,
      "ModelNotFoundError",
      `Cannot find model ${quoteShort(name)} version ${
        quoteShort(version)
      }: this gateway's pool serves no versions`,
    );
  }
  try {
    return pool.resolveModel(name, version);
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/**
 * Whether the default version a call without one was given on arrival
 * (`name`, the pool's `name@label` of model `asked`) is gone by the time its
 * body has come in: a `PUT .../default` then a `DELETE` of the old one,
 * while a slow client uploads. The call then runs on the default of now (or
 * is the 404 of `asked`), rather than a 404 naming `name@label` for a model
 * that serves.
 */
export function defaultGone(
  ctx: RouteContext,
  asked: string,
  name: string,
): boolean {
  // Still the default, so still there (a default goes last): no copy of
  // the labels on every call.
  if (ctx.pool.resolveModel?.(asked) === name) return false;
  return ctx.pool.modelVersions?.(asked)?.versions.includes(
    name.slice(asked.length + 1),
  ) !== true;
}

/**
 * A version's internal name (`m@2`) asked for as a model's name: the 404
 * that names its route, rather than an alias of `/versions/2` (no gateway
 * model name has an `@`; a library's model named so is called as it is).
 */
export function internalName(
  ctx: RouteContext,
  name: string,
): Error | undefined {
  const at = name.indexOf("@");
  if (at < 0) return undefined;
  const model = name.slice(0, at);
  const label = name.slice(at + 1);
  if (ctx.pool.modelVersions?.(model)?.versions.includes(label) !== true) {
    return undefined;
  }
  return httpError(
    404,
    "ModelNotFoundError",
    `Cannot find model ${quoteShort(name)}: it is version ${
      quoteShort(label)
    } of model ${quoteShort(model)} (/v1/models/${model}/versions/${label})`,
  );
}

/** The 404 of a call of a version there is not, counted as a call of no model. */
function unknownVersion(
  err: Error,
  direct: boolean,
  metrics: RouteContext["metrics"],
  clientId: string | undefined,
): Promise<Response> {
  metrics.start("_unknown")(404);
  if (direct) metrics.countHttp(404, EXECUTE_ROUTE);
  return Promise.resolve(
    errorResponse(err, false, clientId ?? crypto.randomUUID()),
  );
}

/**
 * The request id a client sent (`X-Request-Id`), when it is a valid one
 * (1 to 128 characters of `A-Za-z0-9._:-`); anything else is ignored, as if
 * absent.
 *
 * @example
 * ```ts ignore
 * clientRequestId(new Request("http://x/", { headers: { "x-request-id": "a b" } })); // undefined
 * ```
 */
export function clientRequestId(request: Request): string | undefined {
  const sent = request.headers.get(REQUEST_ID_HEADER);
  return sent !== null && isRequestId(sent) ? sent : undefined;
}

/**
 * Checks a model file path from a request: relative, inside the models
 * directory, a `.py` file. The Python server also resolves symlinks and
 * refuses paths escaping its root; this check gives a clear 400 first.
 *
 * @example
 * ```ts
 * import { confineModelPath } from "./model_routes.ts";
 * console.log(confineModelPath("sub/../scorer.py")); // "scorer.py"
 * ```
 */
export function confineModelPath(file: string): string {
  const bad = (why: string) =>
    httpError(
      400,
      "PathError",
      `Cannot load model file ${JSON.stringify(file)}: ${why}`,
    );
  if (file.includes("\0") || file.includes("\\")) {
    throw bad("invalid characters");
  }
  if (file.startsWith("/") || /^[A-Za-z]:/.test(file)) {
    throw bad("must be relative to the models directory");
  }
  const parts: string[] = [];
  for (const part of file.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (parts.length === 0) throw bad("escapes the models directory");
      parts.pop();
    } else parts.push(part);
  }
  if (parts.length === 0 || !parts[parts.length - 1]!.endsWith(".py")) {
    throw bad("must be a .py file");
  }
  return parts.join("/");
}

const DefaultBody = v.strictObject(
  { version: VersionLabel },
  (issue) =>
    issue.expected === "never"
      ? "unknown field (allowed: version)"
      : issue.input === undefined && issue.path?.length
      ? "is required"
      : "expected {version}",
);

function checkVersion(name: string, version: string): void {
  const problem = versionLabelProblem(version);
  if (problem !== undefined) {
    throw httpError(
      400,
      "InvalidRequestError",
      `Cannot use version ${quoteShort(version)} of model ${
        quoteShort(name)
      }: ${problem}`,
    );
  }
}

function checkName(name: string): void {
  const problem = modelNameProblem(name);
  if (problem !== undefined) {
    throw httpError(
      400,
      "InvalidRequestError",
      `Cannot use model name ${quoteShort(name)}: expected ${problem}`,
    );
  }
}

/**
 * The timeout of a call: the model's own (its spec's, else its class's;
 * the pool's for a model added to it directly), else the gateway's
 * `requestTimeout`; `?timeout=` may only lower it.
 */
export function callTimeout(
  ctx: RouteContext,
  name: string,
  timeoutParam: string | undefined,
): number {
  const limit = ctx.catalog.timeout(name) ?? ctx.pool.modelTimeout?.(name) ??
    ctx.requestTimeout;
  if (timeoutParam === undefined) return limit;
  const t = Number(timeoutParam);
  if (!Number.isInteger(t) || t < 1) {
    throw httpError(
      400,
      "InvalidRequestError",
      "Cannot execute: timeout must be an integer >= 1 (ms)",
    );
  }
  return Math.min(t, limit);
}

/** A call's body, checked against the model's declared inputs. */
async function readModelInput(
  ctx: RouteContext,
  request: Request,
  name: string,
): Promise<unknown> {
  // Only an empty body is `{}`: a JSON `null` is the model's msg as sent.
  const raw = await readJsonBody(
    request,
    ctx.bodyLimit,
    ctx.bodyReads,
    ctx.runtime,
    ctx.maxIntegerDigits,
    ctx.maxJsonDepth,
  );
  const body = raw === undefined ? {} : raw;
  // A ValidationError: a 400 with the bad fields (error_response.ts).
  ctx.catalog.validator(name)?.check(body, name);
  return body;
}

/**
 * A binary call's body (any `Content-Type` but JSON, `text/plain` and form
 * data: `isBinaryType`), for the model as `bytes`. A model with declared
 * inputs takes JSON only: 415.
 */
async function readBinaryInput(
  ctx: RouteContext,
  request: Request,
  name: string,
  contentType: string,
): Promise<Uint8Array> {
  if (!MEDIA_TYPE.test(contentType)) {
    throw httpError(
      400,
      "InvalidRequestError",
      "Cannot execute: the Content-Type of a binary body must be 1 to 256 printable ASCII characters",
    );
  }
  if (ctx.catalog.validator(name) !== undefined) {
    throw notJson(name, contentType);
  }
  return await readBinaryBody(request, ctx.bodyLimit, ctx.bodyReads);
}

/** The 415 of a binary body for a model that declares JSON inputs. */
function notJson(name: string, contentType: string): Error {
  return httpError(
    415,
    "UnsupportedMediaType",
    `Cannot execute ${name}: it declares JSON inputs, and the body is ${
      contentType.length <= 64 ? contentType : `${contentType.slice(0, 64)}...`
    } (send Content-Type: application/json)`,
  );
}

/**
 * A call's input read for one model checked against another's declared
 * inputs: the default that runs it, when the one it arrived for went away
 * while its body came in ({@linkcode defaultGone}).
 */
export function checkCallInput(
  ctx: RouteContext,
  name: string,
  input: { body: unknown; contentType?: string },
): void {
  const validator = ctx.catalog.validator(name);
  if (validator === undefined) return;
  if (input.contentType !== undefined) {
    throw notJson(name, input.contentType);
  }
  validator.check(input.body, name);
}

/**
 * An execute or stream call's input: a binary body (`isBinaryType`) as
 * bytes with its `contentType` for the model, else the JSON body.
 */
export async function readCallInput(
  ctx: RouteContext,
  request: Request,
  name: string,
): Promise<{ body: unknown; contentType?: string }> {
  const contentType = request.headers.get("content-type");
  return isBinaryType(contentType)
    ? {
      body: await readBinaryInput(ctx, request, name, contentType!),
      contentType: contentType!,
    }
    : { body: await readModelInput(ctx, request, name) };
}

// What pool.execute's contentType takes (and an HTTP header can say).
const MEDIA_TYPE = /^[\x20-\x7e]{1,256}$/;

/**
 * The response of a `bytes` result: the bytes as the body, in the model's
 * `media_type`. The body is the model's (often its caller's input sent
 * back), served from the dashboard's origin: `nosniff` keeps a browser from
 * reading it as another type than the one given, and `sandbox` runs a
 * `text/html` or SVG one in an origin of its own, so its scripts reach
 * neither the dashboard's token nor the gateway's routes as this origin.
 */
function bytesResponse(
  ctx: RouteContext,
  request: Request,
  name: string,
  bytes: Uint8Array,
  compression: ResponseCompression | undefined,
): Response {
  const type = ctx.catalog.get(name)?.mediaType ?? "application/octet-stream";
  const headers = {
    "content-type": type,
    "x-content-type-options": "nosniff",
    "content-security-policy": "sandbox",
  };
  return compression === undefined
    ? new Response(answerBody(ctx.runtime, request, bytes, headers), {
      headers,
    })
    : compression.bytes(request, bytes, headers);
}

/**
 * Hides the models directory in a model's error unless `debug` (a model's
 * exception often names its own files): the directory as configured and its
 * real path (the Python server names the real one: a model's `__file__`),
 * looked up at the first error. For a tenant's token (`caller`: its id,
 * on the direct path), the pool's queue-full 429 without its numbers too.
 */
export function modelsDirHider(
  ctx: RouteContext,
): (err: unknown, request: Request, caller?: string) => Promise<unknown> {
  let dirs: Promise<string[]> | undefined;
  return async (err, request, caller) => {
    // A tenant's token: no queue depth nor limits (`_tenant_view.ts`).
    if (ctx.isTenant(request, caller)) err = tenantError(err);
    const dir = ctx.modelsDir;
    if (
      dir === undefined || !(err instanceof Error) || ctx.debug(request)
    ) return err;
    dirs ??= ctx.runtime.realPath(dir).then((real) => [dir, real], () => [dir]);
    return hideModelsDir(err, await dirs, false);
  };
}

/**
 * `POST /v1/models/{name}/execute` as a function of the request, the model
 * name and the `key`, `publish` and `timeout` query parameters: never
 * rejects (errors become their responses) and counts the call in the metrics.
 * The app calls it directly for plain requests, without the router: with
 * `direct`, it also counts the HTTP status and logs the request line, as the
 * app's middleware does for routed requests.
 *
 * @example
 * ```ts ignore
 * const run = modelExecutor(ctx);
 * const res = await run(request, "echo", undefined, undefined, undefined);
 * ```
 */
export function modelExecutor(
  ctx: RouteContext,
  direct = false,
): (
  request: Request,
  name: string,
  key: string | undefined,
  publish: string | undefined,
  timeout: string | undefined,
  version?: string,
  caller?: string,
) => Promise<Response> {
  const { pool, metrics, hub, logger, disconnects, compression, callers } = ctx;
  const hideDir = modelsDirHider(ctx);
  // No header is read for the models unless the gateway lists some.
  const forward = ctx.forwardHeaders.length > 0
    ? ctx.forwardHeaders
    : undefined;
  // One async function for the whole call: no wrapper promise per request.
  return async (request, name, key, publish, timeoutParam, version, caller) => {
    // Only the direct path logs the request itself (routed: the middleware),
    // and only when debug logging is on (a clock read per request otherwise).
    const log = direct && logger.isEnabledFor?.("debug") !== false;
    const t0 = log ? performance.now() : 0;
    // The client's request id goes with the call and comes back on the
    // response; without one, only an error response gets one (made up).
    const clientId = clientRequestId(request);
    // No model has a longer name: answered before the metrics see it.
    if (name.length > MAX_NAME) {
      const res = await tooLongName(
        name,
        direct,
        metrics,
        clientId ?? crypto.randomUUID(),
      );
      // Its 404 at once, the body not waited for (as any unknown model's).
      dropUnreadBody(request, res);
      return res;
    }
    // A model with versions: the version asked for, else its default (the
    // name the pool and the catalog know it by, `name@version`).
    const asked = name;
    if (version !== undefined) {
      const found = findVersion(ctx, name, version);
      if (typeof found !== "string") {
        return unknownVersion(found, direct, metrics, clientId);
      }
      name = found;
    } else if (pool.resolveModel !== undefined) {
      name = pool.resolveModel(name);
      // The direct path takes no name with an `@`.
      const alias = direct || name !== asked
        ? undefined
        : internalName(ctx, name);
      if (alias !== undefined) {
        return unknownVersion(alias, direct, metrics, clientId);
      }
    }
    // A model the pool does not have: 404 now, its body not waited for.
    const missing = unknownModel(ctx, asked, name, request, caller);
    if (missing !== undefined) {
      // A model the start skipped: the 404 says why, counted as its call.
      const skipped = name === asked
        ? skippedAtStart(ctx, request, name)
        : undefined;
      if (skipped === undefined) metrics.start("_unknown")(404);
      else metrics.start(name)(404, true);
      const res = errorResponse(
        skipped ?? missing,
        false,
        clientId ?? crypto.randomUUID(),
      );
      dropUnreadBody(request, res);
      if (direct) metrics.countHttp(404, EXECUTE_ROUTE);
      return res;
    }
    const done = metrics.start(name);
    // A 404 of the model's own (its HTTPError) counts as its call.
    let answered = false;
    let requestId = clientId;
    let res: Response;
    let watched: WatchedCall | undefined;
    let meta: ResponseMeta | undefined;
    const onResponseMeta = (m: ResponseMeta): void => {
      meta = m;
    };
    try {
      if (publish !== undefined && !ChannelHub.isValidName(publish)) {
        throw httpError(
          400,
          "InvalidRequestError",
          `Cannot publish to channel ${JSON.stringify(publish)}: invalid name`,
        );
      }
      // A tenant's token: its own channels only, refused before the call;
      // and within its channels' bound: a new channel past it, refused
      // before the call too (it ran, and its result was lost to the 429).
      // The operator's publish is not held to a tenant's bounds.
      const publishing = publish === undefined
        ? undefined
        : { tenantBounds: ctx.isTenant(request, caller) };
      if (publish !== undefined) {
        ctx.channelAccess?.(request, publish, "publish to");
        const refused = hub.publishRefusal(publish, publishing);
        if (refused !== undefined) throw refused;
      }
      let timeout = callTimeout(ctx, name, timeoutParam);
      const input = await readCallInput(ctx, request, name);
      if (
        name !== asked && version === undefined &&
        defaultGone(ctx, asked, name)
      ) {
        name = pool.resolveModel!(asked);
        checkCallInput(ctx, name, input);
        timeout = callTimeout(ctx, name, timeoutParam);
      }
      const { body, contentType } = input;
      // A client that disconnects cancels its call (Python gets `cancel`),
      // unless turned off; only calls that run for a while listen for it
      // (DisconnectWatch: Deno's request.signal costs a pending operation).
      const options: {
        key?: string;
        timeout: number;
        signal?: AbortSignal;
        requestId?: string;
        contentType?: string;
        headers?: Record<string, string>;
        caller?: string;
        onResponseMeta: (m: ResponseMeta) => void;
        traceparent?: string;
        tracestate?: string;
        onSend?: (worker: string) => void;
      } = key === undefined
        ? { timeout, onResponseMeta }
        : { key, timeout, onResponseMeta };
      if (forward !== undefined) {
        const headers = forwardedHeaders(request, forward);
        if (headers !== undefined) options.headers = headers;
      }
      // The direct path passes it; a routed request's authentication kept it.
      if (callers !== undefined) {
        caller ??= callers.get(request);
        if (caller !== undefined) options.caller = caller;
      }
      watched = disconnects?.watch(request);
      if (watched !== undefined) options.signal = watched.signal;
      if (clientId !== undefined) options.requestId = clientId;
      if (contentType !== undefined) options.contentType = contentType;
      ctx.tracing?.callOptions(request, name, options);
      const result = await pool.execute(name, body, options);
      if (publish !== undefined) {
        // The model's name as the client knows it, and the version that ran.
        hub.publish(
          publish,
          name === asked ? { model: name, result: result ?? null } : {
            model: asked,
            version: name.slice(asked.length + 1),
            result: result ?? null,
          },
          publishing,
        );
      }
      // A model's `Cache-Control: no-transform` keeps its result as it is.
      const compress = compression !== undefined && !noTransform(meta)
        ? compression
        : undefined;
      res = result === null || result === undefined
        ? new Response(null, { status: 204 })
        : result instanceof Uint8Array
        ? bytesResponse(ctx, request, name, result, compress)
        : compress === undefined
        ? jsonAnswer(ctx.runtime, request, result)
        : compress.json(request, result);
      // The status and headers the model chose, when it chose any.
      if (meta !== undefined) {
        res = modelSuccessHeaders(
          ctx,
          name,
          res,
          meta,
          request,
          () => requestId ??= crypto.randomUUID(),
        );
      }
      if (requestId !== undefined) {
        res.headers.set(REQUEST_ID_HEADER, requestId);
      }
    } catch (thrown) {
      // A model the start skipped: the 404 says why, counted as its call.
      const skipped = name === asked
        ? skippedAtStart(ctx, request, name, thrown)
        : undefined;
      const err = skipped ?? thrown;
      answered = skipped !== undefined || err instanceof ModelHTTPError;
      // The client went away (the call was cancelled for it): nobody reads
      // this response, 499 keeps it apart from real errors in the metrics.
      // A model's exception often names its own files (`open()` of a data
      // file beside it, `__file__`): without --debug, relative to the models
      // directory, as the PUT route answers.
      if (watched?.aborted) {
        res = new Response(null, { status: 499 });
      } else {
        // Every error response has a request id, to find its log lines by.
        requestId ??= crypto.randomUUID();
        modelErrorHeaders(ctx, name, err, requestId, request);
        const explained = explainedTimeout(
          ctx,
          err,
          asked,
          name,
          timeoutParam,
        );
        res = errorResponse(
          await hideDir(
            // Not a tenant's: the count holds the other tenants' calls.
            ctx.isTenant(request)
              ? explained
              : withAbandonedHint(ctx, explained, name),
            request,
            caller,
          ),
          ctx.debug(request),
          requestId,
        );
      }
      // An unexpected error: the client only reads "internal error" (unless
      // --debug), so the log is where it can be seen (as the app's onError
      // logs the other routes' failures; this one catches its own).
      if (res.status === 500) {
        logger.warn("Request failed (request id {requestId}): {error}", {
          error: err,
          requestId,
        });
      }
    }
    watched?.end();
    // Draining: no further request on this connection (it would be reset).
    if (ctx.signal.aborted) closeAfter(res);
    // A refusal before the body was read (413 or 415 from the headers): on
    // the direct path, which the app's middleware does not see, the body
    // first, up to a bound (HTTP/2 clients then read the answer).
    if (direct && res.status >= 400) await discardUnreadBody(request);
    done(res.status, answered);
    if (direct) metrics.countHttp(res.status, EXECUTE_ROUTE);
    if (log) requestLine(logger, name, res.status, t0, requestId);
    return res;
  };
}

/**
 * The headers of a model's `HTTPError`: those its response gets are noted
 * for CORS (`Access-Control-Expose-Headers`), the others logged
 * ({@linkcode warnRefused}).
 */
export function modelErrorHeaders(
  ctx: Pick<
    RouteContext,
    "logger" | "refusedHeaderWarnings" | "exposedHeaders"
  >,
  model: string,
  err: unknown,
  requestId: string,
  request: Request,
): void {
  if (!(err instanceof ModelHTTPError)) return;
  const { allowed, refused } = modelResponseHeaders(err.headers);
  const names = Object.keys(allowed);
  if (names.length > 0) ctx.exposedHeaders.set(request, names);
  warnRefused(ctx, model, err.status, refused, requestId);
}

/**
 * `res` with the status and headers a model chose for its success
 * (`host.set_status`, `host.set_header`: {@linkcode withModelMeta}; its
 * status kept with `keepStatus`), the headers refused logged under the
 * request id `requestId()` gives ({@linkcode warnRefused}).
 */
export function modelSuccessHeaders(
  ctx: Pick<
    RouteContext,
    "logger" | "refusedHeaderWarnings" | "exposedHeaders"
  >,
  model: string,
  res: Response,
  meta: ResponseMeta,
  request: Request,
  requestId: () => string,
  keepStatus = false,
): Response {
  const { response, refused } = withModelMeta(
    res,
    meta,
    request,
    ctx.exposedHeaders,
    keepStatus,
  );
  if (refused.length > 0) {
    warnRefused(ctx, model, response.status, refused, requestId());
  }
  return response;
}

/**
 * Logs the headers a model asked for (its `HTTPError`'s, or its success's:
 * `host.set_header`) that its response does not get (not on the
 * allow-list, malformed, or one the gateway sets itself: docs/gateway.md,
 * "Errors with a status"): the response goes out without them, and the
 * model's author learns why here. At most 10 names, each cut to 64
 * characters; at most once a minute per model (a model that always sets
 * `Set-Cookie` would write a warning per call).
 */
export function warnRefused(
  ctx: Pick<RouteContext, "logger" | "refusedHeaderWarnings">,
  model: string,
  status: number,
  refused: string[],
  requestId: string,
): void {
  if (refused.length === 0) return;
  const warned = ctx.refusedHeaderWarnings;
  const now = Date.now();
  const last = warned.get(model);
  if (last !== undefined && now - last < REFUSED_HEADER_WARNING_MS) return;
  // Bounded by the models served; names of removed ones go eventually.
  if (last === undefined && warned.size >= 1024) warned.clear();
  warned.set(model, now);
  const names = refused.slice(0, 10).map((n) => JSON.stringify(n.slice(0, 64)))
    .join(", ") + (refused.length > 10 ? `, ... (${refused.length})` : "");
  ctx.logger.warn(
    "Model {model} answered {status} with headers the gateway does not send (request id {requestId}): {names} (said at most once a minute per model)",
    { model, status, requestId, names },
  );
}

/** How often the refused headers of one model's errors are logged at most. */
const REFUSED_HEADER_WARNING_MS = 60_000;

/** The direct path's request line (the app's middleware logs the others'). */
function requestLine(
  logger: RouteContext["logger"],
  name: string,
  status: number,
  t0: number,
  requestId: string | undefined,
): void {
  const properties = {
    method: "POST",
    path: `/v1/models/${name}/execute`,
    status,
    ms: Math.round((performance.now() - t0) * 10) / 10,
  };
  if (requestId === undefined) {
    logger.debug("{method} {path} {status} {ms} ms", properties);
  } else {
    logger.debug("{method} {path} {status} {ms} ms (request id {requestId})", {
      ...properties,
      requestId,
    });
  }
}

/**
 * The 404 of model `name` when the start skipped it (its file failed to
 * import) and no load brought it since: its message says why and what
 * brings it back ({@linkcode StartSkips}). `undefined` otherwise, for a
 * tenant's token (the operator's files are no part of its answers), and
 * when `err` is given and is not a 404 of a model not found.
 */
export function skippedAtStart(
  ctx: Pick<RouteContext, "startSkips" | "isTenant">,
  request: Request,
  name: string,
  err?: unknown,
): Error | undefined {
  const message = ctx.startSkips.message(name);
  if (message === undefined || ctx.isTenant(request)) return undefined;
  if (err !== undefined) {
    const { status, body } = describeError(err, false);
    if (status !== 404 || body.type !== "ModelNotFoundError") return undefined;
  }
  return httpError(404, "ModelNotFoundError", message);
}

/** The 404 of a model the gateway does not have. */
export function modelNotFound(name: string): Error {
  return httpError(
    404,
    "ModelNotFoundError",
    `Cannot find model ${name.length <= 64 ? `'${name}'` : quoteShort(name)}`,
  );
}

/**
 * The 404 (`ModelNotFoundError`) of a call of `asked` (`name`: the name the
 * pool knows it by, `name@label` for a version) when the pool has no such
 * model and no change of that name (a `PUT`, a repository load or unload)
 * is under way; else `undefined` (the call reads its body and runs).
 * Checked before the body is read: a call of a model there is not gets its
 * 404 at once, never the 408 of a slow body it waited for. A pool without
 * `modelStatus` (not the library's `Pool`) cannot tell cheaply: its call is
 * answered by the pool, after the body, as before. Its hint (the name
 * meant, else those loaded) names only the models a plugin's `canCall`
 * shows the request's token (`caller`, else the one `request` was let in
 * with).
 *
 * @example
 * ```ts ignore
 * const missing = unknownModel(ctx, "scorer", "scorer", request);
 * if (missing !== undefined) return errorResponse(missing, false, id);
 * ```
 */
export function unknownModel(
  ctx: Pick<RouteContext, "pool" | "modelChanges" | "callers">,
  asked: string,
  name: string,
  request: Request,
  caller?: string,
): Error | undefined {
  const pool = ctx.pool;
  if (pool.modelStatus === undefined) return undefined;
  // The models the token is shown (a plugin's canCall; undefined: all).
  const canCall = pool.canCall;
  const who = canCall === undefined
    ? undefined
    : caller ?? ctx.callers?.get(request);
  const shown = canCall === undefined
    ? undefined
    : (model: string) => canCall.call(pool, model, who);
  if (hasModel(pool, name)) {
    // One it hides: the 404 of a model not there, before its body, as its
    // descriptions answer (before chaos55, the plugin's onCall refused it
    // after the body, 403: a tenant told another's models from names
    // that are not there).
    if (shown === undefined || shown(asked)) return undefined;
  } else if (ctx.modelChanges.running(asked) !== undefined) return undefined;
  let loaded = [...new Set(pool.status().models.map((m) => m.name))];
  // Its hint names only the models the token is shown: a tenant's near
  // miss of another's model is no hint naming it (before chaos55, a 404
  // of 'secret-double' said "did you mean 'secret-doubler'?").
  if (shown !== undefined) loaded = loaded.filter(shown);
  return httpError(
    404,
    "ModelNotFoundError",
    `Cannot find model ${
      asked.length <= 64 ? `'${asked}'` : quoteShort(asked)
    }: ${notLoaded(asked, loaded)}`,
  );
}

/** Names listed in a "not loaded" message at most. */
const LIST_NAMES = 10;
/** A typo is looked for among this many models at most. */
const MATCH_NAMES = 200;

/**
 * Why `name` is not found, as a worker says it (its `_not_loaded`): the
 * name meant, else the models loaded (at most {@linkcode LIST_NAMES}).
 */
function notLoaded(name: string, loaded: string[]): string {
  if (loaded.length === 0) return "not loaded (no model is loaded yet)";
  if (loaded.length <= MATCH_NAMES) {
    const near = closestName(name, loaded);
    if (near !== undefined) return `not loaded (did you mean '${near}'?)`;
  }
  const shown = loaded.sort().slice(0, LIST_NAMES);
  const more = loaded.length - shown.length;
  return `not loaded (loaded: ${shown.join(", ")}${
    more > 0 ? ` and ${more} more` : ""
  })`;
}

/**
 * The model routes under `/v1/models`.
 *
 * @example
 * ```ts ignore
 * app.route("/", modelRoutes(ctx));
 * ```
 */
export function modelRoutes(ctx: RouteContext): Hono {
  const { pool, catalog } = ctx;
  const app = new Hono();
  const notFound = modelNotFound;
  /** A description as `request` reads it (a tenant's: not its workers). */
  const viewFor = (
    request: Request,
  ): (m: Parameters<typeof modelView>[0]) => ModelView => {
    const debug = ctx.debug(request);
    const tenant = ctx.isTenant(request);
    return (m) => {
      const view = modelView(m, debug, ctx.requestTimeout);
      return tenant ? tenantModelView(view) : view;
    };
  };

  // The models a request's token may call (`Plugin.canCall`), as listed to
  // it: a tenant sees only those (before tenants30, every model, whatever
  // an access plugin refused it). `undefined`: every model.
  const mayCall = (
    request: Request,
  ): ((name: string) => boolean) | undefined => {
    const canCall = pool.canCall;
    if (canCall === undefined) return undefined;
    const caller = ctx.callers?.get(request);
    return (name) => canCall.call(pool, name, caller);
  };

  // jsonResponse: with --debug a model's options are shown, and may hold a BigInt.
  app.get("/v1/models", (c) => {
    const may = mayCall(c.req.raw);
    const models = catalog.list(pool);
    return jsonResponse({
      models: (may === undefined ? models : models.filter((m) => may(m.name)))
        .map(viewFor(c.req.raw)),
    });
  });

  app.get("/v1/models/:name", (c) => {
    const name = c.req.param("name");
    // As listed: a model added to the pool directly shows its own timeout.
    // A model with versions: its default one, with the labels of them all.
    const model = catalog.describe(pool, name);
    if (model === undefined) {
      // Its first load under way: TF Serving's LOADING, not a 404.
      if (ctx.modelChanges.running(name) === "load") {
        return loading(
          name,
          ctx.modelChanges.runningVersion(name) ??
            String(catalog.nextVersion(name)),
        );
      }
      throw skippedAtStart(ctx, c.req.raw, name) ?? notFound(name);
    }
    // That model's entries, not every model's (a probe per model).
    const now = statusOf(pool, name);
    const tenant = ctx.isTenant(c.req.raw);
    const status = readiness(ctx, model, now, tenant);
    // TF Serving lists every version's state when none is named (a client
    // waits there for the one it loaded); `ready` is the default's. One
    // status read for them all: one each made thousands of versions take
    // seconds of the event loop.
    if (model.versions !== undefined && model.versions.length > 1) {
      const ready = readyWorkers(now);
      status.model_version_status = now.models.flatMap((m) =>
        m.name === name && m.version !== undefined
          ? versionReadiness(ctx, m.version, m, ready, tenant)
          : []
      );
    }
    // Not ready: 503, as KServe V1's server answers (a probe reading the
    // status only sees it); the body keeps TF Serving's status.
    return jsonResponse({
      ...viewFor(c.req.raw)(model),
      ...status,
    }, status.ready ? 200 : 503);
  });

  /** TF Serving's LOADING state of a load under way (503: not ready). */
  const loading = (name: string, version: string) =>
    jsonResponse({
      name,
      ready: false,
      model_version_status: [{
        version,
        state: "LOADING",
        status: { error_code: "OK", error_message: "" },
      }],
    }, 503);

  /**
   * The model's version `version`: a label, or for a model without versions
   * its own version number, as :predict takes it (TF Serving's clients ask
   * for its status and metadata there); else the 404 naming the versions.
   */
  const atVersion = (name: string, version: string): GatewayModelInfo => {
    const own = catalog.describe(pool, name);
    if (
      own !== undefined && own.label === undefined &&
      version === String(own.version)
    ) return own;
    const found = findVersion(ctx, name, version);
    if (typeof found !== "string") throw found;
    const model = catalog.describe(pool, name, version);
    if (model === undefined) throw notFound(name);
    return model;
  };

  app.get("/v1/models/:name/versions/:version", (c) => {
    const name = c.req.param("name");
    const version = c.req.param("version");
    // That version's load under way (the model's first, or another
    // version of a model that has some): LOADING, as by the name.
    if (
      ctx.modelChanges.running(name) === "load" &&
      ctx.modelChanges.runningVersion(name) === version &&
      pool.modelVersions?.(name)?.versions.includes(version) !== true
    ) return loading(name, version);
    // That version's entry alone and the workers (not every version's
    // entry: 4 ms a read at 2000 versions); else as before (the 404s).
    const one = catalog.describeOne(pool, name, version);
    const labels = one?.label === undefined
      ? undefined
      : pool.modelVersions?.(name)?.versions;
    const fast = one !== undefined && (one.label === undefined || labels);
    const model = !fast
      ? atVersion(name, version)
      : labels === undefined
      ? one
      : { ...one, versions: labels };
    const status = readiness(
      ctx,
      model,
      fast ? { workers: workersOf(pool), models: [entryOf(one)] } : undefined,
      ctx.isTenant(c.req.raw),
    );
    return jsonResponse({
      ...viewFor(c.req.raw)(model),
      ...status,
    }, status.ready ? 200 : 503);
  });

  // TensorFlow Serving's model metadata: the declared tensors.
  app.get("/v1/models/:name/metadata", (c) => {
    const name = c.req.param("name");
    const model = catalog.describe(pool, name);
    if (model === undefined) throw notFound(name);
    return jsonResponse(tfServingMetadata(model));
  });
  app.get(
    "/v1/models/:name/versions/:version/metadata",
    (c) =>
      jsonResponse(
        tfServingMetadata(
          atVersion(c.req.param("name"), c.req.param("version")),
        ),
      ),
  );

  const run = modelExecutor(ctx);
  app.post("/v1/models/:name/execute", (c) => {
    // Most calls have no query string: skip the query scans then.
    const query = c.req.url.includes("?");
    // A stream's bound: refused, not ignored (notAStream).
    if (query && c.req.query("firstItemTimeout") !== undefined) {
      throw notAStream("execute", false);
    }
    return run(
      c.req.raw,
      c.req.param("name"),
      query ? c.req.query("key") : undefined,
      query ? c.req.query("publish") : undefined,
      query ? c.req.query("timeout") : undefined,
    );
  });

  app.post("/v1/models/:name/versions/:version/execute", (c) => {
    const query = c.req.url.includes("?");
    // A stream's bound: refused, not ignored (notAStream).
    if (query && c.req.query("firstItemTimeout") !== undefined) {
      throw notAStream("execute", false);
    }
    return run(
      c.req.raw,
      c.req.param("name"),
      query ? c.req.query("key") : undefined,
      query ? c.req.query("publish") : undefined,
      query ? c.req.query("timeout") : undefined,
      c.req.param("version"),
    );
  });

  const put = async (
    c: Context,
    name: string,
    version: string | undefined,
  ) => {
    if (!ctx.allowManage) throw forbidden();
    checkName(name);
    if (version !== undefined) checkVersion(name, version);
    const body = validBody(
      ModelSpecBody,
      await readJsonBody(
        c.req.raw,
        ctx.bodyLimit,
        ctx.bodyReads,
        ctx.runtime,
        ctx.maxIntegerDigits,
        ctx.maxJsonDepth,
      ),
      `Cannot load model '${name}'`,
    );
    const spec: GatewayModelSpec = { file: confineModelPath(body.file) };
    if (body.options !== undefined) spec.options = body.options;
    if (body.class !== undefined) spec.class = body.class;
    if (body.timeout !== undefined) spec.timeout = body.timeout;
    if (body.workers !== undefined) spec.workers = body.workers;
    if (version !== undefined) spec.version = version;
    const shownName = version === undefined
      ? name
      : `${name} version ${version}`;
    let loaded: Awaited<ReturnType<typeof loadModel>>;
    try {
      loaded = await loadModel(ctx, name, spec, ctx.debug(c.req.raw));
    } catch (err) {
      // A deploy whose PUT failed (a syntax error, a missing file) was
      // answered to its client only: the operator's log had the successes,
      // never this (the on-call walkthrough). A 5xx (a load timeout) is
      // logged by the app's onError already (routeError).
      const { status, body } = describeError(err, false);
      if (status < 500) {
        ctx.logger.warn(
          "Model {name} not loaded from {file} ({status} {type}): {message}; the version in force, if any, serves on",
          {
            name: shownName,
            file: spec.file,
            status,
            type: body.type,
            message: body.message,
          },
        );
      }
      throw err;
    }
    const { existed, model } = loaded;
    ctx.startSkips.loaded(name);
    ctx.logger.info("Model {name} {action} from {file}", {
      name: shownName,
      action: existed ? "updated" : "added",
      file: spec.file,
    });
    const { closeWarning, ...info } = model as typeof model & {
      closeWarning?: string;
    };
    // The slots it was just placed on, as GET /v1/models/{name} shows them.
    const now = modelEntries(pool, name).find((m) => m.version === version);
    const slots = now?.slots;
    const shown: typeof info = slots === undefined
      ? info
      : { ...info, slots: [...slots] };
    if (version !== undefined) shown.default = now?.default === true;
    const answer: Record<string, unknown> = {
      action: existed ? "updated" : "added",
      model: modelView(shown, ctx.debug(c.req.raw), ctx.requestTimeout),
    };
    if (closeWarning !== undefined) {
      // The old version's close() raised or overran (the worker's log has
      // the traceback): updated all the same.
      ctx.logger.warn("Model {name}: {warning}", {
        name,
        warning: closeWarning,
      });
      answer.closeWarning = closeWarning;
    }
    return jsonResponse(answer, existed ? 200 : 201);
  };
  app.put("/v1/models/:name", (c) => put(c, c.req.param("name"), undefined));
  app.put(
    "/v1/models/:name/versions/:version",
    (c) => put(c, c.req.param("name"), c.req.param("version")),
  );

  // The default version: {"version": "2"}.
  app.put("/v1/models/:name/default", async (c) => {
    if (!ctx.allowManage) throw forbidden();
    const name = c.req.param("name");
    const body = validBody(
      DefaultBody,
      await readJsonBody(
        c.req.raw,
        ctx.bodyLimit,
        ctx.bodyReads,
        ctx.runtime,
        ctx.maxIntegerDigits,
        ctx.maxJsonDepth,
      ),
      `Cannot set the default version of model ${quoteShort(name)}`,
    );
    if (pool.setDefaultVersion === undefined) {
      throw findVersion(ctx, name, body.version);
    }
    await ctx.modelChanges.run(
      name,
      "load",
      () => pool.setDefaultVersion!(name, body.version),
    );
    ctx.logger.info("Model {name} serves version {version} by default", {
      name,
      version: body.version,
    });
    return jsonResponse({ name, ...pool.modelVersions?.(name) });
  });

  const remove = async (
    c: Context,
    name: string,
    version: string | undefined,
  ) => {
    if (!ctx.allowManage) throw forbidden();
    const closeWarning = await unloadModel(ctx, name, () => {
      if (version === undefined) return notFound(name);
      // Names the versions there are.
      const found = findVersion(ctx, name, version);
      return typeof found === "string" ? notFound(name) : found;
    }, version);
    const answer = version === undefined
      ? { name, removed: true }
      : { name, version, removed: true };
    return c.json(
      closeWarning === undefined ? answer : { ...answer, closeWarning },
    );
  };
  app.delete(
    "/v1/models/:name",
    (c) => remove(c, c.req.param("name"), undefined),
  );
  app.delete(
    "/v1/models/:name/versions/:version",
    (c) => remove(c, c.req.param("name"), c.req.param("version")),
  );

  return app;
}

/**
 * A model's readiness as KServe V1's clients (`ready`) and TensorFlow
 * Serving's (`model_version_status`) read it from `GET /v1/models/{name}`:
 * ready when a worker that holds it is ready, it is in service, and the
 * gateway is not draining (what `GET /v2/models/{name}/ready` says).
 * `tenant`: as a tenant's token reads it (out of service without its
 * workers, their exits and the operator's settings).
 *
 * @example
 * ```ts ignore
 * readiness(ctx, model).model_version_status[0].state; // "AVAILABLE"
 * ```
 */
export function readiness(
  ctx: Pick<RouteContext, "pool" | "unready">,
  model: GatewayModelInfo,
  status: PoolStatus = statusOf(ctx.pool, model.name),
  tenant = false,
): {
  ready: boolean;
  model_version_status: VersionStatus[];
} {
  const now = status.models.find((m) =>
    m.name === model.name && m.version === model.label
  );
  const version = model.label ?? String(model.version ?? 0);
  const entry = versionReadiness(
    ctx,
    version,
    {
      ...(model.failedReason === undefined
        ? {}
        : { failedReason: model.failedReason }),
      ...now,
    },
    readyWorkers(status),
    tenant,
  );
  return { ready: entry.state === "AVAILABLE", model_version_status: [entry] };
}

/** A model's description as its entry of the pool's status (`readiness`). */
function entryOf(model: GatewayModelInfo): PoolStatus["models"][number] {
  return {
    name: model.name,
    ...(model.label === undefined ? {} : { version: model.label }),
    ...(model.slots === undefined ? {} : { slots: model.slots }),
    ...(model.failedReason === undefined
      ? {}
      : { failedReason: model.failedReason }),
  };
}

/** One version's entry of TF Serving's `model_version_status`. */
interface VersionStatus {
  version: string;
  state: "AVAILABLE" | "UNAVAILABLE";
  status: { error_code: string; error_message: string };
}

type PoolStatus = ReturnType<RouteContext["pool"]["status"]>;

/** The ids of the ready workers. */
function readyWorkers(status: PoolStatus): Set<string> {
  return new Set(
    status.workers.filter((w) => w.state === "ready").map((w) => w.id),
  );
}

/**
 * The `model_version_status` entry of version `version`, from its entry
 * of the pool's status (`now`: its `failedReason` and `slots`).
 */
function versionReadiness(
  ctx: Pick<RouteContext, "unready">,
  version: string,
  now: { failedReason?: string; slots?: readonly string[] },
  ready: Set<string>,
  tenant: boolean,
): VersionStatus {
  const failed = now.failedReason;
  const where = now.slots;
  const why = ctx.unready.aborted
    ? "the gateway is shutting down"
    : failed !== undefined
    ? `out of service: ${tenant ? tenantFailedReason(failed) : failed}`
    : (where === undefined ? ready.size > 0 : where.some((id) => ready.has(id)))
    ? undefined
    : "no worker that holds it is ready";
  return {
    version,
    state: why === undefined ? "AVAILABLE" : "UNAVAILABLE",
    status: why === undefined
      ? { error_code: "OK", error_message: "" }
      : { error_code: "UNAVAILABLE", error_message: why },
  };
}

function forbidden() {
  return httpError(
    403,
    "Forbidden",
    "Cannot manage models: model management is disabled (start with --allow-manage)",
  );
}
