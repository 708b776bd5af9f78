/**
 * Test helper: the test runner's own `node:http2` clients (grpc-js's, the
 * h2c client) destroy their sessions from a timer, as the gateway's gRPC
 * transport does (src/gateway/grpc_server.ts `destroyLater`): Deno 2.9's
 * `node:http2` frees the nghttp2 session in a `destroy()` called from the
 * listener of a peer's GOAWAY (a gateway's shutdown sends one), inside
 * nghttp2's read of that frame, and the whole test process then aborts or
 * segfaults (denoland/deno#36788, docs/runtimes.md).
 *
 * @module
 */
import http2 from "node:http2";
import { setImmediate } from "node:timers";

/**
 * Makes `session.destroy()` run from a later turn of the event loop (an
 * immediate: a timer still pending when a test ends, right after closing
 * its client, fails it under Deno's op sanitizer); returns `session`.
 */
export function destroyLater<T extends http2.Http2Session>(session: T): T {
  const destroy = session.destroy.bind(session);
  session.destroy = ((...args: Parameters<typeof destroy>) => {
    setImmediate(() => destroy(...args));
    return session;
  }) as typeof session.destroy;
  return session;
}

/**
 * Wraps `http2.connect` (once per process) so that every client session,
 * grpc-js's included (it calls `require("http2").connect`, the same
 * object), destroys from a timer.
 */
export function destroyClientsLater(): void {
  const mod = http2 as unknown as {
    connect: typeof http2.connect;
    [WRAPPED]?: true;
  };
  if (mod[WRAPPED]) return;
  const connect = mod.connect;
  mod.connect =
    ((...args: Parameters<typeof http2.connect>) =>
      destroyLater(connect(...args))) as typeof http2.connect;
  mod[WRAPPED] = true;
}

const WRAPPED: unique symbol = Symbol("pyproxy.destroyClientsLater");
