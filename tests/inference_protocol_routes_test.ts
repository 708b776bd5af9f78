// The /v2 routes' HTTP layer over a stand-in pool: what reaches the pool,
// and every refusal (drain, Host, the pool's typed errors) in the
// protocol's error shape with the gateway's status and headers.
import assert from "node:assert/strict";
import { OverloadedError, TimeoutError } from "../src/errors.ts";
import { createGateway } from "../src/gateway/app.ts";
import type { GatewayPool } from "../src/gateway/gateway_pool.ts";

function stubPool(
  execute: GatewayPool["execute"],
  ready = true,
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
      models: [{ name: "m" }],
    }),
    eval: () => {
      throw new Error("not used");
    },
    atoms: { get: () => undefined },
    close: () => Promise.resolve(),
  };
}

function req(path: string, init: RequestInit & { host?: string } = {}) {
  const headers = new Headers(init.headers);
  headers.set("host", init.host ?? "127.0.0.1:8000");
  return new Request(`http://127.0.0.1:8000${path}`, { ...init, headers });
}

const post = (body: unknown, headers: HeadersInit = {}) =>
  req("/v2/models/m/infer", {
    method: "POST",
    headers,
    body: JSON.stringify(body),
  });

Deno.test("inferenceProtocolRoutes: the model gets a dict of reshaped inputs, parameters and its call options", async () => {
  const calls: Array<[string, unknown, unknown]> = [];
  const app = createGateway(
    stubPool((name, msg, options) => {
      calls.push([name, msg, options]);
      return Promise.resolve({ out: [[1, 2]] });
    }),
    { port: () => 8000, requestTimeout: 1234 },
  );
  const res = await app.fetch(post({
    parameters: { top_k: 3 },
    inputs: [
      { name: "x", datatype: "INT32", shape: [2, 1], data: [5, 6] },
      { name: "__proto__", datatype: "BOOL", shape: [], data: [true] },
    ],
  }, { "x-request-id": "r-1" }));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("x-request-id"), "r-1");
  // A model loaded outside the catalog has no version.
  assert.deepEqual(await res.json(), {
    model_name: "m",
    outputs: [{ name: "out", datatype: "INT64", shape: [1, 2], data: [1, 2] }],
  });
  const [name, msg, options] = calls[0]!;
  assert.equal(name, "m");
  assert.deepEqual(Object.entries(msg as object), [
    ["x", [[5], [6]]],
    ["__proto__", true],
    ["parameters", { top_k: 3 }],
  ]);
  // (Deno has no __proto__ accessor: the Bun test is the one that sees a
  // plain assignment drop that input.)
  assert.equal(Object.getPrototypeOf(msg), Object.prototype);
  // The signal: a client that disconnects cancels the call.
  // onResponseMeta: the headers the model sets (host.set_header).
  const { signal, onResponseMeta, ...rest } = options as {
    signal?: AbortSignal;
    onResponseMeta?: unknown;
  };
  assert.ok(signal instanceof AbortSignal);
  assert.equal(typeof onResponseMeta, "function");
  assert.deepEqual(rest, { timeout: 1234, requestId: "r-1" });

  // Optional fields left null (as KServe's Python client writes None) are absent.
  const nulls = await app.fetch(post({
    id: null,
    parameters: null,
    outputs: null,
    inputs: [{
      name: "x",
      datatype: "FP32",
      shape: [1],
      data: [1],
      parameters: null,
    }],
  }));
  assert.equal(nulls.status, 200);
  assert.deepEqual(calls[1]![1], { x: [1] });

  const clash = await app.fetch(post({
    parameters: { a: 1 },
    inputs: [{ name: "parameters", datatype: "INT8", shape: [], data: [1] }],
  }));
  assert.equal(clash.status, 400);
  assert.match((await clash.json()).error, /an input is named "parameters"/);
  assert.equal(calls.length, 2);

  const versioned = await app.fetch(req("/v2/models/m/versions/1"));
  assert.equal(versioned.status, 404);
  assert.match((await versioned.json()).error, /it has no version/);
  const meta = await (await app.fetch(req("/v2/models/m"))).json();
  assert.deepEqual(meta.versions, []);
});

Deno.test("inferenceProtocolRoutes: the pool's typed errors keep their status and headers, in the protocol's shape", async () => {
  for (
    const [err, status, retry] of [
      [new OverloadedError("Cannot accept call: queue full"), 429, "1"],
      [new TimeoutError("Cannot complete call: timed out"), 504, null],
    ] as const
  ) {
    const app = createGateway(stubPool(() => Promise.reject(err)), {
      port: () => 8000,
    });
    const res = await app.fetch(post({ inputs: [] }));
    assert.equal(res.status, status);
    assert.equal(res.headers.get("retry-after"), retry);
    assert.ok(res.headers.get("x-request-id"));
    assert.deepEqual(await res.json(), { error: err.message });
  }
});

Deno.test("inferenceProtocolRoutes: readiness follows the workers and the drain; refusals are in the protocol's shape", async () => {
  const notReady = createGateway(stubPool(() => Promise.resolve(null), false), {
    port: () => 8000,
  });
  const ready = await notReady.fetch(req("/v2/health/ready"));
  assert.equal(ready.status, 503);
  assert.deepEqual(await ready.json(), { ready: false });
  const model = await notReady.fetch(req("/v2/models/m/ready"));
  assert.equal(model.status, 503);
  assert.deepEqual(await model.json(), { name: "m", ready: false });
  assert.equal((await notReady.fetch(req("/v2/health/live"))).status, 200);

  const drain = new AbortController();
  const app = createGateway(stubPool(() => Promise.resolve(null)), {
    port: () => 8000,
    signal: drain.signal,
  });
  const host = await app.fetch(req("/v2", { host: "evil.example:8000" }));
  assert.equal(host.status, 403);
  assert.equal(typeof (await host.json()).error, "string");
  drain.abort();
  const draining = await app.fetch(post({ inputs: [] }));
  assert.equal(draining.status, 503);
  assert.equal(draining.headers.get("retry-after"), "5");
  assert.deepEqual(await draining.json(), {
    error: "Cannot serve request: the server is shutting down",
  });
  // The /v1 routes keep their shape.
  const v1 = await app.fetch(req("/v1/models"));
  assert.equal((await v1.json()).error.type, "ShuttingDownError");
});
