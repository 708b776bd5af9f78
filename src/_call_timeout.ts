/**
 * The error a model call's timeout rejects with: the session's and the
 * queue's own say "Cannot complete executeModel: timed out after 99 ms",
 * the internal command and the time left once the call left the queue,
 * with no model and no way to tell a call that waited for a worker from
 * one that ran. This one names the model, the call's whole timeout, and
 * where it waited, also as `details` (`model`, `timeoutMs`, `waited`:
 * `"queue"` or `"worker"`), which the gateway's 504 reads.
 *
 * @module
 */
import { TimeoutError } from "./errors.ts";
import type { PoolCall } from "./pool_router.ts";

/**
 * `error` (a `TimeoutError` of `call`) as a model call's: a new
 * `TimeoutError`, its cause `error`; `error` itself for any other command.
 * Only on the error path.
 *
 * @example
 * ```ts ignore
 * call.reject(callTimedOut(call, err, "worker"));
 * // TimeoutError: Cannot complete executeModel of model 'slow': timed out after 100 ms (cancelled on its worker)
 * ```
 */
export function callTimedOut(
  call: PoolCall,
  error: Error,
  waited: "queue" | "worker",
): Error {
  const name = call.args?.name;
  if (
    (call.cmd !== "executeModel" && call.cmd !== "executeStream") ||
    typeof name !== "string" || call.timeoutMs === undefined
  ) return error;
  return new TimeoutError(
    `Cannot complete ${call.cmd} of model '${name}': timed out after ${call.timeoutMs} ms ${
      waited === "queue"
        ? "in the pool queue, waiting for a worker's free slot"
        : "(cancelled on its worker)"
    }`,
    {
      cause: error,
      details: { model: name, timeoutMs: call.timeoutMs, waited },
    },
  );
}
