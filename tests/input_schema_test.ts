import assert from "node:assert/strict";
import {
  buildInputSchema,
  validateInput,
} from "../src/gateway/input_schema.ts";

Deno.test("buildInputSchema: a type with a trailing ? declares a field that may be left out", () => {
  const schema = buildInputSchema({
    key: "string",
    ttl: "number?",
    tags: "array?",
    extra: "any?",
  });
  assert.equal(validateInput(schema, { key: "k" }), null);
  assert.equal(
    validateInput(schema, { key: "k", ttl: 1.5, tags: [], extra: null }),
    null,
  );
  assert.equal(
    validateInput(schema, { key: "k", ttl: "soon", tags: {} }),
    "ttl: expected a number; tags: expected an array",
  );
  // Present means typed: null is not a number.
  assert.equal(
    validateInput(schema, { key: "k", ttl: null }),
    "ttl: expected a number",
  );
  assert.equal(validateInput(schema, { ttl: 1 }), "key: is required");
});

Deno.test("buildInputSchema: an integer input refuses a number that would reach the model rounded (a fraction or an exponent beyond ±2^53)", () => {
  const schema = buildInputSchema({ id: "integer" });
  assert.equal(validateInput(schema, { id: 2 ** 53 - 1 }), null);
  assert.equal(validateInput(schema, { id: 12345678901234567890n }), null);
  // JSON.parse gives these as doubles: 12345678901234567890.0, 1e20.
  for (const id of [12345678901234567890.0, 1e20, -(2 ** 53)]) {
    const problem = validateInput(schema, { id });
    assert.equal(
      problem,
      "id: expected an integer (one beyond ±2^53 must be written as digits, without a fraction or exponent)",
    );
  }
  // A fraction: one problem, said once (it was said twice, the second time
  // with the note about unsafe integers, which does not apply).
  assert.equal(validateInput(schema, { id: 1.5 }), "id: expected an integer");
});
