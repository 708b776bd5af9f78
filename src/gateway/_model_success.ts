/**
 * A model call's response with the status and headers its model chose
 * (`host.set_status`, `host.set_header`: docs/gateway.md, "Statuses and
 * headers of a success").
 *
 * @module
 */
import type { ResponseMeta } from "../session_types.ts";
import {
  type ExposedModelHeaders,
  modelResponseHeaders,
} from "./_model_http_headers.ts";

/** Statuses whose response has no body (RFC 9110). */
const NO_BODY = new Set([204, 205]);

/**
 * `res` (the gateway's own response to a call's result: 200 with its body,
 * or 204 for none) with `meta`'s status and the headers the allow-list
 * takes (the one of a model's `HTTPError`), set only where `res` has none
 * of that name: a header the gateway sets (`Content-Type`, an event
 * stream's `Cache-Control`...) stays its own. Their names go to CORS
 * (`exposed`, the gateway's). Returns the response and the names refused (the
 * caller logs them).
 *
 * @example
 * ```ts ignore
 * const { response } = withModelMeta(Response.json({ id: 7 }), { status: 201, headers: { Location: "/items/7" } }, request, new WeakMap());
 * console.log(response.status); // 201
 * ```
 */
export function withModelMeta(
  res: Response,
  meta: ResponseMeta,
  request: Request,
  exposed: ExposedModelHeaders,
  keepStatus = false,
): { response: Response; refused: string[] } {
  const { allowed, refused } = meta.headers === undefined
    ? { allowed: undefined, refused: [] }
    : modelResponseHeaders(meta.headers);
  const status = meta.status;
  let response = res;
  if (!keepStatus && status !== undefined && status !== res.status) {
    // A body (or none) as the status wants: a 204 or 205 has none, and a
    // None result with a status that has one is an empty body.
    response = new Response(NO_BODY.has(status) ? null : res.body, {
      status,
      headers: res.headers,
    });
  }
  if (allowed !== undefined) {
    const names: string[] = [];
    const headers = response.headers;
    for (const name in allowed) {
      if (headers.has(name)) {
        // The gateway's own Vary (`compress`: Accept-Encoding) and the model's both hold.
        if (name === "vary") headers.append(name, allowed[name]!);
        else refused.push(name);
        continue;
      }
      headers.set(
        name,
        name === "etag" ? etagOf(allowed[name]!, headers) : allowed[name]!,
      );
      names.push(name);
    }
    if (names.length > 0) exposed.set(request, names);
  }
  return { response, refused };
}

/**
 * A model's `ETag` for `headers`' body: made weak (`W/`) when the gateway
 * gzipped the body (`compress`), as nginx does. A strong validator names
 * one sequence of bytes (RFC 9110 §8.8.1), and the gzipped body and the
 * plain one are two: with the same strong tag, a cache or a range request
 * could join bytes of one to the other. A weak tag still matches the
 * model's own in `If-None-Match` (weak comparison).
 */
function etagOf(value: string, headers: Headers): string {
  return headers.has("content-encoding") && !value.startsWith("W/")
    ? `W/${value}`
    : value;
}
