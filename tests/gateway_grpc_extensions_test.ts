// Triton's extensions to the Open Inference Protocol's gRPC service
// (ModelStatistics, ModelConfig, the repository RPCs, ModelStreamInfer) and
// gRPC's health checking, through the real gateway and real Python workers,
// called by grpc-js with the messages written and read by protobufjs from
// tests/fixtures/grpc/triton_extensions.proto (an independent codec).
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type protobuf from "protobufjs";
import {
  type RawGrpcGateway,
  rawGrpcGateway,
  tritonProto,
} from "./_grpc_raw_gateway.ts";
import { callEnded, grpc } from "./_grpc_client.ts";

const MODELS: Record<string, string> = {
  "mirror.py": `class Mirror:
    """Returns its inputs; the names of its parameters as "params"."""

    def execute(self, msg):
        out = {k: v for k, v in msg.items() if k != "parameters"}
        if msg.get("parameters"):
            out["params"] = sorted(msg["parameters"])
        return out
`,
  "ticker.py": `import time


class Ticker:
    """Yields an item every 5 ms, without end."""

    def execute(self, msg):
        i = 0
        while True:
            time.sleep(0.005)
            i += 1
            yield {"tick": [i + 0.5]}
`,
  "tokens.py": `class Tokens:
    """Yields n[0] items; for a negative n, one item and then an error naming its file."""

    def execute(self, msg):
        n = int(msg["n"][0])
        for i in range(abs(n)):
            yield {"token": [i + 0.5]}
            if n < 0:
                raise ValueError("tokens failed after %d in %s" % (i + 1, __file__))
`,
  "raiser.py": `from pyproxy import HTTPError


class Raiser:
    inputs = {"status": {"type": "array", "items": "integer"}}

    def execute(self, msg):
        raise HTTPError(int(msg["status"][0]), "model says %d" % int(msg["status"][0]))
`,
  "batcher.py": `class Batcher:
    batch_size = 4
    batch_delay_ms = 20
    inputs = {"x": {"type": "array", "items": "number"}}

    def execute_batch(self, msgs):
        return [{"y": [m["x"][0] + 1]} for m in msgs]
`,
  "counter.py": `class Counter:
    """Appends a line to msg["log"][0] (a path) per call; returns x."""

    def execute(self, msg):
        with open(msg["log"][0], "a") as f:
            f.write("x\\n")
        return {"x": msg["x"]}
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
};

const root = tritonProto();
const type = (name: string) => root.lookupType(name);
const T = {
  inferRequest: type("inference.ModelInferRequest"),
  modelRef: type("triton.ModelConfigRequest"),
  config: type("triton.ModelConfigResponse"),
  stats: type("triton.ModelStatisticsResponse"),
  indexRequest: type("triton.RepositoryIndexRequest"),
  index: type("triton.RepositoryIndexResponse"),
  load: type("triton.RepositoryModelLoadRequest"),
  unload: type("triton.RepositoryModelUnloadRequest"),
  streamResponse: type("triton.ModelStreamInferResponse"),
  healthRequest: type("triton.HealthCheckRequest"),
  health: type("triton.HealthCheckResponse"),
};
const OBJECT = { longs: Number, enums: String, defaults: true };

const TOKEN = "grpc-ext-test-token-0123456789";
const SERVICE = "/inference.GRPCInferenceService/";

type Gateway = RawGrpcGateway;

const gateway = (extra: Parameters<typeof rawGrpcGateway>[2] = {}) =>
  rawGrpcGateway(TOKEN, MODELS, extra);

function metadata(token: string | null = TOKEN): grpc.Metadata {
  const m = new grpc.Metadata();
  if (token !== null) m.set("authorization", `Bearer ${token}`);
  return m;
}

/** A unary call of `path` with `request` (a protobufjs message's fields). */
function unary(
  client: grpc.Client,
  path: string,
  request: protobuf.Type,
  fields: Record<string, unknown>,
  response: protobuf.Type | undefined,
  token: string | null = TOKEN,
): Promise<{ response?: Record<string, unknown>; error?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    client.makeUnaryRequest<Uint8Array, Uint8Array>(
      path,
      (x) => Buffer.from(x),
      (b) => b,
      request.encode(request.create(fields)).finish(),
      metadata(token),
      (error: grpc.ServiceError | null, bytes?: Uint8Array) =>
        resolve(
          error ? { error } : {
            response: response === undefined
              ? {}
              : response.toObject(response.decode(bytes!), OBJECT),
          },
        ),
    );
  });
}

/** A raw HTTP/2 header-free helper: a REST request of the gateway. */
async function restJson(gw: Gateway, path: string): Promise<unknown> {
  const res = await gw.fetch(path);
  assert.equal(res.status, 200, path);
  return await res.json();
}

function inferOf(model: string, id: string, inputs: Record<string, number[]>) {
  return {
    model_name: model,
    id,
    inputs: Object.entries(inputs).map(([name, values]) => ({
      name,
      datatype: "FP64",
      shape: [values.length],
      contents: { fp64_contents: values },
    })),
  };
}

Deno.test("gRPC ModelConfig and ModelStatistics answer what REST /config and /stats answer; repository refusals and ModelStreamInfer, on the same gateway", async (t) => {
  await using gw = await gateway();
  // Three calls of the model that batches, one at a time: batches of one.
  for (let i = 0; i < 3; i++) {
    const res = await gw.fetch("/v2/models/batcher/infer", {
      method: "POST",
      body: JSON.stringify({
        inputs: [{ name: "x", datatype: "FP64", shape: [1], data: [i] }],
      }),
    });
    assert.equal(res.status, 200, await res.text());
  }
  const config = await unary(
    gw.client,
    `${SERVICE}ModelConfig`,
    T.modelRef,
    { name: "batcher" },
    T.config,
  );
  assert.equal(config.error, undefined, config.error?.details);
  const rest = await restJson(gw, "/v2/models/batcher/config") as Record<
    string,
    unknown
  >;
  const got = config.response!.config as Record<string, unknown>;
  assert.equal(got.name, "batcher");
  assert.equal(got.platform, rest.platform);
  assert.equal(got.backend, rest.backend);
  assert.equal(got.max_batch_size, 0);
  assert.deepEqual(got.dynamic_batching, rest.dynamic_batching);
  assert.deepEqual(got.version_policy, { latest: { num_versions: 1 } });
  assert.deepEqual(got.input, [
    { name: "x", data_type: "TYPE_FP64", dims: [-1], optional: false },
  ]);
  assert.deepEqual(got.instance_group, rest.instance_group);
  // Not decoupled: Triton leaves the policy out.
  assert.equal(got.model_transaction_policy, null);
  assert.equal(rest.model_transaction_policy, undefined);
  // A model that yields is Triton's decoupled model (what perf_analyzer and
  // genai-perf read to use ModelStreamInfer), over REST and gRPC alike.
  const decoupled = await unary(
    gw.client,
    `${SERVICE}ModelConfig`,
    T.modelRef,
    { name: "tokens" },
    T.config,
  );
  assert.deepEqual(
    (decoupled.response!.config as Record<string, unknown>)
      .model_transaction_policy,
    { decoupled: true },
  );
  assert.deepEqual(
    (await restJson(gw, "/v2/models/tokens/config") as Record<string, unknown>)
      .model_transaction_policy,
    { decoupled: true },
  );

  const stats = await unary(
    gw.client,
    `${SERVICE}ModelStatistics`,
    T.modelRef,
    { name: "batcher" },
    T.stats,
  );
  assert.equal(stats.error, undefined, stats.error?.details);
  const restStats = await restJson(gw, "/v2/models/batcher/stats") as {
    model_stats: Array<Record<string, unknown>>;
  };
  const [s] = stats.response!.model_stats as Array<Record<string, unknown>>;
  const [r] = restStats.model_stats;
  assert.equal(s!.name, "batcher");
  assert.equal(s!.inference_count, 3);
  assert.equal(s!.inference_count, r!.inference_count);
  assert.equal(s!.execution_count, r!.execution_count);
  assert.equal(s!.last_inference, r!.last_inference);
  assert.deepEqual(
    (s!.inference_stats as Record<string, unknown>).success,
    (r!.inference_stats as Record<string, unknown>).success,
  );
  assert.deepEqual(s!.batch_stats, r!.batch_stats);

  // Every model's, without a name; an unknown one is NOT_FOUND.
  const all = await unary(
    gw.client,
    `${SERVICE}ModelStatistics`,
    T.modelRef,
    {},
    T.stats,
  );
  const names = (all.response!.model_stats as Array<{ name: string }>).map((
    m,
  ) => m.name);
  assert.ok(names.includes("batcher") && names.includes("mirror"), `${names}`);
  const missing = await unary(
    gw.client,
    `${SERVICE}ModelConfig`,
    T.modelRef,
    { name: "nope" },
    T.config,
  );
  assert.equal(missing.error?.code, grpc.status.NOT_FOUND);
  assert.match(missing.error!.details, /Cannot find model "nope"/);

  // The tests that need a gateway as it starts, on this one, after the
  // statistics above (each gateway is a Deno process and a Python worker:
  // ~0.4 s of CPU).
  await t.step(
    "gRPC repository RPCs: PERMISSION_DENIED without --allow-manage",
    () => permissionDenied(gw),
  );
  await t.step(
    "gRPC ModelStreamInfer: one response per request, errors on the stream, the final flag, half-close ends it",
    () => streamResponses(gw),
  );
  await t.step(
    "gRPC ModelStreamInfer: a half-close waits for the infers in flight; a cancel cancels them in Python",
    () => streamHalfClose(gw),
  );
  await t.step(
    "gRPC ModelStreamInfer: UNAUTHENTICATED without the token; a client's deadline ends it, the infer cancelled in Python",
    () => streamAuthDeadline(gw),
  );
  await t.step(
    "gRPC ModelStreamInfer of a yielding model: a response per item, the last flagged final; Triton's empty final response; an error after items",
    () => streamYielding(gw),
  );
  await t.step(
    "gRPC: the streamed form of a yielding model's /v2 infer is the transport's own: not an HTTP client's, nor a unary call's by its metadata",
    () => streamedForm(gw),
  );
});

/** The step "gRPC repository RPCs: PERMISSION_DENIED without --allow-manage" of the first test (its gateway). */
async function permissionDenied(gw: Gateway): Promise<void> {
  const index = await unary(
    gw.client,
    `${SERVICE}RepositoryIndex`,
    T.indexRequest,
    {},
    T.index,
  );
  assert.equal(index.error?.code, grpc.status.PERMISSION_DENIED);
  assert.match(index.error!.details, /--allow-manage/);
  const unload = await unary(
    gw.client,
    `${SERVICE}RepositoryModelUnload`,
    T.unload,
    { model_name: "mirror" },
    undefined,
  );
  assert.equal(unload.error?.code, grpc.status.PERMISSION_DENIED);
}

Deno.test("gRPC repository RPCs with --allow-manage: index, unload, load, errors as REST's", async () => {
  await using gw = await gateway({ allowManage: true });
  const index = async (ready = false) => {
    const { response, error } = await unary(
      gw.client,
      `${SERVICE}RepositoryIndex`,
      T.indexRequest,
      { ready },
      T.index,
    );
    assert.equal(error, undefined, error?.details);
    return response!.models as Array<Record<string, string>>;
  };
  const rest = await gw.fetch("/v2/repository/index", {
    method: "POST",
    body: "{}",
  });
  assert.deepEqual(
    (await index()).map((m) => [m.name, m.state]),
    (await rest.json() as Array<Record<string, string>>).map((m) => [
      m.name,
      m.state,
    ]),
  );
  assert.ok((await index()).some((m) => m.name === "mirror"));

  const unload = await unary(
    gw.client,
    `${SERVICE}RepositoryModelUnload`,
    T.unload,
    { model_name: "mirror" },
    undefined,
  );
  assert.equal(unload.error, undefined, unload.error?.details);
  const after = (await index()).find((m) => m.name === "mirror");
  assert.equal(after?.state, "UNAVAILABLE");
  assert.ok(!(await index(true)).some((m) => m.name === "mirror"));

  const load = await unary(
    gw.client,
    `${SERVICE}RepositoryModelLoad`,
    T.load,
    { model_name: "mirror" },
    undefined,
  );
  assert.equal(load.error, undefined, load.error?.details);
  assert.equal(
    (await index()).find((m) => m.name === "mirror")?.state,
    "READY",
  );

  // REST's 400s: INVALID_ARGUMENT, REST's message.
  const bad = await unary(
    gw.client,
    `${SERVICE}RepositoryModelLoad`,
    T.load,
    { model_name: "mirror", parameters: { colour: { string_param: "red" } } },
    undefined,
  );
  assert.equal(bad.error?.code, grpc.status.INVALID_ARGUMENT);
  assert.match(bad.error!.details, /unknown parameter "colour"/);
  const none = await unary(
    gw.client,
    `${SERVICE}RepositoryModelLoad`,
    T.load,
    { model_name: "nothere" },
    undefined,
  );
  assert.equal(none.error?.code, grpc.status.NOT_FOUND, none.error?.details);
});

/** A ModelStreamInfer call: what it answered and how it ended. */
function streamCall(
  client: grpc.Client,
  token: string | null = TOKEN,
  deadlineMs?: number,
) {
  const call = client.makeBidiStreamRequest<Uint8Array, Uint8Array>(
    `${SERVICE}ModelStreamInfer`,
    (x) => Buffer.from(x),
    (b) => b,
    metadata(token),
    deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs },
  );
  const responses: Array<Record<string, unknown>> = [];
  let onResponse = () => {};
  call.on("data", (bytes: Uint8Array) => {
    responses.push(
      T.streamResponse.toObject(T.streamResponse.decode(bytes), OBJECT),
    );
    onResponse();
  });
  // Once its status came and its messages are all delivered (callEnded).
  const ended = callEnded(call);
  return {
    call,
    responses,
    ended,
    send(fields: Record<string, unknown>) {
      call.write(T.inferRequest.encode(T.inferRequest.create(fields)).finish());
    },
    /** Resolves once `n` responses came. */
    responded(n: number): Promise<void> {
      return new Promise((resolve) => {
        const check = () => {
          if (responses.length >= n) resolve();
        };
        onResponse = check;
        check();
      });
    },
  };
}

const fp64 = (response: Record<string, unknown>, name: string) => {
  const infer = response.infer_response as {
    outputs: Array<{ name: string; contents: { fp64_contents: number[] } }>;
  };
  return infer.outputs.find((o) => o.name === name)?.contents.fp64_contents;
};

/** The step "gRPC ModelStreamInfer: one response per request, errors on the stream, the final flag, half-close ends it" of the first test (its gateway). */
async function streamResponses(gw: Gateway): Promise<void> {
  const s = streamCall(gw.client);
  s.send(inferOf("mirror", "a", { v: [1.5] }));
  s.send({
    ...inferOf("raiser", "b", { status: [422] }),
    inputs: [{
      name: "status",
      datatype: "INT64",
      shape: [1],
      contents: { int64_contents: [422] },
    }],
  });
  s.send({ ...inferOf("nope", "c", { v: [1] }) });
  s.send({
    ...inferOf("mirror", "d", { v: [4.5, 5.5] }),
    parameters: { triton_enable_empty_final_response: { bool_param: true } },
  });
  await s.responded(4);
  // The stream goes on after errors: one more, then the half-close.
  s.send(inferOf("mirror", "e", { v: [6.5] }));
  s.call.end();
  const status = await s.ended;
  assert.equal(status.code, grpc.status.OK, status.details);
  assert.equal(s.responses.length, 5);
  const byId = new Map(
    s.responses.map((
      r,
    ) => [(r.infer_response as { id: string }).id, r]),
  );
  assert.deepEqual(fp64(byId.get("a")!, "v"), [1.5]);
  assert.equal(byId.get("a")!.error_message, "");
  assert.match(String(byId.get("b")!.error_message), /model says 422/);
  assert.match(
    String(byId.get("c")!.error_message),
    /Cannot find model "nope"/,
  );
  assert.deepEqual(fp64(byId.get("d")!, "v"), [4.5, 5.5]);
  // A model that returns: its one response is the request's last
  // (Triton's flag), asked for or not; the parameter asking for it never
  // reaches the model.
  const final = (r: Record<string, unknown>) =>
    (r.infer_response as {
      parameters: Record<string, { bool_param: boolean }>;
    }).parameters.triton_final_response?.bool_param;
  assert.equal(final(byId.get("a")!), true);
  assert.equal(final(byId.get("d")!), true);
  // An error is its request's last response, and says so (a client that
  // waits for the flag waited for ever: the error had none).
  assert.equal(final(byId.get("b")!), true);
  assert.equal(final(byId.get("c")!), true);
  assert.ok(
    !(byId.get("d")!.infer_response as { outputs: Array<{ name: string }> })
      .outputs.some((o) => o.name === "params"),
  );
  assert.deepEqual(fp64(byId.get("e")!, "v"), [6.5]);
}

function sleeperRequest(started: string, seconds: number, id: string) {
  return {
    model_name: "sleeper",
    id,
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
        contents: { fp64_contents: [seconds] },
      },
    ],
  };
}

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

async function until(what: string, check: () => Promise<boolean>) {
  for (let i = 0; i < 1000; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The step "gRPC ModelStreamInfer: a half-close waits for the infers in flight; a cancel cancels them in Python" of the first test (its gateway). */
async function streamHalfClose(gw: Gateway): Promise<void> {
  const started = `${gw.dir}/stream.started`;
  const s = streamCall(gw.client);
  s.send(sleeperRequest(started, 0.3, "slow"));
  await until("the infer to start", () => exists(started));
  s.call.end();
  const status = await s.ended;
  assert.equal(status.code, grpc.status.OK, status.details);
  assert.equal(s.responses.length, 1);
  assert.deepEqual(fp64(s.responses[0]!, "slept"), [0.3]);

  const cancelled = `${gw.dir}/stream2.started`;
  const c = streamCall(gw.client);
  c.send(sleeperRequest(cancelled, 30, "long"));
  await until("the infer to start", () => exists(cancelled));
  c.call.cancel();
  assert.equal((await c.ended).code, grpc.status.CANCELLED);
  await until(
    "Python to be interrupted",
    () => exists(`${cancelled}.cancelled`),
  );
}

/** The step "gRPC ModelStreamInfer: UNAUTHENTICATED without the token; a client's deadline ends it, the infer cancelled in Python" of the first test (its gateway). */
async function streamAuthDeadline(gw: Gateway): Promise<void> {
  const s = streamCall(gw.client, null);
  s.send(inferOf("mirror", "a", { v: [1.5] }));
  const status = await s.ended;
  assert.equal(status.code, grpc.status.UNAUTHENTICATED, status.details);
  assert.equal(s.responses.length, 0);

  const started = `${gw.dir}/deadline.started`;
  const d = streamCall(gw.client, TOKEN, 1500);
  d.send(sleeperRequest(started, 30, "long"));
  const late = await d.ended;
  assert.equal(late.code, grpc.status.DEADLINE_EXCEEDED, late.details);
  await until("Python to be interrupted", () => exists(`${started}.cancelled`));
}

Deno.test("gRPC health Check: SERVING without a token, NOT_FOUND for another service, NOT_SERVING while draining", async () => {
  const gw = await gateway({ limits: { shutdownGrace: 5000 } });
  try {
    const check = (service: string) =>
      unary(
        gw.client,
        "/grpc.health.v1.Health/Check",
        T.healthRequest,
        { service },
        T.health,
        null,
      );
    assert.deepEqual((await check("")).response, { status: "SERVING" });
    assert.deepEqual(
      (await check("inference.GRPCInferenceService")).response,
      { status: "SERVING" },
    );
    const other = await check("nope.Service");
    assert.equal(other.error?.code, grpc.status.NOT_FOUND);

    // A call in flight holds the drain open; meanwhile: NOT_SERVING.
    const started = `${gw.dir}/health.started`;
    const s = streamCall(gw.client);
    s.send(sleeperRequest(started, 0.5, "slow"));
    s.call.end();
    await until("the infer to start", () => exists(started));
    const stopping = gw.shutdown();
    await gw.draining;
    assert.deepEqual((await check("")).response, { status: "NOT_SERVING" });
    assert.equal((await s.ended).code, grpc.status.OK);
    await stopping;
  } finally {
    gw.client.close();
    await gw.shutdown();
    await Deno.remove(gw.dir, { recursive: true });
  }
});

Deno.test("gRPC ModelStreamInfer: the shutdown ends an idle stream with UNAVAILABLE at once, not after the grace", async () => {
  // Clients keep a stream open between their requests (tritonclient's
  // start_stream): it held every shutdown for its whole grace, and was then
  // cut off with the connection.
  const gw = await gateway({ limits: { shutdownGrace: 4000 } });
  try {
    const s = streamCall(gw.client);
    s.send(inferOf("mirror", "a", { v: [1.5] }));
    await s.responded(1);
    const began = performance.now();
    await gw.shutdown();
    const took = performance.now() - began;
    const status = await s.ended;
    assert.equal(status.code, grpc.status.UNAVAILABLE, status.details);
    assert.match(status.details, /shutting down/);
    assert.ok(took < 2000, `the shutdown took ${Math.round(took)} ms`);
    assert.deepEqual(fp64(s.responses[0]!, "v"), [1.5]);
  } finally {
    gw.client.close();
    await gw.shutdown();
    await Deno.remove(gw.dir, { recursive: true });
  }
});

Deno.test("gRPC ModelStreamInfer: a client that does not read its answers holds the stream's infers (bounded), and gets them all once it reads", async () => {
  await using gw = await gateway({ limits: { bodyLimit: 4 << 20 } });
  const calls = 80;
  // The client in a process of its own that ends without a GOAWAY
  // (tests/fixtures/grpc/unread_stream.ts): after the ~10 MB each way of
  // this stream, Deno's node:http2 crashed the process that received one
  // (the gateway's at the client's close, 3 runs in 4; the client's at the
  // gateway's shutdown).
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./fixtures/grpc/unread_stream.ts", import.meta.url).pathname,
      gw.grpcTarget!,
      TOKEN,
      `${gw.dir}/counter.log`,
      String(calls),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, `the client process: ${out.code} ${stderr}`);
  const got = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.ok(got.unread > 0, `none ran: ${JSON.stringify(got)}`);
  assert.ok(got.unread < calls / 2, `${got.unread} of ${calls} ran unread`);
  assert.equal(got.code, grpc.status.OK, got.details);
  assert.equal(got.responses, calls);
  assert.equal(got.count, calls);
});

/** The step "gRPC ModelStreamInfer of a yielding model: a response per item, the last flagged final; Triton's empty final response; an error after items" of the first test (its gateway). */
async function streamYielding(gw: Gateway): Promise<void> {
  const s = streamCall(gw.client);
  const tokens = (id: string, n: number, emptyFinal = false) => ({
    model_name: "tokens",
    id,
    inputs: [{
      name: "n",
      datatype: "INT64",
      shape: [1],
      contents: { int64_contents: [n] },
    }],
    ...(emptyFinal
      ? {
        parameters: {
          triton_enable_empty_final_response: { bool_param: true },
        },
      }
      : {}),
  });
  s.send(tokens("three", 3));
  s.send(tokens("empty-final", 2, true));
  s.send(tokens("fails", -1));
  s.send(tokens("none", 0));
  s.call.end();
  const status = await s.ended;
  assert.equal(status.code, grpc.status.OK, status.details);
  const of = (id: string) =>
    s.responses.filter((r) =>
      (r.infer_response as { id: string } | null)?.id === id
    ).map((r) => {
      const infer = r.infer_response as {
        outputs: Array<{ name: string; contents: { fp64_contents: number[] } }>;
        parameters: Record<string, { bool_param: boolean }>;
      };
      return {
        error: r.error_message,
        token: infer.outputs.find((o) => o.name === "token")?.contents
          .fp64_contents[0],
        final: infer.parameters.triton_final_response?.bool_param,
      };
    });
  assert.deepEqual(of("three"), [
    { error: "", token: 0.5, final: false },
    { error: "", token: 1.5, final: false },
    { error: "", token: 2.5, final: true },
  ]);
  assert.deepEqual(of("empty-final"), [
    { error: "", token: 0.5, final: false },
    { error: "", token: 1.5, final: false },
    { error: "", token: undefined, final: true },
  ]);
  const failed = of("fails");
  assert.deepEqual(failed[0], { error: "", token: 0.5, final: false });
  // The models directory hidden, as in REST's error bodies.
  assert.match(String(failed[1]?.error), /tokens failed after 1 in tokens\.py/);
  // The error after items ends its request: flagged final.
  assert.equal(failed[1]?.final, true);
  assert.equal(failed.length, 2);
  assert.deepEqual(of("none"), [{ error: "", token: undefined, final: true }]);

  // REST's /v2 infer still answers such a model with its pointer to /v1.
  const rest = await gw.fetch("/v2/models/tokens/infer", {
    method: "POST",
    body: JSON.stringify({
      inputs: [{ name: "n", datatype: "INT64", shape: [1], data: [1] }],
    }),
  });
  assert.equal(rest.status, 400);
  assert.match(await rest.text(), /\/v1\/models\/tokens\/stream/);
}

/** The step "gRPC: the streamed form of a yielding model's /v2 infer is the transport's own: not an HTTP client's, nor a unary call's by its metadata" of the first test (its gateway). */
async function streamedForm(gw: Gateway): Promise<void> {
  const body = JSON.stringify({
    inputs: [{ name: "n", datatype: "INT64", shape: [1], data: [2] }],
  });
  // An HTTP client sending the private media type got the records (an
  // undocumented API, outside the drain's end of streams): now REST's 400.
  const rest = await gw.fetch("/v2/models/tokens/infer", {
    method: "POST",
    headers: { accept: "application/x-pyproxy-inference-stream" },
    body,
  });
  assert.equal(rest.status, 400);
  assert.match(await rest.text(), /\/v1\/models\/tokens\/stream/);
  // Metadata is not the transport's headers: a unary ModelInfer with the
  // type as its `accept` metadata is refused as without it.
  const m = metadata();
  m.set("accept", "application/x-pyproxy-inference-stream");
  const answer = await new Promise<grpc.ServiceError | null>((resolve) => {
    gw.client.makeUnaryRequest<Uint8Array, Uint8Array>(
      `${SERVICE}ModelInfer`,
      (x) => Buffer.from(x),
      (b) => b,
      T.inferRequest.encode(T.inferRequest.create({
        model_name: "tokens",
        inputs: [{
          name: "n",
          datatype: "INT64",
          shape: [1],
          contents: { int64_contents: [2] },
        }],
      })).finish(),
      m,
      (error: grpc.ServiceError | null) => resolve(error),
    );
  });
  assert.equal(answer?.code, grpc.status.INVALID_ARGUMENT, answer?.details);
  assert.match(String(answer?.details), /\/v1\/models\/tokens\/stream/);
}

Deno.test("gRPC ModelStreamInfer of a yielding model: the client's cancel ends the model's stream in Python", async () => {
  // No idle timeout to end it instead (a stream nobody reads).
  await using gw = await gateway({ limits: { streamIdleTimeout: 600_000 } });
  const s = streamCall(gw.client);
  s.send({
    model_name: "ticker",
    id: "t",
    inputs: [{
      name: "x",
      datatype: "FP64",
      shape: [1],
      contents: { fp64_contents: [1.5] },
    }],
  });
  await s.responded(3);
  const busy = async () => {
    const status = await (await gw.fetch("/v1/status")).json();
    return status.workers[0].inFlight as number;
  };
  assert.equal(await busy(), 1);
  s.call.cancel();
  assert.equal((await s.ended).code, grpc.status.CANCELLED);
  await until(
    "the stream's call to end on the worker",
    async () => await busy() === 0,
  );
});
