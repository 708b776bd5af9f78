// OpenTelemetry tracing of model calls (docs/gateway.md, "Tracing"): a real
// gateway with real Python workers, and a real HTTP receiver standing in for
// the collector, whose OTLP/JSON requests are parsed here.
import assert from "node:assert/strict";
import { startGateway, statusOf, until } from "./_gateway_harness.ts";
import { attr, Collector, type Span } from "./_otlp_collector.ts";
import { createGateway } from "../src/gateway/app.ts";
import { Pool } from "../src/pool.ts";
import { ConfigError } from "../src/errors.ts";

const TRACED = `from pyproxy import host


class Traced:
    """Returns the call's trace context; msg["fail"]: raises."""

    def execute(self, msg):
        if isinstance(msg, dict) and msg.get("fail"):
            raise ValueError("traced failure")
        return {"trace": host.trace_context()}
`;
const TSTREAM = `from pyproxy import host


class TStream:
    def execute(self, msg):
        yield {"trace": host.trace_context()}
        yield {"n": 2}
`;
const TBATCH = `import os
import time

from pyproxy import host


class TBatch:
    """A batching model: each result holds its batch's trace contexts."""

    batch_size = 4
    batch_delay_ms = 1000

    def execute_batch(self, msgs):
        for m in msgs:
            # Holds its batch until the test creates the file (10 s at most).
            for _ in range(1000) if m.get("hold") else ():
                if os.path.exists(m["hold"]):
                    break
                time.sleep(0.01)
        contexts = host.trace_contexts()
        return [{"trace": host.trace_context(), "traces": contexts} for _ in msgs]
`;
const MODELS = {
  "traced.py": TRACED,
  "tstream.py": TSTREAM,
  "tbatch.py": TBATCH,
};

const PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN = "00f067aa0ba902b7";

async function execute(
  gw: { fetch(path: string, init?: RequestInit): Promise<Response> },
  id: string,
  headers: Record<string, string> = {},
  body: unknown = {},
  path = "/v1/models/traced/execute",
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await gw.fetch(path, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-request-id": id,
      ...headers,
    },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

Deno.test("Tracing makes a span per model call, its parent the client's traceparent, and the model sees it", async () => {
  await using collector = new Collector();
  await using gw = await startGateway({
    tracing: {
      endpoint: collector.url,
      batchIntervalMs: 20,
      serviceName: "scoring",
    },
    models: [
      { name: "traced", file: "traced.py" },
      { name: "tstream", file: "tstream.py" },
      { name: "echo", file: "echo.py" },
      { name: "vtraced", file: "traced.py", version: "1" },
      { name: "vtraced", file: "traced.py", version: "2" },
    ],
  }, MODELS);
  // A sampled parent with a tracestate.
  const withParent = await execute(gw, "r-parent", {
    traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`,
    tracestate: "rojo=1, congo=2",
  });
  assert.equal(withParent.status, 200);
  const span = await collector.spanOf("r-parent");
  assert.equal(span.traceId, PARENT_TRACE);
  assert.equal(span.parentSpanId, PARENT_SPAN);
  assert.equal(span.traceState, "rojo=1,congo=2");
  assert.equal(span.name, "POST /v1/models/{name}/execute");
  assert.equal(span.kind, 2);
  assert.equal(span.status.code, 0);
  assert.ok(BigInt(span.endTimeUnixNano) >= BigInt(span.startTimeUnixNano));
  assert.equal(attr(span, "http.request.method"), "POST");
  assert.equal(attr(span, "http.route"), "/v1/models/{name}/execute");
  assert.equal(attr(span, "http.response.status_code"), "200");
  assert.equal(attr(span, "pyproxy.model"), "traced");
  assert.equal(attr(span, "pyproxy.worker"), "w1");
  // HTTP server semantic conventions' required url.scheme and url.path (the
  // path as sent, without its query).
  assert.equal(attr(span, "url.scheme"), "http");
  assert.equal(attr(span, "url.path"), "/v1/models/traced/execute");
  // The model's context: the gateway's span as the parent of its own.
  assert.deepEqual(withParent.body.trace, {
    traceparent: `00-${PARENT_TRACE}-${span.spanId}-01`,
    tracestate: "rojo=1,congo=2",
  });
  const resource = (collector.requests[0]!.body as {
    resourceSpans: Array<{ resource: { attributes: Span["attributes"] } }>;
  }).resourceSpans[0]!.resource;
  assert.deepEqual(
    resource.attributes.find((a) => a.key === "service.name")?.value,
    { stringValue: "scoring" },
  );

  // No traceparent, or a malformed one: a new trace, not an error.
  for (
    const [id, headers] of [
      ["r-new", {}],
      ["r-bad", { traceparent: "00-xyz-01", tracestate: "rojo=1" }],
      ["r-upper", {
        traceparent: `00-${PARENT_TRACE.toUpperCase()}-${PARENT_SPAN}-01`,
      }],
    ] as const
  ) {
    const res = await execute(gw, id, headers);
    assert.equal(res.status, 200, id);
    const fresh = await collector.spanOf(id);
    assert.equal(fresh.parentSpanId, undefined, id);
    assert.equal(fresh.traceState, undefined, id);
    assert.match(fresh.traceId, /^[0-9a-f]{32}$/);
    assert.notEqual(fresh.traceId, PARENT_TRACE);
    assert.deepEqual(res.body.trace, {
      traceparent: `00-${fresh.traceId}-${fresh.spanId}-01`,
    });
  }

  // An unsampled parent is followed: no span, but the model still gets the
  // trace, unsampled, as an OpenTelemetry SDK's non-recording span passes
  // it on (the parent's trace id, a span id of its own, flags 00), so that
  // its own calls stay in the trace and are not sampled either.
  const unsampled = await execute(gw, "r-unsampled", {
    traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-00`,
    tracestate: "rojo=1",
  });
  assert.equal(unsampled.status, 200);
  const context = unsampled.body.trace as Record<string, string>;
  assert.match(
    context.traceparent!,
    new RegExp(`^00-${PARENT_TRACE}-[0-9a-f]{16}-00$`),
  );
  assert.notEqual(context.traceparent!.slice(36, 52), PARENT_SPAN);
  assert.equal(context.tracestate, "rojo=1");

  // A model's exception: an error span with its message.
  const failed = await execute(gw, "r-fail", {}, { fail: true });
  assert.equal(failed.status, 422);
  const error = await collector.spanOf("r-fail");
  assert.equal(error.status.code, 2);
  assert.match(error.status.message ?? "", /traced failure/);
  assert.equal(attr(error, "http.response.status_code"), "422");
  assert.equal(attr(error, "error.type"), "422");

  // A stream: its route, and the span ends with the stream.
  const res = await gw.fetch("/v1/models/tstream/stream", {
    method: "POST",
    headers: { "content-type": "application/json", "x-request-id": "r-stream" },
    body: "{}",
  });
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.match(text, /"traceparent":"00-[0-9a-f]{32}-[0-9a-f]{16}-01"/);
  const stream = await collector.spanOf("r-stream");
  assert.equal(stream.name, "POST /v1/models/{name}/stream");
  assert.equal(attr(stream, "pyproxy.model"), "tstream");
  assert.equal(attr(stream, "pyproxy.worker"), "w1");
  assert.equal(attr(stream, "pyproxy.stream.span_end"), undefined);

  // The other protocols' routes: one span each, named by the template.
  const predict = await execute(
    gw,
    "r-predict",
    {},
    { instances: [1] },
    "/v1/models/echo:predict",
  );
  assert.equal(predict.status, 200);
  const predictSpan = await collector.spanOf("r-predict");
  assert.equal(predictSpan.name, "POST /v1/models/{name}:predict");
  // The route passed the span's context with the call (its worker is known).
  assert.equal(attr(predictSpan, "pyproxy.worker"), "w1");
  const infer = await execute(gw, "r-infer", {}, {
    inputs: [{ name: "x", shape: [1], datatype: "FP32", data: [1] }],
  }, "/v2/models/echo/infer");
  assert.equal(infer.status, 200, JSON.stringify(infer.body));
  const inferSpan = await collector.spanOf("r-infer");
  assert.equal(inferSpan.name, "POST /v2/models/{name}/infer");
  assert.equal(attr(inferSpan, "pyproxy.worker"), "w1");

  // A model with versions: the version that ran, the default one too.
  assert.equal(
    (await execute(gw, "r-v1", {}, {}, "/v1/models/vtraced/execute")).status,
    200,
  );
  assert.equal(
    attr(await collector.spanOf("r-v1"), "pyproxy.model.version"),
    "1",
  );
  const v2 = await execute(
    gw,
    "r-v2",
    {},
    {},
    "/v1/models/vtraced/versions/2/execute",
  );
  assert.equal(v2.status, 200);
  const v2Span = await collector.spanOf("r-v2");
  assert.equal(
    v2Span.name,
    "POST /v1/models/{name}/versions/{version}/execute",
  );
  assert.equal(attr(v2Span, "pyproxy.model"), "vtraced");
  assert.equal(attr(v2Span, "pyproxy.model.version"), "2");

  // Routes that are not model calls make no span.
  assert.equal(await statusOf(gw.fetch("/v1/models")), 200);
  const metrics = await (await gw.fetch("/metrics")).text();
  assert.match(metrics, /^pyproxy_trace_spans_dropped_total 0$/m);
  const names = new Set(collector.spans.map((s) => s.name));
  assert.deepEqual([...names].sort(), [
    "POST /v1/models/{name}/execute",
    "POST /v1/models/{name}/stream",
    "POST /v1/models/{name}/versions/{version}/execute",
    "POST /v1/models/{name}:predict",
    "POST /v2/models/{name}/infer",
  ]);
  assert.equal(collector.spans.length, 10);
});

Deno.test("Tracing with sampleRatio 0 follows a sampled parent only, and a shutdown sends the spans that wait", async () => {
  // Slow: the shutdown must wait for its POST, not only start it.
  await using collector = new Collector(500);
  const gw = await startGateway({
    // Nothing would be sent for a minute: only the shutdown's flush sends.
    tracing: {
      endpoint: collector.url,
      sampleRatio: 0,
      batchIntervalMs: 60_000,
    },
  }, MODELS);
  try {
    // Not sampled: the model gets a new trace, unsampled (its own spans
    // follow the gateway's decision rather than start traces of their own).
    const none = await execute(gw, "r-none");
    assert.match(
      (none.body.trace as { traceparent: string }).traceparent,
      /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/,
    );
    const sampled = await execute(gw, "r-sampled", {
      traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`,
    });
    assert.equal(
      (sampled.body.trace as { traceparent: string }).traceparent.slice(0, 36),
      `00-${PARENT_TRACE}-`,
    );
    assert.equal(collector.spans.length, 0);
  } finally {
    await gw[Symbol.asyncDispose]();
  }
  assert.deepEqual(
    collector.spans.map((s) => attr(s, "pyproxy.request_id")),
    ["r-sampled"],
  );
});

Deno.test("Tracing with propagation none reads no client traceparent: a client's sampled flag does not trace its call, nor joins its trace", async () => {
  await using collector = new Collector();
  const gw = await startGateway({
    tracing: {
      endpoint: collector.url,
      sampleRatio: 0,
      propagation: "none",
      batchIntervalMs: 60_000,
    },
  }, MODELS);
  try {
    // A public client asking for its call to be traced: with sampleRatio
    // 0 nothing is traced, and its trace id is not taken.
    const asked = await execute(gw, "r-asked", {
      traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`,
      tracestate: "rojo=1",
    });
    const context = asked.body.trace as { traceparent: string };
    assert.match(context.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    assert.notEqual(context.traceparent.slice(3, 35), PARENT_TRACE);
  } finally {
    await gw[Symbol.asyncDispose]();
  }
  assert.deepEqual(collector.spans, []);
  // Sampled by the ratio alone: a new trace, no parent, no tracestate.
  // (Sent within 20 ms: the default batch interval, 5 s, was most of the
  // test's time.)
  await using collector2 = new Collector();
  const gw2 = await startGateway({
    tracing: {
      endpoint: collector2.url,
      propagation: "none",
      batchIntervalMs: 20,
    },
  }, MODELS);
  try {
    await execute(gw2, "r-root", {
      traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`,
      tracestate: "rojo=1",
    });
    const span = await collector2.spanOf("r-root");
    assert.notEqual(span.traceId, PARENT_TRACE);
    assert.equal(span.parentSpanId ?? "", "");
    assert.equal(span.traceState ?? "", "");
  } finally {
    await gw2[Symbol.asyncDispose]();
  }
});

Deno.test("Tracing to a collector that is down: calls are served, the spans dropped and counted", async () => {
  // A port nothing listens on (taken, then released).
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await using gw = await startGateway({
    tracing: {
      endpoint: `http://127.0.0.1:${port}/v1/traces`,
      batchIntervalMs: 20,
      maxQueue: 2,
    },
  }, MODELS);
  for (let i = 0; i < 5; i++) {
    assert.equal((await execute(gw, `r-${i}`)).status, 200);
  }
  await until(async () => {
    const text = await (await gw.fetch("/metrics")).text();
    return /^pyproxy_trace_spans_dropped_total 5$/m.test(text);
  }, "5 spans dropped");
});

Deno.test("Tracing off: nothing is sent and no traceparent is read", async () => {
  await using collector = new Collector();
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: new URL("../examples/models/", import.meta.url).pathname,
    handleSignals: false,
  });
  await pool.addModel("echo", { file: "echo.py" });
  const stop = new AbortController();
  const read: string[] = [];
  const request = () => {
    const req = new Request("http://127.0.0.1:8000/v1/models/echo/execute", {
      method: "POST",
      headers: {
        host: "127.0.0.1:8000",
        "content-type": "application/json",
        traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`,
      },
      body: '{"x": 1}',
    });
    const get = req.headers.get.bind(req.headers);
    req.headers.get = (name: string) => {
      read.push(name.toLowerCase());
      return get(name);
    };
    return req;
  };
  try {
    const off = createGateway(pool, { stopSignal: stop.signal });
    assert.equal(await statusOf(off.fetch(request())), 200);
    assert.ok(read.length > 0);
    assert.ok(!read.includes("traceparent"), read.join(", "));
    assert.equal(collector.requests.length, 0);
    // The same call with tracing on reads it (the check above can fail).
    const on = createGateway(pool, {
      stopSignal: stop.signal,
      tracing: { endpoint: collector.url, batchIntervalMs: 20 },
    });
    assert.equal(await statusOf(on.fetch(request())), 200);
    assert.ok(read.includes("traceparent"));
    await until(() => Promise.resolve(collector.spans.length === 1), "a span");
  } finally {
    stop.abort();
  }
});

Deno.test("pool.execute sends a caller's traceparent to the model, and refuses a malformed one", async () => {
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: new URL("../python/tests/models/", import.meta.url).pathname,
    handleSignals: false,
  });
  await pool.addModel("traced", { file: "traced.py", class: "Model" });
  const traceparent = `00-${PARENT_TRACE}-${PARENT_SPAN}-01`;
  assert.deepEqual(
    await pool.execute("traced", {}, { traceparent, tracestate: "rojo=1" }),
    { trace: { traceparent, tracestate: "rojo=1" } },
  );
  assert.deepEqual(await pool.execute("traced", {}), { trace: null });
  const items = [];
  for await (const item of pool.executeStream("traced", {}, { traceparent })) {
    items.push(item);
  }
  assert.deepEqual(items, [{ trace: { traceparent } }]);
  for (
    const bad of [{ traceparent: "00-xyz" }, {
      traceparent,
      tracestate: "no equals",
    }]
  ) {
    await assert.rejects(pool.execute("traced", {}, bad), ConfigError);
  }
});

Deno.test("Tracing keeps a queued span small: a long model name and a model's long error message are cut", async () => {
  await using collector = new Collector();
  await using gw = await startGateway({
    tracing: { endpoint: collector.url, batchIntervalMs: 20 },
  }, MODELS);
  // The harness's boom raises with its input in the message: 100 KB of it,
  // which 2048 queued spans would hold 200 MB of.
  const boom = await execute(
    gw,
    "r-long-error",
    {},
    { x: "y".repeat(100_000) },
    "/v1/models/boom/execute",
  );
  assert.ok(boom.status >= 400, String(boom.status));
  const failed = await collector.spanOf("r-long-error");
  assert.equal(failed.status.code, 2);
  assert.ok(failed.status.message!.length <= 1024, "the message is cut");
  assert.match(failed.status.message!, /bad input: 'yyyy/);
  // A name from the URL, as long as the client likes.
  const name = "n".repeat(5000);
  const missing = await execute(
    gw,
    "r-long-name",
    {},
    {},
    `/v1/models/${name}/execute`,
  );
  assert.equal(missing.status, 404);
  const span = await collector.spanOf("r-long-name");
  const model = attr(span, "pyproxy.model") as string;
  assert.equal(model.length, 256);
  assert.ok(model.startsWith("nnnn"));
  const path = attr(span, "url.path") as string;
  assert.equal(path.length, 1024);
  assert.ok(path.startsWith("/v1/models/nnnn"));
});

Deno.test("Tracing makes no span of a call without the token: a client that may not call models neither fills the queue nor adds to a trace", async () => {
  await using collector = new Collector();
  await using gw = await startGateway({
    token: "inference-token-0123456789",
    tracing: { endpoint: collector.url, batchIntervalMs: 20, sampleRatio: 1 },
  }, MODELS);
  const parent = { traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01` };
  const refused: Array<[Record<string, string>, number]> = [
    [{}, 401],
    [{ authorization: "Bearer wrong-token-0123456789" }, 401],
    // The Origin check answers before the token's.
    [{ origin: "https://evil.example", "sec-fetch-site": "cross-site" }, 403],
  ];
  for (const [headers, status] of refused) {
    const res = await fetch(`${gw.url}/v1/models/traced/execute`, {
      method: "POST",
      headers: { "x-request-id": "r-refused", ...parent, ...headers },
      body: "{}",
    });
    assert.equal(res.status, status);
    await res.body?.cancel();
  }
  // The token, refused by the Origin check: a span (it may call models).
  const cross = await gw.fetch("/v1/models/traced/execute", {
    method: "POST",
    headers: {
      "x-request-id": "r-cross",
      origin: "https://evil.example",
      "sec-fetch-site": "cross-site",
      ...parent,
    },
    body: "{}",
  });
  assert.equal(cross.status, 403);
  await cross.body?.cancel();
  assert.equal((await execute(gw, "r-ok", parent)).status, 200);
  // Spans go in order, one POST at a time: the refused calls' would be in.
  await collector.spanOf("r-ok");
  assert.deepEqual(
    collector.spans.map((s) => attr(s, "pyproxy.request_id")),
    ["r-cross", "r-ok"],
  );
});

Deno.test("Tracing gives a batching model each call's trace context, in message order, for its span's links", async () => {
  await using collector = new Collector();
  await using gw = await startGateway({
    tracing: { endpoint: collector.url, batchIntervalMs: 20 },
    models: [{ name: "tbatch", file: "tbatch.py" }],
  }, MODELS);
  const path = "/v1/models/tbatch/execute";
  // A batch of one: the call's own context (the gateway's span).
  const one = await execute(
    gw,
    "b-one",
    {
      traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-01`,
    },
    {},
    path,
  );
  assert.equal(one.status, 200, JSON.stringify(one.body));
  const span = await collector.spanOf("b-one");
  assert.equal(span.traceId, PARENT_TRACE);
  assert.equal(attr(span, "pyproxy.worker"), "w1");
  assert.deepEqual(one.body, {
    trace: null,
    traces: [{ traceparent: `00-${PARENT_TRACE}-${span.spanId}-01` }],
  });
  // While a held batch runs, three calls gather into one batch: each entry
  // is one call's span (an unsampled one's context too, flags 00).
  const hold = `${gw.dir}/release`;
  const inFlight = async (n: number) =>
    new RegExp(`^pyproxy_in_flight_requests\\{model="tbatch"\\} ${n}$`, "m")
      .test(await (await gw.fetch("/metrics")).text());
  const held = execute(gw, "b-held", {}, { hold }, path);
  await until(() => inFlight(1), "the held call in flight");
  const gathered = [
    execute(gw, "b-1", {}, {}, path),
    execute(
      gw,
      "b-2",
      {
        traceparent: `00-${PARENT_TRACE}-${PARENT_SPAN}-00`,
      },
      {},
      path,
    ),
    execute(gw, "b-3", {}, {}, path),
  ];
  await until(() => inFlight(4), "the three calls waiting");
  await Deno.writeTextFile(hold, "");
  const calls = await Promise.all([held, ...gathered]);
  for (const call of calls) assert.equal(call.status, 200);
  const batch = calls[1]!.body.traces as Array<{ traceparent: string }>;
  assert.equal(batch.length, 3, JSON.stringify(calls[1]!.body));
  assert.deepEqual(calls[2]!.body.traces, batch);
  assert.deepEqual(calls[3]!.body.traces, batch);
  const spans = [await collector.spanOf("b-1"), await collector.spanOf("b-3")];
  const sampled = batch.filter((c) => c.traceparent.endsWith("-01"));
  assert.deepEqual(
    sampled.map((c) => c.traceparent).sort(),
    spans.map((s) => `00-${s.traceId}-${s.spanId}-01`).sort(),
  );
  const unsampled = batch.filter((c) => c.traceparent.endsWith("-00"));
  assert.equal(unsampled.length, 1);
  assert.ok(unsampled[0]!.traceparent.startsWith(`00-${PARENT_TRACE}-`));
});
