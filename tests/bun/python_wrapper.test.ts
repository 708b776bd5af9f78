// A `python` that is a wrapper running the interpreter as its child (`uv
// run`, `conda run`, a shell script without `exec`), under Bun: the pool
// knows the server by its own pid and signals its process group, from the
// library and from the gateway.
import { expect, test } from "bun:test";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Pool, type PoolEvent } from "../../mod.ts";
import { alive, waitGone, withGateway } from "./_helpers.ts";

const SPAWNER = `import os, subprocess
class Spawner:
    def execute(self, msg):
        p = subprocess.Popen(["sleep", "300"])
        return {"sleep": p.pid, "server": os.getpid()}
`;

type Spawned = { sleep: number; server: number };

/** Runs `run` with a wrapper script that runs python3 as its child (no exec). */
async function withWrapper(run: (python: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-wrapper-"));
  try {
    const python = join(dir, "python");
    await writeFile(python, '#!/bin/sh\npython3 "$@"\nexit $?\n');
    await chmod(python, 0o755);
    await run(python);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Kills what a failed test left (never a pid of 0 or below). */
function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      if (pid > 0) process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
}

/** Worker `id`'s next move to ready. */
async function readyAgain(pool: Pool, id: string): Promise<void> {
  for await (const event of pool.events()) {
    const e = event as PoolEvent & { worker?: string; to?: string };
    if (e.type === "worker-state" && e.worker === id && e.to === "ready") {
      return;
    }
  }
  throw new Error("Pool closed before its worker was ready again");
}

test(
  "Pool on Bun under a python wrapper: eval output past the first window, a cancel, model children gone after a SIGKILL of the server and after close()",
  async () => {
    await withWrapper(async (python) => {
      const pids: number[] = [];
      try {
        const pool = await Pool.start({
          workers: 1,
          python,
          handleSignals: false,
        });
        let out: Spawned | undefined;
        try {
          await pool.addModel("spawner", { source: SPAWNER });
          const first = await pool.execute<Spawned>("spawner", {});
          pids.push(first.sleep, first.server);
          expect(pool.status().workers[0]?.pid).toBe(first.server);
          // 4 MB of prints: several output windows, each waiting for the
          // host's acknowledgement (refused under the wrapper's pid).
          const atom = pool.eval(
            "for i in range(40000): print('x' * 99)",
            { timeout: 20_000 },
          );
          let printed = 0;
          for await (const chunk of atom.output) printed += chunk.data.length;
          expect(await atom.result).toBeNull();
          expect(printed).toBe(4_000_000);
          // A cancel reaches the code; the worker is not killed for it.
          const sleeper = pool.eval(
            "import time\nprint('started', flush=True)\nfor i in range(600): time.sleep(0.05)",
          );
          const reader = sleeper.output.getReader();
          expect((await reader.read()).value?.data).toContain("started");
          reader.releaseLock();
          sleeper.cancel();
          let error: unknown;
          try {
            await sleeper.result;
          } catch (err) {
            error = err;
          }
          expect((error as Error).name).toBe("CancelledError");
          expect(pool.status().workers[0]).toMatchObject({
            pid: first.server,
            restarts: 0,
          });
          // The server killed: its model's sleep goes with its group.
          const back = readyAgain(pool, "w1");
          process.kill(first.server, "SIGKILL");
          expect(await waitGone([first.sleep, first.server])).toEqual([]);
          await back;
          out = await pool.execute<Spawned>("spawner", {});
          pids.push(out.sleep, out.server);
          expect(out.server).not.toBe(first.server);
          expect(pool.status().workers[0]?.pid).toBe(out.server);
          expect(alive(out.sleep)).toBe(true);
        } finally {
          await pool.close();
        }
        expect(await waitGone([out.sleep, out.server])).toEqual([]);
      } finally {
        killAll(pids);
      }
    });
  },
  30_000,
);

test(
  "serve() on Bun under a python wrapper: an eval streams over 1 MB with its request id, one past its timeout is interrupted without a restart, and model children end with the gateway",
  async () => {
    await withWrapper(async (python) => {
      const token = "bun-wrapper-token-0123456789";
      const headers = { authorization: `Bearer ${token}` };
      const pids: number[] = [];
      try {
        let out: Spawned | undefined;
        await withGateway({ "spawner.py": SPAWNER }, {
          python,
          token,
          allowEval: true,
        }, async (server) => {
          const call = await fetch(`${server.url}/v1/models/spawner/execute`, {
            method: "POST",
            headers,
            body: "{}",
          });
          out = await call.json() as Spawned;
          pids.push(out.sleep, out.server);
          const eval_ = (body: unknown, requestId: string) =>
            fetch(`${server.url}/v1/eval`, {
              method: "POST",
              headers: { ...headers, "x-request-id": requestId },
              body: JSON.stringify(body),
            });
          const res = await eval_({
            code:
              "from pyproxy import host\nfor i in range(20000): print('x' * 99)\nhost.request_id()",
          }, "bun-wrap-1");
          expect(res.status).toBe(200);
          const text = await res.text();
          expect(text.length).toBeGreaterThan(2_000_000);
          expect(text).toEndWith(
            'event: result\ndata: {"value":"bun-wrap-1"}\n\n',
          );
          const timed = await (await eval_({
            code: "import time\nfor i in range(600): time.sleep(0.05)",
            timeout: 500,
          }, "bun-wrap-2")).text();
          expect(timed).toContain('"status":504,"type":"TimeoutError"');
          expect(timed).toContain('"requestId":"bun-wrap-2"');
          const status = await (await fetch(`${server.url}/v1/status`, {
            headers,
          })).json() as { workers: Array<{ pid: number; restarts: number }> };
          expect(status.workers).toMatchObject([
            { pid: out.server, restarts: 0 },
          ]);
        });
        expect(await waitGone([out!.sleep, out!.server])).toEqual([]);
      } finally {
        killAll(pids);
      }
    });
  },
  30_000,
);
