/**
 * Why a message cannot be sent as JSON, for the `SerializationError` that
 * says so. Only runs once encoding (or the spill-over size walk) already
 * failed: the hot path never pays for it.
 *
 * @module
 */
import { SerializationError } from "./errors.ts";

/**
 * The deepest nesting of objects and arrays a message may have, counting the
 * message object itself as level 1. Python's `json` refuses about 1000 levels
 * (its recursion limit, less the frames of the server's own stack), so a
 * deeper message could not be decoded on the other side; this leaves room
 * for those frames. The spill-over plugin's size walk checks it on every
 * outgoing message (docs/protocol.md §3).
 */
export const MAX_JSON_DEPTH = 900;

/**
 * The first reason `value` is not JSON, with where it is (`msg.a[3]`), or
 * `undefined` when nothing was found (the caller then reports the encoder's
 * own message). Recursive, but never deeper than {@linkcode MAX_JSON_DEPTH}.
 */
export function findUnencodable(value: unknown): string | undefined {
  const ancestors = new Set<object>();
  const paths = new Map<object, string>();
  const walk = (
    v: unknown,
    path: string,
    depth: number,
  ): string | undefined => {
    if (typeof v === "bigint") {
      if (typeof (v as { toJSON?: unknown }).toJSON === "function") {
        return undefined;
      }
      return `${
        where(path)
      } is a BigInt (send a number or a string, or use integers: "bigint" to send it exactly)`;
    }
    if (typeof v !== "object" || v === null) return undefined;
    if (ancestors.has(v)) {
      return `${where(path)} is circular (it refers back to ${
        where(paths.get(v) ?? "")
      })`;
    }
    if (depth > MAX_JSON_DEPTH) {
      return `${
        where(shortenPath(path))
      } is nested deeper than ${MAX_JSON_DEPTH} levels (the Python side cannot decode it)`;
    }
    if (typeof (v as { toJSON?: unknown }).toJSON === "function") {
      return undefined;
    }
    ancestors.add(v);
    paths.set(v, path);
    try {
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          const found = walk(v[i], `${path}[${i}]`, depth + 1);
          if (found !== undefined) return found;
        }
        return undefined;
      }
      for (const key in v) {
        if (!Object.hasOwn(v, key)) continue;
        const found = walk(
          (v as Record<string, unknown>)[key],
          path === "" ? key : `${path}.${key}`,
          depth + 1,
        );
        if (found !== undefined) return found;
      }
      return undefined;
    } finally {
      ancestors.delete(v);
    }
  };
  try {
    return walk(value, "", 1);
  } catch (err) {
    // A getter or a Proxy trap that throws as the walk reads it: the
    // caller's value, which nothing can encode either.
    return `reading it threw (${describe(err)})`;
  }
}

/**
 * The `SerializationError` for a message that cannot be sent: `reason` from
 * {@linkcode findUnencodable} when it finds one, else the encoder's error.
 */
export function serializationError(
  msg: Record<string, unknown>,
  cause: unknown,
): SerializationError {
  return unencodableError(msg, cause) ??
    make(msg, `it is not JSON (${describe(cause)})`, cause);
}

/**
 * The `SerializationError` for `msg` when it really cannot be encoded, else
 * `undefined` (then `cause` was some other failure, e.g. of the file system).
 */
export function unencodableError(
  msg: Record<string, unknown>,
  cause: unknown,
): SerializationError | undefined {
  const reason = findUnencodable(msg);
  return reason === undefined ? undefined : make(msg, reason, cause);
}

/**
 * The `SerializationError` for `msg`, which cannot be sent for `reason`
 * (`"msg.x is NaN (...)"`), found by a check of the caller's: `Cannot send
 * <cmd>: <reason>`, with `details.reason`.
 */
export function refusedError(
  msg: Record<string, unknown>,
  reason: string,
): SerializationError {
  return make(msg, reason, undefined);
}

function make(
  msg: Record<string, unknown>,
  reason: string,
  cause: unknown,
): SerializationError {
  return new SerializationError(
    `Cannot send ${
      typeof msg.cmd === "string"
        ? msg.cmd
        : typeof msg.ok === "boolean"
        ? `the reply to ${msg.id}`
        : "message"
    }: ${reason}`,
    { cause, details: { reason } },
  );
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function where(path: string): string {
  return path === "" ? "the message" : path;
}

/**
 * A path 900 levels deep says nothing more than its start and end: past 120
 * characters, its first 60 and last 40 around an ellipsis.
 */
export function shortenPath(path: string): string {
  return path.length <= 120 ? path : `${path.slice(0, 60)}…${path.slice(-40)}`;
}
