/**
 * Which series a model call counts under: a 404 the model answered is its
 * own call (its first one too), a 404 that found no model adds no series;
 * past `maxModels` names a model the pool has still gets series of its
 * own, and a model removed on the pool directly takes them with it.
 */
import assert from "node:assert/strict";
import { GatewayMetrics } from "../src/gateway/metrics.ts";
import { createGateway } from "../src/gateway/app.ts";
import { Pool } from "../src/pool.ts";
import { modelsDir, PidTracker, poolOptions } from "./_pool_harness.ts";

Deno.test("GatewayMetrics: a 404 the model answered counts as its call, its first one too; a 404 that found no model adds no series", () => {
  const metrics = new GatewayMetrics();
  metrics.start("real")(404, true);
  metrics.start("junk")(404);
  metrics.start("junk")(404, false);
  assert.deepEqual(metrics.modelTotals("real")?.fail.count, 1);
  assert.equal(metrics.modelTotals("junk"), undefined);
  assert.equal(metrics.modelTotals("_unknown")?.fail.count, 2);
  assert.equal(metrics.size, 2); // real, _unknown
  // A name with calls of its own: a 404 that found no model (it was
  // removed) is still no call of it.
  metrics.start("real")(200);
  metrics.start("real")(404);
  assert.deepEqual(metrics.modelTotals("real")?.success.count, 1);
  assert.deepEqual(metrics.modelTotals("real")?.fail.count, 1);
  assert.equal(metrics.modelTotals("_unknown")?.fail.count, 3);
});

Deno.test("GatewayMetrics past maxModels: a model isModel knows gets series of its own, other names count under _other", () => {
  const loaded = new Set(["a", "b", "c", "d@1"]);
  const asked: string[] = [];
  const metrics = new GatewayMetrics({
    maxModels: 2,
    isModel: (name) => {
      asked.push(name);
      return loaded.has(name);
    },
  });
  // Names that are no model but end with another status than 404 (a body
  // refused before the pool was asked) take the first rows.
  metrics.start("x")(400);
  metrics.start("y")(400);
  assert.deepEqual(asked, []); // not asked below the bound
  for (const name of loaded) metrics.start(name)(200);
  metrics.start("z")(400);
  for (const name of loaded) {
    assert.equal(metrics.modelTotals(name)?.success.count, 1, name);
  }
  assert.equal(metrics.modelTotals("z"), undefined);
  assert.equal(metrics.modelTotals("_other")?.fail.count, 1);
  // Asked once per name: a model's series, once made, is kept.
  for (const name of loaded) metrics.start(name)(200);
  assert.deepEqual(asked, ["a", "b", "c", "d@1", "z"]);
  // Without isModel, as before: past the bound, _other.
  const plain = new GatewayMetrics({ maxModels: 1 });
  plain.start("a")(200);
  plain.start("b")(200);
  assert.equal(plain.modelTotals("b"), undefined);
  assert.equal(plain.modelTotals("_other")?.success.count, 1);
});

const RAISER = `
from pyproxy import HTTPError


class Raiser:
    def execute(self, msg):
        if msg.get("missing"):
            raise HTTPError(404, "no such item")
        return {"ok": True}
`;

Deno.test("createGateway over a pool: a model's first call answered 404 by the model is in its statistics; past 1000 models each gets its own; a model removed on the pool takes its series", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
    pids.watch(pool);
    const names = Array.from({ length: 1010 }, (_, i) => `m${i}`);
    for (let i = 0; i < names.length; i += 100) {
      await Promise.all(
        names.slice(i, i + 100).map((n) =>
          pool.addModel(n, { source: RAISER })
        ),
      );
    }
    const stop = new AbortController();
    const app = createGateway(pool, {
      port: () => 8000,
      stopSignal: stop.signal,
    });
    const send = async (path: string, body?: unknown) => {
      const res = await app.fetch(
        new Request(`http://127.0.0.1:8000${path}`, {
          headers: { host: "127.0.0.1:8000" },
          ...(body === undefined
            ? {}
            : { method: "POST", body: JSON.stringify(body) }),
        }),
      );
      return { status: res.status, body: await res.json() };
    };
    const stats = async (name: string) =>
      (await send(`/v2/models/${name}/stats`)).body.model_stats[0]
        .inference_stats;
    // The model's own 404, as its first call: a failure of its own (was
    // counted under _unknown, its statistics zero).
    assert.equal(
      (await send("/v1/models/m0/execute", { missing: true })).status,
      404,
    );
    assert.deepEqual((await stats("m0")).fail.count, 1);
    // A name that is no model: no series.
    for (let i = 0; i < 20; i++) {
      assert.equal((await send(`/v1/models/junk${i}/execute`, {})).status, 404);
    }
    for (const name of names) {
      assert.equal((await send(`/v1/models/${name}/execute`, {})).status, 200);
    }
    // Past the metrics' 1000 names, the last models still count (were
    // under _other, their statistics zero).
    for (const name of names.slice(-5)) {
      assert.equal((await stats(name)).success.count, 1, name);
    }
    let text = await (await app.fetch(
      new Request("http://127.0.0.1:8000/metrics", {
        headers: { host: "127.0.0.1:8000" },
      }),
    )).text();
    assert.ok(!text.includes('model="_other"'));
    assert.ok(!text.includes('model="junk'));
    assert.ok(
      text.includes('pyproxy_requests_total{model="m0",status="404"} 1'),
    );
    assert.ok(
      text.includes('pyproxy_requests_total{model="m1009",status="200"} 1'),
    );
    // Removed on the pool directly: its series go, as a DELETE's do.
    await pool.removeModel("m1009");
    text = await (await app.fetch(
      new Request("http://127.0.0.1:8000/metrics", {
        headers: { host: "127.0.0.1:8000" },
      }),
    )).text();
    assert.ok(!text.includes('model="m1009"'));
    stop.abort();
  } finally {
    await pids.assertGone();
  }
});
