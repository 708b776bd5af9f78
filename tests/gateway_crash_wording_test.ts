/**
 * A worker's death in the gateway's terms (docs/gateway.md, "Versions" and
 * `/v1/status`): a version is `clf version 3` in a 502's message, not its
 * internal name `clf@3` (kept as data, with `model` and `version` added), and
 * the restart policy's reasons name pyproxy.json's
 * `plugins.reconnect.failedRetryAfter`, not the library's
 * `reconnect({ failedRetryAfter })`, whether the file sets the plugin or not.
 */
import assert from "node:assert/strict";
import { startGateway, type TestGateway } from "./_gateway_harness.ts";
import { waitFor } from "./_harness.ts";

const CRASHER = `
import os

class Crasher:
    def execute(self, msg):
        os._exit(3)
`;

type Worker = {
  state: string;
  failedReason: string | null;
  lastExit: { inFlight?: Record<string, unknown> } | null;
};

async function failedWorker(gw: TestGateway): Promise<Worker> {
  let worker: Worker | undefined;
  await waitFor(async () => {
    const status = await (await gw.fetch("/v1/status")).json();
    worker = status.workers[0];
    return worker?.state === "failed";
  });
  return worker!;
}

Deno.test("Gateway: a worker's death names a version as the routes do (clf version 3; clf@3 kept as data, with model and version), and its failedReason names plugins.reconnect.failedRetryAfter", async () => {
  await using gw = await startGateway({
    workers: 1,
    models: [{ name: "clf", file: "crasher.py", version: "3" }],
    // Given up at its first crash, and not revived during the test.
    plugins: {
      reconnect: {
        backoff: { initial: 10, max: 20 },
        heartbeatInterval: 0,
        maxCrashes: 0,
        failedRetryAfter: 600_000,
      },
    },
  }, { "crasher.py": CRASHER });
  const res = await gw.fetch("/v1/models/clf/versions/3/execute", {
    method: "POST",
    body: "{}",
  });
  assert.equal(res.status, 502);
  const { error } = await res.json();
  assert.equal(error.type, "WorkerCrashedError");
  assert.match(
    error.message,
    /^Cannot run model 'clf' version '3': worker w1 \(pid \d+\) died: exited with code 3 while running: clf version 3 \(1 call\)$/,
  );
  assert.equal(error.call, "clf@3");
  assert.equal(error.model, "clf");
  assert.equal(error.version, "3");
  assert.deepEqual(error.inFlight, { "clf@3": 1 });
  assert.equal(error.inFlightCalls, 1);
  const worker = await failedWorker(gw);
  assert.deepEqual(worker.lastExit?.inFlight, {
    byName: { "clf@3": 1 },
    calls: 1,
  });
  assert.match(
    worker.failedReason!,
    /^crashed 1 times within 60000 ms; last: exited with code 3 \(retried in 600000 ms: plugins\.reconnect\.failedRetryAfter\)$/,
  );
});

Deno.test("Gateway: the default restart policy (no plugins.reconnect in pyproxy.json) names its options as pyproxy.json does too", async () => {
  await using gw = await startGateway(
    {
      workers: 1,
      models: [{ name: "bad", file: "crasher.py" }],
      // Not the crash quarantine (limits.loadCrashWindow, no part of the
      // restart policy): its calls crashing the worker just after each
      // replay had it suspected, and two of the replays held the worker
      // 3 s each (6.5 s of the test's 11).
      limits: { shutdownGrace: 2000, loadCrashWindow: 0 },
    },
    { "crasher.py": CRASHER },
  );
  // The default gives a slot up at its 6th crash within 60 s.
  for (let i = 0; i < 6; i++) {
    const res = await gw.fetch("/v1/models/bad/execute", {
      method: "POST",
      body: "{}",
    });
    const { error } = await res.json();
    assert.equal(res.status, 502, error.message);
    // A model without versions keeps the library's message and fields.
    assert.equal(error.version, undefined);
    assert.match(error.message, /while running: bad \(1 call\)$/);
  }
  const worker = await failedWorker(gw);
  assert.match(
    worker.failedReason!,
    /\(retried in 60000 ms: plugins\.reconnect\.failedRetryAfter\)$/,
  );
  assert.doesNotMatch(worker.failedReason!, /reconnect\(/);
});
