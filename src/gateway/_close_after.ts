/**
 * `Connection: close` on the answers of a draining gateway.
 *
 * @module
 */

/**
 * Asks the client to open no further request on `res`'s connection: an
 * answer written while the gateway drains. Over HTTP/1.1 keep-alive a
 * client sends its next request as soon as it has read an answer, and the
 * shutdown's close of the connection then reset that request after it was
 * sent (a client cannot tell whether a reset POST ran); told to close, it
 * opens a new connection (refused once the port is closed: safe to retry
 * elsewhere). Not on a WebSocket upgrade's 101, and not where the
 * response's headers cannot change (a fetched response's).
 *
 * @example
 * ```ts
 * import { closeAfter } from "./_close_after.ts";
 * const res = Response.json({ ok: true });
 * closeAfter(res);
 * console.log(res.headers.get("connection")); // "close"
 * ```
 */
export function closeAfter(res: Response): void {
  if (res.status === 101) return;
  try {
    res.headers.set("connection", "close");
  } catch {
    // Immutable headers: the connection is closed at the shutdown.
  }
}
