/**
 * Helpers for the pool tests: a temp models directory with small test
 * models, a pid tracker that proves no Python process outlives a test, and
 * waiting for pool events.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Pool, PoolEvent } from "../src/pool.ts";

/** Test models, by file name. */
export const MODELS: Record<string, string> = {
  "doubler.py": await Deno.readTextFile(
    new URL("../examples/models/doubler.py", import.meta.url),
  ),
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
import time

class Slow:
    """Sleeps msg["ms"] milliseconds, then answers with its pid."""

    def __init__(self, options):
        pass

    def execute(self, msg):
        time.sleep(msg.get("ms", 0) / 1000.0)
        return {"pid": os.getpid(), "i": msg.get("i")}
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

/** Resolves with the first event matching `match` (listening starts now). */
export function nextEvent<T extends PoolEvent["type"]>(
  pool: Pool,
  type: T,
  match: (ev: Extract<PoolEvent, { type: T }>) => boolean = () => true,
  timeoutMs = 15000,
): Promise<Extract<PoolEvent, { type: T }>> {
  return new Promise((resolve, reject) => {
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
  });
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
