import assert from "node:assert/strict";
import { ChecksumError, FrameError, ProtocolError } from "../src/errors.ts";
import {
  type Frame,
  FrameDecoderStream,
  FrameEncoderStream,
  HEADER_SIZE,
  JsonDecoderStream,
  JsonEncoderStream,
  md5,
  Md5SignerStream,
  Md5VerifierStream,
  TRAILER_SIZE,
} from "../src/protocol/mod.ts";

const utf8 = new TextEncoder();

/** One encoded frame, built by hand so tests can break any field. */
function rawFrame(
  payload: Uint8Array | string,
  tweak: {
    marker?: string;
    version?: number;
    checksum?: Uint8Array;
    trailer?: Uint8Array;
    length?: number;
  } = {},
): Uint8Array {
  const body = typeof payload === "string" ? utf8.encode(payload) : payload;
  const sum = tweak.checksum ?? md5(body);
  const out = new Uint8Array(HEADER_SIZE + body.length + TRAILER_SIZE);
  out.set(utf8.encode(tweak.marker ?? "PYPX"), 0);
  out[4] = tweak.version ?? 1;
  out.set(sum, 5);
  new DataView(out.buffer).setUint32(21, tweak.length ?? body.length);
  out.set(body, HEADER_SIZE);
  out.set(tweak.trailer ?? sum, HEADER_SIZE + body.length);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

async function decode(
  chunks: Uint8Array[],
  maxFrameSize?: number,
): Promise<Frame[][]> {
  const options = maxFrameSize === undefined ? {} : { maxFrameSize };
  return await Array.fromAsync(
    ReadableStream.from(chunks).pipeThrough(new FrameDecoderStream(options)),
  );
}

const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);

Deno.test("FrameDecoderStream returns every frame of a chunk as one batch of views into it", async () => {
  const chunk = concat(rawFrame('{"a":1}'), rawFrame(""), rawFrame('{"b":2}'));
  const batches = await decode([chunk]);
  assert.equal(batches.length, 1);
  const frames = batches[0]!;
  assert.deepEqual(frames.map((f) => text(f.payload)), [
    '{"a":1}',
    "",
    '{"b":2}',
  ]);
  for (const f of frames) {
    assert.equal(
      f.payload.buffer,
      chunk.buffer,
      "payload is a view, not a copy",
    );
    assert.equal(
      f.checksum.buffer,
      chunk.buffer,
      "checksum is a view, not a copy",
    );
    assert.deepEqual(f.checksum, md5(f.payload));
  }
});

Deno.test("FrameDecoderStream decodes frames fed one byte per chunk", async () => {
  const bytes = concat(rawFrame('{"x":"first"}'), rawFrame('{"x":"second"}'));
  const chunks = Array.from(bytes, (b) => new Uint8Array([b]));
  const batches = await decode(chunks);
  assert.deepEqual(batches.map((b) => b.map((f) => text(f.payload))), [[
    '{"x":"first"}',
  ], ['{"x":"second"}']]);
});

Deno.test("FrameDecoderStream assembles a spanning frame in one exact-size buffer", async () => {
  const payload = utf8.encode(JSON.stringify({ data: "x".repeat(100_000) }));
  const bytes = concat(rawFrame(payload), rawFrame("{}"));
  const chunks: Uint8Array[] = [];
  for (let pos = 0; pos < bytes.length; pos += 997) {
    chunks.push(bytes.slice(pos, pos + 997));
  }
  const frames = (await decode(chunks)).flat();
  assert.equal(frames.length, 2);
  assert.deepEqual(frames[0]!.payload, payload);
  assert.equal(
    frames[0]!.payload.buffer.byteLength,
    HEADER_SIZE + payload.length + TRAILER_SIZE,
  );
  assert.equal(text(frames[1]!.payload), "{}");
});

Deno.test("FrameDecoderStream emits a frame in the batch of the chunk that completes it", async () => {
  const a = rawFrame('{"n":1}');
  const b = rawFrame('{"n":2}');
  const c = rawFrame('{"n":3}');
  // Chunk 1: a and half of b; chunk 2: rest of b and c; chunk 3: nothing complete.
  const cut = a.length + 10;
  const all = concat(a, b, c, rawFrame("{}").subarray(0, 3));
  const batches = await decode([
    all.slice(0, cut),
    all.slice(cut, all.length - 3),
  ]);
  assert.deepEqual(batches.map((batch) => batch.map((f) => text(f.payload))), [[
    '{"n":1}',
  ], ['{"n":2}', '{"n":3}']]);
});

Deno.test("FrameDecoderStream rejects a length above maxFrameSize from the header alone", async () => {
  const header = rawFrame("{}", { length: 0xffffffff }).subarray(
    0,
    HEADER_SIZE,
  );
  const decoder = new FrameDecoderStream({ maxFrameSize: 1024 });
  const writer = decoder.writable.getWriter();
  const reader = decoder.readable.getReader();
  writer.write(header).catch(() => {});
  await assert.rejects(
    reader.read(),
    (err: unknown) =>
      err instanceof FrameError &&
      /exceeds the limit of 1024/.test(err.message),
  );
});

Deno.test("FrameDecoderStream accepts a payload of exactly maxFrameSize", async () => {
  const payload = `{"s":"${"y".repeat(42)}"}`;
  const frames = (await decode([rawFrame(payload)], payload.length)).flat();
  assert.equal(text(frames[0]!.payload), payload);
  await assert.rejects(
    decode([rawFrame(payload)], payload.length - 1),
    FrameError,
  );
});

Deno.test("FrameDecoderStream fails on a bad begin marker at its first byte", async () => {
  const decoder = new FrameDecoderStream();
  const writer = decoder.writable.getWriter();
  const reader = decoder.readable.getReader();
  writer.write(utf8.encode("G")).catch(() => {}); // e.g. an HTTP client: "GET / ..."
  await assert.rejects(
    reader.read(),
    (err: unknown) =>
      err instanceof FrameError && /begin marker/.test(err.message),
  );
});

Deno.test("FrameDecoderStream fails on an unknown version", async () => {
  await assert.rejects(
    decode([rawFrame("{}", { version: 2 })]),
    (err: unknown) =>
      err instanceof FrameError && /version 2/.test(err.message),
  );
});

Deno.test("FrameDecoderStream fails when the end marker differs from the checksum", async () => {
  const trailer = new Uint8Array(16).fill(7);
  await assert.rejects(
    decode([rawFrame("{}", { trailer })]),
    (err: unknown) =>
      err instanceof FrameError && /end marker/.test(err.message),
  );
  // Also when the frame spans chunks.
  const bytes = rawFrame('{"k":1}', { trailer });
  await assert.rejects(
    decode([bytes.slice(0, 30), bytes.slice(30)]),
    FrameError,
  );
});

Deno.test("FrameDecoderStream fails when the stream ends inside a frame", async () => {
  const bytes = rawFrame('{"k":1}');
  await assert.rejects(
    decode([bytes.slice(0, 10)]),
    (err: unknown) =>
      err instanceof FrameError && /ended inside/.test(err.message),
  );
  await assert.rejects(decode([bytes.slice(0, 40)]), FrameError);
  assert.deepEqual(await decode([]), []);
});

Deno.test("Md5VerifierStream turns a payload mismatch into a ChecksumError item and keeps going", async () => {
  const bad = rawFrame('{"id":1}', { checksum: md5(utf8.encode("other")) });
  const good = rawFrame('{"id":2}');
  const items = (await Array.fromAsync(
    ReadableStream.from([concat(bad, good)]).pipeThrough(
      new FrameDecoderStream(),
    ).pipeThrough(new Md5VerifierStream()),
  )).flat();
  assert.ok(items[0] instanceof ChecksumError);
  assert.equal(text(items[1] as Uint8Array), '{"id":2}');
});

Deno.test("JsonDecoderStream gives ProtocolError items for bad UTF-8, bad JSON and non-objects", async () => {
  const payloads = [
    new Uint8Array([0x7b, 0xff, 0x7d]),
    utf8.encode("{nope"),
    utf8.encode("[1,2]"),
    utf8.encode("null"),
    utf8.encode("42"),
    utf8.encode('{"ok":true}'),
  ];
  const error = new ChecksumError("x");
  const [items] = await Array.fromAsync(
    ReadableStream.from([[...payloads, error]]).pipeThrough(
      new JsonDecoderStream(),
    ),
  );
  assert.equal(items!.length, 7);
  for (const item of items!.slice(0, 5)) {
    assert.ok(item instanceof ProtocolError, String(item));
  }
  assert.deepEqual(items![5], { ok: true });
  assert.equal(items![6], error, "earlier error items pass through");
});

Deno.test("FrameEncoderStream writes a whole batch as one chunk that decodes back", async () => {
  const messages = [
    { id: 1, cmd: "ping" },
    '{"id":2,"cmd":"pre-stringified"}',
    utf8.encode('{"id":3}'),
    { s: "ünïcødé ✓ 😀" },
  ];
  const encoded = await Array.fromAsync(
    ReadableStream.from([messages, []])
      .pipeThrough(new JsonEncoderStream())
      .pipeThrough(new Md5SignerStream())
      .pipeThrough(new FrameEncoderStream()),
  );
  assert.equal(encoded.length, 1, "one chunk per non-empty batch");
  const decoded = (await Array.fromAsync(
    ReadableStream.from(encoded)
      .pipeThrough(new FrameDecoderStream())
      .pipeThrough(new Md5VerifierStream())
      .pipeThrough(new JsonDecoderStream()),
  )).flat();
  assert.deepEqual(decoded, [
    { id: 1, cmd: "ping" },
    { id: 2, cmd: "pre-stringified" },
    { id: 3 },
    { s: "ünïcødé ✓ 😀" },
  ]);
});

Deno.test("JsonEncoderStream encodes large batches message by message", async () => {
  const big = { data: "é".repeat(1000) };
  const [payloads] = await Array.fromAsync(
    ReadableStream.from([[big, { n: 1 }]]).pipeThrough(
      new JsonEncoderStream({ sharedBufferLimit: 10 }),
    ),
  );
  assert.deepEqual(payloads!.map((p) => JSON.parse(text(p))), [big, { n: 1 }]);
  assert.notEqual(payloads![0]!.buffer, payloads![1]!.buffer);
});

Deno.test("JsonEncoderStream errors the stream on a value JSON cannot encode", async () => {
  await assert.rejects(
    Array.fromAsync(
      ReadableStream.from([[{ n: 1n }]]).pipeThrough(new JsonEncoderStream()),
    ),
    TypeError,
  );
});

Deno.test("FrameEncoderStream refuses a payload above its maxFrameSize", async () => {
  const frame = { checksum: new Uint8Array(16), payload: new Uint8Array(11) };
  await assert.rejects(
    Array.fromAsync(
      ReadableStream.from([[frame]]).pipeThrough(
        new FrameEncoderStream({ maxFrameSize: 10 }),
      ),
    ),
    FrameError,
  );
});
