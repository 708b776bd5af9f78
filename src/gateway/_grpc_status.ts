/**
 * gRPC's status codes, the status of a REST answer, and the transport's
 * header values (`grpc-message`'s percent-encoding, `grpc-timeout`).
 * docs/gateway.md, "gRPC" (the table).
 *
 * @module
 */

/** gRPC status codes. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** The names of the statuses, by code (`4`: `DEADLINE_EXCEEDED`). */
const STATUS_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(GrpcStatus).map(([name, code]) => [code, name]),
);

/**
 * The name of gRPC status `code` (`grpc.StatusCode`'s in grpcio), or
 * `UNKNOWN` for a code this module does not name.
 *
 * @example
 * ```ts
 * import { grpcStatusName } from "./_grpc_status.ts";
 * console.log(grpcStatusName(4)); // "DEADLINE_EXCEEDED"
 * ```
 */
export function grpcStatusName(code: number): string {
  return STATUS_NAMES.get(code) ?? "UNKNOWN";
}

/**
 * The gRPC status of a REST status: docs/gateway.md, "gRPC" (the table).
 *
 * @example
 * ```ts
 * import { grpcStatusOf } from "./_grpc_status.ts";
 * console.log(grpcStatusOf(404)); // 5 (NOT_FOUND)
 * ```
 */
export function grpcStatusOf(status: number): number {
  switch (status) {
    case 400:
    case 422:
      return GrpcStatus.INVALID_ARGUMENT;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.NOT_FOUND;
    case 405:
    case 501:
      return GrpcStatus.UNIMPLEMENTED;
    case 408:
    case 504:
      return GrpcStatus.DEADLINE_EXCEEDED;
    case 409:
    case 412:
      return GrpcStatus.FAILED_PRECONDITION;
    case 413:
    case 429:
    case 507:
      return GrpcStatus.RESOURCE_EXHAUSTED;
    case 499:
      return GrpcStatus.CANCELLED;
    case 503:
      return GrpcStatus.UNAVAILABLE;
    default:
      return status >= 500 ? GrpcStatus.INTERNAL : GrpcStatus.UNKNOWN;
  }
}

/** The longest `grpc-message` sent (a model's message can be long). */
const MAX_MESSAGE = 4096;

/**
 * `grpc-message`'s percent-encoding (the spec's: bytes outside printable
 * ASCII, and `%`).
 */
export function percentEncode(message: string): string {
  const text = message.length > MAX_MESSAGE
    ? `${message.slice(0, MAX_MESSAGE)}...`
    : message;
  let out = "";
  for (const byte of new TextEncoder().encode(text)) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25
      ? String.fromCharCode(byte)
      : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** `grpc-timeout` in ms (`undefined`: none or unreadable). */
export function grpcTimeoutMs(value: string | undefined): number | undefined {
  const m = value === undefined ? null : /^(\d{1,8})([HMSmun])$/.exec(value);
  if (m === null) return undefined;
  const n = Number(m[1]);
  const scale: Record<string, number> = {
    H: 3_600_000,
    M: 60_000,
    S: 1000,
    m: 1,
    u: 1e-3,
    n: 1e-6,
  };
  return n * scale[m[2]!]!;
}
