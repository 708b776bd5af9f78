/**
 * What a tenant's token is shown of the operator's set-up: a 429 without
 * the queue's depth and limits, a 405 and `/openapi.json` alike whether
 * eval and management are on or off, a model's `/v2` config without its
 * workers' count and its description without its workers. Operators'
 * tokens see what they saw before.
 */
import assert from "node:assert/strict";
import {
  ModelHTTPError,
  ModelUnavailableError,
  OverloadedError,
} from "../src/errors.ts";
import { createGateway } from "../src/gateway/app.ts";
import { tokenId } from "../src/gateway/security.ts";
import type { Plugin } from "../src/plugin.ts";
import { tenantError, tenantModelView } from "../src/gateway/_tenant_view.ts";
import type { GatewayPool } from "../src/gateway/gateway_pool.ts";
import { tempDir } from "./_harness.ts";
import { startGateway, until } from "./_gateway_harness.ts";

const OPERATOR = "9f1c6ad2e07b4b3c8e5d1a6f2b7c9e04";
const TENANT = "4a8e2c7f1b9d3e6a0c5f8b2d7e1a4c9f";

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Answers once `msg.release` exists (a file the test writes). */
const GATE = {
  "gate.py": `import os
import time


class Gate:
    def execute(self, msg):
        deadline = time.monotonic() + 20
        while not os.path.exists(msg["release"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"released": True}
`,
  "crash.py": `import os


class Crash:
    def execute(self, msg):
        os._exit(3)
`,
};

Deno.test("serve shows a tenant's token a 429 without the queue's depth and limits, a /v2 config without the workers' count and descriptions without their workers; the operator's as before", async () => {
  await using dir = await tempDir("pyproxy-tenant-view-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT} tenant\n`, {
    mode: 0o600,
  });
  const release = `${dir.path}/release`;
  await using gw = await startGateway({
    tokenFile,
    workers: 1,
    limits: { maxInFlightPerWorker: 1, maxQueue: 0 },
    models: [
      { name: "gate", file: "gate.py" },
      { name: "echo", file: "echo.py", workers: 1 },
      { name: "crash", file: "crash.py" },
    ],
  }, GATE);
  const gated = gw.fetch("/v1/models/gate/execute", {
    method: "POST",
    body: JSON.stringify({ release }),
    headers: bearer(OPERATOR),
  });
  try {
    await until(
      async () =>
        (await (await gw.fetch("/v1/status", { headers: bearer(OPERATOR) }))
          .json()).inFlight === 1,
      "the gated call in flight",
    );
    const refused = async (token: string, query = "") => {
      const res = await gw.fetch(`/v1/models/echo/execute${query}`, {
        method: "POST",
        body: '{"a":1}',
        headers: bearer(token),
      });
      assert.equal(res.status, 429);
      assert.equal(res.headers.get("retry-after"), "1");
      const { error } = await res.json();
      assert.equal(error.type, "OverloadedError");
      return error.message as string;
    };
    // The direct path (no query string) and the routed one.
    for (const query of ["", "?timeout=5000"]) {
      assert.equal(
        await refused(TENANT, query),
        "Cannot accept call: the model's queue is full; retry later",
      );
      assert.match(
        await refused(OPERATOR, query),
        /0 calls wait for a worker \(limits\.maxQueue 0, serve --max-queue\) .* run 1 each \(limits\.maxInFlightPerWorker, serve --max-in-flight\)/,
      );
    }
  } finally {
    await Deno.writeTextFile(release, "");
    await (await gated).body?.cancel();
  }
  const read = async (path: string, token: string) => {
    const res = await gw.fetch(path, { headers: bearer(token) });
    assert.equal(res.status, 200, path);
    return await res.json();
  };
  // The /v2 config (and so gRPC's ModelConfig, read from it).
  assert.deepEqual(
    (await read("/v2/models/echo/config", TENANT)).instance_group,
    [{ name: "echo", kind: "KIND_CPU" }],
  );
  assert.deepEqual(
    (await read("/v2/models/echo/config", OPERATOR)).instance_group,
    [{ name: "echo", kind: "KIND_CPU", count: 1 }],
  );
  // A placed model's description: its workers and slots (worker ids).
  for (const path of ["/v1/models/echo", "/v1/models"]) {
    const tenant = await read(path, TENANT);
    const operator = await read(path, OPERATOR);
    const echo = (body: { models?: Array<{ name: string }> }) =>
      (body.models?.find((m) => m.name === "echo") ?? body) as Record<
        string,
        unknown
      >;
    assert.equal(echo(tenant).workers, undefined, path);
    assert.equal(echo(tenant).slots, undefined, path);
    assert.equal(echo(operator).workers, 1, path);
    assert.equal((echo(operator).slots as string[]).length, 1, path);
  }
  // A worker's crash: which call failed, not the worker, its pid, nor the
  // calls it was running (other tenants' calls, by model).
  const crash = async (token: string) => {
    await until(async () => {
      const res = await gw.fetch("/healthz");
      await res.body?.cancel();
      return res.status === 200;
    }, "a ready worker");
    const res = await gw.fetch("/v1/models/crash/execute", {
      method: "POST",
      body: "{}",
      headers: bearer(token),
    });
    assert.equal(res.status, 502);
    const { error } = await res.json();
    assert.equal(error.type, "WorkerCrashedError");
    return error;
  };
  const tenantCrash = await crash(TENANT);
  assert.deepEqual(Object.keys(tenantCrash).sort(), [
    "message",
    "requestId",
    "type",
  ]);
  assert.equal(
    tenantCrash.message,
    "Cannot run model 'crash': the worker running it died before it completed",
  );
  const operatorCrash = await crash(OPERATOR);
  assert.match(
    operatorCrash.message,
    /^Cannot run model 'crash': worker w\d+ \(pid \d+\) died: exited with code 3 while running: crash \(1 call\)$/,
  );
  assert.deepEqual(operatorCrash.inFlight, { crash: 1 });
});

function stubPool(): GatewayPool {
  return {
    execute: (_n, msg) => Promise.resolve(msg),
    addModel: () => Promise.resolve({}),
    updateModel: () => Promise.resolve({}),
    removeModel: () => Promise.resolve({}),
    status: () => ({
      workers: [{
        id: "w1",
        pid: 1,
        state: "ready",
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

Deno.test("createGateway answers a tenant's token's 405s and /openapi.json alike whether eval and management are on or off (the operator's name the flags as before)", async () => {
  const answers = async (on: boolean, token: string) => {
    const app = createGateway(stubPool(), {
      port: () => 8000,
      token: [OPERATOR, TENANT],
      tenantToken: [TENANT],
      allowEval: on,
      allowManage: on,
      stopSignal: AbortSignal.abort(),
    });
    const out: Array<[number, string | null, unknown]> = [];
    for (
      const [method, path] of [
        ["GET", "/v1/eval"] as const,
        ["PATCH", "/v1/models/echo"],
        ["GET", "/v1/workers"],
        ["GET", "/openapi.json"],
        ["GET", "/v2"],
      ]
    ) {
      const res = await app.request(`http://localhost:8000${path}`, {
        method,
        headers: bearer(token),
      });
      out.push([res.status, res.headers.get("allow"), await res.json()]);
    }
    return out;
  };
  const tenantOn = await answers(true, TENANT);
  assert.deepEqual(tenantOn, await answers(false, TENANT));
  assert.deepEqual(
    tenantOn.slice(0, 3).map(([status, allow, body]) => [
      status,
      allow,
      (body as { error: { message: string } }).error.message,
    ]),
    [
      [405, "", "Cannot GET /v1/eval: allowed: none"],
      [405, "GET, HEAD", "Cannot PATCH /v1/models/echo: allowed: GET, HEAD"],
      [405, "", "Cannot GET /v1/workers: allowed: none"],
    ],
  );
  const paths = (doc: unknown) =>
    Object.keys((doc as { paths: Record<string, unknown> }).paths);
  assert.ok(!paths(tenantOn[3]![2]).includes("/v1/eval"));
  // The operator's, as before: what is on, and the flag of what is off.
  const operatorOn = await answers(true, OPERATOR);
  const operatorOff = await answers(false, OPERATOR);
  assert.equal(
    (operatorOn[0]![2] as { error: { message: string } }).error.message,
    "Cannot GET /v1/eval: allowed: POST",
  );
  assert.equal(
    (operatorOff[0]![2] as { error: { message: string } }).error.message,
    "Cannot GET /v1/eval: allowed: none; POST with --allow-eval",
  );
  assert.ok(paths(operatorOn[3]![2]).includes("/v1/eval"));
  // The /v2 server metadata's extensions: the repository's with management.
  const extensions = (doc: unknown) =>
    (doc as { extensions: string[] }).extensions;
  assert.ok(!extensions(tenantOn[4]![2]).includes("model_repository"));
  assert.ok(extensions(operatorOn[4]![2]).includes("model_repository"));
  assert.ok(!extensions(operatorOff[4]![2]).includes("model_repository"));
});

Deno.test("tenantError words a model out of service without the workers it crashed and their exits, and keeps other errors", () => {
  const out = new ModelUnavailableError(
    "Cannot call model 'bad': it crashed workers w1, w2 (pid 4242: exited with code 3) ...",
    {
      details: {
        model: "bad",
        version: "2",
        crashed: ["w1", "w2"],
        lastExit: "pid 4242: exited with code 3",
      },
    },
  );
  const shown = tenantError(out) as ModelUnavailableError;
  assert.ok(shown instanceof ModelUnavailableError);
  assert.equal(
    shown.message,
    "Cannot call model 'bad' version '2': it is out of service (it crashed the workers it ran on) until the operator loads it again",
  );
  assert.deepEqual(shown.details, { model: "bad", version: "2" });
  // Out of service for a load that failed on a restart: said so, without
  // the worker nor the load's error (paths).
  const load = new ModelUnavailableError(
    "Cannot route call executeModel: model 'bad' is out of service: its load failed on restarted worker w1: FileNotFoundError: '/srv/models/w.bin' ...",
    {
      details: {
        model: "bad",
        loadFailedOn: "w1",
        loadError: "FileNotFoundError: '/srv/models/w.bin'",
        exception: "FileNotFoundError",
      },
    },
  );
  const loadShown = tenantError(load) as ModelUnavailableError;
  assert.equal(
    loadShown.message,
    "Cannot call model 'bad': it is out of service (its code no longer loads) until the operator loads it again",
  );
  assert.deepEqual(loadShown.details, { model: "bad" });
  // A plugin's quota (no maxQueue): its own words.
  const quota = new OverloadedError("Cannot run call: quota used up", {
    details: { retryAfterMs: 60_000 },
  });
  assert.equal(tenantError(quota), quota);
  const other = new Error("x");
  assert.equal(tenantError(other), other);
});

Deno.test("tenantModelView leaves out a model's workers and the operator's diagnostics of them, and says it is out of service without naming a worker", () => {
  assert.deepEqual(
    tenantModelView({
      name: "bad",
      workers: 2,
      slots: ["w1", "w2"],
      failedReason: "worker w1 (pid 4242) died: exited with code 3 ...",
      suspected: { deaths: [], strikes: 1 } as never,
      threaded: "its inline call held worker w2's loop",
    }),
    { name: "bad", failedReason: "it crashed the workers it ran on" },
  );
  assert.deepEqual(
    tenantModelView({
      name: "bad",
      failedReason:
        "its load failed on restarted worker w1: FileNotFoundError: '/srv/models/w.bin'",
    }),
    { name: "bad", failedReason: "its code no longer loads" },
  );
  const plain = { name: "echo" };
  assert.equal(tenantModelView(plain), plain);
});

Deno.test("createGateway answers an OPTIONS without a token (let in for preflights) alike whether eval and management are on or off, where tokens are set", async () => {
  const answers = async (on: boolean, tenants: boolean) => {
    const app = createGateway(stubPool(), {
      port: () => 8000,
      token: [OPERATOR, TENANT],
      ...(tenants ? { tenantToken: [TENANT] } : {}),
      allowEval: on,
      allowManage: on,
      stopSignal: AbortSignal.abort(),
    });
    const out: Array<[number, string | null, unknown]> = [];
    for (const path of ["/v1/eval", "/v1/models/echo", "/v1/workers"]) {
      const res = await app.request(`http://localhost:8000${path}`, {
        method: "OPTIONS",
      });
      out.push([res.status, res.headers.get("allow"), await res.json()]);
    }
    return out;
  };
  for (const tenants of [true, false]) {
    const on = await answers(true, tenants);
    // Before: "allowed: POST" with eval on, "allowed: none; POST with
    // --allow-eval" off (the Allow header and the flags), to anyone.
    assert.deepEqual(on, await answers(false, tenants), `tenants: ${tenants}`);
    assert.deepEqual(
      on.map(([status, allow, body]) => [
        status,
        allow,
        (body as { error: { message: string } }).error.message,
      ]),
      [
        [405, "", "Cannot OPTIONS /v1/eval: allowed: none"],
        [
          405,
          "GET, HEAD",
          "Cannot OPTIONS /v1/models/echo: allowed: GET, HEAD",
        ],
        [405, "", "Cannot OPTIONS /v1/workers: allowed: none"],
      ],
    );
  }
  // Without tokens (nobody to keep it from), the operator's answer as before.
  const open = createGateway(stubPool(), {
    port: () => 8000,
    allowEval: true,
    insecureNoAuth: true,
    stopSignal: AbortSignal.abort(),
  });
  const res = await open.request("http://localhost:8000/v1/eval", {
    method: "OPTIONS",
  });
  assert.equal(res.headers.get("allow"), "POST");
  await res.body?.cancel();
});

Deno.test("serve shows a tenant's token a model out of service in GET /v1/models/{name} (TF Serving's model_version_status) without the workers it crashed, their exits and the operator's settings; the operator's as before", async () => {
  await using dir = await tempDir("pyproxy-tenant-view-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT} tenant\n`, {
    mode: 0o600,
  });
  // As gateway_placement_test's: out of service at its first slot given up.
  await using gw = await startGateway({
    tokenFile,
    workers: 3,
    models: [{ name: "crash", file: "crash.py", workers: 1 }],
    limits: { shutdownGrace: 2000, maxRelocations: 0 },
    plugins: {
      reconnect: {
        backoff: { initial: 10, max: 20 },
        heartbeatInterval: 0,
        maxCrashes: 1,
        failedRetryAfter: 0,
      },
    },
  }, GATE);
  const call = async () => {
    const res = await gw.fetch("/v1/models/crash/execute", {
      method: "POST",
      body: "{}",
      headers: bearer(OPERATOR),
    });
    await res.body?.cancel();
    return res.status;
  };
  assert.deepEqual([await call(), await call(), await call()], [
    502,
    502,
    503,
  ]);
  for (const path of ["/v1/models/crash", "/v1/models/crash/versions/1"]) {
    const tenant = await gw.fetch(path, { headers: bearer(TENANT) });
    assert.equal(tenant.status, 503, path);
    const text = await tenant.text();
    // Before: "out of service: it crashed the workers it was placed on once
    // within 600000 ms (w1: ...), past limits.maxRelocations 0; last: worker
    // w1 crashed 2 times within 60000 ms; last: exited with code 3", where
    // its failedReason beside it said "it crashed the workers it ran on".
    assert.doesNotMatch(
      text,
      /\bw\d\b|exited|maxRelocations|allow-manage/,
      `${path}: ${text}`,
    );
    assert.deepEqual(JSON.parse(text).model_version_status[0].status, {
      error_code: "UNAVAILABLE",
      error_message: "out of service: it crashed the workers it ran on",
    });
    const operator = await gw.fetch(path, { headers: bearer(OPERATOR) });
    assert.match(
      (await operator.json()).model_version_status[0].status.error_message,
      /^out of service: it crashed the workers it was placed on .*\bw\d\b.*maxRelocations 0.*exited with code 3/,
    );
  }
});

Deno.test("serve shows a tenant's token a placed model's 503 for want of a ready worker without its workers and their states; the operator's as before", async () => {
  await using dir = await tempDir("pyproxy-tenant-view-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT} tenant\n`, {
    mode: 0o600,
  });
  // Each slot given up at its second death (no call in flight: the model
  // is not blamed, and moves to the other slot, then has none).
  await using gw = await startGateway({
    tokenFile,
    workers: 2,
    models: [{ name: "one", file: "echo.py", workers: 1 }],
    plugins: {
      reconnect: {
        backoff: { initial: 10, max: 20 },
        heartbeatInterval: 0,
        maxCrashes: 1,
        failedRetryAfter: 0,
      },
    },
  });
  type Status = {
    workers: Array<{ id: string; state: string; pid: number | null }>;
    models: Array<{ name: string; slots?: string[] }>;
  };
  const status = async (): Promise<Status> =>
    await (await gw.fetch("/v1/status", { headers: bearer(OPERATOR) })).json();
  const call = (token: string) =>
    gw.fetch("/v1/models/one/execute", {
      method: "POST",
      body: "{}",
      headers: bearer(token),
    });
  // Kill the worker holding it until every worker has failed for good.
  for (let kills = 0; kills < 8; kills++) {
    const now = await status();
    if (now.workers.every((w) => w.state === "failed")) break;
    const slot = now.models.find((m) => m.name === "one")?.slots?.[0];
    const worker = now.workers.find((w) => w.id === slot && w.pid !== null);
    if (worker === undefined) {
      await until(async () => {
        const s = await status();
        return s.workers.some((w) =>
          w.id === s.models.find((m) => m.name === "one")?.slots?.[0] &&
          w.state === "ready"
        ) || s.workers.every((w) => w.state === "failed");
      }, "its slot ready, or every worker failed");
      continue;
    }
    Deno.kill(worker.pid!, "SIGKILL");
    await until(async () => {
      const w = (await status()).workers.find((x) => x.id === worker.id);
      return w !== undefined && w.pid !== worker.pid;
    }, `worker ${worker.id} gone`);
  }
  const tenant = await call(TENANT);
  assert.equal(tenant.status, 503);
  const { error } = await tenant.json();
  // Before: "... no worker of model 'one' is ready (it is placed on w2 failed)".
  assert.equal(error.type, "NoWorkerError");
  assert.equal(
    error.message,
    "Cannot route call: no worker of model 'one' is ready",
  );
  const operator = await call(OPERATOR);
  assert.equal(operator.status, 503);
  assert.match(
    (await operator.json()).error.message,
    /no worker of model 'one' is ready \(it is placed on w\d failed\)$/,
  );
});

Deno.test("serve shows a token only the models a plugin's canCall lets it call (GET /v1/models, /openapi.json; the descriptions of another, /v1 and /v2: 404 as a model that is not there); the operator's every model", async () => {
  await using dir = await tempDir("pyproxy-tenant-view-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT} tenant\n`, {
    mode: 0o600,
  });
  const tenantId = tokenId(TENANT);
  const allow: Record<string, string[]> = { [tenantId]: ["echo"] };
  const access: Plugin = {
    name: "access",
    // The operator's token: every model; a tenant's: its list.
    canCall: (model, caller) =>
      caller === undefined || allow[caller] === undefined ||
      allow[caller].includes(model),
  };
  await using gw = await startGateway(
    {
      tokenFile,
      models: [
        { name: "echo", file: "echo.py" },
        { name: "doubler", file: "doubler.py" },
      ],
    },
    {},
    { plugins: [access] },
  );
  const names = async (token: string) => {
    const res = await gw.fetch("/v1/models", { headers: bearer(token) });
    assert.equal(res.status, 200);
    return ((await res.json()).models as { name: string }[])
      .map((m) => m.name).sort();
  };
  assert.deepEqual(await names(TENANT), ["echo"]);
  assert.deepEqual(await names(OPERATOR), ["doubler", "echo"]);
  const one = async (token: string, name: string) => {
    const res = await gw.fetch(`/v1/models/${name}`, {
      headers: bearer(token),
    });
    return { status: res.status, body: await res.json() };
  };
  const hidden = await one(TENANT, "doubler");
  assert.equal(hidden.status, 404);
  assert.equal(hidden.body.error.type, "ModelNotFoundError");
  assert.equal(hidden.body.error.message, "Cannot find model 'doubler'");
  assert.equal((await one(TENANT, "echo")).status, 200);
  assert.equal((await one(OPERATOR, "doubler")).status, 200);
  // Its other descriptions: 404 alike (the /v2 ones in their own shape).
  for (
    const path of [
      "/v1/models/doubler/metadata",
      "/v1/models/doubler/versions/1",
      "/v2/models/doubler",
      "/v2/models/doubler/ready",
      "/v2/models/doubler/config",
      "/v2/models/doubler/versions/1",
    ]
  ) {
    const res = await gw.fetch(path, { headers: bearer(TENANT) });
    assert.equal(res.status, 404, path);
    await res.body?.cancel();
    const op = await gw.fetch(path, { headers: bearer(OPERATOR) });
    assert.notEqual(op.status, 404, `the operator's ${path}`);
    await op.body?.cancel();
  }
  // /openapi.json: the paths of the models it may call only.
  const paths = async (token: string) => {
    const res = await gw.fetch("/openapi.json", { headers: bearer(token) });
    return Object.keys((await res.json()).paths);
  };
  const tenantPaths = await paths(TENANT);
  assert.ok(tenantPaths.some((p) => p.includes("/echo")), "echo's paths");
  assert.ok(!tenantPaths.some((p) => p.includes("doubler")), "no doubler");
  assert.ok((await paths(OPERATOR)).some((p) => p.includes("doubler")));
  // Again (a document kept for another token is not answered).
  assert.ok(!(await paths(TENANT)).some((p) => p.includes("doubler")));
});

Deno.test("serve's 404 of an unknown model names to a token only the models a plugin's canCall lets it call (its did-you-mean, its list of those loaded)", async () => {
  await using dir = await tempDir("pyproxy-tenant-view-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT} tenant\n`, {
    mode: 0o600,
  });
  const tenantId = tokenId(TENANT);
  const allow: Record<string, string[]> = { [tenantId]: ["echo"] };
  const access: Plugin = {
    name: "access",
    canCall: (model, caller) =>
      caller === undefined || allow[caller] === undefined ||
      allow[caller].includes(model),
  };
  await using gw = await startGateway(
    {
      tokenFile,
      models: [
        { name: "echo", file: "echo.py" },
        { name: "secret-doubler", file: "doubler.py" },
      ],
    },
    {},
    { plugins: [access] },
  );
  const miss = async (token: string, path: string) => {
    const res = await gw.fetch(path, {
      method: "POST",
      headers: { ...bearer(token), "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(res.status, 404, path);
    // /v2: `{ error: message }`; /v1: `{ error: { message } }`.
    const { error } = await res.json();
    return (typeof error === "string" ? error : error.message) as string;
  };
  for (
    const path of [
      "/v1/models/secret-double/execute",
      "/v1/models/secret-double/stream",
    ]
  ) {
    // A near miss of the hidden model: no hint naming it.
    const near = await miss(TENANT, path);
    assert.doesNotMatch(near, /secret-doubler/, `${path}: ${near}`);
    // The operator's: the hint, as before.
    assert.match(await miss(OPERATOR, path), /did you mean 'secret-doubler'/);
  }
  // No near miss: the list of those loaded holds only the tenant's.
  const far = await miss(TENANT, "/v1/models/zzzzzzzz/execute");
  assert.doesNotMatch(far, /secret-doubler/, far);
  assert.match(far, /echo/);
  assert.match(
    await miss(OPERATOR, "/v1/models/zzzzzzzz/execute"),
    /secret-doubler/,
  );
});

Deno.test("serve answers a token's call of a model a plugin's canCall hides from it as one of a model not there (404 before its body, execute, stream, /v2 infer, :predict), not the plugin's 403 after it", async () => {
  await using dir = await tempDir("pyproxy-tenant-view-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT} tenant\n`, {
    mode: 0o600,
  });
  const tenantId = tokenId(TENANT);
  const may = (model: string, caller: string | undefined) =>
    caller !== tenantId || model === "echo";
  const access: Plugin = {
    name: "access",
    canCall: may,
    onCall(call) {
      if (!may(call.model, call.caller)) {
        throw new ModelHTTPError(403, `Cannot run model '${call.model}'`);
      }
    },
  };
  await using gw = await startGateway(
    {
      tokenFile,
      models: [
        { name: "echo", file: "echo.py" },
        { name: "doubler", file: "doubler.py" },
      ],
    },
    {},
    { plugins: [access] },
  );
  const answer = async (token: string, path: string) => {
    const res = await gw.fetch(path, {
      method: "POST",
      headers: { ...bearer(token), "content-type": "application/json" },
      body: path.includes("/v2/")
        ? JSON.stringify({
          inputs: [{ name: "x", shape: [1], datatype: "FP64", data: [1] }],
        })
        : path.endsWith(":predict")
        ? JSON.stringify({ instances: [{ x: 1 }] })
        : JSON.stringify({ x: 1 }),
    });
    return { status: res.status, text: await res.text() };
  };
  for (
    const path of [
      "/v1/models/{}/execute",
      "/v1/models/{}/stream",
      "/v2/models/{}/infer",
      "/v1/models/{}:predict",
    ]
  ) {
    const hidden = await answer(TENANT, path.replace("{}", "doubler"));
    const absent = await answer(TENANT, path.replace("{}", "nothere"));
    assert.equal(hidden.status, 404, `${path}: ${hidden.text}`);
    assert.equal(absent.status, 404, path);
    // The same words but for the name: nothing tells them apart.
    assert.equal(
      hidden.text.replace(/"requestId":"[^"]*"/, ""),
      absent.text.replaceAll("nothere", "doubler").replace(
        /"requestId":"[^"]*"/,
        "",
      ),
      path,
    );
    // The operator's: the model is there for it (it runs; :predict's
    // instances are a batch the doubler reads no x from: its own 400).
    const op = await answer(OPERATOR, path.replace("{}", "doubler"));
    assert.equal(
      op.status,
      path.endsWith(":predict") ? 400 : 200,
      `the operator's ${path}: ${op.text}`,
    );
  }
});
