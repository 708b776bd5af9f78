// Secret files (token files, the TLS key, the tracing exporter's CA and
// client key) checked as read: the file whose bytes are used is the one
// checked. The path was checked after the read, so a file swapped in for
// the read and out again before the check was taken (security27): a token
// of another user's let them in, a key of theirs was served.
import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { ConfigError } from "../src/errors.ts";
import { loadConfig, type ResolvedConfig } from "../src/gateway/config.ts";
import { readOtlpTls } from "../src/gateway/_otlp_tls.ts";
import { readTls } from "../src/gateway/_tls_files.ts";
import { readTokenFiles } from "../src/gateway/_token_files.ts";
import { readTrusted } from "../src/gateway/_trusted_file_read.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import { tempDir } from "./_harness.ts";
import { HAS_OPENSSL, selfSignedCert } from "./_self_signed_cert.ts";

const OTHER = 4242;
const ROOT = Deno.build.os !== "windows" && Deno.uid() === 0;

/**
 * The default runtime, whose reads of `path` find `swapIn` there (renamed
 * in place of the file, which is put back once the read is done), the
 * first `times` reads: what another user who can swap the file does
 * between a read and a check of the path.
 */
function swapping(path: string, swapIn: string, times = Infinity): Runtime {
  const base = defaultRuntime();
  let left = times;
  const swapped = async <T>(read: () => Promise<T>): Promise<T> => {
    await Deno.rename(path, `${path}.aside`);
    await Deno.copyFile(swapIn, path);
    const info = await Deno.stat(swapIn);
    await Deno.chmod(path, info.mode! & 0o7777);
    if (ROOT) await Deno.chown(path, info.uid, info.gid);
    try {
      return await read();
    } finally {
      await Deno.rename(`${path}.aside`, path);
    }
  };
  return {
    ...base,
    readRegularFile: (p, limit) =>
      p !== path || left-- <= 0
        ? base.readRegularFile!(p, limit)
        : swapped(() => base.readRegularFile!(p, limit)),
    // A plain read (a config file's, without trustedOnly) is swapped too.
    readFile: (p) =>
      p !== path || left-- <= 0
        ? base.readFile(p)
        : swapped(() => base.readFile(p)),
  };
}

/**
 * A file of another user's (uid 4242, when the tests run as root), or one
 * every user can write (0666) otherwise: either is refused by the path's
 * check, and must be by the read's.
 */
async function theirs(path: string, text: string | Uint8Array): Promise<void> {
  if (typeof text === "string") await Deno.writeTextFile(path, text);
  else await Deno.writeFile(path, text);
  if (ROOT) {
    await Deno.chmod(path, 0o600);
    await Deno.chown(path, OTHER, OTHER);
  } else {
    await Deno.chmod(path, 0o666);
  }
}
const THEIRS = ROOT
  ? /the file read from it belongs to another user \(uid 4242\)/
  : /every user can write to the file read from it \(mode 0666\)/;

Deno.test({
  name:
    "readTokenFiles: a token file of another user's swapped in for the read alone is refused",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    await using dir = await tempDir("pyproxy-trusted-read-test-");
    const path = `${dir.path}/token`;
    await Deno.writeTextFile(path, "good-token-0123456789\n", { mode: 0o600 });
    const their = `${dir.path}/their-token`;
    await theirs(their, "their-token-0123456789\n");
    const config = { tokenFile: path } as ResolvedConfig;
    const err = await readTokenFiles(swapping(path, their), config).then(
      (tokens) => tokens,
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConfigError, `taken: ${JSON.stringify(err)}`);
    assert.match(err.message, /^tokenFile: cannot use .*\/token: /);
    assert.match(err.message, THEIRS);
    // Without a swap, the file is taken.
    assert.deepEqual(await readTokenFiles(defaultRuntime(), config), {
      token: ["good-token-0123456789"],
    });
  },
});

Deno.test({
  name:
    "readTls and readOtlpTls: a key or CA of another user's swapped in for the read alone is refused",
  ignore: !HAS_OPENSSL || Deno.build.os === "windows",
  fn: async () => {
    await using dir = await tempDir("pyproxy-trusted-read-test-");
    await Deno.mkdir(`${dir.path}/good`);
    await Deno.mkdir(`${dir.path}/their`);
    const good = await selfSignedCert(`${dir.path}/good`);
    const made = await selfSignedCert(`${dir.path}/their`);
    const theirKey = `${dir.path}/their.key`;
    await theirs(theirKey, await Deno.readFile(made.key));
    const theirCa = `${dir.path}/their.crt`;
    await theirs(theirCa, await Deno.readFile(made.cert));
    // Their certificate is public, and may be served beside a key: only
    // the key of theirs is swapped in.
    const err = await readTls(
      swapping(good.key, theirKey),
      { cert: made.cert, key: good.key },
      undefined,
      getLogger(["pyproxy"]),
    ).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof ConfigError, "their key was served");
    assert.match(err.message, /^tls\.key: cannot use .*\/good\/tls\.key: /);
    assert.match(err.message, THEIRS);
    const otlp = (path: string, swapIn: string) =>
      readOtlpTls(
        swapping(path, swapIn),
        path === good.cert
          ? { ca: { path, variable: "OTEL_EXPORTER_OTLP_CERTIFICATE" } }
          : {
            cert: {
              path: made.cert,
              variable: "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            },
            key: { path, variable: "OTEL_EXPORTER_OTLP_CLIENT_KEY" },
          },
        (p) => p,
      ).then(() => undefined, (e: unknown) => e);
    const ca = await otlp(good.cert, theirCa);
    assert.ok(ca instanceof ConfigError, "their CA was trusted");
    assert.match(
      ca.message,
      /^OTEL_EXPORTER_OTLP_CERTIFICATE: .* cannot be used: /,
    );
    assert.match(ca.message, THEIRS);
    const key = await otlp(good.key, theirKey);
    assert.ok(key instanceof ConfigError, "their client key was used");
    assert.match(
      key.message,
      /^OTEL_EXPORTER_OTLP_CLIENT_KEY: .* cannot be used: /,
    );
    assert.match(key.message, THEIRS);
  },
});

Deno.test({
  name:
    "loadConfig({ trustedOnly }) (the CLI's reload) refuses a config file of another user's swapped in for the read alone",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    await using dir = await tempDir("pyproxy-trusted-read-test-");
    const path = `${dir.path}/pyproxy.json`;
    await Deno.writeTextFile(path, '{"token":"good-token-0123456789"}\n', {
      mode: 0o600,
    });
    const their = `${dir.path}/their.json`;
    await theirs(their, '{"token":"their-token-0123456789"}\n');
    const load = (runtime: Runtime) =>
      loadConfig({
        path,
        runtime,
        cli: { modelsDir: dir.path },
        trustedOnly: true,
      });
    const err = await load(swapping(path, their)).then(
      (config) => config.token,
      (e: unknown) => e,
    );
    assert.ok(err instanceof ConfigError, `taken: ${JSON.stringify(err)}`);
    assert.match(err.message, /^Cannot use config file \S+\/pyproxy\.json: /);
    assert.match(err.message, THEIRS);
    assert.equal((await load(defaultRuntime())).token, "good-token-0123456789");
  },
});

Deno.test({
  name:
    "readTrusted reads again a file found replaced since its read (what was read is not what was checked), and gives up after 3 reads",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    await using dir = await tempDir("pyproxy-trusted-read-test-");
    const path = `${dir.path}/token`;
    await Deno.writeTextFile(path, "checked\n", { mode: 0o600 });
    // This user's own file, 0600, but not the one at the path: another of
    // its secrets, a link swapped for a moment.
    const other = `${dir.path}/other`;
    await Deno.writeTextFile(other, "other\n", { mode: 0o600 });
    const read = (runtime: Runtime) =>
      readTrusted(runtime, path, async () => {
        const got = (await runtime.readRegularFile!(path, 64))!;
        return { value: new TextDecoder().decode(got.bytes), file: got };
      });
    // Once (a rotation, or a swap): the file at the path, read again.
    assert.deepEqual(await read(swapping(path, other, 1)), {
      value: "checked\n",
    });
    // Each time: an error, never the other file's text.
    await assert.rejects(
      read(swapping(path, other)),
      (err: Error) =>
        err.name === "ReplacedWhileReadError" &&
        /another file was at its path each time it had been read \(3 reads\)/
          .test(err.message),
    );
  },
});

Deno.test({
  name:
    "readTrusted reads again a file whose path did not resolve after its read (Bun's realpath during a rename), and throws the runtime's error for a file gone",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    await using dir = await tempDir("pyproxy-trusted-read-test-");
    const path = `${dir.path}/token`;
    await Deno.writeTextFile(path, "checked\n", { mode: 0o600 });
    const base = defaultRuntime();
    // As Bun's fs.promises.realpath answers now and then while another
    // file is renamed over the path (which is never without one).
    let misses = 1;
    const runtime: Runtime = {
      ...base,
      realPath: (p) =>
        misses-- > 0
          ? Promise.reject(
            Object.assign(new Error(`ENOENT: no such file, realpath '${p}'`), {
              code: "ENOENT",
            }),
          )
          : base.realPath(p),
    };
    let reads = 0;
    const read = () =>
      readTrusted(runtime, path, async () => {
        reads++;
        const got = (await runtime.readRegularFile!(path, 64))!;
        return { value: new TextDecoder().decode(got.bytes), file: got };
      });
    assert.deepEqual(await read(), { value: "checked\n" });
    assert.equal(reads, 2);
    // Never resolving: the runtime's error at the last read.
    misses = Infinity;
    reads = 0;
    await assert.rejects(
      read(),
      (err: Error & { code?: string }) => err.code === "ENOENT",
    );
    assert.equal(reads, 3);
  },
});
