import assert from "node:assert/strict";
import { InputValidator } from "../src/gateway/input_validator.ts";
import { ValidationError } from "../src/errors.ts";

/** The message `check` throws, without its action; `null` when it passes. */
function problem(validator: InputValidator, body: unknown): string | null {
  try {
    validator.check(body);
    return null;
  } catch (err) {
    assert.ok(err instanceof ValidationError);
    return err.message.replace(/^Cannot validate input: /, "");
  }
}

Deno.test("InputValidator: a type with a trailing ? declares a field that may be left out", () => {
  const validator = new InputValidator({
    key: "string",
    ttl: "number?",
    tags: "array?",
    extra: "any?",
  });
  assert.equal(problem(validator, { key: "k" }), null);
  assert.equal(
    problem(validator, { key: "k", ttl: 1.5, tags: [], extra: null }),
    null,
  );
  assert.equal(
    problem(validator, { key: "k", ttl: "soon", tags: {} }),
    "ttl: expected a number; tags: expected an array",
  );
  // Present means typed: null is not a number.
  assert.equal(
    problem(validator, { key: "k", ttl: null }),
    "ttl: expected a number",
  );
  assert.equal(problem(validator, { ttl: 1 }), "key: is required");
});

Deno.test("InputValidator: an integer input refuses a number that would reach the model rounded (a fraction or an exponent beyond ±2^53)", () => {
  const validator = new InputValidator({ id: "integer" });
  assert.equal(problem(validator, { id: 2 ** 53 - 1 }), null);
  assert.equal(problem(validator, { id: 12345678901234567890n }), null);
  // JSON.parse gives these as doubles: 12345678901234567890.0, 1e20.
  for (const id of [12345678901234567890.0, 1e20, -(2 ** 53)]) {
    assert.equal(
      problem(validator, { id }),
      "id: expected an integer (one beyond ±2^53 must be written as digits, without a fraction or exponent)",
    );
  }
  // A fraction: one problem, said once (it was said twice, the second time
  // with the note about unsafe integers, which does not apply).
  assert.equal(problem(validator, { id: 1.5 }), "id: expected an integer");
});

Deno.test("InputValidator.problems lists every bad field with its path, declared type and the JSON type sent", () => {
  const validator = new InputValidator({
    age: "integer",
    income: "number",
    name: "string?",
    tags: "array",
    blob: "any",
    odd: "tensor",
  });
  assert.equal(
    validator.problems({ age: 1, income: 2.5, tags: [], blob: 0, odd: 1 }),
    null,
  );
  assert.deepEqual(
    validator.problems({ age: 1.5, name: null, tags: "x", odd: 1 }),
    [
      {
        path: ["age"],
        message: "expected an integer",
        expected: "integer",
        received: "number",
      },
      {
        path: ["income"],
        message: "is required",
        expected: "number",
        received: "missing",
      },
      {
        path: ["name"],
        message: "expected a string",
        expected: "string",
        received: "null",
      },
      {
        path: ["tags"],
        message: "expected an array",
        expected: "array",
        received: "string",
      },
      {
        path: ["blob"],
        message: "is required",
        expected: "any",
        received: "missing",
      },
    ],
  );
  // The body itself: path [].
  assert.deepEqual(validator.problems([1]), [{
    path: [],
    message: "expected a JSON object",
    expected: "object",
    received: "array",
  }]);
});

Deno.test("InputValidator.check: a ValidationError whose fields and message stop at MAX_FIELDS", () => {
  const n = ValidationError.MAX_FIELDS + 5;
  const inputs = Object.fromEntries(
    Array.from({ length: n }, (_, i) => [`f${i}`, "number"]),
  );
  try {
    new InputValidator(inputs).check({}, "wide");
    assert.fail("expected a ValidationError");
  } catch (e) {
    assert.ok(e instanceof ValidationError);
    assert.equal(e.code, "VALIDATION");
    assert.equal(e.name, "ValidationError");
    assert.equal(e.fields.length, ValidationError.MAX_FIELDS);
    assert.deepEqual(e.fields[0]?.path, ["f0"]);
    assert.ok(
      e.message.startsWith("Cannot execute model 'wide': f0: is required; "),
      e.message,
    );
    assert.ok(e.message.endsWith("; and 5 more"), e.message);
    assert.equal(e.message.split("; ").length, ValidationError.MAX_FIELDS + 1);
  }
});

Deno.test("InputValidator: a declared name every object inherits (toString, constructor, __proto__) is a field of the body's own", () => {
  const validator = new InputValidator(
    JSON.parse(
      '{"toString": "number?", "constructor": "string", "__proto__": "integer?", "valueOf": "any?"}',
    ),
  );
  // Left out: an optional one passes, a required one is missing.
  assert.equal(problem(validator, { constructor: "c" }), null);
  assert.equal(problem(validator, {}), "constructor: is required");
  assert.deepEqual(validator.problems({})?.[0]?.received, "missing");
  // Sent: checked as sent, "__proto__" too (JSON.parse makes it a key).
  assert.equal(
    problem(
      validator,
      JSON.parse('{"constructor": "c", "toString": 1, "__proto__": 2}'),
    ),
    null,
  );
  assert.equal(
    problem(validator, JSON.parse('{"constructor": 1, "__proto__": "x"}')),
    "constructor: expected a string; __proto__: expected an integer",
  );
});
