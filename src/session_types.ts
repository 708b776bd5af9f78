/**
 * The types of {@linkcode Session}'s API (kept apart so the session file
 * holds only behaviour).
 *
 * @module
 */
import type { Session } from "./session.ts";

/**
 * A message on the wire (request, reply or event) as a plain JSON object.
 *
 * @example
 * ```ts
 * import type { SessionMessage } from "@pyproxy/pyproxy";
 * const msg: SessionMessage = { id: 1, cmd: "ping" };
 * console.log(msg.cmd);
 * ```
 */
export type SessionMessage = Record<string, unknown>;

/**
 * Per-request options of {@linkcode Session.request} and the typed helpers.
 *
 * @example
 * ```ts
 * import type { RequestOptions } from "@pyproxy/pyproxy";
 * const options: RequestOptions = { timeout: 1000, onEvent: (event) => console.log(event) };
 * console.log(options.timeout);
 * ```
 */
export interface RequestOptions {
  /**
   * Milliseconds before the request rejects with `TimeoutError` (and `cancel`
   * is sent): a number >= 0; `0` rejects at once without sending, `Infinity`
   * (or absent) means none. Anything else rejects with `ConfigError`.
   */
  timeout?: number;
  /** Aborting rejects the request with `CancelledError` (and sends `cancel`). */
  signal?: AbortSignal;
  /** Receives the events the server sends with this request's `id` (e.g. `output`). */
  onEvent?: (event: SessionMessage) => void;
  /**
   * Called once, when the server is done with the request: as it settles,
   * except after a timeout or an abort here, when the server may still be
   * working on it: then when its late reply (to the `cancel`) arrives, or the
   * session closes. Also called (at once) for a request refused before it
   * was sent. The pool uses it to count a worker busy until then.
   */
  onDone?: () => void;
  /**
   * Receives the HTTP status and headers the model chose for its success
   * (`host.set_status`, `host.set_header`: the reply's `http`, protocol
   * §6), just before the request resolves; not called when the model set
   * none, nor for an error (whose status and headers are the
   * `ModelHTTPError`'s). A throw is logged, the request resolves anyway.
   */
  onResponseMeta?: (meta: ResponseMeta) => void;
}

/**
 * The HTTP status and headers a model chose for its success
 * (docs/models.md, "Statuses and headers"): what
 * {@linkcode RequestOptions.onResponseMeta} (and `pool.execute`'s,
 * `pool.executeStream`'s) receives. The gateway sends the status and the
 * headers its allow-list takes.
 *
 * @example
 * ```ts
 * import type { ResponseMeta } from "@pyproxy/pyproxy";
 * const meta: ResponseMeta = { status: 201, headers: { Location: "/items/7" } };
 * console.log(meta.status); // 201
 * // await pool.execute("items", { name: "x" }, { onResponseMeta: (m) => console.log(m.status) });
 * ```
 */
export interface ResponseMeta {
  /** From 200 to 299 (`host.set_status`); absent when the model set headers only. */
  status?: number;
  /** Header names as the model wrote them → values (`host.set_header`); absent when none. */
  headers?: Record<string, string>;
}

/**
 * Options of {@linkcode Session.execute}: a request's options and the
 * call's request id.
 *
 * @example
 * ```ts
 * import type { SessionExecuteOptions } from "@pyproxy/pyproxy";
 * const options: SessionExecuteOptions = { timeout: 1000, requestId: "req-42" };
 * console.log(options.requestId); // "req-42"
 * ```
 */
export interface SessionExecuteOptions extends RequestOptions {
  /**
   * Sent with the call (protocol §6, `requestId`): the model reads it with
   * `host.request_id()`, and its `log` events carry it. 1 to 128 characters
   * of `A-Za-z0-9._:-`; anything else rejects with `ConfigError`.
   */
  requestId?: string;
  /**
   * The media type of a `msg` that is bytes (protocol §6, `contentType`):
   * the model reads it with `host.content_type()`. 1 to 256 printable ASCII
   * characters; anything else rejects with `ConfigError`.
   */
  contentType?: string;
  /**
   * Request headers for the model (protocol §6, `headers`): it reads them
   * with `host.headers()`. At most 64 lower-case HTTP header names →
   * strings of at most 8192 characters without CR, LF or NUL; anything
   * else rejects with `ConfigError`.
   */
  headers?: Record<string, string>;
}

/**
 * How to load a model: exactly one of `file` (relative to the server's
 * `--path`) or `source`; `options` are passed to the class constructor;
 * `class` picks the class when the code defines several.
 *
 * @example
 * ```ts
 * import type { ModelSpec } from "@pyproxy/pyproxy";
 * const spec: ModelSpec = { file: "doubler.py", options: { k: 2 } };
 * console.log(spec.file);
 * ```
 */
export interface ModelSpec {
  /** A Python file relative to the server's `--path`. */
  file?: string;
  /** Python source code. */
  source?: string;
  /**
   * Options of the model: passed to its constructor as one dict,
   * `Model(options)` (or `Model()` when the constructor takes no argument);
   * not as keyword arguments (docs/models.md).
   */
  options?: Record<string, unknown>;
  /** The class to use when the code defines several. */
  class?: string;
  /**
   * The default timeout of the model's calls, in ms, for a `Pool`: calls
   * that give no `timeout` of their own get this one instead of the pool's
   * `requestTimeout`, and it wins over the class's `timeout_ms`
   * (docs/models.md, "Timeouts and cancellation"). An integer from 1 to
   * 2^31 − 1, or `Infinity` for none; anything else rejects the
   * `addModel`/`updateModel` with `ConfigError`. Host-only: never sent to
   * Python (a `Session` leaves it out). An `updateModel` without it drops
   * it.
   * @default {the class's timeout_ms, else the pool's requestTimeout}
   */
  timeout?: number;
  /**
   * How many of a `Pool`'s workers load the model (docs/models.md,
   * "Placement"): an integer from 1 to 1024. The pool picks the slots (the
   * ready ones holding the fewest placed models first, then in slot order)
   * and routes the model's calls to them only. A number above the pool's
   * size loads it on every worker and is kept: a pool that grows places it
   * on new workers until it has that many. Absent: every worker, as
   * without it. Host-only: never sent to Python (a `Session` leaves it
   * out). An `updateModel` with another number moves the model.
   * @default {every worker}
   */
  workers?: number;
  /**
   * The version label of this spec, for a `Pool` serving several versions
   * of the model at once (docs/models.md, "Versions"): 1 to 64 letters,
   * digits, `_ . -`, starting with a letter or digit (`"1"`, `"2026-12"`);
   * anything else rejects with `ConfigError`. `addModel` adds that version
   * beside the others (the first one added is the default, the one calls
   * without a `version` get), `updateModel` replaces that version only. A
   * name is loaded either with versions or without. Host-only: the workers
   * know a version as the model `name@version` (a `Session` leaves it out).
   * @default {no version: one model of that name, as before}
   */
  version?: string;
}

/**
 * What the server says about a loaded model (protocol §6).
 *
 * @example
 * ```ts
 * import type { ModelDescription } from "@pyproxy/pyproxy";
 * const d: ModelDescription = { name: "doubler", class: "Model", version: 1 };
 * console.log(d.version);
 * ```
 */
export interface ModelDescription {
  /** The model name. */
  name: string;
  /** The Python class used. */
  class: string;
  /** The file it was loaded from, if any. */
  file?: string;
  /** 1 after `addModel`, incremented by each `updateModel`. */
  version: number;
  /**
   * Declared input fields: name → type name (`"number?"`), or a dict of
   * the field's type and constraints (docs/models.md "Constraints").
   */
  inputs?: Record<string, string | Record<string, unknown>>;
  /**
   * Declared output fields: name → type name, or a dict of a tensor's
   * `type`, `items` and `datatype` (docs/models.md "The Open Inference
   * Protocol").
   */
  outputs?: Record<string, string | Record<string, unknown>>;
  /** The class docstring. */
  doc?: string;
  /** The class's `timeout_ms`: its author's default timeout of a call, in ms. */
  timeoutMs?: number;
  /** Other fields the server adds. */
  [key: string]: unknown;
}

/**
 * The `hello` event merged with the `auth` reply.
 *
 * @example
 * ```ts
 * import type { ServerInfo } from "@pyproxy/pyproxy";
 * const info: ServerInfo = { serverId: "w1", pid: 4242, version: 1, auth: "hmac-sha256" };
 * console.log(info.serverId);
 * ```
 */
export interface ServerInfo {
  /** The server's `--id`. */
  serverId: string;
  /** The server's process id. */
  pid: number;
  /** Protocol version (1). */
  version: number;
  /** `"hmac-sha256"` or `"none"`. */
  auth: string;
  /** The connection id the server assigned (after `auth`). */
  connection?: string;
  /** The largest payload the server accepts (after `auth`). */
  maxFrameSize?: number;
  /** Other fields the server adds. */
  [key: string]: unknown;
}

/**
 * The `serverStatus` result (protocol §6).
 *
 * @example
 * ```ts
 * import type { ServerStatus } from "@pyproxy/pyproxy";
 * const show = (s: ServerStatus): string => `${s.id}: ${s.requestsServed} served`;
 * console.log(typeof show);
 * ```
 */
export interface ServerStatus {
  /** The server's `--id`. */
  id: string;
  /** Its process id. */
  pid: number;
  /** Seconds since it started. */
  uptime: number;
  /** Requests answered so far. */
  requestsServed: number;
  /** The loaded models. */
  models: unknown;
  /** Open connections. */
  connections: number;
  /** Requests running now. */
  inFlight: number;
  /** Python version information. */
  python: unknown;
  /**
   * Reads the server made while polling a fast client's socket instead of
   * sleeping (server `--spin-us`; absent from servers before it).
   */
  spinReads?: number;
  /**
   * Calls in flight that hold no thread: streams parked until their reader
   * catches up (protocol §6; absent from servers before it).
   */
  parkedCalls?: number;
  /**
   * Batch frames (protocol §3) the server received from and sent to its
   * clients (absent from servers before them).
   */
  batchFrames?: { received: number; sent: number };
  /**
   * The server's threads (absent from servers before them): `size` call
   * threads (`--threads`), `running` and `idle` ones, `stuck` ones (blocked
   * in a cancelled call, replaced), `replaced` ever, and the `elastic`
   * threads of evals and model commands (`elasticBusy` of them running).
   */
  threads?: {
    size: number;
    running: number;
    idle: number;
    stuck: number;
    replaced: number;
    elastic: number;
    elasticBusy: number;
    /** Evals and model commands still running 0.5 s after their cancel. */
    elasticStuck?: number;
  };
  /**
   * Eval sessions open on all of the server's connections (at most
   * `--max-eval-sessions` per connection; absent from servers before it).
   */
  evalSessions?: number;
  /** Why the server reported itself wedged (protocol §6), else `null` (absent from servers before it). */
  wedged?: string | null;
  /** Other fields the server adds. */
  [key: string]: unknown;
}

/**
 * What a Python → host handler receives besides its arguments. `signal`
 * aborts when the server cancels the call or the session closes.
 *
 * @example
 * ```ts
 * import type { HandlerCall } from "@pyproxy/pyproxy";
 * const log = (call: HandlerCall): void => console.log(call.id, call.signal.aborted);
 * console.log(typeof log);
 * ```
 */
export interface HandlerCall {
  /** The session the command came in on. */
  session: Session;
  /** The request id chosen by the server. */
  id: number;
  /** Aborted when the call is cancelled or the session closes. */
  signal: AbortSignal;
  /**
   * Who made the call whose code sent the command (its `call`, protocol
   * §7): that request's `caller` as a list of one (`[null]` without one),
   * an `executeBatch`'s `callers`. Absent when the command names no call
   * (a server of before, code run outside a call) or one this side no
   * longer awaits.
   */
  callers?: readonly (string | null)[];
  /**
   * `true` when the command names a call this side no longer awaits (code
   * the call left running, a thread it started): who made it is not known,
   * and it may have been a tenant (the gateway's `publish` then refuses
   * every channel when it has tenants). Absent otherwise.
   */
  callEnded?: true;
}

/**
 * Handles a Python → host command (protocol §7): the return value (or what
 * the promise resolves to) is the reply's `result`; a thrown error becomes
 * an error reply.
 *
 * @example
 * ```ts
 * import type { SessionHandler } from "@pyproxy/pyproxy";
 * const add: SessionHandler = (args) => (args as { a: number; b: number }).a + (args as { a: number; b: number }).b;
 * console.log(typeof add);
 * ```
 */
export type SessionHandler = (
  args: unknown,
  call: HandlerCall,
) => unknown | Promise<unknown>;

/**
 * Sees (and may replace) every message after the handshake: `outgoing` for
 * requests, replies and `cancel` the session sends, `incoming` for replies,
 * events and requests it receives. Hooks run in order; returning `undefined`
 * keeps the message. A throwing hook fails only the request concerned, with
 * a `PluginError` naming the middleware.
 *
 * @example Count messages
 * ```ts
 * import type { SessionMiddleware } from "@pyproxy/pyproxy";
 * let sent = 0;
 * const counter: SessionMiddleware = { name: "counter", outgoing: (msg) => (sent++, msg) };
 * console.log(counter.name);
 * ```
 */
export interface SessionMiddleware {
  /** Names the middleware in errors and logs. */
  name: string;
  /** Transforms an outgoing message. */
  outgoing?(
    msg: SessionMessage,
    session: Session,
  ): SessionMessage | Promise<SessionMessage>;
  /** Transforms an incoming message. */
  incoming?(
    msg: SessionMessage,
    session: Session,
  ): SessionMessage | Promise<SessionMessage>;
}
