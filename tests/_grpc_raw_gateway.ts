/**
 * Test helper: a gateway with its gRPC port, in a process of its own
 * (tests/_gateway_process.ts: Deno's node:http2 may crash it), and a raw
 * grpc-js client of it (requests encoded by the test with protobufjs from
 * Triton's .proto), and that .proto's types.
 */
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import {
  type GatewayProcess,
  startGatewayProcess,
} from "./_gateway_process.ts";
import { grpc } from "./_grpc_client.ts";

/** A gateway with a raw gRPC client; `await using` shuts both down. */
export type RawGrpcGateway = GatewayProcess & { client: grpc.Client };

/**
 * A gateway serving `models` with `token`, its gRPC port on, and a raw
 * client of that port.
 */
export async function rawGrpcGateway(
  token: string,
  models: Record<string, string>,
  extra: Parameters<typeof startGatewayProcess>[0] = {},
): Promise<RawGrpcGateway> {
  const gw = await startGatewayProcess(
    { grpc: { port: 0 }, token, ...extra },
    models,
  );
  const client = new grpc.Client(
    gw.grpcTarget!,
    grpc.credentials.createInsecure(),
  );
  const dispose = gw[Symbol.asyncDispose];
  return Object.assign(gw, {
    client,
    async [Symbol.asyncDispose]() {
      client.close();
      await dispose();
    },
  });
}

/** Triton's grpc_service.proto (with KServe's messages), field names kept. */
export function tritonProto(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) =>
    fileURLToPath(new URL(`./fixtures/grpc/${target}`, import.meta.url));
  root.loadSync("triton_extensions.proto", { keepCase: true });
  return root;
}
