import assert from "node:assert/strict";
import fc from "fast-check";
import { StringTable } from "../src/_string_table.ts";

/** A step: set a key, delete one, or read one (keys from a small set, so
 * slots collide, tombstones pile up and the arrays are rebuilt). */
type Step = { set: string; value: number } | { del: string } | {
  get: string;
};

Deno.test("StringTable behaves like a Map through collisions, tombstones, growth and shrinking", () => {
  const key = fc.oneof(
    fc.constantFrom("", "a", "b", "ab", "ba"),
    fc.string({ maxLength: 3 }),
    fc.nat({ max: 400 }).map((n) => `k${n}`),
  );
  const step = fc.oneof(
    fc.record({ set: key, value: fc.integer() }),
    fc.record({ del: key }),
    fc.record({ get: key }),
  );
  fc.assert(
    fc.property(fc.array(step, { maxLength: 600 }), (steps) => {
      const table = new StringTable<number>();
      const model = new Map<string, number>();
      for (const s of steps) {
        if ("set" in s) {
          table.set(s.set, s.value);
          model.set(s.set, s.value);
        } else if ("del" in s) {
          assert.equal(table.delete(s.del), model.delete(s.del));
        } else {
          assert.equal(table.get(s.get), model.get(s.get));
        }
        assert.equal(table.size, model.size);
      }
      for (const [k, v] of model) assert.equal(table.get(k), v);
      assert.deepEqual(
        table.values().sort((a, b) => a - b),
        [...model.values()].sort((a, b) => a - b),
      );
    }),
    { numRuns: 300 },
  );
});

Deno.test("StringTable keeps working under an insert and a delete per operation", () => {
  // The registry's pattern: ids that come and go, a few held at a time.
  const table = new StringTable<number>();
  for (let i = 0; i < 100_000; i++) {
    table.set(`id-${i}`, i);
    if (i >= 8) assert.equal(table.delete(`id-${i - 8}`), true);
  }
  assert.equal(table.size, 8);
  for (let i = 100_000 - 8; i < 100_000; i++) {
    assert.equal(table.get(`id-${i}`), i);
  }
  assert.equal(table.get("id-0"), undefined);
});

Deno.test("StringTable grows for a burst and shrinks back after it", () => {
  const table = new StringTable<number>();
  for (let i = 0; i < 10_000; i++) {
    table.set(`burst-${i}`, i);
    assert.ok(table.size * 2 <= table.capacity);
  }
  for (let i = 8; i < 10_000; i++) table.delete(`burst-${i}`);
  // Tombstones are reused, so it takes new slots filling half the arrays
  // (~23k inserts here) before a rebuild sizes them for what is held.
  for (let i = 0; i < 50_000; i++) {
    table.set(`after-${i}`, i);
    table.delete(`after-${i}`);
  }
  assert.equal(table.size, 8);
  assert.equal(table.capacity, 64);
});
