import assert from "node:assert/strict";
import {
  CancelledError,
  ConfigError,
  NoWorkerError,
  RemoteError,
  ShuttingDownError,
  TimeoutError,
} from "../src/errors.ts";
import type { PluginContext } from "../src/plugin.ts";
import { Pool, type PoolOptions } from "../src/pool.ts";
import { modelsDir, nextEvent, pidOf, PidTracker } from "./_pool_harness.ts";

// An __init__ that says it started (a marker file) and takes options["s"]
// seconds (cancel does not stop it).
const SLOW_INIT = `
import time

class SlowInit:
    def __init__(self, options):
        open(options["marker"], "w").close()
        time.sleep(options.get("s", 0))

    def execute(self, msg):
        return {"ok": True}
`;

async function dirWithSlowInit(): Promise<
  { path: string } & AsyncDisposable
> {
  const dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/slow_init.py`, SLOW_INIT);
  return dir;
}

/** Resolves once the slow __init__ runs (it created its marker file). */
async function started(marker: string): Promise<void> {
  for (;;) {
    try {
      await Deno.stat(marker);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

function base(dir: string, extra: PoolOptions = {}): PoolOptions {
  return { workers: 1, modelsDir: dir, handleSignals: false, ...extra };
}

Deno.test("Pool.addModel while the only worker restarts waits for it and is checked by it (no silent success)", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  const pool = await Pool.start(base(dir.path));
  pids.watch(pool);
  try {
    const restarting = nextEvent(
      pool,
      "worker-state",
      (ev) => ev.to === "restarting",
    );
    Deno.kill(pidOf(pool, "w1"), "SIGKILL");
    await restarting;
    // A model that cannot be imported fails as it does on a ready worker,
    // instead of being recorded and then failing every replay.
    await assert.rejects(
      pool.addModel("broken", { file: "broken.py" }),
      (err: unknown) =>
        err instanceof RemoteError && err.name === "ModelLoadError" &&
        /this model cannot be imported/.test(err.message),
    );
    assert.deepEqual(pool.status().models.map((m) => m.name), []);
    await pool.addModel("doubler", { file: "doubler.py" });
    assert.deepEqual(await pool.execute("doubler", { x: 2 }), { y: 4 });
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool.addModel with no ready worker and none coming back fails with NoWorkerError", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  const pool = await Pool.start(
    base(dir.path, { plugins: { remove: ["reconnect"] } }),
  );
  pids.watch(pool);
  try {
    const exited = nextEvent(pool, "worker-exit");
    Deno.kill(pidOf(pool, "w1"), "SIGKILL");
    await exited;
    await assert.rejects(
      pool.addModel("doubler", { file: "doubler.py" }),
      (err: unknown) =>
        err instanceof NoWorkerError &&
        /Cannot add model 'doubler': no worker is ready to load it \(w1 stopped\)/
          .test(err.message),
    );
    assert.deepEqual(pool.status().models, []);
    // Removing needs no worker: nothing is loaded anywhere.
    await assert.rejects(
      pool.removeModel("doubler"),
      (err: unknown) =>
        err instanceof Error && /no such model/.test(err.message),
    );
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool.close lets an addModel in flight finish and fails the ones queued behind it", async () => {
  await using dir = await dirWithSlowInit();
  const pids = new PidTracker();
  const pool = await Pool.start(base(dir.path));
  pids.watch(pool);
  let closed = false;
  try {
    const slow = pool.addModel("slow", {
      file: "slow_init.py",
      options: { s: 0.4, marker: `${dir.path}/started` },
    });
    // Queued behind it: a change of the same model (another model's runs
    // beside it).
    const queued = pool.updateModel("slow", { file: "doubler.py" }).then(
      () => undefined,
      (err: unknown) => err,
    );
    await started(`${dir.path}/started`);
    const closing = pool.close();
    assert.equal((await slow as { name?: string }).name, "slow");
    const err = await queued;
    assert.ok(err instanceof ShuttingDownError, String(err));
    assert.equal(err.message, "Cannot update model 'slow': pool is closing");
    await closing;
    closed = true;
    assert.deepEqual(pool.status().models.map((m) => m.name), ["slow"]);
  } finally {
    if (!closed) await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool.close cuts an addModel longer than shutdownGrace short with ShuttingDownError", async () => {
  await using dir = await dirWithSlowInit();
  const pids = new PidTracker();
  const pool = await Pool.start(base(dir.path, { shutdownGrace: 100 }));
  pids.watch(pool);
  try {
    const slow = pool.addModel("slow", {
      file: "slow_init.py",
      options: { s: 30, marker: `${dir.path}/started` },
    }).then(() => undefined, (err: unknown) => err);
    await started(`${dir.path}/started`);
    await pool.close();
    const err = await slow;
    assert.ok(err instanceof ShuttingDownError, String(err));
    assert.equal(
      err.message,
      "Cannot add model 'slow': the pool closed before it finished",
    );
    assert.deepEqual(pool.status().models, []);
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool: a restarted worker replays a file model as it was loaded, not as the file reads now", async () => {
  await using dir = await modelsDir();
  const version = (v: string) =>
    `class Versioned:\n    def execute(self, msg):\n        return {"v": ${
      JSON.stringify(v)
    }}\n`;
  await Deno.writeTextFile(`${dir.path}/versioned.py`, version("v1"));
  const pids = new PidTracker();
  const pool = await Pool.start(base(dir.path, { workers: 2 }));
  pids.watch(pool);
  try {
    const added = await pool.addModel("m", { file: "versioned.py" });
    assert.equal((added as { source?: string }).source, undefined);
    assert.deepEqual(pool.status().models[0]!.spec, { file: "versioned.py" });
    // Edited on disk (not through updateModel), then broken: a restart must
    // neither run the new code nor fail to load.
    await Deno.writeTextFile(`${dir.path}/versioned.py`, version("v2"));
    await Deno.writeTextFile(`${dir.path}/versioned.py`, "not python(\n");
    const back = nextEvent(
      pool,
      "worker-state",
      (ev) => ev.worker === "w1" && ev.to === "ready",
    );
    Deno.kill(pidOf(pool, "w1"), "SIGKILL");
    await back;
    for (const worker of ["w1", "w2"]) {
      assert.deepEqual(await pool.execute("m", {}, { worker }), { v: "v1" });
    }
    // updateModel reads the file again (and takes its new snapshot).
    await Deno.writeTextFile(`${dir.path}/versioned.py`, version("v3"));
    await pool.updateModel("m", { file: "versioned.py" });
    const again = nextEvent(
      pool,
      "worker-state",
      (ev) => ev.worker === "w2" && ev.to === "ready",
    );
    await Deno.writeTextFile(`${dir.path}/versioned.py`, version("v4"));
    Deno.kill(pidOf(pool, "w2"), "SIGKILL");
    await again;
    for (const worker of ["w1", "w2"]) {
      assert.deepEqual(await pool.execute("m", {}, { worker }), { v: "v3" });
    }
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool model commands take a timeout and a signal of their own", async () => {
  await using dir = await dirWithSlowInit();
  const pids = new PidTracker();
  const pool = await Pool.start(base(dir.path, { workers: 2 }));
  pids.watch(pool);
  try {
    const marker = `${dir.path}/started`;
    // An __init__ longer than the timeout: TimeoutError, nothing recorded.
    await assert.rejects(
      pool.addModel("slow", {
        file: "slow_init.py",
        options: { s: 0.5, marker },
      }, { timeout: 100 }),
      (err: unknown) => err instanceof TimeoutError,
    );
    assert.deepEqual(pool.status().models, []);
    // Aborted while it runs: CancelledError.
    const controller = new AbortController();
    const aborted = pool.addModel("slow2", {
      file: "slow_init.py",
      options: { s: 0.5, marker: `${marker}2` },
    }, { signal: controller.signal }).then(() => undefined, (e) => e);
    await started(`${marker}2`);
    controller.abort();
    assert.ok((await aborted) instanceof CancelledError);
    // Later commands are not held behind them.
    await pool.addModel("doubler", { file: "doubler.py" }, { timeout: 5000 });
    assert.deepEqual(await pool.execute("doubler", { x: 1 }), { y: 2 });
    await assert.rejects(
      pool.addModel("x", { file: "doubler.py" }, { timeout: -1 }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /^Cannot add model 'x': timeout: expected a number of ms >= 0/.test(
          err.message,
        ),
    );
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool.addModel gives up waiting for a ready worker at its timeout", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  let ctx: PluginContext | undefined;
  const pool = await Pool.start(base(dir.path, {
    plugins: [{ name: "test.grab", onPoolStart: (c) => void (ctx = c) }],
  }));
  pids.watch(pool);
  try {
    const restarting = nextEvent(
      pool,
      "worker-state",
      (ev) => ev.to === "restarting",
    );
    // A slot that comes back only in a minute.
    ctx!.restartWorker("w1", { delayMs: 60_000 });
    await restarting;
    await assert.rejects(
      pool.addModel("doubler", { file: "doubler.py" }, { timeout: 50 }),
      (err: unknown) =>
        err instanceof TimeoutError &&
        err.message ===
          "Cannot add model 'doubler': no worker became ready within 50 ms",
    );
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool.updateModel given up on a worker that applies it late: the pool loads the model as the registry holds it there again (model-resync)", async () => {
  await using dir = await modelsDir();
  const release = `${dir.path}/release`;
  const version = (v: number) =>
    `import os, time\n\nclass A:\n    def __init__(self, options):\n` +
    `        if ${v} == 2 and os.environ.get("PYPROXY_TEST_SLOT") == "w2":\n` +
    `            end = time.monotonic() + 30\n` +
    `            while not os.path.exists(${
      JSON.stringify(release)
    }) and time.monotonic() < end:\n` +
    `                time.sleep(0.01)\n\n` +
    `    def execute(self, msg):\n        return {"v": ${v}}\n`;
  await Deno.writeTextFile(`${dir.path}/a.py`, version(1));
  const pids = new PidTracker();
  const pool = await Pool.start({
    workers: 2,
    modelsDir: dir.path,
    handleSignals: false,
    env: (id) => ({ PYPROXY_TEST_SLOT: id }),
    plugins: {
      use: [{
        // The server would give the load up on a cancel that comes before
        // it registers the model; a cancel that comes just after it (the
        // race this is about) is simulated by never sending it.
        name: "no-cancel",
        onRequest(msg) {
          if (msg.cmd === "cancel") throw new Error("cancel withheld");
        },
      }],
    },
  });
  pids.watch(pool);
  const onEach = () =>
    Promise.all(
      ["w1", "w2"].map((worker) =>
        pool.execute<{ v: number }>("a", {}, { worker }).then((r) => r.v)
      ),
    );
  try {
    await pool.addModel("a", { file: "a.py" });
    await Deno.writeTextFile(`${dir.path}/a.py`, version(2));
    await assert.rejects(
      pool.updateModel("a", { file: "a.py" }, { timeout: 500 }),
      (err: unknown) =>
        err instanceof TimeoutError &&
        /on worker w2: .*\(rolled back on the 1 other worker\)$/s.test(
          err.message,
        ),
    );
    assert.deepEqual(await onEach(), [1, 1]);
    // w2 finishes the update it was given up on, and answers late.
    const resynced = nextEvent(pool, "model-resync");
    await Deno.writeTextFile(release, "");
    assert.deepEqual(await resynced, {
      type: "model-resync",
      worker: "w2",
      name: "a",
      ok: true,
    });
    assert.deepEqual(await onEach(), [1, 1]);
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool without modelsDir refuses a model file or data file with a ConfigError that says to pass modelsDir", async () => {
  await using pool = await Pool.start({ workers: 1 });
  for (
    const [op, field] of [
      [() => pool.addModel("d", { file: "models/doubler.py" }), "file"],
      [() => pool.updateModel("d", { file: "doubler.py" }), "file"],
      [() => pool.initModel("d", "data/table.json"), "dataFile"],
    ] as const
  ) {
    await assert.rejects(op(), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(
        err.message,
        new RegExp(
          `^Cannot \\w+ model 'd': ${field} '[^']+' is relative to the pool's modelsDir, and this pool was started without one .*; pass modelsDir to Pool\\.start`,
        ),
      );
      assert.equal(err.details.field, field);
      return true;
    });
  }
  // Code given as source needs no directory, with or without a file name.
  await pool.addModel("s", {
    source: "class M:\n    def execute(self, msg): return 1\n",
  });
  assert.equal(await pool.execute("s", {}), 1);
});

Deno.test("Pool model commands of different models run side by side: a load whose import hangs holds only its own model's changes, which stay in order", async () => {
  await using dir = await modelsDir();
  const startedMarker = `${dir.path}/hang.started`;
  const go = `${dir.path}/hang.go`;
  await Deno.writeTextFile(
    `${dir.path}/hang.py`,
    `import os, time
open(${JSON.stringify(startedMarker)}, "w").close()
while not os.path.exists(${JSON.stringify(go)}):
    time.sleep(0.005)

class Hang:
    def execute(self, msg):
        return {"v": "hang"}
`,
  );
  const pids = new PidTracker();
  try {
    // Held behind the hanging load, the other model's commands would run
    // only once it timed out (loadTimeout): it would have failed by then.
    await using pool = await Pool.start(
      base(dir.path, { workers: 2, loadTimeout: 10_000 }),
    );
    pids.watch(pool);
    const order: string[] = [];
    const hang = pool.addModel("hang", { file: "hang.py" }).then(
      () => order.push("add hang"),
      (err: unknown) => order.push(`add hang failed: ${err}`),
    );
    await started(startedMarker);
    // The same model's next change waits for the load; another model's
    // add, update, init and remove do not.
    const update = pool.updateModel("hang", { file: "doubler.py" }).then(
      () => order.push("update hang"),
    );
    await pool.addModel("doubler", { file: "doubler.py" });
    assert.deepEqual(await pool.execute("doubler", { x: 2 }), { y: 4 });
    await pool.updateModel("doubler", { file: "doubler.py", options: {} });
    await pool.removeModel("doubler");
    assert.deepEqual(order, []);
    await Deno.writeTextFile(go, "");
    await Promise.all([hang, update]);
    assert.deepEqual(order, ["add hang", "update hang"]);
    assert.deepEqual(await pool.execute("hang", { x: 3 }), { y: 6 });
    assert.deepEqual(pool.status().models.map((m) => m.name), ["hang"]);
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool versions of one model share its lock: adding two versions at once keeps the first as the default", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(base(dir.path, { workers: 1 }));
    pids.watch(pool);
    await Promise.all([
      pool.addModel("m", { file: "doubler.py", version: "1" }),
      pool.addModel("m", { file: "doubler.py", version: "2" }),
      pool.addModel("m", { file: "doubler.py", version: "3" }),
    ]);
    assert.deepEqual(pool.modelVersions("m"), {
      versions: ["1", "2", "3"],
      default: "1",
    });
  } finally {
    await pids.assertGone();
  }
});
