/**
 * Which of the headers a model's `HTTPError` asks for the gateway sends:
 * an allow-list of response headers a model has a use for (caching,
 * `Retry-After`, `Location`, `WWW-Authenticate`...) and custom `X-…`
 * headers, never one the gateway or the HTTP layer owns (`Set-Cookie`,
 * `Content-Type`, framing, CORS, security headers, `X-Request-Id`).
 *
 * @module
 */

/** Response headers a model may set, lower-case. */
const ALLOWED = new Set([
  "allow",
  "cache-control",
  "content-disposition",
  "content-language",
  "etag",
  "expires",
  "last-modified",
  "link",
  "location",
  "retry-after",
  "vary",
  "www-authenticate",
]);

/**
 * `X-…` headers the gateway, a proxy in front of it or a browser's
 * security model owns: refused although custom.
 */
const OWNED_X = new Set([
  "x-request-id",
  "x-content-type-options",
  "x-frame-options",
  "x-xss-protection",
  "x-atom-id",
  "x-real-ip",
  "x-lighttpd-send-file",
]);

/** Most headers of one error taken; the rest are refused. */
export const MAX_MODEL_HEADERS = 32;

/**
 * Most bytes of the headers of one error taken, names and values together
 * (a header counts its name, its value and 4 for `: ` and CRLF): clients
 * refuse responses with larger headers (Node's default limit is 16 KiB for
 * all of them), so a model's error would become unreadable. Headers past it
 * are refused.
 */
export const MAX_MODEL_HEADER_BYTES = 8192;

// RFC 9110 token, and a value a `Headers` object takes as it is (Latin-1,
// no control characters but tab), at most 8 KiB.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/;
const VALUE = /^[\t\x20-\x7e\x80-\xff]{0,8192}$/;

/**
 * Prefixes of `X-…` headers a proxy or web server in front of the gateway
 * owns: X-Forwarded-* (-For, -Host, -Proto...), and those it acts on in an
 * upstream's response: nginx's X-Accel-* (X-Accel-Redirect serves any
 * internal location or file, -Limit-Rate, -Buffering...), X-Sendfile (and
 * X-Sendfile2: Apache, lighttpd) serves a file from the proxy's disk.
 */
const OWNED_X_PREFIXES = ["x-forwarded-", "x-accel-", "x-sendfile"];

/** Whether the gateway sends a model's response header named `name` (lower-case). */
function allowedName(name: string): boolean {
  return ALLOWED.has(name) ||
    (name.startsWith("x-") && name.length > 2 && !OWNED_X.has(name) &&
      !OWNED_X_PREFIXES.some((prefix) => name.startsWith(prefix)));
}

/**
 * A model's `HTTPError` headers split into those the response gets
 * (`allowed`, lower-case names) and the names refused: not on the
 * allow-list, not an HTTP token, a value with CR, LF or another control
 * character (or beyond Latin-1, or over 8 KiB), or beyond the first
 * {@linkcode MAX_MODEL_HEADERS} or {@linkcode MAX_MODEL_HEADER_BYTES}.
 *
 * @example
 * ```ts ignore
 * modelResponseHeaders({ "Retry-After": "5", "Set-Cookie": "a=1" });
 * // { allowed: { "retry-after": "5" }, refused: ["Set-Cookie"] }
 * ```
 */
export function modelResponseHeaders(
  headers: Readonly<Record<string, string>>,
): { allowed: Record<string, string>; refused: string[] } {
  const allowed: Record<string, string> = {};
  const refused: string[] = [];
  let taken = 0;
  let bytes = 0;
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (
      taken < MAX_MODEL_HEADERS && TOKEN.test(name) && allowedName(lower) &&
      typeof value === "string" && VALUE.test(value) &&
      bytes + name.length + value.length + 4 <= MAX_MODEL_HEADER_BYTES
    ) {
      allowed[lower] = value;
      taken++;
      bytes += name.length + value.length + 4;
    } else refused.push(name);
  }
  return { allowed, refused };
}

/**
 * The names (lower-case) of the model headers each response got, by its
 * request, for `Access-Control-Expose-Headers` when CORS is on (security.ts):
 * a page reads only the CORS-safelisted headers and the exposed ones. One
 * per gateway (`RouteContext.exposedHeaders`); only requests whose model set
 * some are in it, and an entry goes with its request.
 */
export type ExposedModelHeaders = WeakMap<Request, string[]>;
