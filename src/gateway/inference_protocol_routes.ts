/**
 * The Open Inference Protocol (KServe V2 inference protocol, REST): the
 * routes under `/v2` that Triton's, KServe's and MLServer's clients call,
 * over the same models, security, limits, request ids and metrics as the
 * `/v1` model routes. docs/gateway.md, "Open Inference Protocol".
 *
 * @module
 */
import { answerBody } from "./_answer_body.ts";
import { type Context, Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import {
  inferenceMessage,
  readInferenceRequest,
} from "./_inference_request.ts";
import {
  checkRequestedOutputs,
  HEADER_LENGTH,
  type InferenceModel,
  inferenceResponse,
} from "./_inference_response.ts";
import { declaredTensor } from "./_inference_tensors.ts";
import { inferenceRepositoryRoutes } from "./_inference_repository_routes.ts";
import { inferenceStatistics } from "./_inference_statistics.ts";
import { inferenceModelConfig } from "./_inference_model_config.ts";
import { tenantModelConfig } from "./_tenant_view.ts";
import { modelEntries, workersOf } from "./_pool_reads.ts";
import {
  inferenceStreamResponse,
  isTransportRequest,
  transportRetired,
  wantsInferenceStream,
} from "./_inference_stream.ts";
import { TOKEN_RETIRED } from "./_token_holders.ts";
import {
  describeError,
  errorResponse,
  httpError,
  REQUEST_ID_HEADER,
} from "./error_response.ts";
import type { WatchedCall } from "./disconnect_watch.ts";
import { forwardedHeaders } from "./_forward_headers.ts";
import type { GatewayModelInfo } from "./model_catalog.ts";
import {
  callTimeout,
  clientRequestId,
  defaultGone,
  findVersion,
  MAX_NAME,
  modelErrorHeaders,
  modelsDirHider,
  modelSuccessHeaders,
} from "./model_routes.ts";
import { explainedTimeout } from "./_timeout_explained.ts";
import { firstItemTimeout, notAStream } from "./_first_item_timeout.ts";
import { versionKey } from "../_model_version.ts";
import { ModelHTTPError } from "../errors.ts";
import type { ResponseMeta } from "../session_types.ts";
import {
  parseJsonText,
  readBinaryBody,
  readJsonBody,
  withJsonHint,
} from "./read_json_body.ts";
import { errorBodyMessage } from "./_gateway_tracing.ts";
import { hidesModel } from "./_hidden_model.ts";
import type { RouteContext } from "./route_context.ts";

/**
 * The protocol extensions the gateway implements (server metadata): the
 * model repository's with model management only.
 */
const extensions = (manage: boolean): string[] => [
  "binary_tensor_data",
  "classification",
  ...(manage ? ["model_repository"] : []),
  "statistics",
  "model_configuration",
];

/** What a `/v2` body that is not JSON is told (instead of `/v1`'s hint). */
const V2_JSON_HINT =
  ' (an inference request is a JSON object {"inputs": [{"name", "shape", "datatype", "data"}, ...]}; to send tensors as binary data, send that JSON first with each input\'s "parameters": {"binary_data_size": n}, then the tensors\' bytes, and give the JSON\'s length in bytes in the Inference-Header-Content-Length header)';

/** Whether a path is one of the protocol's (its errors take its shape). */
export function isInferenceProtocolPath(path: string): boolean {
  return path === "/v2" || path.startsWith("/v2/");
}

/**
 * An error response of the gateway (`{"error": {"type", "message", ...}}`)
 * in the protocol's shape, `{"error": "message"}`, with the same status and
 * headers (`X-Request-Id`, `Retry-After`, `Allow`...); any other response
 * as it is.
 *
 * @example
 * ```ts ignore
 * const res = await inferenceProtocolError(Response.json({ error: { type: "NotFound", message: "no" } }, { status: 404 }));
 * console.log(await res.json()); // { error: "no" }
 * ```
 */
export async function inferenceProtocolError(res: Response): Promise<Response> {
  if (
    res.status < 400 ||
    !res.headers.get("content-type")?.startsWith("application/json")
  ) return res;
  const body = await res.clone().json().catch(() => undefined) as
    | { error?: { message?: unknown } }
    | undefined;
  const message = body?.error?.message;
  if (typeof message !== "string") return res;
  const headers = new Headers(res.headers);
  headers.delete("content-length");
  return new Response(JSON.stringify({ error: message }), {
    status: res.status,
    headers,
  });
}

/**
 * 400 for a model whose `execute` yields: its items are a stream, which the
 * protocol's REST infer (one response) cannot carry; `/v1`'s stream route
 * sends them as they come. (Triton answers a decoupled model's HTTP infer
 * with a 400 too.)
 */
function streaming(name: string) {
  const path = `/v1/models/${encodeURIComponent(name)}/stream`;
  return httpError(
    400,
    "InvalidRequestError",
    `Cannot infer: model ${
      JSON.stringify(name)
    } streams its results (its execute yields), and /v2 infer answers one response: call POST ${path}, which sends the items as they come (Server-Sent Events), or return them from a model that does not yield`,
  );
}

function tensorsOf(
  declared: Record<string, unknown> | undefined,
): Array<{ name: string; datatype: string; shape: number[] }> {
  return Object.entries(declared ?? {}).flatMap(([name, d]) => {
    const tensor = declaredTensor(d);
    return tensor === undefined ? [] : [{ name, ...tensor }];
  });
}

/**
 * The `/v2` routes: server health and metadata, model metadata and
 * readiness, and inference.
 *
 * @example
 * ```ts ignore
 * app.route("/", inferenceProtocolRoutes(ctx, "0.1.0"));
 * ```
 */
export function inferenceProtocolRoutes(
  ctx: RouteContext,
  version: string,
): Hono {
  const { pool, catalog, metrics } = ctx;
  const app = new Hono();
  const hideDir = modelsDirHider(ctx);

  const readyWorkers = (): Set<string> =>
    new Set(
      workersOf(pool).filter((w) => w.state === "ready").map((w) => w.id),
    );

  const notFound = (message: string) =>
    httpError(404, "ModelNotFoundError", message);
  const notFoundModel = (shown: string): never => {
    throw notFound(`Cannot find model ${shown}`);
  };
  /** The name the pool and the catalog know a model (or its version) by. */
  const keyOf = (model: GatewayModelInfo): string =>
    model.label === undefined
      ? model.name
      : versionKey(model.name, model.label);

  /**
   * The model and its current version, or a 404 naming what is missing. A
   * model with versions (docs/models.md, "Versions"): the version of that
   * label, else its default one.
   */
  const modelOf = (
    name: string,
    version: string | undefined,
    request?: Request,
  ): GatewayModelInfo => {
    const shown = JSON.stringify(name.slice(0, 64));
    // A call (`request`) of one a plugin's canCall hides from its token:
    // as a model not there (before chaos55, onCall's 403 after the body).
    const model = name.length > MAX_NAME ||
        (request !== undefined && hidesModel(ctx, request, name))
      ? undefined
      : catalog.describe(pool, name);
    if (model === undefined) throw notFound(`Cannot find model ${shown}`);
    if (model.label !== undefined) {
      if (version === undefined) return model;
      const found = findVersion(ctx, name, version);
      if (typeof found !== "string") throw found;
      return catalog.describe(pool, name, version) ??
        notFoundModel(shown);
    }
    if (version !== undefined && version !== String(model.version)) {
      throw notFound(
        `Cannot find model ${shown} version ${
          JSON.stringify(version.slice(0, 64))
        }: ${
          model.version === undefined
            ? "it has no version"
            : `its version is ${model.version}`
        } (the gateway serves the current version of each model only)`,
      );
    }
    return model;
  };

  const metadataBody = {
    name: "pyproxy",
    version,
    extensions: extensions(ctx.allowManage),
  };
  // A tenant's token: the same whatever this configuration serves (the
  // repository extension told whether management is on; _tenant_view.ts).
  const tenantMetadataBody = { ...metadataBody, extensions: extensions(false) };
  app.get(
    "/v2",
    (c) =>
      Response.json(
        ctx.isTenant(c.req.raw) ? tenantMetadataBody : metadataBody,
      ),
  );

  app.get("/v2/health/live", () => Response.json({ live: true }));

  app.get("/v2/health/ready", () => {
    // What /healthz says: a ready worker, and not draining.
    const ready = readyWorkers().size > 0 && !ctx.unready.aborted;
    return Response.json({ ready }, { status: ready ? 200 : 503 });
  });

  const metadata = (name: string, version: string | undefined) => {
    // That version's entry and the labels (not every version's entry built:
    // 2 ms a read at 2000 versions); else as the other routes read it.
    const one = name.length > MAX_NAME
      ? undefined
      : catalog.describeOne(pool, name, version);
    const labels = one?.label === undefined
      ? undefined
      : pool.modelVersions?.(name)?.versions;
    const model = one === undefined || (one.label !== undefined && !labels)
      ? modelOf(name, version)
      : labels === undefined
      ? one
      : { ...one, versions: labels };
    return Response.json({
      name: model.name,
      versions: model.versions ??
        (model.version === undefined ? [] : [String(model.version)]),
      platform: "pyproxy",
      inputs: tensorsOf(model.inputs),
      outputs: tensorsOf(model.outputs),
    });
  };
  /** A model's statistics: the version asked for, else each of its versions. */
  const statistics = (name: string, version: string | undefined) => {
    const model = modelOf(name, version);
    // One status read for all the versions (not one each: thousands of
    // versions would make it quadratic).
    const versions = version !== undefined || model.label === undefined
      ? [model]
      : catalog.describeVersions(pool, model.name);
    return Response.json(inferenceStatistics(versions, metrics, pool));
  };
  app.get(
    "/v2/models/:name/stats",
    (c) => statistics(c.req.param("name"), undefined),
  );
  app.get(
    "/v2/models/:name/versions/:version/stats",
    (c) => statistics(c.req.param("name"), c.req.param("version")),
  );
  // A tenant's token: without the count of the workers (_tenant_view.ts).
  const config = (c: Context, version: string | undefined) => {
    const config = inferenceModelConfig(
      modelOf(c.req.param("name")!, version),
      {
        workers: workersOf(pool),
      },
    );
    return Response.json(
      ctx.isTenant(c.req.raw) ? tenantModelConfig(config) : config,
    );
  };
  app.get("/v2/models/:name/config", (c) => config(c, undefined));
  app.get(
    "/v2/models/:name/versions/:version/config",
    (c) => config(c, c.req.param("version")),
  );

  app.get("/v2/models/:name", (c) => {
    const name = c.req.param("name");
    // Triton's GET /v2/models/stats: every model's (the router takes no
    // static route beside the parameter's; a model named "stats" has its
    // metadata at /v2/models/stats/versions/{v}).
    if (name === "stats") {
      return Response.json(
        inferenceStatistics(catalog.list(pool), metrics, pool),
      );
    }
    return metadata(name, undefined);
  });
  app.get(
    "/v2/models/:name/versions/:version",
    (c) => metadata(c.req.param("name"), c.req.param("version")),
  );

  const modelReady = (name: string, version: string | undefined) => {
    // That version's entry alone (a probe a second per model, each read
    // built every version's: 1.5 ms at 2000 versions); anything else (no
    // such model or version: the 404) as the other routes read it.
    const one = name.length > MAX_NAME
      ? undefined
      : catalog.describeOne(pool, name, version);
    const model = one ?? modelOf(name, version);
    const ready = readyWorkers();
    const entry = one ??
      modelEntries(pool, model.name).find((m) => m.version === model.label);
    // A placed model is ready where it is placed; the others everywhere.
    // Out of service (a quarantined model has no slots listed): not ready,
    // as GET /v1/models/{name} says.
    const where = entry?.slots;
    const ok = !ctx.unready.aborted && entry?.failedReason === undefined &&
      model.failedReason === undefined &&
      (where === undefined
        ? ready.size > 0
        : where.some((id) => ready.has(id)));
    return Response.json({ name: model.name, ready: ok }, {
      status: ok ? 200 : 503,
    });
  };
  app.get(
    "/v2/models/:name/ready",
    (c) => modelReady(c.req.param("name"), undefined),
  );
  app.get(
    "/v2/models/:name/versions/:version/ready",
    (c) => modelReady(c.req.param("name"), c.req.param("version")),
  );

  /**
   * The request's body, with the protocol's hint instead of `/v1`'s when it
   * is not JSON (execute's binary bodies do not apply here: tensors in
   * binary go after a JSON header whose length a header gives).
   */
  const readBody = async (
    request: Request,
  ): Promise<{ body: unknown; binary?: Uint8Array }> => {
    try {
      return await readBodyAsIs(request);
    } catch (err) {
      throw withJsonHint(err, V2_JSON_HINT);
    }
  };

  /** The request's body: JSON, or a JSON header then binary tensors. */
  const readBodyAsIs = async (
    request: Request,
  ): Promise<{ body: unknown; binary?: Uint8Array }> => {
    const declared = request.headers.get(HEADER_LENGTH);
    if (declared === null) {
      return {
        body: await readJsonBody(
          request,
          ctx.bodyLimit,
          ctx.bodyReads,
          ctx.runtime,
          ctx.maxIntegerDigits,
          ctx.maxJsonDepth,
        ),
      };
    }
    const bytes = await readBinaryBody(request, ctx.bodyLimit, ctx.bodyReads);
    const length = Number(declared);
    if (!/^\d+$/.test(declared) || length > bytes.byteLength) {
      throw httpError(
        400,
        "InvalidRequestError",
        `Cannot infer: ${HEADER_LENGTH} ${
          JSON.stringify(declared.slice(0, 32))
        } is not a length within the body's ${bytes.byteLength} bytes`,
      );
    }
    const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(
      bytes.subarray(0, length),
    );
    return {
      body: parseJsonText(
        text,
        request,
        ctx.maxIntegerDigits,
        ctx.maxJsonDepth,
      ),
      binary: bytes.subarray(length),
    };
  };

  const infer = async (
    request: Request,
    name: string,
    version: string | undefined,
  ): Promise<Response> => {
    const clientId = clientRequestId(request);
    // A version's calls count as that version's (its metrics' version label).
    let model: GatewayModelInfo | undefined;
    try {
      model = modelOf(name, version, request);
    } catch {
      // Answered below, counted as a call of no model.
    }
    const user = name;
    if (model !== undefined) name = keyOf(model);
    // The gRPC transport's ModelStreamInfer takes a yielding model's items.
    // (Read only for such a model: no work for the others' calls.)
    const itemsWanted = () => wantsInferenceStream(request);
    const done = metrics.start(name);
    // A 404 of the model's own (its HTTPError) counts as its call.
    let answered = false;
    let res: Response;
    let watched: WatchedCall | undefined;
    let meta: ResponseMeta | undefined;
    try {
      model ??= modelOf(user, version, request);
      // A stream's bound on a call that is none: refused, not ignored (its
      // client would believe it bounded). A transport stream's request of a
      // model that returns takes it: its one answer is its first item.
      if (
        request.url.includes("?") && !itemsWanted() &&
        new URL(request.url).searchParams.has("firstItemTimeout")
      ) throw notAStream("infer", isTransportRequest(request));
      if (model.streams === true && !itemsWanted()) throw streaming(model.name);
      const changes = catalog.changes;
      const { body, binary } = await readBody(request);
      // The default it arrived for went away while the body came in: the
      // default of now runs it (its inputs and outputs).
      if (
        version === undefined && name !== user &&
        defaultGone(ctx, user, name)
      ) {
        model = modelOf(user, undefined);
        name = keyOf(model);
        if (model.streams === true && !itemsWanted()) {
          throw streaming(model.name);
        }
      } else if (catalog.changes !== changes) {
        // Changed while a slow client sent the body: the answer carried the
        // old version's number and labels. Described again, the version it
        // runs on (a default's call keeps its arrival default's label).
        model = modelOf(user, model.label ?? version);
        if (model.streams === true && !itemsWanted()) {
          throw streaming(model.name);
        }
      }
      const inference = readInferenceRequest(body, binary);
      const about: InferenceModel = {
        name: user,
        version: model.label ??
          (model.version === undefined ? undefined : String(model.version)),
        outputs: model.outputs,
      };
      checkRequestedOutputs(inference, about);
      const msg = inferenceMessage(inference, model.inputs);
      // A ValidationError: a 400 naming the bad inputs.
      catalog.validator(name)?.check(msg, name);
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
      } = {
        timeout: callTimeout(ctx, name, undefined),
        onResponseMeta: (m) => meta = m,
      };
      if (clientId !== undefined) options.requestId = clientId;
      if (ctx.forwardHeaders.length > 0) {
        const headers = forwardedHeaders(request, ctx.forwardHeaders);
        if (headers !== undefined) options.headers = headers;
      }
      const caller = ctx.callers?.get(request);
      if (caller !== undefined) options.caller = caller;
      watched = ctx.disconnects?.watch(request);
      if (watched !== undefined) options.signal = watched.signal;
      ctx.tracing?.callOptions(request, name, options);
      if (model.streams === true && pool.executeStream !== undefined) {
        const { signal: _, onResponseMeta: __, ...streamOptions }: {
          firstItemTimeout?: number;
        } & typeof options = options;
        // Its bound on its first item: the gateway's, or the lower one of
        // the gRPC request's firstItemTimeout parameter (the transport's
        // query: only its requests get here).
        const firstItemMs = firstItemTimeout(
          ctx,
          new URL(request.url).searchParams.get("firstItemTimeout") ??
            undefined,
        );
        if (firstItemMs !== undefined) {
          streamOptions.firstItemTimeout = firstItemMs;
        }
        // Ended, its model's call cancelled, when a reload or a token file
        // retires the token it was opened with.
        // The gRPC transport that asked is told too: its stream ends even
        // while its client reads nothing (this body then waits unread).
        // After this stream's own end (the hold's signal, next): the call
        // counts as the 401 it is, not as cancelled by the transport's end.
        const hold = ctx.tokenHolders?.holdRequest(
          request,
          () => queueMicrotask(() => transportRetired(request, TOKEN_RETIRED)),
        );
        // Counted once it is over (in flight until then), as /v1's streams:
        // 200 after its last item, 499 cancelled, or its error's status.
        try {
          return await inferenceStreamResponse(
            pool.executeStream(name, msg, streamOptions),
            (item) => inferenceResponse(item, inference, about),
            {
              signal: request.signal,
              hideError: (err, items) =>
                hideDir(
                  explainedTimeout(ctx, err, user, name, undefined, items),
                  request,
                ),
              // Its record carries REST's status and body (gRPC's error
              // response parameters), as a status would before the first.
              describeError: (err) => {
                const { status, body } = describeError(err, ctx.debug(request));
                body.requestId = clientId ?? crypto.randomUUID();
                return { status, body };
              },
              ...(hold === undefined ? {} : {
                retire: hold.signal,
                retiredError: () =>
                  httpError(401, "Unauthorized", TOKEN_RETIRED),
              }),
              onEnd: (outcome) => {
                hold?.release();
                if (outcome === "done" || outcome === "cancelled") {
                  done(outcome === "done" ? 200 : 499);
                  return;
                }
                const status = errorStatus(outcome.error);
                // Its span ends with the error, not the 200 it began with (the
                // message as the error's body would say it).
                if (ctx.tracing !== undefined) {
                  const { body } = describeError(outcome.error, false);
                  ctx.tracing.streamFailed(
                    request,
                    status,
                    errorBodyMessage({ error: body }, status),
                  );
                }
                done(status);
              },
            },
          );
        } catch (err) {
          hold?.release();
          throw err;
        }
      }
      const result = await pool.execute(name, msg, options);
      const compression = ctx.compression;
      res = compression === undefined
        ? inferenceResponse(
          result,
          inference,
          about,
          // A large answer's delivery is waited for by the server's shutdown.
          (body, headers) =>
            new Response(answerBody(ctx.runtime, request, body, headers), {
              headers,
            }),
        )
        : inferenceResponse(
          result,
          inference,
          about,
          (body, headers) => compression.body(request, body, headers),
        );
      // The headers the model chose (host.set_header), as execute sends
      // them; not its status: the protocol's clients (tritonclient) take
      // any answer but a 200 for an error.
      if (meta !== undefined) {
        const answered = res;
        res = modelSuccessHeaders(ctx, name, res, meta, request, () => {
          // Its status kept: `answered` is the response that goes out.
          const requestId = clientId ?? crypto.randomUUID();
          answered.headers.set(REQUEST_ID_HEADER, requestId);
          return requestId;
        }, true);
      }
    } catch (err) {
      answered = err instanceof ModelHTTPError;
      if (watched?.aborted) {
        res = new Response(null, { status: 499 });
      } else {
        const requestId = clientId ?? crypto.randomUUID();
        modelErrorHeaders(ctx, name, err, requestId, request);
        res = errorResponse(
          await hideDir(
            // A stream's first item: gRPC's parameter, the only request
            // that sets one here.
            explainedTimeout(
              ctx,
              err,
              user,
              name,
              undefined,
              undefined,
              "firstItemTimeout parameter",
            ),
            request,
          ),
          ctx.debug(request),
          requestId,
        );
        if (res.status === 500) {
          ctx.logger.warn(
            "Inference failed (request id {requestId}): {error}",
            {
              error: err instanceof HTTPException ? err.message : err,
              requestId,
            },
          );
        }
      }
    } finally {
      watched?.end();
    }
    done(res.status, answered);
    return res;
  };
  /** The status an error after a stream's first item is counted with. */
  const errorStatus = (err: unknown): number =>
    err instanceof HTTPException
      ? err.status
      : describeError(err, false).status;
  app.post(
    "/v2/models/:name/infer",
    (c) => infer(c.req.raw, c.req.param("name"), undefined),
  );
  app.post(
    "/v2/models/:name/versions/:version/infer",
    (c) => infer(c.req.raw, c.req.param("name"), c.req.param("version")),
  );
  app.route("/", inferenceRepositoryRoutes(ctx));
  return app;
}
