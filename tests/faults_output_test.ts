/**
 * Fault injection, output and host half: a model that floods stdout (through
 * `print` and straight into file descriptor 1), and the host process killed
 * with SIGKILL while calls are in flight (no Python process may outlive it).
 */
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import { reconnect } from "../plugins/reconnect.ts";
import {
  assertGone,
  modelsDir,
  pidOf,
  PidTracker,
  spawnHost,
  writeHostScript,
} from "./_pool_harness.ts";
import { startServer } from "./_harness.ts";
import {
  CallLedger,
  reportFault,
  reportLedger,
} from "./_reliability_report.ts";

const FLOOD = `
import os

class Flood:
    """Prints msg["lines"] lines, then writes msg["raw"] 64 KiB chunks to fd 1."""

    def __init__(self, options):
        pass

    def execute(self, msg):
        for i in range(msg["lines"]):
            print("line %d" % i)
        chunk = b"x" * 65535 + b"\\n"
        for _ in range(msg["raw"]):
            os.write(1, chunk)
        return {"lines": msg["lines"], "pid": os.getpid()}
`;

Deno.test("Pool is neither corrupted nor blocked by a model flooding stdout and fd 1", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/flood.py`, FLOOD);
  const pids = new PidTracker();
  const ledger = new CallLedger();
  const LINES = 20_000;
  const RAW = 64; // 4 MiB straight into fd 1, far above any pipe buffer
  try {
    await using pool = await Pool.start({
      workers: 1,
      modelsDir: dir.path,
      handleSignals: false,
      plugins: [reconnect({ heartbeatInterval: 0 })],
    });
    pids.watch(pool);
    await pool.addModel("flood", { file: "flood.py" });
    await pool.addModel("doubler", { file: "doubler.py" });
    const pid = pidOf(pool, "w1");
    for (let f = 0; f < 2; f++) {
      ledger.track(
        pool.execute("flood", { lines: LINES, raw: RAW }).then((r) =>
          assert.deepEqual(r, { lines: LINES, pid })
        ),
      );
    }
    // Meanwhile the same worker answers control and model calls correctly.
    for (let i = 0; i < 50; i++) {
      ledger.track(pool.request("ping", undefined, { worker: "w1" }));
      ledger.track(
        pool.execute("doubler", { x: i }).then((r) =>
          assert.deepEqual(r, { y: 2 * i })
        ),
      );
    }
    await ledger.settle(30_000);
    ledger.assertSettledOnce();
    assert.deepEqual(ledger.errors, []);
    const w1 = pool.status().workers[0]!;
    assert.equal(w1.pid, pid, "the worker was not restarted");
    assert.equal(w1.restarts, 0);
    assert.ok(w1.stderrTail.length <= 64 * 1024, "the stderr tail is bounded");
    assert.match(w1.stderrTail, /x{1000}/, "fd 1 went to the stderr drain");
  } finally {
    await pids.assertGone();
  }
  await floodOneServer(ledger);
  await reportLedger(ledger, {
    fault: "model floods stdout (print and os.write(1))",
    injected: 3,
    observed:
      "print → ordered log events (dropped with a notice past 8 MiB backlog); fd 1 → stderr drain (64 KiB tail); restarts 0",
  });
});

/** The same flood on a bare server, where the `log` events of the prints can be watched. */
async function floodOneServer(ledger: CallLedger): Promise<void> {
  const LINES = 20_000;
  await using server = await startServer({ files: { "flood.py": FLOOD } });
  await using session = await server.connect();
  await session.addModel("flood", { file: "flood.py" });
  const lines: string[] = [];
  let dropped = 0;
  session.onEvent((ev) => {
    if (ev.event !== "log") return;
    const text = String(ev.message);
    if (ev.stream === "stdout") lines.push(...text.split("\n"));
    else if (/dropped \d+ characters/.test(text)) dropped++;
  });
  const out = await ledger.track(
    session.execute("flood", { lines: LINES, raw: 16 }),
  );
  assert.equal((out as { lines: number }).lines, LINES);
  ledger.track(session.ping());
  await ledger.settle();
  // Output arrives before the reply, in order and intact; under pressure it
  // may be dropped, and then one notice says so.
  let last = -1;
  for (const line of lines) {
    const n = Number(line.match(/^line (\d+)$/)?.[1] ?? NaN);
    assert.ok(n > last, `corrupted or reordered output line: ${line}`);
    last = n;
  }
  assert.ok(
    lines.length === LINES || dropped === 1,
    `${lines.length} lines and ${dropped} drop notices`,
  );
}

Deno.test("Pool leaves no python process behind when the host is killed with SIGKILL mid-calls", async () => {
  await using dir = await modelsDir();
  const CALLS = 40;
  const script = await writeHostScript(
    dir.path,
    `await pool.addModel("slow", { file: "slow.py" });
for (let i = 0; i < ${CALLS}; i++) pool.execute("slow", { ms: 30000, i }).catch(() => {});
for (const w of ["w1", "w2"]) await pool.request("ping", undefined, { worker: w });
console.log(JSON.stringify({ pids: pool.status().workers.map((w) => w.pid), inFlight: pool.status().inFlight }));`,
  );
  {
    await using host = spawnHost(script);
    const state = await host.firstLine() as {
      pids: number[];
      inFlight: number;
    };
    host.pids = state.pids;
    assert.equal(state.pids.length, 2);
    assert.equal(state.inFlight, CALLS);
    host.child.kill("SIGKILL");
    assert.equal((await host.child.status).signal, "SIGKILL");
    await assertGone(state.pids, 8000);
  }
  await reportFault({
    fault: "host killed with SIGKILL under load",
    injected: 1,
    calls: 0,
    settled: 0,
    failed: 0,
    lost: 0,
    observed:
      `${CALLS} calls in flight died with their caller; both servers exit on stdin EOF: 0 orphans`,
  });
});
