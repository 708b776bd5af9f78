// Model commands at once (per-name locks: different names side by side, one
// name's in order), interleaved with resizes and workers killed mid-load: a
// fast-check run of batches of concurrent commands on one real pool. After
// each batch every command has settled within a bound (no deadlock), and
// every ready worker's server holds exactly the models the pool reports
// there (its own registry, read with serverStatus), versions included.
import assert from "node:assert/strict";
import fc from "fast-check";
import { Pool } from "../src/pool.ts";
import type { Session } from "../src/session.ts";
import { reconnect } from "../plugins/reconnect.ts";
import {
  modelsDir,
  nextEvent,
  PidTracker,
  poolOptions,
} from "./_pool_harness.ts";

type Command =
  | { t: "add"; n: string; v?: string | undefined; w?: number | undefined }
  | { t: "update"; n: string; v?: string | undefined; w?: number | undefined }
  | { t: "remove"; n: string; v?: string | undefined }
  | { t: "default"; n: string; v: string }
  | { t: "crash"; i: number }
  | { t: "resize"; k: number };

const NAMES = ["a", "b", "c"];
const name = fc.constantFrom(...NAMES);
const label = fc.option(fc.constantFrom("1", "2"), { nil: undefined });
const workers = fc.option(fc.constantFrom(1, 2), { nil: undefined });
const opt = { requiredKeys: ["t", "n"] as ("t" | "n")[] };
const command: fc.Arbitrary<Command> = fc.oneof(
  fc.record(
    { t: fc.constant("add" as const), n: name, v: label, w: workers },
    opt,
  ),
  fc.record({
    t: fc.constant("update" as const),
    n: name,
    v: label,
    w: workers,
  }, opt),
  fc.record({ t: fc.constant("remove" as const), n: name, v: label }, opt),
  fc.record({
    t: fc.constant("default" as const),
    n: name,
    v: fc.constantFrom("1", "2"),
  }),
  fc.record({ t: fc.constant("crash" as const), i: fc.nat(2) }),
  fc.record({
    t: fc.constant("resize" as const),
    k: fc.integer({ min: 1, max: 3 }),
  }),
);

/** What a command may fail with: refusals of the state it met, and its worker dying. */
const EXPECTED = new Set([
  "ModelNotFoundError",
  "InvalidRequestError",
  "WorkerCrashedError",
  "NoWorkerError",
]);

Deno.test({
  name:
    "Pool model commands at once, with resizes and workers killed mid-load: each settles in bounded time, and every worker holds exactly the models the pool reports",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    const sessions = new Map<string, Session>();
    const pool = await Pool.start({
      ...poolOptions(dir.path),
      workers: 2,
      loadTimeout: 10_000,
      plugins: [
        reconnect({ backoff: { initial: 10, max: 50 }, heartbeatInterval: 0 }),
        {
          name: "sessions",
          onSessionOpen: (ev) => void sessions.set(ev.worker.id, ev.session),
        },
      ],
    });
    pids.watch(pool);
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.array(command, { minLength: 1, maxLength: 6 }), {
            minLength: 1,
            maxLength: 3,
          }),
          async (batches) => {
            for (const batch of batches) {
              const outcomes = await withinBound(
                Promise.allSettled(batch.map((c) => run(pool, c))),
                15_000,
                batch,
              );
              outcomes.forEach((o, i) => {
                if (o.status === "rejected") {
                  const err = o.reason as Error;
                  assert.ok(
                    EXPECTED.has(err.name),
                    `${JSON.stringify(batch[i])}: ${err.name}: ${err.message}`,
                  );
                }
              });
              await quiesce(pool);
              await check(pool, sessions, batch);
            }
          },
        ),
        { numRuns: 12, seed: 21, endOnFailure: true },
      );
    } finally {
      await pool.close();
      await pids.assertGone();
    }
  },
});

async function run(pool: Pool, c: Command): Promise<unknown> {
  const spec = (v?: string, w?: number) => ({
    file: "doubler.py",
    ...(v === undefined ? {} : { version: v }),
    ...(w === undefined ? {} : { workers: w }),
  });
  switch (c.t) {
    case "add":
      return await pool.addModel(c.n, spec(c.v, c.w));
    case "update":
      return await pool.updateModel(c.n, spec(c.v, c.w));
    case "remove":
      return await pool.removeModel(
        c.n,
        c.v === undefined ? {} : { version: c.v },
      );
    case "default":
      return await pool.setDefaultVersion(c.n, c.v);
    case "crash": {
      const w = pool.status().workers[c.i];
      if (w?.pid == null) return;
      const id = w.id;
      const left = nextEvent(
        pool,
        "worker-state",
        (ev) => ev.worker === id && ev.from === "ready",
      );
      Deno.kill(w.pid, "SIGKILL");
      return await left;
    }
    case "resize":
      return await pool.resize(c.k);
  }
}

async function withinBound<T>(
  work: Promise<T>,
  ms: number,
  batch: Command[],
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new Error(`not settled in ${ms} ms: ${JSON.stringify(batch)}`),
            ),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Every worker ready (or failed for good), no resize, no relocation queued. */
async function quiesce(pool: Pool): Promise<void> {
  const quiet = () => {
    const s = pool.status();
    return !s.resizing &&
      s.workers.every((w) => w.state === "ready" || w.state === "failed");
  };
  for (;;) {
    if (quiet()) {
      // A relocation runs alone: a model command queued after it waits for it.
      await pool.setDefaultVersion("no-such-model", "1").catch(() => {});
      if (quiet()) return;
    }
    await new Promise<void>((resolve) => {
      const off = pool.on(() => (off(), resolve()));
    });
  }
}

async function check(
  pool: Pool,
  sessions: Map<string, Session>,
  batch: Command[],
): Promise<void> {
  const s = pool.status();
  const models = new Map(
    s.models.map((m) => [
      m.version === undefined ? m.name : `${m.name}@${m.version}`,
      m,
    ]),
  );
  for (const n of NAMES) {
    const versions = pool.modelVersions(n);
    if (versions === undefined) continue;
    assert.ok(!models.has(n), `${n} has versions and none`);
    assert.ok(versions.versions.includes(versions.default));
    for (const v of versions.versions) assert.ok(models.has(`${n}@${v}`));
  }
  const ready = s.workers.filter((w) => w.state === "ready").map((w) => w.id);
  for (const id of ready) {
    const status = await sessions.get(id)!.request(
      "serverStatus",
      undefined,
      { timeout: 5000 },
    ) as { models: Array<{ name: string }> };
    const held = status.models.map((m) => m.name).sort();
    const expected = [...models].filter(([, m]) =>
      m.slots === undefined || m.slots.includes(id)
    ).map(([key]) => key).sort();
    assert.deepEqual(
      held,
      expected,
      `worker ${id} after ${JSON.stringify(batch)}`,
    );
  }
  for (const m of models.values()) {
    if (m.failedReason !== undefined || ready.length === 0) continue;
    if (m.slots !== undefined && !m.slots.some((id) => ready.includes(id))) {
      continue; // left on a slot that failed for good: it waits for it
    }
    assert.deepEqual(
      await pool.execute(
        m.name,
        { x: 2 },
        m.version === undefined ? {} : { version: m.version },
      ),
      { y: 4 },
    );
  }
}
