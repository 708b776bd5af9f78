import assert from "node:assert/strict";
import { nonFiniteReason } from "../src/_non_finite.ts";

const reason = (value: unknown) =>
  nonFiniteReason(value, JSON.stringify(value) ?? "");

Deno.test("nonFiniteReason names the first NaN or infinity where JSON.stringify would write null", () => {
  assert.match(
    reason({ msg: { x: NaN } })!,
    /^msg\.x is NaN \(JSON has no NaN/,
  );
  assert.match(
    reason({ msg: [1, null, -Infinity] })!,
    /^msg\[2\] is -Infinity \(/,
  );
  assert.match(
    reason({ cmd: "c", msg: { a: { "b c": [{ d: Infinity }] } } })!,
    /^msg\.a\.b c\[0\]\.d is Infinity \(.*1e400/,
  );
  assert.match(reason({ result: NaN })!, /^result is NaN/);
  assert.match(reason(Infinity)!, /^the message is Infinity/);
  for (const plain of [null, 1, "null", true]) {
    assert.equal(nonFiniteReason(plain, "null"), undefined);
  }
  // Keys JavaScript treats specially are plain keys to JSON, and here.
  assert.match(
    reason(Object.fromEntries([["__proto__", { x: NaN }]]))!,
    /^__proto__\.x is NaN/,
  );
});

Deno.test("nonFiniteReason finds nothing in JSON-able values, bytes, toJSON output or text without null", () => {
  assert.equal(
    reason({ msg: { x: null, y: [null, 1.5, -0, 5e-324] } }),
    undefined,
  );
  // Bytes are sent as bytes (base64), whatever their elements.
  assert.equal(
    reason({ msg: { b: new Float64Array([NaN]), n: null } }),
    undefined,
  );
  // What JSON.stringify writes is the toJSON's output (a Date's string, or null for an invalid one).
  assert.equal(reason({ msg: { d: new Date(NaN), n: null } }), undefined);
  // Without "null" in the text nothing is walked (a text of the caller's that lies is believed).
  assert.equal(nonFiniteReason({ x: NaN }, '{"x":0}'), undefined);
  // A value nested deeper than any recursion limit is walked without recursing.
  let deep: unknown = [NaN];
  for (let i = 0; i < 100_000; i++) deep = [deep];
  const deepest = nonFiniteReason(deep, "null")!;
  assert.match(deepest, /^\[0\]\[0\].*….*\[0\] is NaN/s);
  // Its path shortened as a too deep one is (it was 300 KB).
  assert.ok(deepest.length < 300, `${deepest.length} characters`);
});

Deno.test("nonFiniteReason looks where JSON.stringify does: a toJSON's output (with its key) and a boxed number", () => {
  // Both arrived in Python as None without an error (the spill-over's
  // encoder refused a toJSON's NaN already).
  assert.match(
    reason({ msg: { x: { toJSON: () => NaN } } })!,
    /^msg\.x is NaN \(/,
  );
  assert.match(
    reason({ msg: [1, new Number(-Infinity)] })!,
    /^msg\[1\] is -Infinity \(/,
  );
  assert.match(reason(new Number(NaN))!, /^the message is NaN/);
  // A toJSON's object is walked (its own toJSON not called again, as
  // JSON.stringify does not), its key the one JSON.stringify gave.
  const keys: string[] = [];
  const self = {
    v: [2, NaN],
    toJSON(key: string) {
      keys.push(key);
      return this;
    },
  };
  keys.length = 0;
  assert.match(
    nonFiniteReason({ msg: [0, self] }, "null")!,
    /^msg\[1\]\.v\[1\] is NaN/,
  );
  assert.deepEqual(keys, ["1", "1"]); // once to tell, once to describe
  // What a toJSON gives that is JSON stays so; one that throws the second
  // time is passed over.
  assert.equal(
    reason({ msg: { d: { toJSON: () => ({ n: null, x: 1 }) } } }),
    undefined,
  );
  let calls = 0;
  const once = {
    toJSON: () => {
      if (calls++ > 0) throw new Error("once only");
      return null;
    },
  };
  assert.equal(reason({ msg: { once } }), undefined);
});
