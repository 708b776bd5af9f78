/**
 * Call threads stuck in cancelled calls (blocked in C, where the cancel's
 * interrupt cannot reach) and evals that must not wait behind model calls:
 * real pools of real Python servers with two call threads or fewer.
 */
import assert from "node:assert/strict";
import {
  CancelledError,
  NoWorkerError,
  OverloadedError,
  TimeoutError,
  WorkerCrashedError,
} from "../src/errors.ts";
import { Pool, type PoolOptions } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";
import { reconnect } from "../plugins/reconnect.ts";
import type { Atom } from "../src/atom.ts";
import type { ServerStatus } from "../src/session_types.ts";
import { nextEvent, PidTracker, readyAgain } from "./_pool_harness.ts";
import { tempDir } from "./_harness.ts";

const SLEEPER = await Deno.readTextFile(
  new URL("../python/tests/models/sleeper.py", import.meta.url),
);
// Outlives every test: only the end of the process frees a thread asleep in it.
const ASLEEP = 600;

/**
 * The sleeper, which also creates the file `msg["started"]` as its model code
 * starts: from then on a cancel cannot free its thread (one that lands
 * before, while the server's thread only took the call, ends the call
 * unrun; a thread counted busy by `serverStatus` may be there still).
 */
const MARKED_SLEEPER = SLEEPER.replace(
  '\n                    print("started")\n',
  '\n                    print("started")\n                    open(msg["started"], "w").close()\n',
);
assert.notEqual(MARKED_SLEEPER, SLEEPER);

async function startPool(
  serverArgs: string[],
  plugins: Plugin[] = [
    reconnect({ backoff: { initial: 10, max: 50 }, heartbeatInterval: 0 }),
  ],
  extra: PoolOptions = {},
): Promise<Pool> {
  const pool = await Pool.start({
    workers: 1,
    handleSignals: false,
    shutdownGrace: 100,
    serverArgs,
    plugins: { defaults: false, use: plugins },
    ...extra,
  });
  try {
    await pool.addModel("sleeper", { source: SLEEPER });
  } catch (err) {
    await pool.close();
    throw err;
  }
  return pool;
}

/** A call of the sleeper (its rejection is handled: the test awaits it later). */
function sleep(
  pool: Pool,
  seconds: number,
  timeout?: number,
): { done: Promise<unknown> } {
  const done = pool.execute(
    "sleeper",
    { seconds },
    timeout === undefined ? {} : { timeout },
  );
  done.catch(() => {});
  return { done };
}

/** Call threads running a call now (serverStatus). */
async function busyThreads(pool: Pool): Promise<number> {
  const { threads } = await pool.request<ServerStatus>("serverStatus");
  assert.ok(threads !== undefined, "the server reports its threads");
  return threads.running - threads.idle - threads.stuck;
}

/** Polls until `n` call threads are busy: a thread taking a call sends nothing. */
async function untilBusy(pool: Pool, n: number): Promise<void> {
  await until(async () => await busyThreads(pool) >= n);
}

/** Whether `path` exists. */
async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** Polls the server (its threads send nothing when they start or finish). */
async function until(done: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!await done()) {
    assert.ok(Date.now() < deadline, "the server never got there");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

Deno.test("Pool: calls stuck asleep after their cancel do not take the worker's threads", async () => {
  const pids = new PidTracker();
  await using pool = await startPool(["--threads", "2"]);
  pids.watch(pool);
  const pid = pool.status().workers[0]!.pid;
  // Cancelled once both run their model's code: an abort, not a 200 ms
  // timeout from the call (under load a call's timeout came before the
  // model's code ran, its cancel ended it unrun, one thread slept and none
  // was replaced: 1 in 10 runs beside 5 CPU hogs).
  await pool.addModel("marked", { source: MARKED_SLEEPER });
  await using marks = await tempDir();
  const started = [0, 1].map((i) => `${marks.path}/started${i}`);
  const abort = new AbortController();
  const stuck = started.map((file) =>
    pool.execute("marked", { seconds: ASLEEP, started: file }, {
      signal: abort.signal,
    })
  );
  for (const call of stuck) call.catch(() => {});
  await until(async () =>
    (await Promise.all(started.map(exists))).every((yes) => yes)
  );
  abort.abort();
  for (const call of stuck) await assert.rejects(call, CancelledError);
  // Both threads sleep on; without their replacement this call waits 600 s.
  assert.deepEqual(
    await pool.execute("sleeper", { seconds: 0 }, { timeout: 10_000 }),
    { slept: 0 },
  );
  const { threads } = await pool.request<ServerStatus>("serverStatus");
  assert.equal(threads?.size, 2);
  assert.ok((threads?.replaced ?? 0) >= 1, JSON.stringify(threads));
  const w1 = pool.status().workers[0]!;
  assert.equal(w1.pid, pid, "replacing threads is not replacing the worker");
  assert.equal(w1.restarts, 0);
  await pool.close();
  await pids.assertGone();
});

Deno.test("Pool replaces a wedged worker: calls in flight fail naming it, the restart goes through reconnect", async () => {
  const pids = new PidTracker();
  await using pool = await startPool([
    "--threads",
    "1",
    "--max-stuck-threads",
    "0",
  ]);
  pids.watch(pool);
  const exit = nextEvent(pool, "worker-exit");
  const back = readyAgain(pool, "w1");
  const first = sleep(pool, ASLEEP, 200);
  await untilBusy(pool, 1);
  // Queued behind the stuck call on the server, in flight for the pool.
  const waiting = sleep(pool, 0, 20_000);
  await assert.rejects(first.done, TimeoutError);
  const error = await waiting.done.then(
    () => assert.fail("a call on a wedged worker cannot succeed"),
    (err: unknown) => err,
  );
  assert.ok(error instanceof WorkerCrashedError, String(error));
  assert.match(error.message, /worker w1 \(pid \d+\) died: wedged: /);
  assert.match(String(error.details.reason), /--max-stuck-threads/);
  assert.match((await exit).reason, /^wedged: 1 call threads are stuck/);
  await back;
  const w1 = pool.status().workers[0]!;
  assert.equal(w1.restarts, 1);
  assert.match(w1.lastExit?.reason ?? "", /^wedged: /);
  // The models came back with it.
  assert.deepEqual(
    await pool.execute("sleeper", { seconds: 0 }, { timeout: 10_000 }),
    { slept: 0 },
  );
  await pool.close();
  await pids.assertGone();
});

Deno.test("Pool without plugins stops a wedged worker and fails its calls", async () => {
  const pids = new PidTracker();
  await using pool = await startPool(
    ["--threads", "1", "--max-stuck-threads", "0"],
    [],
  );
  pids.watch(pool);
  const exit = nextEvent(pool, "worker-exit");
  const first = sleep(pool, ASLEEP, 200);
  await untilBusy(pool, 1);
  const waiting = sleep(pool, 0, 20_000);
  await assert.rejects(first.done, TimeoutError);
  await assert.rejects(waiting.done, (err: unknown) => {
    assert.ok(err instanceof WorkerCrashedError, String(err));
    assert.match(err.message, /died: wedged: /);
    return true;
  });
  assert.match((await exit).reason, /^wedged: /);
  const w1 = pool.status().workers[0]!;
  assert.equal(w1.state, "stopped");
  assert.equal(w1.restarts, 0);
  await assert.rejects(
    pool.execute("sleeper", { seconds: 0 }),
    NoWorkerError,
  );
  await pool.close();
  await pids.assertGone();
});

/** Evaluates code that prints "started" and loops; resolves once it runs. */
async function loopingEval(pool: Pool): Promise<Atom> {
  const atom = pool.eval(
    "import time\nprint('started', flush=True)\nwhile True: time.sleep(0.05)",
  );
  const reader = atom.output.getReader();
  await reader.read();
  reader.releaseLock();
  return atom;
}

Deno.test("Pool: evals and model commands run while evals and model calls hold every call thread", async () => {
  const pids = new PidTracker();
  await using pool = await startPool(["--threads", "1"]);
  pids.watch(pool);
  const atoms = [await loopingEval(pool), await loopingEval(pool)];
  const busy = sleep(pool, ASLEEP);
  await untilBusy(pool, 1);
  assert.equal(await pool.eval("1+1").result, 2);
  await pool.addModel("other", { source: SLEEPER });
  assert.deepEqual(pool.status().models.map((m) => m.name), [
    "sleeper",
    "other",
  ]);
  for (const atom of atoms) atom.cancel();
  await Promise.all(atoms.map((atom) => atom.stopped));
  await pool.close();
  await assert.rejects(busy.done);
  await pids.assertGone();
});

Deno.test("Pool: an eval beyond --max-elastic-threads fails at once with OverloadedError", async () => {
  const pids = new PidTracker();
  await using pool = await startPool(["--max-elastic-threads", "2"]);
  pids.watch(pool);
  const atoms = [await loopingEval(pool), await loopingEval(pool)];
  await assert.rejects(pool.eval("1+1").result, (err: unknown) => {
    assert.ok(err instanceof OverloadedError, String(err));
    assert.match(err.message, /--max-elastic-threads/);
    return true;
  });
  atoms[0]!.cancel();
  await atoms[0]!.stopped;
  assert.equal(await pool.eval("1+1").result, 2);
  atoms[1]!.cancel();
  await atoms[1]!.stopped;
  await pool.close();
  await pids.assertGone();
});

Deno.test("Pool: calls waiting for a model's own pyproxy.Lock leave their threads when they time out or are aborted", async () => {
  // A model guarding a GPU of its own: with a threading.Lock, each call
  // queued behind a long one held its thread until that call ended (stuck,
  // and past --max-stuck-threads the worker went as wedged).
  const pids = new PidTracker();
  await using pool = await startPool(["--threads", "8"]);
  pids.watch(pool);
  await pool.addModel("own", {
    source: await Deno.readTextFile(
      new URL("../python/tests/models/own_lock.py", import.meta.url),
    ),
  });
  const long = pool.execute("own", { seconds: ASLEEP });
  long.catch(() => {});
  await untilBusy(pool, 1);
  const timedOut = [1, 2, 3].map(() =>
    pool.execute("own", { seconds: 0 }, { timeout: 300 })
  );
  const abort = new AbortController();
  const aborted = pool.execute("own", { seconds: 0 }, {
    signal: abort.signal,
  });
  await untilBusy(pool, 5);
  abort.abort();
  await assert.rejects(aborted);
  for (const call of timedOut) await assert.rejects(call, TimeoutError);
  // Their threads are free (not stuck): only the long call runs.
  await until(async () => {
    const { threads } = await pool.request<ServerStatus>("serverStatus");
    return threads !== undefined && threads.stuck === 0 &&
      threads.running - threads.idle === 1;
  });
  await pool.close();
  await pids.assertGone();
});

Deno.test("Pool: a call cancelled while it holds a pyproxy.Lock releases it as it ends, for the next call", async () => {
  const pids = new PidTracker();
  await using pool = await startPool(["--threads", "4"]);
  pids.watch(pool);
  const source = await Deno.readTextFile(
    new URL("../python/tests/models/own_lock.py", import.meta.url),
  );
  await pool.addModel("own", { source });
  // Before: the lock stayed held for good, and every later call waited.
  await assert.rejects(
    pool.execute("own", { keep: true }, { timeout: 300 }),
    TimeoutError,
  );
  assert.deepEqual(
    await pool.execute("own", { seconds: 0 }, { timeout: 10_000 }),
    { slept: 0, free: true },
  );
  await pool.close();
  await pids.assertGone();
});
