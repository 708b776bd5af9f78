/**
 * Internals of the model batcher: the error of a batched call whose message
 * cannot be sent, worded as its caller's own. The session words it for the
 * batch it refused (`Cannot send executeBatch: msgs[0].a.n is a BigInt`):
 * a command and a layout (`msgs[0]`) the caller of `pool.execute` never saw.
 * The call's own reads as for a model that does not batch (`Cannot send
 * executeModel: msg.a.n is a BigInt`), and a size over the server's frame
 * limit is its own message's (`executeModel`), not the batch of one's, which
 * is larger by its wrapping (`"msgs":[…]`, `"split":true`, the per-message
 * lists of its request id, headers and trace context).
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
 * of `msgs[0]` (in the message and in `details.reason`), and for a frame
 * too large the size of the call's own message: the batch's less `overhead`
 * ({@linkcode batchOverhead}), when that still exceeds the limit (a message
 * that fits alone but not in its batch of one keeps the batch's size: the
 * one refused). Another error is returned as it is.
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
  overhead = 0,
): SerializationError {
  if (!error.message.startsWith(BATCH)) return error;
  const reason = error.details.reason;
  let text = own(error.message.slice(BATCH.length));
  let details = typeof reason === "string"
    ? { ...error.details, reason: own(reason) }
    : error.details;
  const { bytes, limit } = error.details;
  if (
    typeof bytes === "number" && typeof limit === "number" &&
    bytes - overhead > limit && text.startsWith(`${bytes} bytes exceed `)
  ) {
    text = `${bytes - overhead}${text.slice(String(bytes).length)}`;
    details = { ...details, bytes: bytes - overhead };
  }
  return new SerializationError(CALL + text, {
    ...(error.cause === undefined ? {} : { cause: error.cause }),
    details,
  });
}

/** The options of a batched call that its message's fields come from. */
export interface BatchedCallFields {
  requestId?: string;
  headers?: Record<string, string>;
  traceparent?: string;
  tracestate?: string;
  caller?: string;
}

/**
 * How many bytes a call's batch of one (`executeBatch`) takes beyond the
 * same call to a model that does not batch (`executeModel`): the wire
 * shapes the pool gives both (`Pool.execute`, its batchers' `send`),
 * measured on the fields of `call` with a stand-in message (the two hold
 * the same message, model name and kind of id). Run only for a call whose
 * batch of one was refused.
 *
 * @example
 * ```ts
 * import { batchOverhead } from "./_batched_send_error.ts";
 * console.log(batchOverhead({})); // 16: `"msgs":[…]` and `,"split":true`
 * ```
 */
export function batchOverhead(call: BatchedCallFields): number {
  const { requestId, headers, traceparent, tracestate, caller } = call;
  const batch: Record<string, unknown> = { msgs: [0], split: true };
  const alone: Record<string, unknown> = { msg: 0 };
  if (requestId !== undefined) {
    batch.requestIds = [requestId];
    alone.requestId = requestId;
  }
  if (headers !== undefined) {
    batch.messageHeaders = [headers];
    alone.headers = headers;
  }
  if (caller !== undefined) {
    batch.callers = [caller];
    alone.caller = caller;
  }
  if (traceparent !== undefined) {
    const context: Record<string, string> = { traceparent };
    if (tracestate !== undefined) context.tracestate = tracestate;
    batch.traceContexts = [context];
    Object.assign(alone, context);
  }
  return utf8Length(JSON.stringify(batch)) - utf8Length(JSON.stringify(alone));
}

function utf8Length(text: string): number {
  return new TextEncoder().encode(text).length;
}

function own(text: string): string {
  return text.replace(FIRST, "msg");
}
