import assert from "node:assert/strict";
import {
  SseReader,
  startGateway,
  type TestGateway,
  until,
} from "./_gateway_harness.ts";

const STREAMER = `import time
class Streamer:
    inputs = {"n": "integer"}
    def execute(self, msg):
        for i in range(msg["n"]):
            if msg.get("sleep"):
                time.sleep(msg["sleep"])
            yield "plain text" if msg.get("text") else {"token": "t%d" % i}
        if msg.get("fail"):
            raise ValueError("model failed after its items")
`;

/** Writes `file` into the models directory and loads it as `name` by PUT; the PUT's status. */
async function putModel(
  gw: TestGateway,
  name: string,
  file: string,
  source: string,
): Promise<number> {
  await Deno.writeTextFile(`${gw.dir}/${file}`, source);
  const put = await gw.fetch(`/v1/models/${name}`, {
    method: "PUT",
    body: JSON.stringify({ file }),
  });
  await put.body?.cancel();
  return put.status;
}

async function events(res: Response) {
  const reader = new SseReader(res.body!);
  const out = [];
  for (let m = await reader.next(); m; m = await reader.next()) out.push(m);
  return out;
}

// The tests of a gateway started as `startGateway({ allowManage: true })` that count no
// metrics but their own model's, as steps on one such gateway (a gateway start and its Python
// worker each, otherwise); the first step PUTs the streamer model (201), the second again.
Deno.test("Gateway model streams on one gateway with allowManage (each step its own streams)", async (t) => {
  await using gw = await startGateway({ allowManage: true });
  await t.step(
    "Gateway POST /v1/models/{name}/stream sends a generator model's items as Server-Sent Events",
    () => gatewayPOSTV1ModelsName(gw),
  );
  await t.step(
    "Gateway model stream: a client that goes away cancels the model",
    () => gatewayModelStreamClientThat(gw),
  );
  await t.step(
    "Gateway model stream: a client that goes away before the first item cancels the model (499)",
    () => gatewayModelStreamClientThat2(gw),
  );
});

/** A step of "Gateway model streams on one gateway with allowManage (each step its own streams)": Gateway POST /v1/models/{name}/stream sends a generator model's items as Server-Sent Events */
async function gatewayPOSTV1ModelsName(gw: TestGateway): Promise<void> {
  assert.equal(
    await putModel(gw, "streamer", "streamer.py", STREAMER),
    201,
  );
  const post = (path: string, body: unknown) =>
    gw.fetch(path, { method: "POST", body: JSON.stringify(body) });

  const info = await (await gw.fetch("/v1/models/streamer")).json();
  assert.equal(info.streams, true);
  const ok = await post("/v1/models/streamer/stream", { n: 3 });
  assert.equal(ok.status, 200);
  assert.match(ok.headers.get("content-type") ?? "", /^text\/event-stream/);
  assert.deepEqual(
    (await events(ok)).map((m) => [m.event, m.id, m.data]),
    [
      ["item", "0", { token: "t0" }],
      ["item", "1", { token: "t1" }],
      ["item", "2", { token: "t2" }],
      ["end", undefined, { items: 3 }],
    ],
  );
  // A string item is JSON too ("plain text" with its quotes), as every item.
  const text = await post("/v1/models/streamer/stream", { n: 1, text: true });
  assert.match(
    await text.text(),
    /^event: item\nid: 0\ndata: "plain text"\n\n/m,
  );
  // Execute on the same model: the items as one array.
  const all = await post("/v1/models/streamer/execute", { n: 2 });
  assert.deepEqual(await all.json(), [{ token: "t0" }, { token: "t1" }]);

  // Errors before the first item keep their HTTP status.
  const invalid = await post("/v1/models/streamer/stream", { n: "x" });
  assert.equal(invalid.status, 400);
  assert.equal((await invalid.json()).error.type, "ValidationError");
  const missing = await post("/v1/models/nope/stream", {});
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  const early = await post("/v1/models/streamer/stream", { n: 0, fail: true });
  assert.equal(early.status, 422);
  assert.equal((await early.json()).error.exception, "ValueError");

  // After the first item, the error is the last event.
  const late = await post("/v1/models/streamer/stream", { n: 2, fail: true });
  assert.equal(late.status, 200);
  const lateEvents = await events(late);
  assert.deepEqual(lateEvents.map((m) => m.event), ["item", "item", "error"]);
  const error = (lateEvents[2]!.data as { error: Record<string, string> })
    .error;
  assert.equal(error.type, "PythonError");
  assert.equal(error.exception, "ValueError");

  const wrongMethod = await gw.fetch("/v1/models/streamer/stream");
  assert.equal(wrongMethod.status, 405);
  await wrongMethod.body?.cancel();
}

/** A step of "Gateway model streams on one gateway with allowManage (each step its own streams)": Gateway model stream: a client that goes away cancels the model */
async function gatewayModelStreamClientThat(gw: TestGateway): Promise<void> {
  await putModel(gw, "streamer", "streamer.py", STREAMER);
  const res = await gw.fetch("/v1/models/streamer/stream", {
    method: "POST",
    body: JSON.stringify({ n: 1_000_000, sleep: 0.001 }),
  });
  const reader = new SseReader(res.body!);
  assert.equal((await reader.next())?.event, "item");
  await reader.cancel();
  await until(async () => {
    const status = await (await gw.fetch("/v1/status")).json();
    return status.workers[0].inFlight === 0;
  }, "the stream's call to end on the worker");
}

/** A step of "Gateway model streams on one gateway with allowManage (each step its own streams)": Gateway model stream: a client that goes away before the first item cancels the model (499) */
async function gatewayModelStreamClientThat2(gw: TestGateway): Promise<void> {
  // A model that thinks before its first token (an LLM's prompt), for ever.
  assert.equal(
    await putModel(
      gw,
      "thinker",
      "thinker.py",
      `import time
class Thinker:
    def execute(self, msg):
        while True:
            time.sleep(0.01)
        yield "never"
`,
    ),
    201,
  );
  const inFlight = async () =>
    (await (await gw.fetch("/v1/status")).json()).workers[0].inFlight;
  const client = new AbortController();
  const res = gw.fetch("/v1/models/thinker/stream", {
    method: "POST",
    body: "{}",
    signal: client.signal,
  }).catch((err) => err);
  await until(async () => await inFlight() === 1, "the stream's call to run");
  client.abort();
  assert.equal((await res).name, "AbortError");
  await until(
    async () => await inFlight() === 0,
    "the stream's call to be cancelled",
  );
  const metrics = await (await gw.fetch("/metrics")).text();
  assert.match(
    metrics,
    /pyproxy_requests_total\{model="thinker",status="499"\} 1/,
  );
}

Deno.test("Gateway model stream: the metrics count a stream in flight until it ends, with how it ended", async () => {
  await using gw = await startGateway({ allowManage: true });
  await putModel(gw, "streamer", "streamer.py", STREAMER);
  const metric = async (series: string) => {
    const text = await (await gw.fetch("/metrics")).text();
    const line = text.split("\n").find((l) => l.startsWith(series + " "));
    return line === undefined ? 0 : Number(line.slice(series.length + 1));
  };
  const inFlight = 'pyproxy_in_flight_requests{model="streamer"}';
  const total = (status: number) =>
    `pyproxy_requests_total{model="streamer",status="${status}"}`;
  const post = (path: string, body: unknown) =>
    gw.fetch(path, { method: "POST", body: JSON.stringify(body) });

  // Past its first item, a stream still runs: it is in flight.
  const running = await post("/v1/models/streamer/stream", {
    n: 1_000_000,
    sleep: 0.001,
  });
  const reader = new SseReader(running.body!);
  assert.equal((await reader.next())?.event, "item");
  assert.equal(await metric(inFlight), 1);
  assert.equal(await metric(total(200)), 0);
  // Its client leaves: counted as 499, as an execute call's.
  await reader.cancel();
  await until(async () => await metric(total(499)) === 1, "the 499");
  assert.equal(await metric(inFlight), 0);

  // A timeout after the first item is the stream's last event, and a 504.
  await events(
    await post("/v1/models/streamer/stream?timeout=300", {
      n: 1_000_000,
      sleep: 0.01,
    }),
  );
  assert.equal(await metric(total(504)), 1);
  // Time to first item and items sent, each stream counted as it ends.
  const firsts = 'pyproxy_stream_first_item_seconds_count{model="streamer"}';
  const items = 'pyproxy_stream_items_total{model="streamer"}';
  assert.equal(await metric(firsts), 2);
  const cut = await metric(items);
  assert.ok(cut >= 2, `${cut} items of the two streams cut short`);
  // The model's exception after its items: a 422.
  await events(await post("/v1/models/streamer/stream", { n: 2, fail: true }));
  assert.equal(await metric(total(422)), 1);
  // A stream that ends: a 200.
  await events(await post("/v1/models/streamer/stream", { n: 2 }));
  assert.equal(await metric(total(200)), 1);
  assert.equal(await metric(inFlight), 0);
  assert.equal(await metric(items), cut + 4);
  // A first item that takes 0.3 s is past the 0.25 s bucket.
  const fast =
    'pyproxy_stream_first_item_seconds_bucket{model="streamer",le="0.25"}';
  const fastBefore = await metric(fast);
  await events(
    await post("/v1/models/streamer/stream", { n: 1, sleep: 0.3 }),
  );
  assert.equal(await metric(firsts), 5);
  assert.equal(await metric(fast), fastBefore);
  assert.equal(
    await metric(
      'pyproxy_stream_first_item_seconds_bucket{model="streamer",le="+Inf"}',
    ),
    5,
  );
  assert.equal(await metric(items), cut + 5);
  // A model that never streamed has no stream series.
  assert.doesNotMatch(
    await (await gw.fetch("/metrics")).text(),
    /pyproxy_stream_items_total\{model="(?!streamer)/,
  );
});

Deno.test("Gateway model stream: clients that stop reading give their worker slots back; other requests run", async () => {
  await using gw = await startGateway({
    allowManage: true,
    limits: { shutdownGrace: 2000, maxInFlightPerWorker: 2 },
  });
  await putModel(gw, "streamer", "streamer.py", STREAMER);
  await putModel(
    gw,
    "chunks",
    "chunks.py",
    `class Chunks:
    def execute(self, msg):
        while True:
            yield "x" * 65536
`,
  );
  const workers = async () =>
    (await (await gw.fetch("/v1/status")).json()).workers as {
      inFlight: number;
      parked: number;
    }[];
  // Two clients that send their request and never read the answer: once
  // the sockets' buffers are full, the gateway stops reading their streams
  // and the streams park, their worker slots free (both slots were theirs).
  const body = "{}";
  const head = [
    "POST /v1/models/chunks/stream HTTP/1.1",
    `Host: 127.0.0.1:${gw.port}`,
    "Content-Type: application/json",
    `Content-Length: ${body.length}`,
    ...(gw.token === undefined ? [] : [`Authorization: Bearer ${gw.token}`]),
  ].join("\r\n");
  const clients: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: gw.port });
      clients.push(conn);
      await conn.write(new TextEncoder().encode(`${head}\r\n\r\n${body}`));
    }
    await until(async () => {
      const [w] = await workers();
      return w!.parked === 2 && w!.inFlight === 0;
    }, "the two unread streams to park");
    const res = await gw.fetch("/v1/models/streamer/execute", {
      method: "POST",
      body: JSON.stringify({ n: 2 }),
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), [{ token: "t0" }, { token: "t1" }]);
  } finally {
    for (const conn of clients) conn.close();
  }
  // The clients left: their streams are cancelled.
  await until(async () => {
    const [w] = await workers();
    return w!.parked === 0 && w!.inFlight === 0;
  }, "the streams of the clients that left to end");
});

Deno.test("Gateway model stream: a client that stops reading loses its stream at limits.streamIdleTimeout; the response ends with the error", async () => {
  await using gw = await startGateway({
    allowManage: true,
    limits: { shutdownGrace: 2000, streamIdleTimeout: 1000 },
  });
  const marker = `${gw.dir}/closed`;
  await putModel(
    gw,
    "chunks",
    "chunks.py",
    `class Chunks:
    def execute(self, msg):
        try:
            while True:
                yield "x" * 65536
        finally:
            with open(msg["marker"], "a") as f:
                f.write("finally")
`,
  );
  const status = async () => await (await gw.fetch("/v1/status")).json();
  const metric = async (series: string) => {
    const text = await (await gw.fetch("/metrics")).text();
    const line = text.split("\n").find((l) => l.startsWith(series + " "));
    return line === undefined ? 0 : Number(line.slice(series.length + 1));
  };
  // A client that sends its request, reads the head, and stops reading.
  const body = JSON.stringify({ marker });
  const head = [
    "POST /v1/models/chunks/stream HTTP/1.1",
    `Host: 127.0.0.1:${gw.port}`,
    "Content-Type: application/json",
    `Content-Length: ${body.length}`,
    ...(gw.token === undefined ? [] : [`Authorization: Bearer ${gw.token}`]),
  ].join("\r\n");
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: gw.port });
  try {
    await conn.write(new TextEncoder().encode(`${head}\r\n\r\n${body}`));
    const buf = new Uint8Array(1 << 20);
    const got = await conn.read(buf);
    assert.match(
      new TextDecoder().decode(buf.subarray(0, got ?? 0)),
      /^HTTP\/1\.1 200 OK\r\n/,
    );
    await until(
      async () => (await status()).workers[0].parked === 1,
      "the unread stream to park",
    );
    // Its client took nothing for a second: the model is closed...
    await until(
      () =>
        Deno.readTextFile(marker).then(
          (text) => text === "finally",
          () => false,
        ),
      "the generator's finally",
    );
    await until(async () => {
      const [w] = (await status()).workers;
      return w.parked === 0 && w.inFlight === 0;
    }, "the idle stream's counts to go");
    // ...and the request counts as a 408, no longer in flight.
    await until(
      async () =>
        await metric(
          'pyproxy_requests_total{model="chunks",status="408"}',
        ) === 1,
      "the 408",
    );
    assert.equal(await metric('pyproxy_in_flight_requests{model="chunks"}'), 0);
    // The client reads again: what the sockets held, then the error event,
    // then the end of the response (the last chunk of the body).
    let tail = "";
    const decoder = new TextDecoder();
    while (!tail.endsWith("\r\n0\r\n\r\n")) {
      const n = await conn.read(buf);
      assert.notEqual(n, null, "the connection ended before the response");
      tail = (tail + decoder.decode(buf.subarray(0, n!))).slice(-4096);
    }
    const event = tail.slice(tail.lastIndexOf("event: "));
    assert.match(
      event,
      /^event: error\ndata: \{"error":\{"type":"StreamIdleError"/,
    );
    assert.match(
      event,
      /no item taken for 1000 ms \(the gateway's limits\.streamIdleTimeout, serve --stream-idle-timeout\)/,
    );
  } finally {
    conn.close();
  }
});
