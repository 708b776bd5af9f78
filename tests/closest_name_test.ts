/**
 * `closestName`'s edit distance: exact up to its bound, and capped past it
 * (a gateway's 404 of an unknown model looks for the name meant among up to
 * 200 loaded, for every request: a tenant's flood of 128-character names
 * cost a full 128 × n table a name before chaos55).
 */
import assert from "node:assert/strict";
import { closestName, editDistance } from "../src/_closest_name.ts";

/** The whole table: the distance the bounded one must agree with. */
function fullDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(
        prev[j]! + 1,
        row[j - 1]! + 1,
        prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    prev = row;
  }
  return prev[b.length]!;
}

Deno.test("editDistance is the Levenshtein distance up to its bound, else the bound plus one", () => {
  // Every pair of strings of "ab" up to 5 long: the cases a band can miss.
  const words = [""];
  for (let n = 1; n <= 5; n++) {
    for (let k = 0; k < 2 ** n; k++) {
      words.push(
        k.toString(2).padStart(n, "0").replace(/0/g, "a").replace(
          /1/g,
          "b",
        ),
      );
    }
  }
  for (const a of words) {
    for (const b of words) {
      for (const max of [0, 1, 2, 3]) {
        assert.equal(
          editDistance(a, b, max),
          Math.min(fullDistance(a, b), max + 1),
          `${a} ${b} ${max}`,
        );
      }
    }
  }
});

Deno.test("editDistance of two long names far apart is capped at its bound plus one, not counted out in full", () => {
  const a = "m".repeat(124) + "-abc";
  const b = "model-number-17".padEnd(128, "x");
  assert.equal(fullDistance(a, b) > 100, true);
  assert.equal(editDistance(a, b, 2), 3);
  // Lengths alone more than the bound apart: no table at all.
  assert.equal(editDistance(a, "model-number-17", 2), 3);
});

Deno.test("closestName still finds a name within 2 edits, or a prefix, among long ones", () => {
  const names = Array.from({ length: 200 }, (_, i) => `model-number-${i}`);
  assert.equal(closestName("model-numbr-17", names), "model-number-17");
  assert.equal(closestName("MODEL-NUMBER-199", names), "model-number-199");
  assert.equal(closestName("m".repeat(128), names), undefined);
  assert.equal(closestName("worker", ["workers", "python"]), "workers");
});
