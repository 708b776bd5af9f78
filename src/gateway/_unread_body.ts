/**
 * Reading and dropping the body of a request answered before its body was
 * read (a refusal: 401, 403, 404, 405, 413, 415, 503...).
 *
 * @module
 */
import { closeAfter } from "./_close_after.ts";

/** Options of {@linkcode discardUnreadBody}. */
export interface DiscardUnreadBodyOptions {
  /**
   * Bytes read at most; a body declared (`Content-Length`) or found larger
   * is left unread (its stream is reset, as without this).
   * @default {65536}
   */
  maxBytes?: number;
  /**
   * Milliseconds waited at most for the rest of the body (a slow client's
   * answer is not held back for long).
   * @default {1000}
   */
  maxMs?: number;
}

/**
 * HTTP/2's initial stream window: what a client may have sent before it
 * waits for the server, so what it has most likely already sent.
 */
const MAX_BYTES = 65536;
const MAX_MS = 1000;

/**
 * Reads and drops what is left of `request`'s body, up to a bound, so that
 * an early answer reaches its client cleanly. Deno answers an HTTP/2 request
 * whose body it has not read with its response, then `RST_STREAM`
 * `NO_ERROR` (as RFC 9113 §8.1 lets it); curl (7.88) is still sending the
 * body then and fails with error 92 (or, sending `Expect: 100-continue`, 52)
 * instead of showing the answer. nginx does the same: it discards a
 * bounded amount of body before answering early. Nothing to do for a body
 * already read (or being read), an empty one, or a larger one than
 * `maxBytes` (its early answer stays early; the client may see the reset).
 * Never throws. Only for error answers: a success has read its body.
 *
 * @example
 * ```ts
 * import { discardUnreadBody } from "./_unread_body.ts";
 * const request = new Request("http://localhost/v1/nope", {
 *   method: "POST",
 *   body: '{"a": 1}',
 * });
 * await discardUnreadBody(request);
 * console.log(request.bodyUsed); // true
 * ```
 */
export async function discardUnreadBody(
  request: Request,
  options: DiscardUnreadBodyOptions = {},
): Promise<void> {
  const body = request.body;
  if (body === null || request.bodyUsed || body.locked) return;
  const maxBytes = options.maxBytes ?? MAX_BYTES;
  const declared = request.headers.get("content-length");
  if (declared !== null && !(Number(declared) <= maxBytes)) return;
  const reader = body.getReader();
  const timer = setTimeout(
    () => reader.cancel().catch(() => {}),
    options.maxMs ?? MAX_MS,
  );
  try {
    let read = 0;
    while (true) {
      const { done, value } = await reader.read();
      if (done) return;
      read += value.byteLength;
      if (read > maxBytes) {
        await reader.cancel();
        return;
      }
    }
  } catch {
    // The client reset its stream or went away: nothing left to read.
  } finally {
    clearTimeout(timer);
  }
}

/**
 * How long, at most, the body of a request refused before it was let in (no
 * valid token, a Host or Origin not allowed) is read after its answer: what
 * its client sent with its headers (curl over HTTP/2 sends a small body at
 * once), never a slow body.
 */
export const UNAUTHENTICATED_BODY_MS = 100;

/**
 * The unread body of a request refused before it was let in (`res`: its 401
 * for want of a valid token, or the 403 of a Host or Origin not allowed,
 * made before the body was read): the answer goes at once, never
 * after the body, which is read and dropped behind it for at most
 * {@linkcode UNAUTHENTICATED_BODY_MS} (and 64 KiB); and `res` says
 * `Connection: close`, as an HTTP/1.1 server that leaves a body unread
 * must (Bun then closes the connection; Deno keeps it until the client
 * does, its reader of a body not cancellable). Before, these waited for
 * the body as other refusals do, up to a second: a client not let in made
 * the gateway hold its slow body that long, and got its answer late
 * (streams28). Nothing for a request without a body.
 *
 * @example
 * ```ts
 * import { dropUnauthenticatedBody } from "./_unread_body.ts";
 * const request = new Request("http://localhost/v1/status", {
 *   method: "POST",
 *   body: '{"a": 1}',
 * });
 * const res = Response.json({ error: {} }, { status: 401 });
 * dropUnauthenticatedBody(request, res);
 * console.log(res.headers.get("connection")); // "close"
 * ```
 */
export function dropUnauthenticatedBody(request: Request, res: Response): void {
  dropUnreadBody(request, res);
}

/**
 * The unread body of a request answered at once by `res` (a refusal made
 * before the body was read that no body could change: a client not let in,
 * a model there is not): read and dropped behind the answer for at most
 * {@linkcode UNAUTHENTICATED_BODY_MS} (and 64 KiB), and `res` says
 * `Connection: close` (see {@linkcode dropUnauthenticatedBody}). Nothing
 * for a request without a body, an empty one, or one already read.
 *
 * @example
 * ```ts
 * import { dropUnreadBody } from "./_unread_body.ts";
 * const request = new Request("http://localhost/v1/models/nope/execute", {
 *   method: "POST",
 *   body: '{"a": 1}',
 * });
 * const res = Response.json({ error: {} }, { status: 404 });
 * dropUnreadBody(request, res);
 * console.log(res.headers.get("connection")); // "close"
 * ```
 */
export function dropUnreadBody(request: Request, res: Response): void {
  const body = request.body;
  if (body === null || request.bodyUsed || body.locked) return;
  if (request.headers.get("content-length") === "0") return;
  closeAfter(res);
  void discardUnreadBody(request, { maxMs: UNAUTHENTICATED_BODY_MS });
}
