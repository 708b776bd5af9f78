/**
 * An update loads fresh copies of the helper modules a model imports from
 * the models directory (python/pyproxy_server/fresh_imports.py), and a
 * model's snapshot holds them, so restarts and rollbacks run the helpers the
 * model was loaded with: through a real pool and a real gateway.
 */
import assert from "node:assert/strict";
import {
  RemoteError,
  TimeoutError,
  WorkerCrashedError,
} from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { startGateway } from "./_gateway_harness.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
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

    // A restarted worker replays each model with the helpers in its
    // snapshot, not as they are on disk then: a with its update's helper, b
    // with the one it was added with.
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
    assert.deepEqual(await onEach("a"), [2, 2]);
    assert.deepEqual(await onEach("b"), [1, 1]);
    // Until an update reads the edit, on every worker.
    await pool.updateModel("a", { file: "a.py" });
    assert.deepEqual(await onEach("a"), [4, 4]);
    assert.deepEqual(await onEach("b"), [1, 1]);
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool.updateModel whose new helper fails on one worker leaves every worker on the old model and old helpers", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/shared_util.py`, util(1));
  await Deno.writeTextFile(`${dir.path}/a.py`, READS_UTIL("A"));
  const pids = new PidTracker();
  const pool = await Pool.start({
    workers: 3,
    modelsDir: dir.path,
    handleSignals: false,
    env: (id) => ({ PYPROXY_TEST_SLOT: id }),
  });
  pids.watch(pool);
  const onEach = () =>
    Promise.all(
      ["w1", "w2", "w3"].map((worker) =>
        pool.execute<{ v: number }>("a", {}, { worker }).then((r) => r.v)
      ),
    );
  try {
    await pool.addModel("a", { file: "a.py" });
    // The new model file and its new helper load on w1 and w2, not on w3.
    await Deno.writeTextFile(
      `${dir.path}/shared_util.py`,
      util(
        2,
        "import os\nif os.environ.get('PYPROXY_TEST_SLOT') == 'w3':\n    raise RuntimeError('not here')\n",
      ),
    );
    await Deno.writeTextFile(
      `${dir.path}/a.py`,
      READS_UTIL("A").replace('{"v": shared_util.V}', '{"v": -shared_util.V}'),
    );
    await assert.rejects(
      pool.updateModel("a", { file: "a.py" }),
      (err: unknown) =>
        err instanceof RemoteError && err.name === "ModelLoadError" &&
        /^Cannot update model 'a' on worker w3: .*not here.*\(rolled back on the 2 other workers\)$/s
          .test(err.message),
    );
    // The rollback sent the old model and its old helper: not the files.
    assert.deepEqual(await onEach(), [1, 1, 1]);
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool.updateModel that times out on a stopped worker is rolled back to the old helpers on every worker", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/shared_util.py`, util(1));
  await Deno.writeTextFile(`${dir.path}/a.py`, READS_UTIL("A"));
  const pids = new PidTracker();
  const pool = await Pool.start(poolOptions(dir.path, { workers: 3 }));
  pids.watch(pool);
  const onEach = () =>
    Promise.all(
      ["w1", "w2", "w3"].map((worker) =>
        pool.execute<{ v: number }>("a", {}, { worker }).then((r) => r.v)
      ),
    );
  let stopped: number | undefined;
  try {
    await pool.addModel("a", { file: "a.py" });
    await Deno.writeTextFile(`${dir.path}/shared_util.py`, util(2));
    stopped = pidOf(pool, "w3");
    Deno.kill(stopped, "SIGSTOP");
    await assert.rejects(
      pool.updateModel("a", { file: "a.py" }, { timeout: 1000 }),
      (err: unknown) =>
        err instanceof TimeoutError &&
        /^Cannot update model 'a' on worker w3: .*\(rolled back on the 2 other workers\)$/s
          .test(err.message),
    );
    Deno.kill(stopped, "SIGCONT");
    stopped = undefined;
    // w3 gave its late update up (or was replaced and replayed the model):
    // every worker runs the old helper, whatever the file says now.
    assert.deepEqual(await onEach(), [1, 1, 1]);
  } finally {
    if (stopped !== undefined) Deno.kill(stopped, "SIGCONT");
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool.addModel during which a worker dies fails and is rolled back; loaded again, every worker runs the same code", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/shared_util.py`, util(1));
  // Kills w1 once, while it loads the model (the marker goes first, so a
  // second load does not die).
  await Deno.writeTextFile(
    `${dir.path}/a.py`,
    "import os\n" +
      "_marker = os.path.join(os.path.dirname(__file__), 'die_once')\n" +
      "if os.environ.get('PYPROXY_TEST_SLOT') == 'w1' and os.path.exists(_marker):\n" +
      "    os.remove(_marker)\n    os._exit(3)\n" + READS_UTIL("A"),
  );
  await Deno.writeTextFile(`${dir.path}/die_once`, "");
  const pids = new PidTracker();
  const pool = await Pool.start({
    workers: 2,
    modelsDir: dir.path,
    handleSignals: false,
    env: (id) => ({ PYPROXY_TEST_SLOT: id }),
  });
  pids.watch(pool);
  try {
    const back = readyAgain(pool, "w1");
    // Replaying it onto the restarted w1 could kill it again and again: the
    // load fails instead, rolled back on w2.
    await assert.rejects(
      pool.addModel("a", { file: "a.py" }),
      (err: unknown) => {
        assert.ok(err instanceof WorkerCrashedError, String(err));
        assert.match(
          err.message,
          /^Cannot add model 'a': worker w1 \(pid \d+\) died while loading it: exited with code 3; rolled back on the 1 other worker; it was not added$/,
        );
        return true;
      },
    );
    await back;
    assert.deepEqual(pool.status().models, []);
    await pool.addModel("a", { file: "a.py" });
    // Edited on disk after the load: only an update may bring it in.
    await Deno.writeTextFile(`${dir.path}/shared_util.py`, util(2));
    await Deno.writeTextFile(
      `${dir.path}/a.py`,
      READS_UTIL("A").replace('{"v": shared_util.V}', '{"v": -shared_util.V}'),
    );
    // A restarted worker loads what the others loaded, not the edited files.
    const again = readyAgain(pool, "w1");
    Deno.kill(pool.status().workers[0]!.pid!, "SIGKILL");
    await again;
    const onEach = await Promise.all(
      ["w1", "w2"].map((worker) =>
        pool.execute<{ v: number }>("a", {}, { worker }).then((r) => r.v)
      ),
    );
    assert.deepEqual(onEach, [1, 1]);
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

Deno.test("PUT /v1/models/{name} that fails on one worker rolls the other back to the old helpers too", async () => {
  await using gw = await startGateway({ workers: 2, allowManage: true });
  const put = () =>
    gw.fetch("/v1/models/reader", {
      method: "PUT",
      body: JSON.stringify({ file: "reader.py" }),
    });
  const onEach = () =>
    Promise.all(
      ["w1", "w2"].map((worker) =>
        gw.pool.execute<{ v: number }>("reader", {}, { worker }).then((r) =>
          r.v
        )
      ),
    );
  await Deno.writeTextFile(`${gw.dir}/shared_util.py`, util(1));
  await Deno.writeTextFile(`${gw.dir}/reader.py`, READS_UTIL("Reader"));
  let res = await put();
  assert.equal(res.status, 201);
  await res.body?.cancel();
  // The new helper loads on the first worker to claim it, and fails on the other.
  await Deno.writeTextFile(
    `${gw.dir}/shared_util.py`,
    util(
      2,
      "import os\ntry:\n    os.close(os.open(os.path.join(os.path.dirname(__file__), 'claim'), os.O_CREAT | os.O_EXCL))\n" +
        "except FileExistsError:\n    raise RuntimeError('claimed')\n",
    ),
  );
  res = await put();
  assert.equal(res.status, 422);
  const { error } = await res.json();
  assert.match(
    error.message,
    /claimed.*\(rolled back on the 1 other worker\)/s,
  );
  assert.deepEqual(await onEach(), [1, 1]);
});
