/**
 * An update loads fresh copies of the helper modules a model imports from
 * the models directory (python/pyproxy_server/fresh_imports.py), through a
 * real pool and a real gateway.
 */
import assert from "node:assert/strict";
import { RemoteError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { startGateway } from "./_gateway_harness.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  readyAgain,
} from "./_pool_harness.ts";

const READS_UTIL = (cls: string) =>
  `import shared_util\n\nclass ${cls}:\n    def execute(self, msg):\n        return {"v": shared_util.V}\n`;

const util = (v: number, extra = "") => `V = ${v}\n${extra}`;

Deno.test("Pool.updateModel loads edited helpers on every worker; another model keeps the helper it was loaded with", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/shared_util.py`, util(1));
  await Deno.writeTextFile(`${dir.path}/a.py`, READS_UTIL("A"));
  await Deno.writeTextFile(`${dir.path}/b.py`, READS_UTIL("B"));
  const pids = new PidTracker();
  const pool = await Pool.start({
    workers: 2,
    modelsDir: dir.path,
    handleSignals: false,
  });
  pids.watch(pool);
  const onEach = (name: string) =>
    Promise.all(
      ["w1", "w2"].map((worker) =>
        pool.execute<{ v: number }>(name, {}, { worker }).then((r) => r.v)
      ),
    );
  try {
    await pool.addModel("a", { file: "a.py" });
    await pool.addModel("b", { file: "b.py" });
    await Deno.writeTextFile(`${dir.path}/shared_util.py`, util(2));
    await pool.updateModel("a", { file: "a.py" });
    assert.deepEqual(await onEach("a"), [2, 2]);
    assert.deepEqual(await onEach("b"), [1, 1]);

    // A helper whose new version fails to import fails the update, naming
    // its line; the model keeps serving with the helper it had.
    await Deno.writeTextFile(
      `${dir.path}/shared_util.py`,
      util(3, "raise RuntimeError('half-edited')\n"),
    );
    await assert.rejects(
      pool.updateModel("a", { file: "a.py" }),
      (err: unknown) =>
        err instanceof RemoteError && err.name === "ModelLoadError" &&
        err.message.includes(
          "RuntimeError: half-edited (shared_util.py, line 2; from a.py, line 1)",
        ),
    );
    assert.deepEqual(await onEach("a"), [2, 2]);
    assert.deepEqual(await onEach("b"), [1, 1]);

    // A restarted worker replays the models' recorded code but imports the
    // helpers as they are on disk then: the snapshot holds the model file only.
    await Deno.writeTextFile(`${dir.path}/shared_util.py`, util(4));
    const back = readyAgain(pool, "w1");
    const restarted = nextEvent(
      pool,
      "worker-exit",
      (ev) => ev.worker === "w1",
    );
    Deno.kill(pidOf(pool, "w1"), "SIGKILL");
    await restarted;
    await back;
    assert.deepEqual(await onEach("a"), [4, 2]);
    assert.deepEqual(await onEach("b"), [4, 1]);
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("PUT /v1/models/{name}: an update picks up an edited helper; a broken one is a 422 naming its line", async () => {
  await using gw = await startGateway({ workers: 1, allowManage: true });
  const put = () =>
    gw.fetch("/v1/models/reader", {
      method: "PUT",
      body: JSON.stringify({ file: "reader.py" }),
    });
  const run = async () => {
    const res = await gw.fetch("/v1/models/reader/execute", {
      method: "POST",
      body: "{}",
    });
    assert.equal(res.status, 200);
    return (await res.json()).v;
  };
  await Deno.writeTextFile(`${gw.dir}/shared_util.py`, util(1));
  await Deno.writeTextFile(`${gw.dir}/reader.py`, READS_UTIL("Reader"));
  let res = await put();
  assert.equal(res.status, 201);
  await res.body?.cancel();
  assert.equal(await run(), 1);
  await Deno.writeTextFile(`${gw.dir}/shared_util.py`, util(2));
  res = await put();
  assert.equal(res.status, 200);
  assert.equal((await res.json()).model.version, 2);
  assert.equal(await run(), 2);
  await Deno.writeTextFile(`${gw.dir}/shared_util.py`, "V = (\n");
  res = await put();
  assert.equal(res.status, 422);
  const { error } = await res.json();
  assert.equal(error.type, "ModelLoadError");
  assert.match(
    error.message,
    /SyntaxError: .*\(shared_util\.py, line 1\) \(from reader\.py, line 1\)/,
  );
  assert.ok(!error.message.includes(gw.dir), error.message);
  assert.equal(await run(), 2);
});
