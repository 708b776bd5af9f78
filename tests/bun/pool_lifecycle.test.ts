// The pool's lifecycle under Bun: readyTimeout bounding the whole start
// (StartTimeoutError), a stream's idle timeout, helper modules in a model's
// snapshot, a model command applied late on a worker (model-resync), a
// model's close() at pool.close(), per-model timeouts and the slot index a
// pool's env function gets.
import { expect, test } from "bun:test";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import {
  Pool,
  type PoolEvent,
  StartError,
  StartTimeoutError,
  StreamIdleError,
  TimeoutError,
} from "../../mod.ts";
import { waitGone } from "./_helpers.ts";

/** Runs `run` with a fresh temporary directory, removed after. */
async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-life-"));
  try {
    await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The first event of `type` from `pool` from now on. */
async function nextEvent(pool: Pool, type: PoolEvent["type"]) {
  for await (const event of pool.events()) {
    if (event.type === type) return event;
  }
  throw new Error(`Pool closed before a ${type} event`);
}

/**
 * A readyTimeout longer than a wrapper's start then the server's (twice a
 * start: on a busy machine more than a fixed 1500 ms) — four times one start
 * here and now, at least `least` ms — as tests/pool_faults_test.ts does.
 */
async function readyTimeoutFor(least: number): Promise<number> {
  const t0 = performance.now();
  await (await Pool.start({ workers: 1, handleSignals: false })).close();
  return Math.max(least, Math.ceil(4 * (performance.now() - t0)));
}

/** Polls `check` every 20 ms until it holds; fails naming `what` after 10 s. */
async function until(check: () => Promise<boolean>, what: string) {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test(
  "Pool.start on Bun: readyTimeout bounds the ready line and the handshake (StartTimeoutError)",
  async () => {
    await withDir(async (dir) => {
      const python = join(dir, "python");
      // Never prints its ready line.
      await writeFile(
        python,
        "#!/usr/bin/env python3\nimport time\ntime.sleep(60)\n",
      );
      await chmod(python, 0o755);
      const start = (readyTimeout: number) =>
        Pool.start({ workers: 1, python, readyTimeout, handleSignals: false })
          .then(() => undefined, (err: unknown) => err);
      const silent = await start(1000);
      expect(silent).toBeInstanceOf(StartError);
      expect((silent as StartError).cause).toBeInstanceOf(StartTimeoutError);
      expect(((silent as StartError).cause as StartTimeoutError).details)
        .toMatchObject({ phase: "ready", timeoutMs: 1000 });
      // Passes the real server's ready line on, then stops it: no hello.
      const pidFile = join(dir, "server.pid");
      await writeFile(
        python,
        `#!/usr/bin/env python3
import os, signal, subprocess, sys
child = subprocess.Popen([sys.executable] + sys.argv[1:], stdout=subprocess.PIPE)
with open(${JSON.stringify(pidFile)}, "w") as f:
    f.write(str(child.pid))
line = child.stdout.readline()
os.kill(child.pid, signal.SIGSTOP)
sys.stdout.buffer.write(line)
sys.stdout.flush()
sys.exit(child.wait())
`,
      );
      // A fixed 1500 ms ran out before the ready line under load (phase
      // "ready"): the bound must outlast two starts.
      const readyTimeout = await readyTimeoutFor(1500);
      const frozen = await start(readyTimeout);
      expect(frozen).toBeInstanceOf(StartError);
      const cause = (frozen as StartError).cause;
      expect(cause).toBeInstanceOf(StartTimeoutError);
      expect((cause as StartTimeoutError).details).toEqual({
        phase: "handshake",
        step: "hello",
        timeoutMs: readyTimeout,
        id: "w1",
      });
      expect((cause as StartTimeoutError).cause).toBeInstanceOf(TimeoutError);
      expect(await waitGone([Number(await readFile(pidFile, "utf8"))]))
        .toEqual([]);
    });
  },
  60_000,
);

test(
  "Pool on Bun: a stream whose reader takes no item for idleTimeout is cancelled (StreamIdleError)",
  async () => {
    await withDir(async (dir) => {
      const marker = join(dir, "closed");
      await using pool = await Pool.start({ workers: 1, handleSignals: false });
      await pool.addModel("gen", {
        source:
          "class Gen:\n    def execute(self, msg):\n        try:\n            while True:\n                yield 1\n        finally:\n            open(msg['marker'], 'w').write('closed')\n",
      });
      const stream = pool.executeStream("gen", { marker }, {
        idleTimeout: 300,
      });
      const it = stream[Symbol.asyncIterator]();
      expect((await it.next()).value).toBe(1);
      await until(
        () => readFile(marker, "utf8").then((t) => t === "closed", () => false),
        "the generator's finally",
      );
      const err = await it.next().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(StreamIdleError);
      expect((err as StreamIdleError).code).toBe("STREAM_IDLE");
      await until(
        () => Promise.resolve(pool.status().workers[0]!.inFlight === 0),
        "the stream's slot to go",
      );
    });
  },
  30_000,
);

test(
  "Pool on Bun: a restarted worker runs the helper modules the model was loaded with",
  async () => {
    await withDir(async (dir) => {
      await writeFile(join(dir, "helper_mod.py"), 'VALUE = "old"\n');
      await writeFile(
        join(dir, "uses.py"),
        "import helper_mod\nclass Uses:\n    def execute(self, msg):\n        return helper_mod.VALUE\n",
      );
      await using pool = await Pool.start({
        workers: 1,
        modelsDir: dir,
        handleSignals: false,
      });
      await pool.addModel("uses", { file: "uses.py" });
      expect(await pool.execute("uses", {})).toBe("old");
      await writeFile(join(dir, "helper_mod.py"), 'VALUE = "new"\n');
      const pid = pool.status().workers[0]!.pid as number;
      const restarted = nextEvent(pool, "restarting");
      process.kill(pid, "SIGKILL");
      await restarted;
      await until(
        () => Promise.resolve(pool.status().workers[0]!.state === "ready"),
        "the restarted worker",
      );
      expect(await pool.execute("uses", {})).toBe("old");
    });
  },
  30_000,
);

test(
  "Pool.updateModel on Bun: a worker that applies an update given up on late is resynced (model-resync)",
  async () => {
    await withDir(async (dir) => {
      const release = join(dir, "release");
      const version = (v: number) =>
        `import os, time\n\nclass A:\n    def __init__(self, options):\n` +
        `        if ${v} == 2 and os.environ.get("PYPROXY_TEST_SLOT") == "w2":\n` +
        `            end = time.monotonic() + 30\n` +
        `            while not os.path.exists(${
          JSON.stringify(release)
        }) and time.monotonic() < end:\n` +
        `                time.sleep(0.01)\n\n` +
        `    def execute(self, msg):\n        return {"v": ${v}}\n`;
      await writeFile(join(dir, "a.py"), version(1));
      await using pool = await Pool.start({
        workers: 2,
        modelsDir: dir,
        handleSignals: false,
        env: (id) => ({ PYPROXY_TEST_SLOT: id }),
        plugins: {
          use: [{
            // A cancel that would come just after the worker registered
            // the model (the race): simulated by never sending it.
            name: "no-cancel",
            onRequest(msg) {
              if (msg.cmd === "cancel") throw new Error("cancel withheld");
            },
          }],
        },
      });
      const onEach = () =>
        Promise.all(
          ["w1", "w2"].map((worker) =>
            pool.execute<{ v: number }>("a", {}, { worker }).then((r) => r.v)
          ),
        );
      await pool.addModel("a", { file: "a.py" });
      await writeFile(join(dir, "a.py"), version(2));
      const err = await pool.updateModel("a", { file: "a.py" }, {
        timeout: 500,
      }).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(TimeoutError);
      expect(await onEach()).toEqual([1, 1]);
      const resynced = nextEvent(pool, "model-resync");
      await writeFile(release, "");
      expect(await resynced).toEqual({
        type: "model-resync",
        worker: "w2",
        name: "a",
        ok: true,
      });
      expect(await onEach()).toEqual([1, 1]);
    });
  },
  30_000,
);

test(
  "Pool.close on Bun: every model's close() runs before the worker exits, one slower than the stop's 1 s too",
  async () => {
    await withDir(async (dir) => {
      const log = join(dir, "closes.log");
      await writeFile(
        join(dir, "closer.py"),
        "import os, time\n\nclass Closer:\n    close_timeout_ms = 3000\n\n" +
          "    def execute(self, msg):\n        return msg\n\n" +
          "    def close(self):\n        time.sleep(1.5)\n" +
          `        with open(${
            JSON.stringify(log)
          }, "a") as f:\n            f.write("%d closed\\n" % os.getpid())\n`,
      );
      const pool = await Pool.start({
        workers: 1,
        modelsDir: dir,
        handleSignals: false,
        shutdownGrace: 0,
      });
      const pid = pool.status().workers[0]!.pid as number;
      try {
        await pool.addModel("closer", { file: "closer.py" });
      } finally {
        await pool.close();
      }
      expect(await readFile(log, "utf8")).toBe(`${pid} closed\n`);
      expect(pool.status().workers[0]!.lastExit?.code).toBe(0);
      expect(await waitGone([pid])).toEqual([]);
    });
  },
  20_000,
);

test(
  "Pool on Bun: a model's timeout (spec, then its class's timeout_ms) bounds its calls; env(id, { index }) per slot, an index reused after a resize",
  async () => {
    await withDir(async (dir) => {
      await writeFile(
        join(dir, "slow.py"),
        "import os, time\n\nclass Slow:\n    timeout_ms = 200\n\n" +
          "    def execute(self, msg):\n        time.sleep(msg['s'])\n" +
          "        return os.environ.get('SLOT')\n",
      );
      const pool = await Pool.start({
        workers: 2,
        modelsDir: dir,
        handleSignals: false,
        requestTimeout: 5000,
        maxInFlightPerWorker: 1,
        env: (id, { index }) => ({ SLOT: `${id}:${index}` }),
      });
      try {
        await pool.addModel("own", { file: "slow.py" });
        await pool.addModel("spec", { file: "slow.py", timeout: 600 });
        expect([pool.modelTimeout("own"), pool.modelTimeout("spec")])
          .toEqual([200, 600]);
        const failed = (name: string, s: number) =>
          pool.execute(name, { s }).then(() => undefined, (err) => err);
        // Four calls on two idle slots: two wait in the queue past their 200 ms.
        const four = await Promise.all(
          [0, 1, 2, 3].map(() => failed("own", 0.3)),
        );
        expect(four.every((e) => e instanceof TimeoutError)).toBe(true);
        expect(pool.queueWaits().abandoned.timeout.count).toBe(2);
        expect(await failed("own", 0.3)).toBeInstanceOf(TimeoutError);
        // Past what the class allows; by then both slots are idle again.
        expect(await pool.execute("spec", { s: 0.4 })).toMatch(/^w\d:\d$/);
        const slots = async () =>
          (await Promise.all(
            [0, 1].map(() => pool.execute("spec", { s: 0.2 })),
          ))
            .sort();
        expect(await slots()).toEqual(["w1:0", "w2:1"]);
        await pool.resize(1);
        await pool.resize(2);
        expect(pool.status().workers.map((w) => [w.id, w.index]))
          .toEqual([["w1", 0], ["w3", 1]]);
        expect(await slots()).toEqual(["w1:0", "w3:1"]);
      } finally {
        await pool.close();
      }
    });
  },
  30_000,
);
