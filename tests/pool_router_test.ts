import assert from "node:assert/strict";
import { type PoolCall, PoolRouter } from "../src/pool_router.ts";
import type { Worker } from "../src/worker.ts";

/** A ready worker as the router reads one: its id, state and open session. */
function readyWorker(id: string): Worker {
  return {
    id,
    state: "ready",
    session: { isClosed: false },
  } as unknown as Worker;
}

function keyed(key: string): PoolCall {
  return { cmd: "executeModel", args: {}, options: { key } } as PoolCall;
}

Deno.test("PoolRouter keeps seeds only for the workers it has, however many came and went", () => {
  const workers: Worker[] = [readyWorker("w1"), readyWorker("w2")];
  const router = new PoolRouter({
    workers,
    maxInFlightPerWorker: 1,
    maxQueue: 1,
    send: () => {},
    coming: () => false,
  });
  // A pool resized back and forth (autoscale, PUT /v1/workers) for a long
  // time: each resize adds a worker with a new id and removes one.
  for (let n = 3; n < 1003; n++) {
    workers.splice(1, 1, readyWorker(`w${n}`));
    const owner = router.ownerOf(keyed(`user-${n}`));
    assert.ok(owner === workers[0] || owner === workers[1]);
  }
  assert.ok(
    router.seeds <= 2 * workers.length,
    `${router.seeds} seeds kept for ${workers.length} workers`,
  );
});

Deno.test("PoolRouter routes a key to the same worker before and after forgetting the seeds of removed ones", () => {
  const workers: Worker[] = [readyWorker("w1"), readyWorker("w2")];
  const router = new PoolRouter({
    workers,
    maxInFlightPerWorker: 1,
    maxQueue: 1,
    send: () => {},
    coming: () => false,
  });
  const before = new Map<string, string | undefined>();
  for (let k = 0; k < 50; k++) {
    before.set(`k${k}`, router.ownerOf(keyed(`k${k}`))?.id);
  }
  // Workers that come and go, then the original two alone again.
  for (let n = 3; n < 20; n++) {
    workers.push(readyWorker(`w${n}`));
    router.ownerOf(keyed("any"));
    workers.pop();
  }
  for (const [key, id] of before) {
    assert.equal(router.ownerOf(keyed(key))?.id, id, key);
  }
});
