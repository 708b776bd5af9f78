/**
 * Whether a directory this process made private is still its own.
 *
 * @module
 */
import type { Runtime } from "./runtime/types.ts";

/**
 * `true` when `path` is a directory (not a symlink) of this user that no
 * one else can enter; `false` when it is missing or anything else. A
 * directory made in a shared temp directory can vanish (a /tmp cleaner) and
 * be made again by another user under the same name: whatever it holds is
 * then theirs to read and replace. Where the runtime cannot tell owners
 * (no `owner`/`uid`, Windows) only existence counts.
 *
 * @example
 * ```ts ignore
 * if (!(await isPrivateDir(runtime, root))) root = await runtime.makeTempDir({ prefix });
 * ```
 */
export async function isPrivateDir(
  runtime: Runtime,
  path: string,
): Promise<boolean> {
  const self = runtime.uid?.();
  if (self === undefined || runtime.owner === undefined) {
    return (await runtime.stat(path))?.isDirectory === true;
  }
  const o = await runtime.owner(path);
  return o !== null && o.uid === self && (o.mode & 0o170000) === 0o040000 &&
    (o.mode & 0o077) === 0;
}
