import assert from "node:assert/strict";
import { Pool, type PoolOptions } from "../src/pool.ts";
import { CancelledError, PythonError, TimeoutError } from "../src/errors.ts";
import { modelsDir } from "./_pool_harness.ts";
import { until } from "./_gateway_harness.ts";

function opts(dir: string, extra: PoolOptions = {}): PoolOptions {
  return { workers: 1, modelsDir: dir, handleSignals: false, ...extra };
}

const COUNTER = `
import time
class Counter:
    def execute(self, msg):
        for i in range(msg.get("n", 10**9)):
            if msg.get("sleep"):
                time.sleep(msg["sleep"])
            yield {"i": i}
        if msg.get("fail"):
            raise ValueError("after the items")
`;

const TOKENS = `
import asyncio
class Tokens:
    async def execute(self, msg):
        for word in msg["text"].split():
            await asyncio.sleep(0)
            yield word
`;

// The tests of a default one-worker pool, as steps on one such pool (a Python server
// start each, otherwise), with the counter model they share; the one with two call
// threads keeps its own pool.
Deno.test("Pool.executeStream on one one-worker pool (each step its own streams)", async (t) => {
  await using dir = await modelsDir();
  await using pool = await Pool.start(opts(dir.path));
  await pool.addModel("counter", { source: COUNTER }); // the steps' endless (or n-item) generator
  await t.step(
    "Pool.executeStream gives a generator model's items in order as they come; pool.execute collects them",
    () => poolExecuteStreamGivesGeneratorModel(pool),
  );
  await t.step(
    "Pool.executeStream: the model's exception comes after its items; a timeout ends the stream",
    () => poolExecuteStreamModelException(pool),
  );
  await t.step(
    "Pool.executeStream: leaving the loop early cancels the model's call",
    () => poolExecuteStreamLeavingLoopEarly(pool),
  );
  await t.step(
    "Pool: a cancel reaches an async model where it awaits (asyncio.CancelledError at the await, its finally runs)",
    () => poolCancelReachesAsyncModel(pool, dir),
  );
  await t.step(
    "ModelStream: concurrent next() calls each get the next item, in call order",
    () => modelStreamConcurrentNextCallsEach(pool),
  );
  await t.step(
    "Pool.executeStream: a parked thread-unsafe stream lets its model run; its cancel closes the generator",
    () => poolExecuteStreamParkedThreadUnsafe(pool, dir),
  );
});

/** A step of "Pool.executeStream on one one-worker pool (each step its own streams)": Pool.executeStream gives a generator model's items in order as they come; pool.execute collects them */
async function poolExecuteStreamGivesGeneratorModel(pool: Pool): Promise<void> {
  await pool.addModel("tokens", { source: TOKENS });
  await pool.addModel("plain", {
    source:
      "class P:\n    def execute(self, m):\n        return {'x': m['x']}\n",
  });
  const stream = pool.executeStream<{ i: number }>("counter", { n: 300 });
  let read = 0;
  let ahead = 0;
  for await (const item of stream) {
    assert.equal(item.i, read++);
    ahead = Math.max(ahead, stream.received - read);
    // A slow reader: the model must wait for it, not run ahead.
    await new Promise((r) => setTimeout(r, 0));
  }
  assert.equal(read, 300);
  assert.equal(stream.total, 300);
  assert.ok(ahead <= 64 + 1, `the model ran ${ahead} items ahead`);
  const words: string[] = [];
  for await (
    const w of pool.executeStream<string>("tokens", { text: "to be or not" })
  ) words.push(w);
  assert.deepEqual(words, ["to", "be", "or", "not"]);
  const one: unknown[] = [];
  for await (const r of pool.executeStream("plain", { x: 1 })) one.push(r);
  assert.deepEqual(one, [{ x: 1 }]);
  assert.deepEqual(await pool.execute("counter", { n: 3 }), [
    { i: 0 },
    { i: 1 },
    { i: 2 },
  ]);
  assert.deepEqual(await pool.execute("tokens", { text: "a b" }), ["a", "b"]);
}

/** A step of "Pool.executeStream on one one-worker pool (each step its own streams)": Pool.executeStream: the model's exception comes after its items; a timeout ends the stream */
async function poolExecuteStreamModelException(pool: Pool): Promise<void> {
  const items: number[] = [];
  await assert.rejects(
    (async () => {
      for await (
        const item of pool.executeStream<{ i: number }>("counter", {
          n: 2,
          fail: true,
        })
      ) items.push(item.i);
    })(),
    (err: Error) => err instanceof PythonError && err.type === "ValueError",
  );
  assert.deepEqual(items, [0, 1]);
  await assert.rejects(
    (async () => {
      for await (
        const _ of pool.executeStream("counter", { sleep: 0.01 }, {
          timeout: 200,
        })
      ) { /* reads until the timeout */ }
    })(),
    TimeoutError,
  );
}

/** A step of "Pool.executeStream on one one-worker pool (each step its own streams)": Pool.executeStream: leaving the loop early cancels the model's call */
async function poolExecuteStreamLeavingLoopEarly(pool: Pool): Promise<void> {
  let read = 0;
  for await (const _ of pool.executeStream("counter", { sleep: 0.001 })) {
    if (++read === 3) break;
  }
  // An endless generator: only the cancel ends it.
  await until(
    () => Promise.resolve(pool.status().workers[0]!.inFlight === 0),
    "the cancelled stream to end on the worker",
  );
  assert.deepEqual(await pool.execute("counter", { n: 1 }), [{ i: 0 }]);
}

/** A step of "Pool.executeStream on one one-worker pool (each step its own streams)": Pool: a cancel reaches an async model where it awaits (asyncio.CancelledError at the await, its finally runs) */
async function poolCancelReachesAsyncModel(
  pool: Pool,
  dir: { path: string },
): Promise<void> {
  // Awaits a slow remote API (here a long asyncio.sleep): its thread runs no
  // bytecode, so the cancel's KeyboardInterrupt alone fired only when the
  // await ended, 60 s later.
  const MARK = `
import asyncio, os
def mark(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)
async def wait(marker):
    try:
        mark(marker + ".started", "started")
        await asyncio.sleep(60)
    except (asyncio.CancelledError, KeyboardInterrupt):
        # CancelledError at the await; KeyboardInterrupt if the cancel came
        # in the instant before it. Either way not 60 s later.
        mark(marker, "cancelled")
        raise
`;
  await pool.addModel("agen", {
    source: MARK + `
class AGen:
    async def execute(self, msg):
        yield "first"
        await wait(msg["marker"])
        yield "never"
`,
  });
  await pool.addModel("acoro", {
    source: MARK + `
class ACoro:
    async def execute(self, msg):
        await wait(msg["marker"])
`,
  });
  await pool.addModel("abatch", {
    source: MARK + `
class ABatch:
    batch_size = 4
    async def execute_batch(self, msgs):
        await wait(msgs[0]["marker"])
`,
  });
  const marker = (path: string) =>
    until(
      () => Deno.readTextFile(path).catch(() => undefined),
      `the model's cancellation (${path})`,
    );
  const m1 = `${dir.path}/m1`;
  for await (const item of pool.executeStream("agen", { marker: m1 })) {
    assert.equal(item, "first");
    // Left once it awaits (a cancel before would fire at its next bytecode,
    // not at the await).
    await marker(`${m1}.started`);
    break;
  }
  assert.equal(await marker(m1), "cancelled");
  const m2 = `${dir.path}/m2`;
  const ac = new AbortController();
  const call = pool.execute("acoro", { marker: m2 }, { signal: ac.signal });
  await marker(`${m2}.started`);
  ac.abort();
  await assert.rejects(call, CancelledError);
  assert.equal(await marker(m2), "cancelled");
  // A batch whose only caller gives up is cancelled on the worker too.
  const m3 = `${dir.path}/m3`;
  const ac3 = new AbortController();
  const batched = pool.execute("abatch", { marker: m3 }, {
    signal: ac3.signal,
  });
  await marker(`${m3}.started`);
  ac3.abort();
  await assert.rejects(batched, CancelledError);
  assert.equal(await marker(m3), "cancelled");
}

/** A step of "Pool.executeStream on one one-worker pool (each step its own streams)": ModelStream: concurrent next() calls each get the next item, in call order */
async function modelStreamConcurrentNextCallsEach(pool: Pool): Promise<void> {
  const stream = pool.executeStream<{ i: number }>("counter", {
    n: 3,
    sleep: 0.02,
  });
  // Only the last waiter was woken: the other next()s never settled.
  let watchdog: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<never>((_, reject) => {
    watchdog = setTimeout(
      () => reject(new Error("a next() call never settled")),
      10_000,
    );
  });
  try {
    const results = await Promise.race([
      Promise.all([stream.next(), stream.next(), stream.next(), stream.next()]),
      hung,
    ]);
    assert.deepEqual(results, [
      { value: { i: 0 }, done: false },
      { value: { i: 1 }, done: false },
      { value: { i: 2 }, done: false },
      { value: undefined, done: true },
    ]);
  } finally {
    clearTimeout(watchdog);
  }
}

/** The worker's `parkedCalls` (serverStatus): streams waiting for their reader. */
async function parkedCalls(pool: Pool): Promise<number | undefined> {
  const status = await pool.control<{ parkedCalls?: number }>(
    pool.status().workers[0]!.id,
    "serverStatus",
    {},
  );
  return status.parkedCalls;
}

Deno.test("Pool.executeStream: streams whose readers stop hold no worker thread; other calls still run", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start(
    opts(dir.path, { serverArgs: ["--threads", "2"] }),
  );
  await pool.addModel("counter", { source: COUNTER });
  await pool.addModel("plain", {
    source:
      "class P:\n    threaded = True\n    def execute(self, m):\n        return {'x': m['x']}\n",
  });
  // Three readers that stop after their first item, on a worker with two
  // call threads: each stream held a thread in yield, the third never
  // started, and every other call of the worker waited for a thread.
  const streams = [0, 1, 2].map(() =>
    pool.executeStream<{ i: number }>("counter", {}, { timeout: 60_000 })
  );
  try {
    for (const stream of streams) {
      assert.deepEqual(await stream.next(), { value: { i: 0 }, done: false });
    }
    await until(
      async () => (await parkedCalls(pool)) === 3,
      "the three streams to park",
    );
    assert.deepEqual(
      await pool.execute("plain", { x: 1 }, { timeout: 30_000 }),
      { x: 1 },
    );
    // A reader that goes on gets the items where they stopped.
    for (let i = 1; i < 200; i++) {
      assert.deepEqual(await streams[1]!.next(), {
        value: { i },
        done: false,
      });
    }
  } finally {
    for (const stream of streams) stream.cancel();
  }
  await until(
    () => Promise.resolve(pool.status().workers[0]!.inFlight === 0),
    "the cancelled streams to end on the worker",
  );
});

/** A step of "Pool.executeStream on one one-worker pool (each step its own streams)": Pool.executeStream: a parked thread-unsafe stream lets its model run; its cancel closes the generator */
async function poolExecuteStreamParkedThreadUnsafe(
  pool: Pool,
  dir: { path: string },
): Promise<void> {
  const marker = `${dir.path}/closed`;
  await pool.addModel("unsafe", {
    source: `
class Unsafe:
    threadsafe = False
    inside = 0
    def execute(self, msg):
        i = 0
        try:
            while msg.get("n") is None or i < msg["n"]:
                Unsafe.inside += 1
                assert Unsafe.inside == 1, "entered by two threads at once"
                Unsafe.inside -= 1
                yield i
                i += 1
        except GeneratorExit:
            with open(msg["marker"], "a") as f:
                f.write("GeneratorExit ")
            raise
        finally:
            if msg.get("marker"):
                with open(msg["marker"], "a") as f:
                    f.write("finally")
`,
  });
  const stream = pool.executeStream<number>("unsafe", { marker }, {
    timeout: 60_000,
  });
  assert.deepEqual(await stream.next(), { value: 0, done: false });
  await until(
    async () => (await parkedCalls(pool)) === 1,
    "the stream to park",
  );
  // threadsafe = False held the model's lock until the stream's last item.
  assert.deepEqual(
    await pool.execute("unsafe", { n: 3 }, { timeout: 30_000 }),
    [0, 1, 2],
  );
  // Bursts of the stream and whole calls alternate, never together.
  const calls = Array.from(
    { length: 8 },
    () => pool.execute<number[]>("unsafe", { n: 50 }, { timeout: 30_000 }),
  );
  for (let i = 1; i < 300; i++) {
    assert.deepEqual(await stream.next(), { value: i, done: false });
  }
  for (const items of await Promise.all(calls)) {
    assert.equal(items.length, 50);
  }
  stream.cancel();
  assert.equal(
    await until(
      () =>
        Deno.readTextFile(marker).then(
          (text) => text.endsWith("finally") ? text : undefined,
          () => undefined,
        ),
      "the generator's finally",
    ),
    "GeneratorExit finally",
  );
}
