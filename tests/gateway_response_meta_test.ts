// The status and headers a model chose for its success (host.set_status,
// host.set_header) through the gateway: 201 + Location, 204, a batch's
// per-message statuses, a stream's headers, refused and gateway-owned
// headers, and CORS exposing the model's header names. Real workers.
import assert from "node:assert/strict";
import {
  SseReader,
  startGateway,
  type TestGateway,
  withLogs,
} from "./_gateway_harness.ts";

const MODELS: Record<string, string> = {
  "chosen.py": `from pyproxy import HTTPError, host


def _apply(msg, index=None):
    kwargs = {} if index is None else {"index": index}
    if "status" in msg:
        host.set_status(msg["status"], **kwargs)
    for name, value in (msg.get("headers") or {}).items():
        host.set_header(name, value, **kwargs)


class Chosen:
    """Sets what msg says; returns msg["result"], or raises HTTPError(msg["raise"])."""

    def execute(self, msg):
        _apply(msg)
        if "raise" in msg:
            raise HTTPError(msg["raise"], "no", headers={"X-Quota-Left": "0"})
        return msg.get("result")


class ChosenBatch:
    batch_size = 8

    def execute_batch(self, msgs):
        for i, msg in enumerate(msgs):
            _apply(msg, i)
        return [msg.get("result") for msg in msgs]


class ChosenStream:
    def execute(self, msg):
        _apply(msg)
        yield "a"
        yield "b"


class CountedStream:
    """Sets its header once it knows it: after its first item."""

    def execute(self, msg):
        yield "a"
        host.set_header(*msg.get("late", ("X-Count", "2")))
        yield "b"
`,
};

const post = (body: unknown, headers: Record<string, string> = {}) => ({
  method: "POST",
  body: JSON.stringify(body),
  headers: { "content-type": "application/json", ...headers },
});

const MODEL_LIST = [
  { name: "chosen", file: "chosen.py", class: "Chosen" },
  { name: "chosen_batch", file: "chosen.py", class: "ChosenBatch" },
  { name: "chosen_stream", file: "chosen.py", class: "ChosenStream" },
  { name: "counted", file: "chosen.py", class: "CountedStream" },
];

Deno.test("gateway answers a model's 201 with its Location; owned headers stay the gateway's, refused ones are logged", async () => {
  await withLogs(async (records) => {
    await using gw = await startGateway({ models: MODEL_LIST }, MODELS);
    const res = await gw.fetch(
      "/v1/models/chosen/execute",
      post({
        status: 201,
        headers: {
          Location: "/items/7",
          "X-Model-Version": "3",
          "Content-Type": "text/html",
          "x-REQUEST-id": "forged",
          "Set-Cookie": "a=1",
          "Access-Control-Allow-Origin": "*",
        },
        result: { id: 7 },
      }, { "x-request-id": "client-1" }),
    );
    assert.equal(res.status, 201);
    assert.deepEqual(await res.json(), { id: 7 });
    assert.equal(res.headers.get("location"), "/items/7");
    assert.equal(res.headers.get("x-model-version"), "3");
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.equal(res.headers.get("x-request-id"), "client-1");
    assert.equal(res.headers.get("set-cookie"), null);
    assert.equal(res.headers.get("access-control-allow-origin"), null);
    const warned = records.find((r) =>
      r.level === "warning" && String(r.properties.names).includes("Set-Cookie")
    );
    assert.ok(warned, "no warning for the refused headers");
    for (const name of ["Content-Type", "x-REQUEST-id"]) {
      assert.ok(String(warned.properties.names).includes(name), name);
    }
    assert.equal(warned.properties.status, 201);
    // A plain call is as before.
    const plain = await gw.fetch(
      "/v1/models/chosen/execute",
      post({ result: 1 }),
    );
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get("location"), null);
    assert.equal(await plain.json(), 1);
  });
});

// Steps on one gateway started as `startGateway({ models: MODEL_LIST },
// MODELS)`: each of these tests started its own (a gateway and its Python
// worker) and needs no fresh one.
Deno.test("gateway: a model's status and headers, on /execute, a batch and a stream", async (t) => {
  await using gw = await startGateway({ models: MODEL_LIST }, MODELS);
  await t.step(
    "gateway: 204 has no body; a body with it is the model's error; None with 201 is an empty 201",
    () => n204HasNoBodyBody(gw),
  );
  await t.step(
    "gateway: each message of a batch has its own status and headers",
    () => eachMessageBatchHasIts(gw),
  );
  await t.step(
    "gateway stream: the model's headers go on the event stream, which stays 200 text/event-stream",
    () => streamModelHeadersGoOn(gw),
  );
  await t.step(
    "gateway stream: a model that sets 201 streams too (its status ignored, its headers kept), plain or generator",
    () => streamModelThatSets201(gw),
  );
});

/** A step of "gateway: a model's status and headers, on /execute, a batch and a stream": gateway: 204 has no body; a body with it is the model's error; None with 201 is an empty 201 */
async function n204HasNoBodyBody(gw: TestGateway): Promise<void> {
  const none = await gw.fetch(
    "/v1/models/chosen/execute",
    post({ status: 204, headers: { ETag: '"v2"' } }),
  );
  assert.equal(none.status, 204);
  assert.equal(none.headers.get("etag"), '"v2"');
  assert.equal(await none.text(), "");
  const bad = await gw.fetch(
    "/v1/models/chosen/execute",
    post({ status: 204, result: { a: 1 } }),
  );
  assert.equal(bad.status, 422);
  const error = (await bad.json()).error;
  assert.equal(error.exception, "ValueError");
  assert.match(error.message, /status 204 has no body/);
  const created = await gw.fetch(
    "/v1/models/chosen/execute",
    post({ status: 201 }),
  );
  assert.equal(created.status, 201);
  assert.equal(await created.text(), "");
  // The error wins over a status set before it.
  const raised = await gw.fetch(
    "/v1/models/chosen/execute",
    post({ status: 200, headers: { Location: "/x" }, raise: 409 }),
  );
  assert.equal(raised.status, 409);
  assert.equal(raised.headers.get("location"), null);
  assert.equal(raised.headers.get("x-quota-left"), "0");
  await raised.body?.cancel();
}

/** A step of "gateway: a model's status and headers, on /execute, a batch and a stream": gateway: each message of a batch has its own status and headers */
async function eachMessageBatchHasIts(gw: TestGateway): Promise<void> {
  const responses = await Promise.all([0, 1, 2, 3].map((i) =>
    gw.fetch(
      "/v1/models/chosen_batch/execute",
      post({ status: 200 + i, headers: { "X-I": String(i) }, result: i }),
    )
  ));
  for (const [i, res] of responses.entries()) {
    assert.equal(res.status, 200 + i);
    assert.equal(res.headers.get("x-i"), String(i));
    assert.equal(await res.json(), i);
  }
}

/** A step of "gateway: a model's status and headers, on /execute, a batch and a stream": gateway stream: the model's headers go on the event stream, which stays 200 text/event-stream */
async function streamModelHeadersGoOn(gw: TestGateway): Promise<void> {
  const res = await gw.fetch(
    "/v1/models/chosen_stream/stream",
    post({ headers: { "X-Model-Version": "3", "Cache-Control": "max-age=9" } }),
  );
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-model-version"), "3");
  assert.match(res.headers.get("content-type")!, /^text\/event-stream/);
  // The event stream's own Cache-Control stays.
  assert.equal(res.headers.get("cache-control"), "no-cache");
  const events = await new SseReader(res.body!).all();
  assert.deepEqual(events.map((e) => e.data), ["a", "b", { items: 2 }]);
}

/** A step of "gateway: a model's status and headers, on /execute, a batch and a stream": gateway stream: a model that sets 201 streams too (its status ignored, its headers kept), plain or generator */
async function streamModelThatSets201(gw: TestGateway): Promise<void> {
  const body = { status: 201, headers: { Location: "/items/7" } };
  // The same model answers 201 on /execute...
  const created = await gw.fetch(
    "/v1/models/chosen/execute",
    post({ ...body, result: { id: 7 } }),
  );
  assert.equal(created.status, 201);
  await created.body?.cancel();
  // ...and its one item as a 200 event stream on /stream.
  for (
    const [model, data] of [
      ["chosen", [{ id: 7 }, { items: 1 }]],
      ["chosen_stream", ["a", "b", { items: 2 }]],
    ] as const
  ) {
    const res = await gw.fetch(
      `/v1/models/${model}/stream`,
      post({ ...body, result: { id: 7 } }),
    );
    assert.equal(res.status, 200, model);
    assert.equal(res.headers.get("location"), "/items/7", model);
    const events = await new SseReader(res.body!).all();
    assert.deepEqual(events.map((e) => e.data), data, model);
  }
}

Deno.test("gateway stream: a header set after the first item is dropped with one warning in the worker's log, where /execute sends it; a bad one still fails", async () => {
  await using gw = await startGateway({ models: MODEL_LIST }, MODELS);
  const executed = await gw.fetch("/v1/models/counted/execute", post({}));
  assert.equal(executed.status, 200);
  assert.equal(executed.headers.get("x-count"), "2");
  await executed.body?.cancel();
  for (let i = 0; i < 2; i++) {
    const res = await gw.fetch("/v1/models/counted/stream", post({}));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-count"), null);
    const events = await new SseReader(res.body!).all();
    assert.deepEqual(events.map((e) => e.data), ["a", "b", { items: 2 }]);
  }
  // Said once for the model, in the worker's log file.
  let log = "";
  for await (const e of Deno.readDir(`${gw.dir}/logs`)) {
    if (e.name.endsWith(".log")) {
      log += await Deno.readTextFile(`${gw.dir}/logs/${e.name}`);
    }
  }
  const said = log.split("\n").filter((line) =>
    line.includes(
      "host.set_header('X-Count') ignored: stream ",
    ) && line.includes("of model 'counted' sent its first item already")
  );
  assert.equal(said.length, 1, log);
  assert.match(said[0]!, / WARNING /);
  // A header that is no header fails the stream after its first item, as it
  // fails the call on /execute.
  const bad = await gw.fetch(
    "/v1/models/counted/stream",
    post({ late: ["X Bad", "1"] }),
  );
  const events = await new SseReader(bad.body!).all();
  assert.equal(events[0]!.data, "a");
  assert.equal(events.at(-1)!.event, "error");
  assert.match(JSON.stringify(events.at(-1)!.data), /host\.set_header/);
});

Deno.test("gateway with CORS exposes the model's header names on that response only", async () => {
  const origin = "https://app.example.com";
  await using gw = await startGateway({
    models: MODEL_LIST,
    cors: { origins: [origin] },
  }, MODELS);
  const cross = { origin, "sec-fetch-site": "cross-site" };
  const exposed = (res: Response) =>
    (res.headers.get("access-control-expose-headers") ?? "").split(",");
  const res = await gw.fetch(
    "/v1/models/chosen/execute",
    post({
      status: 201,
      headers: {
        Location: "/items/7",
        "X-Model-Version": "3",
        "Set-Cookie": "a",
      },
      result: {},
    }, cross),
  );
  assert.equal(res.status, 201);
  assert.equal(res.headers.get("access-control-allow-origin"), origin);
  assert.deepEqual(exposed(res).sort(), [
    "inference-header-content-length",
    "location",
    "retry-after",
    "x-atom-id",
    "x-model-version",
    "x-request-id",
  ]);
  await res.body?.cancel();
  // An HTTPError's headers too.
  const error = await gw.fetch(
    "/v1/models/chosen/execute",
    post({ raise: 429 }, cross),
  );
  assert.equal(error.status, 429);
  assert.ok(exposed(error).includes("x-quota-left"));
  await error.body?.cancel();
  // A stream's.
  const stream = await gw.fetch(
    "/v1/models/chosen_stream/stream",
    post({ headers: { "X-Model-Version": "4" } }, cross),
  );
  assert.ok(exposed(stream).includes("x-model-version"));
  await stream.body?.cancel();
  // A call whose model set none: the gateway's list, as before.
  const plain = await gw.fetch(
    "/v1/models/chosen/execute",
    post({ result: 1 }, cross),
  );
  assert.deepEqual(exposed(plain), [
    "inference-header-content-length",
    "retry-after",
    "x-atom-id",
    "x-request-id",
  ]);
  await plain.body?.cancel();
});

Deno.test("gateway: a model's headers that a proxy in front acts on (X-Accel-Redirect, X-Sendfile...) are refused (the allow-list of a success's and an HTTPError's headers)", async () => {
  await withLogs(async (records) => {
    await using gw = await startGateway({ models: MODEL_LIST }, MODELS);
    // Behind nginx, X-Accel-Redirect would serve any internal location (or
    // file) in place of the answer; X-Sendfile, a file from Apache's disk.
    const proxied = {
      "X-Accel-Redirect": "/internal/secrets.json",
      "x-accel-limit-rate": "1",
      "X-Accel-Buffering": "no",
      "X-Sendfile": "/etc/passwd",
      "X-Sendfile2": "/etc/shadow 0-",
      "X-Lighttpd-Send-File": "/etc/passwd",
      "X-Model-Version": "3",
    };
    const res = await gw.fetch(
      "/v1/models/chosen/execute",
      post({ status: 201, headers: proxied, result: 1 }),
    );
    assert.equal(res.status, 201);
    assert.equal(await res.json(), 1);
    const sent = [...res.headers.keys()].filter((n) => n.startsWith("x-"));
    assert.deepEqual(sent, ["x-model-version", "x-request-id"]);
    const warned = records.find((r) =>
      r.level === "warning" && r.properties.status === 201
    );
    assert.ok(warned, "no warning for the refused headers");
    for (const name of Object.keys(proxied).slice(0, -1)) {
      assert.ok(String(warned.properties.names).includes(name), name);
    }
  });
});
