// gRPC ModelStreamInfer's limits and ends through the real gateway and real
// Python workers: a yielding model's call counted at its final response, a
// cancel between two items, a client that sends 10^4 requests and never
// reads, a never-ending yielding model ended by a cancel, a disconnect or
// the shutdown. grpc-js (and a raw node:http2 client where grpc-js cannot
// say what it wants: a connection cut, the bytes the server took).
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import http2 from "node:http2";
import {
  type RawGrpcGateway,
  rawGrpcGateway,
  tritonProto,
} from "./_grpc_raw_gateway.ts";
import { callEnded, grpc } from "./_grpc_client.ts";

const MODELS: Record<string, string> = {
  "gate.py": `import os
import time


class Gate:
    """Yields one item, waits (up to 30 s) for the file msg["gate"][0], then yields another.

    Writes the path + ".cancelled" when interrupted while it waits.
    """

    def execute(self, msg):
        gate = msg["gate"][0]
        yield {"step": [1.5]}
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)
        except KeyboardInterrupt:
            with open(gate + ".cancelled", "w") as f:
                f.write("cancelled")
            raise
        yield {"step": [2.5]}
`,
  "late.py": `import os
import time


class Late:
    """Waits (up to 30 s) for the file msg["gate"][0], then yields one item.

    Writes the path + ".cancelled" when interrupted while it waits; refuses
    a firstItemTimeout parameter (the transport's, never the model's).
    """

    def execute(self, msg):
        if "firstItemTimeout" in msg.get("parameters", {}):
            raise ValueError("the model got firstItemTimeout")
        gate = msg["gate"][0]
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.01)
        except KeyboardInterrupt:
            with open(gate + ".cancelled", "w") as f:
                f.write("cancelled")
            raise
        yield {"step": [1.5]}
`,
  "halfway.py": `class Halfway:
    """Yields one item, then raises."""

    def execute(self, msg):
        yield {"step": [1.5]}
        raise ValueError("halfway")
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
  "padded.py": `class Padded:
    """Appends a line to msg["log"][0] (a path) per call; answers 4 KiB."""

    def execute(self, msg):
        with open(msg["log"][0], "a") as f:
            f.write("x\\n")
        return {"pad": [0.5] * 512}
`,
};

const root = tritonProto();
const T = {
  inferRequest: root.lookupType("inference.ModelInferRequest"),
  streamResponse: root.lookupType("triton.ModelStreamInferResponse"),
};
const OBJECT = { longs: Number, enums: String, defaults: true };

const TOKEN = "grpc-stream-test-token-0123456789";
const STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer";

type Gateway = RawGrpcGateway;

const gateway = (extra: Parameters<typeof rawGrpcGateway>[2] = {}) =>
  rawGrpcGateway(TOKEN, MODELS, extra);

/** A ModelStreamInfer call by grpc-js: what it answered and how it ended. */
function streamCall(client: grpc.Client, extra: Record<string, string> = {}) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${TOKEN}`);
  for (const [k, v] of Object.entries(extra)) metadata.set(k, v);
  const call = client.makeBidiStreamRequest<Uint8Array, Uint8Array>(
    STREAM_PATH,
    (x) => Buffer.from(x),
    (b) => b,
    metadata,
    {},
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
      call.write(encode(fields));
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

const encode = (fields: Record<string, unknown>): Uint8Array =>
  T.inferRequest.encode(T.inferRequest.create(fields)).finish();

/** A gRPC frame of `message`. */
function frame(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + message.byteLength);
  new DataView(out.buffer).setUint32(1, message.byteLength);
  out.set(message, 5);
  return out;
}

const bytesInput = (name: string, value: string) => ({
  name,
  datatype: "BYTES",
  shape: [1],
  contents: { bytes_contents: [Buffer.from(value)] },
});

// Each item answered as it comes (Triton's decoupled form: an empty final
// response): without it the transport holds an item until the next one
// tells whether it was the last.
const gateRequest = (gate: string, id: string) => ({
  model_name: "gate",
  id,
  inputs: [bytesInput("gate", gate)],
  parameters: { triton_enable_empty_final_response: { bool_param: true } },
});

const tickerRequest = {
  model_name: "ticker",
  id: "t",
  inputs: [{
    name: "x",
    datatype: "FP64",
    shape: [1],
    contents: { fp64_contents: [1.5] },
  }],
};

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

async function until(what: string, check: () => Promise<boolean>) {
  for (let i = 0; i < 1000; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The calls in flight on the gateway's one worker. */
async function busy(gw: Gateway): Promise<number> {
  const status = await (await gw.fetch("/v1/status")).json();
  return status.workers[0].inFlight as number;
}

/**
 * `pyproxy_requests_total` of `model` by status (those counted: the
 * statuses listed at 0 before their first count left out), and its
 * in-flight gauge.
 */
async function counted(gw: Gateway, model: string) {
  const text = await (await gw.fetch("/metrics")).text();
  const byStatus: Record<string, number> = {};
  for (
    const m of text.matchAll(
      new RegExp(
        `^pyproxy_requests_total\\{model="${model}",status="(\\d+)"\\} (\\d+)$`,
        "gm",
      ),
    )
  ) if (Number(m[2]) > 0) byStatus[m[1]!] = Number(m[2]);
  const inFlight = text.match(
    new RegExp(
      `^pyproxy_in_flight_requests\\{model="${model}"\\} (\\d+)$`,
      "m",
    ),
  );
  return { byStatus, inFlight: Number(inFlight?.[1] ?? 0) };
}

/** The success and fail counts of `/v2/models/{model}/stats`. */
async function stats(gw: Gateway, model: string) {
  const body = await (await gw.fetch(`/v2/models/${model}/stats`)).json();
  const s = body.model_stats[0].inference_stats;
  return { success: s.success.count as number, fail: s.fail.count as number };
}

// The tests of a gateway with limits.streamIdleTimeout 600 s and no other limit, as steps on
// one such gateway (a gateway start and its Python worker each, otherwise). The first counts
// the gate model's calls from none, so it goes first; the second has a gate file of its own
// (the first opened its gate).
Deno.test("gRPC ModelStreamInfer on one gateway without a stream idle timeout (each step its own calls)", async (t) => {
  await using gw = await gateway({ limits: { streamIdleTimeout: 600_000 } });
  await t.step(
    "gRPC ModelStreamInfer of a yielding model: the call counts in the metrics and statistics at its final response, not its first item; a cancel counts as 499",
    () => grpcModelStreamInferYieldingModelCall(gw),
  );
  await t.step(
    "gRPC ModelStreamInfer of a yielding model: a cancel while the model works between two items cancels it in Python at once, the worker free",
    () => grpcModelStreamInferYieldingModelCancel(gw),
  );
  await t.step(
    "gRPC ModelStreamInfer of a never-ending yielding model: a client's disconnect ends it and frees the worker, read or unread",
    () => grpcModelStreamInferNeverEndingYielding(gw),
  );
});

/** A step of "gRPC ModelStreamInfer on one gateway without a stream idle timeout (each step its own calls)": gRPC ModelStreamInfer of a yielding model: the call counts in the metrics and statistics at its final response, not its first item; a cancel counts as 499 */
async function grpcModelStreamInferYieldingModelCall(
  gw: Gateway,
): Promise<void> {
  const gate = `${gw.dir}/gate`;
  const s = streamCall(gw.client);
  s.send(gateRequest(gate, "g"));
  await s.responded(1);
  // Between its items: in flight, not finished.
  assert.deepEqual(await counted(gw, "gate"), { byStatus: {}, inFlight: 1 });
  assert.deepEqual(await stats(gw, "gate"), { success: 0, fail: 0 });
  await Deno.writeTextFile(gate, "open");
  await s.responded(3);
  s.call.end();
  assert.equal((await s.ended).code, grpc.status.OK);
  await until(
    "the call to be counted",
    async () => (await counted(gw, "gate")).byStatus["200"] === 1,
  );
  assert.deepEqual(await counted(gw, "gate"), {
    byStatus: { "200": 1 },
    inFlight: 0,
  });
  assert.deepEqual(await stats(gw, "gate"), { success: 1, fail: 0 });

  // Cancelled between its items: counted once, as the client gone.
  const c = streamCall(gw.client);
  c.send(gateRequest(`${gw.dir}/never`, "c"));
  await c.responded(1);
  c.call.cancel();
  await until(
    "the cancelled call to be counted",
    async () => (await counted(gw, "gate")).byStatus["499"] === 1,
  );
  assert.deepEqual(await counted(gw, "gate"), {
    byStatus: { "200": 1, "499": 1 },
    inFlight: 0,
  });
  assert.deepEqual(await stats(gw, "gate"), { success: 1, fail: 1 });
  // Counted at the cancel, which reaches Python a moment later: the next
  // step counts the calls on the worker (a busy host showed it 2).
  await until("the worker to be free", async () => await busy(gw) === 0);
}

/** A step of "gRPC ModelStreamInfer on one gateway without a stream idle timeout (each step its own calls)": gRPC ModelStreamInfer of a yielding model: a cancel while the model works between two items cancels it in Python at once, the worker free */
async function grpcModelStreamInferYieldingModelCancel(
  gw: Gateway,
): Promise<void> {
  // The model yields nothing for 30 s after its first item: without the
  // cancel passed to its stream, the transport would learn only at its next
  // item that the client left. (A gate of its own: the first step opened its.)
  const gate = `${gw.dir}/gate-cancel`;
  const s = streamCall(gw.client);
  s.send(gateRequest(gate, "g"));
  await s.responded(1);
  assert.equal(await busy(gw), 1);
  const cancelled = performance.now();
  s.call.cancel();
  assert.equal((await s.ended).code, grpc.status.CANCELLED);
  await until("Python to be interrupted", () => exists(`${gate}.cancelled`));
  await until("the worker to be free", async () => await busy(gw) === 0);
  const took = performance.now() - cancelled;
  assert.ok(took < 5000, `the cancel took ${Math.round(took)} ms`);
  // The worker takes the next call.
  const next = streamCall(gw.client);
  await Deno.writeTextFile(gate, "open");
  next.send(gateRequest(gate, "n"));
  next.call.end();
  assert.equal((await next.ended).code, grpc.status.OK);
  assert.equal(next.responses.length, 3);
}

Deno.test("gRPC ModelStreamInfer of a yielding model that fails after its first item: its error response names the model, the time and its setting, and carries the status, the error's type and the request id as parameters", async () => {
  await using gw = await gateway({
    limits: { requestTimeout: 400, streamIdleTimeout: 600_000 },
  });
  const s = streamCall(gw.client, { "x-request-id": "rid-halfway" });
  // The gate never opens: the model waits 30 s after its first item.
  s.send(gateRequest(`${gw.dir}/gate`, "g"));
  s.send({
    model_name: "halfway",
    id: "h",
    inputs: [bytesInput("x", "x")],
    parameters: { triton_enable_empty_final_response: { bool_param: true } },
  });
  await s.responded(4);
  s.call.end();
  await s.ended;
  const of = (id: string) =>
    s.responses.filter((r) =>
      (r.infer_response as { id?: string } | null)?.id === id
    );
  const timedOut = of("g").at(-1);
  // Before: "Cannot complete executeStream: timed out after 400 ms".
  assert.match(
    String(timedOut?.error_message),
    /^Cannot complete the stream of model 'gate': it ran 400 ms, the limit of a whole stream, the gateway's limits\.requestTimeout \(serve --timeout\), as the model sets none: .*; cancelled after 1 item$/,
    JSON.stringify(s.responses),
  );
  // As an error before the first item tells it (before: its message only,
  // so a client could not tell a timeout from the model's error).
  assert.deepEqual(params(timedOut), {
    triton_final_response: true,
    grpc_status: "DEADLINE_EXCEEDED",
    error_type: "TimeoutError",
    request_id: "rid-halfway",
    // It was running (a retry runs it again).
    waited: "worker",
  });
  const failed = of("h").at(-1);
  assert.equal(failed?.error_message, "ValueError: halfway");
  assert.deepEqual(params(failed), {
    triton_final_response: true,
    grpc_status: "INVALID_ARGUMENT",
    error_type: "PythonError",
    exception: "ValueError",
    request_id: "rid-halfway",
  });
});

/** An error response's parameters, each as its value. */
function params(r: Record<string, unknown> | undefined) {
  const p = (r?.infer_response as {
    parameters: Record<string, { string_param?: string; bool_param?: boolean }>;
  }).parameters;
  return Object.fromEntries(
    Object.entries(p).map(([k, v]) => [k, v.string_param || v.bool_param]),
  );
}

/** A raw HTTP/2 connection to the gRPC port; `close()` it in a `finally`. */
function h2(gw: Gateway) {
  const session = http2.connect(`http://${gw.grpcTarget}`);
  session.on("error", () => {});
  return {
    session,
    /** A ModelStreamInfer stream that reads nothing unless told. */
    stream(): http2.ClientHttp2Stream {
      const req = session.request({
        ":method": "POST",
        ":path": STREAM_PATH,
        "content-type": "application/grpc",
        te: "trailers",
        authorization: `Bearer ${TOKEN}`,
      });
      req.on("error", () => {});
      return req;
    },
    close() {
      session.destroy();
    },
  };
}

Deno.test("gRPC ModelStreamInfer: 10^4 requests on a stream the client never reads: the server stops reading (HTTP/2 flow control), runs a bounded number, and goes on after a cancel", async () => {
  await using gw = await gateway();
  const log = `${gw.dir}/padded.log`;
  const conn = h2(gw);
  try {
    const req = conn.stream();
    req.pause();
    const message = frame(encode({
      model_name: "padded",
      inputs: [bytesInput("log", log)],
    }));
    const n = 10_000;
    for (let i = 0; i < n; i++) req.write(message);
    const count = async () =>
      (await Deno.readTextFile(log).catch(() => "")).split("\n").length - 1;
    await until("the first infers", async () => await count() > 0);
    let last = -1;
    await until("the infers to stop", async () => {
      const now = await count();
      if (now === last) return true;
      last = now;
      await new Promise((r) => setTimeout(r, 200));
      return false;
    });
    // The 16 in flight, and the answers of 4 KiB that the connection holds
    // (the client's HTTP/2 window and the server's write buffer: ~800 KiB,
    // 199 answers, seen in Deno 2.9); then nothing more is read. Without
    // the backpressure all 10^4 ran, their answers queued in the gateway.
    assert.ok(last < 400, `${last} of ${n} ran unread`);
    req.close(http2.constants.NGHTTP2_CANCEL);
    await until("the worker to be free", async () => await busy(gw) === 0);
    // The gateway goes on.
    const after = await gw.fetch("/v2/models/padded/ready");
    assert.equal(after.status, 200);
    await after.body?.cancel();
  } finally {
    conn.close();
  }
});

/** A step of "gRPC ModelStreamInfer on one gateway without a stream idle timeout (each step its own calls)": gRPC ModelStreamInfer of a never-ending yielding model: a client's disconnect ends it and frees the worker, read or unread */
async function grpcModelStreamInferNeverEndingYielding(
  gw: Gateway,
): Promise<void> {
  for (const reads of [true, false]) {
    const conn = h2(gw);
    try {
      const req = conn.stream();
      let bytes = 0;
      if (reads) req.on("data", (chunk: Uint8Array) => bytes += chunk.length);
      else req.pause();
      req.write(frame(encode(tickerRequest)));
      await until("the stream to run", async () => await busy(gw) === 1);
      if (reads) await until("items", () => Promise.resolve(bytes > 1000));
      // The connection closed, the stream not cancelled first.
      conn.session.destroy();
      await until(
        `the worker to be free (${reads ? "read" : "unread"})`,
        async () => await busy(gw) === 0,
      );
    } finally {
      conn.close();
    }
  }
}

Deno.test("gRPC ModelStreamInfer of a never-ending yielding model: the shutdown ends it within its grace", async () => {
  const gw = await gateway({
    limits: { shutdownGrace: 1000, streamIdleTimeout: 600_000 },
  });
  try {
    const s = streamCall(gw.client);
    s.send(tickerRequest);
    await s.responded(3);
    const began = performance.now();
    await gw.shutdown();
    const took = performance.now() - began;
    const status = await s.ended;
    // Past the grace the pool's close ends the model's stream: its last
    // response is the model's error, then the stream ends with UNAVAILABLE
    // (both written before the connection goes: its destroy at once used
    // to drop them, 1 run in 10 under load, grpc-js then saying "Received
    // RST_STREAM with code 0").
    assert.equal(status.code, grpc.status.UNAVAILABLE, status.details);
    assert.match(status.details, /shutting down/);
    assert.match(
      String(s.responses.at(-1)?.error_message),
      /pool closed/,
      JSON.stringify(s.responses.at(-1)),
    );
    assert.ok(took < 3000, `the shutdown took ${Math.round(took)} ms`);
  } finally {
    gw.client.close();
    await gw.shutdown();
    await Deno.remove(gw.dir, { recursive: true });
  }
});

Deno.test("gRPC ModelStreamInfer: grpc.streamWindow sets the infers a stream runs at once", async () => {
  await using gw = await gateway({
    grpc: { port: 0, streamWindow: 2 },
    workers: 3,
    limits: { streamIdleTimeout: 600_000 },
  });
  const gate = `${gw.dir}/gate`;
  const s = streamCall(gw.client);
  for (const id of ["a", "b", "c"]) s.send(gateRequest(gate, id));
  // Two started (each its first item), the third unread while they wait
  // at the gate, though a worker is free for it.
  await s.responded(2);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(s.responses.length, 2);
  assert.equal((await counted(gw, "gate")).inFlight, 2);
  await Deno.writeTextFile(gate, "open");
  s.call.end();
  assert.equal((await s.ended).code, grpc.status.OK);
  assert.equal(s.responses.length, 9);
});

Deno.test("gRPC ModelStreamInfer: limits.streamFirstItemTimeout and the request's firstItemTimeout parameter bound a yielding model's first item: an error response DEADLINE_EXCEEDED with its bound, the call cancelled, the stream going on", async () => {
  await using gw = await gateway({
    // requestTimeout: without the bound, a late call ends at it (not 30 s).
    limits: {
      streamFirstItemTimeout: 700,
      requestTimeout: 5000,
      streamIdleTimeout: 600_000,
    },
  });
  const late = (
    id: string,
    gate: string,
    parameters: Record<string, unknown> = {},
  ) => ({
    model_name: "late",
    id,
    inputs: [bytesInput("gate", `${gw.dir}/${gate}`)],
    parameters: {
      triton_enable_empty_final_response: { bool_param: true },
      ...parameters,
    },
  });
  await Deno.writeTextFile(`${gw.dir}/open`, "open");
  const s = streamCall(gw.client, { "x-request-id": "rid-first" });
  s.send(late("limit", "never-limit"));
  s.send(
    late("asked", "never-asked", { firstItemTimeout: { int64_param: 150 } }),
  );
  // The request may only lower the gateway's bound.
  s.send(
    late("above", "never-above", { firstItemTimeout: { int64_param: 60000 } }),
  );
  s.send(
    late("bad", "never-bad", { firstItemTimeout: { string_param: "soon" } }),
  );
  // Within its bound: its item, and the model never sees the parameter.
  s.send(late("opened", "open", { firstItemTimeout: { int64_param: 60000 } }));
  const of = (id: string) =>
    s.responses.filter((r) =>
      (r.infer_response as { id?: string } | null)?.id === id
    );
  const final = (r: Record<string, unknown> | undefined) =>
    (r?.infer_response as {
      parameters?: Record<string, { bool_param?: boolean }>;
    } | undefined)?.parameters?.triton_final_response?.bool_param === true;
  await until(
    "each request's final response",
    () =>
      Promise.resolve(
        ["limit", "asked", "above", "bad", "opened"].every((id) =>
          of(id).some(final)
        ),
      ),
  );
  s.call.end();
  assert.equal((await s.ended).code, grpc.status.OK);
  for (
    const [id, wording] of [
      ["limit", /within 700 ms, the gateway's limits\.streamFirstItemTimeout/],
      ["asked", /within 150 ms, the request's firstItemTimeout parameter/],
      ["above", /within 700 ms, the gateway's limits\.streamFirstItemTimeout/],
    ] as const
  ) {
    const [only, ...more] = of(id);
    assert.equal(more.length, 0, JSON.stringify(s.responses));
    assert.match(
      String(only?.error_message),
      new RegExp(
        `^Cannot stream model 'late': no first item ${wording.source}`,
      ),
      JSON.stringify(only),
    );
    const { waited, ...rest } = params(only);
    assert.deepEqual(rest, {
      triton_final_response: true,
      grpc_status: "DEADLINE_EXCEEDED",
      error_type: "TimeoutError",
      bound: "firstItemTimeout",
      request_id: "rid-first",
    });
    assert.ok(waited === "queue" || waited === "worker", String(waited));
  }
  const [bad] = of("bad");
  assert.equal(
    bad?.error_message,
    "Cannot stream: firstItemTimeout must be an integer >= 1 (ms)",
  );
  assert.deepEqual(params(bad), {
    triton_final_response: true,
    grpc_status: "INVALID_ARGUMENT",
    error_type: "InvalidRequestError",
    request_id: "rid-first",
  });
  const opened = of("opened");
  assert.equal(opened.length, 2, JSON.stringify(opened));
  assert.equal(opened[0]?.error_message, "");
  // Each late call was cancelled in Python (the one that started: a call
  // still queued never ran).
  for (const id of ["limit", "asked", "above"]) {
    const { waited } = params(of(id)[0]);
    if (waited === "worker") {
      await until(
        `Python to be interrupted (${id})`,
        () => exists(`${gw.dir}/never-${id}.cancelled`),
      );
    }
  }
  assert.equal((await counted(gw, "late")).byStatus["504"], 3);
});

Deno.test("firstItemTimeout on a call that is no stream (a unary gRPC ModelInfer, /v2 infer, /v1 execute) is refused with INVALID_ARGUMENT or 400, the model not called; a ModelStreamInfer of a returning model takes it", async () => {
  await using gw = await gateway();
  const log = `${gw.dir}/padded.log`;
  const padded = (parameters: Record<string, unknown>) => ({
    model_name: "padded",
    id: "p",
    inputs: [bytesInput("log", log)],
    parameters,
  });
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${TOKEN}`);
  const unary = (parameters: Record<string, unknown>) =>
    new Promise<grpc.ServiceError | null>((resolve) => {
      gw.client.makeUnaryRequest<Uint8Array, Uint8Array>(
        "/inference.GRPCInferenceService/ModelInfer",
        (x) => Buffer.from(x),
        (b) => b,
        encode(padded(parameters)),
        metadata,
        (error: grpc.ServiceError | null) => resolve(error),
      );
    });
  // Before: OK, the parameter dropped (a client believed its call bounded).
  const refused = await unary({ firstItemTimeout: { int64_param: 100 } });
  assert.equal(refused?.code, grpc.status.INVALID_ARGUMENT, refused?.details);
  assert.match(
    String(refused?.details),
    /^Cannot infer: the firstItemTimeout parameter bounds the first item of a stream \(ModelStreamInfer\) only/,
  );
  assert.equal(await unary({}), null);
  const headers = { authorization: `Bearer ${TOKEN}` };
  const v2 = await gw.fetch("/v2/models/padded/infer?firstItemTimeout=100", {
    method: "POST",
    headers,
    body: JSON.stringify({
      inputs: [{ name: "log", datatype: "BYTES", shape: [1], data: [log] }],
    }),
  });
  assert.equal(v2.status, 400);
  // The protocol's error body: {"error": "<message>"}.
  assert.match(
    (await v2.json()).error,
    /^Cannot infer: \?firstItemTimeout= bounds the first item of a stream \(POST \/v1\/models\/\{name\}\/stream\) only/,
  );
  for (
    const path of [
      "/v1/models/padded/execute?firstItemTimeout=100",
      "/v1/models/padded/versions/1/execute?firstItemTimeout",
    ]
  ) {
    const v1 = await gw.fetch(path, {
      method: "POST",
      headers,
      body: JSON.stringify({ log: [log] }),
    });
    assert.equal(v1.status, 400, path);
    assert.match(
      (await v1.json()).error.message,
      /^Cannot execute: \?firstItemTimeout= bounds the first item of a stream \(POST \/v1\/models\/\{name\}\/stream\) only/,
    );
  }
  // A stream's request of a model that returns: its one answer.
  const s = streamCall(gw.client);
  s.send(padded({ firstItemTimeout: { int64_param: 60000 } }));
  s.call.end();
  assert.equal((await s.ended).code, grpc.status.OK);
  assert.equal(s.responses.length, 1);
  assert.equal(s.responses[0]?.error_message, "", JSON.stringify(s.responses));
  // Called twice: the unary call without it, and the stream's.
  assert.equal(await Deno.readTextFile(log), "x\nx\n");
});
