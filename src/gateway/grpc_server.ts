/**
 * The Open Inference Protocol's gRPC transport (KServe V2
 * `inference.GRPCInferenceService`, Triton's port 8001): plain-text HTTP/2
 * (h2c, what gRPC clients use for an insecure channel) on its own port,
 * with gRPC's framing written here (`node:http2`, in Deno and Bun alike;
 * no gRPC library).
 *
 * Each call becomes the `/v2` REST request that means the same and goes
 * through the gateway's `fetch`: one path for both transports, so the
 * token, the body limit, request ids, metrics (a call counts as its REST
 * route), the drain and cancel-on-disconnect are the REST routes' own.
 * Health checks (`grpc.health.v1.Health/Check`, `Watch`) are `/healthz`'s.
 * docs/gateway.md, "gRPC".
 *
 * @module
 */
import * as http2 from "node:http2";
import { setImmediate } from "node:timers";
import type { ServeRequestInfo } from "../runtime/types.ts";
import {
  type Answer,
  answerOfError,
  discard,
  readMessage,
  respondHttp,
  send,
} from "./_grpc_framing.ts";
import { GrpcStatus, grpcTimeoutMs } from "./_grpc_status.ts";
import { restCall } from "./_grpc_rest.ts";
import {
  INFERENCE_SERVICE,
  inferenceCall,
  UNARY_METHODS,
} from "./_grpc_inference_calls.ts";
import {
  decodeHealthCheckRequest,
  HEALTH_SERVICE,
  healthCheck,
} from "./_grpc_health.ts";
import { HealthWatchers } from "./_grpc_health_watch.ts";
import { streamInfer } from "./_grpc_stream_infer.ts";
import { listenerAccepts } from "./_listener_accepts.ts";
import { trackUnread, Unread, unreadOf, UnreadTotal } from "./_grpc_unread.ts";
import { setTimeoutOrNever } from "../_timer.ts";

export { GrpcStatus, grpcStatusOf } from "./_grpc_status.ts";

/**
 * Makes `session.destroy()` wait for a later turn, and returns the destroy that
 * runs at once (for callers that run from a timer already).
 *
 * Deno's `node:http2` (2.9) frees the nghttp2 session in `destroy()` even
 * when it is called from inside `nghttp2_session_mem_recv`, i.e. from a
 * listener of the connection's frames. Its `node:http2` calls `close()`,
 * hence `destroy()` on a connection with no stream open, from the listener
 * of a client's GOAWAY (Node's order), and a stream closing by a frame calls
 * it on a closed connection (so do promise continuations, which run before
 * that callback returns): nghttp2 then goes on reading that frame in freed
 * memory (its `session_close_stream_on_goaway` after a GOAWAY), and the
 * process aborts (`find_stream_on_goaway_func: Assertion
 * 'stream->closed_next == NULL'`) or segfaults, denoland/deno#36788. From a
 * later turn of the event loop (an immediate) the destroy runs once nghttp2
 * returned. Bun's `node:http2` has no such free; the wait costs it nothing,
 * and no runtime check is needed
 * outside src/runtime/.
 */
function destroyLater(session: http2.Http2Session): () => void {
  const destroy = session.destroy.bind(session);
  let open = 0;
  session.on("stream", (stream: http2.ServerHttp2Stream) => {
    open++;
    stream.once("close", () => open--);
  });
  session.destroy = ((...args: Parameters<typeof destroy>) => {
    // An immediate: a later turn of the event loop, as a 0 ms timer was,
    // and no timer left pending by a connection its client just closed
    // (Deno's op sanitizer failed the tests ending then).
    setImmediate(() => {
      // The destroy of a close (no error: its last stream ended) finds a
      // stream the client opened meanwhile, which a destroy then would cut
      // (a call already running, not one a client may retry): the
      // connection stays until that stream ends, whose close calls this
      // again, as Node's does.
      if (args[0] === undefined && open > 0 && session.closed) return;
      destroy(...args);
    });
  }) as typeof session.destroy;
  return destroy;
}

/**
 * How long a closing server waits at least for its connections to write
 * what their streams have sent, once the grace is over.
 */
const FLUSH_MS = 100;

/**
 * Closes each session (a GOAWAY; Node's destroy once its streams have
 * closed), and waits until all are closed or `ms` have passed.
 */
async function flushed(
  sessions: http2.Http2Session[],
  ms: number,
): Promise<void> {
  const open = sessions.filter((s) => !s.destroyed);
  if (open.length === 0) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    Promise.all(open.map((session) =>
      new Promise<void>((resolve) => {
        session.once("close", () => resolve());
        try {
          if (!session.closed) session.close();
        } catch {
          // Destroyed meanwhile: its close event comes.
        }
      })
    )),
    // Beyond a timer's range (a grace of ~24.8 days and more: until the
    // streams end), never: a setTimeout would fire at once.
    new Promise<void>((resolve) => (timer = setTimeoutOrNever(resolve, ms))),
  ]);
  clearTimeout(timer);
}

/**
 * Options of {@linkcode serveGrpc}.
 *
 * @example
 * ```ts ignore
 * const options: GrpcServeOptions = { hostname: "127.0.0.1", port: 8001, fetch: app.fetch, httpPort: () => 8000, bodyLimit: 1 << 20 };
 * ```
 */
export interface GrpcServeOptions {
  /** Address to bind. */
  hostname: string;
  /** Port to bind (`0`: a free one). */
  port: number;
  /** The gateway's handler (its `app.fetch`). */
  fetch: (
    request: Request,
    info: ServeRequestInfo,
  ) => Response | Promise<Response>;
  /** The gateway's HTTP port (the `Host` of the REST requests made). */
  httpPort: () => number;
  /** The largest request message in bytes (the gateway's body limit). */
  bodyLimit: number;
  /**
   * The PEM certificate and key to serve HTTP/2 over TLS with (the
   * gateway's `tls`); absent: plain-text HTTP/2 (h2c).
   */
  tls?: { cert: string; key: string };
  /**
   * `ModelStreamInfer`: infers in flight at most per stream (the others
   * wait unread, holding the client by HTTP/2 flow control).
   * @default {16}
   */
  streamWindow?: number;
  /**
   * The gateway's drain: its start tells the health watches (NOT_SERVING)
   * at once, not at their next check.
   */
  drain?: AbortSignal;
  /**
   * `grpc.health.v1.Health/Watch` calls open at once, at most (the next is
   * RESOURCE_EXHAUSTED, unless the peer address holding the most watches
   * holds more than one more than its own: then that address's oldest watch
   * ends, RESOURCE_EXHAUSTED, for it).
   * @default {1000}
   */
  maxHealthWatches?: number;
  /**
   * `grpc.health.v1.Health/Watch` calls open at once on one connection, at
   * most (the next is RESOURCE_EXHAUSTED): a client cannot hold every
   * watch of the server on one connection.
   * @default {8}
   */
  maxHealthWatchesPerConnection?: number;
  /**
   * Milliseconds between two reads of `/healthz` while a
   * `grpc.health.v1.Health/Watch` is open (a change is sent at the next
   * one; the drain's start at once).
   * @default {1000}
   */
  healthWatchIntervalMs?: number;
  /**
   * Bytes of answers one connection holds that its client has not read
   * (HTTP/2 flow control stalls their writes), at most. At that many, the
   * connection's new inference calls are RESOURCE_EXHAUSTED, its
   * `ModelStreamInfer` streams start no more infers (their requests wait
   * unread) until its client reads, and an answer that comes meanwhile (an
   * infer already in flight) resets its call's stream with
   * ENHANCE_YOUR_CALM (RESOURCE_EXHAUSTED to gRPC clients), its other
   * infers cancelled: a connection holds this plus one answer, at most.
   * @default {67108864}
   */
  maxUnreadBytes?: number;
  /**
   * Bytes of answers all connections hold that their clients have not
   * read, at most (plus one answer): at that many, every connection is as
   * one at `maxUnreadBytes` (many connections that do not read cannot
   * take the process's memory, `maxUnreadBytes` or one answer each); from
   * half of it, the connections of a peer address holding at least its
   * share of that half (divided among the addresses holding some) are, so
   * that a client elsewhere that reads is still served.
   * @default {536870912}
   */
  maxUnreadBytesTotal?: number;
  /**
   * Concurrent calls per connection (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`);
   * a connection carries any number of calls one after the other.
   * @default {100}
   */
  maxConcurrentStreams?: number;
  /**
   * Open connections at most (`net.Server`'s `maxConnections`, in Deno and
   * Bun alike): the next is closed as it is accepted, before its TLS
   * handshake, until one of them closes; `0`: no bound. Connections that
   * never make a call (each held `handshakeTimeout`, then `idleTimeout`
   * when it speaks HTTP/2, 5 min) otherwise take as many fds as they like,
   * the HTTP port's and the workers' too (docs/security.md, "Connections that never speak").
   * @default {1024}
   */
  maxConnections?: number;
  /**
   * Closes a connection that has had no call open for this many ms (a
   * GOAWAY: gRPC clients reconnect when they call again), and ends a unary
   * call or health watch whose request sends nothing for as long
   * (DEADLINE_EXCEEDED); `0`: never.
   * @default {300000}
   */
  idleTimeout?: number;
  /**
   * Sends each connection an HTTP/2 PING this many ms after the last was
   * answered, and closes one that does not answer within
   * `keepaliveTimeout`: a client gone without closing its connection (a
   * crash, a network cut, a NAT that forgot it) otherwise held its calls
   * for ever, a health watch's slot among them (nothing is written to a
   * watch while the status holds, so TCP never noticed); `0`: never.
   * @default {60000}
   */
  keepaliveInterval?: number;
  /**
   * See `keepaliveInterval`. Also how long a connection closed as idle (a
   * GOAWAY) may keep streams whose calls are over but whose answers its
   * client does not read: then it is closed outright.
   * @default {20000}
   */
  keepaliveTimeout?: number;
  /**
   * With `tls`: closes a connection whose TLS handshake has not completed
   * within this many ms (a client that connects and stalls holds a socket
   * otherwise; Node's default is 120 s). With or without `tls`, a
   * connection whose client has not sent HTTP/2's preface and settings
   * within this many ms of its start (of its handshake's end with `tls`)
   * is closed too: `idleTimeout`, minutes, was its only bound.
   * @default {10000}
   */
  handshakeTimeout?: number;
}

/**
 * A running gRPC server.
 *
 * @example
 * ```ts ignore
 * const grpc = await serveGrpc(options);
 * console.log(grpc.port);
 * await grpc.close();
 * ```
 */
export interface GrpcServer {
  /** The bound port. */
  readonly port: number;
  /** The bound address. */
  readonly hostname: string;
  /** Calls in flight. */
  readonly inFlight: number;
  /**
   * Bytes of answers written and not yet sent, all connections'
   * (`maxUnreadBytesTotal`'s count).
   */
  readonly unreadBytes: number;
  /**
   * Stops listening, lets the calls in flight answer for up to `graceMs`
   * (a `ModelStreamInfer` stream ends with UNAVAILABLE once its infers in
   * flight have answered, at once when it has none), then closes every
   * connection (a GOAWAY: what its streams wrote is sent first, for what
   * is left of the grace, at least 100 ms; then it is destroyed).
   */
  close(graceMs?: number): Promise<void>;
  /**
   * Serves a new certificate and key to the connections that begin next
   * (those open keep theirs); nothing without TLS.
   */
  setTls(tls: { cert: string; key: string }): void;
  /**
   * Closes the listening socket and listens on the same port again: on
   * Deno, `node:net`'s listener stops accepting for good, silently, once an
   * accept failed at `EMFILE` (the fd table full). The connections open
   * stay, the idle ones closed with a GOAWAY (`server.close()`'s: their
   * clients reconnect); nothing once the server is closing.
   */
  listenAgain(): Promise<void>;
  /**
   * Whether the listener still accepts connections (a connection of its
   * own, waited for up to `timeoutMs`): {@linkcode GrpcServer.listenAgain}
   * only when it does not. `true` once the server is closing.
   */
  accepting(timeoutMs?: number): Promise<boolean>;
}

/**
 * Starts the gRPC transport on `options.hostname:port`.
 *
 * @example
 * ```ts ignore
 * const grpc = await serveGrpc({ hostname: "127.0.0.1", port: 0, fetch: app.fetch, httpPort: () => 8000, bodyLimit: 1 << 20 });
 * ```
 */
export async function serveGrpc(
  options: GrpcServeOptions,
): Promise<GrpcServer> {
  /** Each open connection, and its streams. */
  const sessions = new Map<
    http2.Http2Session,
    {
      active: number;
      idle: ReturnType<typeof setTimeout> | undefined;
      ping: ReturnType<typeof setTimeout> | undefined;
      linger?: ReturnType<typeof setTimeout> | undefined;
    }
  >();
  /** Each connection's destroy at once ({@linkcode destroyLater}). */
  const destroyNow = new WeakMap<http2.Http2Session, () => void>();
  /** Destroys `session` at once: from a timer only (never nghttp2's callbacks). */
  const destroyAtOnce = (session: http2.Http2Session) =>
    (destroyNow.get(session) ?? (() => session.destroy()))();
  const keepaliveInterval = options.keepaliveInterval ?? 60_000;
  const keepaliveTimeout = options.keepaliveTimeout ?? 20_000;
  /** Pings `session` after keepaliveInterval; no answer in time closes it. */
  const keepalive = (
    session: http2.Http2Session,
    state: { ping: ReturnType<typeof setTimeout> | undefined },
  ) => {
    if (keepaliveInterval <= 0) return;
    state.ping = setTimeout(() => {
      if (session.closed || session.destroyed) return;
      state.ping = setTimeout(() => destroyAtOnce(session), keepaliveTimeout);
      try {
        session.ping((err) => {
          clearTimeout(state.ping);
          state.ping = undefined;
          if (err === null || err === undefined) keepalive(session, state);
        });
      } catch {
        // Closing already: its close clears the timer.
      }
    }, keepaliveInterval);
  };
  const idleTimeout = options.idleTimeout ?? 300_000;
  const handshakeTimeout = options.handshakeTimeout ?? 10_000;
  /** Closes `session` once it has stayed without a call for idleTimeout. */
  const watchIdle = (
    session: http2.Http2Session,
    state: { idle: ReturnType<typeof setTimeout> | undefined },
  ) => {
    if (idleTimeout > 0) {
      state.idle = setTimeout(() => closeIdle(session), idleTimeout);
    }
  };
  const concurrent = options.maxConcurrentStreams ?? 100;
  const maxUnread = options.maxUnreadBytes ?? 64 * 1024 * 1024;
  const unreadTotal = new UnreadTotal(
    options.maxUnreadBytesTotal ?? 512 * 1024 * 1024,
  );
  const closeIdle = (session: http2.Http2Session) => {
    if (session.destroyed) return;
    if (!session.closed) session.close();
    // A GOAWAY waits for the connection's streams to end: one whose call
    // is over but whose answer its client does not read (HTTP/2 flow
    // control holds it) held the connection, its bytes, and a client
    // that answers PINGs, for ever.
    const state = sessions.get(session);
    if (state === undefined || state.linger !== undefined) return;
    state.linger = setTimeout(() => {
      state.linger = undefined;
      if (state.active === 0) destroyAtOnce(session);
    }, keepaliveTimeout);
  };
  let inFlight = 0;
  let idle: (() => void) | undefined;
  // Aborted by close(): the streams of ModelStreamInfer end (once their
  // infers in flight have answered) rather than hold the grace open.
  const stopping = new AbortController();
  const watchers = new HealthWatchers({
    serving: async () => {
      const res = await options.fetch(
        new Request(`http://localhost:${options.httpPort()}/healthz`),
        { remoteAddr: "" },
      );
      await res.body?.cancel();
      return res.ok;
    },
    ...(options.maxHealthWatches === undefined
      ? {}
      : { max: options.maxHealthWatches }),
    ...(options.maxHealthWatchesPerConnection === undefined
      ? {}
      : { maxPerConnection: options.maxHealthWatchesPerConnection }),
    ...(options.healthWatchIntervalMs === undefined
      ? {}
      : { intervalMs: options.healthWatchIntervalMs }),
  });
  const onDrain = () => watchers.refresh();
  options.drain?.addEventListener("abort", onDrain, { once: true });
  const call = (
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
  ) => handle(stream, headers, options, stopping.signal, watchers);
  const settings = {
    settings: { maxConcurrentStreams: concurrent },
    // An HTTP/1.1 client is closed at once, not after 10 s.
    unknownProtocolTimeout: 1000,
  };
  // With the gateway's certificate, HTTP/2 over TLS only (ALPN h2, as gRPC
  // clients' secure channels ask): its token is not sent in clear text.
  const server = options.tls === undefined
    ? http2.createServer(settings)
    : http2.createSecureServer({
      ...settings,
      cert: options.tls.cert,
      key: options.tls.key,
      allowHTTP1: false,
      handshakeTimeout,
    });
  const maxConnections = options.maxConnections ?? 1024;
  if (maxConnections > 0) server.maxConnections = maxConnections;
  server.on("session", (session: http2.Http2Session) => {
    const state = {
      active: 0,
      idle: undefined as ReturnType<typeof setTimeout> | undefined,
      ping: undefined as ReturnType<typeof setTimeout> | undefined,
      linger: undefined as ReturnType<typeof setTimeout> | undefined,
    };
    sessions.set(session, state);
    const unread = new Unread(
      maxUnread,
      unreadTotal,
      session.socket?.remoteAddress ?? "",
    );
    trackUnread(session, unread);
    keepalive(session, state);
    // A connection that never makes a call (a stalled client, a probe)
    // is idle from the start.
    watchIdle(session, state);
    destroyNow.set(session, destroyLater(session));
    // One that never speaks HTTP/2 (a slowloris: the TLS handshake's
    // bound, then nothing) goes sooner: no client of ours takes 10 s for
    // its preface.
    const preface = setTimeout(() => destroyAtOnce(session), handshakeTimeout);
    session.once("remoteSettings", () => clearTimeout(preface));
    session.on("close", () => {
      clearTimeout(preface);
      clearTimeout(state.idle);
      clearTimeout(state.ping);
      clearTimeout(state.linger);
      unread.dispose();
      sessions.delete(session);
    });
    session.on("error", () => {});
  });
  server.on(
    "stream",
    (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      // First: a session destroyed by a client's protocol error destroys its
      // streams with that error, an uncaught one without a listener.
      stream.on("error", () => {});
      inFlight++;
      const session = stream.session;
      const state = session === undefined ? undefined : sessions.get(session);
      if (state !== undefined) {
        state.active++;
        clearTimeout(state.idle);
        state.idle = undefined;
      }
      call(stream, headers).finally(() => {
        if (state !== undefined) {
          state.active--;
          if (state.active === 0) watchIdle(session!, state);
        }
        inFlight--;
        if (inFlight === 0) idle?.();
      });
    },
  );
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error) => reject(err);
    server.once("error", fail);
    server.listen(options.port, options.hostname, () => {
      server.off("error", fail);
      resolve();
    });
  });
  server.on("error", () => {});
  const address = server.address();
  const port = typeof address === "object" && address !== null
    ? address.port
    : options.port;
  let closing: Promise<void> | undefined;
  return {
    port,
    hostname: options.hostname,
    get inFlight() {
      return inFlight;
    },
    get unreadBytes() {
      return unreadTotal.bytes;
    },
    setTls(tls) {
      if (options.tls === undefined) return;
      (server as http2.Http2SecureServer).setSecureContext({
        cert: tls.cert,
        key: tls.key,
      });
    },
    accepting(timeoutMs = 1000) {
      if (closing !== undefined) return Promise.resolve(true);
      return listenerAccepts(server, options.hostname, port, timeoutMs);
    },
    listenAgain() {
      if (closing !== undefined) return Promise.resolve();
      server.close();
      return new Promise<void>((resolve, reject) => {
        const fail = (err: Error) => reject(err);
        server.once("error", fail);
        server.listen(port, options.hostname, () => {
          server.off("error", fail);
          resolve();
        });
      });
    },
    close(graceMs = 0) {
      closing ??= (async () => {
        const deadline = performance.now() + graceMs;
        server.close();
        stopping.abort();
        options.drain?.removeEventListener("abort", onDrain);
        // The watches end now: they would hold the grace open for ever.
        watchers.close();
        if (inFlight > 0) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([
            new Promise<void>((resolve) => (idle = resolve)),
            new Promise<void>((resolve) => {
              timer = setTimeoutOrNever(resolve, graceMs);
            }),
          ]);
          clearTimeout(timer);
        }
        for (const state of sessions.values()) {
          clearTimeout(state.idle);
          clearTimeout(state.ping);
          clearTimeout(state.linger);
        }
        // Written answers reach the client before the connection goes: a
        // destroy drops what nghttp2 has not written to the socket yet (a
        // stream's trailers sent just now reached grpc-js as RST_STREAM 0,
        // "Call ended without gRPC status", 1 run in 10 under load). So
        // each connection closes (GOAWAY) once its streams have, for what
        // is left of the grace, at least FLUSH_MS; those still open then
        // (a client that does not read) are destroyed.
        await flushed(
          [...sessions.keys()],
          Math.max(deadline - performance.now(), FLUSH_MS),
        );
        for (const session of sessions.keys()) {
          // From a timer: at once, not a timer later (the close resolves
          // with its connections gone).
          destroyAtOnce(session);
        }
        sessions.clear();
      })();
      return closing;
    },
  };
}

/** What a call's path names: a unary method, the stream, a health check or watch. */
type Route =
  | { kind: "unary"; method: string }
  | { kind: "stream" }
  | { kind: "health" }
  | { kind: "watch" };

function routeOf(path: string): Route | undefined {
  if (path.startsWith(INFERENCE_SERVICE)) {
    const method = path.slice(INFERENCE_SERVICE.length);
    if (UNARY_METHODS.has(method)) return { kind: "unary", method };
    if (method === "ModelStreamInfer") return { kind: "stream" };
  }
  if (path === `${HEALTH_SERVICE}Check`) return { kind: "health" };
  if (path === `${HEALTH_SERVICE}Watch`) return { kind: "watch" };
  return undefined;
}

/** One call, settled once: its answer, or nothing when the client left. */
async function handle(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  options: GrpcServeOptions,
  stop: AbortSignal,
  watchers: HealthWatchers,
): Promise<void> {
  const path = String(headers[":path"] ?? "");
  const contentType = String(headers["content-type"] ?? "");
  if (
    contentType !== "application/grpc" &&
    !contentType.startsWith("application/grpc+") &&
    !contentType.startsWith("application/grpc;")
  ) {
    // Not a gRPC client: an HTTP answer (the spec's 415).
    respondHttp(stream, 415, "expected content-type application/grpc\n");
    return;
  }
  if (headers[":method"] !== "POST") {
    respondHttp(stream, 405, "gRPC calls are POST\n");
    return;
  }
  const encoding = headers["grpc-encoding"];
  if (encoding !== undefined && encoding !== "identity") {
    discard(stream);
    return send(stream, {
      status: GrpcStatus.UNIMPLEMENTED,
      message: `grpc-encoding ${
        String(encoding).slice(0, 64)
      } is not supported (identity only: send uncompressed messages)`,
      headers: { "grpc-accept-encoding": "identity" },
    });
  }
  const route = routeOf(path);
  if (route === undefined) {
    discard(stream);
    return send(stream, {
      status: GrpcStatus.UNIMPLEMENTED,
      message: `Method ${
        path.slice(0, 128)
      } is not implemented (inference.GRPCInferenceService answers ${
        [...UNARY_METHODS].join(", ")
      }, ModelStreamInfer; grpc.health.v1.Health answers Check, Watch)`,
    });
  }
  const unread = unreadOf(stream);
  if (
    unread?.full && (route.kind === "unary" || route.kind === "stream")
  ) {
    // Its client reads nothing: no more answers held for it (health
    // checks, a few bytes, are still answered).
    discard(stream);
    return send(stream, {
      status: GrpcStatus.RESOURCE_EXHAUSTED,
      message: unread.bytes >= unread.limit
        ? `Cannot take the call: this connection holds ${unread.bytes} bytes of answers its client has not read, the server's bound for one (read them, or use another connection)`
        : unread.total!.full
        ? `Cannot take the call: the server holds ${unread.total?.bytes} bytes of answers its clients have not read, its bound, ${unread.bytes} of them for this connection (read them, or retry later)`
        : `Cannot take the call: the server holds ${unread.total?.bytes} bytes of answers its clients have not read, over half its bound, and your address holds its share of them, ${unread.bytes} for this connection (read them)`,
    });
  }
  // A request that stalls this long ends its call (0: never).
  const idle = options.idleTimeout ?? 300_000;
  const abort = new AbortController();
  const gone = () => abort.abort();
  stream.once("close", gone);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const timeout = grpcTimeoutMs(
      headers["grpc-timeout"] as string | undefined,
    );
    const deadline = timeout === undefined
      ? undefined
      : new Promise<Answer>((resolve) => {
        timer = setTimeout(() => {
          resolve({
            status: GrpcStatus.DEADLINE_EXCEEDED,
            message: "Deadline exceeded",
          });
          abort.abort();
        }, Math.max(1, timeout));
      });
    if (route.kind === "watch") {
      const message = await readMessage(stream, options.bodyLimit, idle);
      if (!(message instanceof Uint8Array)) return send(stream, message);
      const full = watchers.full(stream);
      const watch = full === undefined
        ? watchers.watch(stream, decodeHealthCheckRequest(message))
        : undefined;
      if (watch === undefined) {
        return send(stream, {
          status: GrpcStatus.RESOURCE_EXHAUSTED,
          message: full === "connection"
            ? "Cannot watch: this connection has the most health watches the server keeps open on one (use Check, or close a watch)"
            : `Cannot watch: ${watchers.size} health watches are open, the most the server keeps (use Check, or close a watch)`,
        });
      }
      if (deadline !== undefined) void deadline.then((a) => watch.end(a));
      return await watch.done;
    }
    // A stream's token retired (told by the REST route of a yielding
    // model's infer): the stream ends, its client reading or not.
    const retired = route.kind === "stream" ? new AbortController() : undefined;
    const rest = restCall(
      options,
      stream,
      headers,
      abort.signal,
      retired === undefined ? undefined : (message) => retired.abort(message),
    );
    if (route.kind === "stream") {
      return await streamInfer(stream, rest, {
        limit: options.bodyLimit,
        abort,
        stop,
        retired: retired!.signal,
        ...(deadline === undefined ? {} : { deadline }),
        ...(options.streamWindow === undefined
          ? {}
          : { window: options.streamWindow }),
      });
    }
    const work = (async (): Promise<Answer> => {
      const message = await readMessage(stream, options.bodyLimit, idle);
      if (!(message instanceof Uint8Array)) return message;
      return route.kind === "health"
        ? await healthCheck(message, rest)
        : await inferenceCall(route.method, message, rest);
    })();
    const answer = deadline === undefined
      ? await work
      : await Promise.race([work, deadline]);
    // A health check's few bytes are answered whatever the client left unread.
    send(stream, answer, route.kind !== "health");
  } catch (err) {
    send(stream, answerOfError(err));
  } finally {
    clearTimeout(timer);
    stream.off("close", gone);
  }
}
