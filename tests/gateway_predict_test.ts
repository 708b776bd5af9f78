// TensorFlow Serving's REST predict API (KServe's V1 protocol) through a
// real gateway and real Python workers: POST /v1/models/{name}:predict in
// the row and columnar formats, a batching model's one message per
// instance, versions, its errors in the {"error": "message"} shape, the
// verbs refused, and the readiness fields of GET /v1/models/{name}.
import assert from "node:assert/strict";
import {
  startGateway,
  statusOf,
  type TestGateway,
  until,
} from "./_gateway_harness.ts";

const post = (body: unknown, headers: Record<string, string> = {}) => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: typeof body === "string" ? body : JSON.stringify(body),
});

const MODELS: Record<string, string> = {
  "summer.py": `class Summer:
    """Sums each instance (row format) or each input (columnar)."""

    def execute(self, msg):
        if "instances" in msg:
            return [sum(row) for row in msg["instances"]]
        return {k: sum(v) for k, v in msg["inputs"].items()}
`,
  "shaped.py": `class Shaped:
    """Answers in TF Serving's shape itself, with what it was sent."""

    def execute(self, msg):
        return {"predictions": [len(msg["instances"])], "signature": msg.get("signature_name")}
`,
  "batcher.py": `class Batcher:
    batch_size = 8
    batch_delay_ms = 1

    def execute_batch(self, msgs):
        out = []
        for m in msgs:
            if isinstance(m, dict):
                out.append({"y": m["x"] * 2, "z": -m["x"]})
            elif isinstance(m, (int, float)) and not isinstance(m, bool):
                out.append(m * 2)
            else:
                out.append([type(m).__name__, m])
        return out
`,
  "teapot.py": `from pyproxy import HTTPError


class Teapot:
    def execute(self, msg):
        raise HTTPError(418, "short and stout", headers={"Retry-After": "3"})
`,
  "streamer.py": `class Streamer:
    def execute(self, msg):
        yield 1
`,
  "batchwaiter.py": `import os
import time


class BatchWaiter:
    """Each message: writes its "started" file, waits up to 10 s, writes "cancelled" when interrupted."""

    batch_size = 4
    batch_delay_ms = 1

    def execute_batch(self, msgs):
        for m in msgs:
            with open(m["started"], "w") as f:
                f.write("started")
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.01)
            return [True for m in msgs]
        except KeyboardInterrupt:
            with open(msgs[0]["cancelled"] + ".tmp", "w") as f:
                f.write("cancelled")
            os.replace(msgs[0]["cancelled"] + ".tmp", msgs[0]["cancelled"])
            raise
`,
  "tagged.py": `class Tagged:
    def __init__(self, options):
        self.v = options["v"]

    def execute(self, msg):
        return {"predictions": [self.v] * len(msg["instances"])}
`,
};

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

// Steps on one gateway started as `startGateway({ workers: 1 }, MODELS)`: each
// of these tests started its own (a gateway and its Python worker) and needs no
// fresh one.
Deno.test("Gateway :predict on one gateway: formats, batching, refusals, other verbs", async (t) => {
  await using gw = await startGateway({ workers: 1 }, MODELS);
  await t.step(
    "Gateway :predict: the row format's instances and the columnar format's inputs reach the model as the body (KServe's predict(payload)); a result is answered as predictions (or outputs), a dict with predictions as it is",
    () => predictRowFormatInstancesAnd(gw),
  );
  await t.step(
    "Gateway :predict: a batching model gets one message per instance, in its batches, the predictions in order; columnar inputs are read row by row and answered in columns; 20000 instances come back in order, 65537 are a 400",
    () => predictBatchingModelGetsOne(gw),
  );
  await t.step(
    'Gateway :predict: a malformed body is a 400, an unknown model a 404, a model\'s HTTPError its own status, a streaming model a 400 naming /stream, each as {"error": message} with the request id',
    () => predictMalformedBodyIs400(gw),
  );
  await t.step(
    "Gateway :predict: :explain, TF Serving's :classify and :regress are a 501 saying what to call; another verb, a second colon or an encoded colon are not taken for a model name",
    () => predictExplainTfServingClassify(gw),
  );
});

/** A step of "Gateway :predict on one gateway: formats, batching, refusals, other verbs": Gateway :predict: the row format's instances and the columnar format's inputs reach the model as the body (KServe's predict(payload)); a result is answered as predictions (or outputs), a dict with predictions as it is */
async function predictRowFormatInstancesAnd(gw: TestGateway): Promise<void> {
  const cases: Array<[string, unknown, unknown]> = [
    ["summer", { instances: [[1, 2], [3, 4]] }, { predictions: [3, 7] }],
    ["summer", { inputs: { a: [1, 2], b: [3] } }, { outputs: { a: 3, b: 3 } }],
    // signature_name goes to the model with the rest of the body.
    [
      "shaped",
      { instances: [1, 2, 3], signature_name: "serving_default" },
      { predictions: [3], signature: "serving_default" },
    ],
    ["echo", { instances: [1, "a"] }, { predictions: { instances: [1, "a"] } }],
    // An instance list may be empty; mixed types are the model's to take.
    ["summer", { instances: [] }, { predictions: [] }],
  ];
  for (const [model, body, answer] of cases) {
    const res = await gw.fetch(
      `/v1/models/${model}:predict`,
      post(body, { "x-request-id": "tf-1" }),
    );
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(res.headers.get("x-request-id"), "tf-1");
    assert.deepEqual(await res.json(), answer);
  }
  // A model named "predict" is called as any other.
  await using named = await startGateway({
    workers: 1,
    models: [{ name: "predict", file: "summer.py" }],
  }, MODELS);
  const res = await named.fetch(
    "/v1/models/predict:predict",
    post({ instances: [[2, 2]] }),
  );
  assert.deepEqual(await res.json(), { predictions: [4] });
}

/** A step of "Gateway :predict on one gateway: formats, batching, refusals, other verbs": Gateway :predict: a batching model gets one message per instance, in its batches, the predictions in order; columnar inputs are read row by row and answered in columns; 20000 instances come back in order, 65537 are a 400 */
async function predictBatchingModelGetsOne(gw: TestGateway): Promise<void> {
  const predict = async (body: unknown) => {
    const res = await gw.fetch("/v1/models/batcher:predict", post(body));
    assert.equal(res.status, 200, JSON.stringify(body));
    return await res.json();
  };
  assert.deepEqual(
    await predict({ instances: [1, 2.5, { x: 3 }, "s", null, true] }),
    {
      predictions: [
        2,
        5,
        { y: 6, z: -3 },
        ["str", "s"],
        ["NoneType", null],
        ["bool", true],
      ],
    },
  );
  assert.deepEqual(await predict({ inputs: { x: [1, 2, 3] } }), {
    outputs: { y: [2, 4, 6], z: [-1, -2, -3] },
  });
  assert.deepEqual(await predict({ inputs: [1, 2] }), { outputs: [2, 4] });
  assert.deepEqual(await predict({ instances: [] }), { predictions: [] });
  const n = 20_000;
  const big = await predict({
    instances: Array.from({ length: n }, (_, i) => i),
  });
  assert.equal(big.predictions.length, n);
  assert.ok(big.predictions.every((p: number, i: number) => p === 2 * i));
  // At most 65536 instances (each a call of its own), in either format.
  for (
    const body of [
      { instances: new Array(65_537).fill(0) },
      { inputs: new Array(65_537).fill(0) },
      { inputs: { x: new Array(65_537).fill(0) } },
    ]
  ) {
    const res = await gw.fetch("/v1/models/batcher:predict", post(body));
    assert.equal(res.status, 400);
    assert.match(
      (await res.json()).error,
      /at most 65536 instances per request \(each is a call of its own\), got 65537: split the request$/,
    );
  }
  // Columns of different lengths have no rows.
  const bad = await gw.fetch(
    "/v1/models/batcher:predict",
    post({ inputs: { x: [1, 2], y: [1] } }),
  );
  assert.equal(bad.status, 400);
  assert.match(
    (await bad.json()).error,
    /^Cannot predict: for a batching model, "inputs" must be a list .*"x" has 2, "y" has 1$/,
  );
}

/** A step of "Gateway :predict on one gateway: formats, batching, refusals, other verbs": Gateway :predict: a malformed body is a 400, an unknown model a 404, a model\'s HTTPError its own status, a streaming model a 400 naming /stream, each as {"error": message} with the request id */
async function predictMalformedBodyIs400(gw: TestGateway): Promise<void> {
  const cases: Array<[string, unknown, number, RegExp]> = [
    ["echo", { instances: 1 }, 400, /"instances" must be a list/],
    ["echo", {}, 400, /neither "instances" .* nor "inputs"/],
    ["echo", [1], 400, /the body must be a JSON object/],
    [
      "echo",
      { instances: [], inputs: [] },
      400,
      /both "instances" and "inputs"/,
    ],
    ["echo", { inputs: null }, 400, /"inputs" must be a value/],
    [
      "echo",
      "{",
      400,
      /^Cannot parse request body as JSON: .* \(a predict request is a JSON object: \{"instances": \[\.\.\.\]\} or \{"inputs": \.\.\.\}\)$/,
    ],
    ["nope", { instances: [1] }, 404, /^Cannot find model "nope"$/],
    ["teapot", { instances: [1] }, 418, /^short and stout$/],
    [
      "streamer",
      { instances: [1] },
      400,
      /streams its results .* call POST \/v1\/models\/streamer\/stream/,
    ],
  ];
  for (const [model, body, status, message] of cases) {
    const res = await gw.fetch(
      `/v1/models/${model}:predict`,
      post(body, { "x-request-id": "bad-1" }),
    );
    assert.equal(res.status, status, `${model} ${JSON.stringify(body)}`);
    assert.equal(res.headers.get("x-request-id"), "bad-1");
    const got = await res.json();
    assert.deepEqual(Object.keys(got), ["error"]);
    assert.match(got.error, message);
    if (model === "teapot") assert.equal(res.headers.get("retry-after"), "3");
  }
}

/** A step of "Gateway :predict on one gateway: formats, batching, refusals, other verbs": Gateway :predict: :explain, TF Serving's :classify and :regress are a 501 saying what to call; another verb, a second colon or an encoded colon are not taken for a model name */
async function predictExplainTfServingClassify(gw: TestGateway): Promise<void> {
  const cases: Array<[string, number, string]> = [
    [
      "/v1/models/echo:explain",
      501,
      "Cannot explain: the gateway serves no explainers (KServe's :explain); serve the explainer as a model of its own and call POST /v1/models/{explainer}:predict, or return explanations from echo's own predictions",
    ],
    [
      "/v1/models/echo:classify",
      501,
      'Cannot classify: TensorFlow Serving\'s Classify and Regress APIs are not served; call POST /v1/models/echo:predict with {"instances": [...]}',
    ],
    [
      "/v1/models/echo/versions/1:regress",
      501,
      'Cannot regress: TensorFlow Serving\'s Classify and Regress APIs are not served; call POST /v1/models/echo:predict with {"instances": [...]}',
    ],
    [
      "/v1/models/echo:predict:predict",
      404,
      "Cannot find route POST /v1/models/echo:predict:predict (the verbs after a model name are :predict, and KServe's :explain)",
    ],
    // A trailing slash, an empty name or version: 404s in the same shape.
    [
      "/v1/models/echo:predict/",
      404,
      "Cannot find route POST /v1/models/echo:predict/",
    ],
    ["/v1/models/:predict", 404, 'Cannot find model ""'],
    [
      "/v1/models/echo/versions/:predict",
      404,
      'Cannot find model "echo" version "": its version is 1',
    ],
    [
      "/v1/models/echo%3Apredict",
      405,
      "Cannot POST /v1/models/echo%3Apredict: allowed: GET, HEAD (write the colon before predict as it is, not percent-encoded: POST /v1/models/echo:predict)",
    ],
  ];
  for (const [path, status, message] of cases) {
    const res = await gw.fetch(path, post({ instances: [1] }));
    assert.equal(res.status, status, path);
    assert.deepEqual(await res.json(), { error: message });
  }
  // A colon in another segment is execute's (its errors in its own shape).
  const execute = await gw.fetch("/v1/models/a:b/execute", post({}));
  assert.equal(execute.status, 404);
  assert.equal((await execute.json()).error.type, "ModelNotFoundError");
  // The model routes are as they were: a POST of a name is still a 405.
  const res = await gw.fetch("/v1/models/echo", post({}));
  assert.equal(res.status, 405);
  assert.equal(res.headers.get("allow"), "GET, HEAD");
  await res.body?.cancel();
}

Deno.test("Gateway :predict: a version's :predict (labels, or a model's own version number as TF Serving's clients send it); an unknown one is a 404", async () => {
  await using gw = await startGateway({
    workers: 1,
    models: [
      { name: "t", file: "tagged.py", options: { v: "b" }, version: "b" },
      { name: "t", file: "tagged.py", options: { v: "a" }, version: "a" },
      { name: "s", file: "summer.py" },
    ],
  }, MODELS);
  const predict = async (path: string) => {
    const res = await gw.fetch(path, post({ instances: [[1], [2]] }));
    return [res.status, await res.json()];
  };
  assert.deepEqual(await predict("/v1/models/t:predict"), [200, {
    predictions: ["b", "b"],
  }]);
  assert.deepEqual(await predict("/v1/models/t/versions/a:predict"), [200, {
    predictions: ["a", "a"],
  }]);
  assert.deepEqual(await predict("/v1/models/s/versions/1:predict"), [200, {
    predictions: [1, 2],
  }]);
  // A version's internal name is no alias of its route.
  const [internal] = await predict("/v1/models/t@a:predict");
  assert.equal(internal, 404);
  const [status, body] = await predict("/v1/models/t/versions/c:predict");
  assert.equal(status, 404);
  assert.match(body.error, /version/);
  assert.deepEqual(await predict("/v1/models/s/versions/2:predict"), [404, {
    error: 'Cannot find model "s" version "2": its version is 1',
  }]);
  // The readiness of a version.
  const ready = await (await gw.fetch("/v1/models/t/versions/a")).json();
  assert.deepEqual([ready.ready, ready.model_version_status], [true, [{
    version: "a",
    state: "AVAILABLE",
    status: { error_code: "OK", error_message: "" },
  }]]);
});

Deno.test("Gateway GET /v1/models/{name}: a model with versions lists every version's state in model_version_status (as TF Serving does without a version); a model without versions answers GET /versions/{its version} as :predict and /metadata take it", async () => {
  await using gw = await startGateway({
    workers: 1,
    models: [
      { name: "t", file: "tagged.py", options: { v: "b" }, version: "b" },
      { name: "t", file: "tagged.py", options: { v: "a" }, version: "a" },
      { name: "s", file: "summer.py" },
    ],
  }, MODELS);
  const ok = { error_code: "OK", error_message: "" };
  const t = await (await gw.fetch("/v1/models/t")).json();
  assert.equal(t.label, "b");
  assert.equal(t.ready, true);
  assert.deepEqual(t.model_version_status, [
    { version: "b", state: "AVAILABLE", status: ok },
    { version: "a", state: "AVAILABLE", status: ok },
  ]);
  const own = await gw.fetch("/v1/models/s/versions/1");
  assert.equal(own.status, 200);
  const s = await own.json();
  assert.equal(s.name, "s");
  assert.deepEqual([s.ready, s.model_version_status], [true, [
    { version: "1", state: "AVAILABLE", status: ok },
  ]]);
  const other = await gw.fetch("/v1/models/s/versions/2");
  assert.equal(other.status, 404);
  await other.body?.cancel();
});

Deno.test("Gateway :predict: a batching model's instance that breaks its declared inputs is a 400 naming which instance, in either format", async () => {
  await using gw = await startGateway({ workers: 1 }, {
    "checked.py": `class Checked:
    batch_size = 4
    batch_delay_ms = 1
    inputs = {"x": "number"}

    def execute_batch(self, msgs):
        return [m["x"] for m in msgs]
`,
  });
  const cases: Array<[unknown, string]> = [
    [
      { instances: [{ x: 1 }, { x: 2 }, { x: "a" }] },
      "Cannot execute model 'checked': x: expected a number (instance 2)",
    ],
    [
      { inputs: { x: [1, "a"] } },
      "Cannot execute model 'checked': x: expected a number (instance 1)",
    ],
    [
      { inputs: [{ x: 1 }, {}] },
      "Cannot execute model 'checked': x: is required (instance 1)",
    ],
  ];
  for (const [body, error] of cases) {
    const res = await gw.fetch("/v1/models/checked:predict", post(body));
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.deepEqual(await res.json(), { error });
  }
  const ok = await gw.fetch(
    "/v1/models/checked:predict",
    post({ instances: [{ x: 1 }, { x: 2 }] }),
  );
  assert.deepEqual(await ok.json(), { predictions: [1, 2] });
});

Deno.test("Gateway :predict: the request's timeout holds for all a batching model's instances, and its 504 names it (not what was left of it for the instance that timed out)", async () => {
  await using gw = await startGateway({ workers: 1 }, {
    "slowrow.py": `import time


class Slowrow:
    batch_size = 1
    batch_delay_ms = 1

    def execute_batch(self, msgs):
        time.sleep(0.1)
        return msgs
`,
  });
  const res = await gw.fetch(
    "/v1/models/slowrow:predict?timeout=300",
    post({ instances: Array.from({ length: 40 }, (_, i) => i) }),
  );
  assert.equal(res.status, 504);
  assert.deepEqual(await res.json(), {
    error:
      "Cannot complete predict: timed out after 300 ms (the request's timeout, for all its 40 instances)",
  });
});

Deno.test('Gateway :predict: a batching model\'s bytes results are {"b64": ...} values in either format (columnar: a list of them, not an output named "b64")', async () => {
  await using gw = await startGateway({ workers: 1 }, {
    "byter.py": `class Byter:
    batch_size = 4
    batch_delay_ms = 1

    def execute_batch(self, msgs):
        return [bytes([m]) for m in msgs]
`,
  });
  const b64 = [{ b64: "YQ==" }, { b64: "Yg==" }];
  const cases: Array<[unknown, unknown]> = [
    [{ instances: [97, 98] }, { predictions: b64 }],
    [{ inputs: [97, 98] }, { outputs: b64 }],
  ];
  for (const [body, answer] of cases) {
    const res = await gw.fetch("/v1/models/byter:predict", post(body));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), answer);
  }
});

Deno.test('Gateway :predict: a token is required (401), the body limit holds (413), both as {"error": message}', async () => {
  await using gw = await startGateway({
    workers: 1,
    token: "a-long-random-secret-token",
    limits: { shutdownGrace: 2000, bodyLimit: 1024 },
  }, MODELS);
  const anonymous = await gw.fetch(
    "/v1/models/summer:predict",
    post({ instances: [[1]] }, {
      authorization: "Bearer wrong-token-wrong-token",
    }),
  );
  assert.equal(anonymous.status, 401);
  assert.equal(typeof (await anonymous.json()).error, "string");
  const big = await gw.fetch(
    "/v1/models/summer:predict",
    post({ instances: Array.from({ length: 1000 }, () => [1]) }),
  );
  assert.equal(big.status, 413);
  assert.match((await big.json()).error, /1024/);
  const ok = await gw.fetch(
    "/v1/models/summer:predict",
    post({ instances: [[1]] }),
  );
  assert.deepEqual(await ok.json(), { predictions: [1] });
});

Deno.test("Gateway GET /v1/models/{name}: ready and TF Serving's model_version_status beside the description; a 503 UNAVAILABLE with the reason for a model out of service, whose :predict is a 503", async () => {
  const crasher = `
import os

class Crasher:
    def execute(self, msg):
        os._exit(3)
`;
  await using gw = await startGateway({
    workers: 3,
    models: [
      { name: "bad", file: "crasher.py", workers: 1 },
      { name: "echo", file: "echo.py" },
    ],
    limits: { shutdownGrace: 2000, maxRelocations: 0 },
    plugins: {
      reconnect: {
        backoff: { initial: 10, max: 20 },
        heartbeatInterval: 0,
        maxCrashes: 1,
        failedRetryAfter: 0,
      },
    },
  }, { ...MODELS, "crasher.py": crasher });
  const echo = await (await gw.fetch("/v1/models/echo")).json();
  assert.equal(echo.name, "echo");
  assert.equal(echo.class, "Echo");
  assert.equal(echo.ready, true);
  assert.deepEqual(echo.model_version_status, [{
    version: "1",
    state: "AVAILABLE",
    status: { error_code: "OK", error_message: "" },
  }]);
  for (let i = 0; i < 2; i++) {
    const res = await gw.fetch(
      "/v1/models/bad:predict",
      post({ instances: [1] }),
    );
    assert.equal(res.status, 502);
    assert.equal(typeof (await res.json()).error, "string");
  }
  const res = await gw.fetch(
    "/v1/models/bad:predict",
    post({ instances: [1] }),
  );
  assert.equal(res.status, 503);
  assert.match((await res.json()).error, /out of service/);
  // Not ready: 503, as KServe V1's server answers; TF Serving's status in
  // the body.
  const badRes = await gw.fetch("/v1/models/bad");
  assert.equal(badRes.status, 503);
  const bad = await badRes.json();
  assert.equal(bad.name, "bad");
  assert.equal(bad.ready, false);
  assert.equal(bad.model_version_status[0].state, "UNAVAILABLE");
  assert.equal(bad.model_version_status[0].status.error_code, "UNAVAILABLE");
  assert.match(
    bad.model_version_status[0].status.error_message,
    /^out of service: .*crashed/,
  );
});

Deno.test("Gateway :predict: a client that disconnects cancels a batching model's calls", async () => {
  await using gw = await startGateway({ workers: 1 }, MODELS);
  const started = `${gw.dir}/p.started`;
  const cancelled = `${gw.dir}/p.cancelled`;
  const client = new AbortController();
  const pending = gw.fetch(
    "/v1/models/batchwaiter:predict",
    {
      ...post({ instances: [{ started, cancelled }, { started, cancelled }] }),
      signal: client.signal,
    },
  ).then(() => "answered", (err: Error) => err.name);
  await until(() => readIfExists(started), "the call to start");
  client.abort();
  assert.equal(await pending, "AbortError");
  assert.equal(
    await until(() => readIfExists(cancelled), "the cancel", 5000),
    "cancelled",
  );
  const res = await gw.fetch(
    "/v1/models/summer:predict",
    post({ instances: [[1]] }),
  );
  assert.equal(res.status, 200);
  await res.body?.cancel();
});

Deno.test("Gateway GET /v1/models/{name}/metadata: TensorFlow Serving's signature metadata from the declared inputs and outputs; an unknown model a 404", async () => {
  await using gw = await startGateway({ workers: 1 }, {
    "declared.py": `class Declared:
    inputs = {"x": {"type": "array", "items": "number"}, "tag": "string", "raw": "object"}
    outputs = {"y": {"type": "array", "items": {"type": "number", "datatype": "FP32"}}}

    def execute(self, msg):
        return {"y": msg["x"]}
`,
  });
  const res = await gw.fetch("/v1/models/declared/metadata");
  assert.equal(res.status, 200);
  const tensor = (dtype: string, dims: number, name: string) => ({
    dtype,
    tensor_shape: {
      dim: Array.from({ length: dims }, () => ({ size: "-1", name: "" })),
      unknown_rank: false,
    },
    name,
  });
  assert.deepEqual(await res.json(), {
    model_spec: { name: "declared", signature_name: "", version: "1" },
    metadata: {
      signature_def: {
        signature_def: {
          serving_default: {
            inputs: {
              x: tensor("DT_DOUBLE", 1, "x"),
              tag: tensor("DT_STRING", 0, "tag"),
            },
            outputs: { y: tensor("DT_FLOAT", 1, "y") },
            method_name: "tensorflow/serving/predict",
          },
        },
      },
    },
  });
  const missing = await gw.fetch("/v1/models/nope/metadata");
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
  // Its version number, as :predict takes it.
  const version = await gw.fetch("/v1/models/declared/versions/1/metadata");
  assert.equal((await version.json()).model_spec.version, "1");
  const other = await gw.fetch("/v1/models/declared/versions/2/metadata");
  assert.equal(other.status, 404);
  await other.body?.cancel();
});

Deno.test("Gateway GET /v1/models/{name}: a model whose first load is under way is a 503 with TF Serving's LOADING state, not a 404; 200 AVAILABLE once loaded", async () => {
  await using gw = await startGateway(
    { workers: 1, allowManage: true },
    MODELS,
  );
  const started = `${gw.dir}/import.started`;
  const go = `${gw.dir}/import.go`;
  await Deno.writeTextFile(
    `${gw.dir}/slowload.py`,
    // Its import waits for the test's marker.
    `import os, time
open(${JSON.stringify(started)}, "w").close()
while not os.path.exists(${JSON.stringify(go)}):
    time.sleep(0.005)

class SlowLoad:
    def execute(self, msg):
        return msg
`,
  );
  const put = gw.fetch("/v1/models/slowload", {
    method: "PUT",
    body: JSON.stringify({ file: "slowload.py" }),
  });
  await until(() => readIfExists(started), "the load to start");
  const loading = await gw.fetch("/v1/models/slowload");
  assert.equal(loading.status, 503);
  assert.deepEqual(await loading.json(), {
    name: "slowload",
    ready: false,
    model_version_status: [{
      version: "1",
      state: "LOADING",
      status: { error_code: "OK", error_message: "" },
    }],
  });
  await Deno.writeTextFile(go, "");
  assert.equal(await statusOf(put), 201);
  const loaded = await gw.fetch("/v1/models/slowload");
  assert.equal(loaded.status, 200);
  const body = await loaded.json();
  assert.equal(body.ready, true);
  assert.equal(body.model_version_status[0].state, "AVAILABLE");
  // A name nothing loads is still a 404.
  assert.equal(await statusOf(gw.fetch("/v1/models/nothing")), 404);
});

Deno.test("Gateway GET /v1/models/{name} of a model with many versions reads the pool's status a bounded number of times, not once or twice per version (2000 versions beside 1000 models took 41 s)", async () => {
  await using gw = await startGateway({ workers: 1, allowManage: true });
  const source = "class M:\n    def execute(self, msg):\n        return msg\n";
  const labels = Array.from({ length: 60 }, (_, i) => String(i + 1));
  for (const label of labels) {
    await gw.pool.addModel("m", { source, version: label });
  }
  const pool = gw.pool as { status: typeof gw.pool.status };
  const status = pool.status.bind(gw.pool);
  let reads = 0;
  pool.status = () => (reads++, status());
  try {
    const res = await gw.fetch("/v1/models/m");
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.ready, true);
    assert.deepEqual(
      body.model_version_status.map((s: { version: string; state: string }) =>
        `${s.version} ${s.state}`
      ),
      labels.map((l) => `${l} AVAILABLE`),
    );
    assert.ok(
      reads <= 3,
      `${reads} status reads for ${labels.length} versions`,
    );
  } finally {
    pool.status = status;
  }
});

Deno.test("Gateway GET /v1/models/{name}[/versions/{label}] while a version loads: LOADING names the label being loaded (not 1), by the name for a first load and by the version's own path for any", async () => {
  await using gw = await startGateway({ workers: 1, allowManage: true });
  const gated = (tag: string) =>
    Deno.writeTextFile(
      `${gw.dir}/${tag}.py`,
      `import os, time
open(${JSON.stringify(`${gw.dir}/${tag}.started`)}, "w").close()
while not os.path.exists(${JSON.stringify(`${gw.dir}/${tag}.go`)}):
    time.sleep(0.005)

class M:
    def execute(self, msg):
        return msg
`,
    );
  await gated("v5");
  await gated("v6");
  const loadingBody = (version: string) => ({
    name: "nv",
    ready: false,
    model_version_status: [{
      version,
      state: "LOADING",
      status: { error_code: "OK", error_message: "" },
    }],
  });
  const expect = async (path: string, status: number, body?: unknown) => {
    const res = await gw.fetch(path);
    assert.equal(res.status, status, path);
    const json = await res.json();
    if (body !== undefined) assert.deepEqual(json, body, path);
    return json;
  };
  const first = gw.fetch("/v1/models/nv/versions/5", {
    method: "PUT",
    body: JSON.stringify({ file: "v5.py" }),
  });
  await until(() => readIfExists(`${gw.dir}/v5.started`), "v5's load");
  await expect("/v1/models/nv", 503, loadingBody("5"));
  await expect("/v1/models/nv/versions/5", 503, loadingBody("5"));
  await Deno.writeTextFile(`${gw.dir}/v5.go`, "");
  assert.equal(await statusOf(first), 201);
  const second = gw.fetch("/v1/models/nv/versions/6", {
    method: "PUT",
    body: JSON.stringify({ file: "v6.py" }),
  });
  await until(() => readIfExists(`${gw.dir}/v6.started`), "v6's load");
  // The name answers for its default (5, ready); the version loading says so.
  const byName = await expect("/v1/models/nv", 200);
  assert.equal(byName.label, "5");
  await expect("/v1/models/nv/versions/6", 503, loadingBody("6"));
  await expect("/v1/models/nv/versions/7", 404);
  await Deno.writeTextFile(`${gw.dir}/v6.go`, "");
  assert.equal(await statusOf(second), 201);
  const six = await expect("/v1/models/nv/versions/6", 200);
  assert.equal(six.model_version_status[0].state, "AVAILABLE");
});

Deno.test("Gateway :predict: ?firstItemTimeout= is refused with a 400 (a stream's bound), as execute's and /v2 infer's, the model not called", async () => {
  // Before: answered 200, the parameter dropped: a client believed its call
  // bounded (execute and /v2 infer refused it since streams27).
  await using gw = await startGateway({ workers: 1 }, MODELS);
  for (
    const path of [
      "/v1/models/summer:predict?firstItemTimeout=100",
      "/v1/models/summer/versions/1:predict?firstItemTimeout",
      "/v1/models/batcher:predict?timeout=5000&firstItemTimeout=100",
    ]
  ) {
    const res = await gw.fetch(path, post({ instances: [[1, 2]] }));
    assert.equal(res.status, 400, path);
    // TF Serving's error shape: {"error": "<message>"}.
    assert.match(
      (await res.json()).error,
      /^Cannot predict: \?firstItemTimeout= bounds the first item of a stream \(POST \/v1\/models\/\{name\}\/stream\) only; a call's bound is \?timeout=/,
      path,
    );
  }
  const stats = await (await gw.fetch("/v2/models/summer/stats")).json();
  assert.equal(stats.model_stats[0].inference_count, 0);
  const ok = await gw.fetch(
    "/v1/models/summer:predict?timeout=5000",
    post({ instances: [[1, 2]] }),
  );
  assert.deepEqual(await ok.json(), { predictions: [3] });
});
