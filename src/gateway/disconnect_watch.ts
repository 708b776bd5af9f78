/**
 * Cancel-on-disconnect for the gateway's execute calls, paid only by slow
 * calls.
 *
 * Deno's `request.signal` costs a pending operation per request (~11 µs of
 * the event loop's CPU, 15% of the gateway's throughput under load), most of
 * them for calls that answer in a millisecond, long before a client could
 * be seen leaving. So each call gets a plain `AbortController` (~0.5 µs with
 * the session's listener), and a sweep every `graceMs` subscribes to the
 * `request.signal` of the calls that were already there at the sweep before
 * (so have run for `graceMs` or more; no clock read per call). A client gone
 * by then is seen at once (the signal is born aborted), but over HTTP/2 on
 * Deno 2.9.6 a stream reset before the subscription is never seen (that
 * signal never aborts: docs/gateway.md); one that leaves later aborts the
 * call when it leaves. Calls shorter than `graceMs` (up to twice
 * that, depending on when they start) run to the end, and their answer is
 * dropped with the connection.
 *
 * The calls wait in a ring in start order (no `Map`: see
 * `_session_pending_table.ts` on V8 and long-lived hash tables), so a sweep
 * stops at the first young call.
 *
 * @module
 */
import { StartOrderRing } from "../_start_order_ring.ts";

/** Options of {@linkcode DisconnectWatch}. */
export interface DisconnectWatchOptions {
  /** Age (ms) from which a call listens for its client leaving. Default 50. */
  graceMs?: number;
}

/**
 * The watch of one call: pass `signal` to the call, `end()` it when the call
 * settles.
 */
export class WatchedCall {
  /** Aborted when the client disconnects (once the call is old enough to listen). */
  readonly controller: AbortController = new AbortController();
  /** The client's request, until the call ends. */
  request: Request | undefined;
  /** The watch's sweep count when the call started. */
  readonly epoch: number;
  /** Whether it listens to `request.signal`. */
  listening = false;
  /** Its index in the watch's ring while there (owned by the watch). */
  slot = -1;
  #watch: DisconnectWatch;

  constructor(watch: DisconnectWatch, request: Request, epoch: number) {
    this.#watch = watch;
    this.request = request;
    this.epoch = epoch;
  }

  /** The signal to give the call. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Whether the client left and the call was aborted for it. */
  get aborted(): boolean {
    return this.controller.signal.aborted;
  }

  /** @internal Old enough: listen to `request.signal` (aborted already: abort now). */
  listen(): void {
    const request = this.request;
    if (request === undefined) return;
    this.listening = true;
    const signal = request.signal;
    if (signal.aborted) this.handleEvent();
    else signal.addEventListener("abort", this, { once: true });
  }

  /** The client's `request.signal` aborted. */
  handleEvent(): void {
    this.controller.abort(this.request?.signal.reason);
  }

  /** The call settled: stop watching. Idempotent. */
  end(): void {
    const request = this.request;
    if (request === undefined) return;
    this.request = undefined;
    if (this.listening) request.signal.removeEventListener("abort", this);
    this.#watch.ended(this);
  }
}

/**
 * Watches the clients of calls in flight and aborts the call of a client
 * that disconnects, from the call's `graceMs`-th millisecond on.
 *
 * @example
 * ```ts ignore
 * const watch = new DisconnectWatch({ graceMs: 50 });
 * const call = watch.watch(request);
 * try {
 *   return await pool.execute("echo", body, { signal: call.signal });
 * } finally {
 *   call.end();
 * }
 * ```
 */
export class DisconnectWatch {
  #graceMs: number;
  /** Calls in start order (an ended call leaves at once). */
  #ring = new StartOrderRing<WatchedCall>(1024);
  /** Calls not ended yet. */
  #live = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Sweeps so far: a call's age in sweeps, without reading a clock per call. */
  #epoch = 0;
  #sweep = (): void => this.#onTimer();

  /** Creates an idle watch (no timer until a call is watched). */
  constructor(options: DisconnectWatchOptions = {}) {
    this.#graceMs = options.graceMs ?? 50;
  }

  /** Starts watching the client of a call for `request`. */
  watch(request: Request): WatchedCall {
    const call = new WatchedCall(this, request, this.#epoch);
    this.#ring.push(call);
    this.#live++;
    // Armed only while calls are in flight (the HTTP server holds the process then).
    this.#timer ??= setTimeout(this.#sweep, this.#graceMs);
    return call;
  }

  /** Calls being watched (not ended). */
  get size(): number {
    return this.#live;
  }

  /** @internal A call ended. */
  ended(call: WatchedCall): void {
    // Out of the ring now, not at the next sweep: it dies young (V8).
    this.#ring.remove(call);
    if (--this.#live > 0) return;
    // Nothing in flight: forget the ended calls and stop the timer.
    this.#ring.clear();
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  #onTimer(): void {
    this.#timer = undefined;
    // Calls from before the last sweep are at least graceMs old.
    const young = this.#epoch++;
    const next = this.#ring.takeOld(
      (call) => call.epoch !== young,
      (call) => call.listen(),
    );
    if (next !== undefined) {
      this.#timer = setTimeout(this.#sweep, this.#graceMs);
    }
  }
}
