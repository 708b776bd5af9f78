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
import { tempDir, waitFor } from "./_harness.ts";
import { bearer, OPERATOR, TENANT_A } from "./_tenants.ts";

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

Deno.test("Gateway: a tenant's token reads a call held by a plugin's onCall past its timeout without the plugin's name and the operator's settings (the operator's names them)", async () => {
  await using dir = await tempDir("pyproxy-call-hooks-tenant-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT_A} tenant\n`, {
    mode: 0o600,
  });
  const release: Array<() => void> = [];
  const hang: Plugin = {
    name: "slowquota",
    async onCall(call) {
      if ((call.msg as { hang?: boolean } | null)?.hang === true) {
        await new Promise<void>((resolve) => release.push(resolve));
      }
    },
  };
  await using gw = await startGateway(
    { tokenFile, limits: { requestTimeout: 400 } },
    {},
    { plugins: [hang] },
  );
  try {
    const held = async (token: string, query: string) => {
      const res = await gw.fetch(`/v1/models/echo/execute${query}`, {
        method: "POST",
        body: JSON.stringify({ hang: true }),
        headers: bearer(token),
      });
      const body = await res.json();
      assert.equal(res.status, 504, JSON.stringify(body));
      assert.equal(body.error.type, "TimeoutError");
      assert.equal(body.error.waited, "plugin");
      return body.error.message as string;
    };
    const tenant = await held(TENANT_A, "?timeout=200");
    assert.equal(
      tenant,
      "Cannot run model 'echo': no answer within 200 ms, the request's ?timeout=; it waited all that time in the gateway and was never sent to the model (safe to retry)",
    );
    // The model's own timeout (no ?timeout=): named as such, no setting.
    const own = await held(TENANT_A, "");
    assert.doesNotMatch(
      own,
      /slowquota|plugin|limits\.|serve --|pyproxy\.json/,
    );
    assert.match(
      own,
      /^Cannot run model 'echo': no answer within \d+ ms, the model's timeout; /,
    );
    // The operator's token: the plugin and the setting, as before.
    assert.match(
      await held(OPERATOR, "?timeout=200"),
      /the onCall hook of plugin 'slowquota' and was never sent$/,
    );
  } finally {
    for (const r of release) r();
  }
});

Deno.test("Gateway: a tenant's token reads a plugin's failed onCall (a bug's error) without the plugin's name, its hook and what its error said (the operator's names them)", async () => {
  await using dir = await tempDir("pyproxy-call-hooks-tenant-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT_A} tenant\n`, {
    mode: 0o600,
  });
  const broken: Plugin = {
    name: "quotadb",
    onCall() {
      throw new Error("connect ECONNREFUSED 10.0.3.7:6379");
    },
  };
  await using gw = await startGateway({ tokenFile }, {}, {
    plugins: [broken],
  });
  const failed = async (token: string) => {
    const res = await gw.fetch("/v1/models/echo/execute", {
      method: "POST",
      body: "{}",
      headers: bearer(token),
    });
    const body = await res.json();
    assert.equal(res.status, 500, JSON.stringify(body));
    assert.equal(body.error.type, "PluginError");
    return body.error.message as string;
  };
  assert.equal(
    await failed(TENANT_A),
    "Cannot complete call: the gateway failed it (an internal error, in the operator's log)",
  );
  assert.match(
    await failed(OPERATOR),
    /plugin 'quotadb'.*ECONNREFUSED 10\.0\.3\.7/,
  );
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

Deno.test("Gateway: a token file of 1000 tokens, one per tenant, with a comment line each: each token lets its calls in as its own caller, any other gets 401; one tenant rotated leaves the others be", async () => {
  const tokens = Array.from(
    { length: 1000 },
    (_, i) => `tenant-${String(i).padStart(4, "0")}-0123456789abcdef`,
  );
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/tokens`;
    await Deno.writeTextFile(
      file,
      tokens.map((t, i) => `# tenant ${i}\n${t}\n`).join(""),
      { mode: 0o600 },
    );
    const callers: Array<string | undefined> = [];
    await using gw = await startGateway(
      {
        tokenFile: file,
        tokenFileInterval: 100,
      },
      {},
      {
        plugins: [{
          name: "rec",
          onCall: (call) => void callers.push(call.caller),
        }],
      },
    );
    const post = async (token: string, path: string): Promise<number> => {
      const res = await gw.fetch(path, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
        body: JSON.stringify({ a: 1 }),
      });
      await res.body?.cancel();
      return res.status;
    };
    const picked = [0, 1, 499, 998, 999];
    for (const i of picked) {
      assert.equal(await post(tokens[i]!, "/v1/models/echo/execute"), 200);
      assert.equal(
        await post(tokens[i]!, "/v1/models/echo/execute?timeout=5000"),
        200,
      );
    }
    assert.deepEqual(
      callers,
      picked.flatMap((i) => [tokenId(tokens[i]!), tokenId(tokens[i]!)]),
    );
    for (
      const wrong of [
        "tenant-1000-0123456789abcdef",
        `${tokens[5]}x`,
        tokens[5]!.slice(1),
      ]
    ) {
      assert.equal(await post(wrong, "/v1/models/echo/execute"), 401);
      assert.equal(await post(wrong, "/v1/status"), 401);
    }
    assert.equal(callers.length, picked.length * 2);
    // One tenant's token rotated in the file (written aside, renamed over):
    // its old token refused once the poll read it, its new one let in as a
    // new caller, the others as before.
    const rotated = [...tokens];
    rotated[499] = "tenant-0499-rotated-0123456789";
    await Deno.writeTextFile(`${file}.new`, rotated.join("\n"), {
      mode: 0o600,
    });
    await Deno.rename(`${file}.new`, file);
    await waitFor(async () =>
      (await post(tokens[499]!, "/v1/models/echo/execute")) === 401
    );
    callers.length = 0;
    assert.equal(await post(rotated[499]!, "/v1/models/echo/execute"), 200);
    assert.equal(await post(tokens[998]!, "/v1/models/echo/execute"), 200);
    assert.deepEqual(callers, [tokenId(rotated[499]!), tokenId(tokens[998]!)]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
