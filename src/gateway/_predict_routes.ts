/**
 * TensorFlow Serving's REST predict API, which KServe's V1 protocol copied:
 * `POST /v1/models/{name}[/versions/{v}]:predict` with `{"instances": [...]}`
 * (row format) or `{"inputs": ...}` (columnar), answered
 * `{"predictions": ...}` (or `{"outputs": ...}`), errors
 * `{"error": "message"}`; over the same models, security, limits, request
 * ids, metrics, timeouts and cancel on disconnect as
 * `POST /v1/models/{name}/execute`. docs/gateway.md, "TensorFlow Serving and
 * KServe V1 (`:predict`)".
 *
 * @module
 */
import { jsonAnswer } from "./_answer_body.ts";
import { toBase64 } from "../_binary.ts";
import { versionKey } from "../_model_version.ts";
import { notAStream } from "./_first_item_timeout.ts";
import { ModelHTTPError, TimeoutError, ValidationError } from "../errors.ts";
import type { ResponseMeta } from "../session_types.ts";
import type { WatchedCall } from "./disconnect_watch.ts";
import {
  errorResponse,
  httpError,
  REQUEST_ID_HEADER,
} from "./error_response.ts";
import { forwardedHeaders } from "./_forward_headers.ts";
import type { GatewayModelInfo } from "./model_catalog.ts";
import {
  callTimeout,
  clientRequestId,
  findVersion,
  MAX_NAME,
  modelErrorHeaders,
  modelsDirHider,
  modelSuccessHeaders,
} from "./model_routes.ts";
import { noTransform } from "./_response_compression.ts";
import { readJsonBody, withJsonHint } from "./read_json_body.ts";
import { hidesModel } from "./_hidden_model.ts";
import type { RouteContext } from "./route_context.ts";

/**
 * The path of a call with a verb after the model name (`echo:predict`,
 * `echo/versions/2:predict`): its errors take TF Serving's shape,
 * `{"error": "message"}`. No model name or version label has a colon.
 *
 * @example
 * ```ts
 * import { isPredictPath } from "./_predict_routes.ts";
 * console.log(isPredictPath("/v1/models/echo:predict")); // true
 * console.log(isPredictPath("/v1/models/echo/execute")); // false
 * console.log(isPredictPath("/v1/models/echo%3Apredict")); // true
 * console.log(isPredictPath("/v1/models/a:b/execute")); // false
 * ```
 */
export function isPredictPath(path: string): boolean {
  if (!path.startsWith("/v1/models/")) return false;
  // In the last segment only: /v1/models/a:b/execute is execute's. A
  // trailing slash (/v1/models/a:predict/, a 404) leaves it the last.
  const end = path.endsWith("/") ? path.length - 1 : path.length;
  const last = path.slice(path.lastIndexOf("/", end - 1) + 1, end);
  return last.includes(":") || ENCODED_COLON.test(last);
}

// A colon sent percent-encoded (answered with a hint: app.ts's 405).
const ENCODED_COLON = /%3a/i;

/** The most calls of one `:predict` of a batching model in flight at once. */
const MAX_ROWS_IN_FLIGHT = 1024;

/**
 * The most instances of one `:predict` of a batching model: each is a call
 * of its own, so a 1 MiB body of 400k tiny instances held the gateway for
 * seconds and ~300 MB; a client splits a larger request.
 */
export const MAX_PREDICT_INSTANCES = 65_536;

/** The 400 of a batching model's request with too many instances. */
function checkInstanceCount(n: number): void {
  if (n > MAX_PREDICT_INSTANCES) {
    throw badBody(
      `a batching model takes at most ${MAX_PREDICT_INSTANCES} instances per request (each is a call of its own), got ${n}: split the request`,
    );
  }
}

type Format = "instances" | "inputs";

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) &&
    !(value instanceof Uint8Array);
}

function badBody(message: string): Error {
  return httpError(400, "InvalidRequestError", `Cannot predict: ${message}`);
}

/** What a `:predict` body that is not JSON is told (instead of execute's hint). */
const PREDICT_JSON_HINT =
  ' (a predict request is a JSON object: {"instances": [...]} or {"inputs": ...})';

/** The request's JSON body, with `:predict`'s hint when it is not JSON. */
async function readPredictBody(
  ctx: RouteContext,
  request: Request,
): Promise<unknown> {
  try {
    return await readJsonBody(
      request,
      ctx.bodyLimit,
      ctx.bodyReads,
      ctx.runtime,
      ctx.maxIntegerDigits,
      ctx.maxJsonDepth,
    );
  } catch (err) {
    throw withJsonHint(err, PREDICT_JSON_HINT);
  }
}

/** The request's format, or a 400 as TF Serving answers a malformed one. */
function formatOf(body: unknown): Format {
  if (!isObject(body)) {
    throw badBody(
      'the body must be a JSON object: {"instances": [...]} (row format) or {"inputs": ...} (columnar format)',
    );
  }
  const rows = Object.hasOwn(body, "instances");
  const columns = Object.hasOwn(body, "inputs");
  if (rows && columns) {
    throw badBody(
      'the body has both "instances" and "inputs": send one of them (row or columnar format)',
    );
  }
  if (!rows && !columns) {
    throw badBody(
      'the body has neither "instances" (a list: row format) nor "inputs" (columnar format)',
    );
  }
  if (rows && !Array.isArray(body.instances)) {
    throw badBody('"instances" must be a list (one item per instance)');
  }
  if (columns && (body.inputs === null || body.inputs === undefined)) {
    throw badBody('"inputs" must be a value, a list or an object of inputs');
  }
  return rows ? "instances" : "inputs";
}

/**
 * The rows of a columnar request for a batching model: a list's items, or
 * an object of equal-length lists read row by row.
 */
function columnsToRows(inputs: unknown): unknown[] {
  if (Array.isArray(inputs)) return inputs;
  const shape =
    'for a batching model, "inputs" must be a list (one item per instance) or an object of lists of one length (one item per instance each)';
  if (!isObject(inputs)) throw badBody(shape);
  const names = Object.keys(inputs);
  const lists = names.map((n) => inputs[n]);
  if (names.length === 0 || !lists.every(Array.isArray)) throw badBody(shape);
  const n = (lists[0] as unknown[]).length;
  checkInstanceCount(n); // before the rows are built
  if (!lists.every((l) => (l as unknown[]).length === n)) {
    throw badBody(
      `${shape}: ${
        names.slice(0, 8).map((k, i) =>
          `${JSON.stringify(k.slice(0, 64))} has ${
            (lists[i] as unknown[]).length
          }`
        ).join(", ")
      }`,
    );
  }
  const rows = new Array<unknown>(n);
  for (let i = 0; i < n; i++) {
    // fromEntries: an input named "__proto__" stays an input (under Bun,
    // an assignment calls Object.prototype's setter).
    rows[i] = Object.fromEntries(
      names.map((k, j) => [k, (lists[j] as unknown[])[i]]),
    );
  }
  return rows;
}

/**
 * The columnar form of a batching model's predictions: an object of lists
 * when each is an object with the same keys, else the list. A binary value
 * (`{"b64": ...}`: a `bytes` result) is a value, not an output named b64.
 */
function rowsToColumns(predictions: unknown[]): unknown {
  const first = predictions[0];
  if (!isObject(first)) return predictions;
  const names = Object.keys(first);
  if (names.length === 1 && names[0] === "b64") return predictions;
  const same = predictions.every((p) =>
    isObject(p) && Object.keys(p).length === names.length &&
    names.every((k) => Object.hasOwn(p, k))
  );
  if (!same) return predictions;
  // fromEntries: an output named "__proto__" stays an output.
  return Object.fromEntries(
    names.map((k) => [
      k,
      predictions.map((p) => (p as Record<string, unknown>)[k]),
    ]),
  );
}

/**
 * A batching model's instance that breaks its declared inputs: the message
 * says which of the request's instances (its fields' paths are the
 * instance's own; `:predict`'s `{"error"}` shape shows only the message).
 */
function atInstance(err: unknown, i: number): unknown {
  return err instanceof ValidationError
    ? new ValidationError(`${err.message} (instance ${i})`, err.fields)
    : err;
}

/** A result as JSON can carry it: bytes as TF Serving's `{"b64": ...}`. */
function jsonable(value: unknown): unknown {
  return value instanceof Uint8Array ? { b64: toBase64(value) } : value ?? null;
}

/**
 * The `:predict` calls (and the verbs refused: `:explain`, `:classify`,
 * `:regress`): a function of a `POST`'s request and path that answers one,
 * or `undefined` for a path that is not one. Not a route of the router:
 * Hono's fast router (RegExpRouter) takes no pattern with a colon inside a
 * segment, and every routed request would pay for the slower one; the app
 * calls it for the `POST`s no route takes, after its guards (Host, Origin,
 * CORS, token), as its 404 handler.
 *
 * @example
 * ```ts ignore
 * const call = predictCalls(ctx);
 * app.notFound((c) => call(c.req.raw, c.req.path) ?? c.json({}, 404));
 * ```
 */
export function predictCalls(
  ctx: RouteContext,
): (request: Request, path: string) => Promise<Response> | undefined {
  const { pool, catalog, metrics } = ctx;
  const hideDir = modelsDirHider(ctx);

  const notFound = (message: string) =>
    httpError(404, "ModelNotFoundError", message);

  /**
   * The model and the name the pool knows it by: a model with versions,
   * the one of that label, else its default; a model without, its current
   * one, whose `version` (a count of its loads, as `GET /v1/models/{name}`
   * and `/v2` show it) a version in the path must name.
   */
  const modelOf = (
    name: string,
    version: string | undefined,
    request?: Request,
  ): { model: GatewayModelInfo; key: string } => {
    const shown = JSON.stringify(name.slice(0, 64));
    // A call (`request`) of one a plugin's canCall hides from its token:
    // as a model not there (before chaos55, onCall's 403 after the body).
    const model = name.length > MAX_NAME ||
        (request !== undefined && hidesModel(ctx, request, name))
      ? undefined
      : catalog.describe(pool, name);
    if (model === undefined) throw notFound(`Cannot find model ${shown}`);
    if (model.label !== undefined) {
      if (version === undefined) {
        return { model, key: versionKey(model.name, model.label) };
      }
      const found = findVersion(ctx, name, version);
      if (typeof found !== "string") throw found;
      const described = catalog.describe(pool, name, version);
      if (described === undefined) throw notFound(`Cannot find model ${shown}`);
      return { model: described, key: found };
    }
    if (version !== undefined && version !== String(model.version)) {
      throw notFound(
        `Cannot find model ${shown} version ${
          JSON.stringify(version.slice(0, 64))
        }: ${
          model.version === undefined
            ? "it has no version"
            : `its version is ${model.version}`
        }`,
      );
    }
    return { model, key: model.name };
  };

  const streaming = (name: string) => {
    const path = `/v1/models/${encodeURIComponent(name)}/stream`;
    return httpError(
      400,
      "InvalidRequestError",
      `Cannot predict: model ${
        JSON.stringify(name)
      } streams its results (its execute yields), and :predict answers one response: call POST ${path}, which sends the items as they come (Server-Sent Events)`,
    );
  };

  const predict = async (
    request: Request,
    name: string,
    version: string | undefined,
  ): Promise<Response> => {
    const clientId = clientRequestId(request);
    let found: { model: GatewayModelInfo; key: string } | undefined;
    try {
      found = modelOf(name, version, request);
    } catch {
      // Answered below, counted as a call of no model.
    }
    let key = found?.key ?? name;
    const done = metrics.start(found === undefined ? "_unknown" : key);
    // A 404 of the model's own (its HTTPError) counts as its call.
    let answered = false;
    let res: Response;
    let watched: WatchedCall | undefined;
    let meta: ResponseMeta | undefined;
    try {
      let { model } = found ?? modelOf(name, version, request);
      if (model.streams === true) throw streaming(model.name);
      const query = request.url.includes("?")
        ? new URL(request.url).searchParams
        : undefined;
      // A stream's bound: refused, not ignored, as execute's and /v2
      // infer's (notAStream): its client would believe its call bounded.
      if (query?.has("firstItemTimeout")) throw notAStream("predict", false);
      const timeout = callTimeout(
        ctx,
        key,
        query?.get("timeout") ?? undefined,
      );
      const body = await readPredictBody(ctx, request);
      // The default version, removed while the body arrived: the new
      // default runs, as execute does.
      if (version === undefined && model.label !== undefined) {
        ({ model, key } = modelOf(name, undefined));
      }
      const format = formatOf(body);
      const options: {
        timeout: number;
        signal?: AbortSignal;
        requestId?: string;
        headers?: Record<string, string>;
        caller?: string;
        onResponseMeta: (m: ResponseMeta) => void;
        traceparent?: string;
        tracestate?: string;
        onSend?: (worker: string) => void;
      } = { timeout, onResponseMeta: (m) => meta ??= m };
      if (clientId !== undefined) options.requestId = clientId;
      if (ctx.forwardHeaders.length > 0) {
        const headers = forwardedHeaders(request, ctx.forwardHeaders);
        if (headers !== undefined) options.headers = headers;
      }
      const caller = ctx.callers?.get(request);
      if (caller !== undefined) options.caller = caller;
      ctx.tracing?.callOptions(request, key, options);
      const validator = catalog.validator(key);
      let answer: unknown;
      if (model.batch === undefined) {
        // As KServe's custom model's predict(payload): the whole body.
        validator?.check(body, key);
        watched = ctx.disconnects?.watch(request);
        if (watched !== undefined) options.signal = watched.signal;
        const result = await pool.execute(key, body, options);
        answer = isObject(result) &&
            (Object.hasOwn(result, "predictions") ||
              Object.hasOwn(result, "outputs"))
          ? result
          : format === "instances"
          ? { predictions: jsonable(result) }
          : { outputs: jsonable(result) };
      } else {
        // One message per instance, gathered into the model's batches.
        const input = body as Record<string, unknown>;
        const rows = format === "instances"
          ? input.instances as unknown[]
          : columnsToRows(input.inputs);
        checkInstanceCount(rows.length);
        if (validator !== undefined) {
          for (let i = 0; i < rows.length; i++) {
            try {
              validator.check(rows[i], key);
            } catch (err) {
              throw atInstance(err, i);
            }
          }
        }
        watched = ctx.disconnects?.watch(request);
        const predictions = await runRows(
          key,
          rows,
          options,
          model.batch.size,
          watched?.signal,
        );
        answer = format === "instances"
          ? { predictions }
          : { outputs: rowsToColumns(predictions) };
      }
      const compression = ctx.compression !== undefined && !noTransform(meta)
        ? ctx.compression
        : undefined;
      res = compression === undefined
        ? jsonAnswer(ctx.runtime, request, answer)
        : compression.json(request, answer);
      if (meta !== undefined) {
        res = modelSuccessHeaders(
          ctx,
          key,
          res,
          meta,
          request,
          () => clientId ?? crypto.randomUUID(),
        );
      }
      if (clientId !== undefined) res.headers.set(REQUEST_ID_HEADER, clientId);
    } catch (err) {
      answered = err instanceof ModelHTTPError;
      if (watched?.aborted) {
        res = new Response(null, { status: 499 });
      } else {
        const requestId = clientId ?? crypto.randomUUID();
        modelErrorHeaders(ctx, key, err, requestId, request);
        res = errorResponse(
          await hideDir(err, request),
          ctx.debug(request),
          requestId,
        );
        if (res.status === 500) {
          ctx.logger.warn("Predict failed (request id {requestId}): {error}", {
            error: err,
            requestId,
          });
        }
      }
    } finally {
      watched?.end();
    }
    done(res.status, answered);
    return res;
  };

  /**
   * A batching model's predictions: one call per row, in flight a few
   * batches at a time (memory stays bounded for any number of rows), in
   * order; the first failure fails the request and cancels the others. The
   * call's timeout is the request's, for all its rows.
   */
  const runRows = async (
    key: string,
    rows: unknown[],
    options: {
      timeout: number;
      signal?: AbortSignal;
      onResponseMeta: (m: ResponseMeta) => void;
    },
    batchSize: number,
    left: AbortSignal | undefined,
  ): Promise<unknown[]> => {
    const out = new Array<unknown>(rows.length);
    if (rows.length === 0) return out;
    const stop = new AbortController();
    const onLeave = () => stop.abort(left?.reason);
    left?.addEventListener("abort", onLeave, { once: true });
    const deadline = performance.now() + options.timeout;
    let next = 0;
    let failed = false;
    let failure: unknown;
    const work = async () => {
      while (!failed && next < rows.length) {
        const i = next++;
        try {
          const result = await pool.execute(key, rows[i], {
            ...options,
            signal: stop.signal,
            timeout: Math.max(1, Math.ceil(deadline - performance.now())),
          });
          out[i] = jsonable(result);
        } catch (err) {
          if (!failed) {
            failed = true;
            // A row's timeout is what was left of the request's: named
            // by the request's (was "timed out after 81 ms" of 500).
            failure = err instanceof TimeoutError
              ? new TimeoutError(
                `Cannot complete predict: timed out after ${options.timeout} ms (the request's timeout, for all its ${rows.length} instances)`,
                { cause: err },
              )
              : err;
            stop.abort();
          }
        }
      }
    };
    try {
      const inFlight = Math.min(
        rows.length,
        MAX_ROWS_IN_FLIGHT,
        Math.max(1, batchSize) * 4,
      );
      await Promise.all(Array.from({ length: inFlight }, work));
    } finally {
      left?.removeEventListener("abort", onLeave);
    }
    if (failed) throw failure;
    return out;
  };

  const refused = (verb: string, name: string): Error => {
    const model = name.length <= 64 ? name : "{name}";
    if (verb === "explain") {
      return httpError(
        501,
        "NotImplemented",
        `Cannot explain: the gateway serves no explainers (KServe's :explain); serve the explainer as a model of its own and call POST /v1/models/{explainer}:predict, or return explanations from ${model}'s own predictions`,
      );
    }
    return httpError(
      501,
      "NotImplemented",
      `Cannot ${verb}: TensorFlow Serving's Classify and Regress APIs are not served; call POST /v1/models/${model}:predict with {"instances": [...]}`,
    );
  };

  return (request, path) => {
    const found = PREDICT_PATH.exec(path) ?? VERSION_PREDICT_PATH.exec(path);
    if (found === null) return undefined;
    let name: string;
    let version: string | undefined;
    try {
      // As the router passes a parameter on: percent-decoded.
      name = decodeURIComponent(found[1]!);
      version = found.length === 3 ? undefined : decodeURIComponent(found[2]!);
    } catch {
      return undefined;
    }
    const what = found[found.length - 1]!;
    if (what === "predict") return predict(request, name, version);
    const err = what === "explain" || what === "classify" || what === "regress"
      ? refused(what, name)
      : httpError(
        404,
        "NotFound",
        `Cannot find route POST ${path} (the verbs after a model name are :predict, and KServe's :explain)`,
      );
    return Promise.resolve(
      errorResponse(
        err,
        false,
        clientRequestId(request) ?? crypto.randomUUID(),
      ),
    );
  };
}

// `/v1/models/{name}:{verb}`, `/v1/models/{name}/versions/{v}:{verb}`: no
// model name or version label has a colon, so the first one splits.
// An empty name or version is a 404 of its own (not execute's 405, whose
// hint would be to POST /v1/models/:predict/execute).
const PREDICT_PATH = /^\/v1\/models\/([^/:]*):([^/]*)$/;
const VERSION_PREDICT_PATH =
  /^\/v1\/models\/([^/:]+)\/versions\/([^/:]*):([^/]*)$/;
