// Request ids through the gateway (docs/gateway.md, "Request ids"): the
// client's X-Request-Id echoed and sent to the model, a made-up one on every
// error response, and both in the log lines.
import assert from "node:assert/strict";
import type { LogRecord } from "@logtape/logtape";
import {
  SseReader,
  startGateway,
  type TestGateway,
  withLogs,
} from "./_gateway_harness.ts";

const MODELS: Record<string, string> = {
  "tagger.py": `import logging

from pyproxy import host
from pyproxy_server.errors import ProtocolError

log = logging.getLogger("tagger")


class Tagger:
    """Answers the request id it sees; logs once; msg["fail"]: raises
    (ValueError: a 422; "internal": a server error, answered 500)."""

    def execute(self, msg):
        log.warning("tagging %s", msg.get("x"))
        if msg.get("fail") == "internal":
            raise ProtocolError("an internal failure")
        if msg.get("fail"):
            raise ValueError("failed on purpose")
        return {"requestId": host.request_id()}
`,
  "tag_stream.py": `from pyproxy import host


class TagStream:
    """Yields the request id it sees twice, or once then fails (msg["fail"])."""

    def execute(self, msg):
        yield host.request_id()
        if msg.get("fail"):
            raise ValueError("failed after an item")
        yield host.request_id()
`,
};

const BATCHER = `from pyproxy import host


class Batcher:
    batch_size = 4

    def execute_batch(self, msgs):
        return [{"id": host.request_id(), "ids": host.request_ids()} for m in msgs]
`;

const UUID =
  /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

const post = (body: unknown, requestId?: string): RequestInit => ({
  method: "POST",
  body: JSON.stringify(body),
  headers: requestId === undefined ? {} : { "x-request-id": requestId },
});

/** The text of a record as a text sink writes it. */
function text(record: LogRecord): string {
  return record.message.map(String).join("");
}

// Steps on one gateway started as `startGateway({}, MODELS)`: each of these
// tests started its own (a gateway and its Python worker) and needs no fresh
// one.
Deno.test("X-Request-Id of model calls and streams, on one gateway", async (t) => {
  await using gw = await startGateway({}, MODELS);
  await t.step(
    "X-Request-Id is echoed and reaches the model's host.request_id(), on the direct path, the routed one and a stream",
    () => xRequestIdIsEchoed(gw),
  );
  await t.step(
    "An X-Request-Id that is not 1 to 128 characters of A-Za-z0-9._:- is ignored as if absent",
    () => xRequestIdThatIs(gw),
  );
  await t.step(
    "Every error response of a model call or stream carries a request id in its X-Request-Id header and error.requestId",
    () => everyErrorResponseModelCall(gw),
  );
});

/** A step of "X-Request-Id of model calls and streams, on one gateway": X-Request-Id is echoed and reaches the model's host.request_id(), on the direct path, the routed one and a stream */
async function xRequestIdIsEchoed(gw: TestGateway): Promise<void> {
  for (const path of ["execute", "execute?timeout=5000"]) {
    const res = await gw.fetch(`/v1/models/tagger/${path}`, post({}, "req-1"));
    assert.equal(res.status, 200, path);
    assert.equal(res.headers.get("x-request-id"), "req-1", path);
    assert.deepEqual(await res.json(), { requestId: "req-1" }, path);
    // Without one, a successful call has none.
    const plain = await gw.fetch(`/v1/models/tagger/${path}`, post({}));
    assert.equal(plain.status, 200, path);
    assert.equal(plain.headers.get("x-request-id"), null, path);
    assert.deepEqual(await plain.json(), { requestId: null }, path);
  }
  const res = await gw.fetch(
    "/v1/models/tag_stream/stream",
    post({}, "req.2:b_c-D"),
  );
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-request-id"), "req.2:b_c-D");
  const events = await new SseReader(res.body!).all();
  assert.deepEqual(
    events.map((e) => [e.event, e.data]),
    [["item", "req.2:b_c-D"], ["item", "req.2:b_c-D"], ["end", { items: 2 }]],
  );
  // Other routes echo it too.
  const status = await gw.fetch("/v1/status", {
    headers: { "x-request-id": "req-3" },
  });
  assert.equal(status.headers.get("x-request-id"), "req-3");
  await status.body?.cancel();
}

/** A step of "X-Request-Id of model calls and streams, on one gateway": An X-Request-Id that is not 1 to 128 characters of A-Za-z0-9._:- is ignored as if absent */
async function xRequestIdThatIs(gw: TestGateway): Promise<void> {
  for (const bad of ["has space", "x".repeat(129), "a/b", "", "a,b"]) {
    const res = await gw.fetch("/v1/models/tagger/execute", post({}, bad));
    assert.equal(res.status, 200, bad);
    assert.equal(res.headers.get("x-request-id"), null, bad);
    assert.deepEqual(await res.json(), { requestId: null }, bad);
    // An error gets a made-up id, not the one sent.
    const failed = await gw.fetch(
      "/v1/models/tagger/execute",
      post({ fail: true }, bad),
    );
    assert.equal(failed.status, 422, bad);
    const { error } = await failed.json();
    assert.match(error.requestId, UUID, bad);
    assert.equal(failed.headers.get("x-request-id"), error.requestId, bad);
  }
  const longest = "y".repeat(128);
  const res = await gw.fetch("/v1/models/tagger/execute", post({}, longest));
  assert.equal(res.headers.get("x-request-id"), longest);
  assert.deepEqual(await res.json(), { requestId: longest });
}

/** A step of "X-Request-Id of model calls and streams, on one gateway": Every error response of a model call or stream carries a request id in its X-Request-Id header and error.requestId */
async function everyErrorResponseModelCall(gw: TestGateway): Promise<void> {
  const cases: Array<[string, RequestInit, number]> = [
    ["/v1/models/tagger/execute", post({ fail: true }), 422],
    ["/v1/models/tagger/execute?timeout=5000", post({ fail: true }), 422],
    ["/v1/models/nope/execute", post({}), 404],
    [`/v1/models/${"n".repeat(200)}/execute`, post({}), 404],
    ["/v1/models/tagger/execute", { method: "POST", body: "{" }, 400],
    ["/v1/models/tagger/execute?timeout=0", post({}), 400],
    ["/v1/models/nope/stream", post({}), 404],
    [`/v1/models/${"n".repeat(200)}/stream`, post({}), 404],
  ];
  for (const [path, init, status] of cases) {
    const res = await gw.fetch(path, init);
    assert.equal(res.status, status, path);
    const { error } = await res.json();
    assert.match(error.requestId, UUID, path);
    assert.equal(res.headers.get("x-request-id"), error.requestId, path);
    // With the client's id, the client's.
    const headers = new Headers(init.headers);
    headers.set("x-request-id", "client-7");
    const again = await gw.fetch(path, { ...init, headers });
    assert.equal(again.status, status, path);
    assert.equal((await again.json()).error.requestId, "client-7", path);
    assert.equal(again.headers.get("x-request-id"), "client-7", path);
  }
  // Each made-up id is new.
  const ids = new Set<string>();
  for (let i = 0; i < 3; i++) {
    const res = await gw.fetch("/v1/models/nope/execute", post({}));
    ids.add((await res.json()).error.requestId);
  }
  assert.equal(ids.size, 3);
  // A stream that fails after its first item: its error event has one.
  for (const sent of [undefined, "client-8"]) {
    const res = await gw.fetch(
      "/v1/models/tag_stream/stream",
      post({ fail: true }, sent),
    );
    assert.equal(res.status, 200);
    const events = await new SseReader(res.body!).all();
    assert.deepEqual(events.map((e) => e.event), ["item", "error"]);
    const { error } = events[1]!.data as { error: Record<string, string> };
    assert.equal(error.type, "PythonError");
    if (sent === undefined) assert.match(error.requestId!, UUID);
    else assert.equal(error.requestId, sent);
  }
}

Deno.test("The gateway's log line for a failed call, its request line and the model's log records carry the request id", async () => {
  await withLogs(async (records) => {
    await using gw = await startGateway({}, MODELS);
    records.splice(0);
    // A 500: logged at warning, with the id the client gets.
    for (const sent of [undefined, "req-500"]) {
      const res = await gw.fetch(
        "/v1/models/tagger/execute",
        post({ fail: "internal" }, sent),
      );
      assert.equal(res.status, 500);
      const { error } = await res.json();
      if (sent !== undefined) assert.equal(error.requestId, sent);
      const line = records.find((r) =>
        r.level === "warning" && r.category.join(".") === "pyproxy.gateway"
      );
      assert.ok(line, "no warning logged");
      assert.equal(line.properties.requestId, error.requestId);
      assert.match(text(line), /^Request failed \(request id [^)]+\): /);
      assert.ok(text(line).includes(error.requestId));
      records.splice(0);
    }
    // The model's logging record, and the direct path's request line.
    const res = await gw.fetch(
      "/v1/models/tagger/execute",
      post({ x: 5 }, "req-log"),
    );
    assert.equal(res.status, 200);
    await res.body?.cancel();
    const record = records.find((r) =>
      r.category.join(".") === "pyproxy.python.tagger"
    );
    assert.ok(record, "no model record");
    assert.equal(record.properties.message, "tagging 5");
    assert.equal(record.properties.requestId, "req-log");
    assert.equal(text(record), "tagging 5 (request id req-log)");
    const line = records.find((r) =>
      r.level === "debug" && r.category.join(".") === "pyproxy.gateway"
    );
    assert.ok(line, "no request line");
    assert.equal(line.properties.requestId, "req-log");
    assert.match(
      text(line),
      /^POST \/v1\/models\/tagger\/execute 200 [\d.]+ ms \(request id req-log\)$/,
    );
    // Without an id: neither has one.
    records.splice(0);
    const plain = await gw.fetch("/v1/models/tagger/execute", post({ x: 6 }));
    await plain.body?.cancel();
    const without = records.filter((r) =>
      r.category.join(".") === "pyproxy.python.tagger" ||
      (r.level === "debug" && r.category.join(".") === "pyproxy.gateway")
    );
    assert.equal(without.length, 2);
    for (const r of without) assert.equal(r.properties.requestId, undefined);
  });
});

const EVAL_ID =
  "from pyproxy import host\n(host.request_id(), host.request_ids())";

/** The events of an eval's SSE response. */
async function evalEvents(res: Response): Promise<Array<[string, unknown]>> {
  const events = await new SseReader(res.body!).all();
  return events.map((e) => [e.event, e.data]);
}

// Steps on one gateway started as `startGateway({ allowEval: true }, MODELS)`:
// each of these tests started its own (a gateway and its Python worker) and
// needs no fresh one.
Deno.test("X-Request-Id of evals, on one gateway", async (t) => {
  await using gw = await startGateway({ allowEval: true }, MODELS);
  await t.step(
    "POST /v1/eval sends X-Request-Id to the code, and an eval's error event and its replay's carry a request id",
    () => postV1EvalSendsX(gw),
  );
  await t.step(
    "Every error response of the eval routes carries a request id in its X-Request-Id header and error.requestId",
    () => everyErrorResponseEvalRoutes(gw),
  );
});

/** A step of "X-Request-Id of evals, on one gateway": POST /v1/eval sends X-Request-Id to the code, and an eval's error event and its replay's carry a request id */
async function postV1EvalSendsX(gw: TestGateway): Promise<void> {
  const res = await gw.fetch("/v1/eval", post({ code: EVAL_ID }, "req-eval"));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-request-id"), "req-eval");
  const atomId = res.headers.get("x-atom-id");
  assert.deepEqual((await evalEvents(res)).slice(1), [
    ["result", { value: ["req-eval", ["req-eval"]] }],
  ]);
  assert.ok(atomId);
  // Without one, the code sees none, and the response has none.
  const plain = await gw.fetch("/v1/eval", post({ code: EVAL_ID }));
  assert.equal(plain.headers.get("x-request-id"), null);
  assert.deepEqual((await evalEvents(plain)).slice(1), [
    ["result", { value: [null, [null]] }],
  ]);
  // The error event of a failed eval: the client's id, else a new one.
  const failing = "raise ValueError('bad')";
  for (const sent of ["req-fail", undefined]) {
    const failed = await gw.fetch("/v1/eval", post({ code: failing }, sent));
    assert.equal(failed.status, 200);
    const events = await evalEvents(failed);
    const [event, data] = events[events.length - 1]!;
    assert.equal(event, "error");
    const error = data as Record<string, string>;
    assert.equal(error.exception, "ValueError");
    if (sent !== undefined) assert.equal(error.requestId, sent);
    else assert.match(error.requestId!, UUID);
    // Replayed: the eval's own id (whatever this request sends), else this
    // request's, else a new one.
    const id = failed.headers.get("x-atom-id");
    for (const again of [undefined, "req-replay"]) {
      const replay = await gw.fetch(`/v1/eval/${id}/events`, {
        headers: again === undefined ? {} : { "x-request-id": again },
      });
      assert.equal(replay.status, 200);
      const replayed = await evalEvents(replay);
      const last = replayed[replayed.length - 1]![1] as Record<string, string>;
      if (sent !== undefined) assert.equal(last.requestId, sent);
      else if (again !== undefined) assert.equal(last.requestId, again);
      else assert.match(last.requestId!, UUID);
    }
  }
}

/** A step of "X-Request-Id of evals, on one gateway": Every error response of the eval routes carries a request id in its X-Request-Id header and error.requestId */
async function everyErrorResponseEvalRoutes(gw: TestGateway): Promise<void> {
  await using off = await startGateway({}, MODELS);
  const cases: Array<[typeof gw, string, RequestInit, number]> = [
    [gw, "/v1/eval", { method: "POST", body: "print(1)" }, 400],
    [gw, "/v1/eval", post({ code: 7 }), 400],
    [gw, "/v1/eval/nope/events", {}, 404],
    [gw, "/v1/eval/nope/events?lastEventId=x", {}, 404],
    [off, "/v1/eval", post({ code: "1" }), 403],
  ];
  for (const [server, path, init, status] of cases) {
    const res = await server.fetch(path, init);
    assert.equal(res.status, status, path);
    const { error } = await res.json();
    assert.match(error.requestId, UUID, path);
    assert.equal(res.headers.get("x-request-id"), error.requestId, path);
    const headers = new Headers(init.headers);
    headers.set("x-request-id", "client-9");
    const again = await server.fetch(path, { ...init, headers });
    assert.equal(again.status, status, path);
    assert.equal((await again.json()).error.requestId, "client-9", path);
    assert.equal(again.headers.get("x-request-id"), "client-9", path);
  }
  // A bad Last-Event-ID of a known eval: a 400 with an id too.
  const res = await gw.fetch("/v1/eval", post({ code: "1" }));
  await res.body?.cancel();
  const bad = await gw.fetch(
    `/v1/eval/${res.headers.get("x-atom-id")}/events?lastEventId=x`,
  );
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error.requestId, UUID);
}

/** The text of the worker log files in `dir`/logs. */
async function workerLogs(dir: string): Promise<string> {
  let text = "";
  for await (const entry of Deno.readDir(`${dir}/logs`)) {
    if (entry.name.endsWith(".log")) {
      text += await Deno.readTextFile(`${dir}/logs/${entry.name}`);
    }
  }
  return text;
}

Deno.test("An eval's exception is in its worker's log file once, with its request id and traceback, however often its events are replayed", async () => {
  await using gw = await startGateway({ allowEval: true }, MODELS);
  const code = "def inner():\n    raise KeyError('eval-log-3x')\ninner()";
  const res = await gw.fetch("/v1/eval", post({ code }, "req-eval-log"));
  const atomId = res.headers.get("x-atom-id");
  const events = await evalEvents(res);
  assert.equal((events.at(-1)?.[1] as { type: string }).type, "PythonError");
  for (let i = 0; i < 2; i++) {
    const replay = await gw.fetch(`/v1/eval/${atomId}/events`);
    assert.deepEqual(await evalEvents(replay), events);
  }
  const text = await workerLogs(gw.dir);
  const line =
    /eval \d+ \(request id req-eval-log\) raised KeyError: 'eval-log-3x'\n/g;
  assert.equal(text.match(line)?.length, 1, text.slice(-2000));
  assert.match(text, /INFO .*raised KeyError[^]*in inner\n/);
});

Deno.test("The gateway's debug line of an eval's start names its request id", async () => {
  await withLogs(async (records) => {
    await using gw = await startGateway({ allowEval: true }, MODELS);
    records.splice(0);
    const res = await gw.fetch("/v1/eval", post({ code: "1" }, "req-started"));
    await evalEvents(res);
    const started = records.find((r) => text(r).startsWith("Eval "));
    assert.ok(started, "no start line");
    assert.equal(started.properties.requestId, "req-started");
    assert.equal(
      text(started),
      `Eval ${res.headers.get("x-atom-id")} started (request id req-started)`,
    );
  });
});

Deno.test("X-Request-Id reaches a batching model's host.request_ids()", async () => {
  await using gw = await startGateway({}, { ...MODELS, "batcher.py": BATCHER });
  for (const path of ["execute", "execute?timeout=5000"]) {
    const res = await gw.fetch(`/v1/models/batcher/${path}`, post({}, "req-b"));
    assert.equal(res.headers.get("x-request-id"), "req-b", path);
    assert.deepEqual(await res.json(), { id: null, ids: ["req-b"] }, path);
    const plain = await gw.fetch(`/v1/models/batcher/${path}`, post({}));
    assert.deepEqual(await plain.json(), { id: null, ids: [null] }, path);
  }
});
