// The error of a batched call whose message cannot be sent, as its own
// (src/_batched_send_error.ts): over the server's frame limit, the size is
// the call's own message's, as a call to a model that does not batch says.
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import { SerializationError } from "../src/errors.ts";
import { batchedSendError, batchOverhead } from "../src/_batched_send_error.ts";
import { modelsDir } from "./_pool_harness.ts";

// Same-length names: the messages of the two differ only in their wrapping.
const BATCHING = `
class Batching:
    batch_size = 16
    batch_delay_ms = 20
    def execute_batch(self, msgs):
        return [{"id": m.get("id")} for m in msgs]
`;
const ALONE = `
class Alone:
    def execute(self, msg):
        return msg
`;

Deno.test("batchedSendError: the frame-limit error of a batched call reports the size of the call's own message, with its request id, headers and trace context", async () => {
  await using dir = await modelsDir();
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
    maxFrameSize: 8192,
    plugins: { defaults: false, use: [] },
  });
  await pool.addModel("batch", { source: BATCHING });
  await pool.addModel("alone", { source: ALONE });
  // Request ids of two digits from here on (the messages hold theirs): the
  // calls below stay well under 100.
  for (let i = 0; i < 10; i++) await pool.execute("alone", { i });
  const msg = { id: 6, s: "x".repeat(9000) };
  const optionSets = [
    {},
    { requestId: "req-1" },
    { headers: { "x-a": "b", "x-b": "ü" } },
    {
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      tracestate: "x=y",
    },
    {
      requestId: "r",
      headers: { "x-a": "b" },
      traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    },
  ];
  for (const options of optionSets) {
    const fail = (name: string) =>
      pool.execute(name, msg, options).then(
        () => assert.fail(`${name}: sent`),
        (err: unknown) => err as SerializationError,
      );
    const unbatched = await fail("alone");
    const batched = await fail("batch");
    const what = JSON.stringify(options);
    assert.ok(batched instanceof SerializationError, `${what}: ${batched}`);
    assert.match(unbatched.message, /^Cannot send executeModel: \d+ bytes/);
    assert.equal(batched.message, unbatched.message, what);
    assert.deepEqual(batched.details, unbatched.details, what);
  }
});

Deno.test("batchedSendError: a message that fits alone but not in its batch of one keeps the size of what was refused", () => {
  const limit = 8192;
  const refused = new SerializationError(
    `Cannot send executeBatch: ${
      limit + 5
    } bytes exceed the server's frame limit of ${limit} (spill-over sends larger messages through files)`,
    { details: { bytes: limit + 5, limit } },
  );
  const err = batchedSendError(refused, batchOverhead({}));
  assert.equal(batchOverhead({}), 16);
  assert.equal(err.details.bytes, limit + 5);
  assert.match(err.message, /^Cannot send executeModel: 8197 bytes exceed/);
});
