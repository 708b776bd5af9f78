import assert from "node:assert/strict";
import { ConfigError, PluginError, SpillError } from "../src/errors.ts";
import { type Plugin, type PluginContext, PluginHost } from "../src/plugin.ts";
import { Pool, type PoolOptions } from "../src/pool.ts";
import type { Session } from "../src/session.ts";
import { reconnect } from "../plugins/reconnect.ts";
import { modelsDir, nextEvent, pidOf, PidTracker } from "./_pool_harness.ts";
import { recordingLogger } from "./_harness.ts";

Deno.test("PluginHost.resolve adds, replaces by name, removes and starts from nothing", () => {
  const defaults: Plugin[] = [{ name: "a" }, { name: "b" }, { name: "c" }];
  const names = (ps: Plugin[]) => ps.map((p) => p.name);
  assert.deepEqual(names(PluginHost.resolve(defaults)), ["a", "b", "c"]);
  assert.deepEqual(names(PluginHost.resolve(defaults, [{ name: "x" }])), [
    "a",
    "b",
    "c",
    "x",
  ]);
  const b2: Plugin = { name: "b", requires: [] };
  const replaced = PluginHost.resolve(defaults, [b2, { name: "y" }]);
  assert.deepEqual(names(replaced), ["a", "b", "c", "y"]);
  assert.equal(replaced[1], b2);
  assert.deepEqual(
    names(PluginHost.resolve(defaults, { remove: ["a", "c"] })),
    ["b"],
  );
  assert.deepEqual(
    names(
      PluginHost.resolve(defaults, { defaults: false, use: [{ name: "z" }] }),
    ),
    ["z"],
  );
  assert.deepEqual(
    names(PluginHost.resolve(defaults, { defaults: false })),
    [],
  );
  // A name that is no default (a typo) would leave the default in place.
  assert.throws(
    () => PluginHost.resolve(defaults, { remove: ["b", "nope"] }),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.message ===
        "Cannot start pool: plugins.remove: 'nope' is not a default plugin (defaults: a, b, c)",
  );
});

Deno.test("PluginHost.check rejects missing requirements, duplicates and handler clashes", () => {
  assert.throws(
    () => new PluginHost([{ name: "a", requires: ["b"] }]).check(),
    /plugin 'a' requires plugin 'b'/,
  );
  assert.throws(
    () => new PluginHost([{ name: "a" }, { name: "a" }]).check(),
    ConfigError,
  );
  assert.throws(
    () =>
      new PluginHost([{ name: "a", handlers: { x: () => 1 } }, {
        name: "b",
        handlers: { x: () => 2 },
      }]).check(),
    /handler 'x' is registered by both 'a' and 'b'/,
  );
  new PluginHost([{ name: "a", requires: ["b"] }, { name: "b" }]).check();
});

Deno.test("PluginHost.run runs hooks in order and turns a throw into a PluginError", async () => {
  const calls: string[] = [];
  const reported: string[] = [];
  const host = new PluginHost([
    { name: "one", onPoolClose: () => void calls.push("one") },
    {
      name: "bad",
      onPoolClose: () => {
        throw new Error("boom");
      },
    },
    {
      name: "two",
      onPoolClose: async () => {
        await Promise.resolve();
        calls.push("two");
      },
    },
  ], { onError: (err) => reported.push(err.message) });
  // deno-lint-ignore no-explicit-any
  const errors = await host.run("onPoolClose", {} as any);
  assert.deepEqual(calls, ["one", "two"]);
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof PluginError);
  assert.deepEqual(reported, [
    "Cannot run hook onPoolClose of plugin 'bad': boom",
  ]);
});

function base(dir: string, extra: PoolOptions = {}): PoolOptions {
  return { workers: 1, modelsDir: dir, handleSignals: false, ...extra };
}

Deno.test("PluginHost message hooks pass a pyproxy error through and wrap anything else in a PluginError", async () => {
  const spill = new SpillError("Cannot spill message: maxBytes");
  const host = new PluginHost([
    {
      name: "onPurpose",
      onRequest: (msg) => {
        if (msg.cmd === "typed") throw spill;
        if (msg.cmd === "typedLater") return Promise.reject(spill);
      },
    },
    {
      name: "buggy",
      onRequest: (msg) => {
        if (msg.cmd === "bug") throw new TypeError("x is undefined");
      },
    },
  ]);
  const ctx = {} as Parameters<PluginHost["middleware"]>[0];
  const [onPurpose, buggy] = host.middleware(ctx);
  const session = {} as Session;
  assert.throws(
    () => onPurpose!.outgoing!({ cmd: "typed" }, session),
    (err) => err === spill,
  );
  await assert.rejects(
    Promise.resolve(onPurpose!.outgoing!({ cmd: "typedLater" }, session)),
    (err) => err === spill,
  );
  assert.throws(
    () => buggy!.outgoing!({ cmd: "bug" }, session),
    (err) =>
      err instanceof PluginError &&
      err.message ===
        "Cannot run hook onRequest of plugin 'buggy': x is undefined" &&
      err.cause instanceof TypeError,
  );
});

Deno.test("Pool runs plugin hooks in registration order around a worker's life", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    const log: string[] = [];
    const recorder = (tag: string): Plugin => ({
      name: `rec-${tag}`,
      onPoolStart: () => void log.push(`${tag}:poolStart`),
      onWorkerStart: (ev) =>
        void log.push(
          `${tag}:workerStart:${ev.worker.id}:${ev.worker.state}:${ev.restart}`,
        ),
      onSessionOpen: (ev) =>
        void log.push(`${tag}:sessionOpen:${ev.worker.id}`),
      onRequest: (msg) => {
        if (msg.cmd !== "executeModel") return;
        log.push(`${tag}:request`);
        const inner = msg.msg as Record<string, unknown>;
        return { ...msg, msg: { ...inner, x: (inner.x as number) * 10 } };
      },
      onReply: (msg) => {
        if (
          !("ok" in msg) || typeof msg.result !== "object" ||
          msg.result === null
        ) return;
        const result = msg.result as Record<string, unknown>;
        if (!("y" in result)) return;
        log.push(`${tag}:reply`);
        return { ...msg, result: { ...result, y: (result.y as number) + 1 } };
      },
      onWorkerExit: (ev) =>
        void log.push(`${tag}:workerExit:${ev.worker.id}:${ev.intentional}`),
      onSessionClose: () => void log.push(`${tag}:sessionClose`),
      onPoolClose: () => void log.push(`${tag}:poolClose`),
      onPoolClosed: () => void log.push(`${tag}:poolClosed`),
    });
    const pool = await Pool.start(
      base(dir.path, {
        plugins: { defaults: false, use: [recorder("a"), recorder("b")] },
      }),
    );
    pids.watch(pool);
    assert.deepEqual(pool.status().plugins, ["rec-a", "rec-b"]);
    await pool.addModel("doubler", { file: "doubler.py", options: { k: 2 } });
    // a multiplies x by 10, then b does: 2 * 100 = 200; replies: +1 by a, +1 by b.
    assert.deepEqual(await pool.execute("doubler", { x: 1 }), { y: 202 });
    await pool.close();
    assert.deepEqual(log, [
      "a:poolStart",
      "b:poolStart",
      "a:workerStart:w1:starting:false",
      "b:workerStart:w1:starting:false",
      "a:sessionOpen:w1",
      "b:sessionOpen:w1",
      "a:request",
      "b:request",
      "a:reply",
      "b:reply",
      "a:poolClose",
      "b:poolClose",
      "a:sessionClose",
      "b:sessionClose",
      "a:workerExit:w1:true",
      "b:workerExit:w1:true",
      "a:poolClosed",
      "b:poolClosed",
    ]);
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool fails only the request whose plugin hook threw, with a PluginError naming it", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    let armed = false;
    const flaky: Plugin = {
      name: "flaky",
      onRequest(msg) {
        if (armed && msg.cmd === "executeModel") throw new Error("no thanks");
      },
      onWorkerStart() {
        throw new Error("start hook broke");
      },
    };
    const pluginErrors: string[] = [];
    const { logger, entries } = recordingLogger();
    const pool = await Pool.start(
      base(dir.path, { plugins: [flaky], logger }),
    );
    pids.watch(pool);
    try {
      pool.on((ev) =>
        ev.type === "plugin-error" &&
        pluginErrors.push(`${ev.plugin}:${ev.hook}`)
      );
      await pool.addModel("doubler", { file: "doubler.py" });
      armed = true;
      await assert.rejects(
        pool.execute("doubler", { x: 1 }),
        (err: unknown) => {
          assert.ok(err instanceof PluginError, String(err));
          assert.match(err.message, /flaky/);
          assert.match(err.message, /no thanks/);
          return true;
        },
      );
      armed = false;
      assert.deepEqual(await pool.execute("doubler", { x: 1 }), { y: 2 });
      // A throwing lifecycle hook is reported, and the worker still comes up after a restart.
      const back = nextEvent(pool, "worker-state", (ev) => ev.to === "ready");
      Deno.kill(pidOf(pool, "w1"), "SIGKILL");
      await back;
      assert.deepEqual(pluginErrors, ["flaky:onWorkerStart"]);
      // The log has the plugin's own error (the cause, with its stack), not only the message.
      const hookLogs = entries.filter(([level, , p]) =>
        level === "warn" && p?.hook === "onWorkerStart"
      ).map(([, , p]) => p!);
      assert.ok(hookLogs.length >= 1);
      const cause = (hookLogs[0]!.error as Error).cause as Error;
      assert.equal(cause.message, "start hook broke");
      assert.match(String(cause.stack), /plugin_test\.ts/);
      assert.deepEqual(await pool.execute("doubler", { x: 2 }), { y: 4 });
    } finally {
      await pool.close();
    }
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool awaits a message hook's awaitable that is not a Promise", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    const rewrite: Plugin = {
      name: "rewrite",
      // A thenable (another library's awaitable): its value is the message.
      onRequest: (msg) =>
        msg.cmd !== "executeModel" ? undefined : {
          then(resolve: (m: typeof msg) => void) {
            setTimeout(() => resolve({ ...msg, msg: { x: 10 } }), 1);
          },
        } as unknown as Promise<typeof msg>,
    };
    let hang = false;
    const stuck: Plugin = {
      name: "stuck",
      // One that never settles: bounded by hookTimeout like a Promise.
      onRequest: (msg) =>
        hang && msg.cmd === "executeModel"
          ? { then() {} } as unknown as Promise<typeof msg>
          : undefined,
    };
    await using pool = await Pool.start(
      base(dir.path, { plugins: [rewrite, stuck], hookTimeout: 300 }),
    );
    pids.watch(pool);
    await pool.addModel("doubler", { file: "doubler.py" });
    assert.deepEqual(await pool.execute("doubler", { x: 1 }), { y: 20 });
    hang = true;
    await assert.rejects(
      pool.execute("doubler", { x: 1 }, { timeout: 10_000 }),
      (err: unknown) => err instanceof PluginError && /stuck/.test(err.message),
    );
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool default plugins can be replaced and removed", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    // A plugin named "reconnect" replaces the default policy: here, one that never restarts.
    const exits: string[] = [];
    const exited = Promise.withResolvers<void>();
    const never: Plugin = {
      name: "reconnect",
      onWorkerExit: (ev) => {
        exits.push(ev.reason);
        exited.resolve();
      },
    };
    const pool = await Pool.start(
      base(dir.path, { workers: 2, plugins: [never] }),
    );
    pids.watch(pool);
    try {
      assert.deepEqual(pool.status().plugins, [
        "reconnect",
        "spillover",
        "sharedCache",
      ]);
      pool.killWorker("w1", "test kill");
      await exited.promise;
      assert.deepEqual(exits, ["test kill"]);
      const w1 = pool.status().workers[0]!;
      assert.equal(w1.state, "stopped");
      assert.equal(w1.restarts, 0);
      assert.equal(await pool.request("ping"), "pong");
    } finally {
      await pool.close();
    }
    const bare = await Pool.start(
      base(dir.path, { plugins: { remove: ["spillover", "sharedCache"] } }),
    );
    pids.watch(bare);
    assert.deepEqual(bare.status().plugins, ["reconnect"]);
    await bare.close();
    const none = await Pool.start(
      base(dir.path, { plugins: { defaults: false, use: [reconnect()] } }),
    );
    pids.watch(none);
    assert.deepEqual(none.status().plugins, ["reconnect"]);
    await none.close();
  } finally {
    await pids.assertGone();
  }
});

Deno.test("PluginHost.run fails a lifecycle hook that does not settle within hookTimeout and goes on", async () => {
  const calls: string[] = [];
  const reported: string[] = [];
  let lateReject: (err: Error) => void = () => {};
  const host = new PluginHost([
    { name: "stuck", onPoolClose: () => new Promise<void>(() => {}) },
    {
      name: "late",
      onPoolClose: () =>
        new Promise<void>((_, reject) => {
          lateReject = reject;
        }),
    },
    { name: "after", onPoolClose: () => void calls.push("after") },
  ], { hookTimeout: 30, onError: (err) => reported.push(err.message) });
  // deno-lint-ignore no-explicit-any
  const errors = await host.run("onPoolClose", {} as any);
  assert.deepEqual(calls, ["after"]);
  assert.deepEqual(reported, [
    "Cannot run hook onPoolClose of plugin 'stuck': it did not settle within 30 ms (hookTimeout)",
    "Cannot run hook onPoolClose of plugin 'late': it did not settle within 30 ms (hookTimeout)",
  ]);
  assert.ok(errors.every((e) => e instanceof PluginError));
  assert.deepEqual(errors[0]!.details, {
    plugin: "stuck",
    hook: "onPoolClose",
    timeoutMs: 30,
  });
  // A hook that fails after its time is up is not reported twice (nor unhandled).
  lateReject(new Error("too late"));
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(reported.length, 2);
});

Deno.test("PluginHost message hooks that do not settle within hookTimeout fail their message with a PluginError", async () => {
  const host = new PluginHost([{
    name: "slow",
    onRequest: (msg) =>
      msg.cmd === "never" ? new Promise<void>(() => {}) : Promise.resolve(),
  }], { hookTimeout: 20 });
  const [slow] = host.middleware({} as Parameters<PluginHost["middleware"]>[0]);
  const session = {} as Session;
  await assert.rejects(
    Promise.resolve(slow!.outgoing!({ cmd: "never" }, session)),
    (err: unknown) =>
      err instanceof PluginError && err.code === "PLUGIN_FAILED" &&
      err.message ===
        "Cannot run hook onRequest of plugin 'slow': it did not settle within 20 ms (hookTimeout)",
  );
  assert.deepEqual(
    await slow!.outgoing!({ cmd: "fine" }, session),
    { cmd: "fine" },
  );
});

Deno.test("Pool goes on past plugin hooks that never settle: start, a call, a restart and close all finish", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    let holdRequests = false;
    let holdExit = true;
    const never = () => new Promise<void>(() => {});
    const stuck: Plugin = {
      name: "stuck",
      onPoolStart: never,
      onWorkerStart: (ev) => ev.restart ? never() : undefined,
      onRequest: (msg) =>
        holdRequests && msg.cmd === "executeModel" ? never() : undefined,
      onWorkerExit: () => holdExit ? never() : undefined,
      onPoolClose: never,
    };
    const pluginErrors: string[] = [];
    const pool = await Pool.start(
      base(dir.path, { plugins: [reconnect(), stuck], hookTimeout: 150 }),
    );
    pids.watch(pool);
    try {
      // Only the stuck plugin's: on a loaded machine another plugin's hook
      // may pass the short hookTimeout of this test too.
      pool.on((ev) =>
        ev.type === "plugin-error" && ev.plugin === "stuck" &&
        pluginErrors.push(`${ev.plugin}:${ev.hook}`)
      );
      await pool.addModel("doubler", { file: "doubler.py" });
      holdRequests = true;
      await assert.rejects(
        pool.execute("doubler", { x: 1 }),
        (err: unknown) =>
          err instanceof PluginError &&
          /did not settle within 150 ms/.test(err.message),
      );
      holdRequests = false;
      // The hung message hook no longer holds the worker's later messages back.
      assert.deepEqual(await pool.execute("doubler", { x: 1 }), { y: 2 });
      // A crash: onWorkerExit and the restart's onWorkerStart hang, and the worker still comes back.
      const back = nextEvent(pool, "worker-state", (ev) => ev.to === "ready");
      Deno.kill(pidOf(pool, "w1"), "SIGKILL");
      await back;
      assert.deepEqual(await pool.execute("doubler", { x: 3 }), { y: 6 });
      holdExit = false;
    } finally {
      await pool.close();
    }
    // (onPoolStart's timeout came before the listener: Pool.start resolving shows it.)
    assert.deepEqual(pluginErrors.sort(), [
      "stuck:onPoolClose",
      "stuck:onWorkerExit",
      "stuck:onWorkerStart",
    ]);
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool.start refuses a hookTimeout that is not a number > 0", async () => {
  for (const hookTimeout of [0, -1, "10" as unknown as number]) {
    await assert.rejects(
      Pool.start({ workers: 1, handleSignals: false, hookTimeout }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message === "Cannot start pool: hookTimeout: expected a number > 0",
    );
  }
});

Deno.test("Pool: a plugin recycling its worker with restartWorker is not counted as crashes (the slot is never marked failed)", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  let ctx: PluginContext | undefined;
  const exits: boolean[] = [];
  const recycler: Plugin = {
    name: "recycler",
    onPoolStart: (c) => void (ctx = c),
    onWorkerExit: (ev) => void exits.push(ev.intentional),
  };
  // reconnect with maxCrashes 2 (its default is 5): fewer restarts show it.
  const pool = await Pool.start(
    base(dir.path, { plugins: [reconnect({ maxCrashes: 2 }), recycler] }),
  );
  pids.watch(pool);
  try {
    await pool.addModel("doubler", { file: "doubler.py" });
    // More recycles in a minute than reconnect's maxCrashes (2) allows crashes.
    for (let i = 0; i < 4; i++) {
      const back = nextEvent(pool, "worker-state", (ev) => ev.to === "ready");
      assert.equal(ctx!.restartWorker("w1", { reason: "recycle" }), true);
      await back;
      assert.deepEqual(await pool.execute("doubler", { x: i }), { y: 2 * i });
    }
    assert.equal(pool.status().workers[0]!.state, "ready");
    assert.deepEqual(exits, Array(4).fill(true));
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("PluginContext.closing is true as soon as pool.close() starts, while close() lets a model operation finish", async () => {
  await using dir = await modelsDir();
  await Deno.writeTextFile(
    `${dir.path}/slow_load.py`,
    `import time


class SlowLoad:
    def __init__(self, options):
        time.sleep(options.get("s", 0))

    def execute(self, msg):
        return {}
`,
  );
  const pids = new PidTracker();
  let ctx: PluginContext | undefined;
  const sent = Promise.withResolvers<void>();
  const spy: Plugin = {
    name: "spy",
    onPoolStart: (c) => void (ctx = c),
    onRequest(msg) {
      if (msg.cmd === "addModel") sent.resolve();
    },
  };
  const pool = await Pool.start(
    base(dir.path, { workers: 1, plugins: { defaults: false, use: [spy] } }),
  );
  pids.watch(pool);
  try {
    const loading = pool.addModel("slow", {
      file: "slow_load.py",
      options: { s: 1 },
    }).then(() => "loaded", (err: Error) => err.name);
    await sent.promise;
    // close() first lets the load finish (its grace): a policy asked
    // then must already see the pool closing.
    const closed = pool.close();
    assert.equal(ctx!.closing, true);
    await closed;
    assert.equal(await loading, "loaded");
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool.start warns about a plugin's on... method that is no hook (a typo it would never run), and starts", async () => {
  const { logger, entries } = recordingLogger();
  const typo = {
    name: "typo",
    onRequst() {},
    // Not on + a capital, or not a function: a plugin's own.
    once() {},
    onCount: 3,
  } as Plugin;
  await using pool = await Pool.start({
    workers: 1,
    handleSignals: false,
    logger,
    plugins: { defaults: false, use: [typo] },
  });
  assert.equal(pool.status().plugins.length, 1);
  const warned = entries.filter(([level, message]) =>
    level === "warn" && message.startsWith("Plugin {plugin}")
  );
  assert.equal(warned.length, 1, JSON.stringify(entries));
  assert.equal(warned[0]![2]!.plugin, "typo");
  assert.match(
    String(warned[0]![2]!.problem),
    /^onRequst is no hook, so it would never run \(did you mean onRequest\?\)/,
  );
});
