// How the soak (scripts/soak.ts) shows its samples: a line per sample while
// it runs, then the start/middle/end/drained table and each worker's life.
import type { ProcSample, ServerProcess } from "./_soak_probe.ts";

/** One sample of everything that must stay bounded. */
export interface Sample {
  t: number;
  gateway: ProcSample | undefined;
  gatewayHeap?: { heapUsed: number; rss: number; external: number };
  driver: ProcSample | undefined;
  driverHeap: { heapUsed: number; rss: number };
  workers: Array<{
    id: string;
    owner: "gateway" | "pool";
    pid: number;
    fds: number;
    threads: number;
    rssKb: number;
  }>;
  servers: number;
  orphans: ServerProcess[];
  temp: { dirs: number; files: number; spillFiles: number };
  status: Record<string, unknown>;
  poolStatus: Record<string, unknown>;
  metrics: Record<string, number>;
  ledger: { started: number; settled: number; open: number; oldestMs: number };
}

/** One line per sample, as the run prints them. */
export function line(s: Sample): string {
  const mb = (kb: number | undefined) => ((kb ?? 0) / 1024).toFixed(0);
  const w = s.workers.map((w) =>
    `${w.owner[0]}${w.id}:${w.fds}fd/${w.threads}t`
  ).join(" ");
  return `t=${s.t}s gw rss ${mb(s.gateway?.rssKb)}MB heap ${
    ((s.gatewayHeap?.heapUsed ?? 0) / 2 ** 20).toFixed(1)
  }MB fds ${s.gateway?.fds} thr ${s.gateway?.threads} | driver rss ${
    mb(s.driver?.rssKb)
  }MB heap ${
    (s.driverHeap.heapUsed / 2 ** 20).toFixed(1)
  }MB fds ${s.driver?.fds} | ${w} | servers ${s.servers} orphans ${s.orphans.length} temp ${s.temp.dirs}d/${s.temp.files}f/${s.temp.spillFiles}spill | gw ${
    JSON.stringify(s.status)
  } pool ${
    JSON.stringify(s.poolStatus)
  } | req ${s.ledger.settled}/${s.ledger.started} open ${s.ledger.open} oldest ${s.ledger.oldestMs}ms`;
}

export function table(samples: Sample[], drained: Sample): string {
  const pickAt = (f: number) =>
    samples[
      Math.min(samples.length - 1, Math.floor(f * (samples.length - 1)))
    ]!;
  const rows = [pickAt(0), pickAt(0.5), pickAt(1), drained];
  const cols = ["start", "middle", "end", "drained"];
  const fmt = (label: string, get: (s: Sample) => unknown) =>
    `| ${label} | ${rows.map((r) => String(get(r))).join(" | ")} |`;
  const workerMax = (
    s: Sample,
    f: (w: Sample["workers"][0]) => number,
    owner: string,
  ) => Math.max(0, ...s.workers.filter((w) => w.owner === owner).map(f));
  return [
    `| | ${cols.map((c, i) => `${c} (t=${rows[i]!.t}s)`).join(" | ")} |`,
    `|---|${cols.map(() => "---:").join("|")}|`,
    fmt("gateway RSS (MB)", (s) => ((s.gateway?.rssKb ?? 0) / 1024).toFixed(0)),
    fmt(
      "gateway heap used after GC (MB)",
      (s) => ((s.gatewayHeap?.heapUsed ?? 0) / 2 ** 20).toFixed(1),
    ),
    fmt("gateway fds", (s) => s.gateway?.fds),
    fmt("gateway threads", (s) => s.gateway?.threads),
    fmt(
      "driver (pool + clients) RSS (MB)",
      (s) => ((s.driver?.rssKb ?? 0) / 1024).toFixed(0),
    ),
    fmt(
      "driver heap used (MB)",
      (s) => (s.driverHeap.heapUsed / 2 ** 20).toFixed(1),
    ),
    fmt("driver fds", (s) => s.driver?.fds),
    fmt(
      "gateway workers: max fds",
      (s) => workerMax(s, (w) => w.fds, "gateway"),
    ),
    fmt(
      "gateway workers: max threads",
      (s) => workerMax(s, (w) => w.threads, "gateway"),
    ),
    fmt(
      "gateway workers: max RSS (MB)",
      (s) => (workerMax(s, (w) => w.rssKb, "gateway") / 1024).toFixed(0),
    ),
    fmt("pool workers: max fds", (s) => workerMax(s, (w) => w.fds, "pool")),
    fmt(
      "pool workers: max threads",
      (s) => workerMax(s, (w) => w.threads, "pool"),
    ),
    fmt(
      "Python servers (orphans)",
      (s) => `${s.servers} (${s.orphans.length})`,
    ),
    fmt(
      "temp dirs / files / spill files",
      (s) => `${s.temp.dirs} / ${s.temp.files} / ${s.temp.spillFiles}`,
    ),
    fmt(
      "gateway inFlight / queue / parked",
      (s) => `${s.status.inFlight} / ${s.status.queue} / ${s.status.parked}`,
    ),
    fmt(
      "gateway requests in flight / subscribers",
      (s) => `${s.status.gatewayInFlight} / ${s.status.subscribers}`,
    ),
    fmt("gateway evalReplayBytes", (s) => s.status.evalReplayBytes),
    fmt(
      "pool inFlight / queue / parked",
      (s) =>
        `${s.poolStatus.inFlight} / ${s.poolStatus.queue} / ${s.poolStatus.parked}`,
    ),
    fmt("/metrics size (bytes)", (s) => s.metrics.bytes),
    fmt(
      "requests settled / started",
      (s) => `${s.ledger.settled} / ${s.ledger.started}`,
    ),
  ].join("\n");
}

/** Each worker process seen in 3 samples or more: its first and last numbers. */
export function lifetimes(samples: Sample[]): string {
  const seen = new Map<number, Sample["workers"]>();
  for (const s of samples) {
    for (const w of s.workers) {
      const list = seen.get(w.pid) ?? [];
      list.push(w);
      seen.set(w.pid, list);
    }
  }
  const rows: string[] = [];
  for (const [pid, list] of seen) {
    if (list.length < 3) continue;
    const a = list[0]!;
    const b = list.at(-1)!;
    rows.push(
      `  ${a.owner} ${a.id} (pid ${pid}, ${list.length} samples): RSS ${
        (a.rssKb / 1024).toFixed(0)
      } → ${
        (b.rssKb / 1024).toFixed(0)
      } MB, fds ${a.fds} → ${b.fds}, threads ${a.threads} → ${b.threads} (max ${
        Math.max(...list.map((w) => w.threads))
      })`,
    );
  }
  return rows.join("\n");
}
