/**
 * Staging directories of the Python packages' copy
 * (`materializePythonPackage`) that a start left behind when it was killed
 * (SIGKILL, a crash) between making one and moving it into place, and their
 * removal at a later start.
 *
 * @module
 */
import { join } from "node:path";
import type { Runtime } from "./types.ts";

/** The `makeTempDir` prefix of a staging directory in the cache directory. */
export const STAGING_PREFIX = ".staging-";

/**
 * How long a staging directory may go untouched before a start takes it for
 * abandoned. A start that is writing one touches it all along: the carried
 * texts take milliseconds, a download writes a file as each arrives. A pid
 * in the name would say sooner, but not safely: a cache under `$HOME` may be
 * shared by containers (other PID namespaces) or machines (NFS), whose
 * starters' pids look dead from here.
 */
export const STALE_STAGING_MS = 60_000;

/** Directory levels looked into: the packages' files are two or three deep. */
const MAX_DEPTH = 8;

/**
 * The latest modification time (ms since the epoch) of `path` and what is
 * under it, or `undefined` when one cannot be told (the runtime gives none,
 * an entry cannot be read): such a directory is kept. `null` when `path` is
 * gone.
 */
async function lastTouched(
  runtime: Runtime,
  path: string,
  depth = 0,
): Promise<number | null | undefined> {
  let info;
  try {
    info = await runtime.stat(path);
  } catch {
    return undefined;
  }
  if (info === null) return null;
  if (info.mtime === undefined) return undefined;
  let latest = info.mtime;
  if (!info.isDirectory) return latest;
  if (depth >= MAX_DEPTH) return undefined;
  let names: string[];
  try {
    names = await runtime.readDir(path);
  } catch {
    return undefined;
  }
  for (const name of names) {
    const under = await lastTouched(runtime, join(path, name), depth + 1);
    if (under === undefined) return undefined;
    if (under !== null && under > latest) latest = under;
  }
  return latest;
}

/**
 * Removes the staging directories in `cacheDir` that nothing touched for
 * {@linkcode STALE_STAGING_MS}: those of starts killed before they moved
 * theirs into place (each ~1 MB, one more per such kill). A directory whose
 * times cannot be read is kept, and so are errors ignored: another start
 * may be removing the same one. Resolves with how many it removed.
 *
 * @example
 * ```ts ignore
 * await removeStaleStaging(runtime, "/home/me/.cache/pyproxy");
 * ```
 */
export async function removeStaleStaging(
  runtime: Runtime,
  cacheDir: string,
  now: number = Date.now(),
): Promise<number> {
  let names: string[];
  try {
    names = await runtime.readDir(cacheDir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    if (!name.startsWith(STAGING_PREFIX)) continue;
    const path = join(cacheDir, name);
    const touched = await lastTouched(runtime, path);
    if (touched == null || now - touched < STALE_STAGING_MS) continue;
    try {
      await runtime.remove(path, { recursive: true });
      removed++;
    } catch {
      // Another start removing it too, or not ours to remove.
    }
  }
  return removed;
}
