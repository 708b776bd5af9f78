/**
 * Internals of `GET /metrics`: a process's resident memory and CPU time,
 * read from Linux's `/proc` (a worker's Python server, which the gateway
 * cannot ask its runtime about).
 *
 * @module
 */
import type { Runtime } from "./runtime/types.ts";

/**
 * Clock ticks per second of `/proc/<pid>/stat`'s times: `USER_HZ`, 100 on
 * every Linux architecture whatever the kernel's `HZ` (the JS runtimes have
 * no `sysconf(_SC_CLK_TCK)`; Prometheus's procfs assumes 100 too).
 */
const USER_HZ = 100;

/** Bytes read of a procfs file: a `stat` line is under 1 KiB, `status` under 2. */
const READ_LIMIT = 4096;

/**
 * A process's resident set size in bytes and CPU time (user plus system)
 * in seconds, as `/proc` has them now.
 *
 * @example
 * ```ts
 * import type { ProcSample } from "./_proc_sample.ts";
 * const sample: ProcSample = { rss: 52_428_800, cpuSeconds: 1.25 };
 * console.log(sample.rss / 2 ** 20); // 50
 * ```
 */
export interface ProcSample {
  /** Resident set size in bytes (`VmRSS`). */
  rss: number;
  /** CPU time used, user plus system, in seconds. */
  cpuSeconds: number;
}

/**
 * Reads `/proc/<pid>/stat` (CPU times) and `/proc/<pid>/status` (`VmRSS`,
 * in kB: no page size to guess, which `stat` and `statm` count in) through
 * the runtime's file reads. `undefined` when either cannot be read or
 * parsed: no `/proc` (not Linux), no permission, a process that is gone, or
 * one that died and is not reaped yet (a zombie has no `VmRSS`). Never
 * throws.
 *
 * @example
 * ```ts ignore
 * const sample = await procSample(runtime, worker.pid);
 * if (sample !== undefined) console.log(sample.rss, sample.cpuSeconds);
 * ```
 */
export async function procSample(
  runtime: Runtime,
  pid: number,
): Promise<ProcSample | undefined> {
  const [stat, status] = await Promise.all([
    readProcFile(runtime, `/proc/${pid}/stat`),
    readProcFile(runtime, `/proc/${pid}/status`),
  ]);
  if (stat === undefined || status === undefined) return undefined;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses;
  // utime and stime are the 14th and 15th fields.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  const vmRss = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (
    vmRss === undefined || !Number.isSafeInteger(utime) ||
    !Number.isSafeInteger(stime)
  ) return undefined;
  return {
    rss: Number(vmRss) * 1024,
    cpuSeconds: (utime + stime) / USER_HZ,
  };
}

/**
 * A procfs file's text (they report a size of 0: read what there is), or
 * `undefined` when it cannot be read.
 *
 * @example
 * ```ts ignore
 * const limits = await readProcFile(runtime, "/proc/self/limits");
 * ```
 */
export async function readProcFile(
  runtime: Runtime,
  path: string,
): Promise<string | undefined> {
  try {
    const file = await runtime.openRead(path);
    try {
      const buf = new Uint8Array(READ_LIMIT);
      let length = 0;
      while (length < buf.length) {
        const n = await file.read(buf.subarray(length));
        if (n === null || n === 0) break;
        length += n;
      }
      return new TextDecoder().decode(buf.subarray(0, length));
    } finally {
      await file.close();
    }
  } catch {
    return undefined;
  }
}
