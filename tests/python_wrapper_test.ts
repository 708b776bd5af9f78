// A `python` that is a wrapper running the interpreter as its child (`uv
// run`, `conda run`, a shell script without `exec`): the pool knows the
// server by its own pid and signals its process group.
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import { PythonServer } from "../src/python_server.ts";
import { innerServerPid } from "../src/_inner_server_pid.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import {
  alive,
  assertGone,
  modelsDir,
  poolOptions,
  readyAgain,
  spawnHost,
  writeHostScript,
} from "./_pool_harness.ts";

const SPAWNER = `import os, subprocess
class Spawner:
    def execute(self, msg):
        p = subprocess.Popen(["sleep", "300"])
        return {"sleep": p.pid, "server": os.getpid()}
`;

/** A wrapper script that runs this machine's python3 as its child (no exec). */
async function wrapper(): Promise<{ python: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-wrapper-test-" });
  const python = `${dir}/python`;
  await Deno.writeTextFile(
    python,
    `#!/bin/sh
python3 "$@"
exit $?
`,
  );
  await Deno.chmod(python, 0o755);
  return {
    python,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** Kills what a failed test left (never a pid of 0 or below). */
function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      if (pid > 0) Deno.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

Deno.test("PythonServer under a wrapper: pid is the Python server's own, not the wrapper's", async () => {
  await using wrapped = await wrapper();
  await using dir = await modelsDir();
  const server = await PythonServer.start({
    path: dir.path,
    python: wrapped.python,
  });
  try {
    // The pid its ready line gave, which the OS confirms under the wrapper.
    assert.equal(server.pid, server.ready.pid);
    const stat = await Deno.readTextFile(`/proc/${server.pid}/stat`);
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    assert.notEqual(ppid, Deno.pid, "the server is not under the wrapper");
    await using session = await server.connect();
    assert.equal(await session.ping(), "pong");
  } finally {
    await server.kill("SIGKILL");
  }
  await assertGone([server.pid]);
});

Deno.test("Pool under a python wrapper: eval output beyond the first window streams, a cancel interrupts the code, and model children end with close()", async () => {
  await using wrapped = await wrapper();
  await using dir = await modelsDir();
  const pids: number[] = [];
  try {
    const pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, python: wrapped.python }),
    );
    let out: { sleep: number; server: number } | undefined;
    try {
      await pool.addModel("spawner", { source: SPAWNER });
      out = await pool.execute("spawner", {}) as {
        sleep: number;
        server: number;
      };
      pids.push(out.sleep, out.server);
      assert.equal(pool.status().workers[0]?.pid, out.server);
      // 4 MB of prints: several times the output window, which waits for
      // the host's acknowledgements (before the fix: refused, the output
      // stopped after the first window and the eval timed out).
      const atom = pool.eval(
        "for i in range(40000): print('x' * 99)",
        { timeout: 20_000 },
      );
      let printed = 0;
      for await (const chunk of atom.output) printed += chunk.data.length;
      assert.equal(await atom.result, null);
      assert.equal(printed, 4_000_000);
      // A cancel reaches the code (before the fix: refused, and the worker
      // was killed after the cancel's grace).
      const sleeper = pool.eval(
        "import time\nprint('started', flush=True)\nfor i in range(600): time.sleep(0.05)",
      );
      const reader = sleeper.output.getReader();
      assert.match((await reader.read()).value?.data ?? "", /started/);
      reader.releaseLock();
      sleeper.cancel();
      await assert.rejects(sleeper.result, { name: "CancelledError" });
      assert.equal(pool.status().workers[0]?.restarts, 0);
      assert.equal(pool.status().workers[0]?.pid, out.server);
    } finally {
      await pool.close();
    }
    // What model code started went with its server's group.
    await assertGone([out.sleep, out.server]);
  } finally {
    killAll(pids);
  }
});

Deno.test("Pool under a python wrapper: a server killed with SIGKILL takes the processes its model started with it, and the worker restarts", async () => {
  await using wrapped = await wrapper();
  await using dir = await modelsDir();
  const pids: number[] = [];
  try {
    // The crash quarantine off (loadCrashWindow 0): the kill, within 3 s of
    // the model's load, held its replay on the restarted worker 3 s; what
    // the pool makes of such a death is pool_load_crash_test's.
    await using pool = await Pool.start(
      poolOptions(dir.path, {
        workers: 1,
        python: wrapped.python,
        loadCrashWindow: 0,
      }),
    );
    await pool.addModel("spawner", { source: SPAWNER });
    const out = await pool.execute("spawner", {}) as {
      sleep: number;
      server: number;
    };
    pids.push(out.sleep, out.server);
    const back = readyAgain(pool, "w1");
    Deno.kill(out.server, "SIGKILL");
    await assertGone([out.sleep]);
    await back;
    const again = await pool.execute("spawner", {}) as {
      sleep: number;
      server: number;
    };
    pids.push(again.sleep, again.server);
    assert.notEqual(again.server, out.server);
    assert.equal(pool.status().workers[0]?.pid, again.server);
    assert.ok(alive(again.sleep));
  } finally {
    killAll(pids);
  }
});

Deno.test("Pool under a python wrapper: a host killed with SIGKILL leaves no server nor process of model code behind", async () => {
  // The servers' parent is the wrapper, which outlives the host: each server
  // sees the host gone through --host-pid (its stdin's end, then its pid),
  // and ends its process group.
  await using wrapped = await wrapper();
  await using dir = await modelsDir();
  const script = await writeHostScript(
    dir.path,
    `await pool.addModel("spawner", { source: ${JSON.stringify(SPAWNER)} });
const out = [];
for (const worker of ["w1", "w2"]) {
  const r = await pool.request("executeModel", { name: "spawner", msg: {} }, { worker });
  out.push(r.sleep, r.server);
}
console.log(JSON.stringify(out));`,
    `python: ${JSON.stringify(wrapped.python)}`,
  );
  await using host = spawnHost(script);
  host.pids = await host.firstLine() as number[];
  assert.equal(host.pids.length, 4);
  host.child.kill("SIGKILL");
  await host.child.status;
  await assertGone(host.pids, 8000);
});

Deno.test("innerServerPid adopts only a group leader that descends from the spawned child", async () => {
  const runtime = defaultRuntime();
  // Not a wrapper: the same pid.
  assert.equal(await innerServerPid(runtime, Deno.pid, Deno.pid), undefined);
  // Never 1 or below, nor the host itself.
  assert.equal(await innerServerPid(runtime, 4242, 1), undefined);
  assert.equal(await innerServerPid(runtime, 4242, 0), undefined);
  assert.equal(await innerServerPid(runtime, 4242, -7), undefined);
  assert.equal(await innerServerPid(runtime, 4242, Deno.pid), undefined);
  // A pid that does not exist.
  assert.equal(await innerServerPid(runtime, Deno.pid, 2 ** 22 + 1), undefined);
  // A group leader that is not a descendant of the "child" named.
  const leader = new Deno.Command("python3", {
    args: [
      "-c",
      "import os, sys\nos.setpgid(0, 0)\nprint(os.getpid(), flush=True)\nsys.stdin.read()",
    ],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  // Its stdout is locked by the pipe: cancelled through the piped stream.
  const out = leader.stdout.pipeThrough(new TextDecoderStream());
  try {
    const reader = out.getReader();
    const pid = Number((await reader.read()).value?.trim());
    reader.releaseLock();
    assert.ok(pid > 0);
    // Its parent is this process: a descendant of Deno.pid, not of pid 4242.
    assert.equal(await innerServerPid(runtime, Deno.pid, pid), pid);
    assert.equal(await innerServerPid(runtime, 4242, pid), undefined);
  } finally {
    leader.kill("SIGKILL");
    await leader.status;
    await out.cancel().catch(() => {});
    await leader.stdin.close().catch(() => {});
  }
});
