/**
 * A model whose timer goes off after a different delay at each load (it may
 * outlive its held replay, then kill the worker while another model is
 * loaded or held): the other model may take a strike, but never a second
 * one, and the model that kills is the one quarantined. Real Python workers.
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

/**
 * Loads fine, then a thread kills the process after `delays[n]` s at its
 * n-th load (the last one from then on; a counter file).
 */
const RANDOM_BOMB = `
import os, threading, time

def _boom(delay):
    time.sleep(delay)
    os.write(2, b"bomb: the timer went off\\n")
    os._exit(7)

class Bomb:
    def __init__(self, options):
        counter = options["counter"]
        n = len(open(counter).read()) if os.path.exists(counter) else 0
        with open(counter, "a") as f:
            f.write("x")
        delays = options["delays"]
        delay = delays[min(n, len(delays) - 1)]
        threading.Thread(target=_boom, args=(delay,), daemon=True).start()

    def execute(self, msg):
        return {"pid": os.getpid()}
`;

const DOUBLER = `
class Doubler:
    def execute(self, msg):
        return {"y": msg["x"] * 2}
`;

Deno.test("Pool: a model whose timer goes off after a different delay each time is quarantined, not the model held after it", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/bomb.py`, RANDOM_BOMB);
  await Deno.writeTextFile(`${dir.path}/double.py`, DOUBLER);
  const pids = new PidTracker();
  try {
    // The restart policy bounds such a model only: room for it here.
    await using pool = await Pool.start(
      // A window of 2 s, not the default 3 s: every delay below is still
      // well within it, and the whole-window holds take 1 s less each.
      poolOptions(dir.path, { workers: 1, loadCrashWindow: 2000 }, {
        maxCrashes: 10,
      }),
    );
    pids.watch(pool);
    const events: PoolEvent[] = [];
    const off = pool.on((ev) => void events.push(ev));
    const failed = nextEvent(pool, "model-failed", undefined, 30_000);
    // Its first death (0.4 s after its load) is laid on both models (the
    // other one loaded just after it). Held alone on the replay for 0.8 s,
    // it outlives that (1.2 s now) and kills the worker during the other
    // model's hold: a strike against that one. Replays held the suspected
    // models last, so next it was loaded before the other's hold and killed
    // the worker 0.3 s after its load: a second strike, the other model out
    // of service with this one's stderr line as its reason. Held first, the
    // other model outlives its hold before this one is loaded.
    await pool.addModel("bomb", {
      file: "bomb.py",
      options: { counter: `${dir.path}/counter`, delays: [0.4, 1.2, 0.3, 1.2] },
    });
    await pool.addModel("double", { file: "double.py" });
    const ev = await failed;
    assert.equal(ev.name, "bomb", ev.reason);
    for (let i = 0; i < 400; i++) {
      if (pool.status().workers.every((w) => w.state === "ready")) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.deepEqual(await pool.execute("double", { x: 4 }), { y: 8 });
    await assert.rejects(pool.execute("bomb", {}), ModelUnavailableError);
    assert.ok(!events.some((e) => e.type === "failed"), "no slot failed");
    assert.ok(
      !events.some((e) => e.type === "model-failed" && e.name === "double"),
    );
    off();
  } finally {
    await pids.assertGone();
  }
});
