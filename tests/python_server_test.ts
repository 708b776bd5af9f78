import assert from "node:assert/strict";
import { StartError, StartTimeoutError } from "../src/errors.ts";
import { PythonServer } from "../src/python_server.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import {
  pidAlive,
  startServer,
  tempDir,
  waitFor,
  writeFiles,
} from "./_harness.ts";
import { concurrentSteps, type Scenario } from "./_concurrent_steps.ts";

/**
 * A stand-in `pyproxy_server` package (for start-up edge cases the real
 * server never shows); `main` is the body of its `__main__.py`.
 */
async function fakePackage(dir: string, main: string): Promise<string> {
  const root = `${dir}/fakepkg`;
  await writeFiles(root, {
    "pyproxy_server/__init__.py": "",
    "pyproxy_server/__main__.py": main,
  });
  return root;
}

/**
 * The scenarios of this file that leave the host's environment alone, each
 * on a server of its own: they wait on starts, stops and exits more than on
 * the CPU, so the file runs them a few at a time (one test, a step each).
 */
const scenarios: Scenario[] = [];

scenarios.push([
  "PythonServer starts, reports its ready line and connects sessions",
  async () => {
    await using server = await startServer({ id: "w-test" });
    assert.equal(server.id, "w-test");
    assert.ok(server.port > 0);
    assert.equal(server.ready.pid, server.pid);
    assert.equal(server.unixPath, undefined);
    assert.match(server.secret, /^[0-9a-f]{64}$/);
    assert.ok(pidAlive(server.pid));
    await using session = await server.connect();
    assert.equal(await session.ping(), "pong");
    assert.equal((await session.status()).id, "w-test");
  },
]);

/** The default runtime, recording the temp directories it makes. */
function recordingRuntime(made: string[]): Runtime {
  const base = defaultRuntime();
  return Object.assign(Object.create(base), {
    async makeTempDir(options?: { dir?: string; prefix?: string }) {
      const dir = await base.makeTempDir(options);
      made.push(dir);
      return dir;
    },
  });
}

Deno.test({
  name:
    "PythonServer without port or socket listens on a Unix socket in a private directory, removed at exit",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const made: string[] = [];
    const server = await PythonServer.start({
      path: dir.path,
      runtime: recordingRuntime(made),
    });
    try {
      assert.equal(server.port, 0, "no TCP at all");
      assert.equal(made.length, 1);
      assert.equal(server.unixPath, `${made[0]}/server.sock`);
      assert.equal((await Deno.stat(made[0]!)).mode! & 0o777, 0o700);
      await using session = await server.connect();
      assert.equal(await session.ping(), "pong");
    } finally {
      await server.kill("SIGKILL");
    }
    await assert.rejects(Deno.stat(made[0]!), Deno.errors.NotFound);
  },
});

Deno.test({
  name:
    "PythonServer names the socket in its private directory socketName, and refuses a path for it",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const made: string[] = [];
    const server = await PythonServer.start({
      path: dir.path,
      socketName: "w7.sock",
      runtime: recordingRuntime(made),
    });
    try {
      assert.equal(server.unixPath, `${made[0]}/w7.sock`);
    } finally {
      await server.kill("SIGKILL");
    }
    await assert.rejects(
      PythonServer.start({ path: dir.path, socketName: "../w7.sock" }),
      /^TypeError: Cannot start python server py-[0-9a-f]+: socketName must be a plain file name/,
    );
  },
});

Deno.test({
  name: "PythonServer.start removes its socket directory when the start fails",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const made: string[] = [];
    await assert.rejects(
      PythonServer.start({
        path: dir.path,
        args: ["--no-such-flag"],
        runtime: recordingRuntime(made),
      }),
      StartError,
    );
    assert.equal(made.length, 1);
    await assert.rejects(Deno.stat(made[0]!), Deno.errors.NotFound);
  },
});

scenarios.push(["PythonServer.stop stops the server cleanly", async () => {
  await using server = await startServer();
  const status = await server.stop({ grace: 5000 });
  assert.deepEqual(status, { code: 0, signal: null });
  assert.equal(pidAlive(server.pid), false);
}]);

scenarios.push([
  "PythonServer exits when the host closes its stdin",
  async () => {
    await using server = await startServer();
    const pid = server.pid;
    await server.closeStdin();
    const status = await server.exited;
    assert.equal(status.code, 0, server.stderrTail());
    assert.equal(pidAlive(pid), false, "no orphan process is left");
  },
]);

scenarios.push([
  "PythonServer.kill ends the process with the signal and is safe to repeat",
  async () => {
    await using server = await startServer();
    const status = await server.kill("SIGKILL");
    assert.deepEqual(status, { code: null, signal: "SIGKILL" });
    assert.equal(pidAlive(server.pid), false);
    assert.deepEqual(await server.kill(), status);
  },
]);

/** The pipes this process holds open (Linux: their `pipe:[inode]` names). */
function openPipes(pid: number | "self" = "self"): Set<string> {
  const pipes = new Set<string>();
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      const target = Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`);
      if (target.startsWith("pipe:")) pipes.add(target);
    } catch {
      // closed while listing (the fd of the listing itself)
    }
  }
  return pipes;
}

Deno.test({
  name:
    "PythonServer closes its ends of the process's pipes when the process dies by itself (kill -9, a crash), with nobody calling kill",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const before = openPipes();
    await using server = await startServer();
    // This process's ends of the server's pipes: opened since, and held by
    // the child too (other tests running in parallel in this process open
    // pipes of their own meanwhile; the child also holds ones it inherited).
    const child = openPipes(server.pid);
    const mine = [...openPipes()].filter((p) => !before.has(p) && child.has(p));
    // stdin and stderr (stdout ends after the ready line).
    assert.ok(mine.length > 0, "the server's pipes are open");
    Deno.kill(server.pid, "SIGKILL");
    await server.exited;
    // A pool drops a server that died: nothing but the exit closes its stdin
    // (one fd leaked per crash, without bound under a restart storm).
    await waitFor(() => {
      const open = openPipes();
      return mine.every((p) => !open.has(p));
    }, {
      timeout: 5000,
      message: `pipes of the dead server closed (still open: ${
        mine.filter((p) => openPipes().has(p)).join(", ")
      })`,
    });
  },
});

scenarios.push(["PythonServer disposal kills the process", async () => {
  let pid = 0;
  {
    await using server = await startServer();
    pid = server.pid;
    assert.ok(pidAlive(pid));
  }
  assert.equal(pidAlive(pid), false);
}]);

scenarios.push([
  "PythonServer.start rejects bad arguments with a StartError carrying the stderr tail",
  async () => {
    await using dir = await tempDir();
    await assert.rejects(
      PythonServer.start({ path: dir.path, args: ["--no-such-flag"] }),
      (err: unknown) => {
        assert.ok(err instanceof StartError);
        assert.match(err.message, /exited \(code 2\) before it was ready/);
        assert.match(err.message, /--no-such-flag/);
        assert.match(String(err.details.stderr), /unrecognized arguments/);
        return true;
      },
    );
    await assert.rejects(
      PythonServer.start({ path: `${dir.path}/missing` }),
      (err: unknown) =>
        err instanceof StartError && /is not a directory/.test(err.message),
    );
  },
]);

scenarios.push([
  "PythonServer.start rejects a missing interpreter with a StartError",
  async () => {
    await using dir = await tempDir();
    await assert.rejects(
      PythonServer.start({
        path: dir.path,
        python: `${dir.path}/no-such-python`,
      }),
      (err: unknown) =>
        err instanceof StartError && /cannot spawn/.test(err.message) &&
        // What to do about it, not only the runtime's "entity not found".
        /no such program: install Python >= 3\.9, or give its path/.test(
          err.message,
        ),
    );
  },
]);

scenarios.push([
  "PythonServer.start says that a python that is a directory is not the interpreter",
  async () => {
    await using dir = await tempDir();
    await assert.rejects(
      PythonServer.start({ path: dir.path, python: dir.path }),
      (err: unknown) =>
        err instanceof StartError && /cannot spawn/.test(err.message) &&
        /not an executable: give the Python interpreter itself, such as <venv>\/bin\/python3/
          .test(err.message),
    );
  },
]);

scenarios.push([
  "PythonServer.start kills a server that never gets ready and reports its stderr",
  async () => {
    await using dir = await tempDir();
    // A shell script, not a Python stand-in: the stderr line must come before
    // readyTimeout runs out, and a Python start (more on a busy machine than
    // the 1000 ms) left no stderr to report. `exec` keeps its pid.
    const python = `${dir.path}/silent-python`;
    await Deno.writeTextFile(
      python,
      '#!/bin/sh\necho "fake server pid $$ is thinking" >&2\nexec sleep 60\n',
    );
    await Deno.chmod(python, 0o755);
    const err = await PythonServer.start({
      path: dir.path,
      python,
      readyTimeout: 1000,
    }).then(
      () => assert.fail("start should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof StartError);
    // Which part of the start ran out of readyTimeout.
    assert.ok(err instanceof StartTimeoutError, String(err));
    assert.equal(err.details.phase, "ready");
    assert.equal(err.details.timeoutMs, 1000);
    assert.match(err.message, /no ready line within 1000 ms \(readyTimeout\)/);
    const pid = Number(/pid (\d+) is thinking/.exec(err.message)?.[1]);
    assert.ok(pid > 0, err.message);
    assert.equal(pidAlive(pid), false, "the silent process was killed");
  },
]);

scenarios.push([
  "PythonServer.start reads a ready line that arrives in pieces after a flood of stderr",
  async () => {
    await using dir = await tempDir();
    const pythonPath = await fakePackage(
      dir.path,
      `import json, os, sys, time
# 300 KiB of stderr before the ready line: the host must drain it or we block.
for i in range(3000):
    sys.stderr.write("noise %04d ".ljust(100, "x") + "\\n")
sys.stderr.write("END OF NOISE\\n")
sys.stderr.flush()
line = json.dumps({"port": 1, "pid": os.getpid(), "id": "fake", "unix": None, "version": 1}) + "\\n"
for ch in line:
    sys.stdout.write(ch)
    sys.stdout.flush()
    time.sleep(0.001)
# Keep writing stdout after the ready line: the host must keep draining it.
for i in range(200):
    sys.stdout.write("x" * 10000)
sys.stdout.flush()
sys.stderr.write("STDOUT FLOOD DONE\\n")
sys.stderr.flush()
sys.stdin.read()
`,
    );
    await using server = await PythonServer.start({
      path: dir.path,
      pythonPath,
      readyTimeout: 15000,
    });
    assert.equal(server.id, "fake");
    assert.equal(server.port, 1);
    await waitFor(() => server.stderrTail().includes("STDOUT FLOOD DONE"), {
      message: "stdout is drained",
    });
    const tail = server.stderrTail();
    assert.ok(tail.length <= 64 * 1024, `tail is bounded (${tail.length})`);
    assert.ok(tail.includes("END OF NOISE"));
    assert.ok(!tail.includes("noise 0000"), "the oldest stderr was dropped");
    // Closing stdin ends the fake (it reads until EOF), like the real server.
    await server.closeStdin();
    assert.equal((await server.exited).code, 0);
  },
]);

scenarios.push([
  "PythonServer passes the secret on stdin, not in argv or the environment",
  async () => {
    await using dir = await tempDir();
    const pythonPath = await fakePackage(
      dir.path,
      `import json, os, sys
secret = json.loads(sys.stdin.readline())["secret"]
leaked = secret in " ".join(sys.argv) or any(secret in v for v in os.environ.values())
sys.stderr.write("LEAKED\\n" if leaked else "CLEAN %s\\n" % secret[:8])
sys.stderr.flush()
print(json.dumps({"port": 2, "pid": os.getpid(), "id": "fake", "unix": None, "version": 1}), flush=True)
sys.stdin.read()
`,
    );
    await using server = await PythonServer.start({
      path: dir.path,
      pythonPath,
      secret: "abcdef0123456789",
    });
    await waitFor(() => /CLEAN|LEAKED/.test(server.stderrTail()));
    assert.match(server.stderrTail(), /CLEAN abcdef01/);
  },
]);

Deno.test("PythonServer keeps the gateway's tokens out of the server's environment, /proc included", async () => {
  const token = "gateway-token-0123456789abcdef";
  const manageToken = "manage-token-0123456789abcdef";
  Deno.env.set("PYPROXY_TOKEN", token);
  Deno.env.set("PYPROXY_MANAGE_TOKEN", manageToken);
  Deno.env.set("PYPROXY_TEST_INHERITED", "inherited");
  try {
    await using server = await startServer();
    await using session = await server.connect();
    const { value } = await session.request<{ value: unknown }>("eval", {
      code: `import os, subprocess
block = open("/proc/self/environ", "rb").read()
child = subprocess.run(["sh", "-c", 'echo "$PYPROXY_TOKEN|$PYPROXY_MANAGE_TOKEN|$PYPROXY_TEST_INHERITED"'], stdout=subprocess.PIPE).stdout
[os.environ.get("PYPROXY_TOKEN"), os.environ.get("PYPROXY_MANAGE_TOKEN"), ${
        JSON.stringify(token)
      }.encode() in block, ${
        JSON.stringify(manageToken)
      }.encode() in block, b"PYPROXY_TEST_INHERITED=inherited" in block, child.decode()]`,
    });
    // Model code reading /proc/<pid>/environ (its own or another worker's)
    // found the token before: the server only dropped it from os.environ.
    // The management token (eval and model management, which the inference
    // token's clients may not use) was inherited whole, os.environ included.
    assert.deepEqual(value, [null, null, false, false, true, "||inherited\n"]);
  } finally {
    Deno.env.delete("PYPROXY_TOKEN");
    Deno.env.delete("PYPROXY_MANAGE_TOKEN");
    Deno.env.delete("PYPROXY_TEST_INHERITED");
  }
});

Deno.test("PythonServer keeps the host's OTEL_* variables from the server (its tracing's, API keys included) unless env gives them", async () => {
  const secret = "otel-key-0123456789abcdef";
  Deno.env.set("OTEL_EXPORTER_OTLP_HEADERS", `api-key=${secret}`);
  Deno.env.set("OTEL_SERVICE_NAME", "gateway");
  Deno.env.set("PYPROXY_TEST_INHERITED", "inherited");
  try {
    await using server = await startServer({
      env: { OTEL_SERVICE_NAME: "model-own" },
    });
    await using session = await server.connect();
    const { value } = await session.request<{ value: unknown }>("eval", {
      code: `import os
block = open("/proc/self/environ", "rb").read()
[sorted(k for k in os.environ if k.startswith("OTEL_")), os.environ.get("OTEL_SERVICE_NAME"), ${
        JSON.stringify(secret)
      }.encode() in block, b"PYPROXY_TEST_INHERITED=inherited" in block]`,
    });
    // Before, a model's own OpenTelemetry SDK took the gateway's collector,
    // its headers (an API key any model code could read) and its name.
    assert.deepEqual(value, [
      ["OTEL_SERVICE_NAME"],
      "model-own",
      false,
      true,
    ]);
  } finally {
    Deno.env.delete("OTEL_EXPORTER_OTLP_HEADERS");
    Deno.env.delete("OTEL_SERVICE_NAME");
    Deno.env.delete("PYPROXY_TEST_INHERITED");
  }
});

scenarios.push([
  "PythonServer connects over its Unix socket by default when it has one",
  async () => {
    await using server = await startServer({ unix: true, port: 0 });
    assert.ok(server.unixPath !== undefined);
    await using unix = await server.connect();
    await using tcp = await server.connect({ transport: "tcp" });
    assert.equal(await unix.ping(), "pong");
    assert.equal(await tcp.ping(), "pong");
    assert.equal((await unix.status()).connections, 2);
  },
]);

scenarios.push([
  "PythonServer with a Unix socket and no port opens no TCP port at all",
  async () => {
    await using server = await startServer({ unix: true });
    assert.equal(server.port, 0);
    assert.equal(server.ready.port, null);
    await using unix = await server.connect();
    assert.equal(await unix.ping(), "pong");
    await assert.rejects(
      server.connect({ transport: "tcp" }),
      (err: unknown) =>
        err instanceof TypeError && /Unix socket only/.test(err.message),
    );
    // Nothing of this process listens on TCP: /proc/net/tcp lists no LISTEN socket whose inode it owns.
    const inodes = new Set<string>();
    for (const fd of Deno.readDirSync(`/proc/${server.pid}/fd`)) {
      const link = Deno.readLinkSync(`/proc/${server.pid}/fd/${fd.name}`);
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m) inodes.add(m[1]!);
    }
    const listening = Deno.readTextFileSync("/proc/net/tcp").split("\n").slice(
      1,
    )
      .map((line) => line.trim().split(/\s+/))
      .filter((f) => f[3] === "0A" && inodes.has(f[9] ?? ""));
    assert.equal(listening.length, 0);
  },
]);

scenarios.push([
  "PythonServer asks glibc's malloc for huge pages unless GLIBC_TUNABLES already says",
  async () => {
    const tunables = async (env?: Record<string, string>): Promise<unknown> => {
      await using server = await startServer(env === undefined ? {} : { env });
      await using session = await server.connect();
      const { value } = await session.request<{ value: unknown }>("eval", {
        code: "import os\nos.environ.get('GLIBC_TUNABLES')",
      });
      return value;
    };
    // The host's own GLIBC_TUNABLES (if the test runs with one) comes first.
    const host = Deno.env.get("GLIBC_TUNABLES");
    if (host?.includes("glibc.malloc.hugetlb") !== true) {
      assert.equal(
        await tunables(),
        host ? `${host}:glibc.malloc.hugetlb=1` : "glibc.malloc.hugetlb=1",
      );
    }
    assert.equal(
      await tunables({ GLIBC_TUNABLES: "glibc.malloc.arena_max=2" }),
      "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1",
    );
    // An explicit setting, off included, is kept as given.
    assert.equal(
      await tunables({ GLIBC_TUNABLES: "glibc.malloc.hugetlb=0" }),
      "glibc.malloc.hugetlb=0",
    );
  },
]);

scenarios.push([
  "PythonServer: a TCP server with a plain id logs to one file per id across restarts, not one per port",
  async () => {
    await using dir = await tempDir();
    for (let i = 0; i < 2; i++) {
      await using server = await PythonServer.start({
        path: dir.path,
        id: "w1",
        port: 0,
      });
      await server.stop({ grace: 5000 });
    }
    // An id that is no plain file name: named after the port, as before.
    await using other = await PythonServer.start({
      path: dir.path,
      id: "a/b",
      port: 0,
    });
    const port = other.port;
    await other.stop({ grace: 5000 });
    const names = [];
    for await (const entry of Deno.readDir(`${dir.path}/logs`)) {
      names.push(entry.name);
    }
    // The id's name is claimed while its server runs (the lock file); a port
    // is never shared by two running servers.
    assert.deepEqual(names.sort(), [
      `pythonserver${port}.log`,
      "pythonserverw1.log",
      "pythonserverw1.log.lock",
    ]);
  },
]);

scenarios.push([
  "PythonServer logName names the log file of a Unix socket server too (a pool's slot index), and must be a plain file name",
  async () => {
    await using dir = await tempDir();
    for (let i = 0; i < 2; i++) {
      await using server = await PythonServer.start({
        path: dir.path,
        id: `w${i + 1}`,
        logName: "slot0",
      });
      assert.ok(server.unixPath !== undefined, "listens on a Unix socket");
      await server.stop({ grace: 5000 });
    }
    const names = [];
    for await (const entry of Deno.readDir(`${dir.path}/logs`)) {
      names.push(entry.name);
    }
    // Two servers one after the other, one file (not server.sock's).
    assert.deepEqual(names.sort(), [
      "pythonserverslot0.log",
      "pythonserverslot0.log.lock",
    ]);
    await assert.rejects(
      PythonServer.start({ path: dir.path, logName: "../x" }),
      (err: unknown) =>
        err instanceof TypeError &&
        /logName must be a plain file name/.test(err.message),
    );
  },
]);

Deno.test({
  name:
    "PythonServer under a temp directory too long for a Unix socket path uses /tmp, else loopback TCP, instead of failing to start",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    // A CI runner's or a sandbox's TMPDIR: every worker failed with
    // "AF_UNIX path too long".
    const long = `${dir.path}/${"t".repeat(100)}`;
    await Deno.mkdir(long);
    const base = defaultRuntime();
    const runtimeWith = (tmp: string | undefined, made: string[]): Runtime =>
      Object.assign(Object.create(base), {
        tempDir: () => long,
        async makeTempDir(options?: { dir?: string; prefix?: string }) {
          const dir = options?.dir ?? long;
          if (dir === "/tmp" && tmp === undefined) throw new Error("no /tmp");
          const made_ = await base.makeTempDir({
            ...options,
            dir: dir === "/tmp" ? tmp! : dir,
          });
          made.push(made_);
          return made_;
        },
      });
    // /tmp (here a short directory standing for it) takes the socket.
    await using short = await tempDir();
    const made: string[] = [];
    const viaTmp = await PythonServer.start({
      path: dir.path,
      socketName: "w1.sock",
      runtime: runtimeWith(short.path, made),
    });
    try {
      assert.ok(viaTmp.unixPath?.startsWith(`${short.path}/`), viaTmp.unixPath);
      await using session = await viaTmp.connect();
      assert.equal(await session.ping(), "pong");
      // The directory made under the long one first is gone.
      assert.equal(made.length, 2);
      assert.equal(await Deno.stat(made[0]!).catch(() => null), null);
    } finally {
      await viaTmp.stop();
    }
    // Without a usable /tmp: loopback TCP, with a warning.
    const tcp = await PythonServer.start({
      path: dir.path,
      socketName: "w1.sock",
      runtime: runtimeWith(undefined, []),
    });
    try {
      assert.equal(tcp.unixPath, undefined);
      assert.ok(tcp.port > 0);
      await using session = await tcp.connect();
      assert.equal(await session.ping(), "pong");
    } finally {
      await tcp.stop();
    }
    // A path given explicitly is refused before anything starts.
    await assert.rejects(
      PythonServer.start({ path: dir.path, unix: `${long}/w1.sock` }),
      /Unix socket path is \d+ bytes long, above the 103 the OS takes/,
    );
  },
});

Deno.test({
  name:
    "PythonServer.start under a temp directory it cannot write says which directory and what to do",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    // A container's read-only root file system without a volume at /tmp:
    // the runtime's own message named neither the directory nor the fix
    // (newcomer21: "Read-only file system (os error 30): tmpdir"). A
    // regular file stands for it here, since root writes anywhere.
    const notADir = `${dir.path}/tmp-is-a-file`;
    await Deno.writeTextFile(notADir, "");
    const base = defaultRuntime();
    const runtime: Runtime = Object.assign(Object.create(base), {
      tempDir: () => notADir,
      makeTempDir: (options?: { dir?: string; prefix?: string }) =>
        base.makeTempDir({ ...options, dir: options?.dir ?? notADir }),
    });
    await assert.rejects(
      PythonServer.start({ path: dir.path, id: "w1", runtime }),
      (err: unknown) =>
        err instanceof StartError &&
        err.message.startsWith(
          `Cannot start python server w1: cannot make the directory of its Unix socket in the temp directory ${notADir}: `,
        ) &&
        /\(set TMPDIR to a directory this user can write; in a container with a read-only root file system, mount a volume such as an emptyDir at \/tmp\)$/
          .test(err.message) &&
        err.cause instanceof Error,
    );
  },
});

Deno.test("PythonServer, each scenario on a server of its own (3 at a time)", (t) =>
  concurrentSteps(t, scenarios, 3));
