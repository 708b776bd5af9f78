/**
 * Many concurrent model streams through the gateway's SSE route: `C` clients
 * at once, each `POST /v1/models/ticks/stream?early=1` of `N` small items,
 * read as fast as they come. Reports items/s, the gateway's peak RSS and its
 * JS heap at the end (`pyproxy_js_heap_used_bytes`, `/metrics`), and its CPU
 * per item. `deno run -A bench/sse_streams.ts [C] [N] [rounds]`; run it on
 * two trees in turn to compare them (streams27: the per-pull keep-alive timer
 * and the per-item `Promise.race`).
 *
 * @module
 */
const C = Number(Deno.args[0] ?? 200);
const N = Number(Deno.args[1] ?? 10_000);
const ROUNDS = Number(Deno.args[2] ?? 3);
const root = new URL("..", import.meta.url).pathname;
const dir = await Deno.makeTempDir();
await Deno.writeTextFile(
  `${dir}/ticks.py`,
  `class Ticks:
    def execute(self, msg):
        for i in range(msg["n"]):
            yield i
`,
);
const port = 20000 + Math.floor(Math.random() * 20000);
const child = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    `${root}mod.ts`,
    "serve",
    "--port",
    String(port),
    "--workers",
    "2",
    "--models",
    dir,
    // A whole stream's bound (30 s by default): 200 streams share 2 workers.
    "--timeout",
    "600000",
    "--log-level",
    "warning",
  ],
  stdout: "null",
  stderr: "inherit",
}).spawn();
const base = `http://127.0.0.1:${port}`;

/** The serve process's RSS in bytes (VmRSS). */
async function rss(): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${child.pid}/status`);
  return Number(status.match(/VmRSS:\s+(\d+)/)![1]) * 1024;
}

/** The serve process's CPU time in ms (user + system). */
async function cpuMs(): Promise<number> {
  const stat = (await Deno.readTextFile(`/proc/${child.pid}/stat`)).split(" ");
  return (Number(stat[13]) + Number(stat[14])) * 10;
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return Number(text.match(new RegExp(`^${name} (\\S+)$`, "m"))?.[1]);
}

/** One stream: its items, counted by their `event: item` lines. */
async function stream(): Promise<number> {
  const res = await fetch(`${base}/v1/models/ticks/stream?early=1`, {
    method: "POST",
    body: JSON.stringify({ n: N }),
  });
  const reader = res.body!.getReader();
  let items = 0;
  let tail = "";
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const text = tail + decoder.decode(value, { stream: true });
    let at = 0;
    for (;;) {
      const i = text.indexOf("event: item", at);
      if (i < 0) break;
      items++;
      at = i + 11;
    }
    tail = text.slice(Math.max(at, text.length - 10));
  }
  return items;
}

try {
  for (let i = 0;; i++) {
    if (i === 100) throw new Error("the gateway did not start");
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  // Warm-up: the model loaded on both workers, the code paths compiled.
  await Promise.all(Array.from({ length: 4 }, stream));
  for (let round = 0; round < ROUNDS; round++) {
    let peak = await rss();
    const sampler = setInterval(async () => {
      peak = Math.max(peak, await rss());
    }, 50);
    const cpu0 = await cpuMs();
    const t0 = performance.now();
    const counts = await Promise.all(Array.from({ length: C }, stream));
    const seconds = (performance.now() - t0) / 1000;
    const cpu = (await cpuMs()) - cpu0;
    clearInterval(sampler);
    const items = counts.reduce((a, b) => a + b, 0);
    if (items !== C * N) throw new Error(`${items} items, not ${C * N}`);
    console.log(JSON.stringify({
      round,
      streams: C,
      itemsEach: N,
      itemsPerSecond: Math.round(items / seconds),
      gatewayCpuUsPerItem: +((cpu * 1000) / items).toFixed(2),
      peakRssMiB: +(peak / 2 ** 20).toFixed(1),
      heapUsedMiB: +((await metric("pyproxy_js_heap_used_bytes")) / 2 ** 20)
        .toFixed(1),
    }));
  }
} finally {
  try {
    child.kill("SIGTERM");
  } catch {
    // it exited (its error is above)
  }
  await child.status;
  await Deno.remove(dir, { recursive: true });
}
