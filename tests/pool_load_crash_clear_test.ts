/**
 * A model that kills its worker soon after its load, added with several
 * healthy ones just after it: the first death is laid on them all, each
 * only suspected. Its quarantine clears the models suspected only beside
 * it (they were each held the whole window, one after the other, on every
 * restarted worker while the others waited), and the replay that killed a
 * worker lets the next one go only once the death is counted (it held the
 * model again, a moment before its quarantine, and died of it too). Real
 * Python workers.
 */
import assert from "node:assert/strict";
import { ModelUnavailableError } from "../src/errors.ts";
import { Pool, type PoolEvent } from "../src/pool.ts";
import {
  modelsDir,
  nextEvent,
  PidTracker,
  poolOptions,
} from "./_pool_harness.ts";

/** Loads fine, then a thread kills the process `delay` s after the load. */
const BOMB = `
import os, threading, time

def _boom(delay):
    time.sleep(delay)
    os.write(2, b"bomb: the timer went off\\n")
    os._exit(7)

class Bomb:
    def __init__(self, options):
        threading.Thread(target=_boom, args=(options["delay"],), daemon=True).start()

    def execute(self, msg):
        return {"pid": os.getpid()}
`;

const DOUBLER = `
class Doubler:
    def execute(self, msg):
        return {"y": msg["x"] * 2}
`;

Deno.test("Pool: a quarantined model clears the models suspected only beside it, and its last held replay kills no other worker", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/bomb.py`, BOMB);
  await Deno.writeTextFile(`${dir.path}/double.py`, DOUBLER);
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { loadCrashWindow: 1500 }),
    );
    pids.watch(pool);
    const events: PoolEvent[] = [];
    const off = pool.on((ev) => void events.push(ev));
    const failed = nextEvent(pool, "model-failed", undefined, 20_000);
    await pool.addModel("bomb", { file: "bomb.py", options: { delay: 0.5 } });
    const names = ["d0", "d1", "d2", "d3", "d4"];
    for (const n of names) await pool.addModel(n, { file: "double.py" });
    // Both workers die 0.5 s after the bomb's load: laid on the six models
    // there. Held first on each restarted worker, it dies there alone: two
    // strikes, out of service.
    const ev = await failed;
    assert.equal(ev.name, "bomb", ev.reason);
    // The five were suspected of those first deaths only, beside it.
    for (const m of pool.status().models) {
      assert.equal(m.suspected, undefined, `${m.name} still suspected`);
    }
    for (let i = 0; i < 400; i++) {
      if (pool.status().workers.every((w) => w.state === "ready")) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.ok(pool.status().workers.every((w) => w.state === "ready"));
    for (const n of names) {
      assert.deepEqual(await pool.execute(n, { x: 4 }), { y: 8 });
    }
    await assert.rejects(pool.execute("bomb", {}), ModelUnavailableError);
    // Two deaths of each worker: the first, and its held replay.
    const deaths = events.filter((e) =>
      e.type === "worker-exit" && e.code === 7
    );
    assert.equal(deaths.length, 4, JSON.stringify(deaths));
    assert.ok(!events.some((e) => e.type === "failed"), "no slot failed");
    off();
  } finally {
    await pids.assertGone();
  }
});

/**
 * Loads fine; a thread kills the process once file `trigger` exists (not
 * on a process that found it there at its load: the restarted workers).
 */
const TRIPWIRE = `
import os, threading, time

def _watch(path):
    while not os.path.exists(path):
        time.sleep(0.01)
    os.write(2, b"tripwire: gone off\\n")
    os._exit(7)

class Tripwire:
    def __init__(self, options):
        if not os.path.exists(options["trigger"]):
            threading.Thread(target=_watch, args=(options["trigger"],), daemon=True).start()

    def execute(self, msg):
        return {"pid": os.getpid()}
`;

Deno.test("Pool: every worker dying at once just after one add (nothing else running) is one strike against that model, not two: its held replay clears it", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/tripwire.py`, TRIPWIRE);
  await Deno.writeTextFile(`${dir.path}/double.py`, DOUBLER);
  const trigger = `${dir.path}/trigger`;
  const pids = new PidTracker();
  try {
    const window = 1000;
    await using pool = await Pool.start(
      poolOptions(dir.path, { loadCrashWindow: window }),
    );
    pids.watch(pool);
    const events: PoolEvent[] = [];
    const off = pool.on((ev) => void events.push(ev));
    await pool.addModel("wire", { file: "tripwire.py", options: { trigger } });
    // Its load out of the window: the deaths say nothing of it.
    await new Promise((r) => setTimeout(r, window + 100));
    await pool.addModel("double", { file: "double.py" });
    // Both workers die a moment after the add, of the other model's doing:
    // two strikes at once took "double" out of service.
    await Deno.writeTextFile(trigger, "");
    // One strike: held alone on each restarted worker, it outlives the
    // window and is cleared.
    const double = () => pool.status().models.find((m) => m.name === "double")!;
    for (let i = 0; i < 400; i++) {
      if (
        events.filter((e) => e.type === "worker-exit").length >= 2 &&
        pool.status().workers.every((w) => w.state === "ready") &&
        double().suspected === undefined
      ) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(double().failedReason, undefined, double().failedReason);
    assert.equal(double().suspected, undefined);
    for (const worker of ["w1", "w2"]) {
      assert.deepEqual(await pool.execute("double", { x: 4 }, { worker }), {
        y: 8,
      });
    }
    const deaths = events.filter((e) => e.type === "worker-exit");
    assert.equal(deaths.length, 2, JSON.stringify(deaths));
    assert.ok(!events.some((e) => e.type === "model-failed"));
    off();
  } finally {
    await pids.assertGone();
  }
});
