/**
 * The model stream routes: `POST /v1/models/{name}/stream` and
 * `/v1/models/{name}/versions/{version}/stream`, a generator model's items as
 * Server-Sent Events (docs/gateway.md, "POST /v1/models/{name}/stream").
 *
 * @module
 */
import { type Context, Hono } from "hono";
import { ModelHTTPError } from "../errors.ts";
import type { ResponseMeta } from "../session_types.ts";
import {
  errorResponse,
  httpError,
  REQUEST_ID_HEADER,
} from "./error_response.ts";
import { forwardedHeaders } from "./_forward_headers.ts";
import {
  callTimeout,
  checkCallInput,
  clientRequestId,
  defaultGone,
  findVersion,
  internalName,
  MAX_NAME,
  modelNotFound,
  modelsDirHider,
  modelSuccessHeaders,
  readCallInput,
  unknownModel,
} from "./model_routes.ts";
import {
  errorEvent,
  retiredEvent,
  streamError,
  streamEvents,
  type StreamFailure,
  type StreamOutcome,
} from "./_model_stream_events.ts";
import type { RouteContext } from "./route_context.ts";
import { type SseEvent, sseResponse } from "./sse.ts";
import type { WatchedCall } from "./disconnect_watch.ts";
import { TOKEN_RETIRED, type TokenHold } from "./_token_holders.ts";
import { explainedTimeout } from "./_timeout_explained.ts";
import { firstItemTimeout } from "./_first_item_timeout.ts";

/**
 * `?early=` of the stream route: `1`/`true` (or bare `?early`) sends the
 * response's 200 and headers at once, before the first item; `0`/`false`
 * or absent: with it. 400 for anything else.
 */
function earlyHeaders(value: string | undefined): boolean {
  if (value === undefined || value === "0" || value === "false") return false;
  if (value === "" || value === "1" || value === "true") return true;
  throw httpError(
    400,
    "InvalidRequestError",
    "Cannot stream: early must be 1, true, 0 or false",
  );
}

/**
 * Logs the headers a model set before the first item of an early stream
 * (`?early=1`): its 200 and headers went out before the model set them, and
 * a header cannot follow the status line (nor would a trailer reach a
 * browser's `fetch`), so they are not sent. A warning, at most once a minute
 * per model (`refusedHeaderWarnings`, under `?early=1 <model>`), naming at
 * most 10 of them: a model that always sets one would write a line per
 * stream, and a debug line went unseen.
 */
function warnEarlyHeaders(
  ctx: Pick<RouteContext, "logger" | "refusedHeaderWarnings">,
  model: string,
  meta: ResponseMeta,
  requestId: string,
): void {
  const names = Object.keys(meta.headers ?? {});
  if (names.length === 0) return;
  const warned = ctx.refusedHeaderWarnings;
  const key = `?early=1 ${model}`;
  const now = Date.now();
  const last = warned.get(key);
  if (last !== undefined && now - last < EARLY_HEADER_WARNING_MS) return;
  if (last === undefined && warned.size >= 1024) warned.clear();
  warned.set(key, now);
  ctx.logger.warn(
    "Model {model} set headers before the first item of a stream asked for with ?early=1, whose headers had gone out (request id {requestId}): not sent: {names} (said at most once a minute per model)",
    {
      model,
      requestId,
      names: names.slice(0, 10).map((n) => JSON.stringify(n.slice(0, 64)))
        .join(", ") + (names.length > 10 ? `, ... (${names.length})` : ""),
    },
  );
}

/** How often an early stream's dropped headers are logged at most, per model. */
const EARLY_HEADER_WARNING_MS = 60_000;

/**
 * The model stream routes (`POST /v1/models/{name}/stream`, and of a
 * version): until the first item the answer is execute's; its items, then
 * `end` or `error`, as Server-Sent Events; with `?early=1` the 200 at once.
 *
 * @example
 * ```ts ignore
 * app.route("/", modelStreamRoutes(ctx));
 * ```
 */
export function modelStreamRoutes(ctx: RouteContext): Hono {
  const { pool, catalog } = ctx;
  const app = new Hono();
  const notFound = modelNotFound;
  const hideDir = modelsDirHider(ctx);
  const stream = async (
    c: Context,
    name: string,
    version: string | undefined,
  ) => {
    // The client's request id goes with the call (the app's middleware
    // echoes it); an error answered or sent as an event has one either way.
    const clientId = clientRequestId(c.req.raw);
    let requestId = clientId;
    const failure: StreamFailure = {
      model: name,
      debug: ctx.debug(c.req.raw),
      hide: (err) => hideDir(err, c.req.raw),
      logger: ctx.logger,
      refusedHeaderWarnings: ctx.refusedHeaderWarnings,
      exposedHeaders: ctx.exposedHeaders,
      requestId: () => requestId ??= crypto.randomUUID(),
      request: c.req.raw,
      tracing: ctx.tracing,
      explain: (err, items) =>
        explainedTimeout(
          ctx,
          err,
          asked,
          failure.model,
          c.req.query("timeout"),
          items,
        ),
    };
    if (name.length > MAX_NAME) {
      return errorResponse(notFound(name), false, failure.requestId());
    }
    // A model with versions: the one asked for, else its default.
    const asked = name;
    if (version !== undefined) {
      const found = findVersion(ctx, name, version);
      if (typeof found !== "string") {
        ctx.metrics.start("_unknown")(404);
        return errorResponse(found, false, failure.requestId());
      }
      name = found;
    } else if (pool.resolveModel !== undefined) {
      name = pool.resolveModel(name);
      const alias = name === asked ? internalName(ctx, name) : undefined;
      if (alias !== undefined) {
        ctx.metrics.start("_unknown")(404);
        return errorResponse(alias, false, failure.requestId());
      }
    }
    failure.model = name;
    // A model the pool does not have: 404 now, its body not waited for
    // (the app's middleware drops it).
    const missing = unknownModel(ctx, asked, name, c.req.raw);
    if (missing !== undefined) {
      ctx.metrics.start("_unknown")(404);
      return errorResponse(missing, false, failure.requestId());
    }
    const executeStream = pool.executeStream;
    if (executeStream === undefined) {
      return errorResponse(
        httpError(
          501,
          "NotImplemented",
          "Cannot stream: this gateway's pool has no executeStream",
        ),
        false,
        failure.requestId(),
      );
    }
    const done = ctx.metrics.start(name);
    const label = name;
    const started = performance.now();
    let items:
      | (AsyncIterableIterator<unknown> & { cancel(): void })
      | undefined;
    let first: IteratorResult<unknown>;
    // Until the first item there is no response body whose cancel would tell
    // that the client left: a client that disconnects while the model thinks
    // (an LLM's prompt) cancels it as it does an execute call (499).
    let watched: WatchedCall | undefined;
    const onLeave = () => items?.cancel();
    // Held by its token (when tokens are set): a reload or a token file
    // that retires it ends the stream (its model's call cancelled).
    let hold: TokenHold | undefined;
    // Retired: the call cancelled, and the response ended with the 401
    // event also while its client takes no event (endWith): with its items
    // cancelled, the idle bound no longer watched it, and the stream stayed
    // open and in flight until the client read again. Not once the stream
    // sent its end or error (its status no longer 499).
    const onRetired = () => {
      items?.cancel();
      if (outcome.status === 499) idle.resolve(retiredEvent(failure, outcome));
    };
    // The stream stays in flight in the metrics until it ends, and counts
    // with how it ended (an LLM's streams are the gateway's load).
    // `items`: the items it sent (pyproxy_stream_items_total).
    const outcome: StreamOutcome = {
      status: 499,
      items: 0,
      modelAnswered: true,
    };
    // A client that takes no event for the pool's streamIdleTimeout (its
    // socket full, so the events are not pulled) gets its stream cancelled:
    // the response then ends with the error, whether or not it can still
    // take it.
    const idle = Promise.withResolvers<SseEvent>();
    // The headers the model set before its first item (its status is the
    // event stream's 200), given with that item.
    let meta: ResponseMeta | undefined;
    const onResponseMeta = (m: ResponseMeta): void => {
      meta = m;
    };
    const onIdle = (error: Error): void =>
      void errorEvent(error, failure, outcome).then(idle.resolve);
    // ?early=1: the 200 and its headers at once, `: keep-alive` comments
    // until the first item (a proxy's read timeout then bounds the silence,
    // not the time to first token), and an error before it as the stream's
    // `error` event, the body the status would have had.
    const earlyStream = (
      items: AsyncIterableIterator<unknown> & { cancel(): void },
      hold: TokenHold | undefined,
    ): Response => {
      let itemsSent: ((items: number) => void) | undefined;
      const onFirstItem = () => {
        itemsSent = ctx.metrics.firstItem(
          label,
          (performance.now() - started) / 1000,
        );
      };
      return sseResponse(
        streamEvents(
          items,
          undefined,
          ctx.stopSignal,
          failure,
          outcome,
          hold?.signal,
          onFirstItem,
        ),
        {
          onClose: () => {
            hold?.release();
            items.cancel();
            done(outcome.status, outcome.modelAnswered);
            itemsSent?.(outcome.items);
          },
          open: ctx.runtime.streamHeadersWithBody === true,
          endWith: idle.promise,
          keepAliveMs: ctx.streamKeepAlive,
          headers: { [REQUEST_ID_HEADER]: failure.requestId() },
        },
      );
    };
    let early = false;
    try {
      let timeout = callTimeout(ctx, name, c.req.query("timeout"));
      early = earlyHeaders(c.req.query("early"));
      const firstItemMs = firstItemTimeout(
        ctx,
        c.req.query("firstItemTimeout"),
      );
      const input = await readCallInput(ctx, c.req.raw, name);
      if (
        name !== asked && version === undefined &&
        defaultGone(ctx, asked, name)
      ) {
        name = pool.resolveModel!(asked);
        failure.model = name;
        checkCallInput(ctx, name, input);
        timeout = callTimeout(ctx, name, c.req.query("timeout"));
      }
      const { body, contentType } = input;
      const key = c.req.query("key");
      const options: {
        key?: string;
        timeout: number;
        onIdle: typeof onIdle;
        requestId?: string;
        contentType?: string;
        headers?: Record<string, string>;
        caller?: string;
        onResponseMeta: (m: ResponseMeta) => void;
        traceparent?: string;
        tracestate?: string;
        onSend?: (worker: string) => void;
        firstItemTimeout?: number;
      } = key === undefined
        ? { timeout, onIdle, onResponseMeta }
        : { key, timeout, onIdle, onResponseMeta };
      if (firstItemMs !== undefined) options.firstItemTimeout = firstItemMs;
      if (clientId !== undefined) options.requestId = clientId;
      if (contentType !== undefined) options.contentType = contentType;
      if (ctx.forwardHeaders.length > 0) {
        const headers = forwardedHeaders(c.req.raw, ctx.forwardHeaders);
        if (headers !== undefined) options.headers = headers;
      }
      const caller = ctx.callers?.get(c.req.raw);
      if (caller !== undefined) options.caller = caller;
      // Early headers only for a model the pool has: an unknown one is
      // answered at once with its 404 (the pool's, as without them).
      if (early && catalog.describe(pool, name) === undefined) early = false;
      if (early) {
        // Its id is the response's X-Request-Id, sent before any error
        // could make one: made now if the client sent none, and the model's
        // too (its log lines carry the id the client has).
        options.requestId = failure.requestId();
        // Sent before the first item: a model's headers come too late.
        options.onResponseMeta = (m) =>
          warnEarlyHeaders(ctx, name, m, failure.requestId());
      }
      ctx.tracing?.callOptions(c.req.raw, name, options);
      items = executeStream.call(pool, name, body, options);
      hold = ctx.tokenHolders?.holdRequest(c.req.raw, onRetired);
      // The response's body tells that the client left: its cancel
      // cancels the items (onClose).
      if (early) return earlyStream(items, hold);
      watched = ctx.disconnects?.watch(c.req.raw);
      watched?.signal.addEventListener("abort", onLeave, { once: true });
      // Until the first item the status can still say what went wrong (404,
      // 422, 504...); after it, an error is the stream's last event.
      first = await items.next();
    } catch (err) {
      hold?.release();
      const res = watched?.aborted
        ? new Response(null, { status: 499 })
        : streamError(
          err,
          failure,
          await hideDir(
            explainedTimeout(ctx, err, asked, name, c.req.query("timeout")),
            c.req.raw,
          ),
        );
      done(res.status, err instanceof ModelHTTPError);
      return res;
    } finally {
      watched?.signal.removeEventListener("abort", onLeave);
      watched?.end();
    }
    if (watched?.aborted) {
      hold?.release();
      items.cancel();
      done(499);
      return new Response(null, { status: 499 });
    }
    if (hold?.signal.aborted) {
      // Retired while the model made its first item: answered as the
      // token's next request is.
      hold.release();
      const res = errorResponse(
        httpError(401, "Unauthorized", TOKEN_RETIRED),
        false,
        failure.requestId(),
      );
      done(401);
      return res;
    }
    // Its time to first token, and its items when it ends.
    const itemsSent = first.done
      ? undefined
      : ctx.metrics.firstItem(label, (performance.now() - started) / 1000);
    const res = sseResponse(
      streamEvents(
        items,
        first,
        ctx.stopSignal,
        failure,
        outcome,
        hold?.signal,
      ),
      {
        onClose: () => {
          hold?.release();
          items.cancel();
          // Its first item came: any error since is the model's.
          done(outcome.status, true);
          itemsSent?.(outcome.items);
        },
        open: ctx.runtime.streamHeadersWithBody === true,
        endWith: idle.promise,
        keepAliveMs: ctx.streamKeepAlive,
      },
    );
    if (meta === undefined) return res;
    return modelSuccessHeaders(
      ctx,
      name,
      res,
      meta,
      c.req.raw,
      failure.requestId,
      true,
    );
  };
  app.post(
    "/v1/models/:name/stream",
    (c) => stream(c, c.req.param("name"), undefined),
  );
  app.post(
    "/v1/models/:name/versions/:version/stream",
    (c) => stream(c, c.req.param("name"), c.req.param("version")),
  );

  return app;
}
