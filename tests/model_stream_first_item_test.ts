import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import { TimeoutError } from "../src/errors.ts";
import { modelsDir } from "./_pool_harness.ts";
import { until } from "./_gateway_harness.ts";

// Thinks until its gate file exists (never, unless the test makes it),
// then yields its items `sleep` apart.
const GATED = `
import os, time
class Gated:
    def execute(self, msg):
        gate = msg.get("gate")
        while gate and not os.path.exists(gate):
            time.sleep(0.01)
        for i in range(msg.get("n", 3)):
            if msg.get("sleep"):
                time.sleep(msg["sleep"])
            yield i
`;

async function read(stream: AsyncIterable<unknown>): Promise<unknown[]> {
  const out = [];
  for await (const item of stream) out.push(item);
  return out;
}

Deno.test("Pool.executeStream firstItemTimeout: no first item in time ends the stream with a TimeoutError naming the bound and where the call waited; the model is cancelled", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
    maxInFlightPerWorker: 1,
  });
  await pool.addModel("gated", { source: GATED });
  const never = `${dir.path}/never`;

  // On its worker, thinking: waited "worker".
  const late = await read(
    pool.executeStream("gated", { gate: never }, {
      firstItemTimeout: 200,
      timeout: 60_000,
    }),
  ).catch((err) => err);
  assert.ok(late instanceof TimeoutError, String(late));
  assert.deepEqual(late.details, {
    bound: "firstItemTimeout",
    firstItemTimeout: 200,
    waited: "worker",
  });
  assert.match(
    late.message,
    /no first item within 200 ms \(firstItemTimeout\)/,
  );
  await until(
    () => Promise.resolve(pool.status().workers[0]!.inFlight === 0),
    "the late stream's call to be cancelled",
  );

  // Behind a call holding the worker's only slot: waited "queue".
  const gate = `${dir.path}/gate`;
  const ahead = read(pool.executeStream("gated", { gate, n: 1 }));
  await until(
    () => Promise.resolve(pool.status().workers[0]!.inFlight === 1),
    "the call ahead to run",
  );
  const queued = await read(
    pool.executeStream("gated", {}, { firstItemTimeout: 200 }),
  ).catch((err) => err);
  assert.ok(queued instanceof TimeoutError, String(queued));
  assert.equal(queued.details.waited, "queue");
  assert.match(queued.message, /before it started \(waiting for a worker/);
  await Deno.writeTextFile(gate, "");
  assert.deepEqual(await ahead, [0]);

  // A first item in time: the stream runs on past the bound.
  assert.deepEqual(
    await read(
      pool.executeStream("gated", { n: 4, sleep: 0.1 }, {
        firstItemTimeout: 150,
      }),
    ),
    [0, 1, 2, 3],
  );
  // Not a number > 0: refused at the first read.
  for (const bad of [0, -1, Number.NaN, "100"]) {
    await assert.rejects(
      read(
        pool.executeStream("gated", {}, {
          firstItemTimeout: bad as number,
        }),
      ),
      RangeError,
    );
  }
});

Deno.test('Pool.executeStream firstItemTimeout: a stream waiting on its worker for a threadsafe = False model\'s turn never started: waited "queue"', async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
  });
  await pool.addModel("solo", {
    source: GATED.replace(
      "class Gated:",
      "class Gated:\n    threadsafe = False",
    ),
  });
  const gate = `${dir.path}/gate`;
  const ahead = read(pool.executeStream("solo", { gate, n: 1 }));
  ahead.catch(() => {}); // awaited below; a failed assertion leaves it to the close
  await until(
    () => Promise.resolve(pool.status().workers[0]!.inFlight === 1),
    "the call ahead to run",
  );
  const waiting = await read(
    pool.executeStream("solo", {}, { firstItemTimeout: 200 }),
  ).catch((err) => err);
  assert.ok(waiting instanceof TimeoutError, String(waiting));
  // Before: "worker", which says it ran (a retry not safe), though it had
  // only waited for the model's lock.
  assert.equal(waiting.details.waited, "queue");
  await Deno.writeTextFile(gate, "");
  assert.deepEqual(await ahead, [0]);
  // Its turn came: a stream that starts still says "worker".
  const late = await read(
    pool.executeStream("solo", { gate: `${dir.path}/never` }, {
      firstItemTimeout: 200,
    }),
  ).catch((err) => err);
  assert.equal(late.details.waited, "worker");
});
