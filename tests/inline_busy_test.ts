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
 * Adds `slow` as the harness's `inline_slow.py` (declared `inline = True`,
 * see its comment: a learned model can be sent back to threads by a busy
 * machine just before the slow call) and checks that a call runs on the
 * server's loop. Learning is python/tests/test_inline.py's.
 */
async function addInlineSlow(pool: Pool): Promise<void> {
  await pool.addModel("slow", { file: "inline_slow.py" });
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
    await addInlineSlow(pool);
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
    await addInlineSlow(pool);
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
