/**
 * `serve`'s reload (SIGHUP, `GatewayServer.reload()`): tokens and the TLS
 * certificate replaced while serving, with real servers, real certificates
 * and real clients; a wrong configuration changes nothing.
 */
import assert from "node:assert/strict";
import { defaultTextFormatter } from "@logtape/logtape";
import { ConfigError, ShuttingDownError, StartError } from "../src/errors.ts";
import { loadConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import { tempDir, waitFor } from "./_harness.ts";
import { SseReader, withLogs } from "./_gateway_harness.ts";
import { InferenceClient } from "./_grpc_client.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

const MOD = new URL("../mod.ts", import.meta.url).pathname;
const ECHO = new URL("../examples/models/echo.py", import.meta.url);
const T1 = "first-token-0123456789abcdef";
const T2 = "second-token-0123456789abcdef";

/** A models directory with echo, and a pyproxy.json writer. */
async function setUp(dir: string): Promise<(file: object) => Promise<void>> {
  await Deno.mkdir(`${dir}/models`);
  await Deno.copyFile(ECHO, `${dir}/models/echo.py`);
  return (file) =>
    Deno.writeTextFile(
      `${dir}/pyproxy.json`,
      JSON.stringify({ modelsDir: "models", ...file }),
    );
}

/** POSTs to echo with `token`; the status, or the error's name. */
async function call(
  url: string,
  token: string,
  client?: Deno.HttpClient,
): Promise<number | string> {
  try {
    const res = await fetch(`${url}/v1/models/echo/execute`, {
      method: "POST",
      body: '{"a":1}',
      headers: { authorization: `Bearer ${token}` },
      ...(client === undefined ? {} : { client }),
    });
    await res.body?.cancel();
    return res.status;
  } catch (err) {
    // The cause says where it failed (Deno: "tcp connect error: ...").
    return `${(err as Error).name}: ${(err as Error).message} ${
      String((err as Error).cause)
    }`;
  }
}

Deno.test({
  name:
    "GatewayServer.reload rotates the tokens and the certificate (HTTPS and gRPC) while a client calls without a failure",
  ignore: !HAS_OPENSSL,
}, async () => {
  await using dir = await tempDir("pyproxy-reload-test-");
  const write = await setUp(dir.path);
  const first = await selfSignedCert(dir.path, "tls");
  const second = await selfSignedCert(dir.path, "next");
  await write({
    token: T1,
    tls: { cert: "tls.crt", key: "tls.key" },
    grpc: { hostname: "127.0.0.1", port: 0 },
  });
  const load = () =>
    loadConfig({
      path: `${dir.path}/pyproxy.json`,
      cli: { port: 0, workers: 1 },
    });
  await using server = await serve(await load(), { reloadConfig: load });
  using both = Deno.createHttpClient({ caCerts: [first.pem, second.pem] });
  assert.equal(await call(server.url, T1, both), 200);

  // New files in place (as a certificate manager renews them), the new
  // token beside the old one.
  await Deno.copyFile(second.cert, first.cert);
  await Deno.copyFile(second.key, first.key);
  await write({
    token: [T1, T2],
    tls: { cert: "tls.crt", key: "tls.key" },
    grpc: { hostname: "127.0.0.1", port: 0 },
  });
  // A client calling all along, on new connections and on a kept one.
  let reloaded = false;
  const failures: string[] = [];
  let calls = 0;
  const loop = async (fresh: boolean) => {
    // Goes on until the reload is over, and then for 20 calls more.
    for (let after = 0; after < 20; after += reloaded ? 1 : 0) {
      let client: Deno.HttpClient | undefined;
      try {
        client = fresh
          ? Deno.createHttpClient({ caCerts: [first.pem, second.pem] })
          : both;
        const got = await call(server.url, T1, client);
        calls++;
        if (got !== 200) failures.push(`${fresh ? "new" : "kept"} ${got}`);
      } finally {
        if (fresh) client?.close();
      }
    }
  };
  const loops = Promise.all([loop(true), loop(true), loop(false)]);
  const result = await server.reload();
  reloaded = true;
  await loops;
  // Linux resets the connections still waiting in the old listener's
  // accept queue as it closes, unless told to move them to the new one
  // (net.ipv4.tcp_migrate_req, docs/gateway.md "Reloading"): such a client
  // sent nothing yet. No request that reached the gateway fails.
  const migrate = await Deno.readTextFile("/proc/sys/net/ipv4/tcp_migrate_req")
    .then((text) => text.trim() === "1", () => false);
  const shown = `${failures.length} of ${calls} failed: ${failures}`;
  if (migrate) assert.deepEqual(failures, [], shown);
  else {
    assert.ok(
      failures.every((f) =>
        f.startsWith("new ") && /tcp connect error: Connection reset/.test(f)
      ),
      shown,
    );
  }
  assert.deepEqual(result.ignored, []);
  assert.equal(result.changed[0], "token (2)");
  assert.match(result.changed[1]!, /^tls \(CN=localhost, valid until /);
  assert.equal(result.changed.length, 2);

  // A new connection gets the new certificate only.
  {
    using onlyNew = Deno.createHttpClient({ caCerts: [second.pem] });
    assert.equal(await call(server.url, T2, onlyNew), 200);
    assert.equal(await call(server.url, T1, onlyNew), 200);
    using onlyOld = Deno.createHttpClient({ caCerts: [first.pem] });
    assert.notEqual(await call(server.url, T2, onlyOld), 200);
  }
  // gRPC: its own listener, the same certificate and tokens.
  const target = server.grpcTarget!.replace(/^127\.0\.0\.1:/, "localhost:");
  {
    using grpc = new InferenceClient(target, T2, second.pem);
    const live = await grpc.call("ServerMetadata", {});
    assert.equal(live.error, undefined, live.error?.details);
  }
  {
    using old = new InferenceClient(target, T2, first.pem);
    const refused = await old.call("ServerLive", {}, { deadlineMs: 3000 });
    assert.notEqual(refused.error, undefined, "the old certificate is gone");
  }

  // The old token retired by a second reload.
  await write({
    token: T2,
    tls: { cert: "tls.crt", key: "tls.key" },
    grpc: { hostname: "127.0.0.1", port: 0 },
  });
  assert.deepEqual(await server.reload(), {
    changed: ["token (1)"],
    ignored: [],
  });
  assert.equal(await call(server.url, T1, both), 401);
  assert.equal(await call(server.url, T2, both), 200);
});

Deno.test("GatewayServer.reload keeps every setting when the configuration is wrong, and names the settings it cannot change", async () => {
  await using dir = await tempDir("pyproxy-reload-test-");
  const write = await setUp(dir.path);
  await write({ token: T1 });
  const load = () =>
    loadConfig({
      path: `${dir.path}/pyproxy.json`,
      cli: { port: 0 },
    });
  await withLogs(async (records) => {
    await using server = await serve(await load(), { reloadConfig: load });
    const cases: Array<[object | string, RegExp]> = [
      [{ token: "short" }, /token.*at least 16 characters/],
      [{ token: [T2, ""] }, /token/],
      [{}, /^token: removed from the configuration/],
      [{ token: T2, manageToken: T1 }, /^manageToken: added to/],
      [
        { token: T2, tls: { cert: "none.crt", key: "none.key" } },
        /^tls: added to the configuration; a reload cannot switch between HTTP and HTTPS/,
      ],
      [{ token: T2, workers: 0 }, /workers/],
      ['{"token": ', /Cannot parse config file/],
    ];
    for (const [file, message] of cases) {
      if (typeof file === "string") {
        await Deno.writeTextFile(`${dir.path}/pyproxy.json`, file);
      } else await write(file);
      await assert.rejects(server.reload(), (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(err.message, message);
        return true;
      }, JSON.stringify(file));
      assert.equal(await call(server.url, T1), 200, JSON.stringify(file));
      assert.equal(await call(server.url, T2), 401, JSON.stringify(file));
    }
    const errors = records.filter((r) => r.level === "error").map((r) =>
      r.message.join("")
    );
    assert.equal(errors.length, cases.length);
    assert.ok(
      errors.every((e) => e.startsWith("Reload failed; the settings")),
      errors[0],
    );
    // What cannot change while serving: named, and the rest applied.
    await write({ token: T2, workers: 3, limits: { bodyLimit: 1000 } });
    records.length = 0;
    assert.deepEqual(await server.reload(), {
      changed: ["token (1)"],
      ignored: ["limits", "workers"],
    });
    assert.equal(await call(server.url, T2), 200);
    assert.equal(server.pool.status().workers.length, 2);
    const lines = records.map((r) => `${r.level} ${r.message.join("")}`);
    assert.ok(
      lines.includes(
        "info Reloaded the configuration: token (1)",
      ),
      lines.join("\n"),
    );
    assert.ok(
      lines.includes(
        "warning Reload ignored limits, workers: they take effect at a restart only",
      ),
      lines.join("\n"),
    );
    assert.ok(!lines.some((l) => l.includes(T2) || l.includes(T1)));
  });
});

Deno.test({
  name:
    "GatewayServer.reload refuses a new certificate where a listener cannot share the port (no unstable net APIs, not Linux), changing nothing",
  ignore: !HAS_OPENSSL,
}, async () => {
  await using dir = await tempDir("pyproxy-reload-test-");
  const write = await setUp(dir.path);
  const first = await selfSignedCert(dir.path, "tls");
  const second = await selfSignedCert(dir.path, "next");
  await write({ token: T1, tls: { cert: "tls.crt", key: "tls.key" } });
  const load = () =>
    loadConfig({
      path: `${dir.path}/pyproxy.json`,
      cli: { port: 0, workers: 1 },
    });
  // As deno run without --unstable-net (Deno would exit at such a listen).
  const runtime = { ...defaultRuntime(), reusePortTls: false };
  await withLogs(async (records) => {
    await using server = await serve(await load(), {
      reloadConfig: load,
      runtime,
    });
    // Said at start, not only at the first renewal (months on), and read
    // as a log sink renders it: no property quoted mid-sentence (it read
    // "SO_REUSEPORT', and on Deno ... in deno.json')").
    const warnings = records.filter((r) => r.level === "warning").map((r) =>
      defaultTextFormatter(r).trimEnd()
    );
    assert.ok(
      warnings.some((w) =>
        w.endsWith(
          `[WRN] pyproxy·gateway: Serving TLS where a reload cannot change the certificate: a renewed one takes a restart (a reload starts a listener beside the old one, which needs Linux's SO_REUSEPORT, and on Deno its unstable net APIs: --unstable-net, or "unstable": ["net"] in deno.json)`,
        )
      ),
      warnings.join("\n"),
    );
    await Deno.copyFile(second.cert, first.cert);
    await Deno.copyFile(second.key, first.key);
    await write({ token: T2, tls: { cert: "tls.crt", key: "tls.key" } });
    await assert.rejects(server.reload(), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(
        err.message,
        /^tls: the certificate changed, and here only a restart serves a new one: .*--unstable-net/,
      );
      return true;
    });
    using onlyOld = Deno.createHttpClient({ caCerts: [first.pem] });
    assert.equal(await call(server.url, T1, onlyOld), 200);
    assert.equal(await call(server.url, T2, onlyOld), 401);
  });
});

/**
 * Whether this process listens on TCP `port` (Linux's `/proc`: a LISTEN
 * socket on the port whose inode is one of this process's fds). A connect
 * to the port could not tell: under a loaded parallel suite another test's
 * server had been given the freed port and accepted it.
 */
function listening(port: number): boolean {
  const own = new Set<string>();
  for (const fd of Deno.readDirSync("/proc/self/fd")) {
    try {
      const target = Deno.readLinkSync(`/proc/self/fd/${fd.name}`);
      if (target.startsWith("socket:[")) own.add(target.slice(8, -1));
    } catch {
      // closed meanwhile
    }
  }
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  for (const table of ["tcp", "tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(`/proc/net/${table}`);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (
        fields[3] === "0A" && fields[1]?.endsWith(hex) === true &&
        own.has(fields[9] ?? "")
      ) return true;
    }
  }
  return false;
}

Deno.test({
  name:
    "GatewayServer.reload overtaken by a shutdown is refused and leaves no listener open",
  ignore: !HAS_OPENSSL,
}, async () => {
  await using dir = await tempDir("pyproxy-reload-test-");
  const write = await setUp(dir.path);
  const first = await selfSignedCert(dir.path, "tls");
  const second = await selfSignedCert(dir.path, "next");
  await write({ token: T1, tls: { cert: "tls.crt", key: "tls.key" } });
  const load = () =>
    loadConfig({
      path: `${dir.path}/pyproxy.json`,
      cli: { port: 0, workers: 1 },
    });
  // The reload reads its configuration (slow: a secrets store, a busy
  // disk) while the shutdown runs to its end.
  let entered!: () => void;
  const inside = new Promise<void>((resolve) => (entered = resolve));
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const server = await serve(await load(), {
    reloadConfig: async () => {
      const config = await load();
      entered();
      await gate;
      return config;
    },
  });
  try {
    await Deno.copyFile(second.cert, first.cert);
    await Deno.copyFile(second.key, first.key);
    const reloaded = server.reload();
    reloaded.catch(() => {});
    await inside;
    await server.shutdown();
    release();
    await assert.rejects(reloaded, ShuttingDownError);
    assert.equal(
      listening(server.port),
      false,
      "a listener outlived the shutdown",
    );
  } finally {
    release();
    await server.shutdown();
  }
});

Deno.test({
  name:
    "GatewayServer.reload with tokens the gateway refuses (a reloadConfig of the caller's) keeps the certificate and starts no listener",
  ignore: !HAS_OPENSSL,
}, async () => {
  await using dir = await tempDir("pyproxy-reload-test-");
  const write = await setUp(dir.path);
  const first = await selfSignedCert(dir.path, "tls");
  const second = await selfSignedCert(dir.path, "next");
  await write({ token: T1, tls: { cert: "tls.crt", key: "tls.key" } });
  const load = () =>
    loadConfig({
      path: `${dir.path}/pyproxy.json`,
      cli: { port: 0, workers: 1 },
    });
  await withLogs(async (records) => {
    const server = await serve(await load(), {
      // Built by hand, past loadConfig's checks: a token listed twice.
      reloadConfig: async () => ({
        ...await load(),
        token: [T2, T2],
        tls: { cert: second.cert, key: second.key },
      }),
    });
    try {
      await assert.rejects(server.reload(), (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(err.message, /^token: .*twice/);
        return true;
      });
      assert.ok(
        records.some((r) =>
          r.level === "error" &&
          r.message.join("").startsWith("Reload failed; the settings")
        ),
        "the failure is logged",
      );
      // Every new connection still gets the old certificate (a second
      // listener would take about half of them).
      using onlyOld = Deno.createHttpClient({ caCerts: [first.pem] });
      for (let i = 0; i < 8; i++) {
        using fresh = Deno.createHttpClient({ caCerts: [first.pem] });
        assert.equal(await call(server.url, T1, fresh), 200);
      }
      assert.equal(await call(server.url, T2, onlyOld), 401);
    } finally {
      await server.shutdown();
    }
    assert.equal(
      listening(server.port),
      false,
      "a listener outlived the shutdown",
    );
  });
});

/** `promise`, or a failure naming `what` when it has not settled in 3 s. */
async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${what} is still open after 3 s`)),
          3000,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("GatewayServer.reload ends the channel subscriptions (SSE, WebSocket) of a token it retires, and keeps the others", async () => {
  await using dir = await tempDir("pyproxy-reload-test-");
  const write = await setUp(dir.path);
  await write({ token: [T1, T2] });
  const load = () =>
    loadConfig({
      path: `${dir.path}/pyproxy.json`,
      cli: { port: 0, workers: 1 },
    });
  await withLogs(async (records) => {
    await using server = await serve(await load(), { reloadConfig: load });
    const subscribe = async (token: string) => {
      const res = await fetch(`${server.url}/v1/channels/news`, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(res.status, 200);
      return new SseReader(res.body!);
    };
    const old = await subscribe(T1);
    const kept = await subscribe(T2);
    const ws = new WebSocket(
      `${server.url.replace("http", "ws")}/v1/channels/news`,
      ["pyproxy.v1", `pyproxy.bearer.${T1}`],
    );
    const closed = new Promise<CloseEvent>((resolve) => (ws.onclose = resolve));
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    try {
      await write({ token: T2 });
      assert.deepEqual(await server.reload(), {
        changed: ["token (1)"],
        ignored: [],
      });
      // The retired token's: ended; the WebSocket as a refused policy.
      assert.deepEqual(await within(old.all(), "the SSE stream"), []);
      const close = await within(closed, "the WebSocket");
      assert.equal(close.code, 1008);
      assert.equal(close.reason, "token no longer accepted");
      // The kept token's goes on.
      const published = await fetch(`${server.url}/v1/channels/news`, {
        method: "POST",
        body: '{"n":1}',
        headers: { authorization: `Bearer ${T2}` },
      });
      assert.equal(published.status, 200);
      await published.body?.cancel();
      assert.deepEqual((await kept.next())?.data, { n: 1 });
      assert.ok(
        records.some((r) =>
          r.message.join("") ===
            "Ended 2 channel subscription(s) whose token is no longer accepted"
        ),
      );
    } finally {
      ws.close();
      await closed;
      await old.cancel();
      await kept.cancel();
    }
  });
});

/** A model whose import says it began and waits for the test's go-ahead. */
const GATED = `import os, time
here = os.path.dirname(os.path.abspath(__file__))
open(os.path.join(here, "..", "importing"), "w").close()
while not os.path.exists(os.path.join(here, "..", "go")):
    time.sleep(0.02)

class Gated:
    def execute(self, msg):
        return msg
`;

Deno.test({
  name:
    "serve over TLS refuses to start when another process listens on its port by SO_REUSEPORT (a second serve started with it)",
  ignore: !HAS_OPENSSL || Deno.build.os !== "linux",
}, async () => {
  await using dir = await tempDir("pyproxy-reload-test-");
  const write = await setUp(dir.path);
  await Deno.writeTextFile(`${dir.path}/models/gated.py`, GATED);
  await selfSignedCert(dir.path, "tls");
  const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (free.addr as Deno.NetAddr).port;
  free.close();
  await write({ token: T1, tls: { cert: "tls.crt", key: "tls.key" } });
  const config = await loadConfig({
    path: `${dir.path}/pyproxy.json`,
    cli: { port, workers: 1 },
  });
  // The port is free at the start's probe; the other process binds it
  // (SO_REUSEPORT, as a second serve does) while the models load.
  const starting = serve(config);
  starting.catch(() => {});
  let other: Deno.ChildProcess | undefined;
  let reader: ReadableStreamDefaultReader<string> | undefined;
  try {
    await waitFor(() =>
      Deno.stat(`${dir.path}/importing`).then(() => true, () => false)
    );
    other = new Deno.Command("python3", {
      args: [
        "-c",
        `import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", ${port}))
s.listen()
print("ready", flush=True)
sys.stdin.read()`,
      ],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    reader = other.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const ready = await reader.read();
    assert.equal(ready.value?.trim(), "ready");
    await Deno.writeTextFile(`${dir.path}/go`, "");
    await assert.rejects(starting, (err: unknown) => {
      assert.ok(err instanceof StartError, String(err));
      assert.match(
        err.message,
        /another process share the port .*\(another process listens there/,
      );
      return true;
    });
  } finally {
    await Deno.writeTextFile(`${dir.path}/go`, "");
    await starting.then((server) => server.shutdown(), () => {});
    if (other !== undefined) {
      other.kill("SIGKILL");
      await other.status;
      await other.stdin.close().catch(() => {});
      // Its reader's cancel closes the pipe (the stream itself is locked).
      await (reader ?? other.stdout).cancel().catch(() => {});
    }
  }
});

/**
 * `mod.ts serve` with `dir`'s pyproxy.json as a child process; `stdoutUntil`
 * and `stderrUntil` read its output until a pattern shows; disposing kills
 * it if it still runs.
 */
function serveProcess(dir: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MOD,
      "serve",
      "--config",
      `${dir}/pyproxy.json`,
      "--port",
      "0",
      "--workers",
      "1",
    ],
    env: { PYPROXY_TOKEN: "" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let err = "";
  let out = "";
  return {
    child,
    get stderr() {
      return err;
    },
    /** Reads stderr until `pattern` shows (or it ends). */
    async stderrUntil(pattern: RegExp): Promise<string> {
      while (!pattern.test(err)) {
        const { value, done } = await stderr.read();
        if (done) break;
        err += value;
      }
      return err;
    },
    /** Reads stdout until `pattern` shows (or it ends). */
    async stdoutUntil(pattern: RegExp): Promise<string> {
      while (!pattern.test(out)) {
        const { value, done } = await stdout.read();
        if (done) break;
        out += value;
      }
      return out;
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited
      }
      await child.status;
      await stdout.cancel();
      await stderr.cancel();
    },
  };
}

Deno.test("serve reloads its tokens on SIGHUP, logging what changed and never the token", async () => {
  await using dir = await tempDir("pyproxy-reload-test-");
  const write = await setUp(dir.path);
  await write({ token: T1 });
  await using serve = serveProcess(dir.path);
  const { child, stderrUntil } = serve;
  {
    const out = await serve.stdoutUntil(/listening on (\S+)/);
    const url = /listening on (\S+)/.exec(out)![1]!;
    assert.equal(await call(url, T1), 200);
    await write({ token: T2 });
    child.kill("SIGHUP");
    assert.match(
      await stderrUntil(/Reloaded the configuration[^\n]*\n/),
      /Reloaded the configuration: "?token \(1\)"?/,
    );
    assert.equal(await call(url, T1), 401);
    assert.equal(await call(url, T2), 200);
    // A wrong file: logged, the token in force kept.
    await write({ token: "short" });
    child.kill("SIGHUP");
    assert.match(
      await stderrUntil(/Reload failed[^\n]*\n/),
      /Reload failed; the settings in force are kept: .*token/,
    );
    assert.equal(await call(url, T2), 200);
    const err = serve.stderr;
    assert.ok(!err.includes(T1) && !err.includes(T2), err);
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
  }
});

Deno.test("serve ignores a SIGHUP while it starts, rather than end (its default action)", async () => {
  await using dir = await tempDir("pyproxy-reload-test-");
  const write = await setUp(dir.path);
  // Its import waits for the test's go-ahead (a file), and says it began.
  await Deno.writeTextFile(
    `${dir.path}/models/slow.py`,
    `import os, time
here = os.path.dirname(os.path.abspath(__file__))
open(os.path.join(here, "..", "importing"), "w").close()
while not os.path.exists(os.path.join(here, "..", "go")):
    time.sleep(0.02)

class Slow:
    def execute(self, msg):
        return msg
`,
  );
  await write({ token: T1 });
  await using serve = serveProcess(dir.path);
  await waitFor(() =>
    Deno.stat(`${dir.path}/importing`).then(() => true, () => false)
  );
  serve.child.kill("SIGHUP");
  await serve.stderrUntil(
    /Received "?SIGHUP"? while starting: ignored[^\n]*\n/,
  );
  await Deno.writeTextFile(`${dir.path}/go`, "");
  const out = await serve.stdoutUntil(/listening on (\S+)/);
  const url = /listening on (\S+)/.exec(out)![1]!;
  assert.equal(await call(url, T1), 200);
  serve.child.kill("SIGTERM");
  assert.equal((await serve.child.status).code, 0);
});

Deno.test({
  name:
    "GatewayServer.reload refuses a config file another user came to own or every user can write since the start, and warns at each reload of one holding a token that others may read",
  ignore: Deno.build.os === "windows",
}, async () => {
  // Only the start looked at pyproxy.json: chmod 644 since went unsaid,
  // and a file chowned to another user (or opened to every user) since had
  // its token applied by the next reload, letting them in (security27).
  await using dir = await tempDir("pyproxy-reload-test-");
  const write = await setUp(dir.path);
  const path = `${dir.path}/pyproxy.json`;
  await write({ token: T1 });
  await Deno.chmod(path, 0o600);
  const root = Deno.uid() === 0;
  for (const trustedOnly of [true, false]) {
    // The CLI's reload (checked as read), and a caller's own loadConfig
    // (serve checks the path after it).
    const load = () =>
      loadConfig({ path, cli: { port: 0, workers: 1 }, trustedOnly });
    await withLogs(async (records) => {
      const warnings = () =>
        records.filter((r) => r.level === "warning").map((r) =>
          r.message.join("")
        ).filter((m) => m.includes("other users may read it"));
      await using server = await serve(await load(), { reloadConfig: load });
      await server.reload();
      assert.deepEqual(warnings(), []);
      // Readable by others: said at each reload.
      await Deno.chmod(path, 0o644);
      await server.reload();
      await server.reload();
      assert.equal(warnings().length, 2, warnings().join("\n"));
      assert.match(
        warnings()[0]!,
        /pyproxy\.json"? holds "token" and other users may read it \(mode "?644"?\)/,
      );
      // Theirs (as root), or every user's to write: their token refused.
      await write({ token: T2 });
      if (root) await Deno.chown(path, 4242, 4242);
      else await Deno.chmod(path, 0o666);
      await assert.rejects(server.reload(), (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(
          err.message,
          root
            ? /^Cannot use config file \S+\/pyproxy\.json: (the file read from it|it) belongs to another user \(uid 4242\), and another user who owns or can replace it could put tokens of theirs in it/
            : /^Cannot use config file \S+\/pyproxy\.json: every user can write to (the file read from it|it) \(mode 0666\)/,
        );
        return true;
      });
      assert.equal(await call(server.url, T2), 401);
      assert.equal(await call(server.url, T1), 200);
      // This user's again: taken.
      if (root) await Deno.chown(path, 0, 0);
      await Deno.chmod(path, 0o600);
      assert.deepEqual((await server.reload()).changed, ["token (1)"]);
      assert.equal(await call(server.url, T2), 200);
      await write({ token: T1 });
    });
  }
});
