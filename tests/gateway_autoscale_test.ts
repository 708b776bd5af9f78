/**
 * The autoscale plugin in the gateway: `plugins.autoscale` in the config
 * (as pyproxy.json gives it) turns it on, its options are validated, and
 * `false` leaves it off.
 */
import assert from "node:assert/strict";
import { resolveConfig } from "../src/gateway/config.ts";
import { ConfigError } from "../src/errors.ts";
import { startGateway } from "./_gateway_harness.ts";
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
