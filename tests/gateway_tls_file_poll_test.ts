/**
 * `serve` polls its TLS files (`tlsFileInterval`): a certificate renewed
 * in place (a kubelet-style `..data` symlink swap, or a copy by hand that
 * writes the certificate and then the key) is served on new HTTPS and gRPC
 * connections without a signal; real `serve` processes, real certificates,
 * the served certificate read by `openssl s_client`.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { ConfigError } from "../src/errors.ts";
import { parseConfig, resolveConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { TOKEN_FILE_INTERVAL_FLOOR } from "../src/gateway/_token_file_interval.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import { withLogs } from "./_gateway_harness.ts";
import { tempDir, waitFor } from "./_harness.ts";
import { datedCert, HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

const MOD = new URL("../mod.ts", import.meta.url).pathname;
const ECHO = new URL("../examples/models/echo.py", import.meta.url);
const TOKEN = "first-token-0123456789abcdef";
// A new certificate takes a listener beside the old one (SO_REUSEPORT).
const IGNORE = !HAS_OPENSSL || Deno.build.os !== "linux";

/** The SHA-256 fingerprint of a PEM certificate, as node prints it. */
function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/**
 * The fingerprint of the certificate a new TLS connection to `port` gets
 * (whatever it is signed by), or the error's text. Not blocking: the
 * gateway may run in this process.
 */
async function servedFingerprint(port: number): Promise<string> {
  const child = new Deno.Command("openssl", {
    args: [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-servername",
      "localhost",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
  try {
    const out = new TextDecoder().decode((await child.output()).stdout);
    const pem = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/
      .exec(out);
    return pem === null ? `no certificate: ${out}` : fingerprint(pem[0]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until new connections to `port` get the certificate `pem`. */
async function waitServed(port: number, pem: string, what: string) {
  const want = fingerprint(pem);
  let got = "";
  await waitFor(async () => (got = await servedFingerprint(port)) === want, {
    timeout: 15_000,
    interval: 50,
  }).catch((err) => {
    throw new Error(
      `${what} serves the new certificate ${want}, not ${got}: ${err.message}`,
    );
  });
}

/**
 * `mod.ts serve` with `dir`'s pyproxy.json and `args` as a child process,
 * its stderr gathered; disposing kills it if it still runs.
 */
function serveProcess(dir: string, args: string[]) {
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
      ...args,
    ],
    env: { PYPROXY_TOKEN: "" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let err = "";
  let out = "";
  const reading = (async () => {
    for (;;) {
      const { value, done } = await stderr.read();
      if (done) return;
      err += value;
    }
  })();
  return {
    child,
    get stderr() {
      return err;
    },
    /** Waits until stderr matches `pattern`. */
    async stderrUntil(pattern: RegExp): Promise<string> {
      await waitFor(() => err.search(pattern) !== -1, {
        timeout: 15_000,
        interval: 20,
        message: `stderr matches ${pattern}: ${err}`,
      });
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
      await stderr.cancel().catch(() => {});
      await reading.catch(() => {});
    },
  };
}

/** A models directory with echo, and a pyproxy.json writer. */
async function setUp(dir: string): Promise<(file: object) => Promise<void>> {
  await Deno.mkdir(`${dir}/models`);
  await Deno.copyFile(ECHO, `${dir}/models/echo.py`);
  return (file) =>
    Deno.writeTextFile(
      `${dir}/pyproxy.json`,
      JSON.stringify({ modelsDir: "models", token: TOKEN, ...file }),
    );
}

/**
 * A mounted secret as the kubelet lays it out: `<dir>/..<version>/` holds
 * the files, `..data` links to it, and `tls.crt`/`tls.key` link through
 * `..data`. `swap` moves `..data` to a new version atomically (a rename of
 * a new link over it) and removes the old version, as the kubelet does.
 */
async function kubeletSecret(dir: string) {
  await Deno.mkdir(dir);
  let version = 0;
  const put = async (files: { cert: string; key: string }) => {
    const name = `..2026_12_06_${++version}`;
    await Deno.mkdir(`${dir}/${name}`);
    await Deno.copyFile(files.cert, `${dir}/${name}/tls.crt`);
    await Deno.copyFile(files.key, `${dir}/${name}/tls.key`);
    await Deno.chmod(`${dir}/${name}/tls.key`, 0o600);
    return name;
  };
  return {
    async init(files: { cert: string; key: string }) {
      await Deno.symlink(await put(files), `${dir}/..data`);
      await Deno.symlink("..data/tls.crt", `${dir}/tls.crt`);
      await Deno.symlink("..data/tls.key", `${dir}/tls.key`);
    },
    async swap(files: { cert: string; key: string }) {
      const old = await Deno.readLink(`${dir}/..data`);
      await Deno.symlink(await put(files), `${dir}/..data_tmp`);
      await Deno.rename(`${dir}/..data_tmp`, `${dir}/..data`);
      await Deno.remove(`${dir}/${old}`, { recursive: true });
    },
  };
}

Deno.test({
  name:
    "serve takes a renewed certificate from a kubelet-style secret swap without a signal (HTTPS and gRPC), and a reload re-points the poll",
  ignore: IGNORE,
}, async () => {
  await using dir = await tempDir("pyproxy-tls-poll-test-");
  const write = await setUp(dir.path);
  const certs = `${dir.path}/made`;
  await Deno.mkdir(certs);
  const first = await selfSignedCert(certs, "first");
  const second = await selfSignedCert(certs, "second");
  const third = await selfSignedCert(certs, "third");
  const fourth = await selfSignedCert(certs, "fourth");
  const secret = await kubeletSecret(`${dir.path}/secret`);
  await secret.init(first);
  const grpc = { hostname: "127.0.0.1", port: 0 };
  await write({
    tls: { cert: "secret/tls.crt", key: "secret/tls.key" },
    grpc,
  });
  await using serve = serveProcess(dir.path, ["--tls-file-interval", "100"]);
  const out = await serve.stdoutUntil(/listening on (\S+)[\s\S]*gRPC[^\n]*\n/);
  const port = Number(/listening on https:\/\/[^\s]*:(\d+)/.exec(out)![1]);
  const grpcPort = Number(/gRPC: +\S+:(\d+)/.exec(out)![1]);
  assert.equal(await servedFingerprint(port), fingerprint(first.pem));
  assert.equal(await servedFingerprint(grpcPort), fingerprint(first.pem));

  // The certificate manager renews the secret; nothing signals.
  await secret.swap(second);
  await waitServed(port, second.pem, "HTTPS");
  await waitServed(grpcPort, second.pem, "gRPC");
  assert.match(
    await serve.stderrUntil(/Read the TLS files again[^\n]*\n/),
    /Read the TLS files again: "?tls \(CN=localhost, valid until [^)]+\)/,
  );
  // An HTTPS call on a new connection trusting the new certificate only.
  {
    using client = Deno.createHttpClient({ caCerts: [second.pem] });
    const res = await fetch(`https://localhost:${port}/healthz`, { client });
    await res.body?.cancel();
    assert.equal(res.status, 200);
  }

  // A reload naming other files: the poll reads those from then on.
  await Deno.mkdir(`${dir.path}/other`);
  await Deno.copyFile(third.cert, `${dir.path}/other/tls.crt`);
  await Deno.copyFile(third.key, `${dir.path}/other/tls.key`);
  await write({
    tls: { cert: "other/tls.crt", key: "other/tls.key" },
    grpc,
  });
  serve.child.kill("SIGHUP");
  await serve.stderrUntil(/Reloaded the configuration[^\n]*\n/);
  await waitServed(port, third.pem, "HTTPS after the reload");
  // The old files change: not read any more; the new ones: served.
  await secret.swap(first);
  const tmp = `${dir.path}/other/tmp`;
  await Deno.copyFile(fourth.key, `${tmp}.key`);
  await Deno.copyFile(fourth.cert, `${tmp}.crt`);
  await Deno.rename(`${tmp}.key`, `${dir.path}/other/tls.key`);
  await Deno.rename(`${tmp}.crt`, `${dir.path}/other/tls.crt`);
  await waitServed(port, fourth.pem, "HTTPS from the reload's files");
  await waitServed(grpcPort, fourth.pem, "gRPC from the reload's files");
  assert.doesNotMatch(serve.stderr, /ERROR|cannot be served/i);
  // Twice: the secret's swap, then the reload's files (not the old ones);
  // the line may come a moment after the new listener serves.
  await serve.stderrUntil(/(Read the TLS files again[\s\S]*){2}/);
  assert.equal(
    serve.stderr.match(/Read the TLS files again/g)?.length,
    2,
    serve.stderr,
  );
  serve.child.kill("SIGTERM");
  assert.equal((await serve.child.status).code, 0);
});

Deno.test({
  name:
    "serve's TLS poll waits for a key copied after its certificate, and logs a pair still mismatched once",
  ignore: IGNORE,
}, async () => {
  await using dir = await tempDir("pyproxy-tls-poll-test-");
  const write = await setUp(dir.path);
  const certs = `${dir.path}/made`;
  await Deno.mkdir(certs);
  const first = await selfSignedCert(certs, "first");
  const second = await selfSignedCert(certs, "second");
  const third = await selfSignedCert(certs, "third");
  await Deno.copyFile(first.cert, `${dir.path}/tls.crt`);
  await Deno.copyFile(first.key, `${dir.path}/tls.key`);
  // Polled every second, the debug lines shown: the test copies the key
  // within a second of the poll that found the certificate alone. (In
  // pyproxy.json, not a flag: a reload sets a shorter one below.)
  const tls = { cert: "tls.crt", key: "tls.key" };
  await write({ tls, tlsFileInterval: 1000 });
  await using serve = serveProcess(dir.path, ["--log-level", "debug"]);
  const out = await serve.stdoutUntil(/listening on (\S+)/);
  const port = Number(/listening on https:\/\/[^\s]*:(\d+)/.exec(out)![1]);
  assert.equal(await servedFingerprint(port), fingerprint(first.pem));
  const notYet = /TLS files changed, but cannot be served yet/g;
  const loud = /TLS files changed, but cannot be served;/g;

  // By hand: the certificate first, the key a moment later.
  await Deno.copyFile(second.cert, `${dir.path}/tls.crt`);
  await serve.stderrUntil(notYet);
  await Deno.copyFile(second.key, `${dir.path}/tls.key`);
  await waitServed(port, second.pem, "HTTPS once the key is copied");
  assert.equal(serve.stderr.match(loud), null, serve.stderr);

  // A certificate whose key never comes: an error, once, and the
  // certificate in force kept. No race with the test here: polled every
  // 150 ms from now on (the four polls below took 4 s).
  await write({ tls, tlsFileInterval: 150 });
  serve.child.kill("SIGHUP");
  await serve.stderrUntil(/TLS files: read every "?150"? ms from now on/);
  await Deno.copyFile(third.cert, `${dir.path}/tls.crt`);
  await serve.stderrUntil(loud);
  assert.match(serve.stderr, /tls\.key: .*tls\.key is not the private key/);
  assert.equal(await servedFingerprint(port), fingerprint(second.pem));
  // Two more polls find it so: not logged again but at debug level.
  const still = /TLS files still cannot be served/g;
  await waitFor(() => (serve.stderr.match(still)?.length ?? 0) >= 2, {
    timeout: 15_000,
    interval: 50,
  });
  await Deno.copyFile(third.key, `${dir.path}/tls.key`);
  await waitServed(port, third.pem, "HTTPS once the key finally comes");
  assert.equal(serve.stderr.match(loud)?.length, 1, serve.stderr);
  serve.child.kill("SIGTERM");
  assert.equal((await serve.child.status).code, 0);
});

Deno.test("tlsFileInterval: 0 or at least 100 ms, 60000 by default with TLS, none without; a configuration built by hand is checked by serve", async () => {
  const message = (input: Record<string, unknown>, source: string) => {
    try {
      parseConfig(input, source);
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      return err.message;
    }
    return "no error";
  };
  assert.match(
    message({ tlsFileInterval: 99 }, "pyproxy.json"),
    /^tlsFileInterval: expected 0 \(read on a reload only\) or at least 100 ms .*\(at pyproxy\.json: tlsFileInterval\)$/,
  );
  assert.equal(message({ tlsFileInterval: 0 }, "pyproxy.json"), "no error");
  assert.equal(message({ tlsFileInterval: 100 }, "pyproxy.json"), "no error");
  await using dir = await tempDir("pyproxy-tls-poll-test-");
  await Deno.mkdir(`${dir.path}/models`);
  const tls = { cert: "tls.crt", key: "tls.key" };
  const base = { port: 0, workers: 1, modelsDir: `${dir.path}/models` };
  assert.equal(
    resolveConfig({ cwd: dir.path, cli: { ...base, tls } }).tlsFileInterval,
    60_000,
  );
  assert.equal(
    resolveConfig({ cwd: dir.path, cli: { ...base, tls, tlsFileInterval: 0 } })
      .tlsFileInterval,
    0,
  );
  assert.equal(
    resolveConfig({ cwd: dir.path, cli: base }).tlsFileInterval,
    undefined,
  );
  // Checked before anything starts (or the files are read).
  await assert.rejects(
    serve({
      ...resolveConfig({ cwd: dir.path, cli: { ...base, tls } }),
      tlsFileInterval: 2 ** 31,
    }),
    (err) =>
      err instanceof ConfigError &&
      /^tlsFileInterval: expected at most 2147483647 ms .* \(at config: tlsFileInterval\)$/
        .test(err.message),
  );
});

/** Runs `fn` with the floor of the poll intervals lowered to 1 ms. */
/** `<dir>/models` with the echo model in it. */
async function modelsDir(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/models`);
  await Deno.copyFile(ECHO, `${dir}/models/echo.py`);
}

/** serve's configuration of `<dir>/models` over `tls`, polled every `tlsFileInterval` ms. */
function pollConfig(
  dir: string,
  tls: { cert: string; key: string },
  tlsFileInterval: number,
): ReturnType<typeof resolveConfig> {
  return resolveConfig({
    cwd: dir,
    cli: {
      port: 0,
      workers: 1,
      modelsDir: `${dir}/models`,
      token: TOKEN,
      tls,
      tlsFileInterval,
    },
  });
}

/** The default runtime, counting the reads of `path` (one a poll). */
function countingReads(
  path: string,
): { runtime: Runtime; reads: () => number } {
  const base = defaultRuntime();
  let count = 0;
  return {
    runtime: {
      ...base,
      readRegularFile: (file, limit) => {
        if (file === path) count++;
        return base.readRegularFile!(file, limit);
      },
    },
    reads: () => count,
  };
}

/**
 * `<dir>/models`, a kubelet-style secret in `<dir>/secret` holding the first
 * of two pairs, and serve's configuration of it read on reloads only
 * (tlsFileInterval 0: the reload alone reads the files).
 */
async function reloadSecret(dir: string) {
  await modelsDir(dir);
  const certs = `${dir}/made`;
  await Deno.mkdir(certs);
  const first = await selfSignedCert(certs, "first");
  const second = await selfSignedCert(certs, "second");
  const secret = await kubeletSecret(`${dir}/secret`);
  await secret.init(first);
  const certPath = `${dir}/secret/tls.crt`;
  const config = pollConfig(dir, {
    cert: certPath,
    key: `${dir}/secret/tls.key`,
  }, 0);
  return { first, second, secret, certPath, config };
}

async function fastPolls(fn: () => Promise<void>): Promise<void> {
  const floor = TOKEN_FILE_INTERVAL_FLOOR.ms;
  TOKEN_FILE_INTERVAL_FLOOR.ms = 1;
  try {
    await fn();
  } finally {
    TOKEN_FILE_INTERVAL_FLOOR.ms = floor;
  }
}

Deno.test({
  name:
    "serve's TLS poll where a new certificate needs a restart (no SO_REUSEPORT): the certificate in force kept, the error logged once, the key not warned about at every poll",
  ignore: !HAS_OPENSSL,
}, async () => {
  await using dir = await tempDir("pyproxy-tls-poll-test-");
  await modelsDir(dir.path);
  const certs = `${dir.path}/made`;
  await Deno.mkdir(certs);
  const first = await selfSignedCert(certs, "first");
  const second = await selfSignedCert(certs, "second");
  const cert = `${dir.path}/tls.crt`;
  const key = `${dir.path}/tls.key`;
  await Deno.copyFile(first.cert, cert);
  await Deno.copyFile(first.key, key);
  // Readable by others: warned about at start.
  await Deno.chmod(key, 0o644);
  const config = pollConfig(dir.path, { cert, key }, 1);
  await fastPolls(() =>
    withLogs(async (records) => {
      const lines = () => records.map((r) => r.message.join(""));
      const count = (pattern: RegExp) =>
        lines().filter((l) => pattern.test(l)).length;
      await using server = await serve(config, {
        runtime: { ...defaultRuntime(), reusePortTls: false },
      });
      const port = Number(new URL(server.url).port);
      assert.equal(count(/^TLS key .* may be read by other users/), 1);
      // Said at start, without a reloadConfig: the poll is on.
      assert.equal(
        count(/^Serving TLS where a reload cannot change the certificate/),
        1,
        lines().join("\n"),
      );
      await Deno.copyFile(second.cert, cert);
      await Deno.copyFile(second.key, key);
      await waitFor(() => count(/TLS files still cannot be served/) >= 3, {
        message: lines().join("\n"),
      });
      assert.equal(
        count(
          /^TLS files changed, but cannot be served; the certificate in force is kept: tls: the certificate changed, and here only a restart serves a new one/,
        ),
        1,
        lines().join("\n"),
      );
      assert.equal(count(/^TLS key .* may be read by other users/), 1);
      assert.equal(await servedFingerprint(port), fingerprint(first.pem));
    })
  );
});

Deno.test({
  name:
    "serve's TLS poll and reloads one at a time: files changed under polls every millisecond and reloads, the last pair is what new connections get",
  ignore: IGNORE,
}, async () => {
  await using dir = await tempDir("pyproxy-tls-poll-test-");
  await modelsDir(dir.path);
  const certs = `${dir.path}/made`;
  await Deno.mkdir(certs);
  // Each swap a new pair, as renewals are (a pair come back would let two
  // polls find the same mismatched mix of two swaps).
  const pairs = await Promise.all(
    Array.from({ length: 9 }, (_, i) => selfSignedCert(certs, `p${i}`)),
  );
  const secret = await kubeletSecret(`${dir.path}/secret`);
  await secret.init(pairs[0]!);
  const config = pollConfig(dir.path, {
    cert: `${dir.path}/secret/tls.crt`,
    key: `${dir.path}/secret/tls.key`,
  }, 1);
  await fastPolls(() =>
    withLogs(async (records) => {
      // The listeners of a new certificate being started: never two at once
      // (each start held a few ms, for a race to show).
      const base = defaultRuntime();
      let starting = 0;
      let most = 0;
      const runtime: Runtime = {
        ...base,
        serve: async (options, handler) => {
          if (options.reusePort !== true) return base.serve(options, handler);
          most = Math.max(most, ++starting);
          try {
            await new Promise((resolve) => setTimeout(resolve, 5));
            return await base.serve(options, handler);
          } finally {
            starting--;
          }
        },
      };
      await using server = await serve(config, {
        runtime,
        reloadConfig: () => Promise.resolve(config),
      });
      const port = Number(new URL(server.url).port);
      const reloads: Promise<unknown>[] = [];
      for (let i = 1; i < pairs.length; i++) {
        await secret.swap(pairs[i]!);
        reloads.push(server.reload());
      }
      // A reload reads the certificate and then the key: a swap between
      // the two reads makes a pair that is not one, read again then; swaps
      // in a row faster than its reads may still fail that reload only
      // (the next one, or the next poll, takes the new pair), as may a key
      // found replaced after each of its reads (`readTrusted`).
      for (const result of await Promise.allSettled(reloads)) {
        if (result.status === "fulfilled") continue;
        assert.match(
          String(result.reason),
          /is not the private key of|another file was at its path each time it had been read/,
        );
      }
      const last = pairs.at(-1)!;
      await waitServed(port, last.pem, "HTTPS after the storm");
      // The poll never logs such a pair: the next poll finds the swap done.
      const errors = records.filter((r) =>
        r.level === "error" && !r.message.join("").startsWith("Reload failed")
      );
      assert.deepEqual(errors.map((r) => r.message.join("")), []);
      assert.equal(most, 1, "two new listeners started at once");
    }, "info")
  );
});

Deno.test({
  name:
    "a reload whose reads straddle a kubelet swap (the new certificate, then the old key) reads the pair again and serves the new one",
  ignore: IGNORE,
}, async () => {
  await using dir = await tempDir("pyproxy-tls-poll-test-");
  const { first, second, secret, certPath, config } = await reloadSecret(
    dir.path,
  );
  // Armed: the kubelet swaps the secret right after the next read of the
  // certificate, before the key's.
  const base = defaultRuntime();
  let armed = false;
  const runtime: Runtime = {
    ...base,
    readRegularFile: async (path, limit) => {
      const bytes = await base.readRegularFile!(path, limit);
      if (armed && path === certPath) {
        armed = false;
        await secret.swap(second);
      }
      return bytes;
    },
  };
  await withLogs(async (records) => {
    await using server = await serve(config, {
      runtime,
      reloadConfig: () => Promise.resolve(config),
    });
    const port = Number(new URL(server.url).port);
    assert.equal(await servedFingerprint(port), fingerprint(first.pem));
    armed = true;
    const result = await server.reload();
    assert.equal(armed, false, "the swap happened during the reload");
    assert.equal(result.changed.length, 1, JSON.stringify(result));
    assert.match(result.changed[0]!, /^tls \(CN=localhost/);
    assert.equal(await servedFingerprint(port), fingerprint(second.pem));
    const errors = records.filter((r) => r.level === "error");
    assert.deepEqual(errors.map((r) => r.message.join("")), []);
  }, "info");
});

Deno.test({
  name:
    "serve's TLS poll warns of a key made readable by others by a chmod alone (its text unchanged), once per mode",
  ignore: !HAS_OPENSSL,
}, async () => {
  await using dir = await tempDir("pyproxy-tls-poll-test-");
  await modelsDir(dir.path);
  const pair = await selfSignedCert(dir.path, "tls");
  const { runtime, reads } = countingReads(pair.key);
  const config = pollConfig(dir.path, { cert: pair.cert, key: pair.key }, 5);
  await fastPolls(() =>
    withLogs(async (records) => {
      await using _server = await serve(config, { runtime });
      const warnings = () =>
        records.filter((r) =>
          r.level === "warning" &&
          /^TLS key .* may be read by other users/.test(r.message.join(""))
        ).length;
      const polls = async (n: number) => {
        const seen = reads();
        await waitFor(() => reads() >= seen + n);
      };
      await polls(2);
      assert.equal(warnings(), 0);
      await Deno.chmod(pair.key, 0o644);
      await waitFor(() => warnings() === 1);
      await polls(5);
      assert.equal(warnings(), 1);
      // Closed, then opened again: warned again.
      await Deno.chmod(pair.key, 0o600);
      await polls(3);
      await Deno.chmod(pair.key, 0o640);
      await waitFor(() => warnings() === 2);
      await polls(3);
      assert.equal(warnings(), 2);
    }, "info")
  );
});

Deno.test({
  name:
    "serve's TLS poll says, once, that the key it serves has come to be replaceable by another user (its text unchanged), and when that is over",
  ignore: !HAS_OPENSSL,
}, async () => {
  // Only a changed text was checked (readTls): a key whose directory was
  // opened to every user, or that was given to another one, went on being
  // served without a word (chaos48).
  await using dir = await tempDir("pyproxy-tls-poll-test-");
  await modelsDir(dir.path);
  const keys = `${dir.path}/keys`;
  await Deno.mkdir(keys, { mode: 0o700 });
  const pair = await selfSignedCert(keys, "tls");
  const { runtime, reads } = countingReads(pair.key);
  const config = pollConfig(dir.path, { cert: pair.cert, key: pair.key }, 5);
  await fastPolls(() =>
    withLogs(async (records) => {
      await using server = await serve(config, { runtime });
      const said = (level: string, pattern: RegExp) =>
        records.filter((r) =>
          r.level === level && pattern.test(r.message.join(""))
        ).length;
      const errors = () =>
        said(
          "error",
          /^TLS key \S+tls\.key, served, can now be read or replaced by another user: every user can write to its directory \(mode 0777\)/,
        );
      const polls = async (n: number) => {
        const seen = reads();
        await waitFor(() => reads() >= seen + n);
      };
      await polls(2);
      assert.equal(errors(), 0);
      await Deno.chmod(keys, 0o777);
      await waitFor(() => errors() === 1);
      await polls(5);
      assert.equal(errors(), 1);
      await Deno.chmod(keys, 0o700);
      await waitFor(() =>
        said("info", /^TLS key \S+ is no longer open to other users/) === 1
      );
      await polls(3);
      assert.equal(errors(), 1);
      // Served all along.
      const port = Number(new URL(server.url).port);
      assert.equal(await servedFingerprint(port), fingerprint(pair.pem));
    }, "info")
  );
});

Deno.test({
  name:
    "serve warns of a certificate expired or not valid yet, at start and when its poll serves one",
  ignore: IGNORE,
}, async () => {
  await using dir = await tempDir("pyproxy-tls-poll-test-");
  await modelsDir(dir.path);
  const certs = `${dir.path}/made`;
  await Deno.mkdir(certs);
  const expired = await datedCert(
    certs,
    "expired",
    "20200101000000Z",
    "20200102000000Z",
  );
  const future = await datedCert(
    certs,
    "future",
    "20990101000000Z",
    "20990102000000Z",
  );
  const valid = await selfSignedCert(certs, "valid");
  const secret = await kubeletSecret(`${dir.path}/secret`);
  await secret.init(expired);
  const config = pollConfig(dir.path, {
    cert: `${dir.path}/secret/tls.crt`,
    key: `${dir.path}/secret/tls.key`,
  }, 5);
  await fastPolls(() =>
    withLogs(async (records) => {
      const warnings = () =>
        records.filter((r) =>
          r.level === "warning" && /^TLS certificate /.test(r.message.join(""))
        ).map((r) => r.message.join(""));
      await using server = await serve(config);
      const port = Number(new URL(server.url).port);
      assert.equal(warnings().length, 1, warnings().join("\n"));
      assert.match(
        warnings()[0]!,
        /^TLS certificate .*tls\.crt expired on "?Jan +2 00:00:00 2020 GMT"?: clients that check it refuse/,
      );
      await secret.swap(valid);
      await waitServed(port, valid.pem, "the valid certificate");
      assert.equal(warnings().length, 1, warnings().join("\n"));
      await secret.swap(future);
      await waitServed(port, future.pem, "the certificate not valid yet");
      assert.equal(warnings().length, 2, warnings().join("\n"));
      assert.match(
        warnings()[1]!,
        /^TLS certificate .*tls\.crt is not valid before "?Jan +1 00:00:00 2099 GMT"?: clients that check it refuse/,
      );
    }, "info")
  );
});

Deno.test({
  name:
    "serve's TLS poll says when files it logged as unusable hold the certificate in force again (a file put back as it was)",
  ignore: !HAS_OPENSSL,
}, async () => {
  await using dir = await tempDir("pyproxy-tls-poll-test-");
  await modelsDir(dir.path);
  const pair = await selfSignedCert(dir.path, "tls");
  const { runtime, reads } = countingReads(pair.key);
  const config = pollConfig(dir.path, { cert: pair.cert, key: pair.key }, 5);
  await fastPolls(() =>
    withLogs(async (records) => {
      await using _server = await serve(config, { runtime });
      const lines = () => records.map((r) => r.message.join(""));
      const count = (pattern: RegExp) =>
        lines().filter((l) => pattern.test(l)).length;
      // Unreadable (root reads any mode: a directory in its place).
      await Deno.rename(pair.key, `${pair.key}.aside`);
      await Deno.mkdir(pair.key);
      await waitFor(() => count(/cannot be served; the certificate/) === 1, {
        message: lines().join("\n"),
      });
      await Deno.remove(pair.key);
      await Deno.rename(`${pair.key}.aside`, pair.key);
      await waitFor(() => count(/^TLS files readable again/) === 1, {
        message: lines().join("\n"),
      });
      // Once: the polls after it find the files as they were.
      const logged = count(/./);
      const seen = reads();
      await waitFor(() => reads() >= seen + 5);
      assert.equal(count(/./), logged, lines().join("\n"));
    }, "info")
  );
});

Deno.test({
  name:
    "a reload that finds a TLS file gone as the kubelet removes the old version's directory reads it again at once",
  ignore: IGNORE,
}, async () => {
  await using dir = await tempDir("pyproxy-tls-poll-test-");
  const { second, secret, certPath, config } = await reloadSecret(
    dir.path,
  );
  // Armed: the next read of the certificate followed the old `..data`
  // into the directory the swap removed (what a path walk that straddles
  // the swap and the removal gets).
  const base = defaultRuntime();
  let armed = false;
  const runtime: Runtime = {
    ...base,
    readRegularFile: (path, limit) => {
      if (armed && path === certPath) {
        armed = false;
        return Promise.reject(
          Object.assign(new Error(`ENOENT: no such file, open '${path}'`), {
            code: "ENOENT",
          }),
        );
      }
      return base.readRegularFile!(path, limit);
    },
  };
  await withLogs(async (records) => {
    await using server = await serve(config, {
      runtime,
      reloadConfig: () => Promise.resolve(config),
    });
    const port = Number(new URL(server.url).port);
    await secret.swap(second);
    armed = true;
    const result = await server.reload();
    assert.equal(armed, false, "the read found the file gone");
    assert.match(result.changed.join(), /^tls \(CN=localhost/);
    assert.equal(await servedFingerprint(port), fingerprint(second.pem));
    const errors = records.filter((r) => r.level === "error");
    assert.deepEqual(errors.map((r) => r.message.join("")), []);
  }, "info");
});
