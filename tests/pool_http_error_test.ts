// A model's pyproxy.HTTPError as the library sees it (ModelHTTPError), and
// request headers sent with a call (host.headers()): real Python workers.
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import { ConfigError, ModelHTTPError, PythonError } from "../src/errors.ts";

const TEST_MODELS =
  new URL("../python/tests/models/", import.meta.url).pathname;

async function startPool(): Promise<Pool> {
  const pool = await Pool.start({
    workers: 1,
    modelsDir: TEST_MODELS,
    handleSignals: false,
  });
  try {
    await pool.addModel("http", { file: "http_errors.py", class: "Model" });
    await pool.addModel("batch", { file: "http_errors.py", class: "Batch" });
    await pool.addModel("stream", { file: "http_errors.py", class: "Stream" });
  } catch (err) {
    await pool.close();
    throw err;
  }
  return pool;
}

// Steps on one pool started as `startPool()`: each of these tests started its
// own (a pool and its Python worker) and needs no fresh one.
Deno.test("ModelHTTPError and request headers in a library pool, on one pool", async (t) => {
  await using pool = await startPool();
  await t.step(
    "ModelHTTPError carries the status, detail and headers a model raised",
    () => modelhttperrorCarriesStatusDetailAnd(pool),
  );
  await t.step(
    "ModelHTTPError settles one message of a batch, and a stream's read",
    () => modelhttperrorSettlesOneMessageBatch(pool),
  );
  await t.step(
    "Pool.execute headers reach host.headers(), per message in a batch",
    () => poolExecuteHeadersReachHost(pool),
  );
  await t.step(
    "Pool.execute refuses headers that are not lower-case names → strings without CR/LF",
    () => poolExecuteRefusesHeadersThat(pool),
  );
  await t.step(
    "An HTTPError raised by eval code is a plain PythonError",
    () => httperrorRaisedByEvalCode(pool),
  );
});

/** A step of "ModelHTTPError and request headers in a library pool, on one pool": ModelHTTPError carries the status, detail and headers a model raised */
async function modelhttperrorCarriesStatusDetailAnd(pool: Pool): Promise<void> {
  const detail = [{ loc: ["body", "x"], msg: "field required" }];
  const err = await pool.execute("http", {
    raise: {
      args: [404, "no such item"],
      kwargs: { detail, headers: { "Retry-After": "5" } },
    },
  }).then(() => assert.fail("resolved"), (e) => e);
  assert.ok(err instanceof ModelHTTPError, String(err));
  assert.ok(err instanceof PythonError);
  assert.equal(err.name, "ModelHTTPError");
  assert.equal(err.code, "MODEL_HTTP_ERROR");
  assert.equal(err.status, 404);
  assert.equal(err.reason, "no such item");
  assert.equal(err.message, "HTTPError: no such item");
  assert.equal(err.type, "HTTPError");
  assert.deepEqual(err.detail, detail);
  assert.deepEqual(err.headers, { "Retry-After": "5" });
  assert.match(err.traceback, /raise HTTPError/);
  // A status that is no error is the model's bug, raised at the raise.
  const bad = await pool.execute("http", { raise: { args: [200] } }).then(
    () => assert.fail("resolved"),
    (e) => e,
  );
  assert.ok(bad instanceof PythonError && !(bad instanceof ModelHTTPError));
  assert.equal(bad.type, "ValueError");
}

/** A step of "ModelHTTPError and request headers in a library pool, on one pool": ModelHTTPError settles one message of a batch, and a stream's read */
async function modelhttperrorSettlesOneMessageBatch(pool: Pool): Promise<void> {
  const [ok, missing] = await Promise.allSettled([
    pool.execute("batch", { i: 0 }),
    pool.execute("batch", { i: 1, missing: true }),
  ]);
  assert.equal(ok.status, "fulfilled");
  assert.equal(missing.status, "rejected");
  const err = (missing as PromiseRejectedResult).reason;
  assert.ok(err instanceof ModelHTTPError, String(err));
  assert.deepEqual([err.status, err.detail], [404, { i: 1 }]);
  const items: unknown[] = [];
  const failed = await (async () => {
    for await (const item of pool.executeStream("stream", { after: true })) {
      items.push(item);
    }
  })().then(() => undefined, (e) => e);
  assert.equal(items.length, 1);
  assert.ok(failed instanceof ModelHTTPError, String(failed));
  assert.deepEqual([failed.status, failed.detail], [409, "late"]);
}

/** A step of "ModelHTTPError and request headers in a library pool, on one pool": Pool.execute headers reach host.headers(), per message in a batch */
async function poolExecuteHeadersReachHost(pool: Pool): Promise<void> {
  const headers = { "accept-language": "de", "x-tenant-id": "t1" };
  assert.deepEqual(await pool.execute("http", {}, { headers }), {
    headers,
    all: [headers],
  });
  assert.deepEqual(await pool.execute("http", {}), { headers: {}, all: [{}] });
  const [a, b] = await Promise.all([
    pool.execute<{ all: unknown[]; i: number }>("batch", { i: 0 }, {
      headers: { "x-tenant-id": "a" },
    }),
    pool.execute<{ all: unknown[]; i: number }>("batch", { i: 1 }),
  ]);
  // Whether or not they went in one batch, each message has its own.
  const seen = (r: { all: unknown[] }) => r.all;
  assert.ok(seen(a).some((h) => JSON.stringify(h) === '{"x-tenant-id":"a"}'));
  assert.equal(b.i, 1);
  const items = [];
  for await (
    const item of pool.executeStream("stream", {}, { headers: { "x-a": "1" } })
  ) items.push(item);
  assert.deepEqual(items, [{ "x-a": "1" }]);
}

/** A step of "ModelHTTPError and request headers in a library pool, on one pool": Pool.execute refuses headers that are not lower-case names → strings without CR/LF */
async function poolExecuteRefusesHeadersThat(pool: Pool): Promise<void> {
  const bad: unknown[] = [
    [["x-a", "1"]],
    "x-a: 1",
    { "X-A": "1" },
    { "x a": "1" },
    { "x-a": 1 },
    { "x-a": "1\r\nx-b: 2" },
    { "x-a": "v".repeat(8193) },
    Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`x-${i}`, "v"])),
  ];
  for (const headers of bad) {
    await assert.rejects(
      pool.execute("http", {}, {
        headers: headers as Record<string, string>,
      }),
      (e: unknown) =>
        e instanceof ConfigError && /headers: expected/.test(e.message),
      JSON.stringify(headers).slice(0, 60),
    );
  }
  // A name in another case says how to write it.
  await assert.rejects(
    pool.execute("http", {}, { headers: { "X-Tenant-Id": "t1" } }),
    (e: unknown) =>
      e instanceof ConfigError &&
      e.message.includes(
        '("X-Tenant-Id" is not lower-case: write "x-tenant-id")',
      ),
  );
  const stream = pool.executeStream("stream", {}, {
    headers: { "x-a": "\n" },
  });
  await assert.rejects(stream.next(), ConfigError);
}

/** A step of "ModelHTTPError and request headers in a library pool, on one pool": An HTTPError raised by eval code is a plain PythonError */
async function httperrorRaisedByEvalCode(pool: Pool): Promise<void> {
  const atom = pool.eval(
    "from pyproxy import HTTPError\nraise HTTPError(404, 'gone')",
  );
  const err = await atom.result.then(
    () => assert.fail("resolved"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof PythonError, String(err));
  assert.ok(!(err instanceof ModelHTTPError));
  assert.equal(err.type, "HTTPError");
}
