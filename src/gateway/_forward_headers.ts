/**
 * The request headers the gateway forwards to models (`forwardHeaders` in
 * pyproxy.json, `serve --forward-header`): which names may be listed, and
 * the reading of the listed ones from a request.
 *
 * @module
 */
import { MAX_CALL_HEADER_VALUE } from "../_call_options.ts";
import { httpError } from "./error_response.ts";

/** Most names `forwardHeaders` may list (within the 64 headers a call takes). */
export const MAX_FORWARD_HEADERS = 32;

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/;

/**
 * Headers that never reach a model, with why: hop-by-hop headers (they
 * describe one connection, not the request), the framing and the body's
 * own (the gateway read the body; `host.content_type()` has a binary
 * body's type), the request id (`host.request_id()` has it) and the proxy's
 * credentials.
 */
const REFUSED: Record<string, string> = {
  "connection": "a hop-by-hop header",
  "keep-alive": "a hop-by-hop header",
  "proxy-connection": "a hop-by-hop header",
  "transfer-encoding": "a hop-by-hop header",
  "te": "a hop-by-hop header",
  "trailer": "a hop-by-hop header",
  "upgrade": "a hop-by-hop header",
  "proxy-authorization": "the credentials of a proxy",
  "proxy-authenticate": "a hop-by-hop header",
  "host": "the gateway's (its Host check reads it)",
  "content-length": "the body's framing (the gateway read the body)",
  "content-type": "the body's (host.content_type() has a binary body's)",
  "content-encoding":
    "the body's (the gateway decodes a compressed body: the model gets it decoded)",
  "x-request-id": "the request id's (host.request_id() has it)",
};

/**
 * Why `name` (lower-case) cannot be forwarded, or `undefined`. With
 * `token` (the gateway's bearer token guards its routes), `authorization`
 * is refused: it holds that token, and model code would read it.
 *
 * @example
 * ```ts ignore
 * forwardHeaderProblem("authorization", true); // "holds the gateway's bearer token ..."
 * ```
 */
export function forwardHeaderProblem(
  name: string,
  token: boolean,
): string | undefined {
  if (!TOKEN.test(name)) return "not an HTTP header name";
  const why = REFUSED[name];
  if (why !== undefined) return `never forwarded: ${why}`;
  if (name === "authorization" && token) {
    return "never forwarded while the gateway has a token: it holds the gateway's bearer token, which model code would read";
  }
  return undefined;
}

/**
 * The listed request headers `names` (lower-case) a request has, name →
 * value, or `undefined` when it has none of them. A value longer than a
 * call takes is answered 431.
 *
 * @example
 * ```ts ignore
 * forwardedHeaders(request, ["accept-language"]); // { "accept-language": "fr" }
 * ```
 */
export function forwardedHeaders(
  request: Request,
  names: readonly string[],
): Record<string, string> | undefined {
  let found: Record<string, string> | undefined;
  for (const name of names) {
    const value = request.headers.get(name);
    if (value === null) continue;
    if (value.length > MAX_CALL_HEADER_VALUE) {
      throw httpError(
        431,
        "RequestHeaderTooLarge",
        `Cannot execute: the ${name} header has ${value.length} characters (a model takes at most ${MAX_CALL_HEADER_VALUE})`,
      );
    }
    (found ??= {})[name] = value;
  }
  return found;
}

/**
 * `forwardHeaders` as the gateway uses them: lower-case (HTTP names ignore
 * case), each once; throws `RangeError` for a name
 * {@linkcode forwardHeaderProblem} refuses or for more than
 * {@linkcode MAX_FORWARD_HEADERS}.
 *
 * @example
 * ```ts ignore
 * forwardHeaderList(["Accept-Language", "accept-language"], false); // ["accept-language"]
 * ```
 */
export function forwardHeaderList(
  names: readonly string[],
  token: boolean,
): readonly string[] {
  const list = [...new Set(names.map((name) => name.toLowerCase()))];
  if (list.length > MAX_FORWARD_HEADERS) {
    throw new RangeError(
      `Cannot create gateway: forwardHeaders lists ${list.length} headers (at most ${MAX_FORWARD_HEADERS})`,
    );
  }
  for (const name of list) {
    const problem = forwardHeaderProblem(name, token);
    if (problem !== undefined) {
      throw new RangeError(
        `Cannot create gateway: forwardHeaders: ${
          JSON.stringify(name.slice(0, 64))
        } is ${problem}`,
      );
    }
  }
  return Object.freeze(list);
}
