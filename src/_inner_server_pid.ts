/**
 * Internals of {@linkcode PythonServer}: the server's own process when the
 * `python` the pool spawned is a wrapper that runs the interpreter as its
 * child (`uv run`, `conda run`, a shell script without `exec`).
 *
 * Why: the host signals what it spawned. Under such a wrapper that is the
 * wrapper, not the server: the server's process group (which it makes for
 * itself as it starts) was never signalled, so what model code started
 * outlived the pool; and the server's pid (sent with every eval event)
 * differed from the worker's, so the pool refused an eval's output
 * acknowledgements (its output stalled after the first window) and its
 * cancel (the worker was killed instead).
 *
 * The ready line names the server's pid; it is adopted only when the
 * operating system confirms it: on Linux, `/proc/<pid>/stat` shows a process
 * that leads its own process group and descends from the spawned child
 * within a few generations. Anything else (no `/proc`, no permission, a pid
 * of another PID namespace, as `docker run` would print) keeps the spawned
 * child's pid: a wrong process group must never be signalled.
 *
 * @module
 */
import type { Runtime } from "./runtime/types.ts";

/** Generations between the spawned child and the server (a wrapper of a wrapper). */
const MAX_DEPTH = 8;

/**
 * The pid of the server under a wrapper, confirmed by the OS, or
 * `undefined` (not under a wrapper, or not confirmed). Never throws.
 *
 * @example
 * ```ts ignore
 * const inner = await innerServerPid(runtime, child.pid, ready.pid);
 * if (inner !== undefined) child.adoptGroup?.(inner);
 * ```
 */
export async function innerServerPid(
  runtime: Runtime,
  childPid: number,
  readyPid: number,
): Promise<number | undefined> {
  if (
    readyPid === childPid || !Number.isSafeInteger(readyPid) ||
    readyPid <= 1 || readyPid === runtime.pid()
  ) return undefined;
  const first = await procStat(runtime, readyPid);
  // It leads its own group (the server's setpgid): the group to signal.
  if (first === undefined || first.pgrp !== readyPid) return undefined;
  let ppid = first.ppid;
  for (let depth = 0; depth < MAX_DEPTH && ppid > 1; depth++) {
    if (ppid === childPid) return readyPid;
    const stat = await procStat(runtime, ppid);
    if (stat === undefined) return undefined;
    ppid = stat.ppid;
  }
  return undefined;
}

/** `ppid` and `pgrp` from `/proc/<pid>/stat`, or `undefined`. */
async function procStat(
  runtime: Runtime,
  pid: number,
): Promise<{ ppid: number; pgrp: number } | undefined> {
  let text: string;
  try {
    const file = await runtime.openRead(`/proc/${pid}/stat`);
    try {
      // Procfs files report size 0: read what there is (a stat line is
      // well under 1 KiB).
      const buf = new Uint8Array(1024);
      const n = await file.read(buf);
      if (n === null) return undefined;
      text = new TextDecoder().decode(buf.subarray(0, n));
    } finally {
      await file.close();
    }
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const ppid = Number(fields[1]);
  const pgrp = Number(fields[2]);
  return Number.isSafeInteger(ppid) && Number.isSafeInteger(pgrp)
    ? { ppid, pgrp }
    : undefined;
}
