import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { Pool } from "../src/pool.ts";
import { hostDirPrefix, removeDeadHostDirs } from "../src/_dead_host_dirs.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("removeDeadHostDirs removes nothing, and does not fail, without permission to read /proc", async () => {
  const parent = await Deno.makeTempDir({ prefix: "dead-host-dirs-" });
  try {
    const dead = `${parent}/pyproxy-sock-999999999-abc`;
    await Deno.mkdir(dead);
    const runtime = defaultRuntime();
    // As Deno without -A: "Requires all access to /proc/self".
    const denied = {
      ...runtime,
      stat: (path: string) =>
        path.startsWith("/proc")
          ? Promise.reject(
            new Deno.errors.NotCapable(`Requires all access to "${path}"`),
          )
          : runtime.stat(path),
    };
    await removeDeadHostDirs(denied, parent, ["pyproxy-sock"]);
    assert.equal(await exists(dead), true);
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("removeDeadHostDirs removes the directories of dead hosts of the given kinds only", async () => {
  const parent = await Deno.makeTempDir({ prefix: "dead-host-dirs-" });
  try {
    const dead = `${parent}/pyproxy-sock-999999999-abc`; // above any pid_max
    const live = `${parent}/pyproxy-sock-1-abc`; // pid 1 always runs
    const other = `${parent}/pyproxy-other-999999999-abc`; // not a kind asked for
    const old = `${parent}/pyproxy-sock-abc`; // no pid: left alone
    for (const dir of [dead, live, other, old]) await Deno.mkdir(dir);
    await removeDeadHostDirs(defaultRuntime(), parent, ["pyproxy-sock"]);
    assert.deepEqual(
      await Promise.all([dead, live, other, old].map(exists)),
      [false, true, true, true],
    );
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

/** Process `pid`'s start in clock ticks since boot, from /proc. */
async function startTicks(pid: number | "self"): Promise<string> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]!;
}

Deno.test({
  name:
    "hostDirPrefix names the process by its pid and its start, and removeDeadHostDirs removes what an earlier process of the same pid left",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const runtime = defaultRuntime();
    const mine = await startTicks("self");
    assert.equal(
      await hostDirPrefix("pyproxy-sock", runtime),
      `pyproxy-sock-${Deno.pid}-${mine}-`,
    );
    const parent = await Deno.makeTempDir({ prefix: "dead-host-dirs-" });
    try {
      // A container's PID 1 restarted with its emptyDir volumes: the host
      // before it had the same pid, and its directories stayed for good
      // (newcomer21: two socket directories and a spill directory more at
      // every restart).
      const earlier = `${parent}/pyproxy-sock-${Deno.pid}-${
        BigInt(mine) + 1n
      }-abc`;
      const ours = `${parent}/pyproxy-sock-${Deno.pid}-${mine}-abc`;
      const oursOld = `${parent}/pyproxy-sock-${Deno.pid}-abc`; // no start: kept
      const pid1 = await startTicks(1);
      const reused = `${parent}/pyproxy-sock-1-${BigInt(pid1) + 1n}-abc`;
      const live = `${parent}/pyproxy-sock-1-${pid1}-abc`;
      const dead = `${parent}/pyproxy-sock-999999999-5-abc`; // above any pid_max
      const all = [earlier, ours, oursOld, reused, live, dead];
      for (const dir of all) await Deno.mkdir(dir);
      await removeDeadHostDirs(runtime, parent, ["pyproxy-sock"]);
      assert.deepEqual(
        await Promise.all(all.map(exists)),
        [false, true, true, false, true, false],
      );
    } finally {
      await Deno.remove(parent, { recursive: true });
    }
  },
});

Deno.test("Pool.start removes socket and models directories that killed hosts left in the temp directory", async () => {
  const parent = tmpdir();
  const dead = [
    `${parent}/pyproxy-sock-999999999-test${Deno.pid}`,
    `${parent}/pyproxy-models-999999999-test${Deno.pid}`,
    // An earlier process of this one's pid (a container's PID 1 restarted).
    `${parent}/pyproxy-sock-${Deno.pid}-1-test${Deno.pid}`,
  ];
  try {
    for (const dir of dead) await Deno.mkdir(dir);
    await using pool = await Pool.start({ workers: 1, handleSignals: false });
    assert.equal(pool.status().workers[0]?.state, "ready");
    assert.deepEqual(await Promise.all(dead.map(exists)), [
      false,
      false,
      false,
    ]);
  } finally {
    for (const dir of dead) await Deno.remove(dir).catch(() => {});
  }
});

Deno.test("Pool.start spawns its workers while it sweeps dead hosts' directories, and resolves once both are done", async () => {
  const runtime = defaultRuntime();
  const order: string[] = [];
  let spawned!: () => void;
  const firstSpawn = new Promise<void>((resolve) => (spawned = resolve));
  let fallback: ReturnType<typeof setTimeout> | undefined;
  // The sweep's listing of the temp directory waits for the first spawn:
  // a start that swept first would wait for the fallback (then its order
  // tells), one that overlaps them goes on at once.
  const gated = {
    ...runtime,
    readDir: async (path: string) => {
      if (path === runtime.tempDir()) {
        await Promise.race([
          firstSpawn,
          new Promise<void>((
            resolve,
          ) => (fallback = setTimeout(resolve, 10_000))),
        ]);
        clearTimeout(fallback);
        order.push("listed");
      }
      return await runtime.readDir(path);
    },
    spawn: (options: Parameters<typeof runtime.spawn>[0]) => {
      order.push("spawned");
      spawned();
      return runtime.spawn(options);
    },
  };
  const dead = `${tmpdir()}/pyproxy-sock-999999999-overlap${Deno.pid}`;
  try {
    await Deno.mkdir(dead);
    await using pool = await Pool.start({
      workers: 1,
      handleSignals: false,
      runtime: gated,
    });
    assert.equal(pool.status().workers[0]?.state, "ready");
    assert.deepEqual(order.slice(0, 2), ["spawned", "listed"]);
    // Swept before the start resolved.
    assert.equal(await exists(dead), false);
  } finally {
    clearTimeout(fallback);
    await Deno.remove(dead).catch(() => {});
  }
});
