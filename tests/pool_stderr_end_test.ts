/**
 * A stop or a failed start leaves no read of an exited server's stderr
 * behind: a process it started outside its group (a wrapper's helper, model
 * code's daemon) may hold the pipe a moment after the server is gone, and
 * `close()` and `Pool.start`'s rejection used to come first, the read still
 * running (Deno's sanitizers, on here, report it as a leak; the tail missed
 * the last words).
 */
import assert from "node:assert/strict";
import { StartError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { modelsDir, poolOptions, wrapperPython } from "./_pool_harness.ts";

Deno.test({
  name:
    "Pool.close waits for an exited server's stderr to end (held a moment by a process outside its group)",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    await using dir = await modelsDir();
    await using held = await wrapperPython({
      frozen: false,
      holdStderrMs: 300,
    });
    const pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, python: held.python }),
    );
    try {
      await pool.addModel("doubler", { file: "doubler.py" });
      assert.deepEqual(await pool.execute("doubler", { x: 2 }), { y: 4 });
    } finally {
      await pool.close();
    }
  },
});

Deno.test({
  name:
    "Pool.start's rejection comes once the failed server's stderr has ended (held a moment by a process outside its group)",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    await using dir = await modelsDir();
    await using held = await wrapperPython({ holdStderrMs: 300 });
    await assert.rejects(
      Pool.start(poolOptions(dir.path, {
        workers: 1,
        python: held.python,
        readyTimeout: Infinity,
        handshakeTimeout: 1000,
      })),
      StartError,
    );
  },
});
