// The call hooks (docs/plugins.md, "Call hooks") behind the gateway: a call
// a plugin's asynchronous onCall holds past the request's ?timeout= is a 504
// that names the plugin, and every model route's call reaches onCall (the
// gateway makes its model calls with pool.execute and pool.executeStream,
// never with pool.request, which goes around the hooks).
import assert from "node:assert/strict";
import type { ModelCall, Plugin } from "../src/plugin.ts";
import { ModelHTTPError } from "../src/errors.ts";
import { tokenId } from "../src/gateway/security.ts";
import { startGateway } from "./_gateway_harness.ts";

Deno.test("Gateway: a call held by a plugin's hung async onCall past ?timeout= is a 504 naming the plugin (waited: plugin), not a wait for hookTimeout", async () => {
  const release: Array<() => void> = [];
  const hang: Plugin = {
    name: "slowquota",
    async onCall(call) {
      if ((call.msg as { hang?: boolean } | null)?.hang === true) {
        await new Promise<void>((resolve) => release.push(resolve));
      }
    },
  };
  await using gw = await startGateway({}, {}, { plugins: [hang] });
  try {
    const res = await gw.fetch("/v1/models/echo/execute?timeout=200", {
      method: "POST",
      body: JSON.stringify({ hang: true }),
    });
    const body = await res.json();
    assert.equal(res.status, 504, JSON.stringify(body));
    assert.equal(body.error.type, "TimeoutError");
    assert.equal(body.error.waited, "plugin");
    assert.match(
      body.error.message,
      /^Cannot run model 'echo': no answer within 200 ms, the request's \?timeout=; it waited all that time for the onCall hook of plugin 'slowquota' and was never sent$/,
    );
  } finally {
    for (const r of release) r();
  }
});

Deno.test("Gateway: every model route's call reaches onCall once (execute, stream, /v2 infer, :predict)", async () => {
  const calls: ModelCall[] = [];
  const rec: Plugin = {
    name: "rec",
    onCall(call) {
      calls.push(call);
    },
  };
  await using gw = await startGateway({}, {}, { plugins: [rec] });
  const post = async (path: string, body: unknown) => {
    const res = await gw.fetch(path, {
      method: "POST",
      body: JSON.stringify(body),
    });
    await res.body?.cancel();
    assert.ok(res.ok, `${path}: ${res.status}`);
  };
  await post("/v1/models/echo/execute", { a: 1 });
  await post("/v1/models/echo/stream", { a: 2 });
  await post("/v2/models/echo/infer", {
    inputs: [{ name: "a", shape: [1], datatype: "INT64", data: [3] }],
  });
  await post("/v1/models/echo:predict", { instances: [{ a: 4 }] });
  assert.deepEqual(
    calls.map((c) => [c.kind, c.model]),
    [
      ["execute", "echo"],
      ["stream", "echo"],
      ["execute", "echo"],
      ["execute", "echo"],
    ],
  );
});

Deno.test("Gateway: onCall's call.caller is the id of the token that let the request in, on every model route, whatever headers the client sends", async () => {
  const acme = "tenant-acme-0123456789";
  const globex = "tenant-globex-0123456";
  const admin = "operator-manage-0123456";
  const calls: ModelCall[] = [];
  const rec: Plugin = {
    name: "rec",
    onCall(call) {
      calls.push(call);
    },
  };
  await using gw = await startGateway(
    {
      token: [acme, globex],
      manageToken: admin,
      forwardHeaders: ["x-tenant"],
    },
    {},
    { plugins: [rec] },
  );
  const post = async (token: string, path: string, body: unknown) => {
    const res = await gw.fetch(path, {
      method: "POST",
      // A header naming another tenant changes nothing: the token decides.
      headers: { authorization: `Bearer ${token}`, "x-tenant": "globex" },
      body: JSON.stringify(body),
    });
    await res.body?.cancel();
    assert.ok(res.ok, `${path}: ${res.status}`);
  };
  // The direct path (a plain execute) and the routed one (a query string).
  await post(acme, "/v1/models/echo/execute", { a: 1 });
  await post(globex, "/v1/models/echo/execute?timeout=5000", { a: 2 });
  await post(acme, "/v1/models/echo/stream", { a: 3 });
  await post(globex, "/v2/models/echo/infer", {
    inputs: [{ name: "a", shape: [1], datatype: "INT64", data: [4] }],
  });
  await post(acme, "/v1/models/echo:predict", { instances: [{ a: 5 }] });
  await post(admin, "/v1/models/echo/execute", { a: 6 });
  assert.deepEqual(
    calls.map((c) => [c.kind, c.caller]),
    [
      ["execute", tokenId(acme)],
      ["execute", tokenId(globex)],
      ["stream", tokenId(acme)],
      ["execute", tokenId(globex)],
      ["execute", tokenId(acme)],
      ["execute", tokenId(admin)],
    ],
  );
  assert.equal(tokenId(acme), "9836675667cddc8d");
  // The client's header still reaches the model's host.headers().
  assert.deepEqual(calls[0]!.headers, { "x-tenant": "globex" });
});

Deno.test("Gateway: without a token, onCall's call.caller is absent", async () => {
  const calls: ModelCall[] = [];
  await using gw = await startGateway({}, {}, {
    plugins: [{ name: "rec", onCall: (call) => void calls.push(call) }],
  });
  const res = await gw.fetch("/v1/models/echo/execute", {
    method: "POST",
    body: JSON.stringify({ a: 1 }),
  });
  await res.body?.cancel();
  assert.equal(res.status, 200);
  assert.equal(calls.length, 1);
  assert.equal("caller" in calls[0]!, false);
});

Deno.test("Gateway: a ModelHTTPError an onCall throws is answered with its status (a per-token model access plugin's 403), the model not run", async () => {
  const acme = "tenant-acme-0123456789";
  const globex = "tenant-globex-0123456";
  const allow: Record<string, string[]> = { [tokenId(globex)]: ["echo"] };
  let ran = 0;
  const access: Plugin = {
    name: "access",
    onCall(call) {
      const models = call.caller === undefined ? undefined : allow[call.caller];
      if (models === undefined || !models.includes(call.model)) {
        throw new ModelHTTPError(
          403,
          `Cannot run model '${call.model}': not allowed for this token`,
        );
      }
    },
    onRequest(msg) {
      if (msg.cmd === "executeModel" || msg.cmd === "executeStream") ran++;
    },
  };
  await using gw = await startGateway({ token: [acme, globex] }, {}, {
    plugins: [access],
  });
  for (const path of ["/v1/models/echo/execute", "/v1/models/echo/stream"]) {
    const res = await gw.fetch(path, {
      method: "POST",
      headers: { authorization: `Bearer ${acme}` },
      body: JSON.stringify({ a: 1 }),
    });
    const body = await res.json();
    assert.equal(res.status, 403, JSON.stringify(body));
    assert.equal(body.error.type, "HTTPError");
    assert.equal(
      body.error.message,
      "Cannot run model 'echo': not allowed for this token",
    );
  }
  assert.equal(ran, 0);
  const ok = await gw.fetch("/v1/models/echo/execute", {
    method: "POST",
    headers: { authorization: `Bearer ${globex}` },
    body: JSON.stringify({ a: 1 }),
  });
  assert.deepEqual(await ok.json(), { a: 1 });
});
