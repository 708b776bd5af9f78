import assert from "node:assert/strict";
import fc from "fast-check";
import {
  SpillJsonReader,
  type SpillJsonReaderOptions,
} from "../plugins/_spill_json_reader.ts";
import { binaryUnit } from "./_binary_unit.ts";

const encoder = new TextEncoder();

/**
 * Feeds `text` in chunks of the given sizes (cycled), through one reused buffer like the file
 * reader; returns the number of chunks.
 */
function feed(
  reader: SpillJsonReader,
  bytes: Uint8Array,
  sizes: number[],
): number {
  const buffer = new Uint8Array(Math.max(...sizes, 1));
  let pos = 0;
  let i = 0;
  for (; pos < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, bytes.length - pos);
    buffer.set(bytes.subarray(pos, pos + n));
    reader.push(buffer.subarray(0, n));
    buffer.fill(0x20); // the reader must not keep views of the buffer
    pos += n;
  }
  return i;
}

/**
 * The most the reader's scans may look at for `bytes` read in `chunks` pushes: each byte once
 * for a quote and once for a backslash (or for whitespace), plus a little per chunk for a
 * character split across two. A reader that rescans is far above it.
 */
function linearBound(bytes: number, chunks: number): number {
  return 3 * bytes + 4 * chunks;
}

function parse(
  text: string,
  sizes: number[] = [7],
  options: SpillJsonReaderOptions = { bigString: 8, maxSkeleton: 4096 },
): { value: unknown; failed: boolean } {
  const reader = new SpillJsonReader(options);
  const bytes = encoder.encode(text);
  const chunks = feed(reader, bytes, sizes);
  const value = reader.finish();
  assert.ok(
    reader.examined <= linearBound(bytes.length, chunks),
    `${reader.examined} bytes examined for ${bytes.length} in ${chunks} chunks`,
  );
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
      fc.string({ unit: binaryUnit(), maxLength: 40 }), // fast-check's "binary", cheaper to build
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

/** Strings made of what escapes and chunk boundaries can get wrong: quotes, backslashes, multi-byte characters. */
const escapeHeavy = fc.string({
  unit: fc.constantFrom(
    "a",
    "b",
    '"',
    "\\",
    "\n",
    "\u0001",
    "é",
    "😀",
    "\ud800",
    ":",
  ),
  maxLength: 60,
});

Deno.test("SpillJsonReader: with limits above the input it never gives up, however escapes fall across chunks (property)", () => {
  const json = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      fc.oneof(fc.integer(), fc.constant(null)),
      escapeHeavy,
      escapeHeavy,
      fc.array(tie("value"), { maxLength: 4 }),
      fc.dictionary(escapeHeavy, tie("value"), { maxKeys: 4 }),
    ),
  })).value;
  fc.assert(
    fc.property(
      json,
      fc.array(fc.integer({ min: 1, max: 13 }), { minLength: 1, maxLength: 4 }),
      fc.integer({ min: 1, max: 64 }),
      (value, sizes, bigString) => {
        const text = JSON.stringify({ v: value });
        // Nothing long: every literal is kept for JSON.parse, which must get the exact text.
        const kept = parse(text, sizes, {
          bigString: 1 << 20,
          maxSkeleton: 1 << 20,
        });
        assert.equal(kept.failed, false);
        assert.deepEqual(kept.value, JSON.parse(text));
        // Short limits: giving up is allowed, a wrong value is not.
        const { value: got, failed } = parse(text, sizes, {
          bigString,
          maxSkeleton: 1 << 20,
        });
        if (!failed) assert.deepEqual(got, JSON.parse(text));
      },
    ),
    { numRuns: 1000 },
  );
});

/** Every escape JSON has, and a lone surrogate (written as an escape by JSON.stringify). */
const ESCAPES = 'ab\n"q\\\t\u0001\ud800x\u00e9/';

Deno.test("SpillJsonReader: a multi-MB literal full of escapes equals JSON.parse, in one chunk and in small ones", () => {
  const data = ESCAPES.repeat(200_000); // 3 MB of JSON, a backslash every 2.5 bytes
  const text = JSON.stringify({ id: 1, ok: true, result: { data, n: 2 } });
  // Limits high enough for the whole literal to be taken (kept for JSON.parse).
  const options = { bigString: 8 << 20, maxSkeleton: 16 << 20 };
  for (const sizes of [[4 << 20], [65_536], [1, 2, 3, 7, 4093]]) {
    const { value, failed } = parse(text, sizes, options);
    assert.equal(failed, false, String(sizes));
    assert.deepEqual(value, JSON.parse(text));
  }
});

Deno.test("SpillJsonReader: reading stays linear in the input, escapes or not (bytes examined)", () => {
  const cases: Record<string, string> = {
    // Replies that took seconds each, the host's event loop blocked, when the reader rescanned.
    "escaped object value": JSON.stringify({ text: "ab\n".repeat(300_000) }),
    "lone surrogates": JSON.stringify({ value: "\ud800x".repeat(250_000) }),
    "escaped quotes": JSON.stringify({ a: '"'.repeat(600_000) }),
    "escapes late in a long literal": JSON.stringify({
      a: "y".repeat(60_000) + "\n".repeat(500_000),
    }),
    "escaped array item": JSON.stringify(["ab\n".repeat(300_000)]),
    "escaped key": JSON.stringify({ ["k\n".repeat(20_000)]: 1, v: "\t" }),
    "escaped top-level string": JSON.stringify("\\".repeat(600_000)),
    "many short escaped strings": JSON.stringify(
      Array.from({ length: 30_000 }, (_, i) => ({ [`k${i}\n`]: "a\nb" })),
    ),
    "plain long value": JSON.stringify({ a: "z".repeat(3_000_000), b: [1] }),
  };
  for (const [name, text] of Object.entries(cases)) {
    const bytes = encoder.encode(text);
    for (const sizes of [[4 << 20], [65_536], [4093, 1, 7]]) {
      const reader = new SpillJsonReader(); // the limits spillover uses
      const chunks = feed(reader, bytes, sizes);
      let value = reader.finish();
      assert.ok(
        reader.examined <= linearBound(bytes.length, chunks),
        `${name} in chunks of ${sizes}: ${reader.examined} bytes examined for ${bytes.length}`,
      );
      // What readSpill does when the fast path gives up.
      if (reader.failed) value = JSON.parse(text);
      assert.deepEqual(value, JSON.parse(text), name);
    }
  }
});

Deno.test("SpillJsonReader: a literal with escapes gives up once it is longer than bigString, having looked at little more", () => {
  const text = JSON.stringify({
    id: 1,
    result: { text: "ab\n".repeat(300_000) },
  });
  const bytes = encoder.encode(text);
  for (const sizes of [[4 << 20], [65_536], [1000, 3]]) {
    const reader = new SpillJsonReader({ bigString: 65_536 });
    feed(reader, bytes, sizes);
    assert.equal(reader.failed, true);
    // The literal's first 64 KiB, once for quotes and once for backslashes, and the text before it:
    // never the rest of the chunk, let alone once per escape.
    assert.ok(
      reader.examined <= 2 * 65_536 + 100,
      `${reader.examined} bytes examined`,
    );
    assert.equal(reader.finish(), undefined);
  }
});
