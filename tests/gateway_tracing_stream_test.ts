// The spans of streams that do not end (docs/gateway.md, "Tracing"): ended at
// `maxStreamSpanMs` while the stream goes on, and at a graceful shutdown. A
// real gateway with real Python workers, and a fake collector.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { startGateway, until } from "./_gateway_harness.ts";
import { attr, Collector, type Span } from "./_otlp_collector.ts";
import { rawGrpcGateway, tritonProto } from "./_grpc_raw_gateway.ts";
import { grpc } from "./_grpc_client.ts";

const ENDLESS = `import time


class Endless:
    """Yields for ever, 20 items a second."""

    def execute(self, msg):
        n = 0
        while True:
            yield {"n": n}
            n += 1
            time.sleep(0.05)
`;

const BREAKS = `class Breaks:
    \"\"\"Yields one item, then fails.\"\"\"

    def execute(self, msg):
        yield {"n": [0.5]}
        raise ValueError("broke part-way")
`;

/** Opens the stream of request id `id` and reads its first bytes. */
async function openStream(
  gw: { fetch(path: string, init?: RequestInit): Promise<Response> },
  id: string,
): Promise<ReadableStreamDefaultReader<Uint8Array>> {
  const res = await gw.fetch("/v1/models/endless/stream", {
    method: "POST",
    headers: { "content-type": "application/json", "x-request-id": id },
    body: "{}",
  });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  const first = await reader.read();
  assert.match(new TextDecoder().decode(first.value), /"n":0/);
  return reader;
}

Deno.test("Tracing ends a stream's span at maxStreamSpanMs and sends it while the stream goes on", async () => {
  await using collector = new Collector();
  await using gw = await startGateway({
    tracing: {
      endpoint: collector.url,
      batchIntervalMs: 20,
      maxStreamSpanMs: 300,
    },
    models: [{ name: "endless", file: "endless.py" }],
  }, { "endless.py": ENDLESS });
  const reader = await openStream(gw, "s-long");
  try {
    const span = await collector.spanOf("s-long");
    assert.equal(attr(span, "pyproxy.stream.span_end"), "max_duration");
    assert.equal(attr(span, "pyproxy.worker"), "w1");
    assert.equal(span.status.code, 0);
    const ms =
      Number(BigInt(span.endTimeUnixNano) - BigInt(span.startTimeUnixNano)) /
      1e6;
    assert.ok(ms >= 300 && ms < 5000, String(ms));
    // The stream goes on, and its end sends no second span.
    const text = new TextDecoder();
    let seen = "";
    while (!/"n":(1\d|[2-9]\d)/.test(seen)) {
      const { value, done } = await reader.read();
      assert.ok(!done);
      seen += text.decode(value);
    }
  } finally {
    await reader.cancel();
  }
  const idle = await gw.fetch("/v1/models/endless/stream", {
    method: "POST",
    headers: { "content-type": "application/json", "x-request-id": "s-next" },
    body: "{}",
  });
  await idle.body!.cancel();
  await collector.spanOf("s-next");
  assert.equal(
    collector.spans.filter((s) => attr(s, "pyproxy.request_id") === "s-long")
      .length,
    1,
  );
});

Deno.test("Tracing ends the spans of the streams still open at a graceful shutdown, and sends them", async () => {
  await using collector = new Collector();
  const gw = await startGateway({
    // Nothing is sent before the shutdown: only its flush sends.
    tracing: { endpoint: collector.url, batchIntervalMs: 60_000 },
    models: [{ name: "endless", file: "endless.py" }],
    limits: { shutdownGrace: 300 },
  }, { "endless.py": ENDLESS });
  // A reader that stopped reading: its stream stays open to the end.
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  try {
    reader = await openStream(gw, "s-open");
  } finally {
    await gw[Symbol.asyncDispose]();
    await reader?.cancel().catch(() => {});
  }
  // Sent by the shutdown itself.
  assert.equal(collector.spans.length, 1);
  const span = collector.spans[0]!;
  assert.equal(attr(span, "pyproxy.request_id"), "s-open");
  assert.equal(attr(span, "pyproxy.stream.span_end"), "shutdown");
  assert.equal(attr(span, "pyproxy.worker"), "w1");
});

/** The one span of model `model`, once the collector has it. */
function spanOfModel(collector: Collector, model: string): Promise<Span> {
  return until(
    () =>
      Promise.resolve(
        collector.spans.find((s) => attr(s, "pyproxy.model") === model),
      ),
    `the span of a call of ${model}`,
  );
}

Deno.test("Tracing ends the span of an event stream that fails after its first item with status ERROR and the error", async () => {
  await using collector = new Collector();
  await using gw = await startGateway({
    tracing: { endpoint: collector.url, batchIntervalMs: 20 },
    models: [{ name: "breaks", file: "breaks.py" }],
  }, { "breaks.py": BREAKS });
  const res = await gw.fetch("/v1/models/breaks/stream", {
    method: "POST",
    headers: { "content-type": "application/json", "x-request-id": "s-fail" },
    body: "{}",
  });
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.match(text, /event: item[\s\S]*event: error[\s\S]*broke part-way/);
  const span = await collector.spanOf("s-fail");
  assert.equal(span.status.code, 2);
  assert.match(span.status.message ?? "", /broke part-way/);
  assert.equal(attr(span, "error.type"), "422");
  // The HTTP status is the stream's own.
  assert.equal(attr(span, "http.response.status_code"), "200");
  assert.equal(attr(span, "pyproxy.stream.span_end"), undefined);
});

Deno.test("Tracing ends the span of a gRPC ModelStreamInfer of a yielding model at its last item, with status ERROR when it failed part-way", async () => {
  await using collector = new Collector();
  const token = "tracing-grpc-stream-token-0123456789";
  await using gw = await rawGrpcGateway(token, { "breaks.py": BREAKS }, {
    tracing: { endpoint: collector.url, batchIntervalMs: 20 },
    models: [{ name: "breaks", file: "breaks.py" }],
  });
  const root = tritonProto();
  const request = root.lookupType("inference.ModelInferRequest");
  const response = root.lookupType("triton.ModelStreamInferResponse");
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const call = gw.client.makeBidiStreamRequest<Uint8Array, Uint8Array>(
    "/inference.GRPCInferenceService/ModelStreamInfer",
    (x) => Buffer.from(x),
    (b) => b,
    metadata,
    {},
  );
  const answers: Array<{ error_message: string }> = [];
  const errored = new Promise<void>((resolve) => {
    call.on("data", (bytes: Uint8Array) => {
      const answer = response.toObject(response.decode(bytes), {
        defaults: true,
      }) as { error_message: string };
      answers.push(answer);
      if (answer.error_message !== "") resolve();
    });
  });
  const ended = new Promise((resolve) => {
    call.on("status", resolve);
    call.on("error", () => {});
  });
  call.write(
    request.encode(request.create({
      model_name: "breaks",
      id: "g1",
      inputs: [{
        name: "x",
        datatype: "FP64",
        shape: [1],
        contents: { fp64_contents: [1.5] },
      }],
    })).finish(),
  );
  await errored;
  call.end();
  await ended;
  assert.match(answers.at(-1)!.error_message, /broke part-way/);
  const span = await spanOfModel(collector, "breaks");
  assert.equal(span.name, "POST /v2/models/{name}/infer");
  assert.equal(span.status.code, 2);
  assert.match(span.status.message ?? "", /broke part-way/);
  assert.equal(attr(span, "error.type"), "422");
});
