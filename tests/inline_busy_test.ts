/**
 * A model that runs on the Python server's event loop thread (declared
 * `inline`, or proved fast): when one of its calls turns slow the server
 * sends `busy` events (protocol §4) so the heartbeat does not take the worker
 * for wedged.
 */
import assert from "node:assert/strict";
import { TimeoutError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import type { WireMessage } from "../src/plugin.ts";
import { reconnect } from "../plugins/reconnect.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";

/**
 * Adds `slow` (the harness's slow.py) declared `inline = True`, and checks
 * that a call runs on the server's loop. Declared, not learned: a learned
 * model whose last fast call a busy machine preempted past 20 ms goes back
 * to threads (python/pyproxy_server/models.py, DEMOTE_AFTER), and its next
 * call, the slow one, then holds no loop (no busy event; the hang test
 * waited for an exit that never came). Learning is python/tests/test_inline.py's.
 */
async function addInlineSlow(pool: Pool, dir: string): Promise<void> {
  const source = await Deno.readTextFile(`${dir}/slow.py`);
  const declared = source.replace(
    "class Slow:\n",
    "class Slow:\n    inline = True\n",
  );
  assert.notEqual(declared, source);
  await Deno.writeTextFile(`${dir}/slow_inline.py`, declared);
  await pool.addModel("slow", { file: "slow_inline.py" });
  const out = await pool.execute<{ inline: boolean }>("slow", { ms: 0 });
  assert.ok(out.inline, "a declared inline model runs on the loop");
}

Deno.test("Pool keeps a worker whose inline call turns slow: busy events answer for it", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    const busy: WireMessage[] = [];
    await using pool = await Pool.start({
      workers: 1,
      modelsDir: dir.path,
      handleSignals: false,
      plugins: [
        reconnect({
          backoff: { initial: 10, max: 50 },
          heartbeatInterval: 100,
          heartbeatTimeout: 500,
        }),
        {
          name: "busy-spy",
          onReply(msg) {
            if (msg.event === "busy") busy.push(msg);
          },
        },
      ],
    });
    pids.watch(pool);
    const pid = pidOf(pool, "w1");
    await addInlineSlow(pool, dir.path);
    // Holds the server's loop for 1.5 s: three heartbeat timeouts.
    const out = await pool.execute<{ pid: number }>("slow", { ms: 1500 });
    assert.equal(out.pid, pid);
    assert.ok(busy.length >= 2, `busy events: ${JSON.stringify(busy)}`);
    assert.ok(busy.every((ev) => ev.model === "slow"));
    assert.equal(pool.status().workers[0]!.restarts, 0);
    assert.equal(pidOf(pool, "w1"), pid);
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool still replaces a worker whose inline call outlives its timeout: busy events of a call given up on do not count", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1 }, { hangGrace: 500 }),
    );
    pids.watch(pool);
    const pid = pidOf(pool, "w1");
    await addInlineSlow(pool, dir.path);
    const exit = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w1");
    const back = readyAgain(pool, "w1");
    await assert.rejects(
      pool.execute("slow", { ms: 30_000 }, { timeout: 200 }),
      TimeoutError,
    );
    const ev = await exit;
    assert.equal(ev.pid, pid);
    assert.match(
      ev.reason,
      /no answer to a ping within 500 ms after a call timed out/,
    );
    await back;
    assert.notEqual(pidOf(pool, "w1"), pid);
  } finally {
    await pids.assertGone();
  }
});
