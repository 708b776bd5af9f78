import assert from "node:assert/strict";
import {
  QUEUE_WAIT_BUCKETS,
  QUEUE_WAIT_MAX_MODELS,
  QueueWaits,
} from "../src/queue_waits.ts";
import { Pool } from "../src/pool.ts";
import { modelsDir, poolOptions } from "./_pool_harness.ts";
import { startGateway, until } from "./_gateway_harness.ts";
import { parseExposition, value } from "./_exposition.ts";

Deno.test("QueueWaits: calls sent at once count with a wait of 0, queued ones in their bucket; buckets are cumulative", () => {
  const waits = new QueueWaits();
  assert.deepEqual(waits.snapshot(), {
    le: QUEUE_WAIT_BUCKETS,
    buckets: QUEUE_WAIT_BUCKETS.map(() => 0),
    count: 0,
    sum: 0,
    queued: 0,
    abandoned: Object.fromEntries(
      ["timeout", "cancelled", "failed"].map((outcome) => [outcome, {
        buckets: QUEUE_WAIT_BUCKETS.map(() => 0),
        count: 0,
        sum: 0,
      }]),
    ),
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
  // Calls that left the queue unsent count apart, by outcome.
  waits.abandon("timeout", 0.3);
  waits.abandon("cancelled", 0.0005);
  waits.abandon("timeout", -1);
  const a = waits.snapshot();
  assert.equal(a.count, 6);
  assert.equal(a.queued, 4);
  assert.equal(a.sum, s.sum);
  assert.equal(a.abandoned.timeout.count, 2);
  assert.equal(a.abandoned.timeout.sum, 0.3);
  assert.equal(a.abandoned.timeout.buckets[0], 1);
  assert.equal(
    a.abandoned.timeout.buckets[QUEUE_WAIT_BUCKETS.indexOf(0.25)],
    1,
  );
  assert.equal(a.abandoned.timeout.buckets[QUEUE_WAIT_BUCKETS.indexOf(0.5)], 2);
  assert.equal(a.abandoned.cancelled.count, 1);
  assert.equal(a.abandoned.cancelled.buckets[0], 1);
  assert.equal(a.abandoned.failed.count, 0);
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
    text.match(/^pyproxy_queue_wait_seconds_count\{outcome="sent"\} (\d+)$/m)
      ?.[1],
  );
  // The three calls (and whatever the gateway's start sent through the pool).
  assert.ok(count >= 3, text);
  assert.match(
    text,
    new RegExp(
      `^pyproxy_queue_wait_seconds_bucket\\{outcome="sent",le="\\+Inf"\\} ${count}$`,
      "m",
    ),
  );
  assert.match(
    text,
    /^pyproxy_queue_wait_seconds_bucket\{outcome="sent",le="0\.001"\} \d+$/m,
  );
  assert.match(
    text,
    /^pyproxy_queue_wait_seconds_sum\{outcome="sent"\} [\d.e-]+$/m,
  );
});

Deno.test("Pool.queueWaits: calls that time out, are cancelled or fail while queued count apart, by outcome, with how long they waited", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start(
    poolOptions(dir.path, { workers: 1, maxInFlightPerWorker: 1 }),
  );
  await pool.addModel("slow", { file: "slow.py" });
  const before = pool.queueWaits();
  // One slot, held by a slow call: the next three queue behind it (0.6 s:
  // three times the timeout it must outlast; the close waits it out).
  const slow = pool.execute("slow", { ms: 600 });
  const timedOut = pool.execute("slow", { ms: 0 }, { timeout: 200 });
  const abort = new AbortController();
  const cancelled = pool.execute("slow", { ms: 0 }, { signal: abort.signal });
  const failed = pool.execute("slow", { ms: 0 });
  const outcomes = Promise.allSettled([slow, timedOut, cancelled, failed]);
  await assert.rejects(timedOut, { name: "TimeoutError" });
  abort.abort();
  await assert.rejects(cancelled, { name: "CancelledError" });
  const mid = pool.queueWaits();
  // Not counted as sent: only the slow call was.
  assert.equal(mid.count - before.count, 1);
  assert.equal(mid.queued, before.queued);
  const { timeout, cancelled: aborted } = mid.abandoned;
  assert.equal(timeout.count - before.abandoned.timeout.count, 1);
  assert.equal(aborted.count - before.abandoned.cancelled.count, 1);
  // Each waited its deadline (or until the abort, after that): ~200 ms.
  const waitedT = timeout.sum - before.abandoned.timeout.sum;
  const waitedC = aborted.sum - before.abandoned.cancelled.sum;
  assert.ok(waitedT >= 0.15 && waitedT < 30, `timeout waited ${waitedT} s`);
  assert.ok(waitedC >= waitedT - 0.05 && waitedC < 30, `waited ${waitedC} s`);
  const at = (le: number) => QUEUE_WAIT_BUCKETS.indexOf(le);
  assert.equal(timeout.buckets[at(0.1)], before.abandoned.timeout.count);
  assert.equal(timeout.buckets[at(60)], timeout.count);
  // Closing the pool fails the call still queued.
  await pool.close();
  const [, , , last] = await outcomes;
  assert.equal(last.status, "rejected");
  assert.equal(
    (last as PromiseRejectedResult).reason.name,
    "ShuttingDownError",
  );
  const end = pool.queueWaits();
  assert.equal(end.abandoned.failed.count - before.abandoned.failed.count, 1);
  assert.ok(end.abandoned.failed.sum >= waitedT);
});

Deno.test("GET /metrics: pyproxy_queue_wait_seconds has an outcome label, every outcome listed; a call timed out in the queue counts as timeout", async () => {
  await using gw = await startGateway({ limits: { maxInFlightPerWorker: 1 } });
  const hold = gw.fetch("/v1/models/slow/execute", {
    method: "POST",
    // Outlasts the next call's 200 ms timeout in the queue (then waited out).
    body: JSON.stringify({ seconds: 0.8 }),
  });
  const late = await gw.fetch("/v1/models/slow/execute?timeout=200", {
    method: "POST",
    body: JSON.stringify({ seconds: 0 }),
  });
  assert.equal(late.status, 504);
  await late.body?.cancel();
  await (await hold).body?.cancel();
  const text = await (await gw.fetch("/metrics")).text();
  for (const outcome of ["sent", "timeout", "cancelled", "failed"]) {
    assert.match(
      text,
      new RegExp(
        `^pyproxy_queue_wait_seconds_bucket\\{outcome="${outcome}",le="0\\.001"\\} \\d+$`,
        "m",
      ),
    );
  }
  assert.match(
    text,
    /^pyproxy_queue_wait_seconds_count\{outcome="timeout"\} 1$/m,
  );
  assert.match(
    text,
    /^pyproxy_queue_wait_seconds_bucket\{outcome="timeout",le="0\.1"\} 0$/m,
  );
  assert.match(
    text,
    /^pyproxy_queue_wait_seconds_count\{outcome="cancelled"\} 0$/m,
  );
  const sum = Number(
    text.match(/^pyproxy_queue_wait_seconds_sum\{outcome="timeout"\} (\S+)$/m)
      ?.[1],
  );
  assert.ok(sum >= 0.15 && sum < 30, text);
});

Deno.test("QueueWaits by model: only calls that queued, bounded by QUEUE_WAIT_MAX_MODELS names, a removed model forgotten", () => {
  const waits = new QueueWaits();
  waits.none();
  assert.equal(waits.snapshot().models, undefined);
  waits.observe(0.02, "a");
  waits.abandon("cancelled", 0.5, "a");
  waits.observe(0.3);
  const a = waits.snapshot().models?.get("a");
  assert.equal(a?.sent.count, 1);
  assert.equal(a?.sent.sum, 0.02);
  assert.equal(a?.abandoned.cancelled.count, 1);
  assert.equal(a?.abandoned.timeout.count, 0);
  for (let i = 0; i < QUEUE_WAIT_MAX_MODELS + 5; i++) waits.observe(1, `m${i}`);
  const models = waits.snapshot().models!;
  assert.equal(models.size, QUEUE_WAIT_MAX_MODELS + 1);
  assert.equal(models.get("_other")?.sent.count, 6);
  waits.forget("a");
  assert.equal(waits.snapshot().models?.has("a"), false);
  // The pool-wide histogram keeps every call.
  assert.equal(waits.snapshot().count, QUEUE_WAIT_MAX_MODELS + 8);
});

Deno.test("GET /metrics: pyproxy_queue_wait_by_model_seconds counts each model's calls that queued, by outcome", async () => {
  await using gw = await startGateway({ limits: { maxInFlightPerWorker: 1 } });
  const hold = gw.fetch("/v1/models/slow/execute", {
    method: "POST",
    // Outlasts the 200 ms timeout of a call queued behind it.
    body: JSON.stringify({ seconds: 0.6 }),
  });
  await until(async () => {
    const s = await (await gw.fetch("/v1/status")).json();
    return s.workers[0].inFlight === 1;
  }, "the slow call in flight");
  const queued = gw.fetch("/v1/models/echo/execute", {
    method: "POST",
    body: JSON.stringify({ i: 1 }),
  });
  const late = await gw.fetch("/v1/models/slow/execute?timeout=200", {
    method: "POST",
    body: JSON.stringify({ seconds: 0 }),
  });
  assert.equal(late.status, 504);
  await late.body?.cancel();
  assert.equal((await hold).status, 200);
  await (await hold).body?.cancel();
  assert.equal((await queued).status, 200);
  await (await queued).body?.cancel();
  const families = parseExposition(await (await gw.fetch("/metrics")).text());
  const name = "pyproxy_queue_wait_by_model_seconds";
  const count = (model: string, outcome: string) =>
    value(families, name, { model, outcome }, `${name}_count`);
  assert.equal(count("echo", "sent"), 1);
  assert.ok(
    value(families, name, { model: "echo", outcome: "sent" }, `${name}_sum`) >
      0.1,
  );
  assert.equal(count("slow", "timeout"), 1);
  // The slow call was sent at once: not in it.
  assert.equal(count("slow", "sent"), 0);
  assert.equal(
    families.get(name)!.samples.some((s) => s.labels.outcome === "cancelled"),
    false,
  );
});

Deno.test("Pool.queueWaits by model: a model's queued calls under its name; removed, it takes them with it", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start(
    poolOptions(dir.path, { workers: 1, maxInFlightPerWorker: 1 }),
  );
  await pool.addModel("slow", { file: "slow.py" });
  await Promise.all([0, 1].map((i) => pool.execute("slow", { ms: 100, i })));
  assert.equal(pool.queueWaits().models?.get("slow")?.sent.count, 1);
  await pool.removeModel("slow");
  assert.equal(pool.queueWaits().models?.has("slow") ?? false, false);
});
