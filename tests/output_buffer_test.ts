import assert from "node:assert/strict";
import { OutputBuffer, type OutputChunk } from "../src/output_buffer.ts";

async function collect(
  stream: ReadableStream<OutputChunk>,
): Promise<OutputChunk[]> {
  const out: OutputChunk[] = [];
  for await (const chunk of stream) out.push(chunk);
  return out;
}

Deno.test("OutputBuffer replays from a sequence number after the end", async () => {
  const buffer = new OutputBuffer();
  for (let seq = 0; seq < 5; seq++) {
    buffer.push({ fd: seq % 2 === 0 ? 1 : 2, data: `c${seq}`, seq });
  }
  buffer.end();
  const chunks = await collect(buffer.readable(2));
  assert.deepEqual(chunks.map((c) => c.data), ["c2", "c3", "c4"]);
  assert.deepEqual(chunks.map((c) => c.fd), [1, 2, 1]);
  assert.ok(chunks.every((c) => c.truncated === undefined));
});

Deno.test("OutputBuffer drops the oldest chunks beyond its cap and marks the gap", async () => {
  const acks: number[] = [];
  const buffer = new OutputBuffer({
    maxBytes: 10,
    onAck: (seq) => acks.push(seq),
  });
  for (let seq = 0; seq < 10; seq++) buffer.push({ fd: 1, data: "abcd", seq });
  buffer.end();
  // Nobody reads: every chunk is acknowledged as it is stored.
  assert.deepEqual(acks, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.ok(buffer.bytes <= 10);
  assert.equal(buffer.dropped, 8);
  const chunks = await collect(buffer.readable(0));
  assert.deepEqual(chunks.map((c) => [c.seq, c.truncated]), [[8, 8], [
    9,
    undefined,
  ]]);
});

Deno.test("OutputBuffer keeps the newest chunk even when it exceeds the cap", async () => {
  const buffer = new OutputBuffer({ maxBytes: 1 });
  buffer.push({ fd: 1, data: "long text", seq: 0 });
  buffer.end();
  assert.deepEqual((await collect(buffer.readable())).map((c) => c.data), [
    "long text",
  ]);
});

Deno.test("OutputBuffer holds acks back until an attached reader takes the chunks", async () => {
  const acks: number[] = [];
  const buffer = new OutputBuffer({
    maxBytes: 4,
    onAck: (seq) => acks.push(seq),
  });
  const reader = buffer.readable().getReader();
  const first = reader.read(); // attaches, waits for data
  buffer.push({ fd: 1, data: "aaaa", seq: 0 });
  assert.equal((await first).value?.data, "aaaa");
  assert.deepEqual(acks, [0]);
  buffer.push({ fd: 2, data: "bbbb", seq: 1 });
  buffer.push({ fd: 1, data: "cccc", seq: 2 });
  // Not read yet: not acknowledged, and not dropped despite the cap (only the
  // delivered chunk 0 is).
  assert.deepEqual(acks, [0]);
  assert.equal(buffer.dropped, 1);
  assert.equal((await reader.read()).value?.seq, 1);
  assert.deepEqual(acks, [0, 1]);
  await reader.cancel();
  // Detached: everything stored counts as acknowledged, and the cap applies again.
  assert.deepEqual(acks, [0, 1, 2]);
  assert.equal(buffer.bytes, 4);
});

Deno.test("OutputBuffer delivers live chunks and closes at the end", async () => {
  const buffer = new OutputBuffer();
  const done = collect(buffer.readable());
  buffer.push({ fd: 1, data: "x", seq: 0 });
  await Promise.resolve();
  buffer.push({ fd: 1, data: "y", seq: 1 });
  buffer.end();
  buffer.push({ fd: 1, data: "ignored", seq: 2 });
  assert.deepEqual((await done).map((c) => c.data), ["x", "y"]);
});

Deno.test("OutputBuffer ignores duplicate sequence numbers", async () => {
  const buffer = new OutputBuffer();
  buffer.push({ fd: 1, data: "a", seq: 0 });
  buffer.push({ fd: 1, data: "again", seq: 0 });
  buffer.end();
  assert.deepEqual((await collect(buffer.readable())).map((c) => c.data), [
    "a",
  ]);
});
