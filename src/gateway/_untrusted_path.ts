/**
 * Whether a file the gateway found by itself in its working directory
 * (`pyproxy.json`, `./models`) may be used: another user could have put it
 * there.
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import type { Runtime } from "../runtime/types.ts";

/**
 * Why `path` cannot be trusted, or `undefined` when it can (or when the
 * runtime cannot tell owners: Windows, a runtime without `owner`/`uid`).
 * Trusted: owned by this user or root and not writable by every user, in
 * a directory that is the same, or sticky (`/tmp`: nobody can replace
 * another user's file there). Group write is allowed: with per-user
 * groups (umask 002) it is the norm. `link`: `path` is a symbolic link,
 * checked as one (its owner and its directory; what it names is the
 * caller's to check).
 *
 * @example
 * ```ts ignore
 * const why = await untrustedPath(runtime, `${cwd}/pyproxy.json`);
 * if (why !== undefined) throw new ConfigError(`Cannot use ${cwd}/pyproxy.json: ${why}`);
 * ```
 */
export async function untrustedPath(
  runtime: Runtime,
  path: string,
  link = false,
): Promise<string | undefined> {
  const self = runtime.uid?.();
  if (self === undefined || runtime.owner === undefined) return undefined;
  const at = path.lastIndexOf("/");
  const parent = at <= 0 ? "/" : path.slice(0, at);
  for (
    const [what, p, stickyOk] of [["it", path, false], [
      "its directory",
      parent,
      true,
    ]] as const
  ) {
    const o = await runtime.owner(p);
    if (o === null) continue;
    if (o.uid !== self && o.uid !== 0) {
      return `${what} belongs to another user (uid ${o.uid})`;
    }
    // A link's own mode is 0777 on Linux and means nothing: it cannot be
    // written, only replaced, which its directory decides.
    if (link && p === path) continue;
    if ((o.mode & 0o002) !== 0 && !(stickyOk && (o.mode & 0o1000) !== 0)) {
      return `every user can write to ${what} (mode ${
        (o.mode & 0o7777).toString(8).padStart(4, "0")
      })`;
    }
  }
  return undefined;
}

/**
 * {@linkcode untrustedPath} of a file named through links: each link on
 * its way as a link (its owner and its directory), then the file it names
 * (`real`, its real path) and that file's directory, phrased with `real`'s
 * name; or
 * `undefined` when each is trusted. A Kubernetes secret (`token` a link to
 * `..data/token`, `..data` to a timestamped directory, all root's) passes;
 * a link of another user's, or one in a directory they can write, does not:
 * they could point it at any file they can read (`/etc/machine-id`).
 *
 * @example
 * ```ts ignore
 * const why = await untrustedThroughLinks(runtime, "/run/secrets/token", await runtime.realPath("/run/secrets/token"));
 * ```
 */
export async function untrustedThroughLinks(
  runtime: Runtime,
  path: string,
  real: string,
): Promise<string | undefined> {
  if (real === path) {
    return (await untrustedPath(runtime, path)) ??
      (await untrustedAbove(runtime, dirname(real)));
  }
  return (runtime.readLink === undefined
    ? await untrustedPath(runtime, path, true)
    : await untrustedLinkOnTheWay(runtime, path)) ??
    (await untrustedPath(runtime, real))?.replace(
      /\bits directory\b|\bit\b/,
      (w) => w === "it" ? real : `the directory of ${real}`,
    ) ??
    (await untrustedAbove(runtime, await runtime.realPath(dirname(path)))) ??
    (await untrustedAbove(runtime, dirname(real)));
}

/** Links followed at most on a path's way (Linux's own bound, ELOOP). */
const MAX_LINKS = 40;

/**
 * Why a link that `path` leads through, on its way to its file,
 * lets another user choose where it leads: each link met as the path is
 * resolved one name at a time (the first, a directory's such as
 * Kubernetes' `..data`, a link's link), checked as {@linkcode untrustedPath}
 * checks a link (its owner, its directory as it really is) and the
 * directories above it; or `undefined`. The first link and the file alone
 * were checked before: a link of this user's leading to one of another
 * user's (in `/tmp`) leading to `/etc/machine-id` (root's, read by every
 * user) was passed, and every user knew the token. A link's directory is
 * the real one, not a link's mode (`0777`): a directory link of root's on
 * the path was refused as "every user can write to its directory".
 */
async function untrustedLinkOnTheWay(
  runtime: Runtime,
  path: string,
): Promise<string | undefined> {
  const readLink = runtime.readLink;
  if (
    readLink === undefined || runtime.owner === undefined ||
    runtime.uid?.() === undefined
  ) return undefined;
  // The names left, last first; `resolved`: a path with no link in it.
  // A relative path (a plugin module's) is the working directory's.
  const names = resolve(path).split("/").reverse();
  let resolved = "/";
  let links = 0;
  while (names.length > 0) {
    const name = names.pop()!;
    if (name === "" || name === ".") continue;
    if (name === "..") {
      resolved = dirname(resolved);
      continue;
    }
    const at = resolved === "/" ? `/${name}` : `${resolved}/${name}`;
    // One this process may not read (Deno's --allow-read) is passed over,
    // as the directories above a file are.
    const o = await runtime.owner(at).catch(() => null);
    if (o === null || (o.mode & 0o170000) !== 0o120000) {
      resolved = at;
      continue;
    }
    if (++links > MAX_LINKS) return undefined;
    const why = (await untrustedPath(runtime, at, true))?.replace(
      /\bits directory\b|\bit\b/,
      (w) =>
        w === "it"
          ? `${at} (a link on its way)`
          : `the directory of ${at} (a link on its way)`,
    ) ?? (await untrustedAbove(runtime, resolved));
    if (why !== undefined) return why;
    const target = await readLink(at);
    if (target.startsWith("/")) resolved = "/";
    names.push(...target.split("/").reverse());
  }
  return undefined;
}

/**
 * {@linkcode untrustedThroughLinks} of the file at `path` (relative to the
 * working directory), through its links to the file itself: why another
 * user could write or replace what the gateway reads there, or
 * `undefined`. What a token file, a TLS key, a CA bundle and a plugin
 * module are checked with; throws the runtime's error when `path` is gone.
 *
 * @example
 * ```ts ignore
 * const why = await untrustedFile(runtime, "/etc/pyproxy/tls.key");
 * if (why !== undefined) throw new ConfigError(`tls.key: cannot use it: ${why}`);
 * ```
 */
export async function untrustedFile(
  runtime: Runtime,
  path: string,
): Promise<string | undefined> {
  const given = resolve(path);
  return await untrustedThroughLinks(
    runtime,
    given,
    await runtime.realPath(given),
  );
}

/**
 * Why a directory above `dir` (a path with no link in it: a file's
 * directory, already checked) lets another user replace `dir`, or `undefined`: one of
 * theirs, or one every user can write without the sticky bit. They can
 * rename the directory away and put one of theirs in its place: its owner
 * then looks wrong, but a read between two renames, checked after the
 * second, took their file (a token of theirs accepted 113 times in 30 s of
 * swaps, newcomer24). Where owners are unknown, `undefined`; a directory
 * whose owner this process may not read is passed over.
 */
async function untrustedAbove(
  runtime: Runtime,
  dir: string,
): Promise<string | undefined> {
  const self = runtime.uid?.();
  if (self === undefined || runtime.owner === undefined) return undefined;
  if (dirname(dir) === dir) return undefined;
  for (let at = dirname(dir);; at = dirname(at)) {
    // Deno's --allow-read narrower than the path: that directory's owner
    // cannot be read, and is not checked (no start refused for it).
    const o = await runtime.owner(at).catch(() => null);
    if (o !== null) {
      if (o.uid !== self && o.uid !== 0) {
        return `${at}, a directory above it, belongs to another user (uid ${o.uid})`;
      }
      if ((o.mode & 0o002) !== 0 && (o.mode & 0o1000) === 0) {
        return `every user can write to ${at}, a directory above it (mode ${
          (o.mode & 0o7777).toString(8).padStart(4, "0")
        })`;
      }
    }
    if (dirname(at) === at) return undefined;
  }
}
