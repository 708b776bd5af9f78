import assert from "node:assert/strict";
import fc from "fast-check";
import { CallQueue } from "../src/_call_queue.ts";
import type { PoolCall } from "../src/pool_router.ts";

function call(n: number): PoolCall {
  return { cmd: `c${n}` } as PoolCall;
}

/** Where a plain array takes a retry: behind the retries that wait. */
function queueFirst(
  model: PoolCall[],
  retries: Set<PoolCall>,
  c: PoolCall,
): void {
  let at = 0;
  while (at < model.length && retries.has(model[at]!)) at++;
  model.splice(at, 0, c);
  retries.add(c);
}

Deno.test("CallQueue keeps the order a plain array would, through pushes, retries first (in the order they came), removals anywhere and scans", () => {
  type Op =
    | { op: "push" }
    | { op: "unshift" }
    | { op: "remove"; at: number }
    | { op: "removeGone" }
    | { op: "scan"; every: number }
    | { op: "takeAll" };
  const ops = fc.array(
    fc.oneof(
      { arbitrary: fc.constant<Op>({ op: "push" }), weight: 6 },
      { arbitrary: fc.constant<Op>({ op: "unshift" }), weight: 2 },
      {
        arbitrary: fc.nat(5000).map((at): Op => ({ op: "remove", at })),
        weight: 3,
      },
      { arbitrary: fc.constant<Op>({ op: "removeGone" }), weight: 1 },
      {
        arbitrary: fc.integer({ min: 1, max: 4 }).map((every): Op => ({
          op: "scan",
          every,
        })),
        weight: 2,
      },
      { arbitrary: fc.constant<Op>({ op: "takeAll" }), weight: 1 },
    ),
    { minLength: 100, maxLength: 3000, size: "large" },
  );
  fc.assert(
    fc.property(ops, (list) => {
      const q = new CallQueue();
      let model: PoolCall[] = [];
      const retries = new Set<PoolCall>();
      const gone: PoolCall[] = [];
      let n = 0;
      for (const o of list) {
        switch (o.op) {
          case "push": {
            const c = call(n++);
            q.push(c);
            model.push(c);
            break;
          }
          case "unshift": {
            const c = call(n++);
            q.unshift(c);
            queueFirst(model, retries, c);
            break;
          }
          case "remove": {
            if (model.length === 0) break;
            const c = model.splice(o.at % model.length, 1)[0]!;
            assert.equal(q.remove(c), true);
            gone.push(c);
            break;
          }
          case "removeGone": {
            if (gone.length > 0) assert.equal(q.remove(gone[0]!), false);
            break;
          }
          case "scan": {
            // Takes every `every`-th call it meets, as the pump takes the
            // calls that can go, and queues a retry first mid-scan.
            let k = 0;
            let retried = false;
            q.scan(() => {
              let epoch = q.epoch;
              for (let i = q.start; i < q.end; i++) {
                if (q.epoch !== epoch) {
                  epoch = q.epoch;
                  i = q.start - 1;
                  continue;
                }
                const c = q.at(i);
                if (c === undefined) continue;
                if (k++ % o.every !== 0) continue;
                q.removeAt(i);
                model.splice(model.indexOf(c), 1);
                gone.push(c);
                if (!retried && k > 3) {
                  retried = true;
                  const r = call(n++);
                  q.unshift(r);
                  queueFirst(model, retries, r);
                }
              }
            });
            break;
          }
          case "takeAll":
            assert.deepEqual(q.takeAll(), model);
            gone.push(...model);
            model = [];
            break;
        }
        assert.equal(q.size, model.length);
      }
      assert.deepEqual(q.values(), model);
      assert.equal(q.first(), model[0]);
    }),
    { numRuns: 200 },
  );
});

Deno.test("CallQueue squeezes out its holes: an array of 100k sent calls does not stay", () => {
  const q = new CallQueue();
  const calls = Array.from({ length: 100_000 }, (_, i) => call(i));
  for (const c of calls) q.push(c);
  // Timeouts and cancels anywhere, outside a scan.
  for (let i = 0; i < calls.length; i += 2) q.remove(calls[i]!);
  assert.equal(q.size, 50_000);
  // In their order still, each found at its new place.
  assert.deepEqual(q.values(), calls.filter((_, i) => i % 2 === 1));
  assert.equal(q.remove(calls[99_999]!), true);
  assert.equal(q.remove(calls[1]!), true);
  assert.equal(q.first(), calls[3]);
  // Holes no more than the calls left (and 1024 at least).
  assert.ok(q.end - q.start <= 2 * q.size + 1025, `${q.end - q.start}`);
  const order: PoolCall[] = [];
  q.scan(() => {
    for (let i = q.start; i < q.end; i++) {
      const c = q.at(i);
      if (c === undefined) continue;
      order.push(c);
      q.removeAt(i);
    }
  });
  assert.deepEqual(order, calls.filter((_, i) => i % 2 === 1).slice(1, -1));
  assert.equal(q.size, 0);
  assert.equal(q.end - q.start, 0);
});

Deno.test("CallQueue: retries go first in the order they came, ahead of the calls that waited, behind the retries before them", () => {
  // Each went ahead of the others: a worker's crash retried its calls in
  // flight 3, 2, 1, 0 (chaos42).
  const q = new CallQueue();
  const waiting = [call(10), call(11)];
  for (const c of waiting) q.push(c);
  const retried = [call(0), call(1), call(2), call(3)];
  for (const c of retried) q.unshift(c);
  assert.deepEqual(q.values(), [...retried, ...waiting]);
  // Once they are sent, a later crash's retries start a run of their own.
  for (let i = 0; i < 4; i++) q.remove(q.first()!);
  const later = [call(4), call(5)];
  for (const c of later) q.unshift(c);
  assert.deepEqual(q.values(), [...later, ...waiting]);
  // One cancelled amid the run leaves the others' order.
  const more = call(6);
  q.remove(later[0]!);
  q.unshift(more);
  assert.deepEqual(q.values(), [later[1], more, ...waiting]);
});
