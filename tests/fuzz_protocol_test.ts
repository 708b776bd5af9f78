/**
 * Fuzz tests of the host's read side (`FrameDecoderStream` →
 * `Md5VerifierStream` → `JsonDecoderStream`): whatever the bytes, the result
 * is messages, typed error items (`ChecksumError`, `ProtocolError`) or a
 * `FrameError` stream error — never another exception, a hang or a
 * misaligned stream. Fixed fast-check seeds keep the runs deterministic.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { ChecksumError, FrameError, ProtocolError } from "../src/errors.ts";
import { encodeFrame } from "./_harness.ts";
import { concat, decode, split } from "./_protocol_helpers.ts";

const SEED = 20261123;

const utf8 = new TextEncoder();

/** Payloads with a valid checksum that are not a JSON object. */
const garbagePayload: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ minLength: 0, maxLength: 64 }),
  fc.constantFrom(
    "[1,2,3]",
    "42",
    "-0.5e9",
    '"str"',
    "null",
    "true",
    "",
    " ",
    '{"a":1} trailing',
    '{"a":1}{"b":2}',
    "{'single':1}",
    '{"a":NaN}',
    "\ufeff{}",
  ).map((s) => utf8.encode(s)),
  fc.constantFrom(
    [0xff, 0xfe],
    [0xc3, 0x28],
    [0xed, 0xa0, 0x80],
    [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d],
  ).map((b) => Uint8Array.from(b)),
  fc.jsonValue({ maxDepth: 2 })
    .filter((v) => typeof v !== "object" || v === null || Array.isArray(v))
    .map((v) => utf8.encode(JSON.stringify(v))),
);

/** Valid messages, including shapes the session must cope with. */
const message: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), {
    maxKeys: 5,
  }),
  fc.record({
    id: fc.oneof(fc.integer(), fc.string(), fc.constant(null), fc.double()),
    cmd: fc.oneof(fc.string(), fc.integer(), fc.constant(null)),
  }),
);

Deno.test("JsonDecoderStream turns any checksummed garbage into ProtocolError items, keeping alignment", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.oneof(garbagePayload, message), {
        minLength: 1,
        maxLength: 12,
      }),
      fc.array(fc.nat(), { maxLength: 20 }),
      async (items, cuts) => {
        const frames = items.map((item) => encodeFrame(item));
        const decoded = await decode(split(concat(frames), cuts));
        assert.equal(decoded.length, items.length);
        decoded.forEach((got, i) => {
          const sent = items[i]!;
          if (sent instanceof Uint8Array) {
            assert.ok(got instanceof ProtocolError, `item ${i}: ${got}`);
          } else {
            assert.deepEqual(got, JSON.parse(JSON.stringify(sent)));
          }
        });
      },
    ),
    { seed: SEED, numRuns: 150 },
  );
});

Deno.test("FrameDecoderStream errors with FrameError on any wrong marker, version or length above the limit", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.record({
          marker: fc.string({
            minLength: 4,
            maxLength: 4,
            unit: "binary-ascii",
          })
            .filter((m) => m !== "PYPX"),
        }),
        fc.record({
          version: fc.integer({ min: 0, max: 255 }).filter((v) => v !== 1),
        }),
        fc.record({ length: fc.integer({ min: 1025, max: 0xffffffff }) }),
        fc.record({
          trailer: fc.uint8Array({ minLength: 16, maxLength: 16 }),
        }),
      ),
      fc.array(fc.nat(), { maxLength: 8 }),
      async (tweak, cuts) => {
        const good = encodeFrame({ id: 1, cmd: "ping" });
        const bad = encodeFrame({ id: 2, cmd: "ping" }, tweak);
        // The header alone must be enough to refuse: no payload is waited for.
        const bytes = "length" in tweak ? bad.subarray(0, 25) : bad;
        await assert.rejects(
          decode(split(concat([good, bytes]), cuts), 1024),
          FrameError,
        );
      },
    ),
    { seed: SEED, numRuns: 120 },
  );
});

Deno.test("FrameDecoderStream accepts lengths 0 and exactly the limit and refuses limit + 1", async () => {
  const limit = 4096;
  const head = '{"pad":"';
  const exact = head + "x".repeat(limit - head.length - 2) + '"}';
  assert.equal(utf8.encode(exact).length, limit);
  const items = await decode(
    split(concat([encodeFrame(new Uint8Array(0)), encodeFrame(exact)]), [
      3,
      30,
      4000,
    ]),
    limit,
  );
  assert.ok(items[0] instanceof ProtocolError);
  assert.equal(
    (items[1] as Record<string, unknown>).pad,
    "x".repeat(limit - 10),
  );
  await assert.rejects(decode([encodeFrame(exact + " ")], limit), FrameError);
});

Deno.test("JsonDecoderStream decodes JSON nested 100,000 deep or gives a typed ProtocolError", async () => {
  const depth = 100_000;
  const payloads = [
    "[".repeat(depth) + "]".repeat(depth),
    '{"a":'.repeat(depth) + "1" + "}".repeat(depth),
    '{"id":1,"ok":true,"result":' + "[".repeat(depth) + "]".repeat(depth) +
    "}",
  ];
  const items = await decode(payloads.map((p) => encodeFrame(p)));
  assert.equal(items.length, 3);
  // A top-level array is never a message; the others may parse (V8's parser is iterative) or be refused.
  assert.ok(items[0] instanceof ProtocolError);
  for (const item of items.slice(1)) {
    assert.ok(!(item instanceof Error) || item instanceof ProtocolError);
  }
});

Deno.test("JsonDecoderStream decodes strings up to the frame limit, in any chunking", async () => {
  const limit = 1 << 20;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom("a", "\u00e9", "\u4e2d", "\u{1f600}"),
      fc.array(fc.nat(), { maxLength: 6 }),
      async (unit, cuts) => {
        const bytesPerUnit = utf8.encode(unit).length;
        const text = unit.repeat(Math.floor((limit - 16) / bytesPerUnit));
        const frame = encodeFrame({ s: text });
        const [item] = await decode(split(frame, cuts), limit);
        assert.ok(!(item instanceof Error));
        assert.equal((item as { s: string }).s.length, text.length);
      },
    ),
    { seed: SEED, numRuns: 8 },
  );
});

Deno.test("Md5VerifierStream reports a flipped payload byte as a ChecksumError and keeps decoding", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(message, { minLength: 2, maxLength: 6 }),
      fc.nat(),
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      async (messages, which, at, xor) => {
        const frames = messages.map((m) => encodeFrame(m));
        const index = which % frames.length;
        const frame = frames[index]!;
        const payloadLength = frame.length - 41;
        fc.pre(payloadLength > 0);
        frame[25 + (at % payloadLength)]! ^= xor;
        const items = await decode([concat(frames)]);
        assert.equal(items.length, messages.length);
        assert.ok(items[index] instanceof ChecksumError);
        items.forEach((item, i) => {
          if (i !== index) {
            assert.deepEqual(item, JSON.parse(JSON.stringify(messages[i])));
          }
        });
      },
    ),
    { seed: SEED, numRuns: 100 },
  );
});
