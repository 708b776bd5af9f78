import assert from "node:assert/strict";
import {
  CancelledError,
  OverloadedError,
  PythonError,
  SessionLostError,
  ShuttingDownError,
  TimeoutError,
} from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import type { ServerStatus } from "../src/session_types.ts";
import { nextEvent } from "./_pool_harness.ts";

/** The error `promise` rejects with (fails when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new assert.AssertionError({ message: "expected a rejection" });
}

// The tests of a default one-worker pool that neither kill its worker nor change its
// server's options, as steps on one such pool (a Python server start each, otherwise).
Deno.test("EvalSession on one one-worker pool (each step its own sessions)", async (t) => {
  await using pool = await Pool.start({ workers: 1, handleSignals: false });
  await t.step(
    "EvalSession keeps its namespace between atoms",
    () => evalSessionKeepsNamespaceBetweenAtoms(pool),
  );
  await t.step(
    "EvalSession keeps globals and forgets locals",
    () => evalSessionKeepsGlobalsForgetsLocals(pool),
  );
  await t.step(
    "EvalSession close drops the namespace",
    () => evalSessionCloseDropsNamespace(pool),
  );
  await t.step(
    "EvalSession runs the next atom only after a cancelled one stopped",
    () => evalSessionRunsNextAtomOnly(pool),
  );
  await t.step(
    "EvalSession runs a cell that awaits at its top level, and a cancel of one stops it with the session kept",
    () => evalSessionRunsCellThatAwaits(pool),
  );
  await t.step(
    "An atom whose timeout ends while it waits behind the session's earlier atoms says it never started",
    () => atomWhoseTimeoutEndsWhile(pool),
  );
  await t.step(
    "An atom cancelled after it was sent but before it started still waits for its code to stop",
    () => atomCancelledAfterWasSent(pool),
  );
  await t.step(
    "EvalSession close cancels the evals still running in it, then closes",
    () => evalSessionCloseCancelsEvalsStill(pool),
  );
});

/** A step of "EvalSession on one one-worker pool (each step its own sessions)": EvalSession keeps its namespace between atoms */
async function evalSessionKeepsNamespaceBetweenAtoms(
  pool: Pool,
): Promise<void> {
  await using session = await pool.openSession();
  assert.match(session.id, /^s-[0-9a-f]{16}$/);
  const first = session.eval("x = 1");
  const second = session.eval("x + 1"); // queued behind the first, not awaited in between
  assert.equal(await first.result, null);
  assert.equal(await second.result, 2);
  assert.equal(second.sessionId, session.id);
  assert.equal(second.worker, session.worker);
  // Another session (or no session) does not see it (on the one worker: the same
  // server, so only the sessions' own namespaces keep them apart).
  await using other = await pool.openSession();
  const err = await rejection(other.eval("x").result) as unknown;
  assert.ok(err instanceof PythonError && err.type === "NameError");
}

/** A step of "EvalSession on one one-worker pool (each step its own sessions)": EvalSession keeps globals and forgets locals */
async function evalSessionKeepsGlobalsForgetsLocals(pool: Pool): Promise<void> {
  await using session = await pool.openSession();
  assert.equal(
    await session.eval("a + b", { locals: { a: 1 }, globals: { b: 2 } }).result,
    3,
  );
  assert.equal(await session.eval("b").result, 2);
  const err = await rejection(session.eval("a").result) as unknown;
  assert.ok(err instanceof PythonError && err.type === "NameError");
}

Deno.test("EvalSession is lost for good when its worker dies", async () => {
  await using pool = await Pool.start({ workers: 2, handleSignals: false });
  const session = await pool.openSession();
  assert.equal(await session.eval("y = 5\ny").result, 5);
  const pid = pool.status().workers.find((w) => w.id === session.worker)?.pid;
  assert.ok(pid);
  const inFlight = session.eval(
    "import time\nprint('waiting')\ntime.sleep(100)",
  );
  const reader = inFlight.output.getReader();
  assert.equal((await reader.read()).value?.data, "waiting\n");
  const exited = nextEvent(
    pool,
    "worker-exit",
    (ev) => ev.worker === session.worker,
  );
  Deno.kill(pid, "SIGKILL");
  await exited;
  const err = await rejection(inFlight.result) as Error;
  assert.ok(err instanceof SessionLostError, `${err}`);
  assert.ok(session.lost);
  await assert.rejects(session.eval("y").result, SessionLostError);
  // The pool itself carries on.
  assert.equal(await pool.eval("'ok'").result, "ok");
  await assert.rejects(session.eval("1").result, SessionLostError);
});

/** A step of "EvalSession on one one-worker pool (each step its own sessions)": EvalSession close drops the namespace */
async function evalSessionCloseDropsNamespace(pool: Pool): Promise<void> {
  const session = await pool.openSession();
  await session.eval("z = 1").result;
  await session.close();
  await assert.rejects(session.eval("z").result);
  // The server forgot it too: a raw eval naming it is refused.
  await assert.rejects(
    pool.request("eval", { code: "z", session: session.id }, {
      worker: session.worker,
    }),
    SessionLostError,
  );
}

Deno.test("openSession beyond --max-eval-sessions is an OverloadedError until one closes", async () => {
  await using pool = await Pool.start({
    workers: 1,
    handleSignals: false,
    serverArgs: ["--max-eval-sessions", "2"],
  });
  const first = await pool.openSession();
  await using second = await pool.openSession();
  await assert.rejects(pool.openSession(), (error: unknown) => {
    assert.ok(error instanceof OverloadedError);
    assert.match(error.message, /--max-eval-sessions/);
    return true;
  });
  const status = await pool.request<ServerStatus>("serverStatus");
  assert.equal(status.evalSessions, 2);
  // The sessions already open keep working; closing one makes room.
  assert.equal(await second.eval("1 + 1").result, 2);
  await first.close();
  await using third = await pool.openSession();
  assert.equal(await third.eval("3").result, 3);
});

/** A step of "EvalSession on one one-worker pool (each step its own sessions)": EvalSession runs the next atom only after a cancelled one stopped */
async function evalSessionRunsNextAtomOnly(pool: Pool): Promise<void> {
  await using session = await pool.openSession();
  const controller = new AbortController();
  const spin = session.eval(
    "n = 0\nprint('spinning')\nwhile True:\n    n += 1",
    {
      signal: controller.signal,
      cancelGrace: 60_000,
    },
  );
  const next = session.eval("n > 0");
  // Whether the spinning atom had stopped when the next one finished.
  const order = next.result.then((value) => [value, spin.done]);
  const reader = spin.output.getReader();
  assert.equal((await reader.read()).value?.data, "spinning\n");
  controller.abort();
  await assert.rejects(spin.result, CancelledError);
  assert.deepEqual(await order, [true, true]);
  assert.ok(!session.lost);
  await reader.cancel();
}

/** A step of "EvalSession on one one-worker pool (each step its own sessions)": EvalSession runs a cell that awaits at its top level, and a cancel of one stops it with the session kept */
async function evalSessionRunsCellThatAwaits(pool: Pool): Promise<void> {
  // A notebook's cell awaits at its top level (was a SyntaxError: "'await'
  // outside function").
  await using session = await pool.openSession();
  assert.equal(
    await session.eval(
      "import asyncio\nx = await asyncio.sleep(0, result=41)\nx + 1",
    ).result,
    42,
  );
  const controller = new AbortController();
  const waiting = session.eval(
    "print('awaiting', flush=True)\ntry:\n    await asyncio.sleep(3600)\nexcept asyncio.CancelledError:\n    stopped = True\n    raise",
    { signal: controller.signal, cancelGrace: 60_000 },
  );
  const reader = waiting.output.getReader();
  assert.equal((await reader.read()).value?.data, "awaiting\n");
  controller.abort();
  await assert.rejects(waiting.result, CancelledError);
  assert.deepEqual(await session.eval("x, stopped").result, [41, true]);
  // A coroutine as the last value (run to completion) is stopped so too:
  // it went on for its whole await, the cancel unread.
  const again = new AbortController();
  const main = session.eval(
    "async def main():\n    print('in main', flush=True)\n    await asyncio.sleep(3600)\nmain()",
    { signal: again.signal, cancelGrace: 60_000 },
  );
  const mainReader = main.output.getReader();
  assert.equal((await mainReader.read()).value?.data, "in main\n");
  again.abort();
  await assert.rejects(main.result, CancelledError);
  assert.equal(await session.eval("x").result, 41);
  assert.ok(!session.lost);
  await reader.cancel();
  await mainReader.cancel();
}

/** A step of "EvalSession on one one-worker pool (each step its own sessions)": An atom whose timeout ends while it waits behind the session's earlier atoms says it never started */
async function atomWhoseTimeoutEndsWhile(pool: Pool): Promise<void> {
  // A notebook's cell with a timeout, queued behind a long one, timed out
  // before its code ran, with the message of a cell that ran too long.
  await using session = await pool.openSession();
  const long = session.eval(
    "import time\nprint('long')\nwhile True:\n    time.sleep(0.01)",
    { cancelGrace: 60_000 },
  );
  const queued = session.eval("ran = True", { timeout: 50 });
  const reader = long.output.getReader();
  assert.equal((await reader.read()).value?.data, "long\n");
  const err = await rejection(queued.result);
  assert.ok(err instanceof TimeoutError, String(err));
  assert.equal(
    err.message,
    "Cannot complete eval: timed out after 50 ms, before its code started: it waited for the session's earlier evals (its timeout counts from eval())",
  );
  long.cancel();
  await assert.rejects(long.result, CancelledError);
  await long.stopped;
  await reader.cancel();
  assert.equal(await session.eval("'ran' in globals()").result, false);
  // A timeout while the code runs says only that.
  const spin = session.eval("while True:\n    pass", { timeout: 50 });
  const spun = await rejection(spin.result);
  assert.ok(spun instanceof TimeoutError, String(spun));
  assert.equal(spun.message, "Cannot complete eval: timed out after 50 ms");
  await spin.stopped;
}

/** A step of "EvalSession on one one-worker pool (each step its own sessions)": An atom cancelled after it was sent but before it started still waits for its code to stop */
async function atomCancelledAfterWasSent(pool: Pool): Promise<void> {
  await using session = await pool.openSession();
  const atom = session.eval(
    "import time\nfor i in range(100):\n    time.sleep(0.1)",
  );
  const ticks = async () => {
    for (let i = 0; i < 20; i++) await Promise.resolve();
  };
  // Microtasks only: the request is written to the worker by now, and its
  // `evalStart` (which needs a socket read) cannot have arrived.
  await ticks();
  assert.equal(atom.sessionId, undefined);
  let stopped = false;
  atom.stopped.then(() => stopped = true);
  atom.cancel();
  await assert.rejects(atom.result, CancelledError);
  // The code stops only once its evalStart brought the cancel to the server
  // and the reply came back: both need socket reads, microtasks are not enough.
  await ticks();
  assert.equal(stopped, false);
  await atom.stopped;
  assert.equal(atom.sessionId, session.id); // its evalStart did arrive
  assert.equal(await session.eval("1 + 1").result, 2);
}

/** A step of "EvalSession on one one-worker pool (each step its own sessions)": EvalSession close cancels the evals still running in it, then closes */
async function evalSessionCloseCancelsEvalsStill(pool: Pool): Promise<void> {
  const session = await pool.openSession();
  const busy = session.eval(
    "print('go')\nimport time\nwhile True: time.sleep(0.01)",
  );
  const queued = session.eval("1");
  // Its first output proves the loop runs.
  const reader = busy.output.getReader();
  assert.equal((await reader.read()).value?.data, "go\n");
  reader.releaseLock();
  await session.close();
  assert.ok(busy.done && queued.done);
  assert.ok(await rejection(busy.result) instanceof CancelledError);
  assert.ok(await rejection(queued.result) instanceof CancelledError);
  assert.equal(
    pool.status().workers[0]!.restarts,
    0,
    "interrupted, not killed",
  );
  await assert.rejects(session.eval("1").result, ShuttingDownError);
}
