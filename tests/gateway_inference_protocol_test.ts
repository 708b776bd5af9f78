// The Open Inference Protocol (KServe V2 REST) through the real gateway and
// real Python workers: health, metadata, inference (JSON and the binary
// tensor data extension), its errors in the protocol's shape.
import assert from "node:assert/strict";
import { startGateway } from "./_gateway_harness.ts";

const MODELS: Record<string, string> = {
  "typed.py": `class Typed:
    """Declared inputs and outputs."""

    inputs = {"x": "number", "v": {"type": "array", "items": "number"}, "tag": "string?"}
    outputs = {"y": "number", "n": "integer"}

    def execute(self, msg):
        return {"y": msg["x"] * 2, "n": len(msg["v"])}
`,
  "shapes.py": `class Shapes:
    """Returns what msg["kind"] asks for."""

    def execute(self, msg):
        kind = msg["kind"]
        if kind == "ragged":
            return {"r": [[1, 2], [3]]}
        if kind == "mixed":
            return {"m": [1, "a"]}
        if kind == "object":
            return {"o": [{"a": 1}]}
        if kind == "raw":
            return {"b": [b"\\xff\\x00", b"ok"]}
        if kind == "nan":
            return {"x": float("nan")}
        if kind == "single":
            return [[1.5, 2.5]]
        if kind == "big":
            return {"i": [2 ** 63 - 1, -(2 ** 63)], "u": [2 ** 64 - 1]}
        if kind == "params":
            return {"p": [sorted(msg.get("parameters", {}))]}
        return None
`,
  "tensors.py": `from pyproxy import Tensor


class Tensors:
    """Returns explicit tensors (pyproxy.Tensor) as msg["kind"] asks."""

    outputs = {"n": "integer"}

    def execute(self, msg):
        kind = msg["kind"]
        if kind == "empty":
            return {"e": Tensor([], [2, 0, 3], "FP32"), "n": Tensor([], (0, 3))}
        if kind == "single":
            return Tensor([[1, 2, 3], [4, 5, 6]], [2, 3], "INT8")
        if kind == "flat":
            return {"f": Tensor([0.5, 1, 2, 3], [2, 1, 2], "FP16"), "w": Tensor(["a"], [1, 1])}
        if kind == "ragged":
            return {"r": Tensor([[1], [2, 3, 4]], [2, 2])}
        if kind == "count":
            return {"c": Tensor([1, 2, 3], [2, 2])}
        if kind == "range":
            return {"x": Tensor([1, 300], [2], "UINT8")}
        if kind == "rounded":
            return {"s": Tensor([0.1, 1 / 3, 3.4028235e38, -2.5], [4], "FP32"), "h": Tensor([0.1, 65504, 1e-8, 1 / 3], [4], "FP16")}
        # Tensor itself refuses these shapes: dicts of its keys, as the gateway reads them.
        if kind == "vast":
            return {"v": {"datatype": None, "shape": [2 ** 31, 2 ** 31, 2 ** 31], "data": [1]}}
        if kind == "wide":
            return {"w": {"datatype": None, "shape": [2 ** 62], "data": [1]}}
        return None
`,
  "described.py": `class Described:
    """Declared outputs in dict forms: dimensions and datatypes."""

    outputs = {
        "scores": {"type": "array", "items": {"type": "number", "datatype": "FP32"}},
        "label": {"type": "string", "description": "the top class"},
    }

    def execute(self, msg):
        if msg.get("big"):
            return {"scores": [1e300]}
        if msg.get("tenth"):
            return {"scores": [0.1], "label": "tenth"}
        return {"scores": [0.25, 1, 0.5], "label": "cat"}
`,
  "sparse.py": `class Sparse:
    """Declared optional and nullable outputs, returned as None."""

    outputs = {
        "label": "string",
        "box": {"type": "array", "items": "number", "nullable": True},
        "note": "string?",
    }

    def execute(self, msg):
        out = {"label": "none found", "box": None, "note": None}
        if "label2" in msg:
            out["label2"] = None
        return out
`,
  "counter.py": `class Counter:
    """Yields its items: a streaming model."""

    def execute(self, msg):
        for i in range(3):
            yield {"i": i}
`,
  "batcher.py": `class Batcher:
    batch_size = 4
    batch_delay_ms = 5

    def execute_batch(self, msgs):
        return [{"y": [len(msgs) > 0, m["x"] > 0]} for m in msgs]
`,
  "created.py": `from pyproxy import host


class Created:
    def execute(self, msg):
        host.set_status(201)
        host.set_header("X-Item", "7")
        return {"id": 7}
`,
  "teapot.py": `from pyproxy import HTTPError


class Teapot:
    def execute(self, msg):
        raise HTTPError(418, "short and stout", headers={"Retry-After": "3"})
`,
};

const JSON_HEADERS = { "content-type": "application/json" };

Deno.test("Open Inference Protocol: health, metadata, inference and errors through the gateway", async (t) => {
  await using gw = await startGateway(
    { token: "oip-token-0123456789" },
    MODELS,
  );
  const infer = (model: string, body: unknown, headers = {}) =>
    gw.fetch(`/v2/models/${model}/infer`, {
      method: "POST",
      headers: { ...JSON_HEADERS, ...headers },
      body: JSON.stringify(body),
    });
  // `id`: the response has a request id (an infer call's error).
  const error = async (
    res: Response,
    status: number,
    pattern: RegExp,
    id = true,
  ) => {
    const body = await res.json();
    assert.equal(res.status, status, JSON.stringify(body));
    assert.deepEqual(Object.keys(body), ["error"]);
    assert.equal(typeof body.error, "string");
    assert.match(body.error, pattern);
    if (id) assert.ok(res.headers.get("x-request-id"));
  };

  await t.step("health and server metadata", async () => {
    assert.deepEqual(await (await gw.fetch("/v2/health/live")).json(), {
      live: true,
    });
    const ready = await gw.fetch("/v2/health/ready");
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { ready: true });
    const meta = await (await gw.fetch("/v2")).json();
    assert.equal(meta.name, "pyproxy");
    assert.equal(typeof meta.version, "string");
    assert.deepEqual(meta.extensions, [
      "binary_tensor_data",
      "classification",
      "statistics",
      "model_configuration",
    ]);
  });

  await t.step(
    "the token is required, and its refusal is in the protocol's shape",
    async () => {
      const res = await fetch(`${gw.url}/v2/models/echo/infer`, {
        method: "POST",
        body: "{}",
      });
      await error(res, 401, /bearer token/, false);
      await error(
        await fetch(`${gw.url}/v2/health/ready`),
        401,
        /bearer token/,
        false,
      );
    },
  );

  await t.step(
    "model metadata and readiness, with and without the version",
    async () => {
      const meta = await (await gw.fetch("/v2/models/typed")).json();
      assert.deepEqual(meta, {
        name: "typed",
        versions: ["1"],
        platform: "pyproxy",
        inputs: [
          { name: "x", datatype: "FP64", shape: [] },
          { name: "v", datatype: "FP64", shape: [-1] },
          { name: "tag", datatype: "BYTES", shape: [] },
        ],
        outputs: [
          { name: "y", datatype: "FP64", shape: [] },
          { name: "n", datatype: "INT64", shape: [] },
        ],
      });
      assert.deepEqual(
        await (await gw.fetch("/v2/models/typed/versions/1")).json(),
        meta,
      );
      const echo = await (await gw.fetch("/v2/models/echo")).json();
      assert.deepEqual([echo.inputs, echo.outputs], [[], []]);
      const ready = await gw.fetch("/v2/models/typed/versions/1/ready");
      assert.equal(ready.status, 200);
      assert.deepEqual(await ready.json(), { name: "typed", ready: true });
      await error(
        await gw.fetch("/v2/models/nope"),
        404,
        /Cannot find model "nope"/,
        false,
      );
      await error(
        await gw.fetch("/v2/models/nope/ready"),
        404,
        /Cannot find model/,
        false,
      );
      await error(
        await gw.fetch("/v2/models/typed/versions/7"),
        404,
        /version "7": its version is 1/,
        false,
      );
    },
  );

  await t.step(
    "INT64, FP32, BOOL and BYTES tensors, multi-dimensional, with the id echoed",
    async () => {
      const res = await infer("echo", {
        id: "req-1",
        inputs: [
          {
            name: "ints",
            datatype: "INT64",
            shape: [2, 3],
            data: [1, 2, 3, 4, 5, 6],
          },
          {
            name: "floats",
            datatype: "FP32",
            shape: [2, 1],
            data: [[1.5], [-2.25]],
          },
          {
            name: "flags",
            datatype: "BOOL",
            shape: [1, 2, 1],
            data: [true, false],
          },
          { name: "words", datatype: "BYTES", shape: [2], data: ["héllo", ""] },
          { name: "scalar", datatype: "INT8", shape: [], data: [-128] },
          { name: "empty", datatype: "FP64", shape: [0, 3], data: [] },
          // Two nested lists per element: within the bound.
          {
            name: "column",
            datatype: "INT32",
            shape: [3, 1, 1],
            data: [7, 8, 9],
          },
        ],
      });
      assert.equal(res.status, 200);
      const body = await res.json();
      assert.equal(body.model_name, "echo");
      assert.equal(body.model_version, "1");
      assert.equal(body.id, "req-1");
      assert.deepEqual(body.outputs, [
        {
          name: "ints",
          datatype: "INT64",
          shape: [2, 3],
          data: [1, 2, 3, 4, 5, 6],
        },
        {
          name: "floats",
          datatype: "FP64",
          shape: [2, 1],
          data: [1.5, -2.25],
        },
        {
          name: "flags",
          datatype: "BOOL",
          shape: [1, 2, 1],
          data: [true, false],
        },
        { name: "words", datatype: "BYTES", shape: [2], data: ["héllo", ""] },
        { name: "scalar", datatype: "INT64", shape: [], data: [-128] },
        { name: "empty", datatype: "FP64", shape: [0], data: [] },
        {
          name: "column",
          datatype: "INT64",
          shape: [3, 1, 1],
          data: [7, 8, 9],
        },
      ]);
    },
  );

  await t.step(
    "the outputs asked for, declared types, scalars of declared inputs",
    async () => {
      const res = await gw.fetch("/v2/models/typed/versions/1/infer", {
        method: "POST",
        body: JSON.stringify({
          inputs: [
            { name: "x", datatype: "FP32", shape: [1], data: [2] },
            { name: "v", datatype: "FP64", shape: [3], data: [1, 2, 3] },
          ],
          outputs: [{ name: "y" }],
        }),
      });
      const body = await res.json();
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.deepEqual(body.outputs, [
        { name: "y", datatype: "FP64", shape: [], data: [4] },
      ]);
      // The declared inputs still apply to the reshaped dict.
      await error(
        await infer("typed", {
          inputs: [{ name: "x", datatype: "BYTES", shape: [1], data: ["2"] }],
        }),
        400,
        /x: expected a number; v: is required/,
      );
      await error(
        await infer("typed", {
          inputs: [
            { name: "x", datatype: "FP64", shape: [1], data: [2] },
            { name: "v", datatype: "FP64", shape: [1], data: [2] },
          ],
          outputs: [{ name: "z" }],
        }),
        400,
        /model 'typed' has no output "z"/,
      );
      await error(
        await infer("echo", {
          inputs: [{ name: "a", datatype: "FP64", shape: [1], data: [2] }],
          outputs: [{ name: "b" }],
        }),
        400,
        /model 'echo' has no output "b"/,
      );
    },
  );

  await t.step(
    "a model's results: one value, big integers, parameters",
    async () => {
      const one = await (await infer("shapes", {
        inputs: [{
          name: "kind",
          datatype: "BYTES",
          shape: [],
          data: ["single"],
        }],
      })).json();
      assert.deepEqual(one.outputs, [
        { name: "output0", datatype: "FP64", shape: [1, 2], data: [1.5, 2.5] },
      ]);
      const big = await (await infer("shapes", {
        inputs: [{ name: "kind", datatype: "BYTES", shape: [], data: ["big"] }],
      })).text();
      assert.match(big, /"data":\[9223372036854775807,-9223372036854775808\]/);
      assert.match(
        big,
        /"datatype":"UINT64","shape":\[1\],"data":\[18446744073709551615\]/,
      );
      const params = await (await infer("shapes", {
        parameters: { temperature: 0.5, binary_data_output: false },
        inputs: [{
          name: "kind",
          datatype: "BYTES",
          shape: [],
          data: ["params"],
        }],
      })).json();
      assert.deepEqual(params.outputs[0].data, ["temperature"]);
    },
  );

  await t.step(
    "requests refused before the call, each with a 400 naming the problem",
    async () => {
      const cases: Array<[unknown, RegExp]> = [
        [{
          inputs: [{
            name: "a",
            datatype: "FP32",
            shape: [2, 2],
            data: [1, 2, 3],
          }],
        }, /shape \[2,2\] holds 4 elements, and data has 3/],
        [
          { inputs: [{ name: "a", datatype: "FP33", shape: [1], data: [1] }] },
          /datatype "FP33" is not one of BOOL/,
        ],
        [
          {
            inputs: [{ name: "a", datatype: "INT8", shape: [1], data: [128] }],
          },
          /data\[0\]: 128 is out of range of INT8/,
        ],
        [
          {
            inputs: [{ name: "a", datatype: "UINT8", shape: [1], data: [-1] }],
          },
          /-1 is out of range of UINT8/,
        ],
        [{
          inputs: [{ name: "a", datatype: "INT32", shape: [1], data: [1.5] }],
        }, /expected an integer/],
        [
          { inputs: [{ name: "a", datatype: "BOOL", shape: [1], data: [1] }] },
          /expected a boolean/,
        ],
        [{
          inputs: [{ name: "a", datatype: "FP16", shape: [1], data: [70000] }],
        }, /out of range of FP16/],
        [{
          inputs: [{
            name: "a",
            datatype: "FP32",
            shape: [2, 2],
            data: [[1, 2], [3]],
          }],
        }, /data\[1\] has 1 item, and dimension 1 of shape \[2,2\] is 2/],
        [
          { inputs: [{ name: "a", datatype: "FP32", shape: [1], data: "1" }] },
          /data: expected an array/,
        ],
        [
          { inputs: [{ name: "a", datatype: "FP32", shape: [-1], data: [1] }] },
          /shape expected an array of integers >= 0, got -1/,
        ],
        [
          {
            inputs: [{ name: "a", datatype: "FP32", shape: [1.5], data: [1] }],
          },
          /got 1.5/,
        ],
        [{
          inputs: [{
            name: "a",
            datatype: "FP32",
            shape: [10000000],
            data: [1],
          }],
        }, /holds 10000000 elements, and data has 1/],
        [{
          inputs: [{
            name: "a",
            datatype: "FP32",
            shape: [1e6, 1e6, 1e6],
            data: [],
          }],
        }, /more than 2\^53 elements/],
        [{
          inputs: [{
            name: "a",
            datatype: "FP32",
            shape: [1000000000, 0],
            data: [],
          }],
        }, /would make 1000000000 nested lists for its 0 elements/],
        // A shape of ones makes lists the elements do not pay for: 12.6
        // million for 200000 elements held the gateway's thread for seconds.
        [
          {
            inputs: [{
              name: "a",
              datatype: "UINT8",
              shape: [1000, ...new Array(63).fill(1)],
              data: new Array(1000).fill(1),
            }],
          },
          /would make 63000 nested lists for its 1000 elements \(at most 2 per element/,
        ],
        [{
          inputs: [{
            name: "a",
            datatype: "UINT8",
            shape: [1000, 1, 1, 1],
            data: new Array(1000).fill(1),
          }],
        }, /would make 3000 nested lists for its 1000 elements/],
        [{
          inputs: [{ name: "a", datatype: "FP32", shape: [1], data: [1] }, {
            name: "a",
            datatype: "FP32",
            shape: [1],
            data: [1],
          }],
        }, /input "a" is given twice/],
        [{
          inputs: [{
            name: "a",
            datatype: "FP32",
            shape: [1],
            data: [{ x: 1 }],
          }],
        }, /expected a number/],
        [{ inputs: "a" }, /inputs: expected an array/],
        [[1], /expected an object/],
      ];
      for (const [body, pattern] of cases) {
        await error(await infer("echo", body), 400, pattern);
      }
      // NaN cannot come in JSON: the body is not JSON.
      const nan = await gw.fetch("/v2/models/echo/infer", {
        method: "POST",
        body:
          '{"inputs":[{"name":"a","datatype":"FP32","shape":[1],"data":[NaN]}]}',
      });
      await error(nan, 400, /JSON/);
      // A float past 2^53 in an integer tensor is checked by its exact
      // value: 9223372036854775807.0 is 2^63, past INT64 (it passed, as
      // 2^63 - 1 is 2^63 as a number).
      const raw = (datatype: string, element: string) =>
        gw.fetch("/v2/models/echo/infer", {
          method: "POST",
          body:
            `{"inputs":[{"name":"a","datatype":"${datatype}","shape":[1],"data":[${element}]}]}`,
        });
      await error(
        await raw("INT64", "9223372036854775807.0"),
        400,
        /data\[0\]: 9223372036854775808 is out of range of INT64/,
      );
      await error(
        await raw("UINT64", "1.8446744073709552e19"),
        400,
        /18446744073709551616 is out of range of UINT64/,
      );
      await error(await raw("FP32", "3.5e38"), 400, /out of range of FP32/);
      // float32's largest value as numpy prints it is in range.
      const max = await raw("FP32", "3.4028235e38");
      assert.equal(max.status, 200, await max.clone().text());
      assert.deepEqual((await max.json()).outputs[0].data, [3.4028235e38]);
    },
  );

  await t.step(
    "explicit tensors (pyproxy.Tensor): the shape and datatype the model gives, checked",
    async () => {
      const kind = (k: string) => ({
        inputs: [{ name: "kind", datatype: "BYTES", shape: [], data: [k] }],
      });
      const empty = await (await infer("tensors", kind("empty"))).json();
      assert.deepEqual(empty.outputs, [
        { name: "e", datatype: "FP32", shape: [2, 0, 3], data: [] },
        // Its datatype from the declared outputs ("integer").
        { name: "n", datatype: "INT64", shape: [0, 3], data: [] },
      ]);
      const single = await (await infer("tensors", kind("single"))).json();
      assert.deepEqual(single.outputs, [
        {
          name: "output0",
          datatype: "INT8",
          shape: [2, 3],
          data: [1, 2, 3, 4, 5, 6],
        },
      ]);
      // Flat data, and as binary data in its own datatype's bytes.
      const res = await infer("tensors", {
        ...kind("flat"),
        parameters: { binary_data_output: true },
      });
      const bytes = new Uint8Array(await res.arrayBuffer());
      assert.equal(res.status, 200, new TextDecoder().decode(bytes));
      const length = Number(res.headers.get("inference-header-content-length"));
      const header = JSON.parse(
        new TextDecoder().decode(bytes.subarray(0, length)),
      );
      assert.deepEqual(header.outputs, [
        {
          name: "f",
          datatype: "FP16",
          shape: [2, 1, 2],
          parameters: { binary_data_size: 8 },
        },
        {
          name: "w",
          datatype: "BYTES",
          shape: [1, 1],
          parameters: { binary_data_size: 5 },
        },
      ]);
      assert.equal(bytes.byteLength, length + 13);
      // /v1 answers the Tensor as the dict it is.
      const v1 = await gw.fetch("/v1/models/tensors/execute", {
        method: "POST",
        body: JSON.stringify({ kind: "empty" }),
      });
      assert.deepEqual((await v1.json()).e, {
        datatype: "FP32",
        shape: [2, 0, 3],
        data: [],
      });
      await error(
        await infer("tensors", kind("ragged")),
        500,
        /a Tensor for output "r" whose data\[0\] has 1 item, and dimension 1 of shape \[2,2\] is 2/,
      );
      await error(
        await infer("tensors", kind("count")),
        500,
        /a Tensor for output "c" whose shape \[2,2\] holds 4 elements, and its data 3/,
      );
      await error(
        await infer("tensors", kind("range")),
        500,
        /output "x" that is a Tensor of datatype UINT8 whose element 1: 300 is out of range of UINT8/,
      );
      // Shapes past 2^53 elements, or a dimension past 2^53, said so.
      await error(
        await infer("tensors", kind("vast")),
        500,
        /a Tensor for output "v" whose shape \[2147483648,2147483648,2147483648\] holds more than 2\^53 elements, and its data 1$/,
      );
      await error(
        await infer("tensors", kind("wide")),
        500,
        /a Tensor for output "w" whose shape has dimension 4611686018427387904, beyond 2\^53$/,
      );
    },
  );

  await t.step(
    "FP32 and FP16 outputs in JSON: their values as the datatype holds them (as Triton answers, and as their binary bytes are)",
    async () => {
      const kind = {
        inputs: [{
          name: "kind",
          datatype: "BYTES",
          shape: [],
          data: [
            "rounded",
          ],
        }],
      };
      const json = await (await infer("tensors", kind)).json();
      const fp32 = [
        0.10000000149011612,
        0.3333333432674408,
        3.4028234663852886e38,
        -2.5,
      ];
      // Half precision: 0.1 is 0.0999755859375, 1e-8 under its smallest
      // subnormal (2^-24) is 0, 1/3 is 0.333251953125.
      const fp16 = [0.0999755859375, 65504, 0, 0.333251953125];
      assert.deepEqual(json.outputs, [
        { name: "s", datatype: "FP32", shape: [4], data: fp32 },
        { name: "h", datatype: "FP16", shape: [4], data: fp16 },
      ]);
      // The same values as the binary form's bytes decode to.
      const res = await infer("tensors", {
        ...kind,
        parameters: { binary_data_output: true },
      });
      const bytes = new Uint8Array(await res.arrayBuffer());
      const length = Number(res.headers.get("inference-header-content-length"));
      const body = bytes.slice(length);
      assert.deepEqual([...new Float32Array(body.buffer, 0, 4)], fp32);
      const halves = new DataView(body.buffer, 16, 8);
      assert.deepEqual(
        [0, 1, 2, 3].map((i) => halfValue(halves.getUint16(i * 2, true))),
        fp16,
      );
      // A declared FP32 output too; /v1 answers the model's own doubles.
      const declared = await (await infer("described", {
        inputs: [{ name: "tenth", datatype: "BOOL", shape: [], data: [true] }],
      })).json();
      assert.deepEqual(declared.outputs[0].data, [0.10000000149011612]);
      const v1 = await gw.fetch("/v1/models/described/execute", {
        method: "POST",
        body: JSON.stringify({ tenth: true }),
      });
      assert.deepEqual((await v1.json()).scores, [0.1]);
    },
  );

  await t.step(
    "declared outputs in dict forms: their dimensions and datatype in the metadata, the datatype in the answer",
    async () => {
      const meta = await (await gw.fetch("/v2/models/described")).json();
      assert.deepEqual(meta.outputs, [
        { name: "scores", datatype: "FP32", shape: [-1] },
        { name: "label", datatype: "BYTES", shape: [] },
      ]);
      const res = await infer("described", {
        inputs: [],
        outputs: [{ name: "scores", parameters: { binary_data: true } }, {
          name: "label",
        }],
      });
      assert.equal(res.status, 200);
      const bytes = new Uint8Array(await res.arrayBuffer());
      const length = Number(res.headers.get("inference-header-content-length"));
      assert.deepEqual(
        JSON.parse(new TextDecoder().decode(bytes.subarray(0, length))).outputs,
        [
          {
            name: "scores",
            datatype: "FP32",
            shape: [3],
            parameters: { binary_data_size: 12 },
          },
          { name: "label", datatype: "BYTES", shape: [], data: ["cat"] },
        ],
      );
      assert.deepEqual(
        [...new Float32Array(bytes.slice(length).buffer)],
        [0.25, 1, 0.5],
      );
      await error(
        await infer("described", {
          inputs: [{ name: "big", datatype: "BOOL", shape: [], data: [true] }],
        }),
        500,
        /output "scores" that is declared FP32 and holds 1e\+300/,
      );
    },
  );

  await t.step(
    "an output declared optional or nullable that the model returns as None is left out, as an optional input sent as null counts as absent",
    async () => {
      const res = await infer("sparse", { inputs: [] });
      assert.equal(res.status, 200);
      assert.deepEqual((await res.json()).outputs, [
        { name: "label", datatype: "BYTES", shape: [], data: ["none found"] },
      ]);
      // Asked for by name: the result does not have it.
      await error(
        await infer("sparse", { inputs: [], outputs: [{ name: "box" }] }),
        400,
        /model 'sparse' has no output "box"/,
      );
      // None for an output not declared so is still not a tensor.
      await error(
        await infer("sparse", {
          inputs: [{
            name: "label2",
            datatype: "BYTES",
            shape: [],
            data: ["x"],
          }],
        }),
        500,
        /output "label2" that holds null/,
      );
    },
  );

  await t.step(
    "nested data must nest as its shape; a streaming model and output parameters are refused; a body that is not JSON gets the protocol's hint",
    async () => {
      await error(
        await infer("echo", {
          inputs: [{
            name: "a",
            datatype: "INT32",
            shape: [2, 2],
            data: [[1], [2, 3, 4]],
          }],
        }),
        400,
        /input "a": data\[0\] has 1 item, and dimension 1 of shape \[2,2\] is 2/,
      );
      await error(
        await infer("counter", { inputs: [] }),
        400,
        /model "counter" streams its results .* POST \/v1\/models\/counter\/stream/,
      );
      await error(
        await infer("echo", {
          inputs: [{ name: "a", datatype: "FP64", shape: [1], data: [1] }],
          outputs: [{ name: "a", parameters: { top_k: 3 } }],
        }),
        400,
        /output "a": parameter "top_k" is not supported \(an output takes binary_data and classification\)/,
      );
      // null is absent, as elsewhere in the protocol's bodies.
      const ok = await infer("echo", {
        inputs: [{ name: "a", datatype: "FP64", shape: [1], data: [1] }],
        outputs: [{
          name: "a",
          parameters: { binary_data: false, classification: null },
        }],
      });
      assert.equal(ok.status, 200);
      await ok.body?.cancel();
      const text = await gw.fetch("/v2/models/echo/infer", {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: "hello",
      });
      const message = (await text.json()).error as string;
      assert.equal(text.status, 400);
      assert.match(message, /Inference-Header-Content-Length/);
      assert.doesNotMatch(message, /execute and stream/);
    },
  );

  await t.step(
    "a success is a 200 whatever status the model chose, with its headers",
    async () => {
      const res = await infer("created", { inputs: [] });
      const body = await res.json();
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.equal(res.headers.get("x-item"), "7");
      assert.deepEqual(body.outputs, [
        { name: "id", datatype: "INT64", shape: [], data: [7] },
      ]);
      // /v1 answers what the model chose.
      const v1 = await gw.fetch("/v1/models/created/execute", {
        method: "POST",
        body: "{}",
      });
      await v1.body?.cancel();
      assert.equal(v1.status, 201);
      assert.equal(v1.headers.get("x-item"), "7");
    },
  );

  await t.step(
    "unknown models and versions are 404s; other methods 405s",
    async () => {
      await error(
        await infer("nope", { inputs: [] }, { "x-request-id": "mine-1" }),
        404,
        /Cannot find model "nope"/,
      );
      const versioned = await gw.fetch("/v2/models/echo/versions/2/infer", {
        method: "POST",
        body: JSON.stringify({ inputs: [] }),
        headers: { "x-request-id": "mine-2" },
      });
      assert.equal(versioned.headers.get("x-request-id"), "mine-2");
      await error(versioned, 404, /version "2": its version is 1/);
      await error(
        await gw.fetch("/v2/models/echo/infer"),
        405,
        /allowed: POST/,
        false,
      );
      await error(
        await gw.fetch("/v2/nothing"),
        404,
        /Cannot find route/,
        false,
      );
    },
  );

  await t.step(
    "model failures: an exception is a 422, an HTTPError its status, a bad result a 500",
    async () => {
      const kind = (k: string) => ({
        inputs: [{ name: "kind", datatype: "BYTES", shape: [], data: [k] }],
      });
      await error(await infer("boom", { inputs: [] }), 422, /bad input/);
      const teapot = await infer("teapot", { inputs: [] });
      assert.equal(teapot.headers.get("retry-after"), "3");
      await error(teapot, 418, /^short and stout$/);
      await error(
        await infer("shapes", kind("ragged")),
        500,
        /ragged lists for output "r"/,
      );
      await error(
        await infer("shapes", kind("mixed")),
        500,
        /output "m" that mixes/,
      );
      await error(
        await infer("shapes", kind("object")),
        500,
        /output "o" that holds an object/,
      );
      await error(
        await infer("shapes", kind("raw")),
        500,
        /not UTF-8 in output "b"/,
      );
      await error(await infer("shapes", kind("nan")), 422, /nan|NaN/i);
    },
  );

  await t.step(
    "the binary tensor data extension, as tritonclient sends it by default",
    async () => {
      const floats = new Float32Array([1.5, -2, 0.25, 4]);
      const ints = new BigInt64Array([2n ** 60n, -3n]);
      const words = bytesElements(["héllo", new Uint8Array([0xff, 0])]);
      const half = new Uint16Array([0x3c00, 0xc000]); // 1, -2 in FP16
      const { body, headerLength } = binaryBody({
        id: "bin-1",
        // No outputs listed: tritonclient then asks for all as binary data.
        parameters: { binary_data_output: true },
        inputs: [
          binaryInput("floats", "FP32", [2, 2], floats),
          binaryInput("ints", "INT64", [2], ints),
          binaryInput("words", "BYTES", [2], words),
          binaryInput("half", "FP16", [2], half),
          { name: "flags", datatype: "BOOL", shape: [1], data: [true] },
        ],
      }, [floats, ints, words, half]);
      const res = await gw.fetch("/v2/models/echo/infer", {
        method: "POST",
        headers: {
          "content-type": "application/octet-stream",
          "inference-header-content-length": String(headerLength),
        },
        body,
      });
      assert.equal(res.status, 200);
      const bytes = new Uint8Array(await res.arrayBuffer());
      const length = Number(res.headers.get("inference-header-content-length"));
      const header = JSON.parse(
        new TextDecoder().decode(bytes.subarray(0, length)),
      );
      assert.equal(header.id, "bin-1");
      const tensors = splitBinary(header.outputs, bytes.subarray(length));
      const view = (name: string) => {
        const t = tensors.get(name)!;
        return new DataView(t.buffer, t.byteOffset, t.byteLength);
      };
      assert.deepEqual(
        header.outputs.map((
          o: { name: string; datatype: string; shape: number[] },
        ) => [o.name, o.datatype, o.shape]),
        [
          ["floats", "FP64", [2, 2]],
          ["ints", "INT64", [2]],
          ["words", "BYTES", [2]],
          ["half", "INT64", [2]],
          ["flags", "BOOL", [1]],
        ],
      );
      assert.deepEqual(
        [0, 1, 2, 3].map((i) => view("floats").getFloat64(i * 8, true)),
        [1.5, -2, 0.25, 4],
      );
      assert.deepEqual(
        [0, 1].map((i) => view("ints").getBigInt64(i * 8, true)),
        [2n ** 60n, -3n],
      );
      assert.deepEqual(
        tensors.get("words"),
        bytesElements(["héllo", new Uint8Array([0xff, 0])]),
      );
      assert.deepEqual(
        [0, 1].map((i) => view("half").getBigInt64(i * 8, true)),
        [1n, -2n],
      );
      assert.deepEqual([...tensors.get("flags")!], [1]);

      // One output as JSON beside a binary one.
      const mixed = binaryBody({
        inputs: [binaryInput("floats", "FP32", [4], floats)],
        outputs: [{ name: "floats", parameters: { binary_data: false } }],
      }, [floats]);
      const json = await gw.fetch("/v2/models/echo/infer", {
        method: "POST",
        headers: {
          "inference-header-content-length": String(mixed.headerLength),
        },
        body: mixed.body,
      });
      assert.equal(json.headers.get("inference-header-content-length"), null);
      assert.deepEqual((await json.json()).outputs[0].data, [1.5, -2, 0.25, 4]);
    },
  );

  await t.step(
    "binary data that does not fit its tensor is a 400",
    async () => {
      const send = (
        header: unknown,
        tensors: ArrayBufferView[],
        length?: number,
      ) => {
        const { body, headerLength } = binaryBody(header, tensors);
        return gw.fetch("/v2/models/echo/infer", {
          method: "POST",
          headers: {
            "inference-header-content-length": String(length ?? headerLength),
          },
          body,
        });
      };
      const four = new Float32Array([1, 2, 3, 4]);
      await error(
        await send({ inputs: [binaryInput("a", "FP32", [3], four)] }, [four]),
        400,
        /has 16 bytes of binary data, and 3 elements of FP32 take 12/,
      );
      await error(
        await send({ inputs: [binaryInput("a", "FP32", [1e9], four)] }, [four]),
        400,
        /holds 1000000000 elements, more than its 16 bytes/,
      );
      await error(
        await send({ inputs: [binaryInput("a", "FP32", [4], four)] }, [
          four,
          four,
        ]),
        400,
        /the binary data has 32 bytes, and the inputs' binary_data_size add up to 16/,
      );
      const nan = new Float32Array([NaN]);
      await error(
        await send({ inputs: [binaryInput("a", "FP32", [1], nan)] }, [nan]),
        400,
        /element 0 is NaN \(JSON, which carries the tensor to the model, has no NaN/,
      );
      const cut = new Uint8Array([5, 0, 0, 0, 65]);
      await error(
        await send({ inputs: [binaryInput("a", "BYTES", [1], cut)] }, [cut]),
        400,
        /BYTES element of 5 bytes past the end/,
      );
      const two = new Uint8Array([2]);
      await error(
        await send({ inputs: [binaryInput("a", "BOOL", [1], two)] }, [two]),
        400,
        /the byte 2, not a BOOL/,
      );
      await error(
        await send(
          { inputs: [binaryInput("a", "FP32", [4], four)] },
          [four],
          1e6,
        ),
        400,
        /inference-header-content-length "1000000" is not a length within/,
      );
      await error(
        await infer("echo", { inputs: [binaryInput("a", "FP32", [4], four)] }),
        400,
        /binary_data_size without binary data/,
      );
    },
  );

  await t.step(
    "a batching model takes each infer request as one message",
    async () => {
      const results = await Promise.all([1, -1, 2].map(async (x) => {
        const res = await infer("batcher", {
          inputs: [{ name: "x", datatype: "INT32", shape: [], data: [x] }],
        });
        assert.equal(res.status, 200);
        return (await res.json()).outputs;
      }));
      assert.deepEqual(results.map((o) => o[0].data), [
        [true, true],
        [true, false],
        [true, true],
      ]);
      assert.equal(results[0][0].datatype, "BOOL");
    },
  );
});

Deno.test("Open Inference Protocol: a page of a CORS origin may send and read binary tensors", async () => {
  const origin = "http://app.example";
  await using gw = await startGateway({ cors: { origins: [origin] } });
  // The browser's preflight for a binary request: its header must be allowed.
  const preflight = await gw.fetch("/v2/models/echo/infer", {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers":
        "content-type,inference-header-content-length",
    },
  });
  await preflight.body?.cancel();
  assert.equal(preflight.status, 204);
  const allowed = preflight.headers.get("access-control-allow-headers")!
    .split(",");
  assert.ok(
    allowed.includes("inference-header-content-length"),
    allowed.join(","),
  );
  // A binary response: the page reads its header to split JSON and tensors.
  const ints = new Int32Array([7, -7]);
  const { body, headerLength } = binaryBody({
    inputs: [binaryInput("a", "INT32", [2], ints)],
    parameters: { binary_data_output: true },
  }, [ints]);
  const res = await gw.fetch("/v2/models/echo/infer", {
    method: "POST",
    headers: {
      origin,
      "content-type": "application/octet-stream",
      "inference-header-content-length": String(headerLength),
    },
    body,
  });
  await res.body?.cancel();
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("access-control-allow-origin"), origin);
  const exposed = res.headers.get("access-control-expose-headers")!.split(",");
  assert.ok(
    exposed.includes("inference-header-content-length"),
    exposed.join(","),
  );
});

/** An input whose data comes as binary. */
function binaryInput(
  name: string,
  datatype: string,
  shape: number[],
  data: ArrayBufferView,
): Record<string, unknown> {
  return {
    name,
    datatype,
    shape,
    parameters: { binary_data_size: data.byteLength },
  };
}

/** A request body of the binary extension: the JSON header, then the tensors' bytes. */
function binaryBody(
  header: unknown,
  tensors: ArrayBufferView[],
): { body: Uint8Array<ArrayBuffer>; headerLength: number } {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const parts = [
    json,
    ...tensors.map((t) => new Uint8Array(t.buffer, t.byteOffset, t.byteLength)),
  ];
  const body = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    body.set(p, at);
    at += p.byteLength;
  }
  return { body, headerLength: json.byteLength };
}

/** BYTES elements in binary form: each a 4-byte little-endian length, then its bytes. */
function bytesElements(items: Array<string | Uint8Array>): Uint8Array {
  const parts = items.map((i) =>
    typeof i === "string" ? new TextEncoder().encode(i) : i
  );
  const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.byteLength, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const p of parts) {
    view.setUint32(at, p.byteLength, true);
    out.set(p, at + 4);
    at += 4 + p.byteLength;
  }
  return out;
}

/** The binary outputs of a response by name, cut by their binary_data_size. */
function splitBinary(
  outputs: Array<{ name: string; parameters?: { binary_data_size?: number } }>,
  bytes: Uint8Array,
): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  let at = 0;
  for (const o of outputs) {
    const size = o.parameters?.binary_data_size;
    if (size === undefined) continue;
    out.set(o.name, bytes.slice(at, at + size));
    at += size;
  }
  assert.equal(at, bytes.byteLength);
  return out;
}

Deno.test("Open Inference Protocol: an infer call's response has the headers the model set (host.set_header), and stays a 200 whatever status it set", async () => {
  await using gw = await startGateway({}, {
    "created.py": `from pyproxy import host


class Created:
    outputs = {"id": "integer"}

    def execute(self, msg):
        host.set_status(201)
        host.set_header("Location", "/items/7")
        host.set_header("X-Trace", "t-1")
        host.set_header("Set-Cookie", "a=1")
        return {"id": 7}
`,
  });
  // tritonclient takes any answer but a 200 for an error: the 201 is /v1's.
  const v1 = await gw.fetch("/v1/models/created/execute", {
    method: "POST",
    body: "{}",
  });
  assert.equal(v1.status, 201);
  await v1.body?.cancel();
  for (const parameters of [undefined, { binary_data_output: true }]) {
    const res = await gw.fetch("/v2/models/created/infer", {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify({
        inputs: [],
        ...(parameters ? { parameters } : {}),
      }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("location"), "/items/7");
    assert.equal(res.headers.get("x-trace"), "t-1");
    // Refused as on /v1 (logged, with the response's request id).
    assert.equal(res.headers.get("set-cookie"), null);
    assert.ok(res.headers.get("x-request-id"));
    const text = new TextDecoder().decode(await res.arrayBuffer());
    assert.match(text, /"model_name":"created"/);
    assert.equal(
      res.headers.get("content-type"),
      parameters ? "application/octet-stream" : "application/json",
    );
  }
});

/** The value of IEEE 754 half-precision bits. */
function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}
