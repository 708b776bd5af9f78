// /metrics under Bun: a queued call whose client disconnects (Bun's
// request.signal) leaves the queue unsent and counts in the queue-wait
// histogram's outcome="cancelled", apart from the calls sent.
import { expect, test } from "bun:test";
import { withGateway } from "./_helpers.ts";

const SLOW = `import time
class Slow:
    def execute(self, msg):
        time.sleep(msg["s"])
        return msg["s"]
`;

/** Polls the gateway's /metrics until `line` is in it; fails after 10 s. */
async function untilMetric(url: string, line: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const text = await (await fetch(`${url}/metrics`)).text();
    if (text.split("\n").includes(line)) return;
    if (Date.now() > deadline) throw new Error(`no "${line}" in:\n${text}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test(
  "serve() on Bun: a queued call whose client leaves counts as outcome=cancelled in pyproxy_queue_wait_seconds",
  async () => {
    await withGateway(
      { "slow.py": SLOW },
      { limits: { maxInFlightPerWorker: 1 } },
      async (server) => {
        const execute = (s: number, signal?: AbortSignal) =>
          fetch(`${server.url}/v1/models/slow/execute`, {
            method: "POST",
            body: JSON.stringify({ s }),
            ...(signal === undefined ? {} : { signal }),
          });
        const busy = execute(1);
        await untilMetric(
          server.url,
          'pyproxy_queue_wait_seconds_count{outcome="sent"} 1',
        );
        const leaving = new AbortController();
        const queued = execute(0, leaving.signal).catch((err) => err);
        await untilMetric(server.url, "pyproxy_queued_calls 1");
        leaving.abort();
        expect((await queued).name).toBe("AbortError");
        await untilMetric(
          server.url,
          'pyproxy_queue_wait_seconds_count{outcome="cancelled"} 1',
        );
        expect((await busy).status).toBe(200);
        const text = await (await fetch(`${server.url}/metrics`)).text();
        expect(text).toContain(
          'pyproxy_queue_wait_seconds_count{outcome="sent"} 1\n',
        );
        expect(text).toContain(
          'pyproxy_requests_total{model="slow",status="499"} 1\n',
        );
      },
    );
  },
  30_000,
);

test(
  "serve() on Bun: GET /metrics shows what model code records (pyproxy.metrics), label values escaped",
  async () => {
    const metered = await Bun.file(
      new URL("../../python/tests/models/metered.py", import.meta.url),
    ).text();
    await withGateway({ "metered.py": metered }, {}, async (server) => {
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${server.url}/v1/models/metered/execute`, {
          method: "POST",
          body: JSON.stringify({ counter: 2, path: 'a"b\n' }),
        });
        expect(res.status).toBe(200);
        await res.arrayBuffer();
      }
      await untilMetric(
        server.url,
        'pyproxy_model_hits_total{model="metered",path="a\\"b\\n"} 6',
      );
      const json = await (await fetch(`${server.url}/metrics?format=json`))
        .json();
      expect(json.modelMetrics.series[0].value).toBe(6);
    });
  },
  30_000,
);

const HOG = `import os


class Hog:
    held = []

    def execute(self, msg):
        mb = msg.get("mb", 0)
        if mb:
            Hog.held.append(b"\\x01" * (mb << 20))
        return {"pid": os.getpid()}
`;

/** A sample's value by its exact name and labels, or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length));
}

test(
  "serve() on Bun: GET /metrics shows the process metrics, and a worker's memory after its model allocates 50 MB",
  async () => {
    await withGateway({ "hog.py": HOG }, {}, async (server) => {
      const scrape = async () =>
        await (await fetch(`${server.url}/metrics`)).text();
      const before = await scrape();
      for (
        const name of [
          "process_cpu_seconds_total",
          "process_resident_memory_bytes",
          "process_start_time_seconds",
          "process_open_fds",
          "process_max_fds",
          "pyproxy_js_heap_used_bytes",
          "pyproxy_js_heap_total_bytes",
        ]
      ) {
        expect(sample(before, name)).toBeGreaterThan(0);
      }
      const series =
        'pyproxy_worker_resident_memory_bytes{worker="w1",slot="0"}';
      const rss = sample(before, series)!;
      expect(rss).toBeGreaterThan(5 * 2 ** 20);
      expect(
        sample(
          before,
          'pyproxy_worker_cpu_seconds_total{worker="w1",slot="0"}',
        ),
      ).toBeGreaterThan(0);
      const res = await fetch(`${server.url}/v1/models/hog/execute`, {
        method: "POST",
        body: '{"mb":50}',
      });
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      const grown = (sample(await scrape(), series)! - rss) / 2 ** 20;
      expect(grown).toBeGreaterThanOrEqual(45);
    });
  },
  30_000,
);

test(
  "serve() on Bun: pyproxy_build_info names Bun and its version, and the workers' Python",
  async () => {
    await withGateway(
      { "slow.py": SLOW },
      { limits: { maxQueue: 9 } },
      async (server) => {
        const text = await (await fetch(`${server.url}/metrics`)).text();
        expect(text).toMatch(
          new RegExp(
            `^pyproxy_build_info\\{version="[^"]+",runtime="bun",runtime_version="${
              Bun.version.replaceAll(".", "\\.")
            }",python_version="3\\.\\d+\\.\\d+"\\} 1$`,
            "m",
          ),
        );
        expect(text).toContain("\npyproxy_limit_max_queue 9\n");
      },
    );
  },
  30_000,
);
