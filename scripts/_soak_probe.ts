// What the soak (scripts/soak.ts) reads of the machine, Linux only: a
// process's RSS, open file descriptors and threads from /proc, the Python
// servers a host started (by their --host-pid) and the temporary
// directories a host names after its pid.

/** One process's numbers from /proc (undefined when it is gone). */
export interface ProcSample {
  pid: number;
  rssKb: number;
  fds: number;
  threads: number;
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

function countDir(path: string): number {
  let n = 0;
  try {
    for (const _ of Deno.readDirSync(path)) n++;
  } catch {
    return -1;
  }
  return n;
}

/** Files under `path`, at any depth. */
function countFiles(path: string): number {
  let n = 0;
  try {
    for (const e of Deno.readDirSync(path)) {
      n += e.isDirectory ? countFiles(`${path}/${e.name}`) : 1;
    }
  } catch {
    // gone meanwhile
  }
  return n;
}

/** VmRSS, open fds and threads of `pid`, or undefined once it is gone. */
export function procSample(pid: number): ProcSample | undefined {
  const status = readText(`/proc/${pid}/status`);
  if (status === undefined) return undefined;
  const rss = /^VmRSS:\s+(\d+)/m.exec(status);
  const threads = /^Threads:\s+(\d+)/m.exec(status);
  return {
    pid,
    rssKb: rss ? Number(rss[1]) : 0,
    fds: countDir(`/proc/${pid}/fd`),
    threads: threads ? Number(threads[1]) : 0,
  };
}

/** The parent pid of `pid` (field 4 of /proc/<pid>/stat), or undefined. */
export function parentPid(pid: number): number | undefined {
  const stat = readText(`/proc/${pid}/stat`);
  if (stat === undefined) return undefined;
  // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[1]);
}

/** A Python server process: its pid, parent and the host it names. */
export interface ServerProcess {
  pid: number;
  ppid: number | undefined;
  hostPid: number;
  state: string;
}

/** Every pyproxy_server process whose --host-pid is one of `hosts`. */
export function serverProcesses(hosts: Set<number>): ServerProcess[] {
  const found: ServerProcess[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const cmdline = readText(`/proc/${entry.name}/cmdline`);
    if (cmdline === undefined || !cmdline.includes("pyproxy_server")) continue;
    const args = cmdline.split("\0");
    const at = args.indexOf("--host-pid");
    const hostPid = at < 0 ? NaN : Number(args[at + 1]);
    if (!hosts.has(hostPid)) continue;
    const pid = Number(entry.name);
    const stat = readText(`/proc/${pid}/stat`) ?? "";
    found.push({
      pid,
      ppid: parentPid(pid),
      hostPid,
      state: stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0] ?? "?",
    });
  }
  return found;
}

/**
 * Temporary entries of these hosts: `pyproxy-*-<pid>-*` directories under
 * /tmp (or $TMPDIR) and /dev/shm, the files at any depth inside them (a socket in each
 * `pyproxy-sock-*` of a running server) and the spill files among them.
 */
export function tempEntries(
  hosts: Set<number>,
): { dirs: number; files: number; spillFiles: number; names: string[] } {
  let dirs = 0;
  let files = 0;
  let spillFiles = 0;
  const names: string[] = [];
  const roots = new Set([Deno.env.get("TMPDIR") ?? "/tmp", "/tmp", "/dev/shm"]);
  for (const root of roots) {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(root)];
    } catch {
      continue;
    }
    for (const entry of entries) {
      const m = /^pyproxy-[a-z]+-(\d+)-/.exec(entry.name);
      if (m === null || !hosts.has(Number(m[1]))) continue;
      dirs++;
      names.push(`${root}/${entry.name}`);
      if (entry.isDirectory) {
        const n = countFiles(`${root}/${entry.name}`);
        files += n;
        if (entry.name.startsWith("pyproxy-spill-")) spillFiles += n;
      }
    }
  }
  return { dirs, files, spillFiles, names };
}
