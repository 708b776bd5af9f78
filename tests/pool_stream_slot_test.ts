import assert from "node:assert/strict";
import { Pool, type PoolOptions } from "../src/pool.ts";
import {
  CancelledError,
  TimeoutError,
  WorkerCrashedError,
} from "../src/errors.ts";
import type { ModelStream } from "../src/model_stream.ts";
import { modelsDir } from "./_pool_harness.ts";
import { until } from "./_gateway_harness.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

function opts(dir: string, extra: PoolOptions = {}): PoolOptions {
  return { workers: 1, modelsDir: dir, handleSignals: false, ...extra };
}

/** Endless unless `n`; `big` characters of `char` per item. */
const COUNTER = `
class Counter:
    def execute(self, msg):
        i = 0
        while msg.get("n") is None or i < msg["n"]:
            if msg.get("big"):
                yield {"i": i, "text": msg.get("char", "x") * msg["big"]}
            elif msg.get("floats"):
                yield {"i": i, "v": [1.0] * msg["floats"]}
            else:
                yield {"i": i}
            i += 1
`;

const PLAIN =
  "class P:\n    threaded = True\n    def execute(self, m):\n        return {'x': m['x']}\n";

/** The worker's counts: [inFlight, parked]. */
function counts(pool: Pool): [number, number] {
  const w = pool.status().workers[0]!;
  return [w.inFlight, w.parked];
}

/** Waits until the worker's counts are [inFlight, parked]. */
function countsAre(
  pool: Pool,
  inFlight: number,
  parked: number,
  what: string,
): Promise<true> {
  return until(() => {
    const [i, p] = counts(pool);
    return Promise.resolve(i === inFlight && p === parked);
  }, `${what} (inFlight ${inFlight}, parked ${parked}; now ${counts(pool)})`);
}

async function startPool(
  dir: string,
  extra: PoolOptions = {},
): Promise<Pool> {
  const pool = await Pool.start(opts(dir, extra));
  await pool.addModel("counter", { source: COUNTER });
  await pool.addModel("plain", { source: PLAIN });
  return pool;
}

/**
 * The scenarios of this file with no steps or sanitizer of their own, each
 * on a pool of its own: they wait on their streams, not on the CPU, so the
 * file runs them at once (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Pool.executeStream: a parked stream gives its slot back; other calls run and a queued one is sent",
  async () => {
    await using dir = await modelsDir();
    await using pool = await startPool(dir.path, { maxInFlightPerWorker: 4 });
    const streams: ModelStream<{ i: number }>[] = [];
    try {
      // Four streams whose readers read nothing yet hold all four slots: a
      // call made now waits in the queue...
      for (let i = 0; i < 4; i++) {
        streams.push(pool.executeStream("counter", {}, { timeout: 60_000 }));
      }
      const queued = pool.execute("plain", { x: 1 }, { timeout: 30_000 });
      assert.equal(pool.status().queue, 1);
      // ...until their windows fill: parked, they give their slots back (it
      // timed out in the queue: the slots were held until the streams' end).
      assert.deepEqual(await queued, { x: 1 });
      for (const stream of streams) {
        assert.deepEqual(await stream.next(), { value: { i: 0 }, done: false });
      }
      await countsAre(pool, 0, 4, "the four streams to park");
      assert.equal(pool.status().parked, 4);
      assert.equal(pool.status().inFlight, 0);
      assert.deepEqual(
        await Promise.all(
          [2, 3, 4, 5, 6].map((x) =>
            pool.execute("plain", { x }, { timeout: 30_000 })
          ),
        ),
        [2, 3, 4, 5, 6].map((x) => ({ x })),
      );
      // A parked stream whose reader comes back gets every item, in order.
      for (let i = 1; i < 500; i++) {
        assert.deepEqual(await streams[1]!.next(), {
          value: { i },
          done: false,
        });
      }
    } finally {
      for (const stream of streams) stream.cancel();
    }
    await countsAre(pool, 0, 0, "the cancelled streams to end");
  },
]);

// The two tests of a pool with maxInFlightPerWorker 1 and nothing else, as steps on one such
// pool (a Python server start each, otherwise): each ends with nothing in flight or parked.
Deno.test("Pool.executeStream parking on one pool of one call at a time (each step its own streams)", async (t) => {
  await using dir = await modelsDir();
  await using pool = await startPool(dir.path, { maxInFlightPerWorker: 1 });
  await t.step(
    "Pool.executeStream: a stream that parks and resumes releases its slot once when it completes",
    () => poolExecuteStreamStreamThatParks(pool),
  );
  await t.step(
    "Pool.executeStream: a stream parked by bytes (large items, non-ASCII) gives its slot back",
    () => poolExecuteStreamStreamParkedBy(pool),
  );
});

/** A step of "Pool.executeStream parking on one pool of one call at a time (each step its own streams)": Pool.executeStream: a stream that parks and resumes releases its slot once when it completes */
async function poolExecuteStreamStreamThatParks(pool: Pool): Promise<void> {
  const stream = pool.executeStream<{ i: number }>("counter", { n: 1000 });
  assert.deepEqual(await stream.next(), { value: { i: 0 }, done: false });
  await countsAre(pool, 0, 1, "the stream to park");
  // The slot is free: a call goes while the stream is parked.
  assert.deepEqual(await pool.execute("plain", { x: 1 }), { x: 1 });
  let next = 1;
  for await (const item of stream) {
    assert.equal(item.i, next++);
    // The reader falls behind now and then: the stream parks and resumes.
    if (next % 200 === 0 && next < 900) {
      await countsAre(pool, 0, 1, `the stream to park at item ${next}`);
    }
  }
  assert.equal(next, 1000);
  assert.equal(stream.total, 1000);
  await countsAre(pool, 0, 0, "the stream's end");
  assert.deepEqual(await pool.execute("plain", { x: 2 }), { x: 2 });
  assert.deepEqual(counts(pool), [0, 0]);
}

/** A step of "Pool.executeStream parking on one pool of one call at a time (each step its own streams)": Pool.executeStream: a stream parked by bytes (large items, non-ASCII) gives its slot back */
async function poolExecuteStreamStreamParkedBy(pool: Pool): Promise<void> {
  // 400 kB of UTF-8 per item (200k characters): the server's 1 MiB window is
  // full with three items unread. Counted in characters, the window would
  // not look full here, and the stream would keep its slot.
  for (const char of ["é", "😀"]) {
    const stream = pool.executeStream<{ i: number; text: string }>(
      "counter",
      { big: char === "é" ? 200_000 : 100_000, char },
      { timeout: 60_000 },
    );
    try {
      const first = await stream.next();
      assert.equal(first.value.i, 0);
      await countsAre(pool, 0, 1, `the stream of ${char} to park`);
      assert.deepEqual(await pool.execute("plain", { x: 1 }), { x: 1 });
      for (let i = 1; i < 10; i++) {
        const item = await stream.next();
        assert.equal(item.value.i, i);
        assert.equal(item.value.text.length, first.value.text.length);
      }
    } finally {
      stream.cancel();
    }
    await countsAre(pool, 0, 0, "the cancelled stream to end");
  }
}

scenarios.push([
  "Pool.executeStream: a stream whose server counts more bytes than this side (floats written 1.0) gives its slot back when the server parks it",
  async () => {
    await using dir = await modelsDir();
    await using pool = await startPool(dir.path, { maxInFlightPerWorker: 1 });
    // 50 000 floats a item: 200 kB as the server writes them (`1.0,`), 100 kB
    // parsed and counted here (`1,`). The server's 1 MiB window is full after
    // 6 items; this side's count says 600 kB, and the stream kept its slot
    // (a stopped reader held the worker until its idle timeout) before the
    // server's windowFull event.
    const stream = pool.executeStream<{ i: number; v: number[] }>(
      "counter",
      { floats: 50_000 },
      { timeout: 60_000 },
    );
    try {
      const first = await stream.next();
      assert.equal(first.value.i, 0);
      await countsAre(pool, 0, 1, "the stream of floats to park");
      assert.deepEqual(await pool.execute("plain", { x: 1 }), { x: 1 });
      for (let i = 1; i < 20; i++) {
        const item = await stream.next();
        assert.equal(item.value.i, i);
        assert.equal(item.value.v.length, 50_000);
      }
      // Read past its window: parked again, still counted once.
      await countsAre(pool, 0, 1, "the stream to park again");
    } finally {
      stream.cancel();
    }
    await countsAre(pool, 0, 0, "the cancelled stream to end");
  },
]);

scenarios.push([
  "Pool.executeStream: a parked stream cancelled, timed out or on a killed worker leaves no count behind",
  async () => {
    await using dir = await modelsDir();
    await using pool = await startPool(dir.path, { maxInFlightPerWorker: 2 });

    const cancelled = pool.executeStream("counter", {}, { timeout: 60_000 });
    await cancelled.next();
    await countsAre(pool, 0, 1, "the stream to park");
    cancelled.cancel();
    await countsAre(pool, 0, 0, "the cancel of the parked stream");

    // Parked within milliseconds (its 64 items buffered), long before its
    // timeout.
    const timedOut = pool.executeStream("counter", {}, { timeout: 1000 });
    await timedOut.next();
    await countsAre(pool, 0, 1, "the stream to park");
    await assert.rejects(
      (async () => {
        for await (const _ of timedOut) { /* the items before the timeout */ }
      })(),
      TimeoutError,
    );
    await countsAre(pool, 0, 0, "the timed-out stream's cancel");

    const crashed = pool.executeStream("counter", {}, { timeout: 60_000 });
    await crashed.next();
    await countsAre(pool, 0, 1, "the stream to park");
    pool.killWorker(pool.status().workers[0]!.id);
    await assert.rejects(
      (async () => {
        for await (const _ of crashed) { /* the items before the crash */ }
      })(),
      WorkerCrashedError,
    );
    await countsAre(pool, 0, 0, "the crashed stream's end");
    await until(
      () => Promise.resolve(pool.status().workers[0]!.state === "ready"),
      "the worker's restart",
    );
    assert.deepEqual(await pool.execute("plain", { x: 1 }), { x: 1 });
    assert.deepEqual(counts(pool), [0, 0]);
  },
]);

// The op sanitizer on whatever the command line says: the items read after
// the close once left an ack timer each behind.
Deno.test(
  "Pool.close with a parked stream: the stream ends, nothing stays counted, no ack timer is left",
  {
    sanitizeOps: true,
  },
  async () => {
    await using dir = await modelsDir();
    const pool = await startPool(dir.path, {
      maxInFlightPerWorker: 1,
      shutdownGrace: 200,
    });
    let stream: ModelStream | undefined;
    try {
      stream = pool.executeStream("counter", {}, { timeout: 60_000 });
      await stream.next();
      await countsAre(pool, 0, 1, "the stream to park");
    } finally {
      await pool.close();
    }
    assert.deepEqual(counts(pool), [0, 0]);
    assert.equal(pool.status().parked, 0);
    // Its unread items, then the error of the call the pool cut short.
    await assert.rejects(
      (async () => {
        for await (const _ of stream) { /* the items before the close */ }
      })(),
      (err: Error) => !(err instanceof CancelledError),
    );
  },
);

scenarios.push([
  "Pool.executeStream: at most maxParkedPerWorker streams park; the next ones keep their slots",
  async () => {
    await using dir = await modelsDir();
    // Without a cap, stalled readers could make a worker hold streams without
    // bound (each buffering up to 64 items or 1 MiB on each side).
    await using pool = await startPool(dir.path, {
      maxInFlightPerWorker: 4,
      maxParkedPerWorker: 2,
    });
    const streams: ModelStream<{ i: number }>[] = [];
    try {
      for (let i = 0; i < 4; i++) {
        streams.push(pool.executeStream("counter", {}, { timeout: 60_000 }));
      }
      for (const stream of streams) {
        assert.deepEqual(await stream.next(), { value: { i: 0 }, done: false });
      }
      await countsAre(pool, 2, 2, "two streams parked, two holding slots");
      // Two slots are still free for other calls.
      assert.deepEqual(
        await pool.execute("plain", { x: 7 }, { timeout: 30_000 }),
        { x: 7 },
      );
    } finally {
      for (const stream of streams) await stream.cancel();
    }
    await countsAre(pool, 0, 0, "every stream released");
  },
]);

Deno.test("Pool.executeStream parking, each scenario on a pool of its own (at once)", (t) =>
  concurrentSteps(t, scenarios));
