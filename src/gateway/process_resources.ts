/**
 * Memory and CPU of the gateway's process and of each worker's, read at
 * scrape time for `GET /metrics` (never on a request's path).
 *
 * @module
 */
import { procSample, readProcFile } from "../_proc_sample.ts";
import type { Runtime } from "../runtime/types.ts";

/**
 * The gateway's own process, as Prometheus client libraries name its
 * standard metrics (`process_*`), plus its JS heap.
 *
 * @example
 * ```ts
 * import type { ProcessResources } from "@pyproxy/pyproxy";
 * const self: ProcessResources = { rss: 80_000_000, startTime: 1_765_000_000 };
 * console.log(self.openFds ?? "no /proc"); // "no /proc"
 * ```
 */
export interface ProcessResources {
  /** Resident set size in bytes (`process_resident_memory_bytes`). */
  rss: number;
  /** When the process started, in seconds since the epoch (`process_start_time_seconds`). */
  startTime: number;
  /** CPU seconds used, user plus system (`process_cpu_seconds_total`); absent: the runtime cannot say. */
  cpuSeconds?: number;
  /** Open file descriptors (`process_open_fds`); Linux only. */
  openFds?: number;
  /** The soft limit of open file descriptors (`process_max_fds`); Linux only. */
  maxFds?: number;
  /** JS heap in use, in bytes (`pyproxy_js_heap_used_bytes`). */
  heapUsed?: number;
  /** JS heap reserved, in bytes (`pyproxy_js_heap_total_bytes`). */
  heapTotal?: number;
}

/**
 * One worker's process: its slot's id and index, resident memory and CPU
 * time as `/proc` has them.
 *
 * @example
 * ```ts
 * import type { WorkerResources } from "@pyproxy/pyproxy";
 * const w: WorkerResources = { id: "w1", index: 0, rss: 52_428_800, cpuSeconds: 3.5 };
 * console.log(`${w.id}: ${w.rss / 2 ** 20} MiB`); // "w1: 50 MiB"
 * ```
 */
export interface WorkerResources {
  /** The slot's id (`worker` label). */
  id: string;
  /** The slot's index (`slot` label); absent when the pool does not say. */
  index?: number;
  /** Resident set size in bytes. */
  rss: number;
  /** CPU seconds used by the process, user plus system (from 0 again after a restart). */
  cpuSeconds: number;
}

/**
 * Reads the gateway's own process: resident memory, heap and CPU time from
 * the runtime, and on Linux its open descriptors (`/proc/<pid>/fd`) and
 * their limit (`/proc/<pid>/limits`). Never throws.
 *
 * @example
 * ```ts
 * import { readProcessResources } from "@pyproxy/pyproxy";
 * import { defaultRuntime } from "@pyproxy/pyproxy";
 * const self = await readProcessResources(defaultRuntime());
 * console.log(self.rss > 0); // true
 * ```
 */
export async function readProcessResources(
  runtime: Runtime,
): Promise<ProcessResources> {
  const memory = runtime.memoryUsage?.();
  const out: ProcessResources = {
    rss: memory?.rss ?? runtime.memoryRss(),
    // The JS clock's origin: the process's start, to the milliseconds the
    // runtime took before it ran any script.
    startTime: performance.timeOrigin / 1000,
  };
  const cpu = runtime.cpuSeconds?.();
  if (cpu !== undefined) out.cpuSeconds = cpu;
  if (memory !== undefined) {
    out.heapUsed = memory.heapUsed;
    out.heapTotal = memory.heapTotal;
  }
  const pid = runtime.pid();
  const limits = await readProcFile(runtime, `/proc/${pid}/limits`);
  // Without /proc (not Linux) readDir would say [] for the fd directory.
  if (limits === undefined) return out;
  const soft = /^Max open files\s+(\d+)/m.exec(limits)?.[1];
  if (soft !== undefined) out.maxFds = Number(soft);
  try {
    // The directory's own descriptor, open while it is read, is counted, as
    // Prometheus's client libraries count it.
    out.openFds = (await runtime.readDir(`/proc/${pid}/fd`)).length;
  } catch {
    // no permission: left out
  }
  return out;
}

/** Workers read at once: a scrape of a 1024-worker pool opens 64 files at a time. */
const CONCURRENT_READS = 32;

/**
 * Reads each worker that has a process (`pid` not `null`) from `/proc`, a
 * few at a time; a worker whose files cannot be read (one that just died,
 * not Linux, no permission) is left out. Never throws. What `GET /metrics`
 * shows as `pyproxy_worker_resident_memory_bytes` and
 * `pyproxy_worker_cpu_seconds_total`; `pool.status()` does not read them
 * (it is synchronous, and these are file reads): a library user asks here.
 *
 * @example A pool's workers' memory
 * ```ts ignore
 * import { defaultRuntime, Pool, readWorkerResources } from "@pyproxy/pyproxy";
 * const pool = await Pool.start({ workers: 2 });
 * const workers = await readWorkerResources(defaultRuntime(), pool.status().workers);
 * for (const w of workers) console.log(w.id, `${(w.rss / 2 ** 20).toFixed(0)} MiB`);
 * await pool.close();
 * ```
 */
export async function readWorkerResources(
  runtime: Runtime,
  workers: ReadonlyArray<
    { id: string; pid: number | null; index?: number }
  >,
): Promise<WorkerResources[]> {
  const alive = workers.filter((w) => w.pid !== null);
  const out: WorkerResources[] = [];
  for (let i = 0; i < alive.length; i += CONCURRENT_READS) {
    const batch = alive.slice(i, i + CONCURRENT_READS);
    const samples = await Promise.all(
      batch.map((w) => procSample(runtime, w.pid!)),
    );
    samples.forEach((sample, j) => {
      if (sample === undefined) return;
      const w = batch[j]!;
      out.push({
        id: w.id,
        ...(w.index === undefined ? {} : { index: w.index }),
        rss: sample.rss,
        cpuSeconds: sample.cpuSeconds,
      });
    });
  }
  return out;
}
