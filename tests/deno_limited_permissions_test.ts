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

/**
 * Starts `serve` with `args` under narrow permissions on a terminal; fails
 * when it asks for a permission instead of listening; stops it with SIGTERM
 * and expects a clean exit.
 */
async function startsWithoutPrompt(args: string[]): Promise<void> {
  const repo = new URL("..", import.meta.url).pathname;
  const tmp = Deno.env.get("TMPDIR") ?? "/tmp";
  const child = new Deno.Command("python3", {
    args: [
      "-c",
      ON_A_TERMINAL,
      Deno.execPath(),
      "run",
      `--allow-read=${repo},${tmp}`,
      `--allow-write=${tmp}`,
      "--allow-net",
      "--allow-run",
      "--allow-env",
      "--allow-sys",
      `${repo}mod.ts`,
      "serve",
      "--port",
      "0",
      "--workers",
      "1",
      ...args,
    ],
    cwd: repo,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let denoPid: number | undefined;
  let out = "";
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    const deadline = setTimeout(() => reader.cancel(), 60_000);
    try {
      while (!/listening on|Deno requests/.test(out)) {
        const { value, done } = await reader.read();
        if (done) break;
        out += value;
        denoPid ??= Number(/^pid (\d+)/.exec(out)?.[1]) || undefined;
      }
    } finally {
      clearTimeout(deadline);
    }
    // A prompt waits for an answer: the terminal's text says for what.
    assert.ok(
      !out.includes("Deno requests"),
      `serve asked for a permission: ${out.slice(out.indexOf("Deno"))}`,
    );
    assert.match(out, /listening on https?:\/\/127\.0\.0\.1:\d+/);
    // It drains and exits as usual (its worker with it).
    child.kill("SIGTERM");
    const rest = reader.read().then(async function drain(r): Promise<void> {
      if (r.done) return;
      out += r.value;
      await reader.read().then(drain);
    });
    const status = await child.status;
    await rest;
    assert.equal(status.code, 0, out);
  } finally {
    if (denoPid !== undefined) {
      try {
        Deno.kill(denoPid, "SIGKILL");
      } catch {
        // exited
      }
    }
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.status;
    await child.stdin.close().catch(() => {});
    await child.stderr.cancel().catch(() => {});
  }
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
  const child = new Deno.Command("python3", {
    args: [
      "-c",
      ON_A_TERMINAL,
      Deno.execPath(),
      "run",
      `--config=${repo}deno.json`,
      ...permissions,
      script,
    ],
    cwd: dir,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let denoPid: number | undefined;
  let out = "";
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    const deadline = setTimeout(() => reader.cancel(), 60_000);
    try {
      while (!/Deno requests/.test(out)) {
        const { value, done } = await reader.read();
        if (done) break;
        out += value;
        denoPid ??= Number(/^pid (\d+)/.exec(out)?.[1]) || undefined;
      }
    } finally {
      clearTimeout(deadline);
    }
    assert.ok(
      !out.includes("Deno requests"),
      `the pool asked for a permission: ${out.slice(out.indexOf("Deno"))}`,
    );
    assert.match(out, /result 42\s+closed/);
    assert.equal((await child.status).code, 0, out);
  } finally {
    if (denoPid !== undefined) {
      try {
        Deno.kill(denoPid, "SIGKILL");
      } catch {
        // exited
      }
    }
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.status;
    await child.stdin.close().catch(() => {});
    await child.stderr.cancel().catch(() => {});
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
