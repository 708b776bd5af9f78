/**
 * What an SRE's Prometheus and trace collector read of a real `serve`: the
 * build and the bounds in force as series, the route of each response, the
 * series alerts name present at 0 before their first count.
 */
import assert from "node:assert/strict";
import { PYTHON_MANIFEST } from "../src/runtime/python_manifest.ts";
import { GatewayMetrics } from "../src/gateway/metrics.ts";
import { startGateway, withLogs } from "./_gateway_harness.ts";
import { attr, Collector } from "./_otlp_collector.ts";
import { type Family, parseExposition } from "./_exposition.ts";

/** The sample of `family` with exactly `labels`, or `undefined` when it is not there. */
function sample(
  families: Map<string, Family>,
  family: string,
  labels: Record<string, string>,
  name = family,
): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  return families.get(family)?.samples.find((s) =>
    s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want
  )?.value;
}

async function scrape(
  gateway: { fetch(path: string): Promise<Response> },
): Promise<Map<string, Family>> {
  const res = await gateway.fetch("/metrics");
  assert.equal(res.status, 200);
  return parseExposition(await res.text());
}

Deno.test("/metrics has pyproxy_build_info (pyproxy, runtime, Python versions) and the bounds in force as pyproxy_limit_* gauges", async () => {
  await using gateway = await startGateway({
    models: [{ name: "echo", file: "echo.py" }],
    limits: {
      maxQueue: 7,
      maxInFlightPerWorker: 3,
      bodyLimit: 12_345,
      requestTimeout: 4_000,
      evalReplayBudget: 1_000_000,
    },
  });
  const families = await scrape(gateway);
  const build = families.get("pyproxy_build_info");
  assert.equal(build?.type, "gauge");
  assert.equal(build?.samples.length, 1);
  const labels = build!.samples[0]!.labels;
  assert.equal(build!.samples[0]!.value, 1);
  assert.equal(labels.version, PYTHON_MANIFEST.version);
  assert.equal(labels.runtime, "deno");
  assert.equal(labels.runtime_version, Deno.version.deno);
  // The worker's, from its ready line: a Python of 3.9 or later.
  assert.match(labels.python_version!, /^3\.\d+\.\d+$/);
  for (
    const [name, want] of [
      ["pyproxy_limit_max_queue", 7],
      ["pyproxy_limit_max_in_flight_per_worker", 3],
      ["pyproxy_limit_body_bytes", 12_345],
      ["pyproxy_limit_request_timeout_seconds", 4],
      ["pyproxy_limit_eval_replay_bytes", 1_000_000],
    ] as const
  ) {
    assert.equal(families.get(name)?.type, "gauge", name);
    assert.equal(sample(families, name, {}), want, name);
  }
});

Deno.test("pyproxy_http_responses_total has a route label: the route's template, never the path as sent", async () => {
  await using gateway = await startGateway({
    models: [{ name: "echo", file: "echo.py" }],
  });
  const calls: Array<[string, RequestInit]> = [
    // The direct path of a plain execute, and the app's (an Origin header).
    ["/v1/models/echo/execute", { method: "POST", body: '{"a":1}' }],
    [
      "/v1/models/echo/execute",
      {
        method: "POST",
        body: "{}",
        headers: { origin: "https://elsewhere.example" },
      },
    ],
    ["/v1/models/nosuch-1/execute", { method: "POST", body: "{}" }],
    ["/v1/models/echo", {}],
    ["/v1/models/echo:predict", {
      method: "POST",
      body: '{"instances":[1]}',
    }],
    ["/no/such/path/42", {}],
  ];
  for (const [path, init] of calls) {
    await (await gateway.fetch(path, init)).body?.cancel();
  }
  const families = await scrape(gateway);
  const samples = families.get("pyproxy_http_responses_total")!.samples;
  const got = new Set(
    samples.map((s) => `${s.labels.route} ${s.labels.status}`),
  );
  for (
    const want of [
      "/v1/models/{name}/execute 200",
      "/v1/models/{name}/execute 403",
      "/v1/models/{name}/execute 404",
      "/v1/models/{name} 200",
      "/no/such/path/42 404",
    ]
  ) {
    if (want.startsWith("/no/")) {
      // A path of no route: one value for all such paths.
      assert.ok(got.has("_unmatched 404"), [...got].join("\n"));
    } else assert.ok(got.has(want), `${want} in\n${[...got].join("\n")}`);
  }
  assert.ok(
    [...got].some((g) => g.startsWith("/v1/models/{name}:{verb} ")),
    [...got].join("\n"),
  );
  for (const s of samples) {
    assert.ok(
      !/echo|nosuch|42/.test(s.labels.route!),
      `a path as sent: ${s.labels.route}`,
    );
  }
});

Deno.test("pyproxy_requests_total lists each model's success, error and 429 statuses at 0 before their first count, so rate() sees a model's first error", async () => {
  await using gateway = await startGateway({
    models: [{ name: "echo", file: "echo.py" }],
  });
  const before = await scrape(gateway);
  for (const status of ["200", "422", "429", "502", "503", "504", "507"]) {
    assert.equal(
      sample(before, "pyproxy_requests_total", { model: "echo", status }),
      0,
      status,
    );
  }
  await (await gateway.fetch("/v1/models/echo/execute", {
    method: "POST",
    body: '{"a":1}',
  })).body?.cancel();
  await (await gateway.fetch("/v1/models/made-up/execute", {
    method: "POST",
    body: "{}",
  })).body?.cancel();
  const after = await scrape(gateway);
  assert.equal(
    sample(after, "pyproxy_requests_total", { model: "echo", status: "200" }),
    1,
  );
  assert.equal(
    sample(after, "pyproxy_requests_total", { model: "echo", status: "502" }),
    0,
  );
  // A name that is no model's adds no series of its own.
  assert.ok(
    !after.get("pyproxy_requests_total")!.samples.some((s) =>
      s.labels.model === "made-up"
    ),
  );
});

Deno.test("GatewayMetrics lists the statuses at 0 for at most maxModels models", () => {
  const metrics = new GatewayMetrics({ maxModels: 2 });
  const families = parseExposition(metrics.render({
    workers: [],
    modelReady: new Map([["a", true], ["b@v2", true], ["c", false]]),
  }));
  const models = new Set(
    families.get("pyproxy_requests_total")!.samples.map((s) =>
      `${s.labels.model}${s.labels.version ? `@${s.labels.version}` : ""}`
    ),
  );
  assert.deepEqual([...models], ["a", "b@v2"]);
  assert.equal(
    sample(families, "pyproxy_requests_total", {
      model: "b",
      version: "v2",
      status: "422",
    }),
    0,
  );
});

const LOGS_IN_CALL = `import logging
log = logging.getLogger("scorer")
class Scorer:
    def execute(self, msg):
        log.warning("scoring")
        return 1
`;

Deno.test("A traced call's span has server.address, server.port, client.address and user_agent.original, and its model's log record names its trace and span", async () => {
  await withLogs(async (records) => {
    await using collector = new Collector();
    await using gw = await startGateway({
      tracing: { endpoint: collector.url, batchIntervalMs: 20 },
      models: [{ name: "scorer", file: "scorer.py" }],
    }, { "scorer.py": LOGS_IN_CALL });
    const res = await gw.fetch("/v1/models/scorer/execute", {
      method: "POST",
      headers: { "x-request-id": "r-peer", "user-agent": "sre-probe/1.0" },
      body: "{}",
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
    const span = await collector.spanOf("r-peer");
    const port = Number(new URL(gw.url).port);
    assert.equal(attr(span, "server.address"), "127.0.0.1");
    assert.equal(attr(span, "server.port"), String(port));
    assert.equal(attr(span, "client.address"), "127.0.0.1");
    assert.equal(attr(span, "user_agent.original"), "sre-probe/1.0");
    // The model's record joins the span.
    const logged = records.find((r) =>
      r.category.join(".") === "pyproxy.python.scorer" &&
      r.properties.requestId === "r-peer"
    );
    assert.equal(logged?.properties.traceId, span.traceId);
    assert.equal(logged?.properties.spanId, span.spanId);
  }, "info");
});
