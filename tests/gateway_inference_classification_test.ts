// The Open Inference Protocol's classification extension through the real
// gateway and real Python workers: an output asked for with
// "parameters": {"classification": n} comes back as its top n classes.
import assert from "node:assert/strict";
import {
  startGateway,
  statusOf,
  type TestGateway,
  until,
} from "./_gateway_harness.ts";

const MODELS: Record<string, string> = {
  "labeled.py": `class Labeled:
    """Answers its input x as the scores of four labelled classes."""

    outputs = {
        "probs": {
            "type": "array",
            "items": {"type": "number", "datatype": "FP32"},
            "labels": ["cat", "dog", "bird", "fish"],
        },
    }

    def execute(self, msg):
        return {"probs": msg["x"]}
`,
  "scores.py": `class Scores:
    """Answers its input x as scores (no labels), and non-numeric outputs."""

    def execute(self, msg):
        n = msg.get("n")
        if n is not None:
            many = {"many": [(i * 7919) % 1000003 for i in range(n)]}
            return {**many, "x": msg["x"]} if "x" in msg else many
        return {"x": msg["x"], "flags": [True, False], "names": ["a", "b"]}
`,
  "longlabels.py": `class LongLabels:
    """Labels of 1000 characters each, 2000 of them (2 MB: over the body limit)."""

    outputs = {
        "probs": {
            "type": "array",
            "items": "number",
            "labels": [("%04d" % i) * 250 for i in range(2000)],
        },
    }

    def execute(self, msg):
        return {"probs": [i / 2000 for i in range(2000)]}
`,
};

type Gw = { fetch(path: string, init?: RequestInit): Promise<Response> };

function infer(gw: Gw, model: string, body: unknown): Promise<Response> {
  return gw.fetch(`/v2/models/${model}/infer`, {
    method: "POST",
    body: JSON.stringify(body),
  });
}

const input = (data: unknown[], shape: number[], datatype = "FP32") => ({
  inputs: [{ name: "x", datatype, shape, data }],
});

async function output(res: Response, name: string) {
  assert.equal(res.status, 200);
  const body = await res.json();
  return body.outputs.find((o: { name: string }) => o.name === name);
}

// Steps on one gateway started as `startGateway({}, MODELS)`: each of these
// tests started its own (a gateway and its Python worker) and needs no fresh
// one.
Deno.test("Classification extension, on one gateway", async (t) => {
  await using gw = await startGateway({}, MODELS);
  await t.step(
    "Classification extension: top n classes with and without labels, batch rows, ties, n beyond the classes",
    () => classificationExtensionTopNClasses(gw),
  );
  await t.step(
    "Classification extension: a bad n, and outputs that are not numbers, are 400s",
    () => classificationExtensionBadNAnd(gw),
  );
  await t.step(
    "Classification extension: as binary data (tritonclient's default), BYTES with 4-byte length prefixes",
    () => classificationExtensionAsBinaryData(gw),
  );
  await t.step(
    "Classification extension: labels beyond the body limit, 65536 classes answered at most per request (10^5 asked for: a 400 naming the limit)",
    () => classificationExtensionLabelsBeyondBody(gw),
  );
});

/** A step of "Classification extension, on one gateway": Classification extension: top n classes with and without labels, batch rows, ties, n beyond the classes */
async function classificationExtensionTopNClasses(
  gw: TestGateway,
): Promise<void> {
  // Triton's own example: [1.1, 3.3, 0.5, 2.4], top 2.
  const asked = (n: unknown, name = "probs") => [{
    name,
    parameters: { classification: n },
  }];
  assert.deepEqual(
    await output(
      await infer(gw, "scores", {
        ...input([1.1, 3.3, 0.5, 2.4], [4]),
        outputs: asked(2, "x"),
      }),
      "x",
    ),
    {
      name: "x",
      datatype: "BYTES",
      shape: [2],
      data: ["3.300000:1", "2.400000:3"],
    },
  );
  // With the declared labels (FP32, as the model declares it).
  assert.deepEqual(
    (await output(
      await infer(gw, "labeled", {
        ...input([1.1, 3.3, 0.5, 2.4], [4]),
        outputs: asked(3),
      }),
      "probs",
    )).data,
    ["3.300000:1:dog", "2.400000:3:fish", "1.100000:0:cat"],
  );
  // A batch: [2, 4] gives [2, n], each row ranked alone; ties by index.
  assert.deepEqual(
    await output(
      await infer(gw, "labeled", {
        ...input([0.1, 0.7, 0.1, 0.1, 5, 5, 1, 5], [2, 4]),
        outputs: asked(2),
      }),
      "probs",
    ),
    {
      name: "probs",
      datatype: "BYTES",
      shape: [2, 2],
      data: [
        "0.700000:1:dog",
        "0.100000:0:cat",
        "5.000000:0:cat",
        "5.000000:1:dog",
      ],
    },
  );
  // Integers as they are; n beyond the classes: all of them.
  assert.deepEqual(
    await output(
      await infer(gw, "scores", {
        ...input([1, 5, 10, 4], [4], "INT32"),
        outputs: asked(100, "x"),
      }),
      "x",
    ),
    {
      name: "x",
      datatype: "BYTES",
      shape: [4],
      data: ["10:2", "5:1", "4:3", "1:0"],
    },
  );
  // Other outputs of the same call as they are.
  const res = await infer(gw, "scores", {
    ...input([1, 2], [2], "INT32"),
    outputs: [...asked(1, "x"), { name: "flags" }],
  });
  const body = await res.json();
  assert.deepEqual(body.outputs, [
    { name: "x", datatype: "BYTES", shape: [1], data: ["2:1"] },
    { name: "flags", datatype: "BOOL", shape: [2], data: [true, false] },
  ]);
}

/** A step of "Classification extension, on one gateway": Classification extension: a bad n, and outputs that are not numbers, are 400s */
async function classificationExtensionBadNAnd(gw: TestGateway): Promise<void> {
  for (const n of [0, -1, 1.5, "3", true, [3], {}]) {
    const res = await infer(gw, "scores", {
      ...input([1, 2], [2]),
      outputs: [{ name: "x", parameters: { classification: n } }],
    });
    assert.equal(res.status, 400, JSON.stringify(n));
    assert.match(
      (await res.json()).error,
      /^Cannot infer: output "x": parameters\.classification: expected a positive integer \(how many of the top classes to answer\), not /,
    );
  }
  for (const [name, datatype] of [["flags", "BOOL"], ["names", "BYTES"]]) {
    const res = await infer(gw, "scores", {
      ...input([1, 2], [2]),
      outputs: [{ name, parameters: { classification: 1 } }],
    });
    assert.equal(res.status, 400, name);
    assert.equal(
      (await res.json()).error,
      `Cannot infer: output "${name}" of model 'scores' is ${datatype}, and classification ranks numbers only`,
    );
  }
}

/** A step of "Classification extension, on one gateway": Classification extension: as binary data (tritonclient's default), BYTES with 4-byte length prefixes */
async function classificationExtensionAsBinaryData(
  gw: TestGateway,
): Promise<void> {
  const res = await infer(gw, "labeled", {
    ...input([0.25, 0.5, 0.125, 1], [4]),
    outputs: [{
      name: "probs",
      parameters: { classification: 2, binary_data: true },
    }],
  });
  assert.equal(res.status, 200);
  const length = Number(res.headers.get("inference-header-content-length"));
  const bytes = new Uint8Array(await res.arrayBuffer());
  const header = JSON.parse(
    new TextDecoder().decode(bytes.subarray(0, length)),
  );
  const [out] = header.outputs;
  assert.equal(out.datatype, "BYTES");
  assert.deepEqual(out.shape, [2]);
  const raw = bytes.subarray(length);
  assert.equal(out.parameters.binary_data_size, raw.byteLength);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const values: string[] = [];
  for (let at = 0; at < raw.byteLength;) {
    const size = view.getUint32(at, true);
    values.push(new TextDecoder().decode(raw.subarray(at + 4, at + 4 + size)));
    at += 4 + size;
  }
  assert.deepEqual(values, ["1.000000:3:fish", "0.500000:1:dog"]);
}

/** A step of "Classification extension, on one gateway": Classification extension: labels beyond the body limit, 65536 classes answered at most per request (10^5 asked for: a 400 naming the limit) */
async function classificationExtensionLabelsBeyondBody(
  gw: TestGateway,
): Promise<void> {
  const res = await infer(gw, "longlabels", {
    inputs: [],
    outputs: [{ name: "probs", parameters: { classification: 2000 } }],
  });
  const out = await output(res, "probs");
  assert.equal(out.data.length, 2000);
  assert.equal(out.data[0], `0.999500:1999:${"1999".repeat(250)}`);
  const n = (count: number) => ({
    name: "n",
    datatype: "INT64",
    shape: [],
    data: [count],
  });
  const many = await infer(gw, "scores", {
    inputs: [n(100_000)],
    outputs: [{ name: "many", parameters: { classification: 65_536 } }],
  });
  const ranked = await output(many, "many");
  assert.deepEqual(ranked.shape, [65_536]);
  // The highest of (i * 7919) % 1000003 below 10^5 comes first.
  const best = Array.from({ length: 100_000 }, (_, i) => (i * 7919) % 1000003)
    .reduce((b, v, i, a) => v > a[b]! ? i : b, 0);
  assert.equal(ranked.data[0], `${(best * 7919) % 1000003}:${best}`);
  // All 10^5 of them: the gateway's thread would write 10^5 strings (10^6
  // held it for seconds). Binary or not, before any is written.
  for (const binary_data of [false, true]) {
    const all = await infer(gw, "scores", {
      inputs: [n(100_000)],
      outputs: [{
        name: "many",
        parameters: { classification: 100_000, binary_data },
      }],
    });
    assert.equal(all.status, 400);
    assert.match(
      (await all.json()).error,
      /^Cannot infer: the classification of output "many" of model 'scores' would answer 100000 classes in all .*over the limit of 65536 per request/,
    );
  }
  // Counted over the rows of a batch (300 rows of 300: top 219 is 65700)...
  const rows = Array.from({ length: 300 * 300 }, (_, i) => i % 7);
  const batch = (k: number) =>
    infer(gw, "scores", {
      ...input(rows, [300, 300]),
      outputs: [{ name: "x", parameters: { classification: k } }],
    });
  assert.deepEqual((await output(await batch(218), "x")).shape, [300, 218]);
  assert.equal(await statusOf(batch(219)), 400);
  // ...and over the outputs (40000 + 30000).
  const both = await infer(gw, "scores", {
    inputs: [n(40_000), {
      name: "x",
      datatype: "FP32",
      shape: [30_000],
      data: Array(30_000).fill(1),
    }],
    outputs: [
      { name: "many", parameters: { classification: 40_000 } },
      { name: "x", parameters: { classification: 40_000 } },
    ],
  });
  assert.equal(both.status, 400);
  assert.match(
    (await both.json()).error,
    /output "x" of model 'scores' would answer 70000 classes in all/,
  );
}

Deno.test("Classification extension: a declared output's labels must be a list of short strings on an array output", async () => {
  await using gw = await startGateway({ allowManage: true }, {
    "badlabels.py": `class BadLabels:
    outputs = {"p": {"type": "number", "labels": ["a"]}}

    def execute(self, msg):
        return {"p": 1}
`,
  });
  const res = await gw.fetch("/v1/models/badlabels", {
    method: "PUT",
    body: JSON.stringify({ file: "badlabels.py" }),
  });
  assert.equal(res.status, 422);
  assert.match(
    (await res.json()).error.message,
    /'labels' applies to an output of type 'array' \(its classes\), not to its items/,
  );
});

Deno.test("Classification extension: a model updated while a slow client sends its body answers with the new version's number and labels (were the old one's)", async () => {
  await using gw = await startGateway({ allowManage: true }, {
    "lab.py": `class Lab:
    outputs = {"y": {"type": "array", "labels": ["old0", "old1"]}}

    def execute(self, msg):
        return {"y": [0.9, 0.1]}
`,
    "lab2.py": `class Lab2:
    outputs = {"y": {"type": "array", "items": "number"}}

    def execute(self, msg):
        return {"y": [0.2, 0.8]}
`,
  });
  const text = new TextEncoder().encode(JSON.stringify({
    inputs: [],
    outputs: [{ name: "y", parameters: { classification: 2 } }],
  }));
  const rest = Promise.withResolvers<void>();
  const body = new ReadableStream<Uint8Array>({
    async start(c) {
      c.enqueue(text.subarray(0, 10));
      await rest.promise;
      c.enqueue(text.subarray(10));
      c.close();
    },
  });
  const pending = gw.fetch("/v2/models/lab/infer", {
    method: "POST",
    body,
    headers: { "content-type": "application/json" },
  });
  // The request is in (its metrics count it from before the model is
  // looked up), its body not yet.
  await until(
    async () =>
      (await (await gw.fetch("/metrics")).text()).includes(
        'pyproxy_in_flight_requests{model="lab"} 1',
      ),
    "the infer request in flight",
  );
  const put = await gw.fetch("/v1/models/lab", {
    method: "PUT",
    body: JSON.stringify({ file: "lab2.py" }),
  });
  assert.equal(put.status, 200);
  await put.body?.cancel();
  rest.resolve();
  const res = await pending;
  assert.equal(res.status, 200);
  const answer = await res.json();
  assert.equal(answer.model_version, "2");
  assert.deepEqual(answer.outputs[0].data, ["0.800000:1", "0.200000:0"]);
});
