// What a batched call tells its caller's hooks (docs/plugins.md, "Batched
// calls"): `onTimeout` names what the caller called, once per call timed out
// on a worker, with its model and request id; `onSend`'s last call names the
// worker that ran the call, also when its batch was taken apart and a part
// went to another worker.
import assert from "node:assert/strict";
import { Pool, type PoolOptions } from "../src/pool.ts";
import type { Plugin, TimeoutEvent } from "../src/plugin.ts";
import { TimeoutError } from "../src/errors.ts";
import { modelsDir } from "./_pool_harness.ts";

/** Answers each message with its id and the pid that ran it; `{sleep}` holds the worker. */
const RECORDER = `
import os
import time
class Recorder:
    batch_size = 16
    batch_delay_ms = 20
    def execute_batch(self, msgs):
        time.sleep(max(m.get("sleep", 0) for m in msgs))
        return [{"id": m.get("id"), "pid": os.getpid()} for m in msgs]
`;

Deno.test("Pool batching: a call that times out while its batch runs is told to onTimeout once, before it settles, as executeModel with its own timeout and its worker", async () => {
  const events: Array<
    Pick<TimeoutEvent, "cmd" | "timeoutMs"> & { worker: string }
  > = [];
  const recorder: Plugin = {
    name: "timeouts",
    onTimeout(ev) {
      events.push({
        worker: ev.worker.id,
        cmd: ev.cmd,
        timeoutMs: ev.timeoutMs,
      });
    },
  };
  await using dir = await modelsDir();
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
    plugins: { defaults: false, use: [recorder] },
  });
  await pool.addModel("rec", { source: RECORDER });
  // Alone (the model idle: a batch of one at once), then three gathered
  // behind a call that holds the worker, each with its own timeout.
  const alone = pool.execute("rec", { sleep: 0.5 }, { timeout: 60 });
  await assert.rejects(alone, TimeoutError);
  const blocker = pool.execute("rec", { sleep: 0.1 });
  const gathered = [150, 250, 250].map((timeout, id) =>
    pool.execute("rec", { id, sleep: 0.5 }, { timeout })
  );
  for (const [i, r] of (await Promise.allSettled(gathered)).entries()) {
    assert.equal(r.status, "rejected");
    const err = (r as PromiseRejectedResult).reason;
    assert.ok(err instanceof TimeoutError, String(err));
    assert.match(
      err.message,
      /^Cannot complete executeModel of model 'rec'/,
      String(i),
    );
  }
  await blocker;
  // Told before each call settled, as a call to a model that does not batch.
  assert.deepEqual(
    events.toSorted((a, b) => a.timeoutMs - b.timeoutMs),
    [60, 150, 250, 250].map((timeoutMs) => ({
      worker: "w1",
      cmd: "executeModel",
      timeoutMs,
    })),
  );
  // Nothing more came (the batches' own deadlines, their cancels).
  await pool.execute("rec", { id: 9 });
  assert.equal(events.length, 4);
});

Deno.test("Pool batching: with two workers, the last onSend of a call of a batch taken apart names the worker that ran it", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start({
    workers: 2,
    modelsDir: dir.path,
    handleSignals: false,
    plugins: { defaults: false, use: [] },
  });
  await pool.addModel("rec", { source: RECORDER });
  const workerOf = new Map(
    pool.status().workers.map((w) => [w.pid, w.id] as const),
  );
  const sends = new Map<number, string[]>();
  // One call in flight on each worker: the calls below gather into one
  // batch, which the BigInt takes apart; its parts go round-robin, so some
  // run on the other worker than the batch of six went to.
  const blockers = [0, 1].map(() => pool.execute("rec", { sleep: 0.1 }));
  const calls = [0, 1, 2, 3, 4, 5].map((id) =>
    pool.execute("rec", id === 2 ? { id, n: 1n } : { id }, {
      onSend: (worker) => sends.set(id, [...sends.get(id) ?? [], worker]),
    })
  );
  const settled = await Promise.allSettled(calls);
  await Promise.all(blockers);
  let moved = 0;
  for (const [id, r] of settled.entries()) {
    if (id === 2) {
      assert.equal(r.status, "rejected");
      continue;
    }
    assert.equal(
      r.status,
      "fulfilled",
      String((r as PromiseRejectedResult).reason),
    );
    const { pid } = (r as PromiseFulfilledResult<{ pid: number }>).value;
    const told = sends.get(id)!;
    assert.equal(told.at(-1), workerOf.get(pid), `call ${id}: ${told}`);
    if (told[0] !== told.at(-1)) moved++;
  }
  // The case at issue came up: a call ran elsewhere than its first batch went.
  assert.ok(moved > 0, JSON.stringify([...sends]));
});

/**
 * A one-worker pool on a models directory of its own whose plugin records
 * each `onTimeout` as `"<cmd> <timeoutMs>"` in `events`, and its `model` in
 * `models`.
 */
async function timeoutsPool(
  extra: PoolOptions = {},
): Promise<
  { pool: Pool; events: string[]; models: unknown[] } & AsyncDisposable
> {
  const events: string[] = [];
  const models: unknown[] = [];
  const dir = await modelsDir();
  try {
    const pool = await Pool.start({
      workers: 1,
      modelsDir: dir.path,
      handleSignals: false,
      plugins: {
        defaults: false,
        use: [{
          name: "timeouts",
          onTimeout: (ev) => {
            events.push(`${ev.cmd} ${ev.timeoutMs}`);
            models.push(ev.model);
          },
        }],
      },
      ...extra,
    });
    return {
      pool,
      events,
      models,
      async [Symbol.asyncDispose]() {
        await pool.close();
        await dir[Symbol.asyncDispose]();
      },
    };
  } catch (err) {
    await dir[Symbol.asyncDispose]();
    throw err;
  }
}

Deno.test("Pool: onTimeout names the model and the request id of the call that timed out (batched, not batched, a stream), which its later CancelledError reply does not", async () => {
  const events: TimeoutEvent[] = [];
  await using dir = await modelsDir();
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
    plugins: {
      defaults: false,
      use: [{ name: "timeouts", onTimeout: (ev) => void events.push(ev) }],
    },
  });
  await pool.addModel("rec", { source: RECORDER });
  await pool.addModel("sleeper", {
    source:
      "import time\nclass Sleeper:\n    def execute(self, msg):\n        time.sleep(msg['s'])\n        yield msg['s']\n",
  });
  await pool.addModel("plain", {
    source:
      "import time\nclass Plain:\n    def execute(self, msg):\n        time.sleep(msg['s'])\n        return msg['s']\n",
  });
  await assert.rejects(
    pool.execute("rec", { sleep: 0.3 }, { timeout: 50, requestId: "b-1" }),
    TimeoutError,
  );
  await assert.rejects(
    pool.execute("plain", { s: 0.3 }, { timeout: 50, requestId: "p-1" }),
    TimeoutError,
  );
  await assert.rejects(
    pool.execute("plain", { s: 0.3 }, { timeout: 50 }),
    TimeoutError,
  );
  await assert.rejects(
    (async () => {
      const stream = pool.executeStream("sleeper", { s: 0.3 }, {
        timeout: 50,
        requestId: "s-1",
      });
      for await (const _ of stream) { /* nothing comes in time */ }
    })(),
    TimeoutError,
  );
  assert.deepEqual(
    events.map(({ cmd, model, requestId }) => ({ cmd, model, requestId })),
    [
      { cmd: "executeModel", model: "rec", requestId: "b-1" },
      { cmd: "executeModel", model: "plain", requestId: "p-1" },
      { cmd: "executeModel", model: "plain", requestId: undefined },
      { cmd: "executeStream", model: "sleeper", requestId: "s-1" },
    ],
  );
  // Absent, not undefined, without one (exactOptionalPropertyTypes).
  assert.equal("requestId" in events[2]!, false);
});

Deno.test("Pool: a caller's own executeBatch (pool.request) that times out is told to onTimeout as executeBatch, what it called", async () => {
  await using recorded = await timeoutsPool();
  const { pool, events, models } = recorded;
  await pool.addModel("rec", { source: RECORDER });
  await assert.rejects(
    pool.request("executeBatch", { name: "rec", msgs: [{ sleep: 0.3 }] }, {
      timeout: 50,
    }),
    TimeoutError,
  );
  assert.deepEqual(events, ["executeBatch 50"]);
  // Not a model call: no model named (its batch's name is in the message).
  assert.deepEqual(models, [undefined]);
});

Deno.test("Pool: onTimeout of a call that waited in the queue gives the caller's whole timeout, not what was left of it when sent", async () => {
  await using recorded = await timeoutsPool({ maxInFlightPerWorker: 1 });
  const { pool, events } = recorded;
  await pool.addModel("sleeper", {
    source:
      "import time\nclass Sleeper:\n    threaded = True\n    def execute(self, msg):\n        time.sleep(msg['s'])\n        return msg['s']\n",
  });
  // The worker's one slot taken for 300 ms: the second call waits that long
  // in the queue, then times out on the worker (it was sent with ~300 ms of
  // its 600 left: told 300 before).
  const first = pool.execute("sleeper", { s: 0.3 });
  await assert.rejects(
    pool.execute("sleeper", { s: 1 }, { timeout: 600 }),
    TimeoutError,
  );
  assert.equal(await first, 0.3);
  assert.deepEqual(events, ["executeModel 600"]);
});

Deno.test("Pool batching: an onReply hook tells a batch's reply from a model's that returns the same shape, by session.awaitedCommand", async () => {
  const seen: Array<{ cmd: string | undefined; results: boolean }> = [];
  const watcher: Plugin = {
    name: "watcher",
    onReply(msg, mc) {
      if (typeof msg.id !== "number" || msg.cmd !== undefined) return;
      if (typeof msg.event === "string") return;
      const result = msg.result as { results?: unknown } | null | undefined;
      seen.push({
        cmd: mc.session.awaitedCommand(msg.id),
        results: Array.isArray(result?.results),
      });
    },
  };
  await using dir = await modelsDir();
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
    plugins: { defaults: false, use: [watcher] },
  });
  await pool.addModel("rec", { source: RECORDER });
  await pool.addModel("shaped", {
    source: `
class Shaped:
    def __init__(self, options):
        pass
    def execute(self, msg):
        return {"results": [1, 2]}
`,
  });
  seen.length = 0;
  await pool.execute("rec", { id: 1 });
  await pool.execute("shaped", {});
  assert.deepEqual(seen, [
    { cmd: "executeBatch", results: true },
    { cmd: "executeModel", results: true },
  ]);
});
