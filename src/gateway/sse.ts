/**
 * Server-Sent Events encoding with pull-based backpressure.
 *
 * @module
 */
import { stringifyJson } from "../_exact_json.ts";
import { MAX_TIMER_MS } from "../_timer.ts";

/** One Server-Sent Event. */
export interface SseEvent {
  /** The `event:` field. */
  event?: string;
  /** The `id:` field (what a client sends back as `Last-Event-ID`). */
  id?: string | number;
  /** The payload; serialised as JSON unless it is a string. */
  data: unknown;
}

/** Options for {@linkcode sseResponse}. */
export interface SseResponseOptions {
  /**
   * Sends a comment line after this much silence so proxies keep the stream open.
   * @default {15000}
   */
  keepAliveMs?: number;
  /** Called once when the stream ends for any reason (client gone, source done, error). */
  onClose?: () => void;
  /** Extra response headers. */
  headers?: Record<string, string>;
  /**
   * Starts the stream with a comment line (`: open`), for HTTP servers that
   * send a streamed response's headers only with its first chunk (Bun): a
   * client then sees the response at once, not with the first event.
   * @default {false}
   */
  open?: boolean;
  /**
   * Ends the stream with this event once it resolves, also while the client
   * takes no events: the source is not pulled then, so it could not end the
   * stream itself (a model stream cancelled for its idle client). The event
   * is queued after the ones the client has not taken yet, the body is
   * closed and the source returned. Ignored once the stream has ended, or
   * while the source is producing its next event (it ends the stream its
   * own way).
   */
  endWith?: Promise<SseEvent>;
  /**
   * Ends the stream once an event has waited this long (ms) for the client
   * to take it (its socket full: a client that stopped reading), on the
   * keep-alive's timer: the source is returned at once (what it holds goes,
   * an eval's code runs on), the body closed after the chunks the client has
   * not taken yet and, when `onIdle` gives one, its event. A number > 0;
   * `Infinity`, or beyond a timer's range (2^31 - 1), for none.
   * @default {Infinity}
   */
  idleTimeout?: number;
  /**
   * Called once when the stream ends for `idleTimeout`: the event to end it
   * with, or `undefined` for none (the source's last event is among those
   * not taken yet).
   */
  onIdle?: () => SseEvent | undefined;
}

const encoder = new TextEncoder();

/**
 * Encodes one event in the `text/event-stream` format.
 *
 * @example
 * ```ts
 * import { encodeSse } from "./sse.ts";
 * console.log(encodeSse({ event: "output", id: 3, data: { fd: 1 } }));
 * // "event: output\nid: 3\ndata: {\"fd\":1}\n\n"
 * ```
 */
export function encodeSse(event: SseEvent): string {
  let out = "";
  if (event.event !== undefined) out += `event: ${event.event}\n`;
  if (event.id !== undefined) out += `id: ${event.id}\n`;
  const data = typeof event.data === "string"
    ? event.data
    : stringifyJson(event.data ?? null)!;
  for (const line of data.split("\n")) out += `data: ${line}\n`;
  return out + "\n";
}

/**
 * Streams the events of `source` as a `text/event-stream` response. The
 * source is pulled only when the client has taken the previous chunk, so a
 * slow client stalls the source instead of growing a buffer here. The
 * stream ends when the source does: a source that has to end early (server
 * shutdown) ends with an event that says why, so clients can tell it from a
 * lost connection.
 *
 * @example
 * ```ts
 * import { sseResponse } from "./sse.ts";
 * async function* events() {
 *   yield { event: "hello", data: { n: 1 } };
 * }
 * const res = sseResponse(events());
 * console.log(await res.text()); // "event: hello\ndata: {\"n\":1}\n\n"
 * ```
 */
export function sseResponse(
  source: AsyncIterator<SseEvent> | AsyncIterable<SseEvent>,
  options: SseResponseOptions = {},
): Response {
  const iterator = Symbol.asyncIterator in source
    ? source[Symbol.asyncIterator]()
    : source;
  const keepAliveMs = options.keepAliveMs ?? 15000;
  const idleMs = (options.idleTimeout ?? Infinity) <= MAX_TIMER_MS
    ? options.idleTimeout!
    : Infinity;
  let pending: Promise<IteratorResult<SseEvent>> | undefined;
  let finished = false;
  // The keep-alive: one timer per stream, re-armed for `keepAliveMs` after
  // the last chunk, never set per event (a stream of 10^4 items a second
  // made a timer, a promise and a Promise.race per item). A comment goes
  // out only while a pull waits for the source, as the client takes chunks.
  let timer: ReturnType<typeof setTimeout> | undefined;
  let lastChunk = 0;
  // When the last event was queued for the client: while no pull waits for
  // the source, the client has not taken it since (idleTimeout).
  let ready = 0;
  let keepAlive: (() => void) | undefined;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    timer = undefined;
    void iterator.return?.()?.catch(() => {});
    options.onClose?.();
  };
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      if (options.open === true) {
        controller.enqueue(encoder.encode(": open\n\n"));
      }
      options.endWith?.then((event) => {
        if (finished || pending !== undefined) return;
        finish();
        controller.enqueue(encoder.encode(encodeSse(event)));
        controller.close();
      }, () => {});
      keepAlive = () => {
        timer = undefined;
        if (finished) return;
        const now = Date.now();
        if (pending === undefined && now - ready >= idleMs) {
          // Taken by no one for idleMs: what the client has not taken yet
          // stays queued, then the idle event, if any.
          const event = options.onIdle?.();
          finish();
          if (event !== undefined) {
            controller.enqueue(encoder.encode(encodeSse(event)));
          }
          controller.close();
          return;
        }
        const due = lastChunk + keepAliveMs;
        if (now >= due) {
          // Silent for keepAliveMs: a comment, if a pull waits for the
          // source (else the client has not taken the last chunk yet).
          if (pending !== undefined) {
            controller.enqueue(encoder.encode(": keep-alive\n\n"));
          }
          lastChunk = now;
        }
        let at = lastChunk + keepAliveMs;
        if (pending === undefined && ready + idleMs < at) at = ready + idleMs;
        timer = setTimeout(keepAlive!, Math.max(1, at - now));
      };
    },
    async pull(controller) {
      if (finished) return;
      if (timer === undefined) {
        lastChunk = ready = Date.now();
        timer = setTimeout(keepAlive!, keepAliveMs);
      }
      pending ??= iterator.next();
      try {
        const result = await pending;
        pending = undefined;
        if (finished) return;
        lastChunk = ready = Date.now();
        if (result.done) {
          finish();
          controller.close();
          return;
        }
        controller.enqueue(encoder.encode(encodeSse(result.value)));
      } catch (err) {
        finish();
        controller.error(err);
      }
    },
    cancel() {
      finish();
    },
  }, { highWaterMark: 1 });
  return new Response(body, {
    headers: { ...SSE_HEADERS, ...options.headers },
  });
}

const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache",
  "x-accel-buffering": "no",
};

/**
 * The head of an event stream, without the stream: the answer to a `HEAD`
 * request of an SSE route. The route must not open its source for one: the
 * router answers `HEAD` with the `GET` response's headers and drops its body
 * without cancelling it, so a subscription made for it would never close.
 *
 * @example
 * ```ts
 * import { sseHead } from "./sse.ts";
 * const res = sseHead({ "x-atom-id": "a1" });
 * console.log(res.headers.get("content-type")); // "text/event-stream; charset=utf-8"
 * ```
 */
export function sseHead(headers: Record<string, string> = {}): Response {
  return new Response(null, { headers: { ...SSE_HEADERS, ...headers } });
}
