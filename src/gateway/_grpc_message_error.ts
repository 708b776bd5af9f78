/**
 * The error of a gRPC request message that is not what the protocol says
 * (its call's answer: INVALID_ARGUMENT).
 *
 * @module
 */

/** A request's message that is not what the protocol says (INVALID_ARGUMENT). */
export class GrpcMessageError extends Error {
  /** Stable code. */
  readonly code = "GRPC_INVALID_MESSAGE";
  constructor(message: string) {
    super(message);
    this.name = "GrpcMessageError";
  }
}

/** A `GrpcMessageError` of an infer request ("Cannot infer: ..."). */
export function inferError(message: string): GrpcMessageError {
  return new GrpcMessageError(`Cannot infer: ${message}`);
}
