import assert from "node:assert/strict";
import {
  ConfigError,
  StartError,
  StartTimeoutError,
  TimeoutError,
  WorkerCrashedError,
} from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";
import { resolvePoolOptions } from "../src/pool_options.ts";
import {
  alive,
  assertGone,
  idOfPid,
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
  spawnHost,
  wrapperPython,
  writeHostScript,
} from "./_pool_harness.ts";
import { recordingLogger } from "./_harness.ts";
import { reconnect } from "../plugins/reconnect.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

/**
 * A readyTimeout that a start fits on this machine as loaded as it is now:
 * four times what a one-worker pool's start takes here, `least` at least
 * (the tests that freeze a start wait for it to run out).
 */
async function readyTimeoutFor(dir: string, least: number): Promise<number> {
  const t0 = performance.now();
  await (await Pool.start(poolOptions(dir, { workers: 1 }))).close();
  return Math.max(least, Math.ceil(4 * (performance.now() - t0)));
}

/** A model that starts a Python process and a `sleep` (children of its worker). */
const SPAWNER = `import subprocess, sys
class Spawner:
    def execute(self, msg):
        a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        b = subprocess.Popen(["sleep", "300"])
        return {"pids": [a.pid, b.pid]}
`;

/**
 * The scenarios of this file but those that kill a host process (a Deno
 * process each, CPU-bound), each on a pool of its own: they wait on
 * timeouts, hang graces and restarts more than on the CPU, so the file runs
 * them a few at a time (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Pool settles every call exactly once when a worker is killed with 100 calls in flight",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(poolOptions(dir.path));
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      await pool.addModel("doubler", { file: "doubler.py", options: { k: 3 } });
      const victim = pidOf(pool, "w1");
      const back = readyAgain(pool, "w1");
      const exit = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w1");
      let settlements = 0;
      const calls = Array.from(
        { length: 100 },
        (_, i) =>
          pool.execute<{ pid: number; i: number }>("slow", { ms: 300, i })
            .finally(() => settlements++),
      );
      assert.equal(pool.status().inFlight, 100);
      // Let the requests reach the servers before the kill.
      await pool.request("ping", undefined, { worker: "w1" });
      Deno.kill(victim, "SIGKILL");
      const results = await Promise.allSettled(calls);
      assert.equal(settlements, 100);
      let crashed = 0;
      results.forEach((r, i) => {
        if (r.status === "fulfilled") {
          assert.equal(r.value.i, i);
          assert.notEqual(r.value.pid, victim);
        } else {
          crashed++;
          assert.ok(r.reason instanceof WorkerCrashedError, String(r.reason));
          assert.equal(r.reason.details.worker, "w1");
          assert.equal(r.reason.details.pid, victim);
          assert.equal(r.reason.details.signal, "SIGKILL");
          assert.match(
            r.reason.message,
            /worker w1 \(pid \d+\) died: killed by SIGKILL/,
          );
        }
      });
      assert.equal(
        crashed,
        50,
        "the calls on the killed worker fail, the others succeed",
      );
      assert.equal((await exit).signal, "SIGKILL");
      await back;
      const w1 = pool.status().workers[0]!;
      assert.equal(w1.restarts, 1);
      assert.equal(w1.lastExit?.signal, "SIGKILL");
      assert.notEqual(w1.pid, victim);
      // The restarted worker got its models back before taking traffic.
      assert.deepEqual(
        await pool.request("executeModel", { name: "doubler", msg: { x: 2 } }, {
          worker: "w1",
        }),
        { y: 6 },
      );
      const more = await Promise.all(
        Array.from({ length: 20 }, (_, i) => pool.execute("doubler", { x: i })),
      );
      assert.deepEqual(
        more,
        Array.from({ length: 20 }, (_, i) => ({ y: 3 * i })),
      );
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool logs a worker's crash and its restart, each once, with the worker's id, pids and reason",
  async () => {
    await using dir = await modelsDir();
    const { logger, entries: records } = recordingLogger();
    const pids = new PidTracker();
    try {
      // One worker: what is logged of its crash and restart is its own.
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1, logger }),
      );
      pids.watch(pool);
      const victim = pidOf(pool, "w1");
      const back = readyAgain(pool, "w1");
      const events: string[] = [];
      const off = pool.on((ev) => {
        if (ev.type === "worker-state") events.push(`${ev.from}->${ev.to}`);
        else if (ev.type === "worker-exit") {
          events.push(`exit ${ev.pid} ${ev.reason}`);
        } else events.push(ev.type);
      });
      Deno.kill(victim, "SIGKILL");
      await back;
      off();
      const pid = pidOf(pool, "w1");
      // The order docs/architecture.md gives.
      assert.deepEqual(events, [
        "ready->stopped",
        `exit ${victim} killed by SIGKILL`,
        "stopped->restarting",
        "restarting",
        "restarting->ready",
      ]);
      const worker = records.filter(([level, message]) =>
        level !== "debug" && message.startsWith("worker {id}")
      ).map((
        [level, message, p],
      ) => [level, message, p?.id, p?.pid, p?.reason]);
      assert.deepEqual(worker, [
        [
          "warn",
          "worker {id} (pid {pid}) exited: {reason}",
          "w1",
          victim,
          "killed by SIGKILL",
        ],
        [
          "info",
          "worker {id} restarted (pid {pid}, restarts {restarts})",
          "w1",
          pid,
          undefined,
        ],
      ]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool retries idempotent calls on another worker when theirs dies",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(poolOptions(dir.path));
      pids.watch(pool);
      await pool.addModel("slow", { file: "slow.py" });
      const victim = pidOf(pool, "w2");
      const calls = Array.from(
        { length: 20 },
        (_, i) => pool.execute("slow", { ms: 200, i }, { idempotent: true }),
      );
      await pool.request("ping", undefined, { worker: "w2" });
      Deno.kill(victim, "SIGKILL");
      const results = await Promise.all(calls);
      assert.deepEqual(
        results.map((r) => (r as { i: number }).i),
        Array.from({ length: 20 }, (_, i) => i),
      );
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool replaces a wedged worker after a call times out; other calls are unaffected",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, {}, { hangGrace: 200 }),
      );
      pids.watch(pool);
      await pool.addModel("freezer", { file: "freezer.py" });
      await pool.addModel("whoami", { file: "whoami.py" });
      const frozen = pidOf(pool, "w1");
      const exit = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w1");
      const back = readyAgain(pool, "w1");
      // Its rejection handled from the start: under load it times out
      // before the calls below end (an unhandled rejection then failed the
      // whole file).
      const hung = assert.rejects(
        pool.request("executeModel", { name: "freezer", msg: {} }, {
          worker: "w1",
          timeout: 200,
        }),
        TimeoutError,
      );
      // Meanwhile the other worker keeps answering.
      for (let i = 0; i < 5; i++) {
        const out = await pool.request<{ pid: number }>("executeModel", {
          name: "whoami",
          msg: {},
        }, { worker: "w2" });
        assert.equal(idOfPid(pool, out.pid), "w2");
      }
      await hung;
      const ev = await exit;
      assert.equal(ev.pid, frozen);
      assert.match(
        ev.reason,
        /no answer to a ping within 200 ms after a call timed out \(.*reconnect\(\{ hangGrace \}\)/,
      );
      await back;
      assert.notEqual(pidOf(pool, "w1"), frozen);
      const out = await pool.request<{ pid: number }>("executeModel", {
        name: "whoami",
        msg: {},
      }, { worker: "w1" });
      assert.equal(idOfPid(pool, out.pid), "w1");
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool replaces a worker whose inline call turned slow within hangGrace, also while a heartbeat's ping is out",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      // Pings every 50 ms that may wait 60 s: one is always out when the call
      // times out. It held back the timed-out call's probe (200 ms), so the
      // worker lived on until the heartbeat gave up.
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }, {
          hangGrace: 200,
          heartbeatInterval: 50,
          heartbeatTimeout: 60_000,
        }),
      );
      pids.watch(pool);
      // Forced onto the server's event loop: a slow call blocks it, and cannot be interrupted there.
      await pool.addModel("spiky", {
        source:
          "class Spiky:\n    inline = True\n    def execute(self, msg):\n        while msg.get('spin'):\n            pass\n        return {}\n",
      });
      await pool.execute("spiky", {});
      const stuck = pidOf(pool, "w1");
      const exit = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w1");
      const back = readyAgain(pool, "w1");
      const started = Date.now();
      await assert.rejects(
        pool.execute("spiky", { spin: true }, { timeout: 200 }),
        TimeoutError,
      );
      const ev = await exit;
      assert.equal(ev.pid, stuck);
      assert.match(
        ev.reason,
        /no answer to a ping within 200 ms after a call timed out/,
      );
      assert.ok(Date.now() - started < 20_000, `${Date.now() - started} ms`);
      await back;
      assert.deepEqual(await pool.execute("spiky", {}), {});
    } finally {
      await pids.assertGone();
    }
  },
]);

Deno.test({
  name:
    "Pool replaces a worker whose call holds the GIL in C after it times out (its event loop cannot run, so it is not seen waiting for I/O)",
  // ctypes.PyDLL(None) finds libc's sleep in the process: not on Windows.
  ignore: Deno.build.os === "windows",
  fn: async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }, { hangGrace: 200 }),
      );
      pids.watch(pool);
      await pool.addModel("holder", {
        source:
          "import ctypes\nclass Holder:\n    def execute(self, msg):\n        # PyDLL keeps the GIL through the C call\n        ctypes.PyDLL(None).sleep(60)\n        return {}\n",
      });
      const stuck = pidOf(pool, "w1");
      const exit = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w1");
      const back = readyAgain(pool, "w1");
      await assert.rejects(
        pool.execute("holder", {}, { timeout: 200 }),
        TimeoutError,
      );
      const ev = await exit;
      assert.equal(ev.pid, stuck);
      assert.match(ev.reason, /no answer to a ping within 200 ms/);
      await back;
      assert.notEqual(pidOf(pool, "w1"), stuck);
    } finally {
      await pids.assertGone();
    }
  },
});

scenarios.push([
  "Pool restarts a worker whose forked child still holds its socket (and ends that child), and one whose socket directory was deleted",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    const childFile = `${dir.path}/child.pid`;
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1, transport: "unix" }),
      );
      pids.watch(pool);
      // A child forked by model code keeps the listening socket of its
      // parent: the restarted server saw "a running server listens there"
      // at the slot's path and the slot failed after its retries.
      await pool.addModel("forker", {
        source: `import os, time
class Forker:
    def execute(self, msg):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        with open(${JSON.stringify(childFile)}, "w") as f:
            f.write(str(pid))
        os._exit(5)
`,
      });
      let back = readyAgain(pool, "w1");
      await assert.rejects(pool.execute("forker", {}), WorkerCrashedError);
      await back;
      assert.equal(await pool.request("ping"), "pong");
      // The child went with its worker's process group (it was orphaned).
      const child = Number(await Deno.readTextFile(childFile));
      for (let i = 0; i < 200 && alive(child); i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(!alive(child), `forked child ${child} outlived its worker`);
      // The pool's socket directory deleted under it (a /tmp cleaner).
      await Deno.remove(tempDirOf(pool), { recursive: true });
      back = readyAgain(pool, "w1");
      pool.killWorker("w1");
      await back;
      assert.equal(await pool.request("ping"), "pong");
    } finally {
      const child = Number(await Deno.readTextFile(childFile).catch(() => ""));
      if (child > 0) {
        try {
          Deno.kill(child, "SIGKILL");
        } catch {
          // already gone
        }
      }
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool never puts a worker's socket in a socket directory that was deleted and made again (by another user)",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    let planted: string | undefined;
    try {
      let fresh: string;
      {
        await using pool = await Pool.start(
          poolOptions(dir.path, { workers: 1, transport: "unix" }),
        );
        pids.watch(pool);
        // A /tmp cleaner removes the idle directory; another local user makes
        // one by that name (its path is in every worker's command line), open
        // to them. Their directory would let them swap the socket for their
        // own and be sent the models, their options and every call.
        planted = tempDirOf(pool);
        await Deno.remove(planted, { recursive: true });
        await Deno.mkdir(planted);
        await Deno.chmod(planted, 0o777);
        await Deno.writeTextFile(`${planted}/theirs`, "");
        const back = readyAgain(pool, "w1");
        pool.killWorker("w1");
        await back;
        fresh = tempDirOf(pool);
        assert.notEqual(fresh, planted);
        assert.equal(Deno.statSync(fresh).mode! & 0o777, 0o700);
        // (The old process's directory is removed as it exits: the one
        // planted there may be gone.)
        const left = await Array.fromAsync(Deno.readDir(planted)).catch(
          () => [],
        );
        assert.ok(!left.some((e) => e.name === "w1.sock"));
        assert.equal(await pool.request("ping"), "pong");
      }
      // Each process's directory goes with it.
      assert.equal(await Deno.stat(fresh).catch(() => null), null);
    } finally {
      if (planted !== undefined) {
        await Deno.remove(planted, { recursive: true }).catch(() => {});
      }
      await pids.assertGone();
    }
  },
]);

/** The directory holding the pool's worker sockets (from w1's `--unix`). */
function tempDirOf(pool: Pool): string {
  const args = Deno.readTextFileSync(`/proc/${pidOf(pool, "w1")}/cmdline`)
    .split("\0");
  const path = args[args.indexOf("--unix") + 1] ?? "";
  assert.ok(path?.endsWith("/w1.sock"), args.join(" "));
  return path.slice(0, path.lastIndexOf("/"));
}

scenarios.push([
  "Pool marks a worker that crashes on start as failed and serves on the rest",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const restarting: number[] = [];
      await using pool = await Pool.start(
        poolOptions(dir.path, {
          serverArgs: (id) => (id === "w2" ? ["--no-such-flag"] : undefined),
        }, {
          maxCrashes: 2,
          backoff: { initial: 10, max: 15, jitter: 0 },
        }),
      );
      pids.watch(pool);
      pool.on((ev) => {
        if (ev.type === "restarting" && ev.worker === "w2") {
          restarting.push(ev.attempt);
        }
      });
      await pool.addModel("doubler", { file: "doubler.py" });
      const failed = pool.status().workers[1]!.state === "failed"
        ? undefined
        : await nextEvent(pool, "failed", (ev) => ev.worker === "w2");
      const w2 = pool.status().workers[1]!;
      assert.equal(w2.state, "failed");
      assert.match(
        w2.failedReason ?? "",
        /crashed 3 times within 60000 ms; last: start failed/,
      );
      assert.match(w2.stderrTail, /unrecognized arguments: --no-such-flag/);
      // argparse's exit status, not null ("unknown"), as the reason says.
      assert.equal(w2.lastExit?.code, 2, JSON.stringify(w2.lastExit));
      assert.match(w2.lastExit?.reason ?? "", /exited \(code 2\)/);
      if (failed !== undefined) {
        assert.match(failed.stderrTail, /--no-such-flag/);
      }
      assert.equal(w2.restarts, 2);
      assert.equal(w2.pid, null);
      for (let i = 0; i < 5; i++) {
        assert.deepEqual(await pool.execute("doubler", { x: i }), { y: 2 * i });
      }
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool kills and restarts a worker that stops answering while it starts (its configure request), instead of leaving it restarting for ever",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    const stopped: number[] = [];
    let configures = 0;
    // Freezes the worker just as its restart sends `configure`: the process
    // printed its ready line and took the connection, then went silent (a
    // SIGSTOP, a frozen cgroup). No call and no heartbeat reaches a starting worker.
    const freezer = {
      name: "freeze-on-configure",
      onRequest(
        msg: Record<string, unknown>,
        mc: { worker: { pid: number | null } },
      ) {
        // The pool's own configure (the spillover plugin sends one too).
        if (
          msg.cmd === "configure" && msg.logRecords === true &&
          ++configures === 2
        ) {
          const pid = mc.worker.pid;
          if (pid !== null) {
            stopped.push(pid);
            Deno.kill(pid, "SIGSTOP");
          }
        }
        return undefined;
      },
    };
    // readyTimeout bounds every start, the first one too: short for the frozen
    // start, yet longer than a start takes. A fixed 1000 ms was not on a busy
    // machine (the first start failed: "no ready line within 1000 ms").
    const readyTimeout = await readyTimeoutFor(dir.path, 1000);
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, {
          workers: 1,
          readyTimeout,
          plugins: [
            reconnect({
              backoff: { initial: 10, max: 50 },
              heartbeatInterval: 0,
            }),
            freezer,
          ],
        }),
      );
      pids.watch(pool);
      const exit = nextEvent(
        pool,
        "worker-exit",
        (ev) => ev.reason.includes("configure"),
        readyTimeout + 10_000,
      );
      // The frozen start never gets there: the first ready is the next restart.
      const ready = nextEvent(
        pool,
        "worker-state",
        (ev) => ev.to === "ready",
        2 * readyTimeout + 10_000,
      );
      ready.catch(() => {}); // awaited below, once the exit is checked
      Deno.kill(pidOf(pool, "w1"), "SIGKILL");
      const ev = await exit;
      assert.deepEqual(stopped, [ev.pid]);
      assert.equal(
        ev.reason,
        `start failed: Cannot start worker w1: no answer to configure within readyTimeout (${readyTimeout} ms from the spawn)`,
      );
      await ready;
      assert.equal(pool.status().workers[0]!.state, "ready");
    } finally {
      for (const pid of stopped) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // gone already
        }
      }
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.start: readyTimeout bounds the handshake too, failing a server that printed its ready line but never says hello with StartTimeoutError (phase handshake)",
  async () => {
    await using dir = await modelsDir();
    await using frozen = await wrapperPython();
    // Longer than the ready line takes (a wrapper's start, then the server's:
    // twice a start, on a busy machine more than a fixed 1500 ms), or the
    // start fails before the handshake: four times a start here and now.
    const readyTimeout = await readyTimeoutFor(dir.path, 1500);
    // Before: the handshake's own 10 s, whatever readyTimeout said, and a
    // TimeoutError "no hello within 10000 ms".
    await assert.rejects(
      Pool.start(poolOptions(dir.path, {
        workers: 1,
        python: frozen.python,
        readyTimeout,
      })),
      (err: unknown) => {
        assert.ok(err instanceof StartError, String(err));
        assert.match(
          err.message,
          new RegExp(
            `^w1: start failed: Cannot start worker w1: handshake not done within readyTimeout \\(${readyTimeout} ms from the spawn; no hello from the server yet\\)$`,
            "m",
          ),
        );
        const cause = err.cause;
        assert.ok(cause instanceof StartTimeoutError, String(cause));
        assert.equal(cause.code, "START_TIMEOUT");
        assert.deepEqual(cause.details, {
          phase: "handshake",
          step: "hello",
          timeoutMs: readyTimeout,
          id: "w1",
        });
        assert.ok(cause.cause instanceof TimeoutError);
        return true;
      },
    );
    // The stopped server went with its wrapper (its process group).
    await assertGone([await frozen.serverPid()]);
  },
]);

scenarios.push([
  "Pool.start with readyTimeout Infinity still bounds the handshake (handshakeTimeout, 10 s of the ready line by default)",
  async () => {
    // The default, as resolved; the start below sets 1 s (a frozen server
    // never says hello, however long the bound) rather than wait 10 s out.
    assert.equal(resolvePoolOptions({}).handshakeTimeout, 10_000);
    assert.throws(
      () => resolvePoolOptions({ handshakeTimeout: 0 }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message ===
          "Cannot start pool: handshakeTimeout: expected a number > 0",
    );
    await using dir = await modelsDir();
    await using frozen = await wrapperPython();
    await assert.rejects(
      Pool.start(poolOptions(dir.path, {
        workers: 1,
        python: frozen.python,
        readyTimeout: Infinity,
        handshakeTimeout: 1000,
      })),
      (err: unknown) => {
        assert.ok(err instanceof StartError, String(err));
        assert.match(
          err.message,
          /Cannot start worker w1: handshake not done within 1000 ms of the ready line \(readyTimeout is Infinity; no hello from the server yet\)$/m,
        );
        const cause = err.cause;
        assert.ok(cause instanceof StartTimeoutError, String(cause));
        assert.equal(cause.details.timeoutMs, 1000);
        return true;
      },
    );
    await assertGone([await frozen.serverPid()]);
  },
]);

scenarios.push([
  "Pool: a process that exits before its ready line is reported with its pid (onWorkerExit, lastExit) and counted in WorkerInfo.exits by its exit code",
  async () => {
    await using dir = await modelsDir();
    const seen: Array<{ pid: number | null; code: number | null }> = [];
    const recorder: Plugin = {
      name: "exits",
      onWorkerExit(ev) {
        if (ev.worker.id === "w2") seen.push({ pid: ev.pid, code: ev.code });
      },
    };
    const options = poolOptions(dir.path, {
      serverArgs: (id) => (id === "w2" ? ["--no-such-flag"] : undefined),
    }, { maxCrashes: 1, backoff: { initial: 10, max: 15, jitter: 0 } });
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start({
        ...options,
        plugins: [...(options.plugins as Plugin[]), recorder],
      });
      pids.watch(pool);
      if (pool.status().workers[1]!.state !== "failed") {
        await nextEvent(pool, "failed", (ev) => ev.worker === "w2");
      }
      const w2 = pool.status().workers[1]!;
      // Each start (the first, and its restarts) a process of its own that
      // argparse ended with code 2.
      const starts = w2.restarts + 1;
      assert.ok(starts >= 2, String(starts));
      assert.deepEqual(w2.exits, { exit_2: starts });
      assert.equal(typeof w2.lastExit?.pid, "number");
      assert.equal(w2.lastExit?.code, 2);
      assert.equal(w2.pid, null);
      // The hook gets them too (its runs may come after the failed event).
      while (seen.length < starts) await new Promise((r) => setTimeout(r, 10));
      for (const exit of seen) {
        assert.equal(typeof exit.pid, "number", JSON.stringify(seen));
        assert.equal(exit.code, 2);
      }
      assert.equal(new Set(seen.map((e) => e.pid)).size, starts);
      assert.equal(seen.at(-1)!.pid, w2.lastExit?.pid);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.start rejects with StartError and stderr tails when every worker fails",
  async () => {
    await using dir = await modelsDir();
    await assert.rejects(
      Pool.start(poolOptions(dir.path, { serverArgs: ["--no-such-flag"] })),
      (err: unknown) => {
        assert.ok(err instanceof StartError, String(err));
        assert.match(err.message, /all 2 workers failed to start/);
        assert.match(err.message, /w1: start failed/);
        assert.match(err.message, /w2: start failed/);
        assert.match(err.message, /unrecognized arguments/);
        return true;
      },
    );
  },
]);

Deno.test("Pool leaves no process of model code behind when the host is killed with SIGKILL", async () => {
  // The host cannot end the workers' process groups then: each server, seeing
  // itself orphaned as it exits, ends what its model code started.
  await using dir = await modelsDir();
  const script = await writeHostScript(
    dir.path,
    `await pool.addModel("spawner", { source: ${JSON.stringify(SPAWNER)} });
const { pids } = await pool.execute("spawner", {}) as { pids: number[] };
console.log(JSON.stringify([...pids, ...pool.status().workers.map((w) => w.pid)]));`,
  );
  await using host = spawnHost(script);
  host.pids = await host.firstLine() as number[];
  assert.equal(host.pids.length, 4);
  host.child.kill("SIGKILL");
  await host.child.status;
  await assertGone(host.pids, 8000);
});

Deno.test("Pool leaves no process of model code behind when the host dies of an uncaught exception", async () => {
  // Deno SIGKILLs the children it holds referenced when a program dies of an
  // uncaught exception, so a server could not end its process group; the
  // runtime adapter unrefs them, and each server, seeing its host gone, ends
  // what its model code started.
  await using dir = await modelsDir();
  const script = await writeHostScript(
    dir.path,
    `await pool.addModel("spawner", { source: ${JSON.stringify(SPAWNER)} });
const { pids } = await pool.execute("spawner", {}) as { pids: number[] };
console.log(JSON.stringify([...pids, ...pool.status().workers.map((w) => w.pid)]));
setTimeout(() => {
  throw new Error("an uncaught exception, expected by the test");
}, 10);`,
  );
  await using host = spawnHost(script);
  host.pids = await host.firstLine() as number[];
  assert.equal(host.pids.length, 4);
  assert.equal((await host.child.status).code, 1);
  await assertGone(host.pids, 8000);
});

Deno.test("Pool leaves no python process behind when the host is killed with SIGKILL or SIGTERM", async () => {
  await using dir = await modelsDir();
  const script = await writeHostScript(
    dir.path,
    "console.log(JSON.stringify(pool.status().workers.map((w) => w.pid)));",
  );
  for (const signal of ["SIGKILL", "SIGTERM"] as const) {
    await using host = spawnHost(script);
    host.pids = await host.firstLine() as number[];
    assert.equal(host.pids.length, 2);
    host.child.kill(signal);
    const status = await host.child.status;
    if (signal === "SIGTERM") {
      assert.equal(status.code, 143, "the pool closed itself and exited");
    }
    await assertGone(host.pids, 8000);
  }
});

Deno.test("Pool faults, each scenario on a pool of its own (3 at a time)", (t) =>
  concurrentSteps(t, scenarios, 3));
