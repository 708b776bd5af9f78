/**
 * Tokens from files (`tokenFile`, `--token-file`, `PYPROXY_TOKEN_FILE`):
 * read at start, on a reload, and polled while serving, so that a mounted
 * secret rotated in place or by the kubelet's symlink swap rotates the
 * tokens without a signal; a bad file keeps the tokens in force.
 */
import assert from "node:assert/strict";
import { relative } from "node:path";
import { ConfigError } from "../src/errors.ts";
import { loadConfig, resolveConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { readTokenFiles } from "../src/gateway/_token_files.ts";
import { untrustedThroughLinks } from "../src/gateway/_untrusted_path.ts";
import type { ResolvedConfig } from "../src/gateway/config.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";
import { tempDir, waitFor } from "./_harness.ts";
import { withLogs } from "./_gateway_harness.ts";
import { TOKEN_FILE_INTERVAL_FLOOR } from "../src/gateway/_token_file_interval.ts";

// Polled every few ms here (users: 100 at least), so that the tests wait
// little for a poll.
TOKEN_FILE_INTERVAL_FLOOR.ms = 1;

const MOD = new URL("../mod.ts", import.meta.url).pathname;
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

/** Waits until `token` gets `status` from echo (the poll took the file). */
function until(url: string, token: string, status: number): Promise<void> {
  return waitFor(async () => (await call(url, token)) === status, {
    message: `${token.slice(0, 6)}... to get ${status}`,
  });
}

/** `fn`'s ConfigError message (it must throw one). */
async function configError(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.message;
  }
  throw new Error("no ConfigError");
}

/**
 * A secret mounted as the kubelet mounts it: `<dir>/token` is a link to
 * `..data/token`, `..data` a link to a timestamped directory; `update`
 * writes a new directory and swaps `..data` to it with a rename (atomic).
 */
async function kubeletSecret(dir: string, text: string) {
  await Deno.mkdir(dir);
  let version = 0;
  const update = async (text: string) => {
    const data = `..2026_12_06_${version++}`;
    await Deno.mkdir(`${dir}/${data}`);
    await Deno.writeTextFile(`${dir}/${data}/token`, text, { mode: 0o600 });
    await Deno.symlink(data, `${dir}/..data_tmp`);
    await Deno.rename(`${dir}/..data_tmp`, `${dir}/..data`);
  };
  await update(text);
  await Deno.symlink("..data/token", `${dir}/token`);
  return { path: `${dir}/token`, update };
}

Deno.test("resolveConfig takes tokenFile from the first layer that sets a token or its file, and refuses both in one", async () => {
  const base = { cwd: "/srv", fileDir: "/etc/pyproxy" };
  const fromFile = resolveConfig({ ...base, file: { tokenFile: "token" } });
  assert.equal(fromFile.tokenFile, "/etc/pyproxy/token");
  assert.equal(fromFile.token, undefined);
  assert.equal(fromFile.tokenFileInterval, 10_000);
  // The command line over the file, as --token is.
  const flag = resolveConfig({
    ...base,
    file: { token: T1, tokenFileInterval: 500 },
    cli: { tokenFile: "run/token" },
  });
  assert.equal(flag.tokenFile, "/srv/run/token");
  assert.equal(flag.token, undefined);
  assert.equal(flag.tokenFileInterval, 500);
  const env = resolveConfig({
    ...base,
    file: { tokenFile: "token" },
    envManageTokenFile: "/run/secrets/manage",
    envToken: T1,
  });
  assert.equal(env.token, T1);
  assert.equal(env.tokenFile, undefined);
  assert.equal(env.manageTokenFile, "/run/secrets/manage");
  assert.equal(resolveConfig({ cwd: "/srv" }).tokenFileInterval, undefined);

  assert.match(
    await configError(() =>
      resolveConfig({ ...base, file: { token: T1, tokenFile: "t" } })
    ),
    /^tokenFile: token and tokenFile are both set; set one \(at pyproxy\.json: token, tokenFile\)$/,
  );
  assert.match(
    await configError(() =>
      resolveConfig({ ...base, cli: { manageToken: M1, manageTokenFile: "m" } })
    ),
    /^manageTokenFile: --manage-token and --manage-token-file are both set/,
  );
  assert.match(
    await configError(() =>
      resolveConfig({ ...base, envToken: T1, envTokenFile: "/t" })
    ),
    /^tokenFile: PYPROXY_TOKEN and PYPROXY_TOKEN_FILE are both set/,
  );

  // A token file is a token: bound off loopback, eval on, none generated.
  const open = resolveConfig({
    ...base,
    cli: { host: "0.0.0.0", allowEval: true, tokenFile: "/t" },
  });
  assert.equal(open.tokenGenerated, undefined);
  assert.equal(open.token, undefined);
  // A management token file alone gets an inference token generated.
  const manage = resolveConfig({ ...base, cli: { manageTokenFile: "/m" } });
  assert.equal(manage.tokenGenerated, true);
  assert.match(
    await configError(() =>
      resolveConfig({
        ...base,
        cli: { tokenFile: "/t", forwardHeaders: ["authorization"] },
      })
    ),
    /^forwardHeaders: "authorization" cannot be forwarded/,
  );
});

Deno.test("loadConfig reads the token files (one token a line, # comments) and names the file of a bad one", async () => {
  await using dir = await tempDir("pyproxy-token-file-test-");
  await Deno.mkdir(`${dir.path}/models`);
  const path = `${dir.path}/token`;
  const load = (cli: object = {}) =>
    loadConfig({
      cli: { modelsDir: `${dir.path}/models`, tokenFile: path, ...cli },
    });
  await Deno.writeTextFile(
    path,
    `\uFEFF# rotated 2026-12-06: ${
      T1.slice(0, 3)
    } goes\r\n${T1}\r\n\n  ${T2}  \n`,
  );
  const config = await load();
  assert.deepEqual(config.token, [T1, T2]);
  assert.equal(config.tokenFile, path);

  const cases: Array<[string | undefined, RegExp]> = [
    [
      "",
      /^token: expected at least one token .*\(at tokenFile: \/.*\/token\)$/,
    ],
    ["# nothing yet\n\n", /^token: expected at least one token/],
    ["short\n", /^token: expected a token of at least 16 characters/],
    [`${T1}\n${T1}\n`, /^token: expected different tokens/],
    [
      Array.from({ length: 1025 }, (_, i) => `${T1}-${i}`).join("\n"),
      /^token: expected at most 1024 tokens/,
    ],
    [`${T1}\u0001x\n`, /^token: expected a token without .*control/],
    [
      `${T2}\n${T1}  # the old one\n`,
      /^token: expected a "#" comment on a line of its own .*\(at tokenFile: \/.*\/token\)$/,
    ],
    [undefined, /^tokenFile: cannot read \/.*\/token: no such file$/],
  ];
  for (const [text, message] of cases) {
    if (text === undefined) await Deno.remove(path);
    else await Deno.writeTextFile(path, text);
    assert.match(await configError(() => load()), message, text);
  }
  assert.match(
    await configError(() => load({ tokenFile: dir.path })),
    /^tokenFile: cannot read .*: not a regular file$/,
  );
  await Deno.writeTextFile(path, `${T1}\n`);
  await Deno.writeTextFile(`${dir.path}/manage`, `${M1}\n${T1}\n`);
  assert.match(
    await configError(() => load({ manageTokenFile: `${dir.path}/manage` })),
    /^manageToken: must differ from token/,
  );
  await Deno.writeTextFile(`${dir.path}/manage`, `${M1}\n`);
  const both = await load({ manageTokenFile: `${dir.path}/manage` });
  assert.deepEqual([both.token, both.manageToken], [[T1], [M1]]);
});

Deno.test({
  name:
    "readTokenFiles refuses a token file another user could write (theirs, in a directory of theirs, or linked from one), and takes a Kubernetes secret's layout (needs root to chown: ignored otherwise)",
  ignore: Deno.build.os === "windows" || Deno.uid() !== 0,
}, async () => {
  // Only the mode was checked (a warning): a token file of another user's
  // was read, and they could write a token of their own into it whatever
  // its mode, or point a link of theirs at a file they can read; the
  // gateway then let them in, with the management token to run code as its
  // user (security24). Root chowns to uids without a user: no useradd.
  const OTHER = 4242;
  const FS_GROUP = 4243;
  await using dir = await tempDir("pyproxy-token-file-owner-test-");
  const rt = defaultRuntime();
  const read = (path: string, runtime = rt, option = "tokenFile") =>
    readTokenFiles(runtime, { [option]: path } as unknown as ResolvedConfig);
  const refused = async (path: string, why: RegExp, option = "tokenFile") => {
    const message = await configError(() => read(path, rt, option));
    assert.match(message, new RegExp(`^${option}: cannot use ${path}: `));
    assert.match(message, why);
    assert.match(message, /could put a token of their own in it/);
  };
  const theirs = `${dir.path}/theirs`;
  await Deno.writeTextFile(theirs, `${T1}\n`, { mode: 0o600 });
  await Deno.chown(theirs, OTHER, OTHER);
  await refused(theirs, /: it belongs to another user \(uid 4242\)/);
  await refused(theirs, /\(and run code as this user\)/, "manageTokenFile");
  // Root's file, in a directory of theirs: theirs to replace.
  await Deno.mkdir(`${dir.path}/their-dir`, { mode: 0o755 });
  await Deno.writeTextFile(`${dir.path}/their-dir/token`, `${T1}\n`, {
    mode: 0o600,
  });
  await Deno.chown(`${dir.path}/their-dir`, OTHER, OTHER);
  await refused(
    `${dir.path}/their-dir/token`,
    /its directory belongs to another user \(uid 4242\)/,
  );
  // Their link to a file of root's they can read (/etc/machine-id is 32
  // characters: a token they know).
  const known = `${dir.path}/known`;
  await Deno.writeTextFile(known, `${T2}\n`, { mode: 0o644 });
  await Deno.symlink(known, `${dir.path}/link`);
  // The link's own owner (Deno.chown follows links): chown -h.
  const chown = await new Deno.Command("chown", {
    args: ["-h", `${OTHER}:${OTHER}`, `${dir.path}/link`],
  }).output();
  assert.ok(chown.success, new TextDecoder().decode(chown.stderr));
  await Deno.chown(known, 0, 0);
  await refused(`${dir.path}/link`, /belongs to another user \(uid 4242\)/);
  // Their link reached through one of root's: a link of root's to a name
  // in a sticky directory every user can write (`/tmp`), where they put
  // theirs. Only the first link and the file were checked: taken (chaos51).
  await Deno.mkdir(`${dir.path}/sticky`);
  await Deno.chmod(`${dir.path}/sticky`, 0o1777);
  await Deno.rename(`${dir.path}/link`, `${dir.path}/sticky/link`);
  await Deno.symlink(`${dir.path}/sticky/link`, `${dir.path}/mine`);
  await refused(
    `${dir.path}/mine`,
    /: .*\/sticky\/link \(a link on its way\) belongs to another user \(uid 4242\)/,
  );
  // Named relative to the working directory (a plugin module's path).
  assert.match(
    (await untrustedThroughLinks(
      rt,
      relative(Deno.cwd(), `${dir.path}/mine`),
      await Deno.realPath(`${dir.path}/mine`),
    ))!,
    /\/sticky\/link \(a link on its way\) belongs to another user/,
  );
  // Their link to a directory, on the way of root's link.
  await Deno.symlink(dir.path, `${dir.path}/sticky/dir`);
  await new Deno.Command("chown", {
    args: ["-h", `${OTHER}:${OTHER}`, `${dir.path}/sticky/dir`],
  }).output();
  await Deno.symlink(`${dir.path}/sticky/dir/known`, `${dir.path}/mine-too`);
  await refused(
    `${dir.path}/mine-too`,
    /\/sticky\/dir \(a link on its way\) belongs to another user \(uid 4242\)/,
  );
  // A directory link of root's on the path, to root's directory: taken (its
  // link's mode, 0777, was read as its directory's: "every user can write").
  await Deno.mkdir(`${dir.path}/release`, { mode: 0o755 });
  await Deno.writeTextFile(`${dir.path}/release/token`, `${T1}\n`, {
    mode: 0o600,
  });
  await Deno.symlink(`${dir.path}/release`, `${dir.path}/current`);
  assert.deepEqual(await read(`${dir.path}/current/token`), { token: [T1] });
  // Every user can write it.
  const open = `${dir.path}/open`;
  await Deno.writeTextFile(open, `${T1}\n`);
  await Deno.chmod(open, 0o666);
  await refused(open, /every user can write to it \(mode 0666\)/);
  // Root's file in root's private directory, below a directory every user
  // can write (no sticky bit) or one of theirs: they rename the private
  // directory away and put theirs in its place, then back, and a read
  // between the swaps, checked after, took their token (113 requests of
  // theirs let in over 30 s of swaps; newcomer24).
  for (
    const [mode, owner, why] of [
      [
        0o777,
        0,
        /every user can write to .*\/above, a directory above it \(mode 0777\)/,
      ],
      [
        0o755,
        OTHER,
        /\/above, a directory above it, belongs to another user \(uid 4242\)/,
      ],
    ] as const
  ) {
    await Deno.mkdir(`${dir.path}/above/private`, { recursive: true });
    await Deno.chmod(`${dir.path}/above/private`, 0o700);
    await Deno.writeTextFile(`${dir.path}/above/private/token`, `${T1}\n`, {
      mode: 0o600,
    });
    await Deno.chmod(`${dir.path}/above`, mode);
    await Deno.chown(`${dir.path}/above`, owner, owner);
    await refused(`${dir.path}/above/private/token`, why);
    // Through a link of root's in a private directory, too.
    await Deno.symlink(
      `${dir.path}/above/private/token`,
      `${dir.path}/to-above`,
    );
    await refused(`${dir.path}/to-above`, why);
    await Deno.remove(`${dir.path}/to-above`);
    await Deno.remove(`${dir.path}/above`, { recursive: true });
  }

  // A Kubernetes secret with the pod's fsGroup: the volume root:fsGroup
  // 3777 (sticky), the timestamped directory 2755, the file root:fsGroup
  // 0440 (defaultMode 0440), reached through token -> ..data/token and
  // ..data -> ..<time>. Root's, so taken by root and by the pod's user.
  const secret = await kubeletSecret(`${dir.path}/secret`, `${T3}\n`);
  const data = await Deno.realPath(`${dir.path}/secret/..data`);
  await Deno.chmod(`${data}/token`, 0o440);
  await Deno.chown(`${data}/token`, 0, FS_GROUP);
  await Deno.chmod(data, 0o2755);
  await Deno.chown(data, 0, FS_GROUP);
  await Deno.chmod(`${dir.path}/secret`, 0o3777);
  await Deno.chown(`${dir.path}/secret`, 0, FS_GROUP);
  assert.deepEqual(await read(secret.path), { token: [T3] });
  const podUser = { ...rt, uid: () => 1000 };
  assert.deepEqual(await read(secret.path, podUser), { token: [T3] });
  // The pod user's own file (a runAsUser's emptyDir): taken.
  await Deno.chown(theirs, OTHER, OTHER);
  assert.deepEqual(
    await read(theirs, { ...rt, uid: () => OTHER }),
    { token: [T1] },
  );
});

/** A runtime counting the reads of `path`. */
function countingReads(
  path: string,
): { runtime: Runtime; reads: () => number } {
  const base = defaultRuntime();
  let reads = 0;
  return {
    runtime: {
      ...base,
      readRegularFile: (p, limit) => {
        if (p === path) reads++;
        return base.readRegularFile!(p, limit);
      },
    },
    reads: () => reads,
  };
}

Deno.test("serve reads a token file itself, polls it, and logs a bad one once, the tokens in force kept", async () => {
  await using dir = await tempDir("pyproxy-token-file-test-");
  await Deno.mkdir(`${dir.path}/models`);
  await Deno.copyFile(ECHO, `${dir.path}/models/echo.py`);
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(path, `${T1}\n`, { mode: 0o644 });
  await Deno.chmod(path, 0o644);
  const { runtime, reads } = countingReads(path);
  await withLogs(async (records) => {
    // From resolveConfig: nothing read yet; serve reads it.
    const config = resolveConfig({
      cwd: dir.path,
      cli: {
        port: 0,
        workers: 1,
        modelsDir: `${dir.path}/models`,
        tokenFile: path,
        tokenFileInterval: 20,
      },
    });
    let reloadWith = config;
    await using server = await serve(config, {
      runtime,
      reloadConfig: () => Promise.resolve(reloadWith),
    });
    assert.equal(await call(server.url, T1), 200);
    assert.equal(await call(server.url, T2), 401);
    const lines = () => records.map((r) => `${r.level} ${r.message.join("")}`);
    assert.ok(
      lines().some((l) =>
        /^warning Token file .*\/token \("?tokenFile"?\) may be read by other users \(mode "?644"?\)/
          .test(l)
      ),
      lines().join("\n"),
    );

    // Rewritten in place: the old and the new token.
    await Deno.writeTextFile(path, `${T1}\n${T2}\n`);
    await until(server.url, T2, 200);
    assert.equal(await call(server.url, T1), 200);
    assert.ok(
      lines().includes("info Read the token files again: token (2)"),
      lines().join("\n"),
    );

    // Broken: logged once, however many polls see it. Replaced whole (a
    // rewrite in place may be seen half written: an error, then the rest).
    const errors = () => lines().filter((l) => l.startsWith("error "));
    const before = errors().length;
    await Deno.writeTextFile(`${path}.new`, "short\n");
    await Deno.rename(`${path}.new`, path);
    await waitFor(() => errors().length > before);
    const seen = reads();
    await waitFor(() => reads() >= seen + 5);
    assert.deepEqual(errors().slice(before), [
      "error Token file changed, but cannot be used; the tokens in force are kept: token: expected a token of at least 16 characters (at tokenFile: " +
      path + ")",
    ]);
    assert.equal(await call(server.url, T1), 200);
    assert.equal(await call(server.url, T2), 200);
    // A reload reads the same file: refused, and says why.
    await assert.rejects(server.reload(), /at least 16 characters/);
    assert.equal(await call(server.url, T2), 200);

    // Gone (a secret deleted): logged once too.
    await Deno.remove(path);
    await waitFor(() => errors().length === before + 3);
    const gone = reads();
    await waitFor(() => reads() >= gone + 5);
    assert.equal(errors().length, before + 3);
    assert.match(errors().at(-1)!, /no such file/);

    // Back, with the old token retired: its channel subscription ends too.
    const sub = await fetch(`${server.url}/v1/channels/news`, {
      headers: { authorization: `Bearer ${T1}` },
    });
    assert.equal(sub.status, 200);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ended = Promise.race([
      new Response(sub.body).text().then(() => "ended"),
      new Promise((resolve) => timer = setTimeout(resolve, 10_000, "open")),
    ]);
    await Deno.writeTextFile(path, `${T2}\n`);
    await until(server.url, T1, 401);
    assert.equal(await call(server.url, T2), 200);
    assert.equal(await ended, "ended");
    clearTimeout(timer);

    // A reload naming another file: read, and polled from then on.
    const other = `${dir.path}/other`;
    await Deno.writeTextFile(other, `${T3}\n`, { mode: 0o600 });
    reloadWith = { ...config, tokenFile: other };
    assert.deepEqual(await server.reload(), {
      changed: ["token (1)"],
      ignored: [],
    });
    assert.equal(await call(server.url, T2), 401);
    assert.equal(await call(server.url, T3), 200);
    await Deno.writeTextFile(path, `${T1}\n`);
    await Deno.writeTextFile(other, `${T3}\n${T2}\n`);
    await until(server.url, T2, 200);
    assert.equal(await call(server.url, T1), 401);
    assert.ok(
      !lines().some((l) => [T1, T2, T3].some((t) => l.includes(t))),
    );
  });
});

Deno.test({
  name:
    "serve --token-file takes a Kubernetes secret's rotation (symlink swap) and an in-place rewrite without a signal",
  ignore: Deno.build.os === "windows",
}, async () => {
  await using dir = await tempDir("pyproxy-token-file-test-");
  await Deno.mkdir(`${dir.path}/models`);
  await Deno.copyFile(ECHO, `${dir.path}/models/echo.py`);
  const secret = await kubeletSecret(`${dir.path}/secret`, `${T1}\n`);
  await Deno.writeTextFile(`${dir.path}/manage`, `${M1}\n`, { mode: 0o600 });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MOD,
      "serve",
      "--port",
      "0",
      "--workers",
      "1",
      "--models",
      `${dir.path}/models`,
      "--token-file",
      secret.path,
      "--token-file-interval",
      "100",
      "--allow-manage",
    ],
    env: {
      PYPROXY_TOKEN: "",
      PYPROXY_MANAGE_TOKEN_FILE: `${dir.path}/manage`,
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const errReader = child.stderr.pipeThrough(new TextDecoderStream())
    .getReader();
  let err = "";
  const stderrUntil = async (pattern: RegExp): Promise<string> => {
    while (!pattern.test(err)) {
      const { value, done } = await errReader.read();
      if (done) break;
      err += value;
    }
    return err;
  };
  try {
    let out = "";
    while (!/ try: [^\n]*\n/.test(out)) {
      const { value, done } = await stdout.read();
      if (done) throw new Error(`exited: ${out} ${await stderrUntil(/$^/)}`);
      out += value;
    }
    const url = /listening on (\S+)/.exec(out)![1]!;
    // The banner says a token is needed, without showing it.
    assert.match(out, /Authorization: Bearer <token>/);
    assert.equal(await call(url, T1), 200);
    assert.equal(await call(url, M1), 200);

    // The kubelet's update: a new directory, ..data swapped to it.
    await secret.update(`${T1}\n${T2}\n`);
    await until(url, T2, 200);
    assert.equal(await call(url, T1), 200);
    await secret.update(`${T2}\n`);
    await until(url, T1, 401);
    assert.equal(await call(url, T2), 200);
    // The management token's file, rewritten in place; it takes the
    // management route only (eval and management answer the other 403).
    await Deno.writeTextFile(`${dir.path}/manage`, `${T3}\n`);
    await until(url, M1, 401);
    const res = await fetch(`${url}/v1/workers`, {
      method: "PUT",
      body: '{"workers":1}',
      headers: { authorization: `Bearer ${T2}` },
    });
    await res.body?.cancel();
    assert.equal(res.status, 403);
    // A file that takes a token of the other kind: refused, tokens kept.
    await secret.update(`${T3}\n`);
    assert.match(
      await stderrUntil(/Token file changed[^\n]*must differ[^\n]*\n/),
      /Token file changed, but cannot be used; the tokens in force are kept: "?manageToken: must differ from token/,
    );
    assert.equal(await call(url, T2), 200);
    assert.equal(await call(url, T3), 200);
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    await stderrUntil(/$^/);
    assert.ok(
      ![T1, T2, T3, M1].some((t) => err.includes(t)),
      err,
    );
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.status;
    await stdout.cancel();
    await errReader.cancel();
  }
});

Deno.test("serve's token file poll warns of a file made readable by others by a chmod alone (its tokens unchanged), once per mode", async () => {
  await using dir = await tempDir("pyproxy-token-file-test-");
  await Deno.mkdir(`${dir.path}/models`);
  await Deno.copyFile(ECHO, `${dir.path}/models/echo.py`);
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(path, `${T1}\n`);
  await Deno.chmod(path, 0o600);
  const { runtime, reads } = countingReads(path);
  await withLogs(async (records) => {
    const config = resolveConfig({
      cwd: dir.path,
      cli: {
        port: 0,
        workers: 1,
        modelsDir: `${dir.path}/models`,
        tokenFile: path,
        tokenFileInterval: 5,
      },
    });
    await using _server = await serve(config, { runtime });
    const warnings = () =>
      records.filter((r) =>
        r.level === "warning" &&
        /^Token file .* may be read by other users/.test(r.message.join(""))
      ).length;
    const polls = async (n: number) => {
      const seen = reads();
      await waitFor(() => reads() >= seen + n);
    };
    await polls(2);
    assert.equal(warnings(), 0);
    await Deno.chmod(path, 0o644);
    await waitFor(() => warnings() === 1);
    await polls(5);
    assert.equal(warnings(), 1);
    // Closed, then opened again: warned again.
    await Deno.chmod(path, 0o600);
    await polls(3);
    await Deno.chmod(path, 0o640);
    await waitFor(() => warnings() === 2);
    await polls(3);
    assert.equal(warnings(), 2);
  }, "info");
});

Deno.test("serve's shutdown waits for a poll of the token file under way: no read is left pending after it", async () => {
  await using dir = await tempDir("pyproxy-token-file-test-");
  await Deno.mkdir(`${dir.path}/models`);
  await Deno.copyFile(ECHO, `${dir.path}/models/echo.py`);
  const path = `${dir.path}/token`;
  await Deno.writeTextFile(path, `${T1}\n`);
  await Deno.chmod(path, 0o600);
  const base = defaultRuntime();
  // Once `hold` is set, the next read of the token file waits for `release`.
  let hold = false;
  let entered!: () => void;
  const inRead = new Promise<void>((resolve) => entered = resolve);
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  let readDone = false;
  const runtime: Runtime = {
    ...base,
    readRegularFile: async (p, limit) => {
      if (p !== path || !hold) return await base.readRegularFile!(p, limit);
      hold = false;
      entered();
      await gate;
      try {
        return await base.readRegularFile!(p, limit);
      } finally {
        readDone = true;
      }
    },
  };
  const config = resolveConfig({
    cwd: dir.path,
    cli: {
      port: 0,
      workers: 1,
      modelsDir: `${dir.path}/models`,
      tokenFile: path,
      tokenFileInterval: 20,
    },
  });
  const server = await serve(config, { runtime });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    hold = true;
    await inRead;
    let readDoneAtStop: boolean | undefined;
    const stopped = server.shutdown().then(() => readDoneAtStop = readDone);
    // The read is let go a while after the shutdown began: a shutdown that
    // does not wait for it is over by then (a gateway without calls).
    timer = setTimeout(release, 300);
    await stopped;
    assert.equal(readDoneAtStop, true, "the poll's read ended first");
  } finally {
    clearTimeout(timer);
    release();
    await server.shutdown();
  }
});
