import assert from "node:assert/strict";
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
