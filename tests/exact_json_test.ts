import assert from "node:assert/strict";
import { InvalidRequestError } from "../src/errors.ts";
import {
  EXACT_JSON_DEPTH,
  ExactJson,
  holdsUnsafeNumber,
  parseJson,
} from "../src/_exact_json.ts";

const deep = (n: number, leaf: string) => "[".repeat(n) + leaf + "]".repeat(n);

Deno.test("ExactJson reads text nested past EXACT_JSON_DEPTH without the reviver (which overflowed the stack) and counts it inexact", () => {
  const exact = new ExactJson();
  const within = exact.parse(deep(EXACT_JSON_DEPTH, "18446744073709551616"));
  let v: unknown = within;
  while (Array.isArray(v)) v = v[0];
  assert.equal(v, 18446744073709551616n);
  assert.equal(exact.inexact, 0);
  for (const depth of [EXACT_JSON_DEPTH + 1, 200_000]) {
    const value = exact.parse(deep(depth, "18446744073709551616"));
    assert.equal(exact.inexactDepth, depth);
    assert.ok(holdsUnsafeNumber(value));
  }
  assert.equal(exact.inexact, 2);
  // Deep text with no run of 16 digits is not looked at.
  exact.parse(deep(200_000, "1"));
  assert.equal(exact.inexact, 2);
});

Deno.test("ExactJson reads a deep batch frame message by message: only its deep messages are inexact", () => {
  const exact = new ExactJson();
  const big = "18446744073709551616";
  // Strings holding what the split looks for: commas, brackets, quotes.
  const shallow =
    `{"id":2,"ok":true,"result":{"big":${big},"s":"a,]}[\\\\\\"batch\\"{"}}`;
  const deepMsg = `{"id":1,"ok":true,"result":${deep(1500, big)}}`;
  const plain = `{"id":3,"ok":true,"result":[1,2]}`;
  const frame = ` {"batch" : [${deepMsg} , ${shallow},${plain}] } `;
  const value = exact.parse(frame) as { batch: Record<string, unknown>[] };
  assert.equal(value.batch.length, 3);
  const [one, two, three] = value.batch;
  assert.equal(exact.inexactDepthOf(one), 1501);
  assert.equal(exact.inexactDepthOf(two), undefined);
  assert.equal(exact.inexactDepthOf(three), undefined);
  assert.deepEqual(two!.result, { big: BigInt(big), s: 'a,]}[\\"batch"{' });
  assert.deepEqual(three, JSON.parse(plain));
  let leaf: unknown = one!.result;
  while (Array.isArray(leaf)) leaf = leaf[0];
  assert.equal(leaf, Number(big)); // rounded: the session refuses it
  assert.equal(exact.inexact, 1);
  // Not a batch frame as Python writes it: read whole, each message inexact.
  const other = exact.parse(
    `{"batch":[${deepMsg},${shallow}],"x":1}`,
  ) as { batch: unknown[] };
  assert.equal(exact.inexactDepthOf(other), 1503);
  assert.equal(exact.inexactDepthOf(other.batch[1]), 1503);
  assert.equal(
    typeof (other.batch[1] as { result: { big: unknown } }).result.big,
    "number",
  );
  // Invalid frames fail as JSON.parse fails them.
  for (
    const bad of [
      `{"batch":[${deepMsg},]}`,
      `{"batch":[${deepMsg} ${shallow}]}`,
      `{"batch":[${deepMsg},${shallow}}}`,
      `{"batch":[${deepMsg},${shallow}]`,
      `{"batch":[${deepMsg},${shallow}]}]`,
    ]
  ) {
    assert.throws(() => exact.parse(bad), SyntaxError, bad.slice(-20));
  }
});

Deno.test("holdsUnsafeNumber finds integers beyond ±2^53 and infinities at any depth, not safe ones or fractions", () => {
  assert.equal(
    holdsUnsafeNumber({ a: [1, 2 ** 53 - 1, 0.5, "9".repeat(30)] }),
    false,
  );
  assert.equal(holdsUnsafeNumber({ a: [{ b: 2 ** 53 }] }), true);
  assert.equal(holdsUnsafeNumber([-Infinity]), true);
  assert.equal(holdsUnsafeNumber(JSON.parse(deep(1_000_000, "1e300"))), true);
  assert.equal(holdsUnsafeNumber(JSON.parse(deep(1_000_000, "1"))), false);
});

Deno.test("parseJson refuses to read integers exactly past EXACT_JSON_DEPTH with an InvalidRequestError instead of overflowing the stack", () => {
  assert.throws(
    () => parseJson(deep(5000, "18446744073709551616")),
    (err: unknown) =>
      err instanceof InvalidRequestError &&
      err.message ===
        "Cannot parse JSON exactly: it is nested 5000 levels deep and may hold an integer beyond ±2^53, which is read exactly only within 1000 levels" &&
      (err.details as { depth: number }).depth === 5000,
  );
  assert.equal(
    (parseJson(deep(5000, "1")) as unknown[]).length,
    1,
  );
});
