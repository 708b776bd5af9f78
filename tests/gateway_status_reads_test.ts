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

Deno.test("createGateway over a pool: KServe V2's readiness and metadata of one version read that version's entry alone, not every version's (1.5 ms a probe at 2000 versions)", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
    pids.watch(pool);
    const labels = Array.from({ length: 40 }, (_, i) => String(i + 1));
    for (const label of labels) {
      await pool.addModel("v", { source: SCALE, version: label });
    }
    await pool.addModel("plain", { source: SCALE });
    const app = createGateway(pool, { port: () => 8000 });
    // Each read of every version's entries (modelStatus builds them all).
    let wide = 0;
    const modelStatus = pool.modelStatus.bind(pool);
    pool.modelStatus = (name) => (wide++, modelStatus(name));
    const status = pool.status.bind(pool);
    pool.status = () => (wide++, status());
    const send = async (path: string) => {
      const res = await app.fetch(
        new Request(`http://127.0.0.1:8000${path}`, {
          headers: { host: "127.0.0.1:8000" },
        }),
      );
      return { status: res.status, body: await res.json() };
    };
    assert.deepEqual(await send("/v2/models/v/ready"), {
      status: 200,
      body: { name: "v", ready: true },
    });
    assert.equal((await send("/v2/models/v/versions/20/ready")).status, 200);
    assert.equal((await send("/v2/models/plain/ready")).status, 200);
    const meta = await send("/v2/models/v/versions/20");
    assert.equal(meta.status, 200);
    assert.deepEqual(meta.body.versions, labels);
    assert.deepEqual((await send("/v2/models/v")).body.versions, labels);
    const plain = await send("/v2/models/plain");
    assert.equal(plain.status, 200);
    // KServe V1's (TF Serving's) status of one version too.
    const v1 = await send("/v1/models/v/versions/20");
    assert.equal(v1.status, 200);
    assert.equal(v1.body.label, "20");
    assert.deepEqual(v1.body.versions, labels);
    assert.deepEqual(v1.body.model_version_status, [{
      version: "20",
      state: "AVAILABLE",
      status: { error_code: "OK", error_message: "" },
    }]);
    assert.equal(wide, 0, `${wide} reads of every version's entries`);
    // A model without versions, by its own version number; what is not
    // there is the 404 as before.
    const own = String(plain.body.versions[0]);
    assert.equal(
      (await send(`/v2/models/plain/versions/${own}/ready`)).status,
      200,
    );
    assert.equal((await send("/v2/models/v/versions/99/ready")).status, 404);
    assert.equal(
      (await send("/v2/models/plain/versions/99/ready")).status,
      404,
    );
    assert.equal((await send("/v2/models/none/ready")).status, 404);
    assert.equal((await send("/v2/models/v/versions/99")).status, 404);
    assert.equal((await send("/v1/models/v/versions/99")).status, 404);
    assert.equal(
      (await send(`/v1/models/plain/versions/${own}`)).body.ready,
      true,
    );
  } finally {
    await pids.assertGone();
  }
});
