/**
 * A worker's exit names the calls it still ran that their callers had
 * given up on (timed out, cancelled): `lastExit.givenUp`, and the pool's
 * log line. The call that hangs a worker usually times out first, so the
 * line named only its victims: in the on-call walkthrough, an inline
 * model's `while True: pass` held a worker's loop, the hang probe killed
 * it, and the log said `... exited: ... while running: "echo (1 call)"`.
 * Through a real pool and Python server.
 */
import assert from "node:assert/strict";
import { TimeoutError } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";
import { Pool } from "../src/pool.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
} from "./_pool_harness.ts";

// Waits in C (a lock's acquire, which no cancel reaches) for ever.
const STUCK = `import threading

gate = threading.Event()


class Stuck:
    def execute(self, msg):
        gate.wait()
`;

Deno.test("a worker's exit names the calls given up on that it still ran, in lastExit.givenUp and the log", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/stuck.py`, STUCK);
  const pids = new PidTracker();
  const lines: Array<[string, Record<string, unknown> | undefined]> = [];
  const none = () => {};
  const logger: Logger = {
    trace: none,
    debug: none,
    info: none,
    warn: (message, properties) => void lines.push([message, properties]),
    error: none,
    fatal: none,
    isEnabledFor: () => true,
  };
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, logger }),
    );
    pids.watch(pool);
    await pool.addModel("stuck", { file: "stuck.py" });
    for (let i = 0; i < 2; i++) {
      await assert.rejects(
        pool.execute("stuck", {}, { timeout: 50 }),
        TimeoutError,
      );
    }
    assert.deepEqual(pool.status().workers[0]!.abandoned, { stuck: 2 });
    const exited = nextEvent(pool, "worker-exit");
    Deno.kill(pidOf(pool, "w1"), "SIGKILL");
    await exited;
    const last = pool.status().workers[0]!.lastExit!;
    assert.deepEqual(last.givenUp, { byName: { stuck: 2 }, calls: 2 });
    const line = lines.find(([m]) => m.includes("exited:"));
    assert.ok(line, JSON.stringify(lines));
    assert.match(
      line[0],
      /; still running, given up on \(timed out or cancelled\): \{givenUp\}$/,
    );
    assert.equal(line[1]?.givenUp, "stuck (2 calls)");
  } finally {
    await pids.assertGone();
  }
});
