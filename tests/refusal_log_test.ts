import assert from "node:assert/strict";
import { createGateway } from "../src/gateway/app.ts";
import type { GatewayPool } from "../src/gateway/gateway_pool.ts";
import { RefusalLog } from "../src/gateway/_refusal_log.ts";
import { recordingLogger } from "./_harness.ts";

Deno.test("RefusalLog: the first refusal at once, then one line per interval counting those left out", () => {
  const { logger, entries } = recordingLogger();
  let now = 1_000;
  const log = new RefusalLog(logger, { intervalMs: 60_000, now: () => now });
  log.refused("Refused {what}", { what: "a" });
  for (let i = 0; i < 500; i++) log.refused("Refused {what}", { what: "b" });
  assert.deepEqual(entries, [["info", "Refused {what}", {
    what: "a",
    leftOut: 0,
  }]]);
  now += 60_000;
  log.refused("Refused {what}", { what: "c" });
  assert.equal(entries.length, 2);
  assert.deepEqual(entries[1], [
    "info",
    "Refused {what} ({leftOut} more such refusals since the last line)",
    { what: "c", leftOut: 500 },
  ]);
});

Deno.test("createGateway logs refused cross-origin requests and requests without a valid token, now and then, never the token (a page refused got only its status: newcomer26)", async () => {
  const { logger, entries } = recordingLogger();
  const token = "refusal-log-token-0123456789";
  const pool = {
    execute: (_name: string, msg: unknown) => Promise.resolve(msg),
    status: () => ({ workers: [], models: [] }),
  } as unknown as GatewayPool;
  const app = createGateway(pool, { port: () => 8000, token, logger });
  const ask = async (headers: Record<string, string>) => {
    const res = await app.fetch(
      new Request("http://127.0.0.1:8000/v1/models/echo/execute", {
        method: "POST",
        headers: { host: "127.0.0.1:8000", ...headers },
        body: "{}",
      }),
    );
    await res.body?.cancel();
    return res.status;
  };
  for (let i = 0; i < 3; i++) {
    assert.equal(
      await ask({
        origin: "https://page.example",
        authorization: `Bearer ${token}`,
      }),
      403,
    );
  }
  for (let i = 0; i < 3; i++) {
    assert.equal(
      await ask({ authorization: "Bearer a-wrong-token-of-mine" }),
      401,
    );
  }
  const infos = entries.filter(([level]) => level === "info");
  assert.deepEqual(infos, [
    [
      "info",
      "Refused a cross-origin request (403 ForbiddenOrigin) from {origin} to {path}: list the origin in cors.origins to allow it",
      {
        origin: "https://page.example",
        path: "/v1/models/echo/execute",
        leftOut: 0,
      },
    ],
    [
      "info",
      "Refused a request without a valid token (401) to {path}",
      { path: "/v1/models/echo/execute", leftOut: 0 },
    ],
  ]);
  assert.doesNotMatch(
    JSON.stringify(entries),
    /a-wrong-token|refusal-log-token/,
  );
});

Deno.test("createGateway logs a WebSocket upgrade refused for its subprotocols (400), now and then, never the token (security27)", async () => {
  // The 401s and 403s were logged, not this 400: a page's
  // new WebSocket(url, ["pyproxy.bearer." + token]) without pyproxy.v1 got
  // a 1006 close and the log said nothing.
  const { logger, entries } = recordingLogger();
  const token = "refusal-log-token-0123456789";
  const pool = {
    execute: (_name: string, msg: unknown) => Promise.resolve(msg),
    status: () => ({ workers: [], models: [] }),
  } as unknown as GatewayPool;
  const app = createGateway(pool, { port: () => 8000, token, logger });
  for (
    const offered of [
      `pyproxy.bearer.${token}`,
      `pyproxy.v1, pyproxy.bearer.${token}, pyproxy.bearer.other-token-0123`,
      `pyproxy.bearer.${token}`,
    ]
  ) {
    const res = await app.fetch(
      new Request("http://127.0.0.1:8000/v1/channels/news", {
        headers: {
          host: "127.0.0.1:8000",
          upgrade: "websocket",
          connection: "Upgrade",
          "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
          "sec-websocket-version": "13",
          "sec-websocket-protocol": offered,
        },
      }),
    );
    await res.body?.cancel();
    assert.equal(res.status, 400);
  }
  const infos = entries.filter(([level]) => level === "info");
  assert.equal(infos.length, 1, JSON.stringify(infos));
  assert.equal(
    infos[0]![1],
    "Refused a WebSocket upgrade (400) to {path}: {problem}",
  );
  assert.equal(infos[0]![2]!.path, "/v1/channels/news");
  assert.match(
    String(infos[0]![2]!.problem),
    /^Cannot upgrade to WebSocket: a token subprotocol needs 'pyproxy\.v1' offered with it/,
  );
  assert.doesNotMatch(JSON.stringify(entries), /refusal-log-token|other-token/);
});
