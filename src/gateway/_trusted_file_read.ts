/**
 * A secret file (a token file, the TLS key, the tracing exporter's CA and
 * client key) read and checked as one: what is used is what was checked.
 *
 * @module
 */
import { resolve } from "node:path";
import type { RegularFileRead, Runtime } from "../runtime/types.ts";
import { untrustedThroughLinks } from "./_untrusted_path.ts";

/**
 * Reads of a file that another file replaced at its path each time (read,
 * then another found there by the check) before giving up: a rotation
 * (the kubelet's `..data` swap) happens once.
 */
const READS = 3;

/** What the open file said of itself: {@linkcode RegularFileRead}'s `fstat`. */
export type OpenedFile = Pick<RegularFileRead, "uid" | "mode" | "dev" | "ino">;

/**
 * What {@linkcode readTrusted} found: the read's value, or why another
 * user could have written or replaced what was read.
 */
export type TrustedRead<T> = { value: T; untrusted?: undefined } | {
  untrusted: string;
};

/**
 * `read()` of the file at `path` (relative to the working directory), then
 * checked: its path through its links (`untrustedThroughLinks`: the links,
 * the file, the directories up to `/`), then the file read itself, from
 * what its open descriptor said (`file`: {@linkcode RegularFileRead}), not
 * its path: this user's or root's, not writable by every user, and the
 * very file now at the path checked (same device and inode). A file swapped
 * in for the read and out again before the check (a token of another
 * user's, a key of theirs) was taken when the path alone was checked
 * (security27). A file found replaced since its read (a rotation) is read
 * again, up to {@linkcode READS} times (as is one whose path did not
 * resolve after the read); past that, a {@linkcode ReplacedWhileReadError}. Without `file` (a runtime without
 * `readRegularFile`) or where owners are unknown, the path's check alone.
 * Throws what `read` throws, and the runtime's error when `path` is gone by
 * the check.
 *
 * @example
 * ```ts ignore
 * const got = await readTrusted(runtime, "/run/secrets/token", async () => {
 *   const read = await runtime.readRegularFile!("/run/secrets/token", 4096);
 *   return { value: read?.bytes ?? null, file: read ?? undefined };
 * });
 * if (got.untrusted !== undefined) throw new ConfigError(got.untrusted);
 * ```
 */
export async function readTrusted<T>(
  runtime: Runtime,
  path: string,
  read: () => Promise<{ value: T; file?: OpenedFile }>,
): Promise<TrustedRead<T>> {
  const given = resolve(path);
  for (let reads = 1;; reads++) {
    const { value, file } = await read();
    let real: string;
    try {
      real = await runtime.realPath(given);
    } catch (err) {
      // Bun's realpath fails now and then (ENOENT) while the path is
      // replaced by a rename, though a rename leaves no moment without a
      // file there (under a loop of renames: 166 of 111 000, where Deno's
      // failed none): gone or replaced since the read, read again.
      if (!gone(err) || reads === READS) throw err;
      continue;
    }
    const why = await untrustedThroughLinks(runtime, given, real);
    if (why !== undefined) return { untrusted: why };
    const self = runtime.uid?.();
    if (file === undefined || self === undefined) return { value };
    if (file.uid !== self && file.uid !== 0) {
      return {
        untrusted:
          `the file read from it belongs to another user (uid ${file.uid})`,
      };
    }
    if ((file.mode & 0o002) !== 0) {
      return {
        untrusted: `every user can write to the file read from it (mode ${
          (file.mode & 0o7777).toString(8).padStart(4, "0")
        })`,
      };
    }
    // Gone since (`null`): read again, as when another file is there.
    const now = runtime.owner === undefined
      ? undefined
      : await runtime.owner(real);
    if (
      now !== null &&
      (now?.ino === undefined || (now.dev === file.dev && now.ino === file.ino))
    ) {
      return { value };
    }
    if (reads === READS) {
      throw new ReplacedWhileReadError(
        `another file was at its path each time it had been read (${READS} reads): what was read is not what was checked`,
      );
    }
  }
}

/** Whether `err` says a path is not there (Node's, Bun's or Deno's). */
function gone(err: unknown): boolean {
  return (err as { code?: unknown }).code === "ENOENT" ||
    (err as { name?: unknown }).name === "NotFound";
}

/**
 * A file that {@linkcode readTrusted} found replaced at its path after
 * each of its reads: its message says so.
 */
export class ReplacedWhileReadError extends Error {
  override name = "ReplacedWhileReadError";
  readonly code = "REPLACED_WHILE_READ";
}
