/**
 * The autoscale plugin in the gateway: `plugins.autoscale` in the config
 * (as pyproxy.json gives it) turns it on, its options are validated, and
 * `false` leaves it off.
 */
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { resolveConfig } from "../src/gateway/config.ts";
import { type GatewayServer, serve } from "../src/gateway/serve.ts";
import type { Plugin } from "../src/plugin.ts";
import { ConfigError } from "../src/errors.ts";
import { startGateway, type TestGateway, until } from "./_gateway_harness.ts";
import { nextEvent } from "./_pool_harness.ts";

Deno.test("gateway: plugins.autoscale grows the pool under a burst of slow requests", async () => {
  await using gw = await startGateway({
    plugins: {
      autoscale: {
        max: 2,
        upAfterMs: 20,
        cooldownMs: 0,
        downAfterMs: 600_000,
        sampleInterval: 10,
      },
    },
  });
  assert.ok(gw.pool.status().plugins.includes("autoscale"));
  const grown = nextEvent(gw.pool, "resize", (e) => e.by === "autoscale");
  const ready = nextEvent(
    gw.pool,
    "worker-state",
    (e) => e.worker === "w2" && e.to === "ready",
  );
  const requests = Array.from(
    { length: 6 },
    () =>
      gw.fetch("/v1/models/slow/execute", {
        method: "POST",
        body: JSON.stringify({ seconds: 1 }),
      }).then(async (res) => {
        await res.body?.cancel();
        return res.status;
      }),
  );
  const ev = await grown;
  assert.deepEqual(
    ev.type === "resize" ? [ev.from, ev.to] : undefined,
    [1, 2],
  );
  await ready;
  assert.deepEqual(await Promise.all(requests), Array(6).fill(200));
  const body = await (await gw.fetch("/v1/status")).json();
  assert.deepEqual(
    body.workers.map((w: { id: string }) => w.id),
    ["w1", "w2"],
  );
});

Deno.test("gateway: a bad plugins.autoscale option fails the start naming it; false leaves it off", async () => {
  await assert.rejects(
    startGateway({ plugins: { autoscale: { min: 0 } } }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(
        err.message,
        "plugins.autoscale: Cannot create autoscale plugin: min: expected an integer from 1 to 1024 (got 0) (at config: plugins.autoscale)",
      );
      return true;
    },
  );
  await using gw = await startGateway({ plugins: { autoscale: false } });
  assert.ok(!gw.pool.status().plugins.includes("autoscale"));
  assert.ok(gw.pool.status().plugins.includes("reconnect"));
});

Deno.test("gateway: a plugins.autoscale error lists only what pyproxy.json can set, and says logger is set from code only", async () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [
      { upAfter: 10 },
      "unknown option 'upAfter' (known: min, max, upInFlight, downInFlight, upAfterMs, downAfterMs, cooldownMs, step, manualHoldMs, sampleInterval; from code only, not in pyproxy.json: logger)",
    ],
    [
      { logger: { level: "debug" } },
      "logger: expected a logger (an object with debug, info and warn methods; set from code only, not in pyproxy.json)",
    ],
  ];
  for (const [options, message] of cases) {
    await assert.rejects(
      startGateway({ plugins: { autoscale: options } }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.equal(
          err.message,
          `plugins.autoscale: Cannot create autoscale plugin: ${message} (at config: plugins.autoscale)`,
        );
        return true;
      },
    );
  }
});

Deno.test("resolveConfig merges a plugin's options from the file and the flags, the flags winning", () => {
  const config = resolveConfig({
    cwd: "/srv",
    file: {
      plugins: {
        autoscale: { min: 2, upAfterMs: 500 },
        spillover: { threshold: 1024 },
      },
    },
    cli: { plugins: { autoscale: { min: 1, max: 4 }, spillover: false } },
  });
  assert.deepEqual(config.plugins, {
    autoscale: { min: 1, max: 4, upAfterMs: 500 },
    spillover: false,
  });
  // A "__proto__" key stays a key (and is then refused as an unknown plugin).
  const odd = resolveConfig({
    cwd: "/srv",
    file: JSON.parse('{"plugins": {"__proto__": {"x": 1}}}'),
    cli: JSON.parse('{"plugins": {"__proto__": {"y": 2}}}'),
  });
  assert.deepEqual(Object.keys(odd.plugins), ["__proto__"]);
  assert.equal(Object.getPrototypeOf(odd.plugins), Object.prototype);
});

const put = (body: unknown): RequestInit => ({
  method: "PUT",
  body: JSON.stringify(body),
});

/** Resolves once autoscale's last resize ended and no other one runs. */
function resizeDone(gw: TestGateway): Promise<true> {
  return until(async () => {
    const body = await (await gw.fetch("/v1/status")).json();
    const last = body.pluginStatus.autoscale.lastDecision;
    return last?.outcome === "done" && body.resizing === false;
  }, "autoscale's resize to end");
}

/** The value of one sample of a `/metrics` text (`undefined`: absent). */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("gateway: /v1/status and /metrics show the autoscale bounds, target and counters; PUT /v1/workers {min, max} sets and restores the bounds", async () => {
  await using gw = await startGateway({
    allowManage: true,
    plugins: {
      autoscale: {
        min: 1,
        max: 2,
        upAfterMs: 600_000,
        downAfterMs: 600_000,
        cooldownMs: 0,
        manualHoldMs: 600_000,
        sampleInterval: 10,
      },
    },
  });
  let body = await (await gw.fetch("/v1/status")).json();
  assert.equal(body.pluginStatus.autoscale.min, 1);
  assert.equal(body.pluginStatus.autoscale.max, 2);
  assert.equal(body.pluginStatus.autoscale.target, 1);
  assert.deepEqual(body.pluginStatus.autoscale.stats.up, 0);
  assert.deepEqual(Object.keys(body.pluginStatus), ["autoscale"]);
  let text = await (await gw.fetch("/metrics")).text();
  assert.match(
    text,
    /^# TYPE pyproxy_autoscale_scale_ups_total counter$/m,
  );
  assert.equal(sample(text, "pyproxy_autoscale_min_workers"), 1);
  assert.equal(sample(text, "pyproxy_autoscale_max_workers"), 2);
  assert.equal(sample(text, "pyproxy_autoscale_target_workers"), 1);
  assert.equal(sample(text, "pyproxy_autoscale_scale_ups_total"), 0);
  assert.equal(sample(text, "pyproxy_autoscale_scale_downs_total"), 0);
  assert.equal(
    sample(text, 'pyproxy_autoscale_failed_resizes_total{direction="up"}'),
    0,
  );
  assert.equal(sample(text, "pyproxy_autoscale_up_backoff_failures"), 0);

  // Bounds alone: no resize of the gateway's, the plugin brings the pool in.
  const grown = nextEvent(
    gw.pool,
    "resize",
    (e) => e.by === "autoscale" && e.to === 2,
  );
  let res = await gw.fetch("/v1/workers", put({ min: 2, max: 3 }));
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {
    count: 1,
    bounds: { autoscale: { min: 2, max: 3 } },
  });
  await grown;
  // The resize event says it began: its outcome shows once it ended.
  await resizeDone(gw);
  text = await (await gw.fetch("/metrics")).text();
  assert.equal(sample(text, "pyproxy_autoscale_min_workers"), 2);
  assert.equal(sample(text, "pyproxy_autoscale_max_workers"), 3);
  assert.equal(sample(text, "pyproxy_autoscale_scale_ups_total"), 1);

  // A count with bounds: the bounds first, then the resize.
  res = await gw.fetch("/v1/workers", put({ count: 3, max: 4 }));
  assert.equal(res.status, 200);
  const resized = await res.json();
  assert.equal(resized.count, 3);
  assert.deepEqual(resized.bounds, { autoscale: { min: 2, max: 4 } });

  // Refused: nothing changes.
  for (
    const [change, message] of [
      [
        { min: 5 },
        "Cannot set autoscale bounds: max: expected at least min (5) (got 4)",
      ],
      [
        { count: 5, max: 4 },
        "Cannot resize pool: count: expected within the bounds given (min as is, max 4) (got 5)",
      ],
      [
        { min: 0 },
        "Cannot resize pool: min: expected an integer from 1 to 1024, or null for the configured one",
      ],
    ] as const
  ) {
    res = await gw.fetch("/v1/workers", put(change));
    assert.equal(res.status, 400, JSON.stringify(change));
    assert.equal((await res.json()).error.message, message);
  }

  // null: the configured bounds again; the pool shrinks to max.
  const shrunk = nextEvent(
    gw.pool,
    "resize",
    (e) => e.by === "autoscale" && e.to === 2,
  );
  res = await gw.fetch("/v1/workers", put({ min: null, max: null }));
  assert.deepEqual(await res.json(), {
    count: 3,
    bounds: { autoscale: { min: 1, max: 2 } },
  });
  await shrunk;
  await resizeDone(gw);
  body = await (await gw.fetch("/v1/status")).json();
  assert.deepEqual(
    [body.pluginStatus.autoscale.min, body.pluginStatus.autoscale.max],
    [1, 2],
  );
  assert.equal(body.pluginStatus.autoscale.stats.down, 1);

  // A count alone outside the bounds moves them: the answer says so.
  res = await gw.fetch("/v1/workers", put({ count: 3 }));
  assert.equal(res.status, 200);
  const moved = await res.json();
  assert.equal(moved.count, 3);
  assert.deepEqual(moved.bounds, { autoscale: { min: 1, max: 3 } });
  // Within them, they are shown as they are.
  res = await gw.fetch("/v1/workers", put({ count: 2 }));
  assert.deepEqual((await res.json()).bounds, {
    autoscale: { min: 1, max: 3 },
  });
});

Deno.test("gateway: without autoscale, no pluginStatus and no autoscale series; PUT /v1/workers {min, max} is 409", async () => {
  await using gw = await startGateway({ allowManage: true });
  const body = await (await gw.fetch("/v1/status")).json();
  assert.ok(!("pluginStatus" in body));
  const text = await (await gw.fetch("/metrics")).text();
  assert.ok(!text.includes("pyproxy_autoscale"));
  const res = await gw.fetch("/v1/workers", put({ max: 3 }));
  assert.equal(res.status, 409);
  assert.deepEqual((await res.json()).error, {
    type: "NoScalePolicy",
    message:
      "Cannot set worker bounds: no plugin sizes the pool (start with --autoscale min:max, or plugins.autoscale in pyproxy.json)",
  });
  assert.equal(gw.pool.status().workers.length, 1);
});

/** A gateway with autoscale (max 2) and `extra` plugins; `python` runs the workers. */
async function gatewayWith(
  extra: Plugin[],
  python?: string,
): Promise<GatewayServer & AsyncDisposable & { dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-gw-test-" });
  try {
    await Deno.copyFile(
      new URL("../examples/models/echo.py", import.meta.url),
      `${dir}/echo.py`,
    );
    const config = resolveConfig({
      cwd: dir,
      cli: {
        port: 0,
        workers: 1,
        modelsDir: dir,
        allowManage: true,
        token: "a-token-for-the-tests-0123",
        limits: { shutdownGrace: 2000 },
        ...(python === undefined ? {} : { python }),
        plugins: {
          autoscale: {
            min: 1,
            max: 2,
            upAfterMs: 600_000,
            downAfterMs: 600_000,
            manualHoldMs: 600_000,
          },
        },
      },
    });
    const server = await serve(config, { plugins: extra });
    return Object.assign(server, {
      dir,
      async [Symbol.asyncDispose]() {
        await server.shutdown();
        await Deno.remove(dir, { recursive: true });
      },
    });
  } catch (err) {
    await Deno.remove(dir, { recursive: true });
    throw err;
  }
}

function putWorkers(gw: GatewayServer, body: unknown): Promise<Response> {
  return fetch(`${gw.url}/v1/workers`, {
    method: "PUT",
    headers: { authorization: "Bearer a-token-for-the-tests-0123" },
    body: JSON.stringify(body),
  });
}

Deno.test("gateway: PUT /v1/workers {count} shows autoscale's bounds though another plugin's setBounds throws on {}; its refusal of {max} changes nothing", async () => {
  let asked = 0;
  const stubborn: Plugin = {
    name: "stubborn",
    setBounds() {
      asked++;
      throw new TypeError("Cannot read bounds: not today");
    },
  };
  await using gw = await gatewayWith([stubborn]);
  const res = await putWorkers(gw, { count: 3 });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.count, 3);
  assert.equal(body.previous, 1);
  // The count moved autoscale's max; the stubborn plugin is left out.
  assert.deepEqual(body.bounds, { autoscale: { min: 1, max: 3 } });
  assert.equal(asked, 1);
  // A change it refuses is still refused (nothing hidden there).
  const refused = await putWorkers(gw, { max: 4 });
  assert.equal(refused.status, 400);
  assert.equal(
    (await refused.json()).error.message,
    "Cannot read bounds: not today",
  );
  // Refused: autoscale, changed before the stubborn plugin refused, got its
  // bounds back (a 400 changes nothing).
  assert.deepEqual(gw.pool.setScaleBounds({}), {
    autoscale: { min: 1, max: 3 },
  });
});

Deno.test("gateway: a PUT /v1/workers {count} whose resize failed says where it moved the autoscale bounds", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "pyproxy-chaos-py-" });
  const flag = `${tmp}/fail`;
  const python = `${tmp}/python.sh`;
  await Deno.writeTextFile(
    python,
    `#!/bin/sh\nif [ -e "${flag}" ]; then echo "no python today" >&2; exit 1; fi\nexec python3 "$@"\n`,
  );
  await Deno.chmod(python, 0o755);
  try {
    await using gw = await gatewayWith([], python);
    await Deno.writeTextFile(flag, "");
    const res = await putWorkers(gw, { count: 3 });
    assert.equal(res.status, 502);
    const { error } = await res.json();
    assert.equal(error.type, "StartError");
    assert.match(error.message, /^Cannot resize pool to 3 workers: /);
    // The resize began, so the count moved max: the answer says so.
    assert.deepEqual(error.bounds, { autoscale: { min: 1, max: 3 } });
    assert.equal(gw.pool.status().workers.length, 1);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test('gateway: PUT /v1/workers logs "Worker bounds set" only for bounds it changed', async () => {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { test: (record: LogRecord) => void records.push(record) },
    loggers: [
      {
        category: ["pyproxy", "gateway"],
        lowestLevel: "info",
        sinks: ["test"],
      },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  try {
    await using gw = await startGateway({
      allowManage: true,
      plugins: {
        autoscale: {
          min: 1,
          max: 2,
          upAfterMs: 600_000,
          downAfterMs: 600_000,
          manualHoldMs: 600_000,
        },
      },
    });
    const logged = async (body: unknown): Promise<string[]> => {
      records.splice(0);
      const res = await gw.fetch("/v1/workers", put(body));
      assert.equal(res.status, 200, JSON.stringify(body));
      await res.body?.cancel();
      return records
        .filter((r) => r.rawMessage === "Worker bounds set: {bounds}")
        .map((r) => String(r.properties.bounds));
    };
    // The bounds in force, as they are: nothing changed, nothing logged.
    assert.deepEqual(await logged({ min: 1, max: 2 }), []);
    assert.deepEqual(await logged({ max: 2 }), []);
    assert.deepEqual(await logged({ min: null, max: null }), []);
    // A change is logged once; the same change again is not.
    assert.deepEqual(await logged({ max: 3 }), ["autoscale 1 to 3"]);
    assert.deepEqual(await logged({ max: 3 }), []);
    assert.deepEqual(await logged({ min: null, max: null }), [
      "autoscale 1 to 2",
    ]);
    // With a count within them: the resize is logged, the bounds are not.
    assert.deepEqual(await logged({ count: 1, min: 1, max: 2 }), []);
  } finally {
    await reset();
  }
});
