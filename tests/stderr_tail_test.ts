/**
 * StderrTail (src/_python_server_io.ts): a server's stderr drained for good,
 * its last 64 KiB kept, copied out of the chunks read.
 */
import assert from "node:assert/strict";
import { StderrTail } from "../src/_python_server_io.ts";

const TAIL = 64 * 1024;
const encoder = new TextEncoder();

/** The lines `from` to `to - 1`, as a server would write them. */
function lines(from: number, to: number): string {
  let text = "";
  for (let i = from; i < to; i++) text += `line ${i} of the flood\n`;
  return text;
}

Deno.test("StderrTail keeps the last 64 KiB, and copies them: the chunks read are not kept", async () => {
  // Each chunk a view of one shared buffer, as Deno's chunks of a pipe are
  // each a view of a 64 KiB buffer: kept as read, a flood's tail pinned a
  // buffer per chunk (~70 MB of a worker's flood, for 64 KiB of text).
  const text = lines(0, 5000);
  const shared = encoder.encode(text);
  const chunks: Uint8Array[] = [];
  for (let at = 0; at < shared.length; at += 37) {
    chunks.push(shared.subarray(at, Math.min(at + 37, shared.length)));
  }
  let seen = "";
  const tail = new StderrTail(
    ReadableStream.from(chunks),
    (piece) => seen += piece,
  );
  await tail.settled(10_000);
  assert.equal(seen, text);
  const expected = new TextDecoder().decode(shared.slice(-TAIL));
  assert.equal(tail.text(), expected);
  shared.fill(0x78); // "x": what the tail kept is its own
  assert.equal(tail.text(), expected);
});

Deno.test("StderrTail reads a byte stream into a buffer of its own, and wraps its ring", async () => {
  const parts = [lines(0, 10), "x".repeat(TAIL - 7), lines(10, 20), "é🙂\n"];
  const whole = parts.join("");
  const stream = new ReadableStream({
    type: "bytes",
    start(controller) {
      for (const part of parts) controller.enqueue(encoder.encode(part));
      controller.close();
    },
  });
  let seen = "";
  const tail = new StderrTail(stream, (piece) => seen += piece);
  await tail.settled(10_000);
  assert.equal(seen, whole);
  const bytes = encoder.encode(whole);
  assert.equal(tail.text(), new TextDecoder().decode(bytes.slice(-TAIL)));
  assert.ok(tail.text().endsWith("line 19 of the flood\né🙂\n"));
});

Deno.test("StderrTail of a stream that wrote nothing is empty; a chunk larger than the tail keeps its end", async () => {
  const empty = new StderrTail(ReadableStream.from<Uint8Array>([]), undefined);
  await empty.settled(10_000);
  assert.equal(empty.text(), "");
  const big = "a".repeat(TAIL) + "the end\n";
  const tail = new StderrTail(
    ReadableStream.from([encoder.encode("first\n"), encoder.encode(big)]),
    undefined,
  );
  await tail.settled(10_000);
  assert.equal(tail.text(), big.slice(-TAIL));
});

Deno.test("StderrTail's text leaves out the mark of the server's records (crash reports, error messages)", async () => {
  const seen: string[] = [];
  const tail = new StderrTail(
    ReadableStream.from([
      encoder.encode("m1 2026 INFO a\nraw text\nm1 b\n"),
    ]),
    (text) => seen.push(text),
    undefined,
    "m1",
  );
  await tail.settled(10_000);
  assert.equal(tail.text(), "2026 INFO a\nraw text\nb\n");
  assert.deepEqual(seen, ["m1 2026 INFO a\nraw text\nm1 b\n"], "as read");
});

Deno.test("StderrTail's text leaves out a mark the ring's start or the read's end cut (chaos48)", async () => {
  // Once wrapped, the tail starts anywhere: inside a record's mark, its
  // end was kept ("456789abcdef 2026..."), and text of chosen lengths
  // could move the start along the mark until all but its first
  // character was read; a mark read in part could end it.
  const mark = "0123456789abcdef01234567";
  const record = `${mark} 2026 INFO [x] y: record\n`;
  for (const cut of [1, 5, 23, 24]) {
    // After the record, what leaves `cut` of it out of the tail.
    const after = TAIL - (record.length - cut) - 7;
    const filler = "f".repeat(after - 1) + "\n";
    const tail = new StderrTail(
      ReadableStream.from([
        encoder.encode("x".repeat(100) + "\n"),
        encoder.encode(record),
        encoder.encode(filler),
        encoder.encode(mark.slice(0, 7)),
      ]),
      undefined,
      undefined,
      mark,
    );
    await tail.settled(10_000);
    const text = tail.text();
    assert.equal(text, `2026 INFO [x] y: record\n${filler}`, `cut ${cut}`);
    for (let k = 4; k <= mark.length; k++) {
      assert.ok(!text.includes(mark.slice(k - 4, k)), `cut ${cut}`);
    }
  }
});
