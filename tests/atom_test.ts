import assert from "node:assert/strict";
import {
  CancelledError,
  ConfigError,
  PythonError,
  TimeoutError,
} from "../src/errors.ts";
import { getAtom, type OutputChunk } from "../src/atom.ts";
import { Pool } from "../src/pool.ts";
import { nextEvent } from "./_pool_harness.ts";
import type { Plugin } from "../src/plugin.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

/** The error `promise` rejects with (fails when it resolves). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new assert.AssertionError({ message: "expected a rejection" });
}

async function startPool(workers = 1): Promise<Pool> {
  return await Pool.start({ workers, handleSignals: false });
}

async function collect(
  stream: ReadableStream<OutputChunk>,
): Promise<OutputChunk[]> {
  const out: OutputChunk[] = [];
  for await (const chunk of stream) out.push(chunk);
  return out;
}

function text(chunks: OutputChunk[], fd?: 1 | 2): string {
  return chunks.filter((c) => fd === undefined || c.fd === fd).map((c) =>
    c.data
  ).join("");
}

// Steps on one pool started as `startPool()`: each of these tests started its
// own (a pool and its Python worker) and needs no fresh one.
Deno.test("Atom on one pool (each step its own atoms)", async (t) => {
  await using pool = await startPool();
  await t.step(
    "Atom streams output while the code still runs",
    () => atomStreamsOutputWhileCode(pool),
  );
  await t.step(
    "Atom separates stdout from stderr",
    () => atomSeparatesStdoutFromStderr(pool),
  );
  await t.step(
    "Atom shows the code's logging warnings and errors on stderr, as a notebook does",
    () => atomShowsCodeLoggingWarnings(pool),
  );
  await t.step(
    "Atom rejects with PythonError and still delivers the output before it",
    () => atomRejectsWithPythonerrorAnd(pool),
  );
  await t.step(
    "Atom uses a fresh namespace without a session",
    () => atomUsesFreshNamespaceWithout(pool),
  );
  await t.step(
    "Atom passes locals and globals",
    () => atomPassesLocalsAndGlobals(pool),
  );
  await t.step(
    "Atom calls a single function with args",
    () => atomCallsSingleFunctionWith(pool),
  );
  await t.step(
    "Atom cancels a busy loop by interrupting it",
    () => atomCancelsBusyLoopBy(pool),
  );
  await t.step(
    "Atom keeps finished output for replay from a sequence number",
    () => atomKeepsFinishedOutputFor(pool),
  );
  await t.step(
    "Atom drops the oldest unread output beyond the replay cap and marks the gap",
    () => atomDropsOldestUnreadOutput(pool),
  );
  await t.step(
    "Atom output flood does not hold back other replies on the connection",
    () => atomOutputFloodDoesNot(pool),
  );
  await t.step(
    "Atom output nobody reads stays within the replay cap",
    () => atomOutputNobodyReadsStays(pool),
  );
  await t.step(
    "Atom options are validated at once: a bad timeout is a ConfigError, 0 times out unsent, Infinity never",
    () => atomOptionsAreValidatedAt(pool),
  );
});

/** A step of "Atom on one pool (each step its own atoms)": Atom streams output while the code still runs */
async function atomStreamsOutputWhileCode(pool: Pool): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    const flag = `${dir}/go`;
    // The code waits for a file the test creates only after it saw the first
    // chunk: if output were delivered at the end, this would time out.
    const atom = pool.eval(
      "import os, time\nprint('first')\nwhile not os.path.exists(flag):\n    time.sleep(0.01)\nprint('second')\n'done'",
      { locals: { flag }, timeout: 10_000 },
    );
    const reader = atom.output.getReader();
    const first = await reader.read();
    assert.equal(first.value?.data, "first\n");
    assert.equal(first.value?.seq, 0);
    assert.equal(atom.state, "running");
    await Deno.writeTextFile(flag, "");
    const rest: string[] = [];
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      rest.push(r.value.data);
    }
    assert.equal(rest.join(""), "second\n");
    assert.equal(await atom.result, "done");
    assert.equal(atom.state, "succeeded");
    assert.ok(atom.sessionId?.startsWith("t-"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A step of "Atom on one pool (each step its own atoms)": Atom separates stdout from stderr */
async function atomSeparatesStdoutFromStderr(pool: Pool): Promise<void> {
  const atom = pool.eval(
    "import sys\nprint('out')\nprint('err', file=sys.stderr)\n_ = sys.stdout.write('more')",
  );
  const [chunks, value] = await Promise.all([
    collect(atom.output),
    atom.result,
  ]);
  assert.equal(value, null);
  assert.equal(text(chunks, 1), "out\nmore");
  assert.equal(text(chunks, 2), "err\n");
  assert.deepEqual(chunks.map((c) => c.seq), chunks.map((_, i) => i));
}

/** A step of "Atom on one pool (each step its own atoms)": Atom shows the code's logging warnings and errors on stderr, as a notebook does */
async function atomShowsCodeLoggingWarnings(pool: Pool): Promise<void> {
  const atom = pool.eval(
    "import logging\nlog = logging.getLogger('nb')\nlog.info('quiet')\nlog.warning('careful %d', 3)\nprint('between')\nlog.error('bad')\n1",
  );
  const [chunks, value] = await Promise.all([
    collect(atom.output),
    atom.result,
  ]);
  assert.equal(value, 1);
  assert.equal(text(chunks, 2), "WARNING:nb:careful 3\nERROR:nb:bad\n");
  assert.equal(text(chunks, 1), "between\n");
}

/** A step of "Atom on one pool (each step its own atoms)": Atom rejects with PythonError and still delivers the output before it */
async function atomRejectsWithPythonerrorAnd(pool: Pool): Promise<void> {
  const atom = pool.eval(
    "print('before')\ndef f():\n    raise ValueError('bad x')\nf()",
  );
  const chunks = collect(atom.output);
  const err = await rejection(atom.result) as unknown;
  assert.ok(err instanceof PythonError);
  assert.equal(err.type, "ValueError");
  assert.equal(err.message, "ValueError: bad x");
  assert.match(err.traceback, /in f/);
  assert.doesNotMatch(err.traceback, /eval\.py/);
  assert.equal(text(await chunks), "before\n");
  assert.equal(atom.state, "failed");
}

/**
 * The scenarios of this file with no steps of their own, but the one that
 * measures the host's memory (a child process of its own), each on a pool
 * of its own: they wait on their code's sleeps and graces, so the file runs
 * them at once (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Atom output of concurrent atoms on one worker stays separate",
  async () => {
    await using pool = await startPool(1);
    const code =
      "import time\nfor i in range(20):\n    print(tag * 3)\n    time.sleep(0.005)\ntag";
    const a = pool.eval(code, { locals: { tag: "A" } });
    const b = pool.eval(code, { locals: { tag: "B" } });
    const [outA, outB, ra, rb] = await Promise.all([
      collect(a.output),
      collect(b.output),
      a.result,
      b.result,
    ]);
    assert.deepEqual([ra, rb], ["A", "B"]);
    assert.equal(text(outA), "AAA\n".repeat(20));
    assert.equal(text(outB), "BBB\n".repeat(20));
  },
]);

/** A step of "Atom on one pool (each step its own atoms)": Atom uses a fresh namespace without a session */
async function atomUsesFreshNamespaceWithout(pool: Pool): Promise<void> {
  await pool.eval("x = 1").result;
  const err = await rejection(pool.eval("x").result) as unknown;
  assert.ok(err instanceof PythonError);
  assert.equal(err.type, "NameError");
}

/** A step of "Atom on one pool (each step its own atoms)": Atom passes locals and globals */
async function atomPassesLocalsAndGlobals(pool: Pool): Promise<void> {
  assert.equal(
    await pool.eval("a + b", { locals: { a: 1 }, globals: { b: 2 } }).result,
    3,
  );
  assert.deepEqual(
    await pool.eval("{'k': v}", { locals: { v: [1, "x", null] } }).result,
    { k: [1, "x", null] },
  );
}

/** A step of "Atom on one pool (each step its own atoms)": Atom calls a single function with args */
async function atomCallsSingleFunctionWith(pool: Pool): Promise<void> {
  const fn = "def add(a, b):\n    print('adding')\n    return a + b";
  assert.equal(await pool.eval(fn, { args: [2, 3] }).result, 5);
  assert.equal(await pool.eval(fn, { args: { a: "x", b: "y" } }).result, "xy");
  const atom = pool.eval("lambda n: n * 2", { args: [21] });
  assert.equal(await atom.result, 42);
}

/** A step of "Atom on one pool (each step its own atoms)": Atom cancels a busy loop by interrupting it */
async function atomCancelsBusyLoopBy(pool: Pool): Promise<void> {
  const pid = pool.status().workers[0]?.pid;
  const controller = new AbortController();
  // A grace far beyond the test's patience: only an interrupt can stop it.
  const atom = pool.eval("print('spinning')\nwhile True:\n    pass", {
    signal: controller.signal,
    cancelGrace: 60_000,
  });
  const reader = atom.output.getReader();
  assert.equal((await reader.read()).value?.data, "spinning\n");
  controller.abort();
  await assert.rejects(atom.result, CancelledError);
  assert.equal(atom.state, "cancelled");
  assert.equal((await reader.read()).done, true); // the output ends once the code stopped
  await atom.stopped;
  assert.equal(atom.done, true);
  assert.equal(await pool.eval("1 + 1").result, 2);
  assert.equal(pool.status().workers[0]?.pid, pid);
}

scenarios.push([
  "Atom kills the worker when a sleeping call ignores the interrupt",
  async () => {
    await using pool = await startPool();
    const before = pool.status().workers[0];
    const exited = nextEvent(
      pool,
      "worker-exit",
      (ev) => ev.worker === before?.id,
    );
    const atom = pool.eval("import time\nprint('sleeping')\ntime.sleep(100)", {
      timeout: 500,
      cancelGrace: 200,
    });
    const output = collect(atom.output);
    await assert.rejects(atom.result, TimeoutError);
    const ev = await exited;
    assert.equal(ev.type === "worker-exit" && ev.pid, before?.pid);
    assert.equal(text(await output), "sleeping\n");
    // The pool replaced the worker.
    assert.equal(await pool.eval("'back'").result, "back");
    assert.notEqual(pool.status().workers[0]?.pid, before?.pid);
  },
]);

/** A step of "Atom on one pool (each step its own atoms)": Atom keeps finished output for replay from a sequence number */
async function atomKeepsFinishedOutputFor(pool: Pool): Promise<void> {
  // Alternating streams force one chunk per print.
  const atom = pool.eval(
    "import sys\nfor i in range(10):\n    print(i, file=sys.stdout if i % 2 == 0 else sys.stderr)",
  );
  await atom.result;
  const chunks = await collect(atom.replay(4));
  assert.deepEqual(chunks.map((c) => c.seq), [4, 5, 6, 7, 8, 9]);
  assert.deepEqual(chunks.map((c) => c.data), [
    "4\n",
    "5\n",
    "6\n",
    "7\n",
    "8\n",
    "9\n",
  ]);
  assert.equal(getAtom(pool, atom.id), atom);
  assert.equal(text(await collect(getAtom(pool, atom.id)!.replay(9))), "9\n");
}

/** A step of "Atom on one pool (each step its own atoms)": Atom drops the oldest unread output beyond the replay cap and marks the gap */
async function atomDropsOldestUnreadOutput(pool: Pool): Promise<void> {
  const atom = pool.eval(
    "import sys\nfor i in range(100):\n    print('%03d' % i, file=sys.stdout if i % 2 == 0 else sys.stderr)",
    { replayBytes: 40 },
  );
  await atom.result;
  const chunks = await collect(atom.output);
  assert.ok(chunks.length < 100 && chunks.length >= 1);
  assert.equal(chunks[0]!.truncated, chunks[0]!.seq);
  assert.equal(chunks.at(-1)!.data, "099\n");
}

Deno.test("Atom streams a print flood with bounded host memory", async () => {
  // 200 MiB through a child whose V8 heap is capped at 64 MiB: keeping the
  // output would crash it, and its RSS growth is measured while it reads.
  const mib = 200;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--max-old-space-size=64,--max-semi-space-size=2",
      "tests/fixtures/eval_flood.ts",
      String(mib),
    ],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  });
  const out = await child.output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const report = JSON.parse(
    new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!,
  );
  assert.equal(report.result, "end");
  assert.equal(report.bytes, mib * 1024 * 1024);
  assert.ok(
    report.chunks >= mib * 16,
    `only ${report.chunks} chunks: output is not chunked`,
  );
  assert.ok(
    report.peak < 100 * 1024 * 1024,
    `rss grew by ${Math.round(report.peak / 1048576)} MiB`,
  );
});

/** A step of "Atom on one pool (each step its own atoms)": Atom output flood does not hold back other replies on the connection */
async function atomOutputFloodDoesNot(pool: Pool): Promise<void> {
  const atom = pool.eval(
    "import sys\nblock = ('z' * 1023 + '\\n') * 64\nfor _ in range(32 * 16):\n    sys.stdout.write(block)\n'end'",
  );
  let bytes = 0;
  for await (const chunk of atom.output) {
    if (chunk.seq === 20) {
      // Not reading holds the flood back (the atom cannot finish meanwhile);
      // a ping on the same connection still gets its reply.
      assert.equal(await pool.request("ping"), "pong");
      assert.equal(atom.state, "running");
    }
    bytes += chunk.data.length;
  }
  assert.equal(await atom.result, "end");
  assert.equal(bytes, 32 * 1024 * 1024);
}

scenarios.push([
  "pool.atoms counts the results of finished atoms toward its byte bound",
  async () => {
    await using pool = await startPool();
    // 4 MB results: the registry's 64 MB hold about 16 of them, not 40.
    for (let i = 0; i < 40; i++) {
      const value = await pool.eval("'r' * (4 * 1024 * 1024)").result;
      assert.equal((value as string).length, 4 * 1024 * 1024);
    }
    assert.ok(pool.atoms.size <= 16, `${pool.atoms.size} atoms kept`);
    // Small results are still kept for replay.
    const atom = pool.eval("print('hi'); 1");
    assert.equal(await atom.result, 1);
    assert.equal(pool.atoms.get(atom.id), atom);
  },
]);

/** A step of "Atom on one pool (each step its own atoms)": Atom output nobody reads stays within the replay cap */
async function atomOutputNobodyReadsStays(pool: Pool): Promise<void> {
  const atom = pool.eval(
    "import sys\nblock = ('y' * 1023 + '\\n') * 64\nfor _ in range(48 * 16):\n    sys.stdout.write(block)",
    { replayBytes: 4 * 1024 * 1024 },
  );
  await atom.result;
  assert.ok(atom.bufferedBytes <= 4 * 1024 * 1024 + 65536);
  const reader = atom.replay(0).getReader();
  const first = await reader.read();
  assert.ok((first.value?.truncated ?? 0) > 0);
  await reader.cancel();
}

scenarios.push([
  "Pool executeModel turns model prints into log events, not eval output",
  async () => {
    const seen: Record<string, unknown>[] = [];
    // Log events name their request in `request` (not `id`), so they reach the
    // session, not the call's onEvent: watch every incoming message.
    const watcher: Plugin = {
      name: "log-watcher",
      onReply(msg) {
        if (msg.event === "log" || msg.event === "output") seen.push(msg);
      },
    };
    await using pool = await Pool.start({
      workers: 1,
      handleSignals: false,
      plugins: [watcher],
    });
    await pool.addModel("talker", {
      source:
        "class Talker:\n    def __init__(self, options):\n        pass\n    def execute(self, msg):\n        print('model says', msg['x'])\n        return {'ok': True}\n",
    });
    assert.deepEqual(await pool.execute("talker", { x: 7 }), { ok: true });
    assert.deepEqual(seen.map((e) => [e.event, e.stream, e.message]), [[
      "log",
      "stdout",
      "model says 7",
    ]]);
  },
]);

/** A step of "Atom on one pool (each step its own atoms)": Atom options are validated at once: a bad timeout is a ConfigError, 0 times out unsent, Infinity never */
async function atomOptionsAreValidatedAt(pool: Pool): Promise<void> {
  for (
    const options of [
      { timeout: NaN },
      { timeout: -1 },
      { cancelGrace: NaN },
      { signal: {} as AbortSignal },
    ]
  ) {
    assert.throws(() => pool.eval("1", options), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(err.message, /^Cannot eval: \w+: expected /);
      return true;
    });
  }
  const zero = pool.eval("1", { timeout: 0 });
  const err = await rejection(zero.result);
  assert.ok(err instanceof TimeoutError, String(err));
  await zero.stopped;
  assert.equal(zero.state, "cancelled");
  assert.equal(zero.worker, undefined, "never sent");
  // A timer cannot hold Infinity (it would fire at once): no timeout instead.
  assert.equal(await pool.eval("6 * 7", { timeout: Infinity }).result, 42);
  assert.equal(await pool.eval("6 * 8", { timeout: 2 ** 40 }).result, 48);
}

scenarios.push([
  "a cancelled eval that stopped in time keeps its worker when a busy host reads its reply after the grace",
  async () => {
    await using pool = await startPool();
    const before = pool.status().workers[0]!;
    const atom = pool.eval(
      "import time\nprint('running', flush=True)\nwhile True:\n    time.sleep(0.001)",
      { cancelGrace: 100 },
    );
    const reader = atom.output.getReader();
    assert.equal((await reader.read()).value?.data, "running\n");
    atom.cancel();
    // The host is busy past the grace: when it turns again, the grace's timer
    // is due and the reply of the code (stopped at once) waits in its socket.
    const busyUntil = Date.now() + 600;
    while (Date.now() < busyUntil) { /* busy */ }
    await assert.rejects(atom.result, CancelledError);
    await atom.stopped;
    await reader.cancel();
    assert.equal(await pool.eval("'same worker'").result, "same worker");
    const after = pool.status().workers[0]!;
    assert.deepEqual([after.pid, after.restarts], [before.pid, 0]);
  },
]);

Deno.test("Atom, each scenario on a pool of its own (at once)", (t) =>
  concurrentSteps(t, scenarios));
