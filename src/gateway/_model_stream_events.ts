/**
 * The events of a model stream (`POST /v1/models/{name}/stream`): its
 * items, its `end`, or the `error` that ends it (the model's, a stop, a
 * retired token), and how the stream's outcome is kept for the metrics.
 *
 * @module
 */
import { ModelHTTPError } from "../errors.ts";
import { stringifyJson } from "../_exact_json.ts";
import { errorResponse } from "./error_response.ts";
import { errorBodyMessage } from "./_gateway_tracing.ts";
import { modelErrorHeaders } from "./model_routes.ts";
import type { RouteContext } from "./route_context.ts";
import type { SseEvent } from "./sse.ts";
import { TOKEN_RETIRED } from "./_token_holders.ts";

/**
 * How a stream's failure is answered: `debug` and `hide` as for execute's
 * errors, the logger for unexpected ones, and the stream's request id (the
 * client's, or one made up at its first use).
 */
export interface StreamFailure {
  model: string;
  debug: boolean;
  hide: (err: unknown) => Promise<unknown>;
  logger: RouteContext["logger"];
  refusedHeaderWarnings: RouteContext["refusedHeaderWarnings"];
  exposedHeaders: RouteContext["exposedHeaders"];
  requestId: () => string;
  /** The stream's request (for CORS, the names of a model's error headers). */
  request: Request;
  /** The gateway's tracing, told of an error after the first item. */
  tracing: RouteContext["tracing"];
  /**
   * `err` as the client sees it when it ended the stream after `items`
   * items (`undefined`: before its first, as the 504 of a stream that
   * waited for it says): a timeout names the model and its setting
   * (explainedTimeout).
   */
  explain: (err: unknown, items: number | undefined) => unknown;
}

/**
 * How a model stream ended, for the metrics once its response closes:
 * `status` 200 for `end`, the error's status for `error`, 499 (as left)
 * until one of them is sent; `items` the items sent; `modelAnswered` false
 * for an error before the first item that was not the model's (a 404 of a
 * model gone: counted as `_unknown`, as the route's own 404).
 */
export interface StreamOutcome {
  status: number;
  items: number;
  modelAnswered: boolean;
}

/**
 * The SSE events of a model stream: `item` (with the item's index as `id`),
 * then `end` `{"items": n}`, or `error` `{"error": ...}` (as execute's
 * error bodies) when the model fails after its first item, or `error` with a
 * `ShuttingDownError` when the gateway stops. `outcome.status` is the
 * status the metrics count the stream with once it ends: 200 for `end`, the
 * error's status for `error`, 499 (as left) until one of them is sent.
 * `first` undefined: the response went out before the first item
 * (`?early=1`), which is read here as the others are, and whose error is
 * the `error` event the route would have answered as its status;
 * `onFirstItem` is told when it comes.
 */
export async function* streamEvents(
  items: AsyncIterableIterator<unknown> & { cancel(): void },
  first: IteratorResult<unknown> | undefined,
  stop: AbortSignal,
  failure: StreamFailure,
  outcome: StreamOutcome,
  retire: AbortSignal | undefined,
  onFirstItem?: () => void,
): AsyncGenerator<SseEvent> {
  let seq = 0;
  // Why the stream stops before its end (the gateway's stop, its token
  // retired), once told; and the read waiting for an item, woken then.
  // Not a Promise.race per item against promises that last as long as the
  // stream: each race left a reaction on them until they settled, 10^4
  // items' worth per stream of 10^4 items (streams27).
  let why: "retired" | "stop" | undefined;
  let wake: ((why: "retired" | "stop") => void) | undefined;
  const onStop = () => {
    // A retirement told first stays the reason.
    why ??= "stop";
    wake?.(why);
  };
  // Its token retired: the hold cancelled the items already (the model's
  // generator with them), whether or not the client was reading.
  const onRetire = () => {
    why = "retired";
    wake?.(why);
  };
  if (stop.aborted) onStop();
  else stop.addEventListener("abort", onStop, { once: true });
  if (retire?.aborted) onRetire();
  else retire?.addEventListener("abort", onRetire, { once: true });
  try {
    // The next item, or why the stream stops first: whichever came first,
    // the token's retirement wins (the items' end may have come first).
    const read = async (): Promise<
      IteratorResult<unknown> | "retired" | "stop"
    > => {
      if (why !== undefined) return why;
      const r = await new Promise<IteratorResult<unknown> | "retired" | "stop">(
        (resolve, reject) => {
          wake = resolve;
          items.next().then(resolve, reject);
        },
      );
      wake = undefined;
      return why === "retired" || retire?.aborted ? "retired" : r;
    };
    let next: IteratorResult<unknown>;
    if (first !== undefined) next = first;
    else {
      const r = await read();
      if (r === "retired" || r === "stop") {
        yield stopEvent(r);
        return;
      }
      next = r;
      if (!next.done) onFirstItem?.();
    }
    while (!next.done) {
      // Always as JSON: a string item is `"to"`, not `to` (encodeSse writes a
      // string as it is), so a client parses every item the same way.
      yield {
        event: "item",
        id: seq++,
        data: stringifyJson(next.value ?? null)!,
      };
      outcome.items = seq;
      const r = await read();
      if (r === "retired" || r === "stop") {
        yield stopEvent(r);
        return;
      }
      next = r;
    }
    outcome.status = 200;
    yield { event: "end", data: { items: seq } };
  } catch (err) {
    // Before the first item (early headers): the error the route's status
    // would have been, a model gone counted as the route's own 404.
    if (seq === 0) outcome.modelAnswered = err instanceof ModelHTTPError;
    yield await errorEvent(err, failure, outcome, seq === 0 ? undefined : seq);
  } finally {
    stop.removeEventListener("abort", onStop);
    retire?.removeEventListener("abort", onRetire);
    items.cancel();
  }

  /** The `error` event of a stream ended by a retired token or the gateway's stop. */
  function stopEvent(why: "retired" | "stop"): SseEvent {
    items.cancel();
    if (why === "retired") return retiredEvent(failure, outcome);
    outcome.status = 503;
    const error = {
      error: {
        type: "ShuttingDownError",
        message: "Cannot complete stream: the gateway is shutting down",
        requestId: failure.requestId(),
      },
    };
    failure.tracing?.streamFailed(
      failure.request,
      503,
      errorBodyMessage(error, 503),
    );
    return { event: "error", data: error };
  }
}

/**
 * The `error` event of a model stream whose token was retired (401
 * `Unauthorized`); `outcome.status` becomes 401.
 */
export function retiredEvent(
  failure: StreamFailure,
  outcome: { status: number },
): SseEvent {
  outcome.status = 401;
  return {
    event: "error",
    data: {
      error: {
        type: "Unauthorized",
        message: TOKEN_RETIRED,
        requestId: failure.requestId(),
      },
    },
  };
}

/**
 * The `error` event that ends a model stream (`{"error": ...}` as execute's
 * error bodies) after `items` items when its model's call failed;
 * `outcome.status` becomes its error's status.
 */
export async function errorEvent(
  err: unknown,
  failure: StreamFailure,
  outcome: { status: number },
  items?: number,
): Promise<SseEvent> {
  const shown = failure.explain(err, items);
  const res = streamError(err, failure, await failure.hide(shown));
  outcome.status = res.status;
  const data = await res.json();
  // Its span ends with this error, not with the 200 the stream began with.
  failure.tracing?.streamFailed(
    failure.request,
    res.status,
    errorBodyMessage(data, res.status),
  );
  return { event: "error", data };
}

/**
 * The error response of a stream that failed with `err` (`shown`: as the
 * client sees it), logged when unexpected (500) as execute's are.
 */
export function streamError(
  err: unknown,
  failure: StreamFailure,
  shown: unknown,
): Response {
  const requestId = failure.requestId();
  modelErrorHeaders(failure, failure.model, err, requestId, failure.request);
  const res = errorResponse(shown, failure.debug, requestId);
  if (res.status === 500) {
    failure.logger.warn("Stream failed (request id {requestId}): {error}", {
      error: err,
      requestId,
    });
  }
  return res;
}
