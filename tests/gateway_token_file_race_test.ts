/**
 * Token files against races: a poll whose read was overtaken by a reload
 * (stale tokens must not be applied over the reload's), and a change that
 * a reload took and that was then undone (the poll compares with what is
 * in force, not with what it read last).
 */
import assert from "node:assert/strict";
import { resolveConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { readTokenFiles } from "../src/gateway/_token_files.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import { tempDir } from "./_harness.ts";
import { withLogs } from "./_gateway_harness.ts";
import { TOKEN_FILE_INTERVAL_FLOOR } from "../src/gateway/_token_file_interval.ts";

// Polled every few ms here (users: 100 at least), so that the tests wait
// little for a poll.
TOKEN_FILE_INTERVAL_FLOOR.ms = 1;

const ECHO = new URL("../examples/models/echo.py", import.meta.url);
const T1 = "first-token-0123456789abcdef";
const T2 = "second-token-0123456789abcdef";
const T3 = "third-token-0123456789abcdef";

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

/**
 * A runtime that can hold the next read of `path` after it read the file
 * (`hold()` resolves once a read is held, with the function releasing it).
 */
function holdingReads(path: string): {
  runtime: Runtime;
  hold(): Promise<() => void>;
} {
  const base = defaultRuntime();
  let armed: ((release: () => void) => void) | undefined;
  return {
    runtime: {
      ...base,
      readRegularFile: async (p, limit) => {
        const bytes = await base.readRegularFile!(p, limit);
        if (p === path && armed !== undefined) {
          const held = armed;
          armed = undefined;
          await new Promise<void>((release) => held(release));
        }
        return bytes;
      },
    },
    hold: () => new Promise((resolve) => (armed = resolve)),
  };
}

/** A gateway on `path` polled every 5 ms, with a `reload` reading `path`. */
async function servePolled(
  dir: string,
  path: string,
  runtime: Runtime,
  reloadWith: () => ReturnType<typeof resolveConfig>,
) {
  await Deno.mkdir(`${dir}/models`);
  await Deno.copyFile(ECHO, `${dir}/models/echo.py`);
  const config = resolveConfig({
    cwd: dir,
    cli: {
      port: 0,
      workers: 1,
      modelsDir: `${dir}/models`,
      tokenFile: path,
      tokenFileInterval: 5,
    },
  });
  const server = await serve(config, {
    runtime,
    reloadConfig: () => Promise.resolve(reloadWith() ?? config),
  });
  return { server, config };
}

Deno.test("TokenFileWatch does not apply a read that a reload overtook (the reload's newer tokens stay)", async () => {
  await using dir = await tempDir("pyproxy-token-file-race-test-");
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(path, `${T1}\n`, { mode: 0o600 });
  const { runtime, hold } = holdingReads(path);
  let reloadWith: ReturnType<typeof resolveConfig> | undefined;
  await withLogs(async () => {
    const { server, config } = await servePolled(
      dir.path,
      path,
      runtime,
      () => reloadWith!,
    );
    await using _ = server;
    reloadWith = config;
    // A poll reads T2 and is held; the file moves on to T3, which a
    // reload reads and applies.
    let release = await hold();
    await Deno.writeTextFile(path, `${T2}\n`);
    let next = hold();
    release();
    release = await next;
    await Deno.writeTextFile(path, `${T3}\n`);
    await server.reload();
    assert.equal(await call(server.url, T3), 200);
    assert.equal(await call(server.url, T2), 401);
    // The held poll goes on; the next one is held, so what is in force
    // now is what the stale read left.
    next = hold();
    release();
    release = await next;
    assert.equal(await call(server.url, T3), 200);
    assert.equal(await call(server.url, T2), 401);

    // The same, with reloads switching to an inline token and back to the
    // file (the same path): the tokens the second reload read stay.
    await Deno.writeTextFile(path, `${T1}\n`);
    next = hold();
    release();
    release = await next;
    reloadWith = resolveConfig({
      cwd: dir.path,
      cli: { port: 0, workers: 1, modelsDir: `${dir.path}/models`, token: T2 },
    });
    await server.reload();
    assert.equal(await call(server.url, T2), 200);
    await Deno.writeTextFile(path, `${T3}\n`);
    reloadWith = config;
    await server.reload();
    assert.equal(await call(server.url, T3), 200);
    next = hold();
    release();
    release = await next;
    assert.equal(await call(server.url, T3), 200);
    assert.equal(await call(server.url, T1), 401);
    release();
  });
});

/** Waits until `token` is accepted. */
async function waitApplied(url: string, token: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (await call(url, token) === 200) return;
  }
  throw new Error(`${token.slice(0, 6)}... never accepted`);
}

Deno.test("TokenFileWatch sees a file go back to what it read before a reload took another content", async () => {
  await using dir = await tempDir("pyproxy-token-file-race-test-");
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(path, `${T1}\n`, { mode: 0o600 });
  const { runtime, hold } = holdingReads(path);
  let reloadWith: ReturnType<typeof resolveConfig> | undefined;
  await withLogs(async () => {
    const { server, config } = await servePolled(
      dir.path,
      path,
      runtime,
      () => reloadWith!,
    );
    await using _ = server;
    reloadWith = config;
    // A poll has read T1 (as in force) and is held; the file says T2, a
    // reload takes it, and the file goes back to T1 before the next poll.
    const release = await hold();
    await Deno.writeTextFile(path, `${T2}\n`);
    await server.reload();
    assert.equal(await call(server.url, T1), 401);
    await Deno.writeTextFile(path, `${T1}\n`);
    release();
    // A later poll puts T1 back in force.
    await waitApplied(server.url, T1);
    assert.equal(await call(server.url, T2), 401);
  });
});

Deno.test({
  name:
    "TokenFileWatch and reload go on past a read without an answer (a hung file system), and a FIFO swapped in is refused at once",
  ignore: Deno.build.os === "windows",
}, async () => {
  await using dir = await tempDir("pyproxy-token-file-race-test-");
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(`${dir.path}/first`, `${T1}\n`, { mode: 0o600 });
  await Deno.symlink("first", path);
  const base = defaultRuntime();
  let hung = false;
  let recover = () => {};
  const recovered = new Promise<void>((resolve) => recover = resolve);
  const runtime: Runtime = {
    ...base,
    // A file system that stopped answering: a read ends when it recovers.
    readRegularFile: async (p, limit) => {
      if (p === path && hung) await recovered;
      return base.readRegularFile!(p, limit);
    },
  };
  let reloadWith: ReturnType<typeof resolveConfig> | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await withLogs(async (records) => {
    const { server, config } = await servePolled(
      dir.path,
      path,
      runtime,
      () => reloadWith!,
    );
    await using _ = server;
    reloadWith = config;
    const errors = () =>
      records.filter((r) => r.level === "error").map((r) => r.message.join(""));
    // A FIFO in the file's place: refused, not waited on.
    const fifo = `${dir.path}/fifo`;
    assert.equal(
      (await new Deno.Command("mkfifo", { args: [fifo] }).output()).code,
      0,
    );
    await Deno.symlink("fifo", `${path}.new`);
    await Deno.rename(`${path}.new`, path);
    await assert.rejects(server.reload(), /token: not a regular file$/);

    hung = true;
    const settled = await Promise.race([
      server.reload().then(() => "applied", (err) => String(err)),
      new Promise((resolve) => timer = setTimeout(resolve, 4000, "hung")),
    ]);
    clearTimeout(timer);
    assert.match(
      String(settled),
      /tokenFile: cannot read .*\/token: (no answer within 2000 ms|2 reads of it have had no answer yet)/,
    );
    assert.equal(await call(server.url, T1), 200);
    // The file system answers again: the poll goes on, takes the file.
    await Deno.writeTextFile(`${dir.path}/second`, `${T2}\n`, {
      mode: 0o600,
    });
    await Deno.symlink("second", `${path}.new`);
    await Deno.rename(`${path}.new`, path);
    hung = false;
    recover();
    await waitApplied(server.url, T2);
    assert.equal(await call(server.url, T1), 401);
    // Each problem logged once, not once a poll.
    const polled = errors().filter((e) => e.startsWith("Token file changed"));
    assert.ok(polled.length <= 3, polled.join("\n"));
  });
});

Deno.test("Token files: a read that finds the file gone once (the kubelet deleting the old directory right after its ..data swap) reads it again at once", async () => {
  await using dir = await tempDir("pyproxy-token-file-race-");
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(path, `${T1}\n`);
  const base = defaultRuntime();
  let gone = 1;
  const runtime: Runtime = {
    ...base,
    readRegularFile: (p, limit) => {
      if (p === path && gone-- > 0) {
        return Promise.reject(
          Object.assign(new Error("no such file"), { code: "ENOENT" }),
        );
      }
      return base.readRegularFile!(p, limit);
    },
  };
  const config = resolveConfig({ cwd: dir.path, cli: { tokenFile: path } });
  assert.deepEqual(await readTokenFiles(runtime, config), { token: [T1] });
  // Gone for good: the error names it.
  await Deno.remove(path);
  await assert.rejects(
    readTokenFiles(runtime, config),
    /tokenFile: cannot read .*: no such file/,
  );
});

Deno.test("TokenFileWatch does not apply a token file rewritten in place and read half written: two polls in a row must read a change", async () => {
  await using dir = await tempDir("pyproxy-token-file-race-test-");
  const path = `${dir.path}/token`;
  // A token per tenant: the first half of the file is a valid list.
  const tokens = Array.from(
    { length: 200 },
    (_, i) => `tenant-${String(i).padStart(4, "0")}-0123456789abcdef`,
  );
  const text = tokens.map((t) => `${t}\n`).join("");
  const last = tokens.at(-1)!;
  const rotated = "tenant-rotated-0123456789abcdef";
  await Deno.writeTextFile(path, text, { mode: 0o600 });
  const { runtime, hold } = holdingReads(path);
  await withLogs(async () => {
    const { server, config } = await servePolled(
      dir.path,
      path,
      runtime,
      () => config,
    );
    await using _ = server;
    assert.equal(await call(server.url, last), 200);
    // A poll's read is held (it read the whole file); the file is then
    // rewritten in place, its writer between two writes: truncated, the
    // first half written (at a line's end).
    let release = await hold();
    const file = await Deno.open(path, { write: true, truncate: true });
    try {
      const bytes = new TextEncoder().encode(text.replace(last, rotated));
      const half = bytes.indexOf(10, bytes.length / 2) + 1;
      const write = async (from: number, to: number) => {
        for (let at = from; at < to;) {
          at += await file.write(bytes.subarray(at, to));
        }
      };
      await write(0, half);
      // The next poll reads the half file, and is held while the writer
      // writes the rest (with a new token for the last tenant).
      let next = hold();
      release();
      release = await next;
      await write(half, bytes.length);
      // That poll's check goes on; the next poll is held (the check before
      // it is over): the half file's tokens were not applied.
      next = hold();
      release();
      release = await next;
      assert.equal(await call(server.url, last), 200, "refused mid-write");
      assert.equal(await call(server.url, tokens[0]!), 200);
      release();
    } finally {
      file.close();
    }
    // The whole file, read by two polls in a row, is applied.
    await waitApplied(server.url, rotated);
    assert.equal(await call(server.url, last), 401);
    assert.equal(await call(server.url, tokens[0]!), 200);
  });
});
