/**
 * A stream's bound on its first item, as a request asks for it: the stream
 * route's `?firstItemTimeout=` and gRPC `ModelStreamInfer`'s
 * `firstItemTimeout` parameter.
 *
 * @module
 */
import { httpError } from "./error_response.ts";
import type { RouteContext } from "./route_context.ts";

/**
 * A stream's bound on its first item (`ExecuteStreamOptions.firstItemTimeout`):
 * the request's `value` (400 unless an integer >= 1), which may only lower
 * the gateway's `limits.streamFirstItemTimeout`; `undefined`: none.
 *
 * @example
 * ```ts ignore
 * firstItemTimeout({ streamFirstItemTimeout: 5000 }, "200"); // 200
 * firstItemTimeout({ streamFirstItemTimeout: 5000 }, undefined); // 5000
 * ```
 */
export function firstItemTimeout(
  ctx: Pick<RouteContext, "streamFirstItemTimeout">,
  value: string | undefined,
): number | undefined {
  const limit = ctx.streamFirstItemTimeout;
  if (value === undefined) return limit;
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < 1) {
    throw httpError(
      400,
      "InvalidRequestError",
      "Cannot stream: firstItemTimeout must be an integer >= 1 (ms)",
    );
  }
  return limit === undefined || ms < limit ? ms : limit;
}

/**
 * The 400 of a `firstItemTimeout` given to a call that is no stream (`/v1`
 * execute, `:predict`, `/v2` infer, a unary gRPC `ModelInfer`: `grpc` true). Refused,
 * not ignored: its client would believe its call bounded, and it would run
 * up to its whole timeout (as OpenAI's API and vLLM refuse `stream_options`
 * without `stream`).
 *
 * @example
 * ```ts ignore
 * throw notAStream("execute", false);
 * ```
 */
export function notAStream(
  action: "execute" | "infer" | "predict",
  grpc: boolean,
): Error {
  return httpError(
    400,
    "InvalidRequestError",
    grpc
      ? "Cannot infer: the firstItemTimeout parameter bounds the first item of a stream (ModelStreamInfer) only; a unary ModelInfer's bound is its deadline (grpc-timeout)"
      : `Cannot ${action}: ?firstItemTimeout= bounds the first item of a stream (POST /v1/models/{name}/stream) only; a call's bound is ${
        action === "infer" ? "its model's timeout" : "?timeout="
      }`,
  );
}
