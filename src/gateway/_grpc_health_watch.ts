/**
 * `grpc.health.v1.Health/Watch` (server streaming: the clients and load
 * balancers that follow a server's health rather than probe it): a watch
 * gets the current status at once, then each change. The status is
 * `GET /healthz`'s, as `Check`'s: checked once for all the watches, when
 * one opens, at the drain's start (NOT_SERVING at once), and every
 * `intervalMs` while any is open (a worker lost or back). The server's
 * close sends NOT_SERVING and ends every watch with UNAVAILABLE. Bounded:
 * `maxPerConnection` watches at once per connection and `max` in all (the
 * next one is RESOURCE_EXHAUSTED, unless it takes the slot of the peer
 * address holding the most: `watch`), and a watch whose client does not
 * read holds one status, the latest, not a queue.
 * docs/gateway.md, "Health checking".
 *
 * @module
 */
import type * as http2 from "node:http2";
import { addressShareKey } from "./_address_share_key.ts";
import { ProtoWriter } from "./_protobuf.ts";
import type { Answer } from "./_grpc_framing.ts";
import { isKnownService, ServingStatus } from "./_grpc_health.ts";
import { GrpcStatus, percentEncode } from "./_grpc_status.ts";

/** Options of {@linkcode HealthWatchers}. */
export interface HealthWatchersOptions {
  /** Whether the server serves now (`/healthz` answers 200). */
  serving: () => Promise<boolean>;
  /** Watches open at once, at most, the server's whole. @default {1000} */
  max?: number;
  /**
   * Watches open at once on one connection, at most (a client's channel
   * watches one or two services: one client cannot take the server's
   * whole `max`). @default {8}
   */
  maxPerConnection?: number;
  /** Milliseconds between two checks while a watch is open. @default {1000} */
  intervalMs?: number;
}

/** One watch: the latest status, written once the client can take it. */
class Watch {
  readonly done: Promise<void>;
  #stream: http2.ServerHttp2Stream;
  #sent: number | undefined;
  #latest: number | undefined;
  #blocked = false;
  #ended = false;
  #resolve!: () => void;

  /** Its connection. */
  readonly session: http2.Http2Session | undefined;
  /** Its client's address. */
  readonly peer: string;

  constructor(stream: http2.ServerHttp2Stream) {
    this.#stream = stream;
    this.session = stream.session;
    this.peer = peerOf(stream);
    this.done = new Promise<void>((resolve) => (this.#resolve = resolve));
    stream.once("close", () => this.#finish());
  }

  update(status: number): void {
    this.#latest = status;
    this.#flush();
  }

  #flush(): void {
    const status = this.#latest;
    if (this.#ended || this.#blocked || status === this.#sent) return;
    if (status === undefined) return;
    const stream = this.#stream;
    if (stream.destroyed || stream.closed) return this.#finish();
    this.#sent = status;
    try {
      if (!stream.headersSent) {
        stream.respond(
          { ":status": 200, "content-type": "application/grpc" },
          { waitForTrailers: true },
        );
      }
      const message = new ProtoWriter(4).tag(1, 0).varint(status).finish();
      const frame = new Uint8Array(5 + message.byteLength);
      new DataView(frame.buffer).setUint32(1, message.byteLength);
      frame.set(message, 5);
      if (!stream.write(frame)) {
        // Not read: the next write is the latest status once it drains.
        this.#blocked = true;
        stream.once("drain", () => {
          this.#blocked = false;
          this.#flush();
        });
      }
    } catch {
      // Reset by the client meanwhile.
      this.#finish();
    }
  }

  /**
   * Ends the watch with `answer`'s status (after the statuses written); a
   * stream whose trailers are not sent within `UNREAD_MS` is reset
   * (RST_STREAM CANCEL): its client does not read its statuses (HTTP/2 flow
   * control holds the trailers behind them), and the stream, its watch
   * ended, was held open until the connection's end.
   */
  end(answer: Answer): void {
    if (this.#ended) return;
    const stream = this.#stream;
    this.#finish();
    if (stream.destroyed || stream.closed) return;
    const unread = setTimeout(() => {
      try {
        if (!stream.destroyed && !stream.closed) stream.close(CANCEL);
      } catch {
        // Gone meanwhile.
      }
    }, UNREAD_MS);
    stream.once("close", () => clearTimeout(unread));
    const trailers: Record<string, string> = {
      "grpc-status": String(answer.status),
    };
    if (answer.message !== undefined) {
      trailers["grpc-message"] = percentEncode(answer.message);
    }
    try {
      if (!stream.headersSent) {
        stream.respond(
          { ":status": 200, "content-type": "application/grpc", ...trailers },
          { endStream: true },
        );
        return;
      }
      stream.once("wantTrailers", () => {
        try {
          stream.sendTrailers(trailers);
        } catch {
          // The stream went meanwhile.
        }
      });
      stream.end();
    } catch {
      // Reset by the client meanwhile.
    }
  }

  #finish(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#resolve();
  }
}

/**
 * The open watches of a gRPC server, and the one check of `/healthz` they
 * share.
 */
export class HealthWatchers {
  #options: HealthWatchersOptions;
  #max: number;
  #maxPerConnection: number;
  #watches = new Set<Watch>();
  /** The watches open on each connection. */
  #perConnection = new Map<http2.Http2Session, number>();
  /** The watches open from each peer address, oldest first. */
  #perPeer = new Map<string, Set<Watch>>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #checking = false;
  #again = false;
  #closed = false;

  constructor(options: HealthWatchersOptions) {
    this.#options = options;
    this.#max = options.max ?? 1000;
    this.#maxPerConnection = options.maxPerConnection ?? 8;
  }

  /** Watches open. */
  get size(): number {
    return this.#watches.size;
  }

  /**
   * Starts a watch of `service` on `stream` (its request read); `undefined`
   * when `maxPerConnection` are open on its connection, or `max` in all and
   * none can be taken back (`full` says which). When `max` are open, the
   * oldest watch of the peer address that holds the most is ended
   * (RESOURCE_EXHAUSTED) for it, if that address holds more than one watch
   * more than this one's and more than its share of `max` (rounded up):
   * many connections from one address cannot keep every other client's
   * watches refused, and no address at its share loses one. A service the server does not
   * have is SERVICE_UNKNOWN, and the watch stays open (the protocol's
   * answer: it may be added later).
   */
  watch(
    stream: http2.ServerHttp2Stream,
    service: string,
  ): Watch | undefined {
    if (this.full(stream) !== undefined) return undefined;
    if (this.#watches.size >= this.#max) {
      const victim = this.#victim(peerOf(stream));
      if (victim === undefined) return undefined;
      this.#remove(victim);
      victim.end(evictedAnswer);
    }
    const watch = new Watch(stream);
    if (this.#closed) {
      watch.update(ServingStatus.NOT_SERVING);
      watch.end(closedAnswer);
      return watch;
    }
    if (!isKnownService(service)) {
      watch.update(ServingStatus.SERVICE_UNKNOWN);
      this.#add(watch, false, stream.session);
      return watch;
    }
    this.#add(watch, true, stream.session);
    this.refresh();
    return watch;
  }

  /**
   * Why a watch on `stream` would be refused now: `"server"` (`max` open),
   * `"connection"` (`maxPerConnection` open on its connection), or
   * `undefined` (it would not).
   */
  full(stream: http2.ServerHttp2Stream): "server" | "connection" | undefined {
    const session = stream.session;
    if (
      session !== undefined &&
      (this.#perConnection.get(session) ?? 0) >= this.#maxPerConnection
    ) return "connection";
    if (
      this.#watches.size >= this.#max &&
      this.#victim(peerOf(stream)) === undefined
    ) return "server";
    return undefined;
  }

  /**
   * The watch to end for one from `peer` when `max` are open: the oldest of
   * the address holding the most, if it holds more than one more than
   * `peer` and more than its share (`max` over the addresses, `peer`'s
   * counted, rounded up): an address at its share keeps its watches, so
   * a client that reconnects in a loop cannot end other clients' watches
   * when every address holds about as many.
   */
  #victim(peer: string): Watch | undefined {
    const mine = this.#perPeer.get(peer)?.size ?? 0;
    let most: Set<Watch> | undefined;
    for (const watches of this.#perPeer.values()) {
      if (most === undefined || watches.size > most.size) most = watches;
    }
    if (most === undefined || most.size <= mine + 1) return undefined;
    const addresses = this.#perPeer.size + (mine === 0 ? 1 : 0);
    if (most.size <= Math.ceil(this.#max / addresses)) return undefined;
    return most.values().next().value;
  }

  /** Checks now (the drain began); each watch gets the status if it changed. */
  refresh(): void {
    if (this.#closed || this.#watching.size === 0) return;
    if (this.#checking) {
      // A check begun before this call may have read the state before the
      // change: one more after it.
      this.#again = true;
      return;
    }
    this.#checking = true;
    void (async () => {
      try {
        do {
          this.#again = false;
          let serving = false;
          try {
            serving = await this.#options.serving();
          } catch {
            // Not answered: not serving.
          }
          if (this.#closed) return;
          const status = serving
            ? ServingStatus.SERVING
            : ServingStatus.NOT_SERVING;
          for (const watch of this.#watching) watch.update(status);
        } while (this.#again);
      } finally {
        // At once after the last look at #again: no refresh falls between.
        this.#checking = false;
      }
    })();
  }

  /** The server closes: NOT_SERVING to every watch, which ends (UNAVAILABLE). */
  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
    for (const watch of this.#watches) {
      watch.update(ServingStatus.NOT_SERVING);
      watch.end(closedAnswer);
    }
    this.#watches.clear();
    this.#watching.clear();
    this.#perConnection.clear();
    this.#perPeer.clear();
  }

  /** The watches of a known service (those a check updates). */
  #watching = new Set<Watch>();

  #add(
    watch: Watch,
    known: boolean,
    session: http2.Http2Session | undefined,
  ): void {
    this.#watches.add(watch);
    if (session !== undefined) {
      this.#perConnection.set(
        session,
        (this.#perConnection.get(session) ?? 0) + 1,
      );
    }
    let peer = this.#perPeer.get(watch.peer);
    if (peer === undefined) this.#perPeer.set(watch.peer, peer = new Set());
    peer.add(watch);
    if (known) this.#watching.add(watch);
    if (this.#timer === undefined) {
      this.#timer = setInterval(
        () => this.refresh(),
        this.#options.intervalMs ?? 1000,
      );
    }
    watch.done.then(() => this.#remove(watch));
  }

  /** Frees `watch`'s slots (once; at once, not at its end's next tick). */
  #remove(watch: Watch): void {
    if (!this.#watches.delete(watch)) return;
    this.#watching.delete(watch);
    const session = watch.session;
    if (session !== undefined) {
      const left = (this.#perConnection.get(session) ?? 1) - 1;
      if (left === 0) this.#perConnection.delete(session);
      else this.#perConnection.set(session, left);
    }
    const peer = this.#perPeer.get(watch.peer);
    peer?.delete(watch);
    if (peer?.size === 0) this.#perPeer.delete(watch.peer);
    if (this.#watches.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}

/** HTTP/2's CANCEL (CANCELLED to gRPC clients). */
const CANCEL = 0x8;
/** How long an ended watch's trailers may wait for its client to read. */
const UNREAD_MS = 1000;

/**
 * A peer's address as its share is counted (its IPv4, its IPv6's /64:
 * `addressShareKey`), `""` when unknown.
 */
function peerOf(stream: http2.ServerHttp2Stream): string {
  return addressShareKey(stream.session?.socket?.remoteAddress ?? "");
}

const evictedAnswer: Answer = {
  status: GrpcStatus.RESOURCE_EXHAUSTED,
  message:
    "The watch ended: the server has the most health watches it keeps open, and your address holds the most of them (another client's watch took its slot; use Check, or fewer watches)",
};

const closedAnswer: Answer = {
  status: GrpcStatus.UNAVAILABLE,
  message: "The server is shutting down: the watch ended",
};
