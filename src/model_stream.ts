/**
 * {@linkcode ModelStream}: the items of a streaming model call, as they come
 * (`pool.executeStream`).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { CancelledError, StreamIdleError, TimeoutError } from "./errors.ts";
import { deliverResponseMeta } from "./_response_meta.ts";
import type { ResponseMeta } from "./session_types.ts";
import { stringifyJson } from "./_exact_json.ts";
import { callOptionsError, traceContextArgs } from "./_call_options.ts";
import { IDLE_SETTING } from "./_stream_idle_watch.ts";

/**
 * The server's stream window (protocol §6, `executeStream`): it sends an item
 * only while fewer than this many items are sent and not acknowledged...
 */
const WINDOW_ITEMS = 64;
/** ...and fewer than this many bytes of their encoded `item` events. */
const WINDOW_BYTES = 1024 * 1024;
/** The bytes of `{"event":"item","id":,"seq":,"data":}` around the numbers and the data. */
const ITEM_EVENT_BYTES = 37;
/**
 * Items read and not acknowledged that send an `itemAck` at once (on the
 * event loop's next turn, with every item read by then): half the window,
 * so the server, which stops at a full one, always has half of it ahead
 * of a reader that keeps up...
 */
const ACK_ITEMS = WINDOW_ITEMS / 2;
/** ...or their bytes: half the window's. */
const ACK_BYTES = WINDOW_BYTES / 2;
/**
 * The longest an item read waits for its ack otherwise (ms). At a language
 * model's pace (an item every 10-50 ms, each read as it comes) one ack per
 * item doubled the frames of a stream (an ack and its reply per item); one
 * per ACK_DELAY_MS never stalls it: the window holds 64 items, and half of
 * them read sends the ack at once. A server whose window fills by bytes
 * this side counts short (items of floats written `1.0`) waits at most this.
 */
const ACK_DELAY_MS = 100;
const NON_ASCII = /[\u0080-\uffff]/;

/**
 * A stream call's hold on one of its worker's `maxInFlightPerWorker` slots,
 * as the pool hands it to the stream ({@linkcode StreamRequestOptions.onSlot}).
 *
 * @example
 * ```ts
 * import type { StreamSlot } from "@pyproxy/pyproxy";
 * const slot: StreamSlot = { park() {}, unpark() {} };
 * slot.park(); // the reader is a window behind: the slot goes back to the pool
 * slot.unpark(); // it caught up: the stream holds a slot again
 * ```
 */
export interface StreamSlot {
  /** Gives the slot back while the stream is parked (its window is full). */
  park(): void;
  /** Takes a slot again, even above `maxInFlightPerWorker`, once the reader catches up. */
  unpark(): void;
}

/**
 * Options of {@linkcode StreamPool.request}.
 *
 * @example
 * ```ts
 * import type { StreamRequestOptions } from "@pyproxy/pyproxy";
 * const options: StreamRequestOptions = { timeout: 60_000, onSlot: (slot) => slot.park() };
 * console.log(options.timeout); // 60000
 * ```
 */
export interface StreamRequestOptions {
  /** Calls with the same key go to the same worker while it is up. */
  key?: string;
  /** Send to this worker only. */
  worker?: string;
  /** Milliseconds for the whole call. */
  timeout?: number;
  /** Aborting cancels the call. */
  signal?: AbortSignal;
  /** Gets the call's events (`streamStart`, `item`). */
  onEvent?: (event: Record<string, unknown>) => void;
  /** The model's headers (`RequestOptions.onResponseMeta`). */
  onResponseMeta?: (meta: ResponseMeta) => void;
  /** Called with the worker's id each time the call is written to one. */
  onSend?: (worker: string) => void;
  /**
   * Gets the call's slot each time the call is sent to a worker: the
   * stream parks it while its window is full. A pool without it counts the
   * stream in flight from its start to its end.
   */
  onSlot?: (slot: StreamSlot) => void;
  /**
   * The version the stream asked for (`ExecuteStreamOptions.version`): it
   * never follows its model's default to another one.
   */
  version?: string;
}

/**
 * A stream as its pool's idle watch sees it
 * ({@linkcode StreamPool.watchIdle}).
 *
 * @example
 * ```ts
 * import type { IdleStream } from "@pyproxy/pyproxy";
 * const stream: IdleStream = {
 *   model: "tokens",
 *   worker: "w1",
 *   idleTimeout: 60_000,
 *   idleDeadline: () => Infinity, // its reader waits for an item
 *   expire() {},
 * };
 * console.log(stream.idleDeadline() > Date.now()); // true
 * ```
 */
export interface IdleStream {
  /** The model's name. */
  readonly model: string;
  /** The worker the stream runs on, once it started there. */
  readonly worker: string | undefined;
  /** Milliseconds its reader may take no item before the stream is cancelled. */
  readonly idleTimeout: number;
  /**
   * When that time runs out (a `Date.now()` time): `idleTimeout` after the
   * last item taken (or the start); `Infinity` while the reader waits for
   * an item.
   */
  idleDeadline(): number;
  /**
   * Cancels the stream for its idle reader, once its deadline passed (its
   * next read rejects with `StreamIdleError`). Throws what its `onIdle`
   * threw, after doing so.
   */
  expire(): void;
}

/**
 * What a {@linkcode ModelStream} needs from the pool.
 *
 * @example
 * ```ts ignore
 * const stream = new ModelStream(pool, "llm", { prompt: "hi" }, {});
 * ```
 */
export interface StreamPool {
  /** Sends one call; `onEvent` gets its events. */
  request<T = unknown>(
    cmd: string,
    args?: Record<string, unknown>,
    options?: StreamRequestOptions,
  ): Promise<T>;
  /** Sends a small command on a worker's connection (the acks). */
  control<T = unknown>(
    worker: string,
    cmd: string,
    args: Record<string, unknown>,
    options?: { pid?: number; timeout?: number },
  ): Promise<T>;
  /**
   * The idle timeout of a stream that gives none
   * (`PoolOptions.streamIdleTimeout`). Without it, none.
   */
  readonly streamIdleTimeout?: number;
  /**
   * Checks `stream` for an idle reader until the returned function is
   * called, and calls its `expire()` once its deadline passed. Without it,
   * streams have no idle timeout.
   */
  watchIdle?(stream: IdleStream): () => void;
}

/**
 * Options of {@linkcode Pool.executeStream}.
 *
 * @example
 * ```ts
 * import type { ExecuteStreamOptions } from "@pyproxy/pyproxy";
 * const options: ExecuteStreamOptions = { timeout: 120_000, key: "chat-7" };
 * console.log(options.timeout); // 120000
 * ```
 */
export interface ExecuteStreamOptions {
  /** Calls with the same key go to the same worker while it is up. */
  key?: string;
  /** Send to this worker only. */
  worker?: string;
  /**
   * The version of the model to run (`pool.execute`'s `version`); absent:
   * its default one. A version it does not have ends the stream with
   * `ModelNotFoundError`.
   */
  version?: string;
  /**
   * Milliseconds for the whole stream, from the call to its last item (its
   * wait for a worker included).
   * @default {PoolOptions.requestTimeout}
   */
  timeout?: number;
  /**
   * Milliseconds from the call to its first item, its wait for a worker (and
   * for a `threadsafe = False` model's turn) included: a chat's time to first
   * token, bounded apart from a long generation's `timeout`. Past it the
   * model's call is cancelled and the stream ends with a `TimeoutError` whose
   * `details` are `{bound: "firstItemTimeout", firstItemTimeout, waited}`
   * (`waited`: `"queue"` when the model had not started, the call waiting
   * for a worker or on it for a `threadsafe = False` model's turn, so a retry
   * is safe; else `"worker"`). A number > 0; `Infinity`: none.
   * @default {Infinity}
   */
  firstItemTimeout?: number;
  /** Aborting ends the stream with `CancelledError` and cancels the model. */
  signal?: AbortSignal;
  /**
   * Milliseconds the reader may take no item before the stream is cancelled
   * (the model's generator closed, unread items dropped) and its next read
   * rejects with `StreamIdleError`: a number > 0, `Infinity` for none. Counted
   * from the last item taken (or the start), and not while a `next()` waits
   * for the model.
   * @default {PoolOptions.streamIdleTimeout}
   */
  idleTimeout?: number;
  /**
   * Called once when the idle timeout cancels the stream (e.g. to close the
   * connection of a client that stopped reading). It must not throw.
   */
  onIdle?: (error: StreamIdleError) => void;
  /**
   * The request id of the call (e.g. the gateway's `X-Request-Id`): sent
   * with it (protocol §6, `requestId`), so that the model reads it with
   * `host.request_id()` and its log records carry it. 1 to 128 characters
   * of `A-Za-z0-9._:-`; anything else ends the stream with `ConfigError`.
   */
  requestId?: string;
  /**
   * The media type of a `msg` that is bytes: sent with the call (protocol
   * §6, `contentType`), the model reads it with `host.content_type()`.
   */
  contentType?: string;
  /**
   * Request headers for the model: sent with the call (protocol §6,
   * `headers`), the model reads them with `host.headers()`. As
   * `pool.execute`'s `headers`; anything else ends the stream with
   * `ConfigError`.
   */
  headers?: Record<string, string>;
  /**
   * Who makes the call, for the plugins' call hooks (`ModelCall.caller`),
   * as `pool.execute`'s `caller`: sent with the call (protocol §6), the
   * model reads it with `host.caller()`.
   */
  caller?: string;
  /**
   * A W3C `traceparent` for the model's `host.trace_context()`: as
   * `pool.execute`'s `traceparent` (protocol §6); one the spec refuses ends
   * the stream with `ConfigError`.
   */
  traceparent?: string;
  /** The `tracestate` that goes with `traceparent`, as `pool.execute`'s. */
  tracestate?: string;
  /**
   * Called each time the stream's call is written to a worker (again after
   * a retry), with the worker's id (`"w1"`), as `pool.execute`'s `onSend`.
   */
  onSend?: (worker: string) => void;
  /**
   * Receives the headers the model set before its first item
   * (`host.set_header`: docs/models.md, "Statuses and headers"), as that
   * item arrives (or as the stream ends, when it yields none); not called
   * when it set none. A stream's status is not the model's to choose.
   */
  onResponseMeta?: (meta: ResponseMeta) => void;
}

/**
 * The items a model yields, in order, as they come: an async iterator. The
 * model's generator runs ahead of the reader by at most 64 items (or 1 MiB):
 * a slow reader slows the model down instead of filling memory, and while
 * the model waits for it, it holds no thread of its worker (the call is
 * parked there) and none of the worker's `maxInFlightPerWorker` slots in the
 * pool (`status().workers[].parked` counts it instead of `inFlight`), so
 * readers that stop do not keep other calls waiting; the stream takes a slot
 * again as its reader catches up, even above the limit for a while (the
 * reader is ready: waiting for a slot held by calls that may wait on it could
 * wait for ever). Leaving a `for await` loop early (or `cancel()`) cancels
 * the model's call; an error (the model's exception, a timeout, a lost
 * worker) is thrown by the iterator after the items that came before it. A
 * stream neither read to its end nor cancelled keeps its model call (a
 * suspended generator and up to 64 items on each side) until its reader has
 * taken no item for `idleTimeout` (the pool's `streamIdleTimeout`: 5 minutes
 * by default, 60 s in the gateway's pool): then it is cancelled and its next
 * read rejects with `StreamIdleError`. Meanwhile `pool.close()` waits for it
 * as for a call in flight, the whole `shutdownGrace` (5 s by default: a test
 * that leaves a stream unread takes that long to close its pool), before
 * failing it with `ShuttingDownError`. Read it, or `cancel()` it
 * (`await using` does).
 *
 * @example
 * ```ts ignore
 * for await (const token of pool.executeStream("llm", { prompt: "Hello" })) {
 *   console.log(token);
 * }
 * ```
 */
export class ModelStream<T = unknown>
  implements AsyncIterableIterator<T>, AsyncDisposable {
  #pool: StreamPool;
  #items: T[] = [];
  /** The seq of the first item in `#items`. */
  #firstSeq = 0;
  /** The `next()` calls waiting for an item, in call order. */
  #waiters: (() => void)[] = [];
  #ended = false;
  #error: unknown;
  #count: number | undefined;
  #controller = new AbortController();
  #worker: string | undefined;
  #target: number | undefined;
  #pid: number | undefined;
  #ackSeq = -1;
  /** The timer of the next `itemAck`, while one is due. */
  #ackTimer: ReturnType<typeof setTimeout> | undefined;
  /** Whether `#ackTimer` is the next turn's (not ACK_DELAY_MS's). */
  #ackSoon = false;
  /** Bytes of the items read after `#ackedSeq` (as `#unacked` counts them). */
  #readBytes = 0;
  /** The call's slot in the pool (when the pool hands it over). */
  #slot: StreamSlot | undefined;
  /** Whether `#slot` is parked: the window is full as far as this side knows. */
  #parked = false;
  /** The last seq acknowledged in an `itemAck` sent. */
  #ackedSeq = -1;
  /** Encoded sizes of the items received after `#ackedSeq`, in seq order. */
  #unacked: number[] = [];
  /** Their sum. */
  #unackedBytes = 0;
  /** When the reader last took an item (or the stream started). */
  #takenAt = Date.now();
  /** The `next()` calls waiting for an item: the reader is not idle. */
  #reading = 0;
  /** Stops the pool's idle watch (while it watches this stream). */
  #unwatch: (() => void) | undefined;
  /** `onResponseMeta`, until the model's headers came. */
  #onMeta: ((meta: ResponseMeta) => void) | undefined;
  /** The `firstItemTimeout` timer, until the first item (or the end). */
  #firstItemTimer: ReturnType<typeof setTimeout> | undefined;

  /**
   * Starts the call; use {@linkcode Pool.executeStream}. `refused`: the
   * stream is not started, its first read rejects with it (a `version` the
   * model does not have).
   */
  constructor(
    pool: StreamPool,
    name: string,
    msg: unknown,
    options: ExecuteStreamOptions = {},
    refused?: Error,
  ) {
    this.#pool = pool;
    if (refused !== undefined) {
      this.#end(refused);
      return;
    }
    const {
      idleTimeout,
      requestId,
      contentType,
      headers,
      caller,
      onResponseMeta,
      traceparent,
      tracestate,
    } = options;
    const invalid = callOptionsError("Cannot send call", {
      idleTimeout,
      requestId,
      contentType,
      headers,
      caller,
      onResponseMeta,
      traceparent,
      tracestate,
    }, "executeStream");
    if (invalid !== undefined) {
      this.#end(invalid);
      return;
    }
    const firstItemTimeout = options.firstItemTimeout;
    if (firstItemTimeout !== undefined) {
      if (!(typeof firstItemTimeout === "number" && firstItemTimeout > 0)) {
        this.#end(
          new RangeError(
            `Cannot send call: firstItemTimeout must be a number > 0 (ms) or Infinity, not ${
              String(firstItemTimeout)
            }`,
          ),
        );
        return;
      }
      // Beyond a timer's longest delay (2^31 - 1 ms, 24.8 days): none.
      if (firstItemTimeout < 2 ** 31) {
        this.#firstItemTimer = setTimeout(
          () => this.#firstItemLate(name, firstItemTimeout),
          firstItemTimeout,
        );
      }
    }
    this.#watchIdle(name, options);
    this.#onMeta = onResponseMeta;
    const signal = options.signal === undefined
      ? this.#controller.signal
      : AbortSignal.any([options.signal, this.#controller.signal]);
    const args: Record<string, unknown> = requestId === undefined
      ? { name, msg }
      : { name, msg, requestId };
    if (contentType !== undefined) args.contentType = contentType;
    if (headers !== undefined) args.headers = headers;
    if (traceparent !== undefined) traceContextArgs(args, options);
    if (options.caller !== undefined) args.caller = options.caller;
    pool.request<{ items?: unknown }>("executeStream", args, {
      ...(options.key === undefined ? {} : { key: options.key }),
      ...(options.worker === undefined ? {} : { worker: options.worker }),
      ...(options.timeout === undefined ? {} : { timeout: options.timeout }),
      ...(options.version === undefined ? {} : { version: options.version }),
      ...(options.onSend === undefined ? {} : { onSend: options.onSend }),
      signal,
      onEvent: (event) => this.#onEvent(event),
      onSlot: (slot) => {
        this.#slot = slot;
        this.#parked = false;
      },
      // A stream without items: its reply carries the headers.
      ...(onResponseMeta === undefined ? {} : {
        onResponseMeta: (meta: ResponseMeta) => {
          const onMeta = this.#onMeta;
          this.#onMeta = undefined;
          onMeta?.(meta);
        },
      }),
    }).then(
      (reply) => {
        const items = reply?.items;
        this.#count = typeof items === "number" ? items : undefined;
        this.#end(undefined);
      },
      (error) => this.#end(error ?? new Error("stream failed")),
    );
  }

  /** Items received so far (read or not). */
  get received(): number {
    return this.#firstSeq + this.#items.length;
  }

  /** How many items the model sent, once the stream ended without error. */
  get total(): number | undefined {
    return this.#count;
  }

  /** The next item; `done` after the last one; throws the stream's error. */
  async next(): Promise<IteratorResult<T>> {
    if (this.#items.length === 0 && !this.#ended) {
      this.#reading++;
      try {
        while (this.#items.length === 0 && !this.#ended) {
          // One waiter per pending next(): concurrent calls (Promise.all of
          // next()s, as the async iterator protocol allows) each get woken.
          await new Promise<void>((resolve) => this.#waiters.push(resolve));
        }
      } finally {
        this.#reading--;
      }
    }
    if (this.#items.length > 0) {
      const value = this.#items.shift()!;
      this.#takenAt = Date.now();
      this.#scheduleAck(this.#firstSeq++);
      if (this.#ended && this.#items.length === 0) this.#stopWatching();
      return { value, done: false };
    }
    if (this.#error !== undefined) {
      const error = this.#error;
      this.#error = undefined; // thrown once
      throw error;
    }
    return { value: undefined, done: true };
  }

  /** Stops reading: cancels the model's call if it still runs. */
  return(): Promise<IteratorResult<T>> {
    this.cancel();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Cancels the model's call (if it still runs) and drops unread items. */
  cancel(): void {
    this.#items = [];
    this.#stopWatching();
    if (!this.#ended) {
      this.#controller.abort(
        new CancelledError("Cannot complete executeStream: cancelled"),
      );
      this.#end(undefined);
    }
  }

  /** Same as `cancel()`. */
  [Symbol.asyncDispose](): Promise<void> {
    this.cancel();
    return Promise.resolve();
  }

  /** Iterates the items. */
  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  #onEvent(event: Record<string, unknown>): void {
    if (event.event === "item") {
      if (this.#ended) return;
      // The first item carries the headers the model set (protocol §6).
      if (event.http !== undefined) {
        deliverResponseMeta(event.http, this.#onMeta, warn);
        this.#onMeta = undefined;
      }
      this.#items.push(event.data as T);
      if (this.#firstItemTimer !== undefined) {
        clearTimeout(this.#firstItemTimer);
        this.#firstItemTimer = undefined;
      }
      if (this.#slot !== undefined) this.#sent(event);
      this.#wake();
    } else if (event.event === "windowFull") {
      this.#serverFull(event.acked);
    } else if (event.event === "streamStart") {
      if (typeof event.id === "number") this.#target = event.id;
      if (typeof event.serverId === "string") this.#worker = event.serverId;
      if (typeof event.pid === "number") this.#pid = event.pid;
    }
  }

  #end(error: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = error;
    // Nobody to tell any more: no ack timer outlives the call.
    if (this.#ackTimer !== undefined) {
      clearTimeout(this.#ackTimer);
      this.#ackTimer = undefined;
    }
    if (this.#firstItemTimer !== undefined) {
      clearTimeout(this.#firstItemTimer);
      this.#firstItemTimer = undefined;
    }
    // Unread items keep it watched: a reader that never comes back for
    // them loses them at its idle timeout.
    if (this.#items.length === 0) this.#stopWatching();
    this.#wake();
  }

  /** Has the pool's idle watch check this stream, when it has a timeout. */
  #watchIdle(name: string, options: ExecuteStreamOptions): void {
    const pool = this.#pool;
    const ms = options.idleTimeout ?? pool.streamIdleTimeout ?? Infinity;
    if (pool.watchIdle === undefined || ms === Infinity) return;
    const onIdle = options.onIdle;
    // deno-lint-ignore no-this-alias
    const stream = this;
    this.#unwatch = pool.watchIdle({
      model: name,
      get worker() {
        return stream.#worker;
      },
      idleTimeout: ms,
      idleDeadline: () => this.#reading > 0 ? Infinity : this.#takenAt + ms,
      expire: () => {
        this.#unwatch = undefined;
        const error = this.#expire(name, ms);
        onIdle?.(error);
      },
    });
  }

  #stopWatching(): void {
    const unwatch = this.#unwatch;
    if (unwatch === undefined) return;
    this.#unwatch = undefined;
    unwatch();
  }

  /**
   * The reader took no item for `ms`: the model's call is cancelled (when
   * it still runs) and the items it sent are dropped; the next read throws.
   */
  #expire(name: string, ms: number): StreamIdleError {
    const error = new StreamIdleError(
      `Cannot read stream of ${name}: no item taken for ${ms} ms (${IDLE_SETTING})`,
      { details: { idleTimeout: ms } },
    );
    this.#items = [];
    if (this.#ended) this.#error = error; // it ended; its items went unread
    else {
      this.#controller.abort(error);
      this.#end(error);
    }
    return error;
  }

  /**
   * No item came within `firstItemTimeout`: the model's call is cancelled
   * (in the pool's queue or on its worker) and the stream ends with a
   * `TimeoutError` that names the bound, and says where the call waited.
   */
  #firstItemLate(name: string, ms: number): void {
    this.#firstItemTimer = undefined;
    if (this.#ended) return;
    const waited = this.#worker === undefined ? "queue" : "worker";
    const error = new TimeoutError(
      `Cannot stream ${name}: no first item within ${ms} ms (firstItemTimeout)${
        waited === "queue"
          ? ", before it started (waiting for a worker, or on its worker for a threadsafe = False model's turn)"
          : ""
      }`,
      { details: { bound: "firstItemTimeout", firstItemTimeout: ms, waited } },
    );
    this.#controller.abort(error);
    this.#end(error);
  }

  #wake(): void {
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  /**
   * An item came: counted in the window until its ack is sent. Once the
   * window is full the server sends no more and parks the call (or is about
   * to: an item may be on its way), so its slot goes back to the pool: a
   * reader that stopped must not keep the worker's other calls waiting.
   * This side counts no more items than the server (some may be on their
   * way here) and no fewer acks (some may be on their way there), so it
   * never thinks the window full while the server does not.
   */
  #sent(event: Record<string, unknown>): void {
    const size = itemEventBytes(event);
    this.#unacked.push(size);
    this.#unackedBytes += size;
    if (!this.#parked && this.#windowFull()) {
      this.#parked = true;
      this.#slot!.park();
    }
  }

  /**
   * The server parks the call: its window is full by its own count (as it
   * was when the server had the acks up to `acked`). This side's count of
   * the window's bytes can fall short of the server's (it sees the items
   * parsed: `[1.0, 2.0]` written `[1,2]`, half the bytes), and a reader
   * that stopped then held its slot until its idle timeout: the slot goes
   * back now, unless an ack sent since opens the window anyway.
   */
  #serverFull(acked: unknown): void {
    if (
      this.#ended || this.#slot === undefined || this.#parked ||
      typeof acked !== "number" || this.#ackedSeq > acked
    ) return;
    this.#parked = true;
    this.#slot.park();
    // Items read and not acknowledged yet: their ack opens the window.
    if (this.#ackTimer !== undefined && !this.#ackSoon) {
      clearTimeout(this.#ackTimer);
      this.#ackSoon = true;
      this.#ackTimer = setTimeout(() => this.#sendAck(), 0);
    }
  }

  #windowFull(): boolean {
    return this.#unacked.length >= WINDOW_ITEMS ||
      this.#unackedBytes >= WINDOW_BYTES;
  }

  /**
   * Tells the model's server what was read: at once (the event loop's next
   * turn) when half the window is read and not acknowledged, or while this
   * side counts the window full (the server waits for the ack); else within
   * ACK_DELAY_MS, one ack for the items read meanwhile.
   */
  #scheduleAck(seq: number): void {
    // Its items read after the call ended: nobody to tell (the timer would
    // find the stream ended, and outlived a test reading them last).
    if (this.#ended) return;
    this.#ackSeq = seq;
    const read = seq - this.#ackedSeq;
    // Its size, as counted when it came (`#unacked` starts after #ackedSeq).
    const size = this.#unacked[read - 1];
    if (size !== undefined) this.#readBytes += size;
    const soon = read >= ACK_ITEMS || this.#readBytes >= ACK_BYTES ||
      this.#parked;
    if (this.#ackTimer !== undefined) {
      if (this.#ackSoon || !soon) return;
      clearTimeout(this.#ackTimer);
    }
    this.#ackSoon = soon;
    this.#ackTimer = setTimeout(() => this.#sendAck(), soon ? 0 : ACK_DELAY_MS);
  }

  #sendAck(): void {
    this.#ackTimer = undefined;
    if (
      this.#ended || this.#worker === undefined || this.#target === undefined
    ) return;
    const seq = this.#ackSeq;
    this.#pool.control(this.#worker, "itemAck", {
      target: this.#target,
      seq,
    }, this.#pid === undefined ? {} : { pid: this.#pid })
      .catch(() => {}); // the call's own reply reports a lost connection
    this.#acked(seq);
  }

  /**
   * The ack of every item up to `seq` is sent: an ack that opens the window
   * takes the slot back, even beyond `maxInFlightPerWorker` (the server goes
   * on as soon as it reads the ack, and the reader is waiting for its items).
   */
  #acked(seq: number): void {
    const read = seq - this.#ackedSeq;
    this.#ackedSeq = seq;
    // Every item read is acknowledged now (seq is the last one read).
    this.#readBytes = 0;
    if (this.#slot === undefined) return;
    const unacked = this.#unacked;
    let n = Math.min(read, unacked.length);
    for (; n > 0; n--) this.#unackedBytes -= unacked.shift()!;
    if (this.#parked && !this.#windowFull()) {
      this.#parked = false;
      this.#slot.unpark();
    }
  }
}

/**
 * The bytes of an `item` event as the server counts them in its window: its
 * compact JSON (`{"event":"item","id":7,"seq":3,"data":...}`) in UTF-8. The
 * same JSON but for numbers a parse does not keep as written (`1.0`, `1e3`):
 * an estimate of the server's count that is exact for most items.
 */
function itemEventBytes(event: Record<string, unknown>): number {
  const data = stringifyJson(event.data ?? null)!;
  return ITEM_EVENT_BYTES + String(event.id).length +
    String(event.seq).length +
    (NON_ASCII.test(data) ? utf8Length(data) : data.length);
}

/** The UTF-8 length of `text` (well-formed: lone surrogates count 3 bytes). */
function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) bytes += 1;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        bytes += 2; // two units, four bytes
        i++;
      } else bytes += 2;
    } else bytes += 2;
  }
  return bytes;
}

function warn(message: string, properties: Record<string, unknown>): void {
  getLogger(["pyproxy", "pool"]).warn(message, properties);
}
