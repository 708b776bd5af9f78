/**
 * Exposes a `node:net` socket as the Web Streams {@linkcode Connection} the
 * core expects. Used by the Bun adapter; works on any runtime with `node:net`.
 *
 * @module
 */
import { createConnection, type Socket } from "node:net";
import type { Buffer } from "node:buffer";
import type { Connection, ConnectTarget } from "./types.ts";

/** How many unread bytes the readable buffers before it pauses the socket. */
const READ_HIGH_WATER_MARK = 256 * 1024;

/**
 * Connects with `node:net` (TCP with no-delay, or a Unix socket path) and
 * resolves once the connection is established.
 *
 * @example Connect and wrap
 * ```ts ignore
 * import { connectNodeSocket } from "@pyproxy/pyproxy";
 * const conn = await connectNodeSocket({ hostname: "127.0.0.1", port: 8080 });
 * conn.close();
 * ```
 */
export function connectNodeSocket(target: ConnectTarget): Promise<Connection> {
  return new Promise((resolve, reject) => {
    const socket = target.path !== undefined
      ? createConnection({ path: target.path })
      : createConnection({
        host: target.hostname ?? "127.0.0.1",
        port: target.port,
        noDelay: true,
      });
    const signal = target.path === undefined ? target.signal : undefined;
    const onError = (err: Error): void => {
      signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      reject(err);
    };
    const onAbort = (): void =>
      onError(new DOMException("The connect was given up", "AbortError"));
    socket.once("error", onError);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("connect", () => {
      signal?.removeEventListener("abort", onAbort);
      // Streams attach their own error listeners before this one goes, so an
      // error is never unhandled (which would crash the process).
      const conn = nodeSocketToConnection(socket);
      socket.off("error", onError);
      if (target.path === undefined) socket.setNoDelay(true);
      resolve(conn);
    });
  });
}

/**
 * Wraps a connected `node:net` socket as a {@linkcode Connection}: the readable
 * ends when the peer closes, socket errors surface as stream errors, and both
 * directions honour backpressure (`pause`/`resume`, `drain`).
 *
 * @example Wrap an accepted socket
 * ```ts ignore
 * import { createServer } from "node:net";
 * import { nodeSocketToConnection } from "@pyproxy/pyproxy";
 * createServer((socket) => {
 *   const conn = nodeSocketToConnection(socket);
 *   conn.readable.pipeTo(conn.writable);
 * }).listen(0);
 * ```
 */
export function nodeSocketToConnection(socket: Socket): Connection {
  let closed = false;
  return {
    readable: readableFromSocket(socket),
    writable: writableToSocket(socket),
    close() {
      if (closed) return;
      closed = true;
      socket.destroy();
    },
  };
}

function readableFromSocket(socket: Socket): ReadableStream<Uint8Array> {
  let done = false;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        if (err) controller.error(err);
        else controller.close();
      };
      socket.on("data", (chunk: Buffer) => {
        if (done) return;
        // A plain view (no copy): Buffer's `slice` shares memory, which would
        // surprise code written for Uint8Array.
        controller.enqueue(
          new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength),
        );
        if ((controller.desiredSize ?? 0) <= 0) socket.pause();
      });
      socket.once("end", () => finish());
      socket.once("error", (err: Error) => finish(err));
      // A local destroy (Connection.close) emits neither `end` nor `error`.
      socket.once("close", () => finish());
    },
    pull() {
      if (!done && socket.isPaused()) socket.resume();
    },
    cancel() {
      done = true;
      socket.destroy();
    },
  }, new ByteLengthQueuingStrategy({ highWaterMark: READ_HIGH_WATER_MARK }));
}

function writableToSocket(socket: Socket): WritableStream<Uint8Array> {
  let failure: Error | undefined;
  // Settles the write that waits for `drain`, if any.
  let waiter: { resolve: () => void; reject: (err: Error) => void } | undefined;
  const fail = (err: Error): void => {
    failure ??= err;
    waiter?.reject(failure);
    waiter = undefined;
  };
  return new WritableStream<Uint8Array>({
    start(controller) {
      socket.on("drain", () => {
        waiter?.resolve();
        waiter = undefined;
      });
      socket.once("error", (err: Error) => {
        fail(err);
        controller.error(err);
      });
      socket.once("close", () => {
        const err = new Error("Cannot write: connection closed");
        fail(err);
        controller.error(err);
      });
    },
    write(chunk) {
      if (failure) throw failure;
      if (socket.destroyed) throw new Error("Cannot write: connection closed");
      // Like Node's own Writable.toWeb: resolve at once unless the socket
      // buffer is full, so many small writes do not each wait a callback.
      if (socket.write(chunk)) return;
      return new Promise<void>((resolve, reject) => {
        waiter = { resolve, reject };
      });
    },
    close() {
      if (failure) throw failure;
      return new Promise<void>((resolve) => {
        // Half-close: the peer sees end of file, we can still read. `close`
        // covers a socket destroyed before the end was flushed.
        socket.once("close", () => resolve());
        socket.end(() => resolve());
      });
    },
    abort() {
      socket.destroy();
    },
  });
}
