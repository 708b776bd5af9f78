/**
 * `executeEach` and `Pool.executeEach`: a bounded number of calls pending,
 * results in order (or as they settle), failures as items, backpressure on
 * the source, and a clean end when the loop stops early, the signal aborts
 * or the source fails.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { type EachResult, executeEach } from "../src/execute_each.ts";
import {
  CancelledError,
  ConfigError,
  NoWorkerError,
  OverloadedError,
  ShuttingDownError,
  WorkerCrashedError,
} from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { until } from "./_gateway_harness.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

/** A call the test settles by hand; counts the pending ones and their aborts. */
class Calls {
  pending = new Map<
    number,
    { resolve(v: number): void; reject(e: unknown): void }
  >();
  maxPending = 0;
  aborted: number[] = [];
  made: number[] = [];
  call = (input: number, signal: AbortSignal): Promise<number> => {
    this.made.push(input);
    return new Promise<number>((resolve, reject) => {
      this.pending.set(input, { resolve, reject });
      this.maxPending = Math.max(this.maxPending, this.pending.size);
      signal.addEventListener("abort", () => {
        if (!this.pending.has(input)) return;
        this.aborted.push(input);
        // Settles later, as a worker's answer to a cancel does.
        setTimeout(() => {
          this.pending.delete(input);
          reject(new CancelledError(`call ${input} aborted`));
        }, 1);
      }, { once: true });
    });
  };
  settle(input: number, ok = true): void {
    const p = this.pending.get(input);
    assert.ok(p, `call ${input} is not pending`);
    this.pending.delete(input);
    if (ok) p.resolve(input * 10);
    else p.reject(new Error(`row ${input} failed`));
  }
}

/** Lets every pending microtask and timer-free callback run. */
const turn = () => new Promise<void>((r) => setTimeout(r, 0));

Deno.test("executeEach: ordered, at most `concurrency` pending, failures as items, the source read only as results are taken", async () => {
  const calls = new Calls();
  let pulled = 0;
  function* source() {
    for (let i = 0; i < 10; i++) {
      pulled++;
      yield i;
    }
  }
  const it = executeEach(source(), calls.call, { concurrency: 3 });
  const first = it.next();
  await turn();
  assert.deepEqual(calls.made, [0, 1, 2]);
  assert.equal(pulled, 3, "the source is read no further than the window");
  calls.settle(2);
  calls.settle(1, false);
  await turn();
  assert.deepEqual(
    calls.made,
    [0, 1, 2],
    "2 and 1 settled, 0 holds the window",
  );
  calls.settle(0);
  assert.deepEqual(await first, {
    done: false,
    value: { index: 0, input: 0, ok: true, result: 0 },
  });
  const second = (await it.next()).value as EachResult<number, number>;
  assert.equal(second.ok, false);
  assert.equal(second.index, 1);
  assert.match(String((second as { error: unknown }).error), /row 1 failed/);
  const out: EachResult<number, number>[] = [second];
  const rest = (async () => {
    for await (const r of { [Symbol.asyncIterator]: () => it }) out.push(r);
  })();
  for (let i = 3; i < 10; i++) {
    await turn();
    calls.settle(i);
  }
  await rest;
  assert.deepEqual(out.map((r) => r.index), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(calls.maxPending, 3);
  assert.deepEqual(calls.aborted, []);
});

Deno.test("executeEach: ordered: false yields as calls settle", async () => {
  const calls = new Calls();
  const it = executeEach([0, 1, 2, 3], calls.call, {
    concurrency: 4,
    ordered: false,
  });
  const got: number[] = [];
  const loop = (async () => {
    for await (const r of { [Symbol.asyncIterator]: () => it }) {
      got.push(r.index);
    }
  })();
  await turn();
  for (const i of [2, 0, 3, 1]) {
    calls.settle(i);
    await turn();
  }
  await loop;
  assert.deepEqual(got, [2, 0, 3, 1]);
});

Deno.test("executeEach: a break cancels the pending calls, awaits them and closes the source", async () => {
  const calls = new Calls();
  let closed = false;
  async function* source() {
    try {
      for (let i = 0; i < 100; i++) yield i;
    } finally {
      closed = true;
    }
  }
  const loop = (async () => {
    for await (
      const r of executeEach(source(), calls.call, { concurrency: 5 })
    ) {
      if (r.index === 1) break;
    }
  })();
  await turn();
  calls.settle(0);
  await turn();
  calls.settle(1);
  await loop;
  assert.deepEqual(calls.aborted.sort((a, b) => a - b), [2, 3, 4, 5]);
  assert.equal(
    calls.pending.size,
    0,
    "every call settled before the loop ended",
  );
  assert.ok(closed, "the source's return() ran");
});

Deno.test("executeEach: each call gets a signal of its own, aborted only while its call is pending", async () => {
  // One signal shared by every pending call made each call's abort listener
  // cost O(pending) to add and remove in Deno: a batching model's default
  // window (4096 pending) ran 27k rows/s against 110k+ with 256.
  const calls = new Calls();
  const signals = new Map<number, AbortSignal>();
  const call = (input: number, signal: AbortSignal) => {
    signals.set(input, signal);
    return calls.call(input, signal);
  };
  const loop = (async () => {
    for await (
      const r of executeEach(Array.from({ length: 50 }, (_, i) => i), call, {
        concurrency: 8,
      })
    ) {
      if (r.index === 2) break;
    }
  })();
  await turn();
  calls.settle(0);
  await turn();
  calls.settle(1);
  await turn();
  calls.settle(2);
  await loop;
  assert.equal(new Set(signals.values()).size, signals.size);
  assert.deepEqual([0, 1, 2].map((i) => signals.get(i)!.aborted), [
    false,
    false,
    false,
  ]);
  assert.deepEqual(
    calls.aborted.sort((a, b) => a - b),
    [3, 4, 5, 6, 7, 8, 9],
  );
  assert.equal(signals.size, 10, "0..9 started: 2 taken + 8 pending");
  assert.equal(calls.pending.size, 0);
});

Deno.test("executeEach: an abort cancels the pending calls and throws the reason (a CancelledError without one)", async () => {
  for (const reason of [undefined, new Error("job stopped")]) {
    const calls = new Calls();
    const controller = new AbortController();
    const loop = (async () => {
      const got: number[] = [];
      for await (
        const r of executeEach([0, 1, 2, 3], calls.call, {
          concurrency: 2,
          signal: controller.signal,
        })
      ) got.push(r.index);
      return got;
    })();
    await turn();
    calls.settle(0);
    await turn();
    controller.abort(reason);
    const err = await loop.then(() => undefined, (e) => e);
    assert.ok(err instanceof CancelledError, err);
    assert.match(
      err.message,
      /aborted after 1 results: its 2 pending calls were cancelled/,
    );
    assert.equal(err.cause, controller.signal.reason);
    assert.deepEqual(calls.aborted.sort(), [1, 2]);
    assert.equal(calls.pending.size, 0);
  }
});

Deno.test("executeEach: a source that throws: its error, after the pending calls are cancelled", async () => {
  const calls = new Calls();
  async function* source() {
    yield 0;
    yield 1;
    throw new Error("bad line 3");
  }
  const err = await (async () => {
    for await (const _ of executeEach(source(), calls.call)) {
      // no call settles: the source fails first
    }
  })().then(() => undefined, (e) => e);
  assert.match(String(err), /bad line 3/);
  assert.deepEqual(calls.aborted.sort(), [0, 1]);
});

Deno.test("executeEach: a result is not held back by a source waiting for its next input", async () => {
  const calls = new Calls();
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  async function* source() {
    yield 0;
    await gate; // a slow source (a socket, a queue)
    yield 1;
  }
  const it = executeEach(source(), calls.call, { concurrency: 4 });
  const first = it.next();
  await turn();
  calls.settle(0);
  assert.equal((await first).value?.index, 0, "yielded while the source waits");
  release();
  const second = it.next();
  await turn();
  calls.settle(1);
  assert.equal((await second).value?.index, 1);
  assert.equal((await it.next()).done, true);
});

Deno.test("executeEach: a call that throws at once is its item's error; a bad concurrency is a ConfigError", async () => {
  const got = [];
  for await (
    const r of executeEach([1, 2], (x: number) => {
      if (x === 1) throw new TypeError("sync");
      return Promise.resolve(x);
    })
  ) got.push(r);
  assert.equal(got[0]!.ok, false);
  assert.deepEqual(got[1], { index: 1, input: 2, ok: true, result: 2 });
  for (const concurrency of [0, 1.5, NaN, -1]) {
    await assert.rejects(
      executeEach([1], () => Promise.resolve(1), { concurrency }).next(),
      ConfigError,
    );
  }
});

Deno.test("executeEach: any timing of settles, failures and early stops: in order, bounded, each input once, nothing left pending", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 30 }),
      fc.integer({ min: 1, max: 6 }),
      fc.boolean(),
      fc.array(fc.nat({ max: 8 }), { minLength: 30, maxLength: 30 }),
      fc.option(fc.integer({ min: 1, max: 30 }), { nil: undefined }),
      async (n, concurrency, ordered, delays, stopAt) => {
        let pending = 0;
        let maxPending = 0;
        const call = (x: number, signal: AbortSignal) => {
          pending++;
          maxPending = Math.max(maxPending, pending);
          return new Promise<number>((resolve, reject) => {
            let left = delays[x]!;
            const tick = () => {
              if (signal.aborted) {
                pending--;
                reject(new CancelledError("aborted"));
              } else if (left-- <= 0) {
                pending--;
                if (x % 7 === 3) reject(new Error(`x${x}`));
                else resolve(x);
              } else queueMicrotask(tick);
            };
            queueMicrotask(tick);
          });
        };
        const got: EachResult<number, number>[] = [];
        for await (
          const r of executeEach(
            Array.from({ length: n }, (_, i) => i),
            call,
            { concurrency, ordered },
          )
        ) {
          got.push(r);
          if (got.length === stopAt) break;
        }
        assert.equal(pending, 0, "nothing pending after the loop");
        assert.ok(maxPending <= concurrency);
        const expected = stopAt === undefined || stopAt > n ? n : stopAt;
        assert.equal(got.length, expected);
        const indexes = got.map((r) => r.index);
        if (ordered) {
          assert.deepEqual(indexes, [...Array(expected).keys()]);
        }
        assert.equal(new Set(indexes).size, indexes.length);
        for (const r of got) {
          assert.equal(r.input, r.index);
          assert.equal(r.ok, r.index % 7 !== 3);
        }
      },
    ),
    { numRuns: 300 },
  );
});

const MODEL = `
import os
import time

class Score:
    threaded = True  # a slow row must not hold the worker's event loop
    def execute(self, msg):
        if msg["id"] == 13:
            raise ValueError("row 13 is bad")
        if msg.get("die"):
            os._exit(3)
        for _ in range(msg.get("ms", 0) // 10):
            time.sleep(0.01)  # a cancel's interrupt lands between the sleeps
        return {"id": msg["id"], "p": msg["id"] * 2}

class Batched:
    batch_size = 8
    batch_delay_ms = 1
    def execute_batch(self, rows):
        return [{"id": r["id"]} for r in rows]
`;

Deno.test("Pool.executeEach: a real pool scores an async source in order, a bad row as its item, and a break leaves nothing in flight", async () => {
  await using pool = await Pool.start({ workers: 2, handleSignals: false });
  await pool.addModel("score", { source: MODEL, class: "Score" });
  await pool.addModel("batched", { source: MODEL, class: "Batched" });
  let pulled = 0;
  async function* rows(n: number) {
    for (let id = 0; id < n; id++) {
      pulled++;
      yield { id };
    }
  }
  const out: EachResult<{ id: number }, { id: number; p: number }>[] = [];
  for await (
    const r of pool.executeEach<{ id: number }, { id: number; p: number }>(
      "score",
      rows(2000),
      { concurrency: 50 },
    )
  ) {
    // Backpressure: never more than the window ahead of the loop.
    assert.ok(pulled - out.length <= 50, `${pulled} read, ${out.length} taken`);
    out.push(r);
  }
  assert.equal(out.length, 2000);
  assert.deepEqual(out.map((r) => r.index), [...Array(2000).keys()]);
  const bad = out.filter((r) => !r.ok);
  assert.equal(bad.length, 1);
  assert.equal(bad[0]!.input.id, 13);
  assert.match(String((bad[0]! as { error: unknown }).error), /row 13 is bad/);
  assert.deepEqual(out[1999], {
    index: 1999,
    input: { id: 1999 },
    ok: true,
    result: { id: 1999, p: 3998 },
  });

  // The default window of a model that batches: workers x maxInFlightPerWorker x batch_size.
  pulled = 0;
  let ahead = 0;
  let taken = 0;
  for await (const r of pool.executeEach("batched", rows(3000))) {
    ahead = Math.max(ahead, pulled - taken++);
    assert.ok(r.ok);
  }
  assert.ok(ahead > 2 * 64, `read ${ahead} ahead: more than one per slot`);
  assert.ok(ahead <= 2 * 64 * 8, `read ${ahead} ahead`);

  // A break with calls of a minute in flight: cancelled on the workers
  // (the pool's close would wait for them, then kill the workers).
  let first = true;
  for await (
    const r of pool.executeEach(
      "score",
      Array.from(
        { length: 100 },
        (_, id) => ({ id: id + 100, ms: id === 0 ? 0 : 60_000 }),
      ),
      { concurrency: 8 },
    )
  ) {
    assert.ok(first && r.ok);
    first = false;
    break;
  }
  assert.equal(pool.status().queue, 0);
  // The workers answer the cancels: their slots come back.
  const deadline = Date.now() + 10_000;
  while (pool.status().inFlight > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(pool.status().inFlight, 0);
  assert.deepEqual(pool.status().workers.map((w) => w.restarts), [0, 0]);
});

Deno.test("Pool.executeEach: a pool closing mid-run ends it: the calls made come as items, then a ShuttingDownError, the rest of the source unread", async () => {
  const pool = await Pool.start({ workers: 1, handleSignals: false });
  try {
    await pool.addModel("score", { source: MODEL, class: "Score" });
    let pulled = 0;
    let closedSource = false;
    const rows = function* () {
      try {
        for (let id = 100; id < 20_100; id++) {
          pulled++;
          yield { id, ms: 20 };
        }
      } finally {
        closedSource = true;
      }
    };
    const items: EachResult<{ id: number }, unknown>[] = [];
    let closing: Promise<void> | undefined;
    await assert.rejects(
      async () => {
        for await (
          const r of pool.executeEach("score", rows(), { concurrency: 8 })
        ) {
          items.push(r);
          if (items.length === 5) closing = pool.close();
        }
      },
      (e) => e instanceof ShuttingDownError,
    );
    await closing;
    // Before: every one of the 20 000 rows was read and yielded, failed.
    assert.ok(pulled <= 5 + 8 + 1, `${pulled} rows read`);
    assert.equal(items.length, pulled);
    assert.deepEqual(items.map((r) => r.index), [...Array(pulled).keys()]);
    // The calls in flight when the pool closed finished in its grace.
    assert.ok(items.filter((r) => r.ok).length >= 5);
    assert.ok(closedSource, "the source's return() ran");
  } finally {
    await pool.close();
  }
});

Deno.test("Pool.executeEach: a concurrency above what the pool takes is lowered to it; with no worker left the run ends with NoWorkerError", async (t) => {
  // One worker that is not restarted: 2 slots + 3 queued is all it takes.
  const pool = await Pool.start({
    workers: 1,
    maxInFlightPerWorker: 2,
    maxQueue: 3,
    handleSignals: false,
    plugins: { remove: ["reconnect"] },
  });
  try {
    await pool.addModel("score", { source: MODEL, class: "Score" });
    await t.step("concurrency 100 runs as 5: no row refused", async () => {
      const items: EachResult<{ id: number }, unknown>[] = [];
      for await (
        const r of pool.executeEach(
          "score",
          Array.from({ length: 40 }, (_, i) => ({ id: i + 100, ms: 10 })),
          { concurrency: 100 },
        )
      ) items.push(r);
      // Before: 35 of the first 40 calls were OverloadedError items.
      assert.deepEqual(
        items.filter((r) => !r.ok).map((r) => (r as { error: unknown }).error)
          .filter((e) => e instanceof OverloadedError),
        [],
      );
      assert.equal(items.filter((r) => r.ok).length, 40);
    });
    await t.step(
      "the worker dies: the run ends, the source unread",
      async () => {
        let pulled = 0;
        const rows = function* () {
          for (let id = 100; id < 10_100; id++) {
            pulled++;
            yield { id, die: id === 103 };
          }
        };
        const items: EachResult<{ id: number }, unknown>[] = [];
        await assert.rejects(
          async () => {
            for await (const r of pool.executeEach("score", rows())) {
              items.push(r);
            }
          },
          (e) =>
            e instanceof NoWorkerError && /no worker is ready/.test(e.message),
        );
        // Before: all 10 000 rows read and yielded, each a NoWorkerError.
        assert.ok(pulled < 100, `${pulled} rows read`);
        assert.equal(items.length, pulled);
        assert.deepEqual(items.map((r) => r.index), [...Array(pulled).keys()]);
        // Row 103 went once two rows had answered.
        assert.ok(items.slice(0, 2).every((r) => r.ok));
        assert.ok(
          items.some((r) =>
            !r.ok &&
            (r as { error: unknown }).error instanceof WorkerCrashedError
          ),
        );
      },
    );
  } finally {
    await pool.close();
  }
});

Deno.test("Pool.executeEach: its model removed mid-run (or never added) ends the run with ModelNotFoundError, the rest of the source unread", async () => {
  await using pool = await Pool.start({ workers: 2, handleSignals: false });
  await pool.addModel("score", { source: MODEL, class: "Score" });
  let pulled = 0;
  const rows = function* () {
    for (let id = 100; id < 20_100; id++) {
      pulled++;
      yield { id, ms: 10 };
    }
  };
  const items: EachResult<{ id: number }, unknown>[] = [];
  let removing: Promise<unknown> | undefined;
  await assert.rejects(
    async () => {
      for await (
        const r of pool.executeEach("score", rows(), { concurrency: 8 })
      ) {
        items.push(r);
        if (items.length === 10) removing = pool.removeModel("score");
      }
    },
    (e) => (e as Error).name === "ModelNotFoundError",
  );
  await removing;
  // Before: all 20 000 rows read and yielded, each a ModelNotFoundError
  // but those the model answered.
  assert.ok(pulled < 10 + 8 + 64, `${pulled} rows read`);
  assert.equal(items.length, pulled);
  assert.deepEqual(items.map((r) => r.index), [...Array(pulled).keys()]);
  assert.ok(items.slice(0, 10).every((r) => r.ok));

  // A model the pool never had: the first row's error, not 1000 of them.
  pulled = 0;
  await assert.rejects(
    async () => {
      for await (const _ of pool.executeEach("nope", rows())) {
        // each row fails
      }
    },
    (e) => (e as Error).name === "ModelNotFoundError",
  );
  assert.ok(pulled <= 2 * 64 + 1, `${pulled} rows read`);
  assert.equal(pool.status().inFlight, 0);
});

/**
 * The scenarios of this file on a real pool with no steps of their own,
 * each on a pool of its own: they wait on their model's sleeps, so the file
 * runs them at once (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Pool.executeEach pinned to a worker: its rows wait while it restarts instead of failing at once with NoWorkerError",
  async () => {
    await using pool = await Pool.start({ workers: 2, handleSignals: false });
    await pool.addModel("score", { source: MODEL, class: "Score" });
    const rows = function* () {
      for (let id = 100; id < 400; id++) yield { id, die: id === 150 };
    };
    const failed: unknown[] = [];
    let ok = 0;
    for await (
      const r of pool.executeEach("score", rows(), {
        concurrency: 8,
        worker: "w1",
      })
    ) {
      if (r.ok) ok++;
      else failed.push(r.error);
    }
    // Before: every row made while w1 restarted failed at once (19 485 of
    // 20 000 rows in 0.3 s): NoWorkerError "worker w1 is restarting".
    assert.deepEqual(failed.filter((e) => e instanceof NoWorkerError), []);
    // The rows in flight when it died, that one among them.
    assert.ok(failed.length >= 1 && failed.length <= 8, `${failed.length}`);
    assert.ok(failed.every((e) => e instanceof WorkerCrashedError));
    assert.equal(ok + failed.length, 300);
    assert.deepEqual(pool.status().workers.map((w) => w.restarts), [1, 0]);
  },
]);

scenarios.push([
  "Pool.executeEach beside another caller that filled the queue: its rows wait for room instead of failing at once with OverloadedError",
  async () => {
    await using pool = await Pool.start({
      workers: 1,
      maxInFlightPerWorker: 2,
      maxQueue: 4,
      handleSignals: false,
    });
    await pool.addModel("score", { source: MODEL, class: "Score" });
    for (const ordered of [true, false]) {
      // 2 running, 4 queued: the queue is full when the run starts.
      const others = Array.from(
        { length: 6 },
        (_, i) => pool.execute("score", { id: 1000 + i, ms: 300 }),
      );
      for (const call of others) call.catch(() => {}); // awaited below
      await until(
        () => Promise.resolve(pool.status().queue === 4),
        "the other caller's calls to fill the queue",
      );
      let pulled = 0;
      const rows = function* () {
        for (let id = 100; id < 140; id++) {
          pulled++;
          yield { id, ms: 10 };
        }
      };
      const failed: unknown[] = [];
      let ok = 0;
      for await (
        const r of pool.executeEach("score", rows(), {
          concurrency: 4,
          ordered,
        })
      ) {
        if (r.ok) ok++;
        else failed.push(r.error);
      }
      // Before: all 40 rows OverloadedError items, read and failed in a blink
      // (20 000 in 0.14 s).
      assert.deepEqual(failed, [], `ordered: ${ordered}`);
      assert.equal(ok, 40);
      assert.equal(pulled, 40);
      assert.equal((await Promise.all(others)).length, 6);
    }
    assert.equal(pool.status().queue, 0);
  },
]);

scenarios.push([
  "Pool.executeEach with maxQueue 0 beside another caller holding every slot: its rows go as slots free up",
  async () => {
    await using pool = await Pool.start({
      workers: 1,
      maxInFlightPerWorker: 2,
      maxQueue: 0,
      handleSignals: false,
    });
    await pool.addModel("score", { source: MODEL, class: "Score" });
    const others = Array.from(
      { length: 2 },
      (_, i) => pool.execute("score", { id: 1000 + i, ms: 300 }),
    );
    for (const call of others) call.catch(() => {}); // awaited below
    await until(
      () => Promise.resolve(pool.status().inFlight === 2),
      "the other caller's calls to hold both slots",
    );
    const failed: unknown[] = [];
    let ok = 0;
    for await (
      const r of pool.executeEach(
        "score",
        Array.from({ length: 20 }, (_, i) => ({ id: 100 + i, ms: 10 })),
        // A row that waited past this fails: room must wake it, not time.
        { timeout: 10_000 },
      )
    ) {
      if (r.ok) ok++;
      else failed.push(r.error);
    }
    assert.deepEqual(failed, []);
    assert.equal(ok, 20);
    assert.equal((await Promise.all(others)).length, 2);
  },
]);

Deno.test("Pool.executeEach on real pools, each scenario on a pool of its own (at once)", (t) =>
  concurrentSteps(t, scenarios));
