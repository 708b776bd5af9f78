/**
 * Eval routes (off unless `allowEval`): run Python code and stream its
 * output and result as Server-Sent Events, resumable with `Last-Event-ID`.
 *
 * @module
 */
import { Hono } from "hono";
import * as v from "valibot";
import { describeError, httpError } from "./error_response.ts";
import type { GatewayAtom, GatewayOutputChunk } from "./gateway_pool.ts";
import { readJsonBody } from "./read_json_body.ts";
import type { RouteContext } from "./route_context.ts";
import { type SseEvent, sseResponse } from "./sse.ts";

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
    : "expected {code, locals?, args?, timeout?}"),
);

async function* atomEvents(
  atom: GatewayAtom,
  output: ReadableStream<GatewayOutputChunk>,
  debug: boolean,
): AsyncGenerator<SseEvent> {
  yield { event: "atom", data: { id: atom.id } };
  const reader = output.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
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
  } finally {
    // A client that went away releases its reader; the atom keeps running and stays replayable.
    await reader.cancel().catch(() => {});
  }
  try {
    yield { event: "result", data: { value: (await atom.result) ?? null } };
  } catch (err) {
    // Eval callers can already run any code, so the traceback tells them nothing new; keep it.
    const { status, body } = describeError(err, true);
    if (!debug && status >= 500 && body.type === "InternalError") {
      body.message = "internal error";
    }
    yield { event: "error", data: { status, ...body } };
  }
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
  const forbidden = () =>
    httpError(
      403,
      "Forbidden",
      "Cannot eval: eval is disabled (start with --allow-eval)",
    );

  app.post("/v1/eval", async (c) => {
    if (!ctx.allowEval) throw forbidden();
    const parsed = v.safeParse(
      EvalBody,
      await readJsonBody(c.req.raw, ctx.bodyLimit, ctx.bodyReads),
    );
    if (!parsed.success) {
      const issue = parsed.issues[0];
      const path = v.getDotPath(issue);
      throw httpError(
        400,
        "ValidationError",
        `Cannot eval: ${path ? `${path}: ` : ""}${issue.message}`,
      );
    }
    const { code, locals, args, timeout } = parsed.output;
    const atom = ctx.pool.eval(code, {
      ...(locals === undefined ? {} : { locals }),
      ...(args === undefined ? {} : { args }),
      timeout: Math.min(timeout ?? ctx.requestTimeout, ctx.requestTimeout),
    });
    ctx.logger.debug("Eval {id} started", { id: atom.id });
    return sseResponse(atomEvents(atom, atom.output, ctx.debug), {
      signal: ctx.signal,
      headers: { "x-atom-id": atom.id },
    });
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
      const n = Number(last);
      if (!Number.isInteger(n) || n < -1) {
        throw httpError(
          400,
          "InvalidRequestError",
          "Cannot resume eval: Last-Event-ID must be an output sequence number",
        );
      }
      from = n + 1;
    }
    return sseResponse(atomEvents(atom, atom.replay(from), ctx.debug), {
      signal: ctx.signal,
      headers: { "x-atom-id": atom.id },
    });
  });

  return app;
}
