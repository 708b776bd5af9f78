/**
 * Token files across reloads: the poll starts, stops or changes its
 * interval with the configuration a reload applies; a file others may read
 * is warned about whenever it is another file (a reload naming it, the
 * kubelet's rotation), once; `tokenFileInterval` has a floor.
 */
import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import {
  parseConfig,
  resolveConfig,
  type ResolvedConfig,
} from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { TOKEN_FILE_INTERVAL_FLOOR } from "../src/gateway/_token_file_interval.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import { tempDir, waitFor } from "./_harness.ts";
import { withLogs } from "./_gateway_harness.ts";

const ECHO = new URL("../examples/models/echo.py", import.meta.url);
const T1 = "first-token-0123456789abcdef";
const T2 = "second-token-0123456789abcdef";
const T3 = "third-token-0123456789abcdef";
const M1 = "manage-token-0123456789abcdef";

/** POSTs to echo with `token`: the status. */
async function call(url: string, token: string): Promise<number> {
  const res = await fetch(`${url}/v1/models/echo/execute`, {
    method: "POST",
    body: '{"a":1}',
    headers: { authorization: `Bearer ${token}` },
  });
  await res.body?.cancel();
  return res.status;
}

/** Waits until `token` gets `status` from echo (a poll took the file). */
function until(url: string, token: string, status: number): Promise<void> {
  return waitFor(async () => (await call(url, token)) === status, {
    message: `${token.slice(0, 6)}... to get ${status}`,
  });
}

/** The default runtime, counting the reads of every file. */
function countingReads(): { runtime: Runtime; reads: () => number } {
  const base = defaultRuntime();
  let reads = 0;
  return {
    runtime: {
      ...base,
      readRegularFile: (p, limit) => {
        reads++;
        return base.readRegularFile!(p, limit);
      },
    },
    reads: () => reads,
  };
}

/** A models directory with echo in `dir`; the base of the configurations. */
async function models(dir: string) {
  await Deno.mkdir(`${dir}/models`);
  await Deno.copyFile(ECHO, `${dir}/models/echo.py`);
  return { port: 0, workers: 1, modelsDir: `${dir}/models` };
}

/** Runs `fn` with the floor of `tokenFileInterval` lowered to 1 ms. */
async function fastPolls(fn: () => Promise<void>): Promise<void> {
  const floor = TOKEN_FILE_INTERVAL_FLOOR.ms;
  TOKEN_FILE_INTERVAL_FLOOR.ms = 1;
  try {
    await fn();
  } finally {
    TOKEN_FILE_INTERVAL_FLOOR.ms = floor;
  }
}

Deno.test("tokenFileInterval: 0 or at least 100 ms, from the flags, the file and a configuration built by hand, at start and on a reload", async () => {
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
    message({ tokenFileInterval: 5 }, "command line"),
    /^tokenFileInterval: expected 0 \(read on a reload only\) or at least 100 ms .*\(at command line: tokenFileInterval\)$/,
  );
  assert.match(
    message({ tokenFileInterval: 99 }, "pyproxy.json"),
    /^tokenFileInterval: expected 0 .*\(at pyproxy\.json: tokenFileInterval\)$/,
  );
  assert.equal(message({ tokenFileInterval: 0 }, "pyproxy.json"), "no error");
  assert.equal(message({ tokenFileInterval: 100 }, "pyproxy.json"), "no error");

  await using dir = await tempDir("pyproxy-token-file-reload-test-");
  const base = await models(dir.path);
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(path, `${T1}\n`, { mode: 0o600 });
  const config = resolveConfig({
    cwd: dir.path,
    cli: { ...base, tokenFile: path },
  });
  // Built by hand, it skipped the schema: serve refuses it before it
  // starts anything.
  await assert.rejects(
    serve({ ...config, tokenFileInterval: 1 }),
    (err) =>
      err instanceof ConfigError &&
      /^tokenFileInterval: expected 0 .* \(at config: tokenFileInterval\)$/
        .test(err.message),
  );
  // Nor beyond a timer's range: Deno, Node and Bun run a longer timer after
  // 1 ms, a poll every millisecond (the file's schema bounds it too).
  for (const tokenFileInterval of [2 ** 31, Infinity]) {
    await assert.rejects(
      serve({ ...config, tokenFileInterval }),
      (err) =>
        err instanceof ConfigError &&
        /^tokenFileInterval: expected at most 2147483647 ms .* \(at config: tokenFileInterval\)$/
          .test(err.message),
    );
  }
  await withLogs(async () => {
    let reloadWith: ResolvedConfig = { ...config, tokenFileInterval: 1 };
    await using server = await serve(config, {
      reloadConfig: () => Promise.resolve(reloadWith),
    });
    await assert.rejects(server.reload(), /^ConfigError: tokenFileInterval/);
    reloadWith = config;
    assert.deepEqual(await server.reload(), { changed: [], ignored: [] });
  });
});

Deno.test("serve starts polling the token files a reload names where there were none, stops when a reload removes them, and takes a new interval", async () => {
  await using dir = await tempDir("pyproxy-token-file-reload-test-");
  const base = await models(dir.path);
  const tokenPath = `${dir.path}/token`;
  const managePath = `${dir.path}/manage`;
  await Deno.writeTextFile(tokenPath, `${T2}\n`, { mode: 0o600 });
  await Deno.writeTextFile(managePath, `${M1}\n`, { mode: 0o600 });
  const { runtime, reads } = countingReads();
  const inline = resolveConfig({
    cwd: dir.path,
    cli: { ...base, token: T1, manageToken: M1, allowManage: true },
  });
  await fastPolls(() =>
    withLogs(async (records) => {
      const lines = () => records.map((r) => r.message.join(""));
      let reloadWith = inline;
      await using server = await serve(inline, {
        runtime,
        reloadConfig: () => Promise.resolve(reloadWith),
      });
      assert.equal(await call(server.url, T1), 200);
      // Inline to files: read by the reload, then polled.
      reloadWith = resolveConfig({
        cwd: dir.path,
        cli: {
          ...base,
          tokenFile: tokenPath,
          manageTokenFile: managePath,
          tokenFileInterval: 5,
          allowManage: true,
        },
      });
      assert.deepEqual(await server.reload(), {
        changed: ["token (1)"],
        ignored: [],
      });
      assert.equal(await call(server.url, T1), 401);
      assert.equal(await call(server.url, T2), 200);
      assert.ok(
        lines().includes("Token files: read every 5 ms from now on"),
        lines().join("\n"),
      );
      await Deno.writeTextFile(tokenPath, `${T2}\n${T3}\n`);
      await until(server.url, T3, 200);
      await Deno.writeTextFile(managePath, `${T1}\n`);
      await until(server.url, M1, 401);
      assert.equal(await call(server.url, T1), 200);

      // Another interval: the poll goes on at it.
      reloadWith = { ...reloadWith, tokenFileInterval: 7 };
      assert.deepEqual(await server.reload(), { changed: [], ignored: [] });
      assert.ok(
        lines().includes("Token files: read every 7 ms from now on"),
        lines().join("\n"),
      );
      await Deno.writeTextFile(tokenPath, `${T3}\n`);
      await until(server.url, T2, 401);

      // Files to inline: no longer polled (a change of the files is not
      // applied, however many polls would have seen it).
      reloadWith = resolveConfig({
        cwd: dir.path,
        cli: { ...base, token: T3, manageToken: M1, allowManage: true },
      });
      assert.deepEqual(await server.reload(), {
        changed: ["manageToken (1)"],
        ignored: [],
      });
      assert.ok(
        lines().includes("Token files: no longer read but on a reload"),
        lines().join("\n"),
      );
      const stopped = reads();
      await Deno.writeTextFile(tokenPath, `${T2}\n`);
      // The reload reads no file (inline tokens): the poll of every 7 ms is
      // gone. A poll under way at the stop may still read its second file
      // (it read the first before); one that went on would read about 14
      // more in the 50 ms waited here (an absence has no event to await).
      reloadWith = { ...reloadWith };
      await server.reload();
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.ok(reads() - stopped <= 1, `${reads() - stopped} reads`);
      assert.equal(await call(server.url, T2), 401);
      assert.equal(await call(server.url, T3), 200);
    })
  );
});

Deno.test({
  name:
    "serve warns of a token file others may read at start, at a reload that names another, and at a rotation to a new file, once each",
  ignore: Deno.build.os === "windows",
}, async () => {
  await using dir = await tempDir("pyproxy-token-file-reload-test-");
  const base = await models(dir.path);
  const safe = `${dir.path}/safe`;
  const open = `${dir.path}/open`;
  await Deno.writeTextFile(safe, `${T1}\n`, { mode: 0o600 });
  await Deno.writeTextFile(open, `${T2}\n`);
  await Deno.chmod(open, 0o644);
  const { runtime, reads } = countingReads();
  const config = (path: string) =>
    resolveConfig({
      cwd: dir.path,
      cli: { ...base, tokenFile: path, tokenFileInterval: 5 },
    });
  await fastPolls(() =>
    withLogs(async (records) => {
      // The token file's warnings (on a loaded machine others come too:
      // one made this test read 2 for 1 in a full run).
      const warnings = () =>
        records.filter((r) => r.level === "warning").map((r) =>
          r.message.join("")
        ).filter((text) => text.startsWith("Token file "));
      let reloadWith = config(safe);
      await using server = await serve(reloadWith, {
        runtime,
        reloadConfig: () => Promise.resolve(reloadWith),
      });
      assert.deepEqual(warnings(), []);
      // A reload naming a file others may read: warned about then.
      reloadWith = config(open);
      await server.reload();
      assert.deepEqual(warnings(), [
        `Token file ${open} (tokenFile) may be read by other users (mode 644): chmod 600 it (a Kubernetes secret: defaultMode 0400, and the pod's fsGroup for a non-root user)`,
      ]);
      // Again: the same file, nothing new to say; nor on the polls.
      await server.reload();
      let seen = reads();
      await waitFor(() => reads() >= seen + 5);
      assert.equal(warnings().length, 1, warnings().join("\n"));
      // Replaced by another file (a rotation), readable too: once more.
      await Deno.writeTextFile(`${open}.new`, `${T3}\n`);
      await Deno.chmod(`${open}.new`, 0o640);
      await Deno.rename(`${open}.new`, open);
      await until(server.url, T3, 200);
      await waitFor(() => warnings().length === 2);
      assert.match(warnings()[1]!, /\(mode 640\)/);
      seen = reads();
      await waitFor(() => reads() >= seen + 5);
      assert.equal(warnings().length, 2, warnings().join("\n"));
      // Made private, then readable again: warned about again.
      await Deno.chmod(open, 0o600);
      await server.reload();
      await Deno.chmod(open, 0o644);
      await server.reload();
      assert.equal(warnings().length, 3, warnings().join("\n"));
    })
  );
});

Deno.test("serve refuses a tokenFile and a manageTokenFile naming the same file, and says so", async () => {
  await using dir = await tempDir("pyproxy-token-file-reload-test-");
  const base = await models(dir.path);
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(path, `${T1}\n`, { mode: 0o600 });
  await assert.rejects(
    serve(resolveConfig({
      cwd: dir.path,
      cli: { ...base, tokenFile: path, manageTokenFile: path },
    })),
    (err) =>
      err instanceof ConfigError &&
      err.message ===
        `manageTokenFile: the same file as tokenFile (${path}); the management token must differ from the inference token, so it needs a file of its own`,
  );
});

Deno.test("serve's reload does not wait for ever on the readable-file check of a token file whose file system hangs (nor do the reloads after it)", async () => {
  await using dir = await tempDir("pyproxy-token-file-reload-test-");
  const base = await models(dir.path);
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(path, `${T1}\n`, { mode: 0o600 });
  const real = defaultRuntime();
  let hang = false;
  const runtime: Runtime = {
    ...real,
    // A stat that never answers (a hung network file system).
    owner: (p) => hang ? new Promise(() => {}) : real.owner!(p),
  };
  const config = resolveConfig({
    cwd: dir.path,
    cli: { ...base, tokenFile: path, tokenFileInterval: 0 },
  });
  await withLogs(async () => {
    await using server = await serve(config, {
      runtime,
      reloadConfig: () => Promise.resolve(config),
    });
    hang = true;
    await Deno.writeTextFile(path, `${T2}\n`);
    const began = performance.now();
    // The read looks at the file's and its directory's owners too (a file
    // another user could write is refused, security24): with the stat hung,
    // it fails within its 2 s, not for ever, and the tokens in force stay;
    // once two reads hang, the next fails at once (no thread more held).
    for (
      const why of [/no answer within 2000 ms/, /no answer within 2000 ms/]
    ) {
      await assert.rejects(server.reload(), why);
    }
    await assert.rejects(
      server.reload(),
      /2 reads of it have had no answer yet/,
    );
    assert.ok(performance.now() - began < 8000);
    assert.equal(await call(server.url, T1), 200);
    assert.equal(await call(server.url, T2), 401);
  });
});

Deno.test({
  name:
    "a check of a configuration since replaced (a poll running beside a reload) does not forget the warning about the new file",
  ignore: Deno.build.os === "windows",
}, async () => {
  const { warnReadableTokenFiles } = await import(
    "../src/gateway/_token_files.ts"
  );
  await using dir = await tempDir("pyproxy-token-file-reload-test-");
  const safe = `${dir.path}/safe`;
  const open = `${dir.path}/open`;
  await Deno.writeTextFile(safe, `${T1}\n`, { mode: 0o600 });
  await Deno.writeTextFile(open, `${T2}\n`);
  await Deno.chmod(open, 0o644);
  const said: string[] = [];
  const logger = {
    warn: (message: string) => said.push(message),
  } as unknown as Parameters<typeof warnReadableTokenFiles>[2];
  const config = (tokenFile: string) =>
    ({ tokenFile }) as unknown as Parameters<typeof warnReadableTokenFiles>[1];
  const warned = new Map<string, string>();
  const runtime = defaultRuntime();
  await warnReadableTokenFiles(runtime, config(open), logger, warned);
  assert.equal(said.length, 1);
  // The poll, still on the configuration before the reload: the private file.
  await warnReadableTokenFiles(runtime, config(safe), logger, warned);
  await warnReadableTokenFiles(runtime, config(open), logger, warned);
  assert.equal(said.length, 1, said.join("\n"));
  // The warned-about file made private, then readable again: said again.
  await Deno.chmod(open, 0o600);
  await warnReadableTokenFiles(runtime, config(open), logger, warned);
  await Deno.chmod(open, 0o644);
  await warnReadableTokenFiles(runtime, config(open), logger, warned);
  assert.equal(said.length, 2, said.join("\n"));
});
