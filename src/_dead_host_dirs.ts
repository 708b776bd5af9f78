/**
 * Temporary directories named after the host process that made them, and
 * the sweep that removes those of hosts that died without cleaning up.
 *
 * @module
 */
import type { Runtime } from "./runtime/types.ts";
import { readProcFile } from "./_proc_sample.ts";

/**
 * The start of process `pid` in clock ticks since boot (`/proc/<pid>/stat`,
 * its 22nd field), as digits: with the pid, it names one process whatever
 * reuses the pid later. `undefined` where it cannot be read (not Linux, no
 * permission: Deno without `-A`; a process that is gone).
 */
async function startTicks(
  runtime: Runtime,
  pid: string | number,
): Promise<string | undefined> {
  const stat = await readProcFile(runtime, `/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
  const ticks = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  return ticks !== undefined && /^\d+$/.test(ticks) ? ticks : undefined;
}

/**
 * The `makeTempDir` prefix of a directory owned by this host process:
 * `<kind>-<pid>-<start>-`, `<start>` the process's start in clock ticks
 * since boot, or `<kind>-<pid>-` where it cannot be read (the runtime adds
 * a random suffix). The start tells this process's directories from those
 * of an earlier process with the same pid: a container's PID 1, restarted
 * with its `emptyDir` volumes, has pid 1 every time.
 *
 * @example
 * ```ts ignore
 * await runtime.makeTempDir({ prefix: await hostDirPrefix("pyproxy-sock", runtime) });
 * ```
 */
export async function hostDirPrefix(
  kind: string,
  runtime: Runtime,
): Promise<string> {
  const ticks = await startTicks(runtime, "self");
  return `${kind}-${runtime.pid()}-${ticks === undefined ? "" : `${ticks}-`}`;
}

/**
 * A host killed before it could clean up (SIGKILL, a crash) leaves its
 * directories behind. Removes the directories in `parent` named
 * `<kind>-<pid>-...` for each of `kinds` whose process no longer runs: no
 * such pid, or, for a name with the process's start
 * (`<kind>-<pid>-<start>-...`), a process of that pid that started at
 * another time (this process's own pid included: a container's PID 1
 * restarted with its volumes). Only where /proc tells which pids run, and
 * errors (another user's directory) are ignored. A name without the start
 * (made where it could not be read, or by an earlier version) whose pid
 * another process reuses keeps its directory: the safe way round. Pids are
 * judged in this process's PID namespace: hosts in other namespaces
 * (containers) that share this temp directory as the same user must use a
 * temp directory of their own (`TMPDIR`), or their directories may look
 * dead from here.
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
    // `<pid>-<start>-<random>`, or `<pid>-<random>` (the random part has
    // no `-`).
    const match = /^(\d+)-(?:(\d+)-)?/.exec(name.slice(kind.length + 1));
    const pid = match?.[1];
    if (pid === undefined) continue;
    const started = match?.[2];
    if (started === undefined) {
      if (pid === self || (await alive(`/proc/${pid}`)) !== false) continue;
    } else {
      const running = await alive(`/proc/${pid}`);
      if (running === undefined) continue;
      // The pid runs: dead only when its process started at another time
      // (one that cannot be read now is taken as alive).
      if (running && (await startTicks(runtime, pid) ?? started) === started) {
        continue;
      }
    }
    await runtime.remove(`${parent}/${name}`, { recursive: true }).catch(
      () => {},
    );
  }
}
