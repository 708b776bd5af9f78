/**
 * Python → host commands of a `Session` (protocol §7): the handler table and
 * the calls in progress.
 *
 * @module
 */
import { PendingTable } from "./_session_pending_table.ts";
import {
  CancelledError,
  ChecksumError,
  FrameError,
  ProtocolError,
  PyProxyError,
  SerializationError,
} from "./errors.ts";
import { hostResultProblem } from "./_host_result_problem.ts";
import { isThenable } from "./_thenable.ts";
import { bytesAsBase64Json } from "./_binary.ts";
import type { Logger } from "./logger.ts";
import type { Session } from "./session.ts";
import type { SessionHandler, SessionMessage } from "./session_types.ts";

/** Sends a reply: `ok` with a result, or not with an `error` object. */
export type ReplyFn = (id: number, ok: boolean, payload: unknown) => void;

/** Runs the host handlers for the requests the server sends. */
export class HostCommands {
  #handlers = new Map<string, SessionHandler>();
  // Not a Map: see PendingTable (a long-lived Map with a call's churn keeps garbage in V8).
  #calls = new PendingTable<HostCall>();
  #reply: ReplyFn;
  #logger: Logger | undefined;
  #bigints: boolean;
  #callersOf: (call: number) => readonly (string | null)[] | undefined;

  /**
   * `bigints`: the session sends `BigInt`s as exact integers (`integers:
   * "bigint"`); `callersOf`: who made the session's request `call`, while
   * awaited (a handler's `callers`).
   */
  constructor(
    handlers: Record<string, SessionHandler> | undefined,
    reply: ReplyFn,
    logger?: Logger,
    bigints = false,
    callersOf: (call: number) => readonly (string | null)[] | undefined = () =>
      undefined,
  ) {
    this.#bigints = bigints;
    this.#callersOf = callersOf;
    for (const [cmd, fn] of Object.entries(handlers ?? {})) {
      this.#handlers.set(cmd, fn);
    }
    this.#reply = reply;
    this.#logger = logger;
  }

  set(cmd: string, handler: SessionHandler | undefined): void {
    if (handler === undefined) this.#handlers.delete(cmd);
    else this.#handlers.set(cmd, handler);
  }

  /** Runs the handler of request `msg` (which has an integer id) and replies. */
  serve(msg: SessionMessage, id: number, session: Session): void {
    const cmd = msg.cmd as string;
    const handler = this.#handlers.get(cmd);
    if (handler === undefined) {
      if (cmd === "cancel") {
        const call = typeof msg.target === "number"
          ? this.#calls.get(msg.target)
          : undefined;
        call?.controller.abort(
          new CancelledError(
            `Cannot complete host command ${msg.target}: cancelled by the server`,
          ),
        );
        this.#reply(id, true, { cancelled: call !== undefined });
        return;
      }
      this.#reply(id, false, {
        type: "UnknownCommandError",
        // Say where handlers come from: a gateway user meets this first from
        // a model's host.call, with nothing on the host side to look at.
        message:
          `Cannot run ${cmd}: no such host command (register it in a plugin's handlers, passed to Pool.start or serve: docs/plugins.md)`,
      });
      return;
    }
    const controller = new AbortController();
    this.#calls.add({ id, controller });
    let result: unknown;
    let awaitable: boolean;
    try {
      // Who made the call that sent it (its `call`), as this side sent it.
      const named = Number.isInteger(msg.call);
      const callers = named ? this.#callersOf(msg.call as number) : undefined;
      result = handler(
        msg.args,
        callers !== undefined
          ? { session, id, signal: controller.signal, callers }
          : named
          // A call no longer awaited: code it left running (chaos55).
          ? { session, id, signal: controller.signal, callEnded: true }
          : { session, id, signal: controller.signal },
      );
      // Any awaitable, not only a Promise: a query builder's thenable sent {}.
      // (A proxy's trap, a getter of `then`, may throw here.)
      awaitable = isThenable(result);
    } catch (err) {
      this.#calls.delete(id);
      this.#fail(id, cmd, err);
      return;
    }
    if (awaitable) {
      Promise.resolve(result).then(
        (value) => this.#calls.delete(id) && this.#succeed(id, cmd, value),
        (err) => this.#calls.delete(id) && this.#fail(id, cmd, err),
      );
      return;
    }
    this.#calls.delete(id);
    this.#succeed(id, cmd, result);
  }

  /**
   * A handler's result is the reply, unless it holds what JSON would turn
   * into `{}` or `None` without a word (a `Map`, a function...): then the
   * model's `host.call` fails with a `SerializationError` naming the
   * command and the place, and the host logs it (a bug of host code).
   */
  #succeed(id: number, cmd: string, value: unknown): boolean {
    let problem: string | undefined;
    try {
      problem = hostResultProblem(value, this.#bigints);
    } catch (err) {
      // A getter or a proxy's trap of the result threw: its error is the
      // reply. It escaped into the session's dispatch (the worker's
      // connection dropped as if it had died), or, from an async handler,
      // was an unhandled rejection that ended the host process.
      return this.#fail(id, cmd, err);
    }
    if (problem !== undefined) {
      const error = new SerializationError(
        `Cannot send the result of host command ${cmd}: ${problem}`,
        { details: { cmd } },
      );
      this.#logger?.warn("Host command {cmd} failed: {error}", {
        cmd,
        id,
        error,
      });
      return this.#fail(id, cmd, error);
    }
    // Bytes the handler returns go as bytes (protocol §3, Bytes) without
    // JSON.stringify writing them index by index first.
    this.#reply(id, true, bytesAsBase64Json(value));
    return true;
  }

  /**
   * A handler failed: its error is the reply. One of our typed errors (a
   * handler's answer, such as a `ConfigError`) goes as it is; anything else
   * is a bug of host code: the reply names the command, and the host logs it
   * with its stack, since Python sees only the message.
   */
  #fail(id: number, cmd: string, err: unknown): boolean {
    const error = wireError(err);
    if (error.type === "HostError") {
      error.message = `Cannot run host command ${cmd}: ${error.message}`;
      this.#logger?.warn("Host command {cmd} failed: {error}", {
        cmd,
        id,
        error: err,
      });
    }
    this.#reply(id, false, error);
    return true;
  }

  /** Aborts every call in progress (the session closed); their replies are dropped. */
  abortAll(reason: Error): void {
    for (const call of this.#calls.drain()) call.controller.abort(reason);
  }
}

/** A host command in progress. */
interface HostCall {
  readonly id: number;
  readonly controller: AbortController;
}

/** An error as the `error` object of a reply to Python (protocol §3). */
export function wireError(err: unknown): Record<string, unknown> {
  if (err instanceof Error) {
    // Our own classes keep their name; anything else (a TypeError, a system
    // error with its own `code` such as ENOENT) is a failure of host code.
    const type = isOurs(err) ? err.name : "HostError";
    return { type, message: err.message, exception: err.name };
  }
  return {
    type: "HostError",
    message: describeThrown(err),
    exception: typeof err,
  };
}

function isOurs(err: Error): boolean {
  return err instanceof PyProxyError || err instanceof FrameError ||
    err instanceof ChecksumError || err instanceof ProtocolError;
}

/**
 * A value thrown that is not an `Error`, in words: its `message` when it has
 * one, else its JSON (at most 200 characters), else `String()` of it: never
 * "[object Object]".
 */
function describeThrown(err: unknown): string {
  if (typeof err === "object" && err !== null) {
    const message = (err as { message?: unknown }).message;
    if (typeof message === "string") return message;
    try {
      const json = JSON.stringify(err);
      if (typeof json === "string") {
        return json.length <= 200 ? json : `${json.slice(0, 200)}...`;
      }
    } catch {
      // a cycle, a BigInt...: String() below
    }
  }
  try {
    return String(err);
  } catch {
    return typeof err;
  }
}
