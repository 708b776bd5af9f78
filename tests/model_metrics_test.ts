// Model metrics (pyproxy.metrics): ModelMetricStore's sums and bounds, and a
// pool of real Python workers sending them (protocol §6, "Model metrics").
import assert from "node:assert/strict";
import fc from "fast-check";
import { Pool } from "../src/pool.ts";
import { ModelMetricStore } from "../src/model_metrics.ts";
import type { ModelMetricSeries } from "../src/model_metrics.ts";
import { ConfigError } from "../src/errors.ts";
import { poolOptions, readyAgain } from "./_pool_harness.ts";

const TEST_MODELS =
  new URL("../python/tests/models/", import.meta.url).pathname;

const counter = (model: string | null, value: number, labels = {}) => ({
  model,
  name: "hits_total",
  type: "counter",
  labels,
  value,
});

Deno.test("ModelMetricStore sums counters and histograms across workers, keeps a gauge per worker", () => {
  const store = new ModelMetricStore();
  const w0 = { worker: "w0" };
  const w1 = { worker: "w1" };
  const hist = (counts: number[], sum: number) => ({
    model: "m",
    name: "lat",
    type: "histogram",
    labels: {},
    buckets: [0.1, 1],
    counts,
    sum,
    count: counts.reduce((a, b) => a + b, 0),
  });
  store.ingest(w0, {
    series: [counter("m", 2), hist([1, 0, 1], 5.05), {
      model: "m",
      name: "depth",
      type: "gauge",
      labels: {},
      value: 3,
    }],
  });
  store.ingest(w1, {
    series: [counter("m", 3), hist([0, 2, 0], 1), {
      model: "m",
      name: "depth",
      type: "gauge",
      labels: {},
      value: 7,
    }],
  });
  store.ingest(w1, {
    series: [{
      model: "m",
      name: "depth",
      type: "gauge",
      labels: {},
      value: 1,
    }],
  });
  const { series } = store.snapshot();
  const by = (name: string, worker?: string) =>
    series.find((s) => s.name === name && s.worker === worker);
  assert.equal(by("hits_total")?.value, 5);
  assert.deepEqual(
    [by("lat")?.counts, by("lat")?.sum, by("lat")?.count],
    [[1, 2, 1], 6.05, 4],
  );
  assert.equal(by("depth", "w0")?.value, 3);
  assert.equal(by("depth", "w1")?.value, 1);
  // A worker's connection ended: its gauges go, the sums stay.
  store.forgetSource(w1);
  assert.equal(store.snapshot().series.length, 3);
  assert.equal(by("hits_total")?.value, 5);
});

Deno.test("ModelMetricStore drops invalid entries and series past its bounds, counted per model", () => {
  const store = new ModelMetricStore({ maxSeriesPerModel: 3, maxSeries: 5 });
  const source = { worker: "w0" };
  const bad: unknown[] = [
    { ...counter("m", 1), name: "a\nb" },
    { ...counter("m", 1), name: 'a"b' },
    { ...counter("m", 1), name: "__x" },
    { ...counter("m", 1), value: -1 },
    { ...counter("m", 1), value: null }, // NaN and Infinity arrive as null
    { ...counter("m", 1), labels: { model: "x" } },
    { ...counter("m", 1), labels: { "a b": "x" } },
    { ...counter("m", 1), labels: { a: 1 } },
    { ...counter("m", 1), labels: { a: "x".repeat(257) } },
    { ...counter("m", 1), type: "summary" },
    {
      model: "m",
      name: "h",
      type: "histogram",
      labels: {},
      buckets: [1],
      counts: [1],
      sum: 1,
      count: 1,
    },
    {
      model: "m",
      name: "h",
      type: "histogram",
      labels: {},
      buckets: [1],
      counts: [1, 1],
      sum: 1,
      count: 1,
    },
    { model: 7, name: "x", type: "counter", labels: {}, value: 1 },
    "junk",
  ];
  store.ingest(source, { series: bad });
  assert.equal(store.size, 0);
  assert.deepEqual(store.snapshot().dropped, { m: 12 });
  for (let i = 0; i < 10000; i++) {
    store.ingest(source, { series: [counter("m", 1, { i: String(i) })] });
    store.ingest(source, { series: [counter("n", 1, { i: String(i) })] });
  }
  assert.equal(store.size, 5); // 3 of m, then 2 of n: the pool's bound
  const { dropped } = store.snapshot();
  assert.equal(dropped.m, 12 + 9997);
  assert.equal(dropped.n, 9998);
  // A name keeps its kind: a gauge named as a counter is dropped.
  store.ingest(source, {
    series: [{ ...counter("m", 1, { i: "0" }), type: "gauge" }],
    dropped: [{ model: null, count: 4 }, { model: "m", count: -1 }],
  });
  assert.equal(store.snapshot().dropped.m, 12 + 9998);
  assert.equal(store.snapshot().dropped[""], 4);
});

Deno.test("ModelMetricStore forgets a removed model, and its late updates, until it is added again", () => {
  const store = new ModelMetricStore();
  const source = { worker: "w0" };
  store.ingest(source, { series: [counter("m", 2), counter(null, 1)] });
  store.forgetModel("m");
  store.ingest(source, { series: [counter("m", 5)] }); // in flight at the removal
  assert.deepEqual(store.snapshot().series.map((s) => s.model), [null]);
  store.modelAdded("m");
  store.ingest(source, { series: [counter("m", 1)] });
  assert.equal(
    store.snapshot().series.find((s) => s.model === "m")?.value,
    1,
  );
});

Deno.test("ModelMetricStore counts label values and help in code points, as Python bounds them, and drops lone surrogates", () => {
  const store = new ModelMetricStore();
  const source = { worker: "w0" };
  const emoji = "\u{1F600}"; // one code point, two UTF-16 units
  store.ingest(source, {
    series: [
      counter("m", 1, { e: emoji.repeat(256) }),
      { ...counter("m", 1, { e: "b" }), help: emoji.repeat(1024) },
      counter("m", 1, { e: emoji.repeat(257) }),
      { ...counter("m", 1, { e: "c" }), help: emoji.repeat(1025) },
      // Lone surrogates: U+FFFD on the wire, two values one series.
      counter("m", 1, { e: "\ud800" }),
      { ...counter("m", 1, { e: "d" }), help: "\udc00" },
    ],
  });
  const { series, dropped } = store.snapshot();
  assert.deepEqual(series.map((s) => [...s.labels.e!].length), [256, 1]);
  assert.equal(series[1]?.help, emoji.repeat(1024));
  assert.deepEqual(dropped, { m: 4 });
});

Deno.test("ModelMetricStore drops an update that would sum past the largest number, keeping the sum finite", () => {
  const store = new ModelMetricStore();
  const source = { worker: "w0" };
  const big = 1.5e308;
  const hist = {
    model: "m",
    name: "size",
    type: "histogram",
    labels: {},
    buckets: [1],
    counts: [0, 1],
    sum: big,
    count: 1,
  };
  store.ingest(source, { series: [counter("m", big), hist] });
  store.ingest({ worker: "w1" }, { series: [counter("m", big), hist] });
  const { series, dropped } = store.snapshot();
  assert.deepEqual(series.map((s) => s.value ?? s.sum), [big, big]);
  assert.equal(series[1]?.count, 1);
  assert.deepEqual(dropped, { m: 2 });
  assert.ok(!JSON.stringify(store.snapshot()).includes("null"));
});

Deno.test("ModelMetricStore takes any event without throwing, and its snapshot stays finite JSON within the bounds", () => {
  // What a worker sends is checked, never trusted: a bad event must not
  // break the session that reads it, nor a scrape.
  const entry = fc.record({
    model: fc.oneof(
      fc.constant(null),
      fc.constantFrom("m", "__proto__"),
      fc.string(),
      fc.integer(),
    ),
    name: fc.oneof(
      fc.constantFrom("x", "x_count", "x_sum", "__proto__", "constructor"),
      fc.string(),
    ),
    type: fc.oneof(
      fc.constantFrom("counter", "gauge", "histogram"),
      fc.anything(),
    ),
    labels: fc.oneof(
      fc.dictionary(
        fc.oneof(fc.constantFrom("__proto__", "constructor", "a"), fc.string()),
        fc.oneof(fc.string(), fc.anything()),
      ),
      fc.anything(),
    ),
    value: fc.oneof(fc.double(), fc.constant(1.7e308), fc.anything()),
    buckets: fc.oneof(fc.array(fc.double(), { maxLength: 3 }), fc.anything()),
    counts: fc.oneof(fc.array(fc.nat(), { maxLength: 4 }), fc.anything()),
    sum: fc.oneof(fc.double(), fc.constant(1.7e308), fc.anything()),
    count: fc.oneof(fc.nat(), fc.anything()),
    help: fc.oneof(fc.string(), fc.anything()),
  }, { requiredKeys: [] });
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.array(entry, { maxLength: 5 }), fc.anything()), {
        maxLength: 5,
      }),
      fc.anything(),
      (events, dropped) => {
        const store = new ModelMetricStore({
          maxSeriesPerModel: 4,
          maxSeries: 6,
        });
        for (const [i, series] of events.entries()) {
          store.ingest({ worker: `w${i % 2}` }, { series, dropped });
          if (i === 2) store.forgetModel("m");
        }
        const snapshot = store.snapshot();
        assert.ok(snapshot.series.length <= 6);
        for (const s of snapshot.series) {
          for (const n of [s.value, s.sum].filter((n) => n !== undefined)) {
            assert.ok(Number.isFinite(n), JSON.stringify(s));
          }
        }
        JSON.stringify(snapshot);
      },
    ),
    { seed: 13, numRuns: 500 },
  );
});

async function until(
  pool: Pool,
  check: (series: ModelMetricSeries[]) => boolean,
  what: string,
): Promise<ModelMetricSeries[]> {
  // The workers flush every half a second: polled, as a scrape would.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { series } = pool.modelMetrics();
    if (check(series)) return series;
    if (Date.now() > deadline) {
      throw new Error(
        `Timed out waiting for ${what}: ${JSON.stringify(series)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

const total = (series: ModelMetricSeries[], name: string) =>
  series.filter((s) => s.model === "m" && s.name === name).reduce(
    (sum, s) => sum + (s.value ?? 0),
    0,
  );

Deno.test("Pool.modelMetrics sums two workers' counters, keeps them through a restart, and drops them with the model", async () => {
  await using pool = await Pool.start(poolOptions(TEST_MODELS));
  await pool.addModel("m", { file: "metered.py" });
  const [a, b] = pool.status().workers.map((w) => w.id) as [string, string];
  for (const worker of [a, b]) {
    for (let i = 0; i < 5; i++) {
      await pool.execute("m", { counter: 100, gauge: i }, { worker });
    }
  }
  await pool.execute("m", { observe: [0.001, 0.3, 50] }, { worker: a });
  await pool.execute("m", { observe: [0.3] }, { worker: b });
  let series = await until(
    pool,
    (s) =>
      total(s, "hits_total") === 1000 &&
      s.filter((x) => x.name === "depth").length === 2 &&
      s.some((x) => x.name === "latency_seconds" && x.count === 4),
    "1000 hits from two workers",
  );
  const hits = series.find((s) => s.name === "hits_total")!;
  assert.equal(hits.help, "Hits by path.");
  assert.equal(hits.type, "counter");
  assert.deepEqual(
    series.filter((s) => s.name === "depth").map((s) => [s.worker, s.value])
      .sort(),
    [[a, 4], [b, 4]],
  );
  const lat = series.find((s) => s.name === "latency_seconds")!;
  assert.deepEqual(lat.buckets, [
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
  ]);
  assert.deepEqual(lat.counts, [1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1]);
  assert.ok(Math.abs(lat.sum! - 50.601) < 1e-9);
  // A worker killed: its total stays on the host, its gauge goes, and the
  // restarted worker's updates add to the total.
  const pid = pool.status().workers.find((w) => w.id === a)!.pid!;
  const back = readyAgain(pool, a);
  Deno.kill(pid, "SIGKILL");
  await back;
  series = pool.modelMetrics().series;
  assert.equal(total(series, "hits_total"), 1000);
  assert.deepEqual(
    series.filter((s) => s.name === "depth").map((s) => s.worker),
    [b],
  );
  await pool.execute("m", { counter: 7 }, { worker: a });
  series = await until(pool, (s) => total(s, "hits_total") === 1007, "1007");
  // Outside any model's call: no model.
  await pool.execute("m", { thread: 2 });
  series = await until(
    pool,
    (s) => s.some((x) => x.model === null && x.name === "orphan_total"),
    "orphan_total",
  );
  await pool.removeModel("m");
  assert.deepEqual(
    pool.modelMetrics().series.filter((s) => s.model === "m"),
    [],
  );
});

Deno.test("Pool.modelMetrics: bad updates raise in the model, the call itself works; bad options are refused", async () => {
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: TEST_MODELS,
    handleSignals: false,
    modelMetrics: { maxSeriesPerModel: 10 },
  });
  await pool.addModel("m", { file: "metered.py" });
  for (
    const bad of [
      { name: "a\nb" },
      { name: 'x"} 1\npyproxy_workers 7' },
      { name: "ok_total", value: -1 },
      { name: "ok_total", labels: { model: "x" } },
      { name: "g", kind: "gauge", value: "NaN" },
    ]
  ) {
    const out = await pool.execute("m", { bad }) as { raised: string };
    assert.notEqual(out.raised, null, JSON.stringify(bad));
  }
  await pool.execute("m", { series: 50 });
  await until(pool, (s) => s.length === 10, "10 series");
  await until(
    pool,
    () => pool.modelMetrics().dropped.m === 40,
    "40 dropped",
  );
  await assert.rejects(
    () =>
      Pool.start({
        workers: 1,
        modelsDir: TEST_MODELS,
        handleSignals: false,
        modelMetrics: { maxSeries: -1 },
      }),
    ConfigError,
  );
});

Deno.test("Pool.modelMetrics keeps the last updates of a worker stopped by a resize, a placed model moved off a worker, and pool.close()", async () => {
  const pool = await Pool.start(poolOptions(TEST_MODELS, { workers: 3 }));
  try {
    await pool.addModel("m", { file: "metered.py" });
    const ids = pool.status().workers.map((w) => w.id);
    // Each right before the stop, well within the 0.5 s between flushes:
    // the stopped worker's are lost unless the stop sends them.
    for (const worker of ids) {
      await pool.execute("m", { counter: 5 }, { worker });
    }
    await pool.resize(2);
    await until(pool, (s) => total(s, "hits_total") === 15, "15 hits");
    // Placed on one worker: the other unloads it, and forgot its updates.
    const [a, b] = pool.status().workers.map((w) => w.id) as [string, string];
    await pool.execute("m", { counter: 1 }, { worker: a });
    await pool.execute("m", { counter: 1 }, { worker: b });
    await pool.updateModel("m", { file: "metered.py", workers: 1 });
    await until(pool, (s) => total(s, "hits_total") === 17, "17 hits");
    await pool.execute("m", { counter: 3 });
  } finally {
    await pool.close();
  }
  assert.equal(total(pool.modelMetrics().series, "hits_total"), 20);
});

Deno.test("Pool.modelMetrics keeps the metrics of a model added again while its remove was under way (the remove forgets the old ones first)", async () => {
  await using pool = await Pool.start(
    poolOptions(TEST_MODELS, { workers: 1 }),
  );
  await pool.addModel("m", { file: "metered.py" });
  await pool.addModel("other", { file: "metered.py" });
  await pool.execute("m", { counter: 3 });
  // Called at once: the add waits for the remove (one name, in order).
  await Promise.all([
    pool.removeModel("m"),
    pool.addModel("m", { file: "metered.py" }),
  ]);
  await pool.execute("m", { counter: 5 });
  // One worker, one connection: other's update comes after m's.
  await pool.execute("other", { counter: 1 });
  const series = await until(
    pool,
    (s) => s.some((x) => x.model === "other" && x.name === "hits_total"),
    "other's hits",
  );
  assert.equal(
    total(series.filter((s) => s.model === "m"), "hits_total"),
    5,
  );
});
