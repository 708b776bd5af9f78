// TensorFlow Serving's :predict (KServe V1) through the gateway under Bun: a
// batching model's columnar inputs read row by row and its results answered
// in columns keep a name "__proto__" (Bun has the __proto__ accessor).
import { expect, test } from "bun:test";
import { withGateway } from "./_helpers.ts";

const ROWS = `class Rows:
    batch_size = 4
    batch_delay_ms = 1

    def execute_batch(self, msgs):
        return [{"__proto__": m["__proto__"], "x": m["x"] * 2} for m in msgs]
`;

test('gateway on Bun: :predict of a batching model keeps an input and an output named "__proto__" in the columnar format', async () => {
  await withGateway({ "rows.py": ROWS }, {}, async (server) => {
    const res = await fetch(`${server.url}/v1/models/rows:predict`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"inputs": {"__proto__": [{"a": 1}, "p"], "x": [1, 2]}}',
    });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(
      '{"outputs":{"__proto__":[{"a":1},"p"],"x":[2,4]}}',
    );
  });
});
