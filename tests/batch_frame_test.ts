import assert from "node:assert/strict";
import { ProtocolError } from "../src/errors.ts";
import {
  BATCH_LIMITS,
  batchMessages,
  isBatch,
  unbatch,
} from "../src/protocol/batch_frame.ts";
import type { Session } from "../src/session.ts";
import { DOUBLER, startServer } from "./_harness.ts";

const msg = (id: number, pad = 0) =>
  JSON.stringify({ id, cmd: "ping", pad: "x".repeat(pad) });

Deno.test("batchMessages joins a run of small texts into one batch, in order", () => {
  const items = [msg(1), msg(2), msg(3)];
  const out = batchMessages(items, BATCH_LIMITS);
  assert.equal(out.length, 1);
  assert.deepEqual(JSON.parse(out[0] as string), {
    batch: items.map((t) => JSON.parse(t)),
  });
});

Deno.test("batchMessages leaves bytes and long texts alone and batches around them", () => {
  const bytes = new TextEncoder().encode(msg(3));
  const long = msg(5, BATCH_LIMITS.maxItem);
  const items = [msg(1), msg(2), bytes, msg(4), long, msg(6)];
  const out = batchMessages(items, BATCH_LIMITS);
  assert.equal(out.length, 5);
  assert.deepEqual(
    JSON.parse(out[0] as string).batch.map((m: { id: number }) => m.id),
    [1, 2],
  );
  assert.equal(out[1], bytes);
  assert.equal(out[2], items[3], "a run of one stays a plain message");
  assert.equal(out[3], long);
  assert.equal(out[4], items[5]);
});

Deno.test("batchMessages starts a new batch before the batch limit", () => {
  const limits = { maxItem: 100, maxBatch: 250 };
  const items = Array.from({ length: 7 }, (_, i) => msg(i, 40)); // 70 units each
  const out = batchMessages(items, limits) as string[];
  assert.equal(out.length, 3, "3 + 3 + 1");
  assert.equal(JSON.parse(out[0]!).batch.length, 3);
  assert.equal(JSON.parse(out[1]!).batch.length, 3);
  assert.equal(out[2], items[6]);
  for (const t of out.slice(0, 2)) {
    assert.ok(
      t.length <= limits.maxBatch + '{"batch":[]}'.length,
      `${t.length}`,
    );
  }
  const ids = out.flatMap((t) => {
    const p = JSON.parse(t);
    return isBatch(p) ? p.batch.map((m: { id: number }) => m.id) : [p.id];
  });
  assert.deepEqual(ids, [0, 1, 2, 3, 4, 5, 6]);
});

Deno.test("batchMessages returns the same array when nothing is grouped", () => {
  const one = [msg(1)];
  assert.equal(batchMessages(one, BATCH_LIMITS), one);
  const alone = [new Uint8Array(3), msg(1, BATCH_LIMITS.maxItem)];
  assert.equal(batchMessages(alone, BATCH_LIMITS), alone);
});

Deno.test("isBatch and unbatch tell batches from other messages and refuse bad ones", () => {
  assert.equal(isBatch({ batch: [] }), true);
  assert.equal(isBatch({ event: "hello", batch: true }), false);
  assert.equal(isBatch({ id: 1, cmd: "x", batch: [] }), false);
  assert.equal(isBatch({ id: 1, ok: true, batch: [] }), false);
  assert.deepEqual(unbatch({ batch: [{ id: 1 }, { event: "e" }] }), [
    { id: 1 },
    { event: "e" },
  ]);
  for (
    const [bad, why] of [
      [{ batch: 5 }, /must be an array/],
      [{ batch: [{ id: 1 }, 2] }, /not a JSON object/],
      [{ batch: [null] }, /not a JSON object/],
      [{ batch: [[]] }, /not a JSON object/],
      [{ batch: [{ batch: [] }] }, /batch inside a batch/],
    ] as const
  ) {
    const got = unbatch(bad as Record<string, unknown>);
    assert.ok(got instanceof ProtocolError, JSON.stringify(bad));
    assert.match(got.message, why);
  }
});

/** Runs `count` concurrent doubler calls on `session`, checks them, returns the server's batch counts. */
async function doubleConcurrently(
  session: Session,
  count: number,
): Promise<{ received: number; sent: number }> {
  await session.addModel("d", { file: "models/doubler.py" });
  const calls = Array.from(
    { length: count },
    (_, x) => session.execute("d", { x }, { timeout: 10_000 }),
  );
  assert.deepEqual(
    await Promise.all(calls),
    Array.from({ length: count }, (_, x) => ({ y: 2 * x })),
  );
  return (await session.status()).batchFrames!;
}

Deno.test("Session and server negotiate batch frames and use them both ways", async () => {
  await using server = await startServer({
    files: { "models/doubler.py": DOUBLER },
  });
  await using session = await server.connect();
  assert.equal(session.serverInfo.batch, true);
  const frames = await doubleConcurrently(session, 300);
  assert.ok(
    frames.received > 0,
    `host sent batches: ${JSON.stringify(frames)}`,
  );
  assert.ok(frames.sent > 0, `server sent batches: ${JSON.stringify(frames)}`);
});

Deno.test("A session whose frame limit is below a batch does not ask for batches", async () => {
  await using server = await startServer({
    files: { "models/doubler.py": DOUBLER },
  });
  await using session = await server.connect({ maxFrameSize: 65536 });
  const frames = await doubleConcurrently(session, 100);
  assert.equal(frames.sent, 0, "the server sends no batch to this session");
  assert.ok(frames.received > 0, "the session still sends batches");
});
