/**
 * A model that kills its worker only once loaded on a restarted one (by a
 * restart's replay, among other models), after the same delay each time:
 * the death is timed from its own load, not from the replay's last one, so
 * its held replay outlasts its timer and it is quarantined; the models
 * replayed after it get no strike. Real Python workers.
 */
import assert from "node:assert/strict";
import { ModelUnavailableError } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";
import { Pool, type PoolEvent } from "../src/pool.ts";
import {
  modelsDir,
  nextEvent,
  PidTracker,
  poolOptions,
} from "./_pool_harness.ts";

/** Loads fine; once the file `armed` exists, kills the process 0.6 s on. */
const REPLAY_BOMB = `
import os, threading, time

def _boom():
    time.sleep(0.6)
    os.write(2, b"bomb: the timer went off\\n")
    os._exit(7)

class Bomb:
    def __init__(self, options):
        if os.path.exists(options["armed"]):
            threading.Thread(target=_boom, daemon=True).start()

    def execute(self, msg):
        return {"pid": os.getpid()}
`;

/** A model whose import takes 0.15 s. */
const SLOW = `
import time
time.sleep(0.15)

class Slow:
    def execute(self, msg):
        return {"ok": True}
`;

/** A logger that keeps the properties of each warning about a load crash. */
function crashLog(): { logger: Logger; crashes: Record<string, unknown>[] } {
  const crashes: Record<string, unknown>[] = [];
  const none = () => {};
  return {
    crashes,
    logger: {
      trace: none,
      debug: none,
      info: none,
      error: none,
      fatal: none,
      warn: (message, properties) => {
        if (/loadCrashWindow/.test(message) && properties !== undefined) {
          crashes.push(properties);
        }
      },
    },
  };
}

Deno.test("Pool: a model that kills a restarted worker some time after the replay loaded it, slow models loaded after it, is quarantined; they get no strike", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/bomb.py`, REPLAY_BOMB);
  await Deno.writeTextFile(`${dir.path}/slow.py`, SLOW);
  const pids = new PidTracker();
  const { logger, crashes } = crashLog();
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, logger, loadCrashWindow: 1500 }),
    );
    pids.watch(pool);
    const armed = `${dir.path}/armed`;
    await pool.addModel("bomb", { file: "bomb.py", options: { armed } });
    for (const name of ["a", "b", "c"]) {
      await pool.addModel(name, { file: "slow.py" });
    }
    // The kill -9 below tells on none of those loads, within their window
    // or not (a SIGKILL is never laid on a model): no wait for it to pass.
    const events: PoolEvent[] = [];
    const off = pool.on((ev) => void events.push(ev));
    const failed = nextEvent(pool, "model-failed", (ev) => ev.name === "bomb");
    await Deno.writeTextFile(armed, "");
    // A kill from outside (no strike): the replay loads the bomb, then the
    // slow ones (0.45 s), and the bomb's timer goes off 0.15 s after them.
    Deno.kill(pool.status().workers[0]!.pid!, "SIGKILL");
    const ev = await failed;
    assert.match(ev.reason, /exited with code 7 [56]\d\d ms after the load/);
    const innocent = crashes.filter((c) => c.name !== "bomb" && c.counted);
    assert.deepEqual(innocent, [], "no strike against the slow models");
    for (let i = 0; i < 400; i++) {
      if (pool.status().workers.every((w) => w.state === "ready")) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    for (const name of ["a", "b", "c"]) {
      assert.deepEqual(await pool.execute(name, {}), { ok: true });
    }
    await assert.rejects(pool.execute("bomb", {}), ModelUnavailableError);
    // The kill, the replay's death (a suspicion of all four), two held
    // replays of the bomb.
    const exits = events.filter((e) => e.type === "worker-exit");
    assert.ok(exits.length <= 4, `${exits.length} exits`);
    assert.ok(!events.some((e) => e.type === "failed"), "no slot failed");
    off();
  } finally {
    await pids.assertGone();
  }
});
