// ModelBatcher against a fake send: what its callers see.
import assert from "node:assert/strict";
import { ModelBatcher } from "../src/_model_batcher.ts";

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
