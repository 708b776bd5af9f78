// The Open Inference Protocol over gRPC (grpc.port) under Bun, whose
// node:http2 server carries it: raw HTTP/2 calls (node:http2's client, the
// messages written by hand) for liveness, an inference with typed contents,
// a call without the token, a ModelStreamInfer stream of two infers, a
// health check and a health watch.
import { expect, test } from "bun:test";
import * as http2 from "node:http2";
import { withGateway } from "./_helpers.ts";

const ECHO = `class Echo:
    def execute(self, msg):
        return msg
`;
const TOKEN = "bun-grpc-token-0123456789";

function frame(message: number[]): Uint8Array {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

async function call(
  target: string,
  method: string,
  message: number[],
  token: string | undefined,
): Promise<{ status?: string; message?: string; body: Uint8Array }> {
  return await callPath(
    target,
    `/inference.GRPCInferenceService/${method}`,
    frame(message),
    token,
  );
}

/** A call of `path` whose request body is `body` (one frame or several). */
async function callPath(
  target: string,
  path: string,
  body: Uint8Array,
  token: string | undefined,
): Promise<{ status?: string; message?: string; body: Uint8Array }> {
  const session = http2.connect(`http://${target}`);
  try {
    return await new Promise((resolve, reject) => {
      const req = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      });
      const chunks: Uint8Array[] = [];
      const out: { status?: string; message?: string; body: Uint8Array } = {
        body: new Uint8Array(0),
      };
      const take = (h: http2.IncomingHttpHeaders) => {
        if (h["grpc-status"] !== undefined) {
          out.status = String(h["grpc-status"]);
        }
        if (h["grpc-message"] !== undefined) {
          out.message = decodeURIComponent(String(h["grpc-message"]));
        }
      };
      req.on("response", take);
      req.on("trailers", take);
      req.on("data", (c: Uint8Array) => chunks.push(c));
      req.on("end", () => {
        out.body = new Uint8Array(Buffer.concat(chunks));
        resolve(out);
      });
      req.on("error", reject);
      req.end(body);
    });
  } finally {
    session.close();
  }
}

const text = (s: string) => [s.length, ...new TextEncoder().encode(s)];

test("gateway on Bun: gRPC ServerLive, ModelInfer with typed contents, UNAUTHENTICATED without the token", async () => {
  await withGateway(
    { "echo.py": ECHO },
    { token: TOKEN, grpc: { port: 0 } },
    async (server) => {
      const target = server.grpcTarget!;
      const live = await call(target, "ServerLive", [], TOKEN);
      expect(live.status).toBe("0");
      expect([...live.body]).toEqual([0, 0, 0, 0, 2, 0x08, 0x01]);

      // model_name "echo"; an input {name "x", datatype "INT64", shape [2],
      // contents {int64_contents [7, -1]}}.
      const contents = [0x1a, 11, 7, ...new Array(9).fill(0xff), 0x01];
      const input = [
        0x0a,
        ...text("x"),
        0x12,
        ...text("INT64"),
        0x1a,
        1,
        2,
        0x2a,
        contents.length,
        ...contents,
      ];
      const infer = await call(target, "ModelInfer", [
        0x0a,
        ...text("echo"),
        0x2a,
        input.length,
        ...input,
      ], TOKEN);
      expect(infer.message).toBeUndefined();
      expect(infer.status).toBe("0");
      const body = infer.body.subarray(5);
      // The output echoes the input: its name, datatype, shape and contents.
      const hex = Buffer.from(body).toString("hex");
      expect(hex).toContain(Buffer.from(contents).toString("hex"));
      expect(hex).toContain(Buffer.from(text("INT64")).toString("hex"));

      const denied = await call(target, "ServerLive", [], undefined);
      expect(denied.status).toBe("16");
    },
  );
});

test("gateway on Bun: gRPC ModelStreamInfer answers each infer of a stream; health Check needs no token", async () => {
  await withGateway(
    { "echo.py": ECHO },
    { token: TOKEN, grpc: { port: 0 } },
    async (server) => {
      const target = server.grpcTarget!;
      // Two ModelInferRequests (model_name "echo", id "a" / "b", an INT64
      // input x = [7]: int64_contents unpacked) on one stream, then the
      // half-close.
      const input = [
        0x0a,
        ...text("x"),
        0x12,
        ...text("INT64"),
        0x1a,
        1,
        1,
        0x2a,
        2,
        0x18,
        7,
      ];
      const request = (id: string) =>
        frame([
          0x0a,
          ...text("echo"),
          0x1a,
          ...text(id),
          0x2a,
          input.length,
          ...input,
        ]);
      const body = new Uint8Array([...request("a"), ...request("b")]);
      const stream = await callPath(
        target,
        "/inference.GRPCInferenceService/ModelStreamInfer",
        body,
        TOKEN,
      );
      expect(stream.message).toBeUndefined();
      expect(stream.status).toBe("0");
      // Two framed ModelStreamInferResponses, each an infer_response (2).
      const view = new DataView(stream.body.buffer, stream.body.byteOffset);
      const first = view.getUint32(1);
      expect(stream.body[5]).toBe(0x12);
      expect(stream.body[5 + first + 5]).toBe(0x12);
      expect(5 + first + 5 + view.getUint32(5 + first + 1)).toBe(
        stream.body.byteLength,
      );

      const health = await callPath(
        target,
        "/grpc.health.v1.Health/Check",
        frame([]),
        undefined,
      );
      expect(health.status).toBe("0");
      expect([...health.body]).toEqual([0, 0, 0, 0, 2, 0x08, 0x01]);
    },
  );
});

test("gateway on Bun: gRPC health Watch sends SERVING at once, NOT_SERVING when the shutdown starts, then ends", async () => {
  let stopped: Promise<void> | undefined;
  await withGateway(
    { "echo.py": ECHO },
    { token: TOKEN, grpc: { port: 0 } },
    async (server) => {
      const session = http2.connect(`http://${server.grpcTarget}`);
      try {
        // HealthCheckRequest{service: ""}: an empty message; no token.
        const req = session.request({
          ":method": "POST",
          ":path": "/grpc.health.v1.Health/Watch",
          "content-type": "application/grpc",
          te: "trailers",
        });
        req.on("error", () => {});
        const statuses: number[] = [];
        let onStatus = () => {};
        let buffered = new Uint8Array(0);
        req.on("data", (chunk: Uint8Array) => {
          buffered = new Uint8Array([...buffered, ...chunk]);
          // Each message: 5-byte prefix, then {status (1): varint}.
          while (buffered.length >= 7) {
            statuses.push(buffered[6]!);
            buffered = buffered.subarray(7);
          }
          onStatus();
        });
        let trailers: http2.IncomingHttpHeaders = {};
        req.on("trailers", (h) => (trailers = h));
        const ended = new Promise<void>((resolve) => req.on("close", resolve));
        const got = (n: number) =>
          new Promise<void>((resolve) => {
            onStatus = () => statuses.length >= n && resolve();
            onStatus();
          });
        req.end(frame([]));
        await got(1);
        expect(statuses).toEqual([1]); // SERVING
        stopped = server.shutdown();
        await got(2);
        expect(statuses).toEqual([1, 2]); // NOT_SERVING
        await ended;
        expect(trailers["grpc-status"]).toBe("14"); // UNAVAILABLE
      } finally {
        session.destroy();
      }
    },
  );
  await stopped;
});
