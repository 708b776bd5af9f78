import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import {
  MODELS,
  modelsDir,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";

/** The names in `<dir>/logs`, sorted. */
async function logNames(dir: string): Promise<string[]> {
  return (await logNamesIn(`${dir}/logs`)).sort();
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
    let logDir = "";
    try {
      {
        await using pool = await Pool.start(
          poolOptions(dir.path, { workers: 2, transport }),
        );
        pids.watch(pool);
        // The default, of this (new) models directory: its own, empty.
        logDir = pool.logDir!;
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
      assert.deepEqual((await logNamesIn(logDir)).sort(), [
        ".models-dir",
        "pythonserverslot0.log",
        "pythonserverslot0.log.lock",
        "pythonserverslot1.log",
        "pythonserverslot1.log.lock",
        "pythonserverslot2.log",
        "pythonserverslot2.log.lock",
      ]);
      // The slot's log holds the crashed process's lines, then its
      // restart's, then each later slot's of that index: nothing truncated.
      const one = await listened(`${logDir}/pythonserverslot1.log`);
      assert.deepEqual(one.slice(0, 2), seen);
      assert.deepEqual(
        one.map((l) => l.split(" ")[0]),
        ["w2", "w2", "w3", "w5", "w7"],
      );
      assert.deepEqual(
        (await listened(`${logDir}/pythonserverslot2.log`))
          .map((l) => l.split(" ")[0]),
        ["w4", "w6", "w8"],
      );
    } finally {
      await pids.assertGone();
      if (logDir !== "") await Deno.remove(logDir, { recursive: true });
    }
  });
}

Deno.test("Pool without logDir logs outside its models directory (a watcher of the models sees no change from calls), the same directory each start, and <modelsDir>/logs keeps the old place", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  const dirs: string[] = [];
  // What a watcher of the models directory sees while a pool serves from it.
  const watcher = Deno.watchFs(dir.path);
  try {
    for (let i = 0; i < 2; i++) {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1 }),
      );
      pids.watch(pool);
      await pool.addModel("doubler", { file: "doubler.py" });
      await pool.execute("doubler", { x: 2 });
      dirs.push(pool.logDir!);
    }
    // A change of our own last: the events before it came before it.
    const marker = `${dir.path}/marker.txt`;
    await Deno.writeTextFile(marker, "x");
    const seen = new Set<string>();
    for await (const event of watcher) {
      if (event.paths.includes(marker)) break;
      for (const path of event.paths) seen.add(path);
    }
    assert.deepEqual([...seen], []);
    await Deno.remove(marker);
    // Before: <modelsDir>/logs, written at every call (`deno test
    // --watch=models/` restarted for ever).
    assert.deepEqual(
      await logNamesIn(dir.path).then((n) => n.sort()),
      [
        ...Object.keys(MODELS),
      ].sort(),
    );
    const real = await Deno.realPath(dir.path);
    const name = real.slice(real.lastIndexOf("/") + 1);
    assert.equal(dirs[0], dirs[1]);
    assert.match(
      dirs[0]!,
      new RegExp(
        `^${
          (Deno.env.get("TMPDIR") ?? "/tmp").replace(/\/+$/, "")
        }/pyproxy-logs-${Deno.uid()}/${name}-[0-9a-f]{8}$`,
      ),
    );
    assert.equal((await Deno.stat(dirs[0]!)).mode! & 0o777, 0o700);
    assert.equal(
      (await Deno.stat(`${dirs[0]}/..`)).mode! & 0o777,
      0o700,
    );
    // Both starts' lines, in the one file of slot 0.
    assert.equal(
      (await listened(`${dirs[0]}/pythonserverslot0.log`)).length,
      2,
    );
    // The old place, asked for: as before, the workers' own default.
    {
      await using pool = await Pool.start(
        poolOptions(dir.path, { workers: 1, logDir: `${dir.path}/logs` }),
      );
      pids.watch(pool);
      assert.equal(pool.logDir, `${dir.path}/logs`);
    }
    assert.ok((await logNames(dir.path)).includes("pythonserverslot0.log"));
  } finally {
    watcher.close();
    await pids.assertGone();
    for (const d of new Set(dirs)) {
      if (d) await Deno.remove(d, { recursive: true });
    }
  }
});

Deno.test("Pool.start removes the default log directories of models directories that are gone, and keeps the others", async () => {
  const pids = new PidTracker();
  const made: string[] = [];
  try {
    const logDirOf = async (models: string) => {
      await using pool = await Pool.start(
        poolOptions(models, { workers: 1 }),
      );
      pids.watch(pool);
      made.push(pool.logDir!);
      return pool.logDir!;
    };
    // A test's models directory, removed after its pool closed.
    const gone = await modelsDir();
    const goneLogs = await logDirOf(gone.path);
    assert.equal(
      await Deno.readTextFile(`${goneLogs}/.models-dir`),
      await Deno.realPath(gone.path),
    );
    await gone[Symbol.asyncDispose]();
    await using kept = await modelsDir();
    const keptLogs = await logDirOf(kept.path);
    // The next start (another models directory) sweeps the first one's.
    await using next = await modelsDir();
    await logDirOf(next.path);
    await assert.rejects(Deno.stat(goneLogs), Deno.errors.NotFound);
    assert.ok((await Deno.stat(keptLogs)).isDirectory);
  } finally {
    await pids.assertGone();
    for (const d of made) {
      await Deno.remove(d, { recursive: true }).catch(() => {});
    }
  }
});

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
