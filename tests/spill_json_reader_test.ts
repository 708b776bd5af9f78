import assert from "node:assert/strict";
import fc from "fast-check";
import { SpillJsonReader } from "../plugins/_spill_json_reader.ts";

const encoder = new TextEncoder();

/** Feeds `text` in chunks of the given sizes (cycled), through one reused buffer like the file reader. */
function feed(
  reader: SpillJsonReader,
  bytes: Uint8Array,
  sizes: number[],
): void {
  const buffer = new Uint8Array(Math.max(...sizes, 1));
  let pos = 0;
  for (let i = 0; pos < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, bytes.length - pos);
    buffer.set(bytes.subarray(pos, pos + n));
    reader.push(buffer.subarray(0, n));
    buffer.fill(0x20); // the reader must not keep views of the buffer
    pos += n;
  }
}

function parse(
  text: string,
  sizes: number[] = [7],
  options = { bigString: 8, maxSkeleton: 4096 },
): { value: unknown; failed: boolean } {
  const reader = new SpillJsonReader(options);
  feed(reader, encoder.encode(text), sizes);
  const value = reader.finish();
  return { value, failed: reader.failed };
}

Deno.test("SpillJsonReader: a long object value is decoded apart, the rest by JSON.parse", () => {
  const data = "x".repeat(100_000);
  const text = JSON.stringify({ id: 7, ok: true, result: { data, n: [1, 2] } });
  for (const sizes of [[1], [3, 5], [4096], [1 << 20]]) {
    const { value, failed } = parse(text, sizes, {
      bigString: 1024,
      maxSkeleton: 4096,
    });
    assert.equal(failed, false);
    assert.deepEqual(value, { id: 7, ok: true, result: { data, n: [1, 2] } });
  }
});

Deno.test("SpillJsonReader: multi-byte characters split across chunks", () => {
  const data = "é😀ü中".repeat(5000);
  const text = JSON.stringify({ a: data, b: "short", c: { d: data + "z" } });
  for (const sizes of [[1], [2, 3], [5], [7919]]) {
    const { value, failed } = parse(text, sizes, {
      bigString: 100,
      maxSkeleton: 4096,
    });
    assert.equal(failed, false);
    assert.deepEqual(value, JSON.parse(text));
  }
});

Deno.test("SpillJsonReader: what the fast path does not take is left to the caller", () => {
  const long = "y".repeat(64);
  const cases = [
    JSON.stringify({ a: long + '"quoted"' }), // escape inside a long literal
    JSON.stringify({ a: "\n" + long }), // a long literal that starts with an escape
    JSON.stringify([long]), // long literal in an array
    JSON.stringify({ [long]: 1 }), // long key
    JSON.stringify(long), // long top-level string
    '{"a":"' + long, // unterminated
    '{"a":"' + long + '"} x', // trailing garbage
    '{"a":"' + long + '",}', // invalid skeleton
    '{"a":"' + long + '","a":"b"}', // the placeholder does not survive
  ];
  for (const text of cases) {
    const { value, failed } = parse(text, [5], {
      bigString: 8,
      maxSkeleton: 40,
    });
    assert.equal(failed, true, text.slice(0, 40));
    assert.equal(value, undefined);
  }
  // A skeleton larger than the limit.
  const big = JSON.stringify({ a: "z".repeat(100), n: Array(50).fill(1) });
  assert.equal(
    parse(big, [9], { bigString: 8, maxSkeleton: 64 }).failed,
    true,
  );
});

Deno.test("SpillJsonReader: short escaped strings and strings that look like placeholders", () => {
  const text = JSON.stringify({
    a: 'q"\\u0000\n',
    b: "\u0000pyproxy-spill-x-0",
    c: "w".repeat(50),
    d: ["\\", '"'],
  });
  const { value, failed } = parse(text, [1, 2, 3], {
    bigString: 32,
    maxSkeleton: 4096,
  });
  assert.equal(failed, false);
  assert.deepEqual(value, JSON.parse(text));
});

Deno.test("SpillJsonReader: equals JSON.parse whenever it does not give up (property)", () => {
  const json = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      fc.oneof(fc.integer(), fc.boolean(), fc.constant(null)),
      fc.string({ unit: "grapheme", maxLength: 40 }),
      fc.string({ unit: "binary", maxLength: 40 }),
      fc.array(tie("value"), { maxLength: 4 }),
      fc.dictionary(
        fc.string({ maxLength: 6 }),
        tie("value"),
        { maxKeys: 4 },
      ),
    ),
  })).value;
  let fast = 0;
  fc.assert(
    fc.property(
      json,
      fc.array(fc.integer({ min: 1, max: 13 }), { minLength: 1, maxLength: 4 }),
      fc.integer({ min: 0, max: 2 }),
      (value, sizes, spacing) => {
        const text = JSON.stringify({ v: value }, null, spacing);
        const { value: got, failed } = parse(text, sizes, {
          bigString: 4,
          maxSkeleton: 1 << 20,
        });
        if (!failed) {
          assert.deepEqual(got, JSON.parse(text));
          if (/":\s*"[^"\\]{5}/.test(text)) fast++;
        }
      },
    ),
    { numRuns: 400 },
  );
  // The fast path itself was exercised, not only the fallback.
  assert.ok(fast > 20, `only ${fast} runs took the fast path`);
});
