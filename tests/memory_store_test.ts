import assert from "node:assert/strict";
import { MemoryStore } from "../plugins/memory_store.ts";
import { ConnectionLostError } from "../src/errors.ts";

Deno.test("MemoryStore get returns a copy of what set stored, undefined when missing", async () => {
  const store = new MemoryStore();
  const value = { list: [1, 2], nested: { s: "x" } };
  await store.set("k", value);
  value.list.push(3);
  const got = await store.get("k");
  assert.deepEqual(got, { list: [1, 2], nested: { s: "x" } });
  (got as { list: number[] }).list.push(9);
  assert.deepEqual(await store.get("k"), { list: [1, 2], nested: { s: "x" } });
  assert.equal(await store.get("missing"), undefined);
  await store.set("null", null);
  assert.equal(await store.get("null"), null);
});

Deno.test("MemoryStore keeps integers beyond ±2^53 exact (a pool with integers: 'bigint' caches BigInts)", async () => {
  const store = new MemoryStore();
  const value = { ids: [2n ** 64n + 1n, -(2n ** 63n)], safe: 5, f: 0.1 };
  await store.set("k", value);
  assert.deepEqual(await store.get("k"), value);
});

Deno.test("MemoryStore delete reports whether the key existed", async () => {
  const store = new MemoryStore();
  await store.set("k", 1);
  assert.equal(await store.delete("k"), true);
  assert.equal(await store.delete("k"), false);
  assert.equal(await store.get("k"), undefined);
  assert.equal(store.bytes, 0);
});

Deno.test("MemoryStore expires entries after their ttl by the injected clock", async () => {
  let now = 1_000;
  const store = new MemoryStore({ now: () => now, defaultTtl: 10 });
  await store.set("short", "s", { ttl: 0.5 });
  await store.set("default", "d");
  now += 499;
  assert.equal(await store.get("short"), "s");
  now += 1;
  assert.equal(await store.get("short"), undefined);
  assert.equal(await store.get("default"), "d");
  now += 9_500;
  assert.equal(await store.get("default"), undefined);
  assert.equal(store.size, 0);
  await store.set("expired", 1, { ttl: 1 });
  now += 1_000;
  assert.equal(await store.delete("expired"), false);
});

Deno.test("MemoryStore evicts the least recently used entry beyond maxEntries", async () => {
  const store = new MemoryStore({ maxEntries: 3 });
  await store.set("a", 1);
  await store.set("b", 2);
  await store.set("c", 3);
  assert.equal(await store.get("a"), 1); // a is now the most recent
  await store.set("d", 4);
  assert.equal(await store.get("b"), undefined);
  assert.deepEqual(
    await Promise.all(["a", "c", "d"].map((k) => store.get(k))),
    [1, 3, 4],
  );
  assert.equal(store.size, 3);
});

Deno.test("MemoryStore evicts by bytes and refuses a value larger than maxBytes", async () => {
  const store = new MemoryStore({ maxBytes: 100 });
  await store.set("a", "x".repeat(40)); // 1 + 42
  await store.set("b", "y".repeat(40)); // 1 + 42
  assert.equal(store.bytes, 86);
  await store.set("c", "z".repeat(20)); // 1 + 22 > 100 in total: a goes
  assert.equal(await store.get("a"), undefined);
  assert.equal(await store.get("b"), "y".repeat(40));
  assert.equal(store.bytes, 66);
  await store.set("b", 1); // replacing frees the old size
  assert.equal(store.bytes, 25);
  await assert.rejects(store.set("big", "q".repeat(200)), RangeError);
  assert.equal(await store.get("c"), "z".repeat(20));
});

Deno.test("MemoryStore rejects values that are not JSON and bad ttls", async () => {
  const store = new MemoryStore();
  await assert.rejects(store.set("f", () => 1), TypeError);
  await assert.rejects(store.set("t", 1, { ttl: 0 }), RangeError);
  await assert.rejects(store.set("t", 1, { ttl: -1 }), RangeError);
  assert.throws(() => new MemoryStore({ maxEntries: 0 }), RangeError);
  await store.set("x", 1);
  await store.clear();
  assert.equal(store.size, 0);
  assert.equal(store.bytes, 0);
});

Deno.test("MemoryStore is unusable after close(), like RedisStore: every method rejects with ConnectionLostError", async () => {
  const store = new MemoryStore();
  await store.set("k", { v: 1 });
  await store.close();
  assert.equal(store.size, 0);
  assert.equal(store.bytes, 0);
  for (
    const call of [
      () => store.get("k"),
      () => store.set("k", 1),
      () => store.delete("k"),
      () => store.clear(),
    ]
  ) {
    await assert.rejects(call, (err: Error) => {
      assert.ok(err instanceof ConnectionLostError);
      assert.match(
        err.message,
        /^Cannot \w+( \w+)? the memory store: the store is closed$/,
      );
      return true;
    });
  }
  await store.close(); // a second close is a no-op
});
