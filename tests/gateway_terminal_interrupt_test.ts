/**
 * `serve` run from a terminal: stopped with Ctrl-C, the terminal sends
 * SIGINT to its foreground process group, which holds `serve` but not its
 * workers (each leads a group of its own): `serve` drains and a call in
 * flight finishes, rather than every worker stopping at once with it. And
 * the terminal's hang-up (its SIGHUP, which `serve` otherwise takes for a
 * reload) stops it (security25). A real pseudo-terminal (Python's `pty`),
 * a real gateway.
 *
 * @module
 */
import assert from "node:assert/strict";
import { tempDir, writeFiles } from "./_harness.ts";

/**
 * Runs its arguments on a new pseudo-terminal: prints `pid N`, copies the
 * terminal's output; for each line read on its stdin, `int` types Ctrl-C
 * (`\x03`) on it, `hup` closes the terminal (this process exits at once, as
 * a terminal window closed); exits with the child's status.
 */
const ON_A_TERMINAL = `
import os, pty, sys, threading
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
def keys():
    for line in sys.stdin:
        if line.strip() == "hup":
            os._exit(0)
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

/** `serve` on a pseudo-terminal ({@linkcode ON_A_TERMINAL}). */
interface ServeOnATerminal extends AsyncDisposable {
  /** The terminal's text so far. */
  readonly out: string;
  /** `serve`'s pid. */
  readonly pid: number;
  /** The gateway's URL. */
  readonly url: string;
  /** Reads until the terminal's text matches `pattern`. */
  readUntil(pattern: RegExp): Promise<void>;
  /** Sends the wrapper a command: `int` (Ctrl-C) or `hup` (the terminal closes). */
  type(command: "int" | "hup"): Promise<void>;
  /** The wrapper's exit status. */
  code(): Promise<number>;
}

/**
 * Starts `serve` (1 worker, `models`) on a terminal, up to its banner, or
 * only up to its start with `banner: false` (`url` is then "").
 */
async function serveOnATerminal(
  cwd: string,
  models: string,
  { banner = true }: { banner?: boolean } = {},
): Promise<ServeOnATerminal> {
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
      models,
    ],
    cwd,
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
  const dispose = async (): Promise<void> => {
    // serve first: the terminal's end would send it SIGHUP.
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
  };
  try {
    await readUntil(banner ? /listening on (http:\/\/\S+)/ : /^pid \d+/);
  } catch (err) {
    await dispose();
    throw err;
  }
  return {
    get out() {
      return out;
    },
    pid: Number(/^pid (\d+)/.exec(out)![1]),
    url: /listening on (http:\/\/\S+)/.exec(out)?.[1] ?? "",
    readUntil,
    type: (command) => keys.write(new TextEncoder().encode(`${command}\n`)),
    code: async () => (await child.status).code,
    [Symbol.asyncDispose]: dispose,
  };
}

/** Whether process `pid` has ended (gone, or a zombie nobody reaped). */
async function ended(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return /^\S+ \(.*\) Z/.test(stat);
  } catch {
    return true;
  }
}

/** Waits (15 s at most) until `serve` and its worker have both ended. */
async function bothEnded(serve: number, worker: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!(await ended(serve) && await ended(worker))) {
    assert.ok(Date.now() < deadline, "serve or its worker still runs");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

Deno.test({
  name:
    "serve on a terminal: Ctrl-C reaches serve alone, which drains, and a call in flight finishes on its worker",
  ignore: Deno.build.os !== "linux",
  sanitizeResources: false,
}, async () => {
  await using dir = await tempDir("pyproxy-ctrl-c-test-");
  await writeFiles(dir.path, { "models/slow.py": SLOW });
  await using serve = await serveOnATerminal(dir.path, `${dir.path}/models`);
  const started = `${dir.path}/started`;
  const call = fetch(`${serve.url}/v1/models/slow/execute`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ s: 1.5, file: started }),
  });
  // The call under way on its worker.
  while (!(await Deno.stat(started).then(() => true, () => false))) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await serve.type("int");
  await serve.readUntil(/Received "SIGINT"/);
  const res = await call;
  assert.equal(res.status, 200, serve.out);
  assert.deepEqual(await res.json(), { slept: 1.5 });
  await serve.readUntil(/Stopped/);
  assert.doesNotMatch(serve.out, /exited|died|WorkerCrashed/, serve.out);
  assert.equal(await serve.code(), 0, serve.out);
});

Deno.test({
  name:
    "serve on a terminal stops when the terminal hangs up (its SIGHUP is no reload then), its worker with it",
  ignore: Deno.build.os !== "linux",
  sanitizeResources: false,
}, async () => {
  // Taken for a reload, the hang-up left the gateway serving (and its
  // workers, eval with them) after its user closed the window or the ssh
  // session, its log written nowhere (security25).
  await using dir = await tempDir("pyproxy-hang-up-test-");
  await writeFiles(dir.path, { "models/slow.py": SLOW });
  await using serve = await serveOnATerminal(dir.path, `${dir.path}/models`);
  const status = await fetch(`${serve.url}/v1/status`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  const worker = (await status.json()).workers[0].pid as number;
  await serve.type("hup");
  await serve.code();
  await bothEnded(serve.pid, worker);
});

Deno.test({
  name:
    "serve on a terminal stops its start when the terminal hangs up while the models load, its worker with it",
  ignore: Deno.build.os !== "linux",
  sanitizeResources: false,
}, async () => {
  // The start took any SIGHUP for one to ignore: it waited for the models
  // (here one whose import takes a minute), then failed writing its banner
  // to the terminal gone ("Input/output error") (chaos48).
  await using dir = await tempDir("pyproxy-hang-up-start-test-");
  const importing = `${dir.path}/importing`;
  await writeFiles(dir.path, {
    "models/slow_import.py": `import pathlib, time
pathlib.Path(${JSON.stringify(importing)}).write_text("started")
time.sleep(60)


class SlowImport:
    def execute(self, msg):
        return msg
`,
  });
  await using serve = await serveOnATerminal(
    dir.path,
    `${dir.path}/models`,
    { banner: false },
  );
  // The model's import under way (the start waits for it).
  while (!(await Deno.stat(importing).then(() => true, () => false))) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const workers = (await new Deno.Command("pgrep", {
    args: ["-f", "--", `--path ${dir.path}/models`],
  }).output()).stdout;
  const worker = Number(new TextDecoder().decode(workers).split("\n")[0]);
  assert.ok(worker > 0, "the worker runs");
  await serve.type("hup");
  await serve.code();
  await bothEnded(serve.pid, worker);
});
