import assert from "node:assert/strict";
import { Pool, type PoolOptions } from "../src/pool.ts";
import { ConfigError, StreamIdleError } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";
import type { ModelStream } from "../src/model_stream.ts";
import { modelsDir } from "./_pool_harness.ts";
import { until } from "./_gateway_harness.ts";

/**
 * Endless unless `n`, `sleep` s before each item; on its end it appends
 * "GeneratorExit " (when closed) and "finally" to `marker`.
 */
const COUNTER = `
import time
class Counter:
    def execute(self, msg):
        i = 0
        try:
            while msg.get("n") is None or i < msg["n"]:
                if msg.get("sleep"):
                    time.sleep(msg["sleep"])
                yield {"i": i}
                i += 1
        except GeneratorExit:
            if msg.get("marker"):
                with open(msg["marker"], "a") as f:
                    f.write("GeneratorExit ")
            raise
        finally:
            if msg.get("marker"):
                with open(msg["marker"], "a") as f:
                    f.write("finally")
`;
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

/** The idle cancels a pool logs, as `[model, ms]`, and a promise of the next one. */
function idleLog(): {
  logger: Logger;
  cancels: Array<[unknown, unknown]>;
  next: () => Promise<void>;
} {
  const cancels: Array<[unknown, unknown]> = [];
  let wake: (() => void) | undefined;
  const none = () => {};
  const logger: Logger = {
    trace: none,
    debug: none,
    info: (message, properties) => {
      if (!message.includes("streamIdleTimeout")) return;
      cancels.push([properties?.model, properties?.ms]);
      wake?.();
    },
    warn: none,
    error: none,
    fatal: none,
  };
  return {
    logger,
    cancels,
    next: () => new Promise<void>((resolve) => (wake = resolve)),
  };
}

/** `promise`, or a failure naming `what` after 10 s (a hung test says what it waited for). */
async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`Timed out waiting for ${what}`)),
          10_000,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function startPool(dir: string, extra: PoolOptions): Promise<Pool> {
  const pool = await Pool.start({
    workers: 1,
    modelsDir: dir,
    handleSignals: false,
    ...extra,
  });
  await pool.addModel("counter", { source: COUNTER });
  return pool;
}

/** The worker's counts: [inFlight, parked]. */
function counts(pool: Pool): [number, number] {
  const w = pool.status().workers[0]!;
  return [w.inFlight, w.parked];
}

function countsAre(pool: Pool, inFlight: number, parked: number, what: string) {
  return until(() => {
    const [i, p] = counts(pool);
    return Promise.resolve(i === inFlight && p === parked);
  }, `${what} (inFlight ${inFlight}, parked ${parked}; now ${counts(pool)})`);
}

/** The marker's text once the generator's finally wrote it. */
function generatorClosed(marker: string): Promise<string> {
  return until(
    () =>
      Deno.readTextFile(marker).then(
        (text) => text.endsWith("finally") ? text : undefined,
        () => undefined,
      ),
    "the generator's finally",
  );
}

/**
 * The scenarios of this file, each on a pool of its own: they wait on idle
 * timeouts and slow readers, not on the CPU, so the file runs them at once
 * (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Pool.executeStream: a stream read once then left alone is cancelled at its idle timeout; the generator closes, nothing stays counted, the next read rejects with StreamIdleError",
  async () => {
    await using dir = await modelsDir();
    const log = idleLog();
    await using pool = await startPool(dir.path, {
      streamIdleTimeout: 1000,
      logger: log.logger,
    });
    const marker = `${dir.path}/closed`;
    const logged = log.next();
    const stream = pool.executeStream<{ i: number }>("counter", { marker });
    assert.deepEqual(await stream.next(), { value: { i: 0 }, done: false });
    await countsAre(pool, 0, 1, "the stream to park");
    // Its reader is away: the model is closed where it waits, in its yield.
    assert.equal(await generatorClosed(marker), "GeneratorExit finally");
    await countsAre(pool, 0, 0, "the idle stream's cancel");
    assert.equal(pool.status().parked, 0);
    await within(logged, "the idle cancel's log record");
    assert.deepEqual(log.cancels, [["counter", 1000]]);
    // The items it had were dropped: the next read rejects, once.
    const error = await stream.next().then(
      () => assert.fail("expected StreamIdleError"),
      (err) => err,
    );
    assert.ok(error instanceof StreamIdleError);
    assert.equal(error.code, "STREAM_IDLE");
    assert.equal(error.details.idleTimeout, 1000);
    assert.match(
      error.message,
      /^Cannot read stream of counter: no item taken for 1000 ms \(idle timeout: the stream's idleTimeout, else the pool's streamIdleTimeout\)$/,
    );
    assert.deepEqual(await stream.next(), { value: undefined, done: true });
  },
]);

scenarios.push([
  "Pool.executeStream: a reader that takes each item within the idle timeout is never cut, nor one that waits for a slow model",
  async () => {
    await using dir = await modelsDir();
    const log = idleLog();
    await using pool = await startPool(dir.path, {
      streamIdleTimeout: 1000,
      logger: log.logger,
    });
    // 12 items 100 ms apart: 1.2 s in all, longer than the idle timeout,
    // but the reader never takes more than 100 ms to come back.
    const slowReader = pool.executeStream<{ i: number }>("counter", { n: 12 });
    let i = 0;
    for await (const item of slowReader) {
      assert.equal(item.i, i++);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(i, 12);
    // A reader waiting for the model is not idle, however long it waits: 3
    // items 0.6 s apart (1.8 s), each awaited by a next() that began at once.
    const slowModel = pool.executeStream<{ i: number }>("counter", {
      n: 3,
      sleep: 0.6,
    }, { idleTimeout: 200 });
    const items = [];
    for await (const item of slowModel) items.push(item.i);
    assert.deepEqual(items, [0, 1, 2]);
    assert.deepEqual(log.cancels, []);
    assert.deepEqual(counts(pool), [0, 0]);
  },
]);

scenarios.push([
  "Pool.executeStream: idleTimeout per call overrides streamIdleTimeout; Infinity turns it off",
  async () => {
    await using dir = await modelsDir();
    const log = idleLog();
    await using pool = await startPool(dir.path, {
      streamIdleTimeout: 300,
      logger: log.logger,
    });
    const markers = [`${dir.path}/kept`, `${dir.path}/cut`];
    const kept = pool.executeStream("counter", { marker: markers[0] }, {
      idleTimeout: Infinity,
    });
    const cut = pool.executeStream("counter", { marker: markers[1] });
    const streams: ModelStream[] = [kept, cut];
    try {
      // `kept` is read first: with the pool's 300 ms it would run out of idle
      // time no later than `cut`, which the pool then cancels.
      await kept.next();
      await cut.next();
      await generatorClosed(markers[1]!);
      await assert.rejects(cut.next(), StreamIdleError);
      assert.deepEqual(log.cancels, [["counter", 300]]);
      // `kept` still runs, parked, and its reader gets the next items.
      await countsAre(pool, 0, 1, "the kept stream alone, parked");
      assert.deepEqual(await kept.next(), { value: { i: 1 }, done: false });
      await assert.rejects(Deno.stat(markers[0]!), Deno.errors.NotFound);
    } finally {
      for (const stream of streams) stream.cancel();
    }
    await countsAre(pool, 0, 0, "the kept stream's cancel");

    // And the other way: a pool without idle timeout, a call with one.
    await using quiet = await startPool(dir.path, {
      streamIdleTimeout: Infinity,
      logger: log.logger,
    });
    const marker = `${dir.path}/per-call`;
    const stream = quiet.executeStream("counter", { marker }, {
      idleTimeout: 300,
    });
    await stream.next();
    await generatorClosed(marker);
    await assert.rejects(stream.next(), StreamIdleError);
    await countsAre(quiet, 0, 0, "the per-call idle stream's cancel");
  },
]);

scenarios.push([
  "Pool.executeStream: a stream that ended with items unread loses them at its idle timeout",
  async () => {
    await using dir = await modelsDir();
    const log = idleLog();
    await using pool = await startPool(dir.path, {
      streamIdleTimeout: 300,
      logger: log.logger,
    });
    const logged = log.next();
    const stream = pool.executeStream<{ i: number }>("counter", { n: 3 });
    assert.deepEqual(await stream.next(), { value: { i: 0 }, done: false });
    // The model ended long before; its two items waited.
    await within(logged, "the idle cancel's log record");
    await assert.rejects(stream.next(), StreamIdleError);
    assert.deepEqual(await stream.next(), { value: undefined, done: true });
    // Read within the timeout, the same stream ends as usual.
    const read = pool.executeStream<{ i: number }>("counter", { n: 3 });
    const items = [];
    for await (const item of read) items.push(item.i);
    assert.deepEqual(items, [0, 1, 2]);
    assert.equal(log.cancels.length, 1);
  },
]);

scenarios.push([
  "Pool.executeStream: a bad idleTimeout or streamIdleTimeout is a ConfigError",
  async () => {
    await using dir = await modelsDir();
    await assert.rejects(
      Pool.start({ workers: 1, modelsDir: dir.path, streamIdleTimeout: 0 }),
      (err) =>
        err instanceof ConfigError &&
        err.message ===
          "Cannot start pool: streamIdleTimeout: expected a number > 0",
    );
    await using pool = await startPool(dir.path, {});
    for (const idleTimeout of [0, -1, NaN, "60000"]) {
      const stream = pool.executeStream("counter", {}, {
        idleTimeout: idleTimeout as number,
      });
      await assert.rejects(
        stream.next(),
        (err) =>
          err instanceof ConfigError &&
          err.message.startsWith(
            "Cannot send call executeStream: idleTimeout: expected a number of ms > 0, got ",
          ),
      );
    }
    assert.deepEqual(counts(pool), [0, 0]);
  },
]);

Deno.test("Pool.executeStream idle timeouts, each scenario on a pool of its own (at once)", (t) =>
  concurrentSteps(t, scenarios));
