/**
 * Every worker process of a pool has a secret of its own (docs/security.md
 * §2): a MAC made with one worker's secret is refused by another, and by
 * the process that replaces a worker. The secrets are read where they leave
 * the host: the first line written to each server's stdin, through a
 * runtime that records each spawn.
 */
import assert from "node:assert/strict";
import { AuthenticationError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { Session } from "../src/session.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { ChildProcess, Runtime } from "../src/runtime/types.ts";
import {
  modelsDir,
  pidOf,
  PidTracker,
  poolOptions,
  readyAgain,
} from "./_pool_harness.ts";

/** What one spawned server was given and where it listens. */
interface Spawned {
  id: string;
  secret: Promise<string>;
  /** The ready line's TCP port (0 for a Unix-only server). */
  port: Promise<number>;
}

/** The default runtime, recording every spawned server's secret and port. */
function recordingRuntime(): { runtime: Runtime; spawned: Spawned[] } {
  const base = defaultRuntime();
  const spawned: Spawned[] = [];
  const runtime: Runtime = {
    ...base,
    spawn(options): ChildProcess {
      const child = base.spawn(options);
      const id = options.args[options.args.indexOf("--id") + 1] ?? "";
      let gotSecret!: (secret: string) => void;
      const secret = new Promise<string>((r) => gotSecret = r);
      const stdin = child.stdin.getWriter();
      let first = true;
      const [stdout, copy] = child.stdout.tee();
      spawned.push({ id, secret, port: readyPort(copy) });
      return {
        pid: child.pid,
        status: child.status,
        stdout,
        stderr: child.stderr,
        kill: (signal) => child.kill(signal),
        killGroup: (signal) => child.killGroup(signal),
        stdin: new WritableStream<Uint8Array>({
          write(chunk) {
            if (first) {
              first = false;
              gotSecret(JSON.parse(new TextDecoder().decode(chunk)).secret);
            }
            return stdin.write(chunk);
          },
          close: () => stdin.close(),
          abort: (reason) => stdin.abort(reason),
        }),
      };
    },
  };
  return { runtime, spawned };
}

/** Reads the ready line from a copy of stdout, then lets the copy go. */
async function readyPort(stdout: ReadableStream<Uint8Array>): Promise<number> {
  const reader = stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  reader.cancel().catch(() => {});
  const line = text.slice(0, text.indexOf("\n"));
  return (JSON.parse(line) as { port?: number | null }).port ?? 0;
}

/** Authenticates to `port` with `secret`: `"ok"` or the error's name. */
async function tryAuth(port: number, secret: string): Promise<string> {
  try {
    const session = await Session.connect({ port, secret });
    await session.close();
    return "ok";
  } catch (err) {
    assert.ok(err instanceof AuthenticationError, String(err));
    return err.name;
  }
}

Deno.test("Pool gives each worker process its own secret: one worker's MAC is refused by another", async () => {
  await using dir = await modelsDir();
  const { runtime, spawned } = recordingRuntime();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { transport: "tcp", runtime }),
    );
    pids.watch(pool);
    const [w1, w2] = ["w1", "w2"].map((id) =>
      spawned.find((s) => s.id === id)!
    );
    const [secret1, secret2] = await Promise.all([w1!.secret, w2!.secret]);
    const [port1, port2] = await Promise.all([w1!.port, w2!.port]);
    assert.equal(await tryAuth(port2, secret1), "AuthenticationError");
    assert.equal(await tryAuth(port1, secret2), "AuthenticationError");
    assert.match(secret1, /^[0-9a-f]{64}$/);
    // Each secret does open its own worker.
    assert.equal(await tryAuth(port1, secret1), "ok");
    assert.equal(await tryAuth(port2, secret2), "ok");
  } finally {
    await pids.assertGone();
  }
});

Deno.test("Pool gives a restarted worker a new secret, and the pool still reaches it", async () => {
  await using dir = await modelsDir();
  const { runtime, spawned } = recordingRuntime();
  const pids = new PidTracker();
  try {
    await using pool = await Pool.start(
      poolOptions(dir.path, { transport: "tcp", workers: 1, runtime }),
    );
    pids.watch(pool);
    await pool.addModel("whoami", { file: "whoami.py" });
    const old = await spawned[0]!.secret;
    const back = readyAgain(pool, "w1");
    Deno.kill(pidOf(pool, "w1"), "SIGKILL");
    await back;
    assert.equal(spawned.length, 2);
    const port = await spawned[1]!.port;
    assert.equal(await tryAuth(port, old), "AuthenticationError");
    // The pool's own session (and the model replay) used the new secret.
    const out = await pool.execute<{ pid: number }>("whoami", {});
    assert.equal(out.pid, pidOf(pool, "w1"));
  } finally {
    await pids.assertGone();
  }
});
