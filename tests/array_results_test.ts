// numpy-like results (arrays, scalars, tensors, Series: python/pyproxy_server/
// array_like.py) through real Python workers: execute, a batch, a stream, a
// NaN inside, a ~5 MB array through a spill file, and the gateway's /v1 and
// /v2 routes. The models (python/tests/models/arrays.py) return fakes shaped
// as numpy values; the real-numpy test runs where numpy is installed.
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import { spillover } from "../plugins/spillover.ts";
import { SseReader, startGateway } from "./_gateway_harness.ts";

const TEST_MODELS =
  new URL("../python/tests/models/", import.meta.url).pathname;
const CLASSES = ["Arrays", "ArrayStream", "ArrayBatch", "RealNumpy"];

const HAS_NUMPY = (await new Deno.Command("python3", {
  args: ["-c", "import numpy"],
  stdout: "null",
  stderr: "null",
}).output()).success;

const ALL = {
  ints: [[1, 2], [3, 4]],
  floats: [0.5, 1.5, -2],
  bools: [true, false],
  strings: ["setosa", "é"],
  empty: [],
  zero_d: 2.5,
  scalar: 7,
  tensor: [[1, 2]],
  series: [1, 2, 3],
  objects: [1, null],
  plain: [1, "a", null],
};

async function startPool(
  threshold = 1024 * 1024,
): Promise<{ pool: Pool; spill: ReturnType<typeof spillover> }> {
  const spill = spillover({ threshold });
  const pool = await Pool.start({
    workers: 1,
    modelsDir: TEST_MODELS,
    handleSignals: false,
    plugins: [spill],
  });
  try {
    for (const name of CLASSES) {
      await pool.addModel(name, { file: "arrays.py", class: name });
    }
  } catch (err) {
    await pool.close();
    throw err;
  }
  return { pool, spill };
}

Deno.test("Pool.execute, executeStream and a batch get numpy-like results as lists and numbers", async () => {
  const { pool } = await startPool();
  await using _ = pool;
  assert.deepEqual(await pool.execute("Arrays", { kind: "all" }), ALL);
  assert.equal(await pool.execute("Arrays", { kind: "scalar" }), 42);
  const items = [];
  for await (
    const item of pool.executeStream("ArrayStream", {
      count: 2,
      kind: "array",
    })
  ) items.push(item);
  assert.deepEqual(items, [[0, 1], [1, 2], [[1.5, 2.5], [3.5, 4.5]]]);
  // A plain model's array on the stream route is one item.
  const one = [];
  for await (
    const item of pool.executeStream("Arrays", { kind: "array" })
  ) one.push(item);
  assert.deepEqual(one, [[[1.5, 2.5], [3.5, 4.5]]]);
  // execute_batch returning one array, a row per message.
  const rows = await Promise.all(
    [1, 2, 3].map((x) => pool.execute("ArrayBatch", { x })),
  );
  assert.deepEqual(rows, [[1, 2], [2, 4], [3, 6]]);
});

Deno.test("Pool.execute: a NaN inside an array fails the call naming its index, as a float NaN does", async () => {
  const { pool } = await startPool();
  await using _ = pool;
  await assert.rejects(pool.execute("Arrays", { kind: "nan" }), (err) => {
    // A Python error (PythonError) named so, as for any result json refuses.
    assert.ok(err instanceof Error);
    assert.equal(err.name, "SerializationError");
    assert.equal((err as { code?: string }).code, "SERIALIZATION");
    assert.equal(
      err.message,
      "Cannot send result: not JSON: result.scores[1][0] is nan (NaN and infinities are not JSON: use None)",
    );
    return true;
  });
  // The DataFrame keeps its hint (its orientation is the model's choice).
  await assert.rejects(
    pool.execute("Arrays", { kind: "frame" }),
    /result\.df is a \w+\.FakeFrame \(use \.to_dict\(\)\)/,
  );
});

Deno.test("Pool.execute: a ~5 MB array result goes through a spill file", async () => {
  const { pool, spill } = await startPool();
  await using _ = pool;
  const n = 300_000; // ~17 bytes of JSON each
  const result = await pool.execute("Arrays", { kind: "big", n }) as {
    data: number[];
  };
  assert.equal(result.data.length, n);
  assert.equal(result.data[n - 1], n - 1 + 0.123456789);
  assert.equal(spill.stats.spilledIn, 1);
  assert.ok(spill.stats.bytesIn > 4_500_000, String(spill.stats.bytesIn));
});

Deno.test({
  name: "Pool.execute: real numpy values (where numpy is installed)",
  ignore: !HAS_NUMPY,
  async fn() {
    const { pool } = await startPool();
    await using _ = pool;
    assert.deepEqual(await pool.execute("RealNumpy", {}), {
      ints: [[0, 1], [2, 3]],
      int64: 7,
      float32: 0.5,
      bool: true,
      zero_d: 2.5,
      strings: ["setosa", "é"],
      uint8: [0, 255],
    });
    const raw = await pool.execute("RealNumpy", { kind: "bytes" }) as {
      raw: Uint8Array[];
    };
    assert.deepEqual(raw.raw, [
      new Uint8Array([0, 1]),
      new Uint8Array([111, 107]),
    ]);
    await assert.rejects(
      pool.execute("RealNumpy", { kind: "nan" }),
      /result\.scores\[1\] is nan/,
    );
    const { data } = await pool.execute("RealNumpy", {
      kind: "big",
      n: 250_000,
    }) as { data: number[] };
    assert.equal(data.length, 250_000);
  },
});

Deno.test("gateway: numpy-like results on /v1 execute and stream, and as /v2 output tensors", async () => {
  const source = await Deno.readTextFile(`${TEST_MODELS}arrays.py`);
  await using gw = await startGateway({
    models: [
      { name: "arrays", file: "arrays.py", class: "Arrays" },
      { name: "array_stream", file: "arrays.py", class: "ArrayStream" },
    ],
  }, { "arrays.py": source });
  const post = (path: string, body: unknown) =>
    gw.fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const res = await post("/v1/models/arrays/execute", { kind: "all" });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), ALL);
  const nan = await post("/v1/models/arrays/execute", { kind: "nan" });
  assert.equal(nan.status, 422);
  assert.match(
    (await nan.json()).error.message,
    /result\.scores\[1\]\[0\] is nan/,
  );
  const stream = await post("/v1/models/array_stream/stream", {
    count: 2,
    kind: "scalar",
  });
  assert.equal(stream.status, 200);
  const events = await new SseReader(stream.body!).all();
  assert.deepEqual(events.map((e) => e.data), [[0, 1], [1, 2], 42, {
    items: 3,
  }]);
  const infer = await post("/v2/models/arrays/infer", {
    inputs: [{ name: "kind", shape: [1], datatype: "BYTES", data: ["infer"] }],
  });
  assert.equal(infer.status, 200);
  const body = await infer.json();
  assert.deepEqual(body.outputs, [
    { name: "label", shape: [2], datatype: "BYTES", data: ["setosa", "other"] },
    {
      name: "score",
      shape: [2, 2],
      datatype: "FP64",
      data: [0.9, 0.1, 0.2, 0.8],
    },
  ]);
});
