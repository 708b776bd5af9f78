/**
 * `GET /metrics` read as a Prometheus server reads it: a strict parser of the
 * text exposition format (0.0.4), then each counter against the traffic sent.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { GatewayMetrics } from "../src/gateway/metrics.ts";
import { ModelMetricStore } from "../src/model_metrics.ts";
import { createGateway } from "../src/gateway/app.ts";
import { Pool } from "../mod.ts";
import { startGateway, until } from "./_gateway_harness.ts";
import { parseExposition, value } from "./_exposition.ts";

Deno.test("GatewayMetrics renders valid exposition text, label values escaped", () => {
  const metrics = new GatewayMetrics();
  metrics.start('a"b\\c\nd')(200);
  metrics.start("echo")(200);
  metrics.start("echo")(503);
  const text = metrics.render({
    workers: [
      { id: "w\\1", state: "failed", restarts: 3 },
      { id: "w2", state: "draining", restarts: 0, parked: 5 },
    ],
    subscribers: 0,
  });
  const families = parseExposition(text);
  assert.equal(
    value(families, "pyproxy_requests_total", {
      model: 'a"b\\c\nd',
      status: "200",
    }),
    1,
  );
  assert.equal(
    value(families, "pyproxy_worker_restarts_total", { worker: "w\\1" }),
    3,
  );
  // Streams whose readers stalled, per worker (none known: 0).
  assert.equal(
    value(families, "pyproxy_parked_streams", { worker: "w2" }),
    5,
  );
  assert.equal(
    value(families, "pyproxy_parked_streams", { worker: "w\\1" }),
    0,
  );
  // A state without a worker is 0, not absent: `ready < 1` can fire.
  assert.match(text, /^pyproxy_workers\{state="ready"\} 0$/m);
  assert.match(text, /^pyproxy_workers\{state="failed"\} 1$/m);
  // Each model's readiness, a version's with its version label.
  const ready = parseExposition(metrics.render({
    workers: [],
    modelReady: new Map([["echo", true], ['a"b@v2', false]]),
  }));
  assert.equal(value(ready, "pyproxy_models_ready", { model: "echo" }), 1);
  assert.equal(
    value(ready, "pyproxy_models_ready", { model: 'a"b', version: "v2" }),
    0,
  );
});

Deno.test("GatewayMetrics' default latency buckets reach 2 minutes, so a slow model's p99 is not capped at 10 s", () => {
  const metrics = new GatewayMetrics();
  metrics.start("slow")(200);
  const families = parseExposition(metrics.render({ workers: [] }));
  const bounds = families.get("pyproxy_request_duration_seconds")!.samples
    .filter((s) => s.name.endsWith("_bucket"))
    .map((s) => Number(s.labels.le!.replace("+Inf", "Infinity")));
  // histogram_quantile answers at most the highest finite bound: it must be
  // past limits.requestTimeout's default (30 s) and a 2-minute model's calls.
  assert.deepEqual(bounds.slice(-4), [30, 60, 120, Infinity]);
  assert.equal(bounds[0], 0.001);
  // A call of ~0 s is in every bucket (cumulative), the first included.
  assert.equal(
    value(
      families,
      "pyproxy_request_duration_seconds",
      { model: "slow", le: "0.001" },
      "pyproxy_request_duration_seconds_bucket",
    ),
    1,
  );
  assert.equal(
    value(
      families,
      "pyproxy_request_duration_seconds",
      { model: "slow", le: "120" },
      "pyproxy_request_duration_seconds_bucket",
    ),
    1,
  );
});

Deno.test("GatewayMetrics lists the exit causes alerts name at 0 before their first count, so increase() sees the first OOM kill", () => {
  const metrics = new GatewayMetrics();
  const render = (exits: Record<string, number>) =>
    parseExposition(metrics.render({
      workers: [{ id: "w1", state: "ready", restarts: 0, exits }],
      exits,
    }));
  // Prometheus takes a counter's first sample as its start: a series born
  // at 1 gives increase() 0, and `increase(...{cause="SIGKILL"}[5m]) > 0`
  // would miss the first OOM kill.
  const before = render({});
  for (const cause of ["SIGKILL", "SIGSEGV", "pool"]) {
    for (
      const [name, labels] of [
        ["pyproxy_worker_exits_total", { worker: "w1", cause }],
        ["pyproxy_pool_worker_exits_total", { cause }],
      ] as const
    ) {
      assert.ok(
        before.get(name)?.samples.some((s) =>
          JSON.stringify(s.labels) === JSON.stringify(labels) && s.value === 0
        ),
        `${name}{cause="${cause}"} 0 before any exit`,
      );
    }
  }
  // Other causes are born at their first count; listed ones appear once.
  const after = render({ SIGKILL: 1, exit_3: 2 });
  assert.deepEqual(
    after.get("pyproxy_pool_worker_exits_total")!.samples.map((s) =>
      `${s.labels.cause}=${s.value}`
    ),
    ["pool=0", "SIGKILL=1", "SIGSEGV=0", "exit_3=2"],
  );
  assert.equal(after.get("pyproxy_worker_exits_total")!.samples.length, 4);
});

Deno.test("GatewayMetrics renders the plugins' samples grouped by name, leaving out invalid ones and the gateway's own names", () => {
  const metrics = new GatewayMetrics();
  const text = metrics.render({
    workers: [{ id: "w1", state: "ready", restarts: 0 }],
    plugins: [
      {
        name: "pyproxy_autoscale_failed_resizes_total",
        type: "counter",
        help: "Failed resizes, by direction.",
        value: 2,
        labels: { direction: "up" },
      },
      {
        name: "pyproxy_autoscale_max_workers",
        type: "gauge",
        help: "Most workers.",
        value: 4,
      },
      // Not contiguous in the input: still one family in the output.
      {
        name: "pyproxy_autoscale_failed_resizes_total",
        type: "counter",
        help: "Failed resizes, by direction.",
        value: 0,
        labels: { direction: "down" },
      },
      {
        name: "pyproxy_autoscale_backoff_seconds",
        type: "gauge",
        help: "Back-off.",
        value: Infinity,
      },
      // Left out: the gateway's own names, invalid names or labels.
      { name: "pyproxy_workers", type: "gauge", help: "Clash.", value: 9 },
      {
        name: "pyproxy_request_duration_seconds_bucket",
        type: "gauge",
        help: "Clash.",
        value: 9,
      },
      { name: "bad-name", type: "gauge", help: "Invalid.", value: 1 },
      {
        name: "pyproxy_x",
        type: "gauge",
        help: "Invalid.",
        value: 1,
        labels: { "a-b": "1" },
      },
    ],
  });
  const families = parseExposition(text);
  assert.equal(
    families.get("pyproxy_autoscale_failed_resizes_total")?.type,
    "counter",
  );
  assert.equal(
    value(families, "pyproxy_autoscale_failed_resizes_total", {
      direction: "up",
    }),
    2,
  );
  assert.equal(
    families.get("pyproxy_autoscale_failed_resizes_total")?.samples.length,
    2,
  );
  assert.equal(value(families, "pyproxy_autoscale_max_workers", {}), 4);
  assert.match(text, /^pyproxy_autoscale_backoff_seconds \+Inf$/m);
  assert.ok(!text.includes("bad-name"));
  assert.ok(!text.includes("pyproxy_x"));
  assert.ok(!text.includes(" 9\n"));
});

Deno.test("GET /metrics counts exactly the traffic sent, through a worker's crash", async () => {
  await using gw = await startGateway({
    workers: 2,
    limits: { bodyLimit: 1000 },
  });
  const before = parseExposition(await (await gw.fetch("/metrics")).text());
  const post = (path: string, body: string) =>
    gw.fetch(path, { method: "POST", body }).then(async (res) => {
      await res.body?.cancel();
      return res.status;
    });
  const sent: Array<[string, number, Promise<number>]> = [];
  const send = (model: string, want: number, body: string, query = "") => {
    sent.push([model, want, post(`/v1/models/${model}/execute${query}`, body)]);
  };
  for (let i = 0; i < 12; i++) send("echo", 200, `{"i":${i}}`);
  for (let i = 0; i < 3; i++) send("echo", 204, "");
  for (let i = 0; i < 4; i++) send("boom", 422, '{"x":1}');
  for (let i = 0; i < 2; i++) send("echo", 413, `{"a":"${"x".repeat(2000)}"}`);
  for (let i = 0; i < 2; i++) send("echo", 400, "{bad");
  for (let i = 0; i < 5; i++) send("nope", 404, "{}");
  send("slow", 504, '{"seconds":0.5}', "?timeout=50");
  for (const [model, want, status] of sent) {
    assert.equal(await status, want, model);
  }
  // A worker killed under a call: the call fails, the slot restarts. First
  // the timed-out call's thread ends (it keeps its slot until then).
  const inFlight = async () =>
    (await (await gw.fetch("/v1/status")).json()).workers.find((
      w: { inFlight: number },
    ) => w.inFlight > 0);
  await until(
    async () => (await inFlight()) === undefined,
    "no call in flight",
  );
  const crashed = post("/v1/models/slow/execute", '{"seconds":5}');
  await until(
    async () => (await inFlight()) !== undefined,
    "the call in flight",
  );
  const busy = await inFlight();
  Deno.kill(busy.pid, "SIGKILL");
  assert.equal(await crashed, 502);
  await until(async () => {
    const s = await (await gw.fetch("/v1/status")).json();
    return s.workers.every((w: { state: string }) => w.state === "ready") &&
      s.restarts === 1;
  }, "the slot restarted");

  const after = parseExposition(await (await gw.fetch("/metrics")).text());
  const counts = new Map<string, number>();
  for (const [model, want] of sent) {
    const key = `${model === "nope" ? "_unknown" : model} ${want}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  counts.set("slow 502", 1);
  for (const [key, n] of counts) {
    const [model, status] = key.split(" ") as [string, string];
    const labels = { model, status };
    assert.equal(
      value(after, "pyproxy_requests_total", labels) -
        value(before, "pyproxy_requests_total", labels),
      n,
      key,
    );
  }
  // Every counter series of before is still there and has not gone down,
  // but a worker's CPU time: its process's, from 0 again after the restart
  // (as process_cpu_seconds_total of a restarted process; rate() takes it as
  // a reset). It is back for the restarted worker.
  assert.ok(
    after.get("pyproxy_worker_cpu_seconds_total")?.samples.some((s) =>
      s.labels.worker === busy.id
    ),
  );
  for (const [name, family] of before) {
    if (family.type !== "counter" && family.type !== "histogram") continue;
    if (name === "pyproxy_worker_cpu_seconds_total") continue;
    for (const s of family.samples) {
      if (s.name.endsWith("_sum")) continue;
      assert.ok(value(after, name, s.labels, s.name) >= s.value, s.name);
    }
  }
  assert.equal(
    value(
      after,
      "pyproxy_request_duration_seconds",
      { model: "echo" },
      "pyproxy_request_duration_seconds_count",
    ),
    19,
  );
  assert.equal(
    value(after, "pyproxy_worker_restarts_total", { worker: busy.id }),
    1,
  );
  assert.equal(value(after, "pyproxy_workers", { state: "ready" }), 2);
  assert.equal(value(after, "pyproxy_workers", { state: "restarting" }), 0);
  // The spill-over's counters (a default plugin): no message spilled here.
  for (
    const name of [
      "pyproxy_spillover_write_failures_total",
      "pyproxy_spillover_inline_fallbacks_total",
      "pyproxy_spillover_read_failures_total",
    ]
  ) {
    assert.equal(after.get(name)?.type, "counter", name);
    assert.equal(value(after, name, {}), 0, name);
  }
  assert.equal(
    value(after, "pyproxy_spillover_bytes_total", { direction: "out" }),
    0,
  );
  for (const s of after.get("pyproxy_in_flight_requests")!.samples) {
    assert.equal(s.value, 0, s.labels.model);
  }
});

Deno.test("GatewayMetrics.forget drops a removed model's series, so names that come and go never reach maxModels", () => {
  const metrics = new GatewayMetrics({ maxModels: 3 });
  for (let i = 0; i < 100; i++) {
    metrics.start(`m${i}`)(200);
    metrics.forget(`m${i}`);
  }
  assert.equal(metrics.size, 0);
  metrics.start("kept")(200);
  const text = metrics.render({ workers: [] });
  assert.ok(
    text.includes('pyproxy_requests_total{model="kept",status="200"} 1'),
  );
  assert.ok(!text.includes('model="_other"'));
  assert.ok(!text.includes('model="m0"'));
});

Deno.test("GatewayMetrics.whenIdle resolves once every model request has ended, forgotten models' included", async () => {
  const metrics = new GatewayMetrics();
  await metrics.whenIdle(); // none in flight: at once
  const a = metrics.start("a");
  const b = metrics.start("b");
  let idle = false;
  const waiting = metrics.whenIdle().then(() => (idle = true));
  a(200);
  await Promise.resolve();
  assert.equal(idle, false);
  // A removed model's calls still in flight are waited for too.
  metrics.forget("b");
  await Promise.resolve();
  assert.equal(idle, false);
  b(503);
  b(503); // a second end counts once
  await waiting;
  assert.equal(idle, true);
  const c = metrics.start("c");
  const again = metrics.whenIdle();
  c(200);
  await again;
});

Deno.test("DELETE /v1/models/{name} takes the model's metric series with it", async () => {
  await using gw = await startGateway({ workers: 1, allowManage: true });
  const put = { method: "PUT", body: JSON.stringify({ file: "echo.py" }) };
  for (let i = 0; i < 5; i++) {
    let res = await gw.fetch(`/v1/models/gone${i}`, put);
    assert.equal(res.status, 201);
    await res.body?.cancel();
    res = await gw.fetch(`/v1/models/gone${i}/execute`, {
      method: "POST",
      body: JSON.stringify({ i }),
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
    res = await gw.fetch(`/v1/models/gone${i}`, { method: "DELETE" });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }
  const families = parseExposition(await (await gw.fetch("/metrics")).text());
  const models = new Set<string>();
  for (const family of families.values()) {
    for (const s of family.samples) {
      if (s.labels.model !== undefined) models.add(s.labels.model);
    }
  }
  assert.deepEqual([...models].filter((m) => m.startsWith("gone")), []);
});

Deno.test("A plugin whose status or metrics are not JSON, or throw when written, breaks neither /v1/status nor /metrics", async () => {
  const cycle: Record<string, unknown> = { a: 1 };
  cycle.self = cycle;
  const thrower = {
    toString(): string {
      throw new Error("no string");
    },
  };
  const statuses: Record<string, () => unknown> = {
    cycle: () => cycle,
    throwing_json: () => ({
      x: {
        toJSON() {
          throw new Error("no JSON");
        },
      },
    }),
    not_an_object: () => "ok",
    big: () => ({ n: 12345678901234567890n }),
  };
  const plugins = Object.entries(statuses).map(([name, status]) => ({
    name,
    status: status as () => Record<string, unknown>,
    metrics: () => [
      {
        name: `pyproxy_${name}_bad`,
        type: "gauge" as const,
        help: "Label value cannot be a string.",
        value: 1,
        labels: { a: thrower as unknown as string },
      },
      {
        name: `pyproxy_${name}_good`,
        type: "gauge" as const,
        help: "Fine.",
        value: 2,
      },
    ],
  }));
  const pool = await Pool.start({ workers: 1, plugins });
  try {
    const seen = pool.pluginStatus();
    assert.match(String(seen.cycle?.error), /^Cannot read status: .*circular/);
    assert.match(String(seen.throwing_json?.error), /no JSON/);
    assert.match(
      String(seen.not_an_object?.error),
      /expected an object, got ok/,
    );
    assert.equal(seen.big?.n, 12345678901234567890n);
    const app = createGateway(pool, { port: () => 8000 });
    const get = (path: string) =>
      app.fetch(
        new Request(`http://127.0.0.1:8000${path}`, {
          headers: { host: "127.0.0.1:8000" },
        }),
      );
    const status = await get("/v1/status");
    const text = await status.text();
    assert.equal(status.status, 200, text);
    assert.match(text, /"big":\{"n":12345678901234567890\}/);
    const metrics = await get("/metrics");
    const exposition = await metrics.text();
    assert.equal(metrics.status, 200, exposition);
    const families = parseExposition(exposition);
    assert.equal(value(families, "pyproxy_cycle_good", {}), 2);
    assert.ok(!exposition.includes("pyproxy_cycle_bad"));
  } finally {
    await pool.close();
  }
});

Deno.test("GET /metrics exposes the model metrics as pyproxy_model_<name>, label values escaped; ?format=json too", async () => {
  const metered = await Deno.readTextFile(
    new URL("../python/tests/models/metered.py", import.meta.url),
  );
  await using gw = await startGateway({ workers: 2, allowManage: true }, {
    "metered.py": metered,
  });
  let res = await gw.fetch("/v1/models/m", {
    method: "PUT",
    body: JSON.stringify({ file: "metered.py" }),
  });
  assert.equal(res.status, 201);
  await res.body?.cancel();
  // Nothing recorded yet: no model series, no dropped counter.
  assert.doesNotMatch(
    await (await gw.fetch("/metrics")).text(),
    /pyproxy_model_|pyproxy_dropped_model/,
  );
  const path = 'a"b\\c\nd';
  const post = async (body: unknown) => {
    const res = await gw.fetch("/v1/models/m/execute", {
      method: "POST",
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 200);
    return await res.json();
  };
  for (let i = 0; i < 10; i++) await post({ counter: 10, path, gauge: 2 });
  await post({ observe: [0.02, 3] });
  assert.equal(
    (await post({ bad: { name: "x\n# TYPE y" } })).raised,
    "ValueError",
  );
  const families = await until(async () => {
    const text = await (await gw.fetch("/metrics")).text();
    const families = parseExposition(text);
    return value(families, "pyproxy_model_hits_total", { model: "m", path }) ===
          100 && families.has("pyproxy_model_latency_seconds")
      ? families
      : undefined;
  }, "the model's series");
  const hits = families.get("pyproxy_model_hits_total")!;
  assert.equal(hits.type, "counter");
  assert.equal(hits.help, "Hits by path.");
  const depth = families.get("pyproxy_model_depth")!;
  assert.equal(depth.type, "gauge");
  assert.ok(depth.samples.every((s) => s.labels.worker !== undefined));
  const lat = families.get("pyproxy_model_latency_seconds")!;
  assert.equal(lat.type, "histogram");
  assert.equal(
    value(families, "pyproxy_model_latency_seconds", {
      model: "m",
      le: "0.025",
    }, "pyproxy_model_latency_seconds_bucket"),
    1,
  );
  assert.equal(
    value(
      families,
      "pyproxy_model_latency_seconds",
      { model: "m" },
      "pyproxy_model_latency_seconds_count",
    ),
    2,
  );
  const json = await (await gw.fetch("/metrics?format=json")).json();
  const series = json.modelMetrics.series as Array<Record<string, unknown>>;
  assert.ok(
    series.some((s) =>
      s.name === "hits_total" && s.value === 100 &&
      (s.labels as Record<string, string>).path === path
    ),
  );
  // Removed with its model.
  res = await gw.fetch("/v1/models/m", { method: "DELETE" });
  await res.body?.cancel();
  assert.doesNotMatch(
    await (await gw.fetch("/metrics")).text(),
    /pyproxy_model_/,
  );
});

Deno.test("GatewayMetrics renders model metrics: histograms cumulative, colliding names once, plugins kept off their names", () => {
  const metrics = new GatewayMetrics();
  const text = metrics.render({
    workers: [],
    modelMetrics: {
      series: [
        { model: "a", name: "x_count", type: "gauge", labels: {}, value: 1 },
        {
          model: "b",
          name: "x",
          type: "histogram",
          labels: { k: "v" },
          help: "two\nlines \\ here",
          buckets: [1, 2],
          counts: [1, 2, 3],
          sum: 9,
          count: 6,
        },
        {
          model: null,
          name: "y",
          type: "histogram",
          labels: {},
          buckets: [1, 2],
          counts: [1, 2, 3],
          sum: 9,
          count: 6,
        },
      ],
      dropped: { a: 3 },
    },
    plugins: [{
      name: "pyproxy_model_y_sum",
      type: "gauge",
      value: 1,
      help: "h",
    }],
  });
  const families = parseExposition(text);
  assert.ok(!families.has("pyproxy_model_x")); // its _count series is a gauge of a
  assert.equal(
    value(
      families,
      "pyproxy_model_y",
      { model: "", le: "2" },
      "pyproxy_model_y_bucket",
    ),
    3,
  );
  assert.equal(
    value(families, "pyproxy_model_y", { model: "" }, "pyproxy_model_y_sum"),
    9,
  );
  assert.equal(
    value(families, "pyproxy_dropped_model_series_total", { model: "a" }),
    3,
  );
  assert.equal(text.match(/pyproxy_model_y_sum/g)?.length, 1);
});

Deno.test("GatewayMetrics renders any model metrics a strict scraper reads back, through UTF-8", () => {
  // Any text Python may send as a label value or help: every UTF-16 unit,
  // lone surrogates included (json.dumps writes them as \\ud800 escapes).
  const text = (maxLength: number) =>
    fc.string({
      unit: fc.oneof(
        fc.constantFrom("\\", '"', "\n", "\r", "\t", "}", ",", "=", " ", "#"),
        fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
        fc.integer({ min: 0x10000, max: 0x10ffff }).map((c) =>
          String.fromCodePoint(c)
        ),
      ),
      maxLength,
    });
  const ident = fc.stringMatching(/^[a-zA-Z_][a-zA-Z0-9_]{0,12}$/).filter((
    s,
  ) => !s.startsWith("__"));
  const labelName = ident.filter((k) =>
    !["model", "worker", "le", "quantile"].includes(k)
  );
  const entry = fc.record({
    // A model name is well-formed (the gateway's are ASCII; the library's
    // could hold a lone surrogate: not covered).
    model: fc.option(text(20).filter((m) => !/\p{Cs}/u.test(m)), {
      nil: null,
    }),
    name: ident,
    kind: fc.constantFrom("counter", "gauge", "histogram"),
    labels: fc.dictionary(labelName, text(30), { maxKeys: 3 }),
    help: fc.option(text(40), { nil: undefined }),
    value: fc.double({ min: 0, max: 1e6, noNaN: true }),
  });
  fc.assert(
    fc.property(fc.array(entry, { maxLength: 20 }), (entries) => {
      const store = new ModelMetricStore();
      for (const [i, e] of entries.entries()) {
        // Counters end in _total (the parser's rule, and the docs' advice).
        const name = e.kind === "counter" ? `${e.name}_total` : e.name;
        store.ingest({ worker: `w${i % 2}` }, {
          series: [{
            model: e.model,
            name,
            type: e.kind,
            labels: e.labels,
            ...(e.help === undefined ? {} : { help: e.help }),
            ...(e.kind === "histogram"
              ? {
                buckets: [0.5, 1e21],
                counts: [1, 0, 1],
                sum: e.value,
                count: 2,
              }
              : { value: e.value }),
          }],
        });
      }
      const rendered = new GatewayMetrics().render({
        workers: [],
        modelMetrics: store.snapshot(),
      });
      // What a scraper receives: the body's UTF-8.
      const wire = new TextDecoder().decode(new TextEncoder().encode(rendered));
      const families = parseExposition(wire);
      for (const s of store.snapshot().series) {
        const family = families.get(`pyproxy_model_${s.name}`);
        if (family === undefined) continue; // a colliding name, shown once
        const want = { model: s.model ?? "", ...s.labels };
        if (s.worker !== undefined) Object.assign(want, { worker: s.worker });
        const name = s.type === "histogram"
          ? `pyproxy_model_${s.name}_sum`
          : `pyproxy_model_${s.name}`;
        assert.equal(
          value(families, `pyproxy_model_${s.name}`, want, name),
          s.type === "histogram" ? s.sum : s.value,
          JSON.stringify(s),
        );
      }
    }),
    { seed: 13, numRuns: 300 },
  );
});

Deno.test("limits.modelMetricSeriesPerModel bounds a model's series; the rest are counted in pyproxy_dropped_model_series_total", async () => {
  const metered = await Deno.readTextFile(
    new URL("../python/tests/models/metered.py", import.meta.url),
  );
  await using gw = await startGateway({
    allowManage: true,
    limits: { shutdownGrace: 2000, modelMetricSeriesPerModel: 3 },
  }, { "metered.py": metered });
  let res = await gw.fetch("/v1/models/m", {
    method: "PUT",
    body: JSON.stringify({ file: "metered.py" }),
  });
  assert.equal(res.status, 201);
  await res.body?.cancel();
  res = await gw.fetch("/v1/models/m/execute", {
    method: "POST",
    body: JSON.stringify({ series: 10 }),
  });
  assert.equal(res.status, 200);
  await res.body?.cancel();
  const families = await until(async () => {
    const families = parseExposition(
      await (await gw.fetch("/metrics")).text(),
    );
    return value(families, "pyproxy_dropped_model_series_total", {
        model: "m",
      }) === 7
      ? families
      : undefined;
  }, "7 dropped updates");
  assert.equal(families.get("pyproxy_model_wide_total")?.samples.length, 3);
});

Deno.test("pyproxy_pool_worker_exits_total keeps the counts of a slot a resize removed (a counter never goes down), where its pyproxy_worker_exits_total series goes with it", async () => {
  await using gw = await startGateway({ workers: 2 });
  const scrape = async () => {
    const res = await gw.fetch("/metrics");
    assert.equal(res.status, 200);
    return parseExposition(await res.text());
  };
  const total = async (cause: string) =>
    value(await scrape(), "pyproxy_pool_worker_exits_total", { cause });
  // Killed from outside, both slots: whichever the resize removes had one.
  for (const w of gw.pool.status().workers) Deno.kill(w.pid!, "SIGKILL");
  await until(
    () =>
      Promise.resolve(
        gw.pool.status().workers.every((w) =>
          w.state === "ready" && w.exits.SIGKILL === 1
        ),
      ),
    "both slots back after their SIGKILL",
  );
  assert.equal(await total("SIGKILL"), 2);
  await gw.pool.resize(1);
  const status = gw.pool.status();
  assert.equal(status.workers.length, 1);
  // The slot left, its series with it; the pool's total keeps its counts,
  // its stop included.
  const series = (await scrape()).get("pyproxy_worker_exits_total")?.samples ??
    [];
  assert.deepEqual(
    [...new Set(series.map((s) => s.labels.worker))],
    [status.workers[0]!.id],
  );
  assert.equal(await total("SIGKILL"), 2);
  assert.equal(await total("stopped"), 1);
  assert.deepEqual(status.exits, { SIGKILL: 2, stopped: 1 });
  const res = await gw.fetch("/v1/status");
  assert.deepEqual((await res.json()).exits, { SIGKILL: 2, stopped: 1 });
});

Deno.test("pyproxy_worker_exits_total counts a worker's ended processes by cause: SIGKILL from outside (the OOM killer's), the pool's own kill, an exit by itself", async () => {
  await using gw = await startGateway({}, {
    "quitter.py": `import os
class Quitter:
    def execute(self, msg):
        os._exit(3)
`,
  });
  const scrape = async () => {
    const res = await gw.fetch("/metrics");
    assert.equal(res.status, 200);
    return parseExposition(await res.text());
  };
  const exits = async (cause: string) =>
    value(await scrape(), "pyproxy_worker_exits_total", {
      worker: "w1",
      cause,
    });
  const ready = async (restarts: number) => {
    await until(
      () =>
        Promise.resolve(
          gw.pool.status().workers.some((w) =>
            w.state === "ready" && w.restarts >= restarts && w.pid !== null
          ),
        ),
      `the worker ready after ${restarts} restarts`,
    );
    return gw.pool.status().workers[0]!.pid!;
  };
  // Nothing ended yet: the causes alerts name at 0, no other.
  assert.deepEqual(
    (await scrape()).get("pyproxy_worker_exits_total")?.samples.map((s) =>
      `${s.labels.cause}=${s.value}`
    ),
    ["pool=0", "SIGKILL=0", "SIGSEGV=0"],
  );
  // Killed from outside, as the kernel's OOM killer does.
  Deno.kill(await ready(0), "SIGKILL");
  await until(
    async () => (await exits("SIGKILL")) === 1,
    "an exit of cause SIGKILL",
  );
  // Killed by the pool (a hang, a missed heartbeat... or on request).
  await ready(1);
  gw.pool.killWorker("w1", "test");
  await until(async () => (await exits("pool")) === 1, "an exit of cause pool");
  // Exited by itself.
  await ready(2);
  const res = await gw.fetch("/v1/models/quitter/execute", {
    method: "POST",
    body: "{}",
  });
  assert.equal(res.status, 502);
  await res.body?.cancel();
  await until(
    async () => (await exits("exit_3")) === 1,
    "an exit of cause exit_3",
  );
  assert.equal(await exits("SIGKILL"), 1);
  assert.deepEqual(gw.pool.status().workers[0]!.exits, {
    SIGKILL: 1,
    pool: 1,
    exit_3: 1,
  });
});

Deno.test("a stream's first item after its model was removed brings back no series of it", () => {
  // A model removed (forgotten) while a stream of it waited for its first
  // item: the item, still sent, re-created the model's series (every family,
  // for ever, as a name past `maxModels` would), where the request's own end
  // is counted under the forgotten stats it started with (chaos44).
  const loaded = new Set(["chat"]);
  const metrics = new GatewayMetrics({ isModel: (name) => loaded.has(name) });
  const done = metrics.start("chat");
  loaded.delete("chat");
  metrics.forget("chat");
  const ended = metrics.firstItem("chat", 0.2);
  ended(5);
  done(200, true);
  const text = metrics.render({ workers: [] });
  assert.ok(!text.includes('model="chat"'), text);
  parseExposition(text);
  // A model loaded now still counts, and one that was never forgotten too.
  loaded.add("chat");
  metrics.start("chat")(200, true);
  metrics.firstItem("chat", 0.2)(3);
  const again = metrics.render({ workers: [] });
  assert.ok(
    again.includes('pyproxy_stream_items_total{model="chat"} 3'),
    again,
  );
});
