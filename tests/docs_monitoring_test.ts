/**
 * docs/gateway.md's alert rules and dashboard ("Monitoring with Prometheus")
 * use only the metric names and labels a real `serve` exposes: an SRE pastes
 * them into Prometheus and Grafana, where a renamed metric or label makes an
 * alert that never fires, silently. The rules' YAML is read as Prometheus
 * reads a rule file (and checked by `promtool` when it is installed); every
 * metric its PromQL names is looked up in a strictly parsed `/metrics` of a
 * `serve` that ran calls, a model error, a stream and a worker crash.
 */
import assert from "node:assert/strict";
import { parse } from "yaml";
import { tempDir } from "./_harness.ts";
import { parseExposition } from "./_exposition.ts";
import { startServeCli } from "./_serve_cli.ts";

const ROOT = new URL("..", import.meta.url).pathname;

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Panel {
  title: string;
  queries: string[];
}

function section(): { rulesText: string; rules: Rule[]; panels: Panel[] } {
  const doc = Deno.readTextFileSync(`${ROOT}docs/gateway.md`);
  const start = doc.indexOf("\n## Monitoring with Prometheus\n");
  assert.ok(start >= 0, "no 'Monitoring with Prometheus' section");
  const end = doc.indexOf("\n## ", start + 1);
  const blocks = [
    ...doc.slice(start, end).matchAll(/```yaml\n([\s\S]*?)```/g),
  ].map((m) => m[1]!);
  assert.equal(blocks.length, 2, "the rules, then the panels");
  const rules = (parse(blocks[0]!) as { groups: { rules: Rule[] }[] })
    .groups.flatMap((g) => g.rules);
  const panels = (parse(blocks[1]!) as { panels: Panel[] }).panels;
  return { rulesText: blocks[0]!, rules, panels };
}

// Series Prometheus makes itself, and the target labels it adds.
const PROMETHEUS_OWN = new Set(["up"]);
const TARGET_LABELS = new Set(["job", "instance"]);
// Labels whose values come with the traffic (a 429, an OOM kill): only
// their names are checked. The others list every value at every scrape.
const TRAFFIC_VALUES = new Set(["status", "cause", "model", "worker"]);

interface Selector {
  metric: string;
  matchers: Array<{ label: string; op: string; value: string }>;
}

/** The metric selectors and the `by (...)` labels of a PromQL expression. */
function read(expr: string): { selectors: Selector[]; by: string[] } {
  const selectors: Selector[] = [];
  const metric = /\b((?:pyproxy|process)_[a-zA-Z0-9_]*|up)\b(\{([^}]*)\})?/g;
  for (const m of expr.matchAll(metric)) {
    const matchers = [
      ...(m[3] ?? "").matchAll(/([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"/g),
    ].map((x) => ({ label: x[1]!, op: x[2]!, value: x[3]! }));
    selectors.push({ metric: m[1]!, matchers });
  }
  const by = [...expr.matchAll(/\bby\s*\(([^)]*)\)/g)].flatMap((m) =>
    m[1]!.split(",").map((l) => l.trim()).filter((l) => l !== "")
  );
  return { selectors, by };
}

const MODELS: Record<string, string> = {
  "echo.py": `class Echo:
    def execute(self, msg):
        return msg
`,
  "boom.py": `class Boom:
    def execute(self, msg):
        raise ValueError("bad input")
`,
  "crasher.py": `import os


class Crasher:
    def execute(self, msg):
        os._exit(3)
`,
};

Deno.test("docs/gateway.md's alert rules are a valid Prometheus rule file (promtool, when installed)", async () => {
  const { rulesText, rules } = section();
  assert.ok(rules.length > 0);
  for (const rule of rules) {
    assert.match(rule.alert, /^[A-Za-z_][A-Za-z0-9_]*$/);
    assert.equal(typeof rule.expr, "string", rule.alert);
    if (rule.for !== undefined) assert.match(rule.for, /^\d+[smh]$/);
    assert.ok(rule.annotations?.summary, `${rule.alert}: no summary`);
  }
  let promtool: Deno.CommandOutput | undefined;
  await using dir = await tempDir("pyproxy-rules-");
  await Deno.writeTextFile(`${dir.path}/rules.yml`, rulesText);
  try {
    promtool = await new Deno.Command("promtool", {
      args: ["check", "rules", `${dir.path}/rules.yml`],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  if (promtool !== undefined) {
    const out = new TextDecoder().decode(promtool.stdout) +
      new TextDecoder().decode(promtool.stderr);
    assert.ok(promtool.success, out);
    assert.match(out, new RegExp(`SUCCESS: ${rules.length} rules found`));
  }
});

Deno.test({
  name:
    "docs/gateway.md's alert rules and dashboard name only metrics and labels a real serve's /metrics has",
  // The worker memory and CPU series come from Linux's /proc.
  ignore: Deno.build.os !== "linux",
  async fn() {
    const { rules, panels } = section();
    await using dir = await tempDir("pyproxy-monitoring-");
    await Deno.mkdir(`${dir.path}/models`);
    for (const [name, text] of Object.entries(MODELS)) {
      await Deno.writeTextFile(`${dir.path}/models/${name}`, text);
    }
    await using serve = await startServeCli([
      "--port=0",
      `--models=${dir.path}/models`,
      "--workers=1",
      "--log-dir=-",
      // Tracing on, for pyproxy_trace_spans_dropped_total; no span is sent
      // within the test (the batch waits 5 s), so no collector is needed.
      "--trace-endpoint=http://127.0.0.1:9/v1/traces",
    ], { requireBanner: true });
    const base = serve.url!;
    const call = async (path: string, body = "{}") => {
      const res = await fetch(`${base}${path}`, { method: "POST", body });
      await res.body?.cancel();
      return res.status;
    };
    assert.equal(await call("/v1/models/echo/execute"), 200);
    assert.equal(await call("/v1/models/boom/execute"), 422);
    assert.equal(await call("/v1/models/echo/stream"), 200);
    assert.equal(await call("/v1/models/crasher/execute"), 502);
    let text = "";
    // The crashed worker's exit is counted as the pool sees it end; its
    // restart makes it ready again (memory series need a live process).
    for (;;) {
      const res = await fetch(`${base}/metrics`);
      text = await res.text();
      if (
        /^pyproxy_pool_worker_exits_total\{cause="exit_3"\} 1$/m.test(text) &&
        /^pyproxy_workers\{state="ready"\} 1$/m.test(text) &&
        /^pyproxy_worker_resident_memory_bytes\{/m.test(text)
      ) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const families = parseExposition(text);
    // Each series name, with the label names and values it has.
    const series = new Map<string, Map<string, Set<string>>>();
    for (const family of families.values()) {
      for (const s of family.samples) {
        const labels = series.get(s.name) ?? new Map<string, Set<string>>();
        for (const [k, v] of Object.entries(s.labels)) {
          labels.set(k, (labels.get(k) ?? new Set()).add(v));
        }
        series.set(s.name, labels);
      }
    }
    const queries = [
      ...rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })),
      ...panels.flatMap((p) =>
        p.queries.map((q) => ({ where: `panel "${p.title}"`, expr: q }))
      ),
    ];
    const used = new Set<string>();
    for (const { where, expr } of queries) {
      const { selectors, by } = read(expr);
      assert.ok(selectors.length > 0, `${where}: no metric in ${expr}`);
      const known = new Set<string>(TARGET_LABELS);
      for (const { metric, matchers } of selectors) {
        if (PROMETHEUS_OWN.has(metric)) {
          for (const m of matchers) assert.ok(TARGET_LABELS.has(m.label));
          continue;
        }
        used.add(metric);
        const labels = series.get(metric);
        assert.ok(labels, `${where}: ${metric} is not in /metrics`);
        for (const name of labels.keys()) known.add(name);
        for (const { label, op, value } of matchers) {
          if (TARGET_LABELS.has(label)) continue;
          const values = labels.get(label);
          assert.ok(values, `${where}: ${metric} has no label ${label}`);
          if (op === "=" && !TRAFFIC_VALUES.has(label)) {
            assert.ok(
              values.has(value),
              `${where}: ${metric}{${label}="${value}"} is never exposed`,
            );
          }
        }
      }
      for (const label of by) {
        assert.ok(known.has(label), `${where}: by (${label}): no such label`);
      }
    }
    // The SRE's list: errors and latency per model, queue, workers and their
    // exits and memory, in flight, streams, channels.
    for (
      const name of [
        "pyproxy_requests_total",
        "pyproxy_request_duration_seconds_bucket",
        "pyproxy_queued_calls",
        "pyproxy_workers",
        "pyproxy_pool_worker_exits_total",
        "pyproxy_worker_resident_memory_bytes",
        "pyproxy_in_flight_requests",
        "pyproxy_stream_first_item_seconds_bucket",
        "pyproxy_channel_subscribers",
        "pyproxy_models_ready",
      ]
    ) assert.ok(used.has(name), `the docs' rules and panels miss ${name}`);
  },
});
