/**
 * Tenants' tokens: a token file's lines marked `tenant` call models but
 * are refused the operator's routes (403 `ForbiddenToken`, logged), and
 * see no `--debug` details; a poll that moves a mark applies it.
 */
import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import { createGateway } from "../src/gateway/app.ts";
import type { ResolvedConfig } from "../src/gateway/config.ts";
import { tokenId } from "../src/gateway/security.ts";
import { readTokenFiles } from "../src/gateway/_token_files.ts";
import { TOKEN_FILE_INTERVAL_FLOOR } from "../src/gateway/_token_file_interval.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import { tempDir, waitFor } from "./_harness.ts";
import { SseReader, startGateway, withLogs } from "./_gateway_harness.ts";
import type { GatewayPool } from "../src/gateway/gateway_pool.ts";

const OPERATOR = "9f1c6ad2e07b4b3c8e5d1a6f2b7c9e04";
const TENANT_A = "4a8e2c7f1b9d3e6a0c5f8b2d7e1a4c9f";
const TENANT_B = "c3e7a1f9b5d2e8c4a6f0b3d9e7c1a5f2";

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** The operator's routes, as a tenant's token may not ask them. */
const OPERATOR_ROUTES: Array<[string, string]> = [
  ["GET", "/v1/status"],
  ["GET", "/metrics"],
  ["GET", "/metrics?format=json"],
  ["GET", "/"],
  ["GET", "/v1/channels"],
  ["POST", "/v1/channels/news"],
  ["GET", "/v2/models/stats"],
  ["GET", "/v2/models/echo/stats"],
  ["GET", "/v2/models/echo/versions/1/stats"],
  ["PUT", "/v1/workers"],
  ["PUT", "/v1/models/echo"],
  ["DELETE", "/v1/models/echo"],
  ["POST", "/v2/repository/index"],
  ["POST", "/v1/eval"],
  // A model's result published to a channel not the tenant's own (news).
  ["POST", "/v1/models/echo/execute?publish=news"],
];

Deno.test("serve refuses a token file's tenant tokens the operator's routes (403 ForbiddenToken, logged) and serves them the models, without --debug details", async () => {
  await using dir = await tempDir("pyproxy-tenant-tokens-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(
    tokenFile,
    `# operator\n${OPERATOR}\n# tenant a\n${TENANT_A} tenant\n# tenant b\n${TENANT_B}\ttenant\n`,
    { mode: 0o600 },
  );
  await withLogs(async (records) => {
    await using gw = await startGateway({
      tokenFile,
      debug: true,
      allowEval: true,
      allowManage: true,
    });
    for (const [method, path] of OPERATOR_ROUTES) {
      const res = await gw.fetch(path, {
        method,
        headers: bearer(TENANT_A),
        ...(method === "GET" ? {} : { body: "{}" }),
      });
      const text = await res.text();
      assert.equal(res.status, 403, `${method} ${path}: ${text}`);
      const body = JSON.parse(text);
      if (path.startsWith("/v2/")) {
        // The Open Inference Protocol's shape: {"error": "<message>"}.
        assert.match(body.error, /a tenant's/, `${method} ${path}`);
      } else {
        assert.equal(body.error.type, "ForbiddenToken", `${method} ${path}`);
        assert.match(body.error.message, /a tenant's/);
      }
    }
    // Nothing reached a channel (the execute's ?publish= included); the
    // operator's token publishes with it.
    const listed = async () =>
      (await (await gw.fetch("/v1/channels", { headers: bearer(OPERATOR) }))
        .json()).channels.map((ch: { published: number }) => ch.published);
    assert.deepEqual(await listed(), []);
    const published = await gw.fetch("/v1/models/echo/execute?publish=news", {
      method: "POST",
      body: '{"a":1}',
      headers: bearer(OPERATOR),
    });
    assert.equal(published.status, 200);
    await published.body?.cancel();
    assert.deepEqual(await listed(), [1]);
    // The dashboard's ?token= too.
    const page = await fetch(`${gw.url}/?token=${TENANT_B}`);
    await page.body?.cancel();
    assert.equal(page.status, 403);
    // The operator's token reads them.
    for (const path of ["/v1/status", "/metrics", "/", "/v2/models/stats"]) {
      const res = await gw.fetch(path, { headers: bearer(OPERATOR) });
      await res.body?.cancel();
      assert.equal(res.status, 200, path);
    }
    // A tenant calls models and reads their descriptions.
    for (const path of ["/v1/models", "/v1/models/echo", "/openapi.json"]) {
      const res = await gw.fetch(path, { headers: bearer(TENANT_B) });
      await res.body?.cancel();
      assert.equal(res.status, 200, path);
    }
    const call = await gw.fetch("/v1/models/echo/execute", {
      method: "POST",
      body: '{"a":1}',
      headers: bearer(TENANT_A),
    });
    assert.equal(call.status, 200);
    assert.deepEqual(await call.json(), { a: 1 });
    // A model's traceback (--debug): the operator's, never a tenant's.
    const failing = async (token: string) =>
      (await (await gw.fetch("/v1/models/publisher/execute", {
        method: "POST",
        body: '{"channel":"bad name!"}',
        headers: bearer(token),
      })).json()).error;
    assert.equal((await failing(TENANT_A)).traceback, undefined);
    assert.match((await failing(OPERATOR)).traceback, /HostError: /);
    // Logged once (then one line a minute), with the token's id only.
    const lines = records.map((r) => r.message.join(""));
    const refused = lines.filter((l) => l.startsWith("Refused a tenant's"));
    assert.deepEqual(refused, [
      `Refused a tenant's token ${
        tokenId(TENANT_A)
      } (403 ForbiddenToken) on GET /v1/status: an operator's route`,
      // A channel not its own: a kind of its own (POST /v1/channels/news).
      `Refused a tenant's token ${
        tokenId(TENANT_A)
      } (403 ForbiddenToken) on POST /v1/channels/news: not its channel`,
    ]);
    assert.ok(!lines.some((l) => l.includes(TENANT_A)), "no token logged");
  }, "info");
});

Deno.test("serve applies a tenant mark a token file's poll adds or removes (the tokens unchanged)", async () => {
  await using dir = await tempDir("pyproxy-tenant-tokens-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT_A}\n`, {
    mode: 0o600,
  });
  const floor = TOKEN_FILE_INTERVAL_FLOOR.ms;
  TOKEN_FILE_INTERVAL_FLOOR.ms = 1;
  try {
    await withLogs(async (records) => {
      await using gw = await startGateway({ tokenFile, tokenFileInterval: 5 });
      const metrics = async () => {
        const res = await gw.fetch("/metrics", { headers: bearer(TENANT_A) });
        await res.body?.cancel();
        return res.status;
      };
      // Unmarked: every route, as before.
      assert.equal(await metrics(), 200);
      await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT_A} tenant\n`);
      await waitFor(async () => (await metrics()) === 403);
      const lines = () => records.map((r) => r.message.join(""));
      assert.ok(
        lines().includes("Read the token files again: tenantToken (1)"),
        lines().join("\n"),
      );
      await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT_A}\n`);
      await waitFor(async () => (await metrics()) === 200);
      assert.ok(
        lines().includes("Read the token files again: tenantToken (0)"),
        lines().join("\n"),
      );
    }, "info");
  } finally {
    TOKEN_FILE_INTERVAL_FLOOR.ms = floor;
  }
});

Deno.test("readTokenFiles reads `<token> tenant` as a tenant's token, and refuses a mark on a management token", async () => {
  await using dir = await tempDir("pyproxy-tenant-tokens-test-");
  const runtime = defaultRuntime();
  const path = `${dir.path}/tokens`;
  await Deno.writeTextFile(
    path,
    `${OPERATOR}\n${TENANT_A}   tenant\r\n${TENANT_B} tenant\n`,
    { mode: 0o600 },
  );
  assert.deepEqual(
    await readTokenFiles(runtime, { tokenFile: path } as ResolvedConfig),
    {
      token: [OPERATOR, TENANT_A, TENANT_B],
      tenantToken: [TENANT_A, TENANT_B],
    },
  );
  // A comment after the mark is refused as after a token.
  await Deno.writeTextFile(path, `${TENANT_A} tenant # acme\n`);
  await assert.rejects(
    readTokenFiles(runtime, { tokenFile: path } as ResolvedConfig),
    ConfigError,
  );
  // A mark mistyped is no mark: it was read as part of the token (spaces
  // and all), which no client sends (the tenant got 401, the log nothing).
  for (
    const line of [
      `${TENANT_A} Tenant`,
      `${TENANT_A} TENANT`,
      `${TENANT_A} tenants`,
      `${TENANT_A} tenant acme`,
      `${TENANT_A} acme tenant`,
    ]
  ) {
    await Deno.writeTextFile(path, `${OPERATOR}\n${line}\n`);
    await assert.rejects(
      readTokenFiles(runtime, { tokenFile: path } as ResolvedConfig),
      (err: unknown) =>
        err instanceof ConfigError &&
        /^token: token 2 of 2 holds whitespace: .*the mark "tenant"/.test(
          err.message,
        ) && !err.message.includes(TENANT_A.slice(0, 8)) &&
        !/acme|TENANT|Tenant/.test(err.message),
      line,
    );
  }
  await Deno.writeTextFile(path, `${OPERATOR} tenant\n`);
  await assert.rejects(
    readTokenFiles(runtime, { manageTokenFile: path } as ResolvedConfig),
    (err: unknown) =>
      err instanceof ConfigError &&
      /cannot be marked "tenant"/.test(err.message),
  );
});

Deno.test("createGateway refuses a tenantToken that is not one of token's", () => {
  const pool = {
    status: () => ({ workers: [], models: [] }),
  } as unknown as GatewayPool;
  assert.throws(
    () =>
      createGateway(pool, {
        token: [OPERATOR],
        tenantToken: [TENANT_A],
        stopSignal: AbortSignal.abort(),
      }),
    (err: unknown) =>
      err instanceof RangeError && /not one of token's/.test(err.message),
  );
});

Deno.test("serve applies a token file's new tokens beside an inline manageToken (kept, still the management token)", async () => {
  await using dir = await tempDir("pyproxy-tenant-tokens-test-");
  const tokenFile = `${dir.path}/tokens`;
  const manage = "7e3b9d1f5a2c8e4b6d0f3a9c1e7b5d2f";
  await Deno.writeTextFile(tokenFile, `${OPERATOR}\n`, { mode: 0o600 });
  const floor = TOKEN_FILE_INTERVAL_FLOOR.ms;
  TOKEN_FILE_INTERVAL_FLOOR.ms = 1;
  try {
    await withLogs(async (records) => {
      await using gw = await startGateway({
        tokenFile,
        tokenFileInterval: 5,
        manageToken: manage,
        allowManage: true,
      });
      const status = async (token: string, path = "/v1/models") => {
        const res = await gw.fetch(path, {
          method: path === "/v1/workers" ? "PUT" : "GET",
          ...(path === "/v1/workers" ? { body: "{}" } : {}),
          headers: bearer(token),
        });
        await res.body?.cancel();
        return res.status;
      };
      await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT_A} tenant\n`);
      await waitFor(async () => (await status(TENANT_A)) === 200, {
        message: records.map((r) => r.message.join("")).join("\n"),
      });
      assert.equal(await status(TENANT_A, "/metrics"), 403);
      // The management token is still one: management takes it, not token.
      assert.equal(await status(OPERATOR, "/v1/workers"), 403);
      assert.notEqual(await status(manage, "/v1/workers"), 403);
    }, "info");
  } finally {
    TOKEN_FILE_INTERVAL_FLOOR.ms = floor;
  }
});

Deno.test("serve ends the evals of a token a token file's poll marks a tenant's, as a retired token's, and keeps the operator's", async () => {
  await using dir = await tempDir("pyproxy-tenant-tokens-test-");
  const tokenFile = `${dir.path}/tokens`;
  await Deno.writeTextFile(tokenFile, `${OPERATOR}\n${TENANT_A}\n`, {
    mode: 0o600,
  });
  const floor = TOKEN_FILE_INTERVAL_FLOOR.ms;
  TOKEN_FILE_INTERVAL_FLOOR.ms = 1;
  try {
    await withLogs(async () => {
      await using gw = await startGateway({
        tokenFile,
        tokenFileInterval: 5,
        allowEval: true,
        workers: 2,
      });
      // An eval each, running (its code waits) once its output came.
      const running = async (token: string) => {
        const res = await gw.fetch("/v1/eval", {
          method: "POST",
          body: JSON.stringify({
            code: "import time\nprint('started', flush=True)\ntime.sleep(20)",
          }),
          headers: bearer(token),
        });
        assert.equal(res.status, 200);
        const events = new SseReader(res.body!);
        assert.equal((await events.next())?.event, "atom");
        assert.equal((await events.next())?.event, "output");
        return events;
      };
      const demoted = await running(TENANT_A);
      const operator = await running(OPERATOR);
      try {
        await Deno.writeTextFile(
          tokenFile,
          `${OPERATOR}\n${TENANT_A} tenant\n`,
        );
        const rest = await demoted.all();
        // What happened (before: 401, "no longer accepted", which the
        // token still was), as its next eval's 403 says.
        const { status, type, message } = rest.at(-1)?.data as {
          status?: number;
          type?: string;
          message?: string;
        };
        assert.deepEqual({ status, type, message }, {
          status: 403,
          type: "ForbiddenToken",
          message:
            "Cannot complete stream: the token it was opened with is now a tenant's (a reload or a token file marked it \"tenant\"), and eval takes an operator's token",
        }, JSON.stringify(rest));
        const again = await gw.fetch("/v1/eval", {
          method: "POST",
          body: JSON.stringify({ code: "1" }),
          headers: bearer(TENANT_A),
        });
        assert.equal(again.status, 403);
        assert.equal((await again.json()).error.type, "ForbiddenToken");
        // The operator's eval goes on: its stream is still open.
        const more = await Promise.race([
          operator.next().then(() => "event"),
          new Promise((resolve) => setTimeout(resolve, 200, "open")),
        ]);
        assert.equal(more, "open");
      } finally {
        await demoted.cancel();
        await operator.cancel();
      }
    }, "info");
  } finally {
    TOKEN_FILE_INTERVAL_FLOOR.ms = floor;
  }
});
