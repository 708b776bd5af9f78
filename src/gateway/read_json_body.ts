/**
 * Reading a JSON request body under a size limit and a time limit.
 *
 * @module
 */
import { HTTPException } from "hono/http-exception";
import { StartOrderRing } from "../_start_order_ring.ts";
import type { Runtime } from "../runtime/types.ts";
import { httpError } from "./error_response.ts";
import { parseJson } from "../_exact_json.ts";
import { depthOver } from "../_json_depth.ts";
import { InvalidRequestError } from "../errors.ts";
import { contentCodings, readDecodedBody } from "./_content_coding.ts";
import { ByteCollector } from "./_byte_collector.ts";

const DIGITS = /^\d+$/;
// Stateless when used without `stream`: shared instead of built per request.
// It keeps a byte order mark, so a streamed body with one is refused like a
// body with a Content-Length (the runtimes' `request.json()` keeps it too).
const UTF8 = new TextDecoder("utf-8", { ignoreBOM: true });

function tooLarge(limit: number, size?: number): Error {
  const what = size === undefined ? "the body" : `a body of ${size} bytes`;
  return httpError(
    413,
    "PayloadTooLarge",
    `Cannot read request: ${what} is over the limit of ${limit} bytes`,
    {
      limit,
    },
  );
}

/**
 * Reads and parses a JSON body of at most `limit` bytes, within the time
 * `guard` allows (when given). A body with a
 * `Content-Length` is checked against the limit before it is read (the HTTP
 * server holds the body to that length, so a `Request` built in-process is
 * trusted to declare its own truly); a body without one (chunked) is counted
 * as it streams. Either way an oversized body is refused with 413 without
 * being buffered. Resolves `undefined` for an empty body; any other body that
 * is not JSON (only whitespace, say, or JSON after a UTF-8 byte order mark)
 * gives 400. Pass the server's `runtime` when its `request.json()` drops a
 * byte order mark (`Runtime.jsonDropsBom`, Bun): declared bodies are then
 * read as bytes, so that such a body is refused there as well; and on Deno,
 * so that a body the server already holds is taken as one string
 * (`Runtime.takeBodyText`, which keeps the mark; other declared bodies are
 * then read as bytes too: Deno's `text()` drops it). An integer literal of more than
 * `maxIntegerDigits` digits is refused with 400 `InvalidRequestError` before
 * it is made a `BigInt` (the gateway's `limits.maxIntegerDigits`), and a
 * body nested more than `maxJsonDepth` levels deep (arrays and objects, the
 * body itself being level 1) with 400 `InvalidRequestError` before it is
 * parsed (the gateway's `limits.maxJsonDepth`). A body with a
 * `Content-Encoding` (gzip, x-gzip, deflate) is decoded first, held to
 * `limit` as sent and once decoded (`readDecodedBody`); another coding is
 * a 415.
 *
 * @example
 * ```ts
 * import { readJsonBody } from "./read_json_body.ts";
 * const req = new Request("http://localhost/", { method: "POST", body: '{"x":1}' });
 * console.log(await readJsonBody(req, 1024)); // { x: 1 }
 * ```
 */
export async function readJsonBody(
  request: Request,
  limit: number,
  guard?: BodyReadGuard,
  runtime?: Pick<Runtime, "jsonDropsBom" | "takeBodyText">,
  maxIntegerDigits = Infinity,
  maxJsonDepth = Infinity,
): Promise<unknown> {
  const options = { maxIntegerDigits };
  // Read before the body: Deno's text path (below) replaces the bytes of a
  // compressed body that are not UTF-8, so they could not be decoded after
  // a failed parse. One header read (an absent one: ~0.15 µs, within the
  // noise of the gateway's requests/s: docs/performance.md "Compression").
  const encoding = request.headers.get("content-encoding");
  if (encoding !== null) {
    const formats = contentCodings(encoding);
    if (formats !== undefined) {
      const bytes = await readDecodedBody(
        request,
        formats,
        limit,
        watcher(guard),
        incompleteBody,
      );
      if (bytes.byteLength === 0) return undefined;
      return parseBody(UTF8.decode(bytes), request, options, maxJsonDepth);
    }
  }
  const declared = request.headers.get("content-length");
  if (declared !== null && DIGITS.test(declared)) {
    const size = Number(declared);
    if (size > limit) throw tooLarge(limit, size);
    if (size === 0) return undefined;
    // The HTTP server holds a body to its Content-Length, so the runtime's own
    // reader is safe here: under load it costs Deno ~6 µs of CPU less per
    // request than reading the bytes ourselves. Its text, not its JSON:
    // integers beyond ±2^53 must reach Python exactly. On Deno, the text
    // comes the way `request.json()` takes it when the whole body is there
    // (`Runtime.takeBodyText`: ~3.5 µs per request less than `text()`, ~7%
    // of the gateway's requests/s with small bodies: docs/performance.md);
    // otherwise from `text()`, whose reader cannot be cancelled: a read cut
    // short by the guard ends with its connection. Bun's `text()` drops a
    // byte order mark, as its `json()` does: there, the runtime's bytes,
    // decoded keeping it (the body stream read chunk by chunk, as below,
    // served ~40% fewer requests/s than `bytes()` on a bare Bun.serve).
    // Deno's `text()` of a body from its server drops the mark too, while
    // its text path keeps it: when that path is not taken (the body came
    // after the headers, an `Expect: 100-continue`, a large body), the same
    // bytes, decoded keeping it, so that a body with one is refused however
    // the client's writes were cut (`text()` answered 200 there).
    let text = runtime?.takeBodyText?.(request);
    if (text === undefined) {
      try {
        const read =
          runtime?.jsonDropsBom === true || runtime?.takeBodyText !== undefined
            ? request.bytes().then((bytes) => UTF8.decode(bytes))
            : request.text();
        text = await (guard === undefined ? read : guard.watch(read));
      } catch (err) {
        throw err instanceof HTTPException ? err : incompleteBody();
      }
    }
    return parseBody(text, request, options, maxJsonDepth);
  }
  // No usable Content-Length (chunked): counted as it streams.
  const bytes = await readBinaryBody(request, limit, guard);
  if (bytes.byteLength === 0) return undefined;
  return parseBody(UTF8.decode(bytes), request, options, maxJsonDepth);
}

/**
 * Whether a body with this `Content-Type` header is read as bytes, not
 * JSON: any media type but the JSON ones (`application/json`, `+json`,
 * any type naming json), `text/plain` and
 * `application/x-www-form-urlencoded` (what `curl -d` sends), compared
 * without parameters and case. A request without a `Content-Type` is
 * read as JSON, as before bytes were supported.
 *
 * @example
 * ```ts
 * import { isBinaryType } from "./read_json_body.ts";
 * console.log(isBinaryType("image/png"), isBinaryType("application/json; charset=utf-8")); // true false
 * ```
 */
export function isBinaryType(contentType: string | null): boolean {
  // The usual JSON client's header, without a scan (the execute fast path).
  if (contentType === null || contentType === "application/json") return false;
  const semi = contentType.indexOf(";");
  const type = (semi === -1 ? contentType : contentType.slice(0, semi)).trim()
    .toLowerCase();
  return type !== "" && !type.includes("json") && type !== "text/plain" &&
    type !== "application/x-www-form-urlencoded";
}

/**
 * Reads a body as bytes, at most `limit` of them, within the time `guard`
 * allows (when given): 413 for a larger one (checked against
 * `Content-Length` before it is read, counted as it streams without one),
 * 400 for a body that ended early. An empty body is an empty array. A body
 * with a `Content-Encoding` is decoded, as by {@linkcode readJsonBody}.
 *
 * @example
 * ```ts
 * import { readBinaryBody } from "./read_json_body.ts";
 * const req = new Request("http://localhost/", { method: "POST", body: new Uint8Array([1, 2]) });
 * console.log(await readBinaryBody(req, 1024)); // Uint8Array(2) [ 1, 2 ]
 * ```
 */
export async function readBinaryBody(
  request: Request,
  limit: number,
  guard?: BodyReadGuard,
): Promise<Uint8Array> {
  const encoding = request.headers.get("content-encoding");
  const formats = encoding === null ? undefined : contentCodings(encoding);
  if (formats !== undefined) {
    return await readDecodedBody(
      request,
      formats,
      limit,
      watcher(guard),
      incompleteBody,
    );
  }
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) {
    throw tooLarge(limit, Number(declared));
  }
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  // A declared length (within the limit, checked above) sizes the buffer.
  const size = declared === null ? 0 : Number(declared);
  const read = readStream(reader, limit, Number.isInteger(size) ? size : 0);
  try {
    return await (guard === undefined
      ? read
      : guard.watch(read, () => void reader.cancel().catch(() => {})));
  } catch (err) {
    throw err instanceof HTTPException ? err : incompleteBody();
  }
}

/** The guard's `watch`, or the read itself without a guard. */
function watcher(
  guard: BodyReadGuard | undefined,
): (read: Promise<Uint8Array>, cancel: () => void) => Promise<Uint8Array> {
  return guard === undefined
    ? (read) => read
    : (read, cancel) => guard.watch(read, cancel);
}

/**
 * Parses a request body's JSON text as {@linkcode readJsonBody} does (its
 * depth and integer checks, its 400 for text that is not JSON), for a route
 * that reads the bytes itself (the inference protocol's binary extension,
 * whose JSON header comes before the tensors' bytes).
 *
 * @example
 * ```ts
 * import { parseJsonText } from "./read_json_body.ts";
 * const req = new Request("http://localhost/", { method: "POST" });
 * console.log(parseJsonText('{"x":1}', req, 4300, 800)); // { x: 1 }
 * ```
 */
export function parseJsonText(
  text: string,
  request: Request,
  maxIntegerDigits: number,
  maxJsonDepth: number,
): unknown {
  return parseBody(text, request, { maxIntegerDigits }, maxJsonDepth);
}

function parseBody(
  text: string,
  request: Request,
  options: { maxIntegerDigits: number },
  maxJsonDepth: number,
): unknown {
  // Refused before the parse, whose reviver (integers beyond ±2^53)
  // recursed and overflowed the stack from a few thousand levels. Ordinary
  // bodies pay a length comparison, or a native count of their brackets.
  const depth = depthOver(text, maxJsonDepth);
  if (depth !== undefined) throw tooDeep(depth, maxJsonDepth);
  try {
    return parseJson(text, options);
  } catch (err) {
    throw invalidJson(err as Error, request, text);
  }
}

// A gzip stream's first two bytes (1f 8b), decoded as UTF-8.
const GZIP_MAGIC = "\x1f\uFFFD";
// What a JSON text may start with, after whitespace; and only whitespace.
const JSON_START = /^[ \t\n\r]*[{["\-0-9tfn]/;
const BLANK = /^[ \t\n\r]*$/;

/**
 * Starts the note added to the message of a body that does not even start
 * like JSON (text posted as it is with text/plain, as TorchServe and many
 * HTTP APIs take it): the parser's message alone ("Unexpected token 'g'")
 * says neither that the gateway reads such bodies as JSON nor how to send
 * such data (execute takes other media types as bytes: `isBinaryType`).
 * A route with a hint of its own (eval) cuts the message here.
 */
export const NOT_JSON_NOTE = " (the gateway reads JSON bodies only";

/**
 * `err` with a route's own hint in place of the general note, when it is the
 * 400 of a body that is not JSON; any other error as it is. For a route
 * whose callers send something else than a model's JSON body (eval's code,
 * `/v2`'s tensors, `:predict`'s instances).
 *
 * @example
 * ```ts ignore
 * try { body = await readJsonBody(...); } catch (err) { throw withJsonHint(err, "; send {\"code\": ...}"); }
 * ```
 */
export function withJsonHint(err: unknown, hint: string): unknown {
  if (
    err instanceof HTTPException && err.status === 400 &&
    err.message.startsWith("Cannot parse request body as JSON")
  ) {
    return httpError(
      400,
      "InvalidJson",
      err.message.split(NOT_JSON_NOTE)[0]! + hint,
    );
  }
  return err;
}

function notJsonNote(text: string, request: Request): string {
  if (JSON_START.test(text) || BLANK.test(text)) return "";
  const type = request.headers.get("content-type")?.split(";")[0]?.trim();
  const given = type && !/json/i.test(type)
    ? `, not ${type.length <= 64 ? type : `${type.slice(0, 64)}...`}`
    : "";
  return `${NOT_JSON_NOTE}${given}: send text as a JSON string, or in an object such as {"text": "..."}; a model's execute and stream routes pass a body of another Content-Type (application/octet-stream, image/png...) to the model as bytes)`;
}

/**
 * 400 for a body nested deeper than the gateway takes: Python's `json`
 * refuses about 1000 levels (3.9–3.11), and the host's walks of a message
 * recurse.
 */
function tooDeep(depth: number, limit: number): Error {
  return httpError(
    400,
    "InvalidRequestError",
    `Cannot read request: the body is nested ${depth} levels deep, over the limit of ${limit} (the gateway's limits.maxJsonDepth, serve --max-json-depth)`,
    { depth, limit },
  );
}

/**
 * 400 for a body the runtime could not read to its end: the client closed
 * the connection (or its sending half) before the declared length or the
 * last chunk. Not a server fault: without this it would be a 500
 * `InternalError`. (A malformed chunk never gets here: Deno closes the
 * connection without an answer.)
 */
function incompleteBody(): Error {
  return httpError(
    400,
    "IncompleteBody",
    "Cannot read request: the body ended before it was complete",
    {},
    { connection: "close" },
  );
}

/**
 * 400 for a body that is not JSON (a compressed one was decoded before:
 * `readDecodedBody`).
 */
function invalidJson(err: Error, request: Request, text: string): Error {
  if (err instanceof InvalidRequestError) {
    return "digits" in (err.details as object)
      ? integerTooLong(err)
      : tooDeepForExact(err);
  }
  // The mark is invisible in the parser's message: say what it is.
  const message = err.message.includes("\uFEFF")
    ? "the body starts with a UTF-8 byte order mark (send the JSON without it)"
    : text.startsWith(GZIP_MAGIC)
    ? `${err.message} (the body looks gzip-compressed: send it with Content-Encoding: gzip)`
    : err.message + notJsonNote(text, request);
  return httpError(
    400,
    "InvalidJson",
    `Cannot parse request body as JSON: ${message}`,
  );
}

/**
 * 400 for a body holding an integer of more digits than the gateway takes:
 * Python refuses the same past its own limit (4300 by default), but only
 * after the gateway paid, on its one thread, for a `BigInt` whose making and
 * writing grow with the square of its length.
 */
function integerTooLong(err: InvalidRequestError): Error {
  const { digits, limit } = err.details as { digits: number; limit: number };
  return httpError(
    400,
    "InvalidRequestError",
    `Cannot read request: an integer of ${digits} digits is over the limit of ${limit} (the gateway's limits.maxIntegerDigits, serve --max-integer-digits)`,
    { digits, limit },
  );
}

/**
 * 400 for a body that may hold an integer beyond ±2^53 nested deeper than
 * the gateway reads such integers exactly (only with `limits.maxJsonDepth`
 * raised past that): the exact parse's walk recurses.
 */
function tooDeepForExact(err: InvalidRequestError): Error {
  const { depth, limit } = err.details as { depth: number; limit: number };
  return httpError(
    400,
    "InvalidRequestError",
    `Cannot read request: the body is nested ${depth} levels deep and may hold an integer beyond ±2^53, which the gateway reads exactly only within ${limit} levels (send it as a string, or nest it less)`,
    { depth, limit },
  );
}

/**
 * Reads a body, counting the bytes as they come (`expected`: its declared
 * length, when it has one).
 */
async function readStream(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  limit: number,
  expected = 0,
): Promise<Uint8Array> {
  // Copied as they come, not kept: a chunk of Deno's holds a 64 KiB buffer.
  const bytes = new ByteCollector(limit, expected);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (bytes.size + value.byteLength > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge(limit);
    }
    bytes.push(value);
  }
  return bytes.bytes();
}

/** Options of {@linkcode BodyReadGuard}. */
export interface BodyReadGuardOptions {
  /** Milliseconds a request may take to send its body (408 after). */
  timeoutMs: number;
  /**
   * Aborted when the server drains: the reads still going fail at once
   * with 503 `ShuttingDownError`, and so do later ones. With a signal, the
   * guard's timer is left armed when no read is pending (it then fires once
   * and stops), and the abort clears it; without one, it is cleared
   * whenever the last pending read settles.
   */
  signal?: AbortSignal;
}

/** A body read in progress (owned by its guard). */
class PendingRead {
  /** Its index in the guard's ring while there. */
  slot = -1;
  /** Settled: by its read, or failed by the guard. */
  done = false;
  constructor(
    readonly deadline: number,
    readonly reject: (err: unknown) => void,
    readonly cancel: (() => void) | undefined,
  ) {}
}

/**
 * Bounds the time requests take to send their bodies: a client that sends
 * headers and then too little of its body (slowloris) would otherwise hold
 * its request, and its in-flight slot, for as long as it keeps the
 * connection. A read past `timeoutMs` fails with 408 `RequestTimeout`, and
 * every read still going when the server drains fails with 503
 * `ShuttingDownError` (its request could not be served anyway: the pool
 * takes no new calls). Either way the body stream is cancelled when the
 * caller gave a way to (`cancel`), and the response says
 * `Connection: close`.
 *
 * No timer per request: the reads wait in a ring in start order (all have
 * the same timeout, so the first is the first to expire) and one timer, set
 * for the oldest read, runs while reads are pending (as `DisconnectWatch`).
 * Most bodies arrive with their headers, so the ring empties after nearly
 * every burst of requests: a guard with a `signal` leaves its timer armed
 * then, instead of clearing it and setting a new one for the next burst
 * (~3.5 µs of Deno's CPU per pair).
 *
 * @example
 * ```ts
 * import { BodyReadGuard, readJsonBody } from "./read_json_body.ts";
 * const guard = new BodyReadGuard({ timeoutMs: 10_000 });
 * const req = new Request("http://localhost/", { method: "POST", body: '{"x":1}' });
 * console.log(await readJsonBody(req, 1024, guard)); // { x: 1 }
 * ```
 */
export class BodyReadGuard {
  #timeoutMs: number;
  /** Reads in start order (a settled read leaves at once). */
  #ring = new StartOrderRing<PendingRead>(64);
  /** Reads not settled yet. */
  #live = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  /** The timer stays armed when the ring empties (the signal's abort clears it). */
  #lazyTimer: boolean;
  #sweep = (): void => this.#onTimer();

  /** Creates an idle guard (no timer until a read is watched). */
  constructor(options: BodyReadGuardOptions) {
    this.#timeoutMs = options.timeoutMs;
    const signal = options.signal;
    this.#lazyTimer = signal !== undefined;
    if (signal?.aborted) this.#closed = true;
    else signal?.addEventListener("abort", () => this.#close(), { once: true });
  }

  /** Reads in progress. */
  get size(): number {
    return this.#live;
  }

  /**
   * Settles as `read` does, unless the read takes longer than the timeout
   * or the server drains first: then calls `cancel` and rejects with the
   * 408 or 503 error (what `read` does later is ignored).
   */
  watch<T>(read: Promise<T>, cancel?: () => void): Promise<T> {
    if (this.#closed) {
      read.catch(() => {});
      cancel?.();
      return Promise.reject(shuttingDown());
    }
    return new Promise<T>((resolve, reject) => {
      const entry = new PendingRead(
        performance.now() + this.#timeoutMs,
        reject,
        cancel,
      );
      this.#add(entry);
      read.then((value) => {
        if (this.#end(entry)) resolve(value);
      }, (err: unknown) => {
        if (this.#end(entry)) reject(err);
      });
    });
  }

  #add(entry: PendingRead): void {
    this.#ring.push(entry);
    this.#live++;
    // Armed only while reads are pending; then it is set for the oldest one.
    this.#timer ??= setTimeout(this.#sweep, this.#timeoutMs);
  }

  /** Takes a read out (it settled, or is failed now); `false` if it was already out. */
  #end(entry: PendingRead): boolean {
    if (entry.done) return false;
    entry.done = true;
    this.#ring.remove(entry);
    if (--this.#live === 0) this.#reset(this.#lazyTimer);
    return true;
  }

  #fail(entry: PendingRead, err: Error): void {
    if (!this.#end(entry)) return;
    entry.cancel?.();
    entry.reject(err);
  }

  /** Nothing pending (every slot is cleared then): start over; stop the timer unless `keepTimer`. */
  #reset(keepTimer = false): void {
    this.#ring.clear();
    if (!keepTimer && this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  #onTimer(): void {
    this.#timer = undefined;
    const now = performance.now();
    const expired: PendingRead[] = [];
    // The first read with time left: every later one has more.
    const next = this.#ring.takeOld(
      (entry) => entry.deadline <= now,
      (entry) => expired.push(entry),
    );
    if (next !== undefined) {
      this.#timer = setTimeout(this.#sweep, Math.max(1, next.deadline - now));
    }
    for (const entry of expired) {
      this.#fail(
        entry,
        httpError(
          408,
          "RequestTimeout",
          `Cannot read request: the body did not arrive within ${this.#timeoutMs} ms`,
          { timeout: this.#timeoutMs },
          { connection: "close" },
        ),
      );
    }
  }

  /** The server drains: every read still going fails, and so does every later one. */
  #close(): void {
    this.#closed = true;
    const pending = this.#ring.entries();
    for (const entry of pending) this.#fail(entry, shuttingDown());
    this.#reset();
  }
}

/** The drain's answer to a request still sending its body (as the app's own 503 while draining). */
function shuttingDown(): Error {
  return httpError(
    503,
    "ShuttingDownError",
    "Cannot serve request: the server is shutting down",
    {},
    { "retry-after": "5", connection: "close" },
  );
}
