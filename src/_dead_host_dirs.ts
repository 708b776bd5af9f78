/**
 * Temporary directories named after the host process that made them, and
 * the sweep that removes those of hosts that died without cleaning up.
 *
 * @module
 */
import type { Runtime } from "./runtime/types.ts";

/**
 * The `makeTempDir` prefix of a directory owned by this host process:
 * `<kind>-<pid>-` (the runtime adds a random suffix).
 *
 * @example
 * ```ts ignore
 * await runtime.makeTempDir({ prefix: hostDirPrefix("pyproxy-sock", runtime) });
 * ```
 */
export function hostDirPrefix(kind: string, runtime: Runtime): string {
  return `${kind}-${runtime.pid()}-`;
}

/**
 * A host killed before it could clean up (SIGKILL, a crash) leaves its
 * directories behind. Removes the directories in `parent` named
 * `<kind>-<pid>-...` for each of `kinds` whose pid no longer runs; only where
 * /proc tells which pids run, and errors (another user's directory) are
 * ignored. A pid reused by another process keeps its directory: the safe way
 * round. Pids are judged in this process's PID namespace: hosts in other
 * namespaces (containers) that share this temp directory as the same user
 * must use a temp directory of their own (`TMPDIR`), or their directories
 * may look dead from here.
 *
 * @example
 * ```ts ignore
 * await removeDeadHostDirs(runtime, runtime.tempDir(), ["pyproxy-sock", "pyproxy-models"]);
 * ```
 */
export async function removeDeadHostDirs(
  runtime: Runtime,
  parent: string,
  kinds: readonly string[],
): Promise<void> {
  // No /proc (not Linux), or no permission to look at it (Deno asks for -A
  // to read /proc/self): which hosts are alive cannot be told, so nothing is
  // removed.
  const alive = async (path: string): Promise<boolean | undefined> => {
    try {
      return (await runtime.stat(path)) !== null;
    } catch {
      return undefined;
    }
  };
  if ((await alive("/proc/self")) !== true) return;
  const self = String(runtime.pid());
  let names: string[];
  try {
    names = await runtime.readDir(parent);
  } catch {
    return;
  }
  for (const name of names) {
    const kind = kinds.find((k) => name.startsWith(`${k}-`));
    if (kind === undefined) continue;
    const pid = /^(\d+)-/.exec(name.slice(kind.length + 1))?.[1];
    if (pid === undefined || pid === self) continue;
    if ((await alive(`/proc/${pid}`)) !== false) continue;
    await runtime.remove(`${parent}/${name}`, { recursive: true }).catch(
      () => {},
    );
  }
}
