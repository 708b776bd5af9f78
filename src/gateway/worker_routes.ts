/**
 * Worker routes: (with `allowManage`) `PUT /v1/workers` resizes the pool
 * while it serves, and sets the bounds of a plugin that sizes it
 * (autoscale).
 *
 * @module
 */
import { Hono } from "hono";
import * as v from "valibot";
import { TimeoutError } from "../errors.ts";
import { setTimeoutOrNever } from "../_timer.ts";
import { HTTPException } from "hono/http-exception";
import { describeError, httpError } from "./error_response.ts";
import { validBody } from "./_valid_body.ts";
import type { GatewayPoolStatus } from "./gateway_pool.ts";
import { readJsonBody } from "./read_json_body.ts";
import type { RouteContext } from "./route_context.ts";
import type { ScaleBounds, ScaleBoundsChange } from "../plugin.ts";
import { workersOf } from "./_pool_reads.ts";

const COUNT = "expected an integer from 1 to 1024";
const BOUND =
  "expected an integer from 1 to 1024, or null for the configured one";
const SHAPE = "expected {count}, {min, max} or both";

const bound = v.optional(v.nullable(v.pipe(
  v.number(BOUND),
  v.integer(BOUND),
  v.minValue(1, BOUND),
  v.maxValue(1024, BOUND),
)));

// valibot's object schemas take an array for an object: refused first.
const ResizeBody = v.pipe(
  v.custom<Record<string, unknown>>(
    (x) => typeof x === "object" && x !== null && !Array.isArray(x),
    SHAPE,
  ),
  v.strictObject(
    {
      count: v.optional(v.pipe(
        v.number(COUNT),
        v.integer(COUNT),
        v.minValue(1, COUNT),
        v.maxValue(1024, COUNT),
      )),
      min: bound,
      max: bound,
    },
    (issue) =>
      issue.expected === "never"
        ? "unknown field (allowed: count, min, max)"
        : SHAPE,
  ),
  v.check(
    (b) => b.count !== undefined || b.min !== undefined || b.max !== undefined,
    SHAPE,
  ),
);

/**
 * The worker routes of the gateway (`app.route("/", workerRoutes(ctx))`).
 * One resize at a time: a `PUT` while one runs gets 409 (`retry-after: 1`),
 * as does one while a resize that answered 504 still goes on.
 *
 * @example
 * ```ts ignore
 * app.route("/", workerRoutes(ctx));
 * ```
 */
export function workerRoutes(ctx: RouteContext): Hono {
  const app = new Hono();
  // The resize this gateway runs (it goes on past a 504), if any.
  let running: { from: number; to: number } | undefined;

  app.put("/v1/workers", async (c) => {
    if (!ctx.allowManage) {
      throw httpError(
        403,
        "Forbidden",
        "Cannot manage workers: worker management is disabled (start with --allow-manage)",
      );
    }
    const pool = ctx.pool;
    if (pool.resize === undefined) {
      throw httpError(
        501,
        "NotImplemented",
        "Cannot resize pool: this pool cannot be resized",
      );
    }
    const body = validBody(
      ResizeBody,
      await readJsonBody(
        c.req.raw,
        ctx.bodyLimit,
        ctx.bodyReads,
        ctx.runtime,
        ctx.maxIntegerDigits,
        ctx.maxJsonDepth,
      ),
      "Cannot resize pool",
    );
    const { count } = body;
    const change: ScaleBoundsChange = {};
    if (body.min !== undefined) change.min = body.min;
    if (body.max !== undefined) change.max = body.max;
    const bounds = (): Record<string, ScaleBounds> | undefined =>
      body.min === undefined && body.max === undefined
        ? undefined
        : setBounds(ctx, change, count);
    if (count === undefined) {
      // Bounds alone: no resize of the gateway's, nothing to wait for.
      return c.json({ count: workersOf(pool).length, bounds: bounds() });
    }
    if (running === undefined && pool.status().resizing === true) {
      // Another resize (the autoscale plugin's, the library's) is under
      // way: this one would wait behind it, past its loadTimeout.
      throw httpError(
        409,
        "ResizeInProgress",
        `Cannot resize pool to ${count} workers: another resize (a plugin's such as autoscale, or the library's) is in progress`,
        {},
        { "retry-after": "1" },
      );
    }
    if (running !== undefined) {
      throw httpError(
        409,
        "ResizeInProgress",
        `Cannot resize pool to ${count} workers: a resize from ${running.from} to ${running.to} workers is in progress`,
        { from: running.from, to: running.to },
        { "retry-after": "1" },
      );
    }
    // The bounds first (nothing set when refused): a count outside the
    // bounds in force would move them.
    const set = bounds();
    const from = workersOf(pool).length;
    const resize = { from, to: count };
    running = resize;
    // No timeout given to the pool: `running` must last as long as the
    // resize, which goes on past the 504.
    const run = pool.resize(count).finally(() => {
      if (running === resize) running = undefined;
    });
    let status: GatewayPoolStatus;
    try {
      status = await bounded(run, ctx.loadTimeout, count, (err) =>
        // Past its 504 nobody else hears of it.
        ctx.logger.warn(
          "Resize from {from} to {to} workers failed after its 504: {message}",
          {
            from,
            to: count,
            message: err instanceof Error ? err.message : err,
          },
        ));
    } catch (err) {
      // A count outside the bounds moved them as the resize began, failed
      // or not: the error says where they are now, as a success does.
      throw withBounds(err, set ?? boundsInForce(ctx), ctx.debug(c.req.raw));
    }
    ctx.logger.info("Pool resized from {from} to {to} workers", {
      from,
      to: status.workers.length,
    });
    // The bounds in force after it: a count outside them moved them.
    const after = set ?? boundsInForce(ctx);
    const debug = ctx.debug(c.req.raw);
    return c.json({
      previous: from,
      count: status.workers.length,
      ...(after === undefined ? {} : { bounds: after }),
      workers: status.workers.map((w) => {
        // stderr can hold paths and secrets printed by models: only shown with --debug.
        const { stderrTail: _tail, ...rest } = w as typeof w & {
          stderrTail?: string;
        };
        return debug ? w : rest;
      }),
    });
  });

  return app;
}

/**
 * `err` as the route answers it, with `bounds` added to its error body when
 * a plugin sizes the pool (`err` itself when none does).
 */
function withBounds(
  err: unknown,
  bounds: Record<string, ScaleBounds> | undefined,
  debug: boolean,
): unknown {
  if (bounds === undefined || err instanceof HTTPException) return err;
  const { status, body, headers } = describeError(err, debug);
  const res = Response.json({ error: { ...body, bounds } }, {
    status,
    headers,
  });
  // Its own message for the log (a StartError's has the stderr tails).
  const message = err instanceof Error ? err.message : body.message;
  return new HTTPException(status, { message, res, cause: err });
}

/** The bounds of the plugins that size the pool; `undefined` when none does. */
function boundsInForce(
  ctx: RouteContext,
): Record<string, ScaleBounds> | undefined {
  let bounds: Record<string, ScaleBounds> | undefined;
  try {
    bounds = ctx.pool.setScaleBounds?.({});
  } catch {
    return undefined; // a plugin refusing even `{}`: the resize is done
  }
  return bounds === undefined || Object.keys(bounds).length === 0
    ? undefined
    : bounds;
}

/** A bound of a change, in words. */
function shown(bound: number | null | undefined): string {
  return bound === undefined
    ? "as is"
    : bound === null
    ? "as configured"
    : String(bound);
}

/**
 * Sets the bounds of the plugins that size the pool (autoscale's), checked
 * against `count` when both are given: a 409 when none does, a 400 for
 * bounds refused (or that leave out `count`: the resize would move them at
 * once).
 */
function setBounds(
  ctx: RouteContext,
  change: ScaleBoundsChange,
  count: number | undefined,
): Record<string, ScaleBounds> {
  const pool = ctx.pool;
  if (pool.setScaleBounds === undefined) {
    throw httpError(
      501,
      "NotImplemented",
      "Cannot set worker bounds: this pool has no size bounds",
    );
  }
  if (
    count !== undefined &&
    ((typeof change.min === "number" && count < change.min) ||
      (typeof change.max === "number" && count > change.max))
  ) {
    throw httpError(
      400,
      "ValidationError",
      `Cannot resize pool: count: expected within the bounds given (min ${
        shown(change.min)
      }, max ${shown(change.max)}) (got ${count})`,
    );
  }
  // Those before, to log only a real change (a PUT of the bounds in force,
  // as a client that sets them on every start does, changes nothing).
  const before = boundsInForce(ctx) ?? {};
  // A RangeError (max below min, as the plugin holds them) is a 400.
  const bounds = pool.setScaleBounds(change);
  if (Object.keys(bounds).length === 0) {
    throw httpError(
      409,
      "NoScalePolicy",
      "Cannot set worker bounds: no plugin sizes the pool (start with --autoscale min:max, or plugins.autoscale in pyproxy.json)",
    );
  }
  const changed = Object.entries(bounds).filter(([name, b]) =>
    before[name]?.min !== b.min || before[name]?.max !== b.max
  );
  if (changed.length > 0) {
    ctx.logger.info("Worker bounds set: {bounds}", {
      bounds: changed.map(([name, b]) => `${name} ${b.min} to ${b.max}`)
        .join(", "),
    });
  }
  return bounds;
}

/** `run`, or a `TimeoutError` (504) after `ms`; `run` goes on (a later failure goes to `lateFailure`). */
function bounded(
  run: Promise<GatewayPoolStatus>,
  ms: number,
  count: number,
  lateFailure: (err: unknown) => void,
): Promise<GatewayPoolStatus> {
  return new Promise((resolve, reject) => {
    let late = false;
    const timer = setTimeoutOrNever(() => {
      late = true;
      reject(
        new TimeoutError(
          `Cannot resize pool to ${count} workers: not done within ${ms} ms (limits.loadTimeout); it goes on, see GET /v1/status`,
        ),
      );
    }, ms);
    run.then(resolve, (err) => {
      if (late) lateFailure(err);
      reject(err);
    }).finally(() => {
      if (timer !== undefined) clearTimeout(timer);
    });
  });
}
