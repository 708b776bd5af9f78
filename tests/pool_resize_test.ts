import assert from "node:assert/strict";
import {
  CancelledError,
  ConfigError,
  NoWorkerError,
  SessionLostError,
  ShuttingDownError,
  StartError,
  WorkerCrashedError,
} from "../src/errors.ts";
import type { Plugin, PluginContext } from "../src/plugin.ts";
import { Pool, type PoolEvent } from "../src/pool.ts";
import {
  alive,
  assertGone,
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

type WhoAmI = { pid: number; msg: unknown };

/** The worker ids of a status, with their states. */
function slots(pool: Pool): string[] {
  return pool.status().workers.map((w) => `${w.id} ${w.state}`);
}

/** Records every pool event from now on. */
function record(pool: Pool): PoolEvent[] {
  const events: PoolEvent[] = [];
  pool.on((ev) => events.push(ev));
  return events;
}

/** The worker id that serves each key (by the pid whoami answers with). */
async function owners(pool: Pool, keys: string[]): Promise<string[]> {
  const byPid = new Map(
    pool.status().workers.map((w) => [w.pid, w.id] as const),
  );
  const replies = await Promise.all(
    keys.map((key) => pool.execute<WhoAmI>("whoami", {}, { key })),
  );
  return replies.map((r) => byPid.get(r.pid) ?? `pid ${r.pid}`);
}

/**
 * The scenarios of this file, each on a pool of its own: they wait on
 * loads, moves, stops and restarts of their workers more than on the CPU,
 * so the file runs them a few at a time (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Pool.resize grows 1 -> 3 under load: no call lost, the new workers have the models and serve",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }),
      );
      pids.watch(pool);
      await pool.addModel("whoami", { file: "whoami.py" });
      await pool.addModel("doubler", { file: "doubler.py", options: { k: 3 } });
      const events = record(pool);
      // Calls keep coming while the pool grows.
      let stop = false;
      let settled = 0;
      const load = (async () => {
        const failures: unknown[] = [];
        for (let i = 0; !stop; i++) {
          const batch = Array.from(
            { length: 20 },
            (_, j) =>
              pool.execute<{ y: number }>("doubler", { x: i * 20 + j })
                .finally(() => settled++),
          );
          for (const r of await Promise.allSettled(batch)) {
            if (r.status === "rejected") failures.push(r.reason);
          }
        }
        return failures;
      })();
      const status = await pool.resize(3);
      stop = true;
      assert.deepEqual(await load, [], "no call failed while growing");
      assert.ok(settled > 0);
      assert.deepEqual(
        status.workers.map((w) => `${w.id} ${w.state}`),
        ["w1 ready", "w2 ready", "w3 ready"],
      );
      assert.deepEqual(status.models.map((m) => m.name), ["whoami", "doubler"]);
      // Each new worker has the models (replayed before it took traffic).
      for (const id of ["w2", "w3"]) {
        const out = await pool.execute<WhoAmI>("whoami", {}, { worker: id });
        assert.equal(out.pid, pidOf(pool, id));
        assert.deepEqual(
          await pool.execute("doubler", { x: 2 }, { worker: id }),
          { y: 6 },
        );
      }
      assert.deepEqual(
        events.filter((e) => e.type === "worker-added"),
        [{ type: "worker-added", worker: "w2" }, {
          type: "worker-added",
          worker: "w3",
        }],
      );
      // The new workers took round-robin traffic.
      const served = new Set(
        (await Promise.all(
          Array.from({ length: 6 }, () => pool.execute<WhoAmI>("whoami", {})),
        )).map((r) => r.pid),
      );
      assert.equal(served.size, 3);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize moves a key only when its owner was added or removed (rendezvous hashing)",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(poolOptions(dir.path));
      pids.watch(pool);
      await pool.addModel("whoami", { file: "whoami.py" });
      const keys = Array.from({ length: 200 }, (_, i) => `user-${i}`);
      const before = await owners(pool, keys);
      await pool.resize(3);
      const grown = await owners(pool, keys);
      let moved = 0;
      grown.forEach((owner, i) => {
        if (owner !== before[i]) {
          moved++;
          assert.equal(owner, "w3", `${keys[i]} moved to ${owner}, not w3`);
        }
      });
      // About a third of the keys now belong to the new worker.
      assert.ok(moved > 0 && moved < keys.length, `${moved} keys moved`);
      // Removing w3 (idle, the newest) gives every key its old worker back.
      const status = await pool.resize(2);
      assert.deepEqual(status.workers.map((w) => w.id), ["w1", "w2"]);
      assert.deepEqual(await owners(pool, keys), before);
      // With w2 busy, w1 (fewest calls in flight) goes: its keys move to w2.
      await pool.addModel("slow", { file: "slow.py" });
      const w1 = pool.status().workers[0]!;
      const busy = pool.execute("slow", { ms: 300 }, { worker: "w2" });
      await pool.resize(1);
      await busy;
      assert.deepEqual(slots(pool), ["w2 ready"]);
      assert.equal(alive(w1.pid!), false);
      assert.deepEqual(await owners(pool, keys), keys.map(() => "w2"));
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize shrinks 3 -> 1 with calls in flight: each settles once, the removed processes are gone",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 3 }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const events = record(pool);
      const counts = new Array(12).fill(0);
      const calls = counts.map((_, i) =>
        pool.execute<{ pid: number; i: number }>("slow", { ms: 300, i })
          .finally(() => counts[i]++)
      );
      // Every worker has calls in flight (round-robin).
      assert.deepEqual(
        pool.status().workers.map((w) => w.inFlight),
        [4, 4, 4],
      );
      const removed = [pidOf(pool, "w2"), pidOf(pool, "w3")];
      const status = await pool.resize(1);
      assert.deepEqual(status.workers.map((w) => `${w.id} ${w.state}`), [
        "w1 ready",
      ]);
      // The drained workers' calls finished within the grace.
      const results = await Promise.all(calls);
      assert.deepEqual(results.map((r) => r.i), counts.map((_, i) => i));
      assert.deepEqual(counts, counts.map(() => 1), "each call settled once");
      await assertGone(removed);
      // Newest first among equals: w3, then w2.
      assert.deepEqual(
        events.filter((e) =>
          e.type === "worker-removed" ||
          (e.type === "worker-state" && e.to === "draining")
        ).map((e) => `${e.type} ${"worker" in e ? e.worker : ""}`),
        [
          "worker-removed w3",
          "worker-state w3",
          "worker-removed w2",
          "worker-state w2",
        ],
      );
      const exits = events.filter((e) => e.type === "worker-exit");
      assert.deepEqual(
        exits.map((e) => e.type === "worker-exit" && e.reason),
        ["removed by resize", "removed by resize"],
      );
      // And the pool still serves.
      const out = await pool.execute<{ pid: number }>("slow", { ms: 0 });
      assert.equal(out.pid, pidOf(pool, "w1"));
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize: a call that outlives shutdownGrace on a removed worker rejects with ShuttingDownError, an idempotent one is retried",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { shutdownGrace: 100 }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      await pool.addModel("whoami", { file: "whoami.py" });
      // Pinned calls cannot be retried elsewhere: the idempotent one goes to
      // w2 by key.
      const keys = Array.from({ length: 50 }, (_, i) => `k${i}`);
      const w2pid = pidOf(pool, "w2");
      const byKey = await Promise.all(
        keys.map((key) => pool.execute<WhoAmI>("whoami", {}, { key })),
      );
      const onW2 = keys[byKey.findIndex((r) => r.pid === w2pid)]!;
      let settledPlain = 0;
      let settledRetried = 0;
      const plain = pool.execute("slow", { ms: 5000 }, { worker: "w2" })
        .finally(() => settledPlain++).then(() => undefined, (e) => e);
      const retried = pool.execute<{ pid: number }>("slow", { ms: 1000 }, {
        key: onW2,
        idempotent: true,
      }).finally(() => settledRetried++);
      // w2 has 2 calls in flight: w1, busier, stays.
      const w1busy = Promise.all(Array.from(
        { length: 3 },
        () => pool.execute("slow", { ms: 1500 }, { worker: "w1" }),
      ));
      w1busy.catch(() => {});
      assert.deepEqual(pool.status().workers.map((w) => w.inFlight), [3, 2]);
      await pool.resize(1);
      assert.deepEqual(slots(pool), ["w1 ready"]);
      const err = await plain;
      assert.ok(err instanceof ShuttingDownError, String(err));
      assert.match(
        err.message,
        /Cannot complete call executeModel: worker w2 was removed by a resize before the call finished \(shutdownGrace 100 ms\)/,
      );
      const again = await retried;
      assert.equal(again.pid, pidOf(pool, "w1"));
      await w1busy;
      assert.equal(settledPlain, 1);
      assert.equal(settledRetried, 1);
      await assertGone([w2pid]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize: a call that crashes its removed worker during the grace rejects with WorkerCrashedError, its exit says so",
  async () => {
    // It was a ShuttingDownError "removed by a resize before the call finished
    // (shutdownGrace 5000 ms)" 20 ms into a 5 s grace, and the exit's reason
    // "removed by resize" for a process that exited with code 3 by itself
    // (chaos41: batches of a model crashing a worker under pool.resize).
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { shutdownGrace: 5000 }),
      );
      pids.watch(pool);
      const started = `${dir.path}/started`;
      const go = `${dir.path}/go`;
      await pool.addModel("crasher", { file: "crash_on_go.py" });
      await pool.addModel("slow", { file: "slow.py" });
      const w2pid = pidOf(pool, "w2");
      const call = pool.execute("crasher", { started, go }, { worker: "w2" })
        .then(() => assert.fail("answered"), (e) => e);
      // w1, busier, stays.
      const w1busy = Promise.all(Array.from(
        { length: 2 },
        () => pool.execute("slow", { ms: 1000 }, { worker: "w1" }),
      ));
      w1busy.catch(() => {});
      while (!await Deno.stat(started).then(() => true, () => false)) {
        await new Promise((r) => setTimeout(r, 5));
      }
      const exit = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w2");
      const removed = nextEvent(
        pool,
        "worker-removed",
        (ev) => ev.worker === "w2",
      );
      const resized = pool.resize(1);
      await removed;
      await Deno.writeTextFile(go, "");
      const err = await call;
      assert.ok(err instanceof WorkerCrashedError, String(err));
      assert.match(
        err.message,
        /worker w2 \(pid \d+\) died: exited with code 3/,
      );
      const exited = await exit;
      assert.deepEqual(
        { code: exited.code, reason: exited.reason },
        { code: 3, reason: "exited with code 3" },
      );
      await resized;
      assert.deepEqual(slots(pool), ["w1 ready"]);
      await w1busy;
      await assertGone([w2pid]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize removes a restarting worker first, and reconnect restarts the new workers",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      // A restart that waits: the slot stays `restarting` while we resize.
      await using pool = await Pool.start(
        poolOptions(dir.path, {}, {
          backoff: { initial: 60_000, max: 60_000 },
        }),
      );
      pids.watch(pool);
      await pool.addModel("whoami", { file: "whoami.py" });
      const restarting = nextEvent(
        pool,
        "restarting",
        (ev) => ev.worker === "w1",
      );
      pool.killWorker("w1");
      await restarting;
      assert.deepEqual(slots(pool), ["w1 restarting", "w2 ready"]);
      // Growing while w1 restarts: the new slot is w3 (ids are never reused).
      let status = await pool.resize(3);
      assert.deepEqual(status.workers.map((w) => `${w.id} ${w.state}`), [
        "w1 restarting",
        "w2 ready",
        "w3 ready",
      ]);
      // Shrinking takes the restarting one first, not the idle newest.
      status = await pool.resize(2);
      assert.deepEqual(status.workers.map((w) => `${w.id} ${w.state}`), [
        "w2 ready",
        "w3 ready",
      ]);
      const grown = await pool.resize(3);
      assert.deepEqual(grown.workers.map((w) => w.id), ["w2", "w3", "w4"]);
      assert.equal(
        (await pool.execute<WhoAmI>("whoami", {}, { worker: "w4" })).pid,
        pidOf(pool, "w4"),
      );
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize: reconnect restarts a crashed worker of the new size",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }),
      );
      pids.watch(pool);
      await pool.addModel("whoami", { file: "whoami.py" });
      await pool.resize(2);
      const old = pidOf(pool, "w2");
      const back = readyAgain(pool, "w2");
      pool.killWorker("w2");
      await back;
      assert.notEqual(pidOf(pool, "w2"), old);
      // Restarted with the models.
      const out = await pool.execute<WhoAmI>("whoami", {}, { worker: "w2" });
      assert.equal(out.pid, pidOf(pool, "w2"));
      assert.equal(pool.status().workers[1]!.restarts, 1);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize racing close(): the resize rejects with ShuttingDownError and no process is left",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
      pids.watch(pool);
      await pool.addModel("whoami", { file: "whoami.py" });
      const growing = pool.resize(3);
      const queued = pool.resize(2);
      await nextEvent(pool, "worker-added", (ev) => ev.worker === "w3");
      await pool.close();
      for (const p of [growing, queued]) {
        const err = await p.then(() => undefined, (e) => e);
        assert.ok(err instanceof ShuttingDownError, String(err));
      }
      const late = await pool.resize(2).then(() => undefined, (e) => e);
      assert.ok(late instanceof ShuttingDownError);
      assert.match(
        late.message,
        /^Cannot resize pool to 2 workers: pool is closing/,
      );
    } finally {
      await pids.assertGone();
    }
    // Shrinking when close() comes: the drained calls still finish.
    await using dir2 = await modelsDir();
    const pids2 = new PidTracker();
    try {
      const pool = await Pool.start(poolOptions(dir2.path, { workers: 3 }));
      pids2.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const calls = Array.from(
        { length: 3 },
        (_, i) => pool.execute<{ i: number }>("slow", { ms: 300, i }),
      );
      const shrinking = pool.resize(1);
      await pool.close();
      assert.deepEqual((await Promise.all(calls)).map((r) => r.i), [0, 1, 2]);
      const err = await shrinking.then(() => undefined, (e) => e);
      assert.ok(err instanceof ShuttingDownError, String(err));
    } finally {
      await pids2.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize rejects a bad count or options with a ConfigError",
  async () => {
    await using dir = await modelsDir();
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
    for (const bad of [0, -1, 1025, 1.5, NaN, Infinity, "2", undefined, null]) {
      const err = await pool.resize(bad as number).then(
        () => undefined,
        (e) => e,
      );
      assert.ok(err instanceof ConfigError, `${String(bad)}: ${err}`);
      assert.match(
        err.message,
        /^Cannot resize pool: count: expected an integer from 1 to 1024/,
      );
    }
    for (
      const bad of [{ timeout: -1 }, { timeout: "1" }, { signal: "x" }, null]
    ) {
      const err = await pool.resize(2, bad as never).then(
        () => undefined,
        (e) => e,
      );
      assert.ok(err instanceof ConfigError, `${JSON.stringify(bad)}: ${err}`);
    }
    assert.deepEqual(slots(pool), ["w1 ready"]);
    // The same size is no change.
    const same = await pool.resize(1);
    assert.deepEqual(same.workers.map((w) => w.id), ["w1"]);
  },
]);

scenarios.push([
  "Pool.resize runs resizes one at a time in call order; one given up before it began is dropped",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }),
      );
      pids.watch(pool);
      const abort = new AbortController();
      const first = pool.resize(3);
      const dropped = pool.resize(1, { signal: abort.signal });
      const last = pool.resize(2);
      abort.abort();
      const err = await dropped.then(() => undefined, (e) => e);
      assert.ok(err instanceof CancelledError, String(err));
      assert.deepEqual((await first).workers.map((w) => w.id), [
        "w1",
        "w2",
        "w3",
      ]);
      // The dropped resize to 1 never ran: 3 -> 2 removed the newest only.
      assert.deepEqual((await last).workers.map((w) => w.id), ["w1", "w2"]);
      assert.deepEqual(slots(pool), ["w1 ready", "w2 ready"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize rejects with StartError and keeps its size when every new worker fails to start",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, {
          workers: 1,
          // Only w1 gets arguments the server knows.
          serverArgs: (id) => id === "w1" ? [] : ["--no-such-flag"],
        }),
      );
      pids.watch(pool);
      const err = await pool.resize(3).then(() => undefined, (e) => e);
      assert.ok(err instanceof StartError, String(err));
      assert.match(
        err.message,
        /^Cannot resize pool to 3 workers: all 2 new workers failed to start\nw2: start failed/,
      );
      assert.deepEqual(slots(pool), ["w1 ready"]);
      // The ids stay used.
      const again = await pool.resize(2).then(() => undefined, (e) => e);
      assert.match(String(again), /w4: start failed/);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize: queued calls pinned to a removed worker fail, eval sessions there are lost",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { maxInFlightPerWorker: 1 }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const session = await pool.openSession({ worker: "w2" });
      await session.eval("x = 41").result;
      // Each worker busy with one call (its limit); a second one pinned to w2
      // waits in the queue.
      const running = pool.execute<{ i: number }>("slow", { ms: 500, i: 1 }, {
        worker: "w2",
      });
      const queued = pool.execute("slow", { ms: 300 }, { worker: "w2" });
      const w1busy = pool.execute("slow", { ms: 500 }, { worker: "w1" });
      assert.equal(pool.status().queue, 1);
      // Equal in flight: the newest (w2) goes.
      const shrinking = pool.resize(1);
      const err = await queued.then(() => undefined, (e) => e);
      assert.ok(err instanceof NoWorkerError, String(err));
      assert.match(err.message, /worker w2 is draining/);
      assert.equal((await running).i, 1);
      await shrinking;
      await w1busy;
      const lost = await session.eval("x + 1").result.then(
        () => undefined,
        (e) => e,
      );
      assert.ok(lost instanceof SessionLostError, String(lost));
      assert.match(String(lost.cause), /worker w2 was removed from the pool/);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize runs the plugin hooks of added and removed workers; controls on a removed id do nothing",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    const seen: string[] = [];
    let ctx: PluginContext | undefined;
    const spy: Plugin = {
      name: "spy",
      onPoolStart(c) {
        ctx = c;
      },
      onWorkerStart: (ev) => {
        seen.push(`start ${ev.worker.id} restart=${ev.restart}`);
      },
      onSessionOpen: (ev) => {
        seen.push(`open ${ev.worker.id}`);
      },
      onSessionClose: (ev) => {
        seen.push(`close ${ev.worker.id}`);
      },
      onWorkerExit: (ev) => {
        seen.push(
          `exit ${ev.worker.id} intentional=${ev.intentional} ${ev.reason}`,
        );
      },
    };
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1, plugins: [spy] }),
      );
      pids.watch(pool);
      seen.splice(0);
      await pool.resize(2);
      assert.deepEqual(seen, ["start w2 restart=false", "open w2"]);
      seen.splice(0);
      await pool.resize(1);
      assert.deepEqual(seen, [
        "close w2",
        "exit w2 intentional=true removed by resize",
      ]);
      assert.deepEqual(ctx!.workers().map((w) => w.id), ["w1"]);
      assert.equal(ctx!.restartWorker("w2"), false);
      assert.equal(ctx!.reviveWorker("w2"), false);
      ctx!.killWorker("w2");
      ctx!.failWorker("w2", "gone anyway");
      assert.throws(() => ctx!.restartWorker("w3"), RangeError);
      assert.deepEqual(slots(pool), ["w1 ready"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize counts a failed slot in the size and removes it first",
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
        poolOptions(dir.path, { workers: 3, plugins: [grab] }, {
          failedRetryAfter: 0,
        }),
      );
      pids.watch(pool);
      const failedPid = pidOf(pool, "w1");
      ctx!.failWorker("w1", "failed on purpose");
      assert.deepEqual(slots(pool), ["w1 failed", "w2 ready", "w3 ready"]);
      // 3 slots, one failed: growing to 4 adds one.
      let status = await pool.resize(4);
      assert.deepEqual(status.workers.map((w) => `${w.id} ${w.state}`), [
        "w1 failed",
        "w2 ready",
        "w3 ready",
        "w4 ready",
      ]);
      // Shrinking by one takes the failed slot, not the idle newest.
      status = await pool.resize(3);
      assert.deepEqual(status.workers.map((w) => `${w.id} ${w.state}`), [
        "w2 ready",
        "w3 ready",
        "w4 ready",
      ]);
      await assertGone([failedPid]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.resize removes no worker under a model load in flight: the shrink waits for it",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    await Deno.writeTextFile(
      `${dir.path}/gate.py`,
      `import os
import time

DIR = ${JSON.stringify(dir.path)}


class Gate:
    """Loads once the file 'go' exists; marks its start and end per pid."""

    def __init__(self, options):
        open(os.path.join(DIR, "started-%d" % os.getpid()), "w").close()
        while not os.path.exists(os.path.join(DIR, "go")):
            time.sleep(0.01)
        open(os.path.join(DIR, "done-%d" % os.getpid()), "w").close()

    def execute(self, msg):
        return {}
`,
    );
    const exists = (path: string) =>
      Deno.stat(path).then(() => true, () => false);
    try {
      await using pool = await Pool.start(poolOptions(dir.path));
      pids.watch(pool);
      const [p1, p2] = [pidOf(pool, "w1"), pidOf(pool, "w2")];
      const events = record(pool);
      const adding = pool.addModel("gate", { file: "gate.py" });
      for (const pid of [p1, p2]) {
        while (!await exists(`${dir.path}/started-${pid}`)) {
          await new Promise((r) => setTimeout(r, 10));
        }
      }
      const shrinking = pool.resize(1);
      // A round trip to a worker: long enough for a removal not held back.
      await pool.control("w1", "ping", {});
      assert.deepEqual(
        events.filter((e) => e.type === "worker-removed"),
        [],
        "no worker is removed while the model loads",
      );
      assert.deepEqual(slots(pool), ["w1 ready", "w2 ready"]);
      await Deno.writeTextFile(`${dir.path}/go`, "");
      await adding;
      await shrinking;
      assert.deepEqual(slots(pool), ["w1 ready"]);
      // Both loads ran to their end.
      assert.ok(await exists(`${dir.path}/done-${p1}`));
      assert.ok(await exists(`${dir.path}/done-${p2}`));
      assert.deepEqual(pool.status().models.map((m) => m.name), ["gate"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "PluginContext.resize names its plugin in the resize event, pool.resize has by null, and load() counts what a policy samples",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    let ctx: PluginContext | undefined;
    let atStart: boolean | undefined;
    // Set as the workers start (before them): a policy must not act yet.
    const spy: Plugin = {
      name: "spy",
      onPoolStart: (c) => void (ctx = c),
      onWorkerStart: () => void (atStart ??= ctx!.load().starting),
    };
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, {
          workers: 1,
          maxInFlightPerWorker: 2,
          plugins: [spy],
        }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      assert.equal(atStart, true);
      assert.deepEqual(ctx!.load(), {
        workers: 1,
        ready: 1,
        inFlight: 0,
        parked: 0,
        queue: 0,
        resizing: false,
        starting: false,
      });
      // Two calls fill the worker, the third waits in the pool queue.
      const calls = [0, 1, 2].map((i) => pool.execute("slow", { ms: 300, i }));
      assert.deepEqual(ctx!.load(), {
        workers: 1,
        ready: 1,
        inFlight: 2,
        parked: 0,
        queue: 1,
        resizing: false,
        starting: false,
      });
      const events = record(pool);
      const growing = ctx!.resize(2, { by: "spy", reason: "testing" });
      assert.equal(ctx!.load().resizing, true);
      await growing;
      assert.equal(ctx!.load().resizing, false);
      await pool.resize(1);
      // A resize to the size it has is no event.
      await ctx!.resize(1, { by: "spy" });
      assert.deepEqual(events.filter((e) => e.type === "resize"), [
        { type: "resize", from: 1, to: 2, by: "spy", reason: "testing" },
        { type: "resize", from: 2, to: 1, by: null, reason: null },
      ]);
      await Promise.all(calls);
      for (
        const [options, message] of [
          [{}, /by: expected the resizing plugin's name/],
          [{ by: "" }, /by: expected the resizing plugin's name/],
          [{ by: "spy", reason: 3 }, /reason: expected a string/],
          [{ by: "spy", timeout: -1 }, /timeout/],
        ] as const
      ) {
        await assert.rejects(
          ctx!.resize(2, options as unknown as { by: string }),
          (err: unknown) =>
            err instanceof ConfigError && message.test(err.message),
        );
      }
      assert.equal(pool.status().workers.length, 1);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool env: a function gets each slot's index, kept by a restart and reused by a slot added after a resize removed one",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(
      `${dir.path}/slot_env.py`,
      `import os


class SlotEnv:
    def execute(self, msg):
        return {"slot": os.environ.get("SLOT"), "id": os.environ.get("WID")}
`,
    );
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(poolOptions(dir.path, {
        workers: 2,
        env: (id, { index }) => ({ SLOT: String(index), WID: id }),
      }));
      pids.watch(pool);
      await pool.addModel("slot_env", { file: "slot_env.py" });
      const envOf = (worker: string) =>
        pool.execute<{ slot: string; id: string }>("slot_env", {}, { worker });
      assert.deepEqual(await envOf("w1"), { slot: "0", id: "w1" });
      assert.deepEqual(await envOf("w2"), { slot: "1", id: "w2" });
      assert.deepEqual(pool.status().workers.map((w) => [w.id, w.index]), [
        ["w1", 0],
        ["w2", 1],
      ]);
      // A restarted process keeps its slot's environment.
      const back = readyAgain(pool, "w1");
      pool.killWorker("w1");
      await back;
      assert.deepEqual(await envOf("w1"), { slot: "0", id: "w1" });
      // The slot a resize removed gives its index to the next one added
      // (ids are never reused; indexes are, once the process is gone).
      const [left] = (await pool.resize(1)).workers;
      const grown = await pool.resize(2);
      const added = grown.workers.find((w) => w.id === "w3");
      assert.ok(left !== undefined && added !== undefined);
      assert.equal(added.index, 1 - left.index);
      assert.deepEqual(await envOf("w3"), {
        slot: String(added.index),
        id: "w3",
      });
    } finally {
      await pids.assertGone();
    }
  },
]);

Deno.test("Pool.resize, each scenario on a pool of its own (3 at a time)", (t) =>
  concurrentSteps(t, scenarios, 3));
