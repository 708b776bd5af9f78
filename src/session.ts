/**
 * {@linkcode Session}: one authenticated connection to a pyproxy Python
 * server (docs/protocol.md): request ids, pipelining, one write per batch,
 * timeouts and cancellation, events, Python → host handlers and middleware.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Logger } from "./logger.ts";
import { Buffer } from "node:buffer";
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import {
  AuthenticationError,
  CancelledError,
  ConnectionLostError,
  errorFromWire,
  OverloadedError,
  PluginError,
  ProtocolError,
  PyProxyError,
  SerializationError,
  TimeoutError,
} from "./errors.ts";
import { DEFAULT_MAX_FRAME_SIZE, VERSION } from "./protocol/frame.ts";
import { FrameDecoder } from "./protocol/frame_decoder.ts";
import { parsePayload } from "./protocol/json_decoder_stream.ts";
import {
  isBatch,
  MIN_BATCH_FRAME_SIZE,
  unbatch,
} from "./protocol/batch_frame.ts";
import { createMd5 } from "./protocol/md5.ts";
import { verifyFrame } from "./protocol/md5_verifier_stream.ts";
import { defaultRuntime } from "./runtime/mod.ts";
import type { Connection, ConnectTarget, Runtime } from "./runtime/types.ts";
import { HostCommands, wireError } from "./_session_host_commands.ts";
import { Deadlines } from "./_session_deadlines.ts";
import { MAX_TIMER_MS, setTimeoutOrNever } from "./_timer.ts";
import { withTimeout } from "./_with_timeout.ts";
import { PendingTable } from "./_session_pending_table.ts";
import { Outbox } from "./_session_outbox.ts";
import { Pending } from "./_session_pending.ts";
import { countInFlight, type InFlight } from "./_in_flight.ts";
export type { InFlight } from "./_in_flight.ts";
import { deliverResponseMeta } from "./_response_meta.ts";
import { callOptionsError } from "./_call_options.ts";
import {
  EXACT_JSON_DEPTH,
  ExactJson,
  holdsUnsafeNumber,
  roundBigInts,
  unsafeIntegerError,
} from "./_exact_json.ts";
import type {
  ModelDescription,
  ModelSpec,
  RequestOptions,
  ServerInfo,
  ServerStatus,
  SessionExecuteOptions,
  SessionHandler,
  SessionMessage,
  SessionMiddleware,
} from "./session_types.ts";
import { isThenable } from "./_thenable.ts";
import { markUnsent } from "./_unsent.ts";
import { markHeldLoop } from "./_loop_holder.ts";
import { decodeBytes } from "./_binary.ts";
import { racedConnect } from "./_raced_connect.ts";

// Bytes asked for per read when the connection reads into a buffer.
const READ_BUFFER_BYTES = 256 * 1024;
/** The first pause, in ms, before {@linkcode Session.connect} tries again. */
const CONNECT_RETRY_FIRST_MS = 1;
/** The longest pause between two tries of {@linkcode Session.connect}, in ms. */
const CONNECT_RETRY_MAX_MS = 20;
/**
 * Tries of {@linkcode Session.connect} whose handshake the server cut
 * (closed before its auth reply): a flooded server closes the oldest of
 * the connections waiting for their auth.
 */
const CONNECT_HANDSHAKE_TRIES = 16;

/**
 * Whether `err`, a connect's, says the server's accept queue is full: a
 * Unix socket's connect fails so at once (`EAGAIN`, Deno's `WouldBlock`)
 * where TCP's waits.
 */
function queueFull(err: unknown): boolean {
  const e = err as { code?: unknown; name?: unknown } | null | undefined;
  return e?.code === "EAGAIN" || e?.name === "WouldBlock";
}

/**
 * Whether `err`, a connect's, is a reset of a connection just made: what a
 * full accept queue answers the connect's last ACK with where
 * `net.ipv4.tcp_abort_on_overflow` is 1. Deno's connect fails with it
 * (`ConnectionReset`) where Bun's completes and the handshake's first read
 * finds the connection gone: tried again as a cut handshake is, not failed
 * at once (security27). A refused connect (`ECONNREFUSED`: no listener) is
 * not: a worker gone is said at once.
 */
function resetAtConnect(err: unknown): boolean {
  const e = err as { code?: unknown; name?: unknown } | null | undefined;
  return e?.code === "ECONNRESET" || e?.name === "ConnectionReset";
}

export type {
  HandlerCall,
  ModelDescription,
  ModelSpec,
  RequestOptions,
  ResponseMeta,
  ServerInfo,
  ServerStatus,
  SessionExecuteOptions,
  SessionHandler,
  SessionMessage,
  SessionMiddleware,
} from "./session_types.ts";

/**
 * Options of {@linkcode Session.connect}. Give `port` (TCP) or `path` (Unix socket).
 *
 * @example
 * ```ts
 * import type { SessionConnectOptions } from "@pyproxy/pyproxy";
 * const options: SessionConnectOptions = { hostname: "127.0.0.1", port: 40123, secret: "from-the-ready-line" };
 * console.log(options.port);
 * // const session = await Session.connect(options);
 * ```
 */
export interface SessionConnectOptions {
  /**
   * TCP host.
   *
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /** TCP port. */
  port?: number;
  /** Unix socket path (instead of `hostname`/`port`). */
  path?: string;
  /**
   * The server's secret; leave it out for a server started with
   * `--insecure-no-auth` (with `serverProof`, a server that asks for no
   * authentication where a secret is given is refused as an impostor).
   */
  secret?: string;
  /**
   * Require the server to prove that it knows the secret too (its `auth`
   * reply's `serverMac` over a nonce of ours, protocol §4): whoever listens
   * in its place without the secret is refused with `AuthenticationError`
   * before it is sent anything else, as is one whose `hello` says it needs
   * no authentication (`auth: "none"`) when `secret` is given. `false` for
   * servers of other implementations that do not answer `clientNonce`.
   *
   * @default {true}
   */
  serverProof?: boolean;
  /**
   * Runtime adapter.
   *
   * @default {defaultRuntime()}
   */
  runtime?: Runtime;
  /**
   * The largest incoming payload accepted; a bigger frame closes the session.
   *
   * @default {67108864}
   */
  maxFrameSize?: number;
  /** Python → host command handlers, by command name (see {@linkcode Session.setHandler}). */
  handlers?: Record<string, SessionHandler>;
  /** Applied to every message after the handshake, in order (see {@linkcode SessionMiddleware}). */
  middleware?: SessionMiddleware[];
  /**
   * Where the session logs.
   *
   * @default {getLogger(["pyproxy", "session"])}
   */
  logger?: Logger;
  /**
   * How long connecting, the `hello` event and authentication may take in
   * all, in milliseconds, before `connect` rejects with a `TimeoutError`
   * whose `details.phase` says which was under way (`"connect"`, `"hello"`,
   * `"auth"`). `Infinity`,
   * or anything beyond 2^31 − 1 (~24.8 days, a timer's range), means no
   * limit. Within it, a connect refused by a Unix socket's full accept
   * queue, a handshake the server cut and a connection reset as it was made
   * (a `tcp_abort_on_overflow` kernel's answer to a full queue) are tried
   * again, and over TCP a
   * connect that has not completed is raced by fresh ones (after 10 ms to a
   * loopback address, 250 ms to another; at most 32): a full queue drops a
   * TCP connect's SYN, which the kernel sends again only after 1 s and 3 s.
   *
   * @default {10000}
   */
  connectTimeout?: number;
  /**
   * The most requests in flight at once; one more rejects at once with an
   * `OverloadedError` (bounds the pending map when the server stops answering).
   *
   * @default {65536}
   */
  maxPending?: number;
  /**
   * How integers outside ±(2^53 − 1) (`Number.isSafeInteger`) are
   * exchanged, where a `number` would round them (`2**53 + 1` →
   * `9007199254740992`, `10**400` → `Infinity`). `"number"`: a message from
   * Python holding one fails what it belongs to with an
   * `UnsafeIntegerError` naming its path (the request, the stream, or the
   * host command, which answers Python with it), and a `BigInt` to send is
   * refused with a `SerializationError`. `"bigint"`: they arrive as exact
   * `BigInt`s (smaller integers stay numbers) in results, events, stream
   * items and host command arguments, and `BigInt`s are sent as exact JSON
   * integers. Either way a reply is parsed a second time only when its text
   * holds a run of 16 or more digits (docs/models.md "Large integers").
   *
   * @default {"number"}
   */
  integers?: "number" | "bigint";
  /**
   * Ask the server for the metrics model code records (`"metrics": true`
   * in `auth`, when its `hello` announces them; protocol §6, "Model
   * metrics"): it then sends `metrics` events, which reach
   * {@linkcode Session.onEvent} listeners. A pool's sessions ask for them.
   *
   * @default {false}
   */
  metrics?: boolean;
}

/**
 * One authenticated connection to a pyproxy Python server.
 *
 * Any number of requests may be in flight; the messages sent before the
 * event loop's next turn (a `setImmediate`) go out as one batch in one write.
 * Every request settles exactly once: with its reply, a `TimeoutError`, a
 * `CancelledError` (both also send `cancel` to the server), or a
 * `ConnectionLostError` when the connection ends.
 *
 * @example Execute a model
 * ```ts ignore
 * import { Session } from "@pyproxy/pyproxy";
 * await using session = await Session.connect({ port: 40123, secret });
 * console.log(await session.ping()); // "pong"
 * await session.addModel("doubler", { source: "class Model:\n  def execute(self, msg): return {'y': msg['x'] * 2}" });
 * console.log(await session.execute("doubler", { x: 5 }, { timeout: 1000 })); // { y: 10 }
 * ```
 */
export class Session implements AsyncDisposable {
  #conn: Connection;
  #logger: Logger;
  #outbox: Outbox;
  // Where the read loop gets bytes: a reused buffer where the connection reads into one, else a stream reader.
  #reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #read: () => Promise<Uint8Array | null>;
  #decoder: FrameDecoder;
  // This side asks the server for batch frames (its frame limit fits them).
  #readsBatches: boolean;
  #metrics: boolean;
  #lastReceived = Date.now();
  // True while the read loop waits for an incoming message's async middleware.
  #incomingBusy = false;
  // When it last finished waiting (what came after may have waited unread).
  #incomingDone = 0;
  // #lastReceived before the last read (a `busy` event may take it back).
  #receivedBefore = this.#lastReceived;
  #readDone: Promise<void>;
  #pending = new PendingTable<Pending>();
  /** Ids whose late replies are expected and dropped quietly (timed out, aborted, fire-and-forget). */
  #ignored = new Set<number>();
  // Requests given up on here (timeout, abort) whose onDone waits for the
  // server's late reply, with what they asked (`givenUpAtClose`).
  #late = new Map<
    number,
    {
      done: () => void;
      cmd: string;
      args: Record<string, unknown> | undefined;
    }
  >();
  #nextId = 1;
  #maxPending: number;
  #integers: "number" | "bigint";
  // Parses replies, reviving unsafe integers as BigInt (only text that may hold one is parsed twice).
  #exact = new ExactJson();
  #parse = (json: string): unknown => this.#exact.parse(json);
  #host: HostCommands;
  #listeners = new Set<(event: SessionMessage) => void>();
  #outgoing: SessionMiddleware[];
  #incoming: SessionMiddleware[];
  #handshaking = true;
  #hello: PromiseWithResolvers<SessionMessage> | undefined = Promise
    .withResolvers();
  #closed = false;
  #closeReason = "the session was closed";
  /** What was in flight when it closed (`inFlightAtClose`). */
  #inFlightAtClose: InFlight | undefined;
  /** What was given up on and still running when it closed (`givenUpAtClose`). */
  #givenUpAtClose: InFlight | undefined;
  // The request (0: none) and model of the last `busy` event, until that
  // request's reply: a call holding the server's event loop (`loopHeldBy`).
  #heldBy = 0;
  #heldByModel: string | undefined;
  #closeCause: unknown;
  #closedDone: PromiseWithResolvers<void> = Promise.withResolvers();
  #serverInfo: ServerInfo = {
    serverId: "",
    pid: 0,
    version: VERSION,
    auth: "",
  };

  // Bound once so timers and abort listeners allocate no closure per request.
  #deadlines = new Deadlines<Pending>((p) => this.#expire(p.id, "timeout"));
  #onAbort = (id: number): void => this.#expire(id, "abort");

  private constructor(conn: Connection, options: SessionConnectOptions) {
    this.#conn = conn;
    this.#logger = options.logger ?? getLogger(["pyproxy", "session"]);
    this.#maxPending = options.maxPending ?? 65_536;
    const integers = options.integers ?? "number";
    if (integers !== "number" && integers !== "bigint") {
      throw new TypeError(
        `Cannot connect session: integers: expected "number" or "bigint", got ${
          JSON.stringify(integers)
        }`,
      );
    }
    this.#integers = integers;
    this.#host = new HostCommands(
      options.handlers,
      (id, ok, payload) => this.#reply(id, ok, payload),
      this.#logger,
      integers === "bigint",
      (call) => {
        const pending = this.#pending.get(call);
        return pending === undefined ? undefined : requestCallers(pending.args);
      },
    );
    const middleware = options.middleware ?? [];
    this.#outgoing = middleware.filter((m) => typeof m.outgoing === "function");
    this.#incoming = middleware.filter((m) => typeof m.incoming === "function");
    this.#outbox = new Outbox(
      conn.writable,
      conn.write?.bind(conn),
      (err) =>
        this.#shutdown(`writing to the server failed (${describe(err)})`, err),
    );
    this.#outbox.bigints = integers === "bigint";
    // The read loop runs the logic of FrameDecoderStream → Md5VerifierStream
    // → JsonDecoderStream as plain calls: one pipe stage per read, not three.
    const maxFrameSize = options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
    this.#readsBatches = maxFrameSize >= MIN_BATCH_FRAME_SIZE;
    this.#metrics = options.metrics === true;
    this.#decoder = new FrameDecoder(maxFrameSize);
    if (conn.read !== undefined) {
      // No stream machinery and no fresh buffer per read: every frame of a read is consumed
      // (copied when split) before the next read reuses the buffer.
      const read = conn.read.bind(conn);
      const buffer = new Uint8Array(READ_BUFFER_BYTES);
      this.#read = async () => {
        const n = await read(buffer);
        return n === null ? null : buffer.subarray(0, n);
      };
    } else {
      const reader = conn.readable.getReader();
      this.#reader = reader;
      this.#read = async () => {
        const { value, done } = await reader.read();
        return done ? null : value;
      };
    }
    this.#readDone = this.#readLoop();
  }

  /**
   * Connects, reads the server's `hello` event and authenticates (HMAC-SHA256
   * of the nonce with the secret, protocol §4); resolves once the server
   * accepted the `auth` command. Rejects with `ConnectionLostError` (cannot
   * connect, or the server hung up), `AuthenticationError`, `TimeoutError`
   * (`connectTimeout`) or `ProtocolError` (not a pyproxy server).
   *
   * @example
   * ```ts ignore
   * const session = await Session.connect({ path: "/tmp/pyproxy.sock", secret });
   * ```
   */
  static async connect(options: SessionConnectOptions): Promise<Session> {
    const runtime = options.runtime ?? defaultRuntime();
    const timeout = options.connectTimeout ?? 10_000;
    let target: ConnectTarget;
    if (options.path !== undefined) target = { path: options.path };
    else if (options.port !== undefined) {
      target = {
        hostname: options.hostname ?? "127.0.0.1",
        port: options.port,
      };
    } else throw new TypeError("Cannot connect session: pass a port or a path");
    const where = options.path ??
      `${options.hostname ?? "127.0.0.1"}:${options.port}`;
    // One bound for the whole handshake (connecting, hello, auth): each
    // step had it anew, so a server that said hello and then went silent
    // held the caller for twice connectTimeout.
    const deadline = timeout <= MAX_TIMER_MS ? Date.now() + timeout : Infinity;
    // A server flooded with connections (a local process opening them
    // faster than it accepts, security25) has a full accept queue, where a
    // Unix socket's connect fails at once (EAGAIN), or closes the oldest of
    // those waiting for their auth, which may be this one: both are tried
    // again, after a pause that doubles, within the deadline (a full queue
    // until then; a closed handshake CONNECT_HANDSHAKE_TRIES times, so a
    // server that closes every connection fails soon). Measured with a
    // flood of a worker's socket: 2 of 200 host connects got in (cap 16),
    // 23 of 200 (cap 1024), most refused by the full queue.
    for (let tries = 1, pause = CONNECT_RETRY_FIRST_MS;; tries++) {
      try {
        return await Session.#connectOnce(
          options,
          runtime,
          target,
          where,
          timeout,
          deadline,
        );
      } catch (err) {
        const again = err instanceof ConnectionLostError &&
          (queueFull(err.cause) ||
            ((err.details?.phase === "handshake" ||
              resetAtConnect(err.cause)) &&
              tries < CONNECT_HANDSHAKE_TRIES));
        if (!again || timeLeft(deadline) <= pause) throw err;
        await new Promise((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, CONNECT_RETRY_MAX_MS);
      }
    }
  }

  /** One try of {@linkcode Session.connect}. */
  static async #connectOnce(
    options: SessionConnectOptions,
    runtime: Runtime,
    target: ConnectTarget,
    where: string,
    timeout: number,
    deadline: number,
  ): Promise<Session> {
    // Over TCP, a connect whose SYN a full accept queue dropped is raced by
    // fresh ones rather than left to the kernel's resend after 1 s and 3 s.
    // Given up with the connects still under way when the time is out.
    const giveUp = new AbortController();
    const connecting = racedConnect(
      (to) => runtime.connect(to),
      target.path === undefined ? { ...target, signal: giveUp.signal } : target,
      deadline,
    );
    let conn: Connection | undefined;
    try {
      conn = await withTimeout(connecting, timeLeft(deadline));
    } catch (err) {
      throw new ConnectionLostError(
        `Cannot connect session to ${where}: ${describe(err)}`,
        { cause: err },
      );
    }
    if (conn === undefined) {
      giveUp.abort();
      // A connection made too late is nobody's.
      connecting.then((late) => late.close(), () => {});
      throw new TimeoutError(
        `Cannot connect session to ${where}: no connection within ${timeout} ms (connectTimeout)`,
        { details: { phase: "connect", timeoutMs: timeout } },
      );
    }
    const session = new Session(conn, options);
    try {
      await session.#handshake(
        options.secret,
        timeout,
        deadline,
        where,
        options.serverProof !== false,
      );
    } catch (err) {
      await session.close();
      // The connection ended before the handshake did (the server closed
      // it unanswered): said so, for a try again.
      if (err instanceof ConnectionLostError) {
        throw new ConnectionLostError(err.message, {
          cause: err.cause,
          details: { ...err.details, phase: "handshake" },
        });
      }
      throw err;
    }
    return session;
  }

  /** The `hello` event merged with the `auth` reply: `serverId`, `pid`, `connection`, `maxFrameSize`... */
  get serverInfo(): ServerInfo {
    return this.#serverInfo;
  }

  /** The connection id the server assigned (from the `auth` reply), if any. */
  get connectionId(): string | undefined {
    return this.#serverInfo.connection;
  }

  /** How integers beyond ±2^53 are exchanged: see {@linkcode SessionConnectOptions.integers}. */
  get integers(): "number" | "bigint" {
    return this.#integers;
  }

  /**
   * Replies parsed a second time because their text held a run of 16 or
   * more digits (integers beyond ±2^53 are looked for in those only).
   */
  get reparsed(): number {
    return this.#exact.reparsed;
  }

  /** Requests sent and not settled yet. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /**
   * When the peer last showed signs of life, in `Date.now()` milliseconds:
   * the last bytes received from it, or the progress of a large message
   * being written to it (now while it is in flight). A peer busy with a
   * large message answers pings late but is alive. Time this side spends
   * reading a message (an incoming middleware's async work, such as a
   * spilled reply's file) counts too, up to its end: the peer's next
   * messages wait unread meanwhile, so its silence proves nothing.
   */
  get lastActivity(): number {
    if (this.#incomingBusy) return Date.now();
    return Math.max(
      this.#lastReceived,
      this.#outbox.lastProgress,
      this.#incomingDone,
    );
  }

  /**
   * Whether a reply with `id` would settle a request still waiting for it:
   * false once the request was given up on (its timeout or abort) or
   * answered, and for ids this session never sent. A plugin uses it to skip
   * work on a reply nobody waits for (the spill-over plugin deletes such a
   * reply's file unread).
   *
   * @example
   * ```ts ignore
   * const ping = session.ping();
   * // the ping's id is the session's latest: awaited until its reply arrives
   * await ping;
   * ```
   */
  awaits(id: number): boolean {
    return this.#pending.get(id) !== undefined;
  }

  /**
   * The command of request `id` while this side awaits its reply, as it
   * was sent (`"executeModel"`, `"executeStream"`, `"executeBatch"` for a
   * model's batch of calls, `"ping"`...); `undefined` once it was given up
   * on or answered, and for ids this session never sent. What an
   * `onReply` hook reads to tell what a reply (or a call's event) answers:
   * a batch's `{results: [...]}` from a model that returned that shape. The
   * reply is still awaited while the hooks run; a late one (its call gave
   * up) is not. A Python → host command (it has a `cmd`) numbers its ids
   * apart: do not look those up.
   *
   * @example
   * ```ts
   * import type { Plugin } from "@pyproxy/pyproxy";
   * const batches: Plugin = {
   *   name: "batches",
   *   onReply(msg, mc) {
   *     // A reply or a call's event (a Python → host command has a cmd, and ids of its own).
   *     if (typeof msg.id !== "number" || msg.cmd !== undefined) return;
   *     if (mc.session.awaitedCommand(msg.id) === "executeBatch") {
   *       mc.plugin.logger.debug("A batch answered on {worker}", { worker: mc.worker.id });
   *     }
   *   },
   * };
   * console.log(batches.name);
   * ```
   */
  awaitedCommand(id: number): string | undefined {
    return this.#pending.get(id)?.cmd;
  }

  /** Whether the session is closed (by {@linkcode Session.close} or because the connection ended). */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Resolves once the session is closed and its connection released (never rejects). */
  get closed(): Promise<void> {
    return this.#closedDone.promise;
  }

  /**
   * Sends a request and resolves with the reply's `result`; rejects with the
   * typed error of an error reply (see `errorFromWire`), a `TimeoutError`, a
   * `CancelledError`, a `PluginError` (middleware), a `SerializationError`
   * (not JSON, or larger than the server's frame limit), a `ConfigError`
   * (a `timeout` that is not a number >= 0, or a `signal` that is not an
   * `AbortSignal`) or a `ConnectionLostError`. `timeout: 0` rejects with
   * `TimeoutError` without sending; `Infinity` means no timeout.
   *
   * @example
   * ```ts ignore
   * const status = await session.request("serverStatus", undefined, { timeout: 500 });
   * ```
   */
  request<T = unknown>(
    cmd: string,
    args?: Record<string, unknown>,
    options: RequestOptions = {},
  ): Promise<T> {
    const refused = this.#refusal(cmd, options);
    if (refused !== undefined) {
      options.onDone?.();
      return Promise.reject(refused);
    }
    const { signal, timeout } = options;
    const id = this.#nextId++;
    const msg: SessionMessage = args === undefined
      ? { id, cmd }
      : { id, cmd, ...args };
    msg.id = id;
    msg.cmd = cmd;
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    const pending = new Pending(
      id,
      cmd,
      args,
      resolve as (value: unknown) => void,
      reject,
      options.onEvent,
      this.#onAbort,
    );
    pending.onDone = options.onDone;
    pending.onMeta = options.onResponseMeta;
    this.#pending.add(pending);
    if (timeout !== undefined && timeout !== Infinity) {
      pending.timeout = timeout;
      pending.deadlines = this.#deadlines;
      this.#deadlines.add(pending, timeout);
    }
    if (signal !== undefined) {
      pending.signal = signal;
      signal.addEventListener("abort", pending, { once: true });
    }
    this.#send(msg, pending);
    return promise;
  }

  /** Why `request` cannot send now (closed, bad options, 0 ms, aborted, full), if it cannot. */
  #refusal(cmd: string, options: RequestOptions): Error | undefined {
    if (this.#closed) return this.#lostError(cmd);
    const { signal, timeout } = options;
    if (timeout !== undefined || signal !== undefined) {
      const invalid = callOptionsError("Cannot send", options, cmd);
      if (invalid !== undefined) return invalid;
      if (timeout === 0) {
        return new TimeoutError(`Cannot send ${cmd}: timeout is 0 ms`);
      }
    }
    if (signal?.aborted) {
      return new CancelledError(`Cannot send ${cmd}: aborted`, {
        cause: signal.reason,
      });
    }
    if (this.#pending.size >= this.#maxPending) {
      return new OverloadedError(
        `Cannot send ${cmd}: ${this.#pending.size} requests in flight (maxPending)`,
      );
    }
    return undefined;
  }

  /**
   * Listens to events that belong to no pending request (or whose request
   * has no `onEvent`). Returns a function that removes the listener.
   *
   * @example
   * ```ts ignore
   * const off = session.onEvent((event) => console.log(event.event));
   * off();
   * ```
   */
  onEvent(listener: (event: SessionMessage) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /**
   * Registers (or with `undefined` removes) the handler of a Python → host
   * command (protocol §7).
   *
   * @example
   * ```ts ignore
   * session.setHandler("greet", (args) => `hello ${(args as { name: string }).name}`);
   * ```
   */
  setHandler(cmd: string, handler: SessionHandler | undefined): void {
    this.#host.set(cmd, handler);
  }

  /** `ping` → `"pong"`. */
  ping(options?: RequestOptions): Promise<string> {
    return this.request<string>("ping", undefined, options);
  }

  /** Loads a model from a file (relative to the server's `--path`) or from source. */
  addModel(
    name: string,
    spec: ModelSpec,
    options?: RequestOptions,
  ): Promise<ModelDescription> {
    return this.request<ModelDescription>(
      "addModel",
      wireSpecOf(name, spec),
      options,
    );
  }

  /** Removes a model. */
  removeModel(
    name: string,
    options?: RequestOptions,
  ): Promise<{ name: string; removed: boolean }> {
    return this.request("removeModel", { name }, options);
  }

  /** Replaces a model atomically (calls in flight finish on the old version). */
  updateModel(
    name: string,
    spec: ModelSpec,
    options?: RequestOptions,
  ): Promise<ModelDescription> {
    return this.request<ModelDescription>(
      "updateModel",
      wireSpecOf(name, spec),
      options,
    );
  }

  /** Calls the model's `init(path)` with a data file relative to `--path`. */
  initModel(
    name: string,
    dataFile: string,
    options?: RequestOptions,
  ): Promise<{ name: string; result: unknown }> {
    return this.request("initModel", { name, dataFile }, options);
  }

  /**
   * Runs `model.execute(msg)`; resolves with what it returned (`null` for
   * `None`). With `requestId`, the call carries it (protocol §6); with
   * `contentType`, the media type of a `msg` that is bytes (a `Uint8Array`:
   * protocol §3, Bytes); with `headers`, request headers for the model's
   * `host.headers()`.
   */
  execute<T = unknown>(
    name: string,
    msg: unknown,
    options?: SessionExecuteOptions,
  ): Promise<T> {
    const requestId = options?.requestId;
    const contentType = options?.contentType;
    const headers = options?.headers;
    if (
      requestId === undefined && contentType === undefined &&
      headers === undefined
    ) {
      return this.request<T>("executeModel", { name, msg }, options);
    }
    const invalid = callOptionsError(
      "Cannot send",
      { requestId, contentType, headers },
      "executeModel",
    );
    if (invalid !== undefined) {
      options?.onDone?.();
      return Promise.reject(invalid);
    }
    const args: Record<string, unknown> = requestId === undefined
      ? { name, msg }
      : { name, msg, requestId };
    if (contentType !== undefined) args.contentType = contentType;
    if (headers !== undefined) args.headers = headers;
    return this.request<T>("executeModel", args, options);
  }

  /** `serverStatus`. */
  status(options?: RequestOptions): Promise<ServerStatus> {
    return this.request<ServerStatus>("serverStatus", undefined, options);
  }

  /**
   * `stopServer`: the server replies, then exits, once its models' `close()`
   * hooks ended (`closeMs`: how long they may take at most; absent when no
   * model has one).
   */
  stop(
    options?: RequestOptions,
  ): Promise<{ stopping: boolean; closeMs?: number }> {
    return this.request("stopServer", undefined, options);
  }

  /**
   * Closes the session: pending requests reject with `ConnectionLostError`,
   * host handler calls are aborted, the connection is released. Idempotent;
   * resolves like {@linkcode Session.closed}.
   */
  async close(): Promise<void> {
    this.#shutdown();
    await this.#closedDone.promise;
  }

  /** Same as {@linkcode Session.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // -------------------------------------------------------------------------
  // Handshake (no middleware: the session is not open yet)

  async #handshake(
    secret: string | undefined,
    timeout: number,
    deadline: number,
    where: string,
    serverProof: boolean,
  ): Promise<void> {
    const hello = this.#hello!;
    // Beyond a timer's range (Infinity too): no limit.
    const timer = setTimeoutOrNever(
      () =>
        hello.reject(
          new TimeoutError(
            `Cannot connect session to ${where}: no hello within ${timeout} ms (connectTimeout)`,
            { details: { phase: "hello", timeoutMs: timeout } },
          ),
        ),
      timeLeft(deadline),
    );
    let event: SessionMessage;
    try {
      event = await hello.promise;
    } finally {
      clearTimeout(timer);
      this.#hello = undefined;
    }
    if (event.version !== VERSION) {
      throw new ProtocolError(
        `Cannot connect session to ${where}: unsupported protocol version ${event.version}`,
      );
    }
    const { event: _event, nonce: _nonce, ...info } = event;
    this.#serverInfo = info as ServerInfo;
    if (event.auth === "hmac-sha256") {
      if (secret === undefined) {
        throw new AuthenticationError(
          `Cannot authenticate to ${where}: the server requires a secret`,
        );
      }
      if (typeof event.nonce !== "string") {
        throw new ProtocolError(
          `Cannot authenticate to ${where}: the hello event has no nonce`,
        );
      }
      const mac = createHmac("sha256", secret).update(event.nonce).digest(
        "hex",
      );
      const clientNonce = serverProof
        ? randomBytes(16).toString("hex")
        : undefined;
      const args = this.#authOptions(event, { mac });
      if (clientNonce !== undefined) args.clientNonce = clientNonce;
      const result = await this.#auth(args, timeout, deadline, where);
      if (clientNonce !== undefined) {
        const expected = createHmac("sha256", secret).update(
          `server:${clientNonce}`,
        ).digest();
        if (!macMatches(result?.serverMac, expected)) {
          throw new AuthenticationError(
            `Cannot authenticate to ${where}: the server did not prove that it knows the secret (${
              result?.serverMac === undefined ? "no serverMac" : "bad serverMac"
            }); someone else may be listening in its place`,
          );
        }
        delete result.serverMac;
      }
      this.#serverInfo = { ...this.#serverInfo, ...result } as ServerInfo;
    } else if (event.auth !== "none") {
      throw new AuthenticationError(
        `Cannot authenticate to ${where}: unsupported auth scheme ${
          String(event.auth)
        }`,
      );
    } else if (secret !== undefined && serverProof) {
      // A server of ours always asks for its secret. One that asks for
      // none where we hold one is an impostor's way around the proof
      // above: it was sent the models, their options and every call.
      throw new AuthenticationError(
        `Cannot authenticate to ${where}: the server asks for no authentication, but this session was given a secret; someone else may be listening in its place (for a server started with --insecure-no-auth, give no secret)`,
      );
    } else if (event.bytes === true) {
      // A server without authentication (--insecure-no-auth) that reads
      // bytes takes the optional `auth` without a mac: it is how the server
      // learns that this side reads `$bytes` (and batch frames, as over an
      // authenticated connection). A server that does not announce bytes
      // gets nothing new (protocol §4).
      const result = await this.#auth(
        this.#authOptions(event, {}),
        timeout,
        deadline,
        where,
      );
      this.#serverInfo = { ...this.#serverInfo, ...result } as ServerInfo;
    }
    const limit = this.#serverInfo.maxFrameSize;
    if (typeof limit === "number" && limit > 0) {
      this.#outbox.maxFrameSize = limit;
    }
    this.#outbox.batch = this.#serverInfo.batch === true &&
      this.#outbox.maxFrameSize >= MIN_BATCH_FRAME_SIZE;
    this.#outbox.bytes = this.#serverInfo.bytes === true;
    this.#handshaking = false;
  }

  /** The `auth` arguments saying what this side reads, added to `args`. */
  #authOptions(
    hello: SessionMessage,
    args: Record<string, unknown>,
  ): Record<string, unknown> {
    // batch: this side reads batch frames (protocol §3), when its frame limit allows them.
    if (this.#readsBatches) args.batch = true;
    // bytes: this side reads `$bytes` (protocol §3, Bytes), for a server that does.
    if (hello.bytes === true) args.bytes = true;
    // metrics: send model metrics events (protocol §6), when this side wants them.
    if (this.#metrics && hello.metrics === true) args.metrics = true;
    return args;
  }

  /** Sends `auth` with `args`; resolves its reply's result. */
  async #auth(
    args: Record<string, unknown>,
    timeout: number,
    deadline: number,
    where: string,
  ): Promise<Record<string, unknown>> {
    try {
      return await this.request<Record<string, unknown>>("auth", args, {
        timeout: timeLeft(deadline),
      });
    } catch (err) {
      if (err instanceof TimeoutError) {
        throw new TimeoutError(
          `Cannot authenticate to ${where}: no answer to auth within ${timeout} ms of connecting (connectTimeout)`,
          { cause: err, details: { phase: "auth", timeoutMs: timeout } },
        );
      }
      // A refusal sent with id null closes the session: surface the refusal itself.
      if (
        err instanceof ConnectionLostError &&
        err.cause instanceof AuthenticationError
      ) throw err.cause;
      throw err;
    }
  }

  // -------------------------------------------------------------------------
  // Write side

  /** Sends a message through the outgoing middleware (if any) into the outbox. */
  #send(msg: SessionMessage, pending: Pending | undefined): void {
    if (this.#outgoing.length === 0 || this.#handshaking) {
      this.#enqueue(msg, pending);
    } else this.#sendThroughMiddleware(msg, pending, 0);
  }

  /** Runs the outgoing middleware chain, staying synchronous while every hook is. */
  #sendThroughMiddleware(
    msg: SessionMessage,
    pending: Pending | undefined,
    from: number,
  ): void {
    let current = msg;
    for (let i = from; i < this.#outgoing.length; i++) {
      const mw = this.#outgoing[i]!;
      let out: SessionMessage | Promise<SessionMessage>;
      try {
        out = mw.outgoing!(current, this);
      } catch (err) {
        this.#failOutgoing(
          current,
          pending,
          middlewareError(mw, "outgoing", err),
        );
        return;
      }
      if (isThenable(out)) {
        Promise.resolve(out).then(
          (next) =>
            this.#sendThroughMiddleware(next ?? current, pending, i + 1),
          (err) =>
            this.#failOutgoing(
              current,
              pending,
              middlewareError(mw, "outgoing", err),
            ),
        );
        return;
      }
      current = out ?? current;
    }
    this.#enqueue(current, pending);
  }

  #enqueue(msg: SessionMessage, pending: Pending | undefined): void {
    if (this.#closed) {
      if (pending !== undefined) {
        this.#settle(pending.id, undefined, this.#lostError(pending.cmd));
      }
      return;
    }
    const error = this.#outbox.push(msg);
    if (error !== undefined) this.#failOutgoing(msg, pending, error);
    else if (pending !== undefined) {
      pending.queued = true;
      if (pending.cancelWhenQueued) {
        this.#fireAndForget("cancel", { target: pending.id });
      }
    }
  }

  #failOutgoing(
    msg: SessionMessage,
    pending: Pending | undefined,
    error: Error,
  ): void {
    if (pending !== undefined) {
      // No byte of it was written: whoever sends it again runs nothing
      // twice (a model batch taken apart around a call that cannot be
      // encoded, ModelBatcher).
      markUnsent(error);
      this.#settle(pending.id, undefined, error);
      // Given up on while in the middleware: never sent, so never answered
      // (nor waited for: its id would stay in #ignored for good).
      this.#ignored.delete(pending.id);
      if (this.#late.size > 0) this.#lateDone(pending.id);
      return;
    }
    this.#logger.warn("Dropped outgoing message {id}: {error}", {
      id: msg.id,
      error,
    });
    // A reply to Python must not vanish (its caller would wait): send the failure, bypassing middleware.
    if (
      typeof msg.ok === "boolean" && typeof msg.id === "number" && !this.#closed
    ) {
      this.#outbox.push({ id: msg.id, ok: false, error: wireError(error) });
    }
  }

  /** Sends `{cmd, ...args}` without waiting for (or caring about) the reply. */
  #fireAndForget(cmd: string, args: Record<string, unknown>): void {
    if (this.#closed) return;
    const id = this.#nextId++;
    this.#ignored.add(id);
    this.#send({ id, cmd, ...args }, undefined);
  }

  #reply(id: number, ok: boolean, payload: unknown): void {
    this.#send(
      ok ? { id, ok, result: payload ?? null } : { id, ok, error: payload },
      undefined,
    );
  }

  // -------------------------------------------------------------------------
  // Read side

  async #readLoop(): Promise<void> {
    let cause: unknown;
    try {
      const md5 = createMd5();
      const digest = new Uint8Array(16);
      const text = new TextDecoder("utf-8", { ignoreBOM: true });
      while (!this.#closed) {
        const value = await this.#read();
        if (value === null) {
          if (!this.#closed) this.#decoder.end();
          break;
        }
        this.#receivedBefore = this.#lastReceived;
        this.#lastReceived = Date.now();
        const frames = this.#decoder.push(value);
        for (let i = 0; i < frames.length && !this.#closed; i++) {
          const payload = verifyFrame(frames[i]!, md5, digest);
          const revived = this.#exact.revived;
          const inexact = this.#exact.inexact;
          const item = payload instanceof Error
            ? payload
            : parsePayload(payload, text, undefined, this.#parse);
          // Integers beyond ±2^53 came as BigInt: the default refuses them, message by message.
          const refuse = this.#exact.revived !== revived &&
            this.#integers === "number";
          // Too deep to read them exactly: their messages fail, either way.
          const deep = this.#exact.inexact !== inexact;
          const messages = item instanceof Error || !isBatch(item)
            ? item
            : unbatch(item);
          if (messages instanceof Error) {
            // A corrupted frame cannot be attributed to a request: give up on the connection.
            this.#shutdown(
              `the server sent a corrupted frame (${messages.message})`,
              messages,
            );
            return;
          }
          if (!Array.isArray(messages)) {
            if (deep && this.#refuseInexact(messages)) continue;
            if (refuse && this.#refuseUnsafe(messages)) continue;
            const later = this.#receive(messages);
            if (later !== undefined) await this.#awaitIncoming(later);
            continue;
          }
          for (let j = 0; j < messages.length && !this.#closed; j++) {
            if (deep && this.#refuseInexact(messages[j]!)) continue;
            if (refuse && this.#refuseUnsafe(messages[j]!)) continue;
            const later = this.#receive(messages[j]!);
            if (later !== undefined) await this.#awaitIncoming(later);
          }
        }
      }
    } catch (err) {
      cause = err;
    }
    this.#shutdown(
      cause === undefined
        ? "the server closed the connection"
        : `the connection failed (${describe(cause)})`,
      cause,
    );
  }

  /**
   * With `integers: "number"`: fails what `msg` belongs to when it holds an
   * integer beyond ±2^53 (revived as a `BigInt`) in what a caller receives as
   * data (a reply's result, a stream's item, a host command's arguments),
   * rather than passing on a rounded number. True when it did. Anything else
   * (an error reply, a log or output event, the handshake) is passed on with
   * the numbers rounded, as `JSON.parse` gives them: refusing it would lose
   * the error or the record for a number that is not its point.
   */
  #refuseUnsafe(msg: SessionMessage): boolean {
    if (!this.#isData(msg)) {
      roundBigInts(msg);
      return false;
    }
    const error = unsafeIntegerError(this.#incomingAction(msg), msg);
    if (error === undefined) return false;
    this.#failIncoming(msg, error);
    return true;
  }

  /**
   * Fails what `msg` belongs to when it came in text nested too deep for the
   * exact read (past `EXACT_JSON_DEPTH`) and holds a number that may have
   * been an integer beyond ±2^53 (read rounded): with either `integers`
   * mode, such data cannot reach the caller as sent. The reviver that makes
   * exact integers recursed, and overflowed the stack on such text: that
   * failed the whole connection (every call on the worker, and the worker).
   * Anything that is not data is passed on, as {@linkcode #refuseUnsafe} does.
   */
  #refuseInexact(msg: SessionMessage): boolean {
    // Only a message that was itself read so: a batch frame's others were
    // read exactly.
    const depth = this.#exact.inexactDepthOf(msg);
    if (depth === undefined || !this.#isData(msg) || !holdsUnsafeNumber(msg)) {
      return false;
    }
    this.#failIncoming(
      msg,
      new SerializationError(
        `${
          this.#incomingAction(msg)
        }: it is nested ${depth} levels deep and holds an integer beyond ±2^53, which the host reads exactly only within ${EXACT_JSON_DEPTH} levels`,
        { details: { depth, limit: EXACT_JSON_DEPTH } },
      ),
    );
    return true;
  }

  /** Whether `msg` is data a caller receives (a result, an item, a host command's arguments). */
  #isData(msg: SessionMessage): boolean {
    return !this.#handshaking &&
      (typeof msg.cmd === "string" ||
        (typeof msg.event === "string"
          ? msg.event === "item"
          : msg.ok !== false));
  }

  /** "Cannot complete executeModel", ...: how an error about incoming `msg` starts. */
  #incomingAction(msg: SessionMessage): string {
    const id = msg.id;
    const cmd = typeof msg.cmd === "string"
      ? msg.cmd
      : typeof id === "number"
      ? this.#pending.get(id)?.cmd
      : undefined;
    return typeof msg.cmd === "string"
      ? `Cannot run host command ${cmd}`
      : cmd !== undefined
      ? `Cannot complete ${cmd}`
      : `Cannot read ${
        typeof msg.event === "string" ? `event ${msg.event}` : `reply ${id}`
      }`;
  }

  /**
   * Waits for an incoming message's async middleware (a spilled reply being
   * read); the read loop reads nothing meanwhile, so the peer's next bytes
   * wait in the socket: `lastActivity` counts this time as the peer's.
   */
  async #awaitIncoming(later: Promise<void>): Promise<void> {
    this.#incomingBusy = true;
    try {
      await later;
    } finally {
      this.#incomingBusy = false;
      this.#incomingDone = Date.now();
    }
  }

  /** Dispatches one incoming message, through the incoming middleware once the session is open. */
  #receive(msg: SessionMessage): Promise<void> | undefined {
    if (this.#incoming.length === 0 || this.#handshaking) {
      this.#dispatch(msg);
      return undefined;
    }
    return this.#receiveThroughMiddleware(msg);
  }

  /**
   * Runs the incoming middleware in order, then dispatches. Synchronous while
   * every hook is (no promise, no microtask per message); when a hook returns
   * a promise, returns one that the read loop waits for, so messages keep
   * their order.
   */
  #receiveThroughMiddleware(
    msg: SessionMessage,
    from = 0,
    current: SessionMessage = msg,
  ): Promise<void> | undefined {
    const incoming = this.#incoming;
    for (let i = from; i < incoming.length; i++) {
      const mw = incoming[i]!;
      let out: SessionMessage | void | Promise<SessionMessage | void>;
      try {
        out = mw.incoming!(current, this);
      } catch (err) {
        this.#failIncoming(msg, middlewareError(mw, "incoming", err));
        return undefined;
      }
      if (isThenable(out)) {
        const at = current;
        return Promise.resolve(out).then(
          (next) => this.#receiveThroughMiddleware(msg, i + 1, next ?? at),
          (err) =>
            this.#failIncoming(msg, middlewareError(mw, "incoming", err)),
        );
      }
      current = out ?? current;
    }
    if (!this.#closed) this.#dispatch(current);
    return undefined;
  }

  /** An incoming hook failed on `msg`: the request it answers fails, a command gets an error reply. */
  #failIncoming(msg: SessionMessage, error: Error): void {
    const id = msg.id;
    if (typeof id === "number" && typeof msg.cmd === "string") {
      this.#reply(id, false, wireError(error));
    } else if (typeof id === "number" && typeof msg.event !== "string") {
      // Still its reply: the call no longer holds the server's loop.
      if (id === this.#heldBy) this.#heldBy = 0;
      this.#ignored.delete(id);
      this.#settle(id, undefined, error);
      // A late reply (the request was given up on) that a hook failed on: still an answer.
      if (this.#late.size > 0) this.#lateDone(id);
    } else if (typeof id === "number" && this.#pending.get(id) !== undefined) {
      // An event of a request still running (a stream's item): the request fails, the server is told.
      this.#expire(id, error);
    } else {
      this.#logger.warn("Dropped incoming message {id}: {error}", {
        id,
        error,
      });
    }
  }

  #dispatch(msg: SessionMessage): void {
    if (msg.$bytes !== undefined) {
      const error = decodeBytes(msg);
      if (error !== undefined) {
        this.#failIncoming(msg, error);
        return;
      }
    }
    const id = msg.id;
    if (typeof msg.event === "string") {
      this.#dispatchEvent(msg, id);
    } else if (typeof msg.cmd === "string") {
      if (typeof id === "number") this.#host.serve(msg, id, this);
      else {this.#logger.warn(
          "Ignored host command {cmd} without an integer id",
          { cmd: msg.cmd },
        );}
    } else if (typeof id === "number") {
      if (id === this.#heldBy) this.#heldBy = 0;
      if (!this.#settle(id, msg, undefined) && !this.#ignored.delete(id)) {
        this.#logger.warn("Ignored a reply for unknown request {id}", { id });
      }
      if (this.#late.size > 0) this.#lateDone(id);
    } else if (msg.ok === false) {
      // The server could not attribute the error (a corrupted frame of ours): no request can be trusted.
      const cause = errorFromWire(msg.error);
      this.#shutdown(
        `the server reported an error for no request (${cause.message})`,
        cause,
      );
    } else {
      this.#logger.warn("Ignored a message of unknown shape: {keys}", {
        keys: Object.keys(msg),
      });
    }
  }

  #dispatchEvent(msg: SessionMessage, id: unknown): void {
    if (this.#hello !== undefined) {
      if (msg.event === "hello") this.#hello.resolve(msg);
      else {this.#logger.debug("Ignored event {event} before hello", {
          event: msg.event,
        });}
      return;
    }
    if (msg.event === "busy") this.#busy(msg.request, msg.model);
    const pending = typeof id === "number" ? this.#pending.get(id) : undefined;
    if (pending?.onEvent !== undefined) {
      try {
        pending.onEvent(msg);
      } catch (error) {
        this.#logger.warn(
          "The onEvent callback of request {id} threw: {error}",
          { id, error },
        );
      }
      return;
    }
    for (const listener of this.#listeners) {
      try {
        listener(msg);
      } catch (error) {
        this.#logger.warn("An event listener threw: {error}", { error });
      }
    }
  }

  /**
   * A `busy` event (protocol §4): the server's event loop is held by call
   * `request`. It proves the peer alive (its bytes count in
   * {@linkcode Session.lastActivity}) only while this side still waits for
   * that call: one that timed out or was aborted cannot be cancelled while
   * it holds the loop, so the heartbeat must not be fooled into waiting for
   * it forever.
   */
  #busy(request: unknown, model: unknown): void {
    if (typeof request === "number" && typeof model === "string") {
      this.#heldBy = request;
      this.#heldByModel = model;
    }
    if (
      typeof request !== "number" || this.#pending.get(request) === undefined
    ) {
      this.#lastReceived = this.#receivedBefore;
    }
  }

  /** Settles pending request `id` with a reply or an error; false when it is not pending. */
  #settle(
    id: number,
    reply: SessionMessage | undefined,
    error: Error | undefined,
  ): boolean {
    const pending = this.#pending.get(id);
    if (pending === undefined) return false;
    this.#pending.delete(id);
    pending.dispose();
    pending.takeDone()?.();
    if (error !== undefined) pending.reject(error);
    else if (reply!.ok === true) {
      // The model's status and headers (protocol §6, `http`): a reply
      // without them pays this one test.
      if (reply!.http !== undefined) this.#responseMeta(pending, reply!.http);
      pending.resolve(reply!.result);
    } else pending.reject(errorFromWire(reply!.error));
    return true;
  }

  /** Hands a reply's `http` to its request's `onResponseMeta`. */
  #responseMeta(pending: Pending, http: unknown): void {
    deliverResponseMeta(
      http,
      pending.onMeta,
      (message, properties) =>
        this.#logger.warn(`${message} (request {id})`, {
          ...properties,
          id: pending.id,
        }),
    );
  }

  /** Calls every waiting `onDone` (the session closed, or the set was cleared). */
  #lateAllDone(): void {
    const late = [...this.#late.values()];
    this.#late.clear();
    for (const { done } of late) done();
  }

  /** The server answered (or will never answer) a request given up on here. */
  #lateDone(id: number): void {
    const late = this.#late.get(id);
    if (late === undefined) return;
    this.#late.delete(id);
    late.done();
  }

  #expire(id: number, why: "timeout" | "abort" | Error): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    const error = why instanceof Error
      ? why
      : why === "timeout"
      ? new TimeoutError(
        `Cannot complete ${pending.cmd}: timed out after ${pending.timeout} ms`,
      )
      : new CancelledError(`Cannot complete ${pending.cmd}: aborted`, {
        cause: pending.signal?.reason,
      });
    // This very call holds the server's loop (not one queued behind it):
    // the pool marks its model threaded (docs/reliability.md).
    if (
      why === "timeout" && id === this.#heldBy &&
      this.#heldByModel !== undefined
    ) markHeldLoop(error, this.#heldByModel);
    // The server may still be working on it: done when it answers.
    const done = pending.takeDone();
    if (done !== undefined) {
      this.#late.set(id, { done, cmd: pending.cmd, args: pending.args });
    }
    this.#settle(id, undefined, error);
    this.#ignored.add(id);
    // A peer that never answers must not grow the set forever.
    if (this.#ignored.size > 100_000) {
      this.#ignored.clear();
      this.#lateAllDone();
    }
    // Still in async outgoing middleware (a large message being spilled):
    // a cancel sent now would reach the server first, find nothing, and the
    // request would then run to its end. It follows the request instead.
    if (pending.queued) this.#fireAndForget("cancel", { target: id });
    else pending.cancelWhenQueued = true;
  }

  // -------------------------------------------------------------------------
  // Shutdown

  /** The error a request gets once the session is closed; its cause is the root cause. */
  #lostError(cmd: string): ConnectionLostError {
    const cause = this.#closeCause;
    const inFlight = this.#inFlightAtClose;
    return new ConnectionLostError(
      `Cannot complete ${cmd}: ${this.#closeReason}`,
      {
        ...(cause === undefined ? {} : { cause }),
        ...(inFlight === undefined ? {} : { details: { inFlight } }),
      },
    );
  }

  /**
   * The requests that were in flight when the session closed, counted by
   * model (or command): what the process was running if it died. `undefined`
   * while open, or when nothing was in flight.
   *
   * @example
   * ```ts ignore
   * await session.closed;
   * console.log(session.inFlightAtClose?.byName); // { bad: 1, plain: 3 }
   * ```
   */
  get inFlightAtClose(): InFlight | undefined {
    return this.#inFlightAtClose;
  }

  /**
   * The requests given up on here (timed out, aborted) that the server had
   * not answered yet when the session closed, counted as
   * {@linkcode Session.inFlightAtClose} counts the others; `undefined`
   * while open, and when there were none. Their callers had their answer
   * already, but the server still ran them: a call that hung its worker is
   * often among them (an inline call holding the server's loop, a thread
   * stuck in C), its victims among `inFlightAtClose`.
   *
   * @example
   * ```ts ignore
   * await session.closed;
   * console.log(session.givenUpAtClose?.byName); // { spin: 1 }
   * ```
   */
  get givenUpAtClose(): InFlight | undefined {
    return this.#givenUpAtClose;
  }

  /**
   * The model whose call holds the server's event loop (an inline call, §6
   * of the protocol, that has run long enough for `busy` events), from its
   * first `busy` event until its reply arrives, even after this side gave
   * up on it (timed out, aborted); `undefined` otherwise. The pool reads
   * it when it kills the process for answering nothing (and the timeout of
   * that very call carries its model): it then runs that model's calls
   * threaded (docs/reliability.md). A process that dies of another cause while it
   * is set says nothing about that call.
   *
   * @example
   * ```ts ignore
   * await assert.rejects(session.request("executeModel", { name: "slow-sometimes" }, { timeout: 500 }));
   * console.log(session.loopHeldBy); // "slow-sometimes"
   * ```
   */
  get loopHeldBy(): string | undefined {
    return this.#heldBy === 0 ? undefined : this.#heldByModel;
  }

  /** Closes once: settles everything, then releases the connection. */
  #shutdown(reason?: string, cause?: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    if (reason !== undefined) {
      this.#closeReason = reason;
      this.#logger.debug("Session closed: {reason}", { reason, cause });
    }
    this.#closeCause = cause;
    if (this.#hello !== undefined) {
      this.#hello.promise.catch(() => {});
      this.#hello.reject(this.#lostError("handshake"));
    }
    const pending = this.#pending.drain();
    this.#inFlightAtClose = countInFlight(pending);
    this.#givenUpAtClose = countInFlight([...this.#late.values()]);
    this.#deadlines.clear();
    for (const p of pending) {
      p.dispose();
      p.takeDone()?.();
      p.reject(this.#lostError(p.cmd));
    }
    this.#lateAllDone();
    this.#host.abortAll(
      new ConnectionLostError(
        `Cannot complete host command: ${this.#closeReason}`,
      ),
    );
    void this.#release();
  }

  async #release(): Promise<void> {
    await this.#outbox.close(1000);
    this.#conn.close();
    await this.#reader?.cancel().catch(() => {});
    await this.#readDone;
    await this.#outbox.done;
    this.#closedDone.resolve();
  }
}

/**
 * A middleware failure, named after the middleware. A pyproxy error (a
 * `PluginError` already, or a typed error such as `SpillError` thrown on
 * purpose) is kept as it is.
 */
function middlewareError(
  mw: SessionMiddleware,
  direction: string,
  err: unknown,
): Error {
  if (err instanceof PyProxyError) return err;
  return new PluginError(
    `Cannot run ${direction} middleware '${mw.name}': ${describe(err)}`,
    {
      cause: err,
      details: { plugin: mw.name, hook: direction },
    },
  );
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Milliseconds left before `deadline` (`Infinity`: no limit), at least 0. */
function timeLeft(deadline: number): number {
  return deadline === Infinity ? Infinity : Math.max(0, deadline - Date.now());
}

/**
 * A model's spec as the server takes it in `addModel` and `updateModel`:
 * `timeout`, `workers` and `version` are the pool's (host-only), not the
 * server's.
 */
function wireSpecOf(name: string, spec: ModelSpec): Record<string, unknown> {
  const {
    timeout: _timeout,
    workers: _workers,
    version: _version,
    ...wire
  } = spec;
  return { ...wire, name };
}

/** Lower-case hex, as the server writes its MACs. */
const HEX = /^[0-9a-f]*$/;

/**
 * Whether the server's `serverMac` (any JSON it sent) is the hex of
 * `expected`, compared in constant time: a `!==` on the strings stops at the
 * first differing character, so the time of each refusal told an impostor
 * how much of a guess was right. The format and length checked first are no
 * secret.
 */
function macMatches(mac: unknown, expected: Buffer): boolean {
  return typeof mac === "string" && mac.length === expected.length * 2 &&
    HEX.test(mac) && timingSafeEqual(Buffer.from(mac, "hex"), expected);
}

/**
 * Who made a request, from its arguments as sent: an `executeBatch`'s
 * `callers` (each a string or `null`), else its `caller` as a list of one
 * (`[null]` without one: an eval, a call of no caller's).
 */
function requestCallers(
  args: Record<string, unknown> | undefined,
): readonly (string | null)[] {
  const callers = args?.callers;
  if (Array.isArray(callers)) {
    return callers.map((c) => typeof c === "string" ? c : null);
  }
  return [typeof args?.caller === "string" ? args.caller : null];
}
