// Durations beyond a timer's range (2^31 − 1 ms, ~24.8 days, or Infinity)
// mean "no limit": setTimeout would fire them after ~1 ms instead.
import assert from "node:assert/strict";
import { ShuttingDownError, TimeoutError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";
import { Session } from "../src/session.ts";
import { VERSION } from "../src/protocol/frame.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type {
  Connection,
  Runtime,
  SpawnOptions,
} from "../src/runtime/types.ts";
import { reconnect } from "../plugins/reconnect.ts";
import { RedisStore } from "../plugins/redis_store.ts";
import {
  MAX_TIMER_MS,
  setIntervalOrNever,
  setTimeoutOrNever,
} from "../src/_timer.ts";
import { encodeFrame } from "./_harness.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
} from "./_pool_harness.ts";

/** A window in which the broken code (a timer firing after ~1 ms) acts many times over. */
const WINDOW_MS = 100;
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("setTimeoutOrNever / setIntervalOrNever set no timer beyond MAX_TIMER_MS", async () => {
  assert.equal(MAX_TIMER_MS, 2 ** 31 - 1);
  let fired = 0;
  for (const ms of [MAX_TIMER_MS + 1, 3e9, Infinity]) {
    assert.equal(setTimeoutOrNever(() => fired++, ms), undefined);
    assert.equal(setIntervalOrNever(() => fired++, ms), undefined);
  }
  const done = Promise.withResolvers<void>();
  const timer = setTimeoutOrNever(() => done.resolve(), 1);
  assert.notEqual(timer, undefined);
  await done.promise;
  assert.equal(fired, 0);
});

Deno.test("Pool.close() with shutdownGrace 3e9 lets an in-flight call finish", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, shutdownGrace: 3e9 }),
    );
    pids.watch(pool);
    await pool.addModel("slow", { file: "slow.py" });
    const sent = Promise.withResolvers<void>();
    const call = pool.execute("slow", { ms: 300, i: 7 }, {
      onSend: () => sent.resolve(),
    });
    await sent.promise;
    const started = Date.now();
    // Before: close() returned after ~1 ms of "grace" and the call got a
    // ShuttingDownError.
    const [result] = await Promise.all([
      call.catch((err) => err),
      pool.close(),
    ]);
    assert.ok(
      !(result instanceof ShuttingDownError),
      `the call failed: ${result}`,
    );
    assert.equal((result as { i: number }).i, 7);
    assert.ok(Date.now() - started >= 200, "close() did not wait for the call");
  } finally {
    await pids.assertGone();
  }
});

Deno.test("pool.eval with cancelGrace Infinity does not kill the worker after the timeout", async () => {
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start({ workers: 1, handleSignals: false });
    pids.watch(pool);
    const pid = pidOf(pool, "w1");
    const exits: number[] = [];
    pool.on((ev) => {
      if (ev.type === "worker-exit") exits.push(ev.pid ?? -1);
    });
    // Another call on the same worker: killing the worker would fail it.
    const other = pool.eval("import time\ntime.sleep(0.4)\n'other'");
    // time.sleep ignores the interrupt until it returns: the code stops
    // ~0.4 s after the timeout, by itself. Before: SIGKILL 1 ms after it.
    const atom = pool.eval("import time\ntime.sleep(0.5)\n'late'", {
      timeout: 100,
      cancelGrace: Infinity,
    });
    await assert.rejects(atom.result, TimeoutError);
    await atom.stopped;
    assert.equal(await other.result, "other");
    assert.deepEqual(exits, []);
    assert.equal(pidOf(pool, "w1"), pid);
    assert.equal(await pool.eval("1 + 1").result, 2);
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool.start with readyTimeout Infinity or 1e10 starts", async () => {
  const pids = new PidTracker();
  try {
    for (const readyTimeout of [Infinity, 1e10]) {
      // Before: StartError "no ready line within Infinity ms".
      await using pool = await Pool.start({
        workers: 1,
        handleSignals: false,
        readyTimeout,
      });
      pids.watch(pool);
      assert.equal(await pool.request("ping"), "pong");
    }
  } finally {
    await pids.assertGone();
  }
});

Deno.test("reconnect with heartbeatInterval 3e9 sends no heartbeat", async () => {
  const pids = new PidTracker();
  let pings = 0;
  const counter: Plugin = {
    name: "pingCounter",
    onRequest(msg) {
      if (msg.cmd === "ping") pings++;
      return msg;
    },
  };
  try {
    await using pool = await Pool.start({
      workers: 1,
      handleSignals: false,
      plugins: [reconnect({ heartbeatInterval: 3e9 }), counter],
    });
    pids.watch(pool);
    // Proving an absence takes a window: before, the interval fired every
    // ~1 ms (922 pings in 2 s).
    await wait(WINDOW_MS);
    assert.equal(pings, 0);
    // The counter does see pings.
    assert.equal(await pool.request("ping"), "pong");
    assert.equal(pings, 1);
  } finally {
    await pids.assertGone();
  }
});

Deno.test("restartWorker with delayMs 3e9 does not restart the slot at once", async () => {
  const pids = new PidTracker();
  const slowRestart: Plugin = {
    name: "reconnect",
    onWorkerExit(ev, ctx) {
      if (!ev.intentional && !ctx.closing) {
        ctx.restartWorker(ev.worker.id, { delayMs: 3e9, reason: ev.reason });
      }
    },
  };
  // Counts the processes the pool spawns.
  const base = defaultRuntime();
  let spawns = 0;
  const runtime = new Proxy(base, {
    get(target, key) {
      if (key === "spawn") {
        return (options: SpawnOptions) => (spawns++, target.spawn(options));
      }
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  try {
    await using pool = await Pool.start({
      workers: 1,
      handleSignals: false,
      runtime,
      plugins: [slowRestart],
    });
    pids.watch(pool);
    assert.equal(spawns, 1);
    const restarting = nextEvent(pool, "restarting");
    pool.killWorker("w1");
    assert.equal((await restarting).delayMs, 3e9);
    // Before: the new process was spawned ~1 ms later.
    await wait(WINDOW_MS);
    assert.equal(spawns, 1);
    const w1 = pool.status().workers[0]!;
    assert.equal(w1.state, "restarting");
    assert.equal(w1.pid, null);
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Session.connect with connectTimeout Infinity waits for a slow hello", async () => {
  const hello = encodeFrame({ event: "hello", version: VERSION, auth: "none" });
  const runtime = {
    ...defaultRuntime(),
    connect(): Promise<Connection> {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const readable = new ReadableStream<Uint8Array>({
        start(c) {
          // Later than the ~1 ms an overflowing timer takes.
          timer = setTimeout(() => c.enqueue(hello), 30);
        },
        cancel() {
          clearTimeout(timer);
        },
      });
      const writable = new WritableStream<Uint8Array>();
      return Promise.resolve({ readable, writable, close() {} });
    },
  } as Runtime;
  // Before: TimeoutError "no hello within Infinity ms".
  const session = await Session.connect({
    port: 1,
    runtime,
    connectTimeout: Infinity,
  });
  await session.close();
});

Deno.test("RedisStore with a timeout of 3e9 ms does not time out a command at once", async () => {
  // A fake redis answering PING after 30 ms (later than the ~1 ms an
  // overflowing timer takes).
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const runtime = {
    ...defaultRuntime(),
    connect(): Promise<Connection> {
      let out!: ReadableStreamDefaultController<Uint8Array>;
      const readable = new ReadableStream<Uint8Array>({
        start(c) {
          out = c;
        },
      });
      const writable = new WritableStream<Uint8Array>({
        write() {
          const timer = setTimeout(() => {
            timers.delete(timer);
            out.enqueue(new TextEncoder().encode("+PONG\r\n"));
          }, 30);
          timers.add(timer);
        },
      });
      return Promise.resolve({
        readable,
        writable,
        close() {
          for (const t of timers) clearTimeout(t);
          try {
            out.close();
          } catch {
            // already closed
          }
        },
      });
    },
  } as Runtime;
  await using store = new RedisStore({ runtime, timeout: 3e9 });
  // Before: TimeoutError "no reply from 127.0.0.1:6379 within 3000000000 ms".
  assert.equal(await store.ping(), "PONG");
});
