/**
 * Calls given up on (timed out, cancelled) that a worker still runs, by
 * model, in `/v1/status` (`workers[].abandoned`) and `/metrics`
 * (`pyproxy_abandoned_calls`): a model blocked outside Python, which no
 * cancel reaches, showed only as a worker's `inFlight` above 0 with no
 * client waiting, and by name only in the worker's own log file, until 17
 * such calls wedged the worker (the on-call walkthrough). Through a real
 * gateway and its Python worker.
 */
import assert from "node:assert/strict";
import { startGateway, until } from "./_gateway_harness.ts";

// Waits for a module-level event in C (a lock's acquire, which no cancel's
// KeyboardInterrupt reaches) until a call with {"open": true} sets it.
const GATED = `import threading

gate = threading.Event()


class Gated:
    def execute(self, msg):
        if msg.get("open"):
            gate.set()
            return {"opened": True}
        gate.wait()
        return {"waited": True}
`;

Deno.test("a timed-out call its model still runs shows in /v1/status and /metrics by model until it ends", async () => {
  await using gw = await startGateway({ workers: 1 }, { "gated.py": GATED });
  const call = (body: unknown, query = "") =>
    gw.fetch(`/v1/models/gated/execute${query}`, {
      method: "POST",
      body: JSON.stringify(body),
    });
  const status = async () =>
    (await (await gw.fetch("/v1/status")).json()).workers[0];
  const series = async () =>
    (await (await gw.fetch("/metrics")).text()).split("\n").filter((l) =>
      l.startsWith("pyproxy_abandoned_calls{")
    );
  assert.deepEqual((await status()).abandoned, {});
  for (let i = 0; i < 2; i++) {
    const res = await call({}, "?timeout=100");
    assert.equal(res.status, 504);
    await res.body?.cancel();
  }
  // Both still wait on the worker, whatever their cancels: the model's.
  const now = await status();
  assert.deepEqual(now.abandoned, { gated: 2 });
  assert.equal(now.inFlight, 2);
  assert.deepEqual(await series(), [
    'pyproxy_abandoned_calls{worker="w1",model="gated"} 2',
  ]);
  // Once they end, the server answers their cancels.
  const opened = await call({ open: true });
  assert.equal(opened.status, 200);
  await opened.body?.cancel();
  await until(
    async () => Object.keys((await status()).abandoned).length === 0,
    "the abandoned calls to end",
  );
  assert.equal((await status()).inFlight, 0);
  assert.deepEqual(await series(), []);
});
