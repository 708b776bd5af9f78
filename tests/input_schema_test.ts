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
