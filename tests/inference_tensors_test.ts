// Tensors of the Open Inference Protocol: the reshape of flat data by a
// shape and the flatten of nested results (with their shape inferred) are
// inverse to each other; ragged lists are found; bounds hold.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeBinaryTensor,
  encodeBinaryTensor,
  numberToHalf,
} from "../src/gateway/_inference_binary.ts";
import {
  type Datatype,
  declaredTensor,
  elementCount,
  elementProblem,
  flattenData,
  flattenResult,
  listCount,
  reshape,
  resultDatatype,
  shapeProblem,
} from "../src/gateway/_inference_tensors.ts";
import { MAX_DEPTH, readFields } from "../src/gateway/_field_declaration.ts";

const element = fc.oneof(
  fc.integer(),
  fc.string({ maxLength: 3 }),
  fc.boolean(),
);

/** A shape of rank 0 to 4 and row-major data of its element count. */
const tensor = fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 4 }).chain(
  (shape) =>
    fc.array(element, {
      minLength: elementCount(shape),
      maxLength: elementCount(shape),
    }).map((data) => ({ shape, data })),
);

Deno.test("reshape and flattenResult are inverse, the shape read from the nesting", () => {
  fc.assert(
    fc.property(tensor, ({ shape, data }) => {
      const nested = reshape(data, shape);
      const flat = flattenResult(nested);
      assert.ok(flat !== undefined);
      assert.deepEqual(flat.data, data);
      // An empty dimension hides those after it: [0, 3] nests as [].
      const zero = shape.indexOf(0);
      assert.deepEqual(flat.shape, zero < 0 ? shape : shape.slice(0, zero + 1));
      // The request's flatten of nested data gives the same elements.
      if (shape.length > 0) {
        assert.deepEqual(flattenData(nested, shape), data);
      }
    }),
    { numRuns: 500 },
  );
});

Deno.test("flattenResult refuses ragged lists wherever one list is off", () => {
  const full = fc.array(fc.integer({ min: 1, max: 3 }), {
    minLength: 1,
    maxLength: 4,
  }).chain((shape) =>
    fc.tuple(
      fc.constant(shape),
      fc.nat(elementCount(shape) - 1),
      fc.boolean(),
    )
  );
  fc.assert(
    fc.property(full, ([shape, at, longer]) => {
      // A list is ragged only beside a sibling of the other length.
      fc.pre(elementCount(shape.slice(0, -1)) >= 2);
      const data = Array.from({ length: elementCount(shape) }, (_, i) => i);
      const nested = reshape(data, shape) as unknown[];
      // The innermost list that holds element `at`: one item more or fewer.
      let list = nested;
      let index = at;
      for (let d = 0; d < shape.length - 1; d++) {
        const inner = elementCount(shape.slice(d + 1));
        list = list[Math.floor(index / inner)] as unknown[];
        index %= inner;
      }
      if (longer) list.push(99);
      else list.pop();
      assert.equal(flattenResult(nested), undefined);
    }),
    { numRuns: 300 },
  );
  assert.equal(flattenResult([1, [2]]), undefined);
  assert.equal(flattenResult([[1], 2]), undefined);
});

Deno.test("flattenData stops past the expected count, whatever the data's size", () => {
  const data = Array.from({ length: 1000 }, (_, i) => i);
  assert.equal((flattenData(data, [3]) as unknown[]).length, 4);
  assert.equal(flattenData("1,2", [2]), undefined);
  // No recursion, and no walk past the shape's rank: nesting as deep as
  // memory allows is refused at its first extra level.
  let deep: unknown = [1];
  for (let i = 0; i < 100_000; i++) deep = [deep];
  assert.equal(
    flattenData(deep, [1]),
    "data[0] is a list, and shape [1] has 1 dimension",
  );
  assert.equal(flattenResult(deep), undefined); // over 64 dimensions
});

Deno.test("flattenData takes nested data only as its shape nests it, naming where it differs", () => {
  assert.deepEqual(flattenData([[1, 2], [3, 4]], [2, 2]), [1, 2, 3, 4]);
  assert.deepEqual(flattenData([1, 2, 3, 4], [2, 2]), [1, 2, 3, 4]);
  assert.deepEqual(flattenData([[], []], [2, 0]), []);
  assert.deepEqual(flattenData([], [0, 3]), []);
  const cases: Array<[unknown, number[], string]> = [
    // The same element count as the shape's, ragged.
    [
      [[1], [2, 3, 4]],
      [2, 2],
      "data[0] has 1 item, and dimension 1 of shape [2,2] is 2",
    ],
    [
      [[1, 2], [3]],
      [2, 2],
      "data[1] has 1 item, and dimension 1 of shape [2,2] is 2",
    ],
    [
      [[1, 2, 3, 4]],
      [2, 2],
      "data has 1 item, and dimension 0 of shape [2,2] is 2",
    ],
    // Nested one level short, or one too deep.
    [
      [[1, 2], [3, 4]],
      [2, 2, 1],
      "data[0][0] is not a list, and shape [2,2,1] has 3 dimensions (data is flat, or nested exactly as its shape)",
    ],
    [[[1.5], [-2.25]], [2], "data[0] is a list, and shape [2] has 1 dimension"],
    [
      [[1, [2]], [3, 4]],
      [2, 2],
      "data[0][1] is a list, and shape [2,2] has 2 dimensions",
    ],
    // A list beside elements.
    [
      [1, [2]],
      [2],
      "data[1] is a list, and data[0] is not (data is flat, or nested exactly as its shape [2])",
    ],
    [
      [[1], 2],
      [2, 1],
      "data[1] is not a list, and shape [2,1] has 2 dimensions (data is flat, or nested exactly as its shape)",
    ],
    [[[5]], [], "data[0] is a list, and shape [] holds a single element"],
  ];
  for (const [data, shape, problem] of cases) {
    assert.equal(flattenData(data, shape), problem, JSON.stringify(data));
  }
});

Deno.test("shapes: integers >= 0, at most 64 dimensions; counts past 2^53 are Infinity", () => {
  assert.equal(shapeProblem([2, 0, 3]), undefined);
  for (
    const bad of [[-1], [1.5], ["2"], [2n], null, 3, new Array(65).fill(1)]
  ) {
    assert.ok(shapeProblem(bad) !== undefined, String(bad));
  }
  assert.equal(elementCount([2 ** 30, 2 ** 30]), Infinity);
  assert.equal(listCount([1e9, 0]), 1e9);
  assert.equal(listCount([2, 3, 4]), 2 + 6);
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 50 }), { maxLength: 6 }),
      (shape) =>
        // Without a 0, the nested lists are at most the rank times the elements.
        listCount(shape) <= shape.length * elementCount(shape),
    ),
  );
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 2, max: 50 }), { maxLength: 6 }),
      (shape) =>
        // Without a 0 or a 1, fewer than the elements: the request's bound
        // (2 per element) refuses only shapes padded with dimensions of 1.
        listCount(shape) < Math.max(elementCount(shape), 1),
    ),
  );
});

Deno.test("elementProblem checks ranges of each datatype exactly, BigInts too", () => {
  assert.equal(elementProblem(-128, "INT8"), undefined);
  assert.match(elementProblem(-129, "INT8")!, /out of range of INT8/);
  assert.equal(elementProblem(2n ** 64n - 1n, "UINT64"), undefined);
  assert.match(elementProblem(2n ** 64n, "UINT64")!, /out of range/);
  assert.match(elementProblem(2n ** 63n, "INT64")!, /out of range/);
  // A float past 2^53 compares by its exact value: the ends of the range as
  // numbers are 2^63 and 2^64.
  assert.match(
    elementProblem(2 ** 63, "INT64")!,
    /^9223372036854775808 is out of range of INT64$/,
  );
  assert.match(elementProblem(-(2 ** 63) - 2048, "INT64")!, /out of range/);
  assert.equal(elementProblem(-(2 ** 63), "INT64"), undefined);
  assert.equal(elementProblem(2 ** 63 - 1024, "INT64"), undefined);
  assert.match(elementProblem(2 ** 64, "UINT64")!, /out of range of UINT64/);
  assert.equal(elementProblem(2 ** 64 - 2048, "UINT64"), undefined);
  assert.match(elementProblem(1e19, "INT64")!, /out of range/);
  assert.equal(elementProblem(1e19, "UINT64"), undefined);
  // A float is in range when the datatype rounds it to a finite value.
  assert.equal(elementProblem(65504, "FP16"), undefined);
  assert.equal(elementProblem(65519.99, "FP16"), undefined);
  assert.match(elementProblem(65520, "FP16")!, /out of range/);
  assert.equal(elementProblem(3.4028235e38, "FP32"), undefined);
  assert.equal(elementProblem(-3.4028235e38, "FP32"), undefined);
  assert.match(
    elementProblem(3.4028235677973366e38, "FP32")!,
    /out of range of FP32/,
  );
  assert.match(elementProblem(3.5e38, "FP32")!, /out of range/);
  assert.equal(elementProblem(Number.MAX_VALUE, "FP64"), undefined);
  assert.equal(elementProblem(2n ** 64n, "FP32"), undefined);
  assert.match(elementProblem(true, "INT32")!, /expected an integer/);
  assert.match(elementProblem(0, "BOOL")!, /expected a boolean/);
  assert.match(elementProblem(1, "BYTES")!, /expected a string/);
});

Deno.test("resultDatatype: from the declared output, else from the values", () => {
  assert.equal(resultDatatype([1, 2], undefined), "INT64");
  assert.equal(resultDatatype([1, 2.5], undefined), "FP64");
  assert.equal(resultDatatype([1, 2], "number"), "FP64");
  assert.equal(resultDatatype([2n ** 63n], undefined), "UINT64");
  assert.match(
    resultDatatype([2n ** 64n], undefined),
    /holds 18446744073709551616, beyond 64-bit integers/,
  );
  // Integers past ±2^53 come as BigInts: a number past them was a float.
  assert.equal(resultDatatype([1e300, 2], undefined), "FP64");
  assert.equal(resultDatatype([true], undefined), "BOOL");
  assert.equal(resultDatatype(["a", new Uint8Array(1)], undefined), "BYTES");
  assert.equal(resultDatatype([], undefined), "FP64");
  assert.equal(resultDatatype([], "string"), "BYTES");
  assert.match(resultDatatype([1, "a"], undefined), /mixes/);
  assert.match(resultDatatype([null], undefined), /holds null/);
  assert.match(
    resultDatatype([1.5], "integer"),
    /declared "integer" and holds 1.5/,
  );
  // Dict forms: the element type of the arrays, or its datatype.
  const fp32 = { type: "array", items: { type: "number", datatype: "FP32" } };
  assert.equal(resultDatatype([1, 2], fp32), "FP32");
  assert.equal(resultDatatype([], fp32), "FP32");
  assert.match(
    resultDatatype([1e300], fp32),
    /declared FP32 and holds 1e\+300/,
  );
  assert.equal(
    resultDatatype([1], { type: "array", items: "integer" }),
    "INT64",
  );
  assert.match(
    resultDatatype([300], { type: "integer", datatype: "UINT8" }),
    /declared UINT8 and holds 300/,
  );
});

Deno.test("declaredTensor: a dimension -1 per array level, the element type's datatype", () => {
  assert.deepEqual(declaredTensor("number?"), { datatype: "FP64", shape: [] });
  assert.deepEqual(
    declaredTensor({
      type: "array",
      items: { type: "array", items: { type: "integer", datatype: "INT8" } },
    }),
    { datatype: "INT8", shape: [-1, -1] },
  );
  assert.deepEqual(
    declaredTensor({ type: "array", items: "string" }),
    { datatype: "BYTES", shape: [-1] },
  );
  for (const other of ["array", "object", "any", { type: "object" }, 3]) {
    assert.equal(declaredTensor(other), undefined);
  }
});

Deno.test("declaredTensor: as many dimensions as a declaration may nest (a type name's items below the deepest dict)", () => {
  // Dicts at depths 0 to MAX_DEPTH, a type name below: MAX_DEPTH + 1 arrays.
  let field: unknown = "number";
  for (let k = 0; k <= MAX_DEPTH; k++) field = { type: "array", items: field };
  assert.doesNotThrow(() => readFields({ deep: field }, "outputs"));
  assert.deepEqual(declaredTensor(field), {
    datatype: "FP64",
    shape: new Array(MAX_DEPTH + 1).fill(-1),
  });
});

Deno.test("encodeBinaryTensor: every datatype decodes back; FP16 rounds to nearest, ties to even", () => {
  // Every finite half, positive and negative, through its value and back.
  for (let h = 0; h < 0x7c00; h++) {
    for (const bits of [h, h | 0x8000]) {
      const bytes = new Uint8Array([bits & 0xff, bits >> 8]);
      const [v] = decodeBinaryTensor(bytes, "FP16", 1) as number[];
      assert.equal(numberToHalf(v!), bits, `${bits.toString(16)}: ${v}`);
    }
  }
  // Halfway between 1 and its next half (1 + 2^-10): to the even one, 1;
  // a hair above: up. The largest half, and a subnormal tie.
  assert.equal(numberToHalf(1 + 2 ** -11), 0x3c00);
  assert.equal(numberToHalf(1 + 2 ** -11 + 2 ** -30), 0x3c01);
  assert.equal(numberToHalf(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(numberToHalf(65519), 0x7bff);
  assert.equal(numberToHalf(2 ** -25), 0);
  assert.equal(numberToHalf(3 * 2 ** -25), 2);
  const cases: Array<[Datatype, unknown[]]> = [
    ["UINT8", [0, 255]],
    ["INT8", [-128, 127]],
    ["UINT16", [0, 65535]],
    ["INT16", [-32768, 32767]],
    ["UINT32", [0, 4294967295]],
    ["INT32", [-2147483648, 2147483647]],
    ["FP16", [0.5, -65504]],
    ["FP32", [0.25, -3.4028234663852886e38]],
    ["FP64", [0.1, -1e300]],
    ["INT64", [-(2n ** 63n), 2n ** 63n - 1n]],
    ["UINT64", [0, 2n ** 64n - 1n]],
    ["BOOL", [true, false]],
    ["BYTES", ["héllo", ""]],
  ];
  for (const [datatype, data] of cases) {
    const bytes = encodeBinaryTensor(data, datatype);
    assert.deepEqual(
      decodeBinaryTensor(bytes, datatype, data.length),
      data,
      datatype,
    );
  }
});

Deno.test("encodeBinaryTensor: BYTES elements longer in UTF-8 than in UTF-16 (the buffer grows), bytes, lone surrogates, as TextEncoder writes each", () => {
  const utf8 = new TextEncoder();
  const expected = (data: unknown[]) => {
    const parts = data.map((v) =>
      v instanceof Uint8Array ? v : utf8.encode(String(v))
    );
    const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
    let at = 0;
    for (const p of parts) {
      new DataView(out.buffer).setUint32(at, p.length, true);
      out.set(p, at + 4);
      at += 4 + p.length;
    }
    return out;
  };
  for (
    const data of [
      [],
      [""],
      ["a", "é", "日本", "😀", "\ud800x", new Uint8Array([0, 255]), 5, "z"],
      ["日本".repeat(5000), "a"],
      Array.from({ length: 300 }, (_, i) => "é😀".repeat(i % 7) + i),
    ]
  ) {
    assert.deepEqual(
      encodeBinaryTensor(data, "BYTES"),
      expected(data),
      JSON.stringify(data).slice(0, 64),
    );
  }
});
