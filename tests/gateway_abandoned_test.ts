/**
 * Calls given up on (timed out, cancelled) that a worker still runs, by
 * model, in `/v1/status` (`workers[].abandoned`) and `/metrics`
 * (`pyproxy_abandoned_calls`): a model blocked outside Python, which no
 * cancel reaches, showed only as a worker's `inFlight` above 0 with no
 * client waiting, and by name only in the worker's own log file, until 17
 * such calls wedged the worker (the on-call walkthrough). And the model's
 * next 504s say so: they suggested a longer timeout, which cannot help a
 * call that never ends. Through a real gateway and its Python worker.
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
  const messages: string[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await call({}, "?timeout=100");
    assert.equal(res.status, 504);
    messages.push((await res.json()).error.message);
  }
  // The first 504 as before; the next ones say that the earlier calls
  // still run (blocked, not slow: a longer timeout would not help).
  assert.doesNotMatch(messages[0]!, /earlier/);
  const hint =
    " on its workers (/v1/status: workers[].abandoned): it may be blocked outside Python (a lock, a sleep, I/O without a timeout), which no cancel reaches, rather than slow (docs/reliability.md, Runbook)";
  assert.ok(
    messages[1]!.endsWith(
      `; 1 earlier call of it that timed out or was cancelled still runs${hint}`,
    ),
    messages[1],
  );
  assert.ok(
    messages[2]!.endsWith(
      `; 2 earlier calls of it that timed out or were cancelled still run${hint}`,
    ),
    messages[2],
  );
  // Both still wait on the worker, whatever their cancels: the model's.
  const now = await status();
  assert.deepEqual(now.abandoned, { gated: 3 });
  assert.equal(now.inFlight, 3);
  assert.deepEqual(await series(), [
    'pyproxy_abandoned_calls{worker="w1",model="gated"} 3',
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
