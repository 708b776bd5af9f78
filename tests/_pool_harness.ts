/**
 * Helpers for the pool tests: a temp models directory with small test
 * models, a pid tracker that proves no Python process outlives a test, and
 * waiting for pool events, the options of the fault tests, and a host
 * process to kill.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Pool, type PoolEvent, type PoolOptions } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";

/** python/tests/models: the Python test models. */
const TEST_MODELS =
  new URL("../python/tests/models/", import.meta.url).pathname;
import { reconnect, type ReconnectOptions } from "../plugins/reconnect.ts";

/** Test models, by file name. */
export const MODELS: Record<string, string> = {
  "doubler.py": await Deno.readTextFile(
    new URL("../examples/models/doubler.py", import.meta.url),
  ),
  // Marks its start in the file msg.started, waits for the file msg.go to
  // exist, then exits with code 3: a crash at a moment the test chooses.
  "crash_on_go.py": `
import os, time
class CrashOnGo:
    def execute(self, msg):
        open(msg["started"], "w").close()
        while not os.path.exists(msg["go"]):
            time.sleep(0.005)
        os._exit(3)
`,
  "whoami.py": `
import os

class WhoAmI:
    """Returns the worker's pid and echoes msg."""

    def __init__(self, options):
        self.options = options

    def execute(self, msg):
        return {"pid": os.getpid(), "msg": msg}
`,
  "slow.py": `
import os
import threading
import time

class Slow:
    """Sleeps msg["ms"] milliseconds, then answers with its pid (and whether
    it ran inline: on the server's event loop, the main thread)."""

    def __init__(self, options):
        pass

    def execute(self, msg):
        time.sleep(msg.get("ms", 0) / 1000.0)
        inline = threading.current_thread() is threading.main_thread()
        return {"pid": os.getpid(), "i": msg.get("i"), "inline": inline}
`,
  // The \`slow\` model with \`inline = True\`: inline from its first call, and
  // never made threaded by the server for a slow inline call. A model that
  // learned inline (8 calls under 1 ms on average) is made threaded again by
  // one inline call slower than 20 ms (DEMOTE_AFTER), or an average over
  // 2 ms: on a loaded machine a call of 0 ms preempted that long did so after
  // a test saw it inline, the slow call then ran on a thread, held no loop,
  // and the test waited for a \`busy\` event or a kill that could not come.
  // Tests of the host's side once a call holds the loop use this one; only
  // the host's \`threaded: true\` (protocol §6) runs it threaded.
  "inline_slow.py": `
import os
import threading
import time

class Slow:
    inline = True

    def __init__(self, options):
        pass

    def execute(self, msg):
        time.sleep(msg.get("ms", 0) / 1000.0)
        inline = threading.current_thread() is threading.main_thread()
        return {"pid": os.getpid(), "i": msg.get("i"), "inline": inline}
`,
  "freezer.py": `
import os
import signal

class Freezer:
    """Stops its own process (SIGSTOP): the worker is alive but wedged."""

    def __init__(self, options):
        pass

    def execute(self, msg):
        os.kill(os.getpid(), signal.SIGSTOP)
        return {}
`,
  "picky.py": `
import os

class Picky:
    """Refuses to load on the worker named in options["refuse"] (PYPROXY_TEST_SLOT)."""

    def __init__(self, options):
        if os.environ.get("PYPROXY_TEST_SLOT") == options.get("refuse"):
            raise RuntimeError("refusing to load here")

    def execute(self, msg):
        return {"ok": True}
`,
  "broken.py": `
raise ImportError("this model cannot be imported")
`,
};

/** A temp directory holding {@linkcode MODELS}; removed on dispose. */
export async function modelsDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "pyproxy-pool-test-" });
  for (const [name, source] of Object.entries(MODELS)) {
    await Deno.writeTextFile(`${path}/${name}`, source);
  }
  return {
    path,
    [Symbol.asyncDispose]: () =>
      Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

/** Whether a process is running (a zombie counts as gone). */
export function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(
      stat.lastIndexOf(")") + 2,
      stat.lastIndexOf(")") + 3,
    );
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Polls until none of `pids` runs; fails after `timeoutMs`. */
export async function assertGone(
  pids: Iterable<number>,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let left = [...pids].filter(alive);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    left = left.filter(alive);
  }
  assert.deepEqual(
    left,
    [],
    `python processes still running: ${left.join(", ")}`,
  );
}

/** Records every worker pid a pool ever had. */
export class PidTracker {
  readonly pids = new Set<number>();
  #offs: Array<() => void> = [];

  /** Starts watching `pool` (records the current pids at once). */
  watch(pool: Pool): this {
    const collect = () => {
      for (const w of pool.status().workers) {
        if (w.pid !== null) this.pids.add(w.pid);
      }
    };
    collect();
    this.#offs.push(pool.on(collect));
    return this;
  }

  /** Stops watching and asserts that every recorded process is gone. */
  async assertGone(timeoutMs = 5000): Promise<void> {
    for (const off of this.#offs.splice(0)) off();
    await assertGone(this.pids, timeoutMs);
  }
}

/** A pending {@linkcode nextEvent}; `cancel()` stops waiting (its timer cleared). */
export type NextEvent<E> = Promise<E> & { cancel(): void };

/**
 * Resolves with the first event matching `match` (listening starts now).
 * Its rejection (no such event within `timeoutMs`) fails whoever awaits it,
 * and nothing else: a test that failed before awaiting it leaves it behind,
 * and unhandled it failed the test running 15 s later with every test after
 * it "cancelled" (one failure of tests/inline_poison_test.ts on a loaded
 * machine read as all of its tests cancelled and five failed). One that
 * loses a race is `cancel()`ed: its timer would otherwise outlive the test
 * (Deno's op sanitizer).
 */
export function nextEvent<T extends PoolEvent["type"]>(
  pool: Pool,
  type: T,
  match: (ev: Extract<PoolEvent, { type: T }>) => boolean = () => true,
  timeoutMs = 15000,
): NextEvent<Extract<PoolEvent, { type: T }>> {
  let cancel = () => {};
  const promise = new Promise<Extract<PoolEvent, { type: T }>>(
    (resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`no ${type} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = pool.on((ev) => {
        if (ev.type === type && match(ev as Extract<PoolEvent, { type: T }>)) {
          clearTimeout(timer);
          off();
          resolve(ev as Extract<PoolEvent, { type: T }>);
        }
      });
      cancel = () => {
        clearTimeout(timer);
        off();
      };
    },
  );
  promise.catch(() => {});
  return Object.assign(promise, { cancel });
}

/** Resolves when worker `id` becomes ready again. */
export function readyAgain(pool: Pool, id: string): Promise<unknown> {
  return nextEvent(
    pool,
    "worker-state",
    (ev) => ev.worker === id && ev.to === "ready",
  );
}

/** The pid of worker `id` (asserts it runs). */
export function pidOf(pool: Pool, id: string): number {
  const pid = pool.status().workers.find((w) => w.id === id)?.pid;
  assert.ok(typeof pid === "number", `worker ${id} has no pid`);
  return pid;
}

/** The worker id whose process has this pid. */
export function idOfPid(pool: Pool, pid: number): string | undefined {
  return pool.status().workers.find((w) => w.pid === pid)?.id;
}

/**
 * Options of the fault tests: two workers in `dir`, no signal handlers, and
 * `reconnect` with fast backoff and no heartbeat (unless `policy` says so).
 */
export function poolOptions(
  dir: string,
  extra: PoolOptions = {},
  policy: ReconnectOptions = {},
): PoolOptions {
  return {
    workers: 2,
    modelsDir: dir,
    handleSignals: false,
    plugins: [
      reconnect({
        backoff: { initial: 10, max: 50 },
        heartbeatInterval: 0,
        ...policy,
      }),
    ],
    ...extra,
  };
}

/**
 * Writes `host.ts` into `dir`: it starts a two-worker `Pool` on `dir`, runs
 * `body` (which must print one JSON line), then idles until killed.
 */
export async function writeHostScript(
  dir: string,
  body: string,
  startOptions = "",
): Promise<string> {
  const script = `${dir}/host.ts`;
  await Deno.writeTextFile(
    script,
    `import { Pool } from ${
      JSON.stringify(new URL("../src/pool.ts", import.meta.url).href)
    };
const pool = await Pool.start({ workers: 2, modelsDir: ${JSON.stringify(dir)}${
      startOptions ? `, ${startOptions}` : ""
    } });
${body}
setInterval(() => {}, 1000);
`,
  );
  return script;
}

/** A host process started by {@linkcode spawnHost}. */
export interface HostProcess extends AsyncDisposable {
  readonly child: Deno.ChildProcess;
  /** Worker pids to SIGKILL on dispose, should they outlive the host. */
  pids: number[];
  /** The first line the host prints, parsed as JSON. */
  firstLine(): Promise<unknown>;
}

/**
 * Runs `script` with this project's deno.json; on dispose kills it and any
 * of its {@linkcode HostProcess.pids} still running.
 */
export function spawnHost(script: string): HostProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      "--config",
      new URL("../deno.json", import.meta.url).pathname,
      script,
    ],
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  return {
    child,
    pids: [],
    async firstLine(): Promise<unknown> {
      const reader = child.stdout.pipeThrough(new TextDecoderStream())
        .getReader();
      let text = "";
      while (!text.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      reader.cancel().catch(() => {});
      return JSON.parse(text.trim());
    },
    async [Symbol.asyncDispose](): Promise<void> {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.status;
      for (const pid of this.pids) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // gone, as it should be
        }
      }
    },
  };
}

/**
 * Starts a pool on python/tests/models with exactly `plugins` (no defaults)
 * and loads one model from there; closes the pool if the model fails to load.
 */
export async function startPoolWithModel(
  plugins: Plugin[],
  model: { name: string; file: string },
  workers = 1,
): Promise<Pool> {
  const pool = await Pool.start({
    workers,
    modelsDir: TEST_MODELS,
    handleSignals: false,
    plugins: { defaults: false, use: plugins },
  });
  try {
    await pool.addModel(model.name, { file: model.file });
  } catch (err) {
    await pool.close();
    throw err;
  }
  return pool;
}

/**
 * A `python` for a pool's `python` option, wrapping the real one. `frozen`
 * (the default): it runs the server as its child, passes its ready line on
 * and stops it (SIGSTOP) at once: ready and listening, but never saying
 * hello. Else it becomes the server (`exec`: the same pid). With
 * `holdStderrMs`, it first starts a holder of its stderr in a session of its
 * own (no group kill reaches it), which outlives the wrapper by that long.
 * `serverPid()` is the real server's; disposing removes the script.
 */
export async function wrapperPython(
  options: { frozen?: boolean; holdStderrMs?: number } = {},
): Promise<{ python: string; serverPid(): Promise<number> } & AsyncDisposable> {
  const tmp = await Deno.makeTempDir({ prefix: "pyproxy-wrapper-" });
  const python = `${tmp}/python`;
  const pidFile = `${tmp}/server.pid`;
  const hold = options.holdStderrMs === undefined ? "" : `subprocess.Popen(
    ["sh", "-c", "while kill -0 %d 2>/dev/null; do sleep 0.02; done; sleep %s" % (os.getpid(), ${
    options.holdStderrMs / 1000
  })],
    start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
)
`;
  const run = options.frozen === false
    ? `with open(${JSON.stringify(pidFile)}, "w") as f:
    f.write(str(os.getpid()))
os.execv(sys.executable, [sys.executable] + sys.argv[1:])
`
    : `child = subprocess.Popen([sys.executable] + sys.argv[1:], stdout=subprocess.PIPE)
with open(${JSON.stringify(pidFile)}, "w") as f:
    f.write(str(child.pid))
line = child.stdout.readline()
os.kill(child.pid, signal.SIGSTOP)
sys.stdout.buffer.write(line)
sys.stdout.flush()
sys.exit(child.wait())
`;
  await Deno.writeTextFile(
    python,
    `#!/usr/bin/env python3
import os, signal, subprocess, sys
${hold}${run}`,
  );
  await Deno.chmod(python, 0o755);
  return {
    python,
    serverPid: async () => Number(await Deno.readTextFile(pidFile)),
    [Symbol.asyncDispose]: () => Deno.remove(tmp, { recursive: true }),
  };
}
