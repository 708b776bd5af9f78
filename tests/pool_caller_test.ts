/**
 * Who makes a call reaching the model: `pool.execute`'s and
 * `executeStream`'s `caller` as `host.caller()`, each batched call's own in
 * `host.callers()`, and the gateway's caller (the id of the bearer token
 * that let the request in) on its model routes. Real Python workers.
 */
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";
import { tokenId } from "../src/gateway/security.ts";
import { modelsDir, PidTracker, poolOptions } from "./_pool_harness.ts";
import { startGateway } from "./_gateway_harness.ts";

const WHO = `
from pyproxy import host

class Who:
    def execute(self, msg):
        return {"one": host.caller(), "all": host.callers()}
`;

const WHO_STREAM = `
from pyproxy import host

class WhoStream:
    def execute(self, msg):
        yield host.caller()
`;

const WHO_BATCHED = `
from pyproxy import host

class WhoBatched:
    batch_size = 8
    batch_delay_ms = 20

    def execute_batch(self, msgs):
        return [{"x": m["x"], "n": len(msgs), "caller": c, "one": host.caller()}
                for m, c in zip(msgs, host.callers())]
`;

Deno.test("Pool execute: a caller reaches host.caller(), each batched call's its own in host.callers(), a stream's too", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
    pids.watch(pool);
    await pool.addModel("who", { source: WHO });
    await pool.addModel("who_stream", { source: WHO_STREAM });
    await pool.addModel("who_batched", { source: WHO_BATCHED });
    assert.deepEqual(
      await pool.execute("who", {}, { caller: "tenant-a" }),
      { one: "tenant-a", all: ["tenant-a"] },
    );
    assert.deepEqual(await pool.execute("who", {}), {
      one: null,
      all: [null],
    });
    const items: unknown[] = [];
    for await (
      const item of pool.executeStream("who_stream", {}, { caller: "s-1" })
    ) items.push(item);
    assert.deepEqual(items, ["s-1"]);
    // 12 calls at once: the first goes alone, the others gather behind it.
    // Every third call has no caller: its slot in the list is None.
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, x) =>
        pool.execute(
          "who_batched",
          { x },
          x % 3 === 0 ? {} : { caller: `c${x}` },
        ) as Promise<{ x: number; n: number; caller: unknown; one: unknown }>),
    );
    for (const [x, r] of results.entries()) {
      assert.equal(r.x, x);
      assert.equal(r.caller, x % 3 === 0 ? null : `c${x}`);
      assert.equal(r.one, null, "host.caller() in execute_batch");
    }
    assert.ok(results.some((r) => r.n > 1), "some calls were batched");
  } finally {
    await pids.assertGone();
  }
});

Deno.test("serve: a model reads the id of the token that let its call in (host.caller()), on execute and stream", async () => {
  const A = "caller-test-token-a-0123456789";
  const B = "caller-test-token-b-0123456789";
  await using gw = await startGateway({ token: [A, B] }, {
    "who.py": WHO,
    "who_stream.py": WHO_STREAM,
  });
  for (const token of [A, B]) {
    const res = await gw.fetch("/v1/models/who/execute", {
      method: "POST",
      body: "{}",
      headers: { authorization: `Bearer ${token}` },
    });
    assert.deepEqual(await res.json(), {
      one: tokenId(token),
      all: [tokenId(token)],
    });
  }
  const stream = await gw.fetch("/v1/models/who_stream/stream", {
    method: "POST",
    body: "{}",
    headers: { authorization: `Bearer ${B}` },
  });
  const text = await stream.text();
  assert.match(text, new RegExp(`data: "${tokenId(B)}"`), text);
});

const ASKS_HOST = `
from pyproxy import host

class AsksHost:
    def execute(self, msg):
        return host.call("who.host")
`;

const ASKS_HOST_BATCHED = `
from pyproxy import host

class AsksHostBatched:
    batch_size = 8
    batch_delay_ms = 20

    def execute_batch(self, msgs):
        seen = host.call("who.host")
        return [{"seen": seen, "n": len(msgs)} for _ in msgs]
`;

Deno.test("Pool: a host handler reads who made the call whose code sent the command (call.callers: its caller as a list of one, a batch's callers), from the call the server names (protocol §7)", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    const who: Plugin = {
      name: "who",
      handlers: { "who.host": (_args, call) => call.callers ?? "unknown" },
    };
    await using pool = await Pool.start({
      ...poolOptions(dir.path, { workers: 1 }),
      plugins: [who],
    });
    pids.watch(pool);
    await pool.addModel("asks", { source: ASKS_HOST });
    await pool.addModel("asks_batched", { source: ASKS_HOST_BATCHED });
    assert.deepEqual(await pool.execute("asks", {}, { caller: "t-1" }), [
      "t-1",
    ]);
    assert.deepEqual(await pool.execute("asks", {}), [null]);
    const results = await Promise.all(
      Array.from(
        { length: 6 },
        (_, x) =>
          pool.execute("asks_batched", { x }, { caller: `c${x}` }) as Promise<
            { seen: string[]; n: number }
          >,
      ),
    );
    for (const [x, r] of results.entries()) {
      // Its batch's callers, its own among them.
      assert.equal(r.seen.length, r.n);
      assert.ok(r.seen.includes(`c${x}`), JSON.stringify(r));
    }
    assert.ok(results.some((r) => r.n > 1), "some calls were batched");
  } finally {
    await pids.assertGone();
  }
});
