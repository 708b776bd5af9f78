// The call hooks (docs/plugins.md, "Call hooks"): `onCall` once per model
// call, before it is queued, which may refuse that call alone or answer it
// without a worker; `onSettle` exactly once per call that reached `onCall`,
// with how it ended (ok, the model's error, a timeout in the queue or on a
// worker, a cancel, a crash and its idempotent retry, the pool's close, a
// full queue).
import assert from "node:assert/strict";
import { Pool, type PoolOptions } from "../src/pool.ts";
import type {
  CallOutcome,
  ModelCall,
  Plugin,
  PluginContext,
} from "../src/plugin.ts";
import {
  CancelledError,
  OverloadedError,
  PluginError,
  PythonError,
  ShuttingDownError,
  TimeoutError,
} from "../src/errors.ts";
import { modelsDir } from "./_pool_harness.ts";

/** Counts its calls; `fail` raises, `sleep` holds its thread, `die` kills its process once per `marker`. */
const COUNTER = `
import os
import time
class Counter:
    def __init__(self, options):
        self.n = 0
    def execute(self, msg):
        self.n += 1
        marker = msg.get("die")
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        if msg.get("fail"):
            raise ValueError("boom")
        time.sleep(msg.get("sleep", 0))
        return {"n": self.n, "x": msg.get("x"), "pid": os.getpid()}
`;

/** Batches; answers each message with its id. */
const BATCHER = `
import time
class Batcher:
    batch_size = 16
    batch_delay_ms = 20
    def execute_batch(self, msgs):
        time.sleep(max(m.get("sleep", 0) for m in msgs))
        return [{"id": m.get("id"), "size": len(msgs)} for m in msgs]
`;

/** Yields msg["n"] items. */
const TOKENS = `
class Tokens:
    def __init__(self, options):
        pass
    def execute(self, msg):
        for i in range(msg.get("n", 3)):
            yield i
`;

type Settled = { call: ModelCall; outcome: CallOutcome };

/** Records every onCall and onSettle. */
function recorder(): Plugin & { calls: ModelCall[]; settled: Settled[] } {
  const calls: ModelCall[] = [];
  const settled: Settled[] = [];
  return {
    name: "recorder",
    calls,
    settled,
    onCall(call) {
      calls.push(call);
    },
    onSettle(call, outcome) {
      settled.push({ call, outcome });
    },
  };
}

async function startPool(
  dir: string,
  plugins: Plugin[],
  options: PoolOptions = {},
): Promise<Pool> {
  const pool = await Pool.start({
    workers: 1,
    modelsDir: dir,
    handleSignals: false,
    plugins: { defaults: false, use: plugins },
    ...options,
  });
  try {
    await pool.addModel("counter", { source: COUNTER });
  } catch (err) {
    await pool.close();
    throw err;
  }
  return pool;
}

/** The one outcome of the call with this request id (asserts there is exactly one). */
function outcomeOf(settled: Settled[], requestId: string): CallOutcome {
  const mine = settled.filter((s) => s.call.requestId === requestId);
  assert.equal(mine.length, 1, `settled ${mine.length} times: ${requestId}`);
  return mine[0]!.outcome;
}

function codeOf(outcome: CallOutcome): string | undefined {
  return outcome.ok ? undefined : (outcome.error as { code?: string }).code;
}

Deno.test("Call hooks: onSettle once per call, however it ends: ok, model error, timeout in the queue and on a worker, cancel, full queue, the pool's close", async () => {
  const rec = recorder();
  await using dir = await modelsDir();
  const pool = await startPool(dir.path, [rec], {
    maxInFlightPerWorker: 1,
    maxQueue: 1,
  });
  let closed = false;
  try {
    const ok = await pool.execute("counter", { x: 1 }, { requestId: "ok" });
    assert.equal((ok as { x: number }).x, 1);
    // A synchronous onSettle has run when the caller's await resumes.
    const okOutcome = outcomeOf(rec.settled, "ok");
    assert.equal(okOutcome.ok, true);
    assert.deepEqual(okOutcome.ok && okOutcome.result, ok);
    assert.equal(okOutcome.worker, "w1");
    assert.equal(okOutcome.attempts, 1);
    assert.ok(okOutcome.durationMs >= 0);
    assert.deepEqual(rec.calls[0], {
      kind: "execute",
      model: "counter",
      resolved: "counter",
      msg: { x: 1 },
      requestId: "ok",
    });

    await assert.rejects(
      pool.execute("counter", { fail: true }, { requestId: "model-error" }),
      PythonError,
    );
    const failed = outcomeOf(rec.settled, "model-error");
    assert.equal(failed.ok, false);
    assert.ok(!failed.ok && failed.error instanceof PythonError);
    assert.equal(failed.attempts, 1);

    // On a worker: it was sent, then given up on.
    await assert.rejects(
      pool.execute("counter", { sleep: 0.4 }, {
        requestId: "timeout-worker",
        timeout: 100,
      }),
      TimeoutError,
    );
    const onWorker = outcomeOf(rec.settled, "timeout-worker");
    assert.equal(codeOf(onWorker), "TIMEOUT");
    assert.equal(
      !onWorker.ok && (onWorker.error as TimeoutError).details.waited,
      "worker",
    );
    assert.equal(onWorker.attempts, 1);
    assert.equal(onWorker.worker, "w1");

    // The worker is counted busy with the call given up on until it
    // answers its cancel: a call that ran after it frees the slot.
    await pool.execute("counter", { x: 0 }, { requestId: "after-timeout" });
    // In the queue, behind a call that holds the one slot; a third call
    // finds the queue (maxQueue 1) full.
    const holder = pool.execute("counter", { sleep: 0.4 }, {
      requestId: "holder",
    });
    const inQueue = pool.execute("counter", { x: 2 }, {
      requestId: "timeout-queue",
      timeout: 50,
    });
    await assert.rejects(
      pool.execute("counter", { x: 3 }, { requestId: "queue-full" }),
      OverloadedError,
    );
    await assert.rejects(inQueue, TimeoutError);
    const queued = outcomeOf(rec.settled, "timeout-queue");
    assert.equal(
      !queued.ok && (queued.error as TimeoutError).details.waited,
      "queue",
    );
    assert.equal(queued.attempts, 0);
    assert.equal(queued.worker, undefined);
    const full = outcomeOf(rec.settled, "queue-full");
    assert.equal(codeOf(full), "OVERLOADED");
    assert.equal(full.attempts, 0);

    // Cancelled: in the queue, and once sent.
    const queuedAbort = new AbortController();
    const cancelledInQueue = pool.execute("counter", { x: 4 }, {
      requestId: "cancel-queue",
      signal: queuedAbort.signal,
    });
    queuedAbort.abort();
    await assert.rejects(cancelledInQueue, CancelledError);
    assert.equal(outcomeOf(rec.settled, "cancel-queue").attempts, 0);
    await holder;
    const sentAbort = new AbortController();
    const cancelledSent = pool.execute("counter", { sleep: 0.4 }, {
      requestId: "cancel-sent",
      signal: sentAbort.signal,
      onSend: () => sentAbort.abort(),
    });
    await assert.rejects(cancelledSent, CancelledError);
    const sent = outcomeOf(rec.settled, "cancel-sent");
    assert.equal(codeOf(sent), "CANCELLED");
    assert.equal(sent.attempts, 1);

    // The pool closes with a call queued behind one running (once the
    // cancelled call's slot is free: a call that ran after it).
    await pool.execute("counter", { x: 0 }, { requestId: "after-cancel" });
    const running = pool.execute("counter", { sleep: 0.3 }, {
      requestId: "running-at-close",
    });
    const waiting = pool.execute("counter", { x: 5 }, {
      requestId: "queued-at-close",
    });
    const closing = pool.close();
    closed = true;
    await assert.rejects(waiting, ShuttingDownError);
    await running;
    await closing;
    assert.equal(
      codeOf(outcomeOf(rec.settled, "queued-at-close")),
      "SHUTTING_DOWN",
    );
    assert.equal(outcomeOf(rec.settled, "running-at-close").ok, true);
    // Exactly once each, and nothing settled that onCall never saw.
    assert.equal(rec.settled.length, rec.calls.length);
    for (const { call } of rec.settled) assert.ok(rec.calls.includes(call));
  } finally {
    if (!closed) await pool.close();
  }
});

Deno.test("Call hooks: an idempotent call whose worker died settles once, ok, with 2 attempts and the worker that ran it", async () => {
  const rec = recorder();
  await using dir = await modelsDir();
  await using pool = await startPool(dir.path, [rec], { workers: 2 });
  const marker = `${dir.path}/died-once`;
  const result = await pool.execute("counter", { die: marker, x: 7 }, {
    requestId: "retried",
    idempotent: true,
  }) as { x: number };
  assert.equal(result.x, 7);
  const outcome = outcomeOf(rec.settled, "retried");
  assert.equal(outcome.ok, true);
  assert.equal(outcome.attempts, 2);
  const alive = pool.status().workers.filter((w) => w.state === "ready");
  assert.deepEqual(alive.map((w) => w.id), [outcome.worker]);
  assert.equal(rec.calls.length, 1);
});

Deno.test("Call hooks: a quota's onCall refuses one call of a batch; the others of the batch run", async () => {
  class QuotaError extends OverloadedError {
    override readonly name = "QuotaError";
    override readonly code = "QUOTA";
  }
  const rec = recorder();
  const quota: Plugin = {
    name: "quota",
    onCall(call) {
      if (call.headers?.["x-tenant"] === "greedy") {
        throw new QuotaError("Cannot run call: tenant greedy is over quota", {
          details: { retryAfterMs: 60_000 },
        });
      }
    },
  };
  await using dir = await modelsDir();
  await using pool = await startPool(dir.path, [rec, quota]);
  await pool.addModel("batcher", { source: BATCHER });
  // One call holds the worker; the others gather into one batch.
  const blocker = pool.execute("batcher", { id: -1, sleep: 0.2 });
  const calls = [0, 1, 2, 3].map((id) =>
    pool.execute("batcher", { id }, {
      requestId: `b${id}`,
      headers: { "x-tenant": id === 2 ? "greedy" : "fair" },
    })
  );
  const results = await Promise.allSettled(calls);
  await blocker;
  for (const [id, r] of results.entries()) {
    if (id === 2) {
      assert.equal(r.status, "rejected");
      const err = (r as PromiseRejectedResult).reason;
      assert.ok(err instanceof QuotaError, String(err));
      assert.equal(err.details.retryAfterMs, 60_000);
      const outcome = outcomeOf(rec.settled, "b2");
      assert.equal(outcome.ok, false);
      assert.equal(!outcome.ok && outcome.refusedBy, "quota");
      assert.equal(outcome.attempts, 0);
    } else {
      assert.equal(
        r.status,
        "fulfilled",
        String((r as { reason?: unknown }).reason),
      );
      const value = (r as PromiseFulfilledResult<{ id: number; size: number }>)
        .value;
      assert.equal(value.id, id);
      // The three that passed went together.
      assert.equal(value.size, 3);
      assert.equal(outcomeOf(rec.settled, `b${id}`).attempts, 1);
    }
  }
});

Deno.test("Call hooks: a cache's onCall answers a call without a worker (the model is not called), and a stream with its items", async () => {
  const rec = recorder();
  const cache: Plugin = {
    name: "cache",
    onCall(call) {
      if (call.kind === "execute" && (call.msg as { x?: number }).x === 1) {
        return { result: { cached: true } };
      }
      if (call.kind === "stream" && (call.msg as { n?: number }).n === 99) {
        return { items: ["a", "b"] };
      }
    },
  };
  await using dir = await modelsDir();
  await using pool = await startPool(dir.path, [cache, rec]);
  await pool.addModel("tokens", { source: TOKENS });
  const first = await pool.execute("counter", { x: 0 }) as { n: number };
  assert.equal(first.n, 1);
  const sent: string[] = [];
  const cached = await pool.execute("counter", { x: 1 }, {
    requestId: "cached",
    onSend: (w) => sent.push(w),
  });
  assert.deepEqual(cached, { cached: true });
  assert.deepEqual(sent, []);
  // The model counted no call for it.
  const after = await pool.execute("counter", { x: 2 }) as { n: number };
  assert.equal(after.n, 2);
  const outcome = outcomeOf(rec.settled, "cached");
  assert.equal(outcome.ok, true);
  assert.equal(outcome.answeredBy, "cache");
  assert.equal(outcome.attempts, 0);
  assert.equal(outcome.worker, undefined);
  // The cache answered first: the plugins after it saw no onCall of it...
  assert.equal(rec.calls.filter((c) => c.requestId === "cached").length, 0);

  // A stream answered with items, and one the model ran.
  const answered: unknown[] = [];
  const stream = pool.executeStream("tokens", { n: 99 }, {
    requestId: "stream-cached",
  });
  for await (const item of stream) answered.push(item);
  assert.deepEqual(answered, ["a", "b"]);
  assert.equal(stream.total, 2);
  const ran: unknown[] = [];
  for await (
    const item of pool.executeStream("tokens", { n: 3 }, {
      requestId: "stream-ran",
    })
  ) ran.push(item);
  assert.deepEqual(ran, [0, 1, 2]);
  const s1 = outcomeOf(rec.settled, "stream-cached");
  assert.equal(s1.ok && s1.items, 2);
  assert.equal(s1.answeredBy, "cache");
  const s2 = outcomeOf(rec.settled, "stream-ran");
  assert.equal(s2.ok && s2.items, 3);
  assert.equal(s2.attempts, 1);
  assert.equal(
    rec.calls.find((c) => c.requestId === "stream-ran")?.kind,
    "stream",
  );
});

Deno.test("Call hooks: an onCall's bug is a PluginError of that call alone, an async one is bounded by hookTimeout, and a throwing onSettle never fails the call", async () => {
  const errors: Array<{ plugin: string; hook: string }> = [];
  let ctxSeen: PluginContext | undefined;
  const buggy: Plugin = {
    name: "buggy",
    async onCall(call, ctx) {
      ctxSeen = ctx;
      const x = (call.msg as { x?: number }).x;
      if (x === 1) throw new TypeError("not a quota");
      if (x === 2) await new Promise(() => {}); // never settles
      if (x === 3) return 42 as never; // not an answer
      if (x === 5) return { items: [1] }; // a stream's answer
      if (x === 6) return { items: "ab" } as never;
    },
    onSettle() {
      throw new Error("audit down");
    },
  };
  await using dir = await modelsDir();
  await using pool = await startPool(dir.path, [buggy], { hookTimeout: 100 });
  const off = pool.on((ev) => {
    if (ev.type === "plugin-error") {
      errors.push({ plugin: ev.plugin, hook: ev.hook });
    }
  });
  try {
    await assert.rejects(
      pool.execute("counter", { x: 1 }),
      (err: unknown) =>
        err instanceof PluginError &&
        /Cannot run hook onCall of plugin 'buggy': not a quota/.test(
          err.message,
        ),
    );
    await assert.rejects(
      pool.execute("counter", { x: 2 }),
      /did not settle within 100 ms \(hookTimeout\)/,
    );
    await assert.rejects(
      pool.execute("counter", { x: 3 }),
      /returned number, expected \{ result \}/,
    );
    await assert.rejects(
      pool.execute("counter", { x: 5 }),
      /it answered an execute with \{ items \}/,
    );
    await assert.rejects(
      async () => {
        for await (const _ of pool.executeStream("counter", { x: 6 })) {
          // never
        }
      },
      /it answered a stream with \{ items \} that is not an array/,
    );
    const ok = await pool.execute("counter", { x: 4 }) as { x: number };
    assert.equal(ok.x, 4);
    assert.equal(ctxSeen?.pool, pool);
    // One plugin-error per onSettle (6 calls), none failed a call.
    await new Promise((r) => setTimeout(r, 0));
    assert.deepEqual(
      errors,
      Array.from({ length: 6 }, () => ({ plugin: "buggy", hook: "onSettle" })),
    );
  } finally {
    off();
  }
});

Deno.test("Call hooks: onCall names the model as asked and as resolved (its version), and what the pool refuses at once reaches no hook", async () => {
  const rec = recorder();
  await using dir = await modelsDir();
  await using pool = await startPool(dir.path, [rec]);
  const source = `
class Tagged:
    def __init__(self, options):
        self.v = options["v"]
    def execute(self, msg):
        return {"v": self.v}
`;
  await pool.addModel("scorer", {
    source,
    options: { v: "one" },
    version: "1",
  });
  await pool.addModel("scorer", {
    source,
    options: { v: "two" },
    version: "2",
  });
  await pool.execute("scorer", {}, { requestId: "default", key: "k" });
  await pool.execute("scorer", {}, { requestId: "asked", version: "2" });
  for await (
    const _ of pool.executeStream("scorer", {}, {
      requestId: "streamed",
      version: "2",
      headers: { "x-tenant": "t" },
    })
  ) { /* one item */ }
  const byId = (id: string) => rec.calls.find((c) => c.requestId === id);
  assert.deepEqual(byId("default"), {
    kind: "execute",
    model: "scorer",
    resolved: "scorer@1",
    msg: {},
    requestId: "default",
    key: "k",
  });
  assert.equal(byId("asked")?.resolved, "scorer@2");
  assert.equal(byId("asked")?.version, "2");
  assert.deepEqual(byId("streamed"), {
    kind: "stream",
    model: "scorer",
    version: "2",
    resolved: "scorer@2",
    msg: {},
    requestId: "streamed",
    headers: { "x-tenant": "t" },
  });
  // Refused before onCall: a version it lacks, a bad option, an aborted signal.
  const before = rec.calls.length;
  await assert.rejects(pool.execute("scorer", {}, { version: "9" }));
  await assert.rejects(pool.execute("counter", {}, { requestId: "no spaces" }));
  await assert.rejects(
    pool.execute("counter", {}, { signal: AbortSignal.abort() }),
  );
  await assert.rejects(async () => {
    for await (const _ of pool.executeStream("scorer", {}, { version: "9" })) {
      // never
    }
  });
  assert.equal(rec.calls.length, before);
  assert.equal(rec.settled.length, before);
});

/** A promise and its resolve, for a hook the test lets go on. */
function deferred<T = void>(): {
  promise: Promise<T>;
  resolve: (v: T) => void;
} {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

Deno.test("Call hooks: a call held by a hung async onCall ends by its own timeout (counted from the call) and signal, not hookTimeout; onSettle once; the hook's late end ignored, its late failure reported once", async () => {
  const rec = recorder();
  const entered = new Map<string, () => void>();
  const release = deferred<{ result: unknown }>();
  const errors: Array<{ plugin: string; hook: string; message: string }> = [];
  let after = 0;
  const slow: Plugin = {
    name: "slow",
    async onCall(call) {
      const id = call.requestId ?? "";
      entered.get(id)?.();
      const how = (call.msg as { hook?: string }).hook;
      if (how === "hang") await new Promise(() => {}); // never settles
      if (how === "late") return await release.promise; // after its call ended
      if (how === "wait") await new Promise((r) => setTimeout(r, 300));
    },
  };
  // Runs before "slow": aborts a call's signal (no abort event comes after).
  const aborts = new Map<string, AbortController>();
  const aborter: Plugin = {
    name: "aborter",
    onCall(call) {
      aborts.get(call.requestId ?? "")?.abort();
    },
  };
  // Runs after "slow": a cut call must reach no later onCall.
  const later: Plugin = {
    name: "later",
    onCall() {
      after++;
    },
  };
  await using dir = await modelsDir();
  // hookTimeout far beyond the calls' timeouts: without the call's own
  // bounds, each would fail only with the hook's PluginError.
  await using pool = await startPool(dir.path, [rec, aborter, slow, later], {
    hookTimeout: 1_500,
  });
  const off = pool.on((ev) => {
    if (ev.type === "plugin-error") errors.push(ev);
  });
  try {
    // Its timeout, while the hook hangs: a TimeoutError that says so.
    await assert.rejects(
      pool.execute("counter", { hook: "hang" }, {
        requestId: "hung",
        timeout: 200,
      }),
      (err: unknown) =>
        err instanceof TimeoutError && err.details.waited === "plugin" &&
        err.details.plugin === "slow" && err.details.timeoutMs === 200 &&
        /timed out after 200 ms waiting for the onCall hook of plugin 'slow'/
          .test(err.message),
    );
    const hung = outcomeOf(rec.settled, "hung");
    assert.equal(codeOf(hung), "TIMEOUT");
    assert.equal(hung.attempts, 0);

    // Its signal, while the hook hangs: a CancelledError as in the queue.
    const abort = new AbortController();
    entered.set("aborted", () => queueMicrotask(() => abort.abort()));
    await assert.rejects(
      pool.execute("counter", { hook: "hang" }, {
        requestId: "aborted",
        signal: abort.signal,
      }),
      (err: unknown) =>
        err instanceof CancelledError &&
        err.message === "Cannot send call executeModel: aborted",
    );
    assert.equal(codeOf(outcomeOf(rec.settled, "aborted")), "CANCELLED");
    // Aborted by a synchronous onCall before the hung one.
    const early = new AbortController();
    aborts.set("aborted-early", early);
    await assert.rejects(
      pool.execute("counter", { hook: "hang" }, {
        requestId: "aborted-early",
        signal: early.signal,
      }),
      CancelledError,
    );

    // A stream's too.
    await assert.rejects(
      async () => {
        for await (
          const _ of pool.executeStream("counter", { hook: "hang" }, {
            requestId: "hung-stream",
            timeout: 100,
          })
        ) { /* none */ }
      },
      (err: unknown) =>
        err instanceof TimeoutError && err.details.waited === "plugin",
    );
    assert.equal(codeOf(outcomeOf(rec.settled, "hung-stream")), "TIMEOUT");

    // A hook that answers after its call timed out: ignored.
    await assert.rejects(
      pool.execute("counter", { hook: "late" }, {
        requestId: "late",
        timeout: 100,
      }),
      TimeoutError,
    );
    release.resolve({ result: "too late" });
    // The timeout counts from the call, the hook's 300 ms in it: the model's
    // 400 ms then outlast the 500 ms (sent at 300, it would have had 500).
    await assert.rejects(
      pool.execute("counter", { hook: "wait", sleep: 0.4 }, {
        requestId: "from-the-call",
        timeout: 500,
      }),
      (err: unknown) =>
        err instanceof TimeoutError && err.details.waited === "worker" &&
        err.details.timeoutMs === 500,
    );
    // A hook that lets its call go on in time: it runs.
    const ok = await pool.execute("counter", { hook: "wait", x: 9 }, {
      requestId: "in-time",
      timeout: 5_000,
    }) as { x: number };
    assert.equal(ok.x, 9);

    // The hung hooks' hookTimeout comes: one plugin-error for each of the
    // 4 (their calls long settled), none for the late answer.
    while (errors.length < 4) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(
      errors.map((e) => [e.plugin, e.hook]),
      Array.from({ length: 4 }, () => ["slow", "onCall"]),
    );
    assert.match(errors[0]!.message, /did not settle within 1500 ms/);
    // Each settled once; the cut ones reached no later onCall.
    for (
      const id of [
        "hung",
        "aborted",
        "aborted-early",
        "hung-stream",
        "late",
        "from-the-call",
      ]
    ) outcomeOf(rec.settled, id);
    assert.equal(after, 2);
  } finally {
    off();
  }
});

Deno.test("Call hooks: pool.close() settles the calls held by an async onCall (ShuttingDownError), and onPoolClosed comes after their onSettle, async ones included", async () => {
  const order: string[] = [];
  const hold = deferred();
  const plugin: Plugin = {
    name: "accounting",
    async onCall(call) {
      order.push(`onCall ${call.requestId}`);
      await hold.promise;
    },
    async onSettle(call, outcome) {
      await new Promise((r) => setTimeout(r, 50));
      order.push(`onSettle ${call.requestId} ${codeOf(outcome)}`);
    },
    onPoolClosed() {
      order.push("onPoolClosed");
    },
  };
  await using dir = await modelsDir();
  const pool = await startPool(dir.path, [plugin]);
  let closed = false;
  try {
    const held = pool.execute("counter", {}, { requestId: "held" });
    const closing = pool.close();
    closed = true;
    await assert.rejects(
      held,
      (err: unknown) =>
        err instanceof ShuttingDownError &&
        err.message === "Cannot send call executeModel: pool is closing",
    );
    await closing;
    assert.deepEqual(order, [
      "onCall held",
      "onSettle held SHUTTING_DOWN",
      "onPoolClosed",
    ]);
  } finally {
    hold.resolve();
    if (!closed) await pool.close();
  }
});

Deno.test("Call hooks: a call's caller (ExecuteOptions.caller) reaches onCall and onSettle, of an execute and a stream; a bad one is a ConfigError no hook sees", async () => {
  const rec = recorder();
  await using dir = await modelsDir();
  await using pool = await startPool(dir.path, [rec]);
  await pool.addModel("tokens", { source: TOKENS });
  await pool.execute("counter", { x: 1 }, { requestId: "a", caller: "acme" });
  await pool.execute("counter", { x: 2 }, { requestId: "none" });
  const items: unknown[] = [];
  for await (
    const item of pool.executeStream("tokens", { n: 2 }, {
      requestId: "s",
      caller: "globex",
    })
  ) items.push(item);
  assert.deepEqual(items, [0, 1]);
  assert.deepEqual(rec.calls.map((c) => [c.requestId, c.caller]), [
    ["a", "acme"],
    ["none", undefined],
    ["s", "globex"],
  ]);
  assert.deepEqual(
    rec.settled.map((s) => [s.call.requestId, s.call.caller]),
    [["a", "acme"], ["none", undefined], ["s", "globex"]],
  );
  for (const caller of ["", "x".repeat(129), 42]) {
    await assert.rejects(
      pool.execute("counter", { x: 3 }, { caller: caller as string }),
      (err: Error) =>
        err.name === "ConfigError" && /caller: expected a string of 1 to 128/
          .test(err.message),
    );
    const stream = pool.executeStream("tokens", { n: 1 }, {
      caller: caller as string,
    });
    await assert.rejects(
      (async () => {
        for await (const _ of stream) { /* none */ }
      })(),
      (err: Error) => err.name === "ConfigError",
    );
  }
  assert.equal(rec.calls.length, 3);
});
