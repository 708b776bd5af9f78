import assert from "node:assert/strict";
import { startPoolWithModel } from "./_pool_harness.ts";
import { RemoteError } from "../src/errors.ts";
import type { Plugin } from "../src/plugin.ts";
import type { Pool } from "../src/pool.ts";
import { MemoryStore } from "../plugins/memory_store.ts";
import { RedisStore } from "../plugins/redis_store.ts";
import { sharedCache } from "../plugins/shared_cache.ts";
import { hasRedis, startRedis } from "./_redis_server.ts";

const redis = hasRedis();
if (!redis) {
  console.warn(
    "shared_cache_test: redis-server is not installed; the two-pools-on-Redis test is skipped",
  );
}

function startPool(plugins: Plugin[], workers = 2): Promise<Pool> {
  return startPoolWithModel(plugins, {
    name: "cache_ops",
    file: "cache_ops.py",
  }, workers);
}

// The model does not catch the HostError raised by host.call, so it comes back with that type.
const isError = (err: unknown, message: RegExp): boolean =>
  err instanceof RemoteError && err.remoteType === "HostError" &&
  message.test(err.message);

type Op = {
  op: "get" | "set" | "delete" | "call" | "gated_set";
  gate?: string;
  key?: string;
  value?: unknown;
  ttl?: number;
  name?: string;
  args?: unknown;
};
const run = (
  pool: Pool,
  worker: string,
  msg: Op,
): Promise<Record<string, unknown>> =>
  pool.execute("cache_ops", msg, { worker }) as Promise<
    Record<string, unknown>
  >;

Deno.test("sharedCache lets a model on one worker read what a model on another worker set", async () => {
  const cache = sharedCache();
  const pool = await startPool([cache]);
  try {
    assert.deepEqual(await run(pool, "w2", { op: "get", key: "k" }), {
      value: null,
    });
    await run(pool, "w1", {
      op: "set",
      key: "k",
      value: { n: 1, s: "é", list: [null, true] },
    });
    assert.deepEqual(await run(pool, "w2", { op: "get", key: "k" }), {
      value: { n: 1, s: "é", list: [null, true] },
    });
    assert.deepEqual(await cache.store.get("k"), {
      n: 1,
      s: "é",
      list: [null, true],
    });
    await cache.store.set("from-ts", [1, 2]);
    assert.deepEqual(await run(pool, "w1", { op: "get", key: "from-ts" }), {
      value: [1, 2],
    });
    assert.deepEqual(await run(pool, "w2", { op: "delete", key: "k" }), {
      deleted: true,
    });
    assert.deepEqual(await run(pool, "w1", { op: "delete", key: "k" }), {
      deleted: false,
    });
    assert.deepEqual(await run(pool, "w1", { op: "get", key: "k" }), {
      value: null,
    });
  } finally {
    await pool.close();
  }
});

Deno.test("sharedCache: a model's cache call in pool.close()'s grace reaches the store, closed once the workers have stopped", async () => {
  const cache = sharedCache();
  const pool = await startPool([cache], 1);
  const gate = await Deno.makeTempFile({ prefix: "pyproxy-cache-gate-" });
  await Deno.remove(gate);
  const started = () =>
    Deno.stat(`${gate}.started`).then(() => true, () => false);
  try {
    const call = run(pool, "w1", {
      op: "gated_set",
      gate,
      key: "late",
      value: 1,
    });
    for (let i = 0; i < 3000 && !(await started()); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    // The store closed as the close began: the set failed ("Cannot write
    // to the memory store: the store is closed").
    const closed = pool.close();
    await Deno.writeTextFile(gate, "open");
    assert.deepEqual(await call, { ok: true });
    await closed;
    await assert.rejects(cache.store.get("late"), /closed/);
  } finally {
    await pool.close();
    await Deno.remove(`${gate}.started`).catch(() => {});
    await Deno.remove(gate).catch(() => {});
  }
});

Deno.test("sharedCache expires a value set with a ttl from Python and evicts beyond the store's bound", async () => {
  let now = 1_000_000;
  const store = new MemoryStore({ maxEntries: 2, now: () => now });
  const cache = sharedCache({ store, namespace: "ns" });
  const pool = await startPool([cache]);
  try {
    await run(pool, "w1", { op: "set", key: "t", value: "short", ttl: 5 });
    assert.equal(await store.get("ns:t"), "short"); // the namespace is applied
    now += 4_999;
    assert.deepEqual(await run(pool, "w2", { op: "get", key: "t" }), {
      value: "short",
    });
    now += 1;
    assert.deepEqual(await run(pool, "w2", { op: "get", key: "t" }), {
      value: null,
    });

    await run(pool, "w1", { op: "set", key: "a", value: 1 });
    await run(pool, "w2", { op: "set", key: "b", value: 2 });
    await run(pool, "w1", { op: "get", key: "a" }); // b is now the least recently used
    await run(pool, "w2", { op: "set", key: "c", value: 3 });
    assert.deepEqual(await run(pool, "w1", { op: "get", key: "b" }), {
      value: null,
    });
    assert.deepEqual(await run(pool, "w2", { op: "get", key: "a" }), {
      value: 1,
    });
    assert.deepEqual(await run(pool, "w2", { op: "get", key: "c" }), {
      value: 3,
    });
  } finally {
    await pool.close();
  }
});

Deno.test("sharedCache rejects invalid arguments from Python with a clear error", async () => {
  const pool = await startPool([sharedCache()], 1);
  try {
    await assert.rejects(
      run(pool, "w1", { op: "call", name: "cache.get", args: { key: 5 } }),
      (err: unknown) =>
        // A caller's mistake, typed: no "host command" prefix, not logged as a host bug.
        isError(
          err,
          /Host replied InvalidRequestError: Cannot run cache\.get: key must be a string/,
        ),
    );
    await assert.rejects(
      run(pool, "w1", {
        op: "call",
        name: "cache.set",
        args: { key: "k", value: 1, ttl: -1 },
      }),
      (err: unknown) =>
        isError(
          err,
          /Host replied InvalidRequestError: Cannot run cache\.set: ttl must be > 0/,
        ),
    );
    await assert.rejects(
      run(pool, "w1", { op: "call", name: "cache.set", args: { key: "k" } }),
      (err: unknown) =>
        isError(err, /Cannot run cache\.set: value is required/),
    );
  } finally {
    await pool.close();
  }
});

Deno.test("sharedCache: one execute survives a storm of 10,000 host callbacks", async () => {
  let calls = 0;
  const counter: Plugin = {
    name: "test.counter",
    handlers: {
      "test.count": (args) => {
        calls++;
        return (args as { i: number }).i % 2;
      },
    },
  };
  const pool = await startPool([sharedCache(), counter], 1);
  try {
    await pool.addModel("cache_storm", { file: "cache_storm.py" });
    const started = performance.now();
    const result = await pool.execute("cache_storm", { n: 10_000 });
    const ms = performance.now() - started;
    assert.deepEqual(result, { n: 10_000, total: 5_000 });
    assert.equal(calls, 10_000);
    const each = (ms / 10).toFixed(0); // µs per callback: ms * 1000 / 10,000
    console.log(
      `10,000 host callbacks in ${ms.toFixed(0)} ms (${each} µs each)`,
    );
  } finally {
    await pool.close();
  }
});

Deno.test({
  name: "sharedCache on one RedisStore is shared by two pools",
  ignore: !redis,
  async fn() {
    await using server = await startRedis();
    const store = new RedisStore({ port: server.port, prefix: "two-pools:" });
    const a = await startPool([sharedCache({ store })], 1);
    try {
      const b = await startPool([
        sharedCache({
          store: new RedisStore({ port: server.port, prefix: "two-pools:" }),
          closeStore: true,
        }),
      ], 1);
      try {
        await run(a, "w1", {
          op: "set",
          key: "shared",
          value: { from: "a" },
          ttl: 60,
        });
        assert.deepEqual(await run(b, "w1", { op: "get", key: "shared" }), {
          value: { from: "a" },
        });
        await run(b, "w1", { op: "set", key: "shared", value: { from: "b" } });
        assert.deepEqual(await run(a, "w1", { op: "get", key: "shared" }), {
          value: { from: "b" },
        });
        assert.deepEqual(await run(a, "w1", { op: "delete", key: "shared" }), {
          deleted: true,
        });
        assert.deepEqual(await run(b, "w1", { op: "get", key: "shared" }), {
          value: null,
        });
      } finally {
        await b.close();
      }
    } finally {
      await a.close();
      await store.close();
    }
  },
});
