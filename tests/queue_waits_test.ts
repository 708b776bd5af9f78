import assert from "node:assert/strict";
import { QUEUE_WAIT_BUCKETS, QueueWaits } from "../src/queue_waits.ts";
import { Pool } from "../src/pool.ts";
import { modelsDir, poolOptions } from "./_pool_harness.ts";
import { startGateway } from "./_gateway_harness.ts";

Deno.test("QueueWaits: calls sent at once count with a wait of 0, queued ones in their bucket; buckets are cumulative", () => {
  const waits = new QueueWaits();
  assert.deepEqual(waits.snapshot(), {
    le: QUEUE_WAIT_BUCKETS,
    buckets: QUEUE_WAIT_BUCKETS.map(() => 0),
    count: 0,
    sum: 0,
    queued: 0,
  });
  waits.none();
  waits.none();
  waits.observe(0.001); // on a bound: in its bucket (le is "at most")
  waits.observe(0.02);
  waits.observe(120); // past the last bound: only in +Inf (count)
  waits.observe(-1); // a clock step back: a wait of 0
  const s = waits.snapshot();
  assert.equal(s.count, 6);
  assert.equal(s.queued, 4);
  assert.equal(s.sum, 0.001 + 0.02 + 120);
  const at = (le: number) => s.buckets[QUEUE_WAIT_BUCKETS.indexOf(le)];
  assert.equal(at(0.001), 4);
  assert.equal(at(0.01), 4);
  assert.equal(at(0.025), 5);
  assert.equal(at(60), 5);
  // A snapshot is a copy.
  s.buckets[0] = 99;
  assert.equal(waits.snapshot().buckets[0], 4);
});

Deno.test("Pool.queueWaits: with one slot, calls behind a slow one wait in the queue for as long as it runs", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start(
    poolOptions(dir.path, { workers: 1, maxInFlightPerWorker: 1 }),
  );
  await pool.addModel("slow", { file: "slow.py" });
  const before = pool.queueWaits();
  // Three at once on one slot: the first goes at once, the second waits for
  // it (~150 ms), the third for both (~300 ms).
  await Promise.all(
    [0, 1, 2].map((i) => pool.execute("slow", { ms: 150, i })),
  );
  const after = pool.queueWaits();
  assert.equal(after.count - before.count, 3);
  assert.equal(after.queued - before.queued, 2);
  const waited = after.sum - before.sum;
  assert.ok(waited >= 0.4 && waited < 30, `waited ${waited} s in all`);
  const at = (s: typeof after, le: number) =>
    s.buckets[QUEUE_WAIT_BUCKETS.indexOf(le)]!;
  // None of the queued two waited 100 ms or less; the first did not wait.
  assert.equal(at(after, 0.1) - at(before, 0.1), 1);
  // A call alone goes at once.
  await pool.execute("slow", { ms: 0 });
  assert.equal(pool.queueWaits().count, after.count + 1);
  assert.equal(pool.queueWaits().queued, after.queued);
});

Deno.test("GET /metrics: pyproxy_queued_calls and the pyproxy_queue_wait_seconds histogram", async () => {
  await using gw = await startGateway();
  for (let i = 0; i < 3; i++) {
    const res = await gw.fetch("/v1/models/echo/execute", {
      method: "POST",
      body: JSON.stringify({ i }),
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }
  const text = await (await gw.fetch("/metrics")).text();
  assert.match(text, /^# TYPE pyproxy_queued_calls gauge$/m);
  assert.match(text, /^pyproxy_queued_calls 0$/m);
  assert.match(text, /^# TYPE pyproxy_queue_wait_seconds histogram$/m);
  const count = Number(
    text.match(/^pyproxy_queue_wait_seconds_count (\d+)$/m)?.[1],
  );
  // The three calls (and whatever the gateway's start sent through the pool).
  assert.ok(count >= 3, text);
  assert.match(
    text,
    new RegExp(
      `^pyproxy_queue_wait_seconds_bucket\\{le="\\+Inf"\\} ${count}$`,
      "m",
    ),
  );
  assert.match(text, /^pyproxy_queue_wait_seconds_bucket\{le="0\.001"\} \d+$/m);
  assert.match(text, /^pyproxy_queue_wait_seconds_sum [\d.e-]+$/m);
});
