/**
 * Keeps the benchmark references honest: the floor (our frame format, no
 * machinery) and the stdio baseline must answer correctly, in order and out
 * of order, small and large. Timings are never asserted.
 */
import assert from "node:assert/strict";
import { FloorClient, startFloorServer } from "../bench/floor_client.ts";
import { StdioClient } from "../bench/stdio_client.ts";
import { summarize } from "../bench/stats.ts";
import { ratioTarget } from "../bench/targets.ts";
import { ReadyChild } from "../bench/child.ts";
import { formatResults } from "../bench/table.ts";
import { GcTrace, parseGcLine } from "../bench/gc_trace.ts";
import { runLoad } from "../bench/load.ts";
import { large, peakTarget } from "../bench/scenarios/large.ts";
import { sequential } from "../bench/scenarios/sequential.ts";
import { evalOutput } from "../bench/scenarios/eval_output.ts";
import {
  gateway,
  gatewayRows,
  uvicornSpec,
} from "../bench/scenarios/gateway.ts";
import {
  floorCaller,
  sessionCaller,
  UNIX_BY_DEFAULT,
} from "../bench/callers.ts";

const MODELS = new URL("../bench/models/", import.meta.url).pathname;

function messages(n: number): Array<Record<string, unknown>> {
  return Array.from(
    { length: n },
    (_, i) => ({ i, text: `message ${i} ✓`, nested: { values: [i, i * 2] } }),
  );
}

Deno.test("FloorClient echoes sequential and pipelined calls through floor_server.py", async () => {
  await using server = await startFloorServer({ model: MODELS + "echo.py" });
  const client = await FloorClient.connect({
    port: server.ready.port as number,
  });
  try {
    assert.equal(await client.request("ping"), "pong");
    for (const msg of messages(5)) {
      assert.deepEqual(await client.execute("echo", msg), msg);
    }
    const batch = messages(64);
    assert.deepEqual(
      await Promise.all(batch.map((m) => client.execute("echo", m))),
      batch,
    );
    const big = { data: "y".repeat(300_000) };
    assert.deepEqual(await client.execute("echo", big), big);
  } finally {
    await client.close();
  }
});

Deno.test("FloorClient works over a Unix socket", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await using server = await startFloorServer({
      model: MODELS + "echo.py",
      unix: `${dir}/floor.sock`,
    });
    assert.equal(server.ready.unix, `${dir}/floor.sock`);
    const client = await FloorClient.connect({ path: `${dir}/floor.sock` });
    try {
      const batch = messages(16);
      assert.deepEqual(
        await Promise.all(batch.map((m) => client.execute("echo", m))),
        batch,
      );
    } finally {
      await client.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the floor runs over the transport the pyproxy rows use by default", async () => {
  // The naive framed floor is "our protocol over the same transport": the
  // sequential and pipelined ratios compare it with a Session and a Pool on
  // pyproxy's default socket kind.
  const floor = await floorCaller("echo").open();
  try {
    const session = await sessionCaller("echo").open();
    try {
      assert.equal(floor.transport, UNIX_BY_DEFAULT ? "unix" : "tcp");
      assert.equal(floor.transport, session.transport);
      assert.deepEqual(await floor.call({ a: 1 }), { a: 1 });
    } finally {
      await session.close();
    }
  } finally {
    await floor.close();
  }
  const tcp = await floorCaller("echo", { unix: false }).open();
  try {
    assert.equal(tcp.transport, "tcp");
  } finally {
    await tcp.close();
  }
});

Deno.test("StdioClient echoes sequential and pipelined calls through stdio_worker.py", async () => {
  await using client = await StdioClient.start({ model: MODELS + "echo.py" });
  for (const msg of messages(5)) {
    assert.deepEqual(await client.execute("echo", msg), msg);
  }
  const batch = messages(64);
  assert.deepEqual(
    await Promise.all(batch.map((m) => client.execute("echo", m))),
    batch,
  );
  const big = { data: "z".repeat(300_000) };
  assert.deepEqual(await client.execute("echo", big), big);
});

Deno.test("StdioClient runs the CPU-bound model", async () => {
  await using client = await StdioClient.start({
    model: MODELS + "cpu_model.py",
  });
  const n = 1000;
  const expected = Array.from({ length: n }, (_, i) => i * i).reduce(
    (a, b) => a + b,
    0,
  );
  assert.deepEqual(await client.execute("cpu", { n }), { n, total: expected });
});

Deno.test("summarize gives median, min and max over rounds", () => {
  assert.deepEqual(summarize([5, 1, 3]), { median: 3, min: 1, max: 5, n: 3 });
  assert.deepEqual(summarize([4, 1, 3, 2]), {
    median: 2.5,
    min: 1,
    max: 4,
    n: 4,
  });
});

Deno.test("runLoad drives the Deno.serve HTTP floor with keep-alive POSTs", async () => {
  await using floor = await ReadyChild.start({
    cmd: Deno.execPath(),
    args: [
      "run",
      "-A",
      new URL("../bench/http_floor.ts", import.meta.url).pathname,
    ],
  });
  const url = `http://127.0.0.1:${floor.ready.port}/v1/models/echo/execute`;
  const res = await fetch(url, {
    method: "POST",
    body: JSON.stringify({ a: 1 }),
  });
  assert.deepEqual(await res.json(), { a: 1 });
  const result = await runLoad({
    url,
    connections: 4,
    requests: 40,
    body: JSON.stringify({ a: 1 }),
  });
  assert.equal(result.requests, 40);
  assert.equal(result.errors, 0);
  assert.equal(result.non2xx, 0);
});

Deno.test("ratioTarget compares with a reference's median, or with its best round", () => {
  const rows = [
    { name: "us", metrics: { "req/s": summarize([130, 132, 131]) } },
    { name: "ref", metrics: { "req/s": summarize([100, 150, 101]) } },
    { name: "us99", metrics: { "p99 ms": summarize([8, 8, 8]) } },
    { name: "ref99", metrics: { "p99 ms": summarize([9, 4, 10]) } },
  ];
  const base = { label: "x", num: "us", den: "ref", metric: "req/s" };
  const median = ratioTarget(rows, { ...base, threshold: 1.2 });
  assert.equal(median.value, 131 / 101);
  assert.equal(median.pass, true);
  const best = ratioTarget(rows, { ...base, threshold: 1.2, denStat: "best" });
  assert.equal(best.value, 131 / 150);
  assert.equal(best.pass, false);
  // For a "<" target the best round is the lowest.
  const p99 = ratioTarget(rows, {
    label: "p99",
    num: "us99",
    den: "ref99",
    metric: "p99 ms",
    threshold: 1,
    op: "<",
    denStat: "best",
  });
  assert.equal(p99.value, 2);
  assert.equal(p99.pass, false);
  assert.equal(
    ratioTarget(rows, { ...base, den: "missing", threshold: 1 }).pass,
    null,
  );
});

Deno.test("the 100 MB memory target judges the host's peak RSS over one round trip, not its growth", () => {
  const one = (v: number) => summarize([v]);
  const rows = (peak: number, growth: number) => [{
    name: "pyproxy spill 100MB",
    metrics: {
      // The whole case's peak also holds earlier rounds' garbage: shown, not judged.
      "host peak RSS MB": one(peak + 200),
      "host peak 1st trip MB": one(peak),
      "host base RSS MB": one(peak - growth),
      "host growth 1st trip MB": one(growth),
    },
  }];
  const met = peakTarget(rows(277, 214));
  assert.equal(met.value, 2.77);
  assert.equal(met.pass, true);
  // Growth of 2.4x the payload on a 70 MB runtime: the peak is 3.1x.
  const missed = peakTarget(rows(310, 240));
  assert.equal(missed.value, 3.1);
  assert.equal(missed.pass, false);
  assert.equal(peakTarget([]).pass, null);
});

Deno.test("every scenario reports its rows as ratios to the same run's references", () => {
  const row = (name: string, metrics: Record<string, number>) => ({
    name,
    metrics: Object.fromEntries(
      Object.entries(metrics).map(([k, v]) => [k, summarize([v])]),
    ),
  });
  const seq = sequential.targets([
    row("pyproxy Session", { "calls/s": 90, "p99 ms": 1 }),
    row("pyproxy Pool (1 worker)", { "calls/s": 80, "p99 ms": 1 }),
    row("floor", { "calls/s": 40, "p99 ms": 2 }),
    row("stdio", { "calls/s": 100, "p99 ms": 1 }),
  ]);
  const floor = seq.filter((t) => t.info);
  assert.deepEqual(floor.map((t) => t.value), [90 / 40, 80 / 40]);
  assert.ok(floor.every((t) => t.pass === null));
  assert.equal(seq.filter((t) => !t.info).length, 4);
  const ev = evalOutput.targets([
    row("pyproxy eval (print)", { "MB/s": 30 }),
    row("python → pipe (reference)", { "MB/s": 120 }),
  ]);
  assert.deepEqual(ev.map((t) => [t.value, t.info]), [[0.25, true]]);
  const gw = gateway.targets([
    row("pyproxy gateway (1 worker)", { "req/s": 20 }),
    row("Deno.serve floor (JS echo)", { "req/s": 50 }),
  ]);
  assert.equal(gw.find((t) => t.info)?.value, 0.4);
  const big = large.targets([
    row("floor 10MB", { "s/round trip": 0.3 }),
    row("pyproxy spill 10MB", { "s/round trip": 0.1 }),
  ]);
  assert.ok(Math.abs((big.find((t) => t.info)?.value ?? 0) - 3) < 1e-9);
});

Deno.test("parseGcLine and GcTrace read V8's --trace-gc-nvp lines, per round", () => {
  const scavenge = (promoted: number, pause: number) =>
    `[12:0x55:0]     5471 ms: GC: {"pause":${pause},"mutator":101.3,"gc":"s","allocated":3300000,"new_space_survived":${
      promoted + 10000
    },"promoted":${promoted}}`;
  assert.deepEqual(parseGcLine(scavenge(0, 0.2)), {
    pause: 0.2,
    allocated: 3300000,
    survived: 10000,
    promoted: 0,
  });
  assert.equal(
    parseGcLine('[1:0x1:0] 9 ms: GC: {"pause":2.1,"gc":"mc"}'),
    "major",
  );
  assert.equal(parseGcLine('{"port": 8000}'), undefined);
  assert.equal(parseGcLine("GC: {not json"), undefined);
  const trace = new GcTrace();
  trace.line(scavenge(0, 0.3));
  trace.line("some other output");
  assert.equal(trace.take().scavenges, 1); // the warm-up's, dropped
  for (const p of [1_000_000, 3_000_000, 2_000_000]) trace.line(scavenge(p, 1));
  trace.line('[1:0x1:0] 9 ms: GC: {"pause":2.1,"gc":"mc"}');
  const round = trace.take();
  assert.equal(round.scavenges, 3);
  assert.equal(round.majors, 1);
  assert.equal(round.promotedMB.median, 2);
  assert.equal(round.pauseMs.median, 1);
  assert.equal(trace.take().scavenges, 0);
});

Deno.test("ReadyChild hands every stdout line after the ready line to onStdoutLine", async () => {
  const lines: string[] = [];
  // The ready line and the next ones arrive in one write.
  await using child = await ReadyChild.start({
    cmd: "python3",
    args: [
      "-c",
      "import sys; sys.stdout.write('{\"ok\": 1}\\nfirst\\nsecond\\n'); sys.stdout.flush(); sys.stdin.read()",
    ],
    onStdoutLine: (line) => lines.push(line),
  });
  assert.deepEqual(child.ready, { ok: 1 });
  for (let i = 0; i < 200 && lines.length < 2; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepEqual(lines, ["first", "second"]);
});

Deno.test("bench/main.ts refuses a bad --rounds, --round-ms, an empty --only or an unwritable --out before measuring", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-bench-args-" });
  try {
    const out = `${dir}/out.json`;
    const cases: Array<[string[], RegExp]> = [
      [
        ["--rounds", "abc"],
        /^Cannot run: --rounds: expected an integer >= 1, got abc\n/,
      ],
      [
        ["--rounds", "0"],
        /^Cannot run: --rounds: expected an integer >= 1, got 0\n/,
      ],
      [
        ["--rounds", "2.5"],
        /^Cannot run: --rounds: expected an integer >= 1, got 2\.5\n/,
      ],
      [
        ["--round-ms", "x"],
        /^Cannot run: --round-ms: expected a number > 0, got x\n/,
      ],
      [
        ["--round-ms", "0"],
        /^Cannot run: --round-ms: expected a number > 0, got 0\n/,
      ],
      // An empty --only would otherwise run every scenario.
      [["--only", ","], /^Cannot run: --only: expected scenario ids/],
    ];
    for (const [args, message] of cases) {
      const only = args[0] === "--only" ? [] : ["--only", "sequential"];
      const result = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../bench/main.ts", import.meta.url).pathname,
          ...only,
          ...args,
          "--out",
          out,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(result.stderr);
      assert.equal(result.code, 2, `${args.join(" ")}: ${stderr}`);
      assert.match(stderr, message);
      await assert.rejects(Deno.stat(out), Deno.errors.NotFound);
    }
    // An --out that cannot be written fails now, not after the whole run.
    const badOut = `${dir}/no-such-dir/out.json`;
    const result = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../bench/main.ts", import.meta.url).pathname,
        "--only",
        "sequential",
        "--out",
        badOut,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(result.stderr);
    assert.equal(result.code, 2, stderr);
    assert.match(stderr, /^Cannot write .*no-such-dir\/out\.json: /);
    assert.doesNotMatch(stderr, /\[bench\] sequential/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ratioTarget: a missing, skipped, NaN or zero side is not measured; the bounds are inclusive for >= and strict for <", () => {
  const rows = [
    { name: "us", metrics: { "calls/s": summarize([100]) } },
    { name: "ref", metrics: { "calls/s": summarize([50]) } },
    { name: "zero", metrics: { "calls/s": summarize([0]) } },
    { name: "nan", metrics: { "calls/s": summarize([NaN]) } },
    // A row that failed keeps no metrics today; if it ever did, they would be stale.
    {
      name: "skipped",
      metrics: { "calls/s": summarize([10]) },
      skipped: "failed in round 2",
    },
  ];
  const t = (num: string, den: string, extra: Record<string, unknown> = {}) =>
    ratioTarget(rows, {
      label: "x",
      num,
      den,
      metric: "calls/s",
      threshold: 2,
      ...extra,
    });
  assert.deepEqual([t("us", "ref").value, t("us", "ref").pass], [2, true]);
  assert.equal(t("us", "ref", { op: "<" }).pass, false);
  for (
    const [num, den] of [
      ["us", "missing"],
      ["missing", "ref"],
      ["us", "zero"],
      ["us", "nan"],
      ["nan", "ref"],
      ["us", "skipped"],
      ["skipped", "ref"],
    ]
  ) {
    const target = t(num!, den!);
    assert.deepEqual(
      [target.value, target.pass],
      [null, null],
      `${num} / ${den}`,
    );
  }
  // A zero scale would divide by zero: not "infinitely faster".
  assert.equal(t("us", "ref", { scale: 0 }).pass, null);
  assert.equal(t("us", "ref", { scale: 0.5 }).value, 4);
  // A numerator of zero is a measurement: it misses a >= target.
  assert.deepEqual(
    [t("zero", "ref").value, t("zero", "ref").pass],
    [0, false],
  );
});

Deno.test("the gateway's rows name the load generator even when its first row was skipped", () => {
  const note = "load generator: bench/load.ts, 2 s rounds";
  const rows = gatewayRows([
    {
      name: "pyproxy gateway (1 worker)",
      rounds: [],
      skipped: "src/cli.ts does not exist yet",
    },
    {
      name: "Deno.serve floor (JS echo)",
      rounds: [{ "req/s": 10 }, { "req/s": 30 }],
    },
    { name: "uvicorn+Starlette (1 proc)", rounds: [{ "req/s": 5 }] },
  ], note);
  assert.deepEqual(rows.map((r) => r.note), [undefined, note, undefined]);
  assert.equal(rows[0]?.skipped, "src/cli.ts does not exist yet");
  assert.equal(rows[1]?.metrics["req/s"]?.median, 20);
  const none = gatewayRows([{ name: "a", rounds: [], skipped: "x" }], note);
  assert.equal(none[0]?.note, note);
  const table = formatResults([{
    id: "gateway",
    title: "g",
    rows,
    targets: [],
    seconds: 1,
  }]);
  assert.match(
    table,
    /Deno\.serve floor \(JS echo\) .*\n {6}load generator: bench\/load\.ts/,
  );
});

Deno.test("a missing uvicorn reference skips with the Debian packages that would install it", async () => {
  await assert.rejects(
    uvicornSpec(
      "uvicorn+FastAPI (1 proc)",
      1,
      undefined,
      "fastapi_app",
      "fastapi",
    )
      .start(),
    /^Error: uvicorn\/starlette\/uvloop\/httptools are not importable \(apt-get install python3-uvicorn python3-starlette python3-uvloop python3-httptools python3-fastapi\)$/,
  );
  await assert.rejects(
    uvicornSpec("uvicorn+Starlette (1 proc)", 1, undefined, "app", "starlette")
      .start(),
    /^Error: uvicorn\/starlette\/uvloop\/httptools are not importable \(apt-get install python3-uvicorn python3-starlette python3-uvloop python3-httptools\)$/,
  );
  // An interpreter that cannot import the module: no server is started.
  await assert.rejects(
    uvicornSpec(
      "uvicorn+FastAPI (1 proc)",
      1,
      "python3",
      "fastapi_app",
      "no_such_module_x",
    )
      .start(),
    /^Error: no_such_module_x is not importable by python3 \(apt-get install python3-no_such_module_x\)$/,
  );
});
