/**
 * `serve` run from a terminal and stopped with Ctrl-C: the terminal sends
 * SIGINT to its foreground process group, which holds `serve` but not its
 * workers (each leads a group of its own): `serve` drains and a call in
 * flight finishes, rather than every worker stopping at once with it
 * (security25). A real pseudo-terminal (Python's `pty`), a real gateway.
 *
 * @module
 */
import assert from "node:assert/strict";
import { tempDir, writeFiles } from "./_harness.ts";

/**
 * Runs its arguments on a new pseudo-terminal: prints `pid N`, copies the
 * terminal's output, types Ctrl-C (`\x03`) on it for each line read on its
 * stdin; exits with the child's status.
 */
const ON_A_TERMINAL = `
import os, pty, sys, threading
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
def keys():
    for _ in sys.stdin:
        os.write(fd, b"\\x03")
threading.Thread(target=keys, daemon=True).start()
sys.stdout.write("pid %d\\n" % pid)
sys.stdout.flush()
while True:
    try:
        data = os.read(fd, 65536)
    except OSError:
        break
    if not data:
        break
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
_, status = os.waitpid(pid, 0)
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
`;

/** Sleeps `s` seconds, after writing `started` to `file`. */
const SLOW = `import pathlib, time


class Slow:
    def execute(self, msg):
        pathlib.Path(msg["file"]).write_text("started")
        time.sleep(msg["s"])
        return {"slept": msg["s"]}
`;

const TOKEN = "terminal-interrupt-token-0123456789";

Deno.test({
  name:
    "serve on a terminal: Ctrl-C reaches serve alone, which drains, and a call in flight finishes on its worker",
  ignore: Deno.build.os !== "linux",
  sanitizeResources: false,
}, async () => {
  await using dir = await tempDir("pyproxy-ctrl-c-test-");
  await writeFiles(dir.path, { "models/slow.py": SLOW });
  const repo = new URL("..", import.meta.url).pathname;
  const child = new Deno.Command("python3", {
    args: [
      "-c",
      ON_A_TERMINAL,
      Deno.execPath(),
      "run",
      "-A",
      `${repo}mod.ts`,
      "serve",
      "--port",
      "0",
      "--workers",
      "1",
      "--models",
      `${dir.path}/models`,
    ],
    cwd: dir.path,
    env: { PYPROXY_TOKEN: TOKEN, NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const keys = child.stdin.getWriter();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const readUntil = async (pattern: RegExp): Promise<void> => {
    while (!pattern.test(out)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the terminal ended: ${out}`);
      out += value;
    }
  };
  try {
    await readUntil(/listening on (http:\/\/\S+)/);
    const url = /listening on (http:\/\/\S+)/.exec(out)![1]!;
    const started = `${dir.path}/started`;
    const call = fetch(`${url}/v1/models/slow/execute`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ s: 1.5, file: started }),
    });
    // The call under way on its worker.
    for (;;) {
      const there = await Deno.stat(started).then(() => true, () => false);
      if (there) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await keys.write(new TextEncoder().encode("\n"));
    await readUntil(/Received "SIGINT"/);
    const res = await call;
    assert.equal(res.status, 200, out);
    assert.deepEqual(await res.json(), { slept: 1.5 });
    await readUntil(/Stopped/);
    assert.doesNotMatch(out, /exited|died|WorkerCrashed/, out);
    assert.equal((await child.status).code, 0, out);
  } finally {
    // serve first: the terminal's end would send it SIGHUP, a reload.
    const pid = Number(/^pid (\d+)/.exec(out)?.[1]);
    for (
      const kill of [
        () => pid && Deno.kill(pid, "SIGKILL"),
        () => child.kill("SIGKILL"),
      ]
    ) {
      try {
        kill();
      } catch {
        // exited
      }
    }
    await child.status;
    await keys.close().catch(() => {});
    await reader.cancel().catch(() => {});
  }
});
