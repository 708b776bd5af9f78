/**
 * Puts the Python packages (`pyproxy_server`, `pyproxy`) on local disk so that
 * `python3` can import them. From a checkout (a `file:` URL) that is the
 * `python/` directory itself; otherwise (imported from JSR: an `https:` URL; a
 * binary of `deno compile` or `bun build --compile`, whose `file:` URL holds
 * no `python/` directory) the files are written into a versioned cache
 * directory from the texts this library carries (`python_sources.ts`, loaded
 * only then), else downloaded, each checked against its size and SHA-256,
 * and the directory moved into place atomically.
 *
 * @module
 */
import { rename } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { StartError } from "../errors.ts";
import { PYTHON_MANIFEST } from "./python_manifest.ts";
import type { Runtime } from "./types.ts";
import { isPrivateDir } from "../_private_dir.ts";
import { removeStaleStaging, STAGING_PREFIX } from "./_stale_staging.ts";
import { trustedDir } from "./_trusted_dir.ts";

/**
 * One file of the Python packages, relative to `python/`.
 *
 * @example
 * ```ts
 * import type { PythonManifestFile } from "@pyproxy/pyproxy";
 * const file: PythonManifestFile = { path: "pyproxy/__init__.py", size: 0, sha256: "e3b0c442…" };
 * console.log(file.path);
 * ```
 */
export interface PythonManifestFile {
  /** Path relative to `python/`, with `/` separators. */
  path: string;
  /** Size in bytes. */
  size: number;
  /** Lower-case hex SHA-256 of the content. */
  sha256: string;
}

/**
 * Every file of the Python packages (see `scripts/gen_python_manifest.ts`).
 *
 * @example
 * ```ts
 * import type { PythonManifest } from "@pyproxy/pyproxy";
 * const manifest: PythonManifest = { version: "0.1.0", files: [] };
 * console.log(manifest.files.length); // 0
 * ```
 */
export interface PythonManifest {
  /** The pyproxy version the files belong to. */
  version: string;
  /** The files, sorted by path. */
  files: readonly PythonManifestFile[];
}

/**
 * Options for {@linkcode materializePythonPackage}.
 *
 * @example Keep the copies in a directory of your own
 * ```ts
 * import type { MaterializePythonPackageOptions } from "@pyproxy/pyproxy";
 * const options: MaterializePythonPackageOptions = { cacheDir: "/var/cache/myapp/pyproxy" };
 * console.log(options.cacheDir);
 * ```
 */
export interface MaterializePythonPackageOptions {
  /**
   * Where versioned copies live.
   *
   * @default {"$XDG_CACHE_HOME/pyproxy", else "$HOME/.cache/pyproxy", else (without them, when a new copy cannot be written there, or when another user could replace it there: a directory of theirs, or one every user can write, on its path) "<temp>/pyproxy-<uid>" (this user's alone, checked)}
   */
  cacheDir?: string;
  /**
   * The files to fetch.
   *
   * @default {PYTHON_MANIFEST}
   */
  manifest?: PythonManifest;
  /**
   * Fetch function (tests pass their own).
   *
   * @default {globalThis.fetch}
   */
  fetch?: (url: URL) => Promise<Response>;
  /**
   * Where to download from when `baseUrl` is a `file:` URL whose directory
   * lacks the packages (a packager that dropped the `.py` files).
   *
   * @default {"https://jsr.io/@pyproxy/pyproxy/<manifest version>/python/"}
   */
  fallbackUrl?: URL | string;
}

/**
 * The file at the top of a copy {@linkcode materializePythonPackage} made: a
 * server started from such a copy writes the packages' bytecode into it
 * (`__pycache__` next to the files, or under `PYTHONPYCACHEPREFIX`) even
 * under `PYTHONDONTWRITEBYTECODE`, once per Python version (the version's
 * tag is in each `.pyc` name), so that each later start loads it instead of
 * compiling ~11k lines again (python_server.ts's bootstrap). A checkout has
 * none: its bytecode is left to Python's own settings.
 */
export const BYTECODE_MARKER = ".pyproxy-copy";

const MARKER_TEXT = new TextEncoder().encode(
  "A copy of pyproxy's Python packages (materializePythonPackage): the servers started from it write its bytecode here.\n",
);

/** Marks a copy as pyproxy's; a copy that cannot be written is left as it is. */
async function mark(runtime: Runtime, dir: string): Promise<void> {
  const marker = join(dir, BYTECODE_MARKER);
  if (await runtime.stat(marker) !== null) return;
  await runtime.writeFile(marker, MARKER_TEXT).catch(() => {});
}

/** How many files are downloaded at once. */
const CONCURRENCY = 8;

async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>),
  );
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function checkPath(path: string): void {
  // The manifest is ours, but a path must never step out of the cache dir.
  if (
    path.startsWith("/") ||
    path.split("/").some((part) => part === ".." || part === "" || part === ".")
  ) {
    throw new StartError(
      `Cannot materialize python package: bad manifest path '${path}'`,
    );
  }
}

/**
 * The cache directory when none is given, and whether it lies in the shared
 * temp directory (without `XDG_CACHE_HOME` and `HOME`: a service of
 * systemd's, a binary in a bare container), where it is this user's own
 * (`pyproxy-<uid>`): another user may have made it first.
 */
function defaultCacheDir(runtime: Runtime): { dir: string; shared: boolean } {
  const xdg = runtime.env("XDG_CACHE_HOME");
  if (xdg) return { dir: join(xdg, "pyproxy"), shared: false };
  const home = runtime.env("HOME");
  if (home) return { dir: join(home, ".cache", "pyproxy"), shared: false };
  return tempCacheDir(runtime);
}

/** The cache directory in the shared temp directory: `<temp>/pyproxy-<uid>`. */
function tempCacheDir(runtime: Runtime): { dir: string; shared: true } {
  const uid = runtime.uid?.();
  return {
    dir: join(
      runtime.tempDir(),
      uid === undefined ? "pyproxy" : `pyproxy-${uid}`,
    ),
    shared: true,
  };
}

/** Why `dir` does not hold exactly the manifest's content, or `undefined` when it does. */
async function verify(
  runtime: Runtime,
  dir: string,
  manifest: PythonManifest,
): Promise<string | undefined> {
  for (const file of manifest.files) {
    const local = join(dir, ...file.path.split("/"));
    const info = await runtime.stat(local);
    if (info === null || !info.isFile) return `${file.path} is missing`;
    if (info.size !== file.size) {
      return `${file.path} has ${info.size} bytes, expected ${file.size}`;
    }
    if (await sha256Hex(await runtime.readFile(local)) !== file.sha256) {
      return `${file.path} has a wrong sha256`;
    }
  }
  return undefined;
}

async function download(
  runtime: Runtime,
  baseUrl: URL,
  dir: string,
  manifest: PythonManifest,
  fetchFile: (url: URL) => Promise<Response>,
): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < manifest.files.length) {
      const file = manifest.files[next++]!;
      const url = new URL(file.path, baseUrl);
      let response: Response;
      try {
        response = await fetchFile(url);
      } catch (err) {
        throw new StartError(
          `Cannot materialize python package: fetching ${url} failed`,
          { cause: err },
        );
      }
      if (!response.ok) {
        await response.body?.cancel();
        throw new StartError(
          `Cannot materialize python package: ${url} answered ${response.status}`,
        );
      }
      const data = new Uint8Array(await response.arrayBuffer());
      if (
        data.byteLength !== file.size || await sha256Hex(data) !== file.sha256
      ) {
        throw new StartError(
          `Cannot materialize python package: ${url} does not match the manifest`,
        );
      }
      const local = join(dir, ...file.path.split("/"));
      await runtime.mkdir(dirname(local), 0o700);
      await runtime.writeFile(local, data);
    }
  };
  const workers = Array.from({
    length: Math.min(CONCURRENCY, manifest.files.length),
  }, () =>
    worker().catch((err) => {
      failed = true;
      throw err;
    }));
  // Wait for every worker, not just the first failure: the caller removes the
  // staging directory, which a still-running worker would recreate.
  const results = await Promise.allSettled(workers);
  for (const r of results) if (r.status === "rejected") throw r.reason;
}

/**
 * Writes the manifest's files into `dir` from the texts this library carries
 * (`python_sources.ts`); `false`, writing nothing, when they cannot be
 * loaded or do not match the manifest (a file missing, another size or
 * SHA-256), for the download to do instead.
 */
async function writeCarried(
  runtime: Runtime,
  dir: string,
  manifest: PythonManifest,
): Promise<boolean> {
  let sources: Readonly<Record<string, string>>;
  try {
    ({ PYTHON_SOURCES: sources } = await import("./python_sources.ts"));
  } catch {
    return false;
  }
  const encoder = new TextEncoder();
  const files: Array<[string, Uint8Array]> = [];
  for (const file of manifest.files) {
    const text = Object.hasOwn(sources, file.path)
      ? sources[file.path]
      : undefined;
    if (text === undefined) return false;
    const data = encoder.encode(text);
    if (
      data.byteLength !== file.size || await sha256Hex(data) !== file.sha256
    ) return false;
    files.push([join(dir, ...file.path.split("/")), data]);
  }
  for (const [local, data] of files) {
    await runtime.mkdir(dirname(local), 0o700);
    await runtime.writeFile(local, data);
  }
  return true;
}

/**
 * Returns a local directory holding the Python packages, to put on
 * `PYTHONPATH`. `baseUrl` is the URL of the `python/` directory (for example
 * `new URL("../python/", import.meta.url)` from `src/`). A `file:` URL is
 * returned as a path as is (unless the files are missing there: a compiled
 * binary); otherwise the files are written once per version and content
 * into the cache directory, verified, and reused afterwards: from the texts
 * this library carries (with the default manifest), else downloaded from
 * `baseUrl` (or `fallbackUrl` for a `file:` URL).
 *
 * @example Resolve the packages next to this module
 * ```ts ignore
 * import { defaultRuntime, materializePythonPackage } from "@pyproxy/pyproxy";
 * const dir = await materializePythonPackage(defaultRuntime(), new URL("../python/", import.meta.url));
 * console.log(dir); // e.g. /home/me/.cache/pyproxy/0.1.0-1a2b3c4d5e6f (from JSR)
 * ```
 */
export async function materializePythonPackage(
  runtime: Runtime,
  baseUrl: URL | string,
  options: MaterializePythonPackageOptions = {},
): Promise<string> {
  const manifest = options.manifest ?? PYTHON_MANIFEST;
  let base = new URL(baseUrl);
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  if (base.protocol === "file:") {
    const local = fileURLToPath(base).replace(/\/$/, "");
    const first = manifest.files[0];
    if (
      first === undefined ||
      await runtime.stat(join(local, ...first.path.split("/"))) !== null
    ) return local;
    base = new URL(
      options.fallbackUrl ??
        `https://jsr.io/@pyproxy/pyproxy/${manifest.version}/python/`,
    );
  }

  for (const file of manifest.files) checkPath(file.path);
  // The content hash in the name keeps two builds of one version apart.
  const contentId =
    (await sha256Hex(new TextEncoder().encode(JSON.stringify(manifest.files))))
      .slice(0, 12);
  if (options.cacheDir !== undefined) {
    const made = await materializeIn(
      runtime,
      base,
      manifest,
      contentId,
      { dir: options.cacheDir, shared: false, chosen: true },
      options,
    );
    if (typeof made !== "string") throw made.unwritable;
    return made;
  }
  const first = defaultCacheDir(runtime);
  const caches = first.shared ? [first] : [first, tempCacheDir(runtime)];
  const tried: string[] = [];
  let last: unknown;
  // A HOME (or XDG_CACHE_HOME) this user cannot write (a container's user
  // without a home of its own gets HOME=/, on a read-only root file system)
  // failed the start with "Read-only file system (os error 30): mkdir
  // '/.cache/pyproxy'" (newcomer21). A copy made there before (baked into an
  // image) is still used; only a new one goes to the temp directory
  // instead, as without HOME.
  for (const cache of caches) {
    const made = await materializeIn(
      runtime,
      base,
      manifest,
      contentId,
      cache,
      options,
    );
    if (typeof made === "string") return made;
    last = made.unwritable;
    const cause = last as { message?: unknown } | undefined;
    tried.push(`${cache.dir} (${cause?.message ?? String(last)})`);
  }
  throw new StartError(
    `Cannot materialize python package: cannot write ${
      tried.join(" nor ")
    }; set XDG_CACHE_HOME to a directory this user can write`,
    { cause: last },
  );
}

/**
 * {@linkcode materializePythonPackage} in one cache directory: the copy's
 * directory, or why the cache directory could not be made or written into.
 */
async function materializeIn(
  runtime: Runtime,
  base: URL,
  manifest: PythonManifest,
  contentId: string,
  cache: { dir: string; shared: boolean; chosen?: boolean },
  options: MaterializePythonPackageOptions,
): Promise<string | { unwritable: unknown }> {
  const { shared } = cache;
  let cacheDir = cache.dir;
  if (cache.chosen !== true) {
    // A default's (HOME's, XDG_CACHE_HOME's, the temp directory's) path
    // could run through another user's directory (HOME=/tmp/app): the
    // copy is then theirs to swap after it is verified.
    // (The shared temp directory's own is checked below, as this user's
    // alone: what is above it here.)
    let checked: Awaited<ReturnType<typeof trustedDir>>;
    try {
      checked = await trustedDir(
        runtime,
        shared ? dirname(cacheDir) : cacheDir,
      );
    } catch (err) {
      return { unwritable: err }; // a path that cannot be looked at (EACCES, ENOTDIR)
    }
    if ("untrusted" in checked) {
      return {
        unwritable: new StartError(
          `another user could replace the Python files there: ${checked.untrusted}`,
        ),
      };
    }
    cacheDir = shared ? join(checked.path, basename(cacheDir)) : checked.path;
  }
  const target = join(cacheDir, `${manifest.version}-${contentId}`);
  if (shared) {
    // In the shared temp directory another user could have made it first
    // (or a link there), and swap a file between its check and Python's
    // import: used only when it is this user's alone.
    try {
      await runtime.mkdir(cacheDir, 0o700);
    } catch (err) {
      return { unwritable: err };
    }
    if (!(await isPrivateDir(runtime, cacheDir))) {
      throw new StartError(
        `Cannot materialize python package: ${cacheDir} is not a directory of this user's that no one else can enter (another user may have made it); set XDG_CACHE_HOME or HOME to a directory of yours, or remove it`,
      );
    }
  }

  // What starts killed while they wrote a copy left (at every start: the
  // one after such a kill usually finds the copy another start made).
  await removeStaleStaging(runtime, cacheDir);

  if (await runtime.stat(target) !== null) {
    if (await verify(runtime, target, manifest) === undefined) {
      // A copy made before copies were marked gets its bytecode too.
      await mark(runtime, target);
      return target;
    }
    // Damaged (edited, truncated): replace it with a fresh copy.
    await runtime.remove(target, { recursive: true });
  }

  let staging: string;
  try {
    await runtime.mkdir(cacheDir, 0o700);
    staging = await runtime.makeTempDir({
      dir: cacheDir,
      prefix: STAGING_PREFIX,
    });
  } catch (err) {
    return { unwritable: err };
  }
  try {
    // The carried texts are the default manifest's files: written unless
    // another manifest was given (or the texts cannot be loaded).
    const written = options.manifest === undefined &&
      await writeCarried(runtime, staging, manifest);
    if (!written) {
      await download(
        runtime,
        base,
        staging,
        manifest,
        options.fetch ?? ((url) => fetch(url)),
      );
    }
    const problem = await verify(runtime, staging, manifest);
    if (problem !== undefined) {
      throw new StartError(`Cannot materialize python package: ${problem}`);
    }
    await mark(runtime, staging);
    try {
      // Atomic: a concurrent process sees either nothing or a complete copy.
      await rename(staging, target);
    } catch (err) {
      // Another process won the race; use its copy when it is complete.
      if (await verify(runtime, target, manifest) !== undefined) throw err;
    }
    return target;
  } finally {
    await runtime.remove(staging, { recursive: true });
  }
}
