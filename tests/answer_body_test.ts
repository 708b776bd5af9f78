/**
 * Which answers go through `Runtime.deliveredBody` (tracked, their delivery
 * waited for by the server's shutdown): those of 64 KiB and more as sent;
 * a string's length alone undercounts its UTF-8 up to three times, so one
 * of a third of that and more that is not ASCII is tracked too.
 */
import assert from "node:assert/strict";
import { answerBody, jsonAnswer } from "../src/gateway/_answer_body.ts";
import { denoRuntime } from "../src/runtime/deno.ts";
import { LARGE_BODY_BYTES, type Runtime } from "../src/runtime/types.ts";

/** A runtime whose deliveredBody counts the bodies it was given. */
function countingRuntime(): { runtime: Runtime; tracked: () => number } {
  let count = 0;
  const runtime: Runtime = {
    ...denoRuntime(),
    deliveredBody: (_request, body) => {
      count++;
      return body as BodyInit;
    },
  };
  return { runtime, tracked: () => count };
}

Deno.test("answerBody and jsonAnswer track a text that may be 64 KiB and more in UTF-8, not only one of 64 Ki characters", () => {
  const request = new Request("http://x/");
  const cases: Array<[string, string, boolean]> = [
    ["ASCII, one byte short", "x".repeat(LARGE_BODY_BYTES - 1), false],
    ["ASCII, the bound", "x".repeat(LARGE_BODY_BYTES), true],
    // 65,000 "€" (3 bytes each): 195 KB sent, under 64 Ki characters.
    ["65,000 '€'", "\u20ac".repeat(65_000), true],
    ["'é' (2 bytes) to the bound", "\u00e9".repeat(32_768), true],
    // Under a third of the bound in characters: under it in bytes.
    ["'€' to one byte short", "\u20ac".repeat(21_845), false],
    // Between a third and the bound, not ASCII: may reach it (tracked).
    ["'€' to the bound and more", "\u20ac".repeat(21_846), true],
    ["ASCII, 60,000 characters", "x".repeat(60_000), false],
  ];
  for (const [label, text, large] of cases) {
    const body = countingRuntime();
    answerBody(body.runtime, request, text, {});
    assert.equal(body.tracked(), large ? 1 : 0, `answerBody: ${label}`);
  }
  // A model's result as JSON (its string written with two quotes).
  for (
    const [label, value, large] of [
      ["ASCII, one byte short", "x".repeat(LARGE_BODY_BYTES - 3), false],
      ["65,000 '€'", "\u20ac".repeat(65_000), true],
      [
        "{ text: 20,000 'é' } (40 KB)",
        { text: "\u00e9".repeat(20_000) },
        false,
      ],
      ["{ text: 40,000 'é' } (80 KB)", { text: "\u00e9".repeat(40_000) }, true],
    ] as Array<[string, unknown, boolean]>
  ) {
    const json = countingRuntime();
    jsonAnswer(json.runtime, request, value);
    assert.equal(json.tracked(), large ? 1 : 0, `jsonAnswer: ${label}`);
  }
});
