import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import {
  modelsDir,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";

/** The names in `<dir>/logs`, sorted. */
async function logNames(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(`${dir}/logs`)) names.push(e.name);
  return names.sort();
}

/** The ids and pids of the servers that logged "listening" to `file`, in order. */
async function listened(file: string): Promise<string[]> {
  const text = await Deno.readTextFile(file);
  return [...text.matchAll(/listening: \{.*"id": "(w\d+)".*\} \(pid (\d+)/g)]
    .map((m) => `${m[1]} ${m[2]}`);
}

for (const transport of ["unix", "tcp"] as const) {
  Deno.test(`Pool names its workers' log files after slot indexes (${transport}): resizes add none, a crashed or removed slot's log is kept and appended to`, async () => {
    await using dir = await modelsDir();
    const pids = new PidTracker();
    const seen: string[] = [];
    try {
      {
        await using pool = await Pool.start(
          poolOptions(dir.path, { workers: 2, transport }),
        );
        pids.watch(pool);
        const w2 = pidOf(pool, "w2");
        // A crash: the slot restarts and logs on in the same file.
        const back = readyAgain(pool, "w2");
        Deno.kill(w2, "SIGKILL");
        await back;
        const w2again = pidOf(pool, "w2");
        seen.push(`w2 ${w2}`, `w2 ${w2again}`);
        // Autoscale-like steps: w2 goes, w3 takes its index 1, then w4..w7.
        for (let i = 0; i < 3; i++) {
          await pool.resize(1);
          await pool.resize(3);
        }
        const slots = pool.status().workers;
        assert.deepEqual(
          slots.map((w) => `${w.id}/${w.index}`),
          ["w1/0", "w7/1", "w8/2"],
        );
      }
      // Before: pythonserverw1..w8(.sock).log and their 8 lock files.
      assert.deepEqual(await logNames(dir.path), [
        "pythonserverslot0.log",
        "pythonserverslot0.log.lock",
        "pythonserverslot1.log",
        "pythonserverslot1.log.lock",
        "pythonserverslot2.log",
        "pythonserverslot2.log.lock",
      ]);
      // The slot's log holds the crashed process's lines, then its
      // restart's, then each later slot's of that index: nothing truncated.
      const one = await listened(`${dir.path}/logs/pythonserverslot1.log`);
      assert.deepEqual(one.slice(0, 2), seen);
      assert.deepEqual(
        one.map((l) => l.split(" ")[0]),
        ["w2", "w2", "w3", "w5", "w7"],
      );
      assert.deepEqual(
        (await listened(`${dir.path}/logs/pythonserverslot2.log`))
          .map((l) => l.split(" ")[0]),
        ["w4", "w6", "w8"],
      );
    } finally {
      await pids.assertGone();
    }
  });
}

Deno.test("Pool logDir puts the workers' log files there (made when missing), none in the models directory", async () => {
  await using dir = await modelsDir();
  await using elsewhere = await modelsDir();
  const logDir = `${elsewhere.path}/var/logs`;
  const pids = new PidTracker();
  try {
    {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 2, logDir }),
      );
      pids.watch(pool);
    }
    assert.deepEqual(await logNames(`${elsewhere.path}/var`), [
      "pythonserverslot0.log",
      "pythonserverslot0.log.lock",
      "pythonserverslot1.log",
      "pythonserverslot1.log.lock",
    ]);
    assert.equal((await Deno.stat(logDir)).mode! & 0o777, 0o700);
    await assert.rejects(Deno.stat(`${dir.path}/logs`), Deno.errors.NotFound);
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool.start refuses a logDir it cannot write log files in (a file, a path under a file) with a ConfigError, no worker started", async () => {
  await using dir = await modelsDir();
  const file = `${dir.path}/not-a-dir`;
  await Deno.writeTextFile(file, "x");
  for (const logDir of [file, `${file}/logs`]) {
    await assert.rejects(
      Pool.start(poolOptions(dir.path, { workers: 1, logDir })),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message.startsWith(
          `Cannot start pool: logDir: cannot write log files in '${logDir}'`,
        ) &&
        // What to do about it, for an operator whose disk filled or whose
        // mount went read-only (the on-call walkthrough).
        err.message.endsWith(
          `: give a directory the workers can write in, or "-" for no files (their records go into the pool's log: serve --log-dir -)`,
        ) && (err.details as { field?: unknown }).field === "logDir",
    );
  }
  // The check leaves nothing behind in a directory it can write in.
  const made = `${dir.path}/made/logs`;
  await (await Pool.start(poolOptions(dir.path, { workers: 1, logDir: made })))
    .close();
  assert.ok(
    !(await logNamesIn(made)).some((n) => n.startsWith(".pyproxy-log-check-")),
  );
});

async function logNamesIn(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names;
}
