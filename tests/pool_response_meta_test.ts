// The status and headers a model chose for its success (host.set_status,
// host.set_header) as the library sees them: onResponseMeta of execute, a
// batch's messages and a stream; the `http` field on the wire only when
// set. Real Python workers.
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import { ConfigError } from "../src/errors.ts";
import type { ResponseMeta } from "../src/session_types.ts";
import type { WireMessage } from "../src/plugin.ts";

const TEST_MODELS =
  new URL("../python/tests/models/", import.meta.url).pathname;

async function startPool(replies: WireMessage[] = []): Promise<Pool> {
  const pool = await Pool.start({
    workers: 1,
    modelsDir: TEST_MODELS,
    handleSignals: false,
    // Plugins see every reply as it came, `http` included.
    plugins: [{
      name: "spy",
      onReply(msg) {
        if (typeof msg.event !== "string") replies.push(msg);
      },
    }],
  });
  try {
    const models: Array<[string, string]> = [
      ["m", "Model"],
      ["batch", "Batch"],
      ["stream", "Stream"],
    ];
    for (const [name, cls] of models) {
      await pool.addModel(name, { file: "http_meta.py", class: cls });
    }
  } catch (err) {
    await pool.close();
    throw err;
  }
  return pool;
}

Deno.test("Pool.execute onResponseMeta receives the model's status and headers; the result is as ever", async () => {
  const replies: WireMessage[] = [];
  await using pool = await startPool(replies);
  const metas: ResponseMeta[] = [];
  const result = await pool.execute("m", {
    status: 201,
    headers: { Location: "/items/7" },
    result: { id: 7 },
  }, { onResponseMeta: (m) => metas.push(m) });
  assert.deepEqual(result, { id: 7 });
  // (A copy: deepEqual narrows what it is given.)
  assert.deepEqual([...metas], [{
    status: 201,
    headers: { Location: "/items/7" },
  }]);
  const http = replies.at(-1)!;
  assert.deepEqual(http.http, {
    status: 201,
    headers: { Location: "/items/7" },
  });
  // A plain call: no callback, no field on the wire.
  replies.length = 0;
  assert.deepEqual(
    await pool.execute("m", { result: 1 }, {
      onResponseMeta: (m) => metas.push(m),
    }),
    1,
  );
  assert.equal(metas.length, 1);
  assert.deepEqual(Object.keys(replies.at(-1)!).sort(), ["id", "ok", "result"]);
  // Without onResponseMeta the meta is dropped quietly; an error wins.
  assert.deepEqual(await pool.execute("m", { status: 202, result: 2 }), 2);
  await assert.rejects(
    pool.execute("m", { status: 200, raise: 409 }, {
      onResponseMeta: (m) => metas.push(m),
    }),
    (e: Error & { status?: number }) => e.status === 409,
  );
  assert.equal(metas.length, 1);
  // A callback that throws is logged; the call resolves.
  assert.deepEqual(
    await pool.execute("m", { status: 201, result: 3 }, {
      onResponseMeta: () => {
        throw new Error("boom");
      },
    }),
    3,
  );
  await assert.rejects(
    pool.execute("m", {}, { onResponseMeta: 1 as never }),
    ConfigError,
  );
});

Deno.test("Pool.execute of a batching model: each call gets its own message's status", async () => {
  await using pool = await startPool();
  const got: Array<ResponseMeta | undefined> = [
    undefined,
    undefined,
    undefined,
  ];
  const results = await Promise.all([0, 1, 2].map((i) =>
    pool.execute("batch", {
      ...(i === 0 ? {} : { status: 200 + i }),
      headers: { "X-I": String(i) },
      result: i,
    }, { onResponseMeta: (m) => got[i] = m })
  ));
  assert.deepEqual(results, [0, 1, 2]);
  assert.deepEqual(got, [
    { headers: { "X-I": "0" } },
    { status: 201, headers: { "X-I": "1" } },
    { status: 202, headers: { "X-I": "2" } },
  ]);
});

Deno.test("Pool.executeStream onResponseMeta receives the headers set before the first item", async () => {
  await using pool = await startPool();
  const metas: ResponseMeta[] = [];
  const items: unknown[] = [];
  for await (
    const item of pool.executeStream(
      "stream",
      { headers: { "X-Model": "v2" } },
      {
        onResponseMeta: (m) => metas.push(m),
      },
    )
  ) {
    if (items.length === 0) assert.equal(metas.length, 1);
    items.push(item);
  }
  assert.deepEqual(metas, [{ headers: { "X-Model": "v2" } }]);
  // One set after the first item is dropped (too late for the response).
  assert.deepEqual(items, [1, { after: null }]);
});
