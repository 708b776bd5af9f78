// Test harness: a throwaway redis-server on a free loopback port, or undefined when redis is not installed.

/** A running redis-server, killed by `await using`. */
export interface RedisServer extends AsyncDisposable {
  port: number;
  /** Kills it (SIGKILL) and waits for the exit. */
  kill(): Promise<void>;
  /** Starts it again on the same port (after `kill`). */
  restart(): Promise<void>;
}

/** Whether `redis-server` is on the PATH. */
export function hasRedis(): boolean {
  try {
    return new Deno.Command("which", {
      args: ["redis-server"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

async function spawnRedis(port: number): Promise<Deno.ChildProcess> {
  const child = new Deno.Command("redis-server", {
    args: [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let log = "";
  const decoder = new TextDecoder();
  const reader = child.stdout.getReader();
  try {
    while (!log.includes("Ready to accept connections")) {
      const { value, done } = await reader.read();
      if (done) {
        throw new Error(`redis-server exited before it was ready:\n${log}`);
      }
      log += decoder.decode(value, { stream: true });
    }
  } catch (err) {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    throw err;
  }
  // Keep draining so the child never blocks on a full pipe.
  (async () => {
    try {
      while (!(await reader.read()).done) { /* discard */ }
    } catch { /* killed */ }
  })();
  child.stderr.cancel();
  return child;
}

/** Starts redis-server on a free port; resolves once it accepts connections. */
export async function startRedis(): Promise<RedisServer> {
  const port = freePort();
  let child: Deno.ChildProcess | undefined = await spawnRedis(port);
  const kill = async () => {
    if (child === undefined) return;
    const c = child;
    child = undefined;
    try {
      c.kill("SIGKILL");
    } catch { /* exited */ }
    await c.status;
  };
  return {
    port,
    kill,
    async restart() {
      await kill();
      child = await spawnRedis(port);
    },
    [Symbol.asyncDispose]: kill,
  };
}
