import assert from "node:assert/strict";
import { PoolEventHub } from "../src/pool_events.ts";

const model = (name: string) =>
  ({ type: "model", action: "add", name }) as const;

Deno.test("PoolEventHub tells onOverflow once per lagging spell of an iterator, and keeps the newest events", async () => {
  const overflows: number[] = [];
  const hub = new PoolEventHub({
    bufferSize: 3,
    onOverflow: (n) => {
      overflows.push(n);
      throw new Error("a reporter's bug");
    },
  });
  const events = hub.iterate();
  for (const name of ["a", "b", "c", "d", "e"]) hub.emit(model(name));
  assert.deepEqual(overflows, [3]); // "a" and "b" lost, told once
  const read = async (n: number) => {
    const names: string[] = [];
    for (let i = 0; i < n; i++) {
      const { value } = await events.next();
      names.push((value as { name: string }).name);
    }
    return names;
  };
  assert.deepEqual(await read(3), ["c", "d", "e"]); // caught up
  for (const name of ["f", "g", "h"]) hub.emit(model(name));
  assert.deepEqual(overflows, [3]); // full, nothing lost
  hub.emit(model("i"));
  assert.deepEqual(overflows, [3, 3]); // a new spell
  assert.deepEqual(await read(3), ["g", "h", "i"]);
  hub.close();
  assert.equal((await events.next()).done, true);
});
