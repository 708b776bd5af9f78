/**
 * A model whose load answers but which kills its worker soon after, through
 * a real gateway (`serve`, real Python workers): loaded from the models
 * directory at start, and added with `PUT /v1/models/{name}` and the
 * repository's `load`. It is taken out of service (503
 * `ModelUnavailableError`, `failedReason`) while every other model loads
 * and answers.
 */
import assert from "node:assert/strict";
import { startGateway, until } from "./_gateway_harness.ts";

/**
 * How long a model that kills its worker takes to be quarantined, at most:
 * a few restarts of the worker, ~3 s here, over 10 s in a full run under
 * load (a CI run failed at 10 s).
 */
const QUARANTINE_WAIT = 30_000;

/**
 * Waits until `GET /v1/models/{name}` says the model is out of service (not
 * ready, its version UNAVAILABLE), and gives its error message.
 */
function outOfService(
  gw: { fetch(path: string, init?: RequestInit): Promise<Response> },
  name: string,
): Promise<string> {
  return until(
    async () => {
      const body = await (await gw.fetch(`/v1/models/${name}`)).json();
      const entry = body.model_version_status?.[0];
      return body.ready === false && entry?.state === "UNAVAILABLE" &&
          /^out of service: /.test(entry.status.error_message)
        ? entry.status.error_message as string
        : undefined;
    },
    `${name} to be out of service`,
    QUARANTINE_WAIT,
  );
}

/** Loads fine, then a thread ends the process 100 ms later (exit code 7). */
const BOMB = `
import os, threading, time

def _boom():
    time.sleep(0.1)
    os.write(2, b"bomb: the timer went off\\n")
    os._exit(7)

class Bomb:
    def __init__(self, options):
        threading.Thread(target=_boom, daemon=True).start()

    def execute(self, msg):
        return {}
`;

Deno.test("Gateway: a model of the models directory that kills its worker after its load is quarantined at start, and every other model loads and answers", async () => {
  await using gw = await startGateway({ workers: 2, allowManage: true }, {
    "aaa_bomb.py": BOMB,
  });
  const failedReason = await outOfService(gw, "aaa_bomb");
  assert.match(
    failedReason,
    /^out of service: its worker died within 3000 ms of loading it .*twice with no call or other load running there/,
  );
  assert.match(failedReason, /last stderr line: "bomb: the timer went off"/);
  // No model after it in the directory was skipped for the crash (a load
  // that dies with the workers it killed is tried once more).
  const index = await (await gw.fetch("/v2/repository/index", {
    method: "POST",
    body: "{}",
  })).json() as Array<{ name: string; state: string; reason?: string }>;
  const others = index.filter((m) => m.name !== "aaa_bomb");
  assert.ok(others.length >= 5, JSON.stringify(index));
  assert.deepEqual(
    others.filter((m) => m.state !== "READY"),
    [],
    JSON.stringify(index),
  );
  await until(
    () =>
      Promise.resolve(
        gw.pool.status().workers.every((w) => w.state === "ready"),
      ),
    "the workers to be ready",
    QUARANTINE_WAIT,
  );
  const res = await gw.fetch("/v1/models/echo/execute", {
    method: "POST",
    body: JSON.stringify({ x: 1 }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  await res.body?.cancel();
  const call = await gw.fetch("/v1/models/aaa_bomb/execute", {
    method: "POST",
    body: "{}",
  });
  assert.equal(call.status, 503);
  const body = await call.json();
  assert.match(JSON.stringify(body), /ModelUnavailableError/);
  assert.match(JSON.stringify(body), /out of service/);
  // In the gateway's terms: the PUT with --allow-manage, else a restart;
  // not the library's pool.updateModel.
  assert.match(
    body.error.message,
    /^Cannot call model 'aaa_bomb': it is out of service: its worker died .*\(limits\.loadCrashWindow in pyproxy\.json\); PUT \/v1\/models\/aaa_bomb loads it again \(with --allow-manage; without it, restart the gateway\)$/,
  );
});

Deno.test("Gateway: PUT /v1/models/{name} and the repository's load of a model that kills its worker after its load answer, then the model is quarantined", async () => {
  // Echo alone at the start, not every model of the directory: each restart
  // of a worker the bombs kill replays what it holds (~10 models took
  // half of the test's time).
  await using gw = await startGateway({
    workers: 2,
    allowManage: true,
    models: [{ name: "echo", file: "echo.py" }],
  });
  await Deno.writeTextFile(`${gw.dir}/bomb.py`, BOMB);
  const put = await gw.fetch("/v1/models/bomb", {
    method: "PUT",
    body: JSON.stringify({ file: "bomb.py" }),
  });
  assert.equal(put.status, 201, await put.clone().text());
  await put.body?.cancel();
  // Suspected first (its first deaths): GET /v1/models/{name} says so.
  const suspected = await until(
    async () => {
      const body = await (await gw.fetch("/v1/models/bomb")).json();
      return body.suspected ?? body.failedReason !== undefined;
    },
    "the model to be suspected",
    QUARANTINE_WAIT,
  );
  assert.equal(typeof suspected, "object", JSON.stringify(suspected));
  assert.ok(suspected.deaths >= 1);
  assert.match(suspected.reason, /^its worker died within 3000 ms/);
  await outOfService(gw, "bomb");
  const index = await (await gw.fetch("/v2/repository/index", {
    method: "POST",
    body: "{}",
  })).json();
  const entry = index.find((m: { name: string }) => m.name === "bomb");
  assert.equal(entry.state, "UNAVAILABLE");
  assert.match(
    entry.reason,
    /twice with no call or other load running there/,
  );
  // The repository's load of another such model: the same.
  await Deno.writeTextFile(`${gw.dir}/bomb2.py`, BOMB);
  const load = await gw.fetch("/v2/repository/models/bomb2/load", {
    method: "POST",
    body: "{}",
  });
  assert.equal(load.status, 200, await load.clone().text());
  await load.body?.cancel();
  await outOfService(gw, "bomb2");
  await until(
    () =>
      Promise.resolve(
        gw.pool.status().workers.every((w) => w.state === "ready"),
      ),
    "the workers to be ready",
    QUARANTINE_WAIT,
  );
  const res = await gw.fetch("/v1/models/echo/execute", {
    method: "POST",
    body: JSON.stringify({ x: 1 }),
  });
  assert.equal(res.status, 200);
  await res.body?.cancel();
  // KServe V2's readiness says what GET /v1/models/{name} does, the workers
  // ready (it said ready: an unplaced model out of service lists no slots,
  // read as "on every worker").
  for (const path of ["/v2/models/bomb/ready", "/v2/models/bomb2/ready"]) {
    const ready = await gw.fetch(path);
    assert.equal(ready.status, 503, path);
    assert.equal((await ready.json()).ready, false);
  }
});
