import assert from "node:assert/strict";
import fc from "fast-check";
import { ChecksumError, FrameError, ProtocolError } from "../src/errors.ts";
import {
  FrameEncoderStream,
  HEADER_SIZE,
  JsonEncoderStream,
  Md5SignerStream,
  TRAILER_SIZE,
} from "../src/protocol/mod.ts";
import { concat, decode, split } from "./_protocol_helpers.ts";

type Message = Record<string, unknown>;

async function encode(batches: Message[][]): Promise<Uint8Array> {
  const chunks = await Array.fromAsync(
    ReadableStream.from(batches)
      .pipeThrough(new JsonEncoderStream())
      .pipeThrough(new Md5SignerStream())
      .pipeThrough(new FrameEncoderStream()),
  );
  return concat(chunks);
}

const message = fc.dictionary(
  fc.string({ maxLength: 8 }),
  fc.jsonValue({ maxDepth: 2 }),
  { maxKeys: 6 },
);
const batches = fc.array(fc.array(message, { minLength: 1, maxLength: 8 }), {
  minLength: 1,
  maxLength: 6,
});
/** Split points, with a bias towards many tiny chunks (down to one byte). */
const cuts = fc.oneof(
  fc.array(fc.nat(), { maxLength: 40 }),
  fc.integer({ min: 1, max: 7 }).map((step) =>
    Array.from({ length: 400 }, (_, i) => i * step)
  ),
);

Deno.test("FrameDecoderStream round-trips encoded batches under any chunking", async () => {
  await fc.assert(
    fc.asyncProperty(batches, cuts, async (input, points) => {
      const bytes = await encode(input);
      const decoded = await decode(split(bytes, points));
      assert.deepEqual(decoded, JSON.parse(JSON.stringify(input.flat())));
    }),
    { numRuns: 150 },
  );
});

Deno.test("FrameDecoderStream gives a typed error for any corrupted byte, never a hang or a crash", async () => {
  await fc.assert(
    fc.asyncProperty(
      batches,
      cuts,
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
        minLength: 1,
        maxLength: 3,
      }),
      async (input, points, flips) => {
        const bytes = await encode(input);
        for (const [at, xor] of flips) bytes[at % bytes.length]! ^= xor;
        let items: Array<Message | Error>;
        try {
          items = await decode(split(bytes, points));
        } catch (err) {
          assert.ok(
            err instanceof FrameError,
            `stream error must be a FrameError, got ${err}`,
          );
          return;
        }
        const total = input.flat().length;
        assert.equal(
          items.length,
          total,
          "a recoverable error keeps the stream aligned",
        );
        for (const item of items) {
          if (item instanceof Error) {
            assert.ok(
              item instanceof ChecksumError || item instanceof ProtocolError,
              String(item),
            );
          }
        }
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("Md5VerifierStream flags a corrupted payload byte and leaves the other messages intact", async () => {
  await fc.assert(
    fc.asyncProperty(
      batches,
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      async (input, pick, xor) => {
        const flat = input.flat();
        const bytes = await encode(input);
        // Find the payload span of message number `pick`.
        const target = pick % flat.length;
        let pos = 0;
        for (let i = 0; i < target; i++) {
          pos += HEADER_SIZE +
            new DataView(bytes.buffer).getUint32(pos + 21) + TRAILER_SIZE;
        }
        const length = new DataView(bytes.buffer).getUint32(pos + 21);
        fc.pre(length > 0);
        bytes[pos + HEADER_SIZE + (xor % length)]! ^= xor;
        const items = await decode([bytes]);
        const expected = JSON.parse(JSON.stringify(flat));
        items.forEach((item, i) => {
          if (i === target) assert.ok(item instanceof ChecksumError);
          else assert.deepEqual(item, expected[i]);
        });
      },
    ),
    { numRuns: 100 },
  );
});

Deno.test("FrameDecoderStream handles payload lengths 0, exactly the limit and above it", async () => {
  // Length 0: a valid frame whose (empty) payload is not JSON.
  const empty = await Array.fromAsync(
    ReadableStream.from([[new Uint8Array()]]).pipeThrough(new Md5SignerStream())
      .pipeThrough(new FrameEncoderStream()),
  );
  const items = await decode(empty);
  assert.equal(items.length, 1);
  assert.ok(items[0] instanceof ProtocolError);

  await fc.assert(
    fc.asyncProperty(message, cuts, async (msg, points) => {
      const bytes = await encode([[msg]]);
      const length = bytes.length - HEADER_SIZE - TRAILER_SIZE;
      assert.deepEqual(await decode(split(bytes, points), length), [
        JSON.parse(JSON.stringify(msg)),
      ]);
      await assert.rejects(
        decode(split(bytes, points), length - 1),
        FrameError,
      );
    }),
    { numRuns: 100 },
  );
});
