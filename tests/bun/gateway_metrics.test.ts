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
