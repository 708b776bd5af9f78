import assert from "node:assert/strict";
import fc from "fast-check";
import { PendingTable } from "../src/_session_pending_table.ts";

interface Item {
  id: number;
}

/** A step: send a request (the id jumps by `add`), settle a held one, or settle an id never held. */
type Step = { add: number } | { settle: number } | { stray: number };

/** Runs `steps` on a table and on a `Map`, checking they agree at each step. */
function replay(steps: Step[]): {
  table: PendingTable<Item>;
  model: Map<number, Item>;
  next: number;
} {
  const table = new PendingTable<Item>();
  const model = new Map<number, Item>();
  let next = 1;
  for (const s of steps) {
    if ("add" in s) {
      const item = { id: next };
      next += s.add;
      table.add(item);
      model.set(item.id, item);
    } else if ("settle" in s) {
      const held = [...model.keys()];
      if (held.length === 0) continue;
      const id = held[s.settle % held.length]!;
      assert.equal(table.delete(id), true);
      model.delete(id);
      assert.equal(table.delete(id), false, "settled twice");
    } else {
      assert.equal(table.delete(s.stray), model.delete(s.stray));
    }
    assert.equal(table.size, model.size);
  }
  return { table, model, next };
}

Deno.test("PendingTable behaves like a Map of increasing ids, across the ring's wrap", () => {
  // Each step sends a request (a new, larger id) or settles one: a held id,
  // or one never sent or already settled. Ids mostly follow each other and
  // sometimes jump by about the ring's size (1024), so held requests often
  // share a ring slot and move to the overflow.
  const jump = fc.oneof(
    fc.constant(1),
    fc.integer({ min: 1, max: 5 }),
    fc.integer({ min: 1020, max: 1028 }),
  );
  const step = fc.oneof(
    fc.record({ add: jump }),
    fc.record({ settle: fc.nat() }),
    fc.record({ stray: fc.nat({ max: 100_000 }) }),
  );
  fc.assert(
    fc.property(fc.array(step, { maxLength: 400 }), (steps) => {
      const { table, model, next } = replay(steps);
      for (const [id, item] of model) assert.equal(table.get(id), item);
      for (let id = 0; id < next; id += 7) {
        assert.equal(table.get(id), model.get(id));
      }
      const drained = table.drain();
      assert.deepEqual(
        drained,
        [...model.values()].sort((a, b) => a.id - b.id),
      );
      assert.equal(table.size, 0);
      for (const id of model.keys()) assert.equal(table.get(id), undefined);
    }),
  );
});

Deno.test("PendingTable keeps thousands in flight in its ring (it grows), matching a Map", () => {
  // Mostly sends, so more than half the ring is held and it doubles.
  const step = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({ add: fc.integer({ min: 1, max: 3 }) }),
    },
    { weight: 1, arbitrary: fc.record({ settle: fc.nat() }) },
  );
  fc.assert(
    fc.property(
      fc.array(step, { minLength: 1500, maxLength: 4000 }),
      (steps) => {
        const { table, model } = replay(steps);
        assert.equal(table.size, model.size);
        for (const [id, item] of model) assert.equal(table.get(id), item);
        assert.deepEqual(table.drain(), [...model.values()]);
      },
    ),
    { numRuns: 20 },
  );
  const table = new PendingTable<Item>();
  for (let id = 1; id <= 5000; id++) table.add({ id });
  assert.equal(table.overflowSize, 0);
  for (let id = 1; id <= 5000; id++) assert.equal(table.get(id)?.id, id);
  for (let id = 1; id <= 5000; id++) assert.equal(table.delete(id), true);
  assert.equal(table.size, 0);
});

Deno.test("PendingTable: a request outliving its slot is still found, and its successor too", () => {
  const table = new PendingTable<Item>();
  const slow = { id: 5 };
  table.add(slow);
  const fast = { id: 5 + 1024 }; // same ring slot
  table.add(fast);
  assert.equal(table.get(5), slow);
  assert.equal(table.get(5 + 1024), fast);
  assert.equal(table.size, 2);
  assert.equal(table.delete(5), true);
  assert.equal(table.get(5), undefined);
  assert.equal(table.get(5 + 1024), fast);
  assert.equal(table.delete(5 + 1024), true);
  assert.equal(table.size, 0);
  assert.deepEqual(table.drain(), []);
});
