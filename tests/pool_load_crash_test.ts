/**
 * A model whose load answers but which kills its worker shortly after (a
 * thread calling `os._exit` after the import, a fault on a timer): it is
 * quarantined (out of service, `ModelUnavailableError`) after its second
 * strike instead of being replayed onto every restarted worker until the
 * restart policy gives up on them all. Real Python workers and real
 * restarts; every process is checked gone at the end.
 */
import assert from "node:assert/strict";
import { ModelUnavailableError, WorkerCrashedError } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";
import { Pool, type PoolEvent } from "../src/pool.ts";
import {
  modelsDir,
  nextEvent,
  PidTracker,
  poolOptions,
} from "./_pool_harness.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

/**
 * Loads fine, then a thread kills the process `delay` s later (exit code 7,
 * after a line on stderr), unless the file `options.spare` exists.
 */
const BOMB = `
import os, sys, threading, time

def _boom(delay):
    time.sleep(delay)
    os.write(2, b"bomb: the timer went off\\n")
    os._exit(7)

class Bomb:
    def __init__(self, options):
        spare = options.get("spare")
        if not (spare and os.path.exists(spare)):
            threading.Thread(
                target=_boom, args=(options.get("delay", 0.1),), daemon=True
            ).start()

    def execute(self, msg):
        return {"pid": os.getpid()}
`;

const DOUBLER = `
class Doubler:
    def execute(self, msg):
        return {"y": msg["x"] * 2}
`;

/** Collects the pool's events from now on. */
function record(pool: Pool): { events: PoolEvent[]; off: () => void } {
  const events: PoolEvent[] = [];
  const off = pool.on((ev) => void events.push(ev));
  return { events, off };
}

/**
 * The scenarios of this file but the one under load, each on a pool of its
 * own: they wait on their models' timers, restarts and holds more than on
 * the CPU, so the file runs them a few at a time (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Pool: a model that kills its worker after its load answered is quarantined after its second strike; the workers come back serving the other models",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(`${dir.path}/bomb.py`, BOMB);
    await Deno.writeTextFile(`${dir.path}/double.py`, DOUBLER);
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(poolOptions(dir.path));
      pids.watch(pool);
      const { events, off } = record(pool);
      await pool.addModel("double", { file: "double.py" });
      const failed = nextEvent(
        pool,
        "model-failed",
        (ev) => ev.name === "bomb",
      );
      // The load itself answers: the crash comes 100 ms later.
      await pool.addModel("bomb", { file: "bomb.py" });
      const ev = await failed;
      assert.match(ev.reason, /exited with code 7/);
      assert.match(ev.reason, /bomb: the timer went off/);
      const info = pool.status().models.find((m) => m.name === "bomb")!;
      assert.equal(info.failedReason, ev.reason);
      assert.equal(info.slots, undefined, "an unplaced model shows no slots");
      // Every worker comes back, and serves the other model.
      for (let i = 0; i < 200; i++) {
        if (pool.status().workers.every((w) => w.state === "ready")) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      assert.deepEqual(pool.status().workers.map((w) => w.state), [
        "ready",
        "ready",
      ]);
      for (const worker of ["w1", "w2"]) {
        assert.deepEqual(await pool.execute("double", { x: 4 }, { worker }), {
          y: 8,
        });
      }
      await assert.rejects(
        pool.execute("bomb", {}),
        (err: unknown) =>
          err instanceof ModelUnavailableError &&
          /model 'bomb' is out of service/.test(err.message),
      );
      // No slot went near the restart policy's bound (5 crashes a minute):
      // the first strike and one replay each at most.
      const exits = events.filter((e) => e.type === "worker-exit");
      assert.ok(exits.length <= 4, `${exits.length} exits`);
      assert.ok(!events.some((e) => e.type === "failed"));
      off();
      // An update with code that does not crash brings it back.
      await Deno.writeTextFile(`${dir.path}/spare`, "");
      await pool.updateModel("bomb", {
        file: "bomb.py",
        options: { spare: `${dir.path}/spare` },
      });
      const { pid } = await pool.execute("bomb", {}) as { pid: number };
      assert.equal(typeof pid, "number");
      assert.equal(pool.status().models[1]!.failedReason, undefined);
    } finally {
      await pids.assertGone();
    }
  },
]);

/** A model whose import takes `ms` (after writing `marker`), then serves. */
function slowLoad(marker: string, ms: number): string {
  return `
import time
open(${JSON.stringify(marker)}, "w").close()
time.sleep(${ms / 1000})

class Slow:
    def execute(self, msg):
        time.sleep(msg.get("ms", 0) / 1000.0)
        return {"ok": True}
`;
}

async function until(check: () => boolean, what: string, ms = 15000) {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

scenarios.push([
  "Pool: a model placed on one worker that kills it after its load is quarantined after two held replays there; the other worker never restarts",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(`${dir.path}/bomb.py`, BOMB);
    await Deno.writeTextFile(`${dir.path}/double.py`, DOUBLER);
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(poolOptions(dir.path));
      pids.watch(pool);
      await pool.addModel("double", { file: "double.py" });
      const { events, off } = record(pool);
      const failed = nextEvent(
        pool,
        "model-failed",
        (ev) => ev.name === "bomb",
      );
      await pool.addModel("bomb", { file: "bomb.py", workers: 1 });
      const slot = pool.status().models.find((m) => m.name === "bomb")!
        .slots![0]!;
      const ev = await failed;
      assert.equal(ev.worker, slot);
      // Its replays (alone, the worker held back from calls).
      assert.match(
        ev.reason,
        /^its worker died within 3000 ms of loading it .*twice with no call or other load running there/,
      );
      // Every death it was laid on, each once: its slot's.
      const named = ev.reason.match(new RegExp(`worker ${slot} \\(pid`, "g"));
      await until(
        () => pool.status().workers.every((w) => w.state === "ready"),
        "the workers to be ready",
      );
      // Its slot only (2 strikes; a first death laid on it and on "double",
      // loaded just before, is a suspicion only), far from maxCrashes (5).
      const exits = events.filter((e) => e.type === "worker-exit");
      assert.ok(exits.every((e) => e.worker === slot));
      assert.ok(
        exits.length >= 2 && exits.length <= 3,
        `${exits.length} exits`,
      );
      assert.equal(named?.length, exits.length, ev.reason);
      off();
      const info = pool.status().models.find((m) => m.name === "bomb")!;
      assert.deepEqual(info.slots, []);
      await assert.rejects(
        pool.execute("bomb", {}),
        ModelUnavailableError,
      );
      for (const w of pool.status().workers) {
        assert.deepEqual(w.models, ["double"]);
      }
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool: a version that kills its worker after its load is quarantined alone; the model's other version serves on",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(`${dir.path}/bomb.py`, BOMB);
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(poolOptions(dir.path));
      pids.watch(pool);
      await Deno.writeTextFile(`${dir.path}/spare`, "");
      await pool.addModel("m", {
        file: "bomb.py",
        version: "1",
        options: { spare: `${dir.path}/spare` },
      });
      const failed = nextEvent(pool, "model-failed", (ev) => ev.name === "m@2");
      await pool.addModel("m", { file: "bomb.py", version: "2" });
      await failed;
      await assert.rejects(
        pool.execute("m", {}, { version: "2" }),
        (err: unknown) =>
          err instanceof ModelUnavailableError &&
          err.details.model === "m" && err.details.version === "2" &&
          /model 'm' version '2' is out of service/.test(err.message),
      );
      const v2 = pool.status().models.find((m) => m.version === "2")!;
      assert.match(
        v2.failedReason!,
        /twice with no call or other load running there/,
      );
      await until(
        () => pool.status().workers.every((w) => w.state === "ready"),
        "the workers to be ready",
      );
      const { pid } = await pool.execute("m", {}, { version: "1" }) as {
        pid: number;
      };
      assert.equal(typeof pid, "number");
    } finally {
      await pids.assertGone();
    }
  },
]);

Deno.test("Pool: under load (calls running) a crash-looping model is quarantined all the same: a replay loads a suspected model alone on a worker held back from calls", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/bomb.py`, BOMB);
  await Deno.writeTextFile(
    `${dir.path}/slow.py`,
    slowLoad(`${dir.path}/slow.started`, 0),
  );
  const pids = new PidTracker();
  let stop = false;
  const loops: Promise<void>[] = [];
  try {
    await using pool = await Pool.start(poolOptions(dir.path));
    pids.watch(pool);
    await pool.addModel("slow", { file: "slow.py" });
    for (let i = 0; i < 4; i++) {
      loops.push((async () => {
        while (!stop) {
          // Bounded, and a failed call yields to timers: a pool left
          // crash-looping (its calls failing at once) fails the test
          // instead of starving its timers.
          await pool.execute("slow", { ms: 50 }, { timeout: 2000 }).catch(
            () => new Promise((r) => setTimeout(r, 10)),
          );
        }
      })());
    }
    const failed = nextEvent(
      pool,
      "model-failed",
      (ev) => ev.name === "bomb",
      30000,
    );
    await pool.addModel("bomb", { file: "bomb.py", options: { delay: 0.3 } });
    const ev = await failed;
    // What happened: its strikes (held replays, nothing else running)
    // and, before them, the deaths that came while calls ran (it said
    // "with no call running" of them all).
    assert.match(ev.reason, /twice with no call or other load running there/);
    assert.match(ev.reason, /, while \d+ calls? ran there/);
    assert.equal(
      pool.status().models.find((m) => m.name === "bomb")!
        .failedReason,
      ev.reason,
    );
    stop = true;
    await Promise.all(loops);
    await until(
      () => pool.status().workers.every((w) => w.state === "ready"),
      "the workers to be ready",
    );
    assert.deepEqual(await pool.execute("slow", {}), { ok: true });
    assert.ok(pool.status().workers.every((w) => w.restarts <= 4));
  } finally {
    stop = true;
    await Promise.all(loops);
    await pids.assertGone();
  }
});

scenarios.push([
  "Pool: a call queued while its model's worker restarts fails with ModelUnavailableError once the model is out of service, as later calls do",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(`${dir.path}/bomb.py`, BOMB);
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }),
      );
      pids.watch(pool);
      const died = nextEvent(pool, "worker-exit");
      const failed = nextEvent(
        pool,
        "model-failed",
        (ev) => ev.name === "bomb",
      );
      await pool.addModel("bomb", { file: "bomb.py" });
      await died;
      // Its first strike: the worker restarts, and the call waits for it.
      const queued = pool.execute("bomb", {});
      const settled = queued.then(() => undefined, (err: unknown) => err);
      await failed;
      const err = await settled;
      assert.ok(err instanceof ModelUnavailableError, String(err));
      assert.match(err.message, /model 'bomb' is out of service/);
      await assert.rejects(pool.execute("bomb", {}), ModelUnavailableError);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool: a worker stopped from outside right after a load (SIGTERM, SIGINT) counts no strike and no suspicion; a SIGHUP stops none",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(`${dir.path}/double.py`, DOUBLER);
    const pids = new PidTracker();
    const laid: string[] = [];
    const none = () => {};
    const logger: Logger = {
      trace: none,
      debug: none,
      info: none,
      error: none,
      fatal: none,
      warn: (message) => {
        if (/loadCrashWindow/.test(message)) laid.push(message);
      },
    };
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1, loadCrashWindow: 1000, logger }),
      );
      pids.watch(pool);
      await pool.addModel("double", { file: "double.py" });
      // kill, pkill, earlyoom (SIGTERM before SIGKILL): the server stops
      // cleanly (code 143 or 130). Each was a strike against the model loaded
      // last (two: out of service).
      for (const signal of ["SIGTERM", "SIGINT"] as const) {
        await pool.updateModel("double", { file: "double.py" });
        const before = pool.status().workers[0]!.restarts;
        Deno.kill(pool.status().workers[0]!.pid!, signal);
        await until(
          () =>
            pool.status().workers[0]!.state === "ready" &&
            pool.status().workers[0]!.restarts === before + 1,
          "the restart",
        );
      }
      // SIGHUP (systemctl kill -s HUP, every process of the unit, meant as
      // the gateway's reload) killed the worker too, Python's default action
      // (security25): ignored, the same process answers the next call (a
      // signal's default action ends a process as it is delivered, before it
      // could read that call).
      await pool.updateModel("double", { file: "double.py" });
      const { pid, restarts } = pool.status().workers[0]!;
      Deno.kill(pid!, "SIGHUP");
      assert.deepEqual(await pool.execute("double", { x: 2 }), { y: 4 });
      assert.equal(pool.status().workers[0]!.pid, pid);
      assert.equal(pool.status().workers[0]!.restarts, restarts);
      assert.deepEqual(laid, []);
      assert.deepEqual(await pool.execute("double", { x: 1 }), { y: 2 });
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool: deaths that do not tell on a model's load count no strike: a kill -9 right after it, or one death only",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(`${dir.path}/double.py`, DOUBLER);
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1, loadCrashWindow: 1000 }),
      );
      pids.watch(pool);
      const { events, off } = record(pool);
      const readyTimes: number[] = [];
      const offTimes = pool.on(() => void readyTimes.push(Date.now()));
      await pool.addModel("double", { file: "double.py" });
      // SIGKILL (the OOM killer, kill -9): never a strike.
      for (let i = 0; i < 3; i++) {
        await pool.updateModel("double", { file: "double.py" });
        const before = pool.status().workers[0]!.restarts;
        Deno.kill(pool.status().workers[0]!.pid!, "SIGKILL");
        await until(
          () =>
            pool.status().workers[0]!.state === "ready" &&
            pool.status().workers[0]!.restarts === before + 1,
          "the restart",
        );
      }
      // A fault from outside right after a load is one strike (the rule
      // cannot tell it from the model's own): the held replay that follows
      // outlives the window, and clears it.
      const w = pool.status().workers[0]!;
      Deno.kill(w.pid!, "SIGSEGV");
      await until(
        () =>
          pool.status().workers[0]!.state === "ready" &&
          pool.status().workers[0]!.restarts === w.restarts + 1,
        "the restart",
      );
      // Loaded alone and held (twice as long as the death came after the
      // load, 250 ms at least): ready only after it.
      const exitAt = events.filter((e) => e.type === "worker-exit").at(-1)!;
      assert.equal(exitAt.type === "worker-exit" && exitAt.signal, "SIGSEGV");
      const exitIndex = events.indexOf(exitAt);
      const readyIndex = events.findIndex((e, i) =>
        i > exitIndex && e.type === "worker-state" && e.to === "ready"
      );
      assert.ok(readyIndex > exitIndex);
      assert.ok(
        readyTimes[readyIndex]! - readyTimes[exitIndex]! >= 250,
        `ready ${readyTimes[readyIndex]! - readyTimes[exitIndex]!} ms after`,
      );
      off();
      offTimes();
      assert.ok(!events.some((e) => e.type === "model-failed"));
      assert.deepEqual(await pool.execute("double", { x: 1 }), { y: 2 });
      // One more such death later is a first strike again, not a second.
      await pool.addModel("other", { file: "double.py" });
      Deno.kill(pool.status().workers[0]!.pid!, "SIGSEGV");
      const back = nextEvent(
        pool,
        "worker-state",
        (ev) => ev.to === "ready",
      );
      await back;
      assert.equal(pool.status().models.every((m) => !m.failedReason), true);
    } finally {
      await pids.assertGone();
    }
  },
]);

/**
 * A slow load whose worker gets `signal` from outside while it imports: the
 * load is tried once more on the restarted worker and succeeds.
 */
async function loadSurvivesOutsideSignal(signal: Deno.Signal): Promise<void> {
  await using dir = await modelsDir();
  const marker = `${dir.path}/slow.started`;
  await Deno.writeTextFile(`${dir.path}/slow.py`, slowLoad(marker, 600));
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1 }),
    );
    pids.watch(pool);
    const pid = pool.status().workers[0]!.pid!;
    const load = pool.addModel("slow", { file: "slow.py" });
    await until(() => {
      try {
        Deno.statSync(marker);
        return true;
      } catch {
        return false;
      }
    }, "the import to start");
    Deno.kill(pid, signal);
    await load;
    assert.deepEqual(await pool.execute("slow", {}), { ok: true });
    assert.notEqual(pool.status().workers[0]!.pid, pid);
  } finally {
    await pids.assertGone();
  }
}

scenarios.push([
  "Pool: a load during which its worker is killed by another model's doing (here a kill -9 from outside) is tried once more on the restarted worker",
  () => loadSurvivesOutsideSignal("SIGKILL"),
]);

// The server stops cleanly on SIGTERM (exit code 143), or dies of it.
scenarios.push([
  "Pool: a load during which its worker is stopped from outside (SIGTERM: kill, earlyoom) is tried once more on the restarted worker, as after a kill -9",
  () => loadSurvivesOutsideSignal("SIGTERM"),
]);

scenarios.push([
  "Pool: a load during which a model loaded just before kills the worker is tried once more, once that model is out of service",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(`${dir.path}/bomb.py`, BOMB);
    const marker = `${dir.path}/slow.started`;
    await Deno.writeTextFile(`${dir.path}/slow.py`, slowLoad(marker, 1000));
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }),
      );
      pids.watch(pool);
      await pool.addModel("bomb", { file: "bomb.py", options: { delay: 0.3 } });
      // Its import runs when the bomb goes off.
      await pool.addModel("slow", { file: "slow.py" });
      assert.deepEqual(await pool.execute("slow", {}), { ok: true });
      assert.ok(
        pool.status().models.find((m) => m.name === "bomb")!.failedReason,
      );
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool: a load whose own import kills the worker is not tried again",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(`${dir.path}/dies.py`, "import os\nos._exit(5)\n");
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }),
      );
      pids.watch(pool);
      const { events, off } = record(pool);
      await assert.rejects(
        pool.addModel("dies", { file: "dies.py" }),
        (err: unknown) =>
          err instanceof WorkerCrashedError && err.details.notThisLoad === null,
      );
      await until(
        () => pool.status().workers[0]!.state === "ready",
        "the restart",
      );
      off();
      assert.equal(events.filter((e) => e.type === "worker-exit").length, 1);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool: a quarantined model updated again with the same fault is quarantined again each time, and the crashes it caused never fail the slots (the restart policy forgets them)",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(`${dir.path}/bomb.py`, BOMB);
    await Deno.writeTextFile(`${dir.path}/double.py`, DOUBLER);
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(poolOptions(dir.path));
      pids.watch(pool);
      const { events, off } = record(pool);
      await pool.addModel("double", { file: "double.py" });
      for (let round = 0; round < 4; round++) {
        const failed = nextEvent(
          pool,
          "model-failed",
          (ev) => ev.name === "bomb",
        );
        if (round === 0) await pool.addModel("bomb", { file: "bomb.py" });
        else await pool.updateModel("bomb", { file: "bomb.py" });
        await failed;
      }
      for (let i = 0; i < 200; i++) {
        if (pool.status().workers.every((w) => w.state === "ready")) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      off();
      const exits = events.filter((e) => e.type === "worker-exit").length;
      // More crashes than the policy's 5 a minute, and no slot failed.
      assert.ok(exits > 5, `${exits} exits`);
      assert.deepEqual(pool.status().workers.map((w) => w.state), [
        "ready",
        "ready",
      ]);
      assert.ok(!events.some((e) => e.type === "failed"));
      assert.deepEqual(await pool.execute("double", { x: 2 }), { y: 4 });
    } finally {
      await pids.assertGone();
    }
  },
]);

Deno.test("Pool: a model that kills its worker soon after its load (each scenario on its own pool, 4 at a time)", (t) =>
  concurrentSteps(t, scenarios, 4));
