/**
 * {@linkcode ModelStream}: the items of a streaming model call, as they come
 * (`pool.executeStream`).
 *
 * @module
 */
import { CancelledError } from "./errors.ts";

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
    options?: {
      key?: string;
      worker?: string;
      timeout?: number;
      signal?: AbortSignal;
      onEvent?: (event: Record<string, unknown>) => void;
    },
  ): Promise<T>;
  /** Sends a small command on a worker's connection (the acks). */
  control<T = unknown>(
    worker: string,
    cmd: string,
    args: Record<string, unknown>,
    options?: { pid?: number; timeout?: number },
  ): Promise<T>;
}

/**
 * Options of {@linkcode Pool.executeStream}.
 *
 * @example
 * ```ts
 * import type { ExecuteStreamOptions } from "./model_stream.ts";
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
   * Milliseconds for the whole stream, from the call to its last item.
   * @default {PoolOptions.requestTimeout}
   */
  timeout?: number;
  /** Aborting ends the stream with `CancelledError` and cancels the model. */
  signal?: AbortSignal;
}

/**
 * The items a model yields, in order, as they come: an async iterator. The
 * model's generator runs ahead of the reader by at most 64 items (or 1 MiB):
 * a slow reader slows the model down instead of filling memory, and while
 * the model waits for it, it holds no thread of its worker (the call is
 * parked there). Leaving a `for await` loop early (or `cancel()`) cancels
 * the model's call; an error (the model's exception, a timeout, a lost
 * worker) is thrown by the iterator after the items that came before it. A
 * stream neither read to its end nor cancelled keeps its model call (a
 * suspended generator, and one of the worker's `maxInFlightPerWorker` slots)
 * until its timeout: read it, or `cancel()` it (`await using` does).
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
  #ackScheduled = false;

  /** Starts the call; use {@linkcode Pool.executeStream}. */
  constructor(
    pool: StreamPool,
    name: string,
    msg: unknown,
    options: ExecuteStreamOptions = {},
  ) {
    this.#pool = pool;
    const signal = options.signal === undefined
      ? this.#controller.signal
      : AbortSignal.any([options.signal, this.#controller.signal]);
    pool.request<{ items?: unknown }>("executeStream", { name, msg }, {
      ...(options.key === undefined ? {} : { key: options.key }),
      ...(options.worker === undefined ? {} : { worker: options.worker }),
      ...(options.timeout === undefined ? {} : { timeout: options.timeout }),
      signal,
      onEvent: (event) => this.#onEvent(event),
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
    while (this.#items.length === 0 && !this.#ended) {
      // One waiter per pending next(): concurrent calls (Promise.all of
      // next()s, as the async iterator protocol allows) each get woken.
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    if (this.#items.length > 0) {
      const value = this.#items.shift()!;
      this.#scheduleAck(this.#firstSeq++);
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
      this.#items.push(event.data as T);
      this.#wake();
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
    this.#wake();
  }

  #wake(): void {
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  /** Tells the model's server what was read (one ack per event-loop turn). */
  #scheduleAck(seq: number): void {
    this.#ackSeq = seq;
    if (this.#ackScheduled) return;
    this.#ackScheduled = true;
    setTimeout(() => {
      this.#ackScheduled = false;
      if (
        this.#ended || this.#worker === undefined ||
        this.#target === undefined
      ) return;
      this.#pool.control(this.#worker, "itemAck", {
        target: this.#target,
        seq: this.#ackSeq,
      }, this.#pid === undefined ? {} : { pid: this.#pid })
        .catch(() => {}); // the call's own reply reports a lost connection
    }, 0);
  }
}
