/**
 * A worker killed by the kernel's OOM killer says so: its exit's reason and
 * its calls' `WorkerCrashedError` read `killed by SIGKILL (out of memory:
 * the kernel's OOM killer)` when the host's memory cgroup counted an OOM kill
 * (`oom_kill` of cgroup v2's `memory.events`, v1's `memory.oom_control`),
 * and a plain `killed by SIGKILL` for a `kill -9`. Before, both read the
 * same, and a platform engineer could not tell a memory limit from a person.
 *
 * The cgroup files are temporary files here (the runtime reads them through
 * a map); the workers are real and really killed. A real OOM kill (a memory
 * cgroup of 300 MiB, four workers growing) was checked by hand: newcomer27 in
 * CHANGELOG.md.
 */
import assert from "node:assert/strict";
import { OomKills, OUT_OF_MEMORY } from "../src/_oom_kills.ts";
import { WorkerCrashedError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import { recordingLogger, tempDir } from "./_harness.ts";
import {
  modelsDir,
  nextEvent,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";

/**
 * The default runtime, reading `/proc/self/cgroup` and `/sys/fs/cgroup/...`
 * from `root` instead; `read(path, n)` resolves once such a file was read `n`
 * times.
 */
function cgroupRuntime(root: string): {
  runtime: Runtime;
  read(path: string, n: number): Promise<void>;
} {
  const base = defaultRuntime();
  const reads = new Map<string, number>();
  const waits = new Set<() => void>();
  const runtime: Runtime = {
    ...base,
    readFile: async (path, options) => {
      if (path !== "/proc/self/cgroup" && !path.startsWith("/sys/fs/cgroup/")) {
        return await base.readFile(path, options);
      }
      try {
        return await base.readFile(`${root}${path}`, options);
      } finally {
        reads.set(path, (reads.get(path) ?? 0) + 1);
        for (const wake of [...waits]) wake();
      }
    },
  };
  // Bounded: a pool that never reads them fails here rather than hanging.
  const read = (path: string, n: number) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        waits.delete(wake);
        reject(
          new Error(`${path} read ${reads.get(path) ?? 0} times, not ${n}`),
        );
      }, 15_000);
      const wake = () => {
        if ((reads.get(path) ?? 0) < n) return;
        clearTimeout(timer);
        waits.delete(wake);
        resolve();
      };
      waits.add(wake);
      wake();
    });
  return { runtime, read };
}

async function write(root: string, path: string, text: string): Promise<void> {
  const file = `${root}${path}`;
  await Deno.mkdir(file.slice(0, file.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(file, text);
}

const v2Events = (kills: number) =>
  `low 0\nhigh 0\nmax 12\noom ${kills}\noom_kill ${kills}\noom_group_kill 0\n`;

Deno.test("OomKills reads cgroup v2's memory.events and v1's memory.oom_control, at the group's path or the mount's root, and each kill counted is claimed once", async () => {
  await using dir = await tempDir();
  const events = "/sys/fs/cgroup/kubepods/pod1/c1/memory.events";
  await write(dir.path, "/proc/self/cgroup", "0::/kubepods/pod1/c1\n");
  await write(dir.path, events, v2Events(1));
  const oom = new OomKills(cgroupRuntime(dir.path).runtime);
  // Nothing noted yet: no kill can be told apart.
  assert.equal(await oom.claim(), false);
  await oom.note();
  assert.equal(await oom.claim(), false);
  // Two workers killed at once: each is told.
  await write(dir.path, events, v2Events(3));
  assert.equal(await oom.claim(), true);
  assert.equal(await oom.claim(), true);
  assert.equal(await oom.claim(), false);
  // A kill counted, then a worker ready: not the next SIGKILL's.
  await write(dir.path, events, v2Events(4));
  await oom.note();
  assert.equal(await oom.claim(), false);

  // cgroup v1, a container whose /proc/self/cgroup names the host's path
  // while its own group is the mount's root.
  await using v1 = await tempDir();
  await write(
    v1.path,
    "/proc/self/cgroup",
    "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n0::/docker/abc\n",
  );
  const control = "/sys/fs/cgroup/memory/memory.oom_control";
  await write(
    v1.path,
    control,
    "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n",
  );
  const oomV1 = new OomKills(cgroupRuntime(v1.path).runtime);
  await oomV1.note();
  await write(
    v1.path,
    control,
    "oom_kill_disable 0\nunder_oom 0\noom_kill 8\n",
  );
  assert.equal(await oomV1.claim(), true);

  // No cgroup files (not Linux, /sys not mounted): never.
  await using none = await tempDir();
  const oomNone = new OomKills(cgroupRuntime(none.path).runtime);
  await oomNone.note();
  assert.equal(await oomNone.claim(), false);
});

Deno.test("OomKills: a worker's ready note read before a kill that another worker claimed meanwhile does not give that kill back to the next SIGKILL", async () => {
  // A worker becomes ready (note) and reads the count, 0; the OOM killer
  // ends another worker, whose exit claims the kill (count 1) before the
  // note's read returns. Before, the note then set the count accounted for
  // back to 0, and the next worker killed with kill -9 was told the OOM
  // killer's.
  await using dir = await tempDir();
  const events = "/sys/fs/cgroup/memory.events";
  await write(dir.path, "/proc/self/cgroup", "0::/\n");
  await write(dir.path, events, v2Events(0));
  const base = cgroupRuntime(dir.path).runtime;
  // The next read of the count is returned only once `late` resolves.
  let hold: { read: () => void; late: Promise<void> } | undefined;
  const runtime: Runtime = {
    ...base,
    readFile: async (path, options) => {
      const bytes = await base.readFile(path, options);
      if (path === events && hold !== undefined) {
        const held = hold;
        hold = undefined;
        held.read();
        await held.late;
      }
      return bytes;
    },
  };
  const oom = new OomKills(runtime);
  await oom.note();
  const read = Promise.withResolvers<void>();
  const late = Promise.withResolvers<void>();
  hold = { read: read.resolve, late: late.promise };
  const ready = oom.note(); // reads 0, returned late
  await read.promise;
  await write(dir.path, events, v2Events(1));
  assert.equal(await oom.claim(), true); // the OOM-killed worker
  late.resolve();
  await ready;
  assert.equal(await oom.claim(), false); // a kill -9 since
});

Deno.test("Pool names a worker's SIGKILL the OOM killer's when its cgroup counted one (the call's WorkerCrashedError, lastExit), and not a kill -9's", async () => {
  await using cgroup = await tempDir();
  const events = "/sys/fs/cgroup/memory.events";
  await write(cgroup.path, "/proc/self/cgroup", "0::/\n");
  await write(cgroup.path, events, v2Events(0));
  const { runtime, read } = cgroupRuntime(cgroup.path);
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(poolOptions(dir.path, { runtime }));
    pids.watch(pool);
    await pool.addModel("slow", { file: "slow.py" });
    // Each ready worker took the count (after the look for the file).
    await read(events, 3);

    // The OOM killer: the count grows, then the worker dies of SIGKILL.
    const oomVictim = pidOf(pool, "w1");
    const back = readyAgain(pool, "w1");
    const call = pool.execute("slow", { ms: 5000 }, { worker: "w1" });
    await pool.request("ping", undefined, { worker: "w1" });
    await write(cgroup.path, events, v2Events(1));
    Deno.kill(oomVictim, "SIGKILL");
    const err = await call.then(() => undefined, (e) => e);
    assert.ok(err instanceof WorkerCrashedError, String(err));
    assert.match(
      err.message,
      /^Cannot run model 'slow': worker w1 \(pid \d+\) died: killed by SIGKILL \(out of memory: the kernel's OOM killer\) while running: slow \(1 call\)$/,
    );
    assert.equal(err.details.signal, "SIGKILL");
    await back;
    assert.equal(
      pool.status().workers[0]!.lastExit?.reason,
      `killed by SIGKILL${OUT_OF_MEMORY}`,
    );

    // kill -9: the count did not grow.
    const exit = nextEvent(pool, "worker-exit", (ev) => ev.worker === "w2");
    Deno.kill(pidOf(pool, "w2"), "SIGKILL");
    assert.equal((await exit).signal, "SIGKILL");
    assert.equal(
      pool.status().workers[1]!.lastExit?.reason,
      "killed by SIGKILL",
    );
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool warns at start when its memory cgroup is killed as a group (memory.oom.group 1, Kubernetes 1.28+ on cgroup v2): the workers' oom_score_adj cannot spare the host then", async () => {
  // Before: nothing said so, and docs/gateway.md's "workers die first"
  // did not hold there: an OOM kill of a worker ended the gateway too.
  for (
    const [group, adj, warned] of [["1", 500, 1], ["0", 500, 0], [
      "1",
      0,
      0,
    ]] as const
  ) {
    await using cgroup = await tempDir();
    await write(cgroup.path, "/proc/self/cgroup", "0::/kubepods/pod1/c1\n");
    const base = "/sys/fs/cgroup/kubepods/pod1/c1";
    await write(cgroup.path, `${base}/memory.events`, v2Events(0));
    await write(cgroup.path, `${base}/memory.oom.group`, `${group}\n`);
    const { runtime, read } = cgroupRuntime(cgroup.path);
    const { logger, entries } = recordingLogger();
    await using dir = await modelsDir();
    {
      await using pool = await Pool.start(
        poolOptions(dir.path, { runtime, logger, oomScoreAdj: adj }),
      );
      assert.equal(pool.status().workers.length, 2);
      // The ready workers' reads of the count, and (warned or not) the look.
      await read(`${base}/memory.events`, 3);
      if (adj > 0) await read(`${base}/memory.oom.group`, 1);
    }
    const warnings = entries.filter(([level, message]) =>
      level === "warn" && message.includes("memory.oom.group")
    );
    assert.equal(warnings.length, warned, `${group} ${adj}`);
  }
});

Deno.test("Pool.close waits for the reads of the cgroup's OOM count that nobody awaits (a ready worker's note, the start's group-kill look): none is still open when it resolves", async () => {
  // Under load a worker's ready note (or the start's look at
  // memory.oom.group) still read its file when close() resolved: an open
  // file and a read the test sanitizers reported (pool_batching_test, 3 in
  // 40 runs beside 6 CPU hogs). Here every read of the cgroup's files waits
  // until the pool's plugins were told it closed.
  await using cgroup = await tempDir();
  await write(cgroup.path, "/proc/self/cgroup", "0::/\n");
  await write(cgroup.path, "/sys/fs/cgroup/memory.events", v2Events(0));
  await write(cgroup.path, "/sys/fs/cgroup/memory.oom.group", "0\n");
  const base = cgroupRuntime(cgroup.path).runtime;
  const closed = Promise.withResolvers<void>();
  const started = Promise.withResolvers<void>();
  let open = 0;
  const runtime: Runtime = {
    ...base,
    readFile: async (path, options) => {
      if (path !== "/proc/self/cgroup" && !path.startsWith("/sys/fs/cgroup/")) {
        return await base.readFile(path, options);
      }
      open++;
      started.resolve();
      try {
        await closed.promise;
        return await base.readFile(path, options);
      } finally {
        open--;
      }
    },
  };
  await using dir = await modelsDir();
  const pids = new PidTracker();
  try {
    const pool = await Pool.start({
      workers: 1,
      modelsDir: dir.path,
      handleSignals: false,
      runtime,
      plugins: [{ name: "closed", onPoolClosed: () => closed.resolve() }],
    });
    pids.watch(pool);
    await started.promise;
    await pool.close();
    assert.equal(open, 0, "cgroup reads still open once close() resolved");
  } finally {
    await pids.assertGone();
  }
});
