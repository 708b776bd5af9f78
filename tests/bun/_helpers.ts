// Helpers for the Bun suite (node:* only, so they also type-check under Deno).
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type GatewayConfig, resolveConfig, serve } from "../../mod.ts";

/** Whether a process runs (a zombie counts as gone). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(
      stat.lastIndexOf(")") + 2,
      stat.lastIndexOf(")") + 3,
    );
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Polls until none of `pids` runs; throws after `timeoutMs`. */
export async function waitGone(
  pids: Iterable<number>,
  timeoutMs = 5000,
): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let left = [...pids].filter(alive);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    left = left.filter(alive);
  }
  return left;
}

/** A model that echoes its message, or sets and reads the shared cache. */
export const ECHO_MODEL = `
import os
from pyproxy import host

class Echo:
    """Echoes msg; with "cache" it round-trips msg["cache"] through host.cache."""

    def __init__(self, options):
        self.options = options

    def execute(self, msg):
        if "cache" in msg:
            key = "bun-test:" + str(os.getpid())
            host.cache.set(key, msg["cache"])
            got = host.cache.get(key)
            host.cache.delete(key)
            return {"cached": got, "after": host.cache.get(key)}
        return {"msg": msg, "pid": os.getpid()}
`;

/** A model that starts a Python process and a `sleep` (children of its worker). */
export const SPAWNER = `import subprocess, sys
class Spawner:
    def execute(self, msg):
        a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        b = subprocess.Popen(["sleep", "300"])
        return {"pids": [a.pid, b.pid]}
`;

/**
 * Runs `run` against a gateway (one worker, a free port) serving `files`
 * (file name → source) from a temporary models directory, with `cli` options
 * on top; then shuts it down and removes the directory.
 */
export async function withGateway(
  files: Record<string, string>,
  cli: GatewayConfig,
  run: (server: Awaited<ReturnType<typeof serve>>) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-gw-"));
  try {
    for (const [name, source] of Object.entries(files)) {
      await writeFile(join(dir, name), source);
    }
    const config = resolveConfig({
      cwd: dir,
      cli: { port: 0, workers: 1, modelsDir: dir, ...cli },
    });
    const server = await serve(config);
    try {
      await run(server);
    } finally {
      await server.shutdown();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
