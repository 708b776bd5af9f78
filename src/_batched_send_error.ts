/**
 * Internals of the model batcher: the error of a batched call whose message
 * cannot be sent, worded as its caller's own. The session words it for the
 * batch it refused (`Cannot send executeBatch: msgs[0].a.n is a BigInt`):
 * a command and a layout (`msgs[0]`) the caller of `pool.execute` never saw.
 * The call's own reads as for a model that does not batch (`Cannot send
 * executeModel: msg.a.n is a BigInt`).
 *
 * @module
 */
import { SerializationError } from "./errors.ts";

const BATCH = "Cannot send executeBatch: ";
const CALL = "Cannot send executeModel: ";
/**
 * `msgs[0]` as the start of a path (`msgs[0].a`, `msgs[0][1]`, `msgs[0]`):
 * at the start of the reason, and after a cycle's `refers back to`. Only
 * there: a key of the caller's may hold `msgs[0]` too (`msgs[0].a msgs[0]`
 * is the path of `{"a msgs[0]": 1n}`), and is left as it is.
 */
const FIRST = /(?:^|(?<=\(it refers back to ))msgs\[0\](?=[.[\s)]|$)/g;

/**
 * The error of the one call of a batch of one that the session refused to
 * send (`error`, a `SerializationError` for the batch), as the call's own:
 * `executeModel` for `executeBatch`, its message's paths from `msg` instead
 * of `msgs[0]` (in the message and in `details.reason`). Another error is
 * returned as it is.
 *
 * @example
 * ```ts
 * import { SerializationError } from "./errors.ts";
 * import { batchedSendError } from "./_batched_send_error.ts";
 * const err = batchedSendError(
 *   new SerializationError("Cannot send executeBatch: msgs[0].n is a BigInt"),
 * );
 * console.log(err.message); // "Cannot send executeModel: msg.n is a BigInt"
 * ```
 */
export function batchedSendError(
  error: SerializationError,
): SerializationError {
  if (!error.message.startsWith(BATCH)) return error;
  const reason = error.details.reason;
  return new SerializationError(
    CALL + own(error.message.slice(BATCH.length)),
    {
      ...(error.cause === undefined ? {} : { cause: error.cause }),
      details: typeof reason === "string"
        ? { ...error.details, reason: own(reason) }
        : error.details,
    },
  );
}

function own(text: string): string {
  return text.replace(FIRST, "msg");
}
