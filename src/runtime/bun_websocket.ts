/**
 * `Runtime.upgradeWebSocket` for Bun. Bun upgrades inside `fetch` with
 * `server.upgrade(request)` and reports through server-wide handlers, while the
 * core expects Deno's shape (a standard `WebSocket` plus a response to return).
 * {@linkcode BunWebSocketUpgrades} bridges the two: `upgrade()` hands out a
 * WebSocket-like object at once and marks the request; the adapter's `fetch`
 * completes the upgrade after the handler returns.
 *
 * @module
 */
import type { UpgradeWebSocketOptions } from "./types.ts";

/**
 * Marks a request whose handler asked for an upgrade. Kept on the request
 * itself (not in a per-adapter map) so that any adapter instance's `serve`
 * completes an upgrade requested through any other instance.
 */
const PENDING: unique symbol = Symbol("pyproxy.bunWebSocketUpgrade");

/** An upgrade the handler asked for: the socket handed out, the subprotocol selected. */
interface PendingUpgrade {
  socket: BunWebSocket;
  protocol: string;
}

type MarkedRequest = Request & { [PENDING]?: PendingUpgrade };

/** The part of Bun's `ServerWebSocket` we use. */
export interface BunServerWebSocket {
  send(data: string | Uint8Array): number;
  close(code?: number, reason?: string): void;
  getBufferedAmount?(): number;
  data: unknown;
}

/** A standard-looking `WebSocket` driven by a Bun `ServerWebSocket`. */
class BunWebSocket extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly CONNECTING = 0;
  readonly OPEN = 1;
  readonly CLOSING = 2;
  readonly CLOSED = 3;
  readyState = 0;
  binaryType: "arraybuffer" | "blob" = "arraybuffer";
  onopen: ((ev: Event) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  onclose: ((ev: CloseEvent) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  #ws: BunServerWebSocket | undefined;

  get bufferedAmount(): number {
    return this.#ws?.getBufferedAmount?.() ?? 0;
  }

  send(data: string | ArrayBufferView | ArrayBuffer): void {
    if (this.readyState !== 1 || this.#ws === undefined) {
      throw new DOMException(
        "Cannot send: WebSocket is not open",
        "InvalidStateError",
      );
    }
    if (typeof data === "string") this.#ws.send(data);
    else if (data instanceof ArrayBuffer) this.#ws.send(new Uint8Array(data));
    else {this.#ws.send(
        new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      );}
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    this.#ws?.close(code, reason);
  }

  /** Called by the server's `open` handler. */
  opened(ws: BunServerWebSocket): void {
    this.#ws = ws;
    if (this.readyState !== 0) {
      // closed before the handshake finished
      ws.close(1000, "closed");
      return;
    }
    this.readyState = 1;
    this.#fire(new Event("open"), this.onopen);
  }

  /** Called by the server's `message` handler. */
  received(message: string | Uint8Array): void {
    const data = typeof message === "string" ? message : message.slice().buffer;
    this.#fire(new MessageEvent("message", { data }), this.onmessage);
  }

  /**
   * Called by the server's `close` handler. A connection that ended while
   * open without a close frame (1006, and not by our `close()`): a client
   * killed or cut off, or Bun's `idleTimeout` past with no pong (its reason
   * `WebSocket timed out from inactivity`) is an `error` event first, as
   * Deno's `Unexpected EOF` and `No response from ping frame.` are, so the
   * gateway drops, logs and counts it as a lost subscriber alike.
   */
  closed(code: number, reason: string): void {
    if (this.readyState === 3) return;
    const lost = code === 1006 && this.readyState === 1;
    this.readyState = 3;
    if (lost) {
      this.#fire(
        new ErrorEvent("error", {
          message: reason === ""
            ? "the connection ended without a close frame (1006)"
            : reason,
        }),
        this.onerror,
      );
    }
    this.#fire(
      new CloseEvent("close", { code, reason, wasClean: code !== 1006 }),
      this.onclose,
    );
  }

  #fire<E extends Event>(event: E, handler: ((ev: E) => unknown) | null): void {
    try {
      handler?.call(this, event);
    } finally {
      this.dispatchEvent(event);
    }
  }
}

/**
 * Tracks pending upgrades for one Bun server and implements its `websocket`
 * handlers.
 *
 * @example Wire into Bun.serve (as `bunRuntime().serve` does)
 * ```ts ignore
 * const upgrades = new BunWebSocketUpgrades();
 * Bun.serve({
 *   fetch(req, server) {
 *     const res = handler(req);          // may call upgrades.upgrade(req)
 *     return upgrades.complete(req, server) ? undefined : res;
 *   },
 *   websocket: upgrades.handlers,
 * });
 * ```
 */
export class BunWebSocketUpgrades {
  /**
   * `idleTimeout`: seconds without a message or a pong (Bun pings the
   * client) before Bun closes a WebSocket; 30 as Deno's default ping timeout
   * (Bun's own is 120: a lost subscriber went unseen 4-8 minutes).
   */
  constructor(options: { idleTimeout?: number } = {}) {
    this.handlers = {
      idleTimeout: options.idleTimeout ?? 30,
      open: (ws) => (ws.data as BunWebSocket).opened(ws),
      message: (ws, message) => (ws.data as BunWebSocket).received(message),
      close: (ws, code, reason) =>
        (ws.data as BunWebSocket).closed(code, reason),
    };
  }

  /**
   * Deno-style upgrade: a WebSocket now, the handshake once `fetch` returns,
   * answering `Sec-WebSocket-Protocol` with `options.protocol` (or none).
   */
  upgrade(
    request: Request,
    options: UpgradeWebSocketOptions = {},
  ): { socket: WebSocket; response: Response } {
    // Deno.upgradeWebSocket's checks and messages (a TypeError, which the
    // gateway answers 400): without them, a handshake Bun then refused was
    // answered an empty 200.
    const headers = request.headers;
    if (headers.get("upgrade")?.toLowerCase() !== "websocket") {
      throw new TypeError(
        "Invalid Header: 'upgrade' header must contain 'websocket'",
      );
    }
    const connection = headers.get("connection") ?? "";
    if (!connection.split(",").some((t) => /^upgrade$/i.test(t.trim()))) {
      throw new TypeError(
        "Invalid Header: 'connection' header must contain 'Upgrade'",
      );
    }
    if (!headers.get("sec-websocket-key")) {
      throw new TypeError(
        "Invalid Header: 'sec-websocket-key' header must be set",
      );
    }
    const socket = new BunWebSocket();
    const pending: PendingUpgrade = {
      socket,
      protocol: options.protocol ?? "",
    };
    Object.defineProperty(request, PENDING, {
      value: pending,
      configurable: true,
    });
    // Bun ignores the response of an upgraded request; this one only flows
    // through middleware, which sees a 101 as on Deno (the metrics count
    // it, the request log line names it, no X-Request-Id is put on it).
    return {
      socket: socket as unknown as WebSocket,
      response: new Response(null, { status: 101 }),
    };
  }

  /** Completes a pending upgrade; true when `request` was upgraded. */
  complete(
    request: Request,
    server: {
      upgrade(
        request: Request,
        options: { data: unknown; headers: Record<string, string> },
      ): boolean;
    },
  ): boolean {
    const pending = (request as MarkedRequest)[PENDING];
    if (pending === undefined) return false;
    delete (request as MarkedRequest)[PENDING];
    // Always set: without it Bun answers the first subprotocol the client
    // offered, which for a browser of a gateway with a token is the token
    // ("pyproxy.bearer.<token>"). Empty sends no header, as on Deno.
    const headers = { "sec-websocket-protocol": pending.protocol };
    if (server.upgrade(request, { data: pending.socket, headers })) return true;
    pending.socket.closed(1006, "upgrade failed");
    return false;
  }

  /** The `websocket` option of `Bun.serve`. */
  readonly handlers: {
    idleTimeout: number;
    open(ws: BunServerWebSocket): void;
    message(ws: BunServerWebSocket, message: string | Uint8Array): void;
    close(ws: BunServerWebSocket, code: number, reason: string): void;
  };
}
