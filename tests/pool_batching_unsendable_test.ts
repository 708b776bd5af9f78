// A batched call whose message cannot be sent (docs/models.md, "Batching"):
// it fails alone, and the other calls of its batch each run once.
import assert from "node:assert/strict";
import { Pool, type PoolOptions } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";
import { spillover, type SpilloverPlugin } from "../plugins/spillover.ts";
import { SerializationError, ShuttingDownError } from "../src/errors.ts";
import { modelsDir } from "./_pool_harness.ts";

/**
 * Records the id of every message it runs; `{report: true}` answers them
 * (and the sizes of the batches), `{sleep}` holds the worker.
 */
const RECORDER = `
import time
class Recorder:
    batch_size = 16
    batch_delay_ms = 20
    def __init__(self):
        self.seen = []
        self.sizes = []
    def execute_batch(self, msgs):
        if any(m.get("report") for m in msgs):
            return [{"seen": list(self.seen), "sizes": list(self.sizes)} for m in msgs]
        if any(m.get("sleep") for m in msgs):
            time.sleep(max(m.get("sleep", 0) for m in msgs))
        if any(m.get("unjson") for m in msgs):
            self.seen.extend(m["id"] for m in msgs)
            return [object() for m in msgs]
        self.seen.extend(m.get("id") for m in msgs if "id" in m)
        self.sizes.append(len(msgs))
        return [{"id": m.get("id")} for m in msgs]
`;

function opts(dir: string, extra: PoolOptions = {}): PoolOptions {
  return { workers: 1, modelsDir: dir, handleSignals: false, ...extra };
}

/** Messages that cannot be sent, each with what its error must say. */
function unsendable(): Array<[string, Record<string, unknown>, RegExp]> {
  const buffer = new ArrayBuffer(4);
  const view = new Uint8Array(buffer);
  structuredClone(buffer, { transfer: [buffer] }); // detaches it
  const cycle: Record<string, unknown> = { id: -1 };
  cycle.self = cycle;
  return [
    ["a BigInt", { id: -1, n: 1n }, /BigInt/],
    ["NaN (JSON.stringify writes null)", { id: -1, n: NaN }, /\.n is NaN/],
    ["a getter that throws", {
      id: -1,
      get n(): never {
        throw new Error("getter boom");
      },
    }, /getter boom/],
    ["bytes over a detached ArrayBuffer", { id: -1, view }, /detached/],
    ["a cycle", cycle, /circular/],
    [
      "a Proxy whose trap throws",
      new Proxy({ id: -1 }, {
        ownKeys() {
          throw new Error("trap boom");
        },
      }),
      /trap boom/,
    ],
  ];
}

/** An onRequest hook that awaits before it passes the message on. */
function asyncHook(): Plugin {
  return {
    name: "async-hook",
    onRequest: async (msg) => {
      await Promise.resolve();
      return msg;
    },
  };
}

const SETUPS: Array<[string, PoolOptions]> = [
  ["no spill-over", { plugins: { defaults: false, use: [] } }],
  // Each good message is spilled (a file), and so are the batches.
  ["spill-over", { plugins: [spillover({ threshold: 256 })] }],
  ["an async onRequest hook", { plugins: [asyncHook()] }],
];

for (const [setup, extra] of SETUPS) {
  Deno.test(`Pool batching (${setup}): a call whose message cannot be sent fails alone with its SerializationError; every other call of its batch runs once`, async () => {
    await using dir = await modelsDir();
    await using pool = await Pool.start(opts(dir.path, extra));
    await pool.addModel("rec", { source: RECORDER });
    const pad = "p".repeat(400); // spilled with the threshold above
    let next = 0;
    const expected: number[] = [];
    for (const [what, bad, says] of unsendable()) {
      // The worker busy: the calls below gather into one batch behind it.
      const blocker = pool.execute("rec", { sleep: 0.05 });
      const good = (pos: number) => {
        const id = next++;
        expected.push(id);
        return { id, pos, pad };
      };
      // The bad one among others, not first: the path in its error is its own.
      const calls = [good(0), good(1), bad, good(3), good(4), good(5)].map(
        (msg) => pool.execute("rec", msg),
      );
      const settled = await Promise.allSettled(calls);
      await blocker;
      settled.forEach((r, i) => {
        if (i === 2) {
          assert.equal(r.status, "rejected", what);
          const err = (r as PromiseRejectedResult).reason;
          assert.ok(err instanceof SerializationError, `${what}: ${err}`);
          assert.match(err.message, says, what);
        } else {
          assert.equal(
            r.status,
            "fulfilled",
            `${what}: ${r.status === "rejected" ? r.reason : ""}`,
          );
        }
      });
      assert.deepEqual(
        settled.flatMap((r) =>
          r.status === "fulfilled" ? [(r.value as { id: number }).id] : []
        ),
        expected.slice(-5),
        what,
      );
    }
    // Each good message ran once: none twice (sent again after it ran),
    // none lost.
    const { seen } = await pool.execute("rec", { report: true }) as {
      seen: number[];
    };
    assert.deepEqual(seen.toSorted((a, b) => a - b), expected);
    assert.equal(pool.status().inFlight, 0);
    const spill = (extra.plugins as { name: string }[]).find?.((p) =>
      p.name === "spillover"
    ) as SpilloverPlugin | undefined;
    // The messages (and the batches taken apart) went through files there.
    if (spill !== undefined) {
      assert.ok(spill.stats.spilledOut >= 10, String(spill.stats.spilledOut));
      // None left counted: the attempts refused midway dropped their files.
      assert.equal(spill.pendingBytes, 0);
    }
  });
}

Deno.test("Pool batching: a batch the model ran is never sent again, its SerializationError (a result that is not JSON) fails every call once", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start(opts(dir.path));
  await pool.addModel("rec", { source: RECORDER });
  const blocker = pool.execute("rec", { sleep: 0.05 });
  const calls = [0, 1, 2].map((id) =>
    pool.execute("rec", { id, unjson: true })
  );
  const settled = await Promise.allSettled(calls);
  await blocker;
  for (const r of settled) {
    assert.equal(r.status, "rejected");
    // The server's (a RemoteError of that name), not the session's.
    assert.equal(r.reason.name, "SerializationError", String(r.reason));
    assert.match(r.reason.message, /not JSON/);
  }
  // The batch of three ran once (taken apart and sent again, its messages
  // would have run twice).
  const { seen } = await pool.execute("rec", { report: true }) as {
    seen: number[];
  };
  assert.deepEqual(seen, [0, 1, 2]);
});

Deno.test("Pool batching: batches over the server's frame limit are taken apart until they fit; a message over it alone fails alone", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start(
    opts(dir.path, {
      maxFrameSize: 8192,
      plugins: { defaults: false, use: [] },
    }),
  );
  await pool.addModel("rec", { source: RECORDER });
  const blocker = pool.execute("rec", { sleep: 0.05 });
  // Six of 3 KB: 18 KB as one batch, more than 8 KiB.
  const calls = [0, 1, 2, 3, 4, 5].map((id) =>
    pool.execute("rec", { id, s: "x".repeat(3000) })
  );
  const tooLarge = pool.execute("rec", { id: 6, s: "x".repeat(9000) });
  const [settled, alone] = await Promise.all([
    Promise.allSettled(calls),
    tooLarge.then(() => assert.fail("sent"), (err: unknown) => err),
  ]);
  await blocker;
  assert.ok(alone instanceof SerializationError, String(alone));
  assert.match(alone.message, /exceed the server's frame limit of 8192/);
  assert.deepEqual(
    settled.map((r) => r.status === "fulfilled" && r.value),
    [0, 1, 2, 3, 4, 5].map((id) => ({ id })),
  );
  const { seen, sizes } = await pool.execute("rec", { report: true }) as {
    seen: number[];
    sizes: number[];
  };
  assert.deepEqual(seen.toSorted((a, b) => a - b), [0, 1, 2, 3, 4, 5]);
  // In batches of two at most (two fit in 8 KiB, three do not).
  assert.ok(sizes.slice(1).every((n) => n <= 2), String(sizes));
});

Deno.test("Pool batching: a call left alone in a batch that failed for another's message (given up on meanwhile) is sent again, alone", async () => {
  // The other call gives up while the batch waits in an onRequest hook:
  // the batch then fails for its message, which its last caller did not send.
  const gate = Promise.withResolvers<void>();
  const held = Promise.withResolvers<void>();
  const hook: Plugin = {
    name: "gate",
    onRequest: async (msg) => {
      if (
        msg.cmd === "executeBatch" && Array.isArray(msg.msgs) &&
        msg.msgs.length === 2
      ) {
        held.resolve();
        await gate.promise;
      }
      return msg;
    },
  };
  await using dir = await modelsDir();
  // Without spill-over: its size walk, before the hook, would refuse the
  // BigInt at once.
  await using pool = await Pool.start(
    opts(dir.path, { plugins: { defaults: false, use: [hook] } }),
  );
  await pool.addModel("rec", { source: RECORDER });
  const blocker = pool.execute("rec", { sleep: 0.05 });
  const abort = new AbortController();
  const good = pool.execute("rec", { id: 1 });
  const bad = pool.execute("rec", { id: 2, n: 1n }, { signal: abort.signal });
  await held.promise;
  abort.abort();
  await assert.rejects(bad, { name: "CancelledError" });
  gate.resolve();
  assert.deepEqual(await good, { id: 1 });
  await blocker;
  const { seen } = await pool.execute("rec", { report: true }) as {
    seen: number[];
  };
  assert.deepEqual(seen, [1]);
});

Deno.test("Pool batching: the parts of a batch taken apart are not new calls: a full pool queue (maxQueue) refuses none of them", async () => {
  // One call in flight per worker and a queue of one: the batch was
  // admitted; its parts, sent again while another call holds the queue's
  // place, got OverloadedError (a good call failed for another's message).
  await using dir = await modelsDir();
  await using pool = await Pool.start(
    opts(dir.path, {
      maxInFlightPerWorker: 1,
      maxQueue: 1,
      plugins: { defaults: false, use: [] },
    }),
  );
  await pool.addModel("rec", { source: RECORDER });
  const blocker = pool.execute("rec", { sleep: 0.05 });
  const calls = [0, 1, 2, 3, 4, 5].map((id) =>
    pool.execute("rec", id === 0 ? { id, n: 1n } : { id })
  );
  const settled = await Promise.allSettled(calls);
  await blocker;
  settled.forEach((r, i) => {
    if (i === 0) {
      assert.equal(r.status, "rejected");
      assert.ok(
        (r as PromiseRejectedResult).reason instanceof SerializationError,
        String((r as PromiseRejectedResult).reason),
      );
    } else {
      assert.deepEqual(
        r.status === "fulfilled" ? r.value : String(r.reason),
        { id: i },
      );
    }
  });
  const { seen } = await pool.execute("rec", { report: true }) as {
    seen: number[];
  };
  assert.deepEqual(seen.toSorted((a, b) => a - b), [1, 2, 3, 4, 5]);
  assert.equal(pool.status().inFlight, 0);
});

/** A model that does not batch: its calls' errors are the ones to match. */
const ECHO = `
class Echo:
    def execute(self, msg):
        return msg
`;

// The tests of a pool without plugins, as steps on one such pool (a Python server start each,
// otherwise); each step's models are removed after it, so the next step's recorder starts with
// no batch sizes.
Deno.test("Pool batching of unsendable messages on one pool without plugins (each step its own models)", async (t) => {
  await using dir = await modelsDir();
  await using pool = await Pool.start(
    opts(dir.path, { plugins: { defaults: false, use: [] } }),
  );
  await t.step(
    "Pool batching: the error of a call whose message cannot be sent reads as it would without batching (executeModel, msg.<path>), not as the batch's (executeBatch, msgs[0].<path>)",
    () => poolBatchingErrorCallWhose(pool).finally(() => removeModels(pool)),
  );
  await t.step(
    "Pool batching: a call of a batch taken apart counts once in the queue waits, with the batch it first went in; its onSend is called for each part it goes in",
    () => poolBatchingCallBatchTaken(pool).finally(() => removeModels(pool)),
  );
});

/** Removes every model of `pool` (a step's models, once it ended). */
async function removeModels(pool: Pool): Promise<void> {
  for (const { name } of pool.status().models) await pool.removeModel(name);
}

/** A step of "Pool batching of unsendable messages on one pool without plugins (each step its own models)": Pool batching: the error of a call whose message cannot be sent reads as it would without batching (executeModel, msg.<path>), not as the batch's (executeBatch, msgs[0].<path>) */
async function poolBatchingErrorCallWhose(pool: Pool): Promise<void> {
  await pool.addModel("rec", { source: RECORDER });
  await pool.addModel("echo", { source: ECHO });
  // Deeper than the top: the path is the caller's. Keys that hold the
  // batch's `msgs[0]` are the caller's too, and stay as they are.
  const wrappers: Array<(bad: unknown) => Record<string, unknown>> = [
    (bad) => ({ id: -1, inner: bad }),
    (bad) => ({ id: -1, "a msgs[0]": { "(msgs[0])": { "msgs[0]": bad } } }),
  ];
  for (
    const [what, bad, wrap] of unsendable().flatMap(([w, b]) =>
      wrappers.map((wrap) => [w, b, wrap] as const)
    )
  ) {
    const msg = wrap(bad);
    const unbatched = await pool.execute("echo", msg).then(
      () => assert.fail(`${what}: sent`),
      (err: unknown) => err as SerializationError,
    );
    const blocker = pool.execute("rec", { sleep: 0.02 });
    const calls = [{ id: 1 }, msg, { id: 2 }].map((m) =>
      pool.execute("rec", m)
    );
    const settled = await Promise.allSettled(calls);
    await blocker;
    assert.deepEqual(
      settled.map((r) => r.status),
      ["fulfilled", "rejected", "fulfilled"],
      what,
    );
    const err = (settled[1] as PromiseRejectedResult).reason;
    assert.ok(err instanceof SerializationError, `${what}: ${err}`);
    assert.equal(err.message, unbatched.message, what);
    assert.deepEqual(err.details, unbatched.details, what);
    assert.doesNotMatch(err.message, /executeBatch|^[^:]*: msgs\[/, what);
  }
}

/** A step of "Pool batching of unsendable messages on one pool without plugins (each step its own models)": Pool batching: a call of a batch taken apart counts once in the queue waits, with the batch it first went in; its onSend is called for each part it goes in */
async function poolBatchingCallBatchTaken(pool: Pool): Promise<void> {
  await pool.addModel("rec", { source: RECORDER });
  const before = pool.queueWaits().count;
  const sends = new Map<number, string[]>();
  const onSend = (id: number) => (worker: string) => {
    sends.set(id, [...sends.get(id) ?? [], worker]);
  };
  const blocker = pool.execute("rec", { sleep: 0.05 });
  // One batch of six behind the blocker; the BigInt takes it apart into
  // four more (3, 3, then 2 and 1), which must not count as queue waits.
  const calls = [0, 1, 2, 3, 4, 5].map((id) =>
    pool.execute("rec", id === 2 ? { id, n: 1n } : { id }, {
      onSend: onSend(id),
    })
  );
  const settled = await Promise.allSettled(calls);
  await blocker;
  assert.deepEqual(settled.map((r) => r.status), [
    "fulfilled",
    "fulfilled",
    "rejected",
    "fulfilled",
    "fulfilled",
    "fulfilled",
  ]);
  // The six, then [0, 1, 2] and [3, 4, 5], then [0, 1] and [2].
  assert.deepEqual(
    [...sends].toSorted(([a], [b]) => a - b),
    [0, 1, 2, 3, 4, 5].map((id) => [id, Array(id < 3 ? 3 : 2).fill("w1")]),
  );
  // The blocker and the batch of six: two calls left the queue.
  assert.equal(pool.queueWaits().count - before, 2);
  const { sizes } = await pool.execute("rec", { report: true }) as {
    sizes: number[];
  };
  // The blocker, and the parts that ran: [3, 4, 5] and [0, 1].
  assert.deepEqual(sizes.toSorted((a, b) => a - b), [1, 2, 3]);
}

Deno.test("Pool batching: a close() while a batch is taken apart fails its calls with the ShuttingDownError of an execute (executeModel), not of executeBatch", async () => {
  // The batch of three waits in an onRequest hook while the pool begins to
  // close; then it fails for the BigInt and its parts are refused.
  const gate = Promise.withResolvers<void>();
  const held = Promise.withResolvers<void>();
  const hook: Plugin = {
    name: "gate",
    onRequest: async (msg) => {
      if (
        msg.cmd === "executeBatch" && Array.isArray(msg.msgs) &&
        msg.msgs.length === 3
      ) {
        held.resolve();
        await gate.promise;
      }
      return msg;
    },
  };
  await using dir = await modelsDir();
  await using pool = await Pool.start(
    opts(dir.path, { plugins: { defaults: false, use: [hook] } }),
  );
  await pool.addModel("rec", { source: RECORDER });
  const blocker = pool.execute("rec", { sleep: 0.05 });
  const calls = [0, 1, 2].map((id) =>
    pool.execute("rec", id === 1 ? { id, n: 1n } : { id })
  );
  await held.promise;
  const closing = pool.close();
  gate.resolve();
  const settled = await Promise.allSettled(calls);
  await blocker;
  await closing;
  for (const r of settled) {
    assert.equal(r.status, "rejected");
    const err = (r as PromiseRejectedResult).reason;
    assert.ok(err instanceof ShuttingDownError, String(err));
    assert.equal(
      err.message,
      "Cannot accept call executeModel: pool is closing",
    );
  }
});
