import assert from "node:assert/strict";
import {
  startGateway,
  type TestGateway,
  until,
  withLogs,
} from "./_gateway_harness.ts";
import { startGatewayProcess } from "./_gateway_process.ts";

// A model that thinks (an LLM's prompt, its turn behind other streams)
// until its gate file exists, then fails or yields its items.
const GATED = `import os, time
class Gated:
    def execute(self, msg):
        gate = msg.get("gate")
        while gate and not os.path.exists(gate):
            time.sleep(0.01)
        if msg.get("fail"):
            raise ValueError("model failed before its first item")
        for i in range(msg.get("n", 2)):
            yield {"token": "t%d" % i}
`;

// A model that sets a header before its first item, and logs the request id
// it was called with.
const HEADED = `import logging
from pyproxy import host
class Headed:
    def execute(self, msg):
        logging.getLogger("headed").warning("called with %s", host.request_id())
        host.set_header("X-Tokens-Left", "41")
        yield "a"
`;

/** Writes `file` into the models directory and loads it as `name` by PUT. */
async function putModel(
  gw: TestGateway,
  name: string,
  file: string,
  source: string,
): Promise<void> {
  await Deno.writeTextFile(`${gw.dir}/${file}`, source);
  const put = await gw.fetch(`/v1/models/${name}`, {
    method: "PUT",
    body: JSON.stringify({ file }),
  });
  await put.body?.cancel();
  assert.equal(put.status, 201);
}

/** A response body's text, read until `done` says it has what it waits for. */
class TextReader {
  text = "";
  #reader: ReadableStreamDefaultReader<string>;
  constructor(body: ReadableStream<Uint8Array>) {
    this.#reader = body.pipeThrough(new TextDecoderStream()).getReader();
  }
  async until(done: (text: string) => boolean): Promise<string> {
    while (!done(this.text)) {
      const { value, done: ended } = await this.#reader.read();
      if (ended) break;
      this.text += value;
    }
    return this.text;
  }
  async rest(): Promise<string> {
    return await this.until(() => false);
  }
  cancel(): Promise<void> {
    return this.#reader.cancel();
  }
}

/** The `data` of the event named `event` in an SSE text. */
function eventData(text: string, event: string): unknown {
  const block = text.split("\n\n").find((b) =>
    b.startsWith(`event: ${event}\n`)
  );
  const line = block?.split("\n").find((l) => l.startsWith("data: "));
  return line === undefined ? undefined : JSON.parse(line.slice(6));
}

const metric = async (gw: TestGateway, series: string) => {
  const text = await (await gw.fetch("/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
};

/**
 * Opens the gate after 10 s, should the headers wait for the first item
 * (without ?early=1): the test then fails on what it read, not by hanging.
 */
function gateFallback(gate: string): { [Symbol.dispose](): void } {
  const timer = setTimeout(() => Deno.writeTextFile(gate, ""), 10_000);
  return { [Symbol.dispose]: () => clearTimeout(timer) };
}

Deno.test("Gateway model stream ?early=1: 200 and headers at once, keep-alive comments until the first item, then the items", async () => {
  await using gw = await startGateway({
    allowManage: true,
    limits: { shutdownGrace: 2000, streamKeepAlive: 100 },
  });
  await putModel(gw, "gated", "gated.py", GATED);
  const gate = `${gw.dir}/gate-1`;
  using _fallback = gateFallback(gate);
  const res = await gw.fetch("/v1/models/gated/stream?early=1", {
    method: "POST",
    body: JSON.stringify({ gate, n: 3 }),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
  assert.equal(res.headers.get("x-accel-buffering"), "no");
  const reader = new TextReader(res.body!);
  // Two keep-alives while the model still thinks: the gate is shut.
  const before = await reader.until((t) =>
    t.split(": keep-alive\n\n").length > 2 || t.includes("event:")
  );
  assert.doesNotMatch(before, /event:/, "no event before the gate opens");
  await Deno.writeTextFile(gate, "");
  const text = await reader.rest();
  const events = text.split("\n\n").filter((b) => b.startsWith("event:"));
  assert.deepEqual(events, [
    'event: item\nid: 0\ndata: {"token":"t0"}',
    'event: item\nid: 1\ndata: {"token":"t1"}',
    'event: item\nid: 2\ndata: {"token":"t2"}',
    'event: end\ndata: {"items":3}',
  ]);
  // Its time to first item and items counted as without ?early=1.
  assert.equal(
    await metric(
      gw,
      'pyproxy_stream_first_item_seconds_count{model="gated"}',
    ),
    1,
  );
  assert.equal(
    await metric(gw, 'pyproxy_stream_items_total{model="gated"}'),
    3,
  );
  assert.equal(
    await metric(gw, 'pyproxy_requests_total{model="gated",status="200"}'),
    1,
  );
});

Deno.test("Gateway model stream ?early=1: an error before the first item is the stream's error event, the body the status would have had", async () => {
  await using gw = await startGateway({
    allowManage: true,
    limits: { shutdownGrace: 2000, streamKeepAlive: 100 },
  });
  await putModel(gw, "gated", "gated.py", GATED);
  const post = (query: string, body: unknown, requestId: string) =>
    gw.fetch(`/v1/models/gated/stream${query}`, {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "x-request-id": requestId },
    });

  // The model's exception: 422 without ?early=1, the same error in-stream.
  const plain = await post("", { fail: true }, "plain-1");
  assert.equal(plain.status, 422);
  const plainError = (await plain.json()).error;
  const early = await post("?early=1", { fail: true }, "early-1");
  assert.equal(early.status, 200);
  const text = await early.text();
  assert.match(text, /^event: error\ndata: /m);
  assert.doesNotMatch(text, /event: (item|end)/);
  const earlyError = (eventData(text, "error") as { error: typeof plainError })
    .error;
  assert.equal(earlyError.requestId, "early-1");
  assert.deepEqual(
    { ...earlyError, requestId: "plain-1" },
    plainError,
  );
  assert.equal(earlyError.exception, "ValueError");

  // A timeout before the first item: the 504's own message (no items).
  const gate = `${gw.dir}/never`;
  const slow = await post("?timeout=300", { gate }, "plain-2");
  assert.equal(slow.status, 504);
  const slowError = (await slow.json()).error;
  const slowEarly = await post("?timeout=300&early=true", { gate }, "early-2");
  assert.equal(slowEarly.status, 200);
  const slowText = await slowEarly.text();
  assert.match(slowText, /^: keep-alive\n\n/m);
  const slowEarlyError = (eventData(slowText, "error") as {
    error: typeof slowError;
  }).error;
  assert.equal(slowEarlyError.type, "TimeoutError");
  assert.match(slowEarlyError.message, /no answer within 300 ms/);
  assert.deepEqual({ ...slowEarlyError, requestId: "plain-2" }, slowError);

  // Both counted with their statuses, as without ?early=1; no first item.
  const total = (status: number) =>
    `pyproxy_requests_total{model="gated",status="${status}"}`;
  assert.equal(await metric(gw, total(422)), 2);
  assert.equal(await metric(gw, total(504)), 2);
  assert.equal(
    await metric(
      gw,
      'pyproxy_stream_first_item_seconds_count{model="gated"}',
    ),
    0,
  );
});

Deno.test("Gateway model stream ?early=1: an unknown model or a bad ?early= is answered by its status", async () => {
  await using gw = await startGateway({ allowManage: true });
  await putModel(gw, "gated", "gated.py", GATED);
  const missing = await gw.fetch("/v1/models/nope/stream?early=1", {
    method: "POST",
    body: "{}",
  });
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.type, "ModelNotFoundError");
  const bad = await gw.fetch("/v1/models/gated/stream?early=yes", {
    method: "POST",
    body: "{}",
  });
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error.message, /early must be/);
  // ?early=0: the headers with the first item, as without it.
  const off = await gw.fetch("/v1/models/gated/stream?early=0", {
    method: "POST",
    body: JSON.stringify({ fail: true }),
  });
  assert.equal(off.status, 422);
  await off.body?.cancel();
});

Deno.test("Gateway model stream ?early=1: a client that leaves before the first item cancels the model (499); nothing left running", async () => {
  // The default keep-alive (15 s): a timer left behind outlives the test.
  await using gw = await startGateway({ allowManage: true });
  await putModel(gw, "gated", "gated.py", GATED);
  const inFlight = async () =>
    (await (await gw.fetch("/v1/status")).json()).workers[0].inFlight;
  const res = await gw.fetch("/v1/models/gated/stream?early=1", {
    method: "POST",
    body: JSON.stringify({ gate: `${gw.dir}/never` }),
  });
  assert.equal(res.status, 200);
  await until(async () => await inFlight() === 1, "the stream's call to run");
  await res.body!.cancel();
  await until(
    async () => await inFlight() === 0,
    "the stream's call to be cancelled",
  );
  await until(
    async () =>
      await metric(
        gw,
        'pyproxy_requests_total{model="gated",status="499"}',
      ) === 1,
    "the 499",
  );
  assert.equal(
    await metric(gw, 'pyproxy_in_flight_requests{model="gated"}'),
    0,
  );
});

Deno.test("Gateway model stream ?early=1: the gateway's stop before the first item ends the stream with ShuttingDownError", async () => {
  const gw = await startGateway({
    allowManage: true,
    limits: { shutdownGrace: 300, streamKeepAlive: 100 },
  });
  try {
    await putModel(gw, "gated", "gated.py", GATED);
    const res = await gw.fetch("/v1/models/gated/stream?early=1", {
      method: "POST",
      body: JSON.stringify({ gate: `${gw.dir}/never` }),
    });
    assert.equal(res.status, 200);
    const reader = new TextReader(res.body!);
    await reader.until((t) => t.includes(": keep-alive"));
    const stopping = gw.shutdown();
    const text = await reader.rest();
    await stopping;
    const error = (eventData(text, "error") as { error: { type: string } })
      .error;
    assert.equal(error.type, "ShuttingDownError");
  } finally {
    await gw[Symbol.asyncDispose]();
  }
});

Deno.test("Gateway model stream ?early=1: its request id (the client's, else a new one the model gets too) is the response's X-Request-Id; a model's headers set before the first item are not sent, one warning a minute per model", async () => {
  await withLogs(async (records) => {
    await using gw = await startGateway({ allowManage: true });
    await putModel(gw, "headed", "headed.py", HEADED);
    const stream = (headers: Record<string, string> = {}) =>
      gw.fetch("/v1/models/headed/stream?early=1", {
        method: "POST",
        body: "{}",
        headers,
      });
    const made = await stream();
    assert.equal(made.status, 200);
    const id = made.headers.get("x-request-id");
    assert.match(id ?? "", /^[0-9a-f-]{36}$/);
    assert.match(await made.text(), /event: end/);
    // Not sent: the 200 and its headers went out before the model set it.
    assert.equal(made.headers.get("x-tokens-left"), null);
    const sent = await stream({ "x-request-id": "early-client-1" });
    assert.equal(sent.headers.get("x-request-id"), "early-client-1");
    assert.match(await sent.text(), /event: end/);
    // The model was called with each (its log line carries it).
    const called = records.filter((r) =>
      String(r.message.join("")).includes("called with")
    ).map((r) => String(r.message.join("")));
    assert.ok(
      called.some((m) => m.includes(`called with ${id}`)),
      called.join("\n"),
    );
    assert.ok(called.some((m) => m.includes("called with early-client-1")));
    const warnings = records.filter((r) =>
      r.level === "warning" &&
      String(r.properties.names).includes("X-Tokens-Left")
    );
    assert.equal(warnings.length, 1, "one warning for two streams");
    assert.equal(warnings[0]!.properties.model, "headed");
    assert.equal(warnings[0]!.properties.requestId, id);
    assert.match(String(warnings[0]!.message.join("")), /\?early=1/);
  }, "info");
});

// The drain's rule for a stream without its first item, early or not: a call
// still queued ends at once (it never ran: retry elsewhere), one that runs
// is a call in flight and gets the grace, as execute's do (a chat model's
// time to first token is often well within it; ending it at the drain's
// start would fail a stream that could finish).
Deno.test("Gateway model stream on SIGTERM's drain, ?early=1 or not: a stream still queued ends at once with ShuttingDownError; one whose model runs gets the grace, its first item during the drain sent and the stream ended", async () => {
  await using gw = await startGatewayProcess({
    workers: 2,
    models: [{ name: "gated", file: "gated.py" }],
    limits: {
      shutdownGrace: 20_000,
      streamKeepAlive: 100,
      maxInFlightPerWorker: 1,
    },
  }, { "gated.py": GATED });
  const stream = (query: string, gate: string) =>
    gw.fetch(`/v1/models/gated/stream${query}`, {
      method: "POST",
      body: JSON.stringify({ gate: `${gw.dir}/${gate}` }),
    });
  const status = async () => await (await gw.fetch("/v1/status")).json();
  // One running on each worker, then two queued behind them.
  const earlyRunning = await stream("?early=1", "gate-early");
  assert.equal(earlyRunning.status, 200);
  const plainRunning = stream("", "gate-plain");
  await until(async () => (await status()).inFlight === 2, "both to run");
  const earlyQueued = await stream("?early=1", "never");
  assert.equal(earlyQueued.status, 200);
  const plainQueued = stream("", "never");
  await until(async () => (await status()).queue === 2, "two queued");
  const early = new TextReader(earlyRunning.body!);
  await early.until((t) => t.includes(": keep-alive"));

  const stopped = gw.shutdown();
  await gw.draining;
  // Queued: ended at once, before any gate opens (they never ran).
  const queuedText = await earlyQueued.text();
  assert.equal(
    (eventData(queuedText, "error") as { error: { type: string } }).error.type,
    "ShuttingDownError",
    queuedText,
  );
  const plainQueuedRes = await plainQueued;
  assert.equal(plainQueuedRes.status, 503);
  assert.equal(
    (await plainQueuedRes.json()).error.type,
    "ShuttingDownError",
  );
  // Running: their first items come during the drain, and are sent.
  await Deno.writeTextFile(`${gw.dir}/gate-early`, "");
  await Deno.writeTextFile(`${gw.dir}/gate-plain`, "");
  const earlyText = await early.rest();
  assert.match(earlyText, /event: end\ndata: \{"items":2\}/, earlyText);
  const plainRes = await plainRunning;
  assert.equal(plainRes.status, 200);
  assert.match(await plainRes.text(), /event: end\ndata: \{"items":2\}/);
  await stopped;
});
