/**
 * Fault injection, network half: connections cut mid-frame in both
 * directions (through the proxy of `_tcp_proxy.ts`, wired in with a wrapped
 * runtime: no core hook), 1,000 idle connections to one server, and a
 * connection that never authenticates.
 */
import assert from "node:assert/strict";
import { TimeoutError, WorkerCrashedError } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";
import { Pool } from "../src/pool.ts";
import type { Session } from "../src/session.ts";
import { reconnect } from "../plugins/reconnect.ts";
import { DOUBLER, rawConnect, startServer, waitFor } from "./_harness.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  readyAgain,
} from "./_pool_harness.ts";
import {
  CallLedger,
  reportFault,
  reportLedger,
} from "./_reliability_report.ts";
import { type Direction, proxyRuntime } from "./_tcp_proxy.ts";

for (
  const [direction, fault] of [
    ["down", "connection cut mid-frame, server → host"],
    ["up", "connection cut mid-frame, host → server"],
  ] as const satisfies ReadonlyArray<readonly [Direction, string]>
) {
  Deno.test(`Pool survives a connection cut mid-frame (${direction}): calls settle once, idempotent ones succeed`, async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    const ledger = new CallLedger();
    await using proxies = proxyRuntime();
    try {
      await using pool = await Pool.start({
        workers: 2,
        modelsDir: dir.path,
        handleSignals: false,
        transport: "tcp",
        runtime: proxies.runtime,
        plugins: [
          reconnect({
            backoff: { initial: 10, max: 50 },
            heartbeatInterval: 0,
          }),
        ],
      });
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const victim = pidOf(pool, "w1");
      const proxy = proxies.forPid(victim);
      assert.ok(proxy !== undefined, "w1 talks through a proxy");
      assert.equal(proxies.forPid(pidOf(pool, "w2"))?.links, 1);
      const exit = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w1");
      const back = readyAgain(pool, "w1");
      // A frame header is 25 bytes: cutting 30 bytes into the next traffic
      // lands inside a frame.
      const cut = proxy.cut(direction, 30);
      const plain = new CallLedger();
      const retried = new CallLedger();
      for (let i = 0; i < 30; i++) {
        ledger.track(plain.track(pool.execute("slow", { ms: 50, i })));
        ledger.track(
          retried.track(
            pool.execute("slow", { ms: 50, i }, { idempotent: true }),
          ),
        );
      }
      await cut;
      await ledger.settle();
      ledger.assertSettledOnce();
      assert.equal(proxy.cuts, 1);
      assert.equal(retried.counts().failed, 0, "idempotent calls are retried");
      assert.ok(plain.counts().failed > 0, "the cut hit calls in flight");
      for (const err of plain.errors) {
        assert.ok(err instanceof WorkerCrashedError, String(err));
        assert.equal(err.details.worker, "w1");
        assert.equal(err.details.pid, victim);
        assert.equal(err.details.reason, "connection lost");
      }
      const ev = await exit;
      assert.equal(ev.pid, victim);
      assert.equal(ev.reason, "connection lost");
      await back;
      const w1 = pool.status().workers[0]!;
      assert.equal(w1.restarts, 1);
      assert.equal(w1.lastExit?.reason, "connection lost");
      assert.ok(pool.status().workers.every((w) => w.state === "ready"));
      // The replacement talks through a fresh proxy and serves.
      assert.equal(proxies.forPid(pidOf(pool, "w1"))?.links, 1);
      const after = new CallLedger();
      for (let i = 0; i < 10; i++) {
        ledger.track(after.track(pool.execute("slow", { ms: 1, i })));
      }
      await after.settle();
      assert.equal(after.counts().settled, 10);
      assert.equal(after.counts().failed, 0);
    } finally {
      await pids.assertGone();
    }
    await reportLedger(ledger, {
      fault,
      injected: 1,
      observed:
        'restarts +1, lastExit {reason: "connection lost"}; idempotent calls all retried and succeeded',
    });
  });
}

Deno.test("PythonServer keeps answering with 1,000 idle connections and returns to its baseline when they close", async () => {
  await using server = await startServer({ files: { "doubler.py": DOUBLER } });
  const ledger = new CallLedger();
  const idle: Session[] = [];
  try {
    await using control = await server.connect();
    await control.addModel("doubler", { file: "doubler.py" });
    const baseline =
      (await control.status() as { connections: number }).connections;
    while (idle.length < 1000) {
      const batch = await Promise.all(
        Array.from({ length: 100 }, () => server.connect()),
      );
      idle.push(...batch);
      ledger.track(control.ping());
    }
    const during = await control.status() as { connections: number };
    assert.equal(during.connections, baseline + 1000);
    for (let i = 0; i < 20; i++) {
      ledger.track(control.ping());
      ledger.track(
        control.execute("doubler", { x: i }).then((r) =>
          assert.deepEqual(r, { y: 2 * i })
        ),
      );
    }
    // Some idle connections work too.
    for (const s of idle.slice(0, 1000).filter((_, i) => i % 100 === 0)) {
      ledger.track(s.ping());
    }
    await ledger.settle();
    ledger.assertSettledOnce();
    assert.equal(ledger.counts().failed, 0);
    await Promise.all(idle.splice(0).map((s) => s.close()));
    await waitFor(
      async () =>
        (await control.status() as { connections: number }).connections ===
          baseline,
      { message: "serverStatus connections back to baseline" },
    );
  } finally {
    await Promise.all(idle.map((s) => s.close().catch(() => {})));
  }
  const counts = ledger.counts();
  await reportFault({
    fault: "1,000 idle connections",
    injected: 1000,
    ...counts,
    observed:
      "serverStatus connections = baseline + 1000, then back to baseline; ping and execute keep answering",
  });
});

Deno.test("PythonServer closes a connection that never authenticates, and keeps serving others", async () => {
  await using server = await startServer({ files: { "doubler.py": DOUBLER } });
  const ledger = new CallLedger();
  await using control = await server.connect();
  await using raw = await rawConnect(server);
  const hello = await raw.read();
  assert.ok(hello && !(hello instanceof Error) && hello.event === "hello");
  // Stay silent; meanwhile authenticated traffic flows.
  for (let i = 0; i < 10; i++) ledger.track(control.ping());
  const items = [];
  for (;;) {
    const item = await raw.read();
    if (item === undefined) break;
    items.push(item);
  }
  const refusal = items.find((m) => !(m instanceof Error) && "error" in m) as
    | { error: { message: string } }
    | undefined;
  assert.match(refusal?.error.message ?? "", /no auth within 2(\.0)? s/);
  for (let i = 0; i < 10; i++) ledger.track(control.ping());
  await ledger.settle();
  ledger.assertSettledOnce();
  assert.equal(ledger.counts().failed, 0);
  assert.equal(
    (await control.status() as { connections: number }).connections,
    1,
  );
  await reportFault({
    fault: "connection that never authenticates",
    injected: 1,
    ...ledger.counts(),
    observed:
      'refused with "no auth within 2.0 s" and closed; other connections unaffected',
  });
});

Deno.test("Pool does not send queued calls to a worker whose connection was cut", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  const ledger = new CallLedger();
  await using proxies = proxyRuntime();
  try {
    await using pool = await Pool.start({
      workers: 2,
      modelsDir: dir.path,
      handleSignals: false,
      transport: "tcp",
      runtime: proxies.runtime,
      maxInFlightPerWorker: 4,
      plugins: [
        reconnect({ backoff: { initial: 10, max: 50 }, heartbeatInterval: 0 }),
      ],
    });
    pids.watch(pool);
    await pool.addModel("slow", { file: "slow.py" });
    const victim = pidOf(pool, "w1");
    const back = readyAgain(pool, "w1");
    const cut = proxies.forPid(victim)!.cut("down", 30);
    // 4 in flight per worker, 32 queued: only w1's 4 in-flight calls may fail.
    for (let i = 0; i < 40; i++) {
      ledger.track(pool.execute("slow", { ms: 20, i }));
    }
    await cut;
    await ledger.settle();
    ledger.assertSettledOnce();
    assert.ok(
      ledger.errors.length <= 4,
      `${ledger.errors.length} calls failed; queued calls were sent to the dead connection`,
    );
    for (const err of ledger.errors) {
      assert.ok(err instanceof WorkerCrashedError, String(err));
      assert.equal(err.details.reason, "connection lost");
    }
    await back;
    assert.equal(pool.status().workers[0]!.restarts, 1);
    assert.ok(pool.status().workers.every((w) => w.state === "ready"));
  } finally {
    await pids.assertGone();
  }
  await reportLedger(ledger, {
    fault: "connection cut with calls queued",
    injected: 1,
    observed:
      "only the 4 calls in flight on the cut connection fail; the 32 queued ones run elsewhere (bug fixed: they were sent to the dead session)",
  });
});

Deno.test({
  name:
    "Pool keeps a worker whose reply to the hang probe's ping is held up on the way to the host: its event loop waits for I/O",
  // The check reads the worker's wait channel in /proc: Linux only.
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    await using proxies = proxyRuntime();
    const kept = Promise.withResolvers<Record<string, unknown>>();
    const logger = watchLogger((message, properties) => {
      if (message.includes("its event loop waits for I/O")) {
        kept.resolve(properties);
      }
    });
    try {
      await using pool = await Pool.start({
        workers: 1,
        modelsDir: dir.path,
        handleSignals: false,
        transport: "tcp",
        runtime: proxies.runtime,
        logger,
        plugins: [reconnect({ heartbeatInterval: 0, hangGrace: 200 })],
      });
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const pid = pidOf(pool, "w1");
      let exits = 0;
      const killed = Promise.withResolvers<never>();
      killed.promise.catch(() => {}); // raced below
      pool.on((ev) => {
        if (ev.type !== "worker-exit") return;
        exits++;
        killed.reject(new Error(`the worker was killed: ${ev.reason}`));
      });
      // The worker's replies (the ping's too) wait in the proxy, as in a
      // host too busy to read its socket; the call sleeps in a thread, so
      // the worker's loop is idle.
      const release = proxies.forPid(pid)!.hold("down");
      try {
        await assert.rejects(
          pool.execute("slow", { ms: 1000 }, { timeout: 50 }),
          TimeoutError,
        );
        assert.deepEqual(await Promise.race([kept.promise, killed.promise]), {
          id: "w1",
          timeoutMs: 200,
        });
      } finally {
        release();
      }
      assert.equal(exits, 0);
      assert.equal(pidOf(pool, "w1"), pid);
      const out = await pool.execute<{ pid: number }>("slow", { ms: 1 });
      assert.equal(out.pid, pid);
    } finally {
      await pids.assertGone();
    }
  },
});

/** A logger that hands every record to `seen` (and its children's too). */
function watchLogger(
  seen: (message: string, properties: Record<string, unknown>) => void,
): Logger {
  const at = () => (message: string, properties?: Record<string, unknown>) =>
    seen(message, properties ?? {});
  const logger = {
    trace: at(),
    debug: at(),
    info: at(),
    warn: at(),
    error: at(),
    fatal: at(),
    getChild: () => logger,
  };
  return logger as unknown as Logger;
}
