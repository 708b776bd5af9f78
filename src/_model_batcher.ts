/**
 * Internals of the pool: dynamic batching for models that declare
 * `batch_size` and `execute_batch(msgs)` (docs/models.md, "Batching").
 *
 * A call goes at once when fewer batches of the model are in flight than
 * `capacity()` (the ready workers): an idle model adds no delay. Otherwise
 * calls gather until a batch ends, `size` of them wait, or the first has
 * waited `delayMs`, and go as one `executeBatch` (protocol §6), with the
 * calls' request ids as its `requestIds` when any has one (their headers
 * and trace contexts likewise: `messageHeaders`, `traceContexts`); each call still
 * settles on its own, exactly once: with its own result, its own error (an
 * exception instance the model returned for it), the batch's error, or its
 * own timeout or abort. A batch whose calls have all given up is cancelled
 * on the worker. A batch the session refused to write because a message
 * cannot be encoded (a `SerializationError` it marked unsent), or that the
 * server refused to read for one (too deep, too long an integer: its
 * `InvalidRequestError`), is sent again in halves, so that only the calls
 * whose messages cannot be sent fail (each alone, with the error its call to
 * a model that does not batch gets) and every other runs once. A call's
 * `onSend` is called each time a batch holding it goes to a worker, so its
 * last names the worker that ran it (parts may go to others); the pool's
 * queue waits count it once, with the batch it first went in. A call that
 * times out while its batch runs on a worker is reported to `onTimeout` (the
 * pool's plugins' hook), once. A batch that reached its version after that
 * version was removed (`ModelNotFoundError`: it waited in the pool's queue)
 * hands each call to `onGone`, which runs one that named no version on the
 * model's default of now, as an unbatched call is.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  CancelledError,
  errorFromWire,
  SerializationError,
  TimeoutError,
} from "./errors.ts";
import { setTimeoutOrNever } from "./_timer.ts";
import { wasUnsent } from "./_unsent.ts";
import { wasUnread } from "./_unread_request.ts";
import { batchedSendError, batchOverhead } from "./_batched_send_error.ts";
import { deliverResponseMeta } from "./_response_meta.ts";
import type { ResponseMeta } from "./session_types.ts";

/** A batching model's settings, from its description (`batch`). */
export interface BatchSettings {
  /** Messages per `executeBatch` at most. */
  size: number;
  /** Milliseconds a call may wait for others before its batch is sent. */
  delayMs: number;
}

/** The options of one call that batching reads (a subset of `ExecuteOptions`). */
export interface BatchCallOptions {
  /** Milliseconds from the call; `Infinity`: none. */
  timeout?: number;
  /** Aborting settles the call with `CancelledError`. */
  signal?: AbortSignal;
  /**
   * Called each time a batch holding the call goes to a worker (again for a
   * part of a batch taken apart, or a batch retried), with its id.
   */
  onSend?: (worker: string) => void;
  /** May be retried on another worker (a batch is only if all its calls are). */
  idempotent?: boolean;
  /** Routing: a call with a `key` or a `worker` is a batch of its own, sent so. */
  key?: string;
  /** See `key`. */
  worker?: string;
  /** Gets its message's status and headers (the batch result's `http`, by index). */
  onResponseMeta?: (meta: ResponseMeta) => void;
  /** The call's request id: sent in its batch's `requestIds` (protocol §6). */
  requestId?: string;
  /** The call's request headers: sent in its batch's `messageHeaders` (protocol §6). */
  headers?: Record<string, string>;
  /** The call's W3C trace context: sent in its batch's `traceContexts` (protocol §6). */
  traceparent?: string;
  /** Who makes the call (a gateway token's id): sent in its batch's `callers` (protocol §6). */
  caller?: string;
  /** Its `tracestate`, with `traceparent`. */
  tracestate?: string;
}

/** A call's trace context in a batch's `traceContexts` (protocol §6). */
export interface BatchTraceContext {
  traceparent: string;
  tracestate?: string;
}

/** The options a batch is sent with. */
export interface BatchSendOptions {
  key?: string;
  worker?: string;
  timeout?: number;
  signal: AbortSignal;
  onSend: (worker: string) => void;
  idempotent: boolean;
  /**
   * A part of a batch sent before and taken apart (`#split`): its calls
   * were admitted then, so a full pool queue must not refuse them now.
   */
  again?: boolean;
}

/**
 * Sends one batch: `executeBatch` with `msgs`, `requestIds` (one per
 * message, `null` for a call without one) when any call has one,
 * `messageHeaders` (likewise) when any call has headers, and
 * `traceContexts` (likewise) when any call has a trace context, and
 * `callers` (likewise) when any call has a caller; resolves to its reply.
 */
export type SendBatch = (
  msgs: unknown[],
  options: BatchSendOptions,
  requestIds: Array<string | null> | undefined,
  messageHeaders: Array<Record<string, string> | null> | undefined,
  traceContexts: Array<BatchTraceContext | null> | undefined,
  callers: Array<string | null> | undefined,
) => Promise<unknown>;

/**
 * The batches of one size a model ran: how many answered, and their
 * milliseconds from written to a worker to answered.
 */
export interface BatchSizeStats {
  /** Batches of this size answered (their calls' own errors included). */
  count: number;
  /** Their milliseconds from written to a worker to answered, summed. */
  ms: number;
}

interface Item {
  msg: unknown;
  options: BatchCallOptions;
  timeout: number;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
  settled: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  onAbort: (() => void) | undefined;
  /** The batch it was sent in (undefined while it waits). */
  batch: Batch | undefined;
  /** Aborts the call it went on as (`BatchCallGone`), once it settles. */
  redirect: AbortController | undefined;
}

interface Batch {
  items: Item[];
  open: number;
  abort: AbortController;
  /** The worker it went to last (undefined until it is sent). */
  worker: string | undefined;
}

/**
 * Told when a call times out while its batch runs on `worker`: `timeoutMs`
 * is the call's own timeout.
 */
export type BatchCallTimedOut = (
  worker: string,
  timeoutMs: number,
  requestId: string | undefined,
) => void;

/**
 * Asked, for each call of a batch that failed with `ModelNotFoundError`
 * (its version was removed while it waited to be sent), whether the call
 * runs elsewhere: the call that names no version on its model's default
 * of now, as an unbatched call does (docs/models.md, "Versions"). Returns
 * the promise of that call, or `undefined` to fail it with the error.
 * `signal` aborts it (the call timed out or was aborted meanwhile).
 */
export type BatchCallGone = (
  msg: unknown,
  options: BatchCallOptions,
  signal: AbortSignal,
) => Promise<unknown> | undefined;

/**
 * Gathers the calls of one batching model into batches.
 *
 * @example
 * ```ts ignore
 * const batcher = new ModelBatcher("scorer", { size: 32, delayMs: 10 }, send);
 * const result = await batcher.add({ x: 1 }, { timeout: 5000 });
 * ```
 */
export class ModelBatcher {
  readonly name: string;
  readonly settings: BatchSettings;
  #send: SendBatch;
  #defaultTimeout: number;
  #waiting: Item[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #inFlight = 0;
  #capacity: () => number;
  #onTimeout: BatchCallTimedOut | undefined;
  #onGone: BatchCallGone | undefined;
  /**
   * The batches answered, by size (at most `size` entries per setting the
   * model had): handed on to the batcher of the model's next load, so that
   * an update does not set them back.
   */
  readonly sizes: Map<number, BatchSizeStats>;

  constructor(
    name: string,
    settings: BatchSettings,
    send: SendBatch,
    defaultTimeout = Infinity,
    capacity: () => number = () => 1,
    sizes: Map<number, BatchSizeStats> = new Map(),
    onTimeout?: BatchCallTimedOut,
    onGone?: BatchCallGone,
  ) {
    this.sizes = sizes;
    this.#onTimeout = onTimeout;
    this.#onGone = onGone;
    this.name = name;
    this.settings = settings;
    this.#send = send;
    this.#defaultTimeout = defaultTimeout;
    this.#capacity = capacity;
  }

  /** Batches sent and not answered yet. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Calls waiting for their batch to be sent. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Adds a call; it settles on its own (options already checked).
   * `spentMs`: of its timeout, already gone (its plugins' `onCall`).
   */
  add(
    msg: unknown,
    options: BatchCallOptions,
    spentMs = 0,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timeout = options.timeout ?? this.#defaultTimeout;
      const item: Item = {
        msg,
        options,
        timeout,
        resolve,
        reject,
        settled: false,
        timer: undefined,
        onAbort: undefined,
        batch: undefined,
        redirect: undefined,
      };
      item.timer = setTimeoutOrNever(
        () => this.#timedOut(item),
        timeout - spentMs,
      );
      const signal = options.signal;
      if (signal !== undefined) {
        item.onAbort = () =>
          this.#giveUp(
            item,
            new CancelledError(
              item.batch === undefined
                ? "Cannot send call executeModel: aborted"
                : "Cannot complete executeModel: aborted",
              { cause: signal.reason },
            ),
          );
        signal.addEventListener("abort", item.onAbort, { once: true });
      }
      if (options.key !== undefined || options.worker !== undefined) {
        // Routed calls keep their routing: a batch of their own.
        this.#sendBatch([item]);
        return;
      }
      this.#waiting.push(item);
      if (
        this.#waiting.length >= this.settings.size ||
        this.#inFlight < this.#capacity()
      ) this.flush();
      else if (this.#timer === undefined) {
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.flush();
        }, this.settings.delayMs);
      }
    });
  }

  /** Sends what waits now, in batches of at most `size`. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#waiting.length > 0) {
      this.#sendBatch(this.#waiting.splice(0, this.settings.size));
    }
  }

  /** Settles every waiting call with `error` (the pool is closing). */
  close(error: Error): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const item of this.#waiting.splice(0)) this.#settle(item, error);
  }

  #sendBatch(items: Item[], again = false): void {
    const batch: Batch = {
      items,
      open: items.length,
      abort: new AbortController(),
      worker: undefined,
    };
    let deadline = 0;
    let idempotent = true;
    let identified = false;
    let withHeaders = false;
    let traced = false;
    let called = false;
    for (const item of items) {
      item.batch = batch;
      // The batch lasts as long as its most patient call (timeouts are
      // counted from each call, so from their own start).
      deadline = Math.max(deadline, item.timeout);
      if (item.options.idempotent !== true) idempotent = false;
      if (item.options.requestId !== undefined) identified = true;
      if (item.options.headers !== undefined) withHeaders = true;
      if (item.options.traceparent !== undefined) traced = true;
      if (item.options.caller !== undefined) called = true;
    }
    // Only a batch with an id has requestIds: without, nothing more is sent.
    const requestIds = identified
      ? items.map((i) => i.options.requestId ?? null)
      : undefined;
    const messageHeaders = withHeaders
      ? items.map((i) => i.options.headers ?? null)
      : undefined;
    const traceContexts = traced
      ? items.map((i) => traceContext(i))
      : undefined;
    const callers = called
      ? items.map((i) => i.options.caller ?? null)
      : undefined;
    this.#inFlight++;
    // Only a routed call's batch of one has routing (see `add`).
    const { key, worker } = items[0]!.options;
    let sentAt = -1;
    this.#send(
      items.map((i) => i.msg),
      {
        ...(key === undefined ? {} : { key }),
        ...(worker === undefined ? {} : { worker }),
        // Infinity too: left out, the pool's requestTimeout would cut short
        // a batch of calls that wait for ever (a model's timeout: Infinity).
        timeout: deadline,
        signal: batch.abort.signal,
        idempotent,
        ...(again ? { again } : {}),
        // Each time it goes (a part of a batch taken apart, a retry): the
        // last names the worker that ran its calls. The pool's queue waits
        // count its calls once (`again`: not the parts).
        onSend: (sentTo) => {
          sentAt = performance.now();
          batch.worker = sentTo;
          // A caller's throw does not keep the batch's other callers from
          // theirs: the first is rethrown once each was called (the pool
          // logs it and sends the batch).
          let thrown: { error: unknown } | undefined;
          for (const item of items) {
            if (item.settled || item.options.onSend === undefined) continue;
            try {
              item.options.onSend(sentTo);
            } catch (error) {
              thrown ??= { error };
            }
          }
          if (thrown !== undefined) throw thrown.error;
        },
      },
      requestIds,
      messageHeaders,
      traceContexts,
      callers,
    ).then(
      (reply) => {
        if (sentAt >= 0) this.#count(items.length, performance.now() - sentAt);
        this.#deliver(batch, reply);
      },
      (error) => {
        if (this.#split(batch, error)) return;
        // The batch's own deadline (its most patient call's, counted from
        // its send) came before its calls' timers: each call times out as
        // its own timer would have had it.
        if (error instanceof TimeoutError) {
          for (const item of batch.items) this.#timedOut(item);
          return;
        }
        // Its version was removed while it waited in the pool's queue: a
        // call that names no version runs on the default of now.
        if (
          this.#onGone !== undefined &&
          (error as Error | null)?.name === "ModelNotFoundError"
        ) {
          for (const item of batch.items) this.#redirect(item, error);
          return;
        }
        // The call at fault, alone: its error as its own call's would be.
        if (
          items.length === 1 && error instanceof SerializationError &&
          wasUnsent(error)
        ) {
          error = batchedSendError(error, batchOverhead(items[0]!.options));
        }
        for (const item of batch.items) this.#settle(item, error);
      },
    ).finally(() => {
      this.#inFlight--;
      // What gathered while this batch ran goes now.
      if (this.#waiting.length > 0) this.flush();
    });
  }

  /**
   * Sends the calls of `batch` again, in two halves, when it failed
   * because one of its messages cannot be encoded and nothing of it was
   * written (no call ran): the one at fault ends up in a batch of its own,
   * which fails with that call's error alone, and each other call runs once,
   * in a smaller batch. Whole-batch failure was the rule before: one caller's
   * BigInt failed 31 others. True when it sent them again.
   */
  #split(batch: Batch, error: unknown): boolean {
    // A batch of one has nothing to take apart: its call is the one at fault.
    if (batch.items.length < 2 || !unsent(error)) return false;
    // The calls given up on meanwhile are settled: not sent again. One call
    // left goes alone, for it may not be the one at fault.
    const open = batch.items.filter((item) => !item.settled);
    const half = Math.ceil(open.length / 2);
    if (half > 0) this.#sendBatch(open.slice(0, half), true);
    if (open.length > half) this.#sendBatch(open.slice(half), true);
    return true;
  }

  /** A call of a batch whose model is gone: on elsewhere, or `error`. */
  #redirect(item: Item, error: unknown): void {
    if (item.settled) return;
    const abort = new AbortController();
    const again = this.#onGone!(item.msg, item.options, abort.signal);
    if (again === undefined) return this.#settle(item, error);
    item.redirect = abort;
    again.then(
      (value) => this.#settle(item, undefined, value),
      (err) => this.#settle(item, err),
    );
  }

  #count(size: number, ms: number): void {
    const stats = this.sizes.get(size);
    if (stats === undefined) this.sizes.set(size, { count: 1, ms });
    else {
      stats.count++;
      stats.ms += ms;
    }
  }

  #deliver(batch: Batch, reply: unknown): void {
    const results = (reply as { results?: unknown })?.results;
    const errors = (reply as { errors?: Record<string, unknown> })?.errors;
    const n = batch.items.length;
    if (!Array.isArray(results) || results.length !== n) {
      const error = errorFromWire({
        type: "ProtocolError",
        message:
          `Cannot complete executeModel of model '${this.name}': the reply to its batch of ${n} does not hold ${n} result${
            n === 1 ? "" : "s"
          }`,
      });
      for (const item of batch.items) this.#settle(item, error);
      return;
    }
    // The statuses and headers models set, by message index (protocol §6).
    const http = (reply as { http?: Record<string, unknown> }).http;
    batch.items.forEach((item, i) => {
      const wire = errors?.[String(i)];
      if (wire !== undefined) this.#settle(item, errorFromWire(wire));
      else {
        const meta = http?.[String(i)];
        if (meta !== undefined && !item.settled) {
          deliverResponseMeta(meta, item.options.onResponseMeta, warn);
        }
        this.#settle(item, undefined, results[i]);
      }
    });
  }

  /**
   * A call's own timeout: reported to `onTimeout` when its batch runs on a
   * worker (not while it waits, here or in the pool's queue).
   */
  #timedOut(item: Item): void {
    if (item.settled) return;
    // Told before the call settles, as the pool tells a call's own.
    const worker = item.batch?.worker;
    if (worker !== undefined) {
      this.#onTimeout?.(worker, item.timeout, item.options.requestId);
    }
    this.#giveUp(
      item,
      new TimeoutError(
        `Cannot complete executeModel of model '${this.name}': timed out after ${item.timeout} ms`,
        { details: { model: this.name, timeoutMs: item.timeout } },
      ),
    );
  }

  /** A call's own timeout or abort. */
  #giveUp(item: Item, error: Error): void {
    if (item.settled) return;
    const batch = item.batch;
    if (batch === undefined) {
      const i = this.#waiting.indexOf(item);
      if (i >= 0) this.#waiting.splice(i, 1);
      if (this.#waiting.length === 0) {
        clearTimeout(this.#timer);
        this.#timer = undefined;
      }
    }
    this.#settle(item, error);
    // Nobody waits for this batch any more: cancel it on the worker.
    if (batch !== undefined && batch.open === 0) batch.abort.abort();
  }

  #settle(item: Item, error: unknown, value?: unknown): void {
    if (item.settled) return;
    item.settled = true;
    clearTimeout(item.timer);
    if (item.onAbort !== undefined) {
      item.options.signal?.removeEventListener("abort", item.onAbort);
    }
    if (item.batch !== undefined) item.batch.open--;
    // Settled here first (its own timeout or abort): the call it went on
    // as is given up too.
    item.redirect?.abort();
    if (error !== undefined) item.reject(error);
    else item.resolve(value);
  }
}

/**
 * Whether nothing of a batch that failed with `error` ran, for one of its
 * messages: the session refused to write it (a message it cannot encode), or
 * the server refused to read it (a message nested deeper than its parser
 * allows, or an integer longer than it converts: its `InvalidRequestError`
 * for the whole batch, which a host check could not foresee, the limits
 * being the server's Python's). Only then is it taken apart and sent again.
 */
function unsent(error: unknown): boolean {
  return (error instanceof SerializationError && wasUnsent(error)) ||
    wasUnread(error);
}

function warn(message: string, properties: Record<string, unknown>): void {
  getLogger(["pyproxy", "pool"]).warn(message, properties);
}

/** A batched call's entry of `traceContexts`: its context, or `null`. */
function traceContext(
  item: { options: BatchCallOptions },
): BatchTraceContext | null {
  const { traceparent, tracestate } = item.options;
  if (traceparent === undefined) return null;
  return tracestate === undefined
    ? { traceparent }
    : { traceparent, tracestate };
}
