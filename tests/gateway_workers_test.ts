/**
 * `PUT /v1/workers` through a real gateway and real Python workers: who may
 * call it, its body's validation, its effect on /v1/status and /metrics,
 * one resize at a time, and the 504 past `limits.loadTimeout`.
 */
import assert from "node:assert/strict";
import { startGateway, until, writeStickyModel } from "./_gateway_harness.ts";
import { assertGone, nextEvent } from "./_pool_harness.ts";

const put = (body: unknown): RequestInit => ({
  method: "PUT",
  body: JSON.stringify(body),
});

interface WorkerView {
  id: string;
  pid: number | null;
  state: string;
  stderrTail?: string;
}

async function status(
  gw: { fetch(path: string): Promise<Response> },
): Promise<string[]> {
  const body = await (await gw.fetch("/v1/status")).json();
  return body.workers.map((w: WorkerView) => `${w.id} ${w.state}`);
}

Deno.test("PUT /v1/workers is 403 without --allow-manage and 401 without the token", async () => {
  {
    await using gw = await startGateway({ token: "test-token-0123456789" });
    const res = await gw.fetch("/v1/workers", put({ count: 2 }));
    assert.equal(res.status, 403);
    assert.deepEqual((await res.json()).error, {
      type: "Forbidden",
      message:
        "Cannot manage workers: worker management is disabled (start with --allow-manage)",
    });
    assert.deepEqual(await status(gw), ["w1 ready"]);
  }
  {
    // --allow-manage without a token gets a generated one.
    await using gw = await startGateway({ allowManage: true });
    assert.ok(gw.token !== undefined);
    const res = await fetch(`${gw.url}/v1/workers`, put({ count: 2 }));
    assert.equal(res.status, 401);
    await res.body?.cancel();
    const wrong = await gw.fetch("/v1/workers", {
      ...put({ count: 2 }),
      headers: { authorization: "Bearer not-the-token-at-all" },
    });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    assert.deepEqual(await status(gw), ["w1 ready"]);
  }
});

Deno.test("PUT /v1/workers validates its body with a 400 naming the problem", async () => {
  await using gw = await startGateway({ allowManage: true });
  const cases: Array<[unknown, string]> = [
    [{}, "Cannot resize pool: expected {count}, {min, max} or both"],
    [
      { count: 0 },
      "Cannot resize pool: count: expected an integer from 1 to 1024",
    ],
    [
      { count: 1025 },
      "Cannot resize pool: count: expected an integer from 1 to 1024",
    ],
    [
      { count: 1.5 },
      "Cannot resize pool: count: expected an integer from 1 to 1024",
    ],
    [
      { count: "2" },
      "Cannot resize pool: count: expected an integer from 1 to 1024",
    ],
    [
      { count: 2, workers: 3 },
      "Cannot resize pool: workers: unknown field (allowed: count, min, max)",
    ],
    [[2], "Cannot resize pool: expected {count}, {min, max} or both"],
    [null, "Cannot resize pool: expected {count}, {min, max} or both"],
    [2, "Cannot resize pool: expected {count}, {min, max} or both"],
  ];
  for (const [body, message] of cases) {
    const res = await gw.fetch("/v1/workers", put(body));
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.deepEqual((await res.json()).error, {
      type: "ValidationError",
      message,
    }, JSON.stringify(body));
  }
  const bad = await gw.fetch("/v1/workers", { method: "PUT", body: "{count" });
  assert.equal(bad.status, 400);
  await bad.body?.cancel();
  const get = await gw.fetch("/v1/workers");
  assert.equal(get.status, 405);
  assert.equal(get.headers.get("allow"), "PUT");
  await get.body?.cancel();
  assert.deepEqual(await status(gw), ["w1 ready"]);
});

Deno.test("PUT /v1/workers grows and shrinks the pool: /v1/status, /metrics and the models follow", async () => {
  await using gw = await startGateway({ allowManage: true });
  let res = await gw.fetch("/v1/workers", put({ count: 3 }));
  assert.equal(res.status, 200);
  const grown = await res.json();
  assert.equal(grown.previous, 1);
  assert.equal(grown.count, 3);
  assert.deepEqual(
    grown.workers.map((w: WorkerView) => `${w.id} ${w.state}`),
    ["w1 ready", "w2 ready", "w3 ready"],
  );
  // stderr tails only with --debug.
  assert.ok(grown.workers.every((w: WorkerView) => !("stderrTail" in w)));
  assert.deepEqual(await status(gw), ["w1 ready", "w2 ready", "w3 ready"]);
  const metrics = await (await gw.fetch("/metrics")).text();
  assert.match(metrics, /^pyproxy_workers\{state="ready"\} 3$/m);
  // Every worker has the models of the directory and serves.
  const pids = new Set<number>();
  for (let i = 0; i < 9; i++) {
    const call = await gw.fetch("/v1/models/whoami/execute", {
      method: "POST",
      body: "{}",
    });
    assert.equal(call.status, 200);
    pids.add((await call.json()).pid);
  }
  assert.equal(pids.size, 3);
  res = await gw.fetch("/v1/workers", put({ count: 1 }));
  assert.equal(res.status, 200);
  const shrunk = await res.json();
  assert.equal(shrunk.previous, 3);
  assert.equal(shrunk.count, 1);
  assert.deepEqual(await status(gw), [`${shrunk.workers[0].id} ready`]);
  const kept = shrunk.workers[0].pid;
  await assertGone([...pids].filter((pid) => pid !== kept));
  assert.match(
    await (await gw.fetch("/metrics")).text(),
    /^pyproxy_workers\{state="ready"\} 1$/m,
  );
});

Deno.test("PUT /v1/workers: 409 while a resize runs, 504 past limits.loadTimeout, and the resize goes on", async () => {
  await using gw = await startGateway({
    allowManage: true,
    limits: { loadTimeout: 1500 },
  });
  const flag = await writeStickyModel(gw.dir);
  const added = await gw.fetch(
    "/v1/models/sticky",
    put({ file: "sticky.py" }),
  );
  assert.equal(added.status, 201);
  await added.body?.cancel();
  // From now on the model hangs when loaded: a new worker's replay too.
  await Deno.writeTextFile(flag, "");
  const started = nextEvent(gw.pool, "worker-added");
  const growing = gw.fetch("/v1/workers", put({ count: 2 }));
  await started;
  let res = await gw.fetch("/v1/workers", put({ count: 3 }));
  assert.equal(res.status, 409);
  assert.equal(res.headers.get("retry-after"), "1");
  assert.deepEqual((await res.json()).error, {
    type: "ResizeInProgress",
    message:
      "Cannot resize pool to 3 workers: a resize from 1 to 2 workers is in progress",
    from: 1,
    to: 2,
  });
  res = await growing;
  assert.equal(res.status, 504);
  const { error } = await res.json();
  assert.equal(error.type, "TimeoutError");
  assert.match(
    error.message,
    /^Cannot resize pool to 2 workers: not done within 1500 ms/,
  );
  // The new worker's replay times out in its turn: its start fails, and the
  // resize, whose every new worker failed, takes it away again.
  await until(async () => {
    const again = await gw.fetch("/v1/workers", put({ count: 1 }));
    await again.body?.cancel();
    return again.status === 200;
  }, "the resize to end");
  assert.deepEqual(await status(gw), ["w1 ready"]);
  await Deno.remove(flag);
  // A worker's start and replay fit loadTimeout (1500 ms, short for the
  // hanging replay above) on an idle machine only: on a busy one this PUT
  // was a 504 while its resize went on. Asked again until it answers 200:
  // a 409 while that resize runs, then 200 with the pool at 2.
  await until(async () => {
    const again = await gw.fetch("/v1/workers", put({ count: 2 }));
    await again.body?.cancel();
    assert.ok([200, 409, 504].includes(again.status), String(again.status));
    return again.status === 200;
  }, "the resize to 2 workers");
  // w2 was used by the failed resize: ids are never reused.
  assert.deepEqual(await status(gw), ["w1 ready", "w3 ready"]);
});

Deno.test("PUT /v1/workers is 409 while a resize it did not start runs (autoscale's, the library's), not queued behind it", async () => {
  await using gw = await startGateway({ workers: 1, allowManage: true });
  // The library's resize stands for the autoscale plugin's (both go
  // through pool.resize): a PUT used to wait behind it, past loadTimeout.
  const other = gw.pool.resize(3);
  try {
    assert.equal(gw.pool.status().resizing, true);
    const res = await gw.fetch("/v1/workers", put({ count: 2 }));
    assert.equal(res.status, 409);
    assert.equal(res.headers.get("retry-after"), "1");
    const body = await res.json();
    assert.equal(body.error.type, "ResizeInProgress");
    assert.match(body.error.message, /another resize .* is in progress/);
  } finally {
    await other;
  }
  assert.equal(gw.pool.status().resizing, false);
  assert.equal((await status(gw)).length, 3);
});

const ENV_PROBE = `import os


class EnvProbe:
    def execute(self, msg):
        return {
            "threads": os.environ.get("OMP_NUM_THREADS"),
            "slot": os.environ.get("SLOT"),
            "tag": os.environ.get("TAG"),
            "has_key": "MODEL_API_KEY" in os.environ,
        }
`;

Deno.test("pyproxy.json env: every worker gets it with {worker} and {index} filled in, a resize's new worker takes a freed index, /v1/status shows no value", async () => {
  const secret = "sk-live-0123456789abcdef";
  await using gw = await startGateway({
    workers: 2,
    allowManage: true,
    env: {
      OMP_NUM_THREADS: "3",
      SLOT: "{index}",
      TAG: "run-{worker}-{index}",
      MODEL_API_KEY: secret,
    },
  }, { "env_probe.py": ENV_PROBE });
  const probe = (worker: string) =>
    gw.pool.execute("env_probe", {}, { worker });
  assert.deepEqual(await probe("w1"), {
    threads: "3",
    slot: "0",
    tag: "run-w1-0",
    has_key: true,
  });
  assert.deepEqual(await probe("w2"), {
    threads: "3",
    slot: "1",
    tag: "run-w2-1",
    has_key: true,
  });
  // Over HTTP, as a client sees it.
  const res = await gw.fetch("/v1/models/env_probe/execute", {
    method: "POST",
    body: "{}",
  });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).threads, "3");
  // The status names no value (a key, a token), and tells each index.
  const text = await (await gw.fetch("/v1/status")).text();
  assert.ok(!text.includes(secret), "the status shows an env value");
  assert.deepEqual(
    JSON.parse(text).workers.map((w: { id: string; index: number }) =>
      `${w.id}:${w.index}`
    ),
    ["w1:0", "w2:1"],
  );
  // A resize removes one worker: the next one added (w3) takes its index.
  let put1 = await gw.fetch("/v1/workers", put({ count: 1 }));
  assert.equal(put1.status, 200);
  await put1.body?.cancel();
  const [left] = gw.pool.status().workers;
  assert.ok(left !== undefined);
  put1 = await gw.fetch("/v1/workers", put({ count: 2 }));
  assert.equal(put1.status, 200);
  await put1.body?.cancel();
  const freed = 1 - left.index;
  assert.deepEqual(await probe("w3"), {
    threads: "3",
    slot: String(freed),
    tag: `run-w3-${freed}`,
    has_key: true,
  });
});
