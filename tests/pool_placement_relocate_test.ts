/**
 * Placement's bound on a model that crashes the workers it is placed on
 * (`PoolOptions.placement`): moved off a failed slot at most
 * `maxRelocations` times, then out of service (`ModelUnavailableError`)
 * until an update, while the other workers and models serve on. Real
 * Python workers, a restart policy that gives up after two crashes.
 */
import assert from "node:assert/strict";
import {
  ModelUnavailableError,
  NoWorkerError,
  TimeoutError,
  WorkerCrashedError,
} from "../src/errors.ts";
import type { Plugin, PluginContext } from "../src/plugin.ts";
import {
  type PlacementOptions,
  Pool,
  type PoolEvent,
  type PoolOptions,
} from "../src/pool.ts";
import { reconnect } from "../plugins/reconnect.ts";
import { createGateway } from "../src/gateway/app.ts";
import { describeError } from "../src/gateway/error_response.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  readyAgain,
} from "./_pool_harness.ts";

/**
 * Crashes its worker (`os._exit(3)`) on a call with `msg.crash`, and on
 * load once the file `options.crashOnLoad` exists; else answers its pid.
 */
const CRASHER = `
import os

class Crasher:
    def __init__(self, options):
        gate = options.get("crashOnLoad")
        if gate and os.path.exists(gate):
            os._exit(3)

    def execute(self, msg):
        if msg.get("crash"):
            os._exit(3)
        return {"pid": os.getpid()}
`;

type Pid = { pid: number };

/**
 * For the tests whose crashing calls come just after a replay: the crash
 * quarantine (`loadCrashWindow`, not what placement's bound is) then
 * suspected the model and held a replay back from calls for its whole 3 s
 * window, one such hold in each (16 s of the file's ~27).
 */
const NO_QUARANTINE = { loadCrashWindow: 0 };

/**
 * A pool of `workers` whose restart policy gives up on a slot at its
 * second crash within a minute and never revives it on its own; a plugin
 * hands out the plugin context (to revive a slot).
 */
function options(
  dir: string,
  workers: number,
  extra: PoolOptions = {},
): { options: PoolOptions; ctx: () => PluginContext } {
  let ctx: PluginContext | undefined;
  const grab: Plugin = {
    name: "grab",
    onPoolStart(c) {
      ctx = c;
    },
  };
  return {
    options: {
      workers,
      modelsDir: dir,
      handleSignals: false,
      plugins: [
        reconnect({
          backoff: { initial: 10, max: 20 },
          heartbeatInterval: 0,
          maxCrashes: 1,
          failedRetryAfter: 0,
        }),
        grab,
      ],
      ...extra,
    },
    ctx: () => ctx!,
  };
}

/** Every event of `pool` from now on, of the given types. */
function record(pool: Pool, ...types: PoolEvent["type"][]): PoolEvent[] {
  const out: PoolEvent[] = [];
  pool.on((ev) => {
    if (types.includes(ev.type)) out.push(ev);
  });
  return out;
}

/** The next event of `pool` of one of the given types. */
function firstOf(
  pool: Pool,
  ...types: PoolEvent["type"][]
): Promise<PoolEvent> {
  return new Promise((resolve) => {
    const off = pool.on((ev) => {
      if (types.includes(ev.type)) {
        off();
        resolve(ev);
      }
    });
  });
}

function model(pool: Pool, name: string) {
  return pool.status().models.find((m) => m.name === name)!;
}

function states(pool: Pool): string[] {
  return pool.status().workers.map((w) => `${w.id} ${w.state}`);
}

/**
 * The scenarios of this file, each on a pool of its own: they wait on
 * loads, moves, stops and restarts of their workers more than on the CPU,
 * so the file runs them a few at a time (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "Pool placement: a model whose calls crash its workers is moved at most maxRelocations times, then out of service (ModelUnavailableError, 503); the other workers and models serve on, a revived slot does not load it, an update brings it back",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const { options: opts, ctx } = options(dir.path, 3, {
        ...NO_QUARANTINE,
        placement: { maxRelocations: 1 },
      });
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("good", { file: "whoami.py", workers: 1 });
      await pool.addModel("bad", { source: CRASHER, workers: 1 });
      await pool.addModel("plain", { file: "whoami.py" });
      assert.deepEqual(model(pool, "good").slots, ["w1"]);
      assert.deepEqual(model(pool, "bad").slots, ["w2"]);
      const events = record(pool, "model-relocated", "model-failed");
      const w1 = pidOf(pool, "w1");
      // One call after the other: each crashes the worker it reaches, until
      // the model is out of service.
      const outcomes: string[] = [];
      let unavailable: unknown;
      for (let i = 0; i < 10 && unavailable === undefined; i++) {
        await pool.execute("bad", { crash: true }).then(
          () => outcomes.push("ok"),
          (err) => {
            outcomes.push(err.name);
            if (err instanceof ModelUnavailableError) unavailable = err;
            else assert.ok(err instanceof WorkerCrashedError, String(err));
          },
        );
      }
      // w2 twice (failed), moved to w3 (the slot holding no placed model),
      // w3 twice (failed): past maxRelocations 1, out of service.
      assert.deepEqual(outcomes, [
        "WorkerCrashedError",
        "WorkerCrashedError",
        "WorkerCrashedError",
        "WorkerCrashedError",
        "ModelUnavailableError",
      ]);
      assert.ok(unavailable instanceof ModelUnavailableError);
      assert.equal(unavailable.code, "MODEL_UNAVAILABLE");
      assert.equal(unavailable.details.model, "bad");
      // The same, as data (the gateway words its own message from it).
      const { reason: _, lastExit, ...details } = unavailable.details;
      assert.deepEqual(details, {
        model: "bad",
        cmd: "executeModel",
        crashed: ["w2", "w3"],
        relocationWindow: 600_000,
        maxRelocations: 1,
      });
      assert.equal(typeof lastExit, "string");
      assert.match(
        unavailable.message,
        /^Cannot route call executeModel: model 'bad' is out of service: it crashed the workers it was placed on 2 times within 600000 ms \(w2, w3: each failed for good with its calls in flight or its load under way\), past placement\.maxRelocations 1; last: worker w3 crashed 2 times within 60000 ms; last: .*; update it \(pool\.updateModel, PUT \/v1\/models\/bad\) to load it again$/,
      );
      assert.deepEqual(
        events.map((ev) => ({ ...ev, reason: undefined })),
        [
          {
            type: "model-relocated",
            name: "bad",
            from: "w2",
            to: "w3",
            counted: true,
            reason: undefined,
          },
          {
            type: "model-failed",
            name: "bad",
            worker: "w3",
            reason: undefined,
          },
        ],
      );
      // It walked no further: w1 serves the other models, alone.
      assert.deepEqual(states(pool), ["w1 ready", "w2 failed", "w3 failed"]);
      assert.equal(pidOf(pool, "w1"), w1);
      assert.deepEqual(await pool.execute("good", {}), { pid: w1, msg: {} });
      assert.deepEqual(await pool.execute("plain", {}), { pid: w1, msg: {} });
      const bad = model(pool, "bad");
      assert.deepEqual(bad.slots, []);
      assert.match(
        bad.failedReason!,
        /^it crashed the workers it was placed on 2 times/,
      );
      // Every kind of call fails the same, at once: pinned, keyed, streamed.
      for (
        const call of [
          () => pool.execute("bad", {}, { worker: "w1" }),
          () => pool.execute("bad", {}, { key: "k" }),
          async () => {
            for await (const _ of pool.executeStream("bad", {})) {
              // none
            }
          },
        ]
      ) {
        await assert.rejects(call(), ModelUnavailableError);
      }
      // An init too: it would run on no worker, and be lost at the update.
      await assert.rejects(
        pool.initModel("bad", "data.json"),
        (err: unknown) =>
          err instanceof ModelUnavailableError &&
          err.message.startsWith(
            "Cannot init model 'bad': it is out of service: it crashed",
          ),
      );
      assert.deepEqual(model(pool, "bad").inits, []);
      // The gateway over the pool: 503 naming the model, no Retry-After (a
      // retry cannot help), and /v1/status and GET /v1/models/bad say why.
      const app = createGateway(pool, { port: () => 8000 });
      const req = (path: string, init: RequestInit = {}) =>
        app.fetch(
          new Request(`http://127.0.0.1:8000${path}`, {
            ...init,
            headers: { host: "127.0.0.1:8000" },
          }),
        );
      const res = await req("/v1/models/bad/execute", {
        method: "POST",
        body: "{}",
      });
      assert.equal(res.status, 503);
      assert.equal(res.headers.get("retry-after"), null);
      const { error } = await res.json();
      assert.equal(error.type, "ModelUnavailableError");
      assert.equal(error.model, "bad");
      // In the gateway's terms (its settings, the PUT that clears it).
      assert.match(
        error.message,
        /^Cannot call model 'bad': it is out of service: it crashed the workers it was placed on 2 times within 600000 ms \(w2, w3; the last: .*\), past limits\.maxRelocations 1 \(pyproxy\.json; its window: limits\.relocationWindow\); PUT \/v1\/models\/bad loads it again/,
      );
      const status = await (await req("/v1/status")).json();
      const shown = status.models.find((m: { name: string }) =>
        m.name === "bad"
      );
      assert.deepEqual(shown.slots, []);
      assert.equal(shown.failedReason, bad.failedReason);
      const one = await (await req("/v1/models/bad")).json();
      assert.equal(one.failedReason, bad.failedReason);
      // An alert can watch it: failed slots come back, the model does not.
      const outOfService = async () =>
        (await (await req("/metrics")).text()).split("\n").filter((l) =>
          l.startsWith("pyproxy_models_out_of_service ") ||
          l.startsWith('pyproxy_models_ready{model="bad"}') ||
          l.startsWith('pyproxy_models_ready{model="plain"}')
        ).sort();
      // And each model's readiness, as /v2/models/{name}/ready says it.
      assert.deepEqual(await outOfService(), [
        "pyproxy_models_out_of_service 1",
        'pyproxy_models_ready{model="bad"} 0',
        'pyproxy_models_ready{model="plain"} 1',
      ]);
      // A revived slot does not load it (it would crash there too).
      const ready = readyAgain(pool, "w2");
      assert.equal(ctx().reviveWorker("w2"), true);
      await ready;
      assert.deepEqual(pool.status().workers[1]!.models, ["plain"]);
      // Nor does a slot a resize adds (a resize does not end the failure).
      const grown = await pool.resize(4);
      assert.deepEqual(grown.workers[3]!.models, ["plain"]);
      await assert.rejects(pool.execute("bad", {}), ModelUnavailableError);
      // An update puts it back in service, on a ready slot, with a clean count.
      await pool.updateModel("bad", { source: CRASHER, workers: 1 });
      assert.deepEqual(model(pool, "bad").slots, ["w2"]);
      assert.equal(model(pool, "bad").failedReason, undefined);
      assert.deepEqual(await pool.execute("bad", {}), {
        pid: pidOf(pool, "w2"),
      });
      const after = await (await req("/v1/models/bad")).json();
      assert.equal(after.failedReason, undefined);
      assert.deepEqual(await outOfService(), [
        "pyproxy_models_out_of_service 0",
        'pyproxy_models_ready{model="bad"} 1',
        'pyproxy_models_ready{model="plain"} 1',
      ]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: with the default bound, a crashing model is not moved onto the pool's last worker up, which serves the other models on; a model on 2 of 3 slots keeps the one left rather than take the third",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      // maxRelocations 2 (the default) in a pool of 3: the third failed slot
      // would have been the last one, the healthy models left with none.
      const { options: opts } = options(dir.path, 3, NO_QUARANTINE);
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("good", { file: "whoami.py", workers: 1 });
      await pool.addModel("bad", { source: CRASHER, workers: 1 });
      await pool.addModel("plain", { file: "whoami.py" });
      const events = record(pool, "model-relocated", "model-failed");
      const w1 = pidOf(pool, "w1");
      const outcomes: string[] = [];
      for (let i = 0; i < 10 && !outcomes.includes("NoWorkerError"); i++) {
        await pool.execute("bad", { crash: true }).then(
          () => outcomes.push("ok"),
          (err) => outcomes.push(err.name),
        );
      }
      // w2 twice (failed), moved to w3 (w1 stays free of it), w3 twice
      // (failed): one more move would put it on w1, the last worker up, so
      // it stays on w3 (failed) until w3 is revived.
      assert.deepEqual(outcomes, [
        "WorkerCrashedError",
        "WorkerCrashedError",
        "WorkerCrashedError",
        "WorkerCrashedError",
        "NoWorkerError",
      ]);
      assert.deepEqual(events, [
        {
          type: "model-relocated",
          name: "bad",
          from: "w2",
          to: "w3",
          counted: true,
        },
        {
          type: "model-relocated",
          name: "bad",
          from: "w3",
          to: null,
          counted: true,
        },
      ]);
      assert.deepEqual(states(pool), ["w1 ready", "w2 failed", "w3 failed"]);
      assert.equal(pidOf(pool, "w1"), w1);
      assert.deepEqual(await pool.execute("good", {}), { pid: w1, msg: {} });
      assert.deepEqual(await pool.execute("plain", {}), { pid: w1, msg: {} });
      assert.deepEqual(model(pool, "bad").slots, ["w3"]);
    } finally {
      await pids.assertGone();
    }
    // On 2 slots of 3: a counted move off one would put it on every worker
    // still up; it keeps the slot it has left, and serves there.
    await using dir2 = await modelsDir();
    const pids2 = new PidTracker();
    try {
      const { options: opts } = options(dir2.path, 3);
      await using pool = await Pool.start(opts);
      pids2.watch(pool);
      await pool.addModel("bad", { source: CRASHER, workers: 2 });
      await pool.addModel("plain", { file: "whoami.py" });
      const [a, b] = model(pool, "bad").slots as string[];
      const events = record(pool, "model-relocated", "model-failed");
      const moved = nextEvent(pool, "model-relocated");
      // Calls pinned to one slot: crash it until the policy gives up.
      for (let i = 0; i < 2; i++) {
        const ready = i === 0 ? readyAgain(pool, a!) : undefined;
        await assert.rejects(
          pool.execute("bad", { crash: true }, { worker: a! }),
          WorkerCrashedError,
        );
        await ready;
      }
      await moved;
      assert.deepEqual(events, [
        {
          type: "model-relocated",
          name: "bad",
          from: a,
          to: null,
          counted: true,
        },
      ]);
      assert.deepEqual(model(pool, "bad").failedReason, undefined);
      assert.deepEqual(await pool.execute("bad", {}), { pid: pidOf(pool, b!) });
    } finally {
      await pids2.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: maxRelocations Infinity moves a crashing model every time, onto the last worker up too",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const { options: opts } = options(dir.path, 2, {
        placement: { maxRelocations: Infinity },
      });
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("bad", { source: CRASHER, workers: 1 });
      const moved = nextEvent(pool, "model-relocated");
      for (let i = 0; i < 2; i++) {
        await assert.rejects(
          pool.execute("bad", { crash: true }),
          WorkerCrashedError,
        );
      }
      assert.deepEqual(await moved, {
        type: "model-relocated",
        name: "bad",
        from: "w1",
        to: "w2",
        counted: true,
      });
      // Its calls wait for the move, then go to w2.
      assert.deepEqual(await pool.execute("bad", {}), {
        pid: pidOf(pool, "w2"),
      });
      assert.deepEqual(model(pool, "bad").slots, ["w2"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a model whose load crashes its workers (replay, then the move) is moved at most maxRelocations times, then out of service",
  async () => {
    await using dir = await modelsDir();
    const gate = `${dir.path}/crash-on-load`;
    const pids = new PidTracker();
    try {
      const { options: opts } = options(dir.path, 3, {
        placement: { maxRelocations: 1 },
      });
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("good", { file: "whoami.py", workers: 1 });
      await pool.addModel("bad", {
        source: CRASHER,
        options: { crashOnLoad: gate },
        workers: 1,
      });
      assert.deepEqual(model(pool, "bad").slots, ["w2"]);
      const events = record(pool, "model-relocated", "model-failed");
      const failed = nextEvent(pool, "model-failed", (ev) => ev.name === "bad");
      // From now on it crashes the worker that loads it: w2's restart, then
      // w3, where it moves (and w3's restart).
      await Deno.writeTextFile(gate, "");
      pool.killWorker("w2", "test: restart w2");
      await failed;
      assert.deepEqual(
        events.map((ev) => ev.type === "model-relocated" ? ev : ev.type),
        [
          {
            type: "model-relocated",
            name: "bad",
            from: "w2",
            to: "w3",
            counted: true,
          },
          "model-failed",
        ],
      );
      assert.deepEqual(states(pool), ["w1 ready", "w2 failed", "w3 failed"]);
      assert.match(model(pool, "bad").failedReason!, /\(w2, w3: /);
      await assert.rejects(pool.execute("bad", {}), ModelUnavailableError);
      assert.deepEqual(await pool.execute("good", {}), {
        pid: pidOf(pool, "w1"),
        msg: {},
      });
      // Fixed (the file gone), an update loads it again.
      await Deno.remove(gate);
      await pool.updateModel("bad", {
        source: CRASHER,
        options: { crashOnLoad: gate },
        workers: 1,
      });
      assert.deepEqual(model(pool, "bad").slots, ["w1"]);
      assert.deepEqual(await pool.execute("bad", {}), {
        pid: pidOf(pool, "w1"),
      });
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a slot failed by another model's crash moves a placed model without counting it (maxRelocations 0), and one crash of its own fails nothing",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const { options: opts } = options(dir.path, 2, {
        placement: { maxRelocations: 0 },
      });
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("p", { source: CRASHER, workers: 1 });
      await pool.addModel("crasher", { source: CRASHER });
      assert.deepEqual(model(pool, "p").slots, ["w1"]);
      const events = record(pool, "model-relocated", "model-failed");
      // One crash of p's own: w1 restarts (the policy gives up at the
      // second), p stays in service there.
      const ready = readyAgain(pool, "w1");
      await assert.rejects(
        pool.execute("p", { crash: true }),
        WorkerCrashedError,
      );
      await ready;
      assert.deepEqual(await pool.execute("p", {}), { pid: pidOf(pool, "w1") });
      // The unplaced model crashes w1 (its second crash within the window):
      // it fails for good, and p moves to w2, not counted (none of its calls
      // was in flight there).
      const relocated = nextEvent(pool, "model-relocated");
      await assert.rejects(
        pool.execute("crasher", { crash: true }, { worker: "w1" }),
        WorkerCrashedError,
      );
      assert.deepEqual(await relocated, {
        type: "model-relocated",
        name: "p",
        from: "w1",
        to: "w2",
        counted: false,
      });
      assert.deepEqual(await pool.execute("p", {}), { pid: pidOf(pool, "w2") });
      assert.equal(model(pool, "p").failedReason, undefined);
      assert.deepEqual(model(pool, "p").slots, ["w2"]);
      assert.deepEqual(events.map((ev) => ev.type), ["model-relocated"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a version that crashes its workers is taken out of service alone; its error names the model, the label and the version's own update (details.version, the gateway's 503 body)",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const { options: opts } = options(dir.path, 3, {
        placement: { maxRelocations: 0 },
      });
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("m", { source: CRASHER, version: "1", workers: 1 });
      await pool.addModel("m", { source: CRASHER, version: "2", workers: 1 });
      const slot = pool.status().models.find((m) => m.version === "2")!
        .slots![0]!;
      // Its first crash restarts the slot; the second fails it for good.
      const ready = readyAgain(pool, slot);
      await assert.rejects(
        pool.execute("m", { crash: true }, { version: "2" }),
        WorkerCrashedError,
      );
      await ready;
      const failed = nextEvent(pool, "model-failed");
      await assert.rejects(
        pool.execute("m", { crash: true }, { version: "2" }),
        WorkerCrashedError,
      );
      assert.equal((await failed).name, "m@2");
      const outOfService = (start: string) => (err: unknown) => {
        assert.ok(err instanceof ModelUnavailableError, String(err));
        assert.match(
          err.message,
          new RegExp(
            `^${start} is out of service: it crashed .*; update it \\(pool\\.updateModel with version '2', PUT /v1/models/m/versions/2\\) to load it again$`,
          ),
        );
        assert.equal(err.details.model, "m");
        assert.equal(err.details.version, "2");
        const { status, body } = describeError(err, false);
        assert.equal(status, 503);
        const shown = body as unknown as Record<string, unknown>;
        assert.deepEqual([shown.model, shown.version], ["m", "2"]);
        return true;
      };
      await assert.rejects(
        pool.execute("m", {}, { version: "2" }),
        outOfService("Cannot route call executeModel: model 'm' version '2'"),
      );
      await assert.rejects(
        pool.initModel("m", "data.json", { version: "2" }),
        outOfService("Cannot init model 'm' version '2': it"),
      );
      // Version 1 serves on.
      assert.ok((await pool.execute<Pid>("m", {})).pid > 0);
      // The update the message names brings it back.
      await pool.updateModel("m", {
        source: CRASHER,
        version: "2",
        workers: 1,
      });
      assert.ok((await pool.execute<Pid>("m", {}, { version: "2" })).pid > 0);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool options: placement is validated (maxRelocations an integer >= 0 or Infinity, relocationWindow > 0)",
  async () => {
    for (
      const [placement, message] of [
        [
          { maxRelocations: -1 },
          "placement.maxRelocations: expected an integer >= 0, or Infinity",
        ],
        [
          { maxRelocations: 1.5 },
          "placement.maxRelocations: expected an integer >= 0, or Infinity",
        ],
        [
          { relocationWindow: 0 },
          "placement.relocationWindow: expected a number > 0",
        ],
        [{ other: 1 }, "placement.other: unknown option"],
      ] as const
    ) {
      await assert.rejects(
        Pool.start({
          workers: 1,
          handleSignals: false,
          placement: placement as PlacementOptions,
        }),
        (err: unknown) =>
          err instanceof Error && err.name === "ConfigError" &&
          err.message === `Cannot start pool: ${message}`,
      );
    }
  },
]);

scenarios.push([
  "Pool placement: an update made while a crashing model is being moved runs after the move, and the model serves from where the update put it",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const { options: opts } = options(dir.path, 3);
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("bad", { source: CRASHER, workers: 1 });
      let update: Promise<unknown> | undefined;
      pool.on((ev) => {
        if (ev.type === "model-relocated" && update === undefined) {
          // The fixed model, sent while the move is under way.
          update = pool.updateModel("bad", { file: "whoami.py", workers: 1 });
        }
      });
      for (let i = 0; i < 2; i++) {
        await assert.rejects(
          pool.execute("bad", { crash: true }),
          WorkerCrashedError,
        );
      }
      // Called once the move began (the event), it waits for it.
      while (update === undefined) await nextEvent(pool, "model-relocated");
      await update;
      const slots = model(pool, "bad").slots!;
      assert.deepEqual(slots, ["w2"]);
      assert.deepEqual(await pool.execute("bad", { crash: true }), {
        pid: pidOf(pool, "w2"),
        msg: { crash: true },
      });
      assert.deepEqual(states(pool), ["w1 failed", "w2 ready", "w3 ready"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: closing the pool while a crashing model is moved settles every call once and leaves no process",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const { options: opts } = options(dir.path, 2, {
        placement: { maxRelocations: 0 },
      });
      const pool = await Pool.start(opts);
      pids.watch(pool);
      let closed: Promise<void> | undefined;
      try {
        await pool.addModel("bad", { source: CRASHER, workers: 1 });
        pool.on((ev) => {
          if (ev.type === "model-relocated" || ev.type === "model-failed") {
            closed ??= pool.close();
          }
        });
        // Rounds of 3 calls at once, until the close: each round crashes
        // the worker (w1 twice: failed, the model moves, the pool closes).
        const settled = new Map<number, number>();
        const outcomes: PromiseSettledResult<unknown>[] = [];
        for (let round = 0; round < 20 && closed === undefined; round++) {
          outcomes.push(
            ...await Promise.allSettled(
              Array.from(
                { length: 3 },
                (_, i) =>
                  pool.execute("bad", { crash: true }).finally(() => {
                    const id = round * 3 + i;
                    settled.set(id, (settled.get(id) ?? 0) + 1);
                  }),
              ),
            ),
          );
        }
        assert.ok(closed !== undefined, "the pool was closed during the move");
        await closed;
        assert.equal(settled.size, outcomes.length);
        assert.ok([...settled.values()].every((n) => n === 1));
        for (const o of outcomes) {
          assert.equal(o.status, "rejected");
          assert.ok(
            [
              "WorkerCrashedError",
              "ShuttingDownError",
              "ModelUnavailableError",
            ].includes((o.reason as Error).name),
            String(o.reason),
          );
        }
      } finally {
        await pool.close();
      }
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a shrink asked for while a crashing model is being moved runs after the move and keeps the slot it moved to",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const { options: opts } = options(dir.path, 3);
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("bad", { source: CRASHER, workers: 1 });
      assert.deepEqual(model(pool, "bad").slots, ["w1"]);
      let shrink: Promise<unknown> | undefined;
      pool.on((ev) => {
        if (ev.type === "model-relocated" && shrink === undefined) {
          shrink = pool.resize(1);
        }
      });
      for (let i = 0; i < 2; i++) {
        await assert.rejects(
          pool.execute("bad", { crash: true }),
          WorkerCrashedError,
        );
      }
      while (shrink === undefined) await nextEvent(pool, "model-relocated");
      await shrink;
      // The failed w1 went first, then the ready slot holding no placed model.
      assert.deepEqual(states(pool), ["w2 ready"]);
      // Its calls wait for the move, then go to w2.
      assert.deepEqual(await pool.execute("bad", {}), {
        pid: pidOf(pool, "w2"),
      });
      assert.deepEqual(model(pool, "bad").slots, ["w2"]);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a model on 2 slots taken out of service is unloaded from the slot still up",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const { options: opts } = options(dir.path, 3, {
        placement: { maxRelocations: 0 },
      });
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("bad", { source: CRASHER, workers: 2 });
      assert.deepEqual(model(pool, "bad").slots, ["w1", "w2"]);
      const failed = nextEvent(pool, "model-failed");
      const ready = readyAgain(pool, "w1");
      const crash = () =>
        assert.rejects(
          pool.execute("bad", { crash: true }, { worker: "w1" }),
          WorkerCrashedError,
        );
      await crash();
      await ready;
      await crash();
      assert.equal((await failed).worker, "w1");
      // The unload runs in the registry's turn: the next model command waits.
      await pool.addModel("sync", { file: "whoami.py" });
      assert.deepEqual(model(pool, "bad").slots, []);
      assert.deepEqual(states(pool), ["w1 failed", "w2 ready", "w3 ready"]);
      await assert.rejects(
        pool.control("w2", "executeModel", { name: "bad", msg: {} }),
        (err: unknown) => (err as Error).name === "ModelNotFoundError",
      );
      await assert.rejects(pool.execute("bad", {}), ModelUnavailableError);
    } finally {
      await pids.assertGone();
    }
  },
]);

/**
 * Sleeps `msg.seconds` in short steps (a cancel interrupts it between
 * two), or with `msg.stuck` waits
 * on a lock it holds: a wait no cancel interrupts (the GIL released, so
 * the worker still answers pings).
 */
const SLOW = `
import threading
import time

class Slow:
    def execute(self, msg):
        if msg.get("stuck"):
            lock = threading.Lock()
            lock.acquire()
            lock.acquire()
        deadline = time.monotonic() + msg.get("seconds", 0)
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return {"slept": msg.get("seconds", 0)}
`;
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

scenarios.push([
  "Pool placement: a call that timed out and ended on the server before its slot failed does not count a move; one still running there when the process died does",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      // One call per worker: the next call to a slot waits until the server
      // is done with a timed-out one (it answered the cancel).
      const { options: opts, ctx } = options(dir.path, 3, {
        ...NO_QUARANTINE,
        placement: { maxRelocations: 0 },
        maxInFlightPerWorker: 1,
      });
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("slow", { source: SLOW, workers: 1 });
      await pool.addModel("crasher", { source: CRASHER });
      assert.deepEqual(model(pool, "slow").slots, ["w1"]);
      const crash = (worker: string) =>
        assert.rejects(
          pool.execute("crasher", { crash: true }, { worker }),
          WorkerCrashedError,
        );
      // The restart policy gives up at w1's second crash: the first one now.
      let ready = readyAgain(pool, "w1");
      await crash("w1");
      await ready;
      // A call of slow times out there; the cancel ends it on the server.
      await assert.rejects(
        pool.execute("slow", { seconds: 30 }, { timeout: 100 }),
        TimeoutError,
      );
      assert.deepEqual(await pool.execute("slow", {}), { slept: 0 });
      // Another model's call crashes w1 for good: slow moves, not counted
      // (no call of its was running there).
      const moved = firstOf(pool, "model-relocated", "model-failed");
      await crash("w1");
      assert.deepEqual(await moved, {
        type: "model-relocated",
        name: "slow",
        from: "w1",
        to: "w2",
        counted: false,
      });
      assert.equal(model(pool, "slow").failedReason, undefined);
      assert.deepEqual(await pool.execute("slow", {}), { slept: 0 });
      // On w2: a call that times out and goes on running there (no cancel
      // reaches a lock's wait) is in flight when the process dies (killed:
      // the call holds the slot's one place): counted.
      ready = readyAgain(pool, "w2");
      await crash("w2");
      await ready;
      await assert.rejects(
        pool.execute("slow", { stuck: true }, { timeout: 100 }),
        TimeoutError,
      );
      const failed = firstOf(pool, "model-relocated", "model-failed");
      ctx().killWorker("w2", "SIGKILL", "test: kill w2");
      const ev = await failed;
      assert.equal(ev.type, "model-failed");
      assert.equal(ev.name, "slow");
      await assert.rejects(pool.execute("slow", {}), ModelUnavailableError);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a model that crashed its slot is not moved onto the pool's last ready worker: it stays on its failed slot, and the other models keep that worker",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      // The gateway's default pool size, and the default bound (2 moves):
      // moved, the model would crash w2 too and leave the pool with none.
      const { options: opts, ctx } = options(dir.path, 2, NO_QUARANTINE);
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("bad", { source: CRASHER, workers: 1 });
      await pool.addModel("plain", { file: "whoami.py" });
      assert.deepEqual(model(pool, "bad").slots, ["w1"]);
      const w2 = pidOf(pool, "w2");
      // Crashes w1 until the restart policy gives up on it: twice, then
      // (revived: its crashes are still in the policy's window) once.
      const crashW1 = async (times: number) => {
        const moved = firstOf(pool, "model-relocated", "model-failed");
        for (let i = 1; i <= times; i++) {
          const ready = i < times ? readyAgain(pool, "w1") : undefined;
          await assert.rejects(
            pool.execute("bad", { crash: true }),
            WorkerCrashedError,
          );
          await ready;
        }
        return await moved;
      };
      assert.deepEqual(await crashW1(2), {
        type: "model-relocated",
        name: "bad",
        from: "w1",
        to: null,
        counted: true,
      });
      assert.deepEqual(states(pool), ["w1 failed", "w2 ready"]);
      await assert.rejects(pool.execute("bad", {}), NoWorkerError);
      assert.deepEqual(await pool.execute("plain", {}), { pid: w2, msg: {} });
      // Revived, its slot takes it back (and fails again): still not w2's,
      // until the bound takes it out of service.
      for (const expected of ["model-relocated", "model-failed"]) {
        const revived = readyAgain(pool, "w1");
        ctx().reviveWorker("w1");
        await revived;
        assert.equal((await crashW1(1)).type, expected);
      }
      assert.equal(pidOf(pool, "w2"), w2);
      assert.deepEqual(await pool.execute("plain", {}), { pid: w2, msg: {} });
      await assert.rejects(pool.execute("bad", {}), ModelUnavailableError);
    } finally {
      await pids.assertGone();
    }
  },
]);

scenarios.push([
  "Pool placement: a model left on its failed slot after crashing it is not handed the pool's last worker by that worker's restart either",
  async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    try {
      const { options: opts } = options(dir.path, 2, NO_QUARANTINE);
      await using pool = await Pool.start(opts);
      pids.watch(pool);
      await pool.addModel("bad", { source: CRASHER, workers: 1 });
      await pool.addModel("plain", { file: "whoami.py" });
      const moved = firstOf(pool, "model-relocated", "model-failed");
      const ready = readyAgain(pool, "w1");
      for (const wait of [ready, undefined]) {
        await assert.rejects(
          pool.execute("bad", { crash: true }),
          WorkerCrashedError,
        );
        await wait;
      }
      assert.equal((await moved).type, "model-relocated");
      assert.deepEqual(model(pool, "bad").slots, ["w1"]);
      // w2, the last ready worker, restarts (a crash of another model's, a
      // recycle): its replay leaves the model where it is.
      const restarted = readyAgain(pool, "w2");
      pool.killWorker("w2", "test: restart w2");
      await restarted;
      assert.deepEqual(pool.status().workers[1]!.models, ["plain"]);
      assert.deepEqual(model(pool, "bad").slots, ["w1"]);
      assert.deepEqual(await pool.execute("plain", {}), {
        pid: pidOf(pool, "w2"),
        msg: {},
      });
    } finally {
      await pids.assertGone();
    }
  },
]);

Deno.test("Pool placement relocations, each scenario on a pool of its own (3 at a time)", (t) =>
  concurrentSteps(t, scenarios, 3));
