// A batched call whose message the server cannot read (nested deeper than
// its parser allows, an integer longer than it converts; docs/protocol.md §2)
// fails alone, with the error the same call to a model that does not batch
// gets; the other calls of its batch each run once (docs/models.md,
// "Batching").
import assert from "node:assert/strict";
import { Pool, type PoolOptions } from "../src/pool.ts";
import { modelsDir } from "./_pool_harness.ts";

/** Records the ids it runs; `{report: true}` answers them, `{sleep}` holds the worker. */
const RECORDER = `
import time
class Recorder:
    batch_size = 16
    batch_delay_ms = 20
    def __init__(self):
        self.seen = []
    def execute_batch(self, msgs):
        if any(m.get("report") for m in msgs):
            return [{"seen": list(self.seen)} for m in msgs]
        if any(m.get("sleep") for m in msgs):
            time.sleep(max(m.get("sleep", 0) for m in msgs))
        self.seen.extend(m["id"] for m in msgs if "id" in m)
        return [{"id": m.get("id")} for m in msgs]
`;

/** A model that does not batch: its calls' errors are the ones to match. */
const ECHO = `
class Echo:
    def execute(self, msg):
        return msg
`;

function nested(levels: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < levels; i++) value = [value];
  return value;
}

/** The server's refusal, but for the request id it names. */
function withoutId(message: string): string {
  return message.replace(
    /^Cannot parse request \d+:/,
    "Cannot parse request N:",
  );
}

// Without spill-over: its size walk refuses nesting past 900 levels on the
// host (a SerializationError, taken apart already); nothing refuses it here.
const OPTIONS: PoolOptions = {
  workers: 1,
  handleSignals: false,
  integers: "bigint",
  plugins: { defaults: false, use: [] },
};

const CASES: Array<[string, () => Record<string, unknown>, RegExp]> = [
  // 3.9–3.11 parse about 1000 levels, 3.12 1500, 3.13 10000.
  [
    "nested deeper than the server's parser allows",
    () => ({ id: -1, inner: { deep: nested(20_000) } }),
    /JSON nested deeper than the server's parser allows/,
  ],
  [
    "an integer longer than the server converts",
    () => ({ id: -1, n: 10n ** 5000n }),
    /an integer of 5001 digits/,
  ],
];

for (const [what, bad, says] of CASES) {
  Deno.test(`Pool batching: a call whose message the server cannot read (${what}) fails alone with the error of an unbatched call; every other call of its batch runs once`, async () => {
    await using dir = await modelsDir();
    await using pool = await Pool.start({ ...OPTIONS, modelsDir: dir.path });
    await pool.addModel("rec", { source: RECORDER });
    await pool.addModel("echo", { source: ECHO });
    const unbatched = await pool.execute("echo", bad()).then(
      () => assert.fail("read"),
      (err: unknown) => err as Error & { code: string },
    );
    assert.match(unbatched.message, says);
    // The worker busy: the calls below gather into one batch behind it.
    const blocker = pool.execute("rec", { sleep: 0.05 });
    const ids = [0, 1, 2, 3, 4];
    const calls = [0, 1, -1, 2, 3, 4].map((id) =>
      pool.execute("rec", id === -1 ? bad() : { id })
    );
    const settled = await Promise.allSettled(calls);
    await blocker;
    assert.deepEqual(
      settled.map((r) => r.status),
      [
        "fulfilled",
        "fulfilled",
        "rejected",
        "fulfilled",
        "fulfilled",
        "fulfilled",
      ],
      String(settled.map((r) => r.status === "rejected" ? r.reason : "")),
    );
    const err = (settled[2] as PromiseRejectedResult).reason;
    assert.equal(err.constructor, unbatched.constructor);
    assert.equal(err.name, "InvalidRequestError");
    assert.equal(err.code, unbatched.code);
    assert.equal(withoutId(err.message), withoutId(unbatched.message));
    assert.doesNotMatch(err.message, /executeBatch|msgs/);
    // Each good message ran once: the refused batches ran nothing.
    const { seen } = await pool.execute("rec", { report: true }) as {
      seen: number[];
    };
    assert.deepEqual(seen.toSorted((a, b) => a - b), ids);
    assert.equal(pool.status().inFlight, 0);
  });
}

Deno.test("wasUnread trusts the server's unread mark, and the wording of a server older than it", async () => {
  const { wasUnread } = await import("../src/_unread_request.ts");
  const { InvalidRequestError, RemoteError } = await import("../src/errors.ts");
  // The mark, whatever the words (protocol §2).
  assert.equal(
    wasUnread(
      new InvalidRequestError("Cannot parse request 7: reworded", {
        details: { unread: true },
      }),
    ),
    true,
  );
  // No mark: the older servers' words.
  assert.equal(
    wasUnread(
      new InvalidRequestError(
        "Cannot parse request 7: an integer of 5001 digits, more than this Python converts from text",
      ),
    ),
    true,
  );
  // Neither, or another error: it may have run.
  assert.equal(
    wasUnread(new InvalidRequestError("Cannot parse request 7: reworded")),
    false,
  );
  assert.equal(
    wasUnread(
      new RemoteError("PythonError", "boom", { details: { unread: true } }),
    ),
    false,
  );
});
