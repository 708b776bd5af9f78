/**
 * A redeploy with a broken model file, as an on-call engineer meets it.
 *
 * At start: a model of the models directory that fails to import is
 * skipped, and the gateway says so where an on-call
 * engineer looks after the start's log line: its calls' 404 says why and
 * how to bring it back (it said "not loaded", as for a made-up name, counted
 * under `_unknown`), and `/metrics` has its `pyproxy_models_ready` at 0 (it
 * had no series, so an alert on `== 0` never fired), until a `PUT` loads it.
 * While it runs: a `PUT` of the broken file is answered 422 and the old
 * version serves on, as before, and the gateway's log now says so too (it
 * logged the successes only).
 * Through a real gateway and its Python worker.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startGateway, withLogs } from "./_gateway_harness.ts";

const BROKEN =
  "class Ranker:\n    def execute(self, msg)\n        return msg\n";
const FIXED =
  "class Ranker:\n    def execute(self, msg):\n        return msg\n";

const call = (gw: Awaited<ReturnType<typeof startGateway>>) =>
  gw.fetch("/v1/models/ranker/execute", { method: "POST", body: "{}" });

const metric = async (
  gw: Awaited<ReturnType<typeof startGateway>>,
  series: string,
): Promise<string | undefined> => {
  const text = await (await gw.fetch("/metrics")).text();
  return text.split("\n").find((l) => l.startsWith(`${series} `))?.slice(
    series.length + 1,
  );
};

Deno.test("a model skipped at start: its 404 says why, /metrics has it not ready, until a PUT loads it", async () => {
  await using gw = await startGateway(
    { workers: 1, allowManage: true },
    // A helper module beside the models is skipped too, but is no model.
    { "ranker.py": BROKEN, "helper.py": "FACTOR = 2\n" },
  );
  const res = await call(gw);
  assert.equal(res.status, 404);
  const { error } = await res.json();
  assert.equal(error.type, "ModelNotFoundError");
  assert.match(
    error.message,
    /^Cannot find model 'ranker': it failed to load at start, so this gateway does not serve it: .*SyntaxError: expected ':' \(ranker\.py, line 2\); fix its file, then PUT \/v1\/models\/ranker \(with --allow-manage\) or restart the gateway$/,
  );
  // The models directory stays out of it, as in a PUT's 422.
  assert.equal(error.message.includes(gw.dir), false);
  const described = await gw.fetch("/v1/models/ranker");
  assert.equal(described.status, 404);
  assert.equal((await described.json()).error.message, error.message);
  // Counted as the model's calls, and not ready: what an alert reads.
  assert.equal(await metric(gw, 'pyproxy_models_ready{model="ranker"}'), "0");
  assert.equal(
    await metric(gw, 'pyproxy_requests_total{model="ranker",status="404"}'),
    "1",
  );
  // The helper module is not a model that is not ready.
  assert.equal(
    await metric(gw, 'pyproxy_models_ready{model="helper"}'),
    undefined,
  );
  const helper = await gw.fetch("/v1/models/helper/execute", {
    method: "POST",
    body: "{}",
  });
  assert.equal(helper.status, 404);
  assert.doesNotMatch((await helper.json()).error.message, /at start/);
  // A made-up name is as before.
  const other = await gw.fetch("/v1/models/nope/execute", {
    method: "POST",
    body: "{}",
  });
  assert.equal(other.status, 404);
  assert.doesNotMatch((await other.json()).error.message, /at start/);

  await Deno.writeTextFile(join(gw.dir, "ranker.py"), FIXED);
  const put = await gw.fetch("/v1/models/ranker", {
    method: "PUT",
    body: JSON.stringify({ file: "ranker.py" }),
  });
  assert.equal(put.status, 201);
  await put.body?.cancel();
  const ok = await call(gw);
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
  assert.equal(await metric(gw, 'pyproxy_models_ready{model="ranker"}'), "1");
  // Removed on purpose later: a 404 like any other's, not the start's.
  const removed = await gw.fetch("/v1/models/ranker", { method: "DELETE" });
  assert.equal(removed.status, 200);
  await removed.body?.cancel();
  const gone = await call(gw);
  assert.equal(gone.status, 404);
  assert.doesNotMatch((await gone.json()).error.message, /at start/);
  assert.equal(
    await metric(gw, 'pyproxy_models_ready{model="ranker"}'),
    undefined,
  );
});

Deno.test("a PUT whose file fails to load is logged as a warning naming the model, the file and the error", async () => {
  await withLogs(async (records) => {
    await using gw = await startGateway(
      { workers: 1, allowManage: true },
      { "ranker.py": FIXED },
    );
    await Deno.writeTextFile(join(gw.dir, "ranker.py"), BROKEN);
    const put = await gw.fetch("/v1/models/ranker", {
      method: "PUT",
      body: JSON.stringify({ file: "ranker.py" }),
    });
    assert.equal(put.status, 422);
    const { error } = await put.json();
    const warnings = records.filter((r) =>
      r.level === "warning" && r.category.join(".") === "pyproxy.gateway"
    );
    const line = warnings.find((r) =>
      String(r.rawMessage).startsWith("Model {name} not loaded")
    );
    assert.ok(
      line,
      `no warning among ${JSON.stringify(warnings.map((r) => r.rawMessage))}`,
    );
    assert.deepEqual(line.properties, {
      name: "ranker",
      file: "ranker.py",
      status: 422,
      type: "ModelLoadError",
      message: error.message,
    });
    assert.match(
      error.message,
      /SyntaxError: expected ':' \(ranker\.py, line 2\)/,
    );
    // The version in force serves on.
    const ok = await call(gw);
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
  });
});
