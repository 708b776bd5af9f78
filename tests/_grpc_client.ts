/**
 * Test helper: a real, independent gRPC client of the gateway's gRPC
 * transport (grpc-js, the official KServe .proto through proto-loader).
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Buffer } from "node:buffer";
import { fileURLToPath } from "node:url";
import { destroyClientsLater } from "./_h2_destroy_later.ts";

// grpc-js's sessions destroy from a timer: a gateway's GOAWAY (its shutdown,
// its idle close) would otherwise crash the test process
// (tests/_h2_destroy_later.ts).
destroyClientsLater();

const PROTO = fileURLToPath(
  new URL("./fixtures/grpc/grpc_predict_v2.proto", import.meta.url),
);

// deno-lint-ignore no-explicit-any
type Any = any;

/**
 * Channel options of the tests' clients: grpc-js starts a reconnect backoff
 * timer (1 s at first) at each connect, which a connect refused (a gateway
 * shut down, then called) leaves running after the client's close: a timer
 * Deno's op sanitizer found at the test's end, or firing in the next one.
 * 1 ms to 2 ms: it ends before the test does.
 */
export const QUICK_RECONNECT: grpc.ChannelOptions = {
  "grpc.initial_reconnect_backoff_ms": 1,
  "grpc.max_reconnect_backoff_ms": 2,
};

/** What a call got: its response or its error, and the metadata sent back. */
export interface GrpcResult {
  response?: Any;
  error?: grpc.ServiceError;
  metadata?: grpc.Metadata;
}

/** A client of `inference.GRPCInferenceService`; close it with `using`. */
export class InferenceClient implements Disposable {
  readonly client: Any;
  token: string | undefined;

  /** `rootCert`: a PEM certificate to trust, for a secure (TLS) channel. */
  constructor(target: string, token?: string, rootCert?: string) {
    const definition = protoLoader.loadSync(PROTO, {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const pkg = grpc.loadPackageDefinition(definition) as Any;
    this.client = new pkg.inference.GRPCInferenceService(
      target,
      rootCert === undefined
        ? grpc.credentials.createInsecure()
        : grpc.credentials.createSsl(Buffer.from(rootCert)),
      QUICK_RECONNECT,
    );
    this.token = token;
  }

  /** A unary call; settles with its response or its error. */
  call(
    method: string,
    request: Any,
    options: {
      metadata?: Record<string, string>;
      deadlineMs?: number;
      token?: string | null;
    } = {},
  ): Promise<GrpcResult> & { cancel(): void } {
    const metadata = new grpc.Metadata();
    const token = options.token === undefined ? this.token : options.token;
    if (token !== undefined && token !== null) {
      metadata.set("authorization", `Bearer ${token}`);
    }
    for (const [k, v] of Object.entries(options.metadata ?? {})) {
      metadata.set(k, v);
    }
    const callOptions: grpc.CallOptions = {};
    if (options.deadlineMs !== undefined) {
      callOptions.deadline = Date.now() + options.deadlineMs;
    }
    let handle: Any;
    const result: GrpcResult = {};
    const done = new Promise<GrpcResult>((resolve) => {
      handle = this.client[method](
        request,
        metadata,
        callOptions,
        (error: grpc.ServiceError | null, response: Any) => {
          if (error) result.error = error;
          else result.response = response;
          resolve(result);
        },
      );
      handle.on("metadata", (m: grpc.Metadata) => (result.metadata = m));
    });
    return Object.assign(done, { cancel: () => handle.cancel() });
  }

  [Symbol.dispose](): void {
    this.client.close();
  }
}

export { grpc };

/**
 * Resolves with a streaming call's status once its messages are all
 * delivered too: grpc-js emits the status at once, before the messages
 * still in the stream's buffer (the last response, a model's error, was
 * missing after the status 1 run in 20 of tests/gateway_grpc_stream_test.ts
 * "the shutdown ends it within its grace" under load; the gateway had
 * written it before the trailers each time).
 */
export function callEnded(
  call: grpc.ClientDuplexStream<Any, Any> | grpc.ClientReadableStream<Any>,
): Promise<grpc.StatusObject> {
  return Promise.all([
    new Promise<grpc.StatusObject>((resolve) => {
      call.on("status", resolve);
      call.on("error", () => {});
    }),
    new Promise<void>((resolve) => {
      call.once("end", resolve);
      call.once("close", resolve);
    }),
  ]).then(([status]) => status);
}
