import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { createMd5, md5 } from "../src/protocol/md5.ts";

const hex = (bytes: Uint8Array): string =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

const VECTORS: Array<[string, string]> = [
  // RFC 1321, appendix A.5
  ["", "d41d8cd98f00b204e9800998ecf8427e"],
  ["a", "0cc175b9c0f1b6a831c399e269772661"],
  ["abc", "900150983cd24fb0d6963f7d28e17f72"],
  ["message digest", "f96b697d7cb7938d525a2f31aaf161d0"],
  ["abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"],
  [
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
    "d174ab98d277d9f5a5611c2c9f419d9f",
  ],
  [
    "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
    "57edf4a22be3c955ac49da2e2107b67a",
  ],
];

Deno.test("md5 matches the RFC 1321 test vectors", () => {
  for (const [input, expected] of VECTORS) {
    assert.equal(
      hex(md5(new TextEncoder().encode(input))),
      expected,
      JSON.stringify(input),
    );
  }
});

Deno.test("createMd5 matches node:crypto on random inputs around block boundaries", () => {
  const ts = createMd5({ nativeThreshold: Infinity });
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (data) => {
      assert.equal(hex(ts(data)), createHash("md5").update(data).digest("hex"));
    }),
    { numRuns: 500 },
  );
  for (let n = 50; n < 140; n++) {
    const data = new Uint8Array(n).map((_, i) => (i * 7 + n) & 255);
    assert.equal(
      hex(ts(data)),
      createHash("md5").update(data).digest("hex"),
      `length ${n}`,
    );
  }
});

Deno.test("createMd5 gives the same digest on both sides of the native threshold", () => {
  const ts = createMd5({ nativeThreshold: Infinity });
  const native = createMd5({ nativeThreshold: 0 });
  const auto = createMd5();
  for (const n of [0, 1, 64, 1000, 16383, 16384, 70000]) {
    const data = new Uint8Array(n).map((_, i) => (i * 13) & 255);
    const expected = createHash("md5").update(data).digest("hex");
    assert.equal(hex(ts(data)), expected);
    assert.equal(hex(native(data)), expected);
    assert.equal(hex(auto(data)), expected);
  }
});

Deno.test("createMd5 writes into a caller buffer at an offset and hashes subarray views", () => {
  const hash = createMd5();
  const backing = new Uint8Array(200).map((_, i) => i);
  const view = backing.subarray(3, 150);
  const out = new Uint8Array(40);
  const returned = hash(view, out, 20);
  assert.equal(returned, out);
  assert.equal(
    hex(out.subarray(20, 36)),
    createHash("md5").update(backing.slice(3, 150)).digest("hex"),
  );
  assert.deepEqual(out.subarray(0, 20), new Uint8Array(20));
});
