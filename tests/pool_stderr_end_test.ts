/**
 * A stop or a failed start leaves no read of an exited server's stderr
 * behind: a process it started outside its group (a wrapper's helper, model
 * code's daemon) may hold the pipe a moment after the server is gone, and
 * `close()` and `Pool.start`'s rejection used to come first, the read still
 * running (Deno's sanitizers, on here, report it as a leak; the tail missed
 * the last words).
 */
import assert from "node:assert/strict";
import { StartError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { modelsDir, poolOptions } from "./_pool_harness.ts";

/**
 * A `python` that starts a holder of its stderr in a session of its own
 * (no group kill reaches it), which outlives the process it watches by
 * `lingerMs`; then runs the server (`exec`: the same pid) or, `frozen`,
 * runs it as a child that it stops after its ready line (no hello ever).
 */
async function holdingPython(
  lingerMs: number,
  frozen: boolean,
): Promise<{ python: string } & AsyncDisposable> {
  const tmp = await Deno.makeTempDir({ prefix: "pyproxy-stderr-end-" });
  const python = `${tmp}/python`;
  await Deno.writeTextFile(
    python,
    `#!/usr/bin/env python3
import os, signal, subprocess, sys
subprocess.Popen(
    ["sh", "-c", "while kill -0 %d 2>/dev/null; do sleep 0.02; done; sleep %s" % (os.getpid(), ${
      lingerMs / 1000
    })],
    start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
)
if not ${frozen ? "True" : "False"}:
    os.execv(sys.executable, [sys.executable] + sys.argv[1:])
child = subprocess.Popen([sys.executable] + sys.argv[1:], stdout=subprocess.PIPE)
line = child.stdout.readline()
os.kill(child.pid, signal.SIGSTOP)
sys.stdout.buffer.write(line)
sys.stdout.flush()
sys.exit(child.wait())
`,
  );
  await Deno.chmod(python, 0o755);
  return {
    python,
    [Symbol.asyncDispose]: () => Deno.remove(tmp, { recursive: true }),
  };
}

Deno.test({
  name:
    "Pool.close waits for an exited server's stderr to end (held a moment by a process outside its group)",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    await using dir = await modelsDir();
    await using held = await holdingPython(300, false);
    const pool = await Pool.start(
      poolOptions(dir.path, { workers: 1, python: held.python }),
    );
    try {
      await pool.addModel("doubler", { file: "doubler.py" });
      assert.deepEqual(await pool.execute("doubler", { x: 2 }), { y: 4 });
    } finally {
      await pool.close();
    }
  },
});

Deno.test({
  name:
    "Pool.start's rejection comes once the failed server's stderr has ended (held a moment by a process outside its group)",
  sanitizeOps: true,
  sanitizeResources: true,
  async fn() {
    await using dir = await modelsDir();
    await using held = await holdingPython(300, true);
    await assert.rejects(
      Pool.start(poolOptions(dir.path, {
        workers: 1,
        python: held.python,
        readyTimeout: Infinity,
        handshakeTimeout: 1000,
      })),
      StartError,
    );
  },
});
