/**
 * `serve` under Deno with permissions narrower than `-A`, on a terminal:
 * Deno reads `/proc`, `/dev` and `/sys` only with `--allow-all`, and asks
 * for them on a terminal otherwise (then refuses them even when allowed).
 * The gateway treats those reads as optional, so it must start without a
 * prompt.
 *
 * @module
 */
import assert from "node:assert/strict";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

/**
 * Runs its arguments on a new pseudo-terminal (Python's `pty`, stdlib):
 * prints `pid N` (the child's), then copies the terminal's output; a
 * SIGTERM is passed on to the child; exits with the child's status.
 */
const ON_A_TERMINAL = `
import os, pty, signal, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
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
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
`;

/** A program running on a pseudo-terminal ({@linkcode onATerminal}). */
interface OnATerminal extends AsyncDisposable {
  /** Reads until the terminal's text matches `pattern`, or it ends, or 60 s. */
  readUntil(pattern: RegExp): Promise<void>;
  /** The terminal's text so far. */
  readonly out: string;
  /** Passes SIGTERM on; its exit code once the terminal's text is all read. */
  stop(): Promise<number>;
  /** Its exit code. */
  code(): Promise<number>;
}

/**
 * Runs `argv` on a new pseudo-terminal in `cwd`; disposed, it and its
 * wrapper are killed and their pipes closed.
 */
function onATerminal(argv: string[], cwd: string): OnATerminal {
  const child = new Deno.Command("python3", {
    args: ["-c", ON_A_TERMINAL, ...argv],
    cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  let out = "";
  let pid: number | undefined;
  let ended = false;
  const more = async (): Promise<boolean> => {
    const { value, done } = await reader.read();
    if (done) {
      ended = true;
      return false;
    }
    out += value;
    pid ??= Number(/^pid (\d+)/.exec(out)?.[1]) || undefined;
    return true;
  };
  return {
    get out() {
      return out;
    },
    async readUntil(pattern) {
      const deadline = setTimeout(() => reader.cancel(), 60_000);
      try {
        while (!ended && !pattern.test(out) && await more()) {
          // reads on
        }
      } finally {
        clearTimeout(deadline);
      }
    },
    async stop() {
      child.kill("SIGTERM");
      while (!ended && await more()) {
        // the rest of its text
      }
      return (await child.status).code;
    },
    async code() {
      return (await child.status).code;
    },
    async [Symbol.asyncDispose]() {
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
      await reader.cancel().catch(() => {});
      await child.stdin.close().catch(() => {});
      await child.stderr.cancel().catch(() => {});
    },
  };
}

/**
 * Starts `serve` with `args` under narrow permissions on a terminal; fails
 * when it asks for a permission instead of listening; stops it with SIGTERM
 * and expects a clean exit.
 */
async function startsWithoutPrompt(
  args: string[],
  permissions?: (repo: string, tmp: string) => string[],
): Promise<void> {
  const repo = new URL("..", import.meta.url).pathname;
  const tmp = Deno.env.get("TMPDIR") ?? "/tmp";
  await using term = onATerminal([
    Deno.execPath(),
    "run",
    ...(permissions?.(repo, tmp) ?? [
      `--allow-read=${repo},${tmp}`,
      `--allow-write=${tmp}`,
      "--allow-net",
      "--allow-run",
      "--allow-env",
      "--allow-sys",
    ]),
    `${repo}mod.ts`,
    "serve",
    "--port",
    "0",
    "--workers",
    "1",
    ...args,
  ], repo);
  await term.readUntil(/listening on|Deno requests/);
  // A prompt waits for an answer: the terminal's text says for what.
  assert.ok(
    !term.out.includes("Deno requests"),
    `serve asked for a permission: ${term.out.slice(term.out.indexOf("Deno"))}`,
  );
  assert.match(term.out, /listening on https?:\/\/127\.0\.0\.1:\d+/);
  // It drains and exits as usual (its worker with it).
  assert.equal(await term.stop(), 0, term.out);
}

Deno.test({
  name:
    "serve with Deno permissions narrower than -A starts on a terminal without asking for /proc or /dev/shm",
  sanitizeResources: false,
  fn: () => startsWithoutPrompt([]),
});

Deno.test({
  name:
    "serve over TLS with Deno permissions narrower than -A starts without asking for /proc (the port sharers' check)",
  ignore: !HAS_OPENSSL,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-perm-tls-" });
    try {
      const { cert, key } = await selfSignedCert(dir);
      await startsWithoutPrompt(["--tls-cert", cert, "--tls-key", key]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "serve with an --allow-env list and --allow-read without the temp directory starts on a terminal without asking (OTEL_* and the tokens' variables, the spill directory, the workers' Unix sockets)",
  sanitizeResources: false,
  fn: () =>
    startsWithoutPrompt([], (repo, tmp) => [
      `--allow-read=${repo}`,
      `--allow-write=${tmp}`,
      "--allow-net",
      "--allow-run",
      "--allow-env=PYTHONPATH,HOME",
      "--allow-sys",
    ]),
});

/**
 * Runs a library `Pool` (start, an eval, close) under `permissions` on a
 * terminal; fails when Deno asks for anything.
 */
async function poolRunsWithoutPrompt(permissions: string[]): Promise<void> {
  const repo = new URL("..", import.meta.url).pathname;
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-perm-lib-" });
  const script = `${dir}/app.ts`;
  await Deno.writeTextFile(
    script,
    `import { Pool } from ${JSON.stringify(`${repo}mod.ts`)};
{
  await using pool = await Pool.start({ workers: 1 });
  console.log("result", await pool.eval("6 * 7").result);
}
console.log("closed");
`,
  );
  try {
    await using term = onATerminal([
      Deno.execPath(),
      "run",
      `--config=${repo}deno.json`,
      ...permissions,
      script,
    ], dir);
    await term.readUntil(/Deno requests/);
    assert.ok(
      !term.out.includes("Deno requests"),
      `the pool asked for a permission: ${
        term.out.slice(term.out.indexOf("Deno"))
      }`,
    );
    assert.match(term.out, /result 42\s+closed/);
    assert.equal(await term.code(), 0, term.out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name:
    "a Pool with runtimes.md's narrower Deno permissions (--allow-run=python3, no --allow-sys) starts and closes on a terminal without asking (Deno.uid, Deno.kill of its process group)",
  sanitizeResources: false,
  fn: () =>
    poolRunsWithoutPrompt([
      "--allow-run=python3",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
    ]),
});

Deno.test({
  name:
    "a Pool with an --allow-env list and --allow-read without the temp directory starts and closes on a terminal without asking",
  sanitizeResources: false,
  fn: () =>
    poolRunsWithoutPrompt([
      "--allow-run=python3",
      "--allow-net",
      `--allow-read=${new URL("..", import.meta.url).pathname}`,
      "--allow-write",
      "--allow-env=HOME",
    ]),
});

/** A model that starts a `sleep` and a child that ignores SIGTERM; returns their pids. */
const STARTS_PROCESSES = `
import subprocess, sys

class Model:
    def execute(self, msg):
        sleep = subprocess.Popen(["sleep", "1000"])
        stubborn = subprocess.Popen([sys.executable, "-c",
            "import signal, sys, time\\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
            "sys.stdout.write('ready\\\\n'); sys.stdout.flush()\\n"
            "time.sleep(1000)"], stdout=subprocess.PIPE)
        assert stubborn.stdout.readline() == b"ready\\n"  # SIGTERM ignored
        return [sleep.pid, stubborn.pid]
`;

/** Whether `pid` runs (Linux's `/proc`; a zombie does not). */
function running(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "a Pool under --allow-run=python3 (no signal to its workers' process groups) leaves nothing its models started running after close()",
  ignore: Deno.build.os !== "linux",
  sanitizeResources: false,
  async fn() {
    const repo = new URL("..", import.meta.url).pathname;
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-perm-group-" });
    const script = `${dir}/app.ts`;
    const source = JSON.stringify(STARTS_PROCESSES);
    await Deno.writeTextFile(
      script,
      `import { Pool } from ${JSON.stringify(`${repo}mod.ts`)};
{
  await using pool = await Pool.start({ workers: 2 });
  await pool.addModel("starts", { source: ${source} });
  const pids = [];
  for (let i = 0; i < 2; i++) pids.push(...await pool.execute("starts", {}));
  console.log("pids", JSON.stringify(pids));
}
console.log("closed");
`,
    );
    let pids: number[] = [];
    try {
      const { code, stdout, stderr } = await new Deno.Command(
        Deno.execPath(),
        {
          args: [
            "run",
            `--config=${repo}deno.json`,
            "--allow-run=python3",
            "--allow-net",
            "--allow-read",
            "--allow-write",
            "--allow-env",
            script,
          ],
          cwd: dir,
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        },
      ).output();
      const out = new TextDecoder().decode(stdout);
      pids = JSON.parse(/^pids (.*)$/m.exec(out)?.[1] ?? "[]");
      assert.equal(
        code,
        0,
        `${out}\n${new TextDecoder().decode(stderr)}`,
      );
      assert.match(out, /closed/);
      assert.equal(pids.length, 4, out);
      // Each worker ended its group as it exited, before close() returned.
      assert.deepEqual(pids.filter(running), [], "left running");
    } finally {
      for (const pid of pids) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // ended
        }
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "serve under --allow-run=python3 leaves nothing its models started running after its shutdown (SIGTERM)",
  ignore: Deno.build.os !== "linux",
  sanitizeResources: false,
  async fn() {
    const repo = new URL("..", import.meta.url).pathname;
    const tmp = Deno.env.get("TMPDIR") ?? "/tmp";
    const dir = await Deno.makeTempDir({ prefix: "pyproxy-perm-serve-" });
    await Deno.mkdir(`${dir}/models`);
    await Deno.writeTextFile(`${dir}/models/starts.py`, STARTS_PROCESSES);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        `--allow-read=${repo},${dir},${tmp}`,
        `--allow-write=${dir},${tmp}`,
        "--allow-net",
        "--allow-run=python3",
        "--allow-env",
        "--allow-sys",
        `${repo}mod.ts`,
        "serve",
        "--port",
        "0",
        "--workers",
        "1",
        "--models",
        `${dir}/models`,
      ],
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    const reader = child.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    let out = "";
    const pids: number[] = [];
    try {
      let url: string | undefined;
      while (url === undefined) {
        const { value, done } = await reader.read();
        if (done) break;
        out += value;
        url = /listening on (http:\/\/\S+)/.exec(out)?.[1];
      }
      // (Its stderr ends with it: read only once it did.)
      if (url === undefined) {
        assert.fail(`no listening line: ${out}\n${await stderr}`);
      }
      const res = await fetch(`${url}/v1/models/starts/execute`, {
        method: "POST",
        body: "{}",
      });
      const body = await res.text();
      assert.equal(res.status, 200, body);
      pids.push(...JSON.parse(body));
      assert.equal(pids.length, 2, body);
      child.kill("SIGTERM");
      const { code } = await child.status;
      assert.equal(code, 0, await stderr);
      // Its worker ended its group as it exited, before serve did.
      assert.deepEqual(pids.filter(running), [], "left running");
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited
      }
      await child.status;
      await reader.cancel().catch(() => {});
      await stderr.catch(() => {});
      for (const pid of pids) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // ended
        }
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});
