/**
 * A model call's timeout, as the gateway's client and operator can act on
 * it. The pool says "Cannot complete executeModel: timed out after 2000 ms":
 * its internal command, neither the model nor the setting that chose the
 * time. The 504 of the execute and stream routes names both, and so does
 * the error that ends a stream after its first item (its SSE `error` event,
 * gRPC ModelStreamInfer's last response).
 *
 * @module
 */
import { type PyProxyErrorOptions, TimeoutError } from "../errors.ts";
import type { RouteContext } from "./route_context.ts";

/**
 * The pool's wording of a call's deadline: its session's (the time left
 * once it left the queue, which may be a millisecond short), or the
 * queue's, where it waited for a worker's free slot until then.
 */
const TIMED_OUT = /: timed out (after \d+ ms|in the pool queue)$/;

/**
 * `err` when it is not a call's timeout; else a `TimeoutError` (its cause
 * `err`) that names the model `asked` (with the version of `name`, its
 * internal `asked@version`, when it differs), the time, and where the time
 * came from: the request's `?timeout=` when it lowered the model's, the
 * model's `timeout` (its `pyproxy.json` entry or `PUT` body), its class's
 * `timeout_ms`, or the gateway's `limits.requestTimeout`. With `itemsSent`
 * (a stream that timed out after its first item) it says the stream ran all
 * that time and how many items it sent: the timeout covers the whole stream,
 * not each item (`limits.streamIdleTimeout`, the other bound, ends it with a
 * `StreamIdleError` of its own). A stream's `firstItemTimeout` names the
 * request's setting as `firstItemParam` (the stream route's
 * `?firstItemTimeout=`, gRPC's parameter). Only on the error path: nothing
 * per call.
 *
 * @example
 * ```ts ignore
 * res = errorResponse(explainedTimeout(ctx, err, "hang", "hang", undefined), false, id);
 * // 504 {"error": {"type": "TimeoutError", "message": "Cannot run model 'hang': no answer within 2000 ms, ..."}}
 * ```
 */
export function explainedTimeout(
  ctx: Pick<
    RouteContext,
    "catalog" | "pool" | "requestTimeout" | "streamFirstItemTimeout"
  >,
  err: unknown,
  asked: string,
  name: string,
  timeoutParam: string | undefined,
  itemsSent?: number,
  firstItemParam = "?firstItemTimeout=",
): unknown {
  if (!(err instanceof TimeoutError)) return err;
  if (err.details.bound === "firstItemTimeout") {
    return firstItemLate(
      err,
      asked,
      name,
      ctx.streamFirstItemTimeout,
      firstItemParam,
    );
  }
  // The pool's model calls say where they waited (callTimedOut); a batched
  // call's own timer, the whole call's, only its wording.
  const waited = err.details.waited;
  const how = waited === "queue"
    ? "in the pool queue"
    : waited === "worker"
    ? "after"
    : waited === "plugin"
    ? "plugin"
    : TIMED_OUT.exec(err.message)?.[1];
  if (how === undefined) return err;
  const model = name === asked
    ? `model '${asked}'`
    : `model '${asked}' version '${name.slice(asked.length + 1)}'`;
  const own = ctx.catalog.timeout(name) ?? ctx.pool.modelTimeout?.(name);
  const limit = own ?? ctx.requestTimeout;
  const asking = timeoutParam === undefined ? NaN : Number(timeoutParam);
  // The call's whole timeout, as callTimeout gave it.
  const ms = asking < limit ? asking : limit;
  // A tenant's token reads no setting of the operator's (nor a plugin's
  // name): the model's timeout, or its own ?timeout=.
  const tenantSource = asking < limit
    ? "the request's ?timeout="
    : "the model's timeout";
  const source = asking < limit
    ? "the request's ?timeout="
    : own === undefined
    ? `the gateway's limits.requestTimeout (serve --timeout), as the model sets none: give it a "timeout" in its pyproxy.json entry or PUT body`
    : ctx.catalog.get(name)?.timeoutSource === "class"
    ? `its class's timeout_ms (a "timeout" in its pyproxy.json entry or PUT body overrides it)`
    : `its "timeout" (its pyproxy.json entry or PUT body)`;
  if (itemsSent !== undefined) {
    const items = `cancelled after ${itemsSent} ${
      itemsSent === 1 ? "item" : "items"
    }`;
    const stream =
      `Cannot complete the stream of ${model}: it ran ${ms} ms, the limit of a whole stream`;
    return new ExplainedTimeoutError(
      `${stream}, ${source}; ${items}`,
      `${stream}, ${tenantSource}; ${items}`,
      { cause: err, details: err.details },
    );
  }
  const start = `Cannot run ${model}: no answer within ${ms} ms`;
  return new ExplainedTimeoutError(
    `${start}, ${source}; ${
      how === "in the pool queue"
        ? "it waited all that time for a worker (each had limits.maxInFlightPerWorker calls running: more workers, or a faster model)"
        : how === "plugin"
        ? `it waited all that time for the onCall hook of plugin '${err.details.plugin}' and was never sent`
        : "the call was cancelled"
    }`,
    `${start}, ${tenantSource}; ${
      how === "in the pool queue"
        ? "it waited all that time for a worker and never ran (safe to retry)"
        : how === "plugin"
        ? "it waited all that time in the gateway and was never sent to the model (safe to retry)"
        : "the call was cancelled"
    }`,
    // Its details too: where it waited (the 504's `waited`).
    { cause: err, details: err.details },
  );
}

/**
 * A model call's timeout as {@linkcode explainedTimeout} words it, with its
 * words for a tenant's token (`tenantMessage`): the same model, time and
 * outcome (never sent, safe to retry; cancelled), without what is the
 * operator's: a plugin's name, the settings that chose the time
 * (`limits.requestTimeout`, a model's `pyproxy.json` entry, its class's
 * `timeout_ms`) and those a wait in the queue points at. Its name and code
 * are `TimeoutError`'s. Internal.
 *
 * @example
 * ```ts
 * import { ExplainedTimeoutError } from "./_timeout_explained.ts";
 * const err = new ExplainedTimeoutError("... plugin 'quota' ...", "... in the gateway ...");
 * console.log(err.name, err.tenantMessage); // "TimeoutError" "... in the gateway ..."
 * ```
 */
export class ExplainedTimeoutError extends TimeoutError {
  /** The message a tenant's token reads. */
  readonly tenantMessage: string;
  /** Creates the error. */
  constructor(
    message: string,
    tenantMessage: string,
    options: PyProxyErrorOptions = {},
  ) {
    super(message, options);
    this.tenantMessage = tenantMessage;
  }
}

/**
 * `err` (a `TimeoutError`) as a tenant's token reads it: an explained
 * timeout's {@linkcode ExplainedTimeoutError.tenantMessage}; any other
 * naming a plugin (`details.plugin`: a call its `onCall` held) without the
 * plugin's name; the details without `plugin`. Before, a tenant read the
 * name of the operator's plugin that held its call (a quota, an access
 * check) and the gateway's settings.
 *
 * @example
 * ```ts
 * import { type PyProxyErrorOptions, TimeoutError } from "../errors.ts";
 * import { tenantTimeout } from "./_timeout_explained.ts";
 * const held = new TimeoutError("Cannot complete executeModel of model 'm': timed out after 200 ms waiting for the onCall hook of plugin 'quota' (it was never sent)", { details: { waited: "plugin", plugin: "quota" } });
 * console.log(tenantTimeout(held).message); // "... waiting in the gateway (it was never sent)"
 * ```
 */
export function tenantTimeout(err: TimeoutError): TimeoutError {
  const { plugin: _, ...details } = err.details;
  if (err instanceof ExplainedTimeoutError) {
    return new TimeoutError(err.tenantMessage, { details });
  }
  if (err.details.plugin === undefined) return err;
  return new TimeoutError(
    err.message.replace(
      / for the onCall hook of plugin '[^']*'/,
      " in the gateway",
    ),
    { details },
  );
}

/**
 * A stream's `firstItemTimeout` (the gateway's `limit`, or the request's
 * `?firstItemTimeout=` below it), in the words of the gateway's client: the
 * model, the bound and where the call waited.
 */
function firstItemLate(
  err: TimeoutError,
  asked: string,
  name: string,
  limit: number | undefined,
  param: string,
): ExplainedTimeoutError {
  const ms = err.details.firstItemTimeout;
  const model = name === asked
    ? `model '${asked}'`
    : `model '${asked}' version '${name.slice(asked.length + 1)}'`;
  const start = `Cannot stream ${model}: no first item within ${ms} ms`;
  const queued = err.details.waited === "queue";
  return new ExplainedTimeoutError(
    `${start}, ${
      ms === limit
        ? "the gateway's limits.streamFirstItemTimeout (serve --stream-first-item-timeout)"
        : `the request's ${param}`
    }; ${
      queued
        ? "it waited all that time for a worker and never ran (each had limits.maxInFlightPerWorker calls running: safe to retry)"
        : "the call was cancelled"
    }`,
    `${start}, ${
      ms === limit
        ? "the gateway's first-item timeout"
        : `the request's ${param}`
    }; ${
      queued
        ? "it waited all that time for a worker and never ran (safe to retry)"
        : "the call was cancelled"
    }`,
    { cause: err, details: err.details },
  );
}

/**
 * `err` (a model call's 504, as {@linkcode explainedTimeout} words it) with
 * what the workers say of the model's earlier calls given up on, when some
 * still run there (`WorkerInfo.abandoned`): then the model is likely blocked
 * outside Python, where no cancel reaches (a sleep, a lock, I/O without a
 * timeout), and a longer timeout, which the message suggests, would not
 * help (the on-call walkthrough: a model sleeping in a `threading.Lock`
 * answered "give it a timeout" while its calls piled up on the workers).
 * Only on the error path; the caller leaves tenants' answers out (the other
 * tenants' calls).
 *
 * @example
 * ```ts ignore
 * err = withAbandonedHint(ctx, explainedTimeout(ctx, err, asked, name, q), name);
 * ```
 */
export function withAbandonedHint(
  ctx: Pick<RouteContext, "pool">,
  err: unknown,
  name: string,
): unknown {
  if (!(err instanceof TimeoutError) || err.details.waited !== "worker") {
    return err;
  }
  let running = 0;
  for (const w of ctx.pool.status().workers) {
    running += w.abandoned?.[name] ?? 0;
  }
  // This call is one of them (its worker counted it as it timed out).
  const earlier = running - 1;
  if (earlier < 1) return err;
  const them = earlier === 1
    ? "1 earlier call of it that timed out or was cancelled still runs"
    : `${earlier} earlier calls of it that timed out or were cancelled still run`;
  return new TimeoutError(
    `${err.message}; ${them} on its workers (/v1/status: workers[].abandoned): it may be blocked outside Python (a lock, a sleep, I/O without a timeout), which no cancel reaches, rather than slow (docs/reliability.md, Runbook)`,
    { cause: err.cause ?? err, details: err.details },
  );
}
