/**
 * Test helpers of the retired-token stream tests
 * (gateway_token_streams_test.ts, gateway_token_holds_test.ts): models that
 * yield without end, a gRPC ModelStreamInfer call of one, and a bound on
 * how long a stream may stay open.
 */
import { Buffer } from "node:buffer";
import { tritonProto } from "./_grpc_raw_gateway.ts";
import { callEnded, grpc } from "./_grpc_client.ts";

/** Yields a number every 10 ms without end; notes its end in msg["marker"]. */
export const TICKER = `import time


class Ticker:
    def execute(self, msg):
        i = 0
        try:
            while True:
                time.sleep(0.01)
                i += 1
                yield i
        finally:
            with open(msg["marker"], "w") as f:
                f.write("closed")
`;

/** Whether `path` exists. */
export const exists = (path: string): Promise<boolean> =>
  Deno.stat(path).then(() => true, () => false);

/** `promise`, or an error after 5 s (a stream that never ends). */
export async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${what} is still open after 5 s`)),
          5000,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Yields `{"tick": [...]}` every 5 ms without end (a gRPC model's tensors). */
export const GRPC_TICKER = `import time


class Ticker:
    def execute(self, msg):
        i = 0
        while True:
            time.sleep(0.005)
            i += 1
            yield {"tick": [i + 0.5]}
`;

const proto = tritonProto();
const InferRequest = proto.lookupType("inference.ModelInferRequest");
const StreamResponse = proto.lookupType("triton.ModelStreamInferResponse");

/**
 * A ModelStreamInfer call with `token` on `client`'s connection, its one
 * request an infer of the GRPC_TICKER model `ticker` with id `id`: the
 * responses so far, its end, and `until(check)`, which resolves once a
 * response makes `check` true.
 */
export function tickerStream(client: grpc.Client, token: string, id: string) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const call = client.makeBidiStreamRequest<Uint8Array, Uint8Array>(
    "/inference.GRPCInferenceService/ModelStreamInfer",
    (x) => Buffer.from(x),
    (b) => b,
    metadata,
    {},
  );
  const responses: Array<Record<string, unknown>> = [];
  let onResponse = () => {};
  call.on("data", (bytes: Uint8Array) => {
    responses.push(
      StreamResponse.toObject(StreamResponse.decode(bytes), {
        defaults: true,
      }),
    );
    onResponse();
  });
  // Once its status came and its messages are all delivered (callEnded).
  const ended = callEnded(call);
  const until = (check: () => boolean) =>
    new Promise<void>((resolve) => {
      onResponse = () => check() && resolve();
      onResponse();
    });
  call.write(
    InferRequest.encode(InferRequest.create({
      model_name: "ticker",
      id,
      inputs: [{
        name: "x",
        datatype: "FP64",
        shape: [1],
        contents: { fp64_contents: [1.5] },
      }],
    })).finish(),
  );
  return { call, responses, ended, until };
}
