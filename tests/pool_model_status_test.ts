/**
 * `pool.modelStatus(name)` and `pool.workerStatus()`: one model's entries,
 * and the workers, as `status()` lists them, without listing every model.
 * Real Python workers.
 */
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import { modelsDir, PidTracker, poolOptions } from "./_pool_harness.ts";

const ECHO = `
class Echo:
    timeout_ms = 5000

    def execute(self, msg):
        return msg
`;

/** What `status()` lists under `name`, the way `modelStatus` should. */
function listed(pool: Pool, name: string) {
  return pool.status().models.filter((m) => m.name === name);
}

Deno.test("Pool modelStatus: a model's entries as status() lists them (plain, placed, versions with the default, a library name with '@'), [] for none or a version's internal name", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 2 }));
    pids.watch(pool);
    await pool.addModel("plain", { source: ECHO, timeout: 1234 });
    await pool.addModel("placed", { source: ECHO, workers: 1 });
    await pool.addModel("v", { source: ECHO, version: "1" });
    await pool.addModel("v", { source: ECHO, version: "2", workers: 1 });
    await pool.addModel("a@b", { source: ECHO });
    await pool.setDefaultVersion("v", "2");
    for (const name of ["plain", "placed", "v", "a@b"]) {
      assert.deepEqual(pool.modelStatus(name), listed(pool, name), name);
    }
    assert.deepEqual(
      pool.modelStatus("v").map((m) => [m.version, m.default]),
      [["1", false], ["2", true]],
    );
    assert.equal(pool.modelStatus("plain")[0]?.timeout, 1234);
    assert.equal(pool.modelStatus("placed")[0]?.slots?.length, 1);
    // Not a model: none, as status() lists no entry of that name.
    assert.deepEqual(pool.modelStatus("v@1"), []);
    assert.deepEqual(pool.modelStatus("nope"), []);
    await pool.removeModel("v", { version: "1" });
    assert.deepEqual(pool.modelStatus("v"), listed(pool, "v"));
    assert.equal(pool.modelStatus("v").length, 1);
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool workerStatus: the workers as status() lists them, without each one's models", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 2 }));
    pids.watch(pool);
    await pool.addModel("plain", { source: ECHO });
    const strip = (w: object) => {
      const { models: _models, uptime: _uptime, ...rest } = w as Record<
        string,
        unknown
      >;
      return rest;
    };
    assert.deepEqual(
      pool.workerStatus().map(strip),
      pool.status().workers.map(strip),
    );
    assert.ok(pool.workerStatus().every((w) => w.models === undefined));
    assert.deepEqual(pool.status().workers.map((w) => w.models), [
      ["plain"],
      ["plain"],
    ]);
  } finally {
    await pids.assertGone();
  }
});
