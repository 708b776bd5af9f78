/**
 * Bytes free to this user on a file system (`statfs`, through `node:fs`,
 * which Deno and Bun both implement), for error messages.
 *
 * @module
 */
import { statfs } from "node:fs/promises";

/**
 * `bavail * bsize` of the file system of `path`, or undefined when it
 * cannot be told (no such path, no statfs).
 *
 * @example
 * ```ts ignore
 * console.log(await freeBytes("/dev/shm")); // 67108864 in a fresh container
 * ```
 */
export async function freeBytes(path: string): Promise<number | undefined> {
  try {
    const s = await statfs(path);
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return undefined;
  }
}
