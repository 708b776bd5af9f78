/**
 * docs/migrating.md's ported code runs as the page says: the files it marks
 * with `<!-- file: <path> -->` are written to a directory and served by a
 * real pool and a real gateway, and every Python block of the page (the code
 * before the port too) parses. Its TypeScript blocks type-check with the
 * other docs' (tests/docs_check_test.ts).
 */
import assert from "node:assert/strict";
import {
  loadConfig,
  ModelHTTPError,
  Pool,
  PythonError,
  serve,
} from "../mod.ts";

const PAGE = new URL("../docs/migrating.md", import.meta.url);
const FENCE = /^```(\w*)[^\n]*\n([\s\S]*?)^```$/gm;

interface Block {
  lang: string;
  text: string;
  file?: string;
}

function blocks(markdown: string): Block[] {
  const found: Block[] = [];
  for (const m of markdown.matchAll(FENCE)) {
    // The marker: the last non-blank line before the fence.
    const before = markdown.slice(0, m.index).trimEnd().split("\n").at(-1);
    const file = /^<!-- file: (\S+) -->$/.exec(before ?? "")?.[1];
    found.push({ lang: m[1]!, text: m[2]!, ...(file ? { file } : {}) });
  }
  return found;
}

/** Writes the page's marked files into a fresh directory; returns it. */
async function extract(): Promise<string & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-migrating-" });
  for (const block of blocks(await Deno.readTextFile(PAGE))) {
    if (block.file === undefined) continue;
    const path = `${dir}/${block.file}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(path, block.text);
  }
  return Object.assign(dir, {
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  });
}

/** The lines of the workers' log files in `logs` that the model's close() wrote. */
async function shutdownLines(logs: string): Promise<string[]> {
  const lines: string[] = [];
  for await (const e of Deno.readDir(logs)) {
    if (!e.name.endsWith(".log")) continue;
    const text = await Deno.readTextFile(`${logs}/${e.name}`);
    for (const line of text.split("\n")) {
      const m = /risk: (shutting down after \d+ calls)$/.exec(line);
      if (m) lines.push(m[1]!);
    }
  }
  return lines.sort();
}

const post = (body: string, type?: string): RequestInit => ({
  method: "POST",
  body,
  ...(type ? { headers: { "content-type": type } } : {}),
});

Deno.test("docs/migrating.md marks the files of its ports, and every Python block parses", async () => {
  const all = blocks(await Deno.readTextFile(PAGE));
  assert.deepEqual(all.filter((b) => b.file).map((b) => b.file).sort(), [
    "client.py",
    "models/create_item.py",
    "models/flowers.py",
    "models/flowers_batched.py",
    "models/iris.py",
    "models/jobs.py",
    "models/lookup.py",
    "models/risk.py",
    "models/stamp.py",
    "models/summarize.py",
    "models/textclf/__init__.py",
    "models/textclf/model.py",
    "models/textclf/text_utils.py",
    "models/textclf/vocab.json",
    "models/textclf/weights.json",
    "models/weights.json",
    "pyproxy.json",
    "repository.py",
    "stats.py",
    "tfs_client.py",
  ]);
  const python = all.filter((b) => b.lang === "python").map((b) => b.text);
  assert.ok(python.length >= 8, `${python.length} Python blocks`);
  const out = await new Deno.Command("python3", {
    args: [
      "-c",
      "import ast, json, sys\nfor i, src in enumerate(json.load(sys.stdin)):\n    ast.parse(src, 'block %d' % i)",
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = out.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(python)));
  await writer.close();
  const { code, stderr } = await out.output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
});

Deno.test("docs/migrating.md: the FastAPI port answers in a library pool, and its close() runs on every worker", async () => {
  await using dir = await extract();
  // The pool's default: outside the models directory.
  let logs = "";
  {
    await using pool = await Pool.start({
      workers: 2,
      modelsDir: `${dir}/models`,
      requestTimeout: 5000,
      handleSignals: false,
    });
    logs = pool.logDir!;
    await pool.addModel("risk", { file: "risk.py" });
    const got = await pool.execute("risk", {
      income: 30000,
      debt: 20000,
      age: 30,
    }) as { label: string; proba: Record<string, number> };
    assert.equal(got.label, "review");
    assert.equal(got.proba.review!.toFixed(4), "0.9454");
    assert.equal(got.proba.approve!.toFixed(4), "0.0546");
    await assert.rejects(
      pool.execute("risk", { income: "a lot" }),
      (err) => {
        // The port's HTTPException(422, [...]): its status and detail list.
        assert.ok(err instanceof ModelHTTPError, String(err));
        assert.equal(err.status, 422);
        assert.equal(err.message, "HTTPError: not numbers: income, debt, age");
        assert.deepEqual(
          err.detail,
          ["income", "debt", "age"].map((f) => ({
            loc: ["body", f],
            msg: "value is not a valid float",
          })),
        );
        return true;
      },
    );
    await pool.addModel("summarize", { file: "summarize.py" });
    assert.deepEqual(
      await pool.execute("summarize", { text: "to be or not to be" }),
      { words: 6, first: ["to", "be", "or"] },
    );
  }
  // Each worker closed the model as the pool closed: one of them ran the call.
  try {
    assert.deepEqual(await shutdownLines(logs), [
      "shutting down after 0 calls",
      "shutting down after 1 calls",
    ]);
  } finally {
    await Deno.remove(logs, { recursive: true });
  }
});

Deno.test("docs/migrating.md: the FastAPI port behind the gateway answers as the page shows, and its drain runs close()", async () => {
  await using dir = await extract();
  const server = await serve(
    await loadConfig({
      cli: { port: 0, workers: 2, modelsDir: `${dir}/models` },
    }),
  );
  try {
    await gatewayAnswers(server.url);
  } finally {
    await server.shutdown();
  }
  // The drain stopped both workers, each closing the model.
  assert.deepEqual(await shutdownLines(`${dir}/models/logs`), [
    "shutting down after 0 calls",
    "shutting down after 1 calls",
  ]);
});

/** The page's curl calls, and an old client's /health. */
async function gatewayAnswers(url: string): Promise<void> {
  const ok = await fetch(
    `${url}/v1/models/risk/execute`,
    post('{"income": 30000, "debt": 20000, "age": 30}'),
  );
  assert.equal(ok.status, 200);
  assert.equal((await ok.json()).label, "review");
  const bad = await fetch(
    `${url}/v1/models/risk/execute`,
    post('{"income": "a lot"}'),
  );
  assert.equal(bad.status, 400);
  const { error } = await bad.json();
  assert.equal(error.type, "ValidationError");
  assert.equal(
    error.message,
    "Cannot execute model 'risk': income: expected a number; debt: is required; age: is required",
  );
  // The page's mapping of FastAPI's detail[].loc: path, one entry a field.
  assert.deepEqual(
    error.fields.map((f: { path: string[] }) => ["body", ...f.path]),
    [["body", "income"], ["body", "debt"], ["body", "age"]],
  );
  // The declared range (pydantic's Field(ge=18, le=120)): one entry.
  const young = await fetch(
    `${url}/v1/models/risk/execute`,
    post('{"income": 30000, "debt": 20000, "age": 12}'),
  );
  assert.equal(young.status, 400);
  assert.deepEqual((await young.json()).error.fields, [{
    path: ["age"],
    message: "expected at least 18",
    expected: "number",
    received: "number",
  }]);
  // A body that is not an object: refused before the call.
  const notObject = await fetch(
    `${url}/v1/models/risk/execute`,
    post('"shutdown"'),
  );
  assert.equal(notObject.status, 400);
  assert.equal((await notObject.json()).error.type, "ValidationError");
  assert.equal(
    (await (await fetch(`${url}/healthz`)).json()).status,
    "ok",
  );
  const health = await fetch(`${url}/health`);
  assert.equal(health.status, 404);
  assert.match((await health.json()).error.message, /GET \/healthz/);
}

Deno.test("docs/migrating.md: the headers, HTTP errors and metrics port answers as the page shows, in the gateway and a library pool", async () => {
  await using dir = await extract();
  const server = await serve(
    await loadConfig({
      cli: {
        port: 0,
        workers: 2,
        modelsDir: `${dir}/models`,
        forwardHeaders: ["x-tenant-id"],
      },
    }),
  );
  try {
    const url = `${server.url}/v1/models/lookup/execute`;
    const ok = await fetch(url, {
      method: "POST",
      headers: { "x-tenant-id": "acme" },
      body: '{"id": 1}',
    });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), {
      item: { name: "apple" },
      tenant: "acme",
    });
    const missing = await fetch(url, post('{"id": 2}'));
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get("retry-after"), "5");
    const { error } = await missing.json();
    assert.deepEqual(
      [error.type, error.message, error.status, error.detail],
      ["HTTPError", "no such item", 404, { id: 2 }],
    );
    // pydantic's Field(ge=1) and max_length=10: refused before the call.
    const bad = await fetch(
      url,
      post(`{"id": 0, "fields": ${JSON.stringify(Array(11).fill("a"))}}`),
    );
    assert.equal(bad.status, 400);
    assert.deepEqual(
      (await bad.json()).error.fields.map((f: { path: string[] }) => f.path),
      [["id"], ["fields"]],
    );
    // The workers send their metrics every half second at most: poll.
    const want = [
      'pyproxy_model_lookups_total{model="lookup",tenant="acme"} 1',
      'pyproxy_model_lookups_total{model="lookup",tenant="none"} 1',
    ];
    let lines: string[] = [];
    for (let i = 0; i < 100; i++) {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      lines = text.split("\n").filter((l) =>
        l.startsWith("pyproxy_model_lookups")
      );
      if (lines.length === want.length) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(lines.sort(), want);
  } finally {
    await server.shutdown();
  }
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: `${dir}/models`,
  });
  await pool.addModel("lookup", { file: "lookup.py" });
  assert.deepEqual(
    await pool.execute("lookup", { id: 1 }, {
      headers: { "x-tenant-id": "acme" },
    }),
    { item: { name: "apple" }, tenant: "acme" },
  );
  const err = await pool.execute("lookup", { id: 2 }).then(
    () => assert.fail("resolved"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ModelHTTPError, String(err));
  assert.deepEqual([err.status, err.detail, err.headers], [404, { id: 2 }, {
    "Retry-After": "5",
  }]);
});

Deno.test("docs/migrating.md: the success status ports answer 201 and 202 with their Location, in the gateway and a library pool", async () => {
  await using dir = await extract();
  const server = await serve(
    await loadConfig({
      cli: { port: 0, workers: 1, modelsDir: `${dir}/models` },
    }),
  );
  try {
    const res = await fetch(
      `${server.url}/v1/models/create_item/execute`,
      post('{"name": "apple"}'),
    );
    assert.equal(res.status, 201);
    assert.equal(res.headers.get("location"), "/items/1");
    assert.deepEqual(await res.json(), { id: 1 });
    // The TorchServe handler's set_response_status(202) and its header.
    const job = await fetch(`${server.url}/v1/models/jobs/execute`, post("{}"));
    assert.equal(job.status, 202);
    const { job: id } = await job.json();
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.equal(job.headers.get("location"), `/jobs/${id}`);
  } finally {
    await server.shutdown();
  }
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: `${dir}/models`,
  });
  await pool.addModel("create_item", { file: "create_item.py" });
  let meta: unknown;
  const result = await pool.execute("create_item", { name: "apple" }, {
    onResponseMeta: (m) => meta = m,
  });
  assert.deepEqual(result, { id: 1 });
  assert.deepEqual(meta, { status: 201, headers: { Location: "/items/1" } });
});

Deno.test("docs/migrating.md: the TorchServe port serves its config, batches from its options, and tells old clients what changed", async () => {
  await using dir = await extract();
  await using server = await serve(
    await loadConfig({
      path: `${dir}/pyproxy.json`,
      cli: { port: 0 },
    }),
  );
  const execute = (body: string, type?: string) =>
    fetch(`${server.url}/v1/models/textclf/execute`, post(body, type));
  const texts = ["great, I love it", "awful, I want a refund", "meh"];
  const results = await Promise.all(
    texts.map(async (text) => {
      const res = await execute(JSON.stringify({ text }));
      assert.equal(res.status, 200, text);
      return await res.json() as { label: string; score: number };
    }),
  );
  assert.deepEqual(results.map((r) => r.label), [
    "positive",
    "negative",
    "negative",
  ]);
  assert.equal(results[0]!.score.toFixed(3), "0.985");
  assert.equal(results[2]!.score, 0.5);
  const desc = await (await fetch(`${server.url}/v1/models/textclf`)).json();
  assert.deepEqual(desc.batch, { size: 8, delayMs: 50 });
  // TorchServe's clients: its route, and a raw text body.
  const old = await fetch(`${server.url}/predictions/textclf`, post("great"));
  assert.equal(old.status, 404);
  assert.match(
    (await old.json()).error.message,
    /POST \/v1\/models\/textclf\/execute/,
  );
  const raw = await execute("great", "text/plain");
  assert.equal(raw.status, 400);
  assert.match(
    (await raw.json()).error.message,
    /JSON bodies only, not text\/plain/,
  );
});

Deno.test("docs/migrating.md: the TorchServe port in a library pool fails a bad message of a batch alone", async () => {
  await using dir = await extract();
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: `${dir}/models`,
    handleSignals: false,
  });
  await pool.addModel("textclf", {
    file: "textclf/model.py",
    options: { batch_size: 8, max_batch_delay: 50 },
  });
  // The first call runs alone; the three behind it share one batch.
  const first = pool.execute("textclf", { text: "good" });
  const batch = await Promise.allSettled(
    [{ text: "good" }, { txt: "bad" }, { text: "bad" }].map((msg) =>
      pool.execute("textclf", msg)
    ),
  );
  await first;
  assert.deepEqual(batch.map((r) => r.status), [
    "fulfilled",
    "rejected",
    "fulfilled",
  ]);
  const failed = batch[1] as PromiseRejectedResult;
  assert.ok(failed.reason instanceof PythonError);
  assert.equal(
    failed.reason.message,
    'ValueError: expected {"text": <string>}',
  );
});

/** A 1x1 PNG: signature, IHDR, IDAT, IEND (CRCs made with zlib's). */
function onePixelPng(): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(
    atob(
      "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==",
    ),
    (c) => c.charCodeAt(0),
  );
}

Deno.test("docs/migrating.md: the image model takes a PNG body and answers a PNG, behind the gateway and in a library pool", async () => {
  await using dir = await extract();
  const png = onePixelPng();
  const stamped = (out: Uint8Array) => {
    assert.deepEqual([...out.subarray(0, 33)], [...png.subarray(0, 33)]);
    assert.equal(
      new TextDecoder().decode(out.subarray(37, 60)),
      "tEXtComment\0stamped by ",
    );
    assert.deepEqual([...out.subarray(out.length - png.length + 33)], [
      ...png.subarray(33),
    ]);
  };
  {
    await using server = await serve(
      await loadConfig({ path: `${dir}/pyproxy.json`, cli: { port: 0 } }),
    );
    const url = `${server.url}/v1/models/stamp/execute`;
    const res = await fetch(url, {
      method: "POST",
      body: png,
      headers: { "content-type": "image/png" },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "image/png");
    stamped(new Uint8Array(await res.arrayBuffer()));
    // Another type: the model's ValueError, a 422.
    const jpeg = await fetch(url, {
      method: "POST",
      body: png,
      headers: { "content-type": "image/jpeg" },
    });
    assert.equal(jpeg.status, 422);
    assert.match((await jpeg.json()).error.message, /Content-Type: image\/png/);
  }
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: `${dir}/models`,
    handleSignals: false,
  });
  await pool.addModel("stamp", { file: "stamp.py" });
  stamped(await pool.execute<Uint8Array>("stamp", png));
});

Deno.test("docs/migrating.md: the KServe port's repository client unloads, loads and classifies as the page shows", async () => {
  await using dir = await extract();
  const server = await serve(
    await loadConfig({
      cli: {
        port: 0,
        workers: 1,
        modelsDir: `${dir}/models`,
        allowManage: true,
        token: "a-token-for-the-repository-test",
      },
    }),
  );
  try {
    const client = await new Deno.Command("python3", {
      args: [
        `${dir}/repository.py`,
        server.url,
        "a-token-for-the-repository-test",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(client.stderr);
    assert.equal(client.code, 0, err);
    assert.deepEqual(new TextDecoder().decode(client.stdout).split("\n"), [
      "[('iris', '1', 'READY', '')]",
      "[('iris', 'UNAVAILABLE', 'unloaded')]",
      "[('iris', '2', 'READY', '')]",
      "{'name': 'score', 'datatype': 'BYTES', 'shape': [1], 'data': ['0.500000:0']}",
      "",
    ]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("docs/migrating.md: the Triton statistics and configuration client prints what the page shows", async () => {
  await using dir = await extract();
  const server = await serve(
    await loadConfig({
      cli: { port: 0, workers: 1, modelsDir: `${dir}/models` },
    }),
  );
  try {
    const client = await new Deno.Command("python3", {
      args: [`${dir}/stats.py`, server.url],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(client.stderr);
    assert.equal(client.code, 0, err);
    assert.deepEqual(new TextDecoder().decode(client.stdout).split("\n"), [
      "iris 1 {'success': 1, 'fail': 1, 'compute_infer': 1} True",
      "[('input', 'TYPE_FP64', [-1, -1])] 0",
      "",
    ]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("docs/migrating.md: the KServe port answers the page's Open Inference Protocol requests", async () => {
  await using dir = await extract();
  const server = await serve(
    await loadConfig({
      cli: { port: 0, workers: 1, modelsDir: `${dir}/models` },
    }),
  );
  try {
    const infer = (body: string) =>
      fetch(`${server.url}/v2/models/iris/infer`, post(body));
    const ok = await infer(
      '{"id": "1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}',
    );
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), {
      model_name: "iris",
      model_version: "1",
      id: "1",
      outputs: [
        {
          name: "label",
          datatype: "BYTES",
          shape: [2],
          data: ["setosa", "other"],
        },
        { name: "score", datatype: "FP64", shape: [2], data: [0.5, 0.39] },
      ],
    });
    const bad = await infer(
      '{"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [5.1, 3.5]}]}',
    );
    assert.equal(bad.status, 400);
    assert.deepEqual(await bad.json(), {
      error:
        'Cannot infer: input "input": shape [2,4] holds 8 elements, and data has 2',
    });
    // The standard-library client: ready checks, metadata, binary tensors in
    // and out, printing what the page shows.
    const client = await new Deno.Command("python3", {
      args: [`${dir}/client.py`, server.url],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(client.stderr);
    assert.equal(client.code, 0, err);
    assert.deepEqual(new TextDecoder().decode(client.stdout).split("\n"), [
      "[('input', 'FP64', [-1, -1])]",
      "label [2] ['setosa', 'other']",
      "score [2] [0.5, 0.39]",
      "",
    ]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("docs/migrating.md: the TensorFlow Serving port answers the page's :predict requests, and its standard-library client prints what the page shows", async () => {
  await using dir = await extract();
  const server = await serve(
    await loadConfig({
      cli: { port: 0, workers: 1, modelsDir: `${dir}/models` },
    }),
  );
  try {
    const predict = async (model: string, body: string) => {
      const res = await fetch(
        `${server.url}/v1/models/${model}:predict`,
        post(body),
      );
      return [res.status, await res.json()];
    };
    assert.deepEqual(
      await predict(
        "flowers",
        '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}',
      ),
      [200, { predictions: ["setosa", "other"] }],
    );
    assert.deepEqual(
      await predict("flowers", '{"instances": [5.1, 3.5]}'),
      [422, { error: "TypeError: 'float' object is not subscriptable" }],
    );
    assert.deepEqual(
      await predict("flowers", '{"instance": [[5.1, 3.5, 1.4, 0.2]]}'),
      [400, {
        error:
          'Cannot predict: the body has neither "instances" (a list: row format) nor "inputs" (columnar format)',
      }],
    );
    assert.deepEqual(
      await predict(
        "flowers_batched",
        '{"instances": [{"petal_length": 1.4}, {"petal_length": 5.2}]}',
      ),
      [200, { predictions: ["setosa", "other"] }],
    );
    assert.deepEqual(
      await predict(
        "flowers_batched",
        '{"inputs": {"petal_length": [1.4, 5.2]}}',
      ),
      [200, { outputs: ["setosa", "other"] }],
    );
    const client = await new Deno.Command("python3", {
      args: [`${dir}/tfs_client.py`, server.url],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(client.stderr);
    assert.equal(client.code, 0, err);
    assert.deepEqual(new TextDecoder().decode(client.stdout).split("\n"), [
      "True AVAILABLE",
      "(200, {'predictions': ['setosa']})",
      "(200, {'predictions': ['other', 'setosa']})",
      `(400, {'error': 'Cannot predict: "instances" must be a list (one item per instance)'})`,
      "",
    ]);
  } finally {
    await server.shutdown();
  }
});
