// Soak: does everything stay bounded over time? Runs a real gateway (`serve`,
// 2 workers) and a library Pool under mixed traffic and faults for a while,
// samples the resources every few seconds and checks that every client
// request settled exactly once with an allowed outcome (docs/reliability.md,
// "Soak"). Linux only (it reads /proc). Not part of `deno task test`.
//
//   deno task soak                          (10 minutes)
//   deno task soak --duration 60 --out /tmp/soak.json
//
// Options: --duration <s> (600), --sample <s> (5), --clients <n> (10 for
// the gateway), --pool-clients <n> (4), --fault-every <s> (8), --skip <text>
// (leave out the request kinds whose name holds it; repeatable), --out <file>
// (the samples and the outcomes as JSON), --keep (keep the temporary models
// directory and the gateway's log in it even when the run found nothing). Exit status 1 when a request hung,
// settled twice or ended with an outcome its kind does not allow, when a
// Python server outlived its host or was orphaned, or when the drained end
// state keeps requests, subscribers, spill files or temp dirs.
//
// `--role=gateway serve ...` is internal: the gateway process itself (the
// real CLI's main), which also prints `Deno.memoryUsage()` after a full GC
// every sample period so the heap's trend is visible without a debug route.
import { Pool } from "../src/pool.ts";
import { reconnect } from "../plugins/mod.ts";
import { SOAK_MODELS } from "./_soak_models.ts";
import { Ledger } from "./_soak_ledger.ts";
import { procSample, serverProcesses, tempEntries } from "./_soak_probe.ts";
import { lifetimes, line, type Sample, table } from "./_soak_report.ts";
import { signal, soakFaults } from "./_soak_faults.ts";
import { clientLoop, gatewayOps, sleep, type Target } from "./_soak_traffic.ts";
import { poolOps } from "./_soak_pool_ops.ts";

if (Deno.args[0] === "--role=gateway") {
  // Not on SIGUSR1: that starts V8's inspector on port 9229.
  const every = Number(Deno.env.get("SOAK_SAMPLE_MS") ?? 5000);
  Deno.unrefTimer(setInterval(() => {
    (globalThis as { gc?: () => void }).gc?.();
    console.log(`SOAK-MEM ${JSON.stringify(Deno.memoryUsage())}`);
  }, every));
  const { main } = await import("../src/cli.ts");
  Deno.exit(await main(Deno.args.slice(1)));
}

function option(name: string, fallback: number): number {
  const at = Deno.args.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = Number(Deno.args[at + 1]);
  if (!Number.isFinite(value) || value <= 0) {
    throw new TypeError(`--${name}: expected a positive number`);
  }
  return value;
}
const outAt = Deno.args.indexOf("--out");
const OUT = outAt < 0 ? undefined : Deno.args[outAt + 1];
const DURATION_MS = option("duration", 600) * 1000;
const SAMPLE_MS = option("sample", 5) * 1000;
const CLIENTS = option("clients", 10);
const POOL_CLIENTS = option("pool-clients", 4);
const FAULT_EVERY_MS = option("fault-every", 8) * 1000;
// --skip <text> (repeatable): leave out the request kinds whose name holds it
// (e.g. --skip eval, to see the heap without the finished evals' 64 MiB).
const SKIP = Deno.args.flatMap((a, i) =>
  Deno.args[i - 1] === "--skip" ? [a] : []
);
// Far above every server-side bound (timeouts 5 s, stream idle 4 s, eval
// cancel grace 2 s, heartbeat 4 s): a request open this long hung.
const HANG_MS = 60_000;

const token = Array.from(
  crypto.getRandomValues(new Uint8Array(16)),
  (b) => b.toString(16).padStart(2, "0"),
).join("");
const modelsDir = await Deno.makeTempDir({ prefix: "soak-models-" });
for (const [file, source] of Object.entries(SOAK_MODELS)) {
  await Deno.writeTextFile(`${modelsDir}/${file}`, source);
}
await Deno.writeTextFile(
  `${modelsDir}/pyproxy.json`,
  JSON.stringify({
    plugins: { reconnect: { heartbeatTimeout: 4000, maxCrashes: 1000 } },
    channels: { bufferSize: 32 },
  }),
);
const gatewayLog = `${modelsDir}/gateway.log`;

const child = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    "--v8-flags=--expose-gc",
    new URL(import.meta.url).pathname,
    "--role=gateway",
    "serve",
    "--port=0",
    "--workers=2",
    `--models=${modelsDir}`,
    `--config=${modelsDir}/pyproxy.json`,
    "--allow-eval",
    "--allow-manage",
    "--timeout=5000",
    "--stream-idle-timeout=4000",
    "--grace=3000",
  ],
  // The token in the environment, not on a command line others can read.
  env: { SOAK_SAMPLE_MS: String(SAMPLE_MS), PYPROXY_TOKEN: token },
  stdout: "piped",
  stderr: "piped",
}).spawn();
const gatewayPid = child.pid;
// A driver that fails takes its gateway with it (whose servers then exit).
for (const type of ["error", "unhandledrejection"]) {
  globalThis.addEventListener(type, () => {
    try {
      Deno.kill(gatewayPid, "SIGKILL");
    } catch { /* gone */ }
  });
}
const logFile = await Deno.open(gatewayLog, { write: true, create: true });
const stderrDone = child.stderr.pipeTo(logFile.writable);

let heap: Sample["gatewayHeap"];
const firstHeap = Promise.withResolvers<void>();
const ready = Promise.withResolvers<string>();
const stdoutDone = (async () => {
  let buf = "";
  for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
    buf += text;
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      const url = /listening on (http:\/\/\S+)/.exec(line);
      if (url) ready.resolve(url[1]!);
      if (line.startsWith("SOAK-MEM ")) {
        heap = JSON.parse(line.slice(9));
        firstHeap.resolve();
      }
    }
  }
  ready.reject(
    new Error(`the gateway exited before it was ready: see ${gatewayLog}`),
  );
  firstHeap.reject(new Error("the gateway exited"));
})();

const url = await ready.promise;
const target: Target = { url, port: Number(new URL(url).port), token };
const auth = { authorization: `Bearer ${token}` };
console.log(
  `soak: gateway pid ${gatewayPid} at ${url}, driver pid ${Deno.pid}, ${
    DURATION_MS / 1000
  } s`,
);

const pool = await Pool.start({
  workers: 2,
  modelsDir,
  handleSignals: false,
  requestTimeout: 5000,
  streamIdleTimeout: 4000,
  plugins: [reconnect({ heartbeatTimeout: 4000, maxCrashes: 1000 })],
});
for (
  const name of ["echo", "tokens", "batcher", "cache_counter", "slow", "big"]
) {
  await pool.addModel(name, { file: `${name}.py` });
}

// Why each pool worker exited (the gateway's say so in its log).
const poolExits: string[] = [];
pool.on((ev) => {
  if (ev.type === "worker-exit") {
    poolExits.push(
      `${
        new Date().toISOString().slice(11, 19)
      } ${ev.worker} (pid ${ev.pid}): ${ev.reason}`,
    );
    console.log(`pool worker exit: ${poolExits.at(-1)}`);
  }
});

// The first sample has the gateway's heap too (printed every sample period).
await firstHeap.promise;
const ledger = new Ledger(HANG_MS);
const faults: string[] = [];
const samples: Sample[] = [];
const sampleErrors: string[] = [];
const hosts = new Set([gatewayPid, Deno.pid]);
let stopping = false;
const stopped = Promise.withResolvers<void>();
/** Sleeps `ms`, or less once the traffic stops. */
const pause = (ms: number) => Promise.race([sleep(ms), stopped.promise]);

async function getJson(path: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${url}${path}`, { headers: auth });
  return await res.json();
}

function metricsOf(text: string): Record<string, number> {
  const sums: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const m =
      /^(pyproxy_(?:in_flight_requests|channel_subscribers|channel_subscribers_dropped_total|parked_streams|queued_calls|eval_replay_bytes))(?:\{[^}]*\})? (\S+)$/
        .exec(line);
    if (m) sums[m[1]!] = (sums[m[1]!] ?? 0) + Number(m[2]);
  }
  return sums;
}

const started = performance.now();
async function sample(): Promise<Sample> {
  const status = await getJson("/v1/status");
  const metricsText = await (await fetch(`${url}/metrics`, { headers: auth }))
    .text();
  const metrics = metricsOf(metricsText);
  metrics.bytes = metricsText.length;
  const ps = pool.status();
  const workers: Sample["workers"] = [];
  const list = [
    ...((status.workers as Array<{ id: string; pid?: number }>) ?? []).map((
      w,
    ) => ({ ...w, owner: "gateway" as const })),
    ...ps.workers.map((w) => ({
      id: w.id,
      pid: w.pid,
      owner: "pool" as const,
    })),
  ];
  for (const w of list) {
    if (w.pid === undefined || w.pid === null) continue;
    const p = procSample(w.pid);
    if (p) {
      workers.push({
        id: w.id,
        owner: w.owner,
        pid: w.pid,
        fds: p.fds,
        threads: p.threads,
        rssKb: p.rssKb,
      });
    }
  }
  const servers = serverProcesses(hosts);
  // A server whose parent is not the host it names was orphaned (or, the
  // host gone, outlived it). Not one whose parent is another of its host's
  // servers: a python that is a shell script (a pyenv shim) forks subshells
  // with the server's command line before it execs the interpreter.
  const serverPids = new Set(servers.map((s) => s.pid));
  const orphans = servers.filter((s) =>
    s.ppid !== s.hostPid && !serverPids.has(s.ppid ?? -1)
  );
  const temp = tempEntries(hosts);
  const mem = Deno.memoryUsage();
  const gw = status.gateway as Record<string, unknown> | undefined;
  return {
    t: Math.round((performance.now() - started) / 1000),
    gateway: procSample(gatewayPid),
    ...(heap ? { gatewayHeap: heap } : {}),
    driver: procSample(Deno.pid),
    driverHeap: { heapUsed: mem.heapUsed, rss: mem.rss },
    workers,
    servers: servers.length,
    orphans,
    temp: { dirs: temp.dirs, files: temp.files, spillFiles: temp.spillFiles },
    status: {
      inFlight: status.inFlight,
      queue: status.queue,
      parked: status.parked,
      evalReplayBytes: status.evalReplayBytes,
      restarts: status.restarts,
      gatewayInFlight: gw?.inFlight,
      subscribers: gw?.subscribers,
      channels: gw?.channels,
    },
    poolStatus: {
      inFlight: ps.inFlight,
      queue: ps.queue,
      parked: ps.parked,
      evalReplayBytes: ps.evalReplayBytes,
      workers: ps.workers.length,
    },
    metrics,
    ledger: {
      started: ledger.started,
      settled: ledger.settled,
      open: ledger.open,
      oldestMs: Math.round(ledger.oldestMs()),
    },
  };
}

async function samplerLoop(): Promise<void> {
  while (!stopping) {
    try {
      const s = await sample();
      samples.push(s);
      console.log(line(s));
    } catch (err) {
      sampleErrors.push(`${err}`);
      console.log(`sample failed: ${err}`);
    }
    await pause(SAMPLE_MS);
  }
}

const { faults: injectors, manageLoop, publishLoop } = soakFaults({
  url,
  auth,
  pool,
  stopping: () => stopping,
});

async function faultLoop(): Promise<void> {
  let i = 0;
  while (!stopping) {
    await pause(FAULT_EVERY_MS);
    if (stopping) break;
    const [name, inject] = injectors[i++ % injectors.length]!;
    const result = await inject().catch((e: unknown) => `failed: ${e}`);
    faults.push(
      `t=${
        Math.round((performance.now() - started) / 1000)
      }s ${name}: ${result}`,
    );
    console.log(`fault: ${faults.at(-1)}`);
  }
}

const gwOps = gatewayOps(target);
// Calls of the model that comes and goes: 404 while it is away.
gwOps.push([
  2,
  "execute churn (PUT/DELETE under traffic)",
  (o) =>
    [
      "200",
      "404:ModelNotFoundError",
      "503:NoWorkerError",
      "502:WorkerCrashedError",
      "504:TimeoutError",
      "503:ShuttingDownError",
    ].includes(o),
  async (s) => {
    const res = await fetch(`${url}/v1/models/churn/execute`, {
      method: "POST",
      headers: auth,
      body: "{}",
      signal: s,
    });
    const text = await res.text();
    return res.status === 200
      ? "200"
      : `${res.status}:${JSON.parse(text).error?.type}`;
  },
]);
const pOps = poolOps(pool).filter(([, kind]) =>
  !SKIP.some((k) => kind.includes(k))
);
for (let i = gwOps.length - 1; i >= 0; i--) {
  if (SKIP.some((k) => gwOps[i]![1].includes(k))) gwOps.splice(i, 1);
}
const stop = () => stopping || performance.now() - started > DURATION_MS;

const loops = [
  samplerLoop(),
  faultLoop(),
  manageLoop(),
  publishLoop(),
  ...Array.from({ length: CLIENTS }, () => clientLoop(ledger, gwOps, stop)),
  ...Array.from({ length: POOL_CLIENTS }, () => clientLoop(ledger, pOps, stop)),
];
while (!stop()) await sleep(500);
stopping = true;
stopped.resolve();
console.log("soak: traffic stopped, waiting for the clients to settle");
await Promise.all(loops);
// Past every server-side bound: what is still pending now is a leak.
await sleep(8000);
const drained = await sample();
console.log(`drained: ${line(drained)}`);

await pool.close();
Deno.kill(gatewayPid, "SIGTERM");
const exit = await Promise.race([
  child.status,
  sleep(15_000).then(() => undefined),
]);
if (exit === undefined) signal(gatewayPid, "SIGKILL");
await Promise.all([stdoutDone, stderrDone]).catch(() => {});
await sleep(2000);
const leftServers = serverProcesses(hosts);
const leftTemp = tempEntries(hosts);

const problems: string[] = [];
if (ledger.hangs.length) {
  problems.push(
    `${ledger.hangs.length} hangs: ${ledger.hangs.slice(0, 5).join("; ")}`,
  );
}
if (ledger.doubles) problems.push(`${ledger.doubles} requests settled twice`);
for (const [k, v] of ledger.refused) {
  problems.push(`outcome not allowed: ${k} ×${v.count} (${v.example})`);
}
if (ledger.open) problems.push(`${ledger.open} requests never settled`);
const orphanSeen = samples.flatMap((s) => s.orphans);
if (orphanSeen.length) {
  problems.push(
    `orphaned servers seen: ${JSON.stringify(orphanSeen.slice(0, 5))}`,
  );
}
if (leftServers.length) {
  problems.push(`servers left after close: ${JSON.stringify(leftServers)}`);
}
if (leftTemp.dirs) {
  problems.push(`temp dirs left after close: ${leftTemp.names.join(", ")}`);
}
for (
  const [k, v] of Object.entries({ ...drained.status, ...drained.poolStatus })
) {
  if (
    [
      "inFlight",
      "queue",
      "parked",
      "evalReplayBytes",
      "gatewayInFlight",
      "subscribers",
    ].includes(k) && v !== 0
  ) {
    problems.push(`drained: ${k} = ${v}`);
  }
}
if (drained.temp.spillFiles) {
  problems.push(`drained: ${drained.temp.spillFiles} spill files left`);
}
// Each running server has its socket directory (with its socket); the
// spill-over plugin one directory per pool (gateway and library).
if (drained.temp.dirs > drained.servers + 4) {
  problems.push(
    `drained: ${drained.temp.dirs} temp dirs for ${drained.servers} servers`,
  );
}
if (exit === undefined) {
  problems.push("the gateway did not exit within 15 s of SIGTERM");
}
if (sampleErrors.length) {
  problems.push(`${sampleErrors.length} samples failed: ${sampleErrors[0]}`);
}

console.log(`\n${table(samples, drained)}\n`);
console.log(
  `worker processes over their lives:\n${lifetimes([...samples, drained])}`,
);
console.log("outcomes:");
for (const [kind, outcomes] of [...ledger.outcomes].sort()) {
  console.log(
    `  ${kind}: ${[...outcomes].map(([o, n]) => `${o} ${n}`).join(", ")}`,
  );
}
console.log(
  `pool worker exits (${poolExits.length}):\n  ${poolExits.join("\n  ")}`,
);
console.log(`faults (${faults.length}):\n  ${faults.join("\n  ")}`);
// The models directory holds the gateway's log: kept only when something
// went wrong (or with --keep), so runs leave nothing behind in /tmp.
const keep = problems.length > 0 || Deno.args.includes("--keep");
if (!keep) await Deno.remove(modelsDir, { recursive: true });
console.log(
  `gateway exit: ${exit ? `code ${exit.code}` : "killed"}; log: ${
    keep ? gatewayLog : "removed (--keep keeps it)"
  }`,
);
console.log(
  problems.length ? `PROBLEMS:\n  ${problems.join("\n  ")}` : "no problems",
);
if (OUT) {
  await Deno.writeTextFile(
    OUT,
    JSON.stringify(
      {
        samples,
        drained,
        faults,
        outcomes: Object.fromEntries(
          [...ledger.outcomes].map(([k, v]) => [k, Object.fromEntries(v)]),
        ),
        problems,
      },
      null,
      1,
    ),
  );
}
Deno.exit(problems.length ? 1 : 0);
