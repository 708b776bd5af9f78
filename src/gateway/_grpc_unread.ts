/**
 * The answers a gRPC connection's client has not read: the bytes written to
 * its streams that HTTP/2 flow control still holds in the server (a write's
 * callback comes once its bytes are sent, in Deno's and Bun's `node:http2`
 * alike). Bounded per connection: a connection holding `limit` bytes takes
 * no new call and starts no more infers on its streams, and an answer that
 * comes while it holds them (of an infer already in flight) resets its
 * stream with ENHANCE_YOUR_CALM (RESOURCE_EXHAUSTED to gRPC clients) rather
 * than be held. docs/gateway.md, "gRPC".
 *
 * @module
 */
import type * as http2 from "node:http2";

/** HTTP/2's ENHANCE_YOUR_CALM: gRPC clients read its RST_STREAM as RESOURCE_EXHAUSTED. */
export const ENHANCE_YOUR_CALM = 0xb;

/** One connection's unread bytes. */
export class Unread {
  /** Bytes written to the connection's streams, not yet sent. */
  bytes = 0;
  readonly limit: number;
  #waiters = new Set<() => void>();

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Whether the connection holds `limit` bytes or more. */
  get full(): boolean {
    return this.bytes >= this.limit;
  }

  /** Calls `wake` once, when the connection holds less than `limit` again. */
  onRoom(wake: () => void): () => void {
    this.#waiters.add(wake);
    return () => this.#waiters.delete(wake);
  }

  hold(n: number): void {
    this.bytes += n;
  }

  release(n: number): void {
    if (n === 0) return;
    this.bytes -= n;
    if (this.#waiters.size > 0 && !this.full) {
      const waiters = [...this.#waiters];
      this.#waiters.clear();
      for (const wake of waiters) wake();
    }
  }
}

/** Each connection's unread bytes (set by the server at its start). */
const connections = new WeakMap<http2.Http2Session, Unread>();
/** Each stream's share of its connection's unread bytes. */
const streams = new WeakMap<
  http2.ServerHttp2Stream,
  { bytes: number; closed: boolean }
>();

/** Counts the unread bytes of `session` with `unread`. */
export function trackUnread(session: http2.Http2Session, unread: Unread): void {
  connections.set(session, unread);
}

/** The unread bytes of `stream`'s connection (none when not tracked). */
export function unreadOf(
  stream: http2.ServerHttp2Stream,
): Unread | undefined {
  const session = stream.session;
  return session === undefined ? undefined : connections.get(session);
}

/**
 * Writes `chunk` to `stream`, counted as unread on its connection until it
 * is sent (or the stream goes); `false` when the stream's buffer is full
 * (`stream.write`'s own answer).
 */
export function writeCounted(
  stream: http2.ServerHttp2Stream,
  chunk: Uint8Array,
): boolean {
  const unread = unreadOf(stream);
  if (unread === undefined) return stream.write(chunk);
  let held = streams.get(stream);
  if (held === undefined) {
    const share = { bytes: 0, closed: false };
    held = share;
    streams.set(stream, share);
    // A stream reset or closed with bytes unsent frees them (its write
    // callbacks may come before or after its close, by runtime).
    stream.once("close", () => {
      share.closed = true;
      const bytes = share.bytes;
      share.bytes = 0;
      unread.release(bytes);
    });
  }
  const share = held;
  const n = chunk.byteLength;
  share.bytes += n;
  unread.hold(n);
  return stream.write(chunk, () => {
    if (share.closed) return;
    share.bytes -= n;
    unread.release(n);
  });
}

/**
 * Resets `stream` with ENHANCE_YOUR_CALM when its connection holds its
 * limit of unread bytes (the answer about to be written is dropped); `true`
 * when it did.
 */
export function resetIfFull(stream: http2.ServerHttp2Stream): boolean {
  const unread = unreadOf(stream);
  if (unread === undefined || !unread.full) return false;
  try {
    if (!stream.destroyed && !stream.closed) stream.close(ENHANCE_YOUR_CALM);
  } catch {
    // Gone meanwhile.
  }
  return true;
}
