/**
 * A model's `MemoryError` is logged by the pool as a warning naming the
 * model and the worker, at most one line a minute (src/_memory_error_log.ts):
 * the on-call walkthrough's leaking model answered 507s that `serve`'s log
 * never mentioned. Through a real pool and Python server, and the bound
 * with a fake clock.
 */
import assert from "node:assert/strict";
import { MemoryErrorLog } from "../src/_memory_error_log.ts";
import { PythonError } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";
import { Pool } from "../src/pool.ts";
import { modelsDir, PidTracker, poolOptions } from "./_pool_harness.ts";

function recorder(): {
  logger: Logger;
  lines: Array<[string, Record<string, unknown> | undefined]>;
} {
  const lines: Array<[string, Record<string, unknown> | undefined]> = [];
  const none = () => {};
  return {
    lines,
    logger: {
      trace: none,
      debug: none,
      info: none,
      warn: (message, properties) => void lines.push([message, properties]),
      error: none,
      fatal: none,
      isEnabledFor: () => true,
    },
  };
}

const HUNGRY = `class Hungry:
    def execute(self, msg):
        # A real allocation failure: far more than any address space.
        return len(bytearray(1 << 62))
`;

Deno.test("Pool logs a model's MemoryError as a warning naming the model and the worker, once for a burst", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/hungry.py`, HUNGRY);
  const pids = new PidTracker();
  const { logger, lines } = recorder();
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, logger }),
    );
    pids.watch(pool);
    await pool.addModel("hungry", { file: "hungry.py" });
    for (let i = 0; i < 3; i++) {
      await assert.rejects(
        pool.execute("hungry", {}),
        (err: unknown) =>
          err instanceof PythonError && err.type === "MemoryError",
      );
    }
    const memory = lines.filter(([m]) => m.includes("MemoryError"));
    assert.equal(memory.length, 1, JSON.stringify(lines));
    assert.match(
      memory[0]![0],
      /^Model \{model\} raised MemoryError on worker \{worker\} \(pid \{pid\}\): /,
    );
    assert.deepEqual(memory[0]![1], {
      model: "hungry",
      worker: "w1",
      pid: pool.status().workers[0]!.pid,
      count: 1,
    });
  } finally {
    await pids.assertGone();
  }
});

Deno.test("MemoryErrorLog: then one line per interval with the count since", () => {
  const { logger, lines } = recorder();
  let now = 5_000_000;
  const log = new MemoryErrorLog(logger, { now: () => now });
  log.raised("a", "w1", 10);
  for (let i = 0; i < 9; i++) {
    now += 1000;
    log.raised("a", "w1", 10);
  }
  assert.equal(lines.length, 1);
  now += 60_000;
  log.raised("b", "w2", 11);
  assert.equal(lines.length, 2);
  assert.match(
    lines[1]![0],
    /^Models raised MemoryError in \{count\} calls since/,
  );
  assert.deepEqual(lines[1]![1], {
    model: "b",
    worker: "w2",
    pid: 11,
    count: 10,
    seconds: 69,
  });
});
