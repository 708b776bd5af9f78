import assert from "node:assert/strict";
import { InputValidator } from "../src/gateway/input_validator.ts";
import { ValidationError } from "../src/errors.ts";
import { compilePattern } from "../src/gateway/_pattern.ts";
import { exampleBody } from "../src/gateway/example_body.ts";
import { declaredSchema } from "../src/gateway/_declared_schema.ts";

/** `path: message` of each problem; `[]` when the body passes. */
function problems(validator: InputValidator, body: unknown): string[] {
  return (validator.problems(body) ?? []).map((f) =>
    `${f.path.join(".")}: ${f.message}`
  );
}

Deno.test("InputValidator checks number and integer ranges and multipleOf", () => {
  const v = new InputValidator({
    p: { type: "number", minimum: 0, maximum: 1 },
    n: {
      type: "integer",
      exclusiveMinimum: 0,
      exclusiveMaximum: 10,
      multipleOf: 2,
    },
    step: { type: "number", multipleOf: 0.01, optional: true },
  });
  assert.deepEqual(problems(v, { p: 0, n: 2 }), []);
  assert.deepEqual(problems(v, { p: 1, n: 8, step: 0.07 }), []);
  assert.deepEqual(problems(v, { p: -0.1, n: 0 }), [
    "p: expected at least 0",
    "n: expected more than 0",
  ]);
  assert.deepEqual(problems(v, { p: 1.5, n: 10, step: 0.015 }), [
    "p: expected at most 1",
    "n: expected less than 10",
    "step: expected a multiple of 0.01",
  ]);
  assert.deepEqual(problems(v, { p: 0.5, n: 3 }), [
    "n: expected a multiple of 2",
  ]);
  // The type first, with the string forms' messages.
  assert.deepEqual(problems(v, { p: "0.5", n: 1.5 }), [
    "p: expected a number",
    "n: expected an integer",
  ]);
  const [problem] = v.problems({ p: 2, n: 2 })!;
  assert.deepEqual(problem, {
    path: ["p"],
    message: "expected at most 1",
    expected: "number",
    received: "number",
  });
});

Deno.test("InputValidator compares integers beyond ±2^53 (BigInts) with ranges exactly", () => {
  const v = new InputValidator({
    id: { type: "integer", minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
    big: { type: "integer", minimum: 9007199254740991, multipleOf: 2 },
  });
  assert.deepEqual(
    problems(v, { id: 9007199254740992n, big: 9007199254740994n }),
    ["id: expected at most 9007199254740991"],
  );
  assert.deepEqual(
    problems(v, { id: -12345678901234567890n, big: 9007199254740993n }),
    [
      "id: expected at least 0",
      "big: expected a multiple of 2",
    ],
  );
  assert.deepEqual(problems(v, { id: 1, big: 12345678901234567890n }), []);
});

Deno.test("InputValidator checks string lengths (in characters) and patterns", () => {
  const v = new InputValidator({
    name: {
      type: "string",
      minLength: 2,
      maxLength: 5,
      pattern: "^[a-zé😀]+$",
    },
  });
  assert.deepEqual(problems(v, { name: "abc" }), []);
  // Code points, as Python's len(): one emoji is one character.
  assert.deepEqual(problems(v, { name: "😀😀😀😀😀" }), []);
  assert.deepEqual(problems(v, { name: "a" }), [
    "name: expected at least 2 characters",
  ]);
  assert.deepEqual(problems(v, { name: "abcdef" }), [
    "name: expected at most 5 characters",
  ]);
  assert.deepEqual(problems(v, { name: "ab1" }), [
    'name: expected to match the pattern "^[a-zé😀]+$"',
  ]);
});

Deno.test("InputValidator checks enums, nullable and optional dict forms", () => {
  const v = new InputValidator({
    mode: { enum: ["fast", "exact"] },
    level: { type: "integer", enum: [1, 2, 3], optional: true, nullable: true },
    tag: { type: "string", nullable: true },
  });
  assert.deepEqual(problems(v, { mode: "fast", tag: null }), []);
  assert.deepEqual(problems(v, { mode: "exact", level: null, tag: "x" }), []);
  assert.deepEqual(problems(v, { mode: "slow", level: 4 }), [
    'mode: expected one of "fast", "exact"',
    "level: expected one of 1, 2, 3",
    "tag: is required",
  ]);
  assert.deepEqual(problems(v, { mode: ["fast"], level: "1", tag: 1 }), [
    'mode: expected one of "fast", "exact"',
    "level: expected an integer",
    "tag: expected a string",
  ]);
});

Deno.test("InputValidator gives nested paths into arrays and objects", () => {
  const v = new InputValidator({
    points: {
      type: "array",
      items: { type: "number", minimum: 0 },
      minItems: 2,
      maxItems: 4,
    },
    items: {
      type: "array",
      items: {
        type: "object",
        properties: { x: "number", label: { type: "string", optional: true } },
        additionalProperties: false,
      },
    },
  });
  assert.deepEqual(problems(v, { points: [0, 1], items: [] }), []);
  assert.deepEqual(
    problems(v, {
      points: [0, -1, "2"],
      items: [{ x: 1 }, { x: 1, label: "a" }, { label: 1, y: 2 }],
    }),
    [
      "points.1: expected at least 0",
      "points.2: expected a number",
      "items.2.x: is required",
      "items.2.label: expected a string",
      "items.2.y: is not allowed (not a declared field)",
    ],
  );
  const fields = v.problems({ points: [1], items: [{ x: "1" }] })!;
  assert.deepEqual(fields.map((f) => [f.path, f.expected, f.received]), [
    [["points"], "array", "array"],
    [["items", 0, "x"], "number", "string"],
  ]);
  assert.deepEqual(problems(v, { points: [1, 2, 3, 4, 5], items: {} }), [
    "points: expected at most 4 items",
    "items: expected an array",
  ]);
});

Deno.test("InputValidator.check fails fast and bounded on huge bodies", () => {
  const v = new InputValidator({
    xs: { type: "array", items: "number", maxItems: 10 },
    ys: { type: "array", items: { type: "number", maximum: 0 } },
  });
  const million = new Array(1_000_000).fill(1);
  let t = performance.now();
  assert.deepEqual(problems(v, { xs: million, ys: [] }), [
    "xs: expected at most 10 items",
  ]);
  assert.ok(performance.now() - t < 50);
  // Every item bad: the walk stops at 1000 problems; the message at 100.
  t = performance.now();
  const found = v.problems({ xs: [], ys: million })!;
  assert.equal(found.length, 1000);
  assert.ok(performance.now() - t < 200);
  assert.throws(
    () => v.check({ xs: [], ys: million }),
    (err: unknown) =>
      err instanceof ValidationError && err.fields.length === 100 &&
      err.message.endsWith("and 900 more"),
  );
  // A body's patterns take at most 1,000,000 automaton steps in all: the
  // worst pattern (2000 states, all live) on 100 strings of 10,000
  // characters fails them once the steps ran out, in bounded time.
  const costly = new InputValidator({
    xs: { type: "array", items: { type: "string", pattern: "(?:a?){999}b" } },
  });
  t = performance.now();
  const spent = costly.problems({
    xs: new Array(100).fill("a".repeat(10_000)),
  })!;
  assert.ok(performance.now() - t < 500);
  assert.equal(spent.length, 100);
  assert.match(
    spent[99]!.message,
    /^expected fewer characters to check against patterns/,
  );
  // A pattern runs on at most 10,000 characters.
  const p = new InputValidator({ s: { type: "string", pattern: "^a+$" } });
  assert.deepEqual(problems(p, { s: "a".repeat(10_001) }), [
    "s: expected at most 10000 characters (the longest a pattern is checked on)",
  ]);
});

Deno.test("compilePattern matches catastrophic patterns in linear time", () => {
  const evil = "a".repeat(10_000) + "!";
  for (const source of ["^(a+)+$", "a*a*a*a*a*b", "^(a|aa)+$", "(a|a)*$"]) {
    const t = performance.now();
    const matched = compilePattern(source).test(evil);
    assert.equal(
      matched,
      new RegExp(source, "u").test("a!") && source === "(a|a)*$",
    );
    assert.ok(
      performance.now() - t < 500,
      `${source}: ${performance.now() - t} ms`,
    );
  }
});

Deno.test("compilePattern agrees with JavaScript's RegExp on the subset", () => {
  const cases: Array<[string, string[]]> = [
    ["^[a-z]+(-[a-z]+)*$", ["red-green", "Red", "red-", ""]],
    ["abc", ["xxabcxx", "ab"]],
    ["^a{2,3}$", ["a", "aa", "aaa", "aaaa"]],
    ["^a{2,}?$", ["a", "aaaaa"]],
    ["^(?:cat|dog)s?$", ["dogs", "cow", "cat"]],
    ["\\d+\\.\\d*", ["1.", "a.1", "12.5"]],
    ["^[\\D\\s]+$", ["a b", "a1"]],
    ["^[^\\w]$", ["_", "-"]],
    ["^.$", ["😀", "\n", "ab"]],
    ["x|^y", ["ay", "ya", "ax"]],
    ["^\\u0041\\x42\\t$", ["AB\t", "AB"]],
    ["^[a\\-z]$", ["-", "b"]],
    ["^[\\s]$", ["\u00a0", "x", "\u2028"]],
    ["(a*)*b", ["aaab", "aaa"]],
    ["", ["", "x"]],
    ["^$", ["", "x"]],
  ];
  for (const [source, inputs] of cases) {
    const p = compilePattern(source);
    const r = new RegExp(source, "u");
    for (const s of inputs) {
      assert.equal(p.test(s), r.test(s), `${source} on ${JSON.stringify(s)}`);
    }
  }
});

/** Patterns outside the subset, each with a word of its refusal. */
const REFUSED: Array<[string, string]> = [
  ["(?=a)", "lookaround"],
  ["(?<n>a)", "named groups"],
  ["(?i)a", "flags"],
  ["(a)\\1", "backreferences"],
  ["\\bword", "\\b"],
  ["\\p{L}", "\\p"],
  ["a**", "after a quantifier"],
  ["[]", "empty class"],
  ["[b-a]", "out of order"],
  ["(a", "unclosed group"],
  ["a)", "unmatched"],
  ["{", "nothing to repeat"],
  ["a{2,1}", "m < n"],
  ["a{1001}", "above 1000"],
  ["(a{1000}){1000}", "states"],
  ["(?:a{1000}){2}a", "states"],
  ["x".repeat(1001), "longer"],
  ["]", "unescaped"],
  ["\\", "ends with"],
  ["^*", "after an anchor"],
  ["\\u12", "hex digits"],
  ["[\\d-z]", "class escape"],
];
const ACCEPTED = [
  "^[a-z]+$",
  "(a+)+$",
  "^(cat|dog)s?$",
  "\\d{3}-\\d{4}",
  "[\\w.-]+@[\\w-]+",
  "^\\u00e9\\x41.$",
  "",
  "(a{100}){19}",
  "(?:a{999}){2}",
];

Deno.test("InputValidator refuses patterns outside the subset, as the Python server does", async () => {
  for (const [source, word] of REFUSED) {
    assert.throws(
      () => new InputValidator({ s: { type: "string", pattern: source } }),
      (err: unknown) =>
        err instanceof TypeError && err.message.includes("s: 'pattern'") &&
        err.message.includes(word),
      source,
    );
  }
  for (const source of ACCEPTED) compilePattern(source);
  // The Python server's reading: the same refused, the same accepted.
  const script = `
import json, sys
from pyproxy_server.declared import check_pattern, DeclarationError
out = []
for p in json.load(sys.stdin):
    try:
        check_pattern(p); out.append(True)
    except DeclarationError:
        out.append(False)
print(json.dumps(out))`;
  const child = new Deno.Command("python3", {
    args: ["-c", script],
    cwd: new URL("../python", import.meta.url),
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(
    new TextEncoder().encode(
      JSON.stringify([...REFUSED.map(([p]) => p), ...ACCEPTED]),
    ),
  );
  await writer.close();
  const { stdout, success } = await child.output();
  assert.ok(success);
  assert.deepEqual(JSON.parse(new TextDecoder().decode(stdout)), [
    ...REFUSED.map(() => false),
    ...ACCEPTED.map(() => true),
  ]);
});

Deno.test("InputValidator refuses bad declarations naming the field and the keyword", () => {
  const refused = (inputs: Record<string, unknown>, ...words: string[]) =>
    assert.throws(
      () => new InputValidator(inputs),
      (err: unknown) =>
        err instanceof TypeError &&
        words.every((w) => err.message.includes(w)),
      JSON.stringify(inputs),
    );
  refused({ p: { type: "number", ge: 0 } }, "p: unsupported keyword 'ge'");
  refused(
    { p: { type: "number", maxLength: 1 } },
    "'maxLength' does not apply",
  );
  refused(
    { p: { type: "number", minimum: 2, maximum: 1 } },
    "no number is within",
  );
  refused(
    { n: { type: "integer", minimum: 0.2, maximum: 0.8 } },
    "no integer is within",
  );
  refused(
    { n: { type: "integer", exclusiveMinimum: 1, exclusiveMaximum: 2 } },
    "no integer is within",
  );
  refused(
    { p: { type: "number", minimum: NaN } },
    "'minimum' must be a finite number",
  );
  refused(
    { p: { type: "number", maximum: Infinity } },
    "'maximum' must be a finite number",
  );
  refused(
    { p: { type: "number", multipleOf: 0 } },
    "'multipleOf' must be above 0",
  );
  refused({ m: { enum: [] } }, "'enum' must be a list of 1 to 256");
  refused({ m: { enum: [{}] } }, "'enum' values must be");
  refused({ m: { type: "string", enum: [1] } }, 'not of type "string"');
  refused(
    { s: { type: "string", minLength: 3, maxLength: 2 } },
    "'minLength' is above",
  );
  refused(
    { a: { type: "array", items: "number?" } },
    "a.items: an array's items cannot be optional",
  );
  refused(
    { o: { type: "object", properties: { x: "float" } } },
    "o.x: unknown type",
  );
  const many: Record<string, unknown> = {};
  for (let i = 0; i < 10_000; i++) many[`f${i}`] = { type: "number" };
  refused(many, "more than 1000 constrained fields");
  const patterns: Record<string, unknown> = {};
  for (let i = 0; i < 20; i++) {
    patterns[`s${i}`] = { type: "string", pattern: "a{1000}" };
  }
  refused(patterns, "s19: 'pattern'", "more than 20000 automaton states");
  delete patterns.s19;
  new InputValidator(patterns);
  let deep: unknown = "number";
  for (let i = 0; i < 100; i++) deep = { type: "array", items: deep };
  refused({ d: deep }, "nested deeper than 8 levels");
  let nested: unknown = { type: "number" };
  for (let i = 0; i < 10; i++) {
    nested = { type: "object", properties: { x: nested } };
  }
  refused({ o: nested }, "o.x.x.x.x.x.x.x.x.x: nested deeper");
});

Deno.test("InputValidator with string forms only keeps its messages and order", () => {
  // A dict form switches to the constraint walker: its messages for the
  // string forms are the valibot schema's.
  const bodies = [
    { age: "x", income: null, tags: {}, ok: 1 },
    { age: 1.5, income: 1e400 === Infinity ? "1" : 1 },
    { age: 1e20, income: 12345678901234567890n, flag: "yes" },
    {},
  ];
  const plain = new InputValidator({
    age: "integer",
    income: "number",
    tags: "array?",
    flag: "boolean?",
    ok: "string?",
  });
  const mixed = new InputValidator({
    age: "integer",
    income: "number",
    tags: "array?",
    flag: "boolean?",
    ok: "string?",
    extra: { type: "number", optional: true },
  });
  for (const body of bodies) {
    assert.deepEqual(mixed.problems(body), plain.problems(body));
  }
});

Deno.test("exampleBody and declaredSchema carry the constraints", () => {
  const inputs = {
    p: {
      type: "number",
      minimum: 0.5,
      maximum: 1,
      description: "a probability",
    },
    n: { type: "integer", exclusiveMinimum: 10, multipleOf: 5 },
    mode: { enum: ["fast", "exact"] },
    name: { type: "string", minLength: 3, pattern: "^[a-z]+$" },
    points: {
      type: "array",
      items: { type: "number", minimum: 2 },
      minItems: 3,
    },
    box: {
      type: "object",
      properties: { x: "number", label: { type: "string", optional: true } },
      additionalProperties: false,
    },
    tag: { type: "string", nullable: true, optional: true },
    x: "number",
  };
  const body = JSON.parse(exampleBody(inputs));
  assert.deepEqual(new InputValidator(inputs).problems(body), null);
  assert.deepEqual(body.mode, "fast");
  assert.deepEqual(declaredSchema(inputs), {
    type: "object",
    properties: {
      p: {
        type: "number",
        minimum: 0.5,
        maximum: 1,
        description: "a probability",
      },
      n: { type: "integer", exclusiveMinimum: 10, multipleOf: 5 },
      mode: { enum: ["fast", "exact"] },
      name: { type: "string", minLength: 3, pattern: "^[a-z]+$" },
      points: {
        type: "array",
        items: { type: "number", minimum: 2 },
        minItems: 3,
      },
      box: {
        type: "object",
        properties: { x: { type: "number" }, label: { type: "string" } },
        required: ["x"],
        additionalProperties: false,
      },
      tag: { type: ["string", "null"] },
      x: { type: "number" },
    },
    required: ["p", "n", "mode", "name", "points", "box", "x"],
    additionalProperties: true,
  });
});

Deno.test("declaredSchema of outputs in dict forms: their JSON types, without the protocol's datatype", () => {
  const outputs = {
    scores: {
      type: "array",
      items: { type: "number", datatype: "FP32" },
      description: "one per class",
    },
    label: "string",
  };
  assert.deepEqual(declaredSchema(outputs, "outputs"), {
    type: "object",
    properties: {
      scores: {
        type: "array",
        items: { type: "number" },
        description: "one per class",
      },
      label: { type: "string" },
    },
    required: ["scores", "label"],
    additionalProperties: true,
  });
  // Read as inputs, `datatype` is outside the subset: the schema falls back.
  assert.deepEqual(
    (declaredSchema(outputs) as { properties: Record<string, unknown> })
      .properties.scores,
    {},
  );
});
