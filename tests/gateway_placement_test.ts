/**
 * Placement through a real gateway and real Python workers: the config's
 * `models[].workers` and the `PUT` body's `workers` load a model on that
 * many workers only, its calls go there, the routes show its slots.
 */
import assert from "node:assert/strict";
import { startGateway } from "./_gateway_harness.ts";

const put = (body: unknown): RequestInit => ({
  method: "PUT",
  body: JSON.stringify(body),
});

/** The distinct pids that answer `n` calls of model `name`. */
async function pids(
  gw: { fetch(path: string, init?: RequestInit): Promise<Response> },
  name: string,
  n = 12,
): Promise<Set<number>> {
  const out = new Set<number>();
  for (let i = 0; i < n; i++) {
    const res = await gw.fetch(`/v1/models/${name}/execute`, {
      method: "POST",
      body: "{}",
    });
    assert.equal(res.status, 200);
    out.add((await res.json()).pid);
  }
  return out;
}

Deno.test("Gateway: models[].workers and PUT's workers place a model on that many workers; the routes show its slots; bad values are a 400", async () => {
  await using gw = await startGateway({
    workers: 3,
    allowManage: true,
    models: [
      { name: "big", file: "whoami.py", workers: 1 },
      { name: "all", file: "whoami.py" },
    ],
  });
  assert.equal((await pids(gw, "big")).size, 1);
  assert.equal((await pids(gw, "all")).size, 3);
  let one = await (await gw.fetch("/v1/models/big")).json();
  assert.deepEqual([one.workers, one.slots], [1, ["w1"]]);
  one = await (await gw.fetch("/v1/models/all")).json();
  assert.deepEqual([one.workers, one.slots], [undefined, undefined]);
  // PUT moves it to 2 workers.
  let res = await gw.fetch(
    "/v1/models/big",
    put({ file: "whoami.py", workers: 2 }),
  );
  assert.equal(res.status, 200);
  const { model } = await res.json();
  assert.equal(model.workers, 2);
  // The answer shows where it is now, as GET /v1/models/big does.
  assert.deepEqual(model.slots, ["w1", "w2"]);
  assert.equal((await pids(gw, "big")).size, 2);
  const { models } = await (await gw.fetch("/v1/models")).json();
  assert.deepEqual(
    (models as Array<{ name: string; slots?: string[] }>).map((
      m,
    ) => [m.name, m.slots]),
    [["big", ["w1", "w2"]], ["all", undefined]],
  );
  // A new model with workers: the slot holding no placed model.
  res = await gw.fetch("/v1/models/p", put({ file: "whoami.py", workers: 1 }));
  assert.equal(res.status, 201);
  assert.deepEqual((await res.json()).model.slots, ["w3"]);
  one = await (await gw.fetch("/v1/models/p")).json();
  assert.deepEqual(one.slots, ["w3"]);
  const status = await (await gw.fetch("/v1/status")).json();
  assert.deepEqual(
    status.workers.map((w: { id: string; models: string[] }) =>
      `${w.id}: ${w.models.join(",")}`
    ),
    ["w1: big,all", "w2: big,all", "w3: all,p"],
  );
  for (const workers of [0, -1, 1.5, "2", 1025, null]) {
    res = await gw.fetch("/v1/models/p", put({ file: "whoami.py", workers }));
    assert.equal(res.status, 400, String(workers));
    const { error } = await res.json();
    assert.equal(error.type, "ValidationError");
    assert.ok(
      error.message.startsWith(
        "Cannot load model 'p': workers: expected an integer from 1 to 1024 (how many workers load the model; absent: every worker)",
      ),
      error.message,
    );
  }
  // Still the last good one.
  one = await (await gw.fetch("/v1/models/p")).json();
  assert.deepEqual([one.workers, one.slots], [1, ["w3"]]);
});

Deno.test("Gateway: limits.maxRelocations bounds a placed model that crashes its workers (0: out of service at the first slot it took down, a 503 and its failedReason naming it), while the other worker serves on", async () => {
  const crasher = `
import os

class Crasher:
    def __init__(self, options):
        pass

    def execute(self, msg):
        os._exit(3)
`;
  // 3 workers: with 2, the default already takes it out rather than put it
  // on the last worker up.
  await using gw = await startGateway({
    workers: 3,
    models: [
      { name: "bad", file: "crasher.py", workers: 1 },
      { name: "all", file: "whoami.py" },
    ],
    limits: { shutdownGrace: 2000, maxRelocations: 0 },
    // The slot is given up at its second crash, and not revived.
    plugins: {
      reconnect: {
        backoff: { initial: 10, max: 20 },
        heartbeatInterval: 0,
        maxCrashes: 1,
        failedRetryAfter: 0,
      },
    },
  }, { "crasher.py": crasher });
  const call = () =>
    gw.fetch("/v1/models/bad/execute", { method: "POST", body: "{}" });
  // Two crashes of its slot: the restart policy gives it up.
  for (let i = 0; i < 2; i++) {
    const res = await call();
    assert.equal(res.status, 502, await res.text());
  }
  // With the default (2 moves), the model would now crash the other worker.
  const res = await call();
  assert.equal(res.status, 503);
  const body = await res.json();
  assert.equal(body.error.type, "ModelUnavailableError");
  assert.equal(body.error.model, "bad");
  // Worded for the gateway's operator: its settings and the PUT that
  // clears it, not the library's options.
  assert.match(
    body.error.message,
    /^Cannot call model 'bad': it is out of service: it crashed the workers it was placed on once within 600000 ms \(w\d; the last: exited with code 3\), past limits\.maxRelocations 0 \(pyproxy\.json; its window: limits\.relocationWindow\); PUT \/v1\/models\/bad loads it again \(with --allow-manage; without it, restart the gateway\)$/,
  );
  assert.doesNotMatch(
    body.error.message,
    /placement\.|reconnect\(|pool\.updateModel/,
  );
  // Its own failedReason names the same setting (/v1/models, /v1/status).
  const one = await (await gw.fetch("/v1/models/bad")).json();
  assert.match(one.failedReason, /crash.*past limits\.maxRelocations 0;/i);
  const status = await (await gw.fetch("/v1/status")).json();
  const listed = status.models.find((m: { name: string }) => m.name === "bad");
  assert.equal(listed.failedReason, one.failedReason);
  for (const reason of [one.failedReason, listed.failedReason]) {
    assert.doesNotMatch(reason, /placement\.|reconnect\(/);
  }
  assert.equal((await pids(gw, "all", 6)).size, 2);
});
