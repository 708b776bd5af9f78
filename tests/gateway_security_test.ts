import assert from "node:assert/strict";
import { Hono } from "hono";
import { ConfigError, NoWorkerError, OverloadedError } from "../src/errors.ts";
import { createGateway } from "../src/gateway/app.ts";
import { resolveConfig } from "../src/gateway/config.ts";
import {
  bearerAuth,
  tokenId,
  tokenIdentifier,
  tokenMatcher,
} from "../src/gateway/security.ts";
import { serve } from "../src/gateway/serve.ts";
import type { GatewayPool } from "../src/gateway/gateway_pool.ts";
import { GatewayMetrics } from "../src/gateway/metrics.ts";
import { recordingLogger } from "./_harness.ts";

const TOKEN = "test-token-0123456789";

/** A stand-in pool: these tests are about the HTTP layer, not the workers. */
function stubPool(
  ready = true,
  execute: GatewayPool["execute"] = (_n, msg) => Promise.resolve(msg),
): GatewayPool {
  return {
    execute,
    addModel: () => Promise.resolve({}),
    updateModel: () => Promise.resolve({}),
    removeModel: () => Promise.resolve({}),
    status: () => ({
      workers: [{
        id: "w1",
        pid: 1,
        state: ready ? "ready" : "restarting",
        restarts: 0,
        inFlight: 0,
      }],
      models: [{ name: "echo" }],
    }),
    eval: () => {
      throw new Error("not used");
    },
    atoms: { get: () => undefined },
    close: () => Promise.resolve(),
  };
}

function req(
  path: string,
  init: RequestInit & { host?: string } = {},
): Request {
  const headers = new Headers(init.headers);
  headers.set("host", init.host ?? "127.0.0.1:8000");
  return new Request(`http://127.0.0.1:8000${path}`, { ...init, headers });
}

Deno.test("createGateway requires the bearer token on every route but /healthz", async () => {
  const app = createGateway(stubPool(), { token: TOKEN, port: () => 8000 });
  assert.equal((await app.fetch(req("/healthz"))).status, 200);
  for (
    const path of ["/v1/status", "/v1/models", "/metrics", "/v1/channels", "/"]
  ) {
    const res = await app.fetch(req(path));
    assert.equal(res.status, 401, path);
    assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="pyproxy"');
    await res.body?.cancel();
  }
  const wrong = await app.fetch(
    req("/v1/status", { headers: { authorization: "Bearer nope" } }),
  );
  assert.equal(wrong.status, 401);
  const ok = await app.fetch(
    req("/v1/status", { headers: { authorization: `Bearer ${TOKEN}` } }),
  );
  assert.equal(ok.status, 200);
  // The dashboard page alone accepts ?token= (to seed the page's requests).
  assert.equal((await app.fetch(req(`/?token=${TOKEN}`))).status, 200);
  assert.equal((await app.fetch(req(`/v1/status?token=${TOKEN}`))).status, 401);
});

Deno.test("createGateway's 401 says how to send the token", async () => {
  const app = createGateway(stubPool(), { token: TOKEN, port: () => 8000 });
  const message = async (path: string): Promise<string> => {
    const res = await app.fetch(req(path));
    assert.equal(res.status, 401, path);
    return (await res.json()).error.message;
  };
  const api = await message("/v1/status");
  assert.match(api, /^Cannot serve request: missing or wrong bearer token; /);
  assert.ok(api.includes("'Authorization: Bearer <token>'"), api);
  assert.ok(!api.includes("?token="), api);
  // The dashboard URL without its ?token=, or with a wrong one.
  for (const path of ["/", "/?token=wrong-token-0123456789"]) {
    assert.ok((await message(path)).includes("open /?token=<token>"), path);
  }
  // ?token= given where only the header counts.
  assert.ok(
    (await message(`/v1/status?token=${TOKEN}`)).includes(
      "?token= is accepted by the dashboard page / only",
    ),
  );
});

Deno.test("createGateway refuses Host headers that are not allowed (DNS rebinding)", async () => {
  const app = createGateway(stubPool(), {
    port: () => 8000,
    allowedHosts: ["api.example.com"],
  });
  for (
    const host of [
      "127.0.0.1:8000",
      "localhost:8000",
      "[::1]:8000",
      "api.example.com",
      "api.example.com:8000",
    ]
  ) {
    const res = await app.fetch(req("/v1/status", { host }));
    assert.equal(res.status, 200, host);
    await res.body?.cancel();
  }
  for (
    const host of [
      "evil.example:8000",
      "localhost:9999",
      "127.0.0.1",
      "",
      "localhost.evil.example:8000",
      "10.1.2.3:8000",
    ]
  ) {
    const res = await app.fetch(req("/v1/status", { host }));
    assert.equal(res.status, 403, host);
    assert.equal((await res.json()).error.type, "ForbiddenHost");
    // /healthz answers whatever the Host: load balancers probe by IP.
    const health = await app.fetch(req("/healthz", { host }));
    assert.equal(health.status, 200, host);
    await health.body?.cancel();
  }
});

Deno.test("createGateway with allowIpHosts accepts IP addresses as Host, names only when listed", async () => {
  const app = createGateway(stubPool(), {
    port: () => 8000,
    allowIpHosts: true,
    token: TOKEN,
  });
  const auth = { authorization: `Bearer ${TOKEN}` };
  for (const host of ["10.1.2.3:8000", "192.168.0.7:9000", "[fd00::5]:8000"]) {
    const res = await app.fetch(req("/v1/status", { host, headers: auth }));
    assert.equal(res.status, 200, host);
    await res.body?.cancel();
  }
  for (const host of ["myhost.lan:8000", "10.1.2.3.evil.example:8000"]) {
    const res = await app.fetch(req("/v1/status", { host, headers: auth }));
    assert.equal(res.status, 403, host);
    await res.body?.cancel();
  }
});

Deno.test("createGateway refuses cross-site requests (text/plain POSTs, WebSocket upgrades) on every route with 403 ForbiddenOrigin", async () => {
  let calls = 0;
  const app = createGateway(
    stubPool(true, (_n, msg) => {
      calls++;
      return Promise.resolve(msg);
    }),
    {
      port: () => 8000,
      allowEval: true,
      allowManage: true,
      insecureNoAuth: true,
    },
  );
  const evil = { origin: "https://evil.example" };
  const crossSite = { "sec-fetch-site": "cross-site" };
  const simple = { "content-type": "text/plain" };
  const refused: Array<[string, RequestInit]> = [
    ["/v1/models/echo/execute", {
      method: "POST",
      headers: { ...evil, ...crossSite, ...simple },
      body: '{"a":1}',
    }],
    // Origin alone (older browsers send no Sec-Fetch-Site), or Sec-Fetch-Site alone.
    ["/v1/models/echo/execute", {
      method: "POST",
      headers: { ...evil, ...simple },
      body: "{}",
    }],
    ["/v1/models/echo/execute", {
      method: "POST",
      headers: { ...crossSite, ...simple },
      body: "{}",
    }],
    // A page of another local server is same-site, not same-origin.
    ["/v1/models/echo/execute?key=k", {
      method: "POST",
      headers: {
        origin: "http://localhost:3000",
        "sec-fetch-site": "same-site",
      },
      body: "{}",
    }],
    ["/v1/eval", {
      method: "POST",
      headers: { ...evil, ...simple },
      body: '{"code":"1"}',
    }],
    ["/v1/models/x", {
      method: "PUT",
      headers: { ...evil, ...crossSite },
      body: '{"file":"echo.py"}',
    }],
    ["/v1/channels/audit", {
      method: "POST",
      headers: { ...evil, ...simple },
      body: "{}",
    }],
    ["/v1/channels/audit", {
      headers: {
        ...evil,
        upgrade: "websocket",
        connection: "Upgrade",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      },
    }],
    ["/v1/status", { headers: { ...evil, ...crossSite } }],
    ["/metrics", { headers: { "sec-fetch-site": "cross-site" } }],
    ["/v1/models/echo/execute", {
      method: "POST",
      headers: { origin: "null", ...simple },
      body: "{}",
    }],
    // A link followed cross-site is let through to the dashboard only.
    ["/v1/models", { headers: { ...crossSite, "sec-fetch-mode": "navigate" } }],
    ["/v1/status", {
      headers: { "sec-fetch-site": "same-site", "sec-fetch-mode": "navigate" },
    }],
    ["/metrics?format=json", {
      method: "HEAD",
      headers: { ...crossSite, "sec-fetch-mode": "navigate" },
    }],
  ];
  for (const [path, init] of refused) {
    const res = await app.fetch(req(path, init));
    assert.equal(res.status, 403, `${init.method ?? "GET"} ${path}`);
    if (init.method === "HEAD") continue;
    const { error } = await res.json();
    assert.equal(error.type, "ForbiddenOrigin");
  }
  assert.equal(calls, 0);

  const served: Array<[string, RequestInit]> = [
    // curl and scripts: no Origin, no Sec-Fetch-Site.
    ["/v1/models/echo/execute", { method: "POST", body: "{}" }],
    // The gateway's own pages.
    ["/v1/models/echo/execute", {
      method: "POST",
      headers: {
        origin: "http://127.0.0.1:8000",
        "sec-fetch-site": "same-origin",
      },
      body: "{}",
    }],
    ["/v1/status", { headers: { "sec-fetch-site": "same-origin" } }],
    ["/v1/status", { headers: { "sec-fetch-site": "none" } }],
    // A link followed to the dashboard: the page goes to the user, not to the linking site.
    ["/", {
      headers: { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate" },
    }],
    ["/?token=x", {
      headers: { "sec-fetch-site": "same-site", "sec-fetch-mode": "navigate" },
    }],
    // /healthz answers whatever the Origin.
    ["/healthz", {
      headers: { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate" },
    }],
  ];
  for (const [path, init] of served) {
    const res = await app.fetch(req(path, init));
    assert.equal(res.status, 200, `${init.method ?? "GET"} ${path}`);
    await res.body?.cancel();
  }
  assert.equal(calls, 2);
  // A cross-site form POST is a navigation too, and is refused.
  const form = await app.fetch(req("/v1/models/echo/execute", {
    method: "POST",
    headers: {
      ...evil,
      ...crossSite,
      "sec-fetch-mode": "navigate",
      "content-type": "application/x-www-form-urlencoded",
    },
    body: "a=1",
  }));
  assert.equal(form.status, 403);
  await form.body?.cancel();
});

Deno.test("createGateway serves the configured CORS origins cross-site", async () => {
  const app = createGateway(stubPool(), {
    port: () => 8000,
    cors: { origins: ["https://app.example.com"] },
  });
  const ok = await app.fetch(req("/v1/models/echo/execute", {
    method: "POST",
    headers: {
      origin: "https://app.example.com",
      "sec-fetch-site": "cross-site",
      "content-type": "application/json",
    },
    body: '{"a":1}',
  }));
  assert.equal(ok.status, 200);
  assert.equal(
    ok.headers.get("access-control-allow-origin"),
    "https://app.example.com",
  );
  assert.deepEqual(await ok.json(), { a: 1 });
  const other = await app.fetch(req("/v1/models/echo/execute", {
    method: "POST",
    headers: { origin: "https://evil.example", "sec-fetch-site": "cross-site" },
    body: "{}",
  }));
  assert.equal(other.status, 403);
  await other.body?.cancel();
});

Deno.test("createGateway sends CORS headers only when configured", async () => {
  const plain = createGateway(stubPool(), { port: () => 8000 });
  const res = await plain.fetch(
    req("/v1/models", { headers: { origin: "https://app.example.com" } }),
  );
  assert.equal(res.headers.get("access-control-allow-origin"), null);
  await res.body?.cancel();
  const withCors = createGateway(stubPool(), {
    port: () => 8000,
    token: TOKEN,
    cors: { origins: ["https://app.example.com"] },
  });
  const preflight = await withCors.fetch(req("/v1/models/echo/execute", {
    method: "OPTIONS",
    headers: {
      origin: "https://app.example.com",
      "access-control-request-method": "POST",
    },
  }));
  assert.equal(preflight.status, 204);
  assert.equal(
    preflight.headers.get("access-control-allow-origin"),
    "https://app.example.com",
  );
  const other = await withCors.fetch(req("/v1/models", {
    headers: {
      origin: "https://evil.example",
      authorization: `Bearer ${TOKEN}`,
    },
  }));
  assert.equal(other.headers.get("access-control-allow-origin"), null);
  await other.body?.cancel();
});

Deno.test("createGateway lets a CORS page send X-Request-Id and read it back", async () => {
  const app = createGateway(
    stubPool(
      true,
      () =>
        Promise.reject(new OverloadedError("Cannot accept call: queue full")),
    ),
    { port: () => 8000, cors: { origins: ["https://app.example.com"] } },
  );
  // The preflight a browser sends before a POST carrying the header: without
  // x-request-id in the allowed headers, the browser never sends the POST.
  const preflight = await app.fetch(req("/v1/models/echo/execute", {
    method: "OPTIONS",
    headers: {
      origin: "https://app.example.com",
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type,x-request-id",
    },
  }));
  assert.equal(preflight.status, 204);
  const allowed = (preflight.headers.get("access-control-allow-headers") ?? "")
    .split(",").map((h) => h.trim().toLowerCase());
  assert.ok(allowed.includes("x-request-id"), allowed.join(","));
  assert.ok(allowed.includes("content-type"), allowed.join(","));
  // The failed call's id, in a header the page's script may read.
  const res = await app.fetch(req("/v1/models/echo/execute", {
    method: "POST",
    headers: {
      origin: "https://app.example.com",
      "sec-fetch-site": "cross-site",
      "content-type": "application/json",
      "x-request-id": "web-1",
    },
    body: "{}",
  }));
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("x-request-id"), "web-1");
  const exposed = (res.headers.get("access-control-expose-headers") ?? "")
    .split(",").map((h) => h.trim().toLowerCase());
  assert.ok(exposed.includes("x-request-id"), exposed.join(","));
  assert.equal((await res.json()).error.requestId, "web-1");
});

Deno.test("createGateway maps overload to 429 and no worker to 503, both with Retry-After", async () => {
  let error: Error = new OverloadedError("Cannot accept call: queue full");
  const app = createGateway(stubPool(true, () => Promise.reject(error)), {
    port: () => 8000,
  });
  const post = () =>
    app.fetch(req("/v1/models/echo/execute", { method: "POST", body: "{}" }));
  let res = await post();
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("retry-after"), "1");
  assert.equal((await res.json()).error.type, "OverloadedError");
  error = new NoWorkerError("Cannot route call: no worker is ready");
  res = await post();
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("retry-after"), "1");
  await res.body?.cancel();
});

Deno.test("createGateway answers /healthz with 503 when no worker is ready", async () => {
  const app = createGateway(stubPool(false), { port: () => 8000 });
  const res = await app.fetch(req("/healthz"));
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), {
    status: "unavailable",
    ready: 0,
    workers: 1,
  });
});

Deno.test("createGateway tells /healthz's workers' counts only to an operator's token where tokens are set (a probe without one, or a tenant's token, reads its status); without tokens, to all", async () => {
  const operator = "9f1c6ad2e07b4b3c8e5d1a6f2b7c9e04";
  const tenant = "4a8e2c7f1b9d3e6a0c5f8b2d7e1a4c9f";
  const app = createGateway(stubPool(), {
    token: [operator, tenant],
    tenantToken: [tenant],
    port: () => 8000,
  });
  const health = async (headers: Record<string, string> = {}) => {
    const res = await app.fetch(req("/healthz", { headers }));
    assert.equal(res.status, 200);
    return await res.json();
  };
  assert.deepEqual(await health(), { status: "ok" });
  assert.deepEqual(
    await health({ authorization: "Bearer not-a-token-of-this-gateway" }),
    { status: "ok" },
  );
  assert.deepEqual(
    await health({ authorization: `Bearer ${tenant}` }),
    { status: "ok" },
  );
  assert.deepEqual(
    await health({ authorization: `Bearer ${operator}` }),
    { status: "ok", ready: 1, workers: 1 },
  );
  // Not ready: the status still tells a load balancer (503).
  const down = createGateway(stubPool(false), {
    token: operator,
    port: () => 8000,
  });
  const res = await down.fetch(req("/healthz"));
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), { status: "unavailable" });
  // No token at all: every route is open, the counts too.
  const open = createGateway(stubPool(), { port: () => 8000 });
  assert.deepEqual(await (await open.fetch(req("/healthz"))).json(), {
    status: "ok",
    ready: 1,
    workers: 1,
  });
});

Deno.test("createGateway answers /healthz with 503 draining and other routes with 503 Retry-After while draining", async () => {
  const drain = new AbortController();
  const app = createGateway(stubPool(), {
    port: () => 8000,
    signal: drain.signal,
  });
  drain.abort();
  const health = await app.fetch(req("/healthz"));
  assert.equal(health.status, 503);
  assert.equal((await health.json()).status, "draining");
  const res = await app.fetch(
    req("/v1/models/echo/execute", { method: "POST", body: "{}" }),
  );
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("retry-after"), "5");
  assert.equal((await res.json()).error.type, "ShuttingDownError");
});

Deno.test("createGateway refuses a streamed body over the limit without a Content-Length", async () => {
  const app = createGateway(stubPool(), { port: () => 8000, bodyLimit: 100 });
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new TextEncoder().encode('{"a":"'));
      c.enqueue(new TextEncoder().encode("x".repeat(200)));
      c.enqueue(new TextEncoder().encode('"}'));
      c.close();
    },
  });
  const res = await app.fetch(
    req("/v1/models/echo/execute", { method: "POST", body }),
  );
  assert.equal(res.status, 413);
  assert.match((await res.json()).error.message, /over the limit of 100 bytes/);
});

Deno.test("createGateway gives execute calls a cancel signal only when cancelOnDisconnect is on; a fast call never reads request.signal", async () => {
  const signals: Array<AbortSignal | undefined> = [];
  const pool = stubPool(true, (_n, msg, options) => {
    signals.push(options?.signal);
    return Promise.resolve(msg);
  });
  for (const cancelOnDisconnect of [true, false]) {
    const app = createGateway(pool, { port: () => 8000, cancelOnDisconnect });
    const request = req("/v1/models/echo/execute", {
      method: "POST",
      body: '{"a":1}',
    });
    let reads = 0;
    const signal = request.signal;
    Object.defineProperty(request, "signal", {
      get() {
        reads++;
        return signal;
      },
    });
    const res = await app.fetch(request);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { a: 1 });
    // Deno's request.signal costs a pending operation: only calls running
    // past DisconnectWatch's grace read it.
    assert.equal(reads, 0);
  }
  assert.ok(signals[0] instanceof AbortSignal);
  assert.equal(signals[1], undefined);
});

Deno.test("createGateway's plain execute path counts and logs like the routed one, building no debug record when debug is off", async () => {
  const logged: Array<{ message: string; props?: Record<string, unknown> }> =
    [];
  const log = (message: string, props?: Record<string, unknown>) => {
    logged.push({ message, ...(props ? { props } : {}) });
  };
  let debugOn = true;
  const logger = {
    trace: log,
    debug: log,
    info: log,
    warn: log,
    error: log,
    fatal: log,
    isEnabledFor: (level: string) => level !== "debug" || debugOn,
  };
  const metrics = new GatewayMetrics();
  const app = createGateway(stubPool(), {
    port: () => 8000,
    logger,
    metrics,
  });
  const post = () =>
    app.fetch(req("/v1/models/echo/execute", { method: "POST", body: "{}" }));
  let res = await post();
  assert.equal(res.status, 200);
  await res.body?.cancel();
  assert.equal(logged.length, 1);
  assert.equal(logged[0]!.props?.path, "/v1/models/echo/execute");
  assert.equal(logged[0]!.props?.status, 200);
  debugOn = false;
  res = await post();
  await res.body?.cancel();
  assert.equal(logged.length, 1);
  assert.equal(metrics.toJSON().http["200"], 2);
  assert.equal(metrics.toJSON().models.echo?.requests["200"], 2);
});

Deno.test("createGateway logs an execute call's unexpected error, which the client sees only as an internal error", async () => {
  const { logger, entries } = recordingLogger();
  const failure = new Error("stub pool broke");
  const app = createGateway(
    stubPool(true, () => Promise.reject(failure)),
    { port: () => 8000, logger },
  );
  // The plain path (no query string) and the router's.
  const ids: string[] = [];
  for (
    const path of ["/v1/models/echo/execute", "/v1/models/echo/execute?key=k"]
  ) {
    const res = await app.fetch(req(path, { method: "POST", body: "{}" }));
    assert.equal(res.status, 500, path);
    const body = await res.json();
    ids.push(body.error.requestId);
    assert.deepEqual(body, {
      error: {
        type: "InternalError",
        message: "Cannot serve request: internal error",
        requestId: res.headers.get("x-request-id"),
      },
    }, path);
  }
  // The log line names the request id the client got.
  const warnings = entries.filter(([level]) => level === "warn");
  assert.deepEqual(
    warnings,
    ids.map((requestId) => [
      "warn",
      "Request failed (request id {requestId}): {error}",
      { error: failure, requestId },
    ]),
  );
});

Deno.test("createGateway answers HEAD with the Content-Length of the GET body, errors included", async () => {
  const app = createGateway(stubPool(), { port: () => 8000 });
  for (
    const path of [
      "/healthz",
      "/v1/models",
      "/",
      "/v1/models/nope",
    ]
  ) {
    const get = await app.fetch(req(path));
    const body = new Uint8Array(await get.arrayBuffer());
    const head = await app.fetch(req(path, { method: "HEAD" }));
    assert.equal(head.status, get.status, path);
    assert.ok(body.byteLength > 0, path);
    assert.equal(
      head.headers.get("content-length"),
      String(body.byteLength),
      path,
    );
    assert.equal(head.body, null, path);
  }
});

Deno.test("createGateway refuses a maxJsonDepth that is not a positive integer; Infinity takes any depth", () => {
  for (const bad of [0, -1, 2.5, NaN]) {
    assert.throws(
      () => createGateway(stubPool(), { maxJsonDepth: bad }),
      (err: unknown) =>
        err instanceof RangeError &&
        err.message ===
          `Cannot create gateway: maxJsonDepth ${bad} is not an integer >= 1`,
    );
  }
  for (const ok of [1, 800, Infinity]) {
    createGateway(stubPool(), { maxJsonDepth: ok, port: () => 8000 });
  }
});

Deno.test("createGateway refuses a streamKeepAlive or streamFirstItemTimeout that no stream could use (each stream answered 400 for it, or sent a keep-alive at every turn of the loop)", () => {
  for (const bad of [0, -5, 99, 100.5, NaN, Infinity, 2 ** 31]) {
    assert.throws(
      () => createGateway(stubPool(), { streamKeepAlive: bad }),
      (err: unknown) =>
        err instanceof RangeError &&
        err.message ===
          `Cannot create gateway: streamKeepAlive ${bad} is not an integer from 100 to 2147483647 (ms)`,
    );
  }
  for (const bad of [0, -1, NaN, "500" as unknown as number]) {
    assert.throws(
      () => createGateway(stubPool(), { streamFirstItemTimeout: bad }),
      (err: unknown) =>
        err instanceof RangeError &&
        err.message ===
          `Cannot create gateway: streamFirstItemTimeout ${bad} is not a number > 0 (ms) or Infinity`,
    );
  }
  for (const ok of [100, 15_000, 2 ** 31 - 1]) {
    createGateway(stubPool(), { streamKeepAlive: ok, port: () => 8000 });
  }
  for (const ok of [1, 0.5, 5000, Infinity]) {
    createGateway(stubPool(), { streamFirstItemTimeout: ok, port: () => 8000 });
  }
});

Deno.test("createGateway refuses eval or management without a token, unless insecureNoAuth says another layer authenticates (it served eval to whoever reached the app: claims26)", async () => {
  for (
    const [options, name] of [
      [{ allowEval: true }, "allowEval"],
      [{ allowManage: true }, "allowManage"],
      [{ allowEval: true, allowManage: true }, "allowEval"],
    ] as const
  ) {
    assert.throws(
      () => createGateway(stubPool(), { port: () => 8000, ...options }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message ===
          `Cannot create gateway: ${name} needs a token (eval runs code as this user, management loads any model file), or insecureNoAuth: true behind authentication of your own`,
    );
  }
  const eval_ = (app: ReturnType<typeof createGateway>, auth?: string) =>
    Promise.resolve(app.fetch(
      new Request("http://127.0.0.1:8000/v1/eval", {
        method: "POST",
        headers: {
          host: "127.0.0.1:8000",
          ...(auth === undefined ? {} : { authorization: `Bearer ${auth}` }),
        },
        body: JSON.stringify({ code: "1+1" }),
      }),
    ));
  // With a token: eval answers its holder only.
  const token = "eval-token-0123456789abcdef";
  const guarded = createGateway(stubPool(), {
    port: () => 8000,
    allowEval: true,
    token,
  });
  const refused = await eval_(guarded);
  assert.equal(refused.status, 401);
  await refused.body?.cancel();
  // Without one, only as asked for: the app past authentication of its own.
  const open = createGateway(stubPool(), {
    port: () => 8000,
    allowEval: true,
    insecureNoAuth: true,
  });
  const res = await eval_(open);
  assert.notEqual(res.status, 401);
  assert.notEqual(res.status, 403);
  await res.body?.cancel();
  // Neither option: nothing to refuse.
  createGateway(stubPool(), { port: () => 8000 });
});

Deno.test("createGateway refuses a maxIntegerDigits that would not hold (below 16, not an integer); 16 holds at 17 digits", async () => {
  for (const bad of [10, 0, -1, 16.5, NaN]) {
    assert.throws(
      () => createGateway(stubPool(), { maxIntegerDigits: bad }),
      (err: unknown) =>
        err instanceof RangeError &&
        err.message ===
          `Cannot create gateway: maxIntegerDigits ${bad} is not an integer >= 16`,
    );
  }
  for (const ok of [16, Infinity]) {
    createGateway(stubPool(), { maxIntegerDigits: ok, port: () => 8000 });
  }
  const app = createGateway(stubPool(), {
    maxIntegerDigits: 16,
    port: () => 8000,
  });
  const res = await app.fetch(
    req("/v1/models/echo/execute", {
      method: "POST",
      body: '{"a":12345678901234567}',
    }),
  );
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.type, "InvalidRequestError");
});

Deno.test("createGateway logs an eval's unexpected error once, with the request id of its first error event; a replay is not logged again", async () => {
  const { logger, entries } = recordingLogger();
  const failure = new Error("stub eval broke");
  const atom = {
    id: "a1",
    result: Promise.reject(failure),
    output: new ReadableStream<never>({ start: (c) => c.close() }),
    replay: () => new ReadableStream<never>({ start: (c) => c.close() }),
    cancel: () => {},
  };
  atom.result.catch(() => {});
  const app = createGateway(
    { ...stubPool(), eval: () => atom, atoms: { get: () => atom } },
    { port: () => 8000, logger, allowEval: true, insecureNoAuth: true },
  );
  const ids: string[] = [];
  for (
    const [path, init] of [
      ["/v1/eval", { method: "POST", body: '{"code": "1"}' }],
      ["/v1/eval/a1/events", { headers: { "x-request-id": "req-replay" } }],
    ] as const
  ) {
    const res = await app.fetch(req(path, init));
    assert.equal(res.status, 200, path);
    const text = await res.text();
    const error = JSON.parse(
      text.slice(text.indexOf("event: error")).split("data: ")[1]!,
    );
    assert.equal(error.type, "InternalError", path);
    assert.equal(error.message, "internal error", path);
    ids.push(error.requestId);
  }
  assert.match(ids[0]!, /^[0-9a-f-]{36}$/);
  assert.equal(ids[1], "req-replay");
  const warnings = entries.filter(([level]) => level === "warn");
  // Once per eval: replays (any number of clients) add no warning.
  assert.deepEqual(warnings, [[
    "warn",
    "Eval failed (request id {requestId}): {error}",
    { error: failure, requestId: ids[0] },
  ]]);
});

Deno.test("An empty token authenticates nothing: createGateway and serve refuse it, and no empty presented token matches", async () => {
  assert.throws(
    () => createGateway(stubPool(), { token: "", port: () => 8000 }),
    (err: unknown) =>
      err instanceof RangeError &&
      err.message ===
        "Cannot create gateway: token is empty (leave it out for no token)",
  );
  // serve() refuses it before it starts a pool (a config built by hand:
  // resolveConfig already refuses tokens under 16 characters).
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-empty-token-" });
  try {
    const config = resolveConfig({
      cwd: dir,
      cli: { port: 0, modelsDir: dir },
    });
    await assert.rejects(
      serve({ ...config, token: "" }),
      (err: unknown) =>
        err instanceof ConfigError && err.message.startsWith("token: empty"),
    );
    // Nor an empty list, nor an empty management token.
    await assert.rejects(
      serve({ ...config, token: [] }),
      (err: unknown) =>
        err instanceof ConfigError && err.message.startsWith("token: empty"),
    );
    await assert.rejects(
      serve({ ...config, token: TOKEN, manageToken: ["", TOKEN + "x"] }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message.startsWith("manageToken: empty"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // Where "" is presented (the dashboard's empty ?token=, an empty or
  // undecodable token subprotocol), it never matches, whatever the token.
  const matches = tokenMatcher("");
  assert.equal(matches(""), false);
  const app = new Hono().use(
    bearerAuth({ token: "", webSocketPath: () => true }),
  ).get("/*", (c) => c.text("served"));
  const ws = {
    upgrade: "websocket",
    connection: "Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
  };
  const tries: Array<[string, Record<string, string>]> = [
    ["/?token=", {}],
    ["/v1/channels/news", {
      ...ws,
      "sec-websocket-protocol": "pyproxy.v1, pyproxy.bearer.",
    }],
    ["/v1/channels/news", {
      ...ws,
      "sec-websocket-protocol": "pyproxy.v1, pyproxy.bearer64.!!",
    }],
    ["/v1/channels/news", {
      ...ws,
      "sec-websocket-protocol": "pyproxy.v1, pyproxy.bearer64.",
    }],
  ];
  for (const [path, headers] of tries) {
    const res = await app.request(`http://127.0.0.1:8000${path}`, { headers });
    assert.equal(res.status, 401, `${path} ${JSON.stringify(headers)}`);
    await res.body?.cancel();
  }
});

Deno.test("createGateway refuses token lists that are empty, too long or repeat one, and a management token that is an inference one or alone", () => {
  const refused: Array<[Parameters<typeof createGateway>[1], RegExp]> = [
    [{ token: [] }, /token is an empty list/],
    [{ token: [TOKEN, TOKEN] }, /token lists a token twice/],
    [
      { token: Array.from({ length: 1025 }, (_, i) => `${TOKEN}${i}`) },
      /token lists 1025 tokens \(at most 1024\)/,
    ],
    [{ token: TOKEN, manageToken: [] }, /manageToken is an empty list/],
    [
      { token: [TOKEN, "other-token-0123456"], manageToken: TOKEN },
      /must differ/,
    ],
    [{ manageToken: TOKEN }, /manageToken requires token/],
  ];
  for (const [options, message] of refused) {
    assert.throws(
      () => createGateway(stubPool(), { port: () => 8000, ...options }),
      (err: unknown) => err instanceof RangeError && message.test(err.message),
      JSON.stringify(options),
    );
  }
});

Deno.test("bearerAuth with a management token: management routes take only it, others take both, ?token= never takes it", async () => {
  const MANAGE = "manage-token-0123456789";
  const app = new Hono().use(bearerAuth({
    token: [TOKEN, "rotated-token-0123456"],
    manageToken: MANAGE,
    manageRoute: (c) => c.req.path === "/admin",
  })).get("/*", (c) => c.text("served"));
  const status = async (path: string, token?: string): Promise<number> => {
    const res = await app.request(path, {
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    });
    await res.body?.cancel();
    return res.status;
  };
  assert.equal(await status("/admin", MANAGE), 200);
  assert.equal(await status("/admin", TOKEN), 403);
  assert.equal(await status("/admin", "rotated-token-0123456"), 403);
  assert.equal(await status("/admin", MANAGE.slice(0, -1)), 401);
  assert.equal(await status("/admin"), 401);
  assert.equal(await status("/v1/status", MANAGE), 200);
  assert.equal(await status("/v1/status", TOKEN), 200);
  assert.equal(await status("/v1/status", "rotated-token-0123456"), 200);
  assert.equal(await status("/v1/status", "a-third-token-0123456"), 401);
  assert.equal(await status(`/?token=${TOKEN}`), 200);
  assert.equal(await status(`/?token=${MANAGE}`), 403);
});

Deno.test({
  name:
    "createGateway leaves no body-read timer once a POST is answered without a signal, nor one dropped by stopSignal, which still answers",
  // The sanitizers on whatever the command line says: they are the assertion.
  sanitizeOps: true,
  sanitizeResources: true,
  fn: async () => {
    const post = () =>
      req("/v1/models/echo/execute", { method: "POST", body: '{"x":1}' });
    // No signal at all (a script calling `app.fetch`): the timer armed for
    // the read is cleared when it ends, not kept for requestTimeout.
    let res = await createGateway(stubPool(), { port: () => 8000 }).fetch(
      post(),
    );
    assert.equal(res.status, 200);
    await res.body?.cancel();
    // A gateway over a pool that lives on, dropped by stopSignal alone.
    const stop = new AbortController();
    const app = createGateway(stubPool(), {
      port: () => 8000,
      stopSignal: stop.signal,
    });
    res = await app.fetch(post());
    assert.equal(res.status, 200);
    await res.body?.cancel();
    stop.abort();
    // Stopped, it still answers (its body read not refused as a drain's).
    res = await app.fetch(post());
    assert.equal(res.status, 200);
    await res.body?.cancel();
  },
});

Deno.test("tokenIdentifier answers each listed token's id and nothing for others, for a rotation's few tokens (each compared) and a token per client (looked up by digest)", () => {
  for (const n of [1, 2, 4, 5, 16, 1024]) {
    const tokens = Array.from(
      { length: n },
      (_, i) => `client-${i}-0123456789abcdef`,
    );
    const identify = tokenIdentifier(tokens);
    const matches = tokenMatcher(tokens);
    for (const t of tokens) {
      assert.equal(identify(t), tokenId(t), `${n}: ${t}`);
      assert.equal(matches(t), true);
    }
    for (
      const other of [
        "",
        `client-${n}-0123456789abcdef`,
        `${tokens[0]} `,
        tokens[0]!.toUpperCase(),
      ]
    ) {
      assert.equal(identify(other), undefined, `${n}: ${other}`);
      assert.equal(matches(other), false);
    }
  }
  // The id is the first 16 hex digits of the token's SHA-256.
  assert.equal(tokenId("tenant-acme-0123456789"), "9836675667cddc8d");
});

Deno.test("tokenIdentifier beyond 4 tokens: two listed tokens whose SHA-256 share their first 4 bytes (a real collision, found by search) are told apart, and an unlisted one in a listed token's bucket is refused", () => {
  // sha256: 3c5da3d702ca2ba7... and 3c5da3d7dffdb6da...
  const a = "collide-90756-0123456789";
  const b = "collide-98844-0123456789";
  assert.equal(tokenId(a).slice(0, 8), tokenId(b).slice(0, 8));
  assert.notEqual(tokenId(a), tokenId(b));
  const others = [1, 2, 3, 4].map((i) => `other-${i}-0123456789abcdef`);
  const both = tokenIdentifier([a, ...others, b]);
  assert.equal(both(a), tokenId(a));
  assert.equal(both(b), tokenId(b));
  assert.equal(both(others[2]!), tokenId(others[2]!));
  const onlyA = tokenIdentifier([...others, a]);
  assert.equal(onlyA(a), tokenId(a));
  assert.equal(onlyA(b), undefined);
  assert.equal(onlyA(""), undefined);
});
