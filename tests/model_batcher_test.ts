// ModelBatcher against a fake send that behaves as the pool and session do
// (onSend before the message is encoded; a message that cannot be encoded
// refused unsent; an aborted batch cancelled): what its callers see.
import assert from "node:assert/strict";
import fc from "fast-check";
import { ModelBatcher, type SendBatch } from "../src/_model_batcher.ts";
import { markUnsent } from "../src/_unsent.ts";
import {
  CancelledError,
  PyProxyError,
  SerializationError,
} from "../src/errors.ts";

Deno.test("ModelBatcher words a reply short of results for the batch's size: '1 result', '2 results'", async () => {
  for (const [n, says] of [[1, "1 result"], [2, "2 results"]] as const) {
    const batcher = new ModelBatcher(
      "scorer",
      { size: 8, delayMs: 0 },
      () => Promise.resolve({ results: [] }),
      Infinity,
      () => 0, // nothing goes at once: the calls gather
    );
    const calls = Array.from({ length: n }, (_, i) => batcher.add({ i }, {}));
    batcher.flush();
    for (const r of await Promise.allSettled(calls)) {
      const err = (r as PromiseRejectedResult).reason as Error;
      assert.equal(err.name, "ProtocolError");
      assert.equal(
        err.message,
        `Cannot complete executeModel of model 'scorer': the reply to its batch of ${n} does not hold ${says}`,
      );
    }
  }
});

/** A call of the property below: may be unsendable, aborted, timed out. */
interface Plan {
  bad: boolean;
  /** Aborted when the batch of this number is sent (then, or a tick later). */
  abortAt: { batch: number; late: boolean } | null;
  /** Its own timeout, in ms (`Infinity`: none). */
  timeout: number;
  /** Its batch fails on the worker (after it ran). */
  raises: boolean;
}

const plan: fc.Arbitrary<Plan> = fc.record({
  bad: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
  abortAt: fc.option(
    fc.record({ batch: fc.nat({ max: 8 }), late: fc.boolean() }),
    { freq: 4 },
  ),
  timeout: fc.oneof(
    { weight: 5, arbitrary: fc.constant(Infinity) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }) },
  ),
  raises: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
});

Deno.test("ModelBatcher property: with unsendable calls, aborts and timeouts in random batches, each call settles, runs at most once, is told to onSend once per batch it goes in (parts included), and only a call's own message fails it", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(plan, { minLength: 1, maxLength: 24 }),
      fc.integer({ min: 1, max: 8 }),
      async (plans, size) => {
        const runs = new Map<number, number>();
        const sends = new Map<number, number>();
        // The batches each call went in (a batch taken apart, its parts).
        const attempts = new Map<number, number>();
        const aborts = plans.map(() => new AbortController());
        let batches = 0;
        const send: SendBatch = (msgs, options) => {
          const n = batches++;
          for (const m of msgs) {
            const id = (m as { id: number }).id;
            attempts.set(id, (attempts.get(id) ?? 0) + 1);
          }
          // As the pool: onSend when it leaves the queue, before encoding.
          options.onSend("w1");
          const late: number[] = [];
          plans.forEach((p, i) => {
            if (p.abortAt?.batch !== n) return;
            if (p.abortAt.late) late.push(i);
            else aborts[i]!.abort();
          });
          return (async () => {
            await Promise.resolve(); // the session's middleware
            for (const i of late) aborts[i]!.abort();
            if (options.signal.aborted) {
              throw new CancelledError("Cannot send executeBatch: aborted");
            }
            const ids = msgs.map((m) => (m as { id: number }).id);
            const bad = ids.find((id) => plans[id]!.bad);
            if (bad !== undefined) {
              const err = new SerializationError(
                `Cannot send executeBatch: msgs[${
                  ids.indexOf(bad)
                }].n is a BigInt`,
                {
                  details: {
                    reason: `msgs[${ids.indexOf(bad)}].n is a BigInt`,
                  },
                },
              );
              markUnsent(err);
              throw err;
            }
            // Written: it runs.
            for (const id of ids) runs.set(id, (runs.get(id) ?? 0) + 1);
            await Promise.resolve();
            if (ids.some((id) => plans[id]!.raises)) {
              throw new PyProxyError("Cannot run model: it raised");
            }
            return { results: ids.map((id) => ({ id })) };
          })();
        };
        const batcher = new ModelBatcher(
          "m",
          { size, delayMs: 0 },
          send,
          Infinity,
          () => 1,
        );
        const calls = plans.map((p, id) =>
          batcher.add({ id }, {
            timeout: p.timeout,
            signal: aborts[id]!.signal,
            onSend: () => sends.set(id, (sends.get(id) ?? 0) + 1),
          })
        );
        const settled = await Promise.allSettled(calls);
        settled.forEach((r, id) => {
          const p = plans[id]!;
          const why = `call ${id} of ${JSON.stringify(plans)}`;
          assert.ok((runs.get(id) ?? 0) <= 1, `ran twice: ${why}`);
          // Not told for a batch it had given up on before it went.
          assert.ok(
            (sends.get(id) ?? 0) <= (attempts.get(id) ?? 0),
            `told more than sent: ${why}`,
          );
          if (r.status === "fulfilled") {
            assert.deepEqual(r.value, { id }, why);
            // Told for each batch it went in: the last, the one that ran it.
            assert.equal(sends.get(id), attempts.get(id), why);
            assert.equal(runs.get(id), 1, why);
            assert.ok(!p.bad, why);
            return;
          }
          const err = r.reason as Error;
          if (err instanceof SerializationError) {
            // Its own message only, worded as its own call's.
            assert.ok(p.bad, `failed for another's message: ${why}`);
            assert.equal(
              err.message,
              "Cannot send executeModel: msg.n is a BigInt",
            );
            assert.equal(runs.get(id), undefined, why);
          } else if (err.name === "PyProxyError") {
            assert.equal(runs.get(id), 1, why);
          } else {
            // Given up on: its abort or its timeout, nothing else.
            assert.ok(
              (err.name === "CancelledError" && p.abortAt !== null) ||
                (err.name === "TimeoutError" && p.timeout !== Infinity),
              `${err.name}: ${err.message}: ${why}`,
            );
          }
        });
        // Each batch's end (its finally) comes after its calls settled.
        await new Promise((resolve) => setTimeout(resolve, 0));
        assert.equal(batcher.inFlight, 0);
        assert.equal(batcher.waiting, 0);
      },
    ),
    // A fixed seed: the same runs each time (the timeouts' timers aside).
    { seed: 20261207, numRuns: 150 },
  );
});
