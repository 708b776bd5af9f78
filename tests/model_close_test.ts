/**
 * A model's `close()` with real workers: on removeModel, updateModel,
 * pool.close(), a resize shrink and the gateway's SIGTERM drain; not on a
 * SIGKILL; a close that hangs (even holding the GIL) is bounded.
 */
import assert from "node:assert/strict";
import { Pool, type PoolEvent } from "../src/pool.ts";
import {
  assertGone,
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
} from "./_pool_harness.ts";
import { spawnServe, startGateway } from "./_gateway_harness.ts";

/**
 * Notes "<pid> <tag> <event>" in closes.log beside its file at __init__ and
 * close(); options: tag, close_timeout_ms, hang ("slow": 1.5 s, then notes
 * "closed"; "sleep": for good, in C, releasing the GIL; "gil": for good, in
 * C, holding it).
 */
const CLOSER = `
import os
import time

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "closes.log")

class Closer:
    def __init__(self, options):
        self.tag = options.get("tag", "v1")
        self.hang = options.get("hang")
        self.close_timeout_ms = options.get("close_timeout_ms", 5000)
        self.note("init")

    def note(self, what):
        with open(LOG, "a") as f:
            f.write("%d %s %s\\n" % (os.getpid(), self.tag, what))

    def execute(self, msg):
        return {"pid": os.getpid()}

    def close(self):
        self.note("close")
        if self.hang == "slow":
            time.sleep(1.5)
            self.note("closed")
        elif self.hang == "sleep":
            time.sleep(3600)
        elif self.hang == "gil":
            import re
            re.match(r"(a+)+$", "a" * 64 + "b")  # hours in C, holding the GIL
`;
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

/** The lines of closes.log in `dir` ("<pid> <tag> <event>"). */
async function closes(dir: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(`${dir}/closes.log`)).split("\n")
      .filter((l) => l !== "");
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
}

/** The lines of closes.log in `dir` of process `pid`, without the pid. */
async function linesOf(dir: string, pid: number): Promise<string[]> {
  return (await closes(dir)).filter((l) => l.startsWith(`${pid} `))
    .map((l) => l.slice(String(pid).length + 1));
}

async function closerDir(): Promise<{ path: string } & AsyncDisposable> {
  const dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/closer.py`, CLOSER);
  return dir;
}

/**
 * The scenarios of this file but the timed ones (a hung close()'s bound)
 * and the CLI's, each on a pool (or gateway) of its own: they wait on
 * closes, stops and restarts more than on the CPU, so the file runs them a
 * few at a time (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Pool.removeModel runs the model's close() on every worker before it resolves",
  async () => {
    await using dir = await closerDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(poolOptions(dir.path));
      pids.watch(pool);
      await pool.addModel("closer", { file: "closer.py" });
      const out = await pool.removeModel("closer");
      assert.deepEqual(out, { name: "closer", removed: true });
      for (const id of ["w1", "w2"]) {
        assert.deepEqual(await linesOf(dir.path, pidOf(pool, id)), [
          "v1 init",
          "v1 close",
        ]);
      }
      await pool.close();
      // Removed: closed once, not again when the worker stops.
      assert.equal((await closes(dir.path)).length, 4);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.status() shows each model's closeTimeoutMs, and its model events carry the spec and description",
  async () => {
    await using dir = await closerDir();
    await Deno.writeTextFile(
      `${dir.path}/plain.py`,
      "class P:\n    def execute(self, m):\n        return m\n",
    );
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }),
      );
      pids.watch(pool);
      const events: PoolEvent[] = [];
      pool.on((ev) => ev.type === "model" && events.push(ev));
      const added = await pool.addModel("closer", { file: "closer.py" });
      await pool.addModel("plain", { file: "plain.py" });
      const closing = (): Record<string, number | undefined> =>
        Object.fromEntries(
          pool.status().models.map((m) => [m.name, m.closeTimeoutMs]),
        );
      assert.deepEqual(closing(), { closer: 5000, plain: undefined });
      const spec = { file: "closer.py", options: { close_timeout_ms: 800 } };
      const updated = await pool.updateModel("closer", spec);
      assert.equal((updated as { closeTimeoutMs: number }).closeTimeoutMs, 800);
      assert.deepEqual(closing(), { closer: 800, plain: undefined });
      await pool.removeModel("closer");
      assert.deepEqual(closing(), { plain: undefined });
      // The answers themselves, sent before the commands' promises resolved.
      assert.deepEqual(
        events.map((ev) =>
          ev.type === "model" && [ev.action, ev.name, ev.spec]
        ),
        [
          ["add", "closer", { file: "closer.py" }],
          ["add", "plain", { file: "plain.py" }],
          ["update", "closer", spec],
          ["remove", "closer", undefined],
        ],
      );
      const descriptions = events.map((ev) =>
        ev.type === "model" ? ev.description : undefined
      );
      assert.equal(descriptions[0], added);
      assert.equal(descriptions[2], updated);
      assert.equal(descriptions[3], undefined);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.updateModel closes the old instance once the new one is in place; a close that raises is a warning",
  async () => {
    await using dir = await closerDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }),
      );
      pids.watch(pool);
      await pool.addModel("closer", { file: "closer.py" });
      await pool.updateModel("closer", {
        file: "closer.py",
        options: { tag: "v2" },
      });
      const pid = pidOf(pool, "w1");
      assert.deepEqual(await linesOf(dir.path, pid), [
        "v1 init",
        "v2 init",
        "v1 close",
      ]);
      // A close that raises: the update succeeds and says so.
      await Deno.writeTextFile(
        `${dir.path}/raiser.py`,
        "class R:\n    def execute(self, m): return m\n    def close(self): raise OSError('disk gone')\n",
      );
      await pool.addModel("raiser", { file: "raiser.py" });
      const out = await pool.updateModel("raiser", { file: "raiser.py" }) as {
        version: number;
        closeWarning?: string;
      };
      assert.equal(out.version, 2);
      assert.equal(out.closeWarning, "close() raised OSError: disk gone");
      assert.deepEqual(await pool.execute("raiser", { x: 7 }), { x: 7 });
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.removeModel and updateModel tell a close() warning of any worker, not only the first's",
  async () => {
    await using dir = await closerDir();
    const pids = new PidTracker();
    try {
      // Only w2's close() raises; the answer is w1's reply.
      await using pool = await Pool.start(
        poolOptions(dir.path, { env: (id: string) => ({ CLOSE_WHO: id }) }),
      );
      pids.watch(pool);
      await Deno.writeTextFile(
        `${dir.path}/second.py`,
        "import os\n\nclass S:\n    def execute(self, m): return m\n    def close(self):\n        if os.environ['CLOSE_WHO'] == 'w2':\n            raise OSError('w2 disk gone')\n",
      );
      await pool.addModel("second", { file: "second.py" });
      const updated = await pool.updateModel("second", {
        file: "second.py",
      }) as { version: number; closeWarning?: string };
      assert.deepEqual([updated.version, updated.closeWarning], [
        2,
        "close() raised OSError: w2 disk gone",
      ]);
      const removed = await pool.removeModel("second") as {
        closeWarning?: string;
      };
      assert.equal(
        removed.closeWarning,
        "close() raised OSError: w2 disk gone",
      );
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "an addModel right after a remove whose close() ended the worker's process waits for the restarted worker",
  async () => {
    await using dir = await closerDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }),
      );
      pids.watch(pool);
      await Deno.writeTextFile(
        `${dir.path}/exiter.py`,
        "import os\n\nclass X:\n    def execute(self, m): return m\n    def close(self): os._exit(3)\n",
      );
      await pool.addModel("exiter", { file: "exiter.py" });
      const before = pidOf(pool, "w1");
      // The reply may or may not come before the process ends.
      await pool.removeModel("exiter").catch(() => {});
      await pool.addModel("echo2", {
        source: "class E:\n    def execute(self, m): return m\n",
      });
      assert.deepEqual(await pool.execute("echo2", { y: 1 }), { y: 1 });
      assert.notEqual(pidOf(pool, "w1"), before);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool.close() runs every model's close() before the workers exit; a resize shrink closes the removed worker's",
  async () => {
    await using dir = await closerDir();
    const pids = new PidTracker();
    try {
      const pool = await Pool.start(poolOptions(dir.path, { workers: 2 }));
      pids.watch(pool);
      await pool.addModel("closer", { file: "closer.py" });
      const w1 = pidOf(pool, "w1");
      const w2 = pidOf(pool, "w2");
      await pool.resize(1);
      assert.deepEqual(await linesOf(dir.path, w2), ["v1 init", "v1 close"]);
      assert.deepEqual(await linesOf(dir.path, w1), ["v1 init"]);
      await pool.close();
      assert.deepEqual(await linesOf(dir.path, w1), ["v1 init", "v1 close"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "a worker killed with SIGKILL runs no close(); its replacement closes at pool.close()",
  async () => {
    await using dir = await closerDir();
    const pids = new PidTracker();
    try {
      const pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
      pids.watch(pool);
      await pool.addModel("closer", { file: "closer.py" });
      const killed = pidOf(pool, "w1");
      const back = nextEvent(
        pool,
        "worker-state",
        (ev) => ev.worker === "w1" && ev.to === "ready",
      );
      pool.killWorker("w1");
      await back;
      const restarted = pidOf(pool, "w1");
      assert.notEqual(restarted, killed);
      await pool.close();
      await assertGone([killed]);
      assert.deepEqual(await linesOf(dir.path, killed), ["v1 init"]);
      assert.deepEqual(await linesOf(dir.path, restarted), [
        "v1 init",
        "v1 close",
      ]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "a worker that gets SIGTERM from elsewhere runs its close() to its end before it exits, not killed as a lost connection",
  async () => {
    // The server closes its connections first, then runs its models' close():
    // the pool took a connection that ended with its process alive 250 ms
    // later for lost and killed the process (lastExit "connection lost",
    // SIGKILL), its close() cut short (chaos41), and under Deno's
    // --allow-run=python3 the end of its process group too, leaving a child
    // of its model that ignores SIGTERM running. The server's `stopping` event
    // (its closeMs) makes the pool wait for the exit as after a stopServer.
    await using dir = await closerDir();
    const pids = new PidTracker();
    const pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
    try {
      pids.watch(pool);
      await pool.addModel("closer", {
        file: "closer.py",
        options: { hang: "slow", close_timeout_ms: 3000 },
      });
      const pid = pidOf(pool, "w1");
      const exit = nextEvent(pool, "worker-exit", (ev) => ev.pid === pid);
      const back = nextEvent(
        pool,
        "worker-state",
        (ev) => ev.worker === "w1" && ev.to === "ready",
      );
      Deno.kill(pid, "SIGTERM");
      const exited = await exit;
      await back;
      // Stopped cleanly, with 128 + SIGTERM's number: counted as the SIGTERM
      // it was, not as a stop of the pool's (a clean exit_0 before).
      assert.deepEqual(
        { code: exited.code, signal: exited.signal, reason: exited.reason },
        { code: 143, signal: null, reason: "exited with code 143" },
      );
      // The pool's own stop (close) is `stopped`, its code 0.
      const stop = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w1");
      await pool.close();
      const stopped = await stop;
      assert.equal(stopped.code, 0);
      assert.deepEqual(pool.status().workers[0]!.exits, {
        SIGTERM: 1,
        stopped: 1,
      });
      assert.deepEqual(await linesOf(dir.path, pid), [
        "v1 init",
        "v1 close",
        "v1 closed",
      ]);
    } finally {
      await pool.close();
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "pool.close() called as a restarted worker turns ready drains it: its close() runs, the process exits by itself",
  async () => {
    await using dir = await closerDir();
    const pids = new PidTracker();
    try {
      const pool = await Pool.start(poolOptions(dir.path, { workers: 1 }));
      pids.watch(pool);
      await pool.addModel("closer", { file: "closer.py" });
      // The close starts in the ready event itself, before the restart's own
      // code resumes (which then found the worker "draining", took its start
      // for failed and killed the process under the stop).
      const closed = new Promise<void>((resolve) => {
        const off = pool.on((ev) => {
          if (
            ev.type === "worker-state" && ev.worker === "w1" &&
            ev.to === "ready"
          ) {
            off();
            resolve(pool.close());
          }
        });
      });
      const exit = nextEvent(
        pool,
        "worker-exit",
        (ev) => ev.reason === "stopped",
      );
      pool.killWorker("w1");
      await closed;
      const exited = await exit;
      assert.deepEqual(
        { code: exited.code, signal: exited.signal },
        { code: 0, signal: null },
      );
      assert.deepEqual(await linesOf(dir.path, exited.pid!), [
        "v1 init",
        "v1 close",
      ]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "pool.close() waits for a close() that takes longer than the stop's 1 s, within its close_timeout_ms",
  async () => {
    await using dir = await closerDir();
    const pids = new PidTracker();
    try {
      const pool = await Pool.start(
        poolOptions(dir.path, { workers: 1, shutdownGrace: 0 }),
      );
      pids.watch(pool);
      await pool.addModel("closer", {
        file: "closer.py",
        options: { hang: "slow", close_timeout_ms: 3000 },
      });
      const pid = pidOf(pool, "w1");
      await pool.close();
      assert.deepEqual(await linesOf(dir.path, pid), [
        "v1 init",
        "v1 close",
        "v1 closed",
      ]);
      const exit = pool.status().workers[0]!.lastExit;
      assert.equal(exit?.code, 0);
    } finally {
      await pids.assertGone();
    }
  },
]);

for (const hang of ["sleep", "gil"] as const) {
  Deno.test(`a close() that hangs (${hang}) holds pool.close() no longer than its bound`, async () => {
    await using dir = await closerDir();
    const pids = new PidTracker();
    try {
      const pool = await Pool.start(
        poolOptions(dir.path, { workers: 1, shutdownGrace: 0 }),
      );
      pids.watch(pool);
      await pool.addModel("closer", {
        file: "closer.py",
        options: { hang, close_timeout_ms: 500 },
      });
      const pid = pidOf(pool, "w1");
      const t0 = Date.now();
      await pool.close();
      const took = Date.now() - t0;
      // The server exits 0.5 s after it began the close; holding the GIL,
      // it cannot, and the host kills it 1 s + 0.5 s after stopServer.
      assert.ok(
        hang === "sleep" ? took < 1400 : took >= 1400 && took < 3000,
        `pool.close() took ${took} ms`,
      );
      assert.deepEqual(await linesOf(dir.path, pid), ["v1 init", "v1 close"]);
      const exit = pool.status().workers[0]!.lastExit;
      assert.equal(exit?.signal ?? null, hang === "gil" ? "SIGKILL" : null);
    } finally {
      await pids.assertGone();
    }
  });
}

scenarios.push([
  "DELETE /v1/models/{name} runs the model's close() and answers its warning",
  async () => {
    const gw = await startGateway({ allowManage: true }, {
      "closer.py": CLOSER,
      "raiser.py":
        "class R:\n    def execute(self, m): return m\n    def close(self): raise OSError('disk gone')\n",
    });
    try {
      const pid = (await (await gw.fetch("/v1/status")).json()).workers[0].pid;
      const res = await gw.fetch("/v1/models/closer", { method: "DELETE" });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { name: "closer", removed: true });
      assert.deepEqual(await linesOf(gw.dir, pid), ["v1 init", "v1 close"]);
      // A PUT that updates answers the old version's warning too.
      const updated = await gw.fetch("/v1/models/raiser", {
        method: "PUT",
        body: JSON.stringify({ file: "raiser.py" }),
      });
      const body = await updated.json();
      assert.equal(updated.status, 200);
      assert.equal(body.action, "updated");
      assert.equal(body.closeWarning, "close() raised OSError: disk gone");
      assert.equal(body.model.closeWarning, undefined);
      const listed = await (await gw.fetch("/v1/models/raiser")).json();
      assert.equal(listed.closeWarning, undefined);
      const raised = await gw.fetch("/v1/models/raiser", { method: "DELETE" });
      assert.deepEqual(await raised.json(), {
        name: "raiser",
        removed: true,
        closeWarning: "close() raised OSError: disk gone",
      });
    } finally {
      await gw.shutdown();
      await Deno.remove(gw.dir, { recursive: true });
    }
  },
]);

scenarios.push([
  "DELETE and an updating PUT wait for a close() longer than limits.loadTimeout, within its close_timeout_ms",
  async () => {
    // Retiring a version may take twice its close_timeout_ms (its calls in
    // flight, then close()): documented work, not a load that hangs.
    const slowClose = `import time


class SlowClose:
    close_timeout_ms = 3000

    def execute(self, msg):
        return msg

    def close(self):
        time.sleep(1.2)
`;
    const gw = await startGateway({
      allowManage: true,
      limits: { shutdownGrace: 2000, loadTimeout: 400 },
    }, { "slow_close.py": slowClose });
    try {
      const shown = await (await gw.fetch("/v1/models/slow_close")).json();
      assert.equal(shown.closeTimeoutMs, 3000);
      let t0 = Date.now();
      const updated = await gw.fetch("/v1/models/slow_close", {
        method: "PUT",
        body: JSON.stringify({ file: "slow_close.py" }),
      });
      const body = await updated.json();
      assert.equal(updated.status, 200, JSON.stringify(body));
      assert.equal(body.action, "updated");
      assert.equal(body.closeWarning, undefined);
      assert.ok(Date.now() - t0 >= 1200, `updated in ${Date.now() - t0} ms`);
      t0 = Date.now();
      const removed = await gw.fetch("/v1/models/slow_close", {
        method: "DELETE",
      });
      assert.deepEqual([removed.status, await removed.json()], [200, {
        name: "slow_close",
        removed: true,
      }]);
      assert.ok(Date.now() - t0 >= 1200, `removed in ${Date.now() - t0} ms`);
    } finally {
      await gw.shutdown();
      await Deno.remove(gw.dir, { recursive: true });
    }
  },
]);

Deno.test("serve on SIGTERM drains, then every worker closes its models before it exits", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-close-serve-" });
  await Deno.writeTextFile(`${dir}/closer.py`, CLOSER);
  const { child, port, stderr, lines } = await spawnServe(dir);
  let pids: number[] = [];
  try {
    const status = await (await fetch(`http://127.0.0.1:${port}/v1/status`))
      .json();
    pids = status.workers.map((w: { pid: number }) => w.pid);
    assert.equal(pids.length, 2);
    child.kill("SIGTERM");
    const { code } = await child.status;
    if (code !== 0) assert.fail(`exit code ${code}: ${await stderr}`);
    for (const pid of pids) {
      assert.deepEqual(await linesOf(dir, pid), ["v1 init", "v1 close"]);
    }
    await lines.cancel();
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await child.status;
    await stderr;
    await assertGone(pids);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Model close() on pools and gateways of their own (each scenario on its own pool, 3 at a time)", (t) =>
  concurrentSteps(t, scenarios, 3));
