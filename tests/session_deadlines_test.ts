import assert from "node:assert/strict";
import { Deadlines } from "../src/_session_deadlines.ts";

interface Item {
  id: number;
  slot: number;
  bucket: unknown[] | undefined;
  index: number;
  added: number;
  ms: number;
}

function item(id: number, ms: number): Item {
  return { id, slot: -1, bucket: undefined, index: 0, added: Date.now(), ms };
}

/** Deadlines whose expiries are recorded; `next()` resolves at the next one. */
function recorder() {
  const expired: Array<{ item: Item; at: number }> = [];
  let wake: (() => void) | undefined;
  const deadlines = new Deadlines<Item>((it) => {
    expired.push({ item: it, at: Date.now() });
    wake?.();
  });
  const until = async (n: number): Promise<void> => {
    while (expired.length < n) {
      await new Promise<void>((resolve) => (wake = resolve));
    }
  };
  return { deadlines, expired, until };
}

Deno.test("Deadlines expire items once, never before their time, in order", async () => {
  const { deadlines, expired, until } = recorder();
  const items = [item(1, 30), item(2, 5), item(3, 15), item(4, 15)];
  for (const it of items) {
    // Taken at the add, not at item(): a loaded machine may pause between
    // two adds for longer than the deadlines differ.
    it.added = Date.now();
    deadlines.add(it, it.ms);
  }
  await until(4);
  // In order of their deadlines: one that is due a slot (4 ms) or more
  // before another expires first.
  const due = (it: Item) => it.added + it.ms;
  for (let i = 0; i < expired.length; i++) {
    for (let j = i + 1; j < expired.length; j++) {
      const [a, b] = [expired[i]!.item, expired[j]!.item];
      assert.ok(
        due(a) < due(b) + 5,
        `item ${a.id} (due ${due(a)}) expired before item ${b.id} (due ${
          due(b)
        })`,
      );
    }
  }
  for (const { item, at } of expired) {
    assert.ok(at >= item.added + item.ms, `item ${item.id} expired early`);
    assert.equal(item.slot, -1);
  }
  assert.equal(deadlines.bucketCount, 0);
});

Deno.test("Deadlines: removed items never expire, and emptied buckets are dropped at once", async () => {
  const { deadlines, expired, until } = recorder();
  // Many settled calls with a long timeout leave nothing behind.
  for (let i = 0; i < 10_000; i++) {
    const it = item(i, 30_000);
    deadlines.add(it, it.ms);
    deadlines.remove(it);
    assert.equal(it.slot, -1);
  }
  assert.equal(deadlines.bucketCount, 0);
  // A slot emptied and used again still fires for its new item.
  const gone = item(-1, 10);
  deadlines.add(gone, 10);
  deadlines.remove(gone);
  const again = item(-2, 10);
  deadlines.add(again, 10);
  const later = item(-3, 20);
  deadlines.add(later, 20);
  await until(2);
  assert.deepEqual(expired.map((e) => e.item.id), [-2, -3]);
  deadlines.remove(gone); // removing twice is harmless
  deadlines.clear(); // stops the timer of the 30 s slots
  assert.equal(deadlines.bucketCount, 0);
});

Deno.test("Deadlines: items removed in any order from shared buckets never expire, the others all do", async () => {
  const { deadlines, expired, until } = recorder();
  // Three slots' worth of items, removed in a shuffled order (a swap-remove
  // moves the last item of a bucket into the removed one's place).
  const items = Array.from(
    { length: 300 },
    (_, i) => item(i, 10 + (i % 3) * 8),
  );
  for (const it of items) deadlines.add(it, it.ms);
  const order = items.map((it) => ({ it, key: (it.id * 7919) % 300 }))
    .sort((a, b) => a.key - b.key).map((x) => x.it);
  const removed = new Set(order.slice(0, 200).map((it) => it.id));
  for (const it of order.slice(0, 200)) {
    deadlines.remove(it);
    assert.equal(it.slot, -1);
    assert.equal(it.bucket, undefined);
  }
  await until(100);
  const ids = expired.map((e) => e.item.id).sort((a, b) => a - b);
  assert.deepEqual(
    ids,
    items.filter((it) => !removed.has(it.id)).map((it) => it.id),
  );
  for (const { item, at } of expired) {
    assert.ok(at >= item.added + item.ms, `item ${item.id} expired early`);
  }
  assert.equal(deadlines.bucketCount, 0);
});
