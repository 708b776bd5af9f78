/**
 * W3C trace context (https://www.w3.org/TR/trace-context/): the
 * `traceparent` and `tracestate` headers, read strictly. The gateway's
 * tracing reads a client's (a malformed one starts a new trace, never an
 * error); `pool.execute`'s `traceparent` option is checked with the same
 * parser, and both go to the model (`host.trace_context()`).
 *
 * @module
 */

/** A parsed `traceparent`: ids as lower-case hex. */
export interface TraceParent {
  /** 32 hex digits, not all zero. */
  traceId: string;
  /** The caller's span: 16 hex digits, not all zero. */
  parentId: string;
  /** Whether the caller records the trace (flag bit 0). */
  sampled: boolean;
}

// version "-" trace-id "-" parent-id "-" flags, lower-case hex only.
const TRACEPARENT =
  /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = "00000000000000000000000000000000";
const ZERO_SPAN = "0000000000000000";

/**
 * The `traceparent` header `value`, parsed as the W3C spec says, or
 * `undefined` for anything it would not take: version `ff`, an all-zero
 * id, upper-case hex, version `00` with more after the flags, or a later
 * version whose extra fields do not follow a `-` (a later version's extra
 * fields are ignored, as the spec asks).
 *
 * @example
 * ```ts
 * import { parseTraceparent } from "./_trace_context.ts";
 * const parent = parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
 * console.log(parent?.sampled); // true
 * console.log(parseTraceparent("00-xyz")); // undefined
 * ```
 */
export function parseTraceparent(value: string): TraceParent | undefined {
  // The longest a header the gateway takes: the spec's fields and some room
  // for a later version's.
  if (value.length < 55 || value.length > 512) return undefined;
  const match = TRACEPARENT.exec(value);
  if (match === null) return undefined;
  const [, version, traceId, parentId, flags, rest] = match as unknown as [
    string,
    string,
    string,
    string,
    string,
    string | undefined,
  ];
  if (version === "ff") return undefined;
  if (version === "00" && rest !== undefined) return undefined;
  if (traceId === ZERO_TRACE || parentId === ZERO_SPAN) return undefined;
  return {
    traceId,
    parentId,
    sampled: (parseInt(flags, 16) & 1) === 1,
  };
}

// A list member: key "=" value; keys are simple or tenant@system.
const TRACESTATE_MEMBER =
  /^(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$/;

/** The most characters of a `tracestate` the gateway passes on. */
export const MAX_TRACESTATE = 512;

/**
 * The `tracestate` header `value` with its blanks around list members
 * trimmed, or `undefined` when it is not one the spec allows (or longer
 * than {@linkcode MAX_TRACESTATE} characters, more than 32 members, a key
 * twice): such a `tracestate` is dropped, the `traceparent` still holds.
 *
 * @example
 * ```ts
 * import { checkTracestate } from "./_trace_context.ts";
 * console.log(checkTracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")); // "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
 * console.log(checkTracestate("no equals")); // undefined
 * ```
 */
export function checkTracestate(value: string): string | undefined {
  if (value.length > MAX_TRACESTATE) return undefined;
  const members: string[] = [];
  const keys = new Set<string>();
  for (const part of value.split(",")) {
    const member = part.trim();
    // Empty members are allowed and skipped (RFC 9110 lists).
    if (member === "") continue;
    if (!TRACESTATE_MEMBER.test(member)) return undefined;
    const key = member.slice(0, member.indexOf("="));
    if (keys.has(key)) return undefined;
    keys.add(key);
    members.push(member);
  }
  if (members.length === 0 || members.length > 32) return undefined;
  return members.join(",");
}

/**
 * A `traceparent` header value (version `00`).
 *
 * @example
 * ```ts
 * import { formatTraceparent } from "./_trace_context.ts";
 * console.log(formatTraceparent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true));
 * // "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
 * ```
 */
export function formatTraceparent(
  traceId: string,
  spanId: string,
  sampled: boolean,
): string {
  return `00-${traceId}-${spanId}-${sampled ? "01" : "00"}`;
}

/**
 * Random trace and span ids: `bytes` random bytes as lower-case hex, never all
 * zero (an all-zero trace or span id is invalid). The bytes are drawn 4 KiB at
 * a time (one `getRandomValues` per ~170 spans); each tracer holds its own.
 *
 * @example
 * ```ts
 * import { RandomHexIds } from "./_trace_context.ts";
 * const ids = new RandomHexIds();
 * console.log(ids.next(8).length, ids.next(16).length); // 16 32
 * ```
 */
export class RandomHexIds {
  readonly #pool = new Uint8Array(4096);
  #used = this.#pool.length;

  /** `bytes` random bytes as lower-case hex, never all zero. */
  next(bytes: 8 | 16): string {
    const pool = this.#pool;
    for (;;) {
      if (this.#used + bytes > pool.length) {
        crypto.getRandomValues(pool);
        this.#used = 0;
      }
      let hex = "";
      let zero = true;
      const end = this.#used + bytes;
      for (let i = this.#used; i < end; i++) {
        const b = pool[i]!;
        if (b !== 0) zero = false;
        hex += HEX[b];
      }
      this.#used = end;
      if (!zero) return hex;
    }
  }
}

const HEX = Array.from(
  { length: 256 },
  (_, b) => b.toString(16).padStart(2, "0"),
);
