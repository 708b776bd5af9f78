/**
 * The HTTP status and headers a model chose for its success (protocol §6,
 * `http`: `host.set_status`, `host.set_header`), read from the wire.
 *
 * @module
 */
import type { ResponseMeta } from "./session_types.ts";

/**
 * `wire` (a reply's, a batch result's or a stream item's `http`) as a
 * {@linkcode ResponseMeta}, or `undefined` when it is not one: an object
 * with an optional integer `status` from 200 to 299 and optional `headers`
 * (an object of strings). A peer's field this side cannot trust is dropped
 * whole rather than half used.
 */
export function responseMetaOf(wire: unknown): ResponseMeta | undefined {
  if (typeof wire !== "object" || wire === null || Array.isArray(wire)) {
    return undefined;
  }
  const { status, headers } = wire as Record<string, unknown>;
  const meta: ResponseMeta = {};
  if (status !== undefined) {
    if (
      typeof status !== "number" || !Number.isInteger(status) ||
      status < 200 || status > 299
    ) return undefined;
    meta.status = status;
  }
  if (headers !== undefined) {
    if (
      typeof headers !== "object" || headers === null || Array.isArray(headers)
    ) return undefined;
    const out: Record<string, string> = {};
    for (const [name, value] of Object.entries(headers)) {
      if (typeof value !== "string") return undefined;
      out[name] = value;
    }
    meta.headers = out;
  }
  return meta;
}

/**
 * Hands `wire` to `onMeta` (when there is one) as a {@linkcode ResponseMeta};
 * a malformed one, or a callback that throws, is logged with `warn` and
 * the call goes on: its result does not depend on it.
 */
export function deliverResponseMeta(
  wire: unknown,
  onMeta: ((meta: ResponseMeta) => void) | undefined,
  warn: (message: string, properties: Record<string, unknown>) => void,
): void {
  if (onMeta === undefined) return;
  const meta = responseMetaOf(wire);
  if (meta === undefined) {
    warn("Ignored a malformed http field (the model's status and headers)", {
      http: wire,
    });
    return;
  }
  try {
    onMeta(meta);
  } catch (error) {
    warn("The onResponseMeta callback threw: {error}", { error });
  }
}
