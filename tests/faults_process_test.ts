/**
 * Fault injection, process half: workers killed (-9), stopped (SIGSTOP),
 * exiting from model code (sys.exit, os._exit, segfault) while calls are in
 * flight. Every call must settle exactly once, the pool must come back to
 * full strength, and the fault must show in `pool.status()`.
 */
import assert from "node:assert/strict";
import { WorkerCrashedError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";
import { CallLedger, reportLedger } from "./_reliability_report.ts";

const EXITERS: Record<string, string> = {
  "exiter.py": `
import ctypes
import os
import sys

class Exiter:
    """Ends its own process the way msg["how"] says."""

    def __init__(self, options):
        pass

    def execute(self, msg):
        how = msg["how"]
        if how == "sys.exit":
            sys.exit(7)
        if how == "os._exit":
            os._exit(3)
        if how == "segfault":
            ctypes.string_at(0)
        return {}
`,
};

/** Waits until every worker is ready (bounded polling: readiness has no single event when several restart). */
async function fullStrength(pool: Pool): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!pool.status().workers.every((w) => w.state === "ready")) {
    assert.ok(
      Date.now() < deadline,
      `pool not back to full strength: ${
        JSON.stringify(pool.status().workers.map((w) => [w.id, w.state]))
      }`,
    );
    await new Promise((r) => setTimeout(r, 20));
  }
}

function assertCrashes(
  ledger: CallLedger,
  worker: string,
  check: (e: WorkerCrashedError) => void,
): void {
  for (const err of ledger.errors) {
    assert.ok(err instanceof WorkerCrashedError, String(err));
    assert.equal(err.details.worker, worker);
    check(err);
  }
}

Deno.test("Pool under kill -9 of each worker in turn: every call settles once, pool back to full strength", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  const ledger = new CallLedger();
  let injected = 0;
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { maxInFlightPerWorker: 16 }),
    );
    pids.watch(pool);
    await pool.addModel("slow", { file: "slow.py" });
    for (const id of ["w1", "w2"]) {
      const round = new CallLedger();
      const victim = pidOf(pool, id);
      const back = readyAgain(pool, id);
      const exit = nextEvent(pool, "worker-exit", (ev) => ev.worker === id);
      // 16 in flight per worker, the rest queued: queued calls must not be lost.
      for (let i = 0; i < 80; i++) {
        ledger.track(round.track(pool.execute("slow", { ms: 100, i })));
      }
      await pool.request("ping", undefined, { worker: id });
      Deno.kill(victim, "SIGKILL");
      injected++;
      await round.settle();
      round.assertSettledOnce();
      assert.ok(round.errors.length <= 16, "only in-flight calls may fail");
      assertCrashes(round, id, (e) => {
        assert.equal(e.details.pid, victim);
        assert.equal(e.details.signal, "SIGKILL");
      });
      assert.equal((await exit).signal, "SIGKILL");
      await back;
      const w = pool.status().workers.find((w) => w.id === id)!;
      assert.equal(w.restarts, 1);
      assert.equal(w.lastExit?.signal, "SIGKILL");
      assert.equal(w.lastExit?.reason, "killed by SIGKILL");
    }
    await fullStrength(pool);
    ledger.assertSettledOnce();
    assert.equal(
      pool.status().workers.reduce((n, w) => n + w.restarts, 0),
      injected,
    );
  } finally {
    await pids.assertGone();
  }
  await reportLedger(ledger, {
    fault: "kill -9 of a worker under load",
    injected,
    observed:
      "restarts +1, lastExit {signal: SIGKILL}; only in-flight calls fail (WorkerCrashedError), queued ones run",
  });
});

Deno.test("Pool under SIGSTOP of a worker: the missed heartbeat kills and replaces it, calls settle once", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  const ledger = new CallLedger();
  let stopped: number | undefined;
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, {}, {
        heartbeatInterval: 100,
        heartbeatTimeout: 1000,
      }),
    );
    pids.watch(pool);
    await pool.addModel("slow", { file: "slow.py" });
    stopped = pidOf(pool, "w1");
    const exit = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w1");
    const back = readyAgain(pool, "w1");
    for (let i = 0; i < 40; i++) {
      ledger.track(pool.execute("slow", { ms: 200, i }));
    }
    await pool.request("ping", undefined, { worker: "w1" });
    Deno.kill(stopped, "SIGSTOP");
    await ledger.settle();
    ledger.assertSettledOnce();
    assertCrashes(ledger, "w1", (e) => {
      assert.equal(e.details.pid, stopped);
      assert.match(e.details.reason as string, /^missed heartbeat: /);
    });
    const ev = await exit;
    assert.equal(ev.pid, stopped);
    assert.match(ev.reason, /^missed heartbeat: /);
    await back;
    await fullStrength(pool);
    const w1 = pool.status().workers[0]!;
    assert.equal(w1.restarts, 1);
    assert.match(w1.lastExit?.reason ?? "", /^missed heartbeat: /);
    assert.equal(w1.lastExit?.signal, "SIGKILL");
    const more = new CallLedger();
    for (let i = 0; i < 10; i++) {
      ledger.track(more.track(pool.execute("slow", { ms: 1, i })));
    }
    await more.settle();
    assert.deepEqual(more.counts(), {
      calls: 10,
      settled: 10,
      failed: 0,
      lost: 0,
    });
  } finally {
    if (stopped !== undefined) {
      try {
        Deno.kill(stopped, "SIGKILL");
      } catch {
        // already gone, as it should be
      }
    }
    await pids.assertGone();
  }
  await reportLedger(ledger, {
    fault: "SIGSTOP of a worker under load",
    injected: 1,
    observed:
      'restarts +1, lastExit {signal: SIGKILL, reason: "missed heartbeat"}',
  });
});

for (
  const [how, fault, expect] of [
    ["sys.exit", "model calls sys.exit()", null],
    ["os._exit", "model calls os._exit(3)", { code: 3, signal: null }],
    ["segfault", "model segfaults (ctypes.string_at(0))", {
      code: null,
      signal: "SIGSEGV",
    }],
  ] as const
) {
  Deno.test(`Pool survives a model that calls ${how}: calls settle once, the worker is replaced if it died`, async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(
      `${dir.path}/exiter.py`,
      EXITERS["exiter.py"]!,
    );
    const pids = new PidTracker();
    const ledger = new CallLedger();
    try {
      await using pool = await Pool.start(poolOptions(dir.path));
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      await pool.addModel("exiter", { file: "exiter.py" });
      const victim = pidOf(pool, "w1");
      const exit = expect === null
        ? undefined
        : nextEvent(pool, "worker-exit", (ev) => ev.worker === "w1");
      const back = expect === null ? undefined : readyAgain(pool, "w1");
      const others = new CallLedger();
      for (let i = 0; i < 20; i++) {
        ledger.track(others.track(pool.execute("slow", { ms: 200, i })));
      }
      await pool.request("ping", undefined, { worker: "w1" });
      const fatal = ledger.track(
        pool.request("executeModel", { name: "exiter", msg: { how } }, {
          worker: "w1",
        }),
      );
      await ledger.settle();
      ledger.assertSettledOnce();
      const err = await fatal.then(() => undefined, (e) => e);
      assert.ok(err instanceof Error, "the exiting call must fail");
      if (expect === null) {
        // SystemExit is an exception like any other: the worker lives on.
        assert.ok(!(err instanceof WorkerCrashedError), String(err));
        assert.equal(others.counts().failed, 0);
        assert.equal(pidOf(pool, "w1"), victim);
        assert.equal(pool.status().workers[0]!.restarts, 0);
      } else {
        assert.ok(err instanceof WorkerCrashedError, String(err));
        assert.equal(err.details.code, expect.code);
        assert.equal(err.details.signal, expect.signal);
        assertCrashes(others, "w1", (e) => assert.equal(e.details.pid, victim));
        const ev = await exit!;
        assert.equal(ev.code, expect.code);
        assert.equal(ev.signal, expect.signal);
        await back;
        const w1 = pool.status().workers[0]!;
        assert.equal(w1.restarts, 1);
        assert.equal(w1.lastExit?.code, expect.code);
        assert.equal(w1.lastExit?.signal, expect.signal);
      }
      await fullStrength(pool);
      assert.deepEqual(
        await pool.execute("slow", { ms: 1, i: -1 }, { key: "after" }).then(
          (r) => (r as { i: number }).i,
        ),
        -1,
      );
    } finally {
      await pids.assertGone();
    }
    await reportLedger(ledger, {
      fault,
      injected: 1,
      observed: expect === null
        ? "call fails with the SystemExit error, worker keeps running (restarts 0)"
        : `restarts +1, lastExit {code: ${expect.code}, signal: ${expect.signal}}`,
    });
  });
}
