// The call hooks (docs/plugins.md, "Call hooks") behind the gateway: a call
// a plugin's asynchronous onCall holds past the request's ?timeout= is a 504
// that names the plugin, and every model route's call reaches onCall (the
// gateway makes its model calls with pool.execute and pool.executeStream,
// never with pool.request, which goes around the hooks).
import assert from "node:assert/strict";
import type { ModelCall, Plugin } from "../src/plugin.ts";
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
