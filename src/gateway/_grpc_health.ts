/**
 * gRPC's standard health checking service (`grpc.health.v1.Health/Check`,
 * what Kubernetes' gRPC probes and `grpc_health_probe` call), answered from
 * `GET /healthz`: like it, without a token (a probe sends none, and the
 * answer tells nothing a token guards). `Watch` is
 * `_grpc_health_watch.ts`'s. docs/gateway.md, "gRPC".
 *
 * @module
 */
import { LEN, ProtoReader, ProtoWriter } from "./_protobuf.ts";
import type { Answer } from "./_grpc_framing.ts";
import type { RestCall } from "./_grpc_rest.ts";
import { GrpcStatus } from "./_grpc_status.ts";

/** The health service's path prefix. */
export const HEALTH_SERVICE = "/grpc.health.v1.Health/";

/** The services a Check knows: the server as a whole, and the inference service. */
const SERVICES = new Set(["", "inference.GRPCInferenceService"]);

/** `HealthCheckResponse.ServingStatus` (SERVICE_UNKNOWN: `Watch`'s only). */
export const ServingStatus = {
  SERVING: 1,
  NOT_SERVING: 2,
  SERVICE_UNKNOWN: 3,
} as const;

/** Whether `service` is one a check knows. */
export function isKnownService(service: string): boolean {
  return SERVICES.has(service);
}

/** A `HealthCheckRequest`'s `service` (field 1). */
export function decodeHealthCheckRequest(bytes: Uint8Array): string {
  const r = new ProtoReader(bytes);
  let service = "";
  while (r.more()) {
    const tag = r.tag();
    if (tag === (1 << 3 | LEN)) service = r.string();
    else r.skip(tag);
  }
  return service;
}

/**
 * A Check: SERVING when `/healthz` answers 200 (a ready worker, not
 * draining), NOT_SERVING when it answers 503, NOT_FOUND for a service the
 * server does not have (the health protocol's answer).
 */
export async function healthCheck(
  message: Uint8Array,
  rest: RestCall,
): Promise<Answer> {
  const service = decodeHealthCheckRequest(message);
  if (!isKnownService(service)) {
    return {
      status: GrpcStatus.NOT_FOUND,
      message: `Cannot check the health of service ${
        JSON.stringify(service.slice(0, 128))
      }: unknown (known: "" and "inference.GRPCInferenceService")`,
    };
  }
  const res = await rest("/healthz");
  await res.body?.cancel();
  const status = res.ok ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
  return {
    status: GrpcStatus.OK,
    body: new ProtoWriter(4).tag(1, 0).varint(status).finish(),
  };
}
