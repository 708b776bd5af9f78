// The Open Inference Protocol over gRPC (--grpc-port) through the real
// gateway and real Python workers, called by a real, independent gRPC client
// (grpc-js with KServe's .proto): health, metadata, inference with typed
// contents and raw_input_contents, errors as gRPC status codes, the token,
// deadlines, cancels, the size limit and the drain. The gateway runs in a
// process of its own (tests/_gateway_process.ts): a crash of Deno's
// node:http2 ends it, not the test runner.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { connect } from "node:net";
import * as http2 from "node:http2";
import {
  type GatewayProcess,
  startGatewayProcess,
} from "./_gateway_process.ts";
import { grpc, InferenceClient } from "./_grpc_client.ts";
import { tokenId } from "../src/gateway/security.ts";
import { destroyLater } from "./_h2_destroy_later.ts";
import protobuf from "protobufjs";
import { fileURLToPath } from "node:url";

const MODELS: Record<string, string> = {
  "mirror.py": `class Mirror:
    """Returns its inputs; its parameters as "params"."""

    def execute(self, msg):
        out = {k: v for k, v in msg.items() if k != "parameters"}
        if "parameters" in msg:
            out["params"] = ["%s=%r" % kv for kv in sorted(msg["parameters"].items())]
        return out
`,
  "f32.py": `from pyproxy import Tensor


class F32:
    """x as an FP32 tensor and an FP16 one."""

    def execute(self, msg):
        x = msg["x"]
        if msg.get("half"):
            return {"h": Tensor(x, [len(x)], "FP16")}
        return {"y": Tensor(x, [len(x)], "FP32"), "i8": Tensor([-1, 2], [2], "INT8")}
`,
  "raiser.py": `from pyproxy import HTTPError


class Raiser:
    def execute(self, msg):
        raise HTTPError(int(msg["status"][0]), "model says %d" % int(msg["status"][0]))
`,
  "sleeper.py": `import time


class Sleeper:
    """Writes msg["started"][0] (a path), sleeps msg["s"][0] s; writes path + ".cancelled" when interrupted."""

    def execute(self, msg):
        with open(msg["started"][0], "w") as f:
            f.write("started")
        try:
            deadline = time.monotonic() + msg["s"][0]
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except KeyboardInterrupt:
            with open(msg["started"][0] + ".cancelled", "w") as f:
                f.write("cancelled")
            raise
        return {"slept": [msg["s"][0]]}
`,
  "bulky.py": `import time


class Bulky:
    """Writes msg["started"][0] (a path), sleeps 0.3 s, answers 2 MiB (FP64 y)."""

    def execute(self, msg):
        with open(msg["started"][0], "w") as f:
            f.write("started")
        time.sleep(0.3)
        return {"y": [0.5] * (256 * 1024)}
`,
  "batcher.py": `class Batcher:
    batch_size = 8
    batch_delay_ms = 50

    def execute_batch(self, msgs):
        return [{"y": [m["x"][0] + 1], "batch": [len(msgs)]} for m in msgs]
`,
};

const InferRequest = new protobuf.Root().loadSync(
  fileURLToPath(
    new URL("./fixtures/grpc/grpc_predict_v2.proto", import.meta.url),
  ),
  { keepCase: true },
).lookupType("inference.ModelInferRequest");

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

const TOKEN = "grpc-test-token-0123456789";

type TestGateway = GatewayProcess & { client: InferenceClient };

async function gateway(
  extra: Parameters<typeof startGatewayProcess>[0] = {},
): Promise<GatewayProcess & { client: InferenceClient }> {
  const gw = await startGatewayProcess(
    { grpc: { port: 0 }, token: TOKEN, ...extra },
    MODELS,
  );
  const client = new InferenceClient(gw.grpcTarget!, TOKEN);
  const dispose = gw[Symbol.asyncDispose];
  return Object.assign(gw, {
    client,
    async [Symbol.asyncDispose]() {
      client.client.close();
      await dispose();
    },
  });
}

const raw = {
  i64: (values: bigint[]) => {
    const b = new Uint8Array(values.length * 8);
    const v = new DataView(b.buffer);
    values.forEach((x, i) => v.setBigInt64(i * 8, x, true));
    return b;
  },
  f32: (values: number[]) => new Uint8Array(new Float32Array(values).buffer),
  bytes: (values: string[]) => {
    const parts = values.map((s) => new TextEncoder().encode(s));
    const b = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
    const v = new DataView(b.buffer);
    let at = 0;
    for (const p of parts) {
      v.setUint32(at, p.length, true);
      b.set(p, at + 4);
      at += 4 + p.length;
    }
    return b;
  },
};

function outputOf(
  response: { outputs: Array<{ name: string }> },
  name: string,
) {
  const i = response.outputs.findIndex((o) => o.name === name);
  assert.ok(i >= 0, `no output ${name}: ${JSON.stringify(response.outputs)}`);
  return { ...response.outputs[i], index: i } as Record<string, unknown> & {
    index: number;
    datatype: string;
    shape: string[];
    // deno-lint-ignore no-explicit-any
    contents: Record<string, any>;
  };
}

Deno.test("gRPC: health, metadata, inference (typed and raw contents), errors as status codes; tokens, deadlines, bad frames and many calls, on one gateway", async (t) => {
  await using gw = await gateway();
  const c = gw.client;

  await t.step("ServerLive, ServerReady, ServerMetadata", async () => {
    assert.deepEqual((await c.call("ServerLive", {})).response, { live: true });
    assert.deepEqual((await c.call("ServerReady", {})).response, {
      ready: true,
    });
    const meta = (await c.call("ServerMetadata", {})).response;
    assert.equal(meta.name, "pyproxy");
    assert.ok(meta.extensions.includes("binary_tensor_data"));
  });

  await t.step(
    "ModelReady and ModelMetadata; NOT_FOUND for an unknown model",
    async () => {
      assert.deepEqual(
        (await c.call("ModelReady", { name: "mirror" })).response,
        { ready: true },
      );
      const meta = (await c.call("ModelMetadata", { name: "mirror" })).response;
      assert.equal(meta.name, "mirror");
      assert.equal(meta.platform, "pyproxy");
      const missing = await c.call("ModelReady", { name: "nope" });
      assert.equal(missing.error?.code, grpc.status.NOT_FOUND);
      assert.match(missing.error!.details, /Cannot find model "nope"/);
      const infer = await c.call("ModelInfer", { model_name: "nope" });
      assert.equal(infer.error?.code, grpc.status.NOT_FOUND);
    },
  );

  await t.step(
    "ModelInfer with typed contents: INT64, FP32, BOOL, BYTES, multi-dim shapes, id, parameters",
    async () => {
      const { response, error, metadata } = await c.call("ModelInfer", {
        model_name: "mirror",
        id: "req-1",
        parameters: {
          flag: { bool_param: true },
          n: { int64_param: "7" },
          s: { string_param: "x" },
        },
        inputs: [
          {
            name: "i",
            datatype: "INT64",
            shape: [2, 2],
            contents: { int64_contents: ["1", "-2", "9007199254740993", "4"] },
          },
          {
            name: "f",
            datatype: "FP32",
            shape: [3],
            contents: { fp32_contents: [0.5, 1.5, -2] },
          },
          {
            name: "b",
            datatype: "BOOL",
            shape: [1, 2],
            contents: { bool_contents: [true, false] },
          },
          {
            name: "t",
            datatype: "BYTES",
            shape: [2],
            contents: {
              bytes_contents: [Buffer.from("héllo"), Buffer.from("")],
            },
          },
        ],
      }, { metadata: { "x-request-id": "grpc-id-1" } });
      assert.equal(error, undefined, error?.details);
      assert.equal(response.model_name, "mirror");
      assert.equal(response.id, "req-1");
      assert.deepEqual(response.raw_output_contents, []);
      assert.equal(metadata?.get("x-request-id")[0], "grpc-id-1");
      const i = outputOf(response, "i");
      assert.equal(i.datatype, "INT64");
      assert.deepEqual(i.shape, ["2", "2"]);
      assert.deepEqual(i.contents.int64_contents, [
        "1",
        "-2",
        "9007199254740993",
        "4",
      ]);
      const f = outputOf(response, "f");
      assert.equal(f.datatype, "FP64");
      assert.deepEqual(f.contents.fp64_contents, [0.5, 1.5, -2]);
      const b = outputOf(response, "b");
      assert.deepEqual(b.shape, ["1", "2"]);
      assert.deepEqual(b.contents.bool_contents, [true, false]);
      const s = outputOf(response, "t");
      assert.deepEqual(
        (s.contents.bytes_contents as Uint8Array[]).map((x) =>
          new TextDecoder().decode(x)
        ),
        ["héllo", ""],
      );
      const p = outputOf(response, "params");
      assert.deepEqual(
        (p.contents.bytes_contents as Uint8Array[]).map((x) =>
          new TextDecoder().decode(x)
        ),
        ["flag=True", "n=7", "s='x'"],
      );
    },
  );

  await t.step(
    "ModelInfer with raw_input_contents answers raw_output_contents; outputs filter",
    async () => {
      const { response, error } = await c.call("ModelInfer", {
        model_name: "mirror",
        inputs: [
          { name: "i", datatype: "INT64", shape: [3] },
          { name: "f", datatype: "FP32", shape: [2, 1] },
          { name: "t", datatype: "BYTES", shape: [1] },
        ],
        outputs: [{ name: "t" }, { name: "i" }],
        raw_input_contents: [
          raw.i64([5n, -6n, 2n ** 62n]),
          raw.f32([0.25, 8]),
          raw.bytes(["abc"]),
        ],
      });
      assert.equal(error, undefined, error?.details);
      assert.deepEqual(response.outputs.map((o: { name: string }) => o.name), [
        "t",
        "i",
      ]);
      assert.equal(response.raw_output_contents.length, 2);
      assert.deepEqual(
        new Uint8Array(response.raw_output_contents[0]),
        raw.bytes(["abc"]),
      );
      assert.deepEqual(
        new Uint8Array(response.raw_output_contents[1]),
        raw.i64([5n, -6n, 2n ** 62n]),
      );
      assert.equal(response.outputs[0].contents, null);
    },
  );

  await t.step("typed FP32 and INT8 outputs; FP16 goes raw", async () => {
    const typed = await c.call("ModelInfer", {
      model_name: "f32",
      inputs: [{
        name: "x",
        datatype: "FP64",
        shape: [2],
        contents: { fp64_contents: [1.5, -0.25] },
      }],
    });
    assert.equal(typed.error, undefined, typed.error?.details);
    assert.deepEqual(
      outputOf(typed.response, "y").contents.fp32_contents,
      [1.5, -0.25],
    );
    assert.deepEqual(
      outputOf(typed.response, "i8").contents.int_contents,
      [-1, 2],
    );
    const half = await c.call("ModelInfer", {
      model_name: "f32",
      inputs: [
        {
          name: "x",
          datatype: "FP64",
          shape: [1],
          contents: { fp64_contents: [2] },
        },
        {
          name: "half",
          datatype: "BOOL",
          shape: [1],
          contents: { bool_contents: [true] },
        },
      ],
    });
    assert.equal(half.error, undefined, half.error?.details);
    assert.equal(half.response.outputs[0].datatype, "FP16");
    assert.deepEqual(
      new Uint8Array(half.response.raw_output_contents[0]),
      new Uint8Array([0x00, 0x40]), // 2.0 in half precision
    );
  });

  await t.step(
    "INVALID_ARGUMENT: a shape its data does not fill, raw count, range, contents of another type",
    async () => {
      const cases: Array<[unknown, RegExp]> = [
        [{
          inputs: [{
            name: "a",
            datatype: "INT64",
            shape: [3],
            contents: { int64_contents: ["1"] },
          }],
        }, /input "a".*binary data/],
        [{
          inputs: [{ name: "a", datatype: "INT64", shape: [1] }, {
            name: "b",
            datatype: "INT64",
            shape: [1],
          }],
          raw_input_contents: [raw.i64([1n])],
        }, /raw_input_contents has 1 entry, and there are 2 inputs/],
        [{
          inputs: [{
            name: "a",
            datatype: "INT8",
            shape: [1],
            contents: { int_contents: [300] },
          }],
        }, /int_contents\[0\]: 300 is out of range of INT8/],
        [{
          inputs: [{
            name: "a",
            datatype: "FP32",
            shape: [1],
            contents: { int_contents: [3] },
          }],
        }, /contents has int_contents, and datatype FP32 takes fp32_contents/],
        [{
          inputs: [{
            name: "a",
            datatype: "NOPE",
            shape: [1],
            contents: { int_contents: [3] },
          }],
        }, /datatype "NOPE" is not one of/],
        [{
          inputs: [{
            name: "a",
            datatype: "INT64",
            shape: [1],
            contents: { int64_contents: ["1"] },
          }],
          outputs: [{ name: "a" }, { name: "zz" }],
        }, /output|zz/],
      ];
      for (const [request, message] of cases) {
        const { error } = await c.call("ModelInfer", {
          model_name: "mirror",
          ...(request as object),
        });
        assert.equal(error?.code, grpc.status.INVALID_ARGUMENT, error?.details);
        assert.match(error!.details, message);
      }
    },
  );

  await t.step(
    "a model's HTTPError: its status as a gRPC code, its message",
    async () => {
      const expect: Array<[number, number]> = [
        [400, grpc.status.INVALID_ARGUMENT],
        [404, grpc.status.NOT_FOUND],
        [429, grpc.status.RESOURCE_EXHAUSTED],
        [503, grpc.status.UNAVAILABLE],
        [504, grpc.status.DEADLINE_EXCEEDED],
        [500, grpc.status.INTERNAL],
        [502, grpc.status.INTERNAL],
      ];
      for (const [status, code] of expect) {
        const { error } = await c.call("ModelInfer", {
          model_name: "raiser",
          inputs: [{
            name: "status",
            datatype: "INT64",
            shape: [1],
            contents: { int64_contents: [String(status)] },
          }],
        });
        assert.equal(error?.code, code, `${status}: ${error?.details}`);
        assert.equal(error!.details, `model says ${status}`);
      }
    },
  );

  await t.step("a batching model: concurrent calls share a batch", async () => {
    const answers = await Promise.all(
      Array.from({ length: 4 }, (_, i) =>
        c.call("ModelInfer", {
          model_name: "batcher",
          inputs: [{
            name: "x",
            datatype: "INT64",
            shape: [1],
            contents: { int64_contents: [String(i)] },
          }],
        })),
    );
    answers.forEach(({ response, error }, i) => {
      assert.equal(error, undefined, error?.details);
      assert.deepEqual(outputOf(response, "y").contents.int64_contents, [
        String(i + 1),
      ]);
    });
    assert.ok(
      answers.some(({ response }) =>
        Number(outputOf(response, "batch").contents.int64_contents[0]) > 1
      ),
    );
  });

  await t.step(
    "UNIMPLEMENTED for another method, for a compressed call",
    async () => {
      const other = new grpc.Client(
        gw.grpcTarget!,
        grpc.credentials.createInsecure(),
      );
      try {
        const code = await new Promise<number>((resolve) =>
          other.makeUnaryRequest(
            "/inference.GRPCInferenceService/SystemSharedMemoryStatus",
            (x: Uint8Array) => Buffer.from(x),
            (b: Uint8Array) => b,
            new Uint8Array(0),
            (err) => resolve(err?.code ?? 0),
          )
        );
        assert.equal(code, grpc.status.UNIMPLEMENTED);
      } finally {
        other.close();
      }
    },
  );

  // The tests that need a gateway as it starts, on this one (each gateway is
  // a Deno process and a Python worker: ~0.4 s of CPU); the one whose
  // clients close their connections (a GOAWAY) last.
  await t.step(
    "gRPC: UNAUTHENTICATED without the token or with a wrong one",
    () => unauthenticated(gw),
  );
  await t.step(
    "gRPC: DEADLINE_EXCEEDED, and the call is cancelled in Python; a client's cancel too",
    () => deadlineAndCancel(gw),
  );
  await t.step(
    "gRPC: bad frames and bytes are refused with a status, and the server goes on",
    () => badFrames(gw),
  );
  await t.step(
    "gRPC: many calls on one client, 32 at a time, all answered",
    () => manyCalls(gw),
  );
  await t.step(
    "gRPC: one connection carries every call of its client, 100 at a time, in Deno too (no GOAWAY after a count)",
    () => oneConnection(gw),
  );
  await t.step(
    "gRPC: grpc-timeout is the server's deadline: DEADLINE_EXCEEDED from the gateway, the call cancelled in Python",
    () => grpcTimeout(gw),
  );
  await t.step(
    "gRPC: clients that made hundreds of calls on a connection close it, and the gateway goes on",
    () => clientsClose(gw),
  );
});

/** The step "gRPC: UNAUTHENTICATED without the token or with a wrong one" of the first test (its gateway). */
async function unauthenticated(gw: TestGateway): Promise<void> {
  for (const token of [null, "wrong-token-0123456789"]) {
    const { error } = await gw.client.call("ModelInfer", {
      model_name: "mirror",
    }, { token });
    assert.equal(error?.code, grpc.status.UNAUTHENTICATED);
    const live = await gw.client.call("ServerLive", {}, { token });
    assert.equal(live.error?.code, grpc.status.UNAUTHENTICATED);
  }
}

/** The step "gRPC: DEADLINE_EXCEEDED, and the call is cancelled in Python; a client's cancel too" of the first test (its gateway). */
async function deadlineAndCancel(gw: TestGateway): Promise<void> {
  for (const how of ["deadline", "cancel"] as const) {
    const started = `${gw.dir}/${how}.started`;
    const call = gw.client.call("ModelInfer", {
      model_name: "sleeper",
      inputs: [
        {
          name: "started",
          datatype: "BYTES",
          shape: [1],
          contents: { bytes_contents: [Buffer.from(started)] },
        },
        {
          name: "s",
          datatype: "FP64",
          shape: [1],
          contents: { fp64_contents: [30] },
        },
      ],
    }, how === "deadline" ? { deadlineMs: 1500 } : {});
    // Started in Python, then cut short.
    for (let i = 0; i < 500; i++) {
      if (await Deno.stat(started).then(() => true, () => false)) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    if (how === "cancel") call.cancel();
    const { error } = await call;
    assert.equal(
      error?.code,
      how === "deadline"
        ? grpc.status.DEADLINE_EXCEEDED
        : grpc.status.CANCELLED,
    );
    // Cancelled in Python (KeyboardInterrupt), not left to run its 30 s
    // (the bound, far below that, only keeps a failure from hanging: 2 s
    // was passed under the full suite's load, as was a 700 ms deadline
    // before the model had started).
    for (const end = Date.now() + 10_000; Date.now() < end;) {
      if (await exists(`${started}.cancelled`)) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(await exists(`${started}.cancelled`), "not cancelled in Python");
  }
}

Deno.test("gRPC: a message over the body limit is RESOURCE_EXHAUSTED", async () => {
  await using gw = await gateway({ limits: { bodyLimit: 1024 } });
  const { error } = await gw.client.call("ModelInfer", {
    model_name: "mirror",
    inputs: [{ name: "a", datatype: "UINT8", shape: [4096] }],
    raw_input_contents: [new Uint8Array(4096)],
  });
  assert.equal(error?.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.match(error!.details, /over the gateway's body limit of 1024 bytes/);
});

/** A raw HTTP/2 gRPC call: its status, trailers and body. */
async function rawCall(
  target: string,
  path: string,
  frame: Uint8Array,
  headers: Record<string, string> = {},
): Promise<{ status: number; grpcStatus?: string; message?: string }> {
  const session = http2.connect(`http://${target}`);
  try {
    return await new Promise((resolve, reject) => {
      const req = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        authorization: `Bearer ${TOKEN}`,
        ...headers,
      });
      const out: { status: number; grpcStatus?: string; message?: string } = {
        status: 0,
      };
      const take = (h: http2.IncomingHttpHeaders) => {
        if (h["grpc-status"] !== undefined) {
          out.grpcStatus = String(h["grpc-status"]);
        }
        if (h["grpc-message"] !== undefined) {
          out.message = decodeURIComponent(String(h["grpc-message"]));
        }
      };
      req.on("response", (h) => {
        out.status = Number(h[":status"]);
        take(h);
      });
      req.on("trailers", take);
      req.on("data", () => {});
      req.on("end", () => resolve(out));
      req.on("error", reject);
      req.end(frame);
    });
  } finally {
    session.close();
  }
}

function frameOf(message: Uint8Array, flag = 0, length = message.length) {
  const f = new Uint8Array(5 + message.length);
  f[0] = flag;
  new DataView(f.buffer).setUint32(1, length);
  f.set(message, 5);
  return f;
}

/** The step "gRPC: bad frames and bytes are refused with a status, and the server goes on" of the first test (its gateway). */
async function badFrames(gw: TestGateway): Promise<void> {
  const infer = "/inference.GRPCInferenceService/ModelInfer";
  const target = gw.grpcTarget!;
  // model_name "mirror" (field 1), then the given bytes.
  const name = new Uint8Array([0x0a, 6, ...new TextEncoder().encode("mirror")]);
  const cases: Array<[Uint8Array, string, RegExp, Record<string, string>?]> = [
    [frameOf(name).subarray(0, 7), "3", /truncated/],
    [frameOf(name, 0, 0xffffffff), "8", /4294967295 bytes, over/],
    [frameOf(name, 1), "13", /compressed/],
    [frameOf(name), "12", /grpc-encoding gzip/, { "grpc-encoding": "gzip" }],
    [new Uint8Array(0), "3", /no message/],
    [
      new Uint8Array([...frameOf(name), ...frameOf(name)]),
      "3",
      /more than one message/,
    ],
    // An input (field 5) whose length runs past the message.
    [frameOf(new Uint8Array([...name, 0x2a, 0x7f, 1])), "3", /bytes, and/],
    // A varint shape count of a billion elements: no allocation, a refusal.
    [
      frameOf(
        new Uint8Array([
          ...name,
          0x2a,
          0x10,
          0x0a,
          1,
          0x61,
          0x12,
          4,
          ...new TextEncoder().encode("INT8"),
          0x1a,
          5,
          0x80,
          0x94,
          0xeb,
          0xdc,
          0x03,
        ]),
      ),
      "3",
      /holds .* elements/,
    ],
    // Unknown fields (a varint 99, a fixed64 98) are skipped.
    [
      frameOf(
        new Uint8Array([
          ...name,
          0x98,
          0x06,
          1,
          0x91,
          0x06,
          1,
          2,
          3,
          4,
          5,
          6,
          7,
          8,
        ]),
      ),
      "0",
      /^$/,
    ],
  ];
  for (const [frame, status, message, headers] of cases) {
    const got = await rawCall(target, infer, frame, headers);
    assert.equal(got.status, 200);
    assert.equal(got.grpcStatus, status, JSON.stringify(got));
    assert.match(got.message ?? "", message);
  }
  // Not gRPC: HTTP 415.
  const plain = await rawCall(target, infer, new Uint8Array(0), {
    "content-type": "application/json",
  });
  assert.equal(plain.status, 415);
  // HTTP/1.1 to the gRPC port: the connection is closed, the server goes on.
  await new Promise<void>((resolve, reject) => {
    const [host, port] = [
      target.slice(0, target.lastIndexOf(":")),
      Number(target.slice(target.lastIndexOf(":") + 1)),
    ];
    const socket = connect(port, host, () => {
      socket.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    });
    socket.on("data", () => {});
    socket.on("close", () => resolve());
    socket.on("error", reject);
  });
  assert.deepEqual((await gw.client.call("ServerLive", {})).response, {
    live: true,
  });
}

/** The step "gRPC: many calls on one client, 32 at a time, all answered" of the first test (its gateway). */
async function manyCalls(gw: TestGateway): Promise<void> {
  // The client in a process of its own (tests/fixtures/grpc/many_calls.ts):
  // its grpc-js is Deno's node:http2, which has crashed the process that
  // reads a GOAWAY (denoland/deno#36788), which would take this test runner
  // down with it.
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./fixtures/grpc/many_calls.ts", import.meta.url).pathname,
      gw.grpcTarget!,
      TOKEN,
      "256",
      "32",
      "infer",
      // No GOAWAY at its end (the close's own test, "clients that made
      // hundreds of calls", closes).
      "noclose",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(
    new TextDecoder().decode(out.stdout).trim(),
    "256",
    new TextDecoder().decode(out.stderr),
  );
}

/** The step "gRPC: one connection carries every call of its client, 100 at a time, in Deno too (no GOAWAY after a count)" of the first test (its gateway). */
async function oneConnection(gw: TestGateway): Promise<void> {
  // Its destroy from a timer: a GOAWAY the gateway sent would otherwise
  // risk this process (tests/_h2_destroy_later.ts).
  const session = destroyLater(http2.connect(`http://${gw.grpcTarget}`));
  session.on("error", () => {});
  let goaways = 0;
  session.on("goaway", () => goaways++);
  try {
    await new Promise<void>((resolve) =>
      session.once("remoteSettings", () => resolve())
    );
    // Deno's gateway advertised 32 and sent a GOAWAY after 64 calls, set
    // against denoland/deno#36788's crash before its cause was known.
    assert.equal(session.remoteSettings.maxConcurrentStreams, 100);
    const live = () =>
      new Promise<string>((resolve) => {
        const req = session.request({
          ":method": "POST",
          ":path": "/inference.GRPCInferenceService/ServerLive",
          "content-type": "application/grpc",
          te: "trailers",
          authorization: `Bearer ${TOKEN}`,
        });
        let status = "none";
        req.on("trailers", (t) => status = String(t["grpc-status"]));
        req.on("response", (h) => {
          if (h["grpc-status"] !== undefined) {
            status = String(h["grpc-status"]);
          }
        });
        req.on("data", () => {});
        req.on("error", (err) => status = String(err));
        req.on("close", () => resolve(status));
        req.end(frameOf(new Uint8Array(0)));
      });
    const calls = 300;
    let started = 0;
    const statuses: string[] = [];
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        while (started++ < calls) statuses.push(await live());
      }),
    );
    assert.deepEqual(statuses, new Array(calls).fill("0"));
    assert.equal(goaways, 0);
    assert.ok(!session.closed && !session.destroyed);
  } finally {
    if (!session.destroyed) {
      const closed = new Promise((resolve) => session.once("close", resolve));
      session.close();
      await closed;
    }
  }
}

Deno.test("gRPC: on shutdown a call in flight finishes, a new one is UNAVAILABLE, the port closes", async () => {
  const gw = await gateway({ limits: { shutdownGrace: 5000 } });
  try {
    const started = `${gw.dir}/drain.started`;
    const inFlight = gw.client.call("ModelInfer", {
      model_name: "sleeper",
      inputs: [
        {
          name: "started",
          datatype: "BYTES",
          shape: [1],
          contents: { bytes_contents: [Buffer.from(started)] },
        },
        {
          name: "s",
          datatype: "FP64",
          shape: [1],
          contents: { fp64_contents: [0.5] },
        },
      ],
    });
    for (let i = 0; i < 500; i++) {
      if (await Deno.stat(started).then(() => true, () => false)) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const stopping = gw.shutdown();
    await gw.draining;
    const late = await gw.client.call("ServerLive", {});
    assert.equal(
      late.error?.code,
      grpc.status.UNAVAILABLE,
      JSON.stringify(late),
    );
    const { response, error } = await inFlight;
    assert.equal(error, undefined, error?.details);
    assert.deepEqual(outputOf(response, "slept").contents.fp64_contents, [0.5]);
    await stopping;
    // The port closed: a connect is refused (a gRPC call would say so as
    // UNAVAILABLE, leaving grpc-js's reconnect backoff timer running past
    // the test's end under load: Deno's op sanitizer).
    const [hostname, port] = gw.grpcTarget!.split(":");
    await assert.rejects(
      Deno.connect({ hostname: hostname!, port: Number(port) }),
      Deno.errors.ConnectionRefused,
    );
  } finally {
    gw.client.client.close();
    await gw.shutdown();
    await Deno.remove(gw.dir, { recursive: true });
  }
});

Deno.test("gRPC: on shutdown a call in flight answers 2 MiB: its client gets it whole, then the port closes", async () => {
  const gw = await gateway({ limits: { shutdownGrace: 10_000 } });
  try {
    const started = `${gw.dir}/bulky.started`;
    const inFlight = gw.client.call("ModelInfer", {
      model_name: "bulky",
      inputs: [{
        name: "started",
        datatype: "BYTES",
        shape: [1],
        contents: { bytes_contents: [Buffer.from(started)] },
      }],
    });
    for (let i = 0; i < 500 && !(await exists(started)); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    // The shutdown waits for the call, then closes the connections. The
    // answer goes through a spill file in the grace (the spill directory,
    // removed as the shutdown began, failed it: INTERNAL, "Cannot write
    // spill file"), then to the client, over HTTP/2's flow-control window.
    const t0 = Date.now();
    await gw.shutdown();
    const { response, error } = await inFlight;
    assert.equal(error, undefined, error?.details);
    const y = outputOf(response, "y");
    assert.equal(y.contents.fp64_contents.length, 256 * 1024);
    assert.ok(Date.now() - t0 < 5000, `shutdown took ${Date.now() - t0} ms`);
  } finally {
    gw.client.client.close();
    await gw.shutdown();
    await Deno.remove(gw.dir, { recursive: true });
  }
});

/** The step "gRPC: clients that made hundreds of calls on a connection close it, and the gateway goes on" of the first test (its gateway). */
async function clientsClose(gw: TestGateway): Promise<void> {
  // Each client's 300 calls on one connection, then its GOAWAY: that
  // crashed Deno's node:http2 server (an nghttp2 assertion aborted the
  // gateway, denoland/deno#36788) until its sessions' destroy waited for a
  // timer. The clients in processes of their own: their node:http2 is
  // Deno's too.
  for (const parallel of [1, 32]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("./fixtures/grpc/many_calls.ts", import.meta.url).pathname,
        gw.grpcTarget!,
        TOKEN,
        "300",
        String(parallel),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(
      new TextDecoder().decode(out.stdout).trim(),
      "300",
      new TextDecoder().decode(out.stderr),
    );
  }
  // Let the closes arrive, then ask.
  using fresh = new InferenceClient(gw.grpcTarget!, TOKEN);
  for (let i = 0; i < 3; i++) {
    assert.deepEqual((await fresh.call("ServerLive", {})).response, {
      live: true,
    });
  }
}

Deno.test("gRPC: a client that never reads its answers does not hold the shutdown past its grace", async () => {
  const gw = await gateway({ limits: { shutdownGrace: 500 } });
  const session = http2.connect(`http://${gw.grpcTarget}`);
  session.on("error", () => {});
  try {
    // mirror, an input of 64 Ki UINT8 elements: its answer (INT64, 512 KiB)
    // is over HTTP/2's flow-control window, and unread.
    const size = 64 * 1024;
    const input = [
      0x0a,
      1,
      0x61,
      0x12,
      5,
      ...new TextEncoder().encode("UINT8"),
      0x1a,
      3,
      ...[0x80, 0x80, 0x04],
    ];
    const head = [0x0a, 6, ...new TextEncoder().encode("mirror"), 0x2a];
    const message = new Uint8Array(
      head.length + 1 + input.length + 1 + 3 + size,
    );
    let at = 0;
    for (const b of [...head, input.length, ...input, 0x3a, 0x80, 0x80, 0x04]) {
      message[at++] = b;
    }
    const answered: Promise<number>[] = [];
    for (let i = 0; i < 8; i++) {
      const req = session.request({
        ":method": "POST",
        ":path": "/inference.GRPCInferenceService/ModelInfer",
        "content-type": "application/grpc",
        authorization: `Bearer ${TOKEN}`,
      });
      req.on("error", () => {});
      answered.push(
        new Promise((resolve) =>
          req.on("response", (h) => resolve(Number(h[":status"])))
        ),
      );
      req.pause();
      req.end(frameOf(message));
    }
    // Their answers started (headers), their bodies wait on flow control.
    assert.deepEqual(await Promise.all(answered), new Array(8).fill(200));
    const t0 = Date.now();
    await gw.shutdown();
    assert.ok(Date.now() - t0 < 3000, `shutdown took ${Date.now() - t0} ms`);
    await new Promise<void>((resolve) => {
      if (session.closed || session.destroyed) resolve();
      else session.on("close", () => resolve());
    });
  } finally {
    session.destroy();
    gw.client.client.close();
    await gw.shutdown();
    await Deno.remove(gw.dir, { recursive: true });
  }
});

/** The step "gRPC: grpc-timeout is the server's deadline: DEADLINE_EXCEEDED from the gateway, the call cancelled in Python" of the first test (its gateway). */
async function grpcTimeout(gw: TestGateway): Promise<void> {
  const started = `${gw.dir}/timeout.started`;
  const message = InferRequest.encode(InferRequest.fromObject({
    model_name: "sleeper",
    inputs: [
      {
        name: "started",
        datatype: "BYTES",
        shape: [1],
        contents: { bytes_contents: [new TextEncoder().encode(started)] },
      },
      {
        name: "s",
        datatype: "FP64",
        shape: [1],
        contents: { fp64_contents: [3] },
      },
    ],
  })).finish();
  const t0 = Date.now();
  // A raw call, which has no deadline of its own: the answer is the server's.
  const got = await rawCall(
    gw.grpcTarget!,
    "/inference.GRPCInferenceService/ModelInfer",
    frameOf(message),
    { "grpc-timeout": "500m" },
  );
  assert.equal(got.grpcStatus, "4", JSON.stringify(got));
  assert.ok(Date.now() - t0 < 2500, `took ${Date.now() - t0} ms`);
  for (let i = 0; i < 200; i++) {
    if (await exists(`${started}.cancelled`)) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(await exists(`${started}.cancelled`), "not cancelled in Python");
}

Deno.test("gRPC: ModelInfer reaches the plugins' onCall with the caller of its token (tokenId), as the REST routes do", async () => {
  const other = "grpc-other-token-0123456789";
  const dir = await Deno.makeTempDir();
  try {
    // A plugin module of the gateway process: the callers it saw, in its status.
    const module = `${dir}/rec.ts`;
    await Deno.writeTextFile(
      module,
      `const seen: Array<string | null> = [];
export default {
  name: "rec",
  onCall(call: { caller?: string }) { seen.push(call.caller ?? null); },
  status: () => ({ seen }),
};
`,
    );
    await using gw = await gateway({
      token: [TOKEN, other],
      plugins: { rec: { module } },
    });
    for (const token of [TOKEN, other]) {
      const { error } = await gw.client.call("ModelInfer", {
        model_name: "mirror",
        inputs: [{
          name: "i",
          datatype: "INT64",
          shape: [1],
          contents: { int64_contents: ["1"] },
        }],
      }, { token });
      assert.equal(error, undefined);
    }
    const status = await (await gw.fetch("/v1/status")).json();
    assert.deepEqual(status.pluginStatus.rec.seen, [
      tokenId(TOKEN),
      tokenId(other),
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
