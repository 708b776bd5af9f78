/**
 * The subprotocols a client offers to subscribe to a gateway channel over
 * WebSocket (a browser's `WebSocket` cannot send `Authorization`).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import {
  WS_BEARER64_PREFIX,
  WS_BEARER_PREFIX,
  WS_PROTOCOL,
} from "./security.ts";

// RFC 7230 `token` characters: what a subprotocol name may hold.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * The `protocols` argument of `new WebSocket(url, protocols)` for a channel
 * subscription: `["pyproxy.v1"]`, and with `token` (the gateway's bearer
 * token) `pyproxy.bearer.<token>`, or `pyproxy.bearer64.<base64url>` for a
 * token with characters a subprotocol cannot carry. The gateway answers
 * `pyproxy.v1` and never echoes the token.
 *
 * @example Subscribe from Deno or Bun (a browser page builds the same list)
 * ```ts ignore
 * import { webSocketProtocols } from "jsr:@pyproxy/pyproxy";
 * const ws = new WebSocket("ws://127.0.0.1:8000/v1/channels/events", webSocketProtocols(token));
 * ws.onmessage = (e) => console.log(JSON.parse(e.data));
 * ```
 *
 * @example What it makes
 * ```ts
 * import { webSocketProtocols } from "@pyproxy/pyproxy";
 * console.log(webSocketProtocols("s3cr3t-token-0123456789")); // ["pyproxy.v1", "pyproxy.bearer.s3cr3t-token-0123456789"]
 * console.log(webSocketProtocols("has space/and=signs 0123")[1]); // "pyproxy.bearer64.aGFzIHNwYWNlL2FuZD1zaWducyAwMTIz"
 * console.log(webSocketProtocols()); // ["pyproxy.v1"]
 * ```
 */
export function webSocketProtocols(token?: string): string[] {
  if (token === undefined) return [WS_PROTOCOL];
  return [
    WS_PROTOCOL,
    TOKEN.test(token) ? WS_BEARER_PREFIX + token : WS_BEARER64_PREFIX +
      Buffer.from(token, "utf8").toString("base64url"),
  ];
}
