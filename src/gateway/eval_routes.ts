/**
 * Eval routes (off unless `allowEval`): run Python code and stream its
 * output and result as Server-Sent Events, resumable with `Last-Event-ID`.
 *
 * @module
 */
import { Hono } from "hono";
import * as v from "valibot";
import { ShuttingDownError, StreamIdleError } from "../errors.ts";
import { describeError, httpError } from "./error_response.ts";
import { clientRequestId } from "./model_routes.ts";
import { routeError } from "./_route_error.ts";
import { validBody } from "./_valid_body.ts";
import type { GatewayAtom, GatewayOutputChunk } from "./gateway_pool.ts";
import { readJsonBody, withJsonHint } from "./read_json_body.ts";
import type { RouteContext } from "./route_context.ts";
import {
  type SseEvent,
  sseHead,
  sseResponse,
  type SseResponseOptions,
} from "./sse.ts";
import {
  type HoldEnd,
  TOKEN_RETIRED,
  tokenDemoted,
  type TokenHold,
} from "./_token_holders.ts";

/**
 * A JSON object. Not `v.record`: it takes an array for an object and turns
 * it into one (`[7]` would become a local named `0`).
 */
const JsonObject = v.custom<Record<string, unknown>>(
  (x) => typeof x === "object" && x !== null && !Array.isArray(x),
  "expected an object",
);

const EvalBody = v.strictObject(
  {
    code: v.string("expected a string of Python code"),
    locals: v.optional(JsonObject),
    args: v.optional(
      v.union(
        [v.array(v.unknown()), JsonObject],
        "expected an array or an object",
      ),
    ),
    timeout: v.optional(
      v.pipe(
        v.number("expected an integer >= 1 (ms)"),
        v.integer("expected an integer >= 1 (ms)"),
        v.minValue(1, "expected an integer >= 1 (ms)"),
      ),
    ),
  },
  (
    issue,
  ) => (issue.expected === "never"
    ? "unknown field (allowed: code, locals, args, timeout)"
    : issue.input === undefined && issue.path?.length
    ? "is required"
    : "expected {code, locals?, args?, timeout?}"),
);

// The body is JSON with the code in it; plain code (`curl -d 'print(1)'`) is
// the usual first try.
const JSON_BODY_HINT = ' (send {"code": "<Python code>"})';

/** Why {@linkcode atomEvents} stops early: the gateway's stop, the code still running. */
const STOP = Symbol("stop");
/** Why {@linkcode atomEvents} stops early: its token retired. */
const RETIRED = Symbol("retired");
/** Why {@linkcode atomEvents} stops early: its client left. */
const LEFT = Symbol("left");

/**
 * The events of an eval: its id, its output, then its result or error. A
 * drain does not cut the stream short: the eval runs on in the shutdown
 * grace and its stream ends as usual. Only when `stop` aborts (the grace is
 * over) while the code still runs does the stream end at once, with an
 * `error` event of type `ShuttingDownError` (the workers are being stopped:
 * no result will come). An eval that settled before then keeps its result,
 * even for a client that reads it late. An `error` event carries
 * `requestId`: the eval's own (its `POST`'s `X-Request-Id`), else
 * `requestId` (this request's), else a new UUID; one for an unexpected
 * error (500) is logged with it. When `hold`'s signal aborts (the token
 * the stream was opened with retired by a reload or a token file), the
 * stream ends at once with an `error` event of type `Unauthorized` (status
 * 401), settled or not; `ForbiddenToken` (403) when the token is still
 * accepted but may no longer run eval (`hold.why`: now a tenant's, or no
 * longer the management token). `left` aborts when the client is gone (the response's `onClose`):
 * the stream then lets go of its listeners and its reader at once, not at
 * the code's next output or its end (as a `return()` queued behind the
 * pending read would).
 */
async function* atomEvents(
  atom: GatewayAtom,
  output: ReadableStream<GatewayOutputChunk>,
  debug: boolean,
  stop: AbortSignal,
  requestId: string | undefined,
  logger: RouteContext["logger"],
  logged: WeakSet<GatewayAtom>,
  hold?: TokenHold,
  left?: EvalStreamEnd,
): AsyncGenerator<SseEvent> {
  yield { event: "atom", data: { id: atom.id } };
  const retire = hold?.signal;
  let settled = false;
  atom.result.then(() => settled = true, () => settled = true);
  // The stop and the token's retirement, once told; and the wait they
  // wake. Not a Promise.race per event against promises as long-lived as
  // the stream: each race left a reaction on them until they settled, one
  // per output event (streams27, as the model streams').
  let stopTold = false;
  let retireTold = false;
  let leftTold = false;
  let wake:
    | ((why: typeof STOP | typeof RETIRED | typeof LEFT) => void)
    | undefined;
  const onStop = () => {
    stopTold = true;
    wake?.(STOP);
  };
  const onRetire = () => {
    retireTold = true;
    wake?.(RETIRED);
  };
  // The client left while the code was quiet: nothing else would wake the
  // wait (its response's cancel can only queue a return() behind it), so its
  // listeners and reader stayed until the next output or the result.
  const onLeft = () => {
    leftTold = true;
    wake?.(LEFT);
  };
  if (stop.aborted) onStop();
  else stop.addEventListener("abort", onStop, { once: true });
  if (retire?.aborted) onRetire();
  else retire?.addEventListener("abort", onRetire, { once: true });
  if (left?.signal.aborted) onLeft();
  else left?.signal.addEventListener("abort", onLeft, { once: true });
  /**
   * `promise`'s value, or why the stream stops first: the retirement, or
   * the stop while the code runs (once it settled, its output follows).
   */
  const unless = async <T>(
    promise: Promise<T>,
  ): Promise<T | typeof STOP | typeof RETIRED | typeof LEFT> => {
    if (leftTold) return LEFT;
    if (retireTold) return RETIRED;
    if (stopTold && !settled) return STOP;
    const r = await new Promise<
      T | typeof STOP | typeof RETIRED | typeof LEFT
    >(
      (resolve, reject) => {
        wake = resolve;
        promise.then(resolve, reject);
      },
    );
    wake = undefined;
    return r;
  };
  let cut = false;
  let revoked = false;
  const reader = output.getReader();
  try {
    let read: Promise<ReadableStreamReadResult<GatewayOutputChunk>> | undefined;
    for (;;) {
      read ??= reader.read();
      const next = await unless(read);
      if (next === LEFT) return;
      if (next === RETIRED) {
        revoked = true;
        break;
      }
      if (next === STOP) {
        if (settled) continue; // done in time: the rest of its output follows
        cut = true;
        break;
      }
      read = undefined;
      if (next.done) break;
      const value = next.value;
      yield {
        event: "output",
        id: value.seq,
        data: {
          fd: value.fd,
          data: value.data,
          ...(value.truncated ? { truncated: value.truncated } : {}),
        },
      };
    }
    if (!revoked && !cut && !settled) {
      const ended = atom.result.then(() => undefined, () => undefined);
      const first = await unless(ended);
      if (first === LEFT) return;
      revoked = first === RETIRED;
      cut = first === STOP && !settled;
    }
  } finally {
    stop.removeEventListener("abort", onStop);
    retire?.removeEventListener("abort", onRetire);
    left?.signal.removeEventListener("abort", onLeft);
    // A client that went away releases its reader; the atom keeps running and stays replayable.
    await reader.cancel().catch(() => {});
  }
  // Its last event comes now: a retirement since is told by it, if any.
  if (left !== undefined) left.final = true;
  if (revoked || retire?.aborted) {
    yield retiredEvalEvent(atom, requestId, hold?.why ?? "retired");
    return;
  }
  if (cut) {
    const { status, body } = describeError(
      new ShuttingDownError(
        "Cannot finish eval: the server shut down before the code finished",
      ),
      debug,
    );
    body.requestId = atom.requestId ?? requestId ?? crypto.randomUUID();
    yield { event: "error", data: { status, ...body } };
    return;
  }
  try {
    yield { event: "result", data: { value: (await atom.result) ?? null } };
  } catch (err) {
    // Eval callers can already run any code, so the traceback tells them nothing new; keep it.
    const { status, body } = describeError(err, true);
    if (!debug && status >= 500 && body.type === "InternalError") {
      body.message = "internal error";
    }
    body.requestId = atom.requestId ?? requestId ?? crypto.randomUUID();
    // Unexpected (the client reads "internal error"): logged with the id it
    // got, as a model stream's failure is; once per eval, however many
    // clients replay its events.
    if (status === 500 && !logged.has(atom)) {
      logged.add(atom);
      logger.warn("Eval failed (request id {requestId}): {error}", {
        error: err,
        requestId: body.requestId,
      });
    }
    yield { event: "error", data: { status, ...body } };
  }
}

/**
 * How an eval's event stream ends early: `signal` aborts when its client
 * is gone ({@linkcode atomEvents} lets go at once); `final` once the stream
 * came to its last event.
 */
interface EvalStreamEnd {
  signal: AbortSignal;
  final: boolean;
}

/**
 * The `error` event of an eval stream whose token was retired (401), or
 * may no longer run eval (403, as its next eval: it is now a tenant's, or
 * no longer the management token).
 */
function retiredEvalEvent(
  atom: GatewayAtom,
  requestId: string | undefined,
  why: HoldEnd,
): SseEvent {
  return {
    event: "error",
    data: why === "retired"
      ? {
        status: 401,
        type: "Unauthorized",
        message: TOKEN_RETIRED,
        requestId: atom.requestId ?? requestId ?? crypto.randomUUID(),
      }
      : {
        status: 403,
        type: "ForbiddenToken",
        message: tokenDemoted(why),
        requestId: atom.requestId ?? requestId ?? crypto.randomUUID(),
      },
  };
}

/**
 * The `error` event of an eval stream whose client took no event for
 * `ms` (408 `StreamIdleError`): the stream let go of the eval's output, and
 * the eval runs on (resumable).
 */
function idleEvalEvent(
  atom: GatewayAtom,
  requestId: string | undefined,
  ms: number,
  debug: boolean,
): SseEvent {
  const { status, body } = describeError(
    new StreamIdleError(
      `Cannot read eval stream: no event taken for ${ms} ms (the gateway's limits.streamIdleTimeout, serve --stream-idle-timeout); the eval was not stopped: resume its events with GET /v1/eval/${atom.id}/events`,
    ),
    debug,
  );
  body.requestId = atom.requestId ?? requestId ?? crypto.randomUUID();
  return { event: "error", data: { status, ...body } };
}

/**
 * An eval stream's end: its `EvalStreamEnd`, its hold on its token (whose
 * retirement ends the response with the 401 event at once, also while the
 * client takes no event: nothing pulled the stream then, which stayed open
 * as long as the client kept its connection), and the response's options:
 * its idle bound too (`evalStreamIdleTimeout`), for a client that stops
 * reading while it stays connected: its reader held back the eval's output
 * acknowledgements, so the printing code waited for it up to its timeout,
 * and the stream, its reader and its drain hold stayed as long as the
 * connection (streams28).
 */
function evalStreamEnd(
  ctx: RouteContext,
  request: Request,
  atom: GatewayAtom,
  requestId: string | undefined,
  debug: boolean,
): {
  left: EvalStreamEnd;
  hold: TokenHold | undefined;
  options: Pick<
    SseResponseOptions,
    "onClose" | "endWith" | "idleTimeout" | "onIdle" | "keepAliveMs"
  >;
} {
  const gone = new AbortController();
  const left: EvalStreamEnd = { signal: gone.signal, final: false };
  const retired = Promise.withResolvers<SseEvent>();
  // Ignored by the response while the stream makes its next event (which
  // tells the retirement itself), and once it came to its last.
  const hold = ctx.tokenHolders?.holdRequest(request, (why) => {
    if (!left.final) retired.resolve(retiredEvalEvent(atom, requestId, why));
  }, true);
  const onClose = ctx.metrics.hold();
  return {
    left,
    hold,
    options: {
      onClose: () => {
        hold?.release();
        gone.abort();
        onClose();
      },
      endWith: retired.promise,
      keepAliveMs: ctx.streamKeepAlive,
      idleTimeout: ctx.evalStreamIdleTimeout,
      onIdle: () => {
        // Its last event waits among those not taken: nothing more to say.
        if (left.final) return undefined;
        ctx.metrics.evalStreamIdle();
        ctx.logger.info(
          "An eval stream (eval {id}) was ended: its client took no event for {ms} ms (limits.streamIdleTimeout); the eval runs on",
          { id: atom.id, ms: ctx.evalStreamIdleTimeout },
        );
        return idleEvalEvent(atom, requestId, ctx.evalStreamIdleTimeout, debug);
      },
    },
  };
}

/**
 * The eval routes: `POST /v1/eval` and `GET /v1/eval/{atomId}/events`.
 *
 * @example
 * ```ts ignore
 * app.route("/", evalRoutes(ctx));
 * ```
 */
export function evalRoutes(ctx: RouteContext): Hono {
  const app = new Hono();
  // The evals whose unexpected failure was logged (weak: an eval the
  // registry dropped goes with its entry).
  const logged = new WeakSet<GatewayAtom>();
  // Every error response of these routes carries a request id, as a model
  // call's does: the client's `X-Request-Id`, else a new one.
  app.onError((err, c) =>
    routeError(
      ctx,
      err,
      c,
      clientRequestId(c.req.raw) ?? crypto.randomUUID(),
    )
  );
  const forbidden = () =>
    httpError(
      403,
      "Forbidden",
      "Cannot eval: eval is disabled (start with --allow-eval)",
    );

  app.post("/v1/eval", async (c) => {
    if (!ctx.allowEval) throw forbidden();
    let body: unknown;
    try {
      body = await readJsonBody(
        c.req.raw,
        ctx.bodyLimit,
        ctx.bodyReads,
        ctx.runtime,
        ctx.maxIntegerDigits,
        ctx.maxJsonDepth,
      );
    } catch (err) {
      // Its own hint instead of the general one (Python code posted as it
      // is does not belong in a "text" field).
      throw withJsonHint(err, JSON_BODY_HINT);
    }
    const { code, locals, args, timeout } = validBody(
      EvalBody,
      body,
      "Cannot eval",
    );
    // The client's request id goes with the code (host.request_id()).
    const requestId = clientRequestId(c.req.raw);
    const atom = ctx.pool.eval(code, {
      ...(locals === undefined ? {} : { locals }),
      ...(args === undefined ? {} : { args }),
      timeout: Math.min(timeout ?? ctx.requestTimeout, ctx.requestTimeout),
      ...(requestId === undefined ? {} : { requestId }),
    });
    // The code its token started stops when the token is retired (a token
    // retired because it leaked), whether or not a client still reads.
    // Held as the management token's (when one is set): a reload that
    // makes it an inference token ends them as well.
    const running = ctx.tokenHolders?.holdRequest(
      c.req.raw,
      (why) =>
        atom.cancel(
          why === "retired"
            ? "its token is no longer accepted"
            : why === "tenant"
            ? "its token is now a tenant's"
            : "its token is no longer a management token",
        ),
      true,
    );
    if (running !== undefined) {
      atom.result.then(running.release, running.release);
    }
    const { left, hold: stream, options } = evalStreamEnd(
      ctx,
      c.req.raw,
      atom,
      requestId,
      ctx.debug(c.req.raw),
    );
    if (requestId === undefined) {
      ctx.logger.debug("Eval {id} started", { id: atom.id });
    } else {
      ctx.logger.debug("Eval {id} started (request id {requestId})", {
        id: atom.id,
        requestId,
      });
    }
    return sseResponse(
      atomEvents(
        atom,
        atom.output,
        ctx.debug(c.req.raw),
        ctx.stopSignal,
        requestId,
        ctx.logger,
        logged,
        stream,
        left,
      ),
      // The drain waits for the stream to end (within the grace): over
      // HTTP/2 the server's shutdown resets a stream still being written.
      {
        headers: { "x-atom-id": atom.id },
        ...options,
      },
    );
  });

  app.get("/v1/eval/:id/events", (c) => {
    if (!ctx.allowEval) throw forbidden();
    const id = c.req.param("id");
    const atom = ctx.pool.atoms.get(id);
    if (!atom) {
      throw httpError(
        404,
        "NotFound",
        `Cannot resume eval '${id}': unknown or expired atom`,
      );
    }
    const last = c.req.header("last-event-id") ?? c.req.query("lastEventId");
    let from = 0;
    if (last !== undefined && last !== "") {
      // Plain digits (or -1, "before the first"): not 1e0, 0x1 or +1.
      const n = /^(-1|\d{1,15})$/.test(last) ? Number(last) : NaN;
      if (Number.isNaN(n)) {
        throw httpError(
          400,
          "InvalidRequestError",
          "Cannot resume eval: Last-Event-ID must be an output sequence number",
        );
      }
      from = n + 1;
    }
    // HEAD: no replay reader (nothing would ever read or release it).
    if (c.req.method === "HEAD") return sseHead({ "x-atom-id": atom.id });
    const { left, hold: stream, options } = evalStreamEnd(
      ctx,
      c.req.raw,
      atom,
      clientRequestId(c.req.raw),
      ctx.debug(c.req.raw),
    );
    return sseResponse(
      atomEvents(
        atom,
        atom.replay(from),
        ctx.debug(c.req.raw),
        ctx.stopSignal,
        clientRequestId(c.req.raw),
        ctx.logger,
        logged,
        stream,
        left,
      ),
      {
        headers: { "x-atom-id": atom.id },
        ...options,
      },
    );
  });

  return app;
}
