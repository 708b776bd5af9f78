/**
 * The gateway's security middleware: Host allow-list (against DNS
 * rebinding), Origin check (against cross-site requests), bearer-token
 * authentication and opt-in CORS.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { Context, MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import type { ExposedModelHeaders } from "./_model_http_headers.ts";

/**
 * CORS settings; CORS headers are sent only when this is configured.
 *
 * @example
 * ```ts
 * import type { CorsConfig } from "@pyproxy/pyproxy";
 * const cors: CorsConfig = { origins: ["https://app.example.com"], credentials: true, maxAge: 600 };
 * console.log(cors.origins);
 * ```
 */
export interface CorsConfig {
  /** Allowed origins, e.g. `["https://app.example.com"]` (`"*"` allows any). */
  origins: string[];
  /** Send `Access-Control-Allow-Credentials: true`. @default {false} */
  credentials?: boolean;
  /** Seconds a preflight may be cached. @default {600} */
  maxAge?: number;
}

const LOOPBACK = ["localhost", "127.0.0.1", "[::1]"];
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

/**
 * Compares two secrets in constant time (hashes first, so lengths leak nothing).
 *
 * @example
 * ```ts
 * import { safeEqual } from "./security.ts";
 * console.log(safeEqual("s3cret", "s3cret"), safeEqual("s3cret", "guess")); // true false
 * ```
 */
export function safeEqual(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/** True when `hostname` is a loopback address or `localhost`. */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" ||
    hostname === "[::1]" ||
    /^127(\.\d{1,3}){3}$/.test(hostname);
}

/** Options for {@linkcode hostGuard}. */
export interface HostGuardOptions {
  /** The port the server listens on (a function because port 0 is known only after binding). */
  port: () => number;
  /**
   * Extra allowed hosts: `"example.com"` (any port) or `"example.com:8443"`.
   * `"*"` disables the check.
   */
  allowedHosts?: string[];
  /**
   * Also accept any IP address (`10.0.0.5`, `[fd00::5]`, with any port):
   * DNS rebinding needs a name the attacker controls, so an IP literal
   * cannot come from it.
   *
   * @default {false}
   */
  ipHosts?: boolean;
}

/**
 * Rejects requests whose authority is not an allowed host with 403
 * `ForbiddenHost`. The defaults are `localhost`, `127.0.0.1` and `[::1]` on
 * the server's port: a web page on another name that resolves to 127.0.0.1
 * (DNS rebinding) cannot talk to the gateway. The authority is checked as
 * {@linkcode requestHostChecker} says: the `Host` header and the request
 * URL's authority (HTTP/2's `:authority`) must both be allowed.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { hostGuard } from "./security.ts";
 * const app = new Hono().use(hostGuard({ port: () => 8000 })).get("/", (c) => c.text("ok"));
 * const res = await app.request("http://evil.example:8000/", { headers: { host: "evil.example:8000" } });
 * console.log(res.status); // 403
 * // An HTTP/2 request has no Host header: its authority is the URL's.
 * console.log((await app.request("http://127.0.0.1:8000/")).status); // 200
 * ```
 */
export function hostGuard(options: HostGuardOptions): MiddlewareHandler {
  const check = requestHostChecker(options);
  return async (c, next) => {
    if (!check(c.req.raw.headers.get("host"), c.req.url)) {
      return c.json({
        error: {
          type: "ForbiddenHost",
          message:
            "Cannot serve request: its Host (HTTP/2: :authority) is not an allowed host",
        },
      }, 403);
    }
    // returned, not only awaited: a consumer's noImplicitReturns
    return await next();
  };
}

/**
 * The test of {@linkcode hostGuard} as a function of a request's `Host`
 * header (`null` when it has none) and URL. Both the header and the URL's
 * authority must be allowed:
 *
 * - HTTP/1.1: the runtime builds the URL from `Host`, so they agree; except
 *   for an absolute-form target (`GET http://evil.example/ HTTP/1.1`), whose
 *   authority is the one the client asked for (RFC 9112 §3.2.2), and which
 *   Deno puts in the URL.
 * - HTTP/2: the authority is the `:authority` pseudo-header, which the
 *   runtime puts in the URL, not in `headers`; a client may send `host`
 *   too, which must then be allowed as well (RFC 9113 §8.3.1).
 * - No authority at all (HTTP/1.0 without `Host`): Bun gives a relative
 *   URL, refused here; Deno gives `localhost:<port>`, which cannot be told
 *   from an HTTP/2 request for `localhost:<port>`, so it passes. A browser
 *   never sends such a request (it always sends `Host` or `:authority`),
 *   so DNS rebinding cannot use it, and any other client could as well
 *   send `Host: localhost:<port>`.
 *
 * `from` and `end` say where the URL's authority starts and ends, for a
 * caller that has found them already (the gateway's direct execute path);
 * by default they are looked up.
 *
 * @example
 * ```ts
 * import { requestHostChecker } from "./security.ts";
 * const allowed = requestHostChecker({ port: () => 8000 });
 * console.log(allowed("127.0.0.1:8000", "http://127.0.0.1:8000/v1/status")); // true
 * console.log(allowed(null, "http://localhost:8000/v1/status")); // true (HTTP/2)
 * console.log(allowed(null, "http://evil.example:8000/v1/status")); // false
 * console.log(allowed("localhost:8000", "http://evil.example/v1/status")); // false
 * console.log(allowed(null, "/v1/status")); // false
 * ```
 */
export function requestHostChecker(
  options: HostGuardOptions,
): (host: string | null, url: string, from?: number, end?: number) => boolean {
  const check = hostChecker(options);
  return (host, url, from = authorityStart(url), end) => {
    // A relative URL (Bun's for a request without Host) names no authority.
    if (
      from < 4 || url.charCodeAt(from - 3) !== COLON ||
      url.charCodeAt(from - 2) !== SLASH || url.charCodeAt(from - 1) !== SLASH
    ) return false;
    if (end === undefined) {
      end = url.indexOf("/", from);
      if (end < 0) end = url.length;
    } else if (end < from) return false;
    if (host === null) return check(url.slice(from, end));
    // The usual case, HTTP/1.1 in origin form: the URL was built from Host.
    return check(host) &&
      ((end - from === host.length && url.startsWith(host, from)) ||
        check(url.slice(from, end)));
  };
}

/** Where the authority of `url` starts (after `scheme://`), or -1 if it has none. */
function authorityStart(url: string): number {
  const colon = url.indexOf(":");
  return colon > 0 && url.charCodeAt(colon + 1) === SLASH &&
      url.charCodeAt(colon + 2) === SLASH
    ? colon + 3
    : -1;
}
const COLON = 58;
const SLASH = 47;

/**
 * The authority a request was sent to: its `Host` header, else (HTTP/2,
 * where it is `:authority`) its URL's; `""` when it has neither.
 *
 * @example
 * ```ts
 * import { requestAuthority } from "./security.ts";
 * const h2 = new Request("http://localhost:8000/v1/status");
 * console.log(requestAuthority(h2)); // "localhost:8000"
 * ```
 */
export function requestAuthority(request: Request): string {
  return request.headers.get("host") ?? urlAuthority(request.url);
}

/** The authority of `url` (`host:port`), `""` for a relative one. */
function urlAuthority(url: string): string {
  const from = authorityStart(url);
  if (from < 0) return "";
  const end = url.indexOf("/", from);
  return url.slice(from, end < 0 ? url.length : end);
}

/**
 * The test of {@linkcode hostGuard} as a function of the `Host` value.
 *
 * @example
 * ```ts
 * import { hostChecker } from "./security.ts";
 * const allowed = hostChecker({ port: () => 8000 });
 * console.log(allowed("127.0.0.1:8000"), allowed("evil.example:8000")); // true false
 * ```
 */
export function hostChecker(
  options: HostGuardOptions,
): (host: string) => boolean {
  const extra = (options.allowedHosts ?? []).map((h) => h.toLowerCase());
  if (extra.includes("*")) return () => true;
  // Clients send the same Host on every request: the last verdict is reused
  // while the Host and the port are unchanged.
  let lastHost: string | undefined;
  let lastPort = -1;
  let lastOk = false;
  return (host) => {
    const port = options.port();
    if (host !== lastHost || port !== lastPort) {
      lastOk = allowed(host, port, extra, options.ipHosts ?? false);
      lastHost = host;
      lastPort = port;
    }
    return lastOk;
  };
}

function allowed(
  host: string,
  port: number,
  extra: string[],
  ipHosts: boolean,
): boolean {
  const value = host.toLowerCase();
  const m = /^(\[[0-9a-f:.]+\]|[^:]+)(?::(\d+))?$/.exec(value);
  if (!m) return false;
  const name = m[1]!;
  const hostPort = m[2] === undefined ? undefined : Number(m[2]);
  if (
    LOOPBACK.includes(name) &&
    (hostPort === undefined ? port === 80 : hostPort === port)
  ) return true;
  if (ipHosts && (name.startsWith("[") || IPV4.test(name))) return true;
  return extra.some((entry) => entry === value || entry === name);
}

/** Options for {@linkcode originGuard}. */
export interface OriginGuardOptions {
  /** Origins allowed besides the gateway's own (the CORS origins; `"*"` allows any). */
  origins?: string[];
  /**
   * Paths a cross-site link may open (a GET or HEAD navigation without
   * `Origin`).
   *
   * @default {["/"]} (the dashboard)
   */
  navigablePaths?: string[];
  /** Called with each request refused (its 403), with its `Origin`. */
  onRefused?: (c: Context, origin: string | undefined) => void;
}

/**
 * The test of {@linkcode originGuard}: `true` when a request with these
 * headers may be served. A request passes when it carries neither `Origin`
 * nor `Sec-Fetch-Site` (curl, scripts, old browsers' same-origin GETs), when
 * its `Origin` is listed, or when it is same-origin: its `Origin` is
 * `http://` or `https://` plus its own `Host` (already checked by
 * {@linkcode hostGuard}; without one, as over HTTP/2, the authority of `url`) and `Sec-Fetch-Site` does not say `cross-site` or
 * `same-site`. A cross-site GET or HEAD navigation without `Origin` to one
 * of `navigablePaths` (by default only `/`: a link followed to the
 * dashboard) passes too: the response goes to the user's tab, never to the
 * page that linked it. Other routes refuse navigations, as they refuse every
 * other cross-site request.
 *
 * @example
 * ```ts
 * import { originChecker } from "./security.ts";
 * const allowed = originChecker({ origins: ["https://app.example.com"] });
 * const h = (init: Record<string, string>) => new Headers({ host: "127.0.0.1:8000", ...init });
 * console.log(allowed("POST", h({})), allowed("POST", h({ origin: "http://127.0.0.1:8000" }))); // true true
 * console.log(allowed("POST", h({ origin: "https://app.example.com", "sec-fetch-site": "cross-site" }))); // true
 * console.log(allowed("POST", h({ origin: "https://evil.example" }))); // false
 * console.log(allowed("POST", h({ "sec-fetch-site": "cross-site" }))); // false
 * const link = h({ "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate" });
 * console.log(allowed("GET", link, "/"), allowed("GET", link, "/v1/models")); // true false
 * // HTTP/2: no Host header, the authority is the URL's.
 * const h2 = new Headers({ origin: "http://127.0.0.1:8000" });
 * console.log(allowed("POST", h2, "/v1/status", "http://127.0.0.1:8000/v1/status")); // true
 * ```
 */
export function originChecker(
  options: OriginGuardOptions = {},
): (method: string, headers: Headers, path?: string, url?: string) => boolean {
  const listed = new Set((options.origins ?? []).map((o) => o.toLowerCase()));
  const any = listed.has("*");
  const navigable = new Set(options.navigablePaths ?? ["/"]);
  return (method, headers, path, url) => {
    const origin = headers.get("origin");
    const site = headers.get("sec-fetch-site");
    if (origin === null && site === null) return true;
    if (origin !== null && (any || listed.has(origin.toLowerCase()))) {
      return true;
    }
    if (site === "cross-site" || site === "same-site") {
      return origin === null && (method === "GET" || method === "HEAD") &&
        path !== undefined && navigable.has(path) &&
        headers.get("sec-fetch-mode") === "navigate";
    }
    if (origin === null) return true;
    const host = (headers.get("host") ?? urlAuthority(url ?? "")).toLowerCase();
    const value = origin.toLowerCase();
    return host !== "" &&
      (value === `http://${host}` || value === `https://${host}`);
  };
}

/**
 * Refuses cross-origin requests with 403 `ForbiddenOrigin` (see
 * {@linkcode originChecker} for the rule). A browser sends a "simple"
 * cross-site POST (`text/plain`, form encoding) without a CORS preflight, and
 * opens a WebSocket to any origin; the Host check cannot stop either, since
 * the browser sends the gateway's own Host. Without a token that would let
 * any web page run models (and eval, when enabled) and read channels.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { originGuard } from "./security.ts";
 * const app = new Hono().use(originGuard()).post("/", (c) => c.text("ok"));
 * const res = await app.request("http://127.0.0.1:8000/", {
 *   method: "POST",
 *   headers: { host: "127.0.0.1:8000", origin: "https://evil.example" },
 * });
 * console.log(res.status); // 403
 * ```
 */
export function originGuard(
  options: OriginGuardOptions = {},
): MiddlewareHandler {
  const check = originChecker(options);
  const onRefused = options.onRefused;
  return async (c, next) => {
    if (!check(c.req.method, c.req.raw.headers, c.req.path, c.req.url)) {
      const origin = c.req.header("origin");
      onRefused?.(c, origin);
      return c.json({
        error: {
          type: "ForbiddenOrigin",
          message: `Cannot serve request: cross-origin requests${
            origin === undefined
              ? ""
              : ` from ${JSON.stringify(origin.slice(0, 200))}`
          } are not allowed (list the origin in cors.origins to allow it)`,
        },
      }, 403);
    }
    // returned, not only awaited: a consumer's noImplicitReturns
    return await next();
  };
}

/**
 * The WebSocket subprotocol of the gateway's channel subscriptions: the one a
 * handshake that offered it is answered with (`Sec-WebSocket-Protocol`).
 *
 * @example
 * ```ts
 * import { WS_PROTOCOL } from "@pyproxy/pyproxy";
 * console.log(WS_PROTOCOL); // "pyproxy.v1"
 * ```
 */
export const WS_PROTOCOL = "pyproxy.v1";
/**
 * Prefix of the subprotocol that carries the token as it is.
 *
 * @example
 * ```ts
 * import { WS_BEARER_PREFIX, WS_PROTOCOL } from "@pyproxy/pyproxy";
 * const protocols = [WS_PROTOCOL, WS_BEARER_PREFIX + "my-gateway-token-0123"];
 * console.log(protocols[1]); // "pyproxy.bearer.my-gateway-token-0123"
 * ```
 */
export const WS_BEARER_PREFIX = "pyproxy.bearer.";
/**
 * Prefix of the subprotocol that carries the token base64url-encoded (no
 * padding), for a token with characters a subprotocol cannot hold.
 *
 * @example
 * ```ts
 * import { WS_BEARER64_PREFIX } from "@pyproxy/pyproxy";
 * console.log(WS_BEARER64_PREFIX + btoa("a token").replaceAll("=", "")); // "pyproxy.bearer64.YSB0b2tlbg"
 * ```
 */
export const WS_BEARER64_PREFIX = "pyproxy.bearer64.";

/** What a WebSocket handshake offered in `Sec-WebSocket-Protocol`. */
export interface WebSocketOffer {
  /** {@linkcode WS_PROTOCOL} when offered: the subprotocol to answer with. */
  protocol?: string;
  /** The token of a `pyproxy.bearer.` or `pyproxy.bearer64.` entry. */
  token?: string;
  /** Why the offer cannot be served (a 400), e.g. a token without `pyproxy.v1`. */
  problem?: string;
}

/**
 * Reads a WebSocket handshake's `Sec-WebSocket-Protocol` list: whether it
 * offered {@linkcode WS_PROTOCOL}, and the token of a `pyproxy.bearer.<token>`
 * or `pyproxy.bearer64.<base64url(token)>` entry (how a browser's
 * `WebSocket`, which cannot set headers, authenticates). A token must come
 * with `pyproxy.v1`, the subprotocol the gateway answers: the handshake must
 * name one the client offered (browsers fail it otherwise) and must never
 * name the token. Messages never include an entry's text.
 *
 * @example
 * ```ts
 * import { webSocketOffer } from "./security.ts";
 * console.log(webSocketOffer("pyproxy.v1, pyproxy.bearer.t0ken")); // { protocol: "pyproxy.v1", token: "t0ken" }
 * console.log(webSocketOffer("pyproxy.v1, pyproxy.bearer64.dDBrZW4").token); // "t0ken"
 * console.log(webSocketOffer("pyproxy.bearer.t0ken").problem !== undefined); // true
 * ```
 */
export function webSocketOffer(header: string | null): WebSocketOffer {
  if (header === null) return {};
  const offer: WebSocketOffer = {};
  let tokens = 0;
  for (const part of header.split(",")) {
    const entry = part.trim();
    if (entry === WS_PROTOCOL) offer.protocol = WS_PROTOCOL;
    else if (entry.startsWith(WS_BEARER_PREFIX)) {
      tokens++;
      offer.token = entry.slice(WS_BEARER_PREFIX.length);
    } else if (entry.startsWith(WS_BEARER64_PREFIX)) {
      tokens++;
      // An entry that does not decode presents a token that matches nothing.
      offer.token = base64urlText(entry.slice(WS_BEARER64_PREFIX.length)) ??
        "";
    }
  }
  if (tokens > 1) {
    offer.problem =
      "Cannot upgrade to WebSocket: more than one token subprotocol offered";
    delete offer.token;
  } else if (tokens === 1 && offer.protocol === undefined) {
    offer.problem =
      `Cannot upgrade to WebSocket: a token subprotocol needs '${WS_PROTOCOL}' ` +
      `offered with it (new WebSocket(url, ['${WS_PROTOCOL}', '${WS_BEARER_PREFIX}<token>']))`;
    delete offer.token;
  }
  return offer;
}

/** The UTF-8 text of unpadded base64url, or `undefined` when it is not that. */
function base64urlText(value: string): string | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(value) || value.length % 4 === 1) {
    return undefined;
  }
  try {
    const binary = atob(value.replaceAll("-", "+").replaceAll("_", "/"));
    const bytes = Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
}

/** Whether a request is a WebSocket handshake (`GET` with `Upgrade: websocket`). */
function isWebSocketUpgrade(method: string, headers: Headers): boolean {
  return method === "GET" &&
    headers.get("upgrade")?.toLowerCase() === "websocket";
}

export { MAX_TOKENS } from "./_max_tokens.ts";

/** Options for {@linkcode bearerAuth}. */
export interface BearerAuthOptions {
  /**
   * The token, or several accepted alike (rotation: clients move to the new
   * one before the old one is removed).
   */
  token: string | readonly string[];
  /**
   * The management token(s). When set, the requests `manageRoute` picks
   * (eval, model management) accept only these, and answer a valid
   * `token` with 403; these are accepted on every other route too, but
   * never as `?token=` (a URL is kept in browser history and logs).
   */
  manageToken?: string | readonly string[];
  /**
   * Whether a request is one only `manageToken` may make (asked only when
   * `manageToken` is set).
   *
   * @default {() => false}
   */
  manageRoute?: (c: Context) => boolean;
  /**
   * The {@linkcode tokenId}s of the tenants' tokens (of `token`'s): they
   * are refused (403 `ForbiddenToken`) the requests `operatorRoute` picks.
   */
  tenantIds?: ReadonlySet<string>;
  /**
   * Whether a request reads or changes what only the operator may (asked
   * only for a tenant's token).
   *
   * @default {() => false}
   */
  operatorRoute?: (c: Context) => boolean;
  /** Called with each request refused for being a tenant's (its 403), and the token's id. */
  onTenantRefused?: (c: Context, id: string) => void;
  /** Paths served without a token. @default {["/healthz"]} */
  publicPaths?: string[];
  /** Paths that also accept the token as `?token=` (the dashboard page). @default {["/"]} */
  queryTokenPaths?: string[];
  /**
   * Paths whose WebSocket handshakes also accept the token as a subprotocol
   * (see {@linkcode webSocketOffer}): the routes that upgrade. A plain HTTP
   * request to them, or any request to other paths, gets no authentication
   * from `Sec-WebSocket-Protocol`.
   *
   * @default {() => false}
   */
  webSocketPath?: (path: string) => boolean;
  /**
   * Called with each request let in by a token, before the route, with
   * the {@linkcode tokenId} of the token it presented (the gateway hands
   * it to the model calls the request makes, as their `caller`).
   */
  onAuthenticated?: (c: Context, id: string) => void;
  /** Called with each request refused for want of a valid token (its 401). */
  onRefused?: (c: Context) => void;
  /**
   * Called with each WebSocket handshake refused for its subprotocols (its
   * 400: a token without `pyproxy.v1`, two tokens), with the reason, which
   * holds no entry's text (never the token).
   */
  onBadOffer?: (c: Context, problem: string) => void;
}

/**
 * Requires `Authorization: Bearer <token>` (compared in constant time) on
 * every route except the public ones; answers 401 otherwise. A WebSocket
 * handshake to a `webSocketPath` may send the token as a subprotocol instead
 * (`pyproxy.bearer.<token>` with `pyproxy.v1`, see
 * {@linkcode webSocketOffer}), the dashboard page as `?token=`.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { bearerAuth } from "./security.ts";
 * const app = new Hono().use(bearerAuth({ token: "t0ken" })).get("/v1/status", (c) => c.json({}));
 * console.log((await app.request("/v1/status")).status); // 401
 * console.log((await app.request("/v1/status", { headers: { authorization: "Bearer t0ken" } })).status); // 200
 * ```
 */
export function bearerAuth(options: BearerAuthOptions): MiddlewareHandler {
  const publicPaths = new Set(options.publicPaths ?? ["/healthz"]);
  const queryPaths = new Set(options.queryTokenPaths ?? ["/"]);
  const webSocketPath = options.webSocketPath ?? (() => false);
  const identify = tokenIdentifier(options.token);
  const manageIdentify = options.manageToken === undefined
    ? undefined
    : tokenIdentifier(options.manageToken);
  const onAuthenticated = options.onAuthenticated;
  const onRefused = options.onRefused;
  const onBadOffer = options.onBadOffer;
  const manageRoute = options.manageRoute ?? (() => false);
  const tenantIds = options.tenantIds === undefined ||
      options.tenantIds.size === 0
    ? undefined
    : options.tenantIds;
  const operatorRoute = options.operatorRoute ?? (() => false);
  const onTenantRefused = options.onTenantRefused;
  return async (c, next) => {
    const path = c.req.path;
    if (publicPaths.has(path) || c.req.method === "OPTIONS") {
      return await next();
    }
    const header = c.req.header("authorization") ?? "";
    let presented = bearerToken(header);
    let inQuery = false;
    if (presented === undefined && queryPaths.has(path)) {
      presented = c.req.query("token");
      inQuery = presented !== undefined;
    }
    const webSocket = webSocketPath(path) &&
      isWebSocketUpgrade(c.req.method, c.req.raw.headers);
    if (presented === undefined && webSocket) {
      const offer = webSocketOffer(
        c.req.header("sec-websocket-protocol") ?? null,
      );
      if (offer.problem !== undefined) {
        onBadOffer?.(c, offer.problem);
        return c.json({
          error: { type: "InvalidRequestError", message: offer.problem },
        }, 400);
      }
      presented = offer.token;
    }
    // Both checked, always: which one matched shows in no timing.
    const inferenceId = presented === undefined
      ? undefined
      : identify(presented);
    const manageId = presented === undefined || manageIdentify === undefined
      ? undefined
      : manageIdentify(presented);
    const inference = inferenceId !== undefined;
    const manage = manageId !== undefined;
    if (manage && inQuery) {
      return c.json({
        error: {
          type: "ForbiddenToken",
          message:
            "Cannot serve request: the management token is not accepted as ?token= (a URL is kept in browser history and server logs); open the dashboard with the inference token (token, --token, PYPROXY_TOKEN), or send the header 'Authorization: Bearer <token>'",
        },
      }, 403);
    }
    if (inference && manageIdentify !== undefined && manageRoute(c)) {
      return c.json({
        error: {
          type: "ForbiddenToken",
          message:
            `Cannot ${c.req.method} ${path}: eval and model management take the management token (manageToken, --manage-token, PYPROXY_MANAGE_TOKEN), not the inference token (token, --token, PYPROXY_TOKEN)`,
        },
      }, 403);
    }
    if (!inference && !manage) {
      onRefused?.(c);
      c.header("www-authenticate", 'Bearer realm="pyproxy"');
      return c.json({
        error: {
          type: "Unauthorized",
          message: unauthorizedMessage(
            queryPaths.has(path),
            c.req.query("token") !== undefined,
            webSocket,
          ),
        },
      }, 401);
    }
    if (
      tenantIds !== undefined && !manage && tenantIds.has(inferenceId!) &&
      operatorRoute(c)
    ) {
      onTenantRefused?.(c, inferenceId!);
      return c.json({
        error: {
          type: "ForbiddenToken",
          message: `Cannot ${c.req.method} ${
            path.length > 200 ? `${path.slice(0, 200)}…` : path
          }: ${TENANT_REFUSED}`,
        },
      }, 403);
    }
    onAuthenticated?.(c, (inferenceId ?? manageId)!);
    await next();
  };
}

/** Why a tenant's token is refused an operator's route (its 403). */
const TENANT_REFUSED =
  "this token is a tenant's (marked \"tenant\" in the token file): it calls models, and the operator's views (/metrics, /v1/status, the dashboard, the channels' list and publishing, an execute's ?publish=, statistics, eval and model management) take an operator's token (a token file line without the mark)";

/**
 * A 401's message, saying how to send the token: a newcomer opening the
 * dashboard URL without `?token=`, passing `?token=` to an API route, or
 * opening a WebSocket (whose browser API cannot send headers).
 */
function unauthorizedMessage(
  queryPath: boolean,
  queryToken: boolean,
  webSocket: boolean,
): string {
  const how = queryPath
    ? "open /?token=<token>, or send the header 'Authorization: Bearer <token>'"
    : webSocket
    ? `offer the subprotocols '${WS_PROTOCOL}' and '${WS_BEARER_PREFIX}<token>' ` +
      `(or '${WS_BEARER64_PREFIX}<base64url of the token>'), as in ` +
      `new WebSocket(url, ['${WS_PROTOCOL}', '${WS_BEARER_PREFIX}' + token]), ` +
      "or send the header 'Authorization: Bearer <token>'"
    : "send the header 'Authorization: Bearer <token>'" +
      (queryToken ? " (?token= is accepted by the dashboard page / only)" : "");
  return `Cannot serve request: missing or wrong bearer token; ${how}, with ` +
    "the gateway's token (yours, or the one serve generated and printed at start)";
}

/**
 * The token of an `Authorization: Bearer <token>` value, if it is one.
 *
 * @example
 * ```ts
 * import { bearerToken } from "./security.ts";
 * console.log(bearerToken("Bearer t0ken"), bearerToken("Basic eDp5")); // "t0ken" undefined
 * ```
 */
export function bearerToken(header: string): string | undefined {
  return /^Bearer\s+(.+)$/i.exec(header)?.[1]?.trim();
}

/**
 * The id of a token: the first 16 hex digits of its SHA-256, which names
 * the token (and so the client holding it) without revealing it. The
 * gateway gives it to plugins as the `caller` of each model call it let in
 * (`ModelCall.caller`); compute a client's the same way from its token:
 * `printf %s "$TOKEN" | sha256sum | cut -c1-16`.
 *
 * @example
 * ```ts
 * import { tokenId } from "@pyproxy/pyproxy";
 * console.log(tokenId("d6f41502211c66ec6238ef3a970604bf")); // "6c058b0daa6316f5"
 * ```
 */
export function tokenId(token: string): string {
  return hexId(digest(token));
}

function hexId(hash: Uint8Array): string {
  let id = "";
  for (let i = 0; i < 8; i++) id += hash[i]!.toString(16).padStart(2, "0");
  return id;
}

/**
 * A constant-time comparison against `token`, hashed once rather than per
 * request, that answers with the {@linkcode tokenId} of the token matched
 * (`undefined` for none). With a few tokens (rotation: up to 4), the
 * presented one is hashed once and compared with every one of them, without
 * stopping at a match: the time says nothing of which one matched, or
 * whether one did. With more (a token per client, up to
 * {@linkcode MAX_TOKENS}), its digest is looked up among theirs, then
 * compared in constant time: the cost of a request is the same for 5
 * tokens or 1000. The ids are computed once, here: a match costs no
 * allocation.
 *
 * @example
 * ```ts
 * import { tokenIdentifier } from "./security.ts";
 * const identify = tokenIdentifier(["d6f41502211c66ec6238ef3a970604bf", "28843c05b742af31288a9f7cdf770b96"]);
 * console.log(identify("d6f41502211c66ec6238ef3a970604bf")); // "6c058b0daa6316f5"
 * console.log(identify("guess")); // undefined
 * ```
 */
export function tokenIdentifier(
  token: string | readonly string[],
): (presented: string) => string | undefined {
  if (typeof token === "string" || token.length === 1) {
    const expected = digest(typeof token === "string" ? token : token[0]!);
    const id = hexId(expected);
    // An empty one never matches: `?token=` and an undecodable token
    // subprotocol present "", which must not pass for a token set to "".
    return (presented) =>
      presented !== "" && timingSafeEqual(digest(presented), expected)
        ? id
        : undefined;
  }
  const expected = token.map(digest);
  const ids = expected.map(hexId);
  if (expected.length > SCANNED_TOKENS) return digestLookup(expected, ids);
  return (presented) => {
    if (presented === "") return undefined;
    const got = digest(presented);
    let found = -1;
    for (let i = 0; i < expected.length; i++) {
      if (timingSafeEqual(got, expected[i]!)) found = i;
    }
    return found < 0 ? undefined : ids[found];
  };
}

/**
 * The longest token list compared entry by entry: a longer one (a token
 * per client) is looked up by its digest, since comparing with each cost
 * about 0.6 µs a token per request (11-13 µs with 16 tokens, 560-760 µs
 * with 1000, where a whole call costs the gateway about 33 µs).
 */
const SCANNED_TOKENS = 4;

/**
 * A token list's digests by their first 4 bytes: the presented token's
 * digest is compared (in constant time) with the few that share them, one
 * in practice. Its time tells whether some listed token's SHA-256 starts
 * with the same 4 bytes as the presented one's: a fact about digests that
 * nobody can turn back into a token, as with a server that keeps tokens
 * hashed and looks them up.
 */
function digestLookup(
  expected: readonly Buffer[],
  ids: readonly string[],
): (presented: string) => string | undefined {
  const buckets = new Map<number, Array<{ digest: Buffer; id: string }>>();
  for (let i = 0; i < expected.length; i++) {
    const key = expected[i]!.readUInt32BE(0);
    const entry = { digest: expected[i]!, id: ids[i]! };
    const bucket = buckets.get(key);
    if (bucket === undefined) buckets.set(key, [entry]);
    else bucket.push(entry);
  }
  return (presented) => {
    if (presented === "") return undefined;
    const got = digest(presented);
    const bucket = buckets.get(got.readUInt32BE(0));
    if (bucket === undefined) return undefined;
    let found: string | undefined;
    for (const entry of bucket) {
      if (timingSafeEqual(got, entry.digest)) found = entry.id;
    }
    return found;
  };
}

/**
 * A constant-time comparison against `token` ({@linkcode tokenIdentifier}
 * answering whether one matched).
 *
 * @example
 * ```ts
 * import { tokenMatcher } from "./security.ts";
 * const matches = tokenMatcher("t0ken");
 * console.log(matches("t0ken"), matches("guess")); // true false
 * console.log(tokenMatcher("")("")); // false
 * const rotating = tokenMatcher(["old-token", "new-token"]);
 * console.log(rotating("old-token"), rotating("new-token"), rotating("other")); // true true false
 * ```
 */
export function tokenMatcher(
  token: string | readonly string[],
): (presented: string) => boolean {
  const identify = tokenIdentifier(token);
  return (presented) => identify(presented) !== undefined;
}

/**
 * CORS middleware for the configured origins, or `undefined` when CORS is
 * not configured (then no CORS header is ever sent). A page may send the
 * request headers the gateway forwards to models (`forwardHeaders`) too.
 *
 * @example
 * ```ts
 * import { corsMiddleware } from "./security.ts";
 * console.log(corsMiddleware(undefined)); // undefined
 * console.log(typeof corsMiddleware({ origins: ["https://app.example.com"] })); // "function"
 * ```
 */
export function corsMiddleware(
  config: CorsConfig | undefined,
  forwardHeaders: readonly string[] = [],
  exposed?: ExposedModelHeaders,
): MiddlewareHandler | undefined {
  if (!config || config.origins.length === 0) return undefined;
  const origins = config.origins;
  const handler = cors({
    origin: origins.includes("*")
      ? "*"
      : (origin) => (origins.includes(origin) ? origin : null),
    allowMethods: ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
    // x-request-id both ways: a page that tags its calls (docs/gateway.md,
    // "Request ids") would otherwise fail the preflight, and could not read
    // the id of an error response.
    // And the headers forwarded to models (forwardHeaders): a page sending
    // its x-tenant-id would fail the preflight otherwise. And the length
    // of a `/v2` binary request's JSON (the binary tensor data extension).
    allowHeaders: [
      "authorization",
      "content-type",
      "inference-header-content-length",
      "last-event-id",
      "x-request-id",
      ...forwardHeaders,
    ],
    exposeHeaders: EXPOSED,
    credentials: config.credentials ?? false,
    maxAge: config.maxAge ?? 600,
  });
  // The headers a model chose (its success's or its HTTPError's, those the
  // allow-list took) are exposed too, on that response only: a page could
  // not read a 201's Location otherwise.
  return (c, next) =>
    handler(c, async () => {
      await next();
      const names = exposed?.get(c.req.raw);
      if (names !== undefined) {
        const more = names.filter((n) => !EXPOSED.includes(n));
        if (more.length > 0) {
          c.res.headers.set(
            "access-control-expose-headers",
            [...EXPOSED, ...more].join(","),
          );
        }
      }
    });
}

/**
 * The response headers a page may read besides the CORS-safelisted ones
 * (`inference-header-content-length`: where a `/v2` binary response's
 * JSON ends).
 */
const EXPOSED = [
  "inference-header-content-length",
  "retry-after",
  "x-atom-id",
  "x-request-id",
];
