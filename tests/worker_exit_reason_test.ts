/**
 * A worker's `lastExit.reason` after its connection ended: the process's own
 * end when it comes within the moment the worker gives it, also when the host
 * stalled (a busy machine left it unscheduled) across that moment; and the
 * error of a call in flight then, which the pool waits up to 2 s for.
 */
import assert from "node:assert/strict";
import { reconnect } from "../plugins/reconnect.ts";
import { WorkerCrashedError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Connection, Runtime } from "../src/runtime/types.ts";
import { readyAgain } from "./_pool_harness.ts";

/** The default runtime, whose connections the test can end as if the socket closed. */
function cuttableRuntime(): { runtime: Runtime; cut(): void } {
  const base = defaultRuntime();
  const cuts: Array<() => void> = [];
  const runtime: Runtime = {
    ...base,
    async connect(target) {
      const conn = await base.connect(target);
      assert.ok(conn.read !== undefined, "the runtime reads into buffers");
      const ended = Promise.withResolvers<null>();
      cuts.push(() => ended.resolve(null));
      const wrapped: Connection = {
        readable: conn.readable,
        writable: conn.writable,
        read: (into) => Promise.race([conn.read!(into), ended.promise]),
        close: () => conn.close(),
      };
      if (conn.write !== undefined) wrapped.write = (d) => conn.write!(d);
      return wrapped;
    },
  };
  return { runtime, cut: () => cuts.splice(0).forEach((cut) => cut()) };
}

/** A one-worker pool whose connections `cut()` ends, the process left running. */
async function cuttablePool(): Promise<{ pool: Pool; cut: () => void }> {
  const { runtime, cut } = cuttableRuntime();
  const pool = await Pool.start({
    workers: 1,
    runtime,
    handleSignals: false,
    plugins: [reconnect({ heartbeatInterval: 0, backoff: { initial: 10 } })],
  });
  return { pool, cut };
}

/** Keeps the thread busy for `ms`: the host stalls, as on a loaded machine. */
function stall(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* busy */ }
}

Deno.test("Worker tells a process killed from outside (SIGKILL) after its connection ended, also when the host stalled past the moment it waits for the exit", async () => {
  const { pool, cut } = await cuttablePool();
  try {
    const before = pool.status().workers[0]!;
    const again = readyAgain(pool, before.id);
    // The connection ends, the process still runs: the worker gives its
    // exit a moment (250 ms) before it takes the process for alive.
    cut();
    await new Promise((r) => setTimeout(r, 0));
    // It is killed meanwhile, and the host stalls past that moment before it
    // reads anything: the exit is there when it runs again, and its timer
    // overdue. It was "connection lost" (the worker took the process for
    // alive and killed it).
    Deno.kill(before.pid!, "SIGKILL");
    stall(400);
    await again;
    assert.equal(
      pool.status().workers[0]!.lastExit?.reason,
      "killed by SIGKILL",
    );
  } finally {
    await pool.close();
  }
});

Deno.test("A call in flight when its worker's connection ends names a kill from outside (SIGKILL), also when the host stalled past the pool's wait for the exit", async () => {
  const { pool, cut } = await cuttablePool();
  try {
    await pool.addModel("slow", {
      source: "import time\n\nclass Slow:\n" +
        "    def execute(self, msg):\n        time.sleep(30)\n",
    });
    const before = pool.status().workers[0]!;
    const again = readyAgain(pool, before.id);
    const call = pool.execute("slow", {}).then(
      () => assert.fail("the call succeeded"),
      (err: unknown) => err,
    );
    // The call is on the server when its connection ends: it fails with the
    // connection, and the pool gives the worker's exit up to 2 s to come so
    // its error can say how the worker died.
    while (pool.status().workers[0]!.inFlight === 0) {
      await new Promise((r) => setTimeout(r, 0));
    }
    cut();
    await new Promise((r) => setTimeout(r, 0));
    // It is killed meanwhile, and the host stalls past those 2 s before it
    // reads anything: its error said "connection lost".
    Deno.kill(before.pid!, "SIGKILL");
    stall(2300);
    const err = await call;
    assert.ok(err instanceof WorkerCrashedError, String(err));
    assert.equal(err.details.reason, "killed by SIGKILL");
    await again;
  } finally {
    await pool.close();
  }
});
