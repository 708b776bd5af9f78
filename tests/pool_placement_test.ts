/**
 * Placement (`ModelSpec.workers`): a model loaded on some of the pool's
 * workers only, its calls routed there, kept through restarts, resizes and
 * updates. Real Python workers; each model marks the processes that loaded
 * it with a file named by their pid.
 */
import assert from "node:assert/strict";
import { ConfigError, NoWorkerError } from "../src/errors.ts";
import type { Plugin, PluginContext } from "../src/plugin.ts";
import { Pool } from "../src/pool.ts";
import { recordingLogger } from "./_harness.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

/** Writes `loaded-<pid>` into `options.dir` when it loads; answers with its pid. */
const MARKER = `
import os

class Marker:
    def __init__(self, options):
        open(os.path.join(options["dir"], "loaded-%d" % os.getpid()), "a").close()

    def execute(self, msg):
        return {"pid": os.getpid()}
`;

/** Answers with its pid once the file `msg.until` exists (at most `msg.maxMs` later); at once without one. */
const GATE = `
import os
import time

class Gate:
    def __init__(self, options):
        pass

    def execute(self, msg):
        until = msg.get("until")
        end = time.monotonic() + msg.get("maxMs", 0) / 1000.0
        while until and not os.path.exists(until) and time.monotonic() < end:
            time.sleep(0.01)
        return {"pid": os.getpid()}
`;

type Pid = { pid: number };

/** A temp directory for the markers, removed on dispose. */
async function markerDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "pyproxy-placement-" });
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}

/** The pids that loaded a marker model, sorted. */
async function loadedBy(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir(dir)) {
    const m = /^loaded-(\d+)$/.exec(e.name);
    if (m) pids.push(Number(m[1]));
  }
  return pids.sort((a, b) => a - b);
}

/** The distinct pids that answer `n` calls of `name`, sorted. */
async function pidsOf(pool: Pool, name: string, n = 30): Promise<number[]> {
  const replies = await Promise.all(
    Array.from({ length: n }, () => pool.execute<Pid>(name, {})),
  );
  return [...new Set(replies.map((r) => r.pid))].sort((a, b) => a - b);
}

function slotsOf(pool: Pool, name: string): string[] | undefined {
  return pool.status().models.find((m) => m.name === name)?.slots;
}

/**
 * The scenarios of this file, each on a pool of its own: they wait on
 * loads, moves, stops and restarts of their workers more than on the CPU,
 * so the file runs them a few at a time (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Pool placement: a model with workers 1 loads on one worker of 3 and all its calls go there; an unplaced one still round-robins",
  async () => {
    await using dir = await modelsDir();
    await using marks = await markerDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 3 }),
      );
      pids.watch(pool);
      await pool.addModel("big", {
        source: MARKER,
        options: { dir: marks.path },
        workers: 1,
      });
      await pool.addModel("whoami", { file: "whoami.py" });
      assert.deepEqual(slotsOf(pool, "big"), ["w1"]);
      const w1 = pidOf(pool, "w1");
      assert.deepEqual(await pidsOf(pool, "big"), [w1]);
      assert.deepEqual(
        await loadedBy(marks.path),
        [w1],
        "w2 and w3 never loaded it",
      );
      assert.equal((await pidsOf(pool, "whoami")).length, 3);
      const status = pool.status();
      assert.deepEqual(
        status.workers.map((w) => `${w.id}: ${w.models?.join(",")}`),
        ["w1: big,whoami", "w2: whoami", "w3: whoami"],
      );
      assert.equal(status.models[0]!.spec.workers, 1);
      assert.equal(status.models[1]!.slots, undefined);
      // A second placed model goes to a slot holding none.
      await pool.addModel("big2", {
        source: MARKER,
        options: { dir: marks.path },
        workers: 2,
      });
      assert.deepEqual(slotsOf(pool, "big2"), ["w2", "w3"]);
      // A pinned call to a slot without the model: a typed error, not sent.
      await assert.rejects(
        pool.execute("big", {}, { worker: "w2" }),
        (err: unknown) =>
          err instanceof NoWorkerError && err.code === "NO_WORKER" &&
          /worker w2 does not hold model 'big' \(it is placed on w1: workers 1\)/
            .test(err.message),
      );
      assert.deepEqual(
        await pool.execute("big", {}, { worker: "w1" }),
        { pid: w1 },
      );
      // A keyed call stays on the model's slots.
      const keyed = await Promise.all(
        ["a", "b", "c", "d", "e", "f"].map((key) =>
          pool.execute<Pid>("big2", {}, { key })
        ),
      );
      const big2 = [pidOf(pool, "w2"), pidOf(pool, "w3")];
      for (const r of keyed) assert.ok(big2.includes(r.pid));
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a call of an unplaced model is not held up behind a queued call waiting for a placed model's busy slot",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 2, maxInFlightPerWorker: 1 }),
      );
      pids.watch(pool);
      await pool.addModel("a", { source: GATE, workers: 1 });
      await pool.addModel("b", { file: "slow.py" });
      const [w1, w2] = [pidOf(pool, "w1"), pidOf(pool, "w2")];
      // a1 holds w1 until the test opens its gate (or 15 s pass: without the
      // fix, b2 waits for it and the test fails instead of hanging).
      const gate = `${dir.path}/gate-open`;
      let a1Done = false;
      const a1 = pool.execute<Pid>("a", { until: gate, maxMs: 15_000 })
        .finally(() => a1Done = true);
      const b1 = pool.execute<Pid>("b", { ms: 200 });
      // Both slots busy: a2 (only w1) queues first, b2 (either) after it.
      const a2 = pool.execute<Pid>("a", {});
      const b2 = pool.execute<Pid>("b", { ms: 0 });
      try {
        assert.equal(pool.status().queue, 2);
        assert.equal((await b1).pid, w2);
        assert.equal(
          (await b2).pid,
          w2,
          "b2 took w2 when it freed, ahead of a2",
        );
        assert.equal(a1Done, false, "b2 did not wait for a's slot");
      } finally {
        await Deno.writeTextFile(gate, "");
      }
      assert.equal((await a1).pid, w1);
      assert.equal((await a2).pid, w1);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a placed slot killed restarts with the model (replayed there only) and its calls resume",
  async () => {
    await using dir = await modelsDir();
    await using marks = await markerDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 3 }),
      );
      pids.watch(pool);
      await pool.addModel("big", {
        source: MARKER,
        options: { dir: marks.path },
        workers: 1,
      });
      const old = pidOf(pool, "w1");
      const ready = readyAgain(pool, "w1");
      pool.killWorker("w1", "test");
      await ready;
      const now = pidOf(pool, "w1");
      assert.notEqual(now, old);
      assert.deepEqual(await pidsOf(pool, "big"), [now]);
      assert.deepEqual(
        await loadedBy(marks.path),
        [old, now].sort((a, b) => a - b),
      );
      assert.deepEqual(slotsOf(pool, "big"), ["w1"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: resize 3 -> 1 moves a model off a removed slot before it goes, and no call fails",
  async () => {
    await using dir = await modelsDir();
    await using marks = await markerDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 3 }),
      );
      pids.watch(pool);
      await pool.addModel("first", { file: "whoami.py", workers: 1 });
      await pool.addModel("slow", { file: "slow.py" });
      await pool.addModel("big", {
        source: MARKER,
        options: { dir: marks.path },
        workers: 1,
      });
      assert.deepEqual(slotsOf(pool, "first"), ["w1"]);
      assert.deepEqual(slotsOf(pool, "big"), ["w2"]);
      const w2 = pidOf(pool, "w2");
      // w1 and w3 busier than w2 (20 long calls each): the shrink keeps w1
      // (the busiest, the oldest among equals) and removes w2, big's slot.
      const busy = ["w1", "w3"].flatMap((worker) =>
        Array.from(
          { length: 20 },
          () => pool.execute("slow", { ms: 1500 }, { worker }),
        )
      );
      let stop = false;
      const load = (async () => {
        const failures: unknown[] = [];
        let n = 0;
        while (!stop) {
          const rs = await Promise.allSettled(
            Array.from({ length: 10 }, () => pool.execute<Pid>("big", {})),
          );
          n += rs.length;
          for (const r of rs) {
            if (r.status === "rejected") failures.push(r.reason);
          }
        }
        return { failures, n };
      })();
      const status = await pool.resize(1);
      stop = true;
      const { failures, n } = await load;
      await Promise.all(busy);
      assert.deepEqual(failures, [], "no call failed while the model moved");
      assert.ok(n > 0);
      assert.deepEqual(status.workers.map((w) => w.id), ["w1"]);
      assert.deepEqual(slotsOf(pool, "big"), ["w1"]);
      const w1 = pidOf(pool, "w1");
      assert.deepEqual(await pidsOf(pool, "big"), [w1]);
      assert.deepEqual(
        await loadedBy(marks.path),
        [w1, w2].sort((a, b) => a - b),
      );
      // Growing again keeps the placement: workers 1 stays on 1.
      await pool.resize(2);
      assert.deepEqual(slotsOf(pool, "big"), ["w1"]);
      assert.deepEqual(await pidsOf(pool, "big"), [w1]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: workers above the pool's size loads it everywhere and places it on new slots as the pool grows",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 2 }),
      );
      pids.watch(pool);
      await pool.addModel("three", { file: "whoami.py", workers: 3 });
      await pool.addModel("two", { file: "whoami.py", workers: 2 });
      assert.deepEqual(slotsOf(pool, "three"), ["w1", "w2"]);
      await pool.resize(4);
      // The first new slot to replay gets it.
      const three = slotsOf(pool, "three")!;
      assert.equal(three.length, 3);
      assert.deepEqual(three.slice(0, 2), ["w1", "w2"]);
      assert.ok(["w3", "w4"].includes(three[2]!));
      assert.deepEqual(slotsOf(pool, "two"), ["w1", "w2"]);
      assert.equal((await pidsOf(pool, "three")).length, 3);
      assert.equal((await pidsOf(pool, "two")).length, 2);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: updateModel with another workers count moves the model (1 -> 2 -> every worker -> 1)",
  async () => {
    await using dir = await modelsDir();
    await using marks = await markerDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 3 }),
      );
      pids.watch(pool);
      const spec = { source: MARKER, options: { dir: marks.path } };
      await pool.addModel("big", { ...spec, workers: 1 });
      await pool.updateModel("big", { ...spec, workers: 2 });
      assert.deepEqual(slotsOf(pool, "big"), ["w1", "w2"]);
      const [w1, w2, w3] = ["w1", "w2", "w3"].map((id) => pidOf(pool, id));
      assert.deepEqual(
        await pidsOf(pool, "big"),
        [w1!, w2!].sort((a, b) => a - b),
      );
      assert.deepEqual(
        await loadedBy(marks.path),
        [w1!, w2!].sort((a, b) => a - b),
      );
      await pool.updateModel("big", spec);
      assert.equal(slotsOf(pool, "big"), undefined);
      assert.equal((await pidsOf(pool, "big")).length, 3);
      await pool.updateModel("big", { ...spec, workers: 1 });
      assert.deepEqual(slotsOf(pool, "big"), ["w1"]);
      assert.deepEqual(await pidsOf(pool, "big"), [w1]);
      // w3 unloaded it: a call pinned there is refused by the pool, and its
      // server no longer has it either.
      await assert.rejects(
        pool.execute("big", {}, { worker: "w3" }),
        NoWorkerError,
      );
      await assert.rejects(
        pool.control("w3", "executeModel", { name: "big", msg: {} }),
        (err: unknown) => (err as Error).name === "ModelNotFoundError",
      );
      assert.ok(w3 !== undefined);
      // removeModel frees its slot: a new placed model goes there first.
      await pool.removeModel("big");
      await pool.addModel("other", { file: "whoami.py", workers: 1 });
      assert.deepEqual(slotsOf(pool, "other"), ["w1"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

Deno.test("Pool placement: bad workers values are refused with ConfigError", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
    pids.watch(pool);
    for (
      const [bad, shown] of [[0, "0"], [-1, "-1"], [1.5, "1.5"], ["2", '"2"'], [
        2000,
        "2000",
      ]] as const
    ) {
      await assert.rejects(
        pool.addModel("m", { file: "whoami.py", workers: bad as number }),
        (err: unknown) =>
          err instanceof ConfigError &&
          err.message ===
            `Cannot add model 'm': workers: expected an integer from 1 to 1024 (how many workers load the model; absent: every worker), got ${shown}`,
      );
    }
    await pool.addModel("m", { file: "whoami.py" });
    await assert.rejects(
      pool.updateModel("m", { file: "whoami.py", workers: 0 }),
      /Cannot update model 'm': workers: expected an integer/,
    );
    assert.deepEqual(pool.status().models.map((m) => m.name), ["m"]);
  } finally {
    await pids.assertGone();
  }
});

scenarios.push([
  "Pool placement: initModel runs on the model's slots only, and a restarted slot replays it",
  async () => {
    await using dir = await modelsDir();
    await using marks = await markerDir();
    await Deno.writeTextFile(`${dir.path}/data.txt`, "x");
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 3 }),
      );
      pids.watch(pool);
      const source = `
import os

class Inits:
    def __init__(self, options):
        self.dir = options["dir"]

    def init(self, path):
        open(os.path.join(self.dir, "loaded-%d" % os.getpid()), "a").close()
        return {}

    def execute(self, msg):
        return {"pid": os.getpid()}
`;
      await pool.addModel("m", {
        source,
        options: { dir: marks.path },
        workers: 2,
      });
      await pool.initModel("m", "data.txt");
      const [w1, w2] = [pidOf(pool, "w1"), pidOf(pool, "w2")];
      assert.deepEqual(
        await loadedBy(marks.path),
        [w1, w2].sort((a, b) => a - b),
      );
      const ready = readyAgain(pool, "w2");
      pool.killWorker("w2", "test");
      await ready;
      const now = pidOf(pool, "w2");
      assert.deepEqual(
        await loadedBy(marks.path),
        [w1, w2, now].sort((a, b) => a - b),
        "the restarted slot ran init again; w3 never did",
      );
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a model that cannot load on the slot a shrink moves it to kills that worker, with the reason, as a failed replay does",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, {
          workers: 2,
          env: (id) => ({ PYPROXY_TEST_SLOT: id }),
        }),
      );
      pids.watch(pool);
      await pool.addModel("first", { file: "whoami.py", workers: 1 });
      await pool.addModel("picky", {
        file: "picky.py",
        options: { refuse: "w1" },
        workers: 1,
      });
      assert.deepEqual(slotsOf(pool, "picky"), ["w2"]);
      const exit = nextEvent(
        pool,
        "worker-exit",
        (ev) => ev.worker === "w1" && /could not be moved/.test(ev.reason),
      );
      await pool.resize(1);
      const ev = await exit;
      assert.match(
        ev.reason,
        /model 'picky' could not be moved to it \(.*refusing to load here/,
      );
      // It is w1's model now: w1's restarts try to load it (and fail, as
      // a model that fails its replay does).
      assert.deepEqual(slotsOf(pool, "picky"), ["w1"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a slot failed for good moves its placed model to another ready slot, its waiting calls follow, and the revived slot holds no duplicate",
  async () => {
    await using dir = await modelsDir();
    await using marks = await markerDir();
    const pids = new PidTracker();
    let ctx: PluginContext | undefined;
    const grab: Plugin = {
      name: "grab",
      onPoolStart(c) {
        ctx = c;
      },
    };
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 3, plugins: [grab] }),
      );
      pids.watch(pool);
      await pool.addModel("first", { file: "whoami.py", workers: 1 });
      await pool.addModel("big", {
        source: MARKER,
        options: { dir: marks.path },
        workers: 1,
      });
      assert.deepEqual(slotsOf(pool, "big"), ["w2"]);
      const w2 = pidOf(pool, "w2");
      const exited = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w2");
      // What the reconnect plugin does when it gives up on a slot.
      ctx!.failWorker("w2", "gave up on it");
      // Calls made while it moves wait for its new slot: none fails.
      const calls = await Promise.allSettled(
        Array.from({ length: 20 }, () => pool.execute<Pid>("big", {})),
      );
      assert.deepEqual(
        calls.filter((c) => c.status === "rejected"),
        [],
        "no call failed with NoWorkerError",
      );
      // The placement rule: w3 holds no placed model (w1 holds 'first').
      assert.deepEqual(slotsOf(pool, "big"), ["w3"]);
      const w3 = pidOf(pool, "w3");
      assert.deepEqual(
        [
          ...new Set(
            calls.map((c) => (c as PromiseFulfilledResult<Pid>).value.pid),
          ),
        ],
        [w3],
      );
      // Revived, w2 does not load it again: the model has its one slot.
      await exited;
      const ready = readyAgain(pool, "w2");
      assert.equal(ctx!.reviveWorker("w2"), true);
      await ready;
      assert.deepEqual(slotsOf(pool, "big"), ["w3"]);
      assert.deepEqual(await pidsOf(pool, "big"), [w3]);
      assert.deepEqual(
        await loadedBy(marks.path),
        [w2, w3].sort((a, b) => a - b),
      );
      assert.deepEqual(
        pool.status().workers.map((w) => `${w.id}: ${w.models?.join(",")}`),
        ["w1: first", "w2: ", "w3: big"],
      );
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: an update leaving a slot whose unload fails says so, naming the model and the slot, and tries once more",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(
      `${dir.path}/slowclose.py`,
      `
import os
import time

class SlowClose:
    """Its close() takes 1.5 s on worker w2 (PYPROXY_TEST_SLOT)."""

    close_timeout_ms = 5000

    def __init__(self, options):
        pass

    def execute(self, msg):
        return {"pid": os.getpid()}

    def close(self):
        if os.environ.get("PYPROXY_TEST_SLOT") == "w2":
            time.sleep(1.5)
`,
    );
    const log = recordingLogger();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, {
          workers: 2,
          loadTimeout: 500,
          logger: log.logger,
          env: (id) => ({ PYPROXY_TEST_SLOT: id }),
        }),
      );
      pids.watch(pool);
      await pool.addModel("m", { file: "slowclose.py", workers: 2 });
      assert.deepEqual(slotsOf(pool, "m"), ["w1", "w2"]);
      await pool.updateModel("m", { file: "slowclose.py", workers: 1 });
      assert.deepEqual(slotsOf(pool, "m"), ["w1"]);
      // The retry runs after the update, in the registry's turn: the next
      // model command waits for it.
      await pool.addModel("after", { file: "whoami.py" });
      const warned = log.entries.filter(([level, , props]) =>
        level === "warn" && props?.name === "m"
      );
      assert.equal(warned.length, 1, JSON.stringify(log.entries));
      assert.equal(warned[0]![2]!.worker, "w2");
      assert.equal(warned[0]![2]!.killed, false);
      assert.match(String(warned[0]![2]!.reason), /timed out|timeout/i);
      // Not there any more when tried again (the server drops it first): w2
      // was not killed, and serves on.
      assert.equal(pool.status().workers[1]!.restarts, 0);
      assert.deepEqual(pool.status().workers[1]!.models, ["after"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a shrink among idle slots removes one holding no placed model rather than the newest, which would move its model",
  async () => {
    await using dir = await modelsDir();
    await using marks = await markerDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 3 }),
      );
      pids.watch(pool);
      await pool.addModel("a", { file: "whoami.py", workers: 1 });
      await pool.addModel("b", { file: "whoami.py", workers: 1 });
      await pool.addModel("c", {
        source: MARKER,
        options: { dir: marks.path },
        workers: 1,
      });
      await pool.removeModel("b");
      assert.deepEqual(slotsOf(pool, "c"), ["w3"]);
      const w3 = pidOf(pool, "w3");
      const status = await pool.resize(2);
      assert.deepEqual(status.workers.map((w) => w.id), ["w1", "w3"]);
      assert.deepEqual(slotsOf(pool, "c"), ["w3"]);
      assert.deepEqual(await loadedBy(marks.path), [w3], "c was not moved");
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a model left on a failed slot (no other ready then) moves to the first worker that comes back",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    let ctx: PluginContext | undefined;
    const grab: Plugin = {
      name: "grab",
      onPoolStart(c) {
        ctx = c;
      },
    };
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 2, plugins: [grab] }),
      );
      pids.watch(pool);
      await pool.addModel("p", { file: "whoami.py", workers: 1 });
      assert.deepEqual(slotsOf(pool, "p"), ["w1"]);
      const exited = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w2");
      ctx!.failWorker("w2", "first");
      ctx!.failWorker("w1", "second: no ready worker to move p to");
      await exited;
      await pool.addModel("sync", { file: "whoami.py" }).catch(() => {});
      assert.deepEqual(slotsOf(pool, "p"), ["w1"]);
      const ready = readyAgain(pool, "w2");
      assert.equal(ctx!.reviveWorker("w2"), true);
      await ready;
      assert.deepEqual(slotsOf(pool, "p"), ["w2"]);
      const w2 = pidOf(pool, "w2");
      assert.deepEqual(await pidsOf(pool, "p", 6), [w2]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: placed models added at once (side by side) spread over the workers, as added one after the other",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 3 }),
      );
      pids.watch(pool);
      // Each chose its slots by the placements made so far: all three took
      // the least loaded worker, w1, which then held them all.
      await Promise.all(
        ["a", "b", "c"].map((name) =>
          pool.addModel(name, { file: "whoami.py", workers: 1 })
        ),
      );
      const first = ["a", "b", "c"].flatMap((name) =>
        slotsOf(pool, name) ?? []
      );
      assert.deepEqual(first.slice().sort(), ["w1", "w2", "w3"], String(first));
      await Promise.all([
        pool.addModel("d", { file: "whoami.py", workers: 2 }),
        pool.updateModel("a", { file: "whoami.py", workers: 2 }),
      ]);
      const load = new Map<string, number>();
      for (const name of ["a", "b", "c", "d"]) {
        for (const id of slotsOf(pool, name) ?? []) {
          load.set(id, (load.get(id) ?? 0) + 1);
        }
      }
      assert.deepEqual([...load.values()].sort(), [2, 2, 2], String([...load]));
    } finally {
      await pids.assertGone();
    }
  },
]);

Deno.test("Pool placement, each scenario on a pool of its own (3 at a time)", (t) =>
  concurrentSteps(t, scenarios, 3));
