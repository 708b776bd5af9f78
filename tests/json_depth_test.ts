import assert from "node:assert/strict";
import { depthOver, jsonDepth } from "../src/_json_depth.ts";

Deno.test("jsonDepth counts arrays and objects, not brackets in strings or escaped quotes", () => {
  assert.equal(jsonDepth("1"), 0);
  assert.equal(jsonDepth('"[[["'), 0);
  assert.equal(jsonDepth("[]"), 1);
  assert.equal(jsonDepth('{"a":[1,{"b":[]}],"c":{}}'), 4);
  // An escaped quote does not end the string; an escaped backslash does not escape it.
  assert.equal(jsonDepth(JSON.stringify(['"[[[', "\\", "[{"])), 1);
  assert.equal(jsonDepth(JSON.stringify({ a: ['\\"]]]', ["\\\\"]] })), 3);
  // Iterative: no stack at any depth.
  const d = 1_000_000;
  assert.equal(jsonDepth("[".repeat(d) + "]".repeat(d)), d);
  // Not JSON (a string never closed): a count, not a throw.
  assert.equal(jsonDepth('[["abc'), 2);
});

Deno.test("depthOver gives the depth only when it is over the limit, and skips short or container-poor texts", () => {
  const deep = (n: number) => "[".repeat(n) + "]".repeat(n);
  assert.equal(depthOver(deep(800), 800), undefined);
  assert.equal(depthOver(deep(801), 800), 801);
  assert.equal(depthOver('{"a":'.repeat(5) + "1" + "}".repeat(5), 4), 5);
  // Many containers but shallow: walked, and under.
  const wide = JSON.stringify(Array.from({ length: 2000 }, (_, i) => [i]));
  assert.equal(depthOver(wide, 800), undefined);
  // Many brackets, all in strings: counted by the cheap test, then walked.
  assert.equal(depthOver(JSON.stringify(["[".repeat(5000)]), 800), undefined);
  assert.equal(depthOver(deep(3), Infinity), undefined);
});
