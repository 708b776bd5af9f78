/**
 * The routes about one model (its status, readiness, metadata, config,
 * statistics, its calls) and `/healthz` read that model's entries and the
 * workers (`pool.modelStatus`, `pool.workerStatus`), not the whole
 * `status()`: with thousands of models a probe per model per second made
 * each list them all. Real Python workers.
 */
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import { createGateway } from "../src/gateway/app.ts";
import { modelsDir, PidTracker, poolOptions } from "./_pool_harness.ts";

const SCALE = `
class Scale:
    inputs = {"x": "number"}
    outputs = {"y": "number"}

    def execute(self, msg):
        # :predict sends the whole body: {"instances": [...]}.
        x = msg["instances"][0]["x"] if "instances" in msg else msg["x"]
        return {"y": x * 2}
`;

Deno.test("createGateway over a pool: the routes about one model and /healthz never build the pool's whole status", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 2 }));
    pids.watch(pool);
    await pool.addModel("plain", { source: SCALE });
    await pool.addModel("placed", { source: SCALE, workers: 1 });
    await pool.addModel("v", { source: SCALE, version: "1" });
    await pool.addModel("v", { source: SCALE, version: "2", workers: 1 });
    for (let i = 0; i < 50; i++) {
      await pool.addModel(`other${i}`, { source: SCALE });
    }
    const app = createGateway(pool, { port: () => 8000 });
    let built = 0;
    const status = pool.status.bind(pool);
    pool.status = () => {
      built++;
      return status();
    };
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
    const seen: Record<string, number> = {};
    const bodies: Record<string, unknown> = {};
    const ask = async (path: string, body?: unknown) => {
      const res = await send(path, body);
      seen[path] = res.status;
      bodies[path] = res.body;
      return res;
    };
    assert.equal((await ask("/healthz")).body.ready, 2);
    for (const name of ["plain", "placed", "v"]) {
      const one = await ask(`/v1/models/${name}`);
      assert.equal(one.body.ready, true);
      await ask(`/v1/models/${name}/metadata`);
      assert.deepEqual((await ask(`/v2/models/${name}/ready`)).body, {
        name,
        ready: true,
      });
      await ask(`/v2/models/${name}`);
      await ask(`/v2/models/${name}/config`);
      await ask(`/v2/models/${name}/stats`);
      await ask(`/v1/models/${name}/execute`, { x: 2 });
      await ask(`/v1/models/${name}:predict`, { instances: [{ x: 1 }] });
      await ask(`/v2/models/${name}/infer`, {
        inputs: [{ name: "x", shape: [1], datatype: "FP64", data: [1] }],
      });
    }
    // The versions of "v", each one's placement as it is.
    const v = await ask("/v1/models/v");
    assert.deepEqual(
      v.body.model_version_status.map((s: { version: string }) => s.version),
      ["1", "2"],
    );
    assert.equal((await ask("/v2/models/v/stats")).body.model_stats.length, 2);
    await ask("/v1/models/v/versions/2");
    await ask("/v2/models/v/versions/2/ready");
    await ask("/v2/models/nope/ready");
    assert.equal(built, 0, `status() built ${built} times`);
    assert.equal(seen["/v2/models/nope/ready"], 404);
    for (const [path, code] of Object.entries(seen)) {
      if (!path.includes("nope")) {
        assert.equal(code, 200, `${path} ${JSON.stringify(bodies[path])}`);
      }
    }
    // A listing still reads it, once.
    await ask("/v1/models");
    assert.equal(built, 1);
    await ask("/v1/status");
    assert.equal(built, 2, "GET /v1/status built it twice");
  } finally {
    await pids.assertGone();
  }
});
