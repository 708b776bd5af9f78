// The Open Inference Protocol (KServe V2) through the gateway under Bun: an
// infer call in JSON and with binary tensors, and an input named
// "__proto__" that stays an input (Bun has the __proto__ accessor).
import { expect, test } from "bun:test";
import { withGateway } from "./_helpers.ts";

const ECHO = `class Echo:
    def execute(self, msg):
        return msg
`;

test("gateway on Bun: /v2 infer reshapes tensors, echoes the id, answers binary tensors", async () => {
  await withGateway({ "echo.py": ECHO }, {}, async (server) => {
    const url = `${server.url}/v2/models/echo/infer`;
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        id: "bun-1",
        inputs: [
          { name: "x", datatype: "INT64", shape: [2, 2], data: [1, 2, 3, 4] },
          { name: "__proto__", datatype: "BYTES", shape: [1], data: ["p"] },
        ],
      }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      model_name: "echo",
      model_version: "1",
      id: "bun-1",
      outputs: [
        { name: "x", datatype: "INT64", shape: [2, 2], data: [1, 2, 3, 4] },
        { name: "__proto__", datatype: "BYTES", shape: [1], data: ["p"] },
      ],
    });

    const floats = new Float32Array([0.5, -1]);
    const header = new TextEncoder().encode(JSON.stringify({
      inputs: [{
        name: "f",
        datatype: "FP32",
        shape: [2],
        parameters: { binary_data_size: 8 },
      }],
      parameters: { binary_data_output: true },
    }));
    const body = new Uint8Array(header.byteLength + 8);
    body.set(header);
    body.set(new Uint8Array(floats.buffer), header.byteLength);
    const bin = await fetch(url, {
      method: "POST",
      headers: { "inference-header-content-length": String(header.byteLength) },
      body,
    });
    expect(bin.status).toBe(200);
    const length = Number(bin.headers.get("inference-header-content-length"));
    const bytes = new Uint8Array(await bin.arrayBuffer());
    const meta = JSON.parse(
      new TextDecoder().decode(bytes.subarray(0, length)),
    );
    expect(meta.outputs).toEqual([{
      name: "f",
      datatype: "FP64",
      shape: [2],
      parameters: { binary_data_size: 16 },
    }]);
    expect([...new Float64Array(bytes.slice(length).buffer)]).toEqual([
      0.5,
      -1,
    ]);

    const bad = await fetch(url, {
      method: "POST",
      body: JSON.stringify({
        inputs: [{ name: "x", datatype: "INT8", shape: [1], data: [300] }],
      }),
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({
      error: 'Cannot infer: input "x": data[0]: 300 is out of range of INT8',
    });
  });
});

const TENSORS = `from pyproxy import Tensor


class Tensors:
    def execute(self, msg):
        return {"e": Tensor([], [2, 0, 3], "FP32"), "h": Tensor([[0.5, -2]], [1, 2], "FP16")}
`;

const COUNTER = `class Counter:
    def execute(self, msg):
        yield {"i": 1}
`;

test("gateway on Bun: /v2 answers a pyproxy.Tensor's shape and datatype, refuses ragged nested data and streaming models", async () => {
  await withGateway(
    { "tensors.py": TENSORS, "counter.py": COUNTER, "echo.py": ECHO },
    {},
    async (server) => {
      const post = (model: string, body: unknown) =>
        fetch(`${server.url}/v2/models/${model}/infer`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
      const res = await post("tensors", {
        inputs: [],
        outputs: [{ name: "e" }, {
          name: "h",
          parameters: { binary_data: true },
        }],
      });
      expect(res.status).toBe(200);
      const length = Number(res.headers.get("inference-header-content-length"));
      const bytes = new Uint8Array(await res.arrayBuffer());
      expect(
        JSON.parse(new TextDecoder().decode(bytes.subarray(0, length))).outputs,
      ).toEqual([
        { name: "e", datatype: "FP32", shape: [2, 0, 3], data: [] },
        {
          name: "h",
          datatype: "FP16",
          shape: [1, 2],
          parameters: { binary_data_size: 4 },
        },
      ]);
      // 0.5 and -2 as IEEE halves, little-endian.
      expect([...bytes.subarray(length)]).toEqual([0x00, 0x38, 0x00, 0xc0]);

      const ragged = await post("echo", {
        inputs: [{
          name: "a",
          datatype: "INT32",
          shape: [2, 2],
          data: [[1], [2, 3, 4]],
        }],
      });
      expect(ragged.status).toBe(400);
      expect(await ragged.json()).toEqual({
        error:
          'Cannot infer: input "a": data[0] has 1 item, and dimension 1 of shape [2,2] is 2',
      });
      const stream = await post("counter", { inputs: [] });
      expect(stream.status).toBe(400);
      expect((await stream.json()).error).toContain(
        "POST /v1/models/counter/stream",
      );
    },
  );
});

test("gateway on Bun: /v2 statistics count a model's calls by outcome, and its configuration has its declared inputs", async () => {
  const TYPED = `class Typed:
    inputs = {"x": "number"}

    def execute(self, msg):
        return {"y": msg["x"]}
`;
  await withGateway({ "typed.py": TYPED }, {}, async (server) => {
    const infer = (data: unknown[]) =>
      fetch(`${server.url}/v2/models/typed/infer`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          inputs: [{ name: "x", datatype: "FP64", shape: [], data }],
        }),
      });
    expect((await infer([1])).status).toBe(200);
    expect((await infer([2])).status).toBe(200);
    expect((await infer(["not a number"])).status).toBe(400);
    const stats = await (await fetch(`${server.url}/v2/models/typed/stats`))
      .json();
    const s = stats.model_stats[0];
    expect(s.name).toBe("typed");
    expect(s.inference_stats.success.count).toBe(2);
    expect(s.inference_stats.fail.count).toBe(1);
    expect(s.last_inference).toBeGreaterThan(Date.now() - 60_000);
    expect(s.last_inference).toBeLessThanOrEqual(Date.now());
    const config = await (await fetch(`${server.url}/v2/models/typed/config`))
      .json();
    expect(config.input).toEqual([
      { name: "x", data_type: "TYPE_FP64", dims: [], optional: false },
    ]);
    expect(config.max_batch_size).toBe(0);
  });
});
