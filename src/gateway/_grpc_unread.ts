/**
 * The answers a gRPC connection's client has not read: the bytes written to
 * its streams that HTTP/2 flow control still holds in the server (a write's
 * callback comes once its bytes are sent, in Deno's and Bun's `node:http2`
 * alike). Bounded per connection: a connection holding `limit` bytes takes
 * no new call and starts no more infers on its streams, and an answer that
 * comes while it holds them (of an infer already in flight) resets its
 * stream with ENHANCE_YOUR_CALM (RESOURCE_EXHAUSTED to gRPC clients) rather
 * than be held. Bounded across connections too (`UnreadTotal`): from half
 * its bound, the connections of a peer address holding at least its share
 * of that half (the half divided among the addresses holding some) are
 * full, and at its bound every connection is. A client that reads holds
 * its answers for a moment only: it is served while clients elsewhere hold
 * half the bound unread. docs/gateway.md, "gRPC".
 *
 * @module
 */
import type * as http2 from "node:http2";
import { addressShareKey } from "./_address_share_key.ts";

/** HTTP/2's ENHANCE_YOUR_CALM: gRPC clients read its RST_STREAM as RESOURCE_EXHAUSTED. */
export const ENHANCE_YOUR_CALM = 0xb;

/** The unread bytes of one peer address's connections. */
interface Peer {
  readonly address: string;
  bytes: number;
}

/** The unread bytes of all a server's connections, and their bound. */
export class UnreadTotal {
  bytes = 0;
  readonly limit: number;
  /** The connections with streams waiting for room. */
  readonly waiting = new Set<Unread>();
  /** The peer addresses holding unread bytes (none kept at 0). */
  readonly #peers = new Map<string, Peer>();

  constructor(limit: number) {
    this.limit = limit;
  }

  /** At the bound: every connection holding some bytes is full. */
  get full(): boolean {
    return this.bytes >= this.limit;
  }

  /**
   * From half the bound: whether `peer`'s connections hold at least their
   * share of that half (it divided among the addresses holding some).
   */
  heavy(peer: Peer): boolean {
    const half = this.limit / 2;
    return this.bytes >= half && peer.bytes > 0 &&
      peer.bytes * this.#peers.size >= half;
  }

  /**
   * `address`'s count (shared by its connections; an IPv6 address's by
   * every address of its /64, one host's: `addressShareKey`).
   */
  peer(address: string): Peer {
    const key = addressShareKey(address);
    return this.#peers.get(key) ?? { address: key, bytes: 0 };
  }

  /** @internal */
  add(peer: Peer, n: number): void {
    if (peer.bytes === 0) this.#peers.set(peer.address, peer);
    peer.bytes += n;
    this.bytes += n;
  }

  /** @internal */
  remove(peer: Peer, n: number): void {
    peer.bytes -= n;
    this.bytes -= n;
    if (peer.bytes <= 0) {
      peer.bytes = 0;
      this.#peers.delete(peer.address);
    }
  }

  /** Wakes the connections waiting for room that have some now. */
  wake(): void {
    for (const unread of [...this.waiting]) {
      if (!unread.full) unread.wake();
    }
  }
}

/**
 * One connection's unread bytes: full at its `limit`, or when the server's
 * `total` is at its own, or from half of it when its peer address holds
 * its share (`UnreadTotal.heavy`).
 */
export class Unread {
  /** Bytes written to the connection's streams, not yet sent. */
  bytes = 0;
  readonly limit: number;
  #total: UnreadTotal | undefined;
  #peer: Peer | undefined;
  #waiters = new Set<() => void>();

  constructor(limit: number, total?: UnreadTotal, address = "") {
    this.limit = limit;
    this.#total = total;
    this.#peer = total?.peer(address);
  }

  /**
   * Whether the connection takes no more answers now: at its limit; at
   * the total's bound, even holding none (each new connection took one
   * answer there, which one that does not read holds: the bound was the
   * connections' count times an answer); from half of it, when its address
   * holds its share, even holding none itself (a heavy address's new
   * connections are its own).
   */
  get full(): boolean {
    if (this.bytes >= this.limit) return true;
    const total = this.#total;
    if (total === undefined) return false;
    if (total.full) return true;
    // The address's count, renewed by another of its connections since
    // this one last held some.
    if (this.#peer!.bytes === 0) this.#peer = total.peer(this.#peer!.address);
    return total.heavy(this.#peer!);
  }

  /** The server's total, when it has one. */
  get total(): UnreadTotal | undefined {
    return this.#total;
  }

  /** Calls `wake` once, when the connection is no longer full. */
  onRoom(wake: () => void): () => void {
    this.#waiters.add(wake);
    this.#total?.waiting.add(this);
    return () => this.#waiters.delete(wake);
  }

  hold(n: number): void {
    this.bytes += n;
    const total = this.#total;
    if (total === undefined) return;
    // The address's count is the one in the total's map while it holds
    // some (another connection of it may have emptied and renewed it).
    if (this.#peer!.bytes === 0) this.#peer = total.peer(this.#peer!.address);
    total.add(this.#peer!, n);
  }

  release(n: number): void {
    if (n === 0) return;
    this.bytes -= n;
    const total = this.#total;
    if (total === undefined) return this.wake();
    const half = total.limit / 2;
    const pressed = total.bytes >= half;
    total.remove(this.#peer!, n);
    if (pressed && total.waiting.size > 0) {
      // Under pressure, another connection's room depends on this one's
      // bytes too (the bound, its address's share): each that waits looks.
      total.wake();
    } else this.wake();
  }

  /** The connection closed: nothing of it waits any more. */
  dispose(): void {
    this.#waiters.clear();
    this.#total?.waiting.delete(this);
  }

  /** Wakes the streams that wait for room, if there is room now. */
  wake(): void {
    if (this.#waiters.size === 0 || this.full) return;
    this.#total?.waiting.delete(this);
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
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
