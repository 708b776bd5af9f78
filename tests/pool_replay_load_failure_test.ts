/**
 * A model whose load fails on a restarted worker's replay with its own
 * error (a data file it reads is gone, a module it imports from outside the
 * models directory now raises): the worker comes up serving the other
 * models, that model is out of service with `ModelUnavailableError` naming
 * the failure, and an update brings it back once it is fixed. Real Python
 * workers.
 */
import assert from "node:assert/strict";
import { ModelUnavailableError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";
import { tempDir } from "./_harness.ts";

/** Reads `data.txt` beside it, and imports `outside` (not in its snapshot). */
const FRAGILE = `
import os
import outside

class Fragile:
    def __init__(self, options):
        with open(os.path.join(os.path.dirname(__file__), "data.txt")) as f:
            self.data = f.read()

    def execute(self, msg):
        return {"data": self.data, "outside": outside.VALUE, "pid": os.getpid()}
`;

const GOOD = `
import os

class Good:
    def execute(self, msg):
        return {"pid": os.getpid()}
`;

for (
  const [what, breakIt, fixIt, exception] of [
    [
      "a data file it reads removed",
      (dir: string, _lib: string) => Deno.remove(`${dir}/data.txt`),
      (dir: string, _lib: string) =>
        Deno.writeTextFile(`${dir}/data.txt`, "weights"),
      "FileNotFoundError",
    ],
    [
      "a module it imports edited to raise",
      (_dir: string, lib: string) =>
        Deno.writeTextFile(
          `${lib}/outside.py`,
          'raise RuntimeError("outside is broken")\n',
        ),
      (_dir: string, lib: string) =>
        Deno.writeTextFile(`${lib}/outside.py`, "VALUE = 2\n"),
      "RuntimeError",
    ],
  ] as const
) {
  Deno.test(`Pool: a model that no longer loads on a restarted worker (${what}) is out of service with the reason, the worker serves the others, and an update brings it back`, async () => {
    await using dir = await modelsDir();
    // A package outside the models directory: imported again from disk by
    // each load, never part of the model's snapshot.
    await using lib = await tempDir("pyproxy-replay-lib-");
    await Deno.writeTextFile(`${dir.path}/fragile.py`, FRAGILE);
    await Deno.writeTextFile(`${dir.path}/good.py`, GOOD);
    await Deno.writeTextFile(`${dir.path}/data.txt`, "weights");
    await Deno.writeTextFile(`${lib.path}/outside.py`, "VALUE = 1\n");
    const pids = new PidTracker();
    const pool = await Pool.start(poolOptions(dir.path, {
      env: { PYTHONPATH: lib.path },
    }));
    try {
      pids.watch(pool);
      await pool.addModel("good", { file: "good.py" });
      await pool.addModel("fragile", { file: "fragile.py" });
      assert.equal(
        (await pool.execute<{ data: string }>("fragile", {})).data,
        "weights",
      );
      await breakIt(dir.path, lib.path);
      const failed = nextEvent(
        pool,
        "model-failed",
        (ev) => ev.name === "fragile",
      );
      const back = readyAgain(pool, "w1");
      Deno.kill(pidOf(pool, "w1"), "SIGKILL");
      // The restarted worker comes up (before: its replay failed, again
      // and again, until the slot was failed).
      await back;
      const ev = await failed;
      assert.equal(ev.worker, "w1");
      // The models directory's paths relative to it (the data file's is
      // 'data.txt'), as a model's `file` is.
      assert.ok(!ev.reason.includes(dir.path), ev.reason);
      assert.ok(
        !ev.reason.includes(await Deno.realPath(dir.path)),
        ev.reason,
      );
      if (exception === "FileNotFoundError") {
        assert.match(
          ev.reason,
          /'data\.txt' \(fragile\.py, line \d+, in __init__\)$/,
        );
      }
      assert.match(
        ev.reason,
        new RegExp(`^its load failed on restarted worker w1: ${exception}: `),
      );
      // The other model runs on both workers, the restarted one included.
      for (const worker of ["w1", "w2"]) {
        const { pid } = await pool.execute<{ pid: number }>("good", {}, {
          worker,
        });
        assert.equal(pid, pidOf(pool, worker));
      }
      // The model's calls, on either worker: unavailable, saying why.
      for (let i = 0; i < 2; i++) {
        await assert.rejects(
          pool.execute("fragile", {}),
          (err: unknown) => {
            assert.ok(err instanceof ModelUnavailableError, String(err));
            assert.match(
              err.message,
              new RegExp(
                `^Cannot route call executeModel: model 'fragile' is out of service: its load failed on restarted worker w1: ${exception}: .*; update it \\(pool\\.updateModel, PUT /v1/models/fragile\\) to load it again$`,
              ),
            );
            assert.equal(err.details?.loadFailedOn, "w1");
            assert.equal(err.details?.exception, exception);
            return true;
          },
        );
      }
      const entry = pool.status().models.find((m) => m.name === "fragile");
      assert.match(entry?.failedReason ?? "", /^its load failed on restarted/);
      assert.equal(
        pool.status().workers.every((w) => w.state === "ready"),
        true,
      );
      // Fixed, then updated: back in service on every worker.
      await fixIt(dir.path, lib.path);
      await pool.updateModel("fragile", { file: "fragile.py" });
      for (const worker of ["w1", "w2"]) {
        const out = await pool.execute<{ data: string; pid: number }>(
          "fragile",
          {},
          { worker },
        );
        assert.equal(out.data, "weights");
        assert.equal(out.pid, pidOf(pool, worker));
      }
      assert.equal(
        pool.status().models.find((m) => m.name === "fragile")?.failedReason,
        undefined,
      );
    } finally {
      await pool.close();
      await pids.assertGone();
    }
  });
}
