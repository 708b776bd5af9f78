// The classification extension's ranking and formatting, without a gateway.
import assert from "node:assert/strict";
import {
  classify,
  formatFloatScore,
} from "../src/gateway/_inference_classification.ts";

Deno.test("classify ranks a row by score, ties by the lower index, at most n classes", () => {
  assert.deepEqual(
    classify({ shape: [4], data: [1, 5, 10, 4] }, "INT64", 2, undefined),
    { shape: [2], data: ["10:2", "5:1"] },
  );
  // Ties: the lower index first.
  assert.deepEqual(
    classify({ shape: [4], data: [3, 7, 7, 3] }, "INT32", 4, undefined).data,
    ["7:1", "7:2", "3:0", "3:3"],
  );
  // More asked for than there are classes: all of them.
  assert.deepEqual(
    classify({ shape: [2], data: [0.25, 0.75] }, "FP64", 10, undefined),
    { shape: [2], data: ["0.750000:1", "0.250000:0"] },
  );
  // A scalar: one class.
  assert.deepEqual(
    classify({ shape: [], data: [2] }, "INT64", 3, undefined),
    { shape: [1], data: ["2:0"] },
  );
});

Deno.test("classify takes the first dimension as the batch: [B, C] gives [B, k], each row ranked alone", () => {
  assert.deepEqual(
    classify(
      { shape: [2, 3], data: [0.1, 0.7, 0.2, 0.5, 0.5, 0.9] },
      "FP64",
      2,
      ["cat", "dog", "bird"],
    ),
    {
      shape: [2, 2],
      data: [
        "0.700000:1:dog",
        "0.200000:2:bird",
        "0.900000:2:bird",
        "0.500000:0:cat",
      ],
    },
  );
  // Rank 3: each row's classes are the rest, flat.
  assert.deepEqual(
    classify({ shape: [1, 2, 2], data: [1, 4, 3, 2] }, "INT64", 1, undefined),
    { shape: [1, 1], data: ["4:1"] },
  );
  // An empty batch.
  assert.deepEqual(
    classify({ shape: [0, 3], data: [] }, "FP32", 2, undefined),
    { shape: [0, 0], data: [] },
  );
});

Deno.test("classify: labels beyond the list, or not strings, are left out; BigInt scores compare exactly", () => {
  assert.deepEqual(
    classify({ shape: [3], data: [1, 3, 2] }, "INT64", 3, ["a"]).data,
    ["3:1", "2:2", "1:0:a"],
  );
  assert.deepEqual(
    classify(
      { shape: [3], data: [2n ** 63n - 1n, 2n ** 63n - 2n, 5] },
      "INT64",
      2,
      undefined,
    ).data,
    ["9223372036854775807:0", "9223372036854775806:1"],
  );
  // A few of many (the heap), BigInts among numbers, ties by index.
  const row: (number | bigint)[] = Array.from({ length: 100 }, (_, i) => i);
  row[10] = 2n ** 60n;
  row[20] = 2n ** 60n;
  row[30] = 2n ** 53n + 1n;
  assert.deepEqual(
    classify({ shape: [100], data: row }, "INT64", 4, undefined).data,
    [
      "1152921504606846976:10",
      "1152921504606846976:20",
      "9007199254740993:30",
      "99:99",
    ],
  );
});

Deno.test("formatFloatScore writes a score as C's %f (Triton's std::to_string)", () => {
  assert.equal(formatFloatScore(3.3), "3.300000");
  assert.equal(formatFloatScore(0), "0.000000");
  assert.equal(formatFloatScore(-0), "-0.000000");
  assert.equal(formatFloatScore(-1.5e-7), "-0.000000");
  assert.equal(formatFloatScore(1e21), "1000000000000000000000.000000");
  assert.equal(formatFloatScore(123456789.125), "123456789.125000");
  assert.equal(formatFloatScore(Infinity), "inf");
  assert.equal(formatFloatScore(-Infinity), "-inf");
  assert.equal(formatFloatScore(NaN), "nan");
  // Exact ties at the sixth decimal go to the even digit, as C's (and
  // Python's "%f" % v): toFixed alone rounded them all up.
  for (
    const [v, c] of [
      [0.0078125, "0.007812"],
      [0.0234375, "0.023438"],
      [-0.0078125, "-0.007812"],
      [0.0390625, "0.039062"],
      [0.9921875, "0.992188"],
      [1000000.0078125, "1000000.007812"],
      [12345.4609375, "12345.460938"],
    ] as const
  ) assert.equal(formatFloatScore(v), c, String(v));
  // A uniform FP32 score over 128 classes.
  assert.deepEqual(
    classify({ shape: [2], data: [1 / 128, 1 / 128] }, "FP32", 1, undefined)
      .data,
    ["0.007812:0"],
  );
  // FP32: the model's float32 value, as Triton holds it.
  assert.deepEqual(
    classify({ shape: [1], data: [0.1] }, "FP32", 1, undefined).data,
    ["0.100000:0"],
  );
  assert.deepEqual(
    classify({ shape: [1], data: [16777217] }, "FP32", 1, undefined).data,
    ["16777216.000000:0"],
  );
  // Ranked as held too: two doubles of one float32 tie (the lower index
  // first), where the double ranked them.
  assert.deepEqual(
    classify({ shape: [2], data: [16777216, 16777217] }, "FP32", 2, undefined)
      .data,
    ["16777216.000000:0", "16777216.000000:1"],
  );
  // FP16: the model's half-precision value (65519 is 65504, 0.1 is
  // 0.0999755859375), as Python's struct "e" rounds it; was the double's.
  assert.deepEqual(
    classify(
      { shape: [5], data: [0.1, 0.3, 65519, 1e-8, 65510] },
      "FP16",
      5,
      undefined,
    ).data,
    [
      "65504.000000:2",
      "65504.000000:4",
      "0.300049:1",
      "0.099976:0",
      "0.000000:3",
    ],
  );
});

Deno.test("classify: the heap (few of many classes) and the sort (most of them) agree, and 10^6 classes stay fast", () => {
  // A pseudo-random row with many ties.
  let seed = 42;
  const row = Array.from({ length: 5000 }, () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % 97;
  });
  const expected = row.map((v, i) => [v, i] as const)
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .map(([v, i]) => `${v}:${i}`);
  for (const k of [1, 3, 10, 600, 5000]) {
    assert.deepEqual(
      classify({ shape: [5000], data: row }, "INT64", k, undefined).data,
      expected.slice(0, k),
      `k = ${k}`,
    );
  }
  const big = Array.from(
    { length: 1_000_000 },
    (_, i) => (i * 7919) % 1_000_003,
  );
  for (const k of [5, 1_000_000]) {
    const t0 = performance.now();
    const out = classify(
      { shape: [big.length], data: big },
      "FP32",
      k,
      undefined,
    );
    const ms = performance.now() - t0;
    assert.equal(out.data.length, k);
    assert.ok(ms < 10_000, `${k} of 10^6 classes in ${ms} ms`);
  }
});
