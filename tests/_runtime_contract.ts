// The runtime adapter contract (src/runtime/types.ts), written once and run
// against each adapter: tests/runtime_test.ts (Deno) and
// tests/bun/runtime.test.ts (Bun). Only node:* and Web APIs here, so the same
// file runs on both runtimes.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { stat, symlink } from "node:fs/promises";
import {
  createConnection,
  createServer,
  type Server,
  type Socket,
} from "node:net";
import { join } from "node:path";
import process from "node:process";
import type {
  ChildProcess,
  Connection,
  Runtime,
} from "../src/runtime/types.ts";

/** What a contract check receives. */
export interface ContractContext {
  rt: Runtime;
  /** How to run a TypeScript file with the runtime under test. */
  runScript(file: string, args: string[]): { cmd: string; args: string[] };
}

/** One check of the contract. */
export interface ContractCheck {
  name: string;
  fn(ctx: ContractContext): Promise<void>;
}

const CHILD = new URL("./fixtures/runtime_child.ts", import.meta.url).pathname;

async function listen(
  server: Server,
  where: { port: number } | { path: string },
): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if ("path" in where) server.listen(where.path, resolve);
    else server.listen(where.port, "127.0.0.1", resolve);
  });
}

/** A node:net server; `close()` also destroys the sockets it accepted. */
async function startServer(
  onSocket: (socket: Socket) => void,
  where: { port: number } | { path: string } = { port: 0 },
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.once("close", () => sockets.delete(socket));
    onSocket(socket);
  });
  await listen(server, where);
  const address = server.address();
  return {
    port: typeof address === "object" && address !== null ? address.port : 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

async function readAll(
  readable: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of readable) {
    parts.push(chunk);
    size += chunk.byteLength;
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

async function readText(readable: ReadableStream<Uint8Array>): Promise<string> {
  return new TextDecoder().decode(await readAll(readable));
}

/** Reads until `size` bytes arrived (the peer keeps the connection open). */
async function readExactly(
  conn: Connection,
  size: number,
): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  let at = 0;
  const reader = conn.readable.getReader();
  try {
    while (at < size) {
      const { value, done } = await reader.read();
      if (done) {
        throw new Error(
          `Cannot read: stream ended after ${at} of ${size} bytes`,
        );
      }
      out.set(value, at);
      at += value.byteLength;
    }
  } finally {
    reader.releaseLock();
  }
  return out;
}

/** Many small writes, one per message, as a chatty client would do. */
async function echoRoundTrip(conn: Connection): Promise<void> {
  const writer = conn.writable.getWriter();
  const count = 2000;
  const expected = new Uint8Array(count * 100);
  const writes: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const chunk = new Uint8Array(100).fill(i % 251);
    expected.set(chunk, i * 100);
    writes.push(writer.write(chunk));
  }
  const received = readExactly(conn, expected.byteLength);
  await Promise.all(writes);
  writer.releaseLock();
  assert.deepEqual(await received, expected);
}

async function tempDir(rt: Runtime): Promise<string> {
  return await rt.makeTempDir({ prefix: "pyproxy-contract-" });
}

/** Whether a process runs (Linux /proc; a zombie counts as gone). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch {
    return false;
  }
}

/** Polls until `pid` no longer runs; false if it still does after 5 s. */
async function ends(pid: number): Promise<boolean> {
  const deadline = Date.now() + 5000;
  while (running(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}

/**
 * The first line `child` prints (what came before its stdout ended, if it
 * ended first); its stdout is released and its stderr drained.
 */
async function firstLine(
  child: ChildProcess,
): Promise<{ text: string; stderr: Promise<unknown> }> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  reader.cancel().catch(() => {});
  return { text, stderr: readAll(child.stderr).catch(() => {}) };
}

/**
 * Waits for `child` to end and frees its pipes: stdin closed, `stderr` (its
 * reading) ended. What a test leaves open would be a leak to Deno's
 * sanitizers (a grandchild holds stderr until it is killed too).
 */
async function released(
  child: ChildProcess,
  stderr: Promise<unknown> = Promise.resolve(),
): Promise<void> {
  // Deno's adapter unrefs the child and its pipes: a timer keeps the event
  // loop alive until they are done (as in the kill() check below).
  const keepAlive = setInterval(() => {}, 1 << 30);
  try {
    await child.status;
    await child.stdin.close().catch(() => {});
    await stderr;
  } finally {
    clearInterval(keepAlive);
  }
}

/**
 * Spawns a Python that leads a process group of its own (as a pyproxy
 * server does) and starts a `sleep` in it; resolves with the child and the
 * sleep's pid once both run.
 */
async function groupLeader(
  rt: Runtime,
  processGroup: boolean,
): Promise<
  { child: ChildProcess; grandchild: number; released: Promise<void> }
> {
  const child = rt.spawn({
    cmd: "python3",
    args: [
      "-c",
      "import os, subprocess, sys, time\n" +
      "os.setpgid(0, 0)\n" +
      "p = subprocess.Popen(['sleep', '60'])\n" +
      "print(p.pid, flush=True)\n" +
      "sys.stdin.read()\n",
    ],
    processGroup,
  });
  const { text, stderr } = await firstLine(child);
  const grandchild = Number(text.trim());
  if (!(grandchild > 0)) {
    child.kill("SIGKILL");
    await released(child, stderr);
    throw new Error(
      `Cannot start the group's sleep: got ${JSON.stringify(text)}`,
    );
  }
  return { child, grandchild, released: released(child, stderr) };
}

/**
 * Spawns (with `processGroup`) a wrapper that runs, as its child, a Python
 * that leads a group of its own and starts a `sleep` in it: a pyproxy server
 * under `uv run` or a shell script without `exec`. Resolves with the
 * wrapper, the inner Python's pid and the sleep's.
 */
async function wrappedGroupLeader(
  rt: Runtime,
): Promise<
  {
    child: ChildProcess;
    inner: number;
    grandchild: number;
    released: Promise<void>;
  }
> {
  const inner = "import os, subprocess, sys\n" +
    "os.setpgid(0, 0)\n" +
    "p = subprocess.Popen(['sleep', '60'])\n" +
    "print(os.getpid(), p.pid, flush=True)\n" +
    "sys.stdin.read()\n";
  const child = rt.spawn({
    cmd: "python3",
    args: [
      "-c",
      "import subprocess, sys\n" +
      "sys.exit(subprocess.call([sys.executable, '-c', sys.argv[1]]))\n",
      inner,
    ],
    processGroup: true,
  });
  const { text, stderr } = await firstLine(child);
  const [pid = 0, grandchild = 0] = text.trim().split(" ").map(Number);
  if (!(pid > 0 && grandchild > 0)) {
    child.kill("SIGKILL");
    await released(child, stderr);
    throw new Error(
      `Cannot start the wrapped group: got ${JSON.stringify(text)}`,
    );
  }
  return { child, inner: pid, grandchild, released: released(child, stderr) };
}

/** Every check, in order. */
export const runtimeContract: ContractCheck[] = [
  {
    name: "connect() echoes many small writes over TCP",
    async fn({ rt }) {
      const server = await startServer((s) => s.pipe(s));
      const conn = await rt.connect({
        hostname: "127.0.0.1",
        port: server.port,
      });
      try {
        await echoRoundTrip(conn);
      } finally {
        conn.close();
        await server.close();
      }
    },
  },
  {
    name: "connect() write(), where offered, delivers all of a large buffer",
    async fn({ rt }) {
      const server = await startServer((s) => s.pipe(s));
      const conn = await rt.connect({ port: server.port });
      try {
        if (conn.write === undefined) return; // optional: the writable is used instead
        // Far above the socket buffers: the kernel takes it in parts.
        const data = new Uint8Array(8 * 1024 * 1024);
        for (let i = 0; i < data.length; i += 4096) data[i] = (i >> 12) % 251;
        const received = readExactly(conn, data.length);
        await conn.write(data);
        // Bytes lost by a partial write would leave the reader waiting: fail instead.
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error("Cannot read back all the bytes written")),
            10_000,
          );
        });
        try {
          assert.deepEqual(await Promise.race([received, late]), data);
        } finally {
          clearTimeout(timer);
        }
      } finally {
        conn.close();
        await server.close();
      }
    },
  },
  {
    name: "connect() echoes over a Unix socket",
    async fn({ rt }) {
      const dir = await tempDir(rt);
      const path = join(dir, "echo.sock");
      const server = await startServer((s) => s.pipe(s), { path });
      const conn = await rt.connect({ path });
      try {
        await echoRoundTrip(conn);
      } finally {
        conn.close();
        await server.close();
        await rt.remove(dir, { recursive: true });
      }
    },
  },
  {
    name: "connect() readable ends when the peer closes",
    async fn({ rt }) {
      const server = await startServer((s) => s.end("bye"));
      const conn = await rt.connect({ port: server.port });
      try {
        assert.equal(await readText(conn.readable), "bye");
      } finally {
        conn.close();
        await server.close();
      }
    },
  },
  {
    name: "connect() writable close sends end of file to the peer",
    async fn({ rt }) {
      // Whether our readable survives the close differs (Deno closes both
      // directions, node:net half-closes); the peer seeing the end does not.
      let got = "";
      let ended!: () => void;
      const peerEnded = new Promise<void>((resolve) => (ended = resolve));
      const server = await startServer((s) => {
        s.setEncoding("utf8");
        s.on("data", (d: string) => (got += d));
        s.on("end", () => ended());
      });
      const conn = await rt.connect({ port: server.port });
      try {
        const writer = conn.writable.getWriter();
        await writer.write(new TextEncoder().encode("hello"));
        await writer.close();
        await peerEnded;
        assert.equal(got, "hello");
      } finally {
        conn.close();
        await server.close();
      }
    },
  },
  {
    name: "connect() delivers a large reply that the reader consumes late",
    async fn({ rt }) {
      const size = 8 * 1024 * 1024;
      const payload = new Uint8Array(size);
      for (let i = 0; i < size; i += 4096) payload[i] = (i / 4096) % 256;
      const server = await startServer((s) => s.end(payload));
      const conn = await rt.connect({ port: server.port });
      try {
        // Let the sender run ahead of us so backpressure has to hold it.
        await new Promise((r) => setTimeout(r, 20));
        assert.deepEqual(await readAll(conn.readable), payload);
      } finally {
        conn.close();
        await server.close();
      }
    },
  },
  {
    name: "connect() readable applies backpressure to the sender",
    async fn({ rt }) {
      // 32 MiB is far more than kernel socket buffers plus our read-ahead, so
      // the sender cannot finish until we read.
      const size = 32 * 1024 * 1024;
      let flushed = false;
      const server = await startServer((s) =>
        s.end(new Uint8Array(size), () => (flushed = true))
      );
      const conn = await rt.connect({ port: server.port });
      try {
        await new Promise((r) => setTimeout(r, 100));
        assert.equal(flushed, false);
        assert.equal((await readAll(conn.readable)).byteLength, size);
        assert.equal(flushed, true);
      } finally {
        conn.close();
        await server.close();
      }
    },
  },
  {
    name: "connect() rejects when nothing listens",
    async fn({ rt }) {
      const server = await startServer(() => {});
      const port = server.port;
      await server.close();
      await assert.rejects(rt.connect({ hostname: "127.0.0.1", port }));
    },
  },
  {
    name: "connect() close() is idempotent and ends the readable",
    async fn({ rt }) {
      const server = await startServer(() => {});
      const conn = await rt.connect({ port: server.port });
      try {
        const reading = readAll(conn.readable).then(
          () => "ended",
          () => "errored",
        );
        conn.close();
        conn.close();
        assert.match(await reading, /ended|errored/);
      } finally {
        await server.close();
      }
    },
  },
  {
    name: "spawn() pipes stdio, merges env and reports the exit code",
    async fn({ rt }) {
      const child = rt.spawn({
        cmd: "sh",
        args: [
          "-c",
          'read line; echo "out:$line:$PYPROXY_CONTRACT:${PATH:+path}"; echo err >&2; exit 3',
        ],
        env: { PYPROXY_CONTRACT: "yes" },
      });
      assert.ok(child.pid > 0);
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("hi\n"));
      await writer.close();
      const [out, err, status] = await Promise.all([
        readText(child.stdout),
        readText(child.stderr),
        child.status,
      ]);
      assert.equal(out, "out:hi:yes:path\n");
      assert.equal(err, "err\n");
      assert.deepEqual(status, { code: 3, signal: null });
    },
  },
  {
    name:
      "spawn() unsetEnv keeps a variable out of the child's environment block",
    async fn({ rt }) {
      process.env.PYPROXY_CONTRACT_HIDDEN = "hidden-value";
      process.env.PYPROXY_CONTRACT_KEPT = "kept-value";
      try {
        // /proc/<pid>/environ is the block the child was started with (Linux);
        // `env` prints what its code reads.
        const script = "env | grep '^PYPROXY_CONTRACT_' | sort; " +
          "if [ -r /proc/$$/environ ]; then " +
          "tr '\\0' '\\n' < /proc/$$/environ | grep -c '^PYPROXY_CONTRACT_HIDDEN=' || true; " +
          "else echo 0; fi";
        const run = async (
          options: { unsetEnv?: string[]; env?: Record<string, string> },
        ) => {
          const child = rt.spawn({
            cmd: "sh",
            args: ["-c", script],
            ...options,
          });
          await child.stdin.close();
          const [out] = await Promise.all([
            readText(child.stdout),
            readText(child.stderr),
            child.status,
          ]);
          return out;
        };
        assert.equal(
          await run({ unsetEnv: ["PYPROXY_CONTRACT_HIDDEN"] }),
          "PYPROXY_CONTRACT_KEPT=kept-value\n0\n",
        );
        // With `env` as well: merged, and still without the unset one.
        assert.equal(
          await run({
            unsetEnv: ["PYPROXY_CONTRACT_HIDDEN"],
            env: { PYPROXY_CONTRACT_EXTRA: "x" },
          }),
          "PYPROXY_CONTRACT_EXTRA=x\nPYPROXY_CONTRACT_KEPT=kept-value\n0\n",
        );
        // Given in `env` explicitly, it is passed as given.
        assert.equal(
          await run({
            unsetEnv: ["PYPROXY_CONTRACT_HIDDEN"],
            env: { PYPROXY_CONTRACT_HIDDEN: "explicit" },
          }),
          "PYPROXY_CONTRACT_HIDDEN=explicit\nPYPROXY_CONTRACT_KEPT=kept-value\n1\n",
        );
        // A name ending in * is a prefix (OTEL_*: the host's tracing's).
        assert.equal(
          await run({ unsetEnv: ["PYPROXY_CONTRACT_HID*"] }),
          "PYPROXY_CONTRACT_KEPT=kept-value\n0\n",
        );
        assert.equal(
          await run({
            unsetEnv: ["PYPROXY_CONTRACT_*"],
            env: { PYPROXY_CONTRACT_HIDDEN: "explicit" },
          }),
          "PYPROXY_CONTRACT_HIDDEN=explicit\n1\n",
        );
        // Without unsetEnv everything is inherited.
        assert.equal(
          await run({}),
          "PYPROXY_CONTRACT_HIDDEN=hidden-value\nPYPROXY_CONTRACT_KEPT=kept-value\n1\n",
        );
      } finally {
        delete process.env.PYPROXY_CONTRACT_HIDDEN;
        delete process.env.PYPROXY_CONTRACT_KEPT;
      }
    },
  },
  {
    name: "spawn() runs in cwd",
    async fn({ rt }) {
      const dir = await tempDir(rt);
      try {
        const child = rt.spawn({ cmd: "pwd", args: [], cwd: dir });
        await child.stdin.close();
        const [out] = await Promise.all([
          readText(child.stdout),
          readText(child.stderr),
          child.status,
        ]);
        assert.equal(out.trim(), await rt.realPath(dir));
      } finally {
        await rt.remove(dir, { recursive: true });
      }
    },
  },
  {
    name:
      "spawn() kill() ends the child with the signal and ignores a dead child",
    async fn({ rt }) {
      const child = rt.spawn({ cmd: "sleep", args: ["30"] });
      const drained = Promise.all([
        readAll(child.stdout),
        readAll(child.stderr),
      ]);
      // Deno's adapter unrefs the child (and so its pipes) and keeps the
      // event loop alive only until its status: a pipe's end read after that
      // is all this test waits for, and Deno ended the test as "pending"
      // when the end came after the status (a pool always has more to wait on).
      const keepAlive = setInterval(() => {}, 1 << 30);
      try {
        child.kill("SIGKILL");
        assert.deepEqual(await child.status, { code: null, signal: "SIGKILL" });
        child.kill();
        child.kill("SIGKILL");
        await drained;
      } finally {
        clearInterval(keepAlive);
        child.kill("SIGKILL");
        await released(child);
      }
    },
  },
  {
    name:
      "spawn() processGroup: kill() signals the child's group, killGroup() ends what outlived the child; without it neither reaches the group",
    async fn({ rt }) {
      if (process.platform === "win32") return;
      const pids: number[] = [];
      const freed: Promise<void>[] = [];
      try {
        // kill() reaches what the child started in its group.
        const a = await groupLeader(rt, true);
        freed.push(a.released);
        pids.push(a.child.pid, a.grandchild);
        a.child.kill("SIGTERM");
        assert.deepEqual(await a.child.status, {
          code: null,
          signal: "SIGTERM",
        });
        assert.ok(await ends(a.grandchild), "kill() left the group running");
        // The leader gone alone (killed by someone else): killGroup() ends
        // the rest, even after the child's status has settled.
        const b = await groupLeader(rt, true);
        freed.push(b.released);
        pids.push(b.child.pid, b.grandchild);
        process.kill(b.child.pid, "SIGKILL");
        await b.child.status;
        assert.ok(running(b.grandchild));
        b.child.killGroup("SIGKILL");
        assert.ok(await ends(b.grandchild), "killGroup() left it running");
        // Without processGroup: the child alone, and killGroup() does nothing.
        const c = await groupLeader(rt, false);
        freed.push(c.released);
        pids.push(c.child.pid, c.grandchild);
        c.child.kill("SIGTERM");
        await c.child.status;
        c.child.killGroup("SIGKILL");
        assert.ok(running(c.grandchild), "not a group child: signalled alone");
      } finally {
        for (const pid of pids) {
          try {
            // Never 0 or below: that would signal this process's own group.
            if (pid > 0) process.kill(pid, "SIGKILL");
          } catch {
            // gone
          }
        }
        await Promise.all(freed);
      }
    },
  },
  {
    name:
      "spawn() adoptGroup: kill() and killGroup() also reach the group of a server under a wrapper; without it they do not",
    async fn({ rt }) {
      if (process.platform === "win32") return;
      const pids: number[] = [];
      const freed: Promise<void>[] = [];
      try {
        // kill(): the adopted group (the inner Python and its sleep) too.
        const a = await wrappedGroupLeader(rt);
        freed.push(a.released);
        pids.push(a.child.pid, a.inner, a.grandchild);
        assert.equal(typeof a.child.adoptGroup, "function");
        a.child.adoptGroup!(a.inner);
        a.child.kill("SIGTERM");
        await a.child.status;
        assert.ok(await ends(a.inner), "kill() left the wrapped server");
        assert.ok(await ends(a.grandchild), "kill() left its sleep");
        // The wrapper gone alone (SIGKILL cannot be passed on): killGroup()
        // ends the adopted group, after the wrapper's status settled.
        const b = await wrappedGroupLeader(rt);
        freed.push(b.released);
        pids.push(b.child.pid, b.inner, b.grandchild);
        b.child.adoptGroup!(b.inner);
        process.kill(b.child.pid, "SIGKILL");
        await b.child.status;
        assert.ok(running(b.inner) && running(b.grandchild));
        b.child.killGroup("SIGKILL");
        assert.ok(await ends(b.inner), "killGroup() left the wrapped server");
        assert.ok(await ends(b.grandchild), "killGroup() left its sleep");
        // Not adopted: the wrapper's group is not the server's.
        const c = await wrappedGroupLeader(rt);
        freed.push(c.released);
        pids.push(c.child.pid, c.inner, c.grandchild);
        process.kill(c.child.pid, "SIGKILL");
        await c.child.status;
        c.child.killGroup("SIGKILL");
        assert.ok(running(c.inner) && running(c.grandchild));
        // Never the child's own pid, nor 1 or below.
        c.child.adoptGroup!(c.child.pid);
        c.child.adoptGroup!(1);
        c.child.adoptGroup!(-c.inner);
        c.child.killGroup("SIGKILL");
        assert.ok(running(c.inner), "adopted a refused pgid");
      } finally {
        for (const pid of pids) {
          try {
            // Never 0 or below: that would signal this process's own group.
            if (pid > 0) process.kill(pid, "SIGKILL");
          } catch {
            // gone
          }
        }
        await Promise.all(freed);
      }
    },
  },
  {
    name: "spawn() closing stdin lets a reader child exit",
    async fn({ rt }) {
      const child = rt.spawn({ cmd: "cat", args: [] });
      try {
        const out = readText(child.stdout);
        const writer = child.stdin.getWriter();
        await writer.write(new TextEncoder().encode("line\n"));
        await writer.close();
        assert.equal(await out, "line\n");
        assert.deepEqual(await child.status, { code: 0, signal: null });
        await readAll(child.stderr);
      } finally {
        child.kill("SIGKILL");
      }
    },
  },
  {
    name: "spawn() throws for a missing executable",
    fn({ rt }) {
      assert.throws(() =>
        rt.spawn({ cmd: "/nonexistent/pyproxy-no-such-binary", args: [] })
      );
      return Promise.resolve();
    },
  },
  {
    name: "onSignal(), args() and exit() work in a child running the adapter",
    async fn({ rt, runScript }) {
      const { cmd, args } = runScript(CHILD, ["a", "b c"]);
      const child = rt.spawn({ cmd, args });
      try {
        const reader = child.stdout.pipeThrough(new TextDecoderStream())
          .getReader();
        let text = "";
        while (!text.includes("\n")) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
        const hello = JSON.parse(text.split("\n")[0] ?? "");
        assert.deepEqual(hello, {
          name: rt.name,
          args: ["a", "b c"],
          pid: child.pid,
        });
        child.kill("SIGINT");
        while (true) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
        assert.match(text, /\nsignal\n$/);
        assert.deepEqual(await child.status, { code: 7, signal: null });
        await readAll(child.stderr);
      } finally {
        child.kill("SIGKILL");
        await released(child);
      }
    },
  },
  {
    name:
      "serve() answers fetches on port 0 with the remote address and shuts down",
    async fn({ rt }) {
      const server = await rt.serve(
        { hostname: "127.0.0.1", port: 0 },
        async (req, info) => {
          const body = await req.text();
          return Response.json({
            method: req.method,
            body,
            remote: info.remoteAddr,
          });
        },
      );
      try {
        assert.ok(server.port > 0);
        assert.equal(server.hostname, "127.0.0.1");
        const res = await fetch(`http://127.0.0.1:${server.port}/x`, {
          method: "POST",
          body: "ping",
        });
        assert.deepEqual(await res.json(), {
          method: "POST",
          body: "ping",
          remote: "127.0.0.1",
        });
      } finally {
        await server.shutdown();
      }
      await assert.rejects(
        fetch(`http://127.0.0.1:${server.port}/x`).then((r) =>
          r.body?.cancel()
        ),
      );
    },
  },
  {
    name:
      "serve() request.json() of a body after a byte order mark agrees with jsonDropsBom",
    async fn({ rt }) {
      const server = await rt.serve(
        { hostname: "127.0.0.1", port: 0 },
        (req) =>
          req.json().then(
            (value) => Response.json({ value }),
            (err: Error) => Response.json({ error: err.name }),
          ),
      );
      try {
        // fetch sends a Uint8Array body with its Content-Length.
        const res = await fetch(`http://127.0.0.1:${server.port}/`, {
          method: "POST",
          body: new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d]),
        });
        assert.deepEqual(
          await res.json(),
          rt.jsonDropsBom === true ? { value: {} } : { error: "SyntaxError" },
        );
      } finally {
        await server.shutdown();
      }
    },
  },
  {
    name:
      "serve() sends a streamed response's headers before its first chunk unless streamHeadersWithBody",
    async fn({ rt }) {
      let release = (): void => {};
      const released = new Promise<void>((resolve) => (release = resolve));
      const server = await rt.serve(
        { hostname: "127.0.0.1", port: 0 },
        () =>
          new Response(
            new ReadableStream<Uint8Array>({
              async start(controller) {
                await released;
                controller.enqueue(new TextEncoder().encode("late"));
                controller.close();
              },
            }),
          ),
      );
      try {
        const response = fetch(`http://127.0.0.1:${server.port}/`);
        // Where the headers go at once, the response arrives with no body yet.
        if (rt.streamHeadersWithBody !== true) {
          assert.equal((await response).status, 200);
        }
        release();
        assert.equal(await (await response).text(), "late");
      } finally {
        release();
        await server.shutdown();
      }
    },
  },
  {
    name:
      "serve() shutdown() closes a connection still sending its request headers",
    async fn({ rt }) {
      const server = await rt.serve(
        { hostname: "127.0.0.1", port: 0 },
        () => new Response("ok"),
      );
      const socket = createConnection(server.port, "127.0.0.1");
      socket.on("error", () => {});
      const closed = new Promise<void>((resolve) =>
        socket.once("close", () => resolve())
      );
      try {
        await new Promise<void>((resolve) => socket.once("connect", resolve));
        socket.write("GET / HTTP/1.1\r\nHost: 127");
        // A whole request on another connection, written after: once it is
        // answered, the server has (in practice) read the part above.
        await (await fetch(`http://127.0.0.1:${server.port}/`)).text();
        // Not waiting for the client: Bun's own graceful stop did, until its
        // header timeout (~10 s), so a bound far above the milliseconds this
        // takes tells the two apart.
        let timer: ReturnType<typeof setTimeout> | undefined;
        const waited = await Promise.race([
          server.shutdown().then(() => false),
          new Promise<boolean>((resolve) => {
            timer = setTimeout(() => resolve(true), 5000);
          }),
        ]);
        clearTimeout(timer);
        assert.equal(waited, false, "shutdown() waited for the client");
        await closed;
      } finally {
        socket.destroy();
      }
    },
  },
  {
    name: "serve() passes a request body over 128 MiB to the handler",
    async fn({ rt }) {
      const server = await rt.serve(
        { hostname: "127.0.0.1", port: 0 },
        async (req) => {
          let size = 0;
          for await (const chunk of req.body!) size += chunk.byteLength;
          return Response.json({ size });
        },
      );
      try {
        const chunk = new Uint8Array(1024 * 1024);
        const chunks = 129;
        let sent = 0;
        const body = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent++ < chunks) controller.enqueue(chunk);
            else controller.close();
          },
        });
        const res = await fetch(`http://127.0.0.1:${server.port}/`, {
          method: "POST",
          body,
        });
        assert.equal(res.status, 200);
        assert.deepEqual(await res.json(), { size: chunks * chunk.byteLength });
      } finally {
        await server.shutdown();
      }
    },
  },
  {
    name: "serve() reports the address it bound for a host name",
    async fn({ rt }) {
      const server = await rt.serve(
        { hostname: "localhost", port: 0 },
        () => new Response("ok"),
      );
      try {
        assert.ok(
          ["127.0.0.1", "::1"].includes(server.hostname),
          `hostname ${server.hostname}`,
        );
      } finally {
        await server.shutdown();
      }
    },
  },
  {
    name: "serve() stops when its signal aborts",
    async fn({ rt }) {
      const ac = new AbortController();
      const server = await rt.serve({
        hostname: "127.0.0.1",
        port: 0,
        signal: ac.signal,
      }, () => new Response("ok"));
      const res = await fetch(`http://127.0.0.1:${server.port}/`);
      assert.equal(await res.text(), "ok");
      ac.abort();
      await server.shutdown();
      await assert.rejects(
        fetch(`http://127.0.0.1:${server.port}/`).then((r) => r.body?.cancel()),
      );
    },
  },
  {
    name: "serve() streams a response body",
    async fn({ rt }) {
      const server = await rt.serve({ hostname: "127.0.0.1", port: 0 }, () => {
        const body = new ReadableStream<Uint8Array>({
          async start(controller) {
            for (const part of ["a", "b", "c"]) {
              controller.enqueue(new TextEncoder().encode(part));
              await new Promise((r) => setTimeout(r, 5));
            }
            controller.close();
          },
        });
        return new Response(body, {
          headers: { "content-type": "text/plain" },
        });
      });
      try {
        const res = await fetch(`http://127.0.0.1:${server.port}/`);
        assert.equal(await res.text(), "abc");
      } finally {
        await server.shutdown();
      }
    },
  },
  {
    name: "upgradeWebSocket() opens, exchanges messages and reports the close",
    async fn({ rt }) {
      assert.ok(rt.upgradeWebSocket, "the adapter implements upgradeWebSocket");
      const upgrade = rt.upgradeWebSocket.bind(rt);
      let serverClosed!: (code: number) => void;
      const closedOnServer = new Promise<number>((
        resolve,
      ) => (serverClosed = resolve));
      const server = await rt.serve(
        { hostname: "127.0.0.1", port: 0 },
        (req) => {
          if (req.headers.get("upgrade") !== "websocket") {
            return new Response(
              "plain",
            );
          }
          const { socket, response } = upgrade(req);
          socket.onopen = () => {
            assert.equal(socket.readyState, WebSocket.OPEN);
            assert.equal(typeof socket.bufferedAmount, "number");
            socket.send("hello");
          };
          socket.onmessage = (ev) => socket.send(`echo:${ev.data}`);
          socket.onclose = (ev) => serverClosed(ev.code);
          return response;
        },
      );
      try {
        const ws = new WebSocket(`ws://127.0.0.1:${server.port}/`);
        const received: string[] = [];
        await new Promise<void>((resolve, reject) => {
          ws.onerror = () => reject(new Error("client WebSocket failed"));
          ws.onmessage = (ev) => {
            received.push(String(ev.data));
            if (received.length === 1) ws.send("ping");
            else resolve();
          };
        });
        assert.deepEqual(received, ["hello", "echo:ping"]);
        const closedOnClient = new Promise((resolve) => (ws.onclose = resolve));
        ws.close(4000, "bye");
        assert.equal(await closedOnServer, 4000);
        await closedOnClient;
        assert.equal(
          await (await fetch(`http://127.0.0.1:${server.port}/`)).text(),
          "plain",
        );
      } finally {
        await server.shutdown();
      }
    },
  },
  {
    name:
      "upgradeWebSocket() answers the subprotocol selected, and none when none is (never an offered one it was not given)",
    async fn({ rt }) {
      assert.ok(rt.upgradeWebSocket, "the adapter implements upgradeWebSocket");
      const upgrade = rt.upgradeWebSocket.bind(rt);
      const server = await rt.serve(
        { hostname: "127.0.0.1", port: 0 },
        (req) => {
          const pick = new URL(req.url).pathname === "/pick";
          const { socket, response } = upgrade(
            req,
            pick ? { protocol: "pyproxy.v1" } : {},
          );
          socket.onopen = () => socket.close(1000, "done");
          return response;
        },
      );
      try {
        // Bun, left to itself, answers the first entry offered: a token.
        for (
          const [path, offer, expected] of [
            ["/pick", "pyproxy.bearer.s3cret, pyproxy.v1", "pyproxy.v1"],
            ["/pick", "pyproxy.bearer.s3cret,pyproxy.v1", "pyproxy.v1"],
            ["/none", "pyproxy.bearer.s3cret, pyproxy.v1", undefined],
          ] as const
        ) {
          const head = await handshakeHead(server.port, path, offer);
          assert.match(head, /^HTTP\/1\.1 101 /, head);
          assert.equal(
            /\r\nsec-websocket-protocol: ([^\r]*)/i.exec(head)?.[1],
            expected,
            `${path} ${offer}: ${head}`,
          );
          assert.ok(!head.includes("s3cret"), head);
        }
      } finally {
        await server.shutdown();
      }
    },
  },
  {
    name:
      "files: makeTempDir, writeFile, readFile, stat, readDir, realPath, remove",
    async fn({ rt }) {
      const dir = await tempDir(rt);
      try {
        assert.equal((await stat(dir)).mode & 0o777, 0o700);
        const nested = join(dir, "a", "b");
        await rt.mkdir(nested, 0o700);
        const { mtime: dirTime, ...dirInfo } = (await rt.stat(nested))!;
        assert.deepEqual(dirInfo, {
          isFile: false,
          isDirectory: true,
          size: (await stat(nested)).size,
        });
        // Its modification time in ms (a stale staging directory's age).
        assert.equal(
          Math.floor(dirTime!),
          Math.floor((await stat(nested)).mtimeMs),
        );
        const file = join(dir, "a", "f.bin");
        const data = new Uint8Array([1, 2, 3, 250]);
        await rt.writeFile(file, data);
        assert.equal((await stat(file)).mode & 0o777, 0o600);
        const back = await rt.readFile(file);
        assert.equal(Object.getPrototypeOf(back), Uint8Array.prototype);
        assert.deepEqual(back, data);
        const { mtime: _fileTime, ...fileInfo } = (await rt.stat(file))!;
        assert.deepEqual(fileInfo, {
          isFile: true,
          isDirectory: false,
          size: 4,
        });
        assert.equal(await rt.stat(join(dir, "missing")), null);
        assert.deepEqual((await rt.readDir(join(dir, "a"))).sort(), [
          "b",
          "f.bin",
        ]);
        assert.deepEqual(await rt.readDir(join(dir, "missing")), []);
        assert.equal(
          await rt.realPath(join(nested, "..", "f.bin")),
          await rt.realPath(file),
        );
        await assert.rejects(rt.realPath(join(dir, "missing")));
        await rt.remove(nested);
        assert.equal(await rt.stat(nested), null);
        await rt.remove(join(dir, "missing"));
        await rt.remove(join(dir, "missing"), { recursive: true });
        await assert.rejects(rt.remove(join(dir, "a")));
        await rt.remove(join(dir, "a"), { recursive: true });
        assert.deepEqual(await rt.readDir(dir), []);
      } finally {
        await rt.remove(dir, { recursive: true });
      }
      assert.equal(await rt.stat(dir), null);
    },
  },
  {
    name:
      "openWrite() writes chunks from a reused buffer to a new 0600 file, never through an existing path; openRead() reads them back",
    async fn({ rt }) {
      const dir = await tempDir(rt);
      try {
        const file = join(dir, "chunks.bin");
        // Something already there (a file, a symlink) is refused and left as it is.
        const taken = join(dir, "taken.bin");
        await rt.writeFile(taken, new Uint8Array(10).fill(9));
        await assert.rejects(rt.openWrite(taken));
        if (process.platform !== "win32") {
          await symlink(taken, join(dir, "link.bin"));
          await assert.rejects(rt.openWrite(join(dir, "link.bin")));
          await symlink(join(dir, "nowhere.bin"), join(dir, "dangling.bin"));
          await assert.rejects(rt.openWrite(join(dir, "dangling.bin")));
          assert.equal(await rt.stat(join(dir, "nowhere.bin")), null);
        }
        assert.deepEqual(await rt.readFile(taken), new Uint8Array(10).fill(9));
        const writer = await rt.openWrite(file);
        const buffer = new Uint8Array(3);
        try {
          buffer.set([1, 2, 3]);
          await writer.write(buffer);
          buffer.set([4, 5]);
          await writer.write(buffer.subarray(0, 2));
          await writer.write(new Uint8Array(0));
        } finally {
          await writer.close();
          await writer.close();
        }
        assert.deepEqual(
          await rt.readFile(file),
          new Uint8Array([1, 2, 3, 4, 5]),
        );
        const fresh = join(dir, "fresh.bin");
        const big = new Uint8Array(3 * 1024 * 1024 + 7).map((_, i) => i % 251);
        const second = await rt.openWrite(fresh);
        await second.write(big);
        await second.close();
        assert.equal((await stat(fresh)).mode & 0o777, 0o600);
        const chunks: Uint8Array[] = [];
        const back = await rt.readFile(fresh, {
          onChunk: (chunk) => chunks.push(chunk.slice()),
        });
        assert.equal(Object.getPrototypeOf(back), Uint8Array.prototype);
        assert.equal(back.length, big.length);
        assert.deepEqual(back, big);
        // The chunks are consecutive and cover the file exactly.
        const joined = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
        chunks.reduce((at, c) => (joined.set(c, at), at + c.length), 0);
        assert.deepEqual(joined, big);
        // openRead gives the same bytes through a small reused buffer, then null.
        const reader = await rt.openRead(fresh);
        const back2 = new Uint8Array(big.length);
        let got = 0;
        try {
          const small = new Uint8Array(1 << 20);
          for (let n; (n = await reader.read(small)) !== null;) {
            assert.ok(n > 0 && n <= small.length);
            back2.set(small.subarray(0, n), got);
            got += n;
          }
          assert.equal(await reader.read(small), null);
        } finally {
          await reader.close();
          await reader.close();
        }
        assert.equal(got, big.length);
        assert.deepEqual(back2, big);
        await assert.rejects(rt.openRead(join(dir, "missing")));
        assert.deepEqual(
          await rt.readFile(join(dir, "empty")).catch(() => "missing"),
          "missing",
        );
        await rt.writeFile(join(dir, "empty"), new Uint8Array(0));
        assert.deepEqual(
          await rt.readFile(join(dir, "empty")),
          new Uint8Array(0),
        );
        await assert.rejects(rt.openWrite(join(dir, "no", "such", "dir.bin")));
      } finally {
        await rt.remove(dir, { recursive: true });
      }
    },
  },
  {
    name:
      "owner() gives a path's owner, mode, device and inode without following a symlink, readLink() a link's target; uid() is this process's",
    async fn({ rt }) {
      if (process.platform === "win32") return;
      const dir = await tempDir(rt);
      try {
        const file = join(dir, "f");
        await rt.writeFile(file, new Uint8Array(1));
        const uid = rt.uid!();
        assert.equal(uid, process.getuid!());
        const { dev, ino, ...owner } = (await rt.owner!(file))!;
        assert.deepEqual(owner, { uid, mode: 0o100600 });
        // Its device and inode, to tell one file from another at the path.
        assert.ok(typeof dev === "number" && typeof ino === "number");
        const { dev: _d, ino: dirIno, ...dirOwner } = (await rt.owner!(dir))!;
        assert.deepEqual(dirOwner, { uid, mode: 0o40700 });
        assert.notEqual(dirIno, ino);
        await symlink("/", join(dir, "link"));
        assert.equal(
          (await rt.owner!(join(dir, "link")))!.mode & 0o170000,
          0o120000,
        );
        // What a link says, as written (the secret files' check follows
        // each link on a path's way).
        assert.equal(await rt.readLink!(join(dir, "link")), "/");
        await symlink("../x", join(dir, "relative"));
        assert.equal(await rt.readLink!(join(dir, "relative")), "../x");
        await assert.rejects(rt.readLink!(join(dir, "f")));
        assert.equal(await rt.owner!(join(dir, "missing")), null);
      } finally {
        await rt.remove(dir, { recursive: true });
      }
    },
  },
  {
    name:
      "readRegularFile() reads at most limit + 1 bytes with the open file's owner, mode, device and inode, and gives null for a FIFO at once (no writer awaited) or a directory",
    async fn({ rt }) {
      if (process.platform === "win32") return;
      const dir = await tempDir(rt);
      try {
        const file = join(dir, "f");
        await rt.writeFile(file, new TextEncoder().encode("0123456789"));
        const read = (await rt.readRegularFile!(file, 64))!;
        assert.deepEqual(new TextDecoder().decode(read.bytes), "0123456789");
        // The open file's own owner, mode and identity: those of the path.
        const at = (await rt.owner!(file))!;
        assert.deepEqual(
          [read.uid, read.mode, read.dev, read.ino],
          [at.uid, at.mode, at.dev, at.ino],
        );
        assert.equal(read.mode, 0o100600);
        assert.equal((await rt.readRegularFile!(file, 4))!.bytes.length, 5);
        assert.equal(await rt.readRegularFile!(dir, 64), null);
        await assert.rejects(
          rt.readRegularFile!(join(dir, "missing"), 64),
          (err: { code?: string }) => err.code === "ENOENT",
        );
        const fifo = join(dir, "fifo");
        execFileSync("mkfifo", [fifo]);
        let timer: ReturnType<typeof setTimeout> | undefined;
        try {
          assert.equal(
            await Promise.race([
              rt.readRegularFile!(fifo, 64),
              new Promise((resolve) =>
                timer = setTimeout(resolve, 3000, "blocked")
              ),
            ]),
            null,
          );
        } finally {
          clearTimeout(timer);
        }
      } finally {
        await rt.remove(dir, { recursive: true });
      }
    },
  },
  {
    name: "makeTempDir() honours dir and prefix",
    async fn({ rt }) {
      const parent = await tempDir(rt);
      try {
        const dir = await rt.makeTempDir({ dir: parent, prefix: "inner-" });
        assert.ok(dir.startsWith(join(parent, "inner-")), dir);
        assert.equal((await rt.stat(dir))?.isDirectory, true);
      } finally {
        await rt.remove(parent, { recursive: true });
      }
    },
  },
  {
    name: "process facts: env, pid, cpuCount, memoryRss, args, tempDir, shmDir",
    fn({ rt }) {
      assert.equal(rt.env("PATH"), process.env.PATH);
      assert.equal(rt.env("PYPROXY_SURELY_UNSET_VARIABLE"), undefined);
      assert.equal(rt.pid(), process.pid);
      assert.ok(Number.isInteger(rt.cpuCount()) && rt.cpuCount() >= 1);
      assert.ok(rt.memoryRss() > 1024 * 1024);
      assert.ok(Array.isArray(rt.args()));
      assert.ok(rt.tempDir().length > 0);
      const shm = rt.shmDir();
      assert.ok(shm === undefined || shm === "/dev/shm");
      return Promise.resolve();
    },
  },
  {
    name: "unrefTimer: an unref'd timer still fires and still clears",
    async fn({ rt }) {
      assert.equal(typeof rt.unrefTimer, "function");
      const fired = Promise.withResolvers<void>();
      const t = setTimeout(() => fired.resolve(), 1);
      rt.unrefTimer!(t);
      // Keeps the test's event loop alive while the unref'd timer is due.
      const keep = setTimeout(() => {}, 5000);
      await fired.promise;
      clearTimeout(keep);
      let ticks = 0;
      const interval = setInterval(() => ticks++, 1);
      rt.unrefTimer!(interval);
      clearInterval(interval);
      assert.equal(ticks, 0);
    },
  },
];

/** The head of the answer to a raw WebSocket handshake offering `protocols`. */
function handshakeHead(
  port: number,
  path: string,
  protocols: string,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(port, "127.0.0.1", () => {
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
          "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Version: 13\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
          `Sec-WebSocket-Protocol: ${protocols}\r\n\r\n`,
      );
    });
    let out = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      out += chunk;
      const end = out.indexOf("\r\n\r\n");
      if (end >= 0) {
        socket.destroy();
        resolve(out.slice(0, end));
      }
    });
    socket.on("error", reject);
    socket.on("close", () => reject(new Error(`closed: ${out}`)));
  });
}
