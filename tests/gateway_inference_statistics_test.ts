/**
 * Triton's statistics and model configuration extensions through the real
 * gateway and real Python workers (docs/gateway.md, "Statistics" and
 * "Model configuration"): counts by outcome and version, a batching
 * model's batches and configuration, declared inputs as the
 * configuration's tensors, 404s, auth, removed models, calls in flight,
 * a worker's crash.
 */
import assert from "node:assert/strict";
import { startGateway, until } from "./_gateway_harness.ts";

const MODELS: Record<string, string> = {
  "typed.py": `class Typed:
    inputs = {"x": "number", "v": {"type": "array", "items": "integer"}, "tag": "string?", "o": "object?"}
    outputs = {"y": {"type": "array", "items": {"type": "number", "datatype": "FP32"}}, "ok": "boolean"}

    def execute(self, msg):
        if msg["x"] < 0:
            raise ValueError("negative")
        return {"y": [msg["x"]], "ok": True}
`,
  "batched.py": `class Batched:
    batch_size = 4
    batch_delay_ms = 20
    inputs = {"x": "number"}

    def execute_batch(self, msgs):
        return [{"y": m["x"]} for m in msgs]
`,
  "hold.py": `import os
import time


class Hold:
    """Writes msg["started"], then waits for msg["release"] to exist."""

    def execute(self, msg):
        with open(msg["started"] + ".tmp", "w") as f:
            f.write("started")
        os.replace(msg["started"] + ".tmp", msg["started"])
        while not os.path.exists(msg["release"]):
            time.sleep(0.005)
        return {"held": True}
`,
  "crasher.py": `import os


class Crasher:
    def execute(self, msg):
        if msg.get("die"):
            os._exit(3)
        return {"alive": True}
`,
  "tagged.py": `class Tagged:
    def __init__(self, options):
        self.v = options["v"]

    def execute(self, msg):
        if msg.get("fail"):
            raise ValueError("asked to")
        return {"v": self.v}
`,
};

const TOKEN = "stats-token-0123456789";

interface Stat {
  count: number;
  ns: number;
}
interface ModelStat {
  name: string;
  version: string;
  last_inference: number;
  inference_count: number;
  execution_count: number;
  inference_stats: Record<string, Stat>;
  batch_stats: Array<
    {
      batch_size: number;
      compute_input: Stat;
      compute_infer: Stat;
      compute_output: Stat;
    }
  >;
}

Deno.test("Inference statistics: counts by outcome over /v1 and /v2, last_inference moving, per version, 404s, auth, a removed model, POST config refused", async (t) => {
  await using gw = await startGateway(
    { token: TOKEN, allowManage: true, workers: 1 },
    MODELS,
  );
  const post = (path: string, body: unknown) =>
    gw.fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const infer = (model: string, x: number) =>
    post(`/v2/models/${model}/infer`, {
      inputs: [
        { name: "x", shape: [], datatype: "FP64", data: [x] },
        { name: "v", shape: [1], datatype: "INT64", data: [1] },
      ],
    });
  const stats = async (path: string): Promise<ModelStat[]> => {
    const res = await gw.fetch(path);
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.deepEqual(Object.keys(body), ["model_stats"]);
    return body.model_stats;
  };
  const one = async (path: string): Promise<ModelStat> => {
    const list = await stats(path);
    assert.equal(list.length, 1, JSON.stringify(list));
    return list[0]!;
  };

  await t.step("the server metadata lists both extensions", async () => {
    const meta = await (await gw.fetch("/v2")).json();
    assert.ok(meta.extensions.includes("statistics"));
    assert.ok(meta.extensions.includes("model_configuration"));
  });

  await t.step("a model never called: zeros, listed", async () => {
    const s = await one("/v2/models/typed/stats");
    assert.equal(s.name, "typed");
    assert.equal(s.version, "1");
    assert.equal(s.last_inference, 0);
    assert.equal(s.inference_count, 0);
    assert.equal(s.execution_count, 0);
    for (const [phase, d] of Object.entries(s.inference_stats)) {
      assert.deepEqual(d, { count: 0, ns: 0 }, phase);
    }
    assert.deepEqual(s.batch_stats, []);
    const all = await stats("/v2/models/stats");
    assert.ok(all.some((m) => m.name === "typed"));
  });

  await t.step("N successes and M failures, over /v2 and /v1", async () => {
    const before = Date.now();
    for (let i = 0; i < 3; i++) {
      const res = await infer("typed", i);
      assert.equal(res.status, 200, await res.text());
    }
    // Through /v1 too: the statistics are the model's, whatever the route.
    let res = await post("/v1/models/typed/execute", {
      x: 5,
      v: [1],
    });
    assert.equal(res.status, 200, await res.text());
    for (let i = 0; i < 2; i++) {
      res = await infer("typed", -1);
      assert.ok(res.status >= 400, `${res.status}`);
      await res.body?.cancel();
    }
    // A 400 (an input missing) is a failure too.
    res = await post("/v2/models/typed/infer", { inputs: [] });
    assert.equal(res.status, 400);
    await res.body?.cancel();
    const s = await one("/v2/models/typed/stats");
    const { success, fail, compute_infer, queue } = s.inference_stats;
    assert.equal(success!.count, 4);
    assert.equal(fail!.count, 3);
    assert.ok(success!.ns > 0 && fail!.ns > 0);
    assert.ok(Number.isInteger(success!.ns));
    assert.equal(s.inference_count, 4);
    assert.equal(s.execution_count, 4);
    assert.deepEqual(compute_infer, success);
    assert.deepEqual(queue, { count: 0, ns: 0 });
    assert.ok(s.last_inference >= before - 1, `${s.last_inference}`);
    assert.ok(s.last_inference <= Date.now());
    // The same through the version's path, and in the list of all.
    assert.deepEqual(
      { ...await one("/v2/models/typed/versions/1/stats") },
      s,
    );
    const all = await stats("/v2/models/stats");
    assert.deepEqual(all.find((m) => m.name === "typed"), s);
  });

  await t.step("last_inference moves with each call", async () => {
    const first = (await one("/v2/models/typed/stats")).last_inference;
    await until(
      () => Promise.resolve(Date.now() > first + 2),
      "the clock to move",
    );
    const res = await infer("typed", 1);
    await res.body?.cancel();
    const next = (await one("/v2/models/typed/stats")).last_inference;
    assert.ok(next > first, `${next} > ${first}`);
  });

  await t.step(
    "unknown models and versions: 404 in the protocol's shape",
    async () => {
      for (
        const path of [
          "/v2/models/nope/stats",
          "/v2/models/typed/versions/7/stats",
          "/v2/models/nope/config",
          "/v2/models/typed/versions/7/config",
          `/v2/models/${"x".repeat(300)}/stats`,
        ]
      ) {
        const res = await gw.fetch(path);
        const body = await res.json();
        assert.equal(res.status, 404, path);
        assert.deepEqual(Object.keys(body), ["error"]);
        assert.match(body.error, /^Cannot find model/);
      }
    },
  );

  await t.step("the token is asked for, as on every /v2 route", async () => {
    for (
      const path of [
        "/v2/models/stats",
        "/v2/models/typed/stats",
        "/v2/models/typed/config",
      ]
    ) {
      const res = await fetch(`${gw.url}${path}`);
      const body = await res.json();
      assert.equal(res.status, 401, path);
      assert.equal(typeof body.error, "string");
    }
  });

  await t.step(
    "a client's X-Request-Id comes back, as on every route",
    async () => {
      for (const path of ["/v2/models/stats", "/v2/models/typed/config"]) {
        const res = await gw.fetch(path, {
          headers: { "x-request-id": "stats-req-1" },
        });
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("x-request-id"), "stats-req-1");
        await res.body?.cancel();
      }
    },
  );

  await t.step(
    "POST .../config: a 405 saying how a model's configuration changes",
    async () => {
      const res = await post("/v2/models/typed/config", { max_batch_size: 8 });
      const body = await res.json();
      assert.equal(res.status, 405);
      assert.equal(res.headers.get("allow"), "GET, HEAD");
      assert.match(body.error, /PUT \/v1\/models\/\{name\}/);
    },
  );

  await t.step(
    "per version: each version its own, the model's path lists them all",
    async () => {
      for (const [v, tag] of [["1", "one"], ["2", "two"]]) {
        const res = await gw.fetch(`/v1/models/ranker/versions/${v}`, {
          method: "PUT",
          body: JSON.stringify({ file: "tagged.py", options: { v: tag } }),
        });
        assert.equal(res.status, 201, await res.text());
      }
      for (let i = 0; i < 2; i++) {
        const res = await post("/v1/models/ranker/versions/2/execute", {});
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      let res = await post("/v2/models/ranker/versions/2/infer", {
        inputs: [{ name: "fail", shape: [], datatype: "BOOL", data: [true] }],
      });
      assert.ok(res.status >= 400, `${res.status}`);
      await res.body?.cancel();
      // The default version (1) once.
      res = await post("/v1/models/ranker/execute", {});
      assert.equal(res.status, 200);
      await res.body?.cancel();
      const both = await stats("/v2/models/ranker/stats");
      assert.deepEqual(both.map((s) => s.version), ["1", "2"]);
      assert.equal(both[0]!.inference_stats.success!.count, 1);
      assert.equal(both[1]!.inference_stats.success!.count, 2);
      assert.equal(both[1]!.inference_stats.fail!.count, 1);
      const v2 = await one("/v2/models/ranker/versions/2/stats");
      assert.deepEqual(v2, both[1]);
      const config =
        await (await gw.fetch("/v2/models/ranker/versions/2/config"))
          .json();
      assert.equal(config.name, "ranker");
      assert.deepEqual(config.version_policy, { all: {} });
    },
  );

  await t.step("a model whose name has dots and dashes", async () => {
    let res = await gw.fetch("/v1/models/my.model-v_2", {
      method: "PUT",
      body: JSON.stringify({ file: "tagged.py", options: { v: "odd" } }),
    });
    assert.equal(res.status, 201, await res.text());
    res = await post("/v2/models/my.model-v_2/infer", { inputs: [] });
    assert.equal(res.status, 200, await res.clone().text());
    await res.body?.cancel();
    const s = await one("/v2/models/my.model-v_2/stats");
    assert.equal(s.name, "my.model-v_2");
    assert.equal(s.inference_stats.success!.count, 1);
    const config = await (await gw.fetch("/v2/models/my.model-v_2/config"))
      .json();
    assert.equal(config.name, "my.model-v_2");
  });

  await t.step(
    "a removed version and model: gone from the statistics, from zero when added again",
    async () => {
      let res = await gw.fetch("/v1/models/ranker/versions/2", {
        method: "DELETE",
      });
      assert.equal(res.status, 200, await res.text());
      assert.deepEqual(
        (await stats("/v2/models/ranker/stats")).map((s) => s.version),
        ["1"],
      );
      res = await gw.fetch("/v2/models/ranker/versions/2/stats");
      assert.equal(res.status, 404);
      await res.body?.cancel();
      res = await gw.fetch("/v1/models/ranker", { method: "DELETE" });
      assert.equal(res.status, 200, await res.text());
      res = await gw.fetch("/v2/models/ranker/stats");
      assert.equal(res.status, 404);
      await res.body?.cancel();
      assert.ok(
        !(await stats("/v2/models/stats")).some((s) => s.name === "ranker"),
      );
      res = await gw.fetch("/v1/models/ranker/versions/2", {
        method: "PUT",
        body: JSON.stringify({ file: "tagged.py", options: { v: "again" } }),
      });
      assert.equal(res.status, 201, await res.text());
      const again = await one("/v2/models/ranker/stats");
      assert.equal(again.inference_stats.success!.count, 0);
      assert.equal(again.inference_stats.fail!.count, 0);
    },
  );
});

Deno.test("Inference statistics: a batching model's batch_stats and configuration, declared inputs as the configuration's tensors", async () => {
  await using gw = await startGateway(
    { workers: 1, allowManage: true },
    MODELS,
  );
  const call = (x: number) =>
    gw.fetch("/v1/models/batched/execute", {
      method: "POST",
      body: JSON.stringify({ x }),
    }).then(async (res) => {
      assert.equal(res.status, 200, await res.clone().text());
      return (await res.json()).y;
    });
  // One call alone (a batch of 1), then eight at once: the first goes at
  // once, the others gather behind it, at most 4 a batch.
  assert.equal(await call(0), 0);
  const xs = [1, 2, 3, 4, 5, 6, 7, 8];
  assert.deepEqual(await Promise.all(xs.map(call)), xs);
  const body = await (await gw.fetch("/v2/models/batched/stats")).json();
  const s: ModelStat = body.model_stats[0];
  assert.equal(s.inference_count, 9);
  const sizes = s.batch_stats.map((b) => b.batch_size);
  assert.deepEqual(sizes, [...sizes].sort((a, b) => a - b));
  let calls = 0;
  let batches = 0;
  for (const b of s.batch_stats) {
    assert.ok(b.batch_size >= 1 && b.batch_size <= 4, `${b.batch_size}`);
    assert.ok(b.compute_infer.count > 0 && b.compute_infer.ns > 0);
    assert.deepEqual(b.compute_input, { count: 0, ns: 0 });
    calls += b.batch_size * b.compute_infer.count;
    batches += b.compute_infer.count;
  }
  assert.equal(calls, 9);
  assert.equal(s.execution_count, batches);
  assert.ok(batches < 9, `${batches} batches for 9 calls`);

  // An update (a new load of the model) keeps them: they are the model's
  // since it was added, as its request counts are.
  const put = await gw.fetch("/v1/models/batched", {
    method: "PUT",
    body: JSON.stringify({ file: "batched.py" }),
  });
  assert.equal(put.status, 200, await put.text());
  const updated = (await (await gw.fetch("/v2/models/batched/stats")).json())
    .model_stats[0] as ModelStat;
  assert.deepEqual(updated.batch_stats, s.batch_stats);
  assert.equal(updated.version, "2");

  const config = await (await gw.fetch("/v2/models/batched/config")).json();
  assert.deepEqual(config, {
    name: "batched",
    platform: "pyproxy",
    backend: "pyproxy",
    // 0: a request's tensors have no batch dimension (a client would put
    // one in front of `dims` for a max_batch_size above 0); the batch size
    // is the preferred one.
    max_batch_size: 0,
    input: [{ name: "x", data_type: "TYPE_FP64", dims: [], optional: false }],
    output: [],
    instance_group: [{ name: "batched", kind: "KIND_CPU", count: 1 }],
    version_policy: { latest: { num_versions: 1 } },
    dynamic_batching: {
      preferred_batch_size: [4],
      max_queue_delay_microseconds: 20_000,
    },
  });

  const typed = await (await gw.fetch("/v2/models/typed/versions/1/config"))
    .json();
  assert.equal(typed.max_batch_size, 0);
  assert.equal(typed.dynamic_batching, undefined);
  // "o" ("object?") is no tensor: left out, as in the metadata.
  assert.deepEqual(typed.input, [
    { name: "x", data_type: "TYPE_FP64", dims: [], optional: false },
    { name: "v", data_type: "TYPE_INT64", dims: [-1], optional: false },
    { name: "tag", data_type: "TYPE_STRING", dims: [], optional: true },
  ]);
  assert.deepEqual(typed.output, [
    { name: "y", data_type: "TYPE_FP32", dims: [-1] },
    { name: "ok", data_type: "TYPE_BOOL", dims: [] },
  ]);
  // The same tensors as the metadata's.
  const meta = await (await gw.fetch("/v2/models/typed")).json();
  assert.deepEqual(
    meta.inputs.map((i: { name: string; shape: number[] }) => [
      i.name,
      i.shape,
    ]),
    typed.input.map((i: { name: string; dims: number[] }) => [i.name, i.dims]),
  );
  // Asked for with its name percent-encoded.
  const encoded = await gw.fetch("/v2/models/%62atched/stats");
  assert.equal(encoded.status, 200);
  assert.equal((await encoded.json()).model_stats[0].name, "batched");
});

Deno.test("Inference statistics: a call in flight counts once it ends; a worker's crash and restart neither lose nor double counts", async () => {
  // Not the crash quarantine (limits.loadCrashWindow 0): a crash within 3 s
  // of the start had every model loaded there suspected, and the replay
  // held each alone for 250 ms (13 models: 3.25 s of the test).
  await using gw = await startGateway({
    workers: 1,
    limits: { shutdownGrace: 2000, loadCrashWindow: 0 },
  }, MODELS);
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-stats-" });
  try {
    const started = `${dir}/started`;
    const release = `${dir}/release`;
    const held = gw.fetch("/v1/models/hold/execute", {
      method: "POST",
      body: JSON.stringify({ started, release }),
    });
    await until(
      () => Deno.stat(started).then(() => true, () => false),
      "the call to start",
    );
    const during = (await (await gw.fetch("/v2/models/hold/stats")).json())
      .model_stats[0] as ModelStat;
    assert.equal(during.inference_stats.success!.count, 0);
    assert.equal(during.last_inference, 0);
    await Deno.writeTextFile(release, "go");
    const res = await held;
    assert.equal(res.status, 200);
    await res.body?.cancel();
    const after = (await (await gw.fetch("/v2/models/hold/stats")).json())
      .model_stats[0] as ModelStat;
    assert.equal(after.inference_stats.success!.count, 1);
    assert.ok(after.last_inference > 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  const crasher = (die: boolean) =>
    gw.fetch("/v1/models/crasher/execute", {
      method: "POST",
      body: JSON.stringify({ die }),
    });
  for (let i = 0; i < 2; i++) {
    const res = await crasher(false);
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }
  const restarts = async () =>
    (await (await gw.fetch("/v1/status")).json()).workers[0].restarts;
  const before = await restarts();
  let res = await crasher(true);
  assert.ok(res.status >= 500, `${res.status}`);
  await res.body?.cancel();
  await until(async () => {
    const status = await (await gw.fetch("/v1/status")).json();
    return status.workers[0].restarts > before &&
      status.workers[0].state === "ready";
  }, "the worker to restart");
  res = await crasher(false);
  assert.equal(res.status, 200, await res.clone().text());
  await res.body?.cancel();
  const s = (await (await gw.fetch("/v2/models/crasher/stats")).json())
    .model_stats[0] as ModelStat;
  assert.equal(s.inference_stats.success!.count, 3);
  assert.equal(s.inference_stats.fail!.count, 1);
});
