/**
 * Versions (`ModelSpec.version`, docs/models.md "Versions"): several
 * versions of one model served side by side, one of them the default.
 * Real Python workers.
 */
import assert from "node:assert/strict";
import { ConfigError, NoWorkerError } from "../src/errors.ts";
import type { Plugin } from "../src/plugin.ts";
import { Pool } from "../src/pool.ts";
import { describeError } from "../src/gateway/error_response.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";

/**
 * Answers with its options' `v` and its pid, after `ms`; writes the file
 * `msg["started"]` names first, if any.
 */
const TAGGED = `
import os
import time

class Tagged:
    def __init__(self, options):
        self.v = options["v"]

    def execute(self, msg):
        if "started" in msg:
            open(msg["started"], "w").close()
        time.sleep(msg.get("ms", 0) / 1000.0)
        return {"v": self.v, "pid": os.getpid()}
`;

type Tag = { v: string; pid: number };

const spec = (v: string, version: string, extra: object = {}) => ({
  source: TAGGED,
  options: { v },
  version,
  ...extra,
});

const notFound = (re: RegExp) => (err: unknown) =>
  (err as Error).name === "ModelNotFoundError" &&
  re.test((err as Error).message);

Deno.test("Pool versions: two versions answer side by side, the first added is the default, a call picks one, setDefaultVersion moves the others", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 2 }));
    pids.watch(pool);
    await pool.addModel("scorer", spec("one", "1"));
    await pool.addModel("scorer", spec("two", "2"));
    assert.equal((await pool.execute<Tag>("scorer", {})).v, "one");
    assert.equal(
      (await pool.execute<Tag>("scorer", {}, { version: "2" })).v,
      "two",
    );
    assert.equal(
      (await pool.execute<Tag>("scorer", {}, { version: "1" })).v,
      "one",
    );
    assert.deepEqual(pool.modelVersions("scorer"), {
      versions: ["1", "2"],
      default: "1",
    });
    assert.equal(pool.resolveModel("scorer"), "scorer@1");
    const listed = pool.status().models.map((m) =>
      `${m.name} ${m.version} ${m.default}`
    );
    assert.deepEqual(listed, ["scorer 1 true", "scorer 2 false"]);
    // An unknown version: a typed error naming the versions there are.
    await assert.rejects(
      pool.execute("scorer", {}, { version: "3" }),
      notFound(
        /Cannot execute model "scorer" version "3": its versions are 1, 2 \(default 1\)/,
      ),
    );
    await assert.rejects(
      async () => {
        for await (
          const _ of pool.executeStream("scorer", {}, { version: "9" })
        ) {
          // never
        }
      },
      notFound(/version "9": its versions are 1, 2/),
    );
    const ev = nextEvent(pool, "model");
    await pool.setDefaultVersion("scorer", "2");
    assert.deepEqual(await ev, {
      type: "model",
      action: "default",
      name: "scorer",
      version: "2",
    });
    assert.equal((await pool.execute<Tag>("scorer", {})).v, "two");
    const items: Tag[] = [];
    for await (const item of pool.executeStream<Tag>("scorer", {})) {
      items.push(item);
    }
    assert.equal(items[0]!.v, "two");
    await assert.rejects(
      pool.setDefaultVersion("scorer", "7"),
      notFound(/version "7"/),
    );
    // Updating one version leaves the other alone.
    await pool.updateModel("scorer", spec("one-b", "1"));
    assert.equal(
      (await pool.execute<Tag>("scorer", {}, { version: "1" })).v,
      "one-b",
    );
    assert.equal((await pool.execute<Tag>("scorer", {})).v, "two");
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool versions: a placed version's NoWorkerError names it by model and version, not as name@label", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 2 }));
    pids.watch(pool);
    await pool.addModel("scorer", spec("one", "1"));
    await pool.addModel("scorer", spec("two", "2", { workers: 1 }));
    const other = pool.status().workers.map((w) => w.id).find((id) =>
      !pool.status().workers.find((w) => w.id === id)!.models?.includes(
        "scorer@2",
      )
    )!;
    // Was "does not hold model 'scorer@2'": a name no route or call takes.
    await assert.rejects(
      pool.execute("scorer", {}, { version: "2", worker: other }),
      (err: unknown) =>
        err instanceof NoWorkerError &&
        new RegExp(
          `worker ${other} does not hold model 'scorer' version '2' \\(`,
        ).test(err.message) &&
        err.details.model === "scorer" && err.details.version === "2",
    );
  } finally {
    await pids.assertGone();
  }
});

// The tests of a default one-worker pool, as steps on one such pool (a Python server start
// each, otherwise); each step's models are removed after it, and no Python process outlives
// the pool.
Deno.test("Pool versions on one one-worker pool (each step its own models)", async (t) => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
    pids.watch(pool);
    await t.step(
      "Pool versions: labels are checked, a version is not added twice, a name is versioned or not, the default goes last",
      () =>
        poolVersionsLabelsAreChecked(pool).finally(() => removeModels(pool)),
    );
    await t.step(
      "Pool versions: a version's internal name (name@label) is no model of its own: add, update, remove and init without a version are refused; a model named name@label keeps that label from being added",
      () =>
        poolVersionsVersionInternalName(pool).finally(() => removeModels(pool)),
    );
    await t.step(
      "Pool versions: removeModel(name) removes every version even when the default moves or a version is added while it runs (was refused half way: 'it is the default version')",
      () =>
        poolVersionsRemoveModelNameRemoves(pool).finally(() =>
          removeModels(pool)
        ),
    );
  } finally {
    await pids.assertGone();
  }
});

/** Removes every model of `pool`, each version of it (a step's models, once it ended). */
async function removeModels(pool: Pool): Promise<void> {
  const names = new Set(pool.status().models.map((m) => m.name));
  for (const name of names) await pool.removeModel(name);
}

/** A step of "Pool versions on one one-worker pool (each step its own models)": Pool versions: labels are checked, a version is not added twice, a name is versioned or not, the default goes last */
async function poolVersionsLabelsAreChecked(pool: Pool): Promise<void> {
  for (
    const bad of ["", " 1", "a/b", "..", ".hidden", "x".repeat(65), "1@2", 2]
  ) {
    await assert.rejects(
      pool.addModel("m", spec("a", bad as string)),
      (err: unknown) =>
        err instanceof ConfigError &&
        /version: expected 1-64 characters/.test(err.message),
      `label ${JSON.stringify(bad)}`,
    );
  }
  await assert.rejects(
    pool.addModel("a@b", spec("a", "1")),
    (err: unknown) =>
      err instanceof ConfigError && /has no '@'/.test(err.message),
  );
  await pool.addModel("m", spec("a", "1"));
  // Each refusal also as the gateway words it from its details: the
  // routes to call, not the library's spec field or method.
  const gatewaySays = async (p: Promise<unknown>, message: string) => {
    const err = await p.then(
      () => assert.fail("expected a refusal"),
      (e) => e,
    );
    const { status, body } = describeError(err, false);
    assert.equal(status, 400);
    assert.equal(body.message, message);
  };
  await assert.rejects(
    pool.addModel("m", spec("a", "1")),
    /Cannot add model 'm' version '1': it already exists \(updateModel replaces it\)/,
  );
  await gatewaySays(
    pool.addModel("m", spec("a", "1")),
    "Cannot load model 'm' version '1': it is already loaded (PUT /v1/models/m/versions/1 replaces it)",
  );
  await assert.rejects(
    pool.addModel("m", { source: TAGGED, options: { v: "x" } }),
    /Cannot add model 'm' without a version: it has versions \(1; default 1\); give spec\.version/,
  );
  await gatewaySays(
    pool.addModel("m", { source: TAGGED, options: { v: "x" } }),
    "Cannot load model 'm' without a version: it has versions (1; default 1): PUT /v1/models/m/versions/{version} loads or replaces one, DELETE /v1/models/m removes every version",
  );
  await assert.rejects(
    pool.updateModel("m", { source: TAGGED, options: { v: "x" } }),
    /Cannot update model 'm' without a version/,
  );
  await gatewaySays(
    pool.updateModel("m", { source: TAGGED, options: { v: "x" } }),
    "Cannot replace model 'm' without a version: it has versions (1; default 1): PUT /v1/models/m/versions/{version} loads or replaces one, DELETE /v1/models/m removes every version",
  );
  await assert.rejects(
    pool.updateModel("m", spec("b", "2")),
    notFound(/Cannot update model "m" version "2": its versions are 1/),
  );
  await pool.addModel("plain", { source: TAGGED, options: { v: "p" } });
  await assert.rejects(
    pool.addModel("plain", spec("a", "1")),
    /'plain' is loaded without a version/,
  );
  assert.equal((await pool.execute<Tag>("plain", {})).v, "p");
  assert.equal(pool.modelVersions("plain"), undefined);
  await pool.addModel("m", spec("b", "2"));
  await pool.addModel("m", spec("c", "3"));
  await assert.rejects(
    pool.removeModel("m", { version: "1" }),
    /Cannot remove model 'm' version '1': it is the default version; make another one the default first/,
  );
  await pool.removeModel("m", { version: "2" });
  assert.deepEqual(pool.modelVersions("m"), {
    versions: ["1", "3"],
    default: "1",
  });
  await assert.rejects(
    pool.execute("m", {}, { version: "2" }),
    notFound(/its versions are 1, 3/),
  );
  // Without a version: every version, the default last.
  await pool.removeModel("m");
  assert.equal(pool.modelVersions("m"), undefined);
  assert.deepEqual(pool.status().models.map((m) => m.name), ["plain"]);
  await assert.rejects(pool.execute("m", {}), notFound(/'m'/));
  // The name takes versions, or none, again.
  await pool.addModel("m", { source: TAGGED, options: { v: "u" } });
  assert.equal((await pool.execute<Tag>("m", {})).v, "u");
}

/** A step of "Pool versions on one one-worker pool (each step its own models)": Pool versions: a version's internal name (name@label) is no model of its own: add, update, remove and init without a version are refused; a model named name@label keeps that label from being added */
async function poolVersionsVersionInternalName(pool: Pool): Promise<void> {
  await pool.addModel("s", spec("one", "1"));
  await pool.addModel("s", spec("two", "2"));
  const plain = { source: TAGGED, options: { v: "plain" } };
  const refused = (action: string, label: string) =>
    new RegExp(
      `Cannot ${action} model 's@${label}': it is version '${label}' of model 's' \\(${action} 's' with version '${label}'\\)`,
    );
  await assert.rejects(pool.addModel("s@2", plain), refused("add", "2"));
  // Before: the update replaced version 2 without its label (status
  // listed it as a model of its own) ...
  await assert.rejects(
    pool.updateModel("s@2", plain),
    refused("update", "2"),
  );
  // ... and the remove left label 2 listed with nothing to run it:
  // removeModel("s") then failed for good.
  await assert.rejects(pool.removeModel("s@2"), refused("remove", "2"));
  await assert.rejects(
    pool.initModel("s@2", "data.json"),
    refused("init", "2"),
  );
  assert.equal(
    (await pool.execute<Tag>("s", {}, { version: "2" })).v,
    "two",
  );
  assert.deepEqual(
    pool.status().models.map((m) => `${m.name} ${m.version}`),
    ["s 1", "s 2"],
  );
  // A label the model does not have: the name is anyone's.
  await pool.addModel("s@3", plain);
  await assert.rejects(
    pool.addModel("s", spec("three", "3")),
    /Cannot add model 's' version '3': a model named 's@3' is loaded without a version/,
  );
  assert.equal((await pool.execute<Tag>("s@3", {})).v, "plain");
  await pool.removeModel("s@3");
  await pool.removeModel("s");
  assert.equal(pool.modelVersions("s"), undefined);
  assert.deepEqual(pool.status().models, []);
}

/** A step of "Pool versions on one one-worker pool (each step its own models)": Pool versions: removeModel(name) removes every version even when the default moves or a version is added while it runs (was refused half way: 'it is the default version') */
async function poolVersionsRemoveModelNameRemoves(pool: Pool): Promise<void> {
  for (const l of ["1", "2", "3"]) await pool.addModel("m", spec(l, l));
  // Queued behind the removal of version 2: version 3, which the removal
  // had planned to remove before the default, is the default by then.
  const removed = pool.removeModel("m");
  const moved = pool.setDefaultVersion("m", "3");
  assert.deepEqual(await removed, { name: "m@3", removed: true });
  await moved;
  assert.equal(pool.modelVersions("m"), undefined);
  for (const l of ["1", "2"]) await pool.addModel("n", spec(l, l));
  // A version added while the others go goes too.
  const gone = pool.removeModel("n");
  const added = pool.addModel("n", spec("4", "4"));
  await added;
  await gone;
  assert.equal(pool.modelVersions("n"), undefined);
  assert.deepEqual(pool.status().models, []);
}

Deno.test("Pool versions: a plugin's onRequest sees a version's calls under name@label, a call without a version under its default's, the new one after setDefaultVersion", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    const seen: string[] = [];
    const watch: Plugin = {
      name: "watch",
      onRequest(msg) {
        if (msg.cmd === "executeModel") seen.push(String(msg.name));
      },
    };
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, plugins: [watch] }),
    );
    pids.watch(pool);
    await pool.addModel("s", spec("one", "1"));
    await pool.addModel("s", spec("two", "2"));
    await pool.execute("s", {});
    await pool.execute("s", {}, { version: "2" });
    await pool.setDefaultVersion("s", "2");
    await pool.execute("s", {});
    assert.deepEqual(seen, ["s@1", "s@2", "s@2"]);
    assert.equal(pool.resolveModel("s"), "s@2");
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool versions: each version has its own placement, a restarted worker gets every version back, a failed load leaves the others serving", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 2 }));
    pids.watch(pool);
    await pool.addModel("p", spec("one", "1", { workers: 1 }));
    await pool.addModel("p", spec("two", "2", { workers: 1 }));
    const slots = pool.status().models.map((m) => m.slots);
    assert.deepEqual(slots, [["w1"], ["w2"]]);
    const w1 = pidOf(pool, "w1");
    const w2 = pidOf(pool, "w2");
    for (let i = 0; i < 6; i++) {
      assert.deepEqual(await pool.execute("p", {}), { v: "one", pid: w1 });
      assert.deepEqual(await pool.execute("p", {}, { version: "2" }), {
        v: "two",
        pid: w2,
      });
    }
    // A version that fails to load: the others keep serving.
    await assert.rejects(
      pool.addModel("p", { source: "class X(:\n", version: "3" }),
      /SyntaxError|ModelLoadError|invalid syntax/,
    );
    assert.deepEqual(pool.modelVersions("p")?.versions, ["1", "2"]);
    assert.equal((await pool.execute<Tag>("p", {}, { version: "2" })).v, "two");
    // Unplaced versions, and a restart: both come back on the new process.
    await pool.addModel("q", spec("q1", "1"));
    await pool.addModel("q", spec("q2", "2"));
    const back = readyAgain(pool, "w1");
    Deno.kill(w1, "SIGKILL");
    await back;
    const again = pidOf(pool, "w1");
    assert.notEqual(again, w1);
    assert.equal(
      (await pool.execute<Tag>("q", {}, { version: "1", worker: "w1" })).v,
      "q1",
    );
    assert.equal(
      (await pool.execute<Tag>("q", {}, { version: "2", worker: "w1" })).v,
      "q2",
    );
    assert.deepEqual(await pool.execute("p", {}), { v: "one", pid: again });
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool versions: calls in flight finish on the version they reached; close settles calls to several versions once each", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    // Disposed (closed again: a no-op once closed) before the finally's
    // check, so that a failed assertion is not hidden behind "python
    // processes still running".
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 2 }),
    );
    pids.watch(pool);
    await pool.addModel("s", spec("one", "1"));
    await pool.addModel("s", spec("two", "2"));
    // An update of version 1 while its call runs: that call finishes on
    // the old code; a default switch while a call runs leaves it be.
    const started = [`${dir.path}/started-1`, `${dir.path}/started-2`];
    const running = pool.execute<Tag>("s", { ms: 300, started: started[0] }, {
      version: "1",
    });
    const onDefault = pool.execute<Tag>("s", { ms: 300, started: started[1] });
    for (const file of started) {
      while (!(await exists(file))) {
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    await pool.setDefaultVersion("s", "2");
    await pool.updateModel("s", spec("one-b", "1"));
    assert.equal((await running).v, "one");
    assert.equal((await onDefault).v, "one");
    assert.equal(
      (await pool.execute<Tag>("s", {}, { version: "1" })).v,
      "one-b",
    );
    // Close with calls to both versions in flight: each settles once.
    let settled = 0;
    const calls = Array.from(
      { length: 8 },
      (_, i) =>
        pool.execute("s", { ms: 100 }, { version: String(1 + (i % 2)) })
          .finally(() => settled++),
    );
    const closing = pool.close();
    const outcomes = await Promise.allSettled(calls);
    await closing;
    assert.equal(settled, 8);
    assert.equal(outcomes.length, 8);
  } finally {
    await pids.assertGone();
  }
});

/** Writes msg["started"], then waits until msg["open"] exists. */
const GATE = `
import os
import time

class Gate:
    def execute(self, msg):
        open(msg["started"], "w").close()
        while not os.path.exists(msg["open"]):
            time.sleep(0.005)
        return {}
`;

Deno.test("Pool versions: a call queued before its default moved and the old version was removed runs on the new default (execute and executeStream); one that asked for the old version fails ModelNotFoundError", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, maxInFlightPerWorker: 1 }),
    );
    pids.watch(pool);
    await pool.addModel("gate", { source: GATE });
    await pool.addModel("s", spec("one", "1"));
    // The worker's one slot taken: the calls below wait in the queue,
    // resolved to version 1 (the default then).
    const started = `${dir.path}/started`;
    const open = `${dir.path}/open`;
    const gate = pool.execute("gate", { started, open });
    while (!(await exists(started))) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const unpinned = pool.execute<Tag>("s", {});
    const pinned = pool.execute<Tag>("s", {}, { version: "1" }).then(
      () => undefined,
      (err: unknown) => err,
    );
    const streamed = (async () => {
      const items: Tag[] = [];
      for await (const item of pool.executeStream<Tag>("s", {})) {
        items.push(item);
      }
      return items;
    })();
    await pool.addModel("s", spec("two", "2"));
    await pool.setDefaultVersion("s", "2");
    await pool.removeModel("s", { version: "1" });
    await Deno.writeTextFile(open, "");
    await gate;
    assert.equal((await unpinned).v, "two");
    assert.deepEqual((await streamed).map((t) => t.v), ["two"]);
    assert.ok(notFound(/'s@1'/)(await pinned), String(await pinned));
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool versions: a batching version's calls queued before the default moved and it was removed run on the new default as unbatched ones do; one that asked for it fails ModelNotFoundError", async () => {
  // Their batch reached the removed version: every call failed with
  // ModelNotFoundError "Cannot find model 's@1'", where the same calls of a
  // model that does not batch ran on the new default (chaos41).
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    // Each call reaches the call hooks once, the ones sent on again too.
    const hooked = { calls: 0, settled: 0 };
    const counter: Plugin = {
      name: "counter",
      onCall() {
        hooked.calls++;
      },
      onSettle() {
        hooked.settled++;
      },
    };
    const options = poolOptions(dir.path, {
      workers: 1,
      maxInFlightPerWorker: 1,
    });
    await using pool = await Pool.start({
      ...options,
      plugins: [...(options.plugins as Plugin[]), counter],
    });
    pids.watch(pool);
    const batching = (v: string, version: string) => ({
      source: `
class Batching:
    batch_size = 3
    def __init__(self, options):
        self.v = options["v"]
    def execute_batch(self, msgs):
        return [{"v": self.v, "n": len(msgs)} for m in msgs]
`,
      options: { v },
      version,
    });
    await pool.addModel("gate", { source: GATE });
    await pool.addModel("s", batching("one", "1"));
    const started = `${dir.path}/started`;
    const open = `${dir.path}/open`;
    const gate = pool.execute("gate", { started, open });
    while (!(await exists(started))) {
      await new Promise((r) => setTimeout(r, 5));
    }
    // batch_size of them: one batch at once, waiting in the queue for the
    // worker's one slot, resolved to version 1 (the default then).
    const sends: string[] = [];
    const unpinned = [0, 1].map(() =>
      pool.execute<Tag>("s", {}, { onSend: (w) => sends.push(w) })
    );
    const pinned = pool.execute<Tag>("s", {}, { version: "1" }).then(
      () => undefined,
      (err: unknown) => err,
    );
    await pool.addModel("s", batching("two", "2"));
    await pool.setDefaultVersion("s", "2");
    await pool.removeModel("s", { version: "1" });
    await Deno.writeTextFile(open, "");
    await gate;
    assert.deepEqual((await Promise.all(unpinned)).map((t) => t.v), [
      "two",
      "two",
    ]);
    assert.ok(notFound(/'s@1'/)(await pinned), String(await pinned));
    // Each went to the worker with the batch, then on its own way.
    assert.deepEqual(sends, ["w1", "w1", "w1", "w1"]);
    // The gate and the three: once each (a call sent on to the new default
    // went through onCall and onSettle again: twice).
    assert.deepEqual(hooked, { calls: 4, settled: 4 });
  } finally {
    await pids.assertGone();
  }
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}
