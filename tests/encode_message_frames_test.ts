import assert from "node:assert/strict";
import fc from "fast-check";
import { FrameError } from "../src/errors.ts";
import {
  createMd5,
  encodeFrames,
  encodeJsonBatch,
  encodeMessageFrames,
  signPayloads,
} from "../src/protocol/mod.ts";
import { decode } from "./_protocol_helpers.ts";

const text = new TextEncoder();
/** The three write stages, one after the other: what encodeMessageFrames must equal. */
function staged(items: Array<string | Uint8Array>): Uint8Array {
  return encodeFrames(signPayloads(encodeJsonBatch(items, text), createMd5()));
}

// JSON text with multi-byte characters (2, 3 and 4 bytes in UTF-8), given as text or as bytes.
const item = fc.tuple(fc.jsonValue({ maxDepth: 2 }), fc.boolean()).map((
  [value, asBytes],
) => {
  const json = JSON.stringify({ v: value, s: "é€😀" });
  return asBytes ? text.encode(json) : json;
});

Deno.test("encodeMessageFrames gives the same bytes as the three write stages", () => {
  fc.assert(
    fc.property(fc.array(item, { maxLength: 12 }), (items) => {
      const out = encodeMessageFrames(items, createMd5(), text);
      assert.deepEqual(out, staged(items));
    }),
  );
});

Deno.test("encodeMessageFrames frames a batch over the direct-encoding size exactly", async () => {
  // 300 Ki units of text: encoded first, then framed; hashed with the native MD5 path.
  const big = JSON.stringify({ data: "€".repeat(300 * 1024) });
  const items = ['{"id":1}', big, text.encode('{"id":2}')];
  const out = encodeMessageFrames(items, createMd5(), text);
  assert.deepEqual(out, staged(items));
  assert.equal(out.buffer.byteLength, out.length, "no oversized buffer");
  const decoded = await decode([out]);
  assert.deepEqual(decoded.map((m) => Object.keys(m)), [["id"], ["data"], [
    "id",
  ]]);
});

Deno.test("encodeMessageFrames refuses a payload over the limit with a FrameError", () => {
  assert.throws(
    () => encodeMessageFrames(['{"a":"xyz"}'], createMd5(), text, 10),
    (err: unknown) =>
      err instanceof FrameError &&
      /length 11 exceeds the limit of 10/.test(err.message),
  );
  assert.equal(
    encodeMessageFrames(['{"a":"xy"}'], createMd5(), text, 10).length,
    25 + 10 + 16,
  );
  assert.equal(encodeMessageFrames([], createMd5(), text).length, 0);
});
