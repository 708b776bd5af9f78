import assert from "node:assert/strict";
import fc from "fast-check";
import { AtomRegistry, type RegisteredAtom } from "../src/atom_registry.ts";

function atom(
  id: string,
  bufferedBytes = 0,
): RegisteredAtom & { done: boolean } {
  return { id, done: false, bufferedBytes };
}

Deno.test("AtomRegistry keeps running atoms and forgets the oldest finished ones", () => {
  const registry = new AtomRegistry({ maxAtoms: 2 });
  for (const id of ["a", "b", "c", "d"]) registry.add(atom(id));
  assert.equal(registry.size, 4);
  for (const id of ["b", "a", "c"]) registry.finished(id);
  // "b" finished first and is forgotten; the running "d" stays.
  assert.deepEqual(registry.list().map((a) => a.id).sort(), ["a", "c", "d"]);
  assert.equal(registry.get("b"), undefined);
});

Deno.test("AtomRegistry bounds the replay bytes of finished atoms", () => {
  const registry = new AtomRegistry({ maxBytes: 100 });
  registry.add(atom("a", 60));
  registry.add(atom("b", 60));
  registry.finished("a");
  assert.ok(registry.get("a"));
  registry.finished("b");
  assert.equal(registry.get("a"), undefined);
  assert.ok(registry.get("b"));
});

/** The registry's rules written with a Map and a Set (how it was built before). */
class ModelRegistry {
  atoms = new Map<string, RegisteredAtom>();
  finishedIds = new Set<string>();
  constructor(readonly maxAtoms: number, readonly maxBytes: number) {}
  add(atom: RegisteredAtom): void {
    this.atoms.set(atom.id, atom);
    if (atom.done) this.finished(atom.id);
  }
  finished(id: string): void {
    if (!this.atoms.has(id)) return;
    this.finishedIds.delete(id);
    this.finishedIds.add(id);
    let bytes = 0;
    for (const key of this.finishedIds) {
      bytes += this.atoms.get(key)!.bufferedBytes;
    }
    for (const key of this.finishedIds) {
      if (this.finishedIds.size <= this.maxAtoms && bytes <= this.maxBytes) {
        break;
      }
      bytes -= this.atoms.get(key)!.bufferedBytes;
      this.finishedIds.delete(key);
      this.atoms.delete(key);
    }
  }
}

Deno.test("AtomRegistry keeps and forgets exactly what the Map-and-Set rules do", () => {
  // Steps: add an atom (maybe already done, with some replay bytes), or mark
  // one finished: a known id (running, finished or forgotten) or an unknown one.
  const step = fc.oneof(
    fc.record({ add: fc.nat({ max: 50 }), done: fc.boolean() }),
    fc.record({ finish: fc.nat() }),
  );
  fc.assert(
    fc.property(
      // Bounds small enough to forget often, large enough for the finished
      // queue to wrap and grow past its 16 first slots.
      fc.oneof(fc.nat({ max: 6 }), fc.nat({ max: 60 })),
      fc.oneof(fc.nat({ max: 120 }), fc.constant(1e9)),
      fc.array(step, { maxLength: 300 }),
      (maxAtoms, maxBytes, steps) => {
        const registry = new AtomRegistry({ maxAtoms, maxBytes });
        const model = new ModelRegistry(maxAtoms, maxBytes);
        const ids: string[] = [];
        for (const s of steps) {
          if ("add" in s) {
            const id = `atom-${ids.length}`;
            ids.push(id);
            const entry = { id, done: s.done, bufferedBytes: s.add };
            registry.add(entry);
            model.add(entry);
          } else {
            const id = s.finish % 5 === 4 || ids.length === 0
              ? "unknown"
              : ids[s.finish % ids.length]!;
            registry.finished(id);
            model.finished(id);
          }
          assert.equal(registry.size, model.atoms.size);
        }
        assert.deepEqual(
          registry.list().map((a) => a.id),
          [...model.atoms.keys()],
        );
        for (const id of ids) {
          assert.equal(registry.get(id), model.atoms.get(id));
        }
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("AtomRegistry keeps the finishing order when its queue wraps and grows", () => {
  // Twenty atoms finish (the oldest eight are forgotten: the queue's head
  // moves on), then the kept ones finish again in another order (the queue
  // fills with stale places and grows from there), then new atoms push the
  // oldest out: in the order of their last finish.
  const registry = new AtomRegistry({ maxAtoms: 12 });
  const model = new ModelRegistry(12, Infinity);
  const both = (fn: (r: AtomRegistry | ModelRegistry) => void): void => {
    fn(registry);
    fn(model);
    assert.deepEqual(
      registry.list().map((a) => a.id),
      [...model.atoms.keys()],
    );
  };
  for (let i = 0; i < 20; i++) {
    const entry = { id: `a${i}`, done: false, bufferedBytes: 1 };
    both((r) => r.add(entry));
    both((r) => r.finished(entry.id));
  }
  for (const i of [19, 8, 15, 9, 12, 10, 18, 11, 14, 13, 17, 16, 8, 19]) {
    both((r) => r.finished(`a${i}`));
  }
  for (let i = 20; i < 40; i++) {
    const entry = { id: `a${i}`, done: true, bufferedBytes: 1 };
    both((r) => r.add(entry));
  }
});
