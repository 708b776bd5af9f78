/**
 * `WorkerCrashedError` names what its worker was running when it died: the
 * crasher's call beside its victims (`details.inFlight`, by model; evals and
 * other commands by their command), in every lost call's error, in the
 * worker's `lastExit`, its `worker-exit` event and `onWorkerExit` hook,
 * and in one log line per death. The host's own commands (a heartbeat's
 * `ping`) are not among them.
 */
import assert from "node:assert/strict";
import { WorkerCrashedError } from "../src/errors.ts";
import type { Plugin, WorkerExitEvent } from "../src/plugin.ts";
import { Pool } from "../src/pool.ts";
import { countInFlight } from "../src/_in_flight.ts";
import { recordingLogger, waitFor } from "./_harness.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";

/** Ends its process (os._exit(3)) on its first call. */
const CRASHER = `
import os

class Crasher:
    def execute(self, msg):
        os._exit(3)
`;

/**
 * Batches of 3 that sleep: of 4 calls, the first goes alone (the model is
 * idle), the 3 others as one batch once they are 3.
 */
const BATCHED = `
import time

class Batched:
    batch_size = 3
    batch_delay_ms = 1000

    def execute_batch(self, msgs):
        time.sleep(30)
        return [{} for _ in msgs]
`;

/** The first chunk of an atom's output: its code is running. */
async function started(output: ReadableStream<unknown>): Promise<void> {
  const reader = output.getReader();
  await reader.read();
  reader.releaseLock();
}

Deno.test("WorkerCrashedError of each call lost with its worker names the calls it was running, by model", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  const { logger, entries } = recordingLogger();
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, logger }),
    );
    pids.watch(pool);
    await pool.addModel("slow", { file: "slow.py" });
    await pool.addModel("bad", { source: CRASHER });
    const description = await pool.addModel("batched", { source: BATCHED });
    assert.deepEqual(
      (description as { batch?: unknown }).batch,
      { size: 3, delayMs: 1000 },
    );
    const atom = pool.eval(
      "import time\nprint('started', flush=True)\ntime.sleep(30)",
    );
    await started(atom.output);
    const slow = [1, 2, 3].map((i) => pool.execute("slow", { ms: 30_000, i }));
    const batch = [1, 2, 3, 4].map((i) => pool.execute("batched", { i }));
    // Every call above is on the worker before the crasher's.
    await pool.request("ping");
    const back = readyAgain(pool, "w1");
    const crash = pool.execute("bad", {});
    const settled = await Promise.allSettled([
      crash,
      ...slow,
      ...batch,
      atom.result,
    ]);
    const errors = settled.map((s) => {
      assert.equal(s.status, "rejected");
      const err = (s as PromiseRejectedResult).reason;
      assert.ok(err instanceof WorkerCrashedError, String(err));
      return err;
    });
    const inFlight = { eval: 1, slow: 3, batched: 4, bad: 1 };
    for (const err of errors) {
      assert.deepEqual(err.details.inFlight, inFlight);
      assert.equal(err.details.inFlightCalls, 9);
      assert.match(
        err.message,
        / died: exited with code 3 while running: eval \(1 call\), slow \(3\), batched \(4\), bad \(1\)$/,
      );
    }
    assert.equal(errors[0]!.details.call, "bad");
    assert.match(
      errors[0]!.message,
      /^Cannot run model 'bad': worker w1 \(pid \d+\) died/,
    );
    assert.equal(errors[1]!.details.call, "slow");
    assert.equal(errors[4]!.details.call, "batched");
    assert.equal(errors[8]!.details.call, "eval");
    await back;
    assert.deepEqual(
      pool.status().workers[0]!.lastExit?.inFlight,
      { byName: inFlight, calls: 9 },
    );
    // One line for the death, whatever the number of calls lost.
    const lines = entries.filter(([level, message]) =>
      level === "warn" && message.includes("exited")
    );
    assert.equal(lines.length, 1, JSON.stringify(lines));
    assert.equal(
      lines[0]![1],
      "worker {id} (pid {pid}) exited: {reason} while running: {running}",
    );
    assert.equal(
      lines[0]![2]!.running,
      "eval (1 call), slow (3), batched (4), bad (1)",
    );
  } finally {
    await pids.assertGone();
  }
});

Deno.test("WorkerCrashedError keeps at most 10 names, counting the rest", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    // Not the crash quarantine (loadCrashWindow 0): the crash within 3 s of
    // the 13 loads had them all suspected, and the restart's replay held
    // each alone for 250 ms (3.3 s of the test's ~4).
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, loadCrashWindow: 0 }),
    );
    pids.watch(pool);
    await pool.addModel("bad", { source: CRASHER });
    for (let i = 0; i < 12; i++) {
      await pool.addModel(`slow${i}`, { file: "slow.py" });
    }
    const slow = Array.from(
      { length: 12 },
      (_, i) => pool.execute(`slow${i}`, { ms: 30_000 }),
    );
    await pool.request("ping");
    const back = readyAgain(pool, "w1");
    const [crash] = await Promise.allSettled([
      pool.execute("bad", {}),
      ...slow,
    ]);
    const err = (crash as PromiseRejectedResult).reason;
    assert.ok(err instanceof WorkerCrashedError, String(err));
    assert.equal(Object.keys(err.details.inFlight as object).length, 10);
    assert.equal(err.details.inFlightCalls, 13);
    assert.match(
      err.message,
      /while running: slow0 \(1 call\), slow1 \(1\), .*slow9 \(1\), and 3 more calls$/,
    );
    await back;
  } finally {
    await pids.assertGone();
  }
});

/** The state letter of process `pid` (`/proc/<pid>/stat`): `T` when stopped. */
function processState(pid: number): string {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
}

Deno.test("WorkerCrashedError, the worker-exit event and onWorkerExit name the calls in flight, the host's own ping left out", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  const hooked: WorkerExitEvent[] = [];
  const recorder: Plugin = {
    name: "recorder",
    onWorkerExit: (ev) => void hooked.push(ev),
  };
  try {
    const options = poolOptions(dir.path, { workers: 1 });
    await using pool = await Pool.start({
      ...options,
      plugins: [...(options.plugins as Plugin[]), recorder],
    });
    pids.watch(pool);
    await pool.addModel("freezer", { file: "freezer.py" });
    const pid = pidOf(pool, "w1");
    // The model stops its own process: the ping sent next stays in flight,
    // as a heartbeat's does on a worker that dies before it answers.
    // Its error taken at once: a failure before it is read (the wait below
    // timing out) then closes the pool with the call unsettled, and its
    // ShuttingDownError, unhandled, hid the failure's own message.
    const frozen = pool.execute("freezer", {}).then(
      () => assert.fail("the call succeeded"),
      (e) => e,
    );
    await waitFor(() => processState(pid) === "T", {
      message: "the worker never stopped",
    });
    const ping = pool.control("w1", "ping", {});
    ping.catch(() => {});
    const exit = nextEvent(pool, "worker-exit", (ev) => ev.pid === pid);
    const back = readyAgain(pool, "w1");
    Deno.kill(pid, "SIGKILL");
    const err = await frozen;
    assert.ok(err instanceof WorkerCrashedError, String(err));
    assert.deepEqual(err.details.inFlight, { freezer: 1 });
    assert.equal(err.details.inFlightCalls, 1);
    assert.match(err.message, / while running: freezer \(1 call\)$/);
    await assert.rejects(ping);
    const inFlight = { byName: { freezer: 1 }, calls: 1 };
    assert.deepEqual((await exit).inFlight, inFlight);
    await back;
    assert.deepEqual(pool.status().workers[0]!.lastExit?.inFlight, inFlight);
    await waitFor(() => hooked.some((ev) => ev.reason === "killed by SIGKILL"));
    const ev = hooked.find((ev) => ev.reason === "killed by SIGKILL")!;
    assert.deepEqual(ev.inFlight, inFlight);
    assert.equal(ev.intentional, false);
    // The process that died, as the pool's event names it (typed too).
    const hookedPid: number | null = ev.pid;
    assert.equal(hookedPid, pid);
  } finally {
    await pids.assertGone();
  }
});

Deno.test("countInFlight leaves out the host's own commands, and answers undefined when only those were in flight", () => {
  const req = (cmd: string, args?: Record<string, unknown>) => ({
    cmd,
    args,
  });
  assert.equal(
    countInFlight([req("ping"), req("configure", {}), req("serverStatus")]),
    undefined,
  );
  assert.deepEqual(
    countInFlight([
      req("ping"),
      req("executeModel", { name: "bad" }),
      req("cancel", { target: 3 }),
      req("itemAck", { target: 4, seq: 1 }),
      req("eval", { code: "1" }),
      req("executeBatch", { name: "plain", msgs: [1, 2, 3] }),
      req("stopServer"),
      req("addModel", { name: "new" }),
    ]),
    { byName: { bad: 1, eval: 1, plain: 3, addModel: 1 }, calls: 6 },
  );
});

Deno.test("A worker's death log line names the request ids of the calls it was running, as their clients got them", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  const { logger, entries } = recordingLogger();
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, logger }),
    );
    pids.watch(pool);
    await pool.addModel("slow", { file: "slow.py" });
    await pool.addModel("bad", { source: CRASHER });
    const slow = [
      pool.execute("slow", { ms: 30_000 }, { requestId: "req-a" }),
      pool.execute("slow", { ms: 30_000 }),
      pool.execute("slow", { ms: 30_000 }, { requestId: "req-b" }),
    ];
    await pool.request("ping");
    const back = readyAgain(pool, "w1");
    const crash = pool.execute("bad", {}, { requestId: "crash-9" });
    const settled = await Promise.allSettled([...slow, crash]);
    assert.ok(settled.every((s) => s.status === "rejected"));
    await back;
    assert.deepEqual(pool.status().workers[0]!.lastExit?.inFlight, {
      byName: { slow: 3, bad: 1 },
      calls: 4,
      requestIds: ["req-a", "req-b", "crash-9"],
    });
    // Before, the line named the models only: a client's 502 with its
    // requestId found nothing in the gateway's log (the worker that would
    // have logged it was dead).
    const lines = entries.filter(([level, message]) =>
      level === "warn" && message.includes("exited")
    );
    assert.equal(lines.length, 1, JSON.stringify(lines));
    assert.equal(
      lines[0]![1],
      "worker {id} (pid {pid}) exited: {reason} while running: {running} (request ids {requestIds})",
    );
    assert.equal(lines[0]![2]!.requestIds, "req-a, req-b, crash-9");
  } finally {
    await pids.assertGone();
  }
});

Deno.test("countInFlight keeps the request ids of the calls (a batch's too), once each, at most 10", () => {
  const req = (cmd: string, args?: Record<string, unknown>) => ({
    cmd,
    args,
  });
  assert.deepEqual(
    countInFlight([
      req("executeModel", { name: "a", requestId: "r1" }),
      req("cancel", { target: 1, requestId: "not-a-call" }),
      req("executeBatch", {
        name: "b",
        msgs: [1, 2, 3],
        requestIds: ["r2", null, "r1"],
      }),
      req("eval", { code: "1", requestId: "r3" }),
    ])?.requestIds,
    ["r1", "r2", "r3"],
  );
  const many = Array.from(
    { length: 12 },
    (_, i) => req("executeModel", { name: "a", requestId: `r${i}` }),
  );
  assert.equal(countInFlight(many)?.requestIds?.length, 10);
  assert.equal(
    countInFlight([req("executeModel", { name: "a" })])?.requestIds,
    undefined,
  );
});
