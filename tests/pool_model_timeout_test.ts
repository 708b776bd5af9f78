import assert from "node:assert/strict";
import { Pool, type PoolOptions } from "../src/pool.ts";
import { ConfigError, TimeoutError } from "../src/errors.ts";
import { modelsDir, poolOptions, readyAgain } from "./_pool_harness.ts";

/**
 * One worker, closed with no grace: the calls these tests give up on still
 * sleep in the model (a cancel cannot cut a time.sleep short), and each
 * close waited for them (~0.9 s a test).
 */
function opts(dir: string, extra: PoolOptions = {}): PoolOptions {
  return {
    workers: 1,
    modelsDir: dir,
    handleSignals: false,
    shutdownGrace: 0,
    ...extra,
  };
}

/** Sleeps msg["ms"]; its author says its calls may take 150 ms. */
const DECLARED = `
import time
class Declared:
    timeout_ms = 150
    def execute(self, msg):
        time.sleep(msg.get("ms", 0) / 1000.0)
        return {"ok": True}
`;

/** A batching model that sleeps the longest msg["ms"] of its batch. */
const BATCHED = `
import time
class Batched:
    batch_size = 4
    batch_delay_ms = 0
    timeout_ms = 150
    def execute_batch(self, msgs):
        time.sleep(max(m.get("ms", 0) for m in msgs) / 1000.0)
        return [{"ok": True} for m in msgs]
`;

/** A stream of n items, msg["ms"] apart. */
const TICKER = `
import time
class Ticker:
    def execute(self, msg):
        for i in range(msg.get("n", 3)):
            time.sleep(msg.get("ms", 0) / 1000.0)
            yield i
`;
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

Deno.test("Pool: a model's timeout is the default of its calls, above or below the pool's requestTimeout; other models keep the pool's", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start(
    opts(dir.path, { requestTimeout: 150 }),
  );
  await pool.addModel("image", { file: "slow.py", timeout: 10_000 });
  await pool.addModel("tight", { file: "slow.py", timeout: 100 });
  await pool.addModel("plain", { file: "slow.py" });
  // Longer than the pool's 150 ms, within the model's own 10 s.
  assert.equal(
    (await pool.execute<{ i: number }>("image", { ms: 400, i: 1 })).i,
    1,
  );
  // The model's 100 ms, not the pool's.
  const t0 = Date.now();
  await assert.rejects(pool.execute("tight", { ms: 1000 }), TimeoutError);
  assert.ok(Date.now() - t0 < 1000, `gave up after ${Date.now() - t0} ms`);
  // A model without one: the pool's.
  await assert.rejects(pool.execute("plain", { ms: 1000 }), TimeoutError);
  // And its worker still answers it. (With its own timeout: under the
  // pool's 150 ms this call, the first after two cancelled ones, timed out
  // on a loaded machine, 1 in 10 runs beside 5 CPU hogs; it took up to
  // 223 ms there.)
  assert.equal(
    (await pool.execute<{ i: number }>("plain", { i: 2 }, {
      timeout: 10_000,
    })).i,
    2,
  );
  assert.deepEqual(
    pool.status().models.map((m) => [m.name, m.timeout]),
    [["image", 10_000], ["tight", 100], ["plain", undefined]],
  );
  // Host-only: the spec keeps it, the server never saw it.
  assert.equal(pool.status().models[0]!.spec.timeout, 10_000);
});

/**
 * The scenarios of this file that time nothing themselves, each on a pool
 * of its own: they wait on their calls' sleeps and timeouts, not on the
 * CPU, so the file runs them a few at a time (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Pool: a call's timeout beats the spec's, which beats the class's timeout_ms, which beats the pool's",
  async () => {
    await using dir = await modelsDir();
    await using pool = await Pool.start(
      opts(dir.path, { requestTimeout: 10_000 }),
    );
    const desc = await pool.addModel("declared", { source: DECLARED });
    assert.equal((desc as { timeoutMs?: number }).timeoutMs, 150);
    assert.equal(pool.status().models[0]!.timeout, 150);
    // The class's 150 ms, not the pool's 10 s.
    await assert.rejects(pool.execute("declared", { ms: 1000 }), TimeoutError);
    // The call's own, either way.
    assert.deepEqual(
      await pool.execute("declared", { ms: 400 }, { timeout: 10_000 }),
      { ok: true },
    );
    // The spec's over the class's.
    await pool.updateModel("declared", { source: DECLARED, timeout: 10_000 });
    assert.deepEqual(await pool.execute("declared", { ms: 400 }), { ok: true });
    await assert.rejects(
      pool.execute("declared", { ms: 1000 }, { timeout: 100 }),
      TimeoutError,
    );
    // Infinity: none for this model, whatever the pool's.
    await pool.updateModel("declared", { source: DECLARED, timeout: Infinity });
    assert.equal(pool.status().models[0]!.timeout, Infinity);
  },
]);

scenarios.push([
  "Pool: updateModel changes a model's timeout for later calls; a call in flight keeps its own",
  async () => {
    await using dir = await modelsDir();
    await using pool = await Pool.start(opts(dir.path, { workers: 2 }));
    await pool.addModel("m", { file: "slow.py", timeout: 10_000 });
    const inFlight = pool.execute<{ i: number }>("m", { ms: 600, i: 7 });
    await pool.updateModel("m", { file: "slow.py", timeout: 100 });
    await assert.rejects(pool.execute("m", { ms: 1000 }), TimeoutError);
    assert.equal((await inFlight).i, 7);
    // An update without a timeout drops it (the spec is replaced whole).
    await pool.updateModel("m", { file: "slow.py" });
    assert.equal(pool.status().models[0]!.timeout, undefined);
    assert.equal(
      (await pool.execute<{ i: number }>("m", { ms: 300, i: 8 })).i,
      8,
    );
    // Removed, then added again without one: nothing left over.
    await pool.updateModel("m", { file: "slow.py", timeout: 100 });
    await pool.removeModel("m");
    await pool.addModel("m", { file: "slow.py" });
    assert.equal(
      (await pool.execute<{ i: number }>("m", { ms: 300, i: 9 })).i,
      9,
    );
  },
]);

scenarios.push([
  "Pool: a model's timeout holds after its worker restarts",
  async () => {
    await using dir = await modelsDir();
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, shutdownGrace: 0 }),
    );
    await pool.addModel("declared", { source: DECLARED });
    await pool.addModel("spec", { file: "slow.py", timeout: 100 });
    const back = readyAgain(pool, "w1");
    pool.killWorker("w1");
    await back;
    await assert.rejects(pool.execute("declared", { ms: 1000 }), TimeoutError);
    await assert.rejects(pool.execute("spec", { ms: 1000 }), TimeoutError);
    assert.deepEqual(pool.status().models.map((m) => m.timeout), [150, 100]);
  },
]);

// The tests of a default one-worker pool, as steps on one such pool (a Python server
// start each, otherwise); each step's models are removed after it.
Deno.test("Pool model timeouts on one default pool (each step its own models)", async (t) => {
  await using dir = await modelsDir();
  await using pool = await Pool.start(opts(dir.path));
  await t.step(
    "Pool: each call of a batching model gets the model's timeout, or its own",
    () => poolEachCallBatchingModel(pool).finally(() => removeModels(pool)),
  );
  await t.step(
    "Pool: executeStream without a timeout gets the model's",
    () =>
      poolExecuteStreamWithoutTimeoutGets(pool).finally(() =>
        removeModels(pool)
      ),
  );
  await t.step(
    "Pool: a model timeout it cannot mean is refused with ConfigError, nothing loaded",
    () => poolModelTimeoutCannotMean(pool).finally(() => removeModels(pool)),
  );
});

/** Removes every model of `pool` (a step's models, once it ended). */
async function removeModels(pool: Pool): Promise<void> {
  for (const { name } of pool.status().models) await pool.removeModel(name);
}

/** A step of "Pool model timeouts on one default pool (each step its own models)": Pool: each call of a batching model gets the model's timeout, or its own */
async function poolEachCallBatchingModel(pool: Pool): Promise<void> {
  await pool.addModel("b", { source: BATCHED });
  // The first goes at once; the second waits behind it with its own.
  const t0 = Date.now();
  const [first, second] = await Promise.allSettled([
    pool.execute("b", { ms: 1000 }),
    pool.execute("b", { ms: 400 }, { timeout: 10_000 }),
  ]);
  assert.ok(
    first.status === "rejected" && first.reason instanceof TimeoutError,
  );
  assert.deepEqual(second, { status: "fulfilled", value: { ok: true } });
  // The model's 150 ms gave up the first: the second did not wait 2 s.
  assert.ok(Date.now() - t0 < 1500, `took ${Date.now() - t0} ms`);
  // The spec's, over the class's.
  await pool.updateModel("b", { source: BATCHED, timeout: 10_000 });
  assert.deepEqual(await pool.execute("b", { ms: 400 }), { ok: true });
}

scenarios.push([
  "Pool: a batching model with timeout Infinity: its batches wait beyond the pool's requestTimeout",
  async () => {
    await using dir = await modelsDir();
    await using pool = await Pool.start(
      opts(dir.path, { requestTimeout: 200 }),
    );
    await pool.addModel("b", { source: BATCHED, timeout: Infinity });
    // Both in one batch, and one more sent on its own (key): none is cut at 200 ms.
    const results = await Promise.allSettled([
      pool.execute("b", { ms: 600 }),
      pool.execute("b", { ms: 600 }),
      pool.execute("b", { ms: 600 }, { key: "k" }),
      // A call's own Infinity, likewise.
      pool.execute("b", { ms: 600 }, { timeout: Infinity }),
    ]);
    assert.deepEqual(
      results.map((r) => r.status === "fulfilled" ? r.value : String(r.reason)),
      [{ ok: true }, { ok: true }, { ok: true }, { ok: true }],
    );
  },
]);

/** A step of "Pool model timeouts on one default pool (each step its own models)": Pool: executeStream without a timeout gets the model's */
async function poolExecuteStreamWithoutTimeoutGets(pool: Pool): Promise<void> {
  await pool.addModel("ticker", { source: TICKER, timeout: 300 });
  const items: number[] = [];
  await assert.rejects(
    (async () => {
      for await (
        const i of pool.executeStream<number>("ticker", { n: 100, ms: 100 })
      ) items.push(i);
    })(),
    TimeoutError,
  );
  assert.ok(items.length < 10, `${items.length} items`);
  const all: number[] = [];
  for await (
    const i of pool.executeStream<number>("ticker", { n: 4, ms: 100 }, {
      timeout: 10_000,
    })
  ) all.push(i);
  assert.deepEqual(all, [0, 1, 2, 3]);
}

/** A step of "Pool model timeouts on one default pool (each step its own models)": Pool: a model timeout it cannot mean is refused with ConfigError, nothing loaded */
async function poolModelTimeoutCannotMean(pool: Pool): Promise<void> {
  for (const timeout of [0, -1, 1.5, 2 ** 31, NaN, "100"]) {
    await assert.rejects(
      pool.addModel("m", {
        file: "slow.py",
        timeout: timeout as number,
      }),
      (err: Error) =>
        err instanceof ConfigError &&
        err.message.startsWith(
          "Cannot add model 'm': timeout: expected an integer number of ms from 1 to 2147483647, or Infinity for none, got ",
        ),
    );
  }
  assert.deepEqual(pool.status().models, []);
  await pool.addModel("m", { file: "slow.py", timeout: 2 ** 31 - 1 });
  await assert.rejects(
    pool.updateModel("m", { file: "slow.py", timeout: 0 }),
    ConfigError,
  );
  assert.equal(pool.status().models[0]!.timeout, 2 ** 31 - 1);
}

scenarios.push([
  "Pool: a model call's TimeoutError names the model, its whole timeout and where it waited (details too), running, queued, streaming or batched",
  async () => {
    await using dir = await modelsDir();
    await using pool = await Pool.start(
      opts(dir.path, { maxInFlightPerWorker: 1 }),
    );
    await pool.addModel("slow", { file: "slow.py" });
    await pool.addModel("ticker", { source: TICKER });
    await pool.addModel("batched", { source: BATCHED, timeout: 10_000 });
    const timedOut = async (call: Promise<unknown>) => {
      const err = await call.then(() => undefined, (e) => e);
      assert.ok(err instanceof TimeoutError, String(err));
      return err;
    };
    // Ran on its worker past its timeout (the session's own error said
    // "executeModel: timed out after 99 ms", the time left after the queue).
    const ran = await timedOut(
      pool.execute("slow", { ms: 700 }, { timeout: 200 }),
    );
    assert.equal(
      ran.message,
      "Cannot complete executeModel of model 'slow': timed out after 200 ms (cancelled on its worker)",
    );
    assert.deepEqual(ran.details, {
      model: "slow",
      timeoutMs: 200,
      waited: "worker",
    });
    assert.ok(ran.cause instanceof TimeoutError);
    // Queued behind a call holding the only slot.
    const blocker = pool.execute("slow", { ms: 600 });
    const queued = await timedOut(
      pool.execute("slow", { ms: 1 }, { timeout: 100 }),
    );
    assert.equal(
      queued.message,
      "Cannot complete executeModel of model 'slow': timed out after 100 ms in the pool queue, waiting for a worker's free slot",
    );
    assert.deepEqual(queued.details, {
      model: "slow",
      timeoutMs: 100,
      waited: "queue",
    });
    await blocker;
    // A stream.
    const stream = pool.executeStream("ticker", { n: 5, ms: 400 }, {
      timeout: 200,
    });
    const streamed = await timedOut((async () => {
      for await (const _ of stream) { /* reads */ }
    })());
    assert.match(
      streamed.message,
      /^Cannot complete executeStream of model 'ticker': timed out after 200 ms/,
    );
    // A batched model's call names its model too.
    const batched = await timedOut(
      pool.execute("batched", { ms: 1000 }, { timeout: 100 }),
    );
    assert.equal(
      batched.message,
      "Cannot complete executeModel of model 'batched': timed out after 100 ms",
    );
    assert.equal(batched.details.model, "batched");
  },
]);

Deno.test("Pool model timeouts, each scenario on a pool of its own (3 at a time)", (t) =>
  concurrentSteps(t, scenarios, 3));
