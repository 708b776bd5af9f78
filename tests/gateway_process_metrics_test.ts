/**
 * `GET /metrics`: the gateway's standard process metrics and each worker's
 * resident memory and CPU time, read from /proc at the scrape (Linux).
 */
import assert from "node:assert/strict";
import { createGateway } from "../src/gateway/app.ts";
import { readWorkerResources } from "../src/gateway/process_resources.ts";
import { denoRuntime } from "../src/runtime/deno.ts";
import { reconnect } from "../plugins/reconnect.ts";
import { Pool } from "../mod.ts";
import { startGateway } from "./_gateway_harness.ts";
import { type Family, parseExposition } from "./_exposition.ts";

/** Keeps what it is asked to allocate (pages written: resident). */
const HOG = `import os


class Hog:
    held = []

    def execute(self, msg):
        mb = msg.get("mb", 0)
        if mb:
            Hog.held.append(b"\\x01" * (mb << 20))
        return {"pid": os.getpid()}
`;

/** A family's samples by their `worker` label. */
function byWorker(
  families: Map<string, Family>,
  name: string,
): Map<string, { slot: string | undefined; value: number }> {
  const out = new Map<string, { slot: string | undefined; value: number }>();
  for (const s of families.get(name)?.samples ?? []) {
    out.set(s.labels.worker!, { slot: s.labels.slot, value: s.value });
  }
  return out;
}

/** The one sample of a family without labels. */
function single(families: Map<string, Family>, name: string): number {
  const samples = families.get(name)?.samples ?? [];
  assert.equal(samples.length, 1, `${name}: ${JSON.stringify(samples)}`);
  return samples[0]!.value;
}

const MiB = 2 ** 20;

Deno.test("GET /metrics shows the gateway's process metrics, and a worker's memory growth for that worker only", async () => {
  await using gw = await startGateway({ workers: 2 }, { "hog.py": HOG });
  const scrape = async () => {
    const res = await gw.fetch("/metrics");
    const text = await res.text();
    assert.equal(res.status, 200, text);
    return parseExposition(text);
  };
  const before = await scrape();
  const now = Date.now() / 1000;
  assert.equal(before.get("process_cpu_seconds_total")?.type, "counter");
  assert.ok(single(before, "process_cpu_seconds_total") > 0);
  assert.ok(single(before, "process_resident_memory_bytes") > 10 * MiB);
  const start = single(before, "process_start_time_seconds");
  assert.ok(start <= now && start > now - 600, String(start));
  const open = single(before, "process_open_fds");
  assert.ok(open > 3 && open <= single(before, "process_max_fds"));
  const heapUsed = single(before, "pyproxy_js_heap_used_bytes");
  assert.ok(
    heapUsed > 0 && heapUsed <= single(before, "pyproxy_js_heap_total_bytes"),
  );

  const status = await (await gw.fetch("/v1/status")).json() as {
    workers: Array<{ id: string; pid: number; index: number }>;
  };
  const rssBefore = byWorker(before, "pyproxy_worker_resident_memory_bytes");
  const cpuBefore = byWorker(before, "pyproxy_worker_cpu_seconds_total");
  assert.equal(before.get("pyproxy_worker_cpu_seconds_total")?.type, "counter");
  assert.equal(rssBefore.size, 2);
  for (const w of status.workers) {
    assert.equal(rssBefore.get(w.id)?.slot, String(w.index));
    assert.ok(rssBefore.get(w.id)!.value > 5 * MiB, w.id);
    assert.ok(cpuBefore.get(w.id)!.value > 0, w.id);
  }

  const res = await gw.fetch("/v1/models/hog/execute", {
    method: "POST",
    body: '{"mb":50}',
  });
  assert.equal(res.status, 200);
  const { pid } = (await res.json()) as { pid: number };
  const hog = status.workers.find((w) => w.pid === pid);
  assert.ok(hog, `pid ${pid} is no worker's`);
  const after = await scrape();
  const rssAfter = byWorker(after, "pyproxy_worker_resident_memory_bytes");
  for (const w of status.workers) {
    const grown = (rssAfter.get(w.id)!.value - rssBefore.get(w.id)!.value) /
      MiB;
    if (w.id === hog.id) assert.ok(grown >= 45, `${w.id} grew ${grown} MiB`);
    else assert.ok(grown < 20, `${w.id} grew ${grown} MiB`);
  }
  const cpuAfter = byWorker(after, "pyproxy_worker_cpu_seconds_total");
  assert.ok(cpuAfter.get(hog.id)!.value >= cpuBefore.get(hog.id)!.value);
});

Deno.test("GET /metrics leaves out a killed worker's series while it has no process", async () => {
  const pool = await Pool.start({
    workers: 2,
    handleSignals: false,
    // No restart within the test: the slot stays without a process.
    plugins: [
      reconnect({
        heartbeatInterval: 0,
        backoff: { initial: 3_600_000, max: 3_600_000, jitter: 0 },
      }),
    ],
  });
  try {
    const app = createGateway(pool, { port: () => 8000 });
    const scrape = async () => {
      const res = await app.fetch(
        new Request("http://127.0.0.1:8000/metrics", {
          headers: { host: "127.0.0.1:8000" },
        }),
      );
      const text = await res.text();
      assert.equal(res.status, 200, text);
      return parseExposition(text);
    };
    const [w1, w2] = pool.status().workers;
    const before = await scrape();
    for (
      const name of [
        "pyproxy_worker_resident_memory_bytes",
        "pyproxy_worker_cpu_seconds_total",
      ]
    ) {
      assert.deepEqual([...byWorker(before, name).keys()].sort(), [
        w1!.id,
        w2!.id,
      ]);
    }
    const restarting = Promise.withResolvers<void>();
    const off = pool.on((ev) => {
      if (ev.type === "restarting" && ev.worker === w2!.id) {
        restarting.resolve();
      }
    });
    try {
      Deno.kill(w2!.pid!, "SIGKILL");
      await restarting.promise;
    } finally {
      off();
    }
    assert.equal(
      pool.status().workers.find((w) => w.id === w2!.id)?.pid,
      null,
    );
    const after = await scrape();
    for (
      const name of [
        "pyproxy_worker_resident_memory_bytes",
        "pyproxy_worker_cpu_seconds_total",
      ]
    ) {
      assert.deepEqual([...byWorker(after, name).keys()], [w1!.id], name);
    }
  } finally {
    await pool.close();
  }
});

Deno.test("readWorkerResources skips a process that is gone and reads a live one", async () => {
  const child = new Deno.Command("true").spawn();
  await child.status;
  const read = await readWorkerResources(denoRuntime(), [
    { id: "gone", pid: child.pid, index: 0 },
    { id: "none", pid: null, index: 1 },
    { id: "self", pid: Deno.pid, index: 2 },
  ]);
  assert.deepEqual(read.map((w) => [w.id, w.index]), [["self", 2]]);
  assert.ok(read[0]!.rss > 10 * MiB);
  assert.ok(read[0]!.cpuSeconds > 0);
});
