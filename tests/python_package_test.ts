import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import {
  materializePythonPackage,
  type PythonManifest,
} from "../src/runtime/python_package.ts";
import { denoRuntime } from "../src/runtime/deno.ts";
import { collectPythonManifest } from "../scripts/gen_python_manifest.ts";
import { StartError } from "../src/errors.ts";

const rt = denoRuntime();
const PYTHON_DIR = new URL("../python/", import.meta.url);
// The files as they are now: the download tests must not depend on the
// committed manifest being fresh (the first test checks that).
const manifest = await collectPythonManifest();

/** Serves `python/` over HTTP and counts the requests. */
async function withFileServer(
  fn: (base: URL, hits: () => number) => Promise<void>,
  mangle?: (path: string, body: Uint8Array) => Uint8Array | null,
): Promise<void> {
  let hits = 0;
  const root = fromFileUrl(PYTHON_DIR);
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, async (req) => {
    hits++;
    const path = decodeURIComponent(new URL(req.url).pathname).replace(
      /^\/python\//,
      "",
    );
    if (path.includes("..")) return new Response("no", { status: 403 });
    try {
      const body = await Deno.readFile(join(root, path));
      const out = mangle ? mangle(path, body) : body;
      return out === null
        ? new Response("gone", { status: 404 })
        : new Response(out as Uint8Array<ArrayBuffer>);
    } catch {
      return new Response("missing", { status: 404 });
    }
  });
  try {
    await fn(
      new URL(`http://127.0.0.1:${server.addr.port}/python/`),
      () => hits,
    );
  } finally {
    await server.shutdown();
  }
}

async function sameFiles(dir: string, manifest: PythonManifest): Promise<void> {
  for (const file of manifest.files) {
    const got = await Deno.readFile(join(dir, file.path));
    const want = await Deno.readFile(new URL(file.path, PYTHON_DIR));
    assert.deepEqual(got, want, file.path);
  }
}

Deno.test("materializePythonPackage returns the local python/ directory for a file: URL", async () => {
  const dir = await materializePythonPackage(rt, PYTHON_DIR);
  assert.equal(dir, fromFileUrl(PYTHON_DIR).replace(/\/$/, ""));
  assert.equal(
    await materializePythonPackage(rt, new URL("../python", import.meta.url)),
    dir,
  );
});

Deno.test("materializePythonPackage downloads, verifies and then reuses the cached copy", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "pyproxy-pkg-" });
  try {
    await withFileServer(async (base, hits) => {
      const dir = await materializePythonPackage(rt, base, {
        cacheDir,
        manifest,
      });
      assert.ok(dir.startsWith(join(cacheDir, `${manifest.version}-`)), dir);
      await sameFiles(dir, manifest);
      assert.equal(hits(), manifest.files.length);
      // No staging directory is left behind.
      const names = [];
      for await (const e of Deno.readDir(cacheDir)) names.push(e.name);
      assert.deepEqual(names, [dir.slice(cacheDir.length + 1)]);

      assert.equal(
        await materializePythonPackage(rt, base, { cacheDir, manifest }),
        dir,
      );
      assert.equal(hits(), manifest.files.length);
    });
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("materializePythonPackage replaces a damaged cached copy", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "pyproxy-pkg-" });
  try {
    await withFileServer(async (base, hits) => {
      const dir = await materializePythonPackage(rt, base, {
        cacheDir,
        manifest,
      });
      const first = manifest.files[0]!;
      await Deno.writeTextFile(join(dir, first.path), "# tampered\n");
      assert.equal(
        await materializePythonPackage(rt, base, { cacheDir, manifest }),
        dir,
      );
      assert.equal(hits(), 2 * manifest.files.length);
      await sameFiles(dir, manifest);
    });
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("materializePythonPackage fails with StartError on a missing or altered file and leaves no copy", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "pyproxy-pkg-" });
  const last = manifest.files.at(-1)!.path;
  try {
    await withFileServer(async (base) => {
      await assert.rejects(
        materializePythonPackage(rt, base, { cacheDir, manifest }),
        (err) => {
          assert.ok(err instanceof StartError);
          assert.match(err.message, /answered 404/);
          return true;
        },
      );
    }, (path, body) => (path === last ? null : body));
    await withFileServer(async (base) => {
      await assert.rejects(
        materializePythonPackage(rt, base, { cacheDir, manifest }),
        /does not match the manifest/,
      );
    }, (path, body) => (path === last ? new Uint8Array([...body, 10]) : body));
    const names = [];
    for await (const e of Deno.readDir(cacheDir)) names.push(e.name);
    assert.deepEqual(names, []);
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("materializePythonPackage downloads from fallbackUrl when a file: directory lacks the files", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "pyproxy-pkg-" });
  const empty = await Deno.makeTempDir({ prefix: "pyproxy-empty-" });
  try {
    await withFileServer(async (fallbackUrl, hits) => {
      const dir = await materializePythonPackage(
        rt,
        new URL(`file://${empty}/`),
        { cacheDir, manifest, fallbackUrl },
      );
      assert.ok(dir.startsWith(cacheDir), dir);
      assert.equal(hits(), manifest.files.length);
      await sameFiles(dir, manifest);
    });
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("materializePythonPackage writes the files it carries, without a network, where no python/ directory is on disk (a deno compile or bun build --compile binary)", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "pyproxy-pkg-" });
  const empty = await Deno.makeTempDir({ prefix: "pyproxy-empty-" });
  let fetched = 0;
  const offline = () => {
    fetched++;
    return Promise.reject(new TypeError("no network"));
  };
  try {
    // A compiled binary's file: URL without python/, and JSR's https: URL.
    for (
      const base of [
        new URL(`file://${empty}/python/`),
        new URL("https://jsr.io/@pyproxy/pyproxy/0.1.0/python/"),
      ]
    ) {
      const dir = await materializePythonPackage(rt, base, {
        cacheDir,
        fetch: offline,
        fallbackUrl: "http://127.0.0.1:9/",
      });
      assert.ok(dir.startsWith(cacheDir), dir);
      await sameFiles(dir, manifest);
    }
    assert.equal(fetched, 0);
    // The copy runs: the server package imports and reports its version.
    const dir = await materializePythonPackage(rt, new URL("https://x/"), {
      cacheDir,
      fetch: offline,
    });
    const out = await new Deno.Command("python3", {
      args: [
        "-c",
        "import pyproxy_server, pyproxy; print(pyproxy_server.PROTOCOL_VERSION)",
      ],
      env: { PYTHONPATH: dir },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
    await Deno.remove(empty, { recursive: true });
  }
});

/**
 * Makes `<cacheDir>/<name>` as a start killed while it wrote its copy
 * leaves it (a package directory, a file), last touched `ageMs` ago; with
 * `freshFile`, one file under it written just now (a download going on).
 */
async function stagingDir(
  cacheDir: string,
  name: string,
  ageMs: number,
  freshFile = false,
): Promise<string> {
  const dir = join(cacheDir, name);
  const pkg = join(dir, "pyproxy_server");
  await Deno.mkdir(pkg, { recursive: true });
  await Deno.writeTextFile(join(pkg, "__init__.py"), "# cut short\n");
  const then = new Date(Date.now() - ageMs);
  for (const path of [join(pkg, "__init__.py"), pkg, dir]) {
    await Deno.utime(path, then, then);
  }
  if (freshFile) await Deno.writeTextFile(join(pkg, "server.py"), "# now\n");
  return dir;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("materializePythonPackage removes the staging directories of starts killed while they wrote the copy, never one a start is writing", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "pyproxy-pkg-" });
  const offline = () => Promise.reject(new TypeError("no network"));
  const base = new URL("https://jsr.io/@pyproxy/pyproxy/0.1.0/python/");
  try {
    // Killed starts (SIGKILL between makeTempDir and the rename), and two
    // going on: one just made, one whose download wrote a file just now.
    const killed = await stagingDir(cacheDir, ".staging-killed1", 120_000);
    const old = await stagingDir(cacheDir, ".staging-killed2", 86_400_000);
    const fresh = await stagingDir(cacheDir, ".staging-fresh", 0);
    const writing = await stagingDir(
      cacheDir,
      ".staging-writing",
      120_000,
      true,
    );
    // Not a staging directory: not touched whatever its age.
    const other = await stagingDir(cacheDir, "elsewhere", 120_000);
    const dir = await materializePythonPackage(rt, base, {
      cacheDir,
      fetch: offline,
    });
    await sameFiles(dir, manifest);
    assert.deepEqual(
      await Promise.all([killed, old, fresh, writing, other].map(exists)),
      [false, false, true, true, true],
    );
    // The start after one that made the copy (a service restarted after
    // its first start was killed) finds the copy, and still cleans up.
    const later = await stagingDir(cacheDir, ".staging-killed3", 120_000);
    assert.equal(
      await materializePythonPackage(rt, base, { cacheDir, fetch: offline }),
      dir,
    );
    assert.equal(await exists(later), false);
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("materializePythonPackage without XDG_CACHE_HOME and HOME caches in <temp>/pyproxy-<uid>, only when it is this user's alone", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "pyproxy-shared-tmp-" });
  const bare = {
    ...rt,
    env: (name: string) =>
      name === "HOME" || name === "XDG_CACHE_HOME" ? undefined : rt.env(name),
    tempDir: () => tmp,
  };
  const offline = () => Promise.reject(new TypeError("no network"));
  const shared = join(tmp, `pyproxy-${Deno.uid()}`);
  try {
    const dir = await materializePythonPackage(bare, new URL("https://x/"), {
      fetch: offline,
    });
    assert.ok(dir.startsWith(`${shared}/`), dir);
    assert.equal((await Deno.lstat(shared)).mode! & 0o777, 0o700);
    // Made by someone else first, letting others in: refused, not used.
    await Deno.remove(shared, { recursive: true });
    await Deno.mkdir(shared);
    await Deno.chmod(shared, 0o777);
    await assert.rejects(
      materializePythonPackage(bare, new URL("https://x/"), { fetch: offline }),
      (err: unknown) => {
        assert.ok(err instanceof StartError, String(err));
        assert.match(
          err.message,
          /is not a directory of this user's that no one else can enter.*XDG_CACHE_HOME/,
        );
        return true;
      },
    );
    assert.deepEqual([...Deno.readDirSync(shared)], []);
    // A link there (to a directory of the attacker's): refused too.
    await Deno.remove(shared);
    const elsewhere = await Deno.makeTempDir({ dir: tmp });
    await Deno.symlink(elsewhere, shared);
    await assert.rejects(
      materializePythonPackage(bare, new URL("https://x/"), { fetch: offline }),
      StartError,
    );
    assert.deepEqual([...Deno.readDirSync(elsewhere)], []);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("materializePythonPackage with a HOME it cannot write caches in <temp>/pyproxy-<uid>, and uses a copy already there", async () => {
  // A container's user without a home of its own gets HOME=/ on a read-only
  // root file system: the start failed with "Read-only file system (os error
  // 30): mkdir '/.cache/pyproxy'" (newcomer21). Directories under `readOnly`
  // cannot be made here, as there (root writes anywhere else).
  const tmp = await Deno.makeTempDir({ prefix: "pyproxy-ro-home-" });
  const readOnly = [join(tmp, "ro")];
  const refuse = (path: string | undefined) =>
    readOnly.some((ro) => path?.startsWith(`${ro}/`))
      ? Promise.reject(new Error(`Read-only file system: mkdir '${path}'`))
      : undefined;
  const withEnv = (vars: Record<string, string | undefined>, temp = tmp) => ({
    ...rt,
    env: (name: string) => name in vars ? vars[name] : rt.env(name),
    tempDir: () => temp,
    mkdir: (path: string, mode?: number) =>
      refuse(path) ?? rt.mkdir(path, mode),
    makeTempDir: (options?: { dir?: string; prefix?: string }) =>
      refuse(options?.dir) ?? rt.makeTempDir(options),
  });
  const offline = () => Promise.reject(new TypeError("no network"));
  const shared = join(tmp, `pyproxy-${Deno.uid()}`);
  try {
    const dir = await materializePythonPackage(
      withEnv({ HOME: join(tmp, "ro", "home"), XDG_CACHE_HOME: undefined }),
      new URL("https://x/"),
      { fetch: offline },
    );
    assert.ok(dir.startsWith(`${shared}/`), dir);
    await sameFiles(dir, manifest);
    // Neither that nor the temp directory: one StartError naming both, and
    // what to set.
    await assert.rejects(
      materializePythonPackage(
        withEnv({ XDG_CACHE_HOME: join(tmp, "ro", "cache") }, join(tmp, "ro")),
        new URL("https://x/"),
        { fetch: offline },
      ),
      (err: unknown) => {
        assert.ok(err instanceof StartError, String(err));
        assert.equal(
          err.message,
          `Cannot materialize python package: cannot write ${tmp}/ro/cache/pyproxy (Read-only file system: mkdir '${tmp}/ro/cache/pyproxy') nor ${tmp}/ro/pyproxy-${Deno.uid()} (Read-only file system: mkdir '${tmp}/ro/pyproxy-${Deno.uid()}'); set XDG_CACHE_HOME to a directory this user can write`,
        );
        return true;
      },
    );
    // A copy made in HOME before (baked into an image) is used as it is,
    // though nothing can be written there now.
    const home = join(tmp, "home");
    const baked = await materializePythonPackage(
      withEnv({ HOME: home, XDG_CACHE_HOME: undefined }),
      new URL("https://x/"),
      { fetch: offline },
    );
    readOnly.push(home);
    assert.equal(
      await materializePythonPackage(
        withEnv({ HOME: home, XDG_CACHE_HOME: undefined }),
        new URL("https://x/"),
        { fetch: offline },
      ),
      baked,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

/** `rt` with `HOME` (and no `XDG_CACHE_HOME`) and a temp directory of the test's. */
function withHome(home: string, tmp: string) {
  return {
    ...rt,
    env: (name: string) =>
      name === "HOME"
        ? home
        : name === "XDG_CACHE_HOME"
        ? undefined
        : rt.env(name),
    tempDir: () => tmp,
  };
}

const offline = () => Promise.reject(new TypeError("no network"));

Deno.test("materializePythonPackage does not cache under a HOME that every user can write above, and gives the copy's path without links", async () => {
  // HOME=/tmp/app/home with /tmp/app open to all (no sticky bit): another
  // user renamed .cache away and put a verified-looking copy of their own
  // there, with a sitecustomize.py that every worker's Python ran as this
  // user (security23, shown as root with a second user).
  const tmp = await Deno.makeTempDir({ prefix: "pyproxy-open-home-" });
  const temp = join(tmp, `pyproxy-${Deno.uid()}`);
  const open = join(tmp, "open");
  const home = join(open, "home");
  try {
    await Deno.mkdir(home, { recursive: true });
    await Deno.chmod(open, 0o777);
    let dir = await materializePythonPackage(
      withHome(home, tmp),
      new URL("https://x/"),
      { fetch: offline },
    );
    assert.ok(dir.startsWith(`${temp}/`), dir);
    await assert.rejects(
      Deno.lstat(join(home, ".cache")),
      Deno.errors.NotFound,
    );
    // A HOME that cannot be looked at (a file on the way: ENOTDIR) is passed
    // over as one that cannot be written is.
    await Deno.writeTextFile(join(tmp, "file"), "");
    assert.ok(
      (await materializePythonPackage(
        withHome(join(tmp, "file", "home"), tmp),
        new URL("https://x/"),
        { fetch: offline },
      )).startsWith(`${temp}/`),
    );
    // With the sticky bit (as /tmp), nobody renames another user's entry.
    await Deno.chmod(open, 0o1777);
    dir = await materializePythonPackage(
      withHome(home, tmp),
      new URL("https://x/"),
      { fetch: offline },
    );
    assert.ok(dir.startsWith(`${home}/.cache/pyproxy/`), dir);
    // A link on the way, whose owner could point it elsewhere after the
    // check: the copy's path is the real one.
    const link = join(tmp, "link");
    await Deno.symlink(home, link);
    assert.equal(
      await materializePythonPackage(
        withHome(link, tmp),
        new URL("https://x/"),
        { fetch: offline },
      ),
      dir,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("materializePythonPackage does not cache through a link to nothing (~/.cache to a directory not made yet), whose target another user could make after the check", async () => {
  // ~/.cache pointing into a directory every user can write, at a name not
  // made yet: the check passed the path with the link in it, and whoever
  // made the link's target between the check and the mkdir (here: at the
  // first mkdir) got the copy in a directory of theirs (security24).
  const tmp = await Deno.makeTempDir({ prefix: "pyproxy-dangling-cache-" });
  const temp = join(tmp, `pyproxy-${Deno.uid()}`);
  const home = join(tmp, "home");
  const open = join(tmp, "open");
  const target = join(open, "cache");
  try {
    await Deno.mkdir(home);
    await Deno.mkdir(open);
    await Deno.chmod(open, 0o777);
    await Deno.symlink(target, join(home, ".cache"));
    let raced = false;
    const racing = {
      ...withHome(home, tmp),
      mkdir: async (path: string, mode?: number) => {
        if (!raced) {
          raced = true;
          await Deno.mkdir(target, { mode: 0o777 });
          await Deno.chmod(target, 0o777);
        }
        return await rt.mkdir(path, mode);
      },
    };
    const dir = await materializePythonPackage(
      racing,
      new URL("https://x/"),
      { fetch: offline },
    );
    assert.ok(dir.startsWith(`${temp}/`), dir);
    assert.deepEqual([...Deno.readDirSync(target)], []);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test({
  name:
    "materializePythonPackage does not cache under a HOME in another user's directory (needs root to chown: ignored otherwise)",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "pyproxy-their-home-" });
    const temp = join(tmp, `pyproxy-${Deno.uid()}`);
    const theirs = join(tmp, "theirs");
    try {
      await Deno.mkdir(join(theirs, "home", ".cache"), { recursive: true });
      await Deno.chmod(theirs, 0o755);
      await Deno.chown(theirs, 65534, 65534);
      const dir = await materializePythonPackage(
        withHome(join(theirs, "home"), tmp),
        new URL("https://x/"),
        { fetch: offline },
      );
      assert.ok(dir.startsWith(`${temp}/`), dir);
      assert.deepEqual(
        [...Deno.readDirSync(join(theirs, "home", ".cache"))],
        [],
      );
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test("materializePythonPackage refuses manifest paths outside the cache directory", async () => {
  const evil: PythonManifest = {
    version: "0.0.0",
    files: [{ path: "../evil.py", size: 0, sha256: "" }],
  };
  await assert.rejects(
    materializePythonPackage(rt, "https://example.invalid/python/", {
      manifest: evil,
      cacheDir: "/nonexistent",
    }),
    /bad manifest path/,
  );
});

Deno.test("materializePythonPackage output runs under python3", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "pyproxy-pkg-" });
  try {
    await withFileServer(async (base) => {
      const dir = await materializePythonPackage(rt, base, {
        cacheDir,
        manifest,
      });
      const { code, stderr } = await new Deno.Command("python3", {
        args: [
          "-c",
          "import pyproxy_server, sys; print(pyproxy_server.__file__)",
        ],
        env: { PYTHONPATH: dir, PYTHONDONTWRITEBYTECODE: "1" },
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.equal(code, 0, new TextDecoder().decode(stderr));
    });
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});
