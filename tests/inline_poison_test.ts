/**
 * A poison input for a model on the inline fast path: one call that hangs
 * on the Python server's event loop. The worker it hung is killed by the
 * hang probe; from then on the pool sends the model's calls with
 * `threaded: true` (protocol §6), so the next poison times out on a call
 * thread of any worker, restarted ones too, and kills nothing.
 */
import assert from "node:assert/strict";
import {
  CancelledError,
  TimeoutError,
  UnsafeIntegerError,
  WorkerCrashedError,
} from "../src/errors.ts";
import { reconnect } from "../plugins/reconnect.ts";
import type { Plugin } from "../src/plugin.ts";
import { Pool } from "../src/pool.ts";
import type { PoolEvent } from "../src/pool_events.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

/**
 * Fast calls on `worker` until its server runs `slow` inline (at once with
 * `inline = True`, unless the host marked it threaded).
 */
async function learnInline(pool: Pool, worker: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const out = await pool.execute<{ inline: boolean }>("slow", { ms: 0, i }, {
      worker,
    });
    if (out.inline) return;
  }
  throw new Error(`Cannot test: ${worker} never ran \`slow\` inline`);
}

/**
 * A plugin whose `next()` resolves at the next `busy` event of model `name`
 * on any worker: an inline call of it holds that worker's event loop, and
 * the host has heard so.
 */
function busyWatch(name: string): Plugin & { next(): Promise<void> } {
  let waiting: PromiseWithResolvers<void> | undefined;
  return {
    name: "busy-watch",
    onSessionOpen({ session }) {
      session.onEvent((ev) => {
        if (ev.event === "busy" && ev.model === name) waiting?.resolve();
      });
    },
    next() {
      waiting = Promise.withResolvers();
      return waiting.promise;
    },
  };
}

/** Whether any of `n` fast calls of `slow` on `worker` ran inline. */
async function anyInline(
  pool: Pool,
  worker: string,
  n: number,
): Promise<boolean> {
  let inline = false;
  for (let i = 0; i < n; i++) {
    const out = await pool.execute<{ inline: boolean }>("slow", { ms: 0, i }, {
      worker,
    });
    inline ||= out.inline;
  }
  return inline;
}

/**
 * Two workers (hang grace 1 s) that both run model `slow` inline, their
 * exits and the model's threaded marks pushed to `events`. Closed with no
 * grace: a poison that timed out on a thread still sleeps there, and the
 * close waited for it (0.5-1.3 s a test).
 */
async function inlineOnBoth(
  dir: string,
  pids: PidTracker,
  events: PoolEvent[],
): Promise<Pool> {
  const pool = await Pool.start(
    poolOptions(dir, { shutdownGrace: 0 }, { hangGrace: 1000 }),
  );
  try {
    pids.watch(pool);
    pool.on((ev) => {
      if (ev.type === "worker-exit" || ev.type === "model-threaded") {
        events.push(ev);
      }
    });
    await pool.addModel("slow", { file: "inline_slow.py" });
    await learnInline(pool, "w1");
    await learnInline(pool, "w2");
    return pool;
  } catch (err) {
    await pool.close();
    throw err;
  }
}

/**
 * The scenarios of this file, each on a pool of its own: they wait on hang
 * graces, timeouts and restarts more than on the CPU, so the file runs them
 * a few at a time (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Pool runs a model threaded after one of its inline calls hung a worker: the next poison costs no worker",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const events: PoolEvent[] = [];
      await using pool = await inlineOnBoth(dir.path, pids, events);
      const w1 = pidOf(pool, "w1");
      const w2 = pidOf(pool, "w2");

      // The first poison holds w1's loop: the hang probe kills w1.
      const threaded = nextEvent(pool, "model-threaded");
      const back = readyAgain(pool, "w1");
      await assert.rejects(
        pool.execute("slow", { ms: 60_000 }, { worker: "w1", timeout: 600 }),
        TimeoutError,
      );
      const ev = await threaded;
      assert.equal(ev.name, "slow");
      assert.equal(ev.worker, "w1");
      assert.match(ev.reason, /held the worker's event loop/);
      assert.equal(pool.modelStatus("slow")[0]?.threaded, ev.reason);
      await back;
      const exit = events.find((e) => e.type === "worker-exit");
      assert.ok(exit?.type === "worker-exit" && exit.heldLoop === "slow");

      // w2 learned `slow` inline before the mark: its calls now run threaded,
      // so a poison there times out on a thread and w2 keeps answering.
      assert.equal(await anyInline(pool, "w2", 20), false);
      await assert.rejects(
        pool.execute("slow", { ms: 3_000 }, { worker: "w2", timeout: 600 }),
        TimeoutError,
      );
      // Outlives the hang probe's grace after that timeout: a probe that
      // found w2's loop held would have killed it under this call.
      const after = await pool.execute<{ pid: number }>("slow", { ms: 1100 }, {
        worker: "w2",
      });
      assert.equal(after.pid, w2);

      // The restarted w1 never learns it inline again.
      assert.notEqual(pidOf(pool, "w1"), w1);
      assert.equal(await anyInline(pool, "w1", 20), false);
      assert.deepEqual(
        events.filter((e) => e.type === "worker-exit").length,
        1,
        JSON.stringify(events),
      );
      assert.equal(events.filter((e) => e.type === "model-threaded").length, 1);

      // An update is new code: it may prove itself fast again.
      await pool.updateModel("slow", { file: "inline_slow.py" });
      assert.equal(pool.modelStatus("slow")[0]?.threaded, undefined);
      await learnInline(pool, "w1");
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool marks a model threaded as its inline call times out holding the loop, before the hang probe's kill: a poison sent then to another worker costs no worker",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const events: PoolEvent[] = [];
      await using pool = await inlineOnBoth(dir.path, pids, events);
      const w2 = pidOf(pool, "w2");

      // Past its first busy event (250-350 ms after the call starts on the
      // server), the timeout finds w1's loop held by it: the mark comes now,
      // w1's death only after the hang grace. The timeout is not what is
      // tested: it must come after that event has crossed (600 ms left too
      // little on a loaded machine, where the mark then came at the kill).
      const back = readyAgain(pool, "w1");
      await assert.rejects(
        pool.execute("slow", { ms: 60_000 }, { worker: "w1", timeout: 2000 }),
        TimeoutError,
      );
      assert.match(
        pool.modelStatus("slow")[0]?.threaded ?? "",
        /timed out after \d+ ms while it held the worker's event loop/,
      );
      // A second poison right away, on w2: it used to go inline (w1 still
      // alive, no mark yet) and hang w2 too.
      await assert.rejects(
        pool.execute("slow", { ms: 3_000 }, { worker: "w2", timeout: 600 }),
        TimeoutError,
      );
      await back;
      // Outlives the hang probe's grace after that timeout.
      const after = await pool.execute<{ pid: number }>("slow", { ms: 1100 }, {
        worker: "w2",
      });
      assert.equal(after.pid, w2);
      assert.deepEqual(
        events.map((e) => e.type === "worker-exit" ? e.heldLoop : e.type),
        ["model-threaded", "slow"],
      );
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool marks only the version whose inline call timed out holding the loop",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }, { hangGrace: 1000 }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "inline_slow.py", version: "1" });
      await pool.addModel("slow", { file: "inline_slow.py", version: "2" });
      const inlineOn = async (version: string) => {
        for (let i = 0; i < 500; i++) {
          const out = await pool.execute<{ inline: boolean }>("slow", { i }, {
            version,
          });
          if (out.inline) return;
        }
        throw new Error(`Cannot test: version ${version} never ran inline`);
      };
      await inlineOn("1");
      await inlineOn("2");
      const threaded = nextEvent(pool, "model-threaded");
      const back = readyAgain(pool, "w1");
      await assert.rejects(
        pool.execute("slow", { ms: 60_000 }, { version: "2", timeout: 600 }),
        TimeoutError,
      );
      assert.equal((await threaded).name, "slow@2");
      const [one, two] = pool.modelStatus("slow");
      assert.equal(one?.threaded, undefined);
      assert.match(two?.threaded ?? "", /timed out after/);
      await back;
      // The restarted worker learns version 1 inline again, never version 2.
      await inlineOn("1");
      for (let i = 0; i < 20; i++) {
        const out = await pool.execute<{ inline: boolean }>("slow", { i }, {
          version: "2",
        });
        assert.equal(out.inline, false);
      }
    } finally {
      await pids.assertGone();
    }
  },
]);

for (
  const [how, end] of [
    ["is killed from outside", "kill"],
    ["calls os._exit", "exit"],
  ] as const
) {
  scenarios.push([
    `Pool marks no model threaded when a worker ${how} while an inline call of it holds the loop`,
    async () => {
      // Running it on a thread would not have saved the worker: only the
      // pool's own kill of a worker that answers nothing marks a model.
      await using dir = await modelsDir();
      await Deno.writeTextFile(
        `${dir.path}/stop.py`,
        `import os, threading, time

class Stop:
    inline = True  # as inline_slow.py's, for the same reason

    def __init__(self, options):
        pass

    def execute(self, msg):
        flag = msg.get("flag")
        while flag and not os.path.exists(flag):
            time.sleep(0.02)
        if flag:
            os._exit(3)
        return {"inline": threading.current_thread() is threading.main_thread()}
`,
      );
      const flag = `${dir.path}/flag`;
      const busy = busyWatch("stop");
      const pids = new PidTracker();
      try {
        await using pool = await Pool.start(
          poolOptions(dir.path, {
            workers: 1,
            plugins: [reconnect({ heartbeatInterval: 0 }), busy],
          }),
        );
        pids.watch(pool);
        await pool.addModel("stop", { file: "stop.py" });
        let inline = false;
        for (let i = 0; i < 500 && !inline; i++) {
          inline = (await pool.execute<{ inline: boolean }>("stop", { i }))
            .inline;
        }
        assert.ok(inline, "Cannot test: w1 never ran `stop` inline");
        const held = busy.next();
        const exit = nextEvent(pool, "worker-exit");
        const call = pool.execute("stop", { flag });
        call.catch(() => {});
        await held;
        if (end === "kill") Deno.kill(pidOf(pool, "w1"), "SIGKILL");
        else await Deno.writeTextFile(flag, "");
        await assert.rejects(call, WorkerCrashedError);
        const ev = await exit;
        assert.equal(ev.heldLoop, undefined, ev.reason);
        assert.equal(pool.modelStatus("stop")[0]?.threaded, undefined);
      } finally {
        await pids.assertGone();
      }
    },
  ]);
}

scenarios.push([
  "Pool marks no model threaded when an inline call turns slow and completes",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }, {
          heartbeatInterval: 100,
          heartbeatTimeout: 2000,
        }),
      );
      pids.watch(pool);
      await pool.addModel("slow", { file: "inline_slow.py" });
      await learnInline(pool, "w1");
      // Long enough for busy events; its reply clears what they said.
      const out = await pool.execute<{ inline: boolean }>("slow", { ms: 600 });
      assert.equal(out.inline, true);
      // A death from outside afterwards is not laid on it.
      const exit = nextEvent(pool, "worker-exit");
      Deno.kill(pidOf(pool, "w1"), "SIGKILL");
      assert.equal((await exit).heldLoop, undefined);
      assert.equal(pool.modelStatus("slow")[0]?.threaded, undefined);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool marks no model threaded when a call of it times out behind its slow inline call that then completes",
  async () => {
    // The call that timed out never ran: it waited on the server behind one
    // that held the loop and answered in time. Only the holder's own timeout
    // says that it hung.
    await using dir = await modelsDir();
    const busy = busyWatch("slow");
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, {
          workers: 1,
          plugins: [
            reconnect({ heartbeatInterval: 0, hangGrace: 30_000 }),
            busy,
          ],
        }),
      );
      pids.watch(pool);
      const marks: PoolEvent[] = [];
      pool.on((ev) => {
        if (ev.type === "model-threaded") marks.push(ev);
      });
      await pool.addModel("slow", { file: "inline_slow.py" });
      await learnInline(pool, "w1");
      const held = busy.next();
      const slow = pool.execute<{ inline: boolean }>("slow", { ms: 1500 }, {
        timeout: 60_000,
      });
      await held;
      await assert.rejects(
        pool.execute("slow", { ms: 0 }, { timeout: 100 }),
        TimeoutError,
      );
      assert.equal((await slow).inline, true);
      assert.deepEqual(marks, []);
      assert.equal(pool.modelStatus("slow")[0]?.threaded, undefined);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool marks no model threaded when an inline call turned slow and its reply failed to read",
  async () => {
    // The reply (an integer beyond ±2^53, refused with `integers: "number"`)
    // is still the call's end: a later death from outside was laid on it.
    await using dir = await modelsDir();
    await Deno.writeTextFile(
      `${dir.path}/huge.py`,
      `import threading, time

class Huge:
    inline = True  # as inline_slow.py's, for the same reason

    def __init__(self, options):
        pass

    def execute(self, msg):
        time.sleep(msg.get("ms", 0) / 1000.0)
        inline = threading.current_thread() is threading.main_thread()
        return {"inline": inline, "n": 2**60 + 1 if msg.get("huge") else 1}
`,
    );
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }),
      );
      pids.watch(pool);
      await pool.addModel("huge", { file: "huge.py" });
      let inline = false;
      for (let i = 0; i < 500 && !inline; i++) {
        inline =
          (await pool.execute<{ inline: boolean }>("huge", { i })).inline;
      }
      assert.ok(inline, "Cannot test: w1 never ran `huge` inline");
      // Long enough for busy events; its reply fails to read.
      await assert.rejects(
        pool.execute("huge", { ms: 600, huge: true }),
        UnsafeIntegerError,
      );
      const exit = nextEvent(pool, "worker-exit");
      Deno.kill(pidOf(pool, "w1"), "SIGKILL");
      assert.equal((await exit).heldLoop, undefined);
      assert.equal(pool.modelStatus("huge")[0]?.threaded, undefined);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool retries a hung inline call threaded: an idempotent poison costs one worker, not one a try",
  async () => {
    // Its own hang: busy events stop after 1 s (BUSY_MAX, 30 s by default),
    // then the heartbeat kills the worker under the call, which is retried
    // on the other worker. Made before the mark, it went there inline.
    await using dir = await modelsDir();
    await Deno.writeTextFile(
      `${dir.path}/hang.py`,
      `import os, threading, time
from pyproxy_server.inline_watch import InlineWatch

InlineWatch.BUSY_MAX = 1.0

class Hang:
    inline = True  # as inline_slow.py's, for the same reason

    def __init__(self, options):
        pass

    def execute(self, msg):
        for _ in range(msg.get("ms", 0) // 50):
            time.sleep(0.05)
        inline = threading.current_thread() is threading.main_thread()
        return {"inline": inline, "pid": os.getpid()}
`,
    );
    const pids = new PidTracker();
    try {
      await using pool = await Pool.start(
        poolOptions(dir.path, {}, {
          heartbeatInterval: 100,
          heartbeatTimeout: 1000,
        }),
      );
      pids.watch(pool);
      let exits = 0;
      pool.on((ev) => {
        if (ev.type === "worker-exit") exits++;
      });
      await pool.addModel("hang", { file: "hang.py" });
      const before = new Map<string, number>();
      for (const w of ["w1", "w2"]) {
        let inline = false;
        for (let i = 0; i < 500 && !inline; i++) {
          inline = (await pool.execute<{ inline: boolean }>("hang", { i }, {
            worker: w,
          })).inline;
        }
        assert.ok(inline, `Cannot test: ${w} never ran \`hang\` inline`);
        before.set(w, pidOf(pool, w));
      }
      const sent: string[] = [];
      const retried = Promise.withResolvers<string>();
      const ac = new AbortController();
      const poison = pool.execute("hang", { ms: 60_000 }, {
        idempotent: true,
        signal: ac.signal,
        onSend: (w) => {
          sent.push(w);
          if (sent.length === 2) retried.resolve(w);
        },
      });
      poison.catch(() => {});
      const to = await retried.promise;
      assert.notEqual(to, sent[0]);
      assert.equal(pool.modelStatus("hang")[0]?.threaded !== undefined, true);
      // Sent after the retry on the same connection: it would wait behind a
      // retry run inline, and die with the worker.
      const out = await pool.execute<{ pid: number }>("hang", {}, {
        worker: to,
      });
      assert.equal(out.pid, before.get(to));
      ac.abort();
      await assert.rejects(poison, CancelledError);
      assert.equal(exits, 1);
    } finally {
      await pids.assertGone();
    }
  },
]);

Deno.test("Pool: inline poison calls (each scenario on its own pool, 3 at a time)", (t) =>
  concurrentSteps(t, scenarios, 3));
