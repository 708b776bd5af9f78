import assert from "node:assert/strict";
import { resolvePoolOptions } from "../src/pool_options.ts";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import {
  CancelledError,
  ConfigError,
  ConnectionLostError,
  ModelUnavailableError,
  NoWorkerError,
  OverloadedError,
  PyProxyError,
  ShuttingDownError,
  TimeoutError,
  WorkerCrashedError,
} from "../src/errors.ts";
import { type ExecuteOptions, Pool, type PoolOptions } from "../src/pool.ts";
import type { Logger } from "../src/logger.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import { reconnect } from "../plugins/reconnect.ts";
import { idOfPid, modelsDir, PidTracker, readyAgain } from "./_pool_harness.ts";
import { recordingLogger, SCHED_BATCH, schedPolicies } from "./_harness.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

/** Pool options shared by these tests: fast restarts, no signal handlers. */
function opts(dir: string, extra: PoolOptions = {}): PoolOptions {
  return {
    workers: 2,
    modelsDir: dir,
    handleSignals: false,
    plugins: [
      reconnect({ backoff: { initial: 10, max: 50 }, heartbeatInterval: 200 }),
    ],
    ...extra,
  };
}

/**
 * The scenarios of this file on pools of their own that mostly wait (a
 * Python server's start, a model's sleep, a grace): one test, a step each,
 * a few at a time. The tests that set signal handlers or LogTape's
 * configuration, that bound the model output a second lets through, or that
 * share one pool between steps stay tests of their own.
 */
const scenarios: Scenario[] = [];

for (const transport of ["unix", "tcp"] as const) {
  scenarios.push([
    `Pool executes a model on every worker over ${transport}`,
    async () => {
      await using dir = await modelsDir();
      const pids = new PidTracker();
      try {
        await using pool = await Pool.start(opts(dir.path, { transport }));
        pids.watch(pool);
        const desc = await pool.addModel("doubler", {
          file: "doubler.py",
          options: { k: 3 },
        });
        assert.equal((desc as { name: string }).name, "doubler");
        assert.deepEqual(await pool.execute("doubler", { x: 5 }), { y: 15 });
        await pool.addModel("whoami", { file: "whoami.py" });
        const seen = new Set<number>();
        for (let i = 0; i < 4; i++) {
          seen.add((await pool.execute<{ pid: number }>("whoami", {})).pid);
        }
        assert.equal(seen.size, 2, "round-robin reaches both workers");
        assert.equal(await pool.request("ping"), "pong");
        const status = pool.status();
        assert.deepEqual(status.workers.map((w) => [w.id, w.state]), [[
          "w1",
          "ready",
        ], ["w2", "ready"]]);
        assert.deepEqual(status.models.map((m) => m.name), [
          "doubler",
          "whoami",
        ]);
        assert.equal(status.queue, 0);
        assert.equal(status.inFlight, 0);
        assert.deepEqual(status.plugins, [
          "reconnect",
          "spillover",
          "sharedCache",
        ]);
        for (const w of status.workers) {
          assert.equal(typeof w.pid, "number");
          assert.equal(w.restarts, 0);
          assert.equal(w.lastExit, null);
          assert.equal(w.failedReason, null);
        }
      } finally {
        await pids.assertGone();
      }
    },
  ]);
}

Deno.test("Pool.start rejects bad options with a ConfigError naming the field", async () => {
  const cases: Array<[PoolOptions, RegExp]> = [
    [
      { workers: 0 },
      /^Cannot start pool: workers: expected an integer from 1 to 1024$/,
    ],
    [{ workers: 1.5 }, /workers: expected an integer from 1 to 1024/],
    [{ workers: 1e9 }, /workers: expected an integer from 1 to 1024/],
    [{ transport: "pipe" as "tcp" }, /transport: expected "tcp" or "unix"/],
    [{ maxQueue: -1 }, /maxQueue: expected an integer >= 0/],
    [{ maxFrameSize: 10 }, /maxFrameSize: expected an integer >= 4096/],
    [{ loadTimeout: 0 }, /loadTimeout: expected a number > 0/],
    [
      { schedBatch: "yes" as unknown as boolean },
      /schedBatch: expected a boolean/,
    ],
    [{ oomScoreAdj: 1001 }, /oomScoreAdj: expected an integer from 0 to 1000/],
    [{ oomScoreAdj: -1 }, /oomScoreAdj: expected an integer from 0 to 1000/],
    // A caller without types (JavaScript, Bun) is told the near option.
    [
      { worker: 2 } as PoolOptions,
      /^Cannot start pool: worker: unknown option \(did you mean workers\?\)$/,
    ],
    [
      { requestTimout: 5 } as PoolOptions,
      /^Cannot start pool: requestTimout: unknown option \(did you mean requestTimeout\?\)$/,
    ],
    [
      { placement: { maxRelocation: 1 } } as PoolOptions,
      /^Cannot start pool: placement\.maxRelocation: unknown option \(did you mean maxRelocations\?\)$/,
    ],
    [
      { modelMetrics: { maxSerie: 1 } } as unknown as PoolOptions,
      /^Cannot start pool: modelMetrics\.maxSerie: unknown option \(did you mean maxSeries\?\)$/,
    ],
    [
      { zzzzzz: 1 } as PoolOptions,
      /^Cannot start pool: zzzzzz: unknown option$/,
    ],
    // valibot's record takes an array for an object ({"0": "A=1"}).
    [
      { env: ["A=1"] } as unknown as PoolOptions,
      /^Cannot start pool: env: expected a record of strings or a function$/,
    ],
    [{ plugins: [{}] } as unknown as PoolOptions, /plugins/],
    [{ modelsDir: "/definitely/not/here" }, /modelsDir: no such directory/],
    [
      { plugins: [{ name: "x", requires: ["y"] }] },
      /plugin 'x' requires plugin 'y'/,
    ],
    [
      { runtime: {} as Runtime },
      /^Cannot start pool: runtime: expected a Runtime object \(missing connect, spawn, .*, shmDir\)$/,
    ],
    [
      {
        runtime: { ...defaultRuntime(), tempDir: "/tmp" } as unknown as Runtime,
      },
      /^Cannot start pool: runtime: expected a Runtime object \(missing tempDir\)$/,
    ],
  ];
  for (const [options, message] of cases) {
    await assert.rejects(
      Pool.start({ handleSignals: false, ...options }),
      (err: unknown) => {
        assert.ok(
          err instanceof ConfigError,
          `${JSON.stringify(options)}: ${err}`,
        );
        assert.match(err.message, message);
        return true;
      },
    );
  }
});

scenarios.push([
  "Pool keyed routing sends a key to the same worker while it is up",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      // A restart delay long enough to observe where the owner's keys go meanwhile.
      const plugins = [
        reconnect({
          backoff: { initial: 400, max: 400, jitter: 0 },
          heartbeatInterval: 0,
        }),
      ];
      await using pool = await Pool.start(
        opts(dir.path, { workers: 3, plugins }),
      );
      pids.watch(pool);
      await pool.addModel("whoami", { file: "whoami.py" });
      const owners = new Map<string, string>();
      for (let k = 0; k < 30; k++) {
        const key = `user-${k}`;
        const ids = new Set<string | undefined>();
        for (let i = 0; i < 3; i++) {
          ids.add(
            idOfPid(
              pool,
              (await pool.execute<{ pid: number }>("whoami", {}, { key })).pid,
            ),
          );
        }
        assert.equal(ids.size, 1, `key ${key} went to ${[...ids]}`);
        owners.set(key, [...ids][0]!);
      }
      assert.ok(new Set(owners.values()).size >= 2, "keys spread over workers");

      // While the owner is down, its keys go to one deterministic other worker.
      const [key, owner] = [...owners.entries()][0]!;
      const down = new Promise<void>((resolve) => {
        const off = pool.on((ev) => {
          if (
            ev.type === "worker-state" && ev.worker === owner &&
            ev.to === "stopped"
          ) {
            off();
            resolve();
          }
        });
      });
      const back = new Promise<void>((resolve) => {
        const off = pool.on((ev) => {
          if (
            ev.type === "worker-state" && ev.worker === owner &&
            ev.to === "ready"
          ) {
            off();
            resolve();
          }
        });
      });
      pool.killWorker(owner, "test");
      await down;
      const fallback = new Set<string | undefined>();
      for (let i = 0; i < 3; i++) {
        fallback.add(
          idOfPid(
            pool,
            (await pool.execute<{ pid: number }>("whoami", {}, { key })).pid,
          ),
        );
      }
      assert.equal(
        pool.status().workers.find((w) => w.id === owner)!.state,
        "restarting",
      );
      assert.equal(fallback.size, 1, "one deterministic fallback worker");
      assert.ok(!fallback.has(owner));
      await back;
      const again = await pool.execute<{ pid: number }>("whoami", {}, { key });
      assert.equal(
        idOfPid(pool, again.pid),
        owner,
        "the key returns to its owner once it is back",
      );
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool rejects at once with OverloadedError when the queue is full",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        opts(dir.path, { workers: 1, maxInFlightPerWorker: 1, maxQueue: 2 }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const accepted = [0, 1, 2].map((i) =>
        pool.execute<{ i: number }>("slow", { ms: 300, i })
      );
      assert.equal(pool.status().queue, 2);
      assert.equal(pool.status().workers[0]!.inFlight, 1);
      await assert.rejects(
        pool.execute("slow", { ms: 0 }),
        (err: unknown) =>
          err instanceof OverloadedError &&
          // Names the limits to raise, not only that there is one.
          err.message ===
            "Cannot accept call executeModel: 2 calls queued (maxQueue 2) and the workers it may go to have 1 in flight each (maxInFlightPerWorker): retry later, or raise maxQueue, maxInFlightPerWorker or workers",
      );
      assert.deepEqual((await Promise.all(accepted)).map((r) => r.i), [
        0,
        1,
        2,
      ]);
      assert.equal(pool.status().queue, 0);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool logs its queue-full refusals as a warning naming the model and the setting, one line for a burst",
  async () => {
    // A burst answered thousands of 429s and the gateway's log said nothing
    // (the on-call walkthrough).
    await using dir = await modelsDir();
    const pids = new PidTracker();
    const warnings: Array<[string, Record<string, unknown> | undefined]> = [];
    const none = () => {};
    const logger: Logger = {
      trace: none,
      debug: none,
      info: none,
      warn: (message, properties) => void warnings.push([message, properties]),
      error: none,
      fatal: none,
      isEnabledFor: () => true,
    };
    try {
      await using pool = await Pool.start(
        opts(dir.path, {
          workers: 1,
          maxInFlightPerWorker: 1,
          maxQueue: 1,
          logger,
        }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const accepted = [0, 1].map((i) => pool.execute("slow", { ms: 300, i }));
      // Settled whatever the assertions do (a failure closes the pool under them).
      await using _settled = {
        [Symbol.asyncDispose]: () =>
          Promise.allSettled(accepted).then(() => {}),
      };
      for (let i = 0; i < 3; i++) {
        await assert.rejects(pool.execute("slow", { ms: 0 }), OverloadedError);
      }
      const lines = warnings.filter(([m]) => m.startsWith("Overloaded"));
      // One line for three refusals within the minute.
      assert.equal(lines.length, 1, JSON.stringify(warnings));
      assert.match(lines[0]![0], /serve --max-queue/);
      assert.deepEqual(lines[0]![1], {
        refused: 1,
        model: "slow",
        maxQueue: 1,
        maxInFlightPerWorker: 1,
      });
      await Promise.all(accepted);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool's queue-full error counts one queued call in the singular",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        opts(dir.path, { workers: 1, maxInFlightPerWorker: 1, maxQueue: 1 }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const accepted = [0, 1].map((i) => pool.execute("slow", { ms: 100, i }));
      await assert.rejects(
        pool.execute("slow", { ms: 0 }),
        /^OverloadedError: Cannot accept call executeModel: 1 call queued \(maxQueue 1\)/,
      );
      await Promise.all(accepted);
    } finally {
      await pids.assertGone();
    }
  },
]);

// The tests of a one-worker pool with maxInFlightPerWorker 1 and no logger of their own (and
// one of any one-worker pool), as steps on one such pool (a Python server start each,
// otherwise); each step's models are removed after it, and no Python process outlives the pool.
Deno.test("Pool calls on one one-worker pool of one call at a time (each step its own models)", async (t) => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(
      opts(dir.path, { workers: 1, maxInFlightPerWorker: 1 }),
    );
    pids.watch(pool);
    await t.step(
      "Pool times out a queued call and a running call",
      () => poolTimesOutQueuedCall(pool).finally(() => removeModels(pool)),
    );
    await t.step(
      "Pool.execute takes any JSON value as msg (an array, a string, a number, null), typed as such",
      () => poolExecuteTakesAnyJSON(pool).finally(() => removeModels(pool)),
    );
    await t.step(
      "Pool: a call's CancelledError carries its signal's reason as its cause, aborted before it is sent, in the queue or on the worker",
      () =>
        poolCallCancelledErrorCarries(pool).finally(() => removeModels(pool)),
    );
    await t.step(
      "Pool counts a worker busy with a call given up on until the server answers its cancel",
      () =>
        poolCountsWorkerBusyWith(pool, dir).finally(() => removeModels(pool)),
    );
  } finally {
    await pids.assertGone();
  }
});

/** Removes every model of `pool` (a step's models, once it ended). */
async function removeModels(pool: Pool): Promise<void> {
  for (const { name } of pool.status().models) await pool.removeModel(name);
}

scenarios.push([
  "Pool.close does not wait for calls given up on (timed out, aborted) that the server still runs, and still waits for a call its caller awaits",
  async () => {
    // Their callers have their answer; the drain waited for them anyway, the
    // whole shutdownGrace (5 s by default) for a call that timed out in a
    // model's time.sleep (testers28).
    await using dir = await modelsDir();
    const pids = new PidTracker();
    let guard: ReturnType<typeof setTimeout> | undefined;
    try {
      const pool = await Pool.start(
        opts(dir.path, {
          workers: 1,
          maxInFlightPerWorker: 3,
          shutdownGrace: 120_000,
        }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const giveUp = new AbortController();
      const aborted = pool.execute("slow", { ms: 60_000 }, {
        signal: giveUp.signal,
      });
      const timedOut = pool.execute("slow", { ms: 60_000 }, { timeout: 200 });
      const awaited = pool.execute("slow", { ms: 1_000, i: 7 });
      giveUp.abort();
      await assert.rejects(aborted, CancelledError);
      await assert.rejects(timedOut, TimeoutError);
      const closed = pool.close().then(() => "closed");
      const result = await Promise.race([
        closed,
        new Promise((resolve) => {
          guard = setTimeout(() => resolve("still closing"), 30_000);
        }),
      ]);
      assert.equal(result, "closed");
      assert.equal(((await awaited) as { i: number }).i, 7);
    } finally {
      clearTimeout(guard);
      await pids.assertGone();
    }
  },
]);

/** A step of "Pool calls on one one-worker pool of one call at a time (each step its own models)": Pool times out a queued call and a running call */
async function poolTimesOutQueuedCall(pool: Pool): Promise<void> {
  await pool.addModel("slow", { file: "slow.py" });
  const running = pool.execute("slow", { ms: 400 }, { timeout: 100 });
  const queued = pool.execute("slow", { ms: 0 }, { timeout: 50 });
  await assert.rejects(queued, TimeoutError);
  await assert.rejects(running, TimeoutError);
  const aborted = new AbortController();
  const blocker = pool.execute("slow", { ms: 200 });
  const waiting = pool.execute("slow", { ms: 0 }, { signal: aborted.signal });
  aborted.abort();
  await assert.rejects(
    waiting,
    (err: unknown) => err instanceof PyProxyError && err.code === "CANCELLED",
  );
  await blocker;
  assert.deepEqual(await pool.request("ping"), "pong");
  // A timeout beyond setTimeout's range (~24.8 days) does not fire at once in the queue.
  const long = pool.execute("slow", { ms: 100 });
  const far = pool.execute("slow", { ms: 0, i: 1 }, { timeout: 2 ** 31 });
  await long;
  assert.equal((await far as { i: number }).i, 1);
}

/** A step of "Pool calls on one one-worker pool of one call at a time (each step its own models)": Pool.execute takes any JSON value as msg (an array, a string, a number, null), typed as such */
async function poolExecuteTakesAnyJSON(pool: Pool): Promise<void> {
  // The model gets any JSON value (as executeStream's `msg: unknown` and the
  // gateway's bodies); execute's type took only an object or bytes, so a
  // model of rows needed a cast.
  await pool.addModel("whoami", { file: "whoami.py" });
  const rows: number[][] = [[1, 2], [3, 4]];
  for (const msg of [rows, "text", 7, null]) {
    const out = await pool.execute<{ msg: unknown }>("whoami", msg);
    assert.deepEqual(out.msg, msg);
  }
}

/** A step of "Pool calls on one one-worker pool of one call at a time (each step its own models)": Pool: a call's CancelledError carries its signal's reason as its cause, aborted before it is sent, in the queue or on the worker */
async function poolCallCancelledErrorCarries(pool: Pool): Promise<void> {
  // A caller that passes AbortSignal.timeout() (or abort(reason)) tells its
  // own deadline from a user's cancel by the cause, whichever moment the
  // signal aborted at.
  await pool.addModel("slow", { file: "slow.py" });
  const causeOf = async (call: Promise<unknown>): Promise<unknown> => {
    try {
      await call;
    } catch (err) {
      assert.ok(err instanceof CancelledError, String(err));
      return err.cause;
    }
    assert.fail("the call did not reject");
  };
  const before = new AbortController();
  const early = new Error("aborted before the call");
  before.abort(early);
  assert.equal(
    await causeOf(pool.execute("slow", { ms: 0 }, { signal: before.signal })),
    early,
  );
  const running = new AbortController();
  const onWorker = new Error("aborted on the worker");
  const blocker = pool.execute("slow", { ms: 300 }, {
    signal: running.signal,
  });
  const queued = new AbortController();
  const inQueue = new Error("aborted in the queue");
  const waiting = pool.execute("slow", { ms: 0 }, { signal: queued.signal });
  queued.abort(inQueue);
  assert.equal(await causeOf(waiting), inQueue);
  running.abort(onWorker);
  assert.equal(await causeOf(blocker), onWorker);
  // A model that batches: waiting for its batch, and in a batch running.
  await pool.addModel("batches", {
    source: `
import time
class Batches:
    batch_size = 4
    batch_delay_ms = 200
    def execute_batch(self, msgs):
        time.sleep(max(m.get("ms", 0) for m in msgs) / 1000.0)
        return [{} for m in msgs]
`,
  });
  const gathering = new AbortController();
  const inBatch = new Error("aborted while its batch gathered");
  const gathered = pool.execute("batches", {}, { signal: gathering.signal });
  gathering.abort(inBatch);
  assert.equal(await causeOf(gathered), inBatch);
  const sent = new AbortController();
  const whileRunning = new Error("aborted while its batch ran");
  const onWorker2 = Promise.withResolvers<void>();
  const ran = pool.execute("batches", { ms: 1000 }, {
    signal: sent.signal,
    onSend: () => onWorker2.resolve(),
  });
  await onWorker2.promise;
  sent.abort(whileRunning);
  assert.equal(await causeOf(ran), whileRunning);
}

scenarios.push([
  "Pool rejects a model that fails on one worker, names it, and rolls it back",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        opts(dir.path, { env: (id) => ({ PYPROXY_TEST_SLOT: id }) }),
      );
      pids.watch(pool);
      await assert.rejects(
        pool.addModel("picky", { file: "picky.py", options: { refuse: "w2" } }),
        (err: unknown) => {
          assert.ok(err instanceof Error);
          assert.match(
            err.message,
            /Cannot add model 'picky' on worker w2: .*refusing to load here/s,
          );
          assert.match(err.message, /\(rolled back on the 1 other worker\)$/);
          return true;
        },
      );
      assert.deepEqual(pool.status().models, []);
      // Rolled back on w1: the model is gone there too.
      await assert.rejects(
        pool.request("executeModel", { name: "picky", msg: {} }, {
          worker: "w1",
        }),
        (err: unknown) =>
          err instanceof Error && err.name === "ModelNotFoundError",
      );
      // Failed everywhere: nothing to roll back, and the message does not claim otherwise.
      await assert.rejects(
        pool.addModel("broken", { file: "broken.py" }),
        (err: unknown) =>
          err instanceof Error &&
          /^Cannot add model 'broken' on workers w1, w2: /.test(err.message) &&
          !/rolled back/.test(err.message),
      );
      await pool.addModel("picky", {
        file: "picky.py",
        options: { refuse: "nobody" },
      });
      assert.deepEqual(await pool.execute("picky", {}), { ok: true });
      await pool.updateModel("picky", {
        file: "picky.py",
        options: { refuse: "none" },
      });
      await pool.removeModel("picky");
      assert.deepEqual(pool.status().models, []);
      await assert.rejects(pool.removeModel("picky"), /no such model/);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.request pinned to a worker goes there, and rejects for an unknown worker",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(opts(dir.path));
      pids.watch(pool);
      await pool.addModel("whoami", { file: "whoami.py" });
      for (const id of ["w2", "w1", "w2"]) {
        const out = await pool.request<{ pid: number }>("executeModel", {
          name: "whoami",
          msg: {},
        }, { worker: id });
        assert.equal(idOfPid(pool, out.pid), id);
      }
      await assert.rejects(
        pool.request("ping", undefined, { worker: "w9" }),
        NoWorkerError,
      );
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.close lets in-flight calls finish and fails queued and new calls",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const pool = await Pool.start(
        opts(dir.path, { workers: 1, maxInFlightPerWorker: 2 }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const inFlight = [
        pool.execute("slow", { ms: 200, i: 1 }),
        pool.execute("slow", { ms: 200, i: 2 }),
      ];
      const queued = pool.execute("slow", { ms: 0, i: 3 });
      const closing = pool.close();
      await assert.rejects(queued, ShuttingDownError);
      await assert.rejects(pool.execute("slow", { ms: 0 }), ShuttingDownError);
      await assert.rejects(
        pool.addModel("x", { file: "slow.py" }),
        ShuttingDownError,
      );
      const results = await Promise.all(inFlight);
      assert.deepEqual(results.map((r) => (r as { i: number }).i), [1, 2]);
      await closing;
      assert.ok(
        pool.status().workers.every((w) =>
          w.state === "stopped" && w.pid === null
        ),
      );
      await pool.close(); // idempotent
    } finally {
      await pids.assertGone();
    }
  },
]);

/** A step of "Pool calls on one one-worker pool of one call at a time (each step its own models)": Pool counts a worker busy with a call given up on until the server answers its cancel */
async function poolCountsWorkerBusyWith(
  pool: Pool,
  dir: { path: string },
): Promise<void> {
  // Marks its start, then sleeps in one C call: a cancel's interrupt lands
  // only after it.
  await Deno.writeTextFile(
    `${dir.path}/marked.py`,
    "import time\nclass Marked:\n    def execute(self, msg):\n        if 'marker' in msg:\n            open(msg['marker'], 'w').close()\n        time.sleep(msg['ms'] / 1000)\n        return {'i': msg['i']}\n",
  );
  const marker = `${dir.path}/started`;
  await pool.addModel("marked", { file: "marked.py" });
  const before = Date.now();
  const giveUp = new AbortController();
  const call = pool.execute(
    "marked",
    { ms: 1000, i: 0, marker },
    { signal: giveUp.signal },
  );
  call.catch(() => {});
  // Given up on once the server runs it (a timeout could fire before the
  // server read the call under load: it then answers the cancel at once).
  while (!(await exists(marker))) {
    await new Promise((r) => setTimeout(r, 5));
  }
  giveUp.abort();
  await assert.rejects(call, CancelledError);
  if (Date.now() - before < 800) {
    // The server still runs it: the worker is not free for the next call.
    assert.equal(pool.status().workers[0]!.inFlight, 1);
    const next = pool.execute<{ i: number }>("marked", { ms: 0, i: 1 });
    assert.equal(pool.status().queue, 1);
    assert.equal((await next).i, 1);
    // Sent only once the server was done with the abandoned call, which
    // slept from after `before` for 1000 ms.
    assert.ok(Date.now() - before >= 1000, `${Date.now() - before} ms`);
  }
  assert.equal(pool.status().workers[0]!.inFlight, 0);
  assert.equal(pool.status().queue, 0);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("Pool with handleSignals: a signal closes every such pool of the program before it exits", async () => {
  await using dir = await modelsDir();
  const listeners = new Set<() => void>();
  const exits: Array<{ code: number; stopped: boolean[] }> = [];
  const pools: Pool[] = [];
  const runtime: Runtime = {
    ...defaultRuntime(),
    onSignal: (signal, listener) => {
      if (signal !== "SIGTERM") return () => {};
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    exit: ((code: number) => {
      exits.push({
        code,
        stopped: pools.map((p) =>
          p.status().workers.every((w) => w.state === "stopped")
        ),
      });
    }) as Runtime["exit"],
  };
  const pids = new PidTracker();
  try {
    const signalled = { handleSignals: true, workers: 1, runtime };
    pools.push(await Pool.start(opts(dir.path, signalled)));
    pools.push(await Pool.start(opts(dir.path, signalled)));
    for (const pool of pools) pids.watch(pool);
    await pools[1]!.addModel("slow", { file: "slow.py" });
    // The second pool has a call in flight: it must get its grace too.
    const call = pools[1]!.execute("slow", { ms: 300, i: 1 });
    // As a process dispatches a signal: every listener registered when it
    // arrived runs, even one that an earlier listener removed.
    for (const listener of [...listeners]) listener();
    assert.equal(((await call) as { i: number }).i, 1);
    await Promise.all(pools.map((p) => p.close()));
    while (exits.length < 2) await new Promise((r) => setTimeout(r, 10));
    // Each pool's listener exits, and only once both pools are closed.
    const done = { code: 143, stopped: [true, true] };
    assert.deepEqual(exits, [done, done]);
  } finally {
    await Promise.all(pools.map((p) => p.close()));
    await pids.assertGone();
  }
});

scenarios.push([
  "Pool.close settles calls that outlive shutdownGrace with ShuttingDownError",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const pool = await Pool.start(
        opts(dir.path, { workers: 1, shutdownGrace: 50 }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const call = pool.execute("slow", { ms: 30000 });
      const settled = call.then(() => "resolved", (err) => err);
      await pool.close();
      const err = await settled;
      assert.ok(err instanceof ShuttingDownError, String(err));
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.close: a call that crashes its worker during the grace rejects with WorkerCrashedError, not ShuttingDownError",
  async () => {
    // "pool closed" (a ShuttingDownError, details.started) said the close cut
    // it off, for a call whose model crashed the worker 20 ms into a 5 s
    // grace, and the exit's reason "stopped" hid the crash (chaos41).
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const pool = await Pool.start(
        opts(dir.path, { workers: 1, shutdownGrace: 5000 }),
      );
      pids.watch(pool);
      const started = `${dir.path}/started`;
      const go = `${dir.path}/go`;
      await pool.addModel("crasher", { file: "crash_on_go.py" });
      const call = pool.execute("crasher", { started, go })
        .then(() => assert.fail("answered"), (e) => e);
      while (!await Deno.stat(started).then(() => true, () => false)) {
        await new Promise((r) => setTimeout(r, 5));
      }
      const exits: Array<{ code: number | null; reason: string }> = [];
      pool.on((ev) => {
        if (ev.type === "worker-exit") exits.push(ev);
      });
      const closed = pool.close();
      await Deno.writeTextFile(go, "");
      const err = await call;
      await closed;
      assert.ok(err instanceof WorkerCrashedError, String(err));
      assert.match(err.message, /died: exited with code 3/);
      assert.deepEqual(
        exits.map(({ code, reason }) => ({ code, reason })),
        [{ code: 3, reason: "exited with code 3" }],
      );
      // Counted as the crash it was (pyproxy_worker_exits_total), not as
      // the close's "stopped" (chaos42).
      assert.deepEqual(pool.status().workers[0]!.exits, { exit_3: 1 });
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.events yields worker-state and model events and ends on close",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const pool = await Pool.start(opts(dir.path, { workers: 1 }));
      pids.watch(pool);
      const seen: string[] = [];
      const reader = (async () => {
        for await (const ev of pool.events()) {
          seen.push(
            ev.type === "worker-state"
              ? `${ev.worker}:${ev.from}>${ev.to}`
              : `${ev.type}`,
          );
        }
      })();
      await pool.addModel("doubler", { file: "doubler.py" });
      await pool.close();
      await reader;
      assert.deepEqual(seen, [
        "model",
        "w1:ready>draining",
        "w1:draining>stopped",
        "worker-exit",
      ]);
    } finally {
      await pids.assertGone();
    }
  },
]);

Deno.test({
  name:
    "Pool with schedBatch runs every worker thread under SCHED_BATCH; without it, under the host's policy",
  ignore: schedPolicies("self") === undefined,
  async fn() {
    await using dir = await modelsDir();
    const own = schedPolicies("self")![0]!;
    assert.notEqual(own, SCHED_BATCH, "the test runner itself is not batch");
    for (const schedBatch of [true, false]) {
      await using pool = await Pool.start(
        opts(dir.path, schedBatch ? { schedBatch } : {}),
      );
      await pool.addModel("doubler", { file: "doubler.py" });
      assert.deepEqual(await pool.execute("doubler", { x: 2 }), { y: 4 });
      for (const w of pool.status().workers) {
        const policies = schedPolicies(w.pid!)!;
        assert.ok(policies.length > 0);
        assert.deepEqual(
          new Set(policies),
          new Set([schedBatch ? SCHED_BATCH : own]),
          `worker ${w.id}, schedBatch ${schedBatch}`,
        );
      }
    }
  },
});

/** A process's Linux `oom_score_adj` (`"self"` for this one), if readable. */
function oomScoreAdj(pid: number | "self"): number | undefined {
  try {
    return Number(Deno.readTextFileSync(`/proc/${pid}/oom_score_adj`));
  } catch {
    return undefined;
  }
}

Deno.test({
  name:
    "Pool raises its workers' oom_score_adj by 500 (oomScoreAdj), so that the OOM killer takes a worker before the host; oomScoreAdj 0 leaves it alone",
  ignore: oomScoreAdj("self") === undefined,
  async fn() {
    // Measured in a container's 300 MiB memory cgroup: four workers growing
    // together (a model keeping 8 MiB a call) got the host, the gateway at
    // 82 MB resident and PID 1, killed rather than one of them at ~74 MB: the
    // container died, and every worker's calls with it.
    await using dir = await modelsDir();
    const own = oomScoreAdj("self")!;
    for (
      const [options, expected] of [
        [{}, Math.min(1000, own + 500)],
        [{ oomScoreAdj: 200 }, Math.min(1000, own + 200)],
        [{ oomScoreAdj: 0 }, own],
      ] as const
    ) {
      await using pool = await Pool.start(opts(dir.path, options));
      for (const w of pool.status().workers) {
        assert.equal(
          oomScoreAdj(w.pid!),
          expected,
          `worker ${w.id}, ${JSON.stringify(options)}`,
        );
      }
    }
  },
});

scenarios.push([
  "Pool fails an addModel whose import kills every worker with a WorkerCrashedError naming the exit and the last stderr line, and does not replay it",
  async () => {
    await using dir = await modelsDir();
    await Deno.writeTextFile(
      `${dir.path}/suicidal.py`,
      "import os\nos.write(2, b'cannot map the weights\\n')\nos._exit(1)\n",
    );
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(opts(dir.path));
      pids.watch(pool);
      await assert.rejects(
        pool.addModel("suicidal", { file: "suicidal.py" }),
        (err: unknown) => {
          assert.ok(err instanceof WorkerCrashedError, String(err));
          assert.equal(err.code, "WORKER_CRASHED");
          assert.match(
            err.message,
            /^Cannot add model 'suicidal': worker w[12] \(pid \d+\) died while loading it: exited with code 1 \(last stderr line: "cannot map the weights"\); every worker it was sent to died \(w1, w2\); it was not added$/,
          );
          assert.equal(err.details.model, "suicidal");
          assert.deepEqual(err.details.workers, ["w1", "w2"]);
          assert.equal(err.details.code, 1);
          assert.equal(err.details.signal, null);
          assert.equal(err.details.stderr, "cannot map the weights");
          assert.ok(err.cause instanceof ConnectionLostError);
          return true;
        },
      );
      assert.deepEqual(pool.status().models, []);
      // The restarted workers do not get it on replay, so they stay up.
      const restarted = () =>
        pool.status().workers.every((w) =>
          w.restarts >= 1 && w.state === "ready"
        );
      if (!restarted()) {
        await new Promise<void>((resolve) => {
          const off = pool.on(() => restarted() && (off(), resolve()));
        });
      }
      assert.equal(
        await pool.request("ping", undefined, { worker: "w1" }),
        "pong",
      );
      assert.equal(
        await pool.request("ping", undefined, { worker: "w2" }),
        "pong",
      );
      assert.deepEqual(pool.status().workers.map((w) => w.restarts), [1, 1]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool fails an addModel whose import kills one worker (rolled back on the others): the restarted worker does not replay it into a crash loop",
  async () => {
    await using dir = await modelsDir();
    // Dies on w1 only (a slot without the device it needs, say).
    await Deno.writeTextFile(
      `${dir.path}/picky_crash.py`,
      "import os, signal\n" +
        "if os.environ.get('PYPROXY_TEST_SLOT') == 'w1':\n" +
        "    os.kill(os.getpid(), signal.SIGSEGV)\n" +
        "class M:\n    def execute(self, msg):\n        return msg\n",
    );
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        opts(dir.path, { env: (id) => ({ PYPROXY_TEST_SLOT: id }) }),
      );
      pids.watch(pool);
      await pool.addModel("doubler", { file: "doubler.py" });
      const back = readyAgain(pool, "w1");
      await assert.rejects(
        pool.addModel("picky", { file: "picky_crash.py" }),
        (err: unknown) => {
          assert.ok(err instanceof WorkerCrashedError, String(err));
          assert.match(
            err.message,
            /^Cannot add model 'picky': worker w1 \(pid \d+\) died while loading it: killed by SIGSEGV; rolled back on the 1 other worker; it was not added$/,
          );
          assert.equal(err.details.signal, "SIGSEGV");
          return true;
        },
      );
      await back;
      assert.deepEqual(pool.status().models.map((m) => m.name), ["doubler"]);
      // Rolled back on w2; w1 came back once, with the other models.
      await assert.rejects(
        pool.execute("picky", {}, { worker: "w2" }),
        (err: unknown) => (err as Error).name === "ModelNotFoundError",
      );
      for (const worker of ["w1", "w2"]) {
        assert.deepEqual(
          await pool.execute("doubler", { x: 2 }, { worker }),
          { y: 4 },
        );
      }
      assert.deepEqual(pool.status().workers.map((w) => w.restarts), [1, 0]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool validates per-call options with a ConfigError; timeout 0 times out at once, Infinity never",
  async () => {
    await using dir = await modelsDir();
    // One worker: the checks are the host's, and every call goes to a worker.
    await using pool = await Pool.start(
      opts(dir.path, { workers: 1, requestTimeout: 60_000 }),
    );
    await pool.addModel("doubler", { file: "doubler.py" });
    const bad: Array<[Record<string, unknown>, RegExp]> = [
      [{ timeout: NaN }, /timeout: expected a number of ms >= 0, got NaN/],
      [{ timeout: -5 }, /timeout: expected a number of ms >= 0, got -5/],
      [{ timeout: "5" }, /timeout: expected a number of ms >= 0, got "5"/],
      [{ key: 42 }, /key: expected a string, got 42/],
      [{ worker: "" }, /worker: expected a worker id/],
      [{ signal: { aborted: false } }, /signal: expected an AbortSignal/],
      [{ idempotent: "yes" }, /idempotent: expected a boolean/],
      [{ onSend: "later" }, /onSend: expected a function/],
    ];
    for (const [options, message] of bad) {
      await assert.rejects(
        pool.execute("doubler", { x: 1 }, options as ExecuteOptions),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, String(err));
          assert.equal(err.code, "CONFIG_INVALID");
          assert.match(err.message, /^Cannot send call executeModel: /);
          assert.match(err.message, message);
          return true;
        },
      );
    }
    await assert.rejects(
      pool.execute("doubler", { x: 1 }, { timeout: 0 }),
      (err: unknown) =>
        err instanceof TimeoutError && /timeout is 0 ms/.test(err.message),
    );
    assert.equal(pool.status().inFlight, 0);
    // Infinity overrides the pool's requestTimeout: no timeout at all.
    assert.deepEqual(
      await pool.execute("doubler", { x: 2 }, { timeout: Infinity }),
      { y: 4 },
    );
  },
]);

scenarios.push([
  "Pool keeps a PYTHONPATH given in env, after the server package",
  async () => {
    await using dir = await modelsDir();
    const lib = await Deno.makeTempDir({ prefix: "pyproxy-pythonpath-" });
    try {
      await Deno.writeTextFile(`${lib}/mylib.py`, "ANSWER = 42\n");
      await using pool = await Pool.start(
        opts(dir.path, { workers: 1, env: { PYTHONPATH: lib } }),
      );
      await pool.addModel("uses_lib", {
        source:
          "import mylib\nclass M:\n    def __init__(self, options):\n        pass\n    def execute(self, msg):\n        return {'answer': mylib.ANSWER}\n",
      });
      assert.deepEqual(await pool.execute("uses_lib", {}), { answer: 42 });
    } finally {
      await Deno.remove(lib, { recursive: true });
    }
  },
]);

const TALKER =
  "import sys\nclass Talker:\n    def __init__(self, options):\n        print('loading')\n    def execute(self, msg):\n        print('model says', msg['x'])\n        print('careful', file=sys.stderr)\n        return {'ok': True}\n";

scenarios.push([
  "Pool writes what model code prints to its logger's python.<model> child, stdout at info, stderr at warning",
  async () => {
    await using dir = await modelsDir();
    const records: Array<[string, string, string, Record<string, unknown>]> =
      [];
    const make = (
      category: string,
    ): Logger & { getChild(sub: string[]): Logger } => {
      const at =
        (level: string) =>
        (message: string, properties?: Record<string, unknown>) =>
          void records.push([category, level, message, properties ?? {}]);
      return {
        trace: at("trace"),
        debug: at("debug"),
        info: at("info"),
        warn: at("warn"),
        error: at("error"),
        fatal: at("fatal"),
        getChild: (sub) => make(`${category}.${sub.join(".")}`),
      };
    };
    await using pool = await Pool.start(
      opts(dir.path, { workers: 1, logger: make("app") }),
    );
    await pool.addModel("talker", { source: TALKER });
    // A log event is sent before the reply of its call.
    assert.deepEqual(await pool.execute("talker", { x: 7 }), { ok: true });
    // (app.python-server has the servers' own records.)
    const python = records.filter(([category]) =>
      category.startsWith("app.python.")
    );
    assert.deepEqual(
      python.map((
        [category, level, , p],
      ) => [category, level, p.message, p.model, p.stream, p.worker]),
      [
        ["app.python.talker", "info", "loading", "talker", "stdout", "w1"],
        ["app.python.talker", "info", "model says 7", "talker", "stdout", "w1"],
        ["app.python.talker", "warn", "careful", "talker", "stderr", "w1"],
      ],
    );
    assert.equal(python[0]![2], "{message}");
  },
]);

scenarios.push([
  "Pool warns on the model's logger when its constructor takes an option as a keyword (it gets the whole dict)",
  async () => {
    await using dir = await modelsDir();
    const warnings: Array<[string, string]> = [];
    const make = (
      category: string,
    ): Logger & { getChild(sub: string[]): Logger } => {
      const none = () => {};
      return {
        trace: none,
        debug: none,
        info: none,
        warn: (message, properties) =>
          void warnings.push([
            category,
            message === "{message}" ? String(properties?.message) : message,
          ]),
        error: none,
        fatal: none,
        getChild: (sub) => make(`${category}.${sub.join(".")}`),
      };
    };
    await using pool = await Pool.start(
      opts(dir.path, { workers: 1, logger: make("app") }),
    );
    await pool.addModel("kw", {
      source:
        "class M:\n    def __init__(self, threshold=0.5):\n        self.t = threshold\n    def execute(self, msg):\n        return {'t': self.t}\n",
      options: { threshold: 0.7 },
    });
    // What the warning is about: the dict, not 0.7 nor 0.5.
    assert.deepEqual(await pool.execute("kw", {}), { t: { threshold: 0.7 } });
    const ours = warnings.filter(([category]) => category === "app.python.kw");
    assert.equal(ours.length, 1, JSON.stringify(warnings));
    assert.match(
      ours[0]![1],
      /^pyproxy: M\.__init__ gets the whole options dict as its parameter 'threshold' \(default 0\.5\), not the option of that name; take one parameter and read it: def __init__\(self, options\)/,
    );
  },
]);

Deno.test("Pool's model output limit counts only what the logger's level lets through", async () => {
  await using dir = await modelsDir();
  const warnings: string[] = [];
  const none = () => {};
  // A logger at `warning`: 500 stdout lines (info) must not use up the
  // second's budget of the stderr lines (warning) that follow.
  const logger: Logger = {
    trace: none,
    debug: none,
    info: () => assert.fail("info is off"),
    warn: (message, properties) =>
      void warnings.push(
        message === "{message}" ? String(properties?.message) : message,
      ),
    error: none,
    fatal: none,
    isEnabledFor: (level) =>
      level !== "trace" && level !== "debug" && level !== "info",
  };
  await using pool = await Pool.start(opts(dir.path, { workers: 1, logger }));
  await pool.addModel("chatty", {
    source:
      "import sys\nclass Chatty:\n    def execute(self, msg):\n        for i in range(500):\n            print('info', i)\n        for i in range(5):\n            print('warn', i, file=sys.stderr)\n        return 1\n",
  });
  assert.equal(await pool.execute("chatty", {}), 1);
  assert.deepEqual(
    warnings.filter((w) => !w.startsWith("{")).join("\n").split("\n"),
    ["warn 0", "warn 1", "warn 2", "warn 3", "warn 4"],
  );
});

scenarios.push([
  "Pool logs a pool event listener that throws; the other listeners still get the event",
  async () => {
    await using dir = await modelsDir();
    const warnings: Array<[string, Record<string, unknown>]> = [];
    const none = () => {};
    const logger: Logger = {
      trace: none,
      debug: none,
      info: none,
      warn: (message, properties) =>
        void warnings.push([message, properties ?? {}]),
      error: none,
      fatal: none,
    };
    await using pool = await Pool.start(opts(dir.path, { workers: 1, logger }));
    const bug = new Error("listener bug");
    pool.on(() => {
      throw bug;
    });
    const seen: string[] = [];
    pool.on((ev) => void seen.push(ev.type));
    await pool.addModel("talker", { source: TALKER });
    assert.deepEqual(seen, ["model"]);
    assert.deepEqual(warnings, [[
      "A pool event listener threw on {type}: {error}",
      { type: "model", error: bug },
    ]]);
  },
]);

Deno.test("Pool bounds the model output it logs: a model printing in a loop does not flood the log", async () => {
  await using dir = await modelsDir();
  const lines: string[] = [];
  const dropped: number[] = [];
  const at = (message: string, properties?: Record<string, unknown>) => {
    if (message === "{message}") {
      lines.push(...String(properties?.message).split("\n"));
    } else if (
      properties?.model === "noisy" && message.includes("not logged")
    ) {
      dropped.push(Number(properties.count));
    }
  };
  const logger: Logger = {
    trace: () => {},
    debug: () => {},
    info: at,
    warn: at,
    error: at,
    fatal: at,
  };
  const t0 = Date.now();
  const pool = await Pool.start(opts(dir.path, { workers: 1, logger }));
  try {
    await pool.addModel("noisy", {
      source:
        "import sys\nclass Noisy:\n    def execute(self, msg):\n        for i in range(5000):\n            print('line', i)\n        sys.stdout.write(''.join('batch %d\\n' % i for i in range(5000)))\n        return 1\n",
    });
    assert.equal(await pool.execute("noisy", {}), 1);
  } finally {
    await pool.close();
  }
  // 100 lines a second at most; every line left out is counted (the count
  // comes at the latest when the worker's session ends).
  const seconds = Math.ceil((Date.now() - t0) / 1000) + 1;
  assert.ok(lines.length <= 100 * seconds, `${lines.length} lines logged`);
  assert.ok(dropped.length > 0);
  assert.equal(lines.length + dropped.reduce((a, b) => a + b, 0), 10_000);
});

Deno.test("Pool logs model output under LogTape's pyproxy.python.<model> by default", async () => {
  await using dir = await modelsDir();
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { test: (record: LogRecord) => void records.push(record) },
    loggers: [
      { category: ["pyproxy", "python"], lowestLevel: "info", sinks: ["test"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  try {
    await using pool = await Pool.start(opts(dir.path, { workers: 1 }));
    await pool.addModel("talker", { source: TALKER });
    await pool.execute("talker", { x: 8 });
    assert.deepEqual(
      records.map((r) => [r.category.join("."), r.level, r.properties.message]),
      [
        ["pyproxy.python.talker", "info", "loading"],
        ["pyproxy.python.talker", "info", "model says 8"],
        ["pyproxy.python.talker", "warning", "careful"],
      ],
    );
  } finally {
    await reset();
  }
});

const LOGGING_MODEL = `import logging
log = logging.getLogger("scorer")
class Scorer:
    threaded = True
    def execute(self, msg):
        log.info("scoring %s", msg["x"])
        log.warning("slow input")
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("failed")
        log.debug("below the worker's level")
        return {"ok": True}
`;

scenarios.push([
  "Pool writes model code's Python logging records to the model's logger at their own levels, with the Python logger's name",
  async () => {
    await using dir = await modelsDir();
    const { logger, entries } = recordingLogger();
    await using pool = await Pool.start(opts(dir.path, { workers: 1, logger }));
    await pool.addModel("scorer", { source: LOGGING_MODEL });
    assert.deepEqual(await pool.execute("scorer", { x: 7 }), { ok: true });
    const records = entries.filter(([, , p]) => p?.stream === "logging");
    assert.deepEqual(
      records.map(([level, , p]) => [level, p?.logger, p?.model, p?.worker]),
      [
        ["info", "scorer", "scorer", "w1"],
        ["warn", "scorer", "scorer", "w1"],
        ["error", "scorer", "scorer", "w1"],
      ],
    );
    assert.equal(records[0]![2]?.message, "scoring 7");
    assert.match(
      String(records[2]![2]?.message),
      /^failed\nTraceback \(most recent call last\):[\s\S]*ZeroDivisionError/,
    );
  },
]);

const PRINTS_TRACEBACK = `import traceback
class Printer:
    threaded = True
    def execute(self, msg):
        print("before")
        try:
            try:
                {}["k"]
            except KeyError as exc:
                raise ValueError("bad input") from exc
        except ValueError:
            traceback.print_exc()
        print("after")
        return 1
`;

scenarios.push([
  "Pool logs a chained traceback a model prints in execute as one error record of the call, in its place",
  async () => {
    await using dir = await modelsDir();
    const { logger, entries } = recordingLogger();
    await using pool = await Pool.start(opts(dir.path, { workers: 1, logger }));
    await pool.addModel("printer", { source: PRINTS_TRACEBACK });
    assert.equal(
      await pool.execute("printer", {}, { requestId: "req-7" }),
      1,
    );
    const printed = entries.filter(([, , p]) => p?.model === "printer");
    // Before: 9 warnings, one per write of print_exc.
    assert.deepEqual(
      printed.map(([level, , p]) => [level, p?.stream, p?.requestId]),
      [
        ["info", "stdout", "req-7"],
        ["error", "stderr", "req-7"],
        ["info", "stdout", "req-7"],
      ],
    );
    assert.match(
      String(printed[1]![2]?.message),
      /^Traceback \(most recent call last\):\n[\s\S]*KeyError: 'k'\n\nThe above exception was the direct cause of the following exception:\n\nTraceback \(most recent call last\):\n[\s\S]*ValueError: bad input$/,
    );
  },
]);

Deno.test("Pool logs a traceback a model prints whole under the output rate limit while the second has room", async () => {
  await using dir = await modelsDir();
  const { logger, entries } = recordingLogger();
  await using pool = await Pool.start(opts(dir.path, { workers: 1, logger }));
  await pool.addModel("late", {
    source: PRINTS_TRACEBACK.replace(
      'print("before")',
      "for i in range(97): print(i)",
    ),
  });
  assert.equal(await pool.execute("late", {}), 1);
  const errors = entries.filter(([level, , p]) =>
    level === "error" && p?.model === "late"
  );
  // 97 lines, then 3 of the traceback's fitted the 100 a second: it was cut
  // after them, its exception's line left out.
  assert.equal(errors.length, 1, JSON.stringify(entries.slice(-5)));
  assert.match(String(errors[0]![2]?.message), /\nValueError: bad input$/);
});

scenarios.push([
  "Pool logs a model that no longer loads on a worker's restart as an error with its traceback, out of service, the worker up",
  async () => {
    await using dir = await modelsDir();
    const lib = await Deno.makeTempDir({ prefix: "pyproxy-lib-" });
    const { logger, entries } = recordingLogger();
    try {
      await Deno.writeTextFile(`${lib}/extlib_logs29.py`, "X = 1\n");
      await using pool = await Pool.start(opts(dir.path, {
        workers: 1,
        logger,
        env: { PYTHONPATH: lib },
      }));
      await pool.addModel("uses_lib", {
        source:
          "import os, extlib_logs29\nclass M:\n    def execute(self, msg):\n        os._exit(3)\n",
      });
      // A package it imports changes on disk; the worker dies and replays it.
      await Deno.writeTextFile(
        `${lib}/extlib_logs29.py`,
        "import no_such_module_logs29\n",
      );
      const failed = (async () => {
        for await (const e of pool.events()) {
          if (e.type === "model-failed" && e.name === "uses_lib") return e;
        }
      })();
      const back = readyAgain(pool, "w1");
      await assert.rejects(pool.execute("uses_lib", {}));
      const ev = await failed;
      // The event says why, without the traceback (the log has it).
      assert.deepEqual(Object.keys(ev!).sort(), [
        "name",
        "reason",
        "type",
        "worker",
      ]);
      assert.match(
        ev!.reason,
        /^its load failed on restarted worker w1: ModuleNotFoundError: /,
      );
      const errors = entries.filter(([level, m]) =>
        level === "error" && m.startsWith("Model {name} is out of service")
      );
      assert.equal(errors.length, 1, JSON.stringify(entries));
      const p = errors[0]![2]!;
      assert.equal(p.worker, "w1");
      assert.equal(p.exception, "ModuleNotFoundError");
      assert.match(
        String(p.traceback),
        /^Traceback \(most recent call last\):\n[\s\S]*extlib_logs29\.py", line 1[\s\S]*No module named 'no_such_module_logs29'/,
      );
      // The worker came back, the model unavailable on it.
      await back;
      await assert.rejects(pool.execute("uses_lib", {}), ModelUnavailableError);
    } finally {
      await Deno.remove(lib, { recursive: true });
    }
  },
]);

scenarios.push([
  "Pool workers do not pass the gateway's PYPROXY_TOKEN on to model or eval code",
  async () => {
    const pids = new PidTracker();
    const pool = await Pool.start({
      workers: 1,
      handleSignals: false,
      env: { PYPROXY_TOKEN: "a-secret-token-value", OTHER_VAR: "kept" },
    });
    pids.watch(pool);
    try {
      const atom = pool.eval(
        "import os\n[os.environ.get('PYPROXY_TOKEN'), os.environ.get('OTHER_VAR')]",
      );
      assert.deepEqual(await atom.result, [null, "kept"]);
    } finally {
      await pool.close();
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool logs a pool.events() reader that falls behind and starts losing events",
  async () => {
    await using dir = await modelsDir();
    const { logger, entries } = recordingLogger();
    await using pool = await Pool.start(opts(dir.path, { workers: 1, logger }));
    const idle = pool.events(); // never read while the events come
    await pool.addModel("talker", { source: TALKER });
    // 1024 events fill the reader's buffer; the 1025th is the first lost.
    for (let i = 0; i < 1024; i++) {
      await pool.updateModel("talker", { source: TALKER });
    }
    const lost = () =>
      entries.filter(([level, message]) =>
        level === "warn" && message.includes("pool.events() reader fell")
      );
    assert.deepEqual(lost().map(([, , props]) => props), [{
      bufferSize: 1024,
    }]);
    await pool.updateModel("talker", { source: TALKER }); // still lagging: once
    assert.equal(lost().length, 1);
    await idle.return!();
  },
]);

Deno.test("Pool options: model loads are bounded by default, apart from the calls' requestTimeout", () => {
  // A model import that hangs (a lock, a network drive) held addModel and a
  // restarted worker's replay for ever in a pool without a requestTimeout.
  assert.equal(resolvePoolOptions({}).loadTimeout, 120_000);
  // Loading weights may take longer than a call is allowed to.
  assert.equal(
    resolvePoolOptions({ requestTimeout: 1000 }).loadTimeout,
    120_000,
  );
  assert.equal(
    resolvePoolOptions({ loadTimeout: Infinity }).loadTimeout,
    Infinity,
  );
});

Deno.test("Pool options: streams are cut after 5 minutes without a read by default, apart from the calls' requestTimeout", () => {
  // A program's reader may work on an item for a while; a forgotten stream
  // still gives back what it holds (the gateway's pool uses 60 s).
  assert.equal(resolvePoolOptions({}).streamIdleTimeout, 300_000);
  assert.equal(
    resolvePoolOptions({ requestTimeout: 1000 }).streamIdleTimeout,
    300_000,
  );
  assert.equal(
    resolvePoolOptions({ streamIdleTimeout: Infinity }).streamIdleTimeout,
    Infinity,
  );
});

scenarios.push([
  "Pool.removeModel during which every worker it was sent to died resolves: the model is gone (no worker replays it), and the answer says the workers died",
  async () => {
    await using dir = await modelsDir();
    // close() ends the process: the remove's answer never comes.
    await Deno.writeTextFile(
      `${dir.path}/dies_on_close.py`,
      "import os\nclass M:\n    def execute(self, msg):\n        return msg\n" +
        "    def close(self):\n        os._exit(3)\n",
    );
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(opts(dir.path, { workers: 1 }));
      pids.watch(pool);
      await pool.addModel("m", { file: "dies_on_close.py", version: "1" });
      await pool.addModel("m", { file: "dies_on_close.py", version: "2" });
      await pool.addModel("other", { file: "doubler.py" });
      const back = readyAgain(pool, "w1");
      // Every version goes, not only the first one whose remove lost the worker.
      const out = await pool.removeModel("m") as Record<string, unknown>;
      assert.equal(out.removed, true);
      assert.match(
        String(out.closeWarning),
        /^worker w1 died while removing model 'm@[12]' \(exited with code 3\)/,
      );
      assert.equal(pool.modelVersions("m"), undefined);
      assert.deepEqual(pool.status().models.map((m) => m.name), ["other"]);
      await back;
      assert.deepEqual(await pool.execute("other", { x: 2 }), { y: 4 });
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool: a worker killed by one model's import fails the other loads under way there too, each error naming the models that were loading with it",
  async () => {
    await using dir = await modelsDir();
    const go = `${dir.path}/go`;
    const wait = (marker: string) =>
      `import os, time\nopen(${
        JSON.stringify(`${dir.path}/${marker}`)
      }, "w").close()\nwhile not os.path.exists(${
        JSON.stringify(go)
      }):\n    time.sleep(0.005)\n`;
    await Deno.writeTextFile(
      `${dir.path}/crasher.py`,
      wait("crasher.started") +
        "os.write(2, b'crasher: out of device memory\\n')\nos._exit(1)\n",
    );
    await Deno.writeTextFile(
      `${dir.path}/innocent.py`,
      wait("innocent.started") +
        "time.sleep(0.5)\nclass M:\n    def execute(self, msg):\n        return msg\n",
    );
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(opts(dir.path, { workers: 1 }));
      pids.watch(pool);
      const crasher = pool.addModel("crasher", { file: "crasher.py" });
      const innocent = pool.addModel("innocent", { file: "innocent.py" });
      const outcomes = Promise.allSettled([crasher, innocent]);
      for (const marker of ["crasher.started", "innocent.started"]) {
        while (!(await exists(`${dir.path}/${marker}`))) {
          await new Promise((r) => setTimeout(r, 5));
        }
      }
      await Deno.writeTextFile(go, "");
      const [c, i] = await outcomes;
      assert.equal(c.status, "rejected");
      assert.equal(i.status, "rejected");
      const err = (i as PromiseRejectedResult).reason;
      assert.ok(err instanceof WorkerCrashedError, String(err));
      // Its stderr line is the other model's: the error says which were
      // loading there, rather than pinning the death on this one alone.
      assert.match(
        err.message,
        /^Cannot add model 'innocent': worker w1 \(pid \d+\) died while loading it: exited with code 1 \(last stderr line: "crasher: out of device memory"\); model 'crasher' was loading there too; it was not added$/,
      );
      assert.deepEqual(err.details.alsoLoading, ["crasher"]);
      assert.match(
        (c as PromiseRejectedResult).reason.message,
        /; model 'innocent' was loading there too; it was not added$/,
      );
      assert.deepEqual(pool.status().models, []);
    } finally {
      await pids.assertGone();
    }
  },
]);

// The two tests of a one-worker pool with maxInFlightPerWorker 1 and a recording logger, as
// steps on one such pool; the first counts the warnings of the throwing onSend calls before
// the second makes any.
Deno.test("Pool onSend hooks that throw, on one one-worker pool with a recording logger", async (t) => {
  await using dir = await modelsDir();
  const { logger, entries } = recordingLogger();
  await using pool = await Pool.start(
    opts(dir.path, { workers: 1, maxInFlightPerWorker: 1, logger }),
  );
  await t.step(
    "Pool: an onSend that throws is logged; its call runs and its worker's slot is released, sent at once or from the queue",
    () => poolOnSendThatThrowsLogged(pool, entries),
  );
  await t.step(
    "Pool batching: a call's onSend that throws keeps neither its batch from running nor the batch's other calls' onSend from being called",
    () => poolBatchingCallSOnSend(pool),
  );
});

/** A step of "Pool onSend hooks that throw, on one one-worker pool with a recording logger": Pool: an onSend that throws is logged; its call runs and its worker's slot is released, sent at once or from the queue */
async function poolOnSendThatThrowsLogged(
  pool: Pool,
  entries: ReturnType<typeof recordingLogger>["entries"],
): Promise<void> {
  // The throw came out of the send between the slot's acquire and the
  // request: the call never settled and the slot stayed taken, so with
  // maxInFlightPerWorker 1 every later call waited in the queue for ever
  // (chaos42).
  await pool.addModel("slow", { file: "slow.py" });
  const onSend = () => {
    throw new Error("the caller's onSend threw");
  };
  const direct = await pool.execute("slow", { i: 1 }, {
    onSend,
    timeout: 10_000,
  });
  assert.equal((direct as { i: number }).i, 1);
  assert.equal(pool.status().workers[0]!.inFlight, 0);
  // One that waits in the queue behind another, sent by the pump.
  const first = pool.execute("slow", { i: 2, ms: 100 }, { timeout: 10_000 });
  const queued = pool.execute("slow", { i: 3 }, { onSend, timeout: 10_000 });
  const after = pool.execute("slow", { i: 4 }, { timeout: 10_000 });
  const answers = await Promise.all([first, queued, after]);
  assert.deepEqual(answers.map((a) => (a as { i: number }).i), [2, 3, 4]);
  assert.equal(pool.status().workers[0]!.inFlight, 0);
  const warned = entries.filter(([level, message]) =>
    level === "warn" && message.startsWith("The onSend callback")
  );
  assert.equal(warned.length, 2);
}

/** A step of "Pool onSend hooks that throw, on one one-worker pool with a recording logger": Pool batching: a call's onSend that throws keeps neither its batch from running nor the batch's other calls' onSend from being called */
async function poolBatchingCallSOnSend(pool: Pool): Promise<void> {
  await pool.addModel("batcher", {
    source: `
import time
class Batcher:
    batch_size = 2
    batch_delay_ms = 1000
    def execute_batch(self, msgs):
        time.sleep(max(m.get("sleep", 0) for m in msgs))
        return [{"id": m["id"], "size": len(msgs)} for m in msgs]
`,
  });
  const sent: string[] = [];
  // The worker busy with a batch: the two calls wait, and go as one.
  const busy = pool.execute("batcher", { id: 0, sleep: 0.2 }, {
    timeout: 10_000,
  });
  const answers = await Promise.all([
    pool.execute("batcher", { id: 1 }, {
      timeout: 10_000,
      onSend: () => {
        throw new Error("the caller's onSend threw");
      },
    }),
    pool.execute("batcher", { id: 2 }, {
      timeout: 10_000,
      onSend: (w) => sent.push(w),
    }),
  ]);
  assert.deepEqual(answers, [{ id: 1, size: 2 }, { id: 2, size: 2 }]);
  assert.deepEqual(sent, ["w1"]);
  await busy;
  assert.equal(pool.status().workers[0]!.inFlight, 0);
}

Deno.test("Pool scenarios on pools of their own (each its own pool, 4 at a time)", (t) =>
  concurrentSteps(t, scenarios, 4));
