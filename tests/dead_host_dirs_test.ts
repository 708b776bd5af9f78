import assert from "node:assert/strict";
import { tmpdir } from "node:os";
import { Pool } from "../src/pool.ts";
import { removeDeadHostDirs } from "../src/_dead_host_dirs.ts";
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

Deno.test("Pool.start removes socket and models directories that killed hosts left in the temp directory", async () => {
  const parent = tmpdir();
  const dead = [
    `${parent}/pyproxy-sock-999999999-test${Deno.pid}`,
    `${parent}/pyproxy-models-999999999-test${Deno.pid}`,
  ];
  try {
    for (const dir of dead) await Deno.mkdir(dir);
    await using pool = await Pool.start({ workers: 1, handleSignals: false });
    assert.equal(pool.status().workers[0]?.state, "ready");
    assert.deepEqual(await Promise.all(dead.map(exists)), [false, false]);
  } finally {
    for (const dir of dead) await Deno.remove(dir).catch(() => {});
  }
});
