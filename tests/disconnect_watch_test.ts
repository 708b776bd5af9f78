import assert from "node:assert/strict";
import { DisconnectWatch } from "../src/gateway/disconnect_watch.ts";

/** A request whose signal the test controls, counting reads of `signal`. */
function client(): {
  request: Request;
  leave: () => void;
  reads: () => number;
} {
  const controller = new AbortController();
  let reads = 0;
  const request = {
    get signal() {
      reads++;
      return controller.signal;
    },
  } as unknown as Request;
  return {
    request,
    leave: () => controller.abort(new Error("client left")),
    reads: () => reads,
  };
}

/** Resolves once `check()` is true (polled every few ms, at most 2 s). */
async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !check(); i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.ok(check(), "timed out");
}

Deno.test("DisconnectWatch: a call that ends within the grace never reads request.signal", async () => {
  const watch = new DisconnectWatch({ graceMs: 20 });
  const c = client();
  const call = watch.watch(c.request);
  assert.equal(watch.size, 1);
  call.end();
  call.end(); // idempotent
  assert.equal(watch.size, 0);
  c.leave();
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(c.reads(), 0);
  assert.equal(call.aborted, false);
});

Deno.test("DisconnectWatch: an older call listens, and a client that left before is seen at once", async () => {
  const watch = new DisconnectWatch({ graceMs: 20 });
  const early = client();
  const late = client();
  const fast = client();
  const a = watch.watch(early.request);
  const b = watch.watch(late.request);
  const f = watch.watch(fast.request);
  f.end(); // ended calls in the ring are skipped by the sweep
  early.leave(); // gone before the sweep
  await until(() => a.aborted);
  assert.equal((a.signal.reason as Error).message, "client left");
  assert.equal(b.aborted, false);
  await until(() => b.listening);
  late.leave(); // gone while listening
  assert.equal(b.aborted, true);
  assert.equal(fast.reads(), 0);
  a.end();
  b.end();
  assert.equal(watch.size, 0);
});

Deno.test("DisconnectWatch: many calls (past the ring's size), ended in any order", async () => {
  const watch = new DisconnectWatch({ graceMs: 10 });
  // A long call first: once it listens, the ring's start has moved on, and
  // the calls below wrap around its end before it grows.
  const first = watch.watch(client().request);
  await until(() => first.listening);
  const clients = Array.from({ length: 3000 }, () => client());
  const calls = clients.map((c) => watch.watch(c.request));
  // End two thirds right away, in a scrambled order.
  const order = calls.map((call, i) => ({ call, i, key: (i * 7919) % 3000 }))
    .sort((x, y) => x.key - y.key);
  const kept = new Set<number>();
  for (const { call, i } of order) {
    if (i % 3 === 0) kept.add(i);
    else call.end();
  }
  assert.equal(watch.size, kept.size + 1);
  await until(() => [...kept].every((i) => calls[i]!.listening));
  for (const i of kept) clients[i]!.leave();
  for (const [i, call] of calls.entries()) {
    assert.equal(call.aborted, kept.has(i), `call ${i}`);
    assert.equal(clients[i]!.reads() > 0, kept.has(i), `reads of ${i}`);
  }
  for (const i of kept) calls[i]!.end();
  first.end();
  assert.equal(watch.size, 0);
});
