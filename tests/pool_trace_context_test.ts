/**
 * A library caller's trace context (`pool.execute`'s `traceparent` and
 * `tracestate`) reaching the model: `host.trace_context()` in `execute`,
 * `host.trace_contexts()` aligned with the messages of `execute_batch`, and
 * the refusal of a context the W3C spec refuses. The gateway's side is in
 * gateway_tracing_test.ts. Real Python workers.
 */
import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { modelsDir, PidTracker, poolOptions } from "./_pool_harness.ts";

const TRACED = `
from pyproxy import host

class Traced:
    def execute(self, msg):
        return {"one": host.trace_context(), "all": host.trace_contexts()}
`;

const BATCHED = `
from pyproxy import host

class Batched:
    batch_size = 8
    batch_delay_ms = 20

    def execute_batch(self, msgs):
        contexts = host.trace_contexts()
        return [{"x": m["x"], "n": len(msgs), "context": c, "one": host.trace_context()}
                for m, c in zip(msgs, contexts)]
`;

const PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/** A valid traceparent of its own for call `i`. */
function parentOf(i: number): string {
  return `00-${(i + 1).toString(16).padStart(32, "a")}-${
    (i + 1).toString(16).padStart(16, "b")
  }-01`;
}

Deno.test("Pool execute: a traceparent and tracestate reach host.trace_context(), each batched call's its own in host.trace_contexts()", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
    pids.watch(pool);
    await pool.addModel("traced", { source: TRACED });
    await pool.addModel("batched", { source: BATCHED });
    const context = {
      traceparent: PARENT,
      tracestate: "rojo=00f067aa0ba902b7",
    };
    assert.deepEqual(
      await pool.execute("traced", {}, context),
      { one: context, all: [context] },
    );
    // None given: none there (there is no tracing to turn on in the library).
    assert.deepEqual(await pool.execute("traced", {}), {
      one: null,
      all: [null],
    });
    // 12 calls at once: the first goes alone, the others gather behind it.
    // Every third call has no context: its slot in the list is None.
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, x) =>
        pool.execute(
          "batched",
          { x },
          x % 3 === 0 ? {} : { traceparent: parentOf(x) },
        ) as Promise<
          { x: number; n: number; context: unknown; one: unknown }
        >),
    );
    for (const [x, r] of results.entries()) {
      assert.equal(r.x, x);
      assert.deepEqual(
        r.context,
        x % 3 === 0 ? null : { traceparent: parentOf(x) },
        `call ${x}`,
      );
      assert.equal(r.one, null, "host.trace_context() in execute_batch");
    }
    assert.ok(results.some((r) => r.n > 1), "some calls were batched");
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool execute: a traceparent the W3C spec refuses rejects with a ConfigError saying why, unsent", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
    pids.watch(pool);
    await pool.addModel("traced", { source: TRACED });
    const sent: string[] = [];
    for (
      const bad of [
        // The right shape, but an all-zero trace id (or span id): the
        // message must not read as if the shape were wrong.
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        PARENT.toUpperCase(),
        "00-xyz",
      ]
    ) {
      await assert.rejects(
        pool.execute("traced", {}, {
          traceparent: bad,
          onSend: (w) => sent.push(w),
        }),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, String(err));
          assert.match(
            err.message,
            /traceparent: expected a W3C traceparent \(00-<32 hex>-<16 hex>-<2 hex>, lower-case hex, neither id all zeros\), got /,
          );
          return true;
        },
      );
    }
    assert.deepEqual(sent, []);
  } finally {
    await pids.assertGone();
  }
});
