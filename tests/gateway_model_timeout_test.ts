/**
 * Per-model timeouts through a real gateway and real Python workers: the
 * config's `models[].timeout`, the `PUT` body's `timeout` and the class's
 * `timeout_ms` replace `limits.requestTimeout` for their model (above or
 * below it), `?timeout=` only lowers them, the routes show them.
 */
import assert from "node:assert/strict";
import { startGateway, until } from "./_gateway_harness.ts";
import { Pool } from "../src/pool.ts";
import { createGateway } from "../src/gateway/app.ts";

const post = (body: unknown): RequestInit => ({
  method: "POST",
  body: JSON.stringify(body),
});
const put = (body: unknown): RequestInit => ({
  method: "PUT",
  body: JSON.stringify(body),
});

/**
 * The close's grace for the calls in flight, in ms: none. The calls these
 * tests give up on still sleep in the model (a cancel cannot cut a
 * time.sleep short), and each close waited for them (~2 s a test, 7 s of
 * the file's 15); what a close does with such calls is
 * gateway_shutdown_test's.
 */
const NO_GRACE = 0;

/** Sleeps msg["seconds"]; its author says its calls may take 150 ms. */
const DECLARED = `import time


class Declared:
    timeout_ms = 150

    def execute(self, msg):
        time.sleep(msg.get("seconds", 0))
        return {"slept": msg.get("seconds", 0)}
`;

/** The status of a call and how long it took, its body read. */
async function timed(
  response: Promise<Response>,
): Promise<{ status: number; ms: number; body: Record<string, unknown> }> {
  const t0 = Date.now();
  const res = await response;
  const text = await res.text();
  return {
    status: res.status,
    ms: Date.now() - t0,
    body: res.headers.get("content-type")?.startsWith("application/json")
      ? JSON.parse(text)
      : { text },
  };
}

/** The message of an error response read by {@linkcode timed}. */
const message = (r: { body: Record<string, unknown> }): string =>
  (r.body.error as { message: string }).message;

Deno.test("Gateway: models[].timeout is the default of its model's calls, above or below limits.requestTimeout; ?timeout= only lowers it", async () => {
  await using gw = await startGateway({
    limits: { requestTimeout: 400, shutdownGrace: NO_GRACE },
    models: [
      { name: "tight", file: "slow.py", timeout: 150 },
      { name: "image", file: "slow.py", timeout: 10_000 },
      { name: "plain", file: "slow.py" },
      { name: "echo", file: "echo.py" },
    ],
  });
  // The direct execute path (no query string).
  let r = await timed(
    gw.fetch("/v1/models/tight/execute", post({ seconds: 2 })),
  );
  assert.equal(r.status, 504);
  assert.equal((r.body.error as { type: string }).type, "TimeoutError");
  assert.ok(r.ms < 1500, `504 after ${r.ms} ms`);
  // The model and the setting that timed it out, not the pool's internal
  // command ("Cannot complete executeModel: timed out after 150 ms").
  assert.equal(
    message(r),
    `Cannot run model 'tight': no answer within 150 ms, its "timeout" (its pyproxy.json entry or PUT body); the call was cancelled`,
  );
  // Other models: unaffected.
  r = await timed(gw.fetch("/v1/models/echo/execute", post({ x: 1 })));
  assert.equal(r.status, 200);
  r = await timed(gw.fetch("/v1/models/plain/execute", post({ seconds: 0.1 })));
  assert.equal(r.status, 200);
  // Longer than the gateway's 400 ms (a sleep of 0.5 s: a 504 at 400 ms
  // if that applied), within the model's own 10 s.
  r = await timed(gw.fetch("/v1/models/image/execute", post({ seconds: 0.5 })));
  assert.deepEqual([r.status, r.body], [200, { slept: 0.5 }]);
  // The gateway's 400 ms for a model without one.
  r = await timed(gw.fetch("/v1/models/plain/execute", post({ seconds: 2 })));
  assert.equal(r.status, 504);
  assert.equal(
    message(r),
    `Cannot run model 'plain': no answer within 400 ms, the gateway's limits.requestTimeout (serve --timeout), as the model sets none: give it a "timeout" in its pyproxy.json entry or PUT body; the call was cancelled`,
  );
  // ?timeout= (the routed path) lowers the model's...
  r = await timed(
    gw.fetch("/v1/models/image/execute?timeout=150", post({ seconds: 2 })),
  );
  assert.equal(r.status, 504);
  assert.equal(
    message(r),
    "Cannot run model 'image': no answer within 150 ms, the request's ?timeout=; the call was cancelled",
  );
  // ...and cannot raise it.
  r = await timed(
    gw.fetch("/v1/models/tight/execute?timeout=10000", post({ seconds: 2 })),
  );
  assert.equal(r.status, 504);
  assert.ok(r.ms < 1500, `504 after ${r.ms} ms`);
  // The Open Inference Protocol's infer names it the same way.
  r = await timed(
    gw.fetch(
      "/v2/models/tight/infer",
      post({
        inputs: [{ name: "seconds", datatype: "FP64", shape: [], data: [2] }],
      }),
    ),
  );
  assert.equal(r.status, 504);
  assert.equal(
    r.body.error,
    `Cannot run model 'tight': no answer within 150 ms, its "timeout" (its pyproxy.json entry or PUT body); the call was cancelled`,
  );
  // A stream: the model's timeout covers it, as the gateway's did.
  r = await timed(gw.fetch("/v1/models/tight/stream", post({ seconds: 2 })));
  assert.equal(r.status, 504);
  assert.match(
    message(r),
    /^Cannot run model 'tight': no answer within 150 ms, its "timeout"/,
  );
  r = await timed(gw.fetch("/v1/models/image/stream", post({ seconds: 0.5 })));
  assert.equal(r.status, 200);
  assert.match(r.body.text as string, /event: end/);
  // What the routes show: the timeout a call gets, and where it comes from.
  const one = await (await gw.fetch("/v1/models/tight")).json();
  assert.deepEqual([one.timeout, one.timeoutSource], [150, "spec"]);
  const { models } = await (await gw.fetch("/v1/models")).json();
  const shown = Object.fromEntries(
    (models as Array<{ name: string; timeout: number; timeoutSource: string }>)
      .map((m) => [m.name, [m.timeout, m.timeoutSource]]),
  );
  assert.deepEqual(shown, {
    tight: [150, "spec"],
    image: [10_000, "spec"],
    plain: [400, "default"],
    echo: [400, "default"],
  });
  const status = await (await gw.fetch("/v1/status")).json();
  assert.deepEqual(
    status.models.map((m: { timeout: number }) => m.timeout),
    [150, 10_000, 400, 400],
  );
  const doc = await (await gw.fetch("/openapi.json")).json();
  assert.match(
    doc.paths["/v1/models/image/execute"].post.description,
    /Its calls time out after 10000 ms/,
  );
});

Deno.test("Gateway: a call whose timeout passes in the queue says it waited for a worker", async () => {
  await using gw = await startGateway({
    workers: 1,
    limits: { maxInFlightPerWorker: 1, shutdownGrace: 2000 },
    models: [{ name: "tight", file: "slow.py", timeout: 2000 }],
  });
  // The worker's one slot, taken for a second.
  const first = timed(
    gw.fetch("/v1/models/tight/execute", post({ seconds: 1 })),
  );
  await until(
    () => Promise.resolve(gw.pool.status().workers[0]!.inFlight === 1),
    "the first call to run",
  );
  const r = await timed(
    gw.fetch("/v1/models/tight/execute?timeout=100", post({ seconds: 0 })),
  );
  assert.equal(r.status, 504);
  assert.equal(
    message(r),
    "Cannot run model 'tight': no answer within 100 ms, the request's ?timeout=; it waited all that time for a worker (each had limits.maxInFlightPerWorker calls running: more workers, or a faster model)",
  );
  // For a client's retry logic: it never ran.
  assert.equal((r.body.error as Record<string, unknown>).waited, "queue");
  assert.equal((await first).status, 200);
});

Deno.test("Gateway: PUT's timeout beats the class's timeout_ms; an update changes it; it holds after a worker restart; a bad one is a 400", async () => {
  await using gw = await startGateway(
    { allowManage: true, models: [], limits: { shutdownGrace: NO_GRACE } },
    { "declared.py": DECLARED },
  );
  let res = await gw.fetch("/v1/models/d", put({ file: "declared.py" }));
  assert.equal(res.status, 201);
  let { model } = await res.json();
  assert.deepEqual([model.timeout, model.timeoutSource], [150, "class"]);
  let r = await timed(gw.fetch("/v1/models/d/execute", post({ seconds: 2 })));
  assert.equal(r.status, 504);
  assert.equal(
    message(r),
    `Cannot run model 'd': no answer within 150 ms, its class's timeout_ms (a "timeout" in its pyproxy.json entry or PUT body overrides it); the call was cancelled`,
  );
  assert.equal((r.body.error as Record<string, unknown>).waited, "worker");
  // The operator's over the author's.
  res = await gw.fetch(
    "/v1/models/d",
    put({ file: "declared.py", timeout: 10_000 }),
  );
  assert.equal(res.status, 200);
  ({ model } = await res.json());
  assert.deepEqual([model.timeout, model.timeoutSource], [10_000, "spec"]);
  r = await timed(gw.fetch("/v1/models/d/execute", post({ seconds: 0.5 })));
  assert.equal(r.status, 200);
  // Down again, then a restart of the worker: still the model's.
  res = await gw.fetch("/v1/models/d", put({ file: "slow.py", timeout: 150 }));
  assert.equal(res.status, 200);
  await res.body?.cancel();
  const worker = gw.pool.status().workers[0]!;
  Deno.kill(worker.pid!, "SIGKILL");
  await until(() => {
    const w = gw.pool.status().workers[0]!;
    return Promise.resolve(w.state === "ready" && w.pid !== worker.pid);
  }, "the worker to restart");
  r = await timed(gw.fetch("/v1/models/d/execute", post({ seconds: 2 })));
  assert.equal(r.status, 504);
  assert.ok(r.ms < 1500, `504 after ${r.ms} ms`);
  // Without one, the gateway's default (30 s) is shown.
  res = await gw.fetch("/v1/models/d", put({ file: "slow.py" }));
  ({ model } = await res.json());
  assert.deepEqual([model.timeout, model.timeoutSource], [30_000, "default"]);
  for (const timeout of [0, -5, 1.5, "100", 2 ** 31, null]) {
    res = await gw.fetch("/v1/models/d", put({ file: "slow.py", timeout }));
    assert.equal(res.status, 400, String(timeout));
    const { error } = await res.json();
    assert.equal(error.type, "ValidationError");
    assert.ok(
      error.message.startsWith(
        "Cannot load model 'd': timeout: expected an integer number of ms from 1 to 2147483647",
      ),
      error.message,
    );
  }
  // Still the last good one.
  const one = await (await gw.fetch("/v1/models/d")).json();
  assert.equal(one.timeoutSource, "default");
});

Deno.test("createGateway over a pool: a model added to the pool directly keeps its timeout (spec's or class's), and the routes show it", async () => {
  const slow = `import time


class Slow:
    def execute(self, msg):
        time.sleep(msg.get("seconds", 0))
        return {"slept": msg.get("seconds", 0)}
`;
  const pool = await Pool.start({ workers: 1, shutdownGrace: NO_GRACE });
  try {
    await pool.addModel("spec", { source: slow, timeout: 150 });
    await pool.addModel("long", { source: slow, timeout: 10_000 });
    await pool.addModel("declared", { source: DECLARED });
    await pool.addModel("plain", { source: slow });
    const app = createGateway(pool, {
      port: () => 8000,
      requestTimeout: 400,
    });
    const call = (path: string, body: unknown) =>
      timed(
        Promise.resolve(app.fetch(
          new Request(`http://127.0.0.1:8000${path}`, {
            method: "POST",
            body: JSON.stringify(body),
            headers: { host: "127.0.0.1:8000" },
          }),
        )),
      );
    let r = await call("/v1/models/spec/execute", { seconds: 2 });
    assert.equal(r.status, 504);
    assert.ok(r.ms < 1500, `504 after ${r.ms} ms`);
    r = await call("/v1/models/declared/execute", { seconds: 2 });
    assert.equal(r.status, 504);
    assert.ok(r.ms < 1500, `504 after ${r.ms} ms`);
    // Above the gateway's 400 ms, within the model's own 10 s.
    r = await call("/v1/models/long/execute", { seconds: 0.6 });
    assert.deepEqual([r.status, r.body], [200, { slept: 0.6 }]);
    // ?timeout= still only lowers it.
    r = await call("/v1/models/long/execute?timeout=100", { seconds: 2 });
    assert.equal(r.status, 504);
    r = await call("/v1/models/plain/execute", { seconds: 2 });
    assert.equal(r.status, 504);
    const list = await app.fetch(
      new Request("http://127.0.0.1:8000/v1/models", {
        headers: { host: "127.0.0.1:8000" },
      }),
    );
    const models = (await list.json()).models as {
      name: string;
      timeout: number;
      timeoutSource: string;
    }[];
    const seen = Object.fromEntries(
      models.map((m) => [m.name, [m.timeout, m.timeoutSource]]),
    );
    assert.deepEqual(seen, {
      spec: [150, "spec"],
      long: [10_000, "spec"],
      declared: [150, "class"],
      plain: [400, "default"],
    });
    // Each model's own route says the same.
    for (const [name, shown] of Object.entries(seen)) {
      const one = await (await app.fetch(
        new Request(`http://127.0.0.1:8000/v1/models/${name}`, {
          headers: { host: "127.0.0.1:8000" },
        }),
      )).json();
      assert.deepEqual([one.timeout, one.timeoutSource], shown, name);
    }
  } finally {
    await pool.close();
  }
});

/** Yields msg["items"] items, then sleeps msg["seconds"]. */
const DRIP = `import time


class Drip:
    def execute(self, msg):
        for i in range(msg.get("items", 1)):
            yield i
        time.sleep(msg.get("seconds", 0))
        yield "late"
`;

Deno.test("Gateway: a stream that times out after its first item ends with an error event naming the model, the time and its setting", async () => {
  await using gw = await startGateway(
    {
      limits: { requestTimeout: 300, shutdownGrace: NO_GRACE },
      models: [
        { name: "drip", file: "drip.py", timeout: 250 },
        { name: "plain", file: "drip.py" },
      ],
    },
    { "drip.py": DRIP },
  );
  /** The data of the stream's `error` event, after its items. */
  const lastError = async (path: string, body: unknown) => {
    const res = await gw.fetch(path, post(body));
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /event: item/);
    const data = text.match(/event: error\ndata: (.*)\n/)?.[1];
    assert.ok(data !== undefined, text);
    return JSON.parse(data).error as { type: string; message: string };
  };
  // Before: "Cannot complete executeStream: timed out after 250 ms" (the
  // pool's internal command, no model, no setting).
  let error = await lastError("/v1/models/drip/stream", {
    items: 2,
    seconds: 5,
  });
  assert.deepEqual(error.type, "TimeoutError");
  assert.equal(
    error.message,
    `Cannot complete the stream of model 'drip': it ran 250 ms, the limit of a whole stream, its "timeout" (its pyproxy.json entry or PUT body); cancelled after 2 items`,
  );
  error = await lastError("/v1/models/drip/stream?timeout=150", {
    seconds: 5,
  });
  assert.equal(
    error.message,
    "Cannot complete the stream of model 'drip': it ran 150 ms, the limit of a whole stream, the request's ?timeout=; cancelled after 1 item",
  );
  error = await lastError("/v1/models/plain/stream", { seconds: 5 });
  assert.match(
    error.message,
    /^Cannot complete the stream of model 'plain': it ran 300 ms, the limit of a whole stream, the gateway's limits\.requestTimeout/,
  );
});
