/**
 * Test helper: a gateway with its gRPC port and a raw grpc-js client of it
 * (requests encoded by the test with protobufjs from Triton's .proto), and
 * that .proto's types.
 */
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import { startGateway, type TestGateway } from "./_gateway_harness.ts";
import { grpc } from "./_grpc_client.ts";

/** A gateway with a raw gRPC client; `await using` shuts both down. */
export type RawGrpcGateway = TestGateway & { client: grpc.Client };

/**
 * A gateway serving `models` with `token`, its gRPC port on, and a raw
 * client of that port.
 */
export async function rawGrpcGateway(
  token: string,
  models: Record<string, string>,
  extra: Parameters<typeof startGateway>[0] = {},
): Promise<RawGrpcGateway> {
  const gw = await startGateway(
    { grpc: { port: 0 }, token, ...extra },
    models,
  );
  const client = new grpc.Client(
    gw.grpcTarget!,
    grpc.credentials.createInsecure(),
  );
  return Object.assign(gw, {
    client,
    async [Symbol.asyncDispose]() {
      client.close();
      await gw.shutdown();
      await Deno.remove(gw.dir, { recursive: true });
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
