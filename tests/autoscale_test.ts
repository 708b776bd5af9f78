/**
 * `autoscale()` on real pools of real Python workers: growth under a burst
 * of held calls up to `max`, shrinking to `min` when idle, the cooldown, a
 * manual resize that moves the bounds and holds the plugin, `close()` during
 * a scale-up, and its options' validation.
 */
import assert from "node:assert/strict";
import { autoscale, type AutoscaleOptions } from "../plugins/autoscale.ts";
import { reconnect } from "../plugins/reconnect.ts";
import { ConfigError } from "../src/errors.ts";
import type { Logger } from "../src/logger.ts";
import type { Plugin } from "../src/plugin.ts";
import { Pool, type PoolEvent } from "../src/pool.ts";
import {
  assertGone,
  modelsDir,
  nextEvent,
  PidTracker,
} from "./_pool_harness.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

/** Held calls: each waits until `msg.path` exists (or 30 s), then answers. */
const GATE = `import os
import time


class Gate:
    def __init__(self, options):
        time.sleep(options.get("loadSeconds", 0))

    def execute(self, msg):
        deadline = time.monotonic() + 30
        while not os.path.exists(msg["path"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"pid": os.getpid()}
`;

type Entry = { level: string; message: string; props: Record<string, unknown> };

/** A logger that keeps its records and tells waiters when one matches. */
function watchedLogger(): {
  logger: Logger;
  entries: Entry[];
  next(
    level: string,
    text: string,
    props?: Record<string, unknown>,
  ): Promise<Entry>;
} {
  const entries: Entry[] = [];
  const waiters: Array<(e: Entry) => boolean> = [];
  const at = (level: string) => (message: string, props = {}) => {
    const entry = { level, message, props };
    entries.push(entry);
    for (const w of [...waiters]) {
      if (w(entry)) waiters.splice(waiters.indexOf(w), 1);
    }
  };
  return {
    entries,
    logger: {
      trace: at("trace"),
      debug: at("debug"),
      info: at("info"),
      warn: at("warn"),
      error: at("error"),
      fatal: at("fatal"),
    },
    next(level, text, props = {}) {
      // A record of `level` whose message has `text` and whose props hold
      // `props` (a template such as "Idle at min {min}" says the same for
      // every value: only its props tell one spell from another).
      const fits = (e: Entry) =>
        e.level === level && e.message.includes(text) &&
        Object.entries(props).every(([k, v]) => e.props[k] === v);
      const seen = entries.find(fits);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(match), 1);
          reject(new Error(`no ${level} record "${text}" within 20 s`));
        }, 20_000);
        const match = (e: Entry) => {
          if (!fits(e)) return false;
          clearTimeout(timer);
          resolve(e);
          return true;
        };
        waiters.push(match);
      });
    },
  };
}

/** The `resize` events, as `from->to by` strings. */
function resizes(events: PoolEvent[]): string[] {
  return events.flatMap((e) =>
    e.type === "resize" ? [`${e.from}->${e.to} ${e.by}`] : []
  );
}

/** Resolves with the `resize` event that takes the pool to `to` (listening starts now). */
function resizedTo(pool: Pool, to: number): Promise<PoolEvent> {
  return nextEvent(pool, "resize", (e) => e.to === to, 20_000);
}

/**
 * Python server processes of this process serving `dir` (their `--path`):
 * test files running in parallel share the process.
 */
function serversOf(dir: string): number[] {
  const out: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (fields[0] === "Z" || Number(fields[1]) !== Deno.pid) continue;
      const cmd = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`);
      const args = cmd.split("\0");
      if (
        args.some((a) => a.includes("pyproxy_server")) && args.includes(dir)
      ) out.push(Number(entry.name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

interface Setup {
  workers: number;
  scale: AutoscaleOptions;
  loadSeconds?: number;
  extra?: Plugin[];
  shutdownGrace?: number;
}

/**
 * A pool on a temp models dir with the gate model loaded, reconnect (no
 * heartbeat) and `autoscale(scale)` with a watched logger; `body` runs with
 * it, then the pool is closed and every worker process must be gone.
 */
async function withPool(
  setup: Setup,
  body: (t: {
    pool: Pool;
    plugin: ReturnType<typeof autoscale>;
    log: ReturnType<typeof watchedLogger>;
    events: PoolEvent[];
    dir: string;
    release(): Promise<void>;
  }) => Promise<void>,
): Promise<void> {
  await using dir = await modelsDir();
  await Deno.writeTextFile(`${dir.path}/gate.py`, GATE);
  const log = watchedLogger();
  const plugin = autoscale({ ...setup.scale, logger: log.logger });
  const pids = new PidTracker();
  const pool = await Pool.start({
    workers: setup.workers,
    modelsDir: dir.path,
    handleSignals: false,
    shutdownGrace: setup.shutdownGrace ?? 5000,
    plugins: [
      reconnect({ heartbeatInterval: 0, backoff: { initial: 10, max: 50 } }),
      plugin,
      ...(setup.extra ?? []),
    ],
  });
  pids.watch(pool);
  const events: PoolEvent[] = [];
  pool.on((e) => events.push(e));
  try {
    await pool.addModel("gate", {
      file: "gate.py",
      options: { loadSeconds: setup.loadSeconds ?? 0 },
    });
    await body({
      pool,
      plugin,
      log,
      events,
      dir: dir.path,
      release: () => Deno.writeTextFile(`${dir.path}/open`, ""),
    });
  } finally {
    await Deno.writeTextFile(`${dir.path}/open`, "");
    await pool.close();
    await pids.assertGone();
  }
}

/**
 * The scenarios of this file on pools, each on a pool of its own: they wait
 * on sample intervals, cooldowns, holds and resizes more than on the CPU, so
 * the file runs them a few at a time (one test, a step each). Every count
 * of processes is of a scenario's own directory.
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "autoscale grows the pool by one worker at a time under a burst of held calls, up to max and not beyond",
  async () => {
    await withPool({
      workers: 1,
      scale: {
        max: 3,
        upAfterMs: 30,
        downAfterMs: 600_000,
        cooldownMs: 0,
        sampleInterval: 10,
      },
    }, async ({ pool, plugin, log, events, dir, release }) => {
      assert.deepEqual(plugin.bounds, { min: 1, max: 3 });
      const path = `${dir}/open`;
      const calls = Array.from(
        { length: 12 },
        () => pool.execute("gate", { path }),
      );
      // Busy at 3: said once the third worker serves and the burst still holds.
      const atMax = await log.next("info", "Busy at max");
      assert.equal(atMax.props.max, 3);
      assert.deepEqual(resizes(events), [
        "1->2 autoscale",
        "2->3 autoscale",
      ]);
      assert.deepEqual(pool.status().workers.map((w) => w.state), [
        "ready",
        "ready",
        "ready",
      ]);
      const up = log.entries.filter((e) => e.message.startsWith("Scaling up"));
      assert.deepEqual(up.map((e) => [e.props.from, e.props.to]), [[1, 2], [
        2,
        3,
      ]]);
      assert.match(
        String(up[0]!.props.reason),
        /^12 calls in flight on 1 ready workers \(12 each, upInFlight 2\) for \d+ ms$/,
      );
      // The event carries the same reason.
      const first = events.find((e) => e.type === "resize");
      assert.equal(
        first?.type === "resize" ? first.reason : undefined,
        up[0]!.props.reason,
      );
      await release();
      await Promise.all(calls);
      assert.equal(plugin.stats.up, 2);
      assert.equal(plugin.stats.failed, 0);
    });
  },
]);

scenarios.push([
  "autoscale shrinks an idle pool one worker at a time down to min and not below",
  async () => {
    await withPool({
      workers: 3,
      scale: { min: 1, downAfterMs: 30, cooldownMs: 0, sampleInterval: 10 },
    }, async ({ pool, plugin, log, events, dir, release }) => {
      const atMin = await log.next("debug", "Idle at min");
      assert.equal(atMin.props.min, 1);
      assert.deepEqual(resizes(events), [
        "3->2 autoscale",
        "2->1 autoscale",
      ]);
      assert.equal(pool.status().workers.length, 1);
      assert.match(
        String(
          log.entries.find((e) => e.message.startsWith("Scaling down"))?.props
            .reason,
        ),
        /^0 calls in flight on 3 ready workers \(0 each, downInFlight 0\.5\) for \d+ ms$/,
      );
      assert.equal(plugin.stats.down, 2);
      // It still serves.
      await release();
      assert.ok(await pool.execute("gate", { path: `${dir}/open` }));
    });
  },
]);

scenarios.push([
  "autoscale waits cooldownMs after a resize ends before the next one",
  async () => {
    const cooldownMs = 800;
    await withPool({
      workers: 1,
      scale: { max: 3, upAfterMs: 20, cooldownMs, sampleInterval: 10 },
    }, async ({ pool, dir, release }) => {
      const path = `${dir}/open`;
      const calls = Array.from(
        { length: 12 },
        () => pool.execute("gate", { path }),
      );
      const w2Ready = nextEvent(
        pool,
        "worker-state",
        (e) => e.worker === "w2" && e.to === "ready",
        20_000,
      ).then(() => Date.now());
      const third = resizedTo(pool, 3).then(() => Date.now());
      const gap = (await third) - (await w2Ready);
      // A lower bound only: a loaded machine makes it longer, never shorter.
      assert.ok(
        gap >= cooldownMs,
        `next resize ${gap} ms after the last ended`,
      );
      await release();
      await Promise.all(calls);
    });
  },
]);

scenarios.push([
  "autoscale respects a manual resize: it moves the bounds and holds for manualHoldMs after it",
  async () => {
    const manualHoldMs = 700;
    await withPool({
      workers: 1,
      scale: {
        min: 1,
        max: 2,
        upAfterMs: 20,
        downAfterMs: 20,
        cooldownMs: 0,
        manualHoldMs,
        sampleInterval: 10,
      },
    }, async ({ pool, plugin, log, events }) => {
      const lastReady = nextEvent(
        pool,
        "worker-state",
        (e) => e.worker === "w3" && e.to === "ready",
        20_000,
      ).then(() => Date.now());
      const shrink = nextEvent(
        pool,
        "resize",
        (e) => e.by === "autoscale",
        20_000,
      ).then((e) => [e, Date.now()] as const);
      await pool.resize(3);
      assert.deepEqual(plugin.bounds, { min: 1, max: 3 });
      assert.equal(plugin.stats.manual, 1);
      const [ev, at] = await shrink;
      const held = at - (await lastReady);
      assert.ok(
        held >= manualHoldMs,
        `shrank ${held} ms after the manual resize`,
      );
      assert.deepEqual(
        ev.type === "resize" ? [ev.from, ev.to] : undefined,
        [3, 2],
      );
      assert.deepEqual(resizes(events).slice(0, 2), [
        "1->3 null",
        "3->2 autoscale",
      ]);
      assert.ok(
        log.entries.some((e) =>
          e.message.startsWith("Resize from {from} to {to} workers by {by}") &&
          e.props.by === "pool.resize"
        ),
      );
      // A manual resize below min lowers it.
      await pool.resize(1);
      assert.deepEqual(plugin.bounds, { min: 1, max: 3 });
    });
  },
]);

scenarios.push([
  "autoscale brings a pool started outside its bounds into them at once",
  async () => {
    await withPool({
      workers: 1,
      scale: { min: 2, max: 4, cooldownMs: 600_000, sampleInterval: 10 },
    }, async ({ pool, events }) => {
      if (pool.status().workers.length < 2) await resizedTo(pool, 2);
      assert.deepEqual(resizes(events), ["1->2 autoscale"]);
    });
  },
]);

scenarios.push([
  "close() during an autoscale scale-up leaves no worker process behind",
  async () => {
    for (const when of ["at the resize", "while the new worker loads"]) {
      let served = "";
      let added: string | undefined;
      const loading = Promise.withResolvers<void>();
      const spy: Plugin = {
        name: "spy",
        onRequest(msg, mc) {
          if (msg.cmd === "addModel" && mc.worker.id === added) {
            loading.resolve();
          }
        },
      };
      let closed = false;
      await withPool({
        workers: 1,
        // Loading the model takes a while: the new worker is mid-start.
        loadSeconds: 0.5,
        scale: {
          max: 2,
          upAfterMs: 20,
          cooldownMs: 0,
          sampleInterval: 10,
        },
        extra: [spy],
        // The held calls are cut short at once.
        shutdownGrace: 0,
      }, async ({ pool, plugin, log, dir }) => {
        served = dir;
        assert.equal(serversOf(dir).length, 1);
        const path = `${dir}/open`;
        const calls = Array.from(
          { length: 6 },
          () => pool.execute("gate", { path }).catch((e: Error) => e.name),
        );
        const addedEv = nextEvent(pool, "worker-added", () => true, 20_000);
        await resizedTo(pool, 2);
        added = (await addedEv).worker;
        if (when !== "at the resize") await loading.promise;
        await pool.close();
        closed = true;
        assert.deepEqual(
          pool.status().workers.map((w) => w.state),
          pool.status().workers.map(() => "stopped"),
        );
        assert.equal(plugin.stats.up, 1, when);
        // Cut short by close(): not a failure of the policy's.
        assert.equal(plugin.stats.failed, 0, when);
        assert.deepEqual(log.entries.filter((e) => e.level === "warn"), []);
        assert.deepEqual(
          (await Promise.all(calls)).filter((r) => typeof r === "string"),
          Array(6).fill("ShuttingDownError"),
        );
      });
      assert.ok(closed);
      // Every process spawned for the pool, known to it or not, has exited.
      await assertGone(serversOf(served));
    }
  },
]);

scenarios.push([
  "autoscale backs off after scale-ups that fail in a row (a model that cannot load on a new worker)",
  async () => {
    const cooldownMs = 50;
    await withPool({
      workers: 1,
      scale: { max: 3, upAfterMs: 20, cooldownMs, sampleInterval: 10 },
    }, async ({ pool, plugin, log, dir }) => {
      // Loaded on w1; a new worker's import fails once the flag file exists.
      await Deno.writeTextFile(
        `${dir}/flaky.py`,
        `import os
if os.path.exists(os.path.join(os.path.dirname(__file__), "FLAG")):
    raise ImportError("FLAG is set")


class Flaky:
    def __init__(self, options):
        pass

    def execute(self, msg):
        return {}
`,
      );
      await pool.addModel("flaky", { file: "flaky.py" });
      await Deno.writeTextFile(`${dir}/FLAG`, "");
      const path = `${dir}/open`;
      const calls = Array.from(
        { length: 6 },
        () => pool.execute("gate", { path }),
      );
      const failures = async (n: number) => {
        const deadline = Date.now() + 20_000;
        for (;;) {
          const seen = log.entries.filter((e) =>
            e.level === "warn" && e.message.startsWith("Cannot scale")
          );
          if (seen.length >= n) return seen;
          assert.ok(Date.now() < deadline, `no ${n} failed scale-ups`);
          await new Promise((r) => setTimeout(r, 10));
        }
      };
      const [first, second] = await failures(2);
      // The first waits the cooldown, as any resize; the next one twice 1 s
      // (the cooldown being shorter): not a doomed worker every cooldown.
      assert.deepEqual(
        [first!.props.failures, first!.props.retryMs],
        [1, cooldownMs],
      );
      assert.deepEqual([second!.props.failures, second!.props.retryMs], [
        2,
        2000,
      ]);
      assert.match(String(second!.props.message), /ImportError: FLAG is set/);
      assert.equal(plugin.stats.failed, 2);
      // Operators see it: failed scale-ups, and the back-off they caused.
      const st = plugin.status();
      assert.equal(st.stats?.failedUp, 2);
      assert.equal(st.backoff?.failures, 2);
      assert.equal(st.lastDecision?.outcome, "failed");
      const series = (name: string) =>
        pool.pluginMetrics().find((m) =>
          m.name === name && m.labels?.direction !== "down"
        )?.value;
      assert.equal(series("pyproxy_autoscale_failed_resizes_total"), 2);
      assert.equal(series("pyproxy_autoscale_up_backoff_failures"), 2);
      // The pool stays as it was, and serves.
      assert.deepEqual(pool.status().workers.map((w) => w.id), ["w1"]);
      await Deno.remove(`${dir}/FLAG`);
      await Deno.writeTextFile(path, "");
      await Promise.all(calls);
    });
  },
]);

scenarios.push([
  "autoscale does not shrink a pool whose workers hold parked streams (readers that paused): it would cut them short",
  async () => {
    await withPool({
      workers: 2,
      // At min 2 until the streams park: an idle pool at min 1 could shrink
      // before they start (a slow load on a busy machine took past downAfterMs,
      // and the streams pinned to w2 failed: "worker w2 is draining").
      scale: { min: 2, downAfterMs: 30, cooldownMs: 0, sampleInterval: 10 },
      shutdownGrace: 0,
    }, async ({ pool, plugin, log, events, dir }) => {
      await Deno.writeTextFile(
        `${dir}/counter.py`,
        `class Counter:
    def __init__(self, options):
        pass

    def execute(self, msg):
        for i in range(msg["n"]):
            yield i
`,
      );
      await pool.addModel("counter", { file: "counter.py" });
      // Two streams a worker, each read once, then their readers pause: the
      // model runs a window ahead and the streams park.
      const streams = ["w1", "w1", "w2", "w2"].map((worker) =>
        pool.executeStream<number>("counter", { n: 200 }, { worker })
      );
      for (const s of streams) assert.equal((await s.next()).value, 0);
      const deadline = Date.now() + 20_000;
      while (pool.status().parked < 4) {
        assert.ok(Date.now() < deadline, "the streams did not park");
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(pool.status().inFlight, 0);
      assert.deepEqual(pool.setScaleBounds({ min: 1 }), {
        autoscale: { min: 1, max: 4 },
      });
      // Many samples later (each 10 ms or more apart: past downAfterMs), no
      // shrink: the pool is not idle while its workers hold the streams.
      const seen = plugin.stats.samples;
      while (plugin.stats.samples < seen + 30) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.deepEqual(resizes(events), []);
      const read = await Promise.all(streams.map(async (s) => {
        let n = 1;
        for await (const _ of s) n++;
        return n;
      }));
      assert.deepEqual(read, [200, 200, 200, 200]);
      // Once they are read, the idle pool shrinks as usual: idle at min 1.
      // Not any "Idle at min" record: the pool idled at min 2 before the
      // streams started when loading counter took past downAfterMs (a busy
      // machine), and that old record answered at once, before the shrink.
      await log.next("debug", "Idle at min", { min: 1 });
      assert.deepEqual(resizes(events), ["2->1 autoscale"]);
    });
  },
]);

Deno.test("autoscale refuses bad options with a ConfigError naming the field", () => {
  const cases: Array<[unknown, string]> = [
    [{ min: 0 }, "min: expected an integer from 1 to 1024 (got 0)"],
    [{ max: 1.5 }, "max: expected an integer from 1 to 1024 (got 1.5)"],
    [{ min: 4, max: 2 }, "max: expected at least min (4) (got 2)"],
    [{ max: 2000 }, "max: expected an integer from 1 to 1024 (got 2000)"],
    [{ upInFlight: 0 }, "upInFlight: expected a number > 0 (got 0)"],
    [{ downInFlight: -1 }, "downInFlight: expected a number >= 0 (got -1)"],
    [
      { upInFlight: 1, downInFlight: 1 },
      "downInFlight: expected less than upInFlight (1) (got 1)",
    ],
    [
      { upAfterMs: -5 },
      "upAfterMs: expected a number of milliseconds >= 0 (got -5)",
    ],
    [
      { downAfterMs: "60s" },
      'downAfterMs: expected a number of milliseconds >= 0 (got "60s")',
    ],
    [
      { cooldownMs: NaN },
      "cooldownMs: expected a number of milliseconds >= 0 (got NaN)",
    ],
    [{ step: 0 }, "step: expected an integer from 1 to 1024 (got 0)"],
    [
      { sampleInterval: 0 },
      "sampleInterval: expected a number from 1 to 2147483647 (got 0)",
    ],
    [
      { logger: console.log },
      "logger: expected a logger (an object with debug, info and warn methods; set from code only, not in pyproxy.json)",
    ],
    [
      { upAfter: 10 },
      "unknown option 'upAfter' (known: min, max, upInFlight, downInFlight, upAfterMs, downAfterMs, cooldownMs, step, manualHoldMs, sampleInterval; from code only, not in pyproxy.json: logger)",
    ],
    [[], "expected an options object"],
  ];
  for (const [options, message] of cases) {
    assert.throws(
      () => autoscale(options as AutoscaleOptions),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.equal(err.message, `Cannot create autoscale plugin: ${message}`);
        return true;
      },
    );
  }
  // Defaults and edge values pass.
  assert.equal(autoscale().name, "autoscale");
  assert.equal(
    autoscale({ min: 1, max: 1, downAfterMs: Infinity, upInFlight: 0.5 })
      .name,
    "autoscale",
  );
});

scenarios.push([
  "autoscale serves one pool at a time: a second Pool.start with the same instance is refused",
  async () => {
    await using dir = await modelsDir();
    const plugin = autoscale({ sampleInterval: 1000 });
    const options = {
      workers: 1,
      modelsDir: dir.path,
      handleSignals: false,
      plugins: { defaults: false, use: [plugin] },
    };
    const pids = new PidTracker();
    const pool = await Pool.start(options);
    pids.watch(pool);
    try {
      await assert.rejects(
        Pool.start(options),
        /Cannot start autoscale plugin: this instance already serves another pool/,
      );
      assert.deepEqual(plugin.bounds?.min, 1);
    } finally {
      await pool.close();
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "autoscale reports its bounds, target, state and counters through pool.pluginStatus() and pool.pluginMetrics()",
  async () => {
    await withPool({
      workers: 1,
      scale: {
        min: 1,
        max: 2,
        upAfterMs: 600_000,
        downAfterMs: 600_000,
        cooldownMs: 0,
        manualHoldMs: 600_000,
        sampleInterval: 10,
      },
    }, async ({ pool }) => {
      const st = pool.pluginStatus().autoscale as Record<string, unknown>;
      assert.deepEqual(
        {
          min: st.min,
          max: st.max,
          configured: st.configured,
          target: st.target,
          lastDecision: st.lastDecision,
          backoff: st.backoff,
        },
        {
          min: 1,
          max: 2,
          configured: { min: 1, max: 2 },
          target: 1,
          lastDecision: null,
          backoff: { failures: 0, retryInMs: 0 },
        },
      );
      assert.ok(typeof st.state === "string");
      // JSON-safe: what GET /v1/status sends is what the library sees.
      assert.deepEqual(JSON.parse(JSON.stringify(st)), st);
      // The other plugins report nothing: only autoscale is listed.
      assert.deepEqual(Object.keys(pool.pluginStatus()), ["autoscale"]);
      const metric = (name: string, labels?: Record<string, string>) =>
        pool.pluginMetrics().find((m) =>
          m.name === name &&
          JSON.stringify(m.labels ?? {}) === JSON.stringify(labels ?? {})
        )?.value;
      assert.equal(metric("pyproxy_autoscale_min_workers"), 1);
      assert.equal(metric("pyproxy_autoscale_max_workers"), 2);
      assert.equal(metric("pyproxy_autoscale_target_workers"), 1);
      assert.equal(metric("pyproxy_autoscale_scale_ups_total"), 0);
      assert.equal(
        metric("pyproxy_autoscale_failed_resizes_total", { direction: "up" }),
        0,
      );
      // One state at a time.
      assert.equal(
        pool.pluginMetrics().filter((m) =>
          m.name === "pyproxy_autoscale_state" && m.value === 1
        ).length,
        1,
      );
      // A manual resize is counted, holds the plugin, and moves max.
      await pool.resize(3);
      const held = pool.pluginStatus().autoscale as Record<string, unknown>;
      assert.equal(held.max, 3);
      assert.equal((held.stats as { manual: number }).manual, 1);
      assert.equal(metric("pyproxy_autoscale_manual_resizes_total"), 1);
      assert.equal(metric("pyproxy_autoscale_max_workers"), 3);
    });
  },
]);

scenarios.push([
  "autoscale setBounds sets the bounds at run time (null restores the configured one) and the pool follows",
  async () => {
    await withPool({
      workers: 1,
      scale: {
        min: 1,
        max: 2,
        upAfterMs: 600_000,
        downAfterMs: 600_000,
        cooldownMs: 0,
        manualHoldMs: 600_000,
        sampleInterval: 10,
      },
    }, async ({ pool, plugin, log }) => {
      // A manual resize moved max for ever: setBounds restores it, and the
      // pool is brought back within it, hold or not.
      await pool.resize(3);
      assert.deepEqual(plugin.bounds, { min: 1, max: 3 });
      const shrunk = resizedTo(pool, 2);
      assert.deepEqual(plugin.setBounds({ max: null }), { min: 1, max: 2 });
      assert.deepEqual(plugin.bounds, { min: 1, max: 2 });
      const ev = await shrunk;
      assert.equal(ev.type === "resize" ? ev.by : undefined, "autoscale");
      assert.ok(
        log.entries.some((e) =>
          e.level === "info" &&
          e.message.startsWith("Autoscale bounds set to {min} to {max}") &&
          e.props.max === 2 && e.props.fromMax === 3
        ),
      );
      // Through the pool, by plugin name; a min above the size grows it.
      const grown = resizedTo(pool, 3);
      assert.deepEqual(pool.setScaleBounds({ min: 3, max: 4 }), {
        autoscale: { min: 3, max: 4 },
      });
      await grown;
      const st = pool.pluginStatus().autoscale as Record<string, unknown>;
      assert.deepEqual([st.min, st.max], [3, 4]);
      assert.equal(
        (st.lastDecision as { to: number; outcome: string } | null)?.to,
        3,
      );
      // Refused bounds change nothing.
      const refused: Array<[unknown, string]> = [
        [
          { min: 0 },
          "Cannot set autoscale bounds: min: expected an integer from 1 to 1024, or null for the configured one (got 0)",
        ],
        [
          { max: 1.5 },
          "Cannot set autoscale bounds: max: expected an integer from 1 to 1024, or null for the configured one (got 1.5)",
        ],
        [
          { max: 2 },
          "Cannot set autoscale bounds: max: expected at least min (3) (got 2)",
        ],
        [
          { min: 5 },
          "Cannot set autoscale bounds: max: expected at least min (5) (got 4)",
        ],
      ];
      for (const [change, message] of refused) {
        assert.throws(
          () => plugin.setBounds(change as never),
          (err: unknown) => {
            assert.ok(err instanceof RangeError, String(err));
            assert.equal(err.message, message);
            return true;
          },
        );
      }
      assert.deepEqual(plugin.bounds, { min: 3, max: 4 });
      // Both back to the configured ones.
      const back = resizedTo(pool, 2);
      assert.deepEqual(plugin.setBounds({ min: null, max: null }), {
        min: 1,
        max: 2,
      });
      await back;
    });
    // Before its pool starts there is nothing to bound.
    assert.throws(
      () => autoscale().setBounds({ max: 2 }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message ===
          "Cannot set autoscale bounds: the plugin serves no pool yet (give min and max to autoscale())",
    );
    assert.deepEqual(autoscale().status(), {});
    assert.deepEqual(autoscale().metrics(), []);
  },
]);

Deno.test("autoscale, each scenario on a pool of its own (3 at a time)", (t) =>
  concurrentSteps(t, scenarios, 3));
