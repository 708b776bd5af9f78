/**
 * Whether a `node:net` server (the gRPC port's) still accepts connections.
 *
 * Deno's `node:net` listener stops accepting for good, silently, once an
 * accept failed at `EMFILE`: no `error` event, `listening` still true, the
 * connections left in the kernel's backlog. Listening again (closing the
 * listening socket) sends every idle HTTP/2 connection a GOAWAY, so it is
 * done only when the listener is found dead: a connection of its own to
 * the port, which the server accepts (its `connection` event; or, past
 * `maxConnections`, closes at once: accepted too) or does not.
 *
 * @module
 */
import * as net from "node:net";
import { connectHost } from "../_connect_host.ts";

/**
 * Resolves `true` when `server` accepts a connection to `hostname:port`
 * within `timeoutMs` (or the probe cannot tell: its own connect failed
 * other than refused, as when the process is out of fds), `false` when it
 * does not (refused, or left unaccepted).
 *
 * @example
 * ```ts ignore
 * if (!await listenerAccepts(server, "127.0.0.1", 8001, 1000)) relisten();
 * ```
 */
export function listenerAccepts(
  server: net.Server,
  hostname: string,
  port: number,
  timeoutMs: number,
): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(false), timeoutMs);
    let settled = false;
    const done = (accepts: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      server.off("connection", onConnection);
      socket?.destroy();
      resolve(accepts);
    };
    // Any connection accepted meanwhile proves it, the probe's or a client's.
    const onConnection = () => done(true);
    server.on("connection", onConnection);
    let socket: net.Socket;
    try {
      socket = net.connect({ port, host: connectHost(hostname) });
    } catch {
      // Cannot tell (no fd for the probe itself).
      done(true);
      return;
    }
    socket.on(
      "error",
      (err: Error & { code?: string }) => done(err.code !== "ECONNREFUSED"),
    );
    // Closed by the server without a `connection` event: accepted and
    // closed at once (`maxConnections` reached).
    socket.on("close", () => done(true));
  });
}
