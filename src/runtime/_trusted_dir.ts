/**
 * Whether a directory, and every directory above it, is out of other
 * users' reach: what Python will import from there must not be theirs to
 * replace.
 *
 * @module
 */
import { dirname, join, relative } from "node:path";
import type { Runtime } from "./types.ts";

/**
 * `dir` as a path with no link in it (the part that exists resolved, the
 * rest as given), or why another user could replace what it holds: a
 * directory on that path (it, or any above it) that belongs to another user
 * than this one or root, or that every user can write without the sticky
 * bit (`/tmp` has it: nobody can rename another user's entry there). Group
 * write is allowed (per-user groups, umask 002, make it the norm). A
 * `HOME` or `XDG_CACHE_HOME` in such a place (`HOME=/tmp/app`, a directory
 * another user made) let them swap the copy `materializePythonPackage`
 * verified, or add a `sitecustomize.py` beside it, which every worker's
 * Python then ran as this user. The resolved path is what to use: a link
 * on the way (in `/tmp`, its owner's to change) could otherwise point
 * elsewhere after the check; so is a link to nothing on the way (its
 * target made by someone else after the check). Where the runtime cannot tell owners
 * (Windows, no `owner`/`uid`), `dir` as given is trusted.
 *
 * @example
 * ```ts ignore
 * const checked = await trustedDir(runtime, join(home, ".cache", "pyproxy"));
 * if ("untrusted" in checked) throw new Error(checked.untrusted);
 * ```
 */
export async function trustedDir(
  runtime: Runtime,
  dir: string,
): Promise<{ path: string } | { untrusted: string }> {
  const self = runtime.uid?.();
  if (self === undefined || runtime.owner === undefined) return { path: dir };
  let existing = dir;
  while ((await runtime.stat(existing)) === null) {
    // There, yet not found: a link to nothing (`~/.cache` to a directory
    // not made yet). The path given ran through it, and whoever made what
    // it points to first (a place of theirs, `/tmp/...`) between this
    // check and the `mkdir` held the directory made in it.
    if ((await runtime.owner(existing)) !== null) {
      return {
        untrusted:
          `${existing} is a symbolic link to nothing: whoever makes what it points to would hold what is put there`,
      };
    }
    const up = dirname(existing);
    if (up === existing) return { path: dir };
    existing = up;
  }
  const real = await runtime.realPath(existing);
  for (let at = real;; at = dirname(at)) {
    const o = await runtime.owner(at);
    if (o !== null) {
      if (o.uid !== self && o.uid !== 0) {
        return {
          untrusted: `${at} belongs to another user (uid ${o.uid})`,
        };
      }
      if ((o.mode & 0o002) !== 0 && (o.mode & 0o1000) === 0) {
        return {
          untrusted: `every user can write to ${at} (mode ${
            (o.mode & 0o7777).toString(8).padStart(4, "0")
          })`,
        };
      }
    }
    if (dirname(at) === at) break;
  }
  return { path: join(real, relative(existing, dir)) };
}
