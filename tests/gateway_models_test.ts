/**
 * Model management through a real gateway and real Python workers:
 * versions across worker restarts, concurrent PUTs, the PUT body's
 * validation, optional declared inputs, a gateway over a library pool
 * following the models changed on the pool directly.
 */
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { startGateway, until, writeStickyModel } from "./_gateway_harness.ts";
import { modelsDir, nextEvent, readyAgain } from "./_pool_harness.ts";
import { Pool } from "../src/pool.ts";
import { createGateway } from "../src/gateway/app.ts";

const put = (body: unknown): RequestInit => ({
  method: "PUT",
  body: JSON.stringify(body),
});
const post = (body: unknown): RequestInit => ({
  method: "POST",
  body: JSON.stringify(body),
});

Deno.test("PUT /v1/models/{name}: version keeps growing across a worker restart and a delete", async () => {
  await using gw = await startGateway({ workers: 1, allowManage: true });
  const versions: number[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await gw.fetch("/v1/models/m4", put({ file: "echo.py" }));
    assert.equal(res.status, i === 0 ? 201 : 200);
    versions.push((await res.json()).model.version);
  }
  assert.deepEqual(versions, [1, 2, 3]);
  // The Python process counts versions itself: a restarted one starts at 1.
  const worker = gw.pool.status().workers[0]!;
  Deno.kill(worker.pid!, "SIGKILL");
  await until(() => {
    const w = gw.pool.status().workers[0]!;
    return Promise.resolve(
      w.restarts === worker.restarts + 1 && w.state === "ready" &&
        w.pid !== worker.pid,
    );
  }, "the worker to restart");
  let res = await gw.fetch("/v1/models/m4", put({ file: "echo.py" }));
  assert.equal(res.status, 200);
  const updated = await res.json();
  assert.equal(updated.action, "updated");
  assert.equal(updated.model.version, 4);
  res = await gw.fetch("/v1/models/m4");
  assert.equal((await res.json()).version, 4);
  const { models } = await (await gw.fetch("/v1/models")).json();
  assert.equal(
    models.find((m: { name: string }) => m.name === "m4").version,
    4,
  );
  // A name deleted and added again does not reuse its old versions.
  res = await gw.fetch("/v1/models/m4", { method: "DELETE" });
  assert.equal(res.status, 200);
  await res.body?.cancel();
  res = await gw.fetch("/v1/models/m4", put({ file: "echo.py" }));
  assert.equal(res.status, 201);
  assert.equal((await res.json()).model.version, 5);
  // A failed update leaves the version alone.
  res = await gw.fetch("/v1/models/m4", put({ file: "boom.py", class: "No" }));
  assert.equal(res.status, 422);
  await res.body?.cancel();
  res = await gw.fetch("/v1/models/m4", put({ file: "echo.py" }));
  assert.equal((await res.json()).model.version, 6);
});

Deno.test("PUT /v1/models/{name}: concurrent PUTs of a new name add it once and update it after", async () => {
  await using gw = await startGateway({ workers: 2, allowManage: true });
  const responses = await Promise.all(
    Array.from(
      { length: 5 },
      () => gw.fetch("/v1/models/race", put({ file: "echo.py" })),
    ),
  );
  const bodies = await Promise.all(responses.map((r) => r.json()));
  const statuses = responses.map((r) => r.status).sort();
  assert.deepEqual(statuses, [200, 200, 200, 200, 201], JSON.stringify(bodies));
  assert.deepEqual(
    bodies.map((b) => b.action).sort(),
    ["added", "updated", "updated", "updated", "updated"],
  );
  assert.deepEqual(
    bodies.map((b) => b.model.version).sort(),
    [1, 2, 3, 4, 5],
  );
  const res = await gw.fetch("/v1/models/race/execute", post({ a: 1 }));
  assert.deepEqual(await res.json(), { a: 1 });
});

Deno.test("PUT /v1/models/{name}: a bad body is a 400 naming the field", async () => {
  await using gw = await startGateway({ allowManage: true });
  const cases: Array<[unknown, string]> = [
    [{ file: "echo.py", options: [1] }, "options: expected an object"],
    [{ file: "echo.py", options: null }, "options: expected an object"],
    [{ file: "echo.py", options: "x" }, "options: expected an object"],
    [{}, "file: is required"],
    [{ options: {} }, "file: is required"],
    [{ file: 1 }, "file: expected a file path"],
    [{ file: "echo.py", extra: 1 }, "extra: unknown field"],
    [
      [{ file: "echo.py" }],
      "expected {file, options?, class?, timeout?, workers?}",
    ],
    [null, "expected {file, options?, class?, timeout?, workers?}"],
  ];
  for (const [body, message] of cases) {
    const res = await gw.fetch("/v1/models/bad", put(body));
    assert.equal(res.status, 400, JSON.stringify(body));
    const { error } = await res.json();
    assert.equal(error.type, "ValidationError", JSON.stringify(body));
    assert.ok(
      error.message.startsWith(`Cannot load model 'bad': ${message}`),
      `${JSON.stringify(body)}: ${error.message}`,
    );
  }
  const { models } = await (await gw.fetch("/v1/models")).json();
  assert.ok(!models.some((m: { name: string }) => m.name === "bad"));
});

Deno.test("PUT /v1/models/{name}: a symlink out of the models directory is refused without naming the directory", async () => {
  const outside = await Deno.makeTempDir({ prefix: "pyproxy-outside-" });
  try {
    await Deno.writeTextFile(
      `${outside}/evil.py`,
      "class Evil:\n    def execute(self, msg):\n        return msg\n",
    );
    // The models directory as configured, then through a symlink (the Python
    // server names its real path).
    const real = `${outside}/models`;
    await Deno.mkdir(real);
    await Deno.symlink(real, `${outside}/models-link`);
    for (const modelsDir of [undefined, `${outside}/models-link`]) {
      await using gw = await startGateway(
        modelsDir === undefined
          ? { allowManage: true }
          : { allowManage: true, modelsDir },
      );
      const dir = modelsDir ?? gw.dir;
      await Deno.symlink(`${outside}/evil.py`, `${dir}/link.py`);
      const res = await gw.fetch("/v1/models/link", put({ file: "link.py" }));
      assert.equal(res.status, 400, dir);
      const { error } = await res.json();
      assert.equal(error.type, "PathError");
      assert.match(
        error.message,
        /'link\.py': outside the models directory$/,
      );
      for (const path of [gw.dir, outside]) {
        assert.ok(!error.message.includes(path), error.message);
      }
    }
  } finally {
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("POST execute: a model's error naming its own files does not name the models directory (unless --debug)", async () => {
  const outside = await Deno.makeTempDir({ prefix: "pyproxy-outside-" });
  try {
    // Configured through a symlink: the Python server names the real path.
    const real = `${outside}/models`;
    await Deno.mkdir(real);
    await Deno.symlink(real, `${outside}/models-link`);
    await Deno.writeTextFile(
      `${real}/opener.py`,
      "import os\n\n\nclass Opener:\n    def execute(self, msg):\n" +
        "        open(os.path.join(os.path.dirname(__file__), 'weights.bin'))\n",
    );
    for (const debug of [false, true]) {
      // Every *.py of the models directory is loaded at start.
      await using gw = await startGateway({
        modelsDir: `${outside}/models-link`,
        debug,
      });
      const res = await gw.fetch("/v1/models/opener/execute", {
        method: "POST",
        body: "{}",
      });
      assert.equal(res.status, 422);
      const { error } = await res.json();
      assert.equal(error.type, "PythonError");
      assert.equal(error.exception, "FileNotFoundError");
      if (debug) {
        assert.ok(error.message.includes(`${real}/weights.bin`), error.message);
      } else {
        assert.match(error.message, /: 'weights\.bin'$/);
        assert.ok(!error.message.includes(outside), error.message);
      }
    }
  } finally {
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("PUT /v1/models/{name}: a symlink out of the directory gets one answer whether its target exists or not", async () => {
  const outside = await Deno.makeTempDir({ prefix: "pyproxy-outside-" });
  try {
    await Deno.writeTextFile(`${outside}/there.py`, "class M:\n    pass\n");
    await using gw = await startGateway({ allowManage: true });
    await Deno.symlink(`${outside}/there.py`, `${gw.dir}/to_there.py`);
    await Deno.symlink(`${outside}/not_there.py`, `${gw.dir}/to_nothing.py`);
    const answers = [];
    for (const file of ["to_there.py", "to_nothing.py"]) {
      const res = await gw.fetch("/v1/models/probe", put({ file }));
      const { error } = await res.json();
      answers.push([res.status, error.type, error.message.replace(file, "F")]);
    }
    assert.deepEqual(answers[0], [
      400,
      "PathError",
      "Cannot add model 'probe' on worker w1: Cannot resolve model file 'F': outside the models directory",
    ]);
    assert.deepEqual(answers[1], answers[0]);
    // Inside the directory, a missing file or a directory is still a 404, and nothing is added.
    await Deno.mkdir(`${gw.dir}/folder.py`);
    await Deno.symlink(`${gw.dir}/gone.py`, `${gw.dir}/to_gone.py`);
    for (const file of ["gone.py", "folder.py", "to_gone.py", "sub/x.py"]) {
      const res = await gw.fetch("/v1/models/probe", put({ file }));
      assert.equal(res.status, 404, file);
      const { error } = await res.json();
      assert.equal(error.type, "ModelFileNotFound", file);
      assert.equal(
        error.message,
        `Cannot load model 'probe': no file "${file}" in the models directory`,
      );
    }
    const { models } = await (await gw.fetch("/v1/models")).json();
    assert.ok(!models.some((m: { name: string }) => m.name === "probe"));
  } finally {
    await Deno.remove(outside, { recursive: true });
  }
});

Deno.test("POST execute: optional declared inputs (cache_counter's ttl) may be left out, but not mistyped", async () => {
  await using gw = await startGateway();
  const { models } = await (await gw.fetch("/v1/models")).json();
  assert.deepEqual(
    models.find((m: { name: string }) => m.name === "cache_counter").inputs,
    { key: "string", ttl: "number?" },
  );
  let res = await gw.fetch(
    "/v1/models/cache_counter/execute",
    post({ key: "z" }),
  );
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { key: "counter:z", count: 1 });
  res = await gw.fetch(
    "/v1/models/cache_counter/execute",
    post({ key: "z", ttl: 60 }),
  );
  assert.deepEqual(await res.json(), { key: "counter:z", count: 2 });
  res = await gw.fetch(
    "/v1/models/cache_counter/execute",
    post({ key: "z", ttl: "soon" }),
  );
  assert.equal(res.status, 400);
  assert.equal(
    (await res.json()).error.message,
    "Cannot execute model 'cache_counter': ttl: expected a number",
  );
  res = await gw.fetch("/v1/models/cache_counter/execute", post({ ttl: 1 }));
  assert.equal(res.status, 400);
  assert.equal(
    (await res.json()).error.message,
    "Cannot execute model 'cache_counter': key: is required",
  );
});

Deno.test("PUT /v1/models/{name}: a model whose import hangs gets a 504 after limits.loadTimeout and does not lock its name", async () => {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { test: (record: LogRecord) => void records.push(record) },
    loggers: [
      {
        category: ["pyproxy", "gateway"],
        lowestLevel: "warning",
        sinks: ["test"],
      },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  try {
    await hangingPut(records);
  } finally {
    await reset();
  }
});

Deno.test("A restarted worker whose model replay hangs is killed after limits.loadTimeout, not left restarting for ever", async () => {
  await using gw = await startGateway({
    workers: 1,
    allowManage: true,
    // Long enough for the sticky model's own load (a few ms), short enough
    // not to wait a second for the hung one's.
    limits: { loadTimeout: 500 },
  });
  const flag = await writeStickyModel(gw.dir);
  const added = await gw.fetch("/v1/models/sticky", put({ file: "sticky.py" }));
  assert.equal(added.status, 201);
  await added.body?.cancel();
  // The model now hangs when loaded: the restart's replay must not wait for ever.
  await Deno.writeTextFile(flag, "");
  const timedOut = nextEvent(
    gw.pool,
    "worker-exit",
    (ev) => ev.reason.includes("timed out"),
    10_000,
  );
  const pid = gw.pool.status().workers[0]!.pid!;
  Deno.kill(pid, "SIGKILL");
  const exit = await timedOut;
  assert.match(exit.reason, /^start failed: .*timed out after 500 ms/);
  // Once the model loads again, the next restart serves.
  await Deno.remove(flag);
  await readyAgain(gw.pool, "w1");
  const call = await gw.fetch("/v1/models/sticky/execute", post({ a: 1 }));
  assert.deepEqual(await call.json(), { a: 1 });
});

async function hangingPut(records: LogRecord[]): Promise<void> {
  const timeout = 500;
  await using gw = await startGateway({
    workers: 1,
    allowManage: true,
    limits: { loadTimeout: timeout },
  });
  // What the start logged (management without a token) is not the PUT's.
  records.splice(0);
  await Deno.writeTextFile(
    `${gw.dir}/stall.py`,
    "import time\ntime.sleep(20)\n\n\nclass Stall:\n    def execute(self, msg):\n        return 1\n",
  );
  const res = await gw.fetch("/v1/models/stall", put({ file: "stall.py" }));
  assert.equal(res.status, 504);
  const { error } = await res.json();
  assert.equal(error.type, "TimeoutError");
  // One line in the log naming the request and why, without a stack.
  assert.deepEqual(
    records.map((r) => [r.rawMessage, r.properties.path, r.properties.status]),
    [[
      "{method} {path} failed with {status}: {message}",
      "/v1/models/stall",
      504,
    ]],
  );
  assert.match(
    String(records[0]!.properties.message),
    new RegExp(`timed out after ${timeout} ms`),
  );
  // Nothing was recorded, and the name takes further PUTs and DELETEs (they
  // queued behind the hung one, for ever, before).
  const gone = await gw.fetch("/v1/models/stall", { method: "DELETE" });
  assert.equal(gone.status, 404);
  assert.equal((await gone.json()).error.type, "ModelNotFoundError");
  const added = await gw.fetch("/v1/models/stall", put({ file: "echo.py" }));
  assert.equal(added.status, 201);
  await added.body?.cancel();
  const call = await gw.fetch("/v1/models/stall/execute", post({ a: 1 }));
  assert.deepEqual(await call.json(), { a: 1 });
}

Deno.test("GET /v1/models shows the names of a model's options, their values only with debug", async () => {
  const dsn = "postgres://app:hunter2-pw@db.internal/prod";
  for (const debug of [false, true]) {
    await using gw = await startGateway({
      workers: 1,
      allowManage: true,
      debug,
      models: [{ name: "db", file: "echo.py", options: { dsn, k: 1 } }],
    });
    const put = await gw.fetch(
      "/v1/models/db2",
      {
        method: "PUT",
        body: JSON.stringify({ file: "echo.py", options: { dsn } }),
      },
    );
    assert.equal(put.status, 201);
    const bodies = {
      put: await put.text(),
      list: await (await gw.fetch("/v1/models")).text(),
      one: await (await gw.fetch("/v1/models/db")).text(),
      status: await (await gw.fetch("/v1/status")).text(),
    };
    for (const [route, text] of Object.entries(bodies)) {
      assert.equal(text.includes("hunter2"), debug, `${route}: ${text}`);
    }
    const one = JSON.parse(bodies.one);
    assert.deepEqual(one.optionKeys, ["dsn", "k"]);
    assert.deepEqual(one.options, debug ? { dsn, k: 1 } : undefined);
    assert.deepEqual(JSON.parse(bodies.put).model.optionKeys, ["dsn"]);
    const models = JSON.parse(bodies.list).models as Array<
      { name: string; optionKeys?: string[] }
    >;
    assert.deepEqual(models.find((m) => m.name === "db")?.optionKeys, [
      "dsn",
      "k",
    ]);
  }
});

Deno.test("serve skips a helper module of the models directory, saying to name it _<file>", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-gw-test-" });
  try {
    await Deno.writeTextFile(
      `${dir}/ok.py`,
      "import util\n\nclass Model:\n    def execute(self, msg):\n        return util.twice(msg['x'])\n",
    );
    await Deno.writeTextFile(
      `${dir}/util.py`,
      "def twice(x):\n    return 2 * x\n",
    );
    const { resolveConfig, serve } = await import("../mod.ts");
    const config = resolveConfig({
      cwd: dir,
      cli: { port: 0, workers: 1, modelsDir: dir, allowManage: true },
    });
    const headers = { authorization: `Bearer ${config.token}` };
    const server = await serve(config);
    try {
      const res = await fetch(`${server.url}/v1/models/ok/execute`, {
        method: "POST",
        body: '{"x": 21}',
        headers,
      });
      assert.equal(await res.json(), 42);
      assert.deepEqual(server.skippedModels.map((s) => s.name), ["util"]);
      assert.match(
        server.skippedModels[0]!.error,
        /no class with an execute\(msg\) or execute_batch\(msgs\) method; if util\.py is a helper module, name it _util\.py \(files whose names start with _ are not loaded as models\)$/,
      );
      // The repository index says why, not just "unloaded".
      const index = await (await fetch(`${server.url}/v2/repository/index`, {
        method: "POST",
        headers,
      })).json();
      const util = index.find((m: { name: string }) => m.name === "util");
      assert.equal(util.state, "UNAVAILABLE");
      assert.match(util.reason, /if util\.py is a helper module/);
      assert.ok(!util.reason.includes(dir), util.reason);
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serve skips a models-directory file whose name is not a model name, saying how to fix it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-gw-test-" });
  try {
    const model =
      "class Model:\n    def execute(self, msg):\n        return 1\n";
    for (const name of ["ok", "my model", "2fast", "x+y"]) {
      await Deno.writeTextFile(`${dir}/${name}.py`, model);
    }
    const { resolveConfig, serve } = await import("../mod.ts");
    const config = resolveConfig({
      cwd: dir,
      cli: { port: 0, workers: 1, modelsDir: dir, allowManage: true },
    });
    const headers = { authorization: `Bearer ${config.token}` };
    const server = await serve(config);
    try {
      const listed = await (await fetch(`${server.url}/v1/models`, { headers }))
        .json();
      // Loaded, these would be served but could never be updated or
      // removed: PUT and DELETE refuse their names.
      assert.deepEqual(
        listed.models.map((m: { name: string }) => m.name),
        ["ok"],
      );
      assert.deepEqual(
        server.skippedModels.map((s) => s.name),
        ["2fast", "my model", "x+y"],
      );
      for (const s of server.skippedModels) {
        assert.match(
          s.error,
          /^".*\.py" does not name a model: expected 1-128 characters of letters, digits, _ \. - \(not starting with a digit, \. or -\); rename the file, or list it under "models" in pyproxy\.json with a name$/,
        );
      }
      const res = await fetch(`${server.url}/v1/models/2fast`, {
        ...put({ file: "2fast.py" }),
        headers,
      });
      assert.equal(res.status, 400);
      assert.match((await res.json()).error.message, /expected 1-128/);
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("createGateway over a pool follows the pool's model changes: an update or a remove made on the pool directly shows in the routes", async () => {
  // Two versions of one model: what it declares (inputs, timeout_ms,
  // close_timeout_ms) differs, so a stale view of either shows.
  const v1 = `class V1:
    """First version."""
    inputs = {"x": "number"}
    timeout_ms = 5000

    def execute(self, msg):
        return {"v": 1}
`;
  const v2 = `import time


class V2:
    """Second version."""
    inputs = {"seconds": "number"}
    timeout_ms = 150
    close_timeout_ms = 2500

    def execute(self, msg):
        time.sleep(msg["seconds"])
        return {"v": 2}

    def close(self):
        pass
`;
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/v1.py`, v1);
  await Deno.writeTextFile(`${dir.path}/v2.py`, v2);
  const pool = await Pool.start({ workers: 1, modelsDir: dir.path });
  try {
    const app = createGateway(pool, {
      port: () => 8000,
      allowManage: true,
      insecureNoAuth: true,
      requestTimeout: 10_000,
    });
    const ask = (path: string, init: RequestInit = {}) =>
      Promise.resolve(app.fetch(
        new Request(`http://127.0.0.1:8000${path}`, {
          ...init,
          headers: { host: "127.0.0.1:8000" },
        }),
      ));
    const described = async () => {
      const res = await ask("/v1/models/m");
      return res.status === 200 ? await res.json() : res.status;
    };
    assert.equal(
      (await ask("/v1/models/m", put({ file: "v1.py" }))).status,
      201,
    );
    assert.equal((await described()).class, "V1");

    await pool.updateModel("m", { file: "v2.py" });
    const model = await described();
    assert.deepEqual(
      [
        model.class,
        model.version,
        model.inputs,
        model.timeout,
        model.timeoutSource,
        model.closeTimeoutMs,
      ],
      ["V2", 2, { seconds: "number" }, 150, "class", 2500],
    );
    const listed = (await (await ask("/v1/models")).json()).models;
    // GET of one adds its readiness (KServe V1, TF Serving); the list does not.
    const { ready, model_version_status: status, ...description } = model;
    assert.deepEqual([ready, status[0].version], [true, "2"]);
    assert.deepEqual(listed, [description]);
    // Execute checks the new inputs, and times out at the new 150 ms.
    const bad = await ask("/v1/models/m/execute", post({ x: 1 }));
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.type, "ValidationError");
    const t0 = Date.now();
    const slow = await ask("/v1/models/m/execute", post({ seconds: 2 }));
    await slow.body?.cancel();
    assert.equal(slow.status, 504);
    assert.ok(Date.now() - t0 < 1500, `504 after ${Date.now() - t0} ms`);
    const doc = await (await ask("/openapi.json")).json();
    // The description's schema names the new field too.
    assert.equal(
      doc.components.schemas.ModelDescription.properties.closeTimeoutMs.type,
      "integer",
    );
    const openapi = JSON.stringify(doc);
    assert.ok(openapi.includes("Second version."), "openapi shows V2's doc");
    assert.ok(!openapi.includes("First version."), "openapi still shows V1");

    // Removed on the pool: gone from the routes; added back there as V1,
    // described as V1 (with the next version), not as the V2 it replaced.
    await pool.removeModel("m");
    assert.equal(await described(), 404);
    assert.deepEqual((await (await ask("/v1/models")).json()).models, []);
    await pool.addModel("m", { file: "v1.py" });
    const again = await described();
    assert.deepEqual(
      [
        again.class,
        again.version,
        again.inputs,
        again.timeout,
        again.closeTimeoutMs,
      ],
      ["V1", 3, { x: "number" }, 5000, undefined],
    );
    const ok = await ask("/v1/models/m/execute", post({ x: 1 }));
    assert.deepEqual([ok.status, await ok.json()], [200, { v: 1 }]);
    // And through the gateway again: one version more, not two.
    assert.equal(
      (await ask("/v1/models/m", put({ file: "v2.py" }))).status,
      200,
    );
    assert.equal((await described()).version, 4);
  } finally {
    await pool.close();
  }
});
