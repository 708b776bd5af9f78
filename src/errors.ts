/**
 * Every error pyproxy throws or rejects with. Each class has a stable `name`
 * (the same string the Python side puts in `error.type`) and a stable `code`
 * that programs can switch on.
 *
 * @module
 */

/**
 * Options accepted by every pyproxy error constructor.
 *
 * @example
 * ```ts
 * import { PyProxyError } from "@pyproxy/pyproxy";
 * const err = new PyProxyError("Cannot load model: file missing", {
 *   cause: new Error("ENOENT"),
 *   details: { file: "doubler.py" },
 * });
 * console.log(err.details); // { file: "doubler.py" }
 * ```
 */
export interface PyProxyErrorOptions {
  /** The underlying error, kept for diagnostics. */
  cause?: unknown;
  /** Extra fields carried by the error (for example from a Python error reply). */
  details?: Record<string, unknown>;
}

/**
 * Base class of the domain errors. Catch it to handle every pyproxy failure.
 *
 * @example Switch on the stable code
 * ```ts
 * import { PyProxyError } from "@pyproxy/pyproxy";
 * try {
 *   throw new PyProxyError("Cannot run: example");
 * } catch (err) {
 *   if (err instanceof PyProxyError) console.log(err.code); // "PYPROXY_ERROR"
 * }
 * ```
 */
export class PyProxyError extends Error {
  /** Stable machine-readable code, e.g. `"TIMEOUT"`. */
  readonly code: string = "PYPROXY_ERROR";
  /** Extra fields (for errors that came over the wire: every field of the error object). */
  readonly details: Record<string, unknown>;
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(
      message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "PyProxyError";
    this.details = options.details ?? {};
  }
}

function defineName<T extends abstract new (...args: never[]) => Error>(
  cls: T,
  name: string,
): void {
  Object.defineProperty(cls.prototype, "name", {
    value: name,
    writable: true,
    configurable: true,
    enumerable: false,
  });
}

// ---------------------------------------------------------------------------
// Wire errors: bad bytes. These extend SyntaxError (the bytes do not parse).

/**
 * The bytes on a connection do not form a valid frame (wrong begin marker,
 * unknown version, length above the limit, bad end marker, payload not a JSON
 * object). The connection is closed: there is no way to resynchronise.
 *
 * @example
 * ```ts
 * import { FrameError } from "@pyproxy/pyproxy";
 * const err = new FrameError("Cannot decode frame: bad begin marker");
 * console.log(err.code); // "FRAME_INVALID"
 * ```
 */
export class FrameError extends SyntaxError {
  /** Stable code. */
  readonly code: string = "FRAME_INVALID";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(
      message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
  }
}
defineName(FrameError, "FrameError");

/**
 * A frame's payload does not match its MD5 checksum. The frame length was
 * still trusted, so the stream stays aligned and the connection usable.
 *
 * @example
 * ```ts
 * import { ChecksumError } from "@pyproxy/pyproxy";
 * console.log(new ChecksumError("Cannot verify frame: md5 mismatch").code); // "CHECKSUM_MISMATCH"
 * ```
 */
export class ChecksumError extends SyntaxError {
  /** Stable code. */
  readonly code: string = "CHECKSUM_MISMATCH";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(
      message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
  }
}
defineName(ChecksumError, "ChecksumError");

/**
 * A payload is not valid UTF-8 JSON, or not a JSON object.
 *
 * @example
 * ```ts
 * import { ProtocolError } from "@pyproxy/pyproxy";
 * console.log(new ProtocolError("Cannot parse payload: not an object").code); // "PROTOCOL_ERROR"
 * ```
 */
export class ProtocolError extends SyntaxError {
  /** Stable code. */
  readonly code: string = "PROTOCOL_ERROR";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(
      message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
  }
}
defineName(ProtocolError, "ProtocolError");

// ---------------------------------------------------------------------------
// Domain errors.

// Each class is spelled out (not made by a factory) so that JSR's fast check
// and `deno doc --lint` see a plain `extends PyProxyError`.

/**
 * The connection to a Python server ended while the request was pending.
 * A session's carries `details.inFlight` (its `inFlightAtClose`: what was
 * pending when it closed, by model) when anything was.
 *
 * @example
 * ```ts
 * import { ConnectionLostError } from "@pyproxy/pyproxy";
 * console.log(new ConnectionLostError("Cannot complete request: connection closed").code); // "CONNECTION_LOST"
 * ```
 */
export class ConnectionLostError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "CONNECTION_LOST";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "ConnectionLostError";
  }
}
defineName(ConnectionLostError, "ConnectionLostError");

/**
 * A request did not settle within its timeout.
 *
 * @example
 * ```ts
 * import { TimeoutError } from "@pyproxy/pyproxy";
 * console.log(new TimeoutError("Cannot complete request: timed out after 5 ms").code); // "TIMEOUT"
 * ```
 */
export class TimeoutError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "TIMEOUT";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "TimeoutError";
  }
}
defineName(TimeoutError, "TimeoutError");

/**
 * A request was cancelled by its `AbortSignal` (or the running code was interrupted).
 * Its `cause` is the signal's `reason`, whether the signal aborted before the
 * call was sent, while it waited in the pool queue or while it ran (a call of
 * a model that batches, `batch_size`, too): an
 * `AbortSignal.timeout()`'s is a `DOMException` named `"TimeoutError"`, which
 * tells a deadline of the caller's from a cancel.
 *
 * @example
 * ```ts
 * import { CancelledError } from "@pyproxy/pyproxy";
 * console.log(new CancelledError("Cannot complete request: aborted").code); // "CANCELLED"
 * ```
 *
 * @example A deadline of the caller's, told from a cancel
 * ```ts ignore
 * try {
 *   await pool.execute("scorer", msg, { signal: AbortSignal.timeout(500) });
 * } catch (err) {
 *   if (
 *     err instanceof CancelledError &&
 *     (err.cause as Error | undefined)?.name === "TimeoutError"
 *   ) console.log("took more than 500 ms");
 * }
 * ```
 */
export class CancelledError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "CANCELLED";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "CancelledError";
  }
}
defineName(CancelledError, "CancelledError");

/**
 * A model stream's reader took no item for the stream's idle timeout
 * (`idleTimeout`, `PoolOptions.streamIdleTimeout`): the stream was cancelled
 * (the model's generator closed, its items dropped) and its next read
 * rejects with this. Not a `TimeoutError`: the model and its worker were
 * fine, the reader was away (a forgotten stream, an HTTP client that stopped
 * reading). `details.idleTimeout` is the timeout in ms.
 *
 * @example
 * ```ts
 * import { StreamIdleError } from "@pyproxy/pyproxy";
 * const err = new StreamIdleError("Cannot read stream of tokens: no item taken for 60000 ms (idle timeout: the stream's idleTimeout, else the pool's streamIdleTimeout)");
 * console.log(err.code); // "STREAM_IDLE"
 * ```
 */
export class StreamIdleError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "STREAM_IDLE";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "StreamIdleError";
  }
}
defineName(StreamIdleError, "StreamIdleError");

/**
 * The worker running the call died (process exit, signal, lost connection).
 * At-most-once: the call may or may not have run.
 *
 * A pool's error says what the process was running when it died, so that
 * the call that took it down can be told from the others lost with it:
 * `details.call` is this call's model (or command, e.g. `"eval"`),
 * `details.inFlight` the calls in flight on that process by model (or
 * command; the host's own, such as a heartbeat's `ping`, left out; at most
 * 10 names, the oldest call's first) and
 * `details.inFlightCalls` how many there were in all; its message ends
 * with the same (`"... died: exited with code 3 while running: bad
 * (1 call), plain (3)"`). Also `details.worker`, `pid`, `code`, `signal`,
 * `reason` and `cmd` (this call's command: `"executeModel"` for a batched
 * call too, as its caller called). A version's calls are named by
 * its internal name (`"bad@2"`): `details.model` and `details.version` name
 * this call's version, `details.inFlightVersions` maps each such name in
 * `inFlight` to its `{model, version}` (both absent without versions).
 *
 * @example
 * ```ts
 * import { WorkerCrashedError } from "@pyproxy/pyproxy";
 * console.log(new WorkerCrashedError("Cannot complete call: worker w1 exited").code); // "WORKER_CRASHED"
 * ```
 */
export class WorkerCrashedError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "WORKER_CRASHED";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "WorkerCrashedError";
  }
}
defineName(WorkerCrashedError, "WorkerCrashedError");

/**
 * The pool refused a call at once because every worker is at its in-flight
 * bound and the queue is full; or a plugin refused it (a quota: a subclass
 * of its own). `details.retryAfterMs`, when set, says when to try again:
 * the gateway's 429 sends it as `Retry-After` (seconds, rounded up; `1`
 * without it).
 *
 * @example
 * ```ts
 * import { OverloadedError } from "@pyproxy/pyproxy";
 * console.log(new OverloadedError("Cannot accept call: queue full").code); // "OVERLOADED"
 * const quota = new OverloadedError("Cannot run call: quota used up", { details: { retryAfterMs: 60_000 } });
 * console.log(quota.details.retryAfterMs); // 60000: the gateway answers Retry-After: 60
 * ```
 */
export class OverloadedError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "OVERLOADED";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "OverloadedError";
  }
}
defineName(OverloadedError, "OverloadedError");

/**
 * A tenant's channels are at one of their bounds (a {@linkcode ChannelHub}
 * with `tenantOf`, as a gateway with tenants' tokens makes): a new channel
 * past `tenantMaxChannels` while all of its channels have subscribers, or a
 * subscriber past `tenantMaxSubscribers`. The gateway answers 429 (it is an
 * {@linkcode OverloadedError}). `details.bound` names the bound
 * (`"tenantMaxChannels"`, `"tenantMaxSubscribers"`), `details.limit` its
 * value; nothing of other tenants' channels.
 *
 * @example
 * ```ts
 * import { ChannelLimitError } from "@pyproxy/pyproxy";
 * const err = new ChannelLimitError("Cannot subscribe: ...", { details: { bound: "tenantMaxSubscribers", limit: 1000 } });
 * console.log(err.code, err.details.bound); // "CHANNEL_LIMIT" "tenantMaxSubscribers"
 * ```
 */
export class ChannelLimitError extends OverloadedError {
  /** Stable code. */
  override readonly code: string = "CHANNEL_LIMIT";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "ChannelLimitError";
  }
}
defineName(ChannelLimitError, "ChannelLimitError");

/**
 * A model's `host.publish` to a channel its call may not publish to: on a
 * gateway with tenants' tokens, a call a tenant made publishes only to that
 * tenant's channels (named by its token's id, `<id>.events`), as the
 * tenant's token itself does; a channel of another tenant's, or one of no
 * one's, is refused. `details.channel` names it. The model sees a
 * `HostError` whose `remote_type` is this name (docs/gateway.md, "A
 * tenant's channels").
 *
 * @example
 * ```ts
 * import { ChannelAccessError } from "@pyproxy/pyproxy";
 * const err = new ChannelAccessError("Cannot publish to channel \"news\": ...", { details: { channel: "news" } });
 * console.log(err.code, err.details.channel); // "CHANNEL_ACCESS" "news"
 * ```
 */
export class ChannelAccessError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "CHANNEL_ACCESS";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "ChannelAccessError";
  }
}
defineName(ChannelAccessError, "ChannelAccessError");

/**
 * The pool is closing (or closed), or the call's worker was removed by a
 * resize: the call was not run, or, with `details.started: true`, it ran
 * and was cut off when the close's (or the resize's) `shutdownGrace` ran
 * out (it may have done part of its work: retry it only if it is
 * idempotent).
 *
 * @example
 * ```ts
 * import { ShuttingDownError } from "@pyproxy/pyproxy";
 * console.log(new ShuttingDownError("Cannot accept call: pool is closing").code); // "SHUTTING_DOWN"
 * ```
 */
export class ShuttingDownError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "SHUTTING_DOWN";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "ShuttingDownError";
  }
}
defineName(ShuttingDownError, "ShuttingDownError");

/**
 * No worker is available (all failed or restarting past the wait limit).
 *
 * @example
 * ```ts
 * import { NoWorkerError } from "@pyproxy/pyproxy";
 * console.log(new NoWorkerError("Cannot route call: no worker is ready").code); // "NO_WORKER"
 * ```
 */
export class NoWorkerError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "NO_WORKER";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "NoWorkerError";
  }
}
defineName(NoWorkerError, "NoWorkerError");

/**
 * A model was taken out of service: placed on some workers only
 * (`ModelSpec.workers`), it kept crashing the workers it was placed on and
 * the pool stopped moving it to the next one (`PoolOptions.placement`,
 * docs/models.md, "Placement"); or it killed its worker twice soon after
 * its load (`PoolOptions.loadCrashWindow`, docs/reliability.md). Its calls
 * fail with this at once until it is updated (`updateModel`, `PUT
 * /v1/models/{name}`) or removed and added again; its
 * `pool.modelStatus(name)` entry has `failedReason`. `details.model` names
 * it (a version: its model's name, and `details.version` its label) and
 * `details.reason` says why; the same as data: `details.cmd` (the call's
 * command) and `details.lastExit` (how the last process it took down
 * ended, or `null`), then for a placed model `details.crashed` (the slots
 * it crashed, oldest first), `details.maxRelocations` and
 * `details.relocationWindow`, for a quarantined one `details.loadCrashes`
 * (each death: `worker`, `pid`, `reason`, `afterMs` after the load, the
 * last `stderr` line or `null`) and `details.loadCrashWindow`.
 * The gateway answers 503, its message worded from those in its own
 * settings (`limits.maxRelocations`, the `PUT` that clears it).
 *
 * @example
 * ```ts
 * import { ModelUnavailableError } from "@pyproxy/pyproxy";
 * const err = new ModelUnavailableError("Cannot route call executeModel: model 'llm' failed: ...", {
 *   details: { model: "llm", reason: "it crashed the workers it was placed on 3 times within 600000 ms (w2, w3, w4: ...)" },
 * });
 * console.log(err.code, err.details.model); // "MODEL_UNAVAILABLE" "llm"
 * ```
 */
export class ModelUnavailableError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "MODEL_UNAVAILABLE";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "ModelUnavailableError";
  }
}
defineName(ModelUnavailableError, "ModelUnavailableError");

/**
 * Python code raised. `type`, `message` and `traceback` come from Python.
 *
 * @example
 * ```ts
 * import { PythonError } from "@pyproxy/pyproxy";
 * const err = new PythonError("ValueError", "bad x", "Traceback ...");
 * console.log(err.type, err.code); // "ValueError" "PYTHON_ERROR"
 * ```
 */
export class PythonError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "PYTHON_ERROR";
  /** The Python exception class name, e.g. `"ValueError"`. */
  readonly type: string;
  /** The formatted Python traceback (may be empty). */
  readonly traceback: string;
  /** Creates the error. */
  constructor(
    type: string,
    message: string,
    traceback = "",
    options: PyProxyErrorOptions = {},
  ) {
    // Python's own traceback ends with "ValueError" alone for an empty
    // message (`raise ValueError()`, `sys.exit()`), not "ValueError: ".
    super(message === "" ? type : `${type}: ${message}`, options);
    this.name = "PythonError";
    this.type = type;
    this.traceback = traceback;
  }
}

/**
 * A model raised `pyproxy.HTTPError(status, message, detail, headers)`: it
 * answers its call with an HTTP error status (docs/models.md, "Errors with
 * a status"). A {@linkcode PythonError} (`type` is `"HTTPError"`) with the
 * `status` (400 to 599), the `detail` it gave (any JSON, `undefined` when
 * none) and its `headers` (name → value, as the model spelled them; `{}`
 * when none). The gateway answers `status` with `{"error": {"type":
 * "HTTPError", "message", "detail"}}` and the headers its allow-list takes.
 *
 * @example Tell a model's 404 apart
 * ```ts
 * import { ModelHTTPError } from "@pyproxy/pyproxy";
 * const err = new ModelHTTPError(404, "no such item", { id: 7 }, { "Cache-Control": "no-store" });
 * console.log(err.status, err.code, err.detail); // 404 "MODEL_HTTP_ERROR" { id: 7 }
 * // try { await pool.execute("items", { id: 7 }); }
 * // catch (e) { if (e instanceof ModelHTTPError && e.status === 404) ... }
 * ```
 */
export class ModelHTTPError extends PythonError {
  /** Stable code. */
  override readonly code: string = "MODEL_HTTP_ERROR";
  /** The HTTP status the model chose, 400 to 599. */
  readonly status: number;
  /** The model's `detail` (JSON), or `undefined`. */
  readonly detail: unknown;
  /** The headers the model asked for, name → value (`{}` when none). */
  readonly headers: Readonly<Record<string, string>>;
  /** The model's message as it gave it (`message` has `"HTTPError: "` before it). */
  readonly reason: string;
  /** Creates the error. */
  constructor(
    status: number,
    message: string,
    detail?: unknown,
    headers: Record<string, string> = {},
    traceback = "",
    options: PyProxyErrorOptions = {},
  ) {
    super("HTTPError", message, traceback, options);
    this.name = "ModelHTTPError";
    this.reason = message;
    this.status = status;
    this.detail = detail;
    this.headers = headers;
  }
}
defineName(ModelHTTPError, "ModelHTTPError");

/**
 * An error reported by the remote side that has no more specific class
 * (for example `UnknownCommandError`, `ModelNotFoundError`). `remoteType` is
 * the `error.type` from the wire; `code` is derived from it.
 *
 * @example
 * ```ts
 * import { RemoteError } from "@pyproxy/pyproxy";
 * const err = new RemoteError("ModelNotFoundError", "Cannot execute: no model 'x'");
 * console.log(err.remoteType, err.code); // "ModelNotFoundError" "MODEL_NOT_FOUND"
 * ```
 */
export class RemoteError extends PyProxyError {
  /** Stable code, derived from `remoteType` (`ModelNotFoundError` → `MODEL_NOT_FOUND`). */
  override readonly code: string;
  /** The `error.type` sent by the peer. */
  readonly remoteType: string;
  /** Creates the error. */
  constructor(
    remoteType: string,
    message: string,
    options: PyProxyErrorOptions = {},
  ) {
    super(message, options);
    this.name = remoteType;
    this.remoteType = remoteType;
    this.code = codeOf(remoteType);
  }
}

/**
 * The peer did not accept our credentials (or we did not accept theirs).
 *
 * @example
 * ```ts
 * import { AuthenticationError } from "@pyproxy/pyproxy";
 * console.log(new AuthenticationError("Cannot authenticate: bad mac").code); // "AUTHENTICATION_FAILED"
 * ```
 */
export class AuthenticationError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "AUTHENTICATION_FAILED";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "AuthenticationError";
  }
}
defineName(AuthenticationError, "AuthenticationError");

/**
 * An eval session's worker died; the session is closed for good.
 *
 * @example
 * ```ts
 * import { SessionLostError } from "@pyproxy/pyproxy";
 * console.log(new SessionLostError("Cannot eval: session s1 is lost").code); // "SESSION_LOST"
 * ```
 */
export class SessionLostError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "SESSION_LOST";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "SessionLostError";
  }
}
defineName(SessionLostError, "SessionLostError");

/**
 * A plugin hook threw; the message names the plugin and the hook.
 *
 * @example
 * ```ts
 * import { PluginError } from "@pyproxy/pyproxy";
 * console.log(new PluginError("Cannot run hook onRequest of plugin 'x': boom").code); // "PLUGIN_FAILED"
 * ```
 */
export class PluginError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "PLUGIN_FAILED";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "PluginError";
  }
}
defineName(PluginError, "PluginError");

/**
 * A spill file was missing, outside the spill directory, or failed its
 * size/md5 check.
 *
 * @example
 * ```ts
 * import { SpillError } from "@pyproxy/pyproxy";
 * console.log(new SpillError("Cannot read spill file: md5 mismatch").code); // "SPILL_FAILED"
 * ```
 */
export class SpillError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "SPILL_FAILED";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "SpillError";
  }
}
defineName(SpillError, "SpillError");

/**
 * A value cannot be sent as JSON: it holds a `BigInt`, a circular reference
 * or a `toJSON` that throws, or the encoded message is larger than the
 * peer's frame limit (then `details` has `bytes` and `limit`), or it nests
 * deeper than the limit the Python side can decode (checked by the default
 * `spillover` plugin; without it such a message is sent, and the server
 * refuses it with an `InvalidRequestError`). Nothing was sent. The name and code are those of the
 * server's own `SerializationError` (which arrives as a `RemoteError`), so
 * `err.code === "SERIALIZATION"` covers both directions.
 *
 * @example
 * ```ts
 * import { SerializationError } from "@pyproxy/pyproxy";
 * const err = new SerializationError("Cannot send executeModel: msg.n is a BigInt");
 * console.log(err.code); // "SERIALIZATION"
 * ```
 */
export class SerializationError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "SERIALIZATION";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "SerializationError";
  }
}
defineName(SerializationError, "SerializationError");

/**
 * An integer that arrived from Python is outside ±(2^53 − 1), where a
 * JavaScript `number` is exact (`Number.isSafeInteger`), and the session
 * runs with `integers: "number"` (the default): rather than a rounded value
 * (`2**53 + 1` → `9007199254740992`, `10**400` → `Infinity`), the request
 * it answers (or the stream it belongs to) fails, and a host command gets it
 * as its error. `details` has `path` (within the message, e.g. `result.id`)
 * and `value` (the integer's digits, shortened past 40). Return such values
 * as strings from Python, or use `integers: "bigint"` to get them as
 * `BigInt`.
 *
 * @example
 * ```ts
 * import { UnsafeIntegerError } from "@pyproxy/pyproxy";
 * const err = new UnsafeIntegerError("Cannot complete executeModel: result.id is 12345678901234567891, beyond ±2^53");
 * console.log(err.code); // "UNSAFE_INTEGER"
 * ```
 */
export class UnsafeIntegerError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "UNSAFE_INTEGER";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "UnsafeIntegerError";
  }
}
defineName(UnsafeIntegerError, "UnsafeIntegerError");

/**
 * A request's arguments are wrong: what a host command handler throws for
 * arguments it cannot use, so that Python gets a `HostError` whose
 * `remote_type` is `"InvalidRequestError"` (the protocol's name for it) and
 * the message as it is, and the host does not log it as a failure of its own
 * code.
 *
 * @example
 * ```ts
 * import { InvalidRequestError } from "@pyproxy/pyproxy";
 * const handler = (args: unknown) => {
 *   if (typeof (args as { key?: unknown })?.key !== "string") {
 *     throw new InvalidRequestError("Cannot run kv.get: key must be a string");
 *   }
 * };
 * try {
 *   handler({});
 * } catch (err) {
 *   console.log((err as InvalidRequestError).code); // "INVALID_REQUEST"
 * }
 * ```
 */
export class InvalidRequestError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "INVALID_REQUEST";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "InvalidRequestError";
  }
}
defineName(InvalidRequestError, "InvalidRequestError");

/**
 * One field of a body that failed its check (an entry of
 * {@linkcode ValidationError.fields}, and of the gateway's `error.fields`).
 *
 * @example
 * ```ts
 * import type { FieldProblem } from "@pyproxy/pyproxy";
 * const problem: FieldProblem = { path: ["age"], message: "expected an integer", expected: "integer", received: "string" };
 * console.log(problem.path.join(".")); // "age"
 * ```
 */
export interface FieldProblem {
  /**
   * Where, from the body down (FastAPI's `loc` without its leading
   * `"body"`): `["age"]` for a declared field, `["points", 2, "x"]` into a
   * constrained field's items and properties, `[]` for the body itself
   * (not a JSON object).
   */
  path: Array<string | number>;
  /**
   * What is wrong, as in the error's message: `"expected an integer"`,
   * `"is required"`, `"expected at most 1"` (docs/gateway.md lists them).
   */
  message: string;
  /**
   * The declared type (`"integer"`, `"number"`, `"string"`, `"boolean"`,
   * `"array"`, `"object"`, `"any"`, or the unknown type name as declared)
   * of the field at `path`: `"any"` for an `enum` without a `type`,
   * `"missing"` for a field an `"additionalProperties": false` object does
   * not declare; `"object"` for the body itself.
   */
  expected: string;
  /**
   * The JSON type of what was sent: `"missing"`, `"null"`, `"boolean"`,
   * `"number"`, `"string"`, `"array"` or `"object"` (never the value: it
   * may be large, or a secret).
   */
  received: string;
}

/**
 * A body does not match a model's declared `inputs`: the message names
 * every bad field (`"age: expected an integer; income: is required"`) and
 * `fields` lists them for programs (at most
 * {@linkcode ValidationError.MAX_FIELDS}). The gateway answers it with a 400
 * whose `error.fields` is that list; in the library,
 * {@linkcode InputValidator} throws it.
 *
 * @example
 * ```ts
 * import { ValidationError } from "@pyproxy/pyproxy";
 * const err = new ValidationError("Cannot execute model 'scorer': age: is required", [
 *   { path: ["age"], message: "is required", expected: "integer", received: "missing" },
 * ]);
 * console.log(err.code, err.fields[0]?.path); // "VALIDATION" ["age"]
 * ```
 */
export class ValidationError extends PyProxyError {
  /** The most entries {@linkcode ValidationError.fields} holds: 100. */
  static readonly MAX_FIELDS = 100;
  /** Stable code. */
  override readonly code: string = "VALIDATION";
  /** The bad fields, in declared order (at most `MAX_FIELDS`). */
  readonly fields: readonly FieldProblem[];
  /** Creates the error. */
  constructor(
    message: string,
    fields: readonly FieldProblem[],
    options: PyProxyErrorOptions = {},
  ) {
    super(message, options);
    this.name = "ValidationError";
    this.fields = fields.slice(0, ValidationError.MAX_FIELDS);
  }
}
defineName(ValidationError, "ValidationError");

/**
 * A configuration or option value is invalid; the message names the field.
 *
 * @example
 * ```ts
 * import { ConfigError } from "@pyproxy/pyproxy";
 * console.log(new ConfigError("Cannot start pool: workers: expected >= 1").code); // "CONFIG_INVALID"
 * ```
 */
export class ConfigError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "CONFIG_INVALID";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "ConfigError";
  }
}
defineName(ConfigError, "ConfigError");

/**
 * A Python server process could not be started (exited before its ready line).
 *
 * @example
 * ```ts
 * import { StartError } from "@pyproxy/pyproxy";
 * console.log(new StartError("Cannot start python server: exited with 1").code); // "START_FAILED"
 * ```
 */
export class StartError extends PyProxyError {
  /** Stable code. */
  override readonly code: string = "START_FAILED";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "StartError";
  }
}
defineName(StartError, "StartError");

/**
 * A Python server did not finish starting within `readyTimeout`, counted
 * from its spawn: `details.phase` says where it was — `"ready"` (no ready
 * line), `"handshake"` (the connection, `hello` and authentication) or
 * `"configure"` (no answer to the pool's first request). A `StartError`.
 *
 * @example
 * ```ts
 * import { StartError, StartTimeoutError } from "@pyproxy/pyproxy";
 * const err = new StartTimeoutError("Cannot start worker w1: handshake not done within readyTimeout (15000 ms)", {
 *   details: { phase: "handshake", timeoutMs: 15000 },
 * });
 * console.log(err instanceof StartError, err.code, err.details.phase); // true "START_TIMEOUT" "handshake"
 * ```
 */
export class StartTimeoutError extends StartError {
  /** Stable code. */
  override readonly code: string = "START_TIMEOUT";
  /** Creates the error. */
  constructor(message: string, options: PyProxyErrorOptions = {}) {
    super(message, options);
    this.name = "StartTimeoutError";
  }
}
defineName(StartTimeoutError, "StartTimeoutError");

/** Converts `ModelNotFoundError` to `MODEL_NOT_FOUND`. */
function codeOf(type: string): string {
  const base = type.endsWith("Error") ? type.slice(0, -5) : type;
  return base.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase() ||
    "REMOTE_ERROR";
}

const KNOWN: Record<
  string,
  new (message: string, options?: PyProxyErrorOptions) => Error
> = {
  ChecksumError,
  ProtocolError,
  FrameError,
  TimeoutError,
  CancelledError,
  AuthenticationError,
  SessionLostError,
  SpillError,
  OverloadedError,
  ConnectionLostError,
  WorkerCrashedError,
  ShuttingDownError,
  UnsafeIntegerError,
};

/**
 * Turns an `error` object from a reply into the matching error class:
 * `PythonError` for exceptions raised by user code (`ModelHTTPError` for
 * a `pyproxy.HTTPError` with a status from 400 to 599), a known class when the
 * type matches one, else a `RemoteError`.
 *
 * @example
 * ```ts
 * import { errorFromWire, PythonError } from "@pyproxy/pyproxy";
 * const err = errorFromWire({ type: "PythonError", exception: "KeyError", message: "'x'", traceback: "" });
 * console.log(err instanceof PythonError); // true
 * ```
 */
export function errorFromWire(error: unknown): Error {
  if (typeof error !== "object" || error === null) {
    return new RemoteError(
      "RemoteError",
      `Cannot complete request: malformed error ${JSON.stringify(error)}`,
    );
  }
  const e = error as Record<string, unknown>;
  const type = typeof e.type === "string" ? e.type : "RemoteError";
  const message = typeof e.message === "string" ? e.message : "";
  if (type === "PythonError") {
    const status = e.status;
    // Only a status the Python side lets HTTPError take: anything else (a
    // server of another version, a hand-made error) stays a PythonError.
    if (
      typeof status === "number" && Number.isInteger(status) &&
      status >= 400 && status <= 599
    ) {
      return new ModelHTTPError(
        status,
        message,
        e.detail ?? undefined,
        stringRecord(e.headers),
        typeof e.traceback === "string" ? e.traceback : "",
        { details: e },
      );
    }
    return new PythonError(
      typeof e.exception === "string" ? e.exception : "Exception",
      message,
      typeof e.traceback === "string" ? e.traceback : "",
      { details: e },
    );
  }
  const Known = KNOWN[type];
  if (Known) {
    const err = new Known(message, { details: e });
    return err;
  }
  return new RemoteError(type, message, { details: e });
}

/** The string-valued entries of a wire `headers` object (`{}` for anything else). */
function stringRecord(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return out;
  }
  for (const [name, text] of Object.entries(value)) {
    if (typeof text === "string") out[name] = text;
  }
  return out;
}
