// The Open Inference Protocol's model repository extension (Triton's
// explicit model control: POST /v2/repository/index, .../load, .../unload)
// through the real gateway and real Python workers.
import assert from "node:assert/strict";
import { startGateway, statusOf, until } from "./_gateway_harness.ts";

const MODELS: Record<string, string> = {
  "opts.py": `class Opts:
    """Answers its options."""

    def __init__(self, options=None):
        self.options = options or {}

    def execute(self, msg):
        return {"options": [str(sorted(self.options.items()))]}
`,
};

const post = (body?: unknown): RequestInit => ({
  method: "POST",
  ...(body === undefined ? {} : { body: JSON.stringify(body) }),
});

interface Entry {
  name: string;
  version?: string;
  state: string;
  reason: string;
}

async function index(
  gw: { fetch(path: string, init?: RequestInit): Promise<Response> },
  body?: unknown,
): Promise<Entry[]> {
  const res = await gw.fetch("/v2/repository/index", post(body));
  assert.equal(res.status, 200);
  return await res.json();
}

const entryOf = (entries: Entry[], name: string) =>
  entries.find((e) => e.name === name);

async function infer(
  gw: { fetch(path: string, init?: RequestInit): Promise<Response> },
  name: string,
): Promise<Response> {
  return await gw.fetch(`/v2/models/${name}/infer`, post({ inputs: [] }));
}

Deno.test("Model repository extension: index, load and unload of the models directory's files, with their states", async () => {
  await using gw = await startGateway({ allowManage: true }, MODELS);
  // Every *.py of the directory was loaded at start: READY, version 1.
  const before = await index(gw);
  assert.deepEqual(entryOf(before, "opts"), {
    name: "opts",
    version: "1",
    state: "READY",
    reason: "",
  });
  assert.deepEqual(
    before.map((e) => e.name),
    [...before.map((e) => e.name)].sort(),
  );
  // A file added since: in the repository, not loaded.
  await Deno.writeTextFile(
    `${gw.dir}/later.py`,
    "class Later:\n    def execute(self, msg):\n        return {'y': [1]}\n",
  );
  await Deno.writeTextFile(`${gw.dir}/_helper.py`, "X = 1\n");
  const listed = await index(gw);
  assert.deepEqual(entryOf(listed, "later"), {
    name: "later",
    state: "UNAVAILABLE",
    reason: "unloaded",
  });
  // Helper modules (a leading _) are not models, as at start.
  assert.equal(entryOf(listed, "_helper"), undefined);
  assert.ok(
    (await index(gw, { ready: true })).every((e) => e.state === "READY"),
  );
  assert.equal(entryOf(await index(gw, { ready: true }), "later"), undefined);
  assert.equal(await statusOf(infer(gw, "later")), 404);

  // Load: 200 with no body (as Triton), then served.
  const load = await gw.fetch("/v2/repository/models/later/load", post());
  assert.equal(load.status, 200);
  assert.equal(await load.text(), "");
  assert.deepEqual(entryOf(await index(gw), "later"), {
    name: "later",
    version: "1",
    state: "READY",
    reason: "",
  });
  const res = await infer(gw, "later");
  assert.equal(res.status, 200);
  assert.deepEqual((await res.json()).outputs[0].data, [1]);
  // Again: a reload, the next version ({} body as tritonclient sends it).
  assert.equal(
    await statusOf(gw.fetch("/v2/repository/models/later/load", post({}))),
    200,
  );
  assert.equal(entryOf(await index(gw), "later")?.version, "2");

  // Unload (unload_dependents accepted and ignored): gone from the models,
  // still in the repository.
  const unload = await gw.fetch(
    "/v2/repository/models/later/unload",
    post({ parameters: { unload_dependents: true } }),
  );
  assert.equal(unload.status, 200);
  assert.equal(await unload.text(), "");
  assert.equal(await statusOf(infer(gw, "later")), 404);
  assert.equal(await statusOf(gw.fetch("/v2/models/later")), 404);
  assert.deepEqual(entryOf(await index(gw), "later"), {
    name: "later",
    state: "UNAVAILABLE",
    reason: "unloaded",
  });
  // Bodies that are not the routes'.
  const refused: Array<[string, unknown, RegExp]> = [
    ["/v2/repository/index", { ready: "yes" }, /ready: expected a boolean/],
    [
      "/v2/repository/index",
      [true],
      /expected a JSON object \{"ready"\?: boolean\}/,
    ],
    [
      "/v2/repository/index",
      { repository_name: "x" },
      /unknown field "repository_name" \(allowed: ready\)/,
    ],
    [
      "/v2/repository/models/later/unload",
      { parameters: { unload_dependents: "yes" } },
      /parameters\.unload_dependents: expected a boolean/,
    ],
    [
      "/v2/repository/models/later/unload",
      { parameters: { force: true } },
      /unknown parameter "force" \(allowed: unload_dependents\)/,
    ],
  ];
  for (const [path, body, pattern] of refused) {
    const res = await gw.fetch(path, post(body));
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.match((await res.json()).error, pattern);
  }
  // Unloading it again: Triton's 400, in /v2's shape.
  const again = await gw.fetch("/v2/repository/models/later/unload", post());
  assert.equal(again.status, 400);
  assert.deepEqual(await again.json(), {
    error: 'Cannot unload model "later": it is not loaded',
  });
});

Deno.test("Model repository extension: an unknown model, a bad name, a path or symlink out of the directory, a file that raises on import", async () => {
  const outside = await Deno.makeTempDir({ prefix: "pyproxy-outside-" });
  try {
    await using gw = await startGateway({ allowManage: true }, MODELS);
    const load = (name: string, body?: unknown) =>
      gw.fetch(`/v2/repository/models/${name}/load`, post(body));

    const unknown = await load("nope");
    assert.equal(unknown.status, 404);
    assert.match(
      (await unknown.json()).error,
      /^Cannot load model "nope": the repository has no such model \(no file "nope\.py" in the models directory, and none configured by that name\)$/,
    );
    // A name the gateway refuses (a path, a space): 400 before any file.
    for (const name of ["a%2F..%2Fopts", "sub%2Fx", "my%20model"]) {
      const res = await load(name);
      assert.equal(res.status, 400, name);
      assert.match(
        (await res.json()).error,
        /^Cannot load model .*expected a name of 1-128 characters/,
      );
    }
    // A symlink out of the directory: the Python server refuses it.
    await Deno.writeTextFile(
      `${outside}/evil.py`,
      "class Evil:\n    def execute(self, msg):\n        return msg\n",
    );
    await Deno.symlink(`${outside}/evil.py`, `${gw.dir}/link.py`);
    const link = await load("link");
    assert.equal(link.status, 400);
    const { error } = await link.json();
    assert.match(error, /'link\.py': outside the models directory$/);
    assert.ok(!error.includes(outside) && !error.includes(gw.dir), error);
    assert.equal(await statusOf(gw.fetch("/v2/models/link")), 404);
    // One answer whether the target exists or not (nothing learnt of paths
    // outside the directory).
    await Deno.symlink(`${outside}/missing.py`, `${gw.dir}/dangling.py`);
    const dangling = await load("dangling");
    assert.equal(dangling.status, 400);
    assert.match(
      (await dangling.json()).error,
      /'dangling\.py': outside the models directory$/,
    );

    // A file that raises on import: a clear 400, nothing registered, and
    // the index says why.
    await Deno.writeTextFile(
      `${gw.dir}/broken.py`,
      "raise RuntimeError('import boom')\n",
    );
    const broken = await load("broken");
    assert.equal(broken.status, 400);
    const message = (await broken.json()).error;
    assert.match(message, /import boom/);
    assert.ok(!message.includes(gw.dir), message);
    assert.equal(await statusOf(gw.fetch("/v2/models/broken")), 404);
    assert.equal(await statusOf(gw.fetch("/v1/models/broken")), 404);
    const entry = entryOf(await index(gw), "broken");
    assert.equal(entry?.state, "UNAVAILABLE");
    assert.match(entry!.reason, /import boom/);
    // Fixed, it loads, and the reason goes.
    await Deno.writeTextFile(
      `${gw.dir}/broken.py`,
      "class Broken:\n    def execute(self, msg):\n        return {'ok': [1]}\n",
    );
    assert.equal(await statusOf(load("broken")), 200);
    assert.equal(entryOf(await index(gw), "broken")?.state, "READY");
  } finally {
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test('Model repository extension: a load whose error names the models directory is a 400 like any other, and the index keeps its reason (was 422 and "internal error")', async () => {
  const outside = await Deno.makeTempDir({ prefix: "pyproxy-outside-" });
  try {
    await using gw = await startGateway({ allowManage: true }, MODELS);
    const load = (name: string) =>
      gw.fetch(`/v2/repository/models/${name}/load`, post());
    // Its import raises with the file's path: the directory is hidden.
    await Deno.writeTextFile(
      `${gw.dir}/pathy.py`,
      "import os\nraise RuntimeError('boom in ' + os.path.abspath(__file__))\n",
    );
    const pathy = await load("pathy");
    assert.equal(pathy.status, 400);
    const message = (await pathy.json()).error;
    assert.match(message, /RuntimeError: boom in pathy\.py/);
    assert.ok(!message.includes(gw.dir), message);
    // A symlink out of the directory, and a directory named like a model.
    await Deno.symlink(`${outside}/missing.py`, `${gw.dir}/link.py`);
    assert.equal(await statusOf(load("link")), 400);
    await Deno.mkdir(`${gw.dir}/folder.py`);
    assert.equal(await statusOf(load("folder")), 404);
    const entries = await index(gw);
    assert.match(entryOf(entries, "pathy")!.reason, /boom in pathy\.py/);
    assert.match(
      entryOf(entries, "link")!.reason,
      /'link\.py': outside the models directory$/,
    );
    // A directory is no model file: not listed (it was, and could never
    // load).
    assert.equal(entryOf(entries, "folder"), undefined);
    for (const e of entries) {
      assert.ok(!e.reason.includes(gw.dir), e.reason);
    }
  } finally {
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("Model repository extension: a load's config parameter sets options and workers; unknown fields and file overrides are refused", async () => {
  await using gw = await startGateway(
    { allowManage: true, workers: 2 },
    MODELS,
  );
  const load = (body: unknown) =>
    gw.fetch("/v2/repository/models/opts/load", post(body));
  const options = async () => {
    const res = await infer(gw, "opts");
    assert.equal(res.status, 200);
    return (await res.json()).outputs[0].data[0];
  };
  // Triton's model configuration: parameters' string values are the
  // options, one instance group's count the workers.
  const triton = await load({
    parameters: {
      config: JSON.stringify({
        name: "opts",
        parameters: { greeting: { string_value: "hi" } },
        instance_group: [{ count: 1, kind: "KIND_CPU" }],
      }),
    },
  });
  assert.equal(triton.status, 200);
  await triton.body?.cancel();
  assert.equal(await options(), "[('greeting', 'hi')]");
  const described = await (await gw.fetch("/v1/models/opts")).json();
  assert.equal(described.workers, 1);
  // pyproxy's own spec fields.
  assert.equal(
    await statusOf(load({
      parameters: {
        config: JSON.stringify({ options: { k: 2 }, timeout: 5000 }),
      },
    })),
    200,
  );
  assert.equal(await options(), "[('k', 2)]");
  assert.equal(
    (await (await gw.fetch("/v1/models/opts")).json()).timeout,
    5000,
  );
  // A parameter named __proto__ is an option like any other, in parameters
  // as in options (Bun dropped it: tests/bun/gateway_manage.test.ts).
  for (
    const config of [
      '{"parameters": {"__proto__": {"string_value": "p"}, "b": {"string_value": "q"}}}',
      '{"options": {"__proto__": "p", "b": "q"}}',
    ]
  ) {
    assert.equal(await statusOf(load({ parameters: { config } })), 200);
    assert.equal(await options(), "[('__proto__', 'p'), ('b', 'q')]", config);
  }
  // Without a config: the repository's (the file, no options).
  assert.equal(await statusOf(load({})), 200);
  assert.equal(await options(), "[]");

  const refused: Array<[unknown, RegExp]> = [
    [
      {
        parameters: {
          config: JSON.stringify({ max_batch_size: 8, input: [] }),
        },
      },
      /config fields "max_batch_size", "input" have no meaning here/,
    ],
    [{ parameters: { config: "{not json" } }, /parameters\.config is not JSON/],
    [{ parameters: { config: { name: "opts" } } }, /expected a string of JSON/],
    [
      { parameters: { config: JSON.stringify({ name: "other" }) } },
      /config name "other" is not the model's/,
    ],
    [
      {
        parameters: {
          config: JSON.stringify({
            instance_group: [{ count: 1, kind: "KIND_GPU" }],
          }),
        },
      },
      /config instance_group: expected one group/,
    ],
    [
      { parameters: { config: JSON.stringify({ workers: 0 }) } },
      /config workers: expected an integer from 1 to 1024/,
    ],
    [
      { parameters: { "file:1/model.py": "Y2xhc3M=" } },
      /parameter "file:1\/model\.py" overrides a model file, and the gateway never writes files from a request/,
    ],
    [
      { parameters: { other: 1 } },
      /unknown parameter "other" \(allowed: config\)/,
    ],
    [{ config: "{}" }, /unknown field "config" \(allowed: parameters\)/],
    [[1], /expected a JSON object/],
  ];
  for (const [body, pattern] of refused) {
    const res = await load(body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.match((await res.json()).error, pattern);
  }
  // Nothing refused changed the model.
  assert.equal(await options(), "[]");
});

Deno.test("Model repository extension: a configured model (pyproxy.json models) unloaded is listed, and loads again with its spec", async () => {
  await using gw = await startGateway({
    allowManage: true,
    models: [
      { name: "greeter", file: "opts.py", options: { greeting: "configured" } },
    ],
  }, MODELS);
  const names = (await index(gw)).map((e) => e.name);
  // The configured model, and the directory's files (not loaded: the list
  // is what serve loads).
  assert.ok(names.includes("greeter") && names.includes("opts"), names.join());
  assert.equal(entryOf(await index(gw), "opts")?.state, "UNAVAILABLE");
  assert.equal(
    await statusOf(gw.fetch("/v2/repository/models/greeter/unload", post())),
    200,
  );
  assert.deepEqual(entryOf(await index(gw), "greeter"), {
    name: "greeter",
    state: "UNAVAILABLE",
    reason: "unloaded",
  });
  assert.equal(
    await statusOf(gw.fetch("/v2/repository/models/greeter/load", post())),
    200,
  );
  const res = await infer(gw, "greeter");
  assert.deepEqual((await res.json()).outputs[0].data, [
    "[('greeting', 'configured')]",
  ]);
});

Deno.test("Model repository extension: a configured model with versions loads every configured version again, the first listed the default", async () => {
  await using gw = await startGateway({
    allowManage: true,
    models: [
      { name: "clf", file: "opts.py", version: "1", options: { v: "one" } },
      { name: "clf", file: "opts.py", version: "2", options: { v: "two" } },
    ],
  }, MODELS);
  const versions = async () =>
    (await index(gw)).filter((e) => e.name === "clf").map((e) =>
      [e.version, e.state].join(" ")
    );
  const answer = async (path: string) =>
    (await (await gw.fetch(path, post({ inputs: [] }))).json()).outputs[0]
      .data[0];
  assert.deepEqual(await versions(), ["1 READY", "2 READY"]);
  // Loaded: a load reloads each version (Triton's load_model of a loaded
  // model), the default kept.
  assert.equal(
    await statusOf(gw.fetch("/v2/repository/models/clf/load", post())),
    200,
  );
  assert.deepEqual(
    (await (await gw.fetch("/v1/models/clf/versions/2")).json()).version,
    2,
  );
  assert.equal(
    await statusOf(gw.fetch("/v2/repository/models/clf/unload", post())),
    200,
  );
  assert.deepEqual(await versions(), [" UNAVAILABLE"]);
  assert.equal(
    await statusOf(gw.fetch("/v2/repository/models/clf/load", post())),
    200,
  );
  assert.deepEqual(await versions(), ["1 READY", "2 READY"]);
  assert.equal(await answer("/v2/models/clf/infer"), "[('v', 'one')]");
  assert.equal(
    await answer("/v2/models/clf/versions/2/infer"),
    "[('v', 'two')]",
  );
  // A config applies to each version.
  const config = JSON.stringify({ instance_group: [{ count: 1 }] });
  assert.equal(
    await statusOf(gw.fetch(
      "/v2/repository/models/clf/load",
      post({ parameters: { config } }),
    )),
    200,
  );
  const described = await (await gw.fetch("/v1/models/clf/versions/2")).json();
  assert.equal(described.workers, 1);
  assert.equal(described.default, false);
});

Deno.test("Model repository extension: refused without --allow-manage (403, as PUT /v1/models) and without the token (401); listed in /v2's extensions only with it", async () => {
  {
    await using gw = await startGateway({}, MODELS);
    for (
      const path of [
        "/v2/repository/index",
        "/v2/repository/models/opts/load",
        "/v2/repository/models/opts/unload",
      ]
    ) {
      const res = await gw.fetch(path, post());
      assert.equal(res.status, 403, path);
      assert.deepEqual(await res.json(), {
        error:
          "Cannot manage models: model management is disabled (start with --allow-manage)",
      });
    }
    assert.equal(await statusOf(infer(gw, "opts")), 200);
    const { extensions } = await (await gw.fetch("/v2")).json();
    assert.deepEqual(extensions, [
      "binary_tensor_data",
      "classification",
      "statistics",
      "model_configuration",
    ]);
    // Nor does /openapi.json describe its routes.
    const doc = await (await gw.fetch("/openapi.json")).json();
    assert.ok(doc.paths["/v2/models/{name}/infer"] !== undefined);
    assert.deepEqual(
      Object.keys(doc.paths).filter((p) => p.includes("repository")),
      [],
    );
  }
  await using gw = await startGateway({ allowManage: true }, MODELS);
  for (
    const path of [
      "/v2/repository/index",
      "/v2/repository/models/opts/load",
      "/v2/repository/models/opts/unload",
    ]
  ) {
    const res = await fetch(`${gw.url}${path}`, post());
    assert.equal(res.status, 401, path);
    assert.equal(typeof (await res.json()).error, "string");
  }
  assert.equal(await statusOf(infer(gw, "opts")), 200);
  const { extensions } = await (await gw.fetch("/v2")).json();
  assert.deepEqual(extensions, [
    "binary_tensor_data",
    "classification",
    "model_repository",
    "statistics",
    "model_configuration",
  ]);
  const doc = await (await gw.fetch("/openapi.json")).json();
  assert.deepEqual(
    Object.keys(doc.paths).filter((p) => p.includes("repository")).sort(),
    [
      "/v2/repository/index",
      "/v2/repository/models/{name}/load",
      "/v2/repository/models/{name}/unload",
    ],
  );
});

Deno.test("Model repository extension: LOADING while a load runs, 1000 index calls meanwhile, a PUT and a load of one name settle in order", async () => {
  await using gw = await startGateway({ allowManage: true }, MODELS);
  // A model whose import waits for a file the test writes.
  const gate = `${gw.dir}/gate`;
  await Deno.writeTextFile(
    `${gw.dir}/gated.py`,
    `import os, time
while not os.path.exists(${JSON.stringify(gate)}):
    time.sleep(0.01)


class Gated:
    def execute(self, msg):
        return {"ok": [1]}
`,
  );
  await Deno.writeTextFile(gate, "");
  // Loaded once (the gate open), so that the next loads are reloads.
  assert.equal(
    await statusOf(gw.fetch("/v2/repository/models/gated/load", post())),
    200,
  );
  await Deno.remove(gate);
  const loading = gw.fetch("/v2/repository/models/gated/load", post());
  await until(
    async () => entryOf(await index(gw), "gated")?.state === "LOADING",
    "the index to show the load",
  );
  // A PUT of the same name, queued behind it.
  const put = gw.fetch("/v1/models/gated", {
    method: "PUT",
    body: JSON.stringify({ file: "gated.py" }),
  });
  const calls = await Promise.all(
    Array.from(
      { length: 1000 },
      () =>
        gw.fetch("/v2/repository/index", post()).then(async (res) => {
          const body = await res.json();
          return { status: res.status, state: entryOf(body, "gated")?.state };
        }),
    ),
  );
  assert.ok(calls.every((c) => c.status === 200));
  assert.ok(calls.every((c) => c.state === "LOADING"));
  await Deno.writeTextFile(gate, "");
  const [loaded, updated] = await Promise.all([loading, put]);
  assert.equal(loaded.status, 200);
  await loaded.body?.cancel();
  assert.equal(updated.status, 200);
  const body = await updated.json();
  // The load was version 2, the PUT after it 3.
  assert.equal(body.action, "updated");
  assert.equal(body.model.version, 3);
  assert.deepEqual(entryOf(await index(gw), "gated"), {
    name: "gated",
    version: "3",
    state: "READY",
    reason: "",
  });
});

Deno.test("Model repository extension: an unload while calls are in flight lets each of them settle once, then the model is gone", async () => {
  await using gw = await startGateway({ allowManage: true }, MODELS);
  // Each call marks that it runs, then sleeps.
  await Deno.writeTextFile(
    `${gw.dir}/marker.py`,
    `import time


class Marker:
    def execute(self, msg):
        with open(msg["started"], "w") as f:
            f.write("started")
        time.sleep(0.3)
        return {"slept": 0.3}
`,
  );
  assert.equal(
    await statusOf(gw.fetch("/v2/repository/models/marker/load", post())),
    200,
  );
  const marks = [0, 1, 2, 3].map((i) => `${gw.dir}/started-${i}`);
  const calls = marks.map((started) =>
    gw.fetch("/v1/models/marker/execute", {
      method: "POST",
      body: JSON.stringify({ started }),
    })
  );
  // Running in Python (the worker runs calls in threads), not just sent.
  await until(
    async () => {
      for (const m of marks) {
        if (!(await Deno.stat(m).then(() => true, () => false))) return false;
      }
      return true;
    },
    "the calls to run",
  );
  const unload = await gw.fetch(
    "/v2/repository/models/marker/unload",
    post(),
  );
  assert.equal(unload.status, 200);
  await unload.body?.cancel();
  const settled = await Promise.all(calls);
  for (const res of settled) {
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { slept: 0.3 });
  }
  assert.equal(await statusOf(infer(gw, "marker")), 404);
});

Deno.test("Model repository extension: a model whose import kills the workers is skipped at start and fails its load and PUT with a WorkerCrashedError naming the exit; the other models keep serving", async () => {
  // The crash quarantine off (loadCrashWindow 0): each of its deaths, within
  // 3 s of the other models' loads, held each of their replays 250 ms on
  // both restarted workers (~3 s a death, the test 7-8 s); what the pool
  // does with such deaths is pool_load_crash_test's and
  // gateway_load_crash_test's.
  await using gw = await startGateway({
    allowManage: true,
    workers: 2,
    limits: { loadCrashWindow: 0 },
  }, {
    ...MODELS,
    "crash.py": "import os\nos.write(2, b'no device\\n')\nos._exit(4)\n",
  });
  const crashed =
    /^Cannot add model 'crash': worker w[12] \(pid \d+\) died while loading it: exited with code 4 \(last stderr line: "no device"\)/;
  // Skipped at start, with its reason.
  const skipped = entryOf(await index(gw), "crash");
  assert.equal(skipped?.state, "UNAVAILABLE");
  assert.match(skipped!.reason, crashed);
  const load = await gw.fetch("/v2/repository/models/crash/load", post());
  assert.equal(load.status, 502);
  assert.match((await load.json()).error, crashed);
  const put = await gw.fetch("/v1/models/crash", {
    method: "PUT",
    body: JSON.stringify({ file: "crash.py" }),
  });
  assert.equal(put.status, 502);
  const { error } = await put.json();
  assert.equal(error.type, "WorkerCrashedError");
  assert.match(error.message, crashed);
  assert.equal(await statusOf(gw.fetch("/v1/models/crash")), 404);
  // Not replayed: the workers come back and serve the other models.
  const allReady = () =>
    gw.pool.status().workers.every((w) => w.state === "ready");
  if (!allReady()) {
    await new Promise<void>((resolve) => {
      const off = gw.pool.on(() => allReady() && (off(), resolve()));
    });
  }
  assert.equal(await statusOf(infer(gw, "opts")), 200);
  assert.deepEqual(
    gw.pool.status().workers.map((w) => w.failedReason),
    [null, null],
  );
});
