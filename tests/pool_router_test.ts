import assert from "node:assert/strict";
import { type PoolCall, PoolRouter } from "../src/pool_router.ts";
import type { Worker } from "../src/worker.ts";
import { NoWorkerError } from "../src/errors.ts";

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

/** A ready worker whose `inFlight` reads are counted (the cost of a scan). */
function countedWorker(id: string, reads: { n: number }) {
  return {
    id,
    state: "ready",
    session: { isClosed: false },
    busy: 0,
    get inFlight() {
      reads.n++;
      return this.busy;
    },
  };
}

Deno.test("PoolRouter: calls queued for a placed model's busy slot cost a freed slot elsewhere nothing, and leave with their model's placement", () => {
  const reads = { n: 0 };
  const w1 = countedWorker("w1", reads);
  const w2 = countedWorker("w2", reads);
  const workers = [w1, w2] as unknown as Worker[];
  const sent: Array<[string, string]> = [];
  const router = new PoolRouter({
    workers,
    maxInFlightPerWorker: 1,
    maxQueue: 1000,
    send: (call, w) => {
      sent.push([String(call.args?.name), w.id]);
      (w as unknown as { busy: number }).busy++;
    },
    coming: () => false,
  });
  const placement = { name: "a", count: 1, workers: [workers[0]!], rr: 0 };
  const rejected: unknown[] = [];
  const call = (name: string): PoolCall =>
    ({
      cmd: "executeModel",
      args: { name },
      options: {},
      deadline: Infinity,
      retries: 0,
      resolve: () => {},
      reject: (e: unknown) => rejected.push(e),
      ...(name === "a" ? { placement } : {}),
    }) as PoolCall;
  w1.busy = 1;
  w2.busy = 1;
  for (let i = 0; i < 500; i++) router.route(call("a"), false);
  router.route(call("b"), false);
  assert.equal(router.queued, 501);
  // w2 frees: b goes there, without a look at each of a's 500 calls.
  w2.busy = 0;
  reads.n = 0;
  router.pump(false);
  assert.deepEqual(sent, [["b", "w2"]]);
  assert.ok(reads.n < 10, `${reads.n} reads of inFlight`);
  // w1 frees: a's oldest goes there, and only there.
  w1.busy = 0;
  router.pump(false);
  assert.deepEqual(sent.at(-1), ["a", "w1"]);
  assert.equal(router.queued, 499);
  // Placed no more (removed): its calls may go to any worker.
  w2.busy = 0;
  router.unplace(placement);
  assert.deepEqual(sent.at(-1), ["a", "w2"]);
  assert.equal(router.queued, 498);
  // A pinned call to a slot without the model: a typed error, not queued.
  let error: unknown;
  router.route(
    { ...call("a"), options: { worker: "w2" }, reject: (e) => error = e },
    false,
  );
  assert.ok(error instanceof NoWorkerError, String(error));
  assert.match(
    (error as Error).message,
    /worker w2 does not hold model 'a' \(it is placed on w1: workers 1\)/,
  );
  assert.deepEqual(rejected, []);
  router.drain(() => new Error("drained"));
  assert.equal(rejected.length, 498);
});

Deno.test("PoolRouter forgets a placed model's queue once it empties (a freed slot scans the models with calls waiting, not every one that ever waited)", () => {
  const w1 = countedWorker("w1", { n: 0 });
  const workers = [w1] as unknown as Worker[];
  const router = new PoolRouter({
    workers,
    maxInFlightPerWorker: 1,
    maxQueue: 10_000,
    send: () => {
      w1.busy = 1;
    },
    coming: () => false,
  });
  const call = (placement: unknown, reject = (_: unknown) => {}): PoolCall =>
    ({
      cmd: "executeModel",
      args: { name: "m" },
      options: {},
      deadline: Infinity,
      retries: 0,
      resolve: () => {},
      reject,
      placement,
    }) as PoolCall;
  w1.busy = 1;
  const placements = Array.from(
    { length: 1000 },
    (_, i) => ({ name: `m${i}`, count: 1, workers, rr: 0 }),
  );
  for (const p of placements) router.route(call(p), false);
  assert.equal(router.placedQueues, 1000);
  // Sent one by one as the slot frees.
  for (let i = 0; i < 1000; i++) {
    w1.busy = 0;
    router.pump(false);
  }
  assert.equal(router.queued, 0);
  assert.equal(router.placedQueues, 0);
  // Cancelled while queued, and drained: gone too.
  w1.busy = 1;
  const abort = new AbortController();
  const cancelled: unknown[] = [];
  router.route(
    {
      ...call(placements[0], (e) => cancelled.push(e)),
      options: { signal: abort.signal },
    },
    false,
  );
  router.route(call(placements[1]), false);
  assert.equal(router.placedQueues, 2);
  abort.abort();
  assert.equal(cancelled.length, 1);
  assert.equal(router.placedQueues, 1);
  router.drain(() => new Error("closed"));
  assert.equal(router.placedQueues, 0);
  assert.equal(router.queued, 0);
});
