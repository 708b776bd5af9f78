/**
 * Bun's connect to a Unix socket whose accept queue is full: Linux refuses
 * it at once with `EAGAIN`, which Bun reports as `ECONNREFUSED` (seen with
 * strace: `connect(...) = -1 EAGAIN`, the error's `code` `ECONNREFUSED`),
 * the code of a socket file nobody listens on. `Session.connect` tries a
 * full queue again (a flood of a worker's socket, security25) and not a
 * refusal: on Bun the host gave up at its first refused connect, whatever
 * the flood. The error is made `EAGAIN` again when Linux lists a listening
 * socket at that path (`/proc/net/unix`).
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import type { Connection, ConnectTarget } from "./types.ts";

/** `__SO_ACCEPTCON`, the flag of a listening socket in `/proc/net/unix`. */
const ACCEPTING = 0x10000;

/**
 * Whether Linux lists a listening Unix socket bound to `path` (false where
 * there is no `/proc/net/unix`).
 */
export async function listeningUnixSocket(path: string): Promise<boolean> {
  let table: string;
  try {
    table = await readFile("/proc/net/unix", "utf8");
  } catch {
    return false;
  }
  // Num RefCount Protocol Flags Type St Inode Path
  for (const line of table.split("\n")) {
    if (!line.endsWith(` ${path}`)) continue;
    const fields = line.trim().split(/\s+/);
    if (fields.length < 8 || fields.slice(7).join(" ") !== path) continue;
    if ((parseInt(fields[3]!, 16) & ACCEPTING) !== 0) return true;
  }
  return false;
}

/**
 * `connect`, whose `ECONNREFUSED` for a Unix socket that is listening is
 * thrown as the `EAGAIN` it was (its accept queue full).
 *
 * @example
 * ```ts ignore
 * const connect = seeingFullQueues(connectNodeSocket);
 * await connect({ path: "/run/pyproxy/w1.sock" }); // EAGAIN when its queue is full
 * ```
 */
export function seeingFullQueues(
  connect: (target: ConnectTarget) => Promise<Connection>,
): (target: ConnectTarget) => Promise<Connection> {
  return async (target) => {
    try {
      return await connect(target);
    } catch (err) {
      const path = target.path;
      if (
        path === undefined ||
        (err as { code?: unknown } | null)?.code !== "ECONNREFUSED" ||
        !(await listeningUnixSocket(path))
      ) throw err;
      throw Object.assign(
        new Error(
          `connect EAGAIN ${path}: its accept queue is full (Bun said ECONNREFUSED)`,
          { cause: err },
        ),
        { code: "EAGAIN", errno: -11, syscall: "connect" },
      );
    }
  };
}
